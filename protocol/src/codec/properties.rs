//! MQTT 5.0 properties (§2.2.2): one generic reader and one generic writer, and the per-packet
//! property structs filled from / visited by them.
//!
//! Every packet's property block has the same shape (a Variable Byte Integer length, then
//! `(identifier, value)` pairs) and the same rules (which identifiers a packet allows, which may
//! repeat, which values are legal), so those rules live once here as tables instead of once per
//! packet. A struct only says which field a property goes into ([`read_connect`] etc.) or which
//! properties it has ([`Props::each`]); length computation and writing are both derived from
//! that single list, so they cannot disagree.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::encode::{put_varint, varint_len};
use super::read::Reader;
use crate::error::{DecodeError, EncodeError};
use crate::packet::{
    AckProperties, AuthProperties, ConnackProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, QoS, SubscribeProperties, UserProperty, WillProperties,
};

/// Property identifiers (§2.2.2.2). All are one byte in MQTT 5.0 although the wire format is a
/// Variable Byte Integer.
pub(crate) mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// The largest value a Variable Byte Integer can hold (and so the largest Subscription
/// Identifier).
pub(crate) const MAX_VARINT: u32 = 268_435_455;

/// Which properties a packet (or the will) may carry and which of them may repeat. Identifiers
/// are below 64, so a bit set in a `u64` is enough.
pub(crate) struct PropertySet {
    /// Name used in errors; `None` means the packet's own name.
    name: Option<&'static str>,
    allowed: u64,
    repeatable: u64,
}

const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

use id::*;

/// User Property may repeat in every packet (§2.2.2.2).
const USER: u64 = 1 << USER_PROPERTY;

/// §3.1.2.11.
pub(crate) const CONNECT: PropertySet = PropertySet {
    name: None,
    allowed: mask(&[
        SESSION_EXPIRY_INTERVAL,
        RECEIVE_MAXIMUM,
        MAXIMUM_PACKET_SIZE,
        TOPIC_ALIAS_MAXIMUM,
        REQUEST_RESPONSE_INFORMATION,
        REQUEST_PROBLEM_INFORMATION,
        USER_PROPERTY,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
    ]),
    repeatable: USER,
};

/// §3.1.3.2.
pub(crate) const WILL: PropertySet = PropertySet {
    name: Some("CONNECT will properties"),
    allowed: mask(&[
        WILL_DELAY_INTERVAL,
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        USER_PROPERTY,
    ]),
    repeatable: USER,
};

/// §3.2.2.3.
pub(crate) const CONNACK: PropertySet = PropertySet {
    name: None,
    allowed: mask(&[
        SESSION_EXPIRY_INTERVAL,
        RECEIVE_MAXIMUM,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        MAXIMUM_PACKET_SIZE,
        ASSIGNED_CLIENT_IDENTIFIER,
        TOPIC_ALIAS_MAXIMUM,
        REASON_STRING,
        USER_PROPERTY,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
        SERVER_KEEP_ALIVE,
        RESPONSE_INFORMATION,
        SERVER_REFERENCE,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
    ]),
    repeatable: USER,
};

/// §3.3.2.3. A PUBLISH sent to a client carries one Subscription Identifier per matching
/// subscription, so that property may repeat here and nowhere else.
pub(crate) const PUBLISH: PropertySet = PropertySet {
    name: None,
    allowed: mask(&[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        TOPIC_ALIAS,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        USER_PROPERTY,
        SUBSCRIPTION_IDENTIFIER,
        CONTENT_TYPE,
    ]),
    repeatable: USER | (1 << SUBSCRIPTION_IDENTIFIER),
};

/// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK (§3.4.2.2 and the sections that copy it).
pub(crate) const ACK: PropertySet = PropertySet {
    name: None,
    allowed: mask(&[REASON_STRING, USER_PROPERTY]),
    repeatable: USER,
};

/// §3.8.2.1.
pub(crate) const SUBSCRIBE: PropertySet = PropertySet {
    name: None,
    allowed: mask(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]),
    repeatable: USER,
};

/// §3.10.2.1.
pub(crate) const UNSUBSCRIBE: PropertySet = PropertySet {
    name: None,
    allowed: USER,
    repeatable: USER,
};

/// §3.14.2.2.
pub(crate) const DISCONNECT: PropertySet = PropertySet {
    name: None,
    allowed: mask(&[
        SESSION_EXPIRY_INTERVAL,
        REASON_STRING,
        USER_PROPERTY,
        SERVER_REFERENCE,
    ]),
    repeatable: USER,
};

/// §3.15.2.2.
pub(crate) const AUTH: PropertySet = PropertySet {
    name: None,
    allowed: mask(&[
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REASON_STRING,
        USER_PROPERTY,
    ]),
    repeatable: USER,
};

/// One decoded property, its value already range-checked.
#[derive(Debug)]
pub(crate) enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(ByteString),
    ResponseTopic(ByteString),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(ByteString),
    ServerKeepAlive(u16),
    AuthenticationMethod(ByteString),
    AuthenticationData(Bytes),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(ByteString),
    ServerReference(ByteString),
    ReasonString(ByteString),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(QoS),
    RetainAvailable(bool),
    User(ByteString, ByteString),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

impl Property {
    fn id(&self) -> u8 {
        match self {
            Property::PayloadFormatIndicator(_) => PAYLOAD_FORMAT_INDICATOR,
            Property::MessageExpiryInterval(_) => MESSAGE_EXPIRY_INTERVAL,
            Property::ContentType(_) => CONTENT_TYPE,
            Property::ResponseTopic(_) => RESPONSE_TOPIC,
            Property::CorrelationData(_) => CORRELATION_DATA,
            Property::SubscriptionIdentifier(_) => SUBSCRIPTION_IDENTIFIER,
            Property::SessionExpiryInterval(_) => SESSION_EXPIRY_INTERVAL,
            Property::AssignedClientIdentifier(_) => ASSIGNED_CLIENT_IDENTIFIER,
            Property::ServerKeepAlive(_) => SERVER_KEEP_ALIVE,
            Property::AuthenticationMethod(_) => AUTHENTICATION_METHOD,
            Property::AuthenticationData(_) => AUTHENTICATION_DATA,
            Property::RequestProblemInformation(_) => REQUEST_PROBLEM_INFORMATION,
            Property::WillDelayInterval(_) => WILL_DELAY_INTERVAL,
            Property::RequestResponseInformation(_) => REQUEST_RESPONSE_INFORMATION,
            Property::ResponseInformation(_) => RESPONSE_INFORMATION,
            Property::ServerReference(_) => SERVER_REFERENCE,
            Property::ReasonString(_) => REASON_STRING,
            Property::ReceiveMaximum(_) => RECEIVE_MAXIMUM,
            Property::TopicAliasMaximum(_) => TOPIC_ALIAS_MAXIMUM,
            Property::TopicAlias(_) => TOPIC_ALIAS,
            Property::MaximumQoS(_) => MAXIMUM_QOS,
            Property::RetainAvailable(_) => RETAIN_AVAILABLE,
            Property::User(..) => USER_PROPERTY,
            Property::MaximumPacketSize(_) => MAXIMUM_PACKET_SIZE,
            Property::WildcardSubscriptionAvailable(_) => WILDCARD_SUBSCRIPTION_AVAILABLE,
            Property::SubscriptionIdentifierAvailable(_) => SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            Property::SharedSubscriptionAvailable(_) => SHARED_SUBSCRIPTION_AVAILABLE,
        }
    }
}

/// Reads a property block (length, then properties) and hands each property to `f`.
///
/// Checks, in this order, for each property: the identifier is allowed in `set` (else
/// `InvalidProperty`, which also covers undefined identifiers), it has not appeared before unless
/// it may repeat (`DuplicateProperty`), its value fits in the block (`Malformed`) and is in range
/// (`InvalidPropertyValue`).
pub(crate) fn read_properties(
    r: &mut Reader,
    set: &PropertySet,
    mut f: impl FnMut(Property) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let packet = set.name.unwrap_or(r.ctx());
    let len = r.varint()? as usize;
    let mut p = r.sub(len)?;
    let mut seen = 0u64;
    while !p.is_empty() {
        let raw_id = p.varint()?;
        let bit = if raw_id < 64 { 1u64 << raw_id } else { 0 };
        if set.allowed & bit == 0 {
            return Err(DecodeError::InvalidProperty { packet, id: raw_id });
        }
        // raw_id < 64 here because `bit` was nonzero.
        let id = raw_id as u8;
        if seen & bit != 0 && set.repeatable & bit == 0 {
            return Err(DecodeError::DuplicateProperty { packet, id });
        }
        seen |= bit;
        f(read_value(&mut p, id)?)?;
    }
    Ok(())
}

fn read_value(p: &mut Reader, id: u8) -> Result<Property, DecodeError> {
    let invalid = DecodeError::InvalidPropertyValue { id };
    let boolean = |b: u8| match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue { id }),
    };
    let nonzero_u16 = |v: u16| {
        if v == 0 {
            Err(DecodeError::InvalidPropertyValue { id })
        } else {
            Ok(v)
        }
    };
    Ok(match id {
        PAYLOAD_FORMAT_INDICATOR => match p.u8()? {
            v @ (0 | 1) => Property::PayloadFormatIndicator(v),
            _ => return Err(invalid),
        },
        MESSAGE_EXPIRY_INTERVAL => Property::MessageExpiryInterval(p.u32()?),
        CONTENT_TYPE => Property::ContentType(p.string("content type")?),
        RESPONSE_TOPIC => Property::ResponseTopic(p.string("response topic")?),
        CORRELATION_DATA => Property::CorrelationData(p.binary()?),
        // "It is a Protocol Error if the Subscription Identifier has a value of 0" (§3.8.2.1.2).
        SUBSCRIPTION_IDENTIFIER => match p.varint()? {
            0 => return Err(invalid),
            v => Property::SubscriptionIdentifier(v),
        },
        SESSION_EXPIRY_INTERVAL => Property::SessionExpiryInterval(p.u32()?),
        ASSIGNED_CLIENT_IDENTIFIER => {
            Property::AssignedClientIdentifier(p.string("assigned client identifier")?)
        }
        SERVER_KEEP_ALIVE => Property::ServerKeepAlive(p.u16()?),
        AUTHENTICATION_METHOD => Property::AuthenticationMethod(p.string("authentication method")?),
        AUTHENTICATION_DATA => Property::AuthenticationData(p.binary()?),
        REQUEST_PROBLEM_INFORMATION => Property::RequestProblemInformation(boolean(p.u8()?)?),
        WILL_DELAY_INTERVAL => Property::WillDelayInterval(p.u32()?),
        REQUEST_RESPONSE_INFORMATION => Property::RequestResponseInformation(boolean(p.u8()?)?),
        RESPONSE_INFORMATION => Property::ResponseInformation(p.string("response information")?),
        SERVER_REFERENCE => Property::ServerReference(p.string("server reference")?),
        REASON_STRING => Property::ReasonString(p.string("reason string")?),
        // Receive Maximum and Topic Alias are Protocol Errors when 0 (§3.1.2.11.3, §3.3.2.3.4).
        RECEIVE_MAXIMUM => Property::ReceiveMaximum(nonzero_u16(p.u16()?)?),
        TOPIC_ALIAS_MAXIMUM => Property::TopicAliasMaximum(p.u16()?),
        TOPIC_ALIAS => Property::TopicAlias(nonzero_u16(p.u16()?)?),
        // Maximum QoS is 0 or 1; 2 is expressed by leaving it out (§3.2.2.3.4).
        MAXIMUM_QOS => match p.u8()? {
            0 => Property::MaximumQoS(QoS::AtMostOnce),
            1 => Property::MaximumQoS(QoS::AtLeastOnce),
            _ => return Err(invalid),
        },
        RETAIN_AVAILABLE => Property::RetainAvailable(boolean(p.u8()?)?),
        USER_PROPERTY => {
            let k = p.string("user property")?;
            let v = p.string("user property")?;
            Property::User(k, v)
        }
        // Maximum Packet Size 0 is a Protocol Error (§3.1.2.11.4).
        MAXIMUM_PACKET_SIZE => match p.u32()? {
            0 => return Err(invalid),
            v => Property::MaximumPacketSize(v),
        },
        WILDCARD_SUBSCRIPTION_AVAILABLE => {
            Property::WildcardSubscriptionAvailable(boolean(p.u8()?)?)
        }
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            Property::SubscriptionIdentifierAvailable(boolean(p.u8()?)?)
        }
        SHARED_SUBSCRIPTION_AVAILABLE => Property::SharedSubscriptionAvailable(boolean(p.u8()?)?),
        // Only reachable if a PropertySet names an identifier this table does not know.
        _ => {
            return Err(DecodeError::InvalidProperty {
                packet: p.ctx(),
                id: u32::from(id),
            });
        }
    })
}

/// The error for a property that the set allowed but the struct has no field for. The sets and
/// the structs agree, so this is defensive: a mismatch must not become a panic or a silent drop.
fn unexpected(packet: &'static str, p: &Property) -> DecodeError {
    DecodeError::InvalidProperty {
        packet,
        id: u32::from(p.id()),
    }
}

pub(crate) fn read_connect(r: &mut Reader) -> Result<ConnectProperties, DecodeError> {
    let mut out = ConnectProperties::default();
    let ctx = r.ctx();
    read_properties(r, &CONNECT, |p| {
        match p {
            Property::SessionExpiryInterval(v) => out.session_expiry_interval = Some(v),
            Property::ReceiveMaximum(v) => out.receive_maximum = Some(v),
            Property::MaximumPacketSize(v) => out.maximum_packet_size = Some(v),
            Property::TopicAliasMaximum(v) => out.topic_alias_maximum = Some(v),
            Property::RequestResponseInformation(v) => out.request_response_information = Some(v),
            Property::RequestProblemInformation(v) => out.request_problem_information = Some(v),
            Property::AuthenticationMethod(v) => out.authentication_method = Some(v),
            Property::AuthenticationData(v) => out.authentication_data = Some(v),
            Property::User(k, v) => out.user_properties.push((k, v)),
            other => return Err(unexpected(ctx, &other)),
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn read_will(r: &mut Reader) -> Result<WillProperties, DecodeError> {
    let mut out = WillProperties::default();
    read_properties(r, &WILL, |p| {
        match p {
            Property::WillDelayInterval(v) => out.will_delay_interval = Some(v),
            Property::PayloadFormatIndicator(v) => out.payload_format_indicator = Some(v),
            Property::MessageExpiryInterval(v) => out.message_expiry_interval = Some(v),
            Property::ContentType(v) => out.content_type = Some(v),
            Property::ResponseTopic(v) => out.response_topic = Some(v),
            Property::CorrelationData(v) => out.correlation_data = Some(v),
            Property::User(k, v) => out.user_properties.push((k, v)),
            other => return Err(unexpected("CONNECT will properties", &other)),
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn read_connack(r: &mut Reader) -> Result<ConnackProperties, DecodeError> {
    let mut out = ConnackProperties::default();
    let ctx = r.ctx();
    read_properties(r, &CONNACK, |p| {
        match p {
            Property::SessionExpiryInterval(v) => out.session_expiry_interval = Some(v),
            Property::ReceiveMaximum(v) => out.receive_maximum = Some(v),
            Property::MaximumQoS(v) => out.maximum_qos = Some(v),
            Property::RetainAvailable(v) => out.retain_available = Some(v),
            Property::MaximumPacketSize(v) => out.maximum_packet_size = Some(v),
            Property::AssignedClientIdentifier(v) => out.assigned_client_identifier = Some(v),
            Property::TopicAliasMaximum(v) => out.topic_alias_maximum = Some(v),
            Property::ReasonString(v) => out.reason_string = Some(v),
            Property::User(k, v) => out.user_properties.push((k, v)),
            Property::WildcardSubscriptionAvailable(v) => {
                out.wildcard_subscription_available = Some(v)
            }
            Property::SubscriptionIdentifierAvailable(v) => {
                out.subscription_identifiers_available = Some(v)
            }
            Property::SharedSubscriptionAvailable(v) => out.shared_subscription_available = Some(v),
            Property::ServerKeepAlive(v) => out.server_keep_alive = Some(v),
            Property::ResponseInformation(v) => out.response_information = Some(v),
            Property::ServerReference(v) => out.server_reference = Some(v),
            Property::AuthenticationMethod(v) => out.authentication_method = Some(v),
            Property::AuthenticationData(v) => out.authentication_data = Some(v),
            other => return Err(unexpected(ctx, &other)),
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn read_publish(r: &mut Reader) -> Result<PublishProperties, DecodeError> {
    let mut out = PublishProperties::default();
    let ctx = r.ctx();
    read_properties(r, &PUBLISH, |p| {
        match p {
            Property::PayloadFormatIndicator(v) => out.payload_format_indicator = Some(v),
            Property::MessageExpiryInterval(v) => out.message_expiry_interval = Some(v),
            Property::TopicAlias(v) => out.topic_alias = Some(v),
            Property::ResponseTopic(v) => out.response_topic = Some(v),
            Property::CorrelationData(v) => out.correlation_data = Some(v),
            Property::User(k, v) => out.user_properties.push((k, v)),
            Property::SubscriptionIdentifier(v) => out.subscription_identifiers.push(v),
            Property::ContentType(v) => out.content_type = Some(v),
            other => return Err(unexpected(ctx, &other)),
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn read_ack(r: &mut Reader) -> Result<AckProperties, DecodeError> {
    let mut out = AckProperties::default();
    let ctx = r.ctx();
    read_properties(r, &ACK, |p| {
        match p {
            Property::ReasonString(v) => out.reason_string = Some(v),
            Property::User(k, v) => out.user_properties.push((k, v)),
            other => return Err(unexpected(ctx, &other)),
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn read_subscribe(r: &mut Reader) -> Result<SubscribeProperties, DecodeError> {
    let mut out = SubscribeProperties::default();
    let ctx = r.ctx();
    read_properties(r, &SUBSCRIBE, |p| {
        match p {
            Property::SubscriptionIdentifier(v) => out.subscription_identifier = Some(v),
            Property::User(k, v) => out.user_properties.push((k, v)),
            other => return Err(unexpected(ctx, &other)),
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn read_unsubscribe(r: &mut Reader) -> Result<Vec<UserProperty>, DecodeError> {
    let mut out = Vec::new();
    let ctx = r.ctx();
    read_properties(r, &UNSUBSCRIBE, |p| {
        match p {
            Property::User(k, v) => out.push((k, v)),
            other => return Err(unexpected(ctx, &other)),
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn read_disconnect(r: &mut Reader) -> Result<DisconnectProperties, DecodeError> {
    let mut out = DisconnectProperties::default();
    let ctx = r.ctx();
    read_properties(r, &DISCONNECT, |p| {
        match p {
            Property::SessionExpiryInterval(v) => out.session_expiry_interval = Some(v),
            Property::ReasonString(v) => out.reason_string = Some(v),
            Property::User(k, v) => out.user_properties.push((k, v)),
            Property::ServerReference(v) => out.server_reference = Some(v),
            other => return Err(unexpected(ctx, &other)),
        }
        Ok(())
    })?;
    Ok(out)
}

pub(crate) fn read_auth(r: &mut Reader) -> Result<AuthProperties, DecodeError> {
    let mut out = AuthProperties::default();
    let ctx = r.ctx();
    read_properties(r, &AUTH, |p| {
        match p {
            Property::AuthenticationMethod(v) => out.authentication_method = Some(v),
            Property::AuthenticationData(v) => out.authentication_data = Some(v),
            Property::ReasonString(v) => out.reason_string = Some(v),
            Property::User(k, v) => out.user_properties.push((k, v)),
            other => return Err(unexpected(ctx, &other)),
        }
        Ok(())
    })?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// A property value as the encoder sees it, borrowed from the struct.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    Pair(&'a str, &'a str),
}

/// A property struct that can list its present properties. Both [`props_len`] and
/// [`write_props`] are driven by this one list.
pub(crate) trait Props {
    fn each(&self, f: &mut impl FnMut(u8, Value<'_>));
}

fn user(f: &mut impl FnMut(u8, Value<'_>), props: &[UserProperty]) {
    for (k, v) in props {
        f(USER_PROPERTY, Value::Pair(k, v));
    }
}

/// Length of the properties themselves (without the length prefix). Also the only place the
/// encoder validates property values, since it always runs before [`write_props`].
pub(crate) fn props_len(p: &impl Props) -> Result<usize, EncodeError> {
    let mut len = 0usize;
    let mut err = None;
    p.each(&mut |id, v| {
        // Every identifier is one byte long.
        len += 1 + match v {
            Value::Byte(_) => 1,
            Value::U16(_) => 2,
            Value::U32(_) => 4,
            Value::VarInt(x) => {
                if x > MAX_VARINT {
                    err = Some(EncodeError::ValueOutOfRange(prop_name(id)));
                }
                varint_len(x as usize)
            }
            Value::Str(s) => field_len(s.len(), id, &mut err),
            Value::Bin(b) => field_len(b.len(), id, &mut err),
            Value::Pair(k, v) => {
                field_len(k.len(), id, &mut err) + field_len(v.len(), id, &mut err)
            }
        };
    });
    match err {
        Some(e) => Err(e),
        None => Ok(len),
    }
}

fn field_len(n: usize, id: u8, err: &mut Option<EncodeError>) -> usize {
    if n > usize::from(u16::MAX) {
        *err = Some(EncodeError::FieldTooLong(prop_name(id)));
    }
    2 + n
}

/// The bytes a property block of `len` takes on the wire, prefix included.
pub(crate) fn block_len(len: usize) -> usize {
    varint_len(len) + len
}

/// Writes the length prefix and the properties. `len` is what [`props_len`] returned for `p`.
pub(crate) fn write_props(p: &impl Props, len: usize, buf: &mut BytesMut) {
    put_varint(buf, len);
    p.each(&mut |id, v| {
        buf.put_u8(id);
        match v {
            Value::Byte(x) => buf.put_u8(x),
            Value::U16(x) => buf.put_u16(x),
            Value::U32(x) => buf.put_u32(x),
            Value::VarInt(x) => put_varint(buf, x as usize),
            Value::Str(s) => put_prefixed(buf, s.as_bytes()),
            Value::Bin(b) => put_prefixed(buf, b),
            Value::Pair(k, v) => {
                put_prefixed(buf, k.as_bytes());
                put_prefixed(buf, v.as_bytes());
            }
        }
    });
}

/// Writes a two-byte length and the bytes; lengths were checked by the length pass.
pub(crate) fn put_prefixed(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

/// Name for errors.
fn prop_name(id: u8) -> &'static str {
    match id {
        CONTENT_TYPE => "content type",
        RESPONSE_TOPIC => "response topic",
        CORRELATION_DATA => "correlation data",
        SUBSCRIPTION_IDENTIFIER => "subscription identifier",
        ASSIGNED_CLIENT_IDENTIFIER => "assigned client identifier",
        AUTHENTICATION_METHOD => "authentication method",
        AUTHENTICATION_DATA => "authentication data",
        RESPONSE_INFORMATION => "response information",
        SERVER_REFERENCE => "server reference",
        REASON_STRING => "reason string",
        USER_PROPERTY => "user property",
        _ => "property",
    }
}

fn opt_str(f: &mut impl FnMut(u8, Value<'_>), id: u8, v: &Option<ByteString>) {
    if let Some(s) = v {
        f(id, Value::Str(s));
    }
}

fn opt_bin(f: &mut impl FnMut(u8, Value<'_>), id: u8, v: &Option<Bytes>) {
    if let Some(b) = v {
        f(id, Value::Bin(b));
    }
}

fn opt_u32(f: &mut impl FnMut(u8, Value<'_>), id: u8, v: Option<u32>) {
    if let Some(x) = v {
        f(id, Value::U32(x));
    }
}

fn opt_u16(f: &mut impl FnMut(u8, Value<'_>), id: u8, v: Option<u16>) {
    if let Some(x) = v {
        f(id, Value::U16(x));
    }
}

fn opt_bool(f: &mut impl FnMut(u8, Value<'_>), id: u8, v: Option<bool>) {
    if let Some(x) = v {
        f(id, Value::Byte(u8::from(x)));
    }
}

impl Props for ConnectProperties {
    fn each(&self, f: &mut impl FnMut(u8, Value<'_>)) {
        opt_u32(f, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        opt_u16(f, RECEIVE_MAXIMUM, self.receive_maximum);
        opt_u32(f, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        opt_u16(f, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        opt_bool(
            f,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        opt_bool(
            f,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        opt_str(f, AUTHENTICATION_METHOD, &self.authentication_method);
        opt_bin(f, AUTHENTICATION_DATA, &self.authentication_data);
        user(f, &self.user_properties);
    }
}

impl Props for WillProperties {
    fn each(&self, f: &mut impl FnMut(u8, Value<'_>)) {
        opt_u32(f, WILL_DELAY_INTERVAL, self.will_delay_interval);
        if let Some(x) = self.payload_format_indicator {
            f(PAYLOAD_FORMAT_INDICATOR, Value::Byte(x));
        }
        opt_u32(f, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        opt_str(f, CONTENT_TYPE, &self.content_type);
        opt_str(f, RESPONSE_TOPIC, &self.response_topic);
        opt_bin(f, CORRELATION_DATA, &self.correlation_data);
        user(f, &self.user_properties);
    }
}

impl Props for ConnackProperties {
    fn each(&self, f: &mut impl FnMut(u8, Value<'_>)) {
        opt_u32(f, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        opt_u16(f, RECEIVE_MAXIMUM, self.receive_maximum);
        if let Some(q) = self.maximum_qos {
            f(MAXIMUM_QOS, Value::Byte(q.as_u8()));
        }
        opt_bool(f, RETAIN_AVAILABLE, self.retain_available);
        opt_u32(f, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        opt_str(
            f,
            ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        );
        opt_u16(f, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        opt_str(f, REASON_STRING, &self.reason_string);
        opt_bool(
            f,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        opt_bool(
            f,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifiers_available,
        );
        opt_bool(
            f,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        opt_u16(f, SERVER_KEEP_ALIVE, self.server_keep_alive);
        opt_str(f, RESPONSE_INFORMATION, &self.response_information);
        opt_str(f, SERVER_REFERENCE, &self.server_reference);
        opt_str(f, AUTHENTICATION_METHOD, &self.authentication_method);
        opt_bin(f, AUTHENTICATION_DATA, &self.authentication_data);
        user(f, &self.user_properties);
    }
}

impl Props for PublishProperties {
    fn each(&self, f: &mut impl FnMut(u8, Value<'_>)) {
        if let Some(x) = self.payload_format_indicator {
            f(PAYLOAD_FORMAT_INDICATOR, Value::Byte(x));
        }
        opt_u32(f, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        opt_u16(f, TOPIC_ALIAS, self.topic_alias);
        opt_str(f, RESPONSE_TOPIC, &self.response_topic);
        opt_bin(f, CORRELATION_DATA, &self.correlation_data);
        opt_str(f, CONTENT_TYPE, &self.content_type);
        for &x in &self.subscription_identifiers {
            f(SUBSCRIPTION_IDENTIFIER, Value::VarInt(x));
        }
        user(f, &self.user_properties);
    }
}

impl Props for AckProperties {
    fn each(&self, f: &mut impl FnMut(u8, Value<'_>)) {
        opt_str(f, REASON_STRING, &self.reason_string);
        user(f, &self.user_properties);
    }
}

impl Props for SubscribeProperties {
    fn each(&self, f: &mut impl FnMut(u8, Value<'_>)) {
        if let Some(x) = self.subscription_identifier {
            f(SUBSCRIPTION_IDENTIFIER, Value::VarInt(x));
        }
        user(f, &self.user_properties);
    }
}

/// UNSUBSCRIBE has only User Properties, kept directly in the packet.
pub(crate) struct UserOnly<'p>(pub(crate) &'p [UserProperty]);

impl Props for UserOnly<'_> {
    fn each(&self, f: &mut impl FnMut(u8, Value<'_>)) {
        user(f, self.0);
    }
}

impl Props for DisconnectProperties {
    fn each(&self, f: &mut impl FnMut(u8, Value<'_>)) {
        opt_u32(f, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        opt_str(f, REASON_STRING, &self.reason_string);
        opt_str(f, SERVER_REFERENCE, &self.server_reference);
        user(f, &self.user_properties);
    }
}

impl Props for AuthProperties {
    fn each(&self, f: &mut impl FnMut(u8, Value<'_>)) {
        opt_str(f, AUTHENTICATION_METHOD, &self.authentication_method);
        opt_bin(f, AUTHENTICATION_DATA, &self.authentication_data);
        opt_str(f, REASON_STRING, &self.reason_string);
        user(f, &self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &'static [u8]) -> Reader {
        Reader::new(Bytes::from_static(bytes), "TEST")
    }

    #[test]
    fn unknown_and_disallowed_identifiers_are_invalid_property() {
        // 0x04 is not defined at all.
        let mut r = reader(&[2, 0x04, 0]);
        assert_eq!(
            read_ack(&mut r),
            Err(DecodeError::InvalidProperty {
                packet: "TEST",
                id: 0x04
            })
        );
        // Topic Alias is defined but not allowed in an ack.
        let mut r = reader(&[3, 0x23, 0, 1]);
        assert_eq!(
            read_ack(&mut r),
            Err(DecodeError::InvalidProperty {
                packet: "TEST",
                id: 0x23
            })
        );
        // A two-byte identifier (0x80 0x01 = 128) is beyond every table.
        let mut r = reader(&[2, 0x80, 0x01]);
        assert_eq!(
            read_ack(&mut r),
            Err(DecodeError::InvalidProperty {
                packet: "TEST",
                id: 128
            })
        );
    }

    #[test]
    fn only_user_property_and_publish_subscription_identifier_repeat() {
        let mut r = reader(&[6, 0x1F, 0, 0, 0x1F, 0, 0]);
        assert_eq!(
            read_ack(&mut r),
            Err(DecodeError::DuplicateProperty {
                packet: "TEST",
                id: 0x1F
            })
        );
        let mut r = reader(&[4, 0x0B, 1, 0x0B, 2]);
        assert_eq!(
            read_publish(&mut r).map(|p| p.subscription_identifiers),
            Ok(vec![1, 2])
        );
        let mut r = reader(&[4, 0x0B, 1, 0x0B, 2]);
        assert_eq!(
            read_subscribe(&mut r),
            Err(DecodeError::DuplicateProperty {
                packet: "TEST",
                id: 0x0B
            })
        );
        let mut r = reader(&[10, 0x26, 0, 0, 0, 0, 0x26, 0, 0, 0, 0]);
        assert_eq!(read_ack(&mut r).map(|p| p.user_properties.len()), Ok(2));
    }

    #[test]
    fn out_of_range_values() {
        let cases: &[(&'static [u8], u8)] = &[
            (&[3, 0x21, 0, 0], 0x21),       // Receive Maximum 0
            (&[5, 0x27, 0, 0, 0, 0], 0x27), // Maximum Packet Size 0
            (&[2, 0x17, 2], 0x17),          // Request Problem Information 2
            (&[2, 0x19, 2], 0x19),          // Request Response Information 2
        ];
        for &(bytes, id) in cases {
            assert_eq!(
                read_connect(&mut reader(bytes)),
                Err(DecodeError::InvalidPropertyValue { id }),
                "{bytes:?}"
            );
        }
        let cases: &[(&'static [u8], u8)] = &[
            (&[2, 0x24, 2], 0x24), // Maximum QoS 2
            (&[2, 0x25, 2], 0x25),
            (&[2, 0x28, 2], 0x28),
            (&[2, 0x29, 2], 0x29),
            (&[2, 0x2A, 2], 0x2A),
        ];
        for &(bytes, id) in cases {
            assert_eq!(
                read_connack(&mut reader(bytes)),
                Err(DecodeError::InvalidPropertyValue { id }),
                "{bytes:?}"
            );
        }
        let cases: &[(&'static [u8], u8)] = &[
            (&[3, 0x23, 0, 0], 0x23), // Topic Alias 0
            (&[2, 0x01, 2], 0x01),    // Payload Format Indicator 2
            (&[2, 0x0B, 0], 0x0B),    // Subscription Identifier 0
        ];
        for &(bytes, id) in cases {
            assert_eq!(
                read_publish(&mut reader(bytes)),
                Err(DecodeError::InvalidPropertyValue { id }),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn property_running_past_its_block_is_malformed() {
        // The block says 2 bytes but the u32 needs 5.
        let mut r = reader(&[2, 0x11, 0, 0, 0, 0]);
        assert!(matches!(
            read_connect(&mut r),
            Err(DecodeError::Malformed(..))
        ));
        // The block claims more than the packet holds.
        let mut r = reader(&[9, 0x11, 0]);
        assert!(matches!(
            read_connect(&mut r),
            Err(DecodeError::Malformed(..))
        ));
    }

    #[test]
    fn will_properties_allowed_set() {
        let mut r = reader(&[5, 0x18, 0, 0, 0, 9]);
        assert_eq!(
            read_will(&mut r).map(|w| w.will_delay_interval),
            Ok(Some(9))
        );
        let mut r = reader(&[5, 0x11, 0, 0, 0, 9]);
        assert_eq!(
            read_will(&mut r),
            Err(DecodeError::InvalidProperty {
                packet: "CONNECT will properties",
                id: 0x11
            })
        );
    }

    #[test]
    fn length_and_writer_agree() {
        let p = ConnackProperties {
            session_expiry_interval: Some(7),
            maximum_qos: Some(QoS::AtLeastOnce),
            reason_string: Some("why".into()),
            user_properties: vec![("k".into(), "v".into())],
            authentication_data: Some(Bytes::from_static(b"\x00\x01")),
            ..Default::default()
        };
        let len = props_len(&p).expect("encodable");
        let mut buf = BytesMut::new();
        write_props(&p, len, &mut buf);
        assert_eq!(buf.len(), block_len(len));
        let mut r = Reader::new(buf.freeze(), "CONNACK");
        assert_eq!(read_connack(&mut r), Ok(p));
        assert!(r.is_empty());
    }

    #[test]
    fn too_long_and_out_of_range_values_do_not_encode() {
        let long = ByteString::from("x".repeat(65_536));
        let p = AckProperties {
            reason_string: Some(long),
            ..Default::default()
        };
        assert_eq!(
            props_len(&p),
            Err(EncodeError::FieldTooLong("reason string"))
        );
        let p = SubscribeProperties {
            subscription_identifier: Some(MAX_VARINT + 1),
            ..Default::default()
        };
        assert_eq!(
            props_len(&p),
            Err(EncodeError::ValueOutOfRange("subscription identifier"))
        );
    }
}
