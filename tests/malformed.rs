//! Hostile and malformed input, byte by byte, in 3.1.1 and 5.0: each case checks the broker's
//! reaction (v5: DISCONNECT with the reason code before the close, where the spec gives one;
//! 3.1.1: the connection is closed), the counter that records it (`malformed_packets` or
//! `protocol_errors`, and nothing counted twice), and that well-behaved clients of both
//! versions connected at the same time keep publishing and receiving: bad input never takes
//! another client down. The last test throws 2,000 random byte strings at the broker.

mod common;
mod edge;

use std::time::{Duration, Instant};

use beamq_actors::config::ByteSize;
use beamq_protocol::{Packet, ProtocolVersion, ReasonCode};
use common::*;
use edge::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const BOTH: [ProtocolVersion; 2] = [V3, V5];

fn id(version: ProtocolVersion, name: &str, i: usize) -> String {
    format!("{name}-{}-{i}", version.level())
}

// ---------------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn first_packet_not_connect_is_closed_without_any_reply() {
    // [MQTT-3.1.0-1] (3.1.1 and 5.0); [MQTT-3.14.0-1 in 5.0]: no DISCONNECT before a CONNACK.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    // (bytes, counted as malformed, counted as protocol error): packet type 0 cannot be parsed
    // at all, so it is malformed; the others are well-formed packets in the wrong place.
    let firsts = [
        (PINGREQ.to_vec(), 0, 1),
        (publish(V3, 0, false, b"a/b", None, &[], b"x"), 0, 1),
        (subscribe(V3, 1, &[], &[(b"a/b", 0)]), 0, 1),
        (vec![0xE0, 0x00], 0, 1),
        (vec![0x00, 0x00], 1, 0),
    ];
    for (bytes, malformed, protocol) in firsts {
        let before = errors(&broker);
        let refused = broker.broker().metrics.connects_refused.get();
        let mut raw = Raw::connect(&broker).await;
        raw.send(&bytes).await;
        let got = raw.expect_close().await;
        assert!(got.is_empty(), "first packet {bytes:02X?}: got {got:?}");
        expect_errors(&broker, before, malformed, protocol).await;
        assert_eq!(broker.broker().metrics.connects_refused.get(), refused + 1);
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn second_connect_is_a_protocol_error() {
    // [MQTT-3.1.0-2] in 3.1.1 and 5.0: a second CONNECT is a protocol violation / Protocol Error.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    for v in BOTH {
        let before = errors(&broker);
        let cid = id(v, "second", 0);
        send_bad(
            &broker,
            v,
            &cid,
            &connect_simple(v, &cid, 60),
            ReasonCode::ProtocolError,
        )
        .await;
        expect_errors(&broker, before, 0, 1).await;
        w.check().await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn wrong_protocol_name_is_closed() {
    // [MQTT-3.1.2-1] 3.1.1: the server MAY disconnect; 5.0: it MAY send CONNACK 0x84 and then
    // MUST close. Either way no session starts.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    for (name, level) in [(&b"MQTX"[..], 4u8), (b"MQTT\0", 4), (b"mqtt", 5), (b"", 5)] {
        let before = errors(&broker);
        let mut raw = Raw::connect(&broker).await;
        raw.version = if level == 5 { V5 } else { V3 };
        raw.send(&connect_named(name, level, 0x02, 60, &[], &s(b"badname")))
            .await;
        let got = raw.expect_close().await;
        match got.as_slice() {
            [] => {}
            [Packet::Connack(c)] => {
                assert_eq!(c.reason_code, ReasonCode::UnsupportedProtocolVersion)
            }
            other => panic!("protocol name {name:?}: unexpected {other:?}"),
        }
        expect_errors(&broker, before, 1, 0).await;
    }
    assert_eq!(broker.broker().metrics.connects.get(), Witness::SESSIONS);
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_1_or_0x84() {
    // [MQTT-3.1.2-2] 3.1.1: CONNACK return code 0x01 then close; 5.0: CONNACK 0x84 then close.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    // "MQTT" with level 3 (3.1 used "MQIsdp"), 2 and 6; a v5-style CONNACK for levels above 4.
    let cases: [(u8, &[u8]); 4] = [
        (3, &[0x20, 0x02, 0x00, 0x01]),
        (2, &[0x20, 0x02, 0x00, 0x01]),
        (6, &[0x20, 0x03, 0x00, 0x84, 0x00]),
        (255, &[0x20, 0x03, 0x00, 0x84, 0x00]),
    ];
    for (level, want) in cases {
        let refused = broker.broker().metrics.connects_refused.get();
        let before = errors(&broker);
        let mut raw = Raw::connect(&broker).await;
        raw.send(&connect_named(b"MQTT", level, 0x02, 60, &[], &s(b"oldie")))
            .await;
        assert_eq!(raw.read_exact(want.len()).await, want, "level {level}");
        assert!(raw.expect_close().await.is_empty(), "closed after CONNACK");
        assert_eq!(broker.broker().metrics.connects_refused.get(), refused + 1);
        assert_eq!(errors(&broker), before, "a refusal is not an error");
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn connect_reserved_flag_is_closed_without_connack() {
    // [MQTT-3.1.2-3] (3.1.1 and 5.0) and [MQTT-3.1.4-1]: close, no CONNACK.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    for v in BOTH {
        let before = errors(&broker);
        let mut raw = Raw::connect(&broker).await;
        raw.version = v;
        raw.send(&connect(v, 0x03, 60, &[], &s(b"reserved"))).await;
        let got = raw.expect_close().await;
        assert!(got.is_empty(), "{v:?}: {got:?}");
        expect_errors(&broker, before, 1, 0).await;
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn inconsistent_will_flags_are_closed_without_connack() {
    // 3.1.1: [MQTT-3.1.2-11] no Will Flag means no will QoS/retain, [MQTT-3.1.2-13] will QoS 0,
    // [MQTT-3.1.2-15] will retain 0, [MQTT-3.1.2-14] will QoS never 3.
    // 5.0: [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-12] (will QoS 3 is malformed).
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let mut will_payload = s(b"willflags");
    will_payload.extend_from_slice(&s(b"will/topic"));
    will_payload.extend_from_slice(&s(b"bye"));
    for v in BOTH {
        // (flags, payload): will QoS 1 without the Will Flag, will QoS 2 without it, will
        // retain without it, and the Will Flag with will QoS 3.
        let cases: [(u8, Vec<u8>); 4] = [
            (0x02 | 0x08, s(b"willflags")),
            (0x02 | 0x10, s(b"willflags")),
            (0x02 | 0x20, s(b"willflags")),
            (0x02 | 0x04 | 0x18, {
                let mut p = s(b"willflags");
                if v.is_v5() {
                    // An empty will property block comes before the will topic.
                    p.push(0);
                }
                p.extend_from_slice(&s(b"will/topic"));
                p.extend_from_slice(&s(b"bye"));
                p
            }),
        ];
        for (flags, payload) in cases {
            let before = errors(&broker);
            let mut raw = Raw::connect(&broker).await;
            raw.version = v;
            raw.send(&connect(v, flags, 60, &[], &payload)).await;
            let got = raw.expect_close().await;
            assert!(got.is_empty(), "{v:?} flags {flags:#04x}: {got:?}");
            expect_errors(&broker, before, 1, 0).await;
        }
    }
    assert_eq!(broker.broker().metrics.connects.get(), Witness::SESSIONS);
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn password_without_user_name_is_refused_in_3_1_1_only() {
    // [MQTT-3.1.2-22 in 3.1.1]: Password Flag without User Name Flag is closed (no CONNACK,
    // [MQTT-3.1.4-1]). 5.0 allows a password without a user name (§3.1.2.9).
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let mut payload = s(b"pwonly");
    payload.extend_from_slice(&s(b"secret"));

    let before = errors(&broker);
    let mut raw = Raw::connect(&broker).await;
    raw.send(&connect(V3, 0x02 | 0x40, 60, &[], &payload)).await;
    assert!(raw.expect_close().await.is_empty());
    expect_errors(&broker, before, 1, 0).await;

    let mut raw = Raw::connect(&broker).await;
    raw.version = V5;
    raw.send(&connect(V5, 0x02 | 0x40, 60, &[], &payload)).await;
    match raw.recv().await {
        Some(Packet::Connack(c)) => assert_eq!(c.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn connect_pipelined_with_more_packets_in_one_segment() {
    // Packets that arrive in the same read as the CONNECT are processed right away, not when
    // (or if) more bytes come: [MQTT-3.12.4-1] PINGRESP, and a PUBLISH sent just before the
    // client closes its side is still delivered.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    for v in BOTH {
        let cid = id(v, "pipelined", 0);
        let mut bytes = connect_simple(v, &cid, 60);
        bytes.extend_from_slice(&PINGREQ);
        let mut raw = Raw::connect(&broker).await;
        raw.version = v;
        raw.send(&bytes).await;
        assert!(matches!(raw.recv().await, Some(Packet::Connack(_))));
        assert!(matches!(raw.recv().await, Some(Packet::Pingresp)));

        let mut sub = v3::Client::connect(&broker, &id(v, "pipe-sub", 0)).await;
        let topic = format!("pipe/{}", v.level());
        sub.subscribe(&topic, v3::QoS::AtMostOnce).await;
        let cid = id(v, "pipelined", 1);
        let mut bytes = connect_simple(v, &cid, 60);
        bytes.extend_from_slice(&publish(v, 0, false, topic.as_bytes(), None, &[], b"p"));
        let mut raw = Raw::connect(&broker).await;
        raw.version = v;
        raw.send(&bytes).await;
        raw.stream.shutdown().await.expect("half-close");
        let got = raw.expect_close().await;
        assert!(matches!(got.as_slice(), [Packet::Connack(_)]), "{got:?}");
        let p = sub.next_publish().await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            (topic.as_str(), &b"p"[..])
        );
    }
    w.check().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn remaining_length_of_five_bytes_is_malformed() {
    // 3.1.1 §2.2.3 / 5.0 §1.5.5: at most four bytes; a fifth continuation is a malformed packet.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let bad = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    for v in BOTH {
        let before = errors(&broker);
        send_bad(
            &broker,
            v,
            &id(v, "rl5", 0),
            &bad,
            ReasonCode::MalformedPacket,
        )
        .await;
        expect_errors(&broker, before, 1, 0).await;
    }
    // As the first packet: closed without CONNACK.
    let before = errors(&broker);
    let mut raw = Raw::connect(&broker).await;
    raw.send(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await;
    assert!(raw.expect_close().await.is_empty());
    expect_errors(&broker, before, 1, 0).await;
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn truncated_packet_then_close_ends_the_connection_and_sends_the_will() {
    // A Remaining Length longer than the data, then the client closes: not a decode error
    // (the packet never completed) but an abnormal close, so the will is published
    // ([MQTT-3.1.2-8] in 3.1.1 and 5.0).
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let mut will_sub = v3::Client::connect(&broker, "will-sub").await;
    will_sub
        .subscribe("edge/will/#", v3::QoS::AtLeastOnce)
        .await;
    for v in BOTH {
        let before = errors(&broker);
        let topic = format!("edge/will/{}", v.level());
        let mut payload = s(id(v, "trunc", 0).as_bytes());
        if v.is_v5() {
            payload.push(0);
        }
        payload.extend_from_slice(&s(topic.as_bytes()));
        payload.extend_from_slice(&s(b"gone"));
        let mut raw = Raw::connect(&broker).await;
        raw.version = v;
        raw.send(&connect(v, 0x02 | 0x04 | 0x08, 60, &[], &payload))
            .await;
        assert!(matches!(raw.recv().await, Some(Packet::Connack(_))));
        // Says 16 bytes follow; sends 5.
        raw.send(&[0x30, 0x10, 0x00, 0x03, b'a', b'/', b'b']).await;
        raw.stream.shutdown().await.expect("half-close");
        assert!(raw.expect_close().await.is_empty());
        let p = will_sub.next_publish().await;
        assert_eq!(p.topic, topic);
        assert_eq!(&p.payload[..], b"gone");
        assert_eq!(
            errors(&broker),
            before,
            "an incomplete packet is not counted"
        );
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn invalid_fixed_header_flags_are_malformed() {
    // 3.1.1 [MQTT-2.2.2-1, MQTT-2.2.2-2]; 5.0 [MQTT-2.1.3-1] and §4.13; [MQTT-3.3.1-2] DUP on
    // QoS 0 in both.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let mut n = 0;
    for v in BOTH {
        let sub = subscribe(v, 1, &[], &[(b"a/b", 0)]);
        let unsub = unsubscribe(v, 2, &[b"a/b"]);
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for first in [0x80, 0x83, 0x8A] {
            let mut b = sub.clone();
            b[0] = first;
            cases.push(b);
        }
        for first in [0xA0, 0xA3] {
            let mut b = unsub.clone();
            b[0] = first;
            cases.push(b);
        }
        cases.push(ack(0x60, 1)); // PUBREL with flags 0
        cases.push(ack(0x63, 1));
        cases.push(ack(0x42, 1)); // PUBACK with a flag
        cases.push(ack(0x51, 1)); // PUBREC
        cases.push(ack(0x78, 1)); // PUBCOMP
        cases.push(vec![0xC1, 0x00]); // PINGREQ
        cases.push(vec![0xE2, 0x00]); // DISCONNECT
        cases.push(publish(v, 0, false, b"a/b", None, &[], b"x")); // DUP on QoS 0:
        let last = cases.len() - 1;
        cases[last][0] |= 0x08;
        for bytes in cases {
            n += 1;
            let before = errors(&broker);
            send_bad(
                &broker,
                v,
                &id(v, "flags", n),
                &bytes,
                ReasonCode::MalformedPacket,
            )
            .await;
            expect_errors(&broker, before, 1, 0).await;
        }
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn publish_with_qos_3_is_malformed() {
    // [MQTT-3.3.1-4] in 3.1.1 (close) and 5.0 (Malformed Packet, 0x81).
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    for v in BOTH {
        let before = errors(&broker);
        let bytes = publish(v, 3, false, b"a/b", Some(1), &[], b"x");
        send_bad(
            &broker,
            v,
            &id(v, "qos3", 0),
            &bytes,
            ReasonCode::MalformedPacket,
        )
        .await;
        expect_errors(&broker, before, 1, 0).await;
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn publish_topic_with_wildcards_is_refused() {
    // [MQTT-3.3.2-2] in 3.1.1 and 5.0; v5 DISCONNECT 0x90 (Topic Name invalid).
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let mut n = 0;
    for v in BOTH {
        for topic in [&b"a/+"[..], b"a/#", b"#", b"+", b"a+b"] {
            n += 1;
            let before = errors(&broker);
            let bytes = publish(v, 1, false, topic, Some(7), &[], b"x");
            send_bad(
                &broker,
                v,
                &id(v, "wild", n),
                &bytes,
                ReasonCode::TopicNameInvalid,
            )
            .await;
            expect_errors(&broker, before, 1, 0).await;
        }
    }
    assert_eq!(
        broker.broker().metrics.messages_received.get(),
        2,
        "only the witness check"
    );
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn invalid_utf8_and_null_in_topics_are_malformed() {
    // 3.1.1 [MQTT-1.5.3-1] (ill-formed UTF-8, surrogates) and [MQTT-1.5.3-2] (U+0000): close.
    // 5.0 [MQTT-1.5.4-1], [MQTT-1.5.4-2]: Malformed Packet 0x81. Also in a SUBSCRIBE filter
    // ([MQTT-3.8.3-1] in 5.0).
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let topics: [&[u8]; 5] = [
        b"a/\xFF",
        b"\xED\xA0\x80",       // U+D800 encoded
        b"a/\x00/b",           // U+0000
        b"\xC0\xAF",           // overlong '/'
        b"a/\xF4\x90\x80\x80", // above U+10FFFF
    ];
    let mut n = 0;
    for v in BOTH {
        for topic in topics {
            for bytes in [
                publish(v, 0, false, topic, None, &[], b"x"),
                subscribe(v, 3, &[], &[(topic, 0)]),
            ] {
                n += 1;
                let before = errors(&broker);
                send_bad(
                    &broker,
                    v,
                    &id(v, "utf8", n),
                    &bytes,
                    ReasonCode::MalformedPacket,
                )
                .await;
                expect_errors(&broker, before, 1, 0).await;
            }
        }
    }
    assert_eq!(
        broker.broker().routes.subscription_count(),
        Witness::SUBSCRIPTIONS
    );
    w.check().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE, packet identifiers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn subscribe_without_filters_is_a_protocol_error() {
    // [MQTT-3.8.3-3 in 3.1.1], [MQTT-3.8.3-2 in 5.0]; UNSUBSCRIBE likewise [MQTT-3.10.3-2].
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let mut n = 0;
    for v in BOTH {
        for bytes in [subscribe(v, 1, &[], &[]), unsubscribe(v, 2, &[])] {
            n += 1;
            let before = errors(&broker);
            send_bad(
                &broker,
                v,
                &id(v, "nofilter", n),
                &bytes,
                ReasonCode::ProtocolError,
            )
            .await;
            expect_errors(&broker, before, 0, 1).await;
        }
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn subscription_options_reserved_bits_are_malformed() {
    // 3.1.1 [MQTT-3.8.3-4]: bits 2-7 reserved, QoS 3 invalid. 5.0 [MQTT-3.8.3-5]: bits 6-7
    // reserved; QoS 3 is malformed; Retain Handling 3 is a Protocol Error (§3.8.3.1).
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let mut n = 0;
    let cases: [(ProtocolVersion, u8, ReasonCode); 8] = [
        (V3, 0x04, ReasonCode::MalformedPacket),
        (V3, 0x10, ReasonCode::MalformedPacket),
        (V3, 0x80, ReasonCode::MalformedPacket),
        (V3, 0x03, ReasonCode::MalformedPacket),
        (V5, 0x40, ReasonCode::MalformedPacket),
        (V5, 0x80, ReasonCode::MalformedPacket),
        (V5, 0x03, ReasonCode::MalformedPacket),
        (V5, 0x30, ReasonCode::ProtocolError),
    ];
    for (v, options, reason) in cases {
        n += 1;
        let before = errors(&broker);
        // A valid filter first: the whole packet is refused, the valid one is not subscribed.
        let bytes = subscribe(v, 5, &[], &[(b"fine/topic", 1), (b"a/b", options)]);
        send_bad(&broker, v, &id(v, "opts", n), &bytes, reason).await;
        if reason == ReasonCode::ProtocolError {
            expect_errors(&broker, before, 0, 1).await;
        } else {
            expect_errors(&broker, before, 1, 0).await;
        }
    }
    assert_eq!(
        broker.broker().routes.subscription_count(),
        Witness::SUBSCRIPTIONS
    );
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn packet_identifier_zero_is_a_protocol_error() {
    // [MQTT-2.3.1-1 in 3.1.1]: SUBSCRIBE, UNSUBSCRIBE and QoS > 0 PUBLISH carry a non-zero
    // Packet Identifier; 5.0 [MQTT-2.2.1-3] (the client's duty) is checked by the server.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let mut n = 0;
    for v in BOTH {
        for bytes in [
            subscribe(v, 0, &[], &[(b"a/b", 1)]),
            unsubscribe(v, 0, &[b"a/b"]),
            publish(v, 1, false, b"a/b", Some(0), &[], b"x"),
            publish(v, 2, false, b"a/b", Some(0), &[], b"x"),
        ] {
            n += 1;
            let before = errors(&broker);
            send_bad(
                &broker,
                v,
                &id(v, "pid0", n),
                &bytes,
                ReasonCode::ProtocolError,
            )
            .await;
            expect_errors(&broker, before, 0, 1).await;
        }
    }
    w.check().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// v5 properties, packet types, size
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v5_duplicate_property_is_a_protocol_error_and_a_foreign_one_is_malformed() {
    // 5.0 §2.2.2.2: a property that may appear once, twice, is a Protocol Error (0x82); a
    // property identifier not defined for the packet makes it a Malformed Packet (0x81).
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let dup_expiry = [0x02, 0, 0, 0, 10, 0x02, 0, 0, 0, 20];
    let dup_sub_id = [0x0B, 1, 0x0B, 2];
    let protocol = [
        publish(V5, 0, false, b"a/b", None, &dup_expiry, b"x"),
        subscribe(V5, 1, &dup_sub_id, &[(b"a/b", 0)]),
    ];
    let session_expiry = [0x11, 0, 0, 0, 10]; // CONNECT/CONNACK/DISCONNECT only
    let undefined = [0x7F, 0]; // no such property
    let malformed = [
        publish(V5, 0, false, b"a/b", None, &session_expiry, b"x"),
        publish(V5, 1, false, b"a/b", Some(1), &undefined, b"x"),
        subscribe(V5, 2, &[0x01, 1], &[(b"a/b", 0)]), // Payload Format Indicator
    ];
    let mut n = 0;
    for bytes in protocol {
        n += 1;
        let before = errors(&broker);
        send_bad(
            &broker,
            V5,
            &id(V5, "dup", n),
            &bytes,
            ReasonCode::ProtocolError,
        )
        .await;
        expect_errors(&broker, before, 0, 1).await;
    }
    for bytes in malformed {
        n += 1;
        let before = errors(&broker);
        send_bad(
            &broker,
            V5,
            &id(V5, "foreign", n),
            &bytes,
            ReasonCode::MalformedPacket,
        )
        .await;
        expect_errors(&broker, before, 1, 0).await;
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn packet_type_zero_is_refused() {
    // Type 0 is reserved (forbidden) in 3.1.1 §2.2.1 and 5.0 §2.1.2: close; v5 gets a
    // DISCONNECT 0x81: a packet of no defined type "cannot be parsed according to this
    // specification", which is 5.0's definition of a Malformed Packet (§1.2).
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    for v in BOTH {
        let before = errors(&broker);
        let mut raw = session(&broker, v, &id(v, "type0", 0)).await;
        raw.send(&[0x00, 0x00]).await;
        let got = raw.expect_close().await;
        if v.is_v5() {
            let reason = only_disconnect(&got);
            assert_eq!(reason, ReasonCode::MalformedPacket);
        } else {
            assert!(got.is_empty());
        }
        eventually("one error counted", || {
            let e = errors(&broker);
            e.malformed + e.protocol == before.malformed + before.protocol + 1
        })
        .await;
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn auth_packet_is_refused() {
    // 3.1.1: type 15 is reserved (§2.2.1): a packet that cannot be parsed, closed and counted as
    // malformed. 5.0 [MQTT-4.12.0-7]: without an Authentication Method in CONNECT the client
    // must not send AUTH: a well-formed packet, Protocol Error 0x82.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    for (v, bytes, reason, malformed, protocol) in [
        (V3, vec![0xF0, 0x00], ReasonCode::MalformedPacket, 1, 0),
        (V5, vec![0xF0, 0x00], ReasonCode::ProtocolError, 0, 1),
        (
            V5,
            vec![0xF0, 0x02, 0x18, 0x00],
            ReasonCode::ProtocolError,
            0,
            1,
        ),
    ] {
        let before = errors(&broker);
        send_bad(&broker, v, &id(v, "auth", bytes.len()), &bytes, reason).await;
        expect_errors(&broker, before, malformed, protocol).await;
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn packet_larger_than_max_packet_size_is_refused() {
    // 5.0 §3.2.2.3.6: the server advertises Maximum Packet Size; a larger packet gets
    // DISCONNECT 0x95 [MQTT-3.2.2-15 is the client's duty]. 3.1.1: the connection is closed. The
    // limit applies to the whole packet and is enforced from the fixed header alone, before the
    // body is buffered. A packet of exactly the limit passes.
    let broker = TestBroker::start_with(|c| c.mqtt.max_packet_size = ByteSize(1024)).await;
    let mut w = Witness::start(&broker).await;
    let mut sub = v5::Client::connect(&broker, "big-sub").await;
    assert_eq!(
        sub.connack
            .properties
            .as_ref()
            .and_then(|p| p.max_packet_size),
        Some(1024)
    );
    sub.subscribe("big/#", v5::QoS::AtMostOnce).await;
    for v in BOTH {
        let before = errors(&broker);
        // Exactly 1024 bytes: 3 bytes of fixed header, 2+5 of topic, v5 property length 1.
        let payload_len = 1024 - 3 - 7 - usize::from(v.is_v5());
        let ok = publish(v, 0, false, b"big/a", None, &[], &vec![b'x'; payload_len]);
        assert_eq!(ok.len(), 1024);
        let mut raw = session(&broker, v, &id(v, "big", 0)).await;
        raw.send(&ok).await;
        let p = sub.next_publish().await;
        assert_eq!(p.payload.len(), payload_len);
        // 1025 bytes.
        let too_big = publish(
            v,
            0,
            false,
            b"big/a",
            None,
            &[],
            &vec![b'x'; payload_len + 1],
        );
        raw.send(&too_big).await;
        expect_dropped(&mut raw, ReasonCode::PacketTooLarge).await;
        expect_errors(&broker, before, 1, 0).await;

        // Only the fixed header of a 2,000,000-byte PUBLISH: refused at once.
        let before = errors(&broker);
        let mut raw = session(&broker, v, &id(v, "big", 1)).await;
        let mut header = vec![0x30];
        header.extend_from_slice(&varint(2_000_000));
        raw.send(&header).await;
        expect_dropped(&mut raw, ReasonCode::PacketTooLarge).await;
        expect_errors(&broker, before, 1, 0).await;
    }
    w.check().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Random input
// ---------------------------------------------------------------------------------------------

/// xorshift64*: a fixed, dependency-free pseudo-random sequence.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Valid packets a client may send after CONNECT, as seeds for mutation.
fn seeds(v: ProtocolVersion) -> Vec<Vec<u8>> {
    let props: &[u8] = if v.is_v5() {
        &[0x02, 0, 0, 0, 5, 0x26, 0, 1, b'k', 0, 1, b'v']
    } else {
        &[]
    };
    vec![
        publish(v, 0, false, b"fuzz/a", None, &[], b"payload"),
        publish(v, 1, true, b"fuzz/b", Some(1), props, b"retained"),
        publish(v, 2, false, b"fuzz/c", Some(2), props, b"two"),
        subscribe(v, 3, &[], &[(b"fuzz/#", 2), (b"+/x", 1)]),
        unsubscribe(v, 4, &[b"fuzz/#"]),
        ack(0x40, 1),
        ack(0x50, 2),
        ack(0x62, 2),
        ack(0x70, 3),
        PINGREQ.to_vec(),
        connect_simple(v, "again", 10),
        vec![0xE0, 0x00],
    ]
}

fn fuzz_input(rng: &mut XorShift, v: ProtocolVersion, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(4) {
        // Pure noise.
        0 => {
            let n = 1 + rng.below(48);
            rng.bytes(n)
        }
        // A valid packet with one to three bytes replaced.
        1 => {
            let mut b = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(3) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            b
        }
        // A valid packet cut short, or with noise after it.
        2 => {
            let mut b = seeds[rng.below(seeds.len())].clone();
            if rng.below(2) == 0 {
                b.truncate(rng.below(b.len()));
            } else {
                let n = rng.below(16);
                b.extend(rng.bytes(n));
            }
            b
        }
        // A valid first byte and a random remaining length and body.
        _ => {
            let first = seeds[rng.below(seeds.len())][0] ^ ((rng.next() as u8) & 0x0F);
            let mut b = vec![first];
            let len = rng.below(if v.is_v5() { 300 } else { 40 });
            b.extend(varint(len));
            let n = rng.below(len + 1);
            b.extend(rng.bytes(n));
            b
        }
    }
}

/// One fuzz connection: CONNECT, CONNACK, the input, half-close, read until the broker closes.
async fn fuzz_one(addr: std::net::SocketAddr, v: ProtocolVersion, i: usize, input: Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let cid = format!("fuzz-{i}");
    stream
        .write_all(&connect_simple(v, &cid, 30))
        .await
        .expect("write CONNECT");
    // CONNACK first (its size differs by version): read at least 4 bytes before the input, so
    // that the input is always read as post-CONNECT traffic.
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    while got < 4 {
        let n = within("CONNACK", stream.read(&mut buf[got..]))
            .await
            .expect("read CONNACK");
        assert!(n > 0, "closed before CONNACK");
        got += n;
    }
    assert_eq!(buf[0], 0x20, "CONNACK");
    // The broker may close while we write: that is a valid reaction.
    let _ = stream.write_all(&input).await;
    let _ = stream.shutdown().await;
    loop {
        match within("close after fuzz input", stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_input_never_crashes_the_broker() {
    // 2,000 random byte strings, each on a fresh connection after a valid CONNECT (alternating
    // 3.1.1 and 5.0): no client actor crashes, every connection ends, every session is cleaned
    // up, and the broker keeps accepting clients and routing for the witnesses.
    let started = Instant::now();
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let mut rng = XorShift(0x5EED_BEA0_1234_5678);
    let seeds3 = seeds(V3);
    let seeds5 = seeds(V5);
    let mut tasks = tokio::task::JoinSet::new();
    const PARALLEL: usize = 16;
    for i in 0..2000 {
        let v = if i % 2 == 0 { V3 } else { V5 };
        let input = fuzz_input(&mut rng, v, if v.is_v5() { &seeds5 } else { &seeds3 });
        if tasks.len() >= PARALLEL {
            tasks
                .join_next()
                .await
                .expect("task")
                .expect("fuzz connection");
        }
        tasks.spawn(fuzz_one(broker.addr, v, i, input));
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("fuzz connection");
    }
    let m = &broker.broker().metrics;
    assert_eq!(m.client_crashes.get(), 0, "no client actor crashed");
    eventually("every fuzz session ended", || {
        m.sessions.get() == Witness::SESSIONS && m.connections.get() == Witness::SESSIONS
    })
    .await;
    eventually("fuzz subscriptions removed", || {
        broker.broker().routes.subscription_count() == Witness::SUBSCRIPTIONS
    })
    .await;
    w.check().await;
    let mut late = v5::Client::connect(&broker, "after-fuzz").await;
    late.subscribe("after/fuzz", v5::QoS::AtLeastOnce).await;
    late.publish("after/fuzz", v5::QoS::AtLeastOnce, false, b"ok")
        .await;
    assert_eq!(&late.next_publish().await.payload[..], b"ok");
    eprintln!(
        "fuzz: {} connections, {} malformed, {} protocol errors, in {:?}",
        m.sockets_accepted.get(),
        m.malformed_packets.get(),
        m.protocol_errors.get(),
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fuzz took {:?}",
        started.elapsed()
    );
    broker.stop().await;
}
