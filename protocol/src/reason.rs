//! MQTT 5.0 reason codes (spec §2.4) and their MQTT 3.1.1 equivalents.
//!
//! Inside beamq every outcome is expressed as a v5 [`ReasonCode`]; the codec maps it to the
//! 3.1.1 CONNACK return code or SUBACK failure byte when it talks to an older client. Keeping one
//! vocabulary means an error is mapped to the wire exactly once, in this file.

/// A v5 reason code. The numeric value is the wire byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum ReasonCode {
    /// 0x00 Success / Normal disconnection / Granted QoS 0.
    #[default]
    Success = 0x00,
    /// 0x01 Granted QoS 1.
    GrantedQoS1 = 0x01,
    /// 0x02 Granted QoS 2.
    GrantedQoS2 = 0x02,
    /// 0x04 Disconnect with Will Message.
    DisconnectWithWill = 0x04,
    /// 0x10 No matching subscribers.
    NoMatchingSubscribers = 0x10,
    /// 0x11 No subscription existed.
    NoSubscriptionExisted = 0x11,
    /// 0x18 Continue authentication.
    ContinueAuthentication = 0x18,
    /// 0x19 Re-authenticate.
    ReAuthenticate = 0x19,
    /// 0x80 Unspecified error.
    UnspecifiedError = 0x80,
    /// 0x81 Malformed Packet.
    MalformedPacket = 0x81,
    /// 0x82 Protocol Error.
    ProtocolError = 0x82,
    /// 0x83 Implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84 Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85 Client Identifier not valid.
    ClientIdentifierNotValid = 0x85,
    /// 0x86 Bad User Name or Password.
    BadUserNameOrPassword = 0x86,
    /// 0x87 Not authorized.
    NotAuthorized = 0x87,
    /// 0x88 Server unavailable.
    ServerUnavailable = 0x88,
    /// 0x89 Server busy.
    ServerBusy = 0x89,
    /// 0x8A Banned.
    Banned = 0x8A,
    /// 0x8B Server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C Bad authentication method.
    BadAuthenticationMethod = 0x8C,
    /// 0x8D Keep Alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E Session taken over.
    SessionTakenOver = 0x8E,
    /// 0x8F Topic Filter invalid.
    TopicFilterInvalid = 0x8F,
    /// 0x90 Topic Name invalid.
    TopicNameInvalid = 0x90,
    /// 0x91 Packet Identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92 Packet Identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93 Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94 Topic Alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95 Packet too large.
    PacketTooLarge = 0x95,
    /// 0x96 Message rate too high.
    MessageRateTooHigh = 0x96,
    /// 0x97 Quota exceeded.
    QuotaExceeded = 0x97,
    /// 0x98 Administrative action.
    AdministrativeAction = 0x98,
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A Retain not supported.
    RetainNotSupported = 0x9A,
    /// 0x9B QoS not supported.
    QoSNotSupported = 0x9B,
    /// 0x9C Use another server.
    UseAnotherServer = 0x9C,
    /// 0x9D Server moved.
    ServerMoved = 0x9D,
    /// 0x9E Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0x9F Connection rate exceeded.
    ConnectionRateExceeded = 0x9F,
    /// 0xA0 Maximum connect time.
    MaximumConnectTime = 0xA0,
    /// 0xA1 Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// 0xA2 Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// Every reason code, in wire order (used by tests and property generators).
    pub const ALL: [ReasonCode; 43] = [
        ReasonCode::Success,
        ReasonCode::GrantedQoS1,
        ReasonCode::GrantedQoS2,
        ReasonCode::DisconnectWithWill,
        ReasonCode::NoMatchingSubscribers,
        ReasonCode::NoSubscriptionExisted,
        ReasonCode::ContinueAuthentication,
        ReasonCode::ReAuthenticate,
        ReasonCode::UnspecifiedError,
        ReasonCode::MalformedPacket,
        ReasonCode::ProtocolError,
        ReasonCode::ImplementationSpecificError,
        ReasonCode::UnsupportedProtocolVersion,
        ReasonCode::ClientIdentifierNotValid,
        ReasonCode::BadUserNameOrPassword,
        ReasonCode::NotAuthorized,
        ReasonCode::ServerUnavailable,
        ReasonCode::ServerBusy,
        ReasonCode::Banned,
        ReasonCode::ServerShuttingDown,
        ReasonCode::BadAuthenticationMethod,
        ReasonCode::KeepAliveTimeout,
        ReasonCode::SessionTakenOver,
        ReasonCode::TopicFilterInvalid,
        ReasonCode::TopicNameInvalid,
        ReasonCode::PacketIdentifierInUse,
        ReasonCode::PacketIdentifierNotFound,
        ReasonCode::ReceiveMaximumExceeded,
        ReasonCode::TopicAliasInvalid,
        ReasonCode::PacketTooLarge,
        ReasonCode::MessageRateTooHigh,
        ReasonCode::QuotaExceeded,
        ReasonCode::AdministrativeAction,
        ReasonCode::PayloadFormatInvalid,
        ReasonCode::RetainNotSupported,
        ReasonCode::QoSNotSupported,
        ReasonCode::UseAnotherServer,
        ReasonCode::ServerMoved,
        ReasonCode::SharedSubscriptionsNotSupported,
        ReasonCode::ConnectionRateExceeded,
        ReasonCode::MaximumConnectTime,
        ReasonCode::SubscriptionIdentifiersNotSupported,
        ReasonCode::WildcardSubscriptionsNotSupported,
    ];

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses a wire byte; `None` for a value the spec does not define.
    pub fn from_u8(b: u8) -> Option<ReasonCode> {
        ReasonCode::ALL.iter().copied().find(|r| r.as_u8() == b)
    }

    /// True for 0x80 and above: the spec's definition of a failure [MQTT-2.4].
    pub fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// The MQTT 3.1 / 3.1.1 CONNACK return code that best expresses this v5 reason
    /// (3.1.1 §3.2.2.3 only has 0..=5).
    pub fn to_v3_connack(self) -> u8 {
        match self {
            ReasonCode::Success => 0,
            ReasonCode::UnsupportedProtocolVersion => 1,
            ReasonCode::ClientIdentifierNotValid => 2,
            ReasonCode::BadUserNameOrPassword | ReasonCode::BadAuthenticationMethod => 4,
            ReasonCode::NotAuthorized | ReasonCode::Banned => 5,
            // Everything else means "the server cannot serve you now".
            _ => 3,
        }
    }

    /// The v5 reason for a 3.1.1 CONNACK return code; `None` for 6..=255, which are reserved.
    pub fn from_v3_connack(code: u8) -> Option<ReasonCode> {
        Some(match code {
            0 => ReasonCode::Success,
            1 => ReasonCode::UnsupportedProtocolVersion,
            2 => ReasonCode::ClientIdentifierNotValid,
            3 => ReasonCode::ServerUnavailable,
            4 => ReasonCode::BadUserNameOrPassword,
            5 => ReasonCode::NotAuthorized,
            _ => return None,
        })
    }

    /// The 3.1.1 SUBACK return code: granted QoS 0..=2, or 0x80 for any failure.
    pub fn to_v3_suback(self) -> u8 {
        match self {
            ReasonCode::Success => 0,
            ReasonCode::GrantedQoS1 => 1,
            ReasonCode::GrantedQoS2 => 2,
            _ => 0x80,
        }
    }

    /// A short human description, used in reason strings and logs.
    pub fn description(self) -> &'static str {
        match self {
            ReasonCode::Success => "success",
            ReasonCode::GrantedQoS1 => "granted QoS 1",
            ReasonCode::GrantedQoS2 => "granted QoS 2",
            ReasonCode::DisconnectWithWill => "disconnect with will message",
            ReasonCode::NoMatchingSubscribers => "no matching subscribers",
            ReasonCode::NoSubscriptionExisted => "no subscription existed",
            ReasonCode::ContinueAuthentication => "continue authentication",
            ReasonCode::ReAuthenticate => "re-authenticate",
            ReasonCode::UnspecifiedError => "unspecified error",
            ReasonCode::MalformedPacket => "malformed packet",
            ReasonCode::ProtocolError => "protocol error",
            ReasonCode::ImplementationSpecificError => "implementation specific error",
            ReasonCode::UnsupportedProtocolVersion => "unsupported protocol version",
            ReasonCode::ClientIdentifierNotValid => "client identifier not valid",
            ReasonCode::BadUserNameOrPassword => "bad user name or password",
            ReasonCode::NotAuthorized => "not authorized",
            ReasonCode::ServerUnavailable => "server unavailable",
            ReasonCode::ServerBusy => "server busy",
            ReasonCode::Banned => "banned",
            ReasonCode::ServerShuttingDown => "server shutting down",
            ReasonCode::BadAuthenticationMethod => "bad authentication method",
            ReasonCode::KeepAliveTimeout => "keep alive timeout",
            ReasonCode::SessionTakenOver => "session taken over",
            ReasonCode::TopicFilterInvalid => "topic filter invalid",
            ReasonCode::TopicNameInvalid => "topic name invalid",
            ReasonCode::PacketIdentifierInUse => "packet identifier in use",
            ReasonCode::PacketIdentifierNotFound => "packet identifier not found",
            ReasonCode::ReceiveMaximumExceeded => "receive maximum exceeded",
            ReasonCode::TopicAliasInvalid => "topic alias invalid",
            ReasonCode::PacketTooLarge => "packet too large",
            ReasonCode::MessageRateTooHigh => "message rate too high",
            ReasonCode::QuotaExceeded => "quota exceeded",
            ReasonCode::AdministrativeAction => "administrative action",
            ReasonCode::PayloadFormatInvalid => "payload format invalid",
            ReasonCode::RetainNotSupported => "retain not supported",
            ReasonCode::QoSNotSupported => "QoS not supported",
            ReasonCode::UseAnotherServer => "use another server",
            ReasonCode::ServerMoved => "server moved",
            ReasonCode::SharedSubscriptionsNotSupported => "shared subscriptions not supported",
            ReasonCode::ConnectionRateExceeded => "connection rate exceeded",
            ReasonCode::MaximumConnectTime => "maximum connect time",
            ReasonCode::SubscriptionIdentifiersNotSupported => {
                "subscription identifiers not supported"
            }
            ReasonCode::WildcardSubscriptionsNotSupported => "wildcard subscriptions not supported",
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:02X} {}", self.as_u8(), self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_byte() {
        for r in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_u8(r.as_u8()), Some(r));
        }
        assert_eq!(ReasonCode::from_u8(0x03), None);
        assert_eq!(ReasonCode::from_u8(0xFF), None);
    }

    #[test]
    fn v3_connack_codes_map_both_ways() {
        for code in 0..=5u8 {
            let r = ReasonCode::from_v3_connack(code).expect("defined");
            assert_eq!(r.to_v3_connack(), code);
        }
        assert_eq!(ReasonCode::from_v3_connack(6), None);
        assert_eq!(ReasonCode::ServerBusy.to_v3_connack(), 3);
    }

    #[test]
    fn v3_suback_failures_are_0x80() {
        assert_eq!(ReasonCode::TopicFilterInvalid.to_v3_suback(), 0x80);
        assert_eq!(ReasonCode::GrantedQoS2.to_v3_suback(), 2);
    }
}
