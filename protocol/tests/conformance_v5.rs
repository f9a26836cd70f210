//! MQTT 5.0 conformance rules that are properties of the codec or the state machine, checked
//! through the crate's public API (the socket-level ones are in tests/conformance_v5.rs of the
//! broker). Each test names the 5.0 statement ids (docs/spec/mqtt-5.0-statements.tsv) it checks.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use beamq_protocol::session::{self, Channel, Delivery, Dispatcher, Limits, Message, SessionState};
use beamq_protocol::{
    ByteString, Bytes, BytesMut, Connect, Packet, ProtocolVersion, PubAck, Publish,
    PublishProperties, QoS, codec,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// The Variable Byte Integer encoding algorithm of 5.0 §1.5.5, written out here so that the
/// codec is compared with the spec, not with itself.
fn spec_varint(mut x: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (x % 128) as u8;
        x /= 128;
        if x > 0 {
            byte |= 128;
        }
        out.push(byte);
        if x == 0 {
            return out;
        }
    }
}

/// The fewest bytes a Variable Byte Integer of `x` can take (the ranges of 5.0 §1.5.5).
fn fewest_bytes(x: usize) -> usize {
    match x {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn encode(p: &Publish) -> Vec<u8> {
    let mut buf = BytesMut::new();
    codec::encode(&Packet::Publish(p.clone()), V5, &mut buf).expect("encodable");
    buf.to_vec()
}

fn publish(properties: PublishProperties, payload: Vec<u8>) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteString::from("t"),
        packet_id: None,
        properties,
        payload: Bytes::from(payload),
    }
}

#[test]
fn variable_byte_integers_use_the_fewest_bytes() {
    // 5.0 [MQTT-1.5.5-1], for every Variable Byte Integer the server writes: the Remaining
    // Length, the Property Length and the Subscription Identifier, at each boundary of the
    // one- to four-byte ranges.
    let boundaries = [0usize, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152];

    // Remaining Length: topic (3 bytes) + Property Length (1 byte, 0) + payload.
    for &rl in boundaries.iter().filter(|&&rl| rl >= 4) {
        let frame = encode(&publish(PublishProperties::default(), vec![0; rl - 4]));
        let n = fewest_bytes(rl);
        assert_eq!(
            frame[1..1 + n],
            spec_varint(rl)[..],
            "Remaining Length {rl}"
        );
        assert_eq!(frame.len(), 1 + n + rl, "Remaining Length {rl}");
    }

    // Property Length: one User Property ("k", value of `len` bytes) is 6 + len bytes.
    for plen in [6usize, 127, 128, 16_383, 16_384] {
        let props = PublishProperties {
            user_properties: vec![(
                ByteString::from("k"),
                ByteString::from("v".repeat(plen - 6)),
            )],
            ..Default::default()
        };
        let frame = encode(&publish(props, vec![]));
        // After the first byte, the Remaining Length (up to its first byte below 128) and the
        // topic (3 bytes).
        let rl_len = frame[1..].iter().position(|b| b & 0x80 == 0).expect("end") + 1;
        let at = 1 + rl_len + 3;
        let n = fewest_bytes(plen);
        assert_eq!(
            frame[at..at + n],
            spec_varint(plen)[..],
            "Property Length {plen}"
        );
    }

    // Subscription Identifier (1 to 268,435,455), as the server sends it in PUBLISH.
    for id in [
        1u32,
        127,
        128,
        16_383,
        16_384,
        2_097_151,
        2_097_152,
        268_435_455,
    ] {
        let props = PublishProperties {
            subscription_identifiers: vec![id],
            ..Default::default()
        };
        let frame = encode(&publish(props, vec![]));
        let n = fewest_bytes(id as usize);
        // Fixed header (2), topic (3), Property Length (1), identifier 0x0B.
        assert_eq!(
            frame[5],
            (1 + n) as u8,
            "Property Length for identifier {id}"
        );
        assert_eq!(frame[6], 0x0B);
        assert_eq!(
            frame[7..7 + n],
            spec_varint(id as usize)[..],
            "identifier {id}"
        );
        assert_eq!(frame.len(), 7 + n);
    }
}

/// Accepts every message and matches nothing.
struct Nobody;

impl Dispatcher for Nobody {
    fn authorize_publish(&mut self, _topic: &str) -> bool {
        true
    }

    fn dispatch(&mut self, _message: Arc<Message>) -> usize {
        0
    }

    fn retained_page(
        &mut self,
        _filter: &str,
        _after: Option<&str>,
        _watermark: u64,
        _limit: usize,
    ) -> Vec<Arc<Message>> {
        Vec::new()
    }
}

/// Decodes the one PUBLISH the channel wrote.
fn written_publish(ch: &mut Channel) -> Publish {
    let mut buf = ch.out.split();
    let p = codec::decode(&mut buf, V5, u32::MAX).expect("valid output");
    assert!(buf.is_empty(), "one packet");
    match p {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[test]
fn packet_identifiers_skip_those_in_use_across_the_wraparound() {
    // 5.0 [MQTT-2.2.1-4], [MQTT-4.3.2-1], [MQTT-4.3.3-1]: each new QoS > 0 PUBLISH from the
    // server has a non-zero Packet Identifier that is not in use. Two exchanges stay open while
    // 70,000 others run through the third slot of the window, so the identifiers wrap around
    // past 65,535: a QoS 1 PUBLISH never acknowledged and a QoS 2 one whose PUBREC came but
    // whose PUBCOMP never does (its identifier stays in use, [MQTT-4.3.3-5]).
    let limits = Arc::new(Limits::default());
    let mut connect = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteString::from("ids"),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    };
    connect.properties.receive_maximum = Some(3);
    let accepted = session::connect::accept(&connect, &limits, || "x".into()).expect("accepted");
    let mut ch = Channel::new(connect, &accepted, limits, SessionState::new(0));
    let now = Instant::now();
    let mut fx = Vec::new();
    ch.start(&accepted, false, now, &mut Nobody, &mut fx);
    ch.out.clear();
    let message = Arc::new(Message::system(
        ByteString::from("t"),
        Bytes::from_static(b"m"),
        false,
    ));
    let mut deliver = |ch: &mut Channel, qos| {
        ch.deliver(
            Delivery::new(message.clone(), qos, false),
            now,
            &mut Nobody,
            &mut fx,
        );
        let p = written_publish(ch);
        assert_eq!(p.qos, qos);
        p.packet_id.expect("QoS > 0 has a packet identifier")
    };

    let held1 = deliver(&mut ch, QoS::AtLeastOnce);
    let held2 = deliver(&mut ch, QoS::ExactlyOnce);
    let mut fx2 = Vec::new();
    ch.handle(
        Packet::Pubrec(PubAck::new(held2)),
        now,
        &mut Nobody,
        &mut fx2,
    )
    .expect("PUBREC");
    assert!(matches!(
        codec::decode(&mut ch.out.split(), V5, u32::MAX),
        Ok(Some(Packet::Pubrel(r))) if r.packet_id == held2
    ));

    let mut seen = HashSet::new();
    for _ in 0..70_000 {
        let id = deliver(&mut ch, QoS::AtLeastOnce);
        assert_ne!(id, 0, "[MQTT-2.2.1-4] non-zero");
        assert!(id != held1 && id != held2, "identifier {id} is in use");
        seen.insert(id);
        ch.handle(Packet::Puback(PubAck::new(id)), now, &mut Nobody, &mut fx2)
            .expect("PUBACK");
        assert!(ch.out.is_empty());
    }
    assert_eq!(seen.len(), 65_535 - 2, "every other identifier was used");
}
