//! Bytes → packet, enforcing every rule the spec puts on a single packet.
//!
//! Framing first: the fixed header alone decides whether the frame is complete, too large or
//! plainly invalid (reserved type, wrong flags), so a bad or oversized frame is rejected before
//! its body arrives. Then the complete frame is split off the caller's buffer, frozen, and the
//! body is parsed from a [`Reader`] whose strings and binaries are slices of that one frozen
//! frame: a PUBLISH's topic and payload are never copied.
//!
//! What this module does not check, because it needs connection state or is answered with a
//! reason code rather than a closed connection: topic filter syntax (SUBACK 0x8F), the will
//! topic (CONNACK 0x90), topic aliases, shared-subscription rules, client identifier rules,
//! Authentication Data without Authentication Method, a Subscription Identifier in a PUBLISH
//! from a client [MQTT-3.3.4-6], and which side may send which packet.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use super::properties as props;
use super::read::{Reader, VarInt, has_nul_or_wildcard, read_varint};
use crate::error::DecodeError;
use crate::packet::{
    Auth, Connack, Connect, Disconnect, LastWill, Packet, PacketType, ProtocolVersion, PubAck,
    Publish, QoS, RetainHandling, Suback, Subscribe, SubscriptionOptions, Unsuback, Unsubscribe,
};
use crate::reason::ReasonCode;

/// What the fixed header says about the frame at the front of the buffer.
struct Header {
    ptype: PacketType,
    flags: u8,
    /// Bytes of the fixed header (first byte + Remaining Length).
    header_len: usize,
    /// Bytes of the whole frame.
    total: usize,
}

/// Parses the fixed header. `Ok(None)` while the Remaining Length or the body is incomplete.
fn header(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Header>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let ptype = packet_type(first >> 4, version)?;
    let flags = first & 0x0F;
    check_flags(ptype, flags, version)?;
    let (remaining, n) = match read_varint(&buf[1..]) {
        VarInt::Value(v, n) => (v as usize, n),
        VarInt::Incomplete => return Ok(None),
        VarInt::TooLong => return Err(DecodeError::MalformedRemainingLength),
    };
    let header_len = 1 + n;
    let total = header_len + remaining;
    // The limit is on the whole packet (v5 §3.1.2.11.4), known as soon as the header is.
    if total > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Header {
        ptype,
        flags,
        header_len,
        total,
    }))
}

/// Type 0 is reserved in every version; 15 is AUTH in v5 and reserved before.
fn packet_type(nibble: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
    match PacketType::from_u8(nibble) {
        Some(PacketType::Auth) if !version.is_v5() => Err(DecodeError::ReservedPacketType(nibble)),
        Some(t) => Ok(t),
        None => Err(DecodeError::ReservedPacketType(nibble)),
    }
}

/// The low nibble of the first byte ([MQTT-2.2.2-1, MQTT-2.2.2-2] in 3.1.1, [MQTT-2.1.3-1] in 5.0).
///
/// PUBLISH: QoS 3 is invalid [MQTT-3.3.1-4], and DUP with QoS 0 is rejected in every version:
/// 3.1.1 and 5.0 both state "The DUP flag MUST be set to 0 for all QoS 0 messages"
/// [MQTT-3.3.1-2], a peer that breaks it has a broken retransmission path, and mosquitto rejects
/// it the same way.
///
/// MQTT 3.1 (not 3.1.1) had PUBREL, SUBSCRIBE and UNSUBSCRIBE carry QoS 1 *and* set DUP when
/// retransmitting them (3.1 §2.1), so for 3.1 the DUP bit of those three is ignored.
fn check_flags(ptype: PacketType, flags: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let ok = match ptype {
        PacketType::Publish => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(DecodeError::InvalidQoS("PUBLISH"));
            }
            if qos == 0 && flags & 0x08 != 0 {
                return Err(DecodeError::Malformed(
                    "PUBLISH",
                    "DUP set on a QoS 0 message [MQTT-3.3.1-2]",
                ));
            }
            true
        }
        PacketType::Pubrel | PacketType::Subscribe | PacketType::Unsubscribe => {
            if version == ProtocolVersion::V3_1 {
                flags & 0x07 == 0x02
            } else {
                flags == 0x02
            }
        }
        _ => flags == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidFixedHeaderFlags {
            packet: ptype.name(),
            flags,
        })
    }
}

/// Splits the whole frame off `buf` and returns its body. Advancing before freezing, rather
/// than slicing the frozen frame, saves a reference-count round trip per packet.
fn take_body(buf: &mut BytesMut, h: &Header) -> Bytes {
    let mut frame = buf.split_to(h.total);
    frame.advance(h.header_len);
    frame.freeze()
}

/// See [`super::decode`].
pub(crate) fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(h) = header(buf, version, max_packet_size)? else {
        return Ok(None);
    };
    let body = Reader::new(take_body(buf, &h), h.ptype.name());
    body_of(h.ptype, h.flags, body, version).map(Some)
}

/// See [`super::decode_connect`].
pub(crate) fn decode_connect(
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<Option<Connect>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match PacketType::from_u8(first >> 4) {
        Some(PacketType::Connect) => {}
        Some(other) => return Err(DecodeError::FirstPacketNotConnect(other.name())),
        None => return Err(DecodeError::ReservedPacketType(first >> 4)),
    }
    // CONNECT's layout does not depend on `version`; its own level byte decides.
    let Some(h) = header(buf, ProtocolVersion::V5, max_packet_size)? else {
        return Ok(None);
    };
    connect(Reader::new(take_body(buf, &h), "CONNECT")).map(Some)
}

fn body_of(
    ptype: PacketType,
    flags: u8,
    r: Reader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    Ok(match ptype {
        PacketType::Connect => Packet::Connect(Box::new(connect(r)?)),
        PacketType::Connack => Packet::Connack(connack(r, version)?),
        PacketType::Publish => Packet::Publish(publish(r, flags, version)?),
        PacketType::Puback => Packet::Puback(pub_ack(r, ptype, version)?),
        PacketType::Pubrec => Packet::Pubrec(pub_ack(r, ptype, version)?),
        PacketType::Pubrel => Packet::Pubrel(pub_ack(r, ptype, version)?),
        PacketType::Pubcomp => Packet::Pubcomp(pub_ack(r, ptype, version)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe(r, version)?),
        PacketType::Suback => Packet::Suback(suback(r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe(r, version)?),
        PacketType::Unsuback => Packet::Unsuback(unsuback(r, version)?),
        PacketType::Pingreq => {
            r.finish()?;
            Packet::Pingreq
        }
        PacketType::Pingresp => {
            r.finish()?;
            Packet::Pingresp
        }
        PacketType::Disconnect => Packet::Disconnect(disconnect(r, version)?),
        PacketType::Auth => Packet::Auth(auth(r)?),
    })
}

/// A Packet Identifier, which is never 0 [MQTT-2.2.1-3 in 5.0, MQTT-2.3.1-1 in 3.1.1].
fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::InvalidPacketId(r.ctx())),
        id => Ok(id),
    }
}

/// Whether `rc` is one of the reason codes the v5 spec lists for `packet` (§3.x.2.1 tables). The
/// state machine can use it to check what it is about to send.
pub fn reason_code_allowed(packet: PacketType, rc: ReasonCode) -> bool {
    use ReasonCode as R;
    match packet {
        // §3.2.2.2
        PacketType::Connack => matches!(
            rc,
            R::Success
                | R::UnspecifiedError
                | R::MalformedPacket
                | R::ProtocolError
                | R::ImplementationSpecificError
                | R::UnsupportedProtocolVersion
                | R::ClientIdentifierNotValid
                | R::BadUserNameOrPassword
                | R::NotAuthorized
                | R::ServerUnavailable
                | R::ServerBusy
                | R::Banned
                | R::BadAuthenticationMethod
                | R::TopicNameInvalid
                | R::PacketTooLarge
                | R::QuotaExceeded
                | R::PayloadFormatInvalid
                | R::RetainNotSupported
                | R::QoSNotSupported
                | R::UseAnotherServer
                | R::ServerMoved
                | R::ConnectionRateExceeded
        ),
        // §3.4.2.1 and §3.5.2.1
        PacketType::Puback | PacketType::Pubrec => matches!(
            rc,
            R::Success
                | R::NoMatchingSubscribers
                | R::UnspecifiedError
                | R::ImplementationSpecificError
                | R::NotAuthorized
                | R::TopicNameInvalid
                | R::PacketIdentifierInUse
                | R::QuotaExceeded
                | R::PayloadFormatInvalid
        ),
        // §3.6.2.1 and §3.7.2.1
        PacketType::Pubrel | PacketType::Pubcomp => {
            matches!(rc, R::Success | R::PacketIdentifierNotFound)
        }
        // §3.9.3
        PacketType::Suback => matches!(
            rc,
            R::Success
                | R::GrantedQoS1
                | R::GrantedQoS2
                | R::UnspecifiedError
                | R::ImplementationSpecificError
                | R::NotAuthorized
                | R::TopicFilterInvalid
                | R::PacketIdentifierInUse
                | R::QuotaExceeded
                | R::SharedSubscriptionsNotSupported
                | R::SubscriptionIdentifiersNotSupported
                | R::WildcardSubscriptionsNotSupported
        ),
        // §3.11.3
        PacketType::Unsuback => matches!(
            rc,
            R::Success
                | R::NoSubscriptionExisted
                | R::UnspecifiedError
                | R::ImplementationSpecificError
                | R::NotAuthorized
                | R::TopicFilterInvalid
                | R::PacketIdentifierInUse
        ),
        // §3.14.2.1
        PacketType::Disconnect => matches!(
            rc,
            R::Success
                | R::DisconnectWithWill
                | R::UnspecifiedError
                | R::MalformedPacket
                | R::ProtocolError
                | R::ImplementationSpecificError
                | R::NotAuthorized
                | R::ServerBusy
                | R::ServerShuttingDown
                | R::KeepAliveTimeout
                | R::SessionTakenOver
                | R::TopicFilterInvalid
                | R::TopicNameInvalid
                | R::ReceiveMaximumExceeded
                | R::TopicAliasInvalid
                | R::PacketTooLarge
                | R::MessageRateTooHigh
                | R::QuotaExceeded
                | R::AdministrativeAction
                | R::PayloadFormatInvalid
                | R::RetainNotSupported
                | R::QoSNotSupported
                | R::UseAnotherServer
                | R::ServerMoved
                | R::SharedSubscriptionsNotSupported
                | R::ConnectionRateExceeded
                | R::MaximumConnectTime
                | R::SubscriptionIdentifiersNotSupported
                | R::WildcardSubscriptionsNotSupported
        ),
        // §3.15.2.1
        PacketType::Auth => matches!(
            rc,
            R::Success | R::ContinueAuthentication | R::ReAuthenticate
        ),
        _ => false,
    }
}

/// A v5 reason code byte that must be defined and allowed in `packet`.
fn reason(byte: u8, packet: PacketType) -> Result<ReasonCode, DecodeError> {
    match ReasonCode::from_u8(byte) {
        Some(rc) if reason_code_allowed(packet, rc) => Ok(rc),
        _ => Err(DecodeError::InvalidReasonCode {
            packet: packet.name(),
            code: byte,
        }),
    }
}

fn connect(mut r: Reader) -> Result<Connect, DecodeError> {
    // Name and level come first and are checked before anything else, so that a client of an
    // unknown version, whose remaining layout we cannot know, still gets its CONNACK 0x01/0x84.
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQTT" | b"MQIsdp", other) => return Err(DecodeError::UnsupportedProtocolLevel(other)),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ReservedBitsSet("CONNECT flags [MQTT-3.1.2-3]"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::ReservedBitsSet(
            "CONNECT will flags without the Will Flag \
             [MQTT-3.1.2-13, MQTT-3.1.2-15 in 3.1.1; MQTT-3.1.2-11, MQTT-3.1.2-13 in 5.0]",
        ));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidQoS("will"))?;
    if has_password && !has_username && !v5 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        props::read_connect(&mut r)?
    } else {
        Default::default()
    };
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let properties = if v5 {
            props::read_will(&mut r)?
        } else {
            Default::default()
        };
        let topic = r.string("will topic")?;
        let payload = r.binary()?;
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(mut r: Reader, version: ProtocolVersion) -> Result<Connack, DecodeError> {
    let ack_flags = r.u8()?;
    // In 3.1 this byte is reserved and unused; 3.1.1 and 5.0 use bit 0 as Session Present and
    // reserve bits 1-7 [MQTT-3.2.2-1 in 5.0].
    let session_present = match version {
        ProtocolVersion::V3_1 => false,
        _ if ack_flags & 0xFE != 0 => return Err(DecodeError::ReservedBitsSet("CONNACK flags")),
        _ => ack_flags & 0x01 != 0,
    };
    let code = r.u8()?;
    let (reason_code, properties) = if version.is_v5() {
        (
            reason(code, PacketType::Connack)?,
            props::read_connack(&mut r)?,
        )
    } else {
        let rc = ReasonCode::from_v3_connack(code).ok_or(DecodeError::InvalidReasonCode {
            packet: "CONNACK",
            code,
        })?;
        (rc, Default::default())
    };
    r.finish()?;
    Ok(Connack {
        session_present,
        reason_code,
        properties,
    })
}

/// A PUBLISH Topic Name: a valid string without wildcards [MQTT-3.3.2-2]; empty only in v5,
/// where a Topic Alias may stand for it (the state machine resolves that).
fn topic_name(r: &mut Reader, version: ProtocolVersion) -> Result<ByteString, DecodeError> {
    let raw = r.binary()?;
    if raw.is_empty() && !version.is_v5() {
        return Err(DecodeError::InvalidTopicName);
    }
    // One scan for the three rare bytes; only when one is found do we find out which.
    if has_nul_or_wildcard(&raw) {
        if raw.contains(&0) {
            return Err(DecodeError::InvalidUtf8("topic name"));
        }
        return Err(DecodeError::InvalidTopicName);
    }
    // U+0000 was excluded above, so only UTF-8 well-formedness is left [MQTT-1.5.4-1].
    ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8("topic name"))
}

fn publish(mut r: Reader, flags: u8, version: ProtocolVersion) -> Result<Publish, DecodeError> {
    // check_flags already rejected QoS 3.
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQoS("PUBLISH"))?;
    let topic = topic_name(&mut r, version)?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(&mut r)?)
    };
    let properties = if version.is_v5() {
        props::read_publish(&mut r)?
    } else {
        Default::default()
    };
    Ok(Publish {
        dup: flags & 0x08 != 0,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload: r.into_rest(),
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. Before v5 exactly a Packet Identifier. In v5, Remaining
/// Length 2 means Success without properties and 3 means a reason code without properties
/// (§3.4.2.1, §3.4.2.2.1).
fn pub_ack(
    mut r: Reader,
    ptype: PacketType,
    version: ProtocolVersion,
) -> Result<PubAck, DecodeError> {
    let id = packet_id(&mut r)?;
    if !version.is_v5() {
        r.finish()?;
        return Ok(PubAck::new(id));
    }
    let reason_code = if r.is_empty() {
        ReasonCode::Success
    } else {
        reason(r.u8()?, ptype)?
    };
    let properties = if r.is_empty() {
        Default::default()
    } else {
        props::read_ack(&mut r)?
    };
    r.finish()?;
    Ok(PubAck {
        packet_id: id,
        reason_code,
        properties,
    })
}

/// The Subscription Options byte (§3.8.3.1).
fn subscription_options(
    byte: u8,
    version: ProtocolVersion,
) -> Result<SubscriptionOptions, DecodeError> {
    if version.is_v5() {
        if byte & 0xC0 != 0 {
            return Err(DecodeError::ReservedBitsSet(
                "subscription options [MQTT-3.8.3-5]",
            ));
        }
    } else if byte & 0xFC != 0 {
        return Err(DecodeError::ReservedBitsSet(
            "subscription options [MQTT-3.8.3-4 in 3.1.1]",
        ));
    }
    let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::InvalidQoS("subscription options"))?;
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::InvalidRetainHandling),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

fn subscribe(mut r: Reader, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(&mut r)?;
    let properties = if version.is_v5() {
        props::read_subscribe(&mut r)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        let options = subscription_options(r.u8()?, version)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters("SUBSCRIBE"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// The reason-code list of SUBACK/UNSUBACK: one per filter, and a SUBSCRIBE or UNSUBSCRIBE has
/// at least one filter, so an empty list is malformed.
fn reason_list(
    codes: Bytes,
    ptype: PacketType,
    map: impl Fn(u8) -> Result<ReasonCode, DecodeError>,
) -> Result<Vec<ReasonCode>, DecodeError> {
    if codes.is_empty() {
        return Err(DecodeError::Malformed(ptype.name(), "no reason codes"));
    }
    codes.iter().map(|&b| map(b)).collect()
}

fn suback(mut r: Reader, version: ProtocolVersion) -> Result<Suback, DecodeError> {
    let packet_id = packet_id(&mut r)?;
    let properties = if version.is_v5() {
        props::read_ack(&mut r)?
    } else {
        Default::default()
    };
    let reason_codes = if version.is_v5() {
        reason_list(r.rest(), PacketType::Suback, |b| {
            reason(b, PacketType::Suback)
        })?
    } else {
        // 3.1.1 §3.9.3: 0x00, 0x01, 0x02 or 0x80 [MQTT-3.9.3-2].
        reason_list(r.rest(), PacketType::Suback, |b| match b {
            0x00 => Ok(ReasonCode::Success),
            0x01 => Ok(ReasonCode::GrantedQoS1),
            0x02 => Ok(ReasonCode::GrantedQoS2),
            0x80 => Ok(ReasonCode::UnspecifiedError),
            code => Err(DecodeError::InvalidReasonCode {
                packet: "SUBACK",
                code,
            }),
        })?
    };
    Ok(Suback {
        packet_id,
        reason_codes,
        properties,
    })
}

fn unsubscribe(mut r: Reader, version: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(&mut r)?;
    let user_properties = if version.is_v5() {
        props::read_unsubscribe(&mut r)?
    } else {
        Vec::new()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string("topic filter")?);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters("UNSUBSCRIBE"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        user_properties,
    })
}

fn unsuback(mut r: Reader, version: ProtocolVersion) -> Result<Unsuback, DecodeError> {
    let packet_id = packet_id(&mut r)?;
    if !version.is_v5() {
        // Before v5 UNSUBACK is just the Packet Identifier.
        r.finish()?;
        return Ok(Unsuback {
            packet_id,
            reason_codes: Vec::new(),
            properties: Default::default(),
        });
    }
    let properties = props::read_ack(&mut r)?;
    let reason_codes = reason_list(r.rest(), PacketType::Unsuback, |b| {
        reason(b, PacketType::Unsuback)
    })?;
    Ok(Unsuback {
        packet_id,
        reason_codes,
        properties,
    })
}

fn disconnect(mut r: Reader, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    if !version.is_v5() {
        r.finish()?;
        return Ok(Disconnect::default());
    }
    // §3.14.2.1: Remaining Length 0 is Normal disconnection; below 2 there is no Property
    // Length (§3.14.2.2.1).
    let mut out = Disconnect::default();
    if !r.is_empty() {
        out.reason_code = reason(r.u8()?, PacketType::Disconnect)?;
    }
    if !r.is_empty() {
        out.properties = props::read_disconnect(&mut r)?;
    }
    r.finish()?;
    Ok(out)
}

/// AUTH (v5 only; `packet_type` rejected it earlier for older versions). Remaining Length 0
/// means Success without properties (§3.15.2.1). A Remaining Length of 1 (reason code only) is
/// not described by the spec but is read like DISCONNECT's, as mosquitto does.
fn auth(mut r: Reader) -> Result<Auth, DecodeError> {
    let mut out = Auth::default();
    if !r.is_empty() {
        out.reason_code = reason(r.u8()?, PacketType::Auth)?;
    }
    if !r.is_empty() {
        out.properties = props::read_auth(&mut r)?;
    }
    r.finish()?;
    Ok(out)
}
