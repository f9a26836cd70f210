//! The MQTT the load tool speaks.
//!
//! Handshake packets (CONNECT, SUBSCRIBE, and the CONNACK/SUBACK answers) go through the
//! project's codec. The packets of the measured traffic do not: a PUBLISH is written straight
//! into the batch buffer (its payload changes with every message, so building a `Publish` would
//! cost an allocation per message), and inbound frames are skimmed for the few fields the tool
//! needs (type, QoS, packet id, the payload's timestamp) instead of fully decoded (UTF-8 checks
//! and shared-buffer slices per frame). The generator must cost less per message than the
//! broker it measures.

use std::time::{SystemTime, UNIX_EPOCH};

use beamq_protocol::codec;
use beamq_protocol::{
    ByteString, Bytes, BytesMut, Connect, ConnectProperties, Packet, ProtocolVersion, QoS,
    ReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions,
};

/// Smallest payload: the send timestamp (8 bytes) and the publisher's index (4 bytes).
pub const MIN_PAYLOAD: usize = 12;

/// Nanoseconds since the Unix epoch. The wall clock, not `Instant`: a publisher in one process
/// and a subscriber in another (`bench pub` and `bench sub`) share it.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Appends CONNECT.
pub fn connect(
    out: &mut BytesMut,
    version: ProtocolVersion,
    client_id: &str,
    keep_alive: u16,
    username: Option<&str>,
    password: Option<&str>,
) {
    let properties = ConnectProperties {
        // Let the broker push as many QoS 1 messages as it will (its own cap applies).
        receive_maximum: version.is_v5().then_some(u16::MAX),
        ..ConnectProperties::default()
    };
    let packet = Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: true,
        keep_alive,
        client_id: ByteString::from(client_id),
        will: None,
        username: username.map(ByteString::from),
        password: password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
        properties,
    }));
    // Only an over-long client id or password could fail; the tool's own are short.
    let _ = codec::encode(&packet, version, out);
}

/// Appends SUBSCRIBE for one filter.
pub fn subscribe(out: &mut BytesMut, version: ProtocolVersion, filter: &str, qos: QoS) {
    let packet = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            ByteString::from(filter),
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        )],
        properties: SubscribeProperties::default(),
    });
    let _ = codec::encode(&packet, version, out);
}

/// Appends DISCONNECT (normal).
pub fn disconnect(out: &mut BytesMut) {
    out.extend_from_slice(&[0xE0, 0x00]);
}

/// Appends PINGREQ.
pub fn pingreq(out: &mut BytesMut) {
    out.extend_from_slice(&[0xC0, 0x00]);
}

/// Appends PUBACK (Success; the short form is valid in both versions).
pub fn puback(out: &mut BytesMut, packet_id: u16) {
    let id = packet_id.to_be_bytes();
    out.extend_from_slice(&[0x40, 0x02, id[0], id[1]]);
}

/// What a handshake answer said.
#[derive(Debug)]
pub enum Answer {
    /// CONNACK.
    Connack {
        /// The reason code (3.1.1 return codes are mapped by the codec).
        reason: ReasonCode,
        /// v5 Receive Maximum, if the broker gave one.
        receive_maximum: Option<u16>,
    },
    /// SUBACK with its first reason code.
    Suback(ReasonCode),
    /// Anything else (PINGRESP, DISCONNECT...), by packet type name.
    Other(&'static str),
}

/// Decodes one handshake answer from `buf`, if complete.
pub fn answer(buf: &mut BytesMut, version: ProtocolVersion) -> Result<Option<Answer>, String> {
    match codec::decode(buf, version, u32::MAX) {
        Ok(None) => Ok(None),
        Ok(Some(Packet::Connack(c))) => Ok(Some(Answer::Connack {
            reason: c.reason_code,
            receive_maximum: c.properties.receive_maximum,
        })),
        Ok(Some(Packet::Suback(s))) => Ok(Some(Answer::Suback(
            s.reason_codes
                .first()
                .copied()
                .unwrap_or(ReasonCode::UnspecifiedError),
        ))),
        Ok(Some(Packet::Disconnect(_))) => Ok(Some(Answer::Other("DISCONNECT"))),
        Ok(Some(_)) => Ok(Some(Answer::Other("another packet"))),
        Err(e) => Err(format!("undecodable answer: {e}")),
    }
}

/// A PUBLISH template: topic and flags fixed, payload written per message.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    topic: Vec<u8>,
    qos: u8,
    v5: bool,
    payload_len: usize,
}

impl PublishTemplate {
    /// A template for `topic` at `qos` with `payload_len` bytes (at least [`MIN_PAYLOAD`]).
    pub fn new(topic: &str, qos: QoS, version: ProtocolVersion, payload_len: usize) -> Self {
        PublishTemplate {
            topic: topic.as_bytes().to_vec(),
            qos: qos.as_u8(),
            v5: version.is_v5(),
            payload_len: payload_len.max(MIN_PAYLOAD),
        }
    }

    /// Bytes one message takes on the wire.
    pub fn frame_len(&self) -> usize {
        let rem = self.remaining_len();
        1 + codec::varint_len(rem) + rem
    }

    fn remaining_len(&self) -> usize {
        2 + self.topic.len()
            + if self.qos > 0 { 2 } else { 0 }
            + usize::from(self.v5)
            + self.payload_len
    }

    /// Appends one PUBLISH from publisher `publisher`, stamped with `ts_ns`; `packet_id` is
    /// used at QoS 1 and 2.
    pub fn write(&self, out: &mut BytesMut, packet_id: u16, ts_ns: u64, publisher: u32) {
        out.extend_from_slice(&[0x30 | (self.qos << 1)]);
        codec::put_varint(out, self.remaining_len());
        out.extend_from_slice(&(self.topic.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.topic);
        if self.qos > 0 {
            out.extend_from_slice(&packet_id.to_be_bytes());
        }
        if self.v5 {
            // No properties.
            out.extend_from_slice(&[0]);
        }
        out.extend_from_slice(&ts_ns.to_le_bytes());
        out.extend_from_slice(&publisher.to_le_bytes());
        // The rest of the payload: zeros (resize writes them without a temporary).
        let filled = out.len();
        out.resize(filled + self.payload_len - MIN_PAYLOAD, 0);
    }
}

/// One inbound frame, skimmed.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// PUBLISH: its QoS, packet id (0 at QoS 0), and the timestamp and publisher index at the
    /// start of its payload (`None` if the payload is too short: not one of ours).
    Publish {
        /// QoS bits.
        qos: u8,
        /// Packet identifier.
        packet_id: u16,
        /// Send time, nanoseconds since the epoch, and the publisher's index.
        stamp: Option<(u64, u32)>,
    },
    /// PUBACK: packet id and whether the reason code says success.
    Puback {
        /// Packet identifier.
        packet_id: u16,
        /// Reason code below 0x80.
        ok: bool,
    },
    /// DISCONNECT from the broker (v5), with its reason code.
    Disconnect(u8),
    /// Any other packet type (PINGRESP, SUBACK...).
    Other(u8),
}

/// Skims the next complete frame of `buf`: the frame and its length, `None` if incomplete.
/// Errors on bytes that cannot be MQTT (bad remaining length, truncated fields).
pub fn next_frame(buf: &[u8], v5: bool) -> Result<Option<(Frame, usize)>, &'static str> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut rem: usize = 0;
    let mut shift = 0;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        rem |= usize::from(b & 0x7F) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err("remaining length over 4 bytes");
        }
    }
    let end = i + rem;
    let Some(body) = buf.get(i..end) else {
        return Ok(None);
    };
    let frame = match first >> 4 {
        3 => {
            let qos = (first >> 1) & 3;
            let topic_len = usize::from(u16::from_be_bytes(
                take2(body, 0).ok_or("PUBLISH too short")?,
            ));
            let mut at = 2 + topic_len;
            let mut packet_id = 0;
            if qos > 0 {
                packet_id = u16::from_be_bytes(take2(body, at).ok_or("PUBLISH too short")?);
                at += 2;
            }
            if v5 {
                let (props, n) = varint(body.get(at..).ok_or("PUBLISH too short")?)
                    .ok_or("bad property length")?;
                at += n + props;
            }
            let stamp = body.get(at..at + 12).and_then(|b| {
                let ts = <[u8; 8]>::try_from(&b[..8]).ok()?;
                let publisher = <[u8; 4]>::try_from(&b[8..]).ok()?;
                Some((u64::from_le_bytes(ts), u32::from_le_bytes(publisher)))
            });
            Frame::Publish {
                qos,
                packet_id,
                stamp,
            }
        }
        4 => Frame::Puback {
            packet_id: u16::from_be_bytes(take2(body, 0).ok_or("PUBACK too short")?),
            ok: body.get(2).is_none_or(|&rc| rc < 0x80),
        },
        14 => Frame::Disconnect(body.first().copied().unwrap_or(0)),
        t => Frame::Other(t),
    };
    Ok(Some((frame, end)))
}

/// Calls `on` for every complete frame at the start of `buf`; returns the bytes consumed. A
/// DISCONNECT from the broker, or bytes that cannot be MQTT, end the connection: an error. One
/// loop for every reader of the tool.
pub fn scan(buf: &[u8], v5: bool, mut on: impl FnMut(Frame)) -> Result<usize, &'static str> {
    let mut pos = 0;
    while let Some((frame, len)) = next_frame(&buf[pos..], v5)? {
        if let Frame::Disconnect(_) = frame {
            return Err("DISCONNECT from the broker");
        }
        pos += len;
        on(frame);
    }
    Ok(pos)
}

fn take2(b: &[u8], at: usize) -> Option<[u8; 2]> {
    b.get(at..at + 2).and_then(|s| s.try_into().ok())
}

fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut n = 0usize;
    for (i, &byte) in b.iter().take(4).enumerate() {
        n |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written PUBLISH is what the project's codec decodes, for both versions and
    /// every length class of the remaining length.
    #[test]
    fn written_publish_decodes_and_skims() {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            for (qos, size) in [
                (QoS::AtMostOnce, 12),
                (QoS::AtLeastOnce, 64),
                (QoS::AtLeastOnce, 20_000),
            ] {
                let t = PublishTemplate::new("bench/7", qos, version, size);
                let mut out = BytesMut::new();
                t.write(&mut out, 42, 123_456_789, 3);
                assert_eq!(out.len(), t.frame_len());
                let (frame, n) = next_frame(&out, version.is_v5())
                    .expect("valid")
                    .expect("complete");
                assert_eq!(n, out.len());
                assert_eq!(
                    frame,
                    Frame::Publish {
                        qos: qos.as_u8(),
                        packet_id: if qos == QoS::AtMostOnce { 0 } else { 42 },
                        stamp: Some((123_456_789, 3)),
                    }
                );
                let Ok(Some(Packet::Publish(p))) = codec::decode(&mut out, version, u32::MAX)
                else {
                    panic!("codec refused the bench's PUBLISH ({version}, {size} bytes)");
                };
                assert_eq!(&*p.topic, "bench/7");
                assert_eq!(p.payload.len(), size);
            }
        }
    }

    #[test]
    fn scan_stops_at_a_disconnect_and_leaves_partial_frames() {
        let t = PublishTemplate::new("a", QoS::AtLeastOnce, ProtocolVersion::V5, 16);
        let mut buf = BytesMut::new();
        t.write(&mut buf, 1, 5, 0);
        t.write(&mut buf, 2, 6, 0);
        let whole = buf.len();
        t.write(&mut buf, 3, 7, 0);
        let mut ids = Vec::new();
        let used = scan(&buf[..buf.len() - 1], true, |f| {
            if let Frame::Publish { packet_id, .. } = f {
                ids.push(packet_id);
            }
        });
        assert_eq!(used, Ok(whole));
        assert_eq!(ids, [1, 2]);
        buf.extend_from_slice(&[0xE0, 0x01, 0x8B]);
        assert!(
            scan(&buf, true, |_| {}).is_err(),
            "DISCONNECT ends the connection"
        );
    }

    #[test]
    fn incomplete_frames_wait_and_garbage_is_an_error() {
        let t = PublishTemplate::new("a", QoS::AtLeastOnce, ProtocolVersion::V3_1_1, 64);
        let mut out = BytesMut::new();
        t.write(&mut out, 1, 1, 0);
        for cut in 0..out.len() {
            assert_eq!(next_frame(&out[..cut], false), Ok(None), "cut at {cut}");
        }
        assert!(next_frame(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], false).is_err());
        let mut ack = BytesMut::new();
        puback(&mut ack, 9);
        assert_eq!(
            next_frame(&ack, true),
            Ok(Some((
                Frame::Puback {
                    packet_id: 9,
                    ok: true
                },
                4
            )))
        );
        assert_eq!(
            next_frame(&[0x40, 0x03, 0, 9, 0x87], true),
            Ok(Some((
                Frame::Puback {
                    packet_id: 9,
                    ok: false
                },
                5
            )))
        );
    }
}
