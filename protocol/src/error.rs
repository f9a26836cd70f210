//! Typed errors of the codec and the state machine, and the one table that maps them to wire
//! reason codes.
//!
//! "Need more bytes" is never an error: the decoder answers `Ok(None)` and leaves the partial frame
//! in the caller's buffer.

use crate::packet::PacketType;
use crate::reason::ReasonCode;

/// Why a frame could not be decoded. Every variant is fatal for the connection: after it the
/// byte stream can no longer be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The Remaining Length used more than four bytes (§1.5.5).
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// Packet type 0, or 15 (AUTH) before v5.
    #[error("reserved packet type {0}")]
    ReservedPacketType(u8),
    /// The low nibble of the first byte is not what the spec fixes for this packet type
    /// [MQTT-2.2.2-2].
    #[error("invalid fixed header flags 0x{flags:X} for {packet}")]
    InvalidFixedHeaderFlags {
        /// The packet type.
        packet: &'static str,
        /// The offending nibble.
        flags: u8,
    },
    /// The whole packet would exceed the maximum packet size this side accepts.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Size of the whole packet (fixed header included).
        size: usize,
        /// The limit.
        max: u32,
    },
    /// The variable header or payload ended before a field was complete, or bytes were left over.
    #[error("malformed {0}: {1}")]
    Malformed(&'static str, &'static str),
    /// A string was not well-formed UTF-8, or contained U+0000 [MQTT-1.5.4-1, MQTT-1.5.4-2].
    #[error("invalid UTF-8 string in {0}")]
    InvalidUtf8(&'static str),
    /// The protocol name is neither `MQTT` nor `MQIsdp` [MQTT-3.1.2-1].
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// The protocol level is not 3, 4 or 5 [MQTT-3.1.2-2].
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// QoS 3 in a PUBLISH, will or subscription [MQTT-3.3.1-4].
    #[error("invalid QoS 3 in {0}")]
    InvalidQoS(&'static str),
    /// A reserved bit or flag was set: CONNECT flag bit 0 [MQTT-3.1.2-3], subscription options
    /// bits 6-7 [MQTT-3.8.3-5], will flags without the Will Flag [MQTT-3.1.2-11].
    #[error("reserved bits set in {0}")]
    ReservedBitsSet(&'static str),
    /// A property identifier that is not defined, or not allowed in this packet.
    #[error("property 0x{id:02X} not allowed in {packet}")]
    InvalidProperty {
        /// The packet type.
        packet: &'static str,
        /// The property identifier.
        id: u32,
    },
    /// A property that may appear once appeared twice.
    #[error("duplicate property 0x{id:02X} in {packet}")]
    DuplicateProperty {
        /// The packet type.
        packet: &'static str,
        /// The property identifier.
        id: u8,
    },
    /// A property value outside its allowed range (Receive Maximum 0, a boolean other than 0/1,
    /// Topic Alias 0, Subscription Identifier 0, ...).
    #[error("invalid value for property 0x{id:02X}")]
    InvalidPropertyValue {
        /// The property identifier.
        id: u8,
    },
    /// A reason code that is undefined or not allowed in this packet.
    #[error("invalid reason code 0x{code:02X} in {packet}")]
    InvalidReasonCode {
        /// The packet type.
        packet: &'static str,
        /// The byte.
        code: u8,
    },
    /// Packet Identifier 0 [MQTT-2.2.1-3] or a QoS 0 PUBLISH with one.
    #[error("invalid packet identifier in {0}")]
    InvalidPacketId(&'static str),
    /// The PUBLISH Topic Name has wildcards [MQTT-3.3.2-2] or is empty before v5.
    #[error("invalid topic name")]
    InvalidTopicName,
    /// SUBSCRIBE/UNSUBSCRIBE without any topic filter [MQTT-3.8.3-3, MQTT-3.10.3-2].
    #[error("{0} without topic filters")]
    NoTopicFilters(&'static str),
    /// Retain Handling 3, a Protocol Error (v5 §3.8.3.1).
    #[error("invalid retain handling")]
    InvalidRetainHandling,
    /// A password without a user name before v5 [MQTT-3.1.2-22].
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// The first packet on a connection was not CONNECT [MQTT-3.1.0-1].
    #[error("first packet is {0}, not CONNECT")]
    FirstPacketNotConnect(&'static str),
    /// A packet type that only the server sends arrived at the server (or vice versa).
    #[error("unexpected packet {0}")]
    UnexpectedPacket(PacketType),
}

impl DecodeError {
    /// The reason code a v5 server sends in DISCONNECT (or CONNACK) for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocolLevel(_) | DecodeError::InvalidProtocolName => {
                ReasonCode::UnsupportedProtocolVersion
            }
            DecodeError::InvalidTopicName => ReasonCode::TopicNameInvalid,
            DecodeError::DuplicateProperty { .. }
            | DecodeError::InvalidRetainHandling
            | DecodeError::NoTopicFilters(_)
            | DecodeError::FirstPacketNotConnect(_)
            | DecodeError::UnexpectedPacket(_)
            | DecodeError::InvalidPacketId(_)
            | DecodeError::InvalidPropertyValue { .. } => ReasonCode::ProtocolError,
            // A packet type the version does not define cannot be parsed at all.
            DecodeError::ReservedPacketType(_)
            | DecodeError::MalformedRemainingLength
            | DecodeError::InvalidFixedHeaderFlags { .. }
            | DecodeError::Malformed(..)
            | DecodeError::InvalidUtf8(_)
            | DecodeError::InvalidQoS(_)
            | DecodeError::ReservedBitsSet(_)
            | DecodeError::InvalidProperty { .. }
            | DecodeError::InvalidReasonCode { .. }
            | DecodeError::PasswordWithoutUsername => ReasonCode::MalformedPacket,
        }
    }

    /// A stable, short label for counters (`malformed`, `too_large`, ...).
    pub fn label(&self) -> &'static str {
        match self.reason_code() {
            ReasonCode::PacketTooLarge => "too_large",
            ReasonCode::ProtocolError => "protocol_error",
            ReasonCode::UnsupportedProtocolVersion => "unsupported_version",
            ReasonCode::TopicNameInvalid => "topic_invalid",
            _ => "malformed",
        }
    }
}

/// Why a packet could not be encoded. The broker only builds packets it can encode, so these
/// indicate a bug or a value from outside that was not checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field longer than 65,535 bytes.
    #[error("{0} longer than 65535 bytes")]
    FieldTooLong(&'static str),
    /// The packet would exceed the 268,435,455-byte maximum remaining length.
    #[error("packet too large to encode")]
    PacketTooLarge,
    /// A packet that does not exist in the negotiated version (AUTH before v5).
    #[error("{0} does not exist in this protocol version")]
    NotInVersion(&'static str),
    /// A PUBLISH whose QoS and packet identifier disagree (an identifier on QoS 0, none or 0 on
    /// QoS 1 and 2).
    #[error("PUBLISH packet identifier does not match its QoS")]
    PacketIdMismatch,
    /// A value the wire format cannot represent (a Subscription Identifier above 268,435,455).
    #[error("{0} out of range")]
    ValueOutOfRange(&'static str),
}
