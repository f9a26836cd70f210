//! Packet → bytes, in the layout of the negotiated version.
//!
//! Encoding is two passes over the packet: [`plan`] computes every length (and is the only place
//! that validates: field sizes, the remaining-length limit, PUBLISH id/QoS agreement), then
//! [`write`] reserves the whole frame once and writes it without further checks or allocations.
//! [`encoded_len`](super::encoded_len) is the first pass alone, so it is exact by construction.
//!
//! Before v5 the encoder leaves properties off and maps reason codes to the 3.1.1 return codes;
//! v5-only values that 3.1.1 cannot carry (a PUBACK reason, UNSUBACK codes, a DISCONNECT reason)
//! are dropped, because the older wire format simply has no place for them.

use bytes::{BufMut, BytesMut};

use super::MAX_REMAINING_LENGTH;
use super::properties::{Props, UserOnly, block_len, props_len, put_prefixed, write_props};
use crate::error::EncodeError;
use crate::packet::{
    Auth, Connack, Connect, Disconnect, Packet, ProtocolVersion, PubAck, Publish, QoS, Suback,
    Subscribe, Unsuback, Unsubscribe,
};
use crate::reason::ReasonCode;

/// Every length of one frame, computed before anything is written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// The Remaining Length.
    remaining: usize,
    /// Length of the (main) property block's contents.
    props: usize,
    /// Length of the will property block's contents (CONNECT only).
    will_props: usize,
}

impl Plan {
    fn new(remaining: usize, props: usize, will_props: usize) -> Result<Plan, EncodeError> {
        if remaining > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge);
        }
        Ok(Plan {
            remaining,
            props,
            will_props,
        })
    }

    /// The whole frame: first byte, Remaining Length, body.
    pub(crate) fn total(&self) -> usize {
        1 + varint_len(self.remaining) + self.remaining
    }
}

/// Bytes a Variable Byte Integer of `v` takes (`v` ≤ 268,435,455).
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a Variable Byte Integer; callers have checked `v` ≤ 268,435,455.
pub(crate) fn put_varint(buf: &mut BytesMut, mut v: usize) {
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

/// A two-byte length plus the bytes.
fn prefixed_len(n: usize, field: &'static str) -> Result<usize, EncodeError> {
    if n > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong(field));
    }
    Ok(2 + n)
}

/// Properties exist on the wire only in v5; the length of their block there.
fn v5_block(version: ProtocolVersion, p: &impl Props) -> Result<(usize, usize), EncodeError> {
    if version.is_v5() {
        let len = props_len(p)?;
        Ok((len, block_len(len)))
    } else {
        Ok((0, 0))
    }
}

/// First pass: all lengths, all checks.
pub(crate) fn plan(packet: &Packet, version: ProtocolVersion) -> Result<Plan, EncodeError> {
    match packet {
        Packet::Connect(c) => connect_plan(c),
        Packet::Connack(c) => {
            let (props, block) = v5_block(version, &c.properties)?;
            Plan::new(2 + block, props, 0)
        }
        Packet::Publish(p) => publish_plan(p, version),
        Packet::Puback(a) | Packet::Pubrec(a) | Packet::Pubrel(a) | Packet::Pubcomp(a) => {
            ack_plan(a, version)
        }
        Packet::Subscribe(s) => {
            let (props, block) = v5_block(version, &s.properties)?;
            let mut len = 2 + block;
            for (filter, _) in &s.filters {
                len += prefixed_len(filter.len(), "topic filter")? + 1;
            }
            Plan::new(len, props, 0)
        }
        Packet::Suback(s) => {
            let (props, block) = v5_block(version, &s.properties)?;
            Plan::new(2 + block + s.reason_codes.len(), props, 0)
        }
        Packet::Unsubscribe(u) => {
            let (props, block) = v5_block(version, &UserOnly(&u.user_properties))?;
            let mut len = 2 + block;
            for filter in &u.filters {
                len += prefixed_len(filter.len(), "topic filter")?;
            }
            Plan::new(len, props, 0)
        }
        Packet::Unsuback(u) => {
            if version.is_v5() {
                let props = props_len(&u.properties)?;
                Plan::new(2 + block_len(props) + u.reason_codes.len(), props, 0)
            } else {
                Plan::new(2, 0, 0)
            }
        }
        Packet::Pingreq | Packet::Pingresp => Plan::new(0, 0, 0),
        Packet::Disconnect(d) => {
            if !version.is_v5() {
                return Plan::new(0, 0, 0);
            }
            let props = props_len(&d.properties)?;
            // §3.14.2.1: Remaining Length 0 means Normal disconnection without properties.
            // Any other reason is written with its Property Length even when it is 0: the
            // reason-only form (§3.14.2.2.1) is valid, but some clients (rumqttc 0.25) drop it
            // and lose the reason code, and EMQX writes the full form too.
            let len = match (d.reason_code, props) {
                (ReasonCode::Success, 0) => 0,
                _ => 1 + block_len(props),
            };
            Plan::new(len, props, 0)
        }
        Packet::Auth(a) => {
            if !version.is_v5() {
                return Err(EncodeError::NotInVersion("AUTH"));
            }
            let props = props_len(&a.properties)?;
            // §3.15.2.1 only names the short form with Remaining Length 0; anything else is
            // written in full, reason code and property length, so every peer can read it.
            let len = match (a.reason_code, props) {
                (ReasonCode::Success, 0) => 0,
                _ => 1 + block_len(props),
            };
            Plan::new(len, props, 0)
        }
    }
}

fn connect_plan(c: &Connect) -> Result<Plan, EncodeError> {
    let version = c.protocol;
    // Protocol Name, Protocol Level, Connect Flags, Keep Alive.
    let mut len = 2 + version.protocol_name().len() + 1 + 1 + 2;
    let (props, block) = v5_block(version, &c.properties)?;
    len += block;
    len += prefixed_len(c.client_id.len(), "client identifier")?;
    let mut will_props = 0;
    if let Some(w) = &c.will {
        let (p, block) = v5_block(version, &w.properties)?;
        will_props = p;
        len += block;
        len += prefixed_len(w.topic.len(), "will topic")?;
        len += prefixed_len(w.payload.len(), "will payload")?;
    }
    if let Some(u) = &c.username {
        len += prefixed_len(u.len(), "user name")?;
    }
    if let Some(p) = &c.password {
        len += prefixed_len(p.len(), "password")?;
    }
    Plan::new(len, props, will_props)
}

pub(crate) fn publish_plan(p: &Publish, version: ProtocolVersion) -> Result<Plan, EncodeError> {
    let id_len = match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => 0,
        (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) if id != 0 => 2,
        _ => return Err(EncodeError::PacketIdMismatch),
    };
    let (props, block) = v5_block(version, &p.properties)?;
    let len = prefixed_len(p.topic.len(), "topic name")? + id_len + block + p.payload.len();
    Plan::new(len, props, 0)
}

fn ack_plan(a: &PubAck, version: ProtocolVersion) -> Result<Plan, EncodeError> {
    if !version.is_v5() {
        return Plan::new(2, 0, 0);
    }
    let props = props_len(&a.properties)?;
    // §3.4.2.1: Remaining Length 2 means Success without properties; with 3 the Property
    // Length is taken as 0 (§3.4.2.2.1).
    let len = match (a.reason_code, props) {
        (ReasonCode::Success, 0) => 2,
        (_, 0) => 3,
        _ => 3 + block_len(props),
    };
    Plan::new(len, props, 0)
}

fn fixed_header(buf: &mut BytesMut, first: u8, plan: &Plan) {
    buf.put_u8(first);
    put_varint(buf, plan.remaining);
}

/// Second pass: reserves the frame once and writes it. `plan` is `plan(packet, version)`.
pub(crate) fn write(packet: &Packet, version: ProtocolVersion, plan: &Plan, buf: &mut BytesMut) {
    buf.reserve(plan.total());
    match packet {
        Packet::Connect(c) => write_connect(c, plan, buf),
        Packet::Connack(c) => write_connack(c, version, plan, buf),
        Packet::Publish(p) => write_publish(p, version, plan, buf),
        Packet::Puback(a) => write_ack(0x40, a, plan, buf),
        Packet::Pubrec(a) => write_ack(0x50, a, plan, buf),
        // PUBREL, SUBSCRIBE and UNSUBSCRIBE carry flags 0b0010 [MQTT-2.2.2-1].
        Packet::Pubrel(a) => write_ack(0x62, a, plan, buf),
        Packet::Pubcomp(a) => write_ack(0x70, a, plan, buf),
        Packet::Subscribe(s) => write_subscribe(s, version, plan, buf),
        Packet::Suback(s) => write_suback(s, version, plan, buf),
        Packet::Unsubscribe(u) => write_unsubscribe(u, version, plan, buf),
        Packet::Unsuback(u) => write_unsuback(u, version, plan, buf),
        Packet::Pingreq => fixed_header(buf, 0xC0, plan),
        Packet::Pingresp => fixed_header(buf, 0xD0, plan),
        Packet::Disconnect(d) => write_disconnect(d, plan, buf),
        Packet::Auth(a) => write_auth(a, plan, buf),
    }
}

fn write_connect(c: &Connect, plan: &Plan, buf: &mut BytesMut) {
    let version = c.protocol;
    fixed_header(buf, 0x10, plan);
    put_prefixed(buf, version.protocol_name().as_bytes());
    buf.put_u8(version.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos.as_u8() << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if version.is_v5() {
        write_props(&c.properties, plan.props, buf);
    }
    put_prefixed(buf, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if version.is_v5() {
            write_props(&w.properties, plan.will_props, buf);
        }
        put_prefixed(buf, w.topic.as_bytes());
        put_prefixed(buf, &w.payload);
    }
    if let Some(u) = &c.username {
        put_prefixed(buf, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_prefixed(buf, p);
    }
}

fn write_connack(c: &Connack, version: ProtocolVersion, plan: &Plan, buf: &mut BytesMut) {
    fixed_header(buf, 0x20, plan);
    // MQTT 3.1 has no Session Present: the byte is reserved there.
    let session_present = c.session_present && version != ProtocolVersion::V3_1;
    buf.put_u8(u8::from(session_present));
    if version.is_v5() {
        buf.put_u8(c.reason_code.as_u8());
        write_props(&c.properties, plan.props, buf);
    } else {
        buf.put_u8(c.reason_code.to_v3_connack());
    }
}

pub(crate) fn write_publish(
    p: &Publish,
    version: ProtocolVersion,
    plan: &Plan,
    buf: &mut BytesMut,
) {
    let mut first = 0x30 | (p.qos.as_u8() << 1);
    if p.dup {
        first |= 0x08;
    }
    if p.retain {
        first |= 0x01;
    }
    fixed_header(buf, first, plan);
    put_prefixed(buf, p.topic.as_bytes());
    if let Some(id) = p.packet_id {
        buf.put_u16(id);
    }
    if version.is_v5() {
        write_props(&p.properties, plan.props, buf);
    }
    buf.put_slice(&p.payload);
}

fn write_ack(first: u8, a: &PubAck, plan: &Plan, buf: &mut BytesMut) {
    fixed_header(buf, first, plan);
    buf.put_u16(a.packet_id);
    // The plan already chose the short form; it is v5 exactly when remaining > 2.
    if plan.remaining >= 3 {
        buf.put_u8(a.reason_code.as_u8());
    }
    if plan.remaining > 3 {
        write_props(&a.properties, plan.props, buf);
    }
}

fn write_subscribe(s: &Subscribe, version: ProtocolVersion, plan: &Plan, buf: &mut BytesMut) {
    fixed_header(buf, 0x82, plan);
    buf.put_u16(s.packet_id);
    if version.is_v5() {
        write_props(&s.properties, plan.props, buf);
    }
    for (filter, opts) in &s.filters {
        put_prefixed(buf, filter.as_bytes());
        let mut byte = opts.qos.as_u8();
        // No Local, Retain As Published and Retain Handling exist only in v5; before it bits
        // 2-7 are reserved [MQTT-3.8.3-4 in 3.1.1].
        if version.is_v5() {
            if opts.no_local {
                byte |= 0x04;
            }
            if opts.retain_as_published {
                byte |= 0x08;
            }
            byte |= (opts.retain_handling as u8) << 4;
        }
        buf.put_u8(byte);
    }
}

fn write_suback(s: &Suback, version: ProtocolVersion, plan: &Plan, buf: &mut BytesMut) {
    fixed_header(buf, 0x90, plan);
    buf.put_u16(s.packet_id);
    if version.is_v5() {
        write_props(&s.properties, plan.props, buf);
        for rc in &s.reason_codes {
            buf.put_u8(rc.as_u8());
        }
    } else {
        for rc in &s.reason_codes {
            buf.put_u8(rc.to_v3_suback());
        }
    }
}

fn write_unsubscribe(u: &Unsubscribe, version: ProtocolVersion, plan: &Plan, buf: &mut BytesMut) {
    fixed_header(buf, 0xA2, plan);
    buf.put_u16(u.packet_id);
    if version.is_v5() {
        write_props(&UserOnly(&u.user_properties), plan.props, buf);
    }
    for filter in &u.filters {
        put_prefixed(buf, filter.as_bytes());
    }
}

fn write_unsuback(u: &Unsuback, version: ProtocolVersion, plan: &Plan, buf: &mut BytesMut) {
    fixed_header(buf, 0xB0, plan);
    buf.put_u16(u.packet_id);
    if version.is_v5() {
        write_props(&u.properties, plan.props, buf);
        for rc in &u.reason_codes {
            buf.put_u8(rc.as_u8());
        }
    }
}

fn write_disconnect(d: &Disconnect, plan: &Plan, buf: &mut BytesMut) {
    fixed_header(buf, 0xE0, plan);
    // Before v5 and for the short v5 form the plan's Remaining Length is 0.
    if plan.remaining >= 1 {
        buf.put_u8(d.reason_code.as_u8());
    }
    if plan.remaining > 1 {
        write_props(&d.properties, plan.props, buf);
    }
}

fn write_auth(a: &Auth, plan: &Plan, buf: &mut BytesMut) {
    fixed_header(buf, 0xF0, plan);
    if plan.remaining > 0 {
        buf.put_u8(a.reason_code.as_u8());
        write_props(&a.properties, plan.props, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_writer() {
        for v in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_REMAINING_LENGTH,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}
