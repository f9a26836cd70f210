//! MQTT 3.1.1 conformance: the server-side statements of docs/spec/mqtt-3.1.1-statements.tsv
//! that the other test files did not check yet (see docs/spec/coverage-3.1.1.tsv). Every id in
//! this file is a 3.1.1 id ("3.1.1 [MQTT-x.y.z-n]"); 5.0 numbers its statements differently.
//!
//! Most cases are raw bytes on a socket, compared byte for byte with the figures of the 3.1.1
//! standard, so that the broker's own codec cannot hide a mistake; rumqttc (3.1.1) plays the
//! well-behaved publishers and subscribers around them.

mod common;
mod edge;

use std::time::Duration;

use beamq_actors::config::DurationStr;
use beamq_protocol::{Packet, ProtocolVersion, QoS};
use common::*;
use edge::*;

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Reads one whole frame from the broker, byte for byte: first byte, Remaining Length, body.
async fn read_frame(raw: &mut Raw) -> Vec<u8> {
    let mut out = raw.read_exact(1).await;
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let b = raw.read_exact(1).await[0];
        out.push(b);
        len |= usize::from(b & 0x7F) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    out.extend(raw.read_exact(len).await);
    out
}

/// A PUBLISH frame taken apart: first byte, topic, packet identifier (read when the QoS bits
/// say there is one), payload.
#[derive(Debug)]
struct RawPublish {
    first: u8,
    topic: Vec<u8>,
    packet_id: Option<u16>,
    payload: Vec<u8>,
}

fn parse_publish(f: &[u8]) -> RawPublish {
    assert_eq!(f[0] >> 4, 3, "expected a PUBLISH frame, got {f:02X?}");
    let mut i = 1;
    while f[i] & 0x80 != 0 {
        i += 1;
    }
    let body = &f[i + 1..];
    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = body[2..2 + tlen].to_vec();
    let mut rest = &body[2 + tlen..];
    let packet_id = if (f[0] >> 1) & 0x03 > 0 {
        let id = u16::from_be_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
        Some(id)
    } else {
        None
    };
    RawPublish {
        first: f[0],
        topic,
        packet_id,
        payload: rest.to_vec(),
    }
}

/// Reads the next frame, which must be a PUBLISH.
async fn read_publish(raw: &mut Raw) -> RawPublish {
    let f = read_frame(raw).await;
    parse_publish(&f)
}

/// Opens a raw 3.1.1 session with Clean Session `clean` and returns it with the Session
/// Present flag of its (successful) CONNACK.
async fn raw_session(broker: &TestBroker, id: &str, clean: bool) -> (Raw, bool) {
    let mut raw = Raw::connect(broker).await;
    raw.send(&wire::connect(false, id, clean, 60, &[], None))
        .await;
    let connack = raw.read_exact(4).await;
    assert_eq!(&connack[..2], &[0x20, 0x02], "CONNACK");
    assert!(
        connack[2] <= 1,
        "reserved acknowledge flags: {connack:02X?}"
    );
    assert_eq!(connack[3], 0x00, "CONNACK return code");
    (raw, connack[2] == 0x01)
}

/// A persistent (Clean Session 0) rumqttc client.
async fn persistent(broker: &TestBroker, id: &str, manual_acks: bool) -> v3::Client {
    let mut o = v3::options(broker, id);
    o.set_clean_session(false);
    o.set_manual_acks(manual_acks);
    v3::Client::connect_with(o).await
}

/// Sends `bytes` as a CONNECT on a fresh socket and expects the broker to close it without
/// sending anything (no CONNACK: 3.1.1 [MQTT-3.1.4-1]).
async fn connect_is_closed_silently(broker: &TestBroker, bytes: &[u8], what: &str) {
    let mut raw = Raw::connect(broker).await;
    raw.send(bytes).await;
    let got = raw.expect_close().await;
    assert!(got.is_empty(), "{what}: got {got:?}");
}

// ---------------------------------------------------------------------------------------------
// Packets the server sends: fixed headers, packet identifiers, acknowledgements
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v311_server_packets_have_the_specified_fixed_headers_and_packet_identifiers() {
    // 3.1.1, byte for byte: [MQTT-2.2.2-1] the flags of every packet the server sends;
    // [MQTT-3.1.4-4] CONNACK return code 0 with [MQTT-3.2.2-1] Session Present 0 for a clean
    // session; [MQTT-3.8.4-1], [MQTT-3.8.4-2], [MQTT-2.3.1-7] SUBACK with the SUBSCRIBE's
    // identifier, [MQTT-3.8.4-4] one SUBACK for several filters, [MQTT-3.8.4-5] one code per
    // filter, [MQTT-3.9.3-1] in order, [MQTT-3.9.3-2] failure is 0x80; [MQTT-2.3.1-5],
    // [MQTT-4.3.1-1] a QoS 0 PUBLISH has DUP 0 and no identifier; [MQTT-2.3.1-1],
    // [MQTT-4.3.2-1], [MQTT-4.3.3-1] QoS 1 and 2 PUBLISH with a non-zero identifier and DUP 0,
    // and a PUBREL with the PUBLISH's identifier ([MQTT-2.3.1-6]); [MQTT-3.3.4-1],
    // [MQTT-4.3.2-2], [MQTT-4.3.3-2] PUBACK, PUBREC, PUBCOMP with the client's identifiers;
    // [MQTT-3.10.4-4], [MQTT-3.10.4-5] UNSUBACK with the UNSUBSCRIBE's identifier, also when
    // nothing was removed; [MQTT-3.12.4-1] PINGRESP.
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(&broker).await;
    raw.send(&Raw::connect_v311("wire-sub")).await;
    assert_eq!(raw.read_exact(4).await, [0x20, 0x02, 0x00, 0x00]);

    raw.send(&subscribe(
        V3,
        0x1234,
        &[],
        &[(b"w/0", 0), (b"w/1", 1), (b"w/2", 2), (b"w/#/bad", 1)],
    ))
    .await;
    assert_eq!(
        read_frame(&mut raw).await,
        [0x90, 0x06, 0x12, 0x34, 0x00, 0x01, 0x02, 0x80]
    );

    let mut publ = v3::Client::connect(&broker, "wire-pub").await;
    publ.publish("w/0", v3::QoS::AtMostOnce, false, b"p0").await;
    assert_eq!(
        read_frame(&mut raw).await,
        frame(0x30, b"\x00\x03w/0p0"),
        "QoS 0: first byte 0x30, no packet identifier"
    );

    publ.publish("w/1", v3::QoS::AtLeastOnce, false, b"p1")
        .await;
    let p = read_publish(&mut raw).await;
    assert_eq!(p.first, 0x32, "QoS 1, DUP 0, RETAIN 0");
    assert_eq!((&p.topic[..], &p.payload[..]), (&b"w/1"[..], &b"p1"[..]));
    let id1 = p.packet_id.expect("QoS 1 has an identifier");
    assert_ne!(id1, 0);
    raw.send(&wire::puback(id1)).await;

    publ.publish("w/2", v3::QoS::ExactlyOnce, false, b"p2")
        .await;
    let p = read_publish(&mut raw).await;
    assert_eq!(p.first, 0x34, "QoS 2, DUP 0, RETAIN 0");
    let id2 = p.packet_id.expect("QoS 2 has an identifier");
    assert_ne!(id2, 0);
    raw.send(&wire::pubrec(id2)).await;
    let [hi, lo] = id2.to_be_bytes();
    assert_eq!(read_frame(&mut raw).await, [0x62, 0x02, hi, lo], "PUBREL");
    raw.send(&wire::pubcomp(id2)).await;

    // The broker as receiver.
    raw.send(&publish(V3, 1, false, b"x/1", Some(0x0101), &[], b"a"))
        .await;
    assert_eq!(
        read_frame(&mut raw).await,
        [0x40, 0x02, 0x01, 0x01],
        "PUBACK"
    );
    raw.send(&publish(V3, 2, false, b"x/2", Some(0x0202), &[], b"b"))
        .await;
    assert_eq!(
        read_frame(&mut raw).await,
        [0x50, 0x02, 0x02, 0x02],
        "PUBREC"
    );
    raw.send(&ack(0x62, 0x0202)).await;
    assert_eq!(
        read_frame(&mut raw).await,
        [0x70, 0x02, 0x02, 0x02],
        "PUBCOMP"
    );

    raw.send(&unsubscribe(V3, 0x4321, &[b"w/0", b"not/subscribed"]))
        .await;
    assert_eq!(
        read_frame(&mut raw).await,
        [0xB0, 0x02, 0x43, 0x21],
        "UNSUBACK"
    );
    raw.send(&unsubscribe(V3, 0x0007, &[b"never/subscribed"]))
        .await;
    assert_eq!(
        read_frame(&mut raw).await,
        [0xB0, 0x02, 0x00, 0x07],
        "UNSUBACK"
    );
    raw.send(&PINGREQ).await;
    assert_eq!(read_frame(&mut raw).await, [0xD0, 0x00], "PINGRESP");
    broker.stop().await;
}

#[tokio::test]
async fn v311_server_packet_identifiers_are_unused_while_in_flight() {
    // 3.1.1 [MQTT-2.3.1-4] (with [MQTT-2.3.1-2, MQTT-2.3.1-3] applied to the server),
    // [MQTT-4.3.2-1], [MQTT-4.3.3-1]: every new QoS 1/2 PUBLISH gets an identifier that no
    // unacknowledged PUBLISH or uncompleted PUBREL of the session holds; an identifier is free
    // again only after its acknowledgement. (Resends keep their identifier: session.rs.)
    let broker = TestBroker::start_with(|c| c.mqtt.max_inflight = 4).await;
    let (mut raw, _) = raw_session(&broker, "ids-sub", true).await;
    raw.send(&wire::subscribe(false, 1, "ids/t", 2)).await;
    assert_eq!(read_frame(&mut raw).await, [0x90, 0x03, 0x00, 0x01, 0x02]);
    let mut publ = v3::Client::connect(&broker, "ids-pub").await;
    let qos = [
        v3::QoS::AtLeastOnce,
        v3::QoS::ExactlyOnce,
        v3::QoS::AtLeastOnce,
        v3::QoS::ExactlyOnce,
    ];
    for (i, q) in qos.iter().enumerate() {
        publ.publish("ids/t", *q, false, &[i as u8]).await;
    }
    let mut ids = Vec::new();
    for i in 0..4u8 {
        let p = read_publish(&mut raw).await;
        assert_eq!(p.payload, [i]);
        assert_eq!(p.first & 0x08, 0, "DUP 0 on a first delivery");
        let id = p.packet_id.expect("identifier");
        assert_ne!(id, 0);
        assert!(!ids.contains(&id), "identifier {id} reused while in flight");
        ids.push(id);
    }
    // Message 1 (QoS 2) moves to PUBREL and stays uncompleted; message 2 (QoS 1) is
    // acknowledged; messages 0 and 3 stay unacknowledged.
    raw.send(&wire::pubrec(ids[1])).await;
    let [hi, lo] = ids[1].to_be_bytes();
    assert_eq!(read_frame(&mut raw).await, [0x62, 0x02, hi, lo]);
    raw.send(&wire::puback(ids[2])).await;
    let in_use = [ids[0], ids[1], ids[3]];
    publ.publish("ids/t", v3::QoS::AtLeastOnce, false, &[4])
        .await;
    let p = read_publish(&mut raw).await;
    assert_eq!(p.payload, [4]);
    let id = p.packet_id.expect("identifier");
    assert_ne!(id, 0);
    assert!(
        !in_use.contains(&id),
        "identifier {id} is held by {in_use:?}"
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// UTF-8 strings
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v311_ill_formed_utf8_or_nul_in_any_string_closes_the_connection() {
    // 3.1.1 [MQTT-1.5.3-1] ill-formed UTF-8 (here: a stray byte, an encoded surrogate) and
    // [MQTT-1.5.3-2] U+0000 close the connection, in every string field: the Client Identifier
    // [MQTT-3.1.3-4], the Will Topic [MQTT-3.1.3-10] and the User Name [MQTT-3.1.3-11] of
    // CONNECT (closed without CONNACK, [MQTT-3.1.4-1]), and the filters of UNSUBSCRIBE
    // [MQTT-3.10.3-1]. (PUBLISH topics and SUBSCRIBE filters: malformed.rs.)
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let bad: [&[u8]; 3] = [b"a\xFFb", b"a\xED\xA0\x80", b"a\x00b"];
    for (n, bad) in bad.into_iter().enumerate() {
        let before = errors(&broker);
        // Client Identifier.
        connect_is_closed_silently(&broker, &connect(V3, 0x02, 60, &[], &s(bad)), "client id")
            .await;
        // Will Topic.
        let mut payload = s(format!("utf-will-{n}").as_bytes());
        payload.extend(s(bad));
        payload.extend(s(b"message"));
        connect_is_closed_silently(&broker, &connect(V3, 0x06, 60, &[], &payload), "will topic")
            .await;
        // User Name.
        let mut payload = s(format!("utf-user-{n}").as_bytes());
        payload.extend(s(bad));
        connect_is_closed_silently(&broker, &connect(V3, 0x82, 60, &[], &payload), "user name")
            .await;
        // An UNSUBSCRIBE filter, after a valid one.
        send_bad(
            &broker,
            V3,
            &format!("utf-unsub-{n}"),
            &unsubscribe(V3, 3, &[b"fine", bad]),
            beamq_protocol::ReasonCode::MalformedPacket,
        )
        .await;
        expect_errors(&broker, before, 4, 0).await;
    }
    assert_eq!(
        broker.broker().metrics.connects.get(),
        Witness::SESSIONS + 3
    );
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_bom_is_kept_and_topics_are_never_normalised() {
    // 3.1.1 [MQTT-1.5.3-3]: 0xEF 0xBB 0xBF (U+FEFF) is a character like any other, never
    // stripped: in topic names, filters and client identifiers. [MQTT-4.7.3-4]: matching does
    // no normalisation (Unicode composition, case, separators, spaces).
    let broker = TestBroker::start().await;
    let mut sub = v3::Client::connect(&broker, "norm-sub").await;
    for f in [
        "bom/\u{FEFF}x",
        "nfc/caf\u{E9}",
        "case/A",
        "sl/a/b",
        "sp/a b",
        "bom2/+",
        "marker",
    ] {
        sub.subscribe(f, v3::QoS::AtLeastOnce).await;
    }
    let mut publ = v3::Client::connect(&broker, "norm-pub").await;
    for t in [
        "bom/x",
        "bom/\u{FEFF}x",
        "\u{FEFF}bom/\u{FEFF}x",
        "nfc/cafe\u{301}",
        "nfc/caf\u{E9}",
        "case/a",
        "CASE/A",
        "case/A",
        "sl/a//b",
        "sl/a/b/",
        "/sl/a/b",
        "sl/a/b",
        "sp/a  b",
        "sp/ab",
        "sp/a b",
        "bom2/\u{FEFF}",
        "marker",
    ] {
        publ.publish(t, v3::QoS::AtLeastOnce, false, t.as_bytes())
            .await;
    }
    let mut got = Vec::new();
    loop {
        let p = sub.next_publish().await;
        assert_eq!(
            &p.payload[..],
            p.topic.as_bytes(),
            "topic sent as published"
        );
        got.push(p.topic.clone());
        if p.topic == "marker" {
            break;
        }
    }
    assert_eq!(
        got,
        [
            "bom/\u{FEFF}x",
            "nfc/caf\u{E9}",
            "case/A",
            "sl/a/b",
            "sp/a b",
            "bom2/\u{FEFF}",
            "marker"
        ]
    );

    // Client identifiers "\u{FEFF}bom" and "bom" are two clients, not one.
    let (_a, _) = raw_session(&broker, "\u{FEFF}bom", true).await;
    let (_b, _) = raw_session(&broker, "bom", true).await;
    assert!(broker.broker().sessions.get("\u{FEFF}bom").is_some());
    assert!(broker.broker().sessions.get("bom").is_some());
    assert_eq!(broker.broker().metrics.takeovers.get(), 0);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// CONNECT: flags and payload must agree
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v311_will_flag_and_will_fields_must_agree() {
    // 3.1.1 [MQTT-3.1.2-9]: with the Will Flag, Will Topic and Will Message must be present;
    // [MQTT-3.1.2-11]: without it they must not be. A CONNECT breaking either is closed without
    // CONNACK ([MQTT-3.1.4-1]) and starts no session.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let cases: [(u8, Vec<Vec<u8>>, &str); 4] = [
        (0x06, vec![s(b"wf-1")], "will flag, no will fields"),
        (
            0x06,
            vec![s(b"wf-2"), s(b"will/t")],
            "will flag, no will message",
        ),
        (
            0x02,
            vec![s(b"wf-3"), s(b"will/t"), s(b"bye")],
            "will fields without the will flag",
        ),
        (
            0x0E,
            vec![s(b"wf-4"), s(b"will/t")],
            "will flag and QoS 1, no will message",
        ),
    ];
    for (flags, fields, what) in cases {
        let before = errors(&broker);
        connect_is_closed_silently(
            &broker,
            &connect(V3, flags, 60, &[], &fields.concat()),
            what,
        )
        .await;
        expect_errors(&broker, before, 1, 0).await;
    }
    assert_eq!(broker.broker().metrics.connects.get(), Witness::SESSIONS);
    // With both present it is accepted.
    let mut raw = Raw::connect(&broker).await;
    raw.send(&connect(
        V3,
        0x06,
        60,
        &[],
        &[s(b"wf-ok"), s(b"will/t"), s(b"bye")].concat(),
    ))
    .await;
    assert_eq!(raw.read_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_user_name_and_password_must_agree_with_their_flags() {
    // 3.1.1 [MQTT-3.1.2-18] no User Name Flag: no user name; [MQTT-3.1.2-19] User Name Flag: a
    // user name; [MQTT-3.1.2-20] no Password Flag: no password; [MQTT-3.1.2-21] Password Flag:
    // a password. Otherwise the CONNECT does not conform: closed without CONNACK
    // ([MQTT-3.1.4-1]). Consistent ones are accepted (beamq has no authentication yet).
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let cases: [(u8, Vec<Vec<u8>>, &str); 4] = [
        (
            0x02,
            vec![s(b"up-1"), s(b"user")],
            "user name without its flag",
        ),
        (0x82, vec![s(b"up-2")], "user name flag without user name"),
        (
            0x82,
            vec![s(b"up-3"), s(b"user"), s(b"secret")],
            "password without its flag",
        ),
        (
            0xC2,
            vec![s(b"up-4"), s(b"user")],
            "password flag without password",
        ),
    ];
    for (flags, fields, what) in cases {
        let before = errors(&broker);
        connect_is_closed_silently(
            &broker,
            &connect(V3, flags, 60, &[], &fields.concat()),
            what,
        )
        .await;
        expect_errors(&broker, before, 1, 0).await;
    }
    assert_eq!(broker.broker().metrics.connects.get(), Witness::SESSIONS);
    for (flags, fields) in [
        (0x82, vec![s(b"up-ok-1"), s(b"user")]),
        (0xC2, vec![s(b"up-ok-2"), s(b"user"), s(b"secret")]),
    ] {
        let mut raw = Raw::connect(&broker).await;
        raw.send(&connect(V3, flags, 60, &[], &fields.concat()))
            .await;
        assert_eq!(raw.read_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    }
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_client_identifier_must_be_present() {
    // 3.1.1 [MQTT-3.1.3-3]: the Client Identifier is present, first in the payload. A CONNECT
    // whose payload is empty, or holds half a length, is closed without CONNACK
    // ([MQTT-3.1.4-1]).
    let broker = TestBroker::start().await;
    for (payload, what) in [(&[][..], "no payload"), (&[0x00][..], "half a length")] {
        let before = errors(&broker);
        connect_is_closed_silently(&broker, &connect(V3, 0x02, 60, &[], payload), what).await;
        expect_errors(&broker, before, 1, 0).await;
    }
    assert_eq!(broker.broker().metrics.connects.get(), 0);
    assert!(broker.broker().sessions.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn v311_connect_payload_fields_are_read_in_their_order() {
    // 3.1.1 [MQTT-3.1.3-1]: Client Identifier, Will Topic, Will Message, User Name, Password.
    // All five present: the session gets the identifier and the will the topic and message.
    let broker = TestBroker::start().await;
    let mut watcher = v3::Client::connect(&broker, "order-watch").await;
    watcher.subscribe("order/#", v3::QoS::AtLeastOnce).await;
    let payload = [
        s(b"order-id"),
        s(b"order/will"),
        s(b"will-msg"),
        s(b"the-user"),
        s(b"the-password"),
    ]
    .concat();
    // User Name, Password, Will QoS 1, Will Flag, Clean Session.
    let mut raw = Raw::connect(&broker).await;
    raw.send(&connect(V3, 0xCE, 60, &[], &payload)).await;
    assert_eq!(raw.read_exact(4).await, [0x20, 0x02, 0x00, 0x00]);
    assert!(broker.broker().sessions.get("order-id").is_some());
    drop(raw);
    let p = watcher.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos),
        ("order/will", &b"will-msg"[..], v3::QoS::AtLeastOnce)
    );
    broker.stop().await;
}

#[tokio::test]
async fn v311_client_identifiers_of_1_to_23_alphanumerics_are_allowed() {
    // 3.1.1 [MQTT-3.1.3-5]: identifiers of 1 to 23 bytes of [0-9a-zA-Z] are accepted, each its
    // own session.
    let broker = TestBroker::start().await;
    let ids = [
        "0",
        "z",
        "Z",
        "0123456789abcdefghijklm",
        "nopqrstuvwxyzABCDEFGHIJ",
        "KLMNOPQRSTUVWXYZ0123456",
    ];
    let mut clients = Vec::new();
    for id in ids {
        assert!((1..=23).contains(&id.len()), "{id}");
        let c = v3::Client::connect(&broker, id).await;
        assert_eq!(c.connack.code, v3::ConnectReturnCode::Success);
        clients.push(c);
    }
    for id in ids {
        assert!(broker.broker().sessions.get(id).is_some(), "{id}");
    }
    assert_eq!(broker.broker().sessions.len(), ids.len());
    assert_eq!(broker.broker().metrics.takeovers.get(), 0);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Refused connections
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v311_nothing_sent_after_a_refused_connect_is_processed() {
    // 3.1.1 [MQTT-3.1.4-5]: packets pipelined behind a CONNECT that is refused (identifier
    // rejected: empty with Clean Session 0, or longer than `mqtt.max_clientid_len` = 23;
    // unacceptable protocol level) are not processed: no PUBLISH routed, no
    // SUBACK, no PINGRESP. [MQTT-3.2.2-4] Session Present 0 and [MQTT-3.2.2-5] the close.
    let broker = TestBroker::start_with(|c| c.mqtt.max_clientid_len = 23).await;
    let mut watcher = v3::Client::connect(&broker, "rej-watch").await;
    watcher.subscribe("rej/#", v3::QoS::AtMostOnce).await;
    let mut tail = publish(V3, 0, false, b"rej/a", None, &[], b"must not be routed");
    tail.extend(publish(V3, 1, true, b"rej/b", Some(1), &[], b"nor this"));
    tail.extend(subscribe(V3, 2, &[], &[(b"rej/#", 0)]));
    tail.extend(PINGREQ);
    let cases: [(Vec<u8>, [u8; 4]); 3] = [
        (
            wire::connect(false, "", false, 60, &[], None),
            [0x20, 0x02, 0x00, 0x02],
        ),
        (
            connect_simple(V3, "twenty-four-characters-x", 60),
            [0x20, 0x02, 0x00, 0x02],
        ),
        (
            connect_named(b"MQTT", 3, 0x02, 60, &[], &s(b"level3")),
            [0x20, 0x02, 0x00, 0x01],
        ),
    ];
    for (connect, connack) in cases {
        let mut raw = Raw::connect(&broker).await;
        let mut bytes = connect;
        bytes.extend_from_slice(&tail);
        raw.send(&bytes).await;
        assert_eq!(raw.read_exact(4).await, connack);
        assert!(raw.expect_close().await.is_empty(), "nothing after CONNACK");
    }
    let mut publ = v3::Client::connect(&broker, "rej-pub").await;
    publ.publish("rej/marker", v3::QoS::AtLeastOnce, false, b"marker")
        .await;
    assert_eq!(watcher.next_publish().await.topic, "rej/marker");
    let m = &broker.broker().metrics;
    assert_eq!(m.messages_received.get(), 1, "only the marker was received");
    assert_eq!(m.connects_refused.get(), 3);
    assert_eq!(broker.broker().routes.subscription_count(), 1);
    assert_eq!(broker.broker().retained.len(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn v311_refusal_has_session_present_0_even_when_a_session_is_stored() {
    // 3.1.1 [MQTT-3.2.2-4]: a CONNACK with a non-zero return code has Session Present 0, even
    // though a session is stored for the identifier; [MQTT-3.2.2-5] then the close. The refusal
    // is Server unavailable (3): `mqtt.max_clients` = 1 and another client is connected.
    let broker = TestBroker::start_with(|c| c.mqtt.max_clients = 1).await;
    let mut c = persistent(&broker, "stored", false).await;
    c.subscribe("stored/t", v3::QoS::AtLeastOnce).await;
    c.disconnect().await;
    let m = &broker.broker().metrics;
    eventually("no connection left", || m.connections.get() == 0).await;
    let other = v3::Client::connect(&broker, "other").await;

    let mut raw = Raw::connect(&broker).await;
    raw.send(&wire::connect(false, "stored", false, 60, &[], None))
        .await;
    assert_eq!(raw.read_exact(4).await, [0x20, 0x02, 0x00, 0x03]);
    assert!(raw.expect_close().await.is_empty());
    assert!(
        broker.broker().sessions.get("stored").is_some(),
        "the session was stored all along"
    );

    other.disconnect().await;
    eventually("no connection left", || m.connections.get() == 0).await;
    let back = persistent(&broker, "stored", false).await;
    assert!(back.connack.session_present);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Sessions and wills
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v311_clean_session_discards_queued_and_unacknowledged_messages() {
    // 3.1.1 [MQTT-3.1.2-6]: Clean Session 1 discards the previous session, and no state of it
    // is reused: neither the message left unacknowledged nor the one queued while offline is
    // delivered, nor does the old subscription deliver.
    let broker = TestBroker::start().await;
    let mut sub = persistent(&broker, "cq", true).await;
    sub.subscribe("cq/t", v3::QoS::AtLeastOnce).await;
    let mut publ = v3::Client::connect(&broker, "cq-pub").await;
    publ.publish("cq/t", v3::QoS::AtLeastOnce, false, b"in flight")
        .await;
    assert_eq!(&sub.next_publish().await.payload[..], b"in flight");
    sub.kill();
    eventually("session offline", || {
        broker
            .broker()
            .sessions
            .get("cq")
            .is_some_and(|s| !s.is_online())
    })
    .await;
    publ.publish("cq/t", v3::QoS::AtLeastOnce, false, b"queued")
        .await;

    let mut sub = v3::Client::connect(&broker, "cq").await;
    assert!(!sub.connack.session_present);
    sub.subscribe("cq/marker", v3::QoS::AtLeastOnce).await;
    publ.publish("cq/t", v3::QoS::AtLeastOnce, false, b"old subscription")
        .await;
    publ.publish("cq/marker", v3::QoS::AtLeastOnce, false, b"marker")
        .await;
    let p = sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("cq/marker", &b"marker"[..])
    );
    assert!(!p.dup);
    broker.stop().await;
}

#[tokio::test]
async fn v311_no_will_is_published_without_the_will_flag() {
    // 3.1.1 [MQTT-3.1.2-12]: a connection whose CONNECT had Will Flag 0 publishes nothing when
    // it ends, whether the socket just closes or the server closes it for a violation.
    let broker = TestBroker::start().await;
    let mut watcher = v3::Client::connect(&broker, "nw-watch").await;
    watcher.subscribe("#", v3::QoS::AtLeastOnce).await;
    let (raw, _) = raw_session(&broker, "nw-close", true).await;
    drop(raw);
    let (mut raw, _) = raw_session(&broker, "nw-violate", true).await;
    raw.send(&[0x00, 0x00]).await;
    assert!(raw.expect_close().await.is_empty());
    eventually("both sessions ended", || {
        let s = &broker.broker().sessions;
        s.get("nw-close").is_none() && s.get("nw-violate").is_none()
    })
    .await;
    let mut publ = v3::Client::connect(&broker, "nw-pub").await;
    publ.publish("nw/marker", v3::QoS::AtLeastOnce, false, b"marker")
        .await;
    assert_eq!(watcher.next_publish().await.topic, "nw/marker");
    assert_eq!(broker.broker().metrics.wills_published.get(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn v311_session_lasts_as_long_as_its_connection() {
    // 3.1.1 [MQTT-4.1.0-2]: `mqtt.session_expiry_interval` (1 s here) only runs once the
    // connection is gone. A persistent and a clean client stay connected while another
    // persistent session disconnects and expires after 1 s: theirs are still there and deliver.
    let broker = TestBroker::start_with(|c| {
        c.mqtt.session_expiry_interval = DurationStr(Some(Duration::from_secs(1)))
    })
    .await;
    let mut p = persistent(&broker, "live-p", false).await;
    p.subscribe("live/#", v3::QoS::AtLeastOnce).await;
    let mut c = v3::Client::connect(&broker, "live-c").await;
    c.subscribe("live/#", v3::QoS::AtLeastOnce).await;
    persistent(&broker, "clock", false).await.disconnect().await;
    let m = &broker.broker().metrics;
    eventually("the clock's session expired", || {
        m.sessions_expired.get() == 1
    })
    .await;
    assert!(broker.broker().sessions.get("clock").is_none());
    let mut publ = v3::Client::connect(&broker, "live-pub").await;
    publ.publish("live/x", v3::QoS::AtLeastOnce, false, b"still here")
        .await;
    assert_eq!(&p.next_publish().await.payload[..], b"still here");
    assert_eq!(&c.next_publish().await.payload[..], b"still here");
    assert!(broker.broker().sessions.get("live-p").is_some());
    assert!(broker.broker().sessions.get("live-c").is_some());
    assert_eq!(m.sessions_expired.get(), 1);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// PUBLISH: DUP, QoS, acknowledgements as receiver
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v311_dup_is_set_per_outgoing_packet_never_copied() {
    // 3.1.1 [MQTT-3.3.1-3]: the DUP flag of an incoming PUBLISH is not propagated, the outgoing
    // one is set only for a retransmission; [MQTT-3.3.1-2] DUP 0 on every QoS 0 PUBLISH, also
    // for a message published with DUP 1 and downgraded to QoS 0.
    let broker = TestBroker::start().await;
    let (mut sub1, _) = raw_session(&broker, "dup-sub1", true).await;
    sub1.send(&wire::subscribe(false, 1, "dup/t", 1)).await;
    assert_eq!(read_frame(&mut sub1).await, [0x90, 0x03, 0x00, 0x01, 0x01]);
    let (mut sub0, _) = raw_session(&broker, "dup-sub0", true).await;
    sub0.send(&wire::subscribe(false, 1, "dup/t", 0)).await;
    assert_eq!(read_frame(&mut sub0).await, [0x90, 0x03, 0x00, 0x01, 0x00]);

    let (mut publ, _) = raw_session(&broker, "dup-pub", true).await;
    publ.send(&wire::publish(
        false,
        "dup/t",
        1,
        false,
        true,
        3,
        &[],
        b"q1",
    ))
    .await;
    assert_eq!(read_frame(&mut publ).await, [0x40, 0x02, 0x00, 0x03]);
    publ.send(&wire::publish(
        false,
        "dup/t",
        2,
        false,
        true,
        4,
        &[],
        b"q2",
    ))
    .await;
    assert_eq!(read_frame(&mut publ).await, [0x50, 0x02, 0x00, 0x04]);
    publ.send(&wire::pubrel(4)).await;
    assert_eq!(read_frame(&mut publ).await, [0x70, 0x02, 0x00, 0x04]);

    for payload in [&b"q1"[..], b"q2"] {
        let p = read_publish(&mut sub1).await;
        assert_eq!(p.payload, payload);
        assert_eq!(p.first, 0x32, "QoS 1 with DUP 0: never sent before");
        sub1.send(&wire::puback(p.packet_id.expect("identifier")))
            .await;
        let p = read_publish(&mut sub0).await;
        assert_eq!(p.payload, payload);
        assert_eq!(p.first, 0x30, "QoS 0 with DUP 0");
        assert_eq!(p.packet_id, None);
    }
    broker.stop().await;
}

#[tokio::test]
async fn v311_overlapping_subscriptions_deliver_at_the_highest_granted_qos() {
    // 3.1.1 [MQTT-3.3.5-1]: with several matching subscriptions the maximum of their QoS
    // applies (and never more than the PUBLISH's). beamq sends one copy, as 5.0 requires.
    let broker = TestBroker::start().await;
    let mut sub = v3::Client::connect(&broker, "ov-sub").await;
    sub.subscribe("ov/+", v3::QoS::AtMostOnce).await;
    sub.subscribe("ov/#", v3::QoS::ExactlyOnce).await;
    sub.subscribe("ov/t", v3::QoS::AtLeastOnce).await;
    let mut publ = v3::Client::connect(&broker, "ov-pub").await;
    publ.publish("ov/t", v3::QoS::ExactlyOnce, false, b"two")
        .await;
    publ.publish("ov/t", v3::QoS::AtLeastOnce, false, b"one")
        .await;
    publ.publish("ov/marker", v3::QoS::AtMostOnce, false, b"marker")
        .await;
    let got: Vec<(Vec<u8>, v3::QoS)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let p = sub.next_publish().await;
            v.push((p.payload.to_vec(), p.qos));
        }
        v
    };
    assert_eq!(
        got,
        [
            (b"two".to_vec(), v3::QoS::ExactlyOnce),
            (b"one".to_vec(), v3::QoS::AtLeastOnce),
            (b"marker".to_vec(), v3::QoS::AtMostOnce),
        ]
    );
    broker.stop().await;
}

#[tokio::test]
async fn v311_receiver_acknowledges_per_qos_and_identifiers_become_new_again() {
    // 3.1.1 [MQTT-3.3.4-1] the answer depends on the QoS (none for 0, PUBACK for 1, PUBREC for
    // 2); [MQTT-4.3.2-2] after PUBACK the same identifier is a new publication, DUP or not;
    // [MQTT-4.3.3-2] until PUBREL a resend is acknowledged with PUBREC and not delivered twice,
    // PUBREL gets PUBCOMP, and after PUBCOMP the identifier is a new publication.
    let broker = TestBroker::start().await;
    let mut sub = v3::Client::connect(&broker, "rx-sub").await;
    sub.subscribe("rx/#", v3::QoS::ExactlyOnce).await;
    let (mut raw, _) = raw_session(&broker, "rx-pub", true).await;
    let send = |qos: u8, dup: bool, id: u16, payload: &[u8]| {
        wire::publish(false, "rx/t", qos, false, dup, id, &[], payload)
    };
    raw.send(&send(1, false, 5, b"a")).await;
    assert_eq!(read_frame(&mut raw).await, [0x40, 0x02, 0x00, 0x05]);
    raw.send(&send(1, true, 5, b"b")).await;
    assert_eq!(read_frame(&mut raw).await, [0x40, 0x02, 0x00, 0x05]);
    raw.send(&send(2, false, 9, b"c")).await;
    assert_eq!(read_frame(&mut raw).await, [0x50, 0x02, 0x00, 0x09]);
    raw.send(&send(2, true, 9, b"c")).await;
    assert_eq!(read_frame(&mut raw).await, [0x50, 0x02, 0x00, 0x09]);
    raw.send(&wire::pubrel(9)).await;
    assert_eq!(read_frame(&mut raw).await, [0x70, 0x02, 0x00, 0x09]);
    raw.send(&send(2, false, 9, b"d")).await;
    assert_eq!(read_frame(&mut raw).await, [0x50, 0x02, 0x00, 0x09]);
    raw.send(&wire::pubrel(9)).await;
    assert_eq!(read_frame(&mut raw).await, [0x70, 0x02, 0x00, 0x09]);
    let mut qos0 = send(0, false, 0, b"e");
    qos0.extend(PINGREQ);
    raw.send(&qos0).await;
    assert_eq!(
        read_frame(&mut raw).await,
        [0xD0, 0x00],
        "no acknowledgement for QoS 0"
    );
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(sub.next_publish().await.payload.to_vec());
    }
    assert_eq!(got, [b"a", b"b", b"c", b"d", b"e"]);
    assert_eq!(broker.broker().metrics.messages_received.get(), 5);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE and UNSUBSCRIBE
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v311_subscribing_again_replaces_the_subscription_without_interrupting_the_flow() {
    // 3.1.1 [MQTT-3.8.4-3]: a SUBSCRIBE with a filter already subscribed replaces the
    // subscription (one subscription, the new maximum QoS), and messages published meanwhile
    // keep flowing: each of 200 arrives exactly once, in order, whatever the moment of the
    // replacement. (Retained messages being sent again: retained.rs.)
    let broker = TestBroker::start().await;
    let mut sub = v3::Client::connect(&broker, "re-sub").await;
    sub.subscribe("re/t", v3::QoS::AtMostOnce).await;
    let mut publ = v3::Client::connect(&broker, "re-pub").await;
    publ.publish("re/t", v3::QoS::AtLeastOnce, false, b"start")
        .await;
    let p = sub.next_publish().await;
    assert_eq!(
        (&p.payload[..], p.qos),
        (&b"start"[..], v3::QoS::AtMostOnce)
    );

    const N: u32 = 200;
    for i in 0..N {
        publ.client
            .publish(
                "re/t",
                v3::QoS::AtLeastOnce,
                false,
                i.to_be_bytes().to_vec(),
            )
            .await
            .expect("queue PUBLISH");
    }
    assert_eq!(
        sub.subscribe("re/t", v3::QoS::AtLeastOnce).await,
        [v3::SubscribeReasonCode::Success(v3::QoS::AtLeastOnce)]
    );
    assert_eq!(broker.broker().routes.subscription_count(), 1);
    let mut seen_qos1 = false;
    for i in 0..N {
        let p = sub.next_publish().await;
        assert_eq!(&p.payload[..], &i.to_be_bytes(), "message {i}");
        if p.qos == v3::QoS::AtLeastOnce {
            seen_qos1 = true;
        } else {
            assert!(!seen_qos1, "QoS 0 again after the replacement");
        }
    }
    publ.publish("re/t", v3::QoS::AtLeastOnce, false, b"end")
        .await;
    let p = sub.next_publish().await;
    assert_eq!((&p.payload[..], p.qos), (&b"end"[..], v3::QoS::AtLeastOnce));
    broker.stop().await;
}

#[tokio::test]
async fn v311_subscribe_with_several_filters_acts_as_a_sequence_of_subscribes() {
    // 3.1.1 [MQTT-3.8.4-4]: handled as one SUBSCRIBE per filter, in order, with one SUBACK: a
    // filter given twice ends with the second one's QoS ([MQTT-3.8.4-3]) as a single
    // subscription; [MQTT-3.8.4-5], [MQTT-3.9.3-1] one code per filter, in order.
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw_session(&broker, "seq", true).await;
    raw.send(&subscribe(
        V3,
        7,
        &[],
        &[(b"seq/a", 0), (b"seq/b", 1), (b"seq/a", 2)],
    ))
    .await;
    assert_eq!(
        read_frame(&mut raw).await,
        [0x90, 0x05, 0x00, 0x07, 0x00, 0x01, 0x02]
    );
    assert_eq!(broker.broker().routes.subscription_count(), 2);
    let mut publ = v3::Client::connect(&broker, "seq-pub").await;
    publ.publish("seq/a", v3::QoS::ExactlyOnce, false, b"A")
        .await;
    publ.publish("seq/b", v3::QoS::ExactlyOnce, false, b"B")
        .await;
    let p = read_publish(&mut raw).await;
    assert_eq!((p.first, &p.payload[..]), (0x34, &b"A"[..]), "QoS 2, once");
    let p = read_publish(&mut raw).await;
    assert_eq!((p.first, &p.payload[..]), (0x32, &b"B"[..]), "QoS 1");
    broker.stop().await;
}

#[tokio::test]
async fn v311_unsubscribe_compares_filters_character_by_character() {
    // 3.1.1 [MQTT-3.10.4-1]: a filter of UNSUBSCRIBE deletes only the subscription with exactly
    // the same characters (no wildcard or case interpretation); [MQTT-3.10.4-2] nothing more is
    // delivered for a deleted one; [MQTT-3.10.4-6] several filters are handled as a sequence,
    // with exactly one UNSUBACK.
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw_session(&broker, "uns", true).await;
    raw.send(&subscribe(
        V3,
        1,
        &[],
        &[
            (b"u/+/x", 0),
            (b"u/b", 0),
            (b"U/b", 0),
            (b"w/#", 0),
            (b"uns/marker", 0),
        ],
    ))
    .await;
    assert_eq!(
        read_frame(&mut raw).await,
        [0x90, 0x07, 0x00, 0x01, 0, 0, 0, 0, 0]
    );
    let mut bytes = unsubscribe(V3, 9, &[b"u/b", b"u/#", b"U/B", b"w/#"]);
    bytes.extend(PINGREQ);
    raw.send(&bytes).await;
    assert_eq!(read_frame(&mut raw).await, [0xB0, 0x02, 0x00, 0x09]);
    assert_eq!(
        read_frame(&mut raw).await,
        [0xD0, 0x00],
        "one UNSUBACK only"
    );
    // "u/+/x", "U/b" and "uns/marker" are left.
    assert_eq!(broker.broker().routes.subscription_count(), 3);
    let mut publ = v3::Client::connect(&broker, "uns-pub").await;
    for t in ["u/b", "u/1/x", "w/z", "U/b", "uns/marker"] {
        publ.publish(t, v3::QoS::AtLeastOnce, false, t.as_bytes())
            .await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(read_publish(&mut raw).await.topic);
    }
    assert_eq!(got, [&b"u/1/x"[..], b"U/b", b"uns/marker"]);
    broker.stop().await;
}

#[tokio::test]
async fn v311_unsubscribe_completes_deliveries_already_started() {
    // 3.1.1 [MQTT-3.10.4-3]: QoS 1 and 2 messages whose delivery started before the
    // UNSUBSCRIBE are still completed: PUBREC is answered with PUBREL, and after a reconnect the
    // unacknowledged PUBLISH and the uncompleted PUBREL are resent ([MQTT-4.4.0-1]).
    // [MQTT-3.10.4-2] later messages are not delivered.
    let broker = TestBroker::start().await;
    let (mut raw, present) = raw_session(&broker, "uc", false).await;
    assert!(!present);
    raw.send(&wire::subscribe(false, 1, "uc/t", 2)).await;
    assert_eq!(read_frame(&mut raw).await, [0x90, 0x03, 0x00, 0x01, 0x02]);
    let mut publ = v3::Client::connect(&broker, "uc-pub").await;
    publ.publish("uc/t", v3::QoS::AtLeastOnce, false, b"m1")
        .await;
    publ.publish("uc/t", v3::QoS::ExactlyOnce, false, b"m2")
        .await;
    let m1 = read_publish(&mut raw).await;
    let m2 = read_publish(&mut raw).await;
    assert_eq!((m1.first, &m1.payload[..]), (0x32, &b"m1"[..]));
    assert_eq!((m2.first, &m2.payload[..]), (0x34, &b"m2"[..]));
    let (a, b) = (m1.packet_id.expect("id"), m2.packet_id.expect("id"));

    raw.send(&unsubscribe(V3, 2, &[b"uc/t"])).await;
    assert_eq!(read_frame(&mut raw).await, [0xB0, 0x02, 0x00, 0x02]);
    assert_eq!(broker.broker().routes.subscription_count(), 0);
    raw.send(&wire::pubrec(b)).await;
    let [hi, lo] = b.to_be_bytes();
    assert_eq!(read_frame(&mut raw).await, [0x62, 0x02, hi, lo], "PUBREL");
    drop(raw);

    let (mut raw, present) = raw_session(&broker, "uc", false).await;
    assert!(present);
    let mut resent_publish = None;
    let mut resent_pubrel = None;
    for _ in 0..2 {
        let f = read_frame(&mut raw).await;
        if f[0] == 0x62 {
            resent_pubrel = Some(u16::from_be_bytes([f[2], f[3]]));
        } else {
            resent_publish = Some(parse_publish(&f));
        }
    }
    let p = resent_publish.expect("m1 resent");
    assert_eq!(
        (p.first, p.packet_id, &p.payload[..]),
        (0x3A, Some(a), &b"m1"[..]),
        "QoS 1, DUP 1, same identifier"
    );
    assert_eq!(resent_pubrel, Some(b));
    raw.send(&wire::puback(a)).await;
    raw.send(&wire::pubcomp(b)).await;

    raw.send(&wire::subscribe(false, 3, "uc/marker", 1)).await;
    assert_eq!(read_frame(&mut raw).await, [0x90, 0x03, 0x00, 0x03, 0x01]);
    publ.publish("uc/t", v3::QoS::AtLeastOnce, false, b"later")
        .await;
    publ.publish("uc/marker", v3::QoS::AtLeastOnce, false, b"marker")
        .await;
    let p = read_publish(&mut raw).await;
    assert_eq!(
        p.topic, b"uc/marker",
        "nothing for the deleted subscription"
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Topic names and filters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v311_topic_names_and_filters_are_at_least_one_character() {
    // 3.1.1 [MQTT-4.7.3-1]: an empty Topic Name closes the connection (a PUBLISH without its
    // topic too: [MQTT-3.3.2-1], it must be the first field); an empty filter is refused in the
    // SUBACK (0x80) while the rest of the SUBSCRIBE is granted.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    for (n, bytes) in [
        publish(V3, 0, false, b"", None, &[], b"x"),
        publish(V3, 1, false, b"", Some(1), &[], b"x"),
        frame(0x30, &[0x00]),
    ]
    .into_iter()
    .enumerate()
    {
        let before = errors(&broker);
        send_bad(
            &broker,
            V3,
            &format!("empty-{n}"),
            &bytes,
            beamq_protocol::ReasonCode::MalformedPacket,
        )
        .await;
        eventually("one error counted", || {
            let e = errors(&broker);
            e.malformed + e.protocol == before.malformed + before.protocol + 1
        })
        .await;
    }
    let (mut raw, _) = raw_session(&broker, "empty-filter", true).await;
    raw.send(&subscribe(V3, 3, &[], &[(b"", 1), (b"ok/t", 1)]))
        .await;
    assert_eq!(
        read_frame(&mut raw).await,
        [0x90, 0x04, 0x00, 0x03, 0x80, 0x01]
    );
    raw.send(&PINGREQ).await;
    assert_eq!(read_frame(&mut raw).await, [0xD0, 0x00], "still connected");
    assert_eq!(
        broker.broker().routes.subscription_count(),
        Witness::SUBSCRIPTIONS + 1
    );
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_wildcards_occupy_whole_levels_and_match_as_specified() {
    // 3.1.1 [MQTT-4.7.1-2] '#' alone in the last level (and matching the parent level too);
    // [MQTT-4.7.1-3] '+' alone in its level, at any level. Misplaced wildcards are refused with
    // 0x80; the examples of §4.7.1.2-3 match as the standard says.
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw_session(&broker, "wc", true).await;
    let filters: [(&[u8], u8); 10] = [
        (b"a/#/b", 1),
        (b"a#", 1),
        (b"#/a", 1),
        (b"a/b+", 1),
        (b"+a/b", 1),
        (b"sport/#", 1),
        (b"sport/tennis/+", 1),
        (b"+/+", 1),
        (b"/+", 1),
        (b"marker", 1),
    ];
    raw.send(&subscribe(V3, 2, &[], &filters)).await;
    assert_eq!(
        read_frame(&mut raw).await,
        [
            0x90, 0x0C, 0x00, 0x02, 0x80, 0x80, 0x80, 0x80, 0x80, 1, 1, 1, 1, 1
        ]
    );
    let mut publ = v3::Client::connect(&broker, "wc-pub").await;
    for t in [
        "a/x/b",
        "a/b",
        "sport",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "finance",
        "/finance",
        "a/b/c",
        "marker",
    ] {
        publ.publish(t, v3::QoS::AtMostOnce, false, b"").await;
    }
    let mut got = Vec::new();
    loop {
        let p = read_publish(&mut raw).await;
        let done = p.topic == b"marker";
        got.push(String::from_utf8(p.topic).expect("utf-8"));
        if done {
            break;
        }
    }
    assert_eq!(
        got,
        [
            "a/b",
            "sport",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "/finance",
            "marker"
        ]
    );
    broker.stop().await;
}

#[tokio::test]
async fn v311_topic_of_65535_bytes_is_carried_whole() {
    // 3.1.1 [MQTT-4.7.3-3]: topics encode to at most 65,535 bytes; one of exactly that length
    // is routed and sent on unchanged. (The encoder refusing 65,536: codec tests.)
    let broker = TestBroker::start().await;
    let (mut sub, _) = raw_session(&broker, "long-sub", true).await;
    sub.send(&wire::subscribe(false, 1, "#", 0)).await;
    assert_eq!(read_frame(&mut sub).await, [0x90, 0x03, 0x00, 0x01, 0x00]);
    let topic = vec![b't'; 65_535];
    let (mut publ, _) = raw_session(&broker, "long-pub", true).await;
    publ.send(&publish(V3, 0, false, &topic, None, &[], b"long"))
        .await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic.as_bytes(), &topic[..]);
            assert_eq!(&p.payload[..], b"long");
            assert_eq!(p.qos, QoS::AtMostOnce);
        }
        other => panic!("expected the PUBLISH, got {other:?}"),
    }
    broker.stop().await;
}
