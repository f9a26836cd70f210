//! MQTT 5.0 conformance: the server-side statements of docs/spec/mqtt-5.0-statements.tsv that no
//! other test file checked, each over a real socket against the real broker. Every test names
//! the 5.0 statement ids it checks (5.0 numbering: the 3.1.1 ids differ).
//!
//! Raw bytes are used wherever the wire itself is under test (exact encodings, malformed input,
//! acknowledgements with error reason codes, packets rumqttc will not send); rumqttc v5 plays
//! the well-behaved clients. Client packets that are valid are encoded with the broker's codec
//! (as tests/v5.rs does); packets that must be malformed are built byte by byte.
//!
//! "Nothing more arrives" is checked with a PINGREQ round trip: the client actor handles the
//! deliveries already in its mailbox before the PINGREQ read after them, so a PUBLISH that was
//! owed would come before the PINGRESP.

mod common;
mod edge;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use beamq_protocol::{self as proto, ByteString, Bytes, BytesMut, Packet, ProtocolVersion, QoS};
use beamq_protocol::{ReasonCode, codec};
use common::*;
use edge::{
    PINGREQ, errors, expect_errors, only_disconnect, s, send_bad, session, unsubscribe, varint,
};

const V5: ProtocolVersion = ProtocolVersion::V5;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// The reason codes each packet type may carry (5.0 §3.2.2.2, §3.4.2.1, §3.5.2.1, §3.6.2.1,
/// §3.7.2.1, §3.9.3, §3.11.3, §3.14.2.1), written out from the spec's tables, not taken from the
/// broker's codec.
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

/// Encodes a (valid) client packet with the broker's codec.
fn enc(p: &Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    codec::encode(p, V5, &mut b).expect("encodable packet");
    b.to_vec()
}

/// A v5 CONNECT: Clean Start 1, keep alive 60, no properties.
fn conn(id: &str) -> proto::Connect {
    proto::Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteString::from(id),
        will: None,
        username: None,
        password: None,
        properties: Default::default(),
    }
}

/// A v5 CONNECT with a Session Expiry Interval of 60 s and the given Clean Start.
fn persistent(id: &str, clean_start: bool) -> proto::Connect {
    let mut c = conn(id);
    c.clean_start = clean_start;
    c.properties.session_expiry_interval = Some(60);
    c
}

/// Sends `c` and returns the connection with its CONNACK, whatever the reason code.
async fn open(broker: &TestBroker, c: proto::Connect) -> (Raw, proto::Connack) {
    Raw::start_session(broker, true, &enc(&Packet::Connect(Box::new(c)))).await
}

/// Sends `c` and checks that it is accepted.
async fn accepted(broker: &TestBroker, c: proto::Connect) -> (Raw, proto::Connack) {
    let (raw, connack) = open(broker, c).await;
    assert_eq!(connack.reason_code, ReasonCode::Success, "CONNACK");
    (raw, connack)
}

/// A SUBSCRIBE of (filter, options) pairs.
fn sub_packet(
    packet_id: u16,
    filters: &[(&str, proto::SubscriptionOptions)],
    subscription_identifier: Option<u32>,
) -> Vec<u8> {
    enc(&Packet::Subscribe(proto::Subscribe {
        packet_id,
        filters: filters
            .iter()
            .map(|(f, o)| (ByteString::from(*f), *o))
            .collect(),
        properties: proto::SubscribeProperties {
            subscription_identifier,
            user_properties: vec![],
        },
    }))
}

fn qos_opts(qos: QoS) -> proto::SubscriptionOptions {
    proto::SubscriptionOptions {
        qos,
        ..Default::default()
    }
}

/// Subscribes `raw` to `filter` at `qos` and waits for the SUBACK.
async fn subscribe(raw: &mut Raw, filter: &str, qos: QoS) {
    raw.send(&sub_packet(1, &[(filter, qos_opts(qos))], None))
        .await;
    match raw.next_packet().await {
        Packet::Suback(s) => assert!(!s.reason_codes[0].is_error(), "{filter}: {s:?}"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// A client PUBLISH.
fn publish(
    topic: &str,
    qos: QoS,
    packet_id: Option<u16>,
    properties: proto::PublishProperties,
    payload: &[u8],
) -> Vec<u8> {
    enc(&Packet::Publish(proto::Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id,
        properties,
        payload: Bytes::copy_from_slice(payload),
    }))
}

fn ack(p: Packet) -> Vec<u8> {
    enc(&p)
}

/// Sends PINGREQ and asserts that PINGRESP is the next packet: nothing owed came before it.
async fn nothing_before_pingresp(raw: &mut Raw, what: &str) {
    raw.send(&PINGREQ).await;
    match raw.next_packet().await {
        Packet::Pingresp => {}
        other => panic!("{what}: expected PINGRESP, got {other:?}"),
    }
}

/// The next packet, which must be a PUBLISH.
async fn next_publish(raw: &mut Raw) -> proto::Publish {
    match raw.next_packet().await {
        Packet::Publish(p) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Reads one whole frame and returns its bytes as on the wire with the packet they decode to.
async fn recv_frame(raw: &mut Raw) -> (Vec<u8>, Packet) {
    let mut bytes = raw.read_exact(1).await;
    let mut len = 0usize;
    let mut multiplier = 1usize;
    loop {
        let b = raw.read_exact(1).await[0];
        bytes.push(b);
        len += usize::from(b & 0x7F) * multiplier;
        multiplier *= 128;
        if b & 0x80 == 0 {
            break;
        }
    }
    bytes.extend(raw.read_exact(len).await);
    let mut buf = BytesMut::from(&bytes[..]);
    let p = codec::decode(&mut buf, V5, u32::MAX)
        .expect("a valid packet")
        .expect("a whole frame");
    (bytes, p)
}

/// Every PUBLISH that arrived before the SUBACK of a round trip on an unused filter.
async fn sync5(c: &mut v5::Client) -> Vec<v5::Publish> {
    c.client
        .subscribe("sync/none", v5::QoS::AtMostOnce)
        .await
        .expect("queue SUBSCRIBE");
    let mut got = Vec::new();
    loop {
        match c.next().await {
            Ok(v5::Packet::Publish(p)) => got.push(p),
            Ok(v5::Packet::SubAck(_)) => return got,
            Ok(_) => {}
            Err(e) => panic!("connection error during sync: {e}"),
        }
    }
}

fn topic_of(p: &v5::Publish) -> String {
    String::from_utf8(p.topic.to_vec()).expect("UTF-8 topic")
}

// ---------------------------------------------------------------------------------------------
// 1.5 Data representation
// ---------------------------------------------------------------------------------------------

/// Strings that are not valid MQTT UTF-8: ill-formed, an encoded surrogate, U+0000.
const BAD_STRINGS: [&[u8]; 3] = [b"a\xFF", b"\xED\xA0\x80", b"a\x00b"];

#[tokio::test]
async fn connect_strings_must_be_well_formed_utf8() {
    // 5.0 [MQTT-1.5.4-1] well-formed, no surrogates; [MQTT-1.5.4-2] no U+0000; in the Client
    // Identifier [MQTT-3.1.3-4], the Will Topic [MQTT-3.1.3-11], the User Name [MQTT-3.1.3-12]
    // and both strings of a User Property pair [MQTT-1.5.7-1]. A malformed CONNECT is closed
    // without CONNACK [MQTT-3.1.4-1] and no session starts.
    let broker = TestBroker::start().await;
    for bad in BAD_STRINGS {
        let mut will = s(b"id-w");
        will.push(0);
        will.extend(s(bad));
        will.extend(s(b"bye"));
        let mut user = s(b"id-u");
        user.extend(s(bad));
        let mut key = vec![0x26];
        key.extend(s(bad));
        key.extend(s(b"v"));
        let mut value = vec![0x26];
        value.extend(s(b"k"));
        value.extend(s(bad));
        let cases: [(&str, u8, Vec<u8>, Vec<u8>); 5] = [
            ("client id", 0x02, vec![], s(bad)),
            ("will topic", 0x02 | 0x04, vec![], will),
            ("user name", 0x02 | 0x80, vec![], user),
            ("user property key", 0x02, key, s(b"id-k")),
            ("user property value", 0x02, value, s(b"id-v")),
        ];
        for (what, flags, props, payload) in cases {
            let before = errors(&broker);
            let mut raw = Raw::connect(&broker).await;
            raw.version = V5;
            raw.send(&edge::connect(V5, flags, 60, &props, &payload))
                .await;
            let got = raw.expect_close().await;
            assert!(got.is_empty(), "{what} {bad:02X?}: got {got:?}");
            expect_errors(&broker, before, 1, 0).await;
        }
    }
    assert_eq!(broker.broker().metrics.connects.get(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn packet_strings_must_be_well_formed_utf8() {
    // 5.0 [MQTT-1.5.4-1], [MQTT-1.5.4-2] in strings after CONNECT: both strings of a User
    // Property pair [MQTT-1.5.7-1], the Response Topic [MQTT-3.3.2-13], the Content Type
    // [MQTT-3.3.2-19] and an UNSUBSCRIBE Topic Filter [MQTT-3.10.3-1]: Malformed Packet,
    // DISCONNECT 0x81 and close [MQTT-4.13.1-1].
    let broker = TestBroker::start().await;
    let mut n = 0;
    for bad in BAD_STRINGS {
        let prop = |id: u8, a: &[u8], b: Option<&[u8]>| {
            let mut p = vec![id];
            p.extend(s(a));
            if let Some(b) = b {
                p.extend(s(b));
            }
            p
        };
        let cases = [
            edge::publish(V5, 0, false, b"t", None, &prop(0x26, bad, Some(b"v")), b"x"),
            edge::publish(
                V5,
                1,
                false,
                b"t",
                Some(1),
                &prop(0x26, b"k", Some(bad)),
                b"x",
            ),
            edge::publish(V5, 0, false, b"t", None, &prop(0x08, bad, None), b"x"),
            edge::publish(V5, 0, false, b"t", None, &prop(0x03, bad, None), b"x"),
            edge::subscribe(V5, 1, &prop(0x26, bad, Some(b"v")), &[(b"t", 0)]),
            unsubscribe(V5, 2, &[bad]),
        ];
        for bytes in cases {
            n += 1;
            let before = errors(&broker);
            send_bad(
                &broker,
                V5,
                &format!("utf8-{n}"),
                &bytes,
                ReasonCode::MalformedPacket,
            )
            .await;
            expect_errors(&broker, before, 1, 0).await;
        }
    }
    assert_eq!(broker.broker().metrics.messages_received.get(), 0);
    assert_eq!(broker.broker().routes.subscription_count(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn bom_is_neither_skipped_nor_stripped() {
    // 5.0 [MQTT-1.5.4-3]: 0xEF 0xBB 0xBF is U+FEFF wherever it appears: a topic starting with it
    // is another topic than the same without it, and it stays in topics and user properties.
    let broker = TestBroker::start().await;
    let bom_topic = "\u{FEFF}bom/t";
    let mut with = v5::Client::connect(&broker, "bom-with").await;
    with.subscribe(bom_topic, v5::QoS::AtLeastOnce).await;
    let mut without = v5::Client::connect(&broker, "bom-without").await;
    without.subscribe("bom/t", v5::QoS::AtLeastOnce).await;

    let mut publ = v5::Client::connect(&broker, "bom-pub").await;
    let props = v5::PublishProperties {
        user_properties: vec![("\u{FEFF}k".into(), "\u{FEFF}".into())],
        content_type: Some("\u{FEFF}text".into()),
        ..Default::default()
    };
    publ.publish_with(
        bom_topic,
        v5::QoS::AtLeastOnce,
        false,
        b"with",
        props.clone(),
    )
    .await;
    publ.publish("bom/t", v5::QoS::AtLeastOnce, false, b"without")
        .await;

    let p = with.next_publish().await;
    assert_eq!(
        &p.topic[..3],
        b"\xEF\xBB\xBF",
        "the BOM is kept in the topic"
    );
    assert_eq!(topic_of(&p), bom_topic);
    assert_eq!(&p.payload[..], b"with");
    let got = p.properties.expect("properties");
    assert_eq!(got.user_properties, props.user_properties);
    assert_eq!(got.content_type, props.content_type);
    let p = without.next_publish().await;
    assert_eq!(
        (topic_of(&p).as_str(), &p.payload[..]),
        ("bom/t", &b"without"[..]),
        "the BOM topic is not delivered to the topic without it"
    );
    assert!(sync5(&mut with).await.is_empty());
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2.2 Packet identifiers, properties
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn packets_without_properties_have_property_length_0_and_qos0_has_no_packet_id() {
    // 5.0, exact bytes from the broker: a QoS 0 PUBLISH has no Packet Identifier
    // [MQTT-2.2.1-2], DUP 0 [MQTT-3.3.1-2, MQTT-4.3.1-1], and a Property Length of 0 when it
    // has no properties [MQTT-2.2.2-1], as SUBACK and UNSUBACK do. Remaining Lengths use the
    // fewest bytes [MQTT-1.5.5-1].
    let broker = TestBroker::start().await;
    let (mut raw, _) = accepted(&broker, conn("bytes")).await;
    raw.send(&sub_packet(
        0x0102,
        &[("b/t", qos_opts(QoS::AtMostOnce))],
        None,
    ))
    .await;
    let (bytes, _) = recv_frame(&mut raw).await;
    assert_eq!(bytes, [0x90, 0x04, 0x01, 0x02, 0x00, 0x00], "SUBACK");

    let mut publ = v5::Client::connect(&broker, "bytes-pub").await;
    publ.publish("b/t", v5::QoS::AtLeastOnce, false, b"hi")
        .await;
    let (bytes, _) = recv_frame(&mut raw).await;
    // QoS 1 published, QoS 0 granted: delivered at QoS 0.
    assert_eq!(
        bytes,
        [0x30, 0x08, 0x00, 0x03, b'b', b'/', b't', 0x00, b'h', b'i'],
        "QoS 0 PUBLISH"
    );
    // 5 + 1 + 121 = 127: one length byte; 5 + 1 + 122 = 128: two.
    for (payload, header) in [(121usize, vec![0x30, 0x7F]), (122, vec![0x30, 0x80, 0x01])] {
        publ.publish("b/t", v5::QoS::AtLeastOnce, false, &vec![b'x'; payload])
            .await;
        let (bytes, _) = recv_frame(&mut raw).await;
        assert_eq!(bytes[..header.len()], header[..], "payload {payload}");
        assert_eq!(bytes.len(), header.len() + 6 + payload);
    }

    raw.send(&unsubscribe(V5, 0x0304, &[b"b/t"])).await;
    let (bytes, _) = recv_frame(&mut raw).await;
    assert_eq!(bytes, [0xB0, 0x04, 0x03, 0x04, 0x00, 0x00], "UNSUBACK");
    broker.stop().await;
}

#[tokio::test]
async fn outgoing_packet_identifiers_are_non_zero_and_unused() {
    // 5.0 [MQTT-2.2.1-4], [MQTT-4.3.2-1], [MQTT-4.3.3-1]: every new QoS 1/2 PUBLISH to the client
    // has a non-zero Packet Identifier that none of the exchanges still open uses (a QoS 1
    // PUBLISH until PUBACK, a QoS 2 one until PUBCOMP). Two messages stay unacknowledged all
    // along; the others are acknowledged as they come, so identifiers are freed and reused.
    let broker = TestBroker::start().await;
    let mut c = conn("ids");
    c.properties.receive_maximum = Some(6);
    let (mut raw, _) = accepted(&broker, c).await;
    subscribe(&mut raw, "ids/t", QoS::ExactlyOnce).await;
    let mut publ = v5::Client::connect(&broker, "ids-pub").await;
    const N: usize = 40;
    let producer = tokio::spawn(async move {
        for i in 0..N {
            let qos = if i % 2 == 0 {
                v5::QoS::AtLeastOnce
            } else {
                v5::QoS::ExactlyOnce
            };
            publ.publish("ids/t", qos, false, &[i as u8]).await;
        }
        publ
    });
    let mut in_use: HashSet<u16> = HashSet::new();
    let mut held = Vec::new();
    let mut received = 0;
    while received < N || in_use.len() > held.len() {
        match raw.next_packet().await {
            Packet::Publish(p) => {
                received += 1;
                let id = p.packet_id.expect("QoS > 0 has a packet id");
                assert_ne!(id, 0, "[MQTT-2.2.1-4] non-zero");
                assert!(in_use.insert(id), "identifier {id} is still in use");
                assert!(!p.dup);
                if held.len() < 2 {
                    held.push((id, p.qos));
                } else if p.qos == QoS::AtLeastOnce {
                    in_use.remove(&id);
                    raw.send(&ack(Packet::Puback(proto::PubAck::new(id)))).await;
                } else {
                    raw.send(&ack(Packet::Pubrec(proto::PubAck::new(id)))).await;
                }
            }
            Packet::Pubrel(r) => {
                raw.send(&ack(Packet::Pubcomp(proto::PubAck::new(r.packet_id))))
                    .await;
                in_use.remove(&r.packet_id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, N);
    within("publisher done", producer).await.expect("publisher");
    broker.stop().await;
}

#[tokio::test]
async fn unsubscribe_is_answered_once_in_order_with_its_packet_identifier() {
    // 5.0 [MQTT-3.10.4-4] UNSUBACK for every UNSUBSCRIBE, [MQTT-2.2.1-6, MQTT-3.10.4-5] with its
    // Packet Identifier, also when nothing was deleted; [MQTT-3.10.4-6] several filters are
    // handled one by one with one UNSUBACK, whose codes follow the filters' order
    // [MQTT-3.11.3-1] and come from the UNSUBACK table [MQTT-3.11.3-2]; [MQTT-3.10.4-2] no new
    // message is added for the client once it is unsubscribed.
    let broker = TestBroker::start().await;
    let (mut raw, _) = accepted(&broker, conn("unsub")).await;
    raw.send(&sub_packet(
        3,
        &[
            ("u/a", qos_opts(QoS::AtLeastOnce)),
            ("u/b", qos_opts(QoS::AtLeastOnce)),
        ],
        None,
    ))
    .await;
    assert!(matches!(raw.next_packet().await, Packet::Suback(s) if s.packet_id == 3));

    raw.send(&unsubscribe(V5, 0x1234, &[b"u/a", b"u/never", b"u/b"]))
        .await;
    let (bytes, p) = recv_frame(&mut raw).await;
    assert_eq!(bytes[..4], [0xB0, 0x06, 0x12, 0x34], "{bytes:02X?}");
    assert_eq!(bytes[5..], [0x00, 0x11, 0x00], "codes in filter order");
    assert!(bytes[5..].iter().all(|c| UNSUBACK_CODES.contains(c)));
    assert!(matches!(p, Packet::Unsuback(_)));
    // Only one UNSUBACK for the three filters.
    nothing_before_pingresp(&mut raw, "a second UNSUBACK").await;
    assert_eq!(broker.broker().routes.subscription_count(), 0);

    raw.send(&unsubscribe(V5, 7, &[b"u/a"])).await;
    match raw.next_packet().await {
        Packet::Unsuback(u) => {
            assert_eq!(u.packet_id, 7);
            assert_eq!(u.reason_codes, vec![ReasonCode::NoSubscriptionExisted]);
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }

    let mut publ = v5::Client::connect(&broker, "unsub-pub").await;
    publ.publish("u/a", v5::QoS::AtLeastOnce, false, b"a").await;
    publ.publish("u/b", v5::QoS::AtLeastOnce, false, b"b").await;
    nothing_before_pingresp(&mut raw, "a message after UNSUBSCRIBE").await;
    broker.stop().await;
}

#[tokio::test]
async fn unsubscribe_compares_filters_character_by_character() {
    // 5.0 [MQTT-3.10.4-1]: a filter in UNSUBSCRIBE deletes the subscription whose filter is
    // the same string, wildcards included; it is not matched as a filter against the others.
    let broker = TestBroker::start().await;
    let mut c = v5::Client::connect(&broker, "cbc").await;
    for f in ["c/+", "c/#", "c/x"] {
        c.subscribe(f, v5::QoS::AtLeastOnce).await;
    }
    let mut unsub = async |filter: &str| {
        c.client
            .unsubscribe(filter)
            .await
            .expect("queue UNSUBSCRIBE");
        match c
            .wait_for("UNSUBACK", |p| matches!(p, v5::Packet::UnsubAck(_)))
            .await
        {
            v5::Packet::UnsubAck(u) => u.reasons,
            _ => unreachable!(),
        }
    };
    use rumqttc::v5::mqttbytes::v5::UnsubAckReason::{NoSubscriptionExisted, Success};
    assert_eq!(unsub("c/#/").await, vec![NoSubscriptionExisted]);
    assert_eq!(unsub("C/+").await, vec![NoSubscriptionExisted]);
    assert_eq!(unsub("c/ x").await, vec![NoSubscriptionExisted]);
    assert_eq!(unsub("#").await, vec![NoSubscriptionExisted]);
    assert_eq!(unsub("c/#").await, vec![Success]);
    assert_eq!(unsub("c/x").await, vec![Success]);
    assert_eq!(broker.broker().routes.subscription_count(), 1, "c/+ stays");
    let mut publ = v5::Client::connect(&broker, "cbc-pub").await;
    publ.publish("c/x", v5::QoS::AtLeastOnce, false, b"once")
        .await;
    assert_eq!(&c.next_publish().await.payload[..], b"once");
    assert!(sync5(&mut c).await.is_empty(), "one copy, through c/+");
    broker.stop().await;
}

#[tokio::test]
async fn qos_deliveries_started_are_completed_after_unsubscribe() {
    // 5.0 [MQTT-3.10.4-3]: QoS 1 and 2 messages the server started to send before UNSUBSCRIBE
    // are delivered to the end: the QoS 2 exchange goes on (PUBREL), and what is still
    // unacknowledged is resent when the session resumes.
    let broker = TestBroker::start().await;
    let (mut raw, _) = accepted(&broker, persistent("unsub-q", true)).await;
    subscribe(&mut raw, "uq/t", QoS::ExactlyOnce).await;
    let mut publ = v5::Client::connect(&broker, "unsub-q-pub").await;
    publ.publish("uq/t", v5::QoS::AtLeastOnce, false, b"one")
        .await;
    publ.publish("uq/t", v5::QoS::ExactlyOnce, false, b"two")
        .await;
    publ.publish("uq/t", v5::QoS::ExactlyOnce, false, b"three")
        .await;
    let one = next_publish(&mut raw).await;
    let two = next_publish(&mut raw).await;
    let three = next_publish(&mut raw).await;
    assert_eq!(
        [&one.payload[..], &two.payload[..], &three.payload[..]],
        [&b"one"[..], b"two", b"three"]
    );
    raw.send(&unsubscribe(V5, 9, &[b"uq/t"])).await;
    assert!(matches!(raw.next_packet().await, Packet::Unsuback(u) if u.packet_id == 9));
    assert_eq!(broker.broker().routes.subscription_count(), 0);

    // "two" goes on: PUBREC, PUBREL, PUBCOMP.
    let id2 = two.packet_id.expect("id");
    raw.send(&ack(Packet::Pubrec(proto::PubAck::new(id2))))
        .await;
    match raw.next_packet().await {
        Packet::Pubrel(r) => assert_eq!(r.packet_id, id2),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    raw.send(&ack(Packet::Pubcomp(proto::PubAck::new(id2))))
        .await;
    nothing_before_pingresp(&mut raw, "PUBCOMP handled").await;
    // "one" and "three" are unacknowledged when the connection drops: resent on resumption.
    drop(raw);
    eventually("connection gone", || {
        broker
            .broker()
            .sessions
            .get("unsub-q")
            .is_some_and(|s| !s.is_online())
    })
    .await;
    let (mut raw, connack) = accepted(&broker, persistent("unsub-q", false)).await;
    assert!(connack.session_present);
    let again = [next_publish(&mut raw).await, next_publish(&mut raw).await];
    assert_eq!(&again[0].payload[..], b"one");
    assert_eq!(again[0].packet_id, one.packet_id);
    assert_eq!(&again[1].payload[..], b"three");
    assert_eq!(again[1].packet_id, three.packet_id);
    assert!(again.iter().all(|p| p.dup));
    nothing_before_pingresp(&mut raw, "only the two resends").await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3.1 CONNECT
// ---------------------------------------------------------------------------------------------

/// Sends a raw v5 CONNECT and expects the broker to close without CONNACK, counting one
/// malformed packet.
async fn expect_malformed_connect(broker: &TestBroker, what: &str, bytes: &[u8]) {
    let before = errors(broker);
    let mut raw = Raw::connect(broker).await;
    raw.version = V5;
    raw.send(bytes).await;
    let got = raw.expect_close().await;
    assert!(got.is_empty(), "{what}: got {got:?}");
    expect_errors(broker, before, 1, 0).await;
}

/// Sends a raw v5 CONNECT and expects CONNACK 0x00.
async fn expect_accepted_connect(broker: &TestBroker, what: &str, bytes: &[u8]) -> Raw {
    let mut raw = Raw::connect(broker).await;
    raw.version = V5;
    raw.send(bytes).await;
    match raw.recv().await {
        Some(Packet::Connack(c)) => assert_eq!(c.reason_code, ReasonCode::Success, "{what}"),
        other => panic!("{what}: expected CONNACK, got {other:?}"),
    }
    raw
}

#[tokio::test]
async fn will_flag_requires_will_properties_topic_and_payload() {
    // 5.0 [MQTT-3.1.2-9]: with the Will Flag the Will Properties, Will Topic and Will Payload
    // must be in the payload; a CONNECT missing any of them is malformed and closed.
    let broker = TestBroker::start().await;
    let flags = 0x02 | 0x04;
    let mut props_only = s(b"wf");
    props_only.push(0);
    let mut no_payload = props_only.clone();
    no_payload.extend(s(b"w/t"));
    for (what, payload) in [
        ("nothing", s(b"wf")),
        ("no will topic", props_only),
        ("no will payload", no_payload.clone()),
    ] {
        expect_malformed_connect(&broker, what, &edge::connect(V5, flags, 60, &[], &payload)).await;
    }
    let mut full = no_payload;
    full.extend(s(b"bye"));
    expect_accepted_connect(
        &broker,
        "complete",
        &edge::connect(V5, flags, 60, &[], &full),
    )
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn user_name_and_password_flags_match_the_payload() {
    // 5.0 [MQTT-3.1.2-16] no User Name without its flag, [MQTT-3.1.2-17] a User Name with it,
    // [MQTT-3.1.2-18] no Password without its flag, [MQTT-3.1.2-19] a Password with it: any
    // mismatch is a malformed CONNECT. 5.0 allows a Password without a User Name (§3.1.2.9).
    let broker = TestBroker::start().await;
    let with = |fields: &[&[u8]]| {
        let mut p = s(b"up");
        for f in fields {
            p.extend(s(f));
        }
        p
    };
    let cases: [(&str, u8, Vec<u8>); 5] = [
        ("user name without its flag", 0x02, with(&[b"user"])),
        (
            "user name and password without flags",
            0x02,
            with(&[b"user", b"pw"]),
        ),
        ("user name flag without user name", 0x02 | 0x80, with(&[])),
        ("password flag without password", 0x02 | 0x40, with(&[])),
        (
            "both flags, only a user name",
            0x02 | 0x80 | 0x40,
            with(&[b"user"]),
        ),
    ];
    for (what, flags, payload) in cases {
        expect_malformed_connect(&broker, what, &edge::connect(V5, flags, 60, &[], &payload)).await;
    }
    for (what, flags, payload) in [
        ("user name", 0x02 | 0x80, with(&[b"user"])),
        ("password", 0x02 | 0x40, with(&[b"pw"])),
        ("both", 0x02 | 0x80 | 0x40, with(&[b"user", b"pw"])),
    ] {
        expect_accepted_connect(&broker, what, &edge::connect(V5, flags, 60, &[], &payload)).await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn connect_payload_fields_are_read_in_their_order() {
    // 5.0 [MQTT-3.1.3-1]: Client Identifier, Will Properties, Will Topic, Will Payload, User
    // Name, Password, in that order: a CONNECT with all of them is accepted under its client
    // id [MQTT-3.1.3-3], and the will that is published has the topic, payload and properties
    // read from their places.
    let broker = TestBroker::start().await;
    let mut w = v5::Client::connect(&broker, "order-watch").await;
    w.subscribe("order/#", v5::QoS::AtLeastOnce).await;
    let mut payload = s(b"order-id");
    let mut will_props = vec![0x26];
    will_props.extend(s(b"k"));
    will_props.extend(s(b"v"));
    payload.extend(varint(will_props.len()));
    payload.extend(will_props);
    payload.extend(s(b"order/will"));
    payload.extend(s(b"bye"));
    payload.extend(s(b"user"));
    payload.extend(s(b"password"));
    // Will QoS 1, Will Flag, Clean Start, User Name and Password flags.
    let flags = 0x80 | 0x40 | 0x08 | 0x04 | 0x02;
    let raw = expect_accepted_connect(
        &broker,
        "all fields",
        &edge::connect(V5, flags, 60, &[], &payload),
    )
    .await;
    assert!(broker.broker().sessions.get("order-id").is_some());
    drop(raw);
    let p = w.next_publish().await;
    assert_eq!(
        (topic_of(&p).as_str(), &p.payload[..], p.qos),
        ("order/will", &b"bye"[..], v5::QoS::AtLeastOnce)
    );
    assert_eq!(
        p.properties.expect("will properties").user_properties,
        vec![("k".to_string(), "v".to_string())]
    );
    broker.stop().await;
}

#[tokio::test]
async fn client_identifier_must_be_present() {
    // 5.0 [MQTT-3.1.3-3]: the Client Identifier is present and first: a CONNECT whose payload
    // is empty, or stops inside the identifier's length, is malformed.
    let broker = TestBroker::start().await;
    for (what, payload) in [
        ("empty payload", vec![]),
        ("half a length", vec![0x00]),
        ("length past the end", vec![0x00, 0x05, b'a']),
    ] {
        expect_malformed_connect(&broker, what, &edge::connect(V5, 0x02, 60, &[], &payload)).await;
    }
    assert_eq!(broker.broker().metrics.connects.get(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn short_alphanumeric_client_identifiers_are_allowed() {
    // 5.0 [MQTT-3.1.3-5]: 1 to 23 bytes of 0-9, a-z, A-Z are always allowed; each is a session
    // of its own [MQTT-3.1.3-2].
    let broker = TestBroker::start().await;
    let ids = [
        "0",
        "0123456789abcdefghijklm",
        "nopqrstuvwxyzABCDEFGHIJ",
        "KLMNOPQRSTUVWXYZ",
        "Z",
    ];
    let mut clients = Vec::new();
    for id in ids {
        assert!(id.len() <= 23);
        clients.push(v5::Client::connect(&broker, id).await);
    }
    assert_eq!(broker.broker().sessions.len(), ids.len());
    assert_eq!(broker.broker().metrics.takeovers.get(), 0);
    clients[0].subscribe("ids/t", v5::QoS::AtLeastOnce).await;
    clients[4]
        .publish("ids/t", v5::QoS::AtLeastOnce, false, b"x")
        .await;
    assert_eq!(&clients[0].next_publish().await.payload[..], b"x");
    broker.stop().await;
}

#[tokio::test]
async fn connack_is_success_with_reserved_flags_0() {
    // 5.0 [MQTT-3.1.4-5]: an accepted CONNECT gets CONNACK 0x00; [MQTT-3.2.2-1] bits 7-1 of the
    // acknowledge flags are 0 (bit 0 is Session Present).
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(&broker).await;
    raw.version = V5;
    raw.send(&enc(&Packet::Connect(Box::new(persistent("flags", true)))))
        .await;
    let (bytes, _) = recv_frame(&mut raw).await;
    assert_eq!(bytes[0], 0x20);
    assert_eq!(bytes[2..4], [0x00, 0x00], "flags 0, Success");
    raw.send(&[0xE0, 0x00]).await;
    raw.expect_close().await;
    eventually("offline", || {
        broker
            .broker()
            .sessions
            .get("flags")
            .is_some_and(|s| !s.is_online())
    })
    .await;

    let mut raw = Raw::connect(&broker).await;
    raw.version = V5;
    raw.send(&enc(&Packet::Connect(Box::new(persistent("flags", false)))))
        .await;
    let (bytes, _) = recv_frame(&mut raw).await;
    assert_eq!(bytes[2..4], [0x01, 0x00], "Session Present only, Success");
    broker.stop().await;
}

#[tokio::test]
async fn connack_reason_codes_come_from_the_connect_reason_code_table() {
    // 5.0 [MQTT-3.2.2-8]: every refusal the broker makes uses a Connect Reason Code; each is
    // 0x80 or above and the connection is closed after it [MQTT-3.2.2-7, MQTT-4.13.2-1], with
    // Session Present 0 [MQTT-3.2.2-6]. The refusals: a client id over mqtt.max_clientid_len
    // (0x85, [MQTT-3.1.3-8]), a will QoS above Maximum QoS (0x9B), a retained will without
    // Retain Available (0x9A), a will topic with wildcards (0x90, [MQTT-4.7.0-1]), an
    // authentication method (0x8C) and an unknown protocol level (0x84) ([MQTT-3.1.4-2]).
    let broker = TestBroker::start_with(|c| {
        // The smallest limit allowed: 1 to 23 characters are always accepted [MQTT-3.1.3-5].
        c.mqtt.max_clientid_len = 23;
        c.mqtt.max_qos_allowed = 1;
        c.mqtt.retain_available = false;
    })
    .await;
    let will = |topic: &str, qos: QoS, retain: bool| proto::LastWill {
        topic: ByteString::from(topic),
        payload: Bytes::from_static(b"w"),
        qos,
        retain,
        properties: Default::default(),
    };
    let mut cases: Vec<(&str, Vec<u8>, u8)> = Vec::new();
    cases.push((
        "client id too long",
        enc(&Packet::Connect(Box::new(conn("client-id-of-24-bytes-xx")))),
        0x85,
    ));
    for (what, w, code) in [
        ("will QoS 2", will("w/t", QoS::ExactlyOnce, false), 0x9B),
        ("will retain", will("w/t", QoS::AtMostOnce, true), 0x9A),
        ("will topic w/+", will("w/+", QoS::AtMostOnce, false), 0x90),
        ("will topic #", will("#", QoS::AtMostOnce, false), 0x90),
    ] {
        let mut c = conn("will");
        c.will = Some(w);
        cases.push((what, enc(&Packet::Connect(Box::new(c))), code));
    }
    let mut c = conn("auth");
    c.properties.authentication_method = Some(ByteString::from("SCRAM-SHA-256"));
    cases.push((
        "authentication method",
        enc(&Packet::Connect(Box::new(c))),
        0x8C,
    ));
    cases.push((
        "protocol level 6",
        edge::connect_named(b"MQTT", 6, 0x02, 60, &[], &s(b"level6")),
        0x84,
    ));
    for (what, bytes, code) in cases {
        let mut raw = Raw::connect(&broker).await;
        raw.version = V5;
        raw.send(&bytes).await;
        let (frame, packet) = recv_frame(&mut raw).await;
        assert_eq!(frame[0], 0x20, "{what}: a CONNACK");
        assert_eq!(frame[2], 0x00, "{what}: Session Present 0");
        assert_eq!(frame[3], code, "{what}");
        assert!(CONNACK_CODES.contains(&frame[3]), "{what}");
        assert!(matches!(packet, Packet::Connack(_)));
        assert!(raw.expect_close().await.is_empty(), "{what}: then closed");
    }
    assert_eq!(broker.broker().metrics.connects.get(), 0);
    let _ok = session(&broker, V5, "fine").await;
    broker.stop().await;
}

#[tokio::test]
async fn data_after_a_refused_connect_is_not_processed() {
    // 5.0 [MQTT-3.1.4-6]: after refusing a CONNECT the server processes nothing the client sent
    // after it. The CONNECT comes in one segment with a retained PUBLISH, a QoS 1 PUBLISH, a
    // SUBSCRIBE and a PINGREQ: none of them has any effect and nothing but the CONNACK comes
    // back (no DISCONNECT either: [MQTT-3.14.0-1]). The refusals: an authentication method the
    // broker does not support, 0x8C [MQTT-4.12.0-1], and a client id that is too long, 0x85.
    let broker = TestBroker::start_with(|c| c.mqtt.max_clientid_len = 23).await;
    let mut watcher = v5::Client::connect(&broker, "watcher").await;
    watcher.subscribe("after/#", v5::QoS::AtLeastOnce).await;
    let mut auth = conn("refused");
    auth.properties.authentication_method = Some(ByteString::from("SCRAM-SHA-1"));
    auth.properties.authentication_data = Some(Bytes::from_static(b"client-first"));
    for (c, code) in [
        (auth, ReasonCode::BadAuthenticationMethod),
        (
            conn("client-id-of-24-bytes-yy"),
            ReasonCode::ClientIdentifierNotValid,
        ),
    ] {
        let mut bytes = enc(&Packet::Connect(Box::new(c)));
        let mut retained = proto::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: ByteString::from("after/retained"),
            packet_id: None,
            properties: Default::default(),
            payload: Bytes::from_static(b"r"),
        };
        bytes.extend(enc(&Packet::Publish(retained.clone())));
        retained.retain = false;
        retained.qos = QoS::AtLeastOnce;
        retained.packet_id = Some(1);
        bytes.extend(enc(&Packet::Publish(retained)));
        bytes.extend(sub_packet(
            2,
            &[("after/#", qos_opts(QoS::AtMostOnce))],
            None,
        ));
        bytes.extend(PINGREQ);
        let mut raw = Raw::connect(&broker).await;
        raw.version = V5;
        raw.send(&bytes).await;
        match raw.expect_close().await.as_slice() {
            [Packet::Connack(c)] => {
                assert_eq!(c.reason_code, code);
                assert!(!c.session_present);
                assert_eq!(c.properties.authentication_method, None);
            }
            other => panic!("expected only CONNACK {code:?}, got {other:?}"),
        }
    }
    let mut publ = v5::Client::connect(&broker, "marker").await;
    publ.publish("after/marker", v5::QoS::AtLeastOnce, false, b"m")
        .await;
    assert_eq!(topic_of(&watcher.next_publish().await), "after/marker");
    assert_eq!(broker.broker().retained.len(), 0);
    assert_eq!(broker.broker().metrics.messages_received.get(), 1);
    assert_eq!(broker.broker().routes.subscription_count(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn refused_connack_has_session_present_0_even_with_a_stored_session() {
    // 5.0 [MQTT-3.2.2-6]: a CONNACK with a non-zero reason code has Session Present 0, also when
    // the server holds a session for the client id and Clean Start is 0 (refused here because
    // mqtt.max_clients is reached).
    let broker = TestBroker::start_with(|c| c.mqtt.max_clients = 1).await;
    let (mut raw, _) = accepted(&broker, persistent("stored", true)).await;
    raw.send(&enc(&Packet::Disconnect(proto::Disconnect::new(
        ReasonCode::Success,
    ))))
    .await;
    raw.expect_close().await;
    eventually("offline", || broker.broker().metrics.connections.get() == 0).await;
    let _other = v5::Client::connect(&broker, "other").await;
    let (mut raw, connack) = open(&broker, persistent("stored", false)).await;
    assert_eq!(connack.reason_code, ReasonCode::QuotaExceeded);
    assert!(!connack.session_present, "[MQTT-3.2.2-6]");
    assert!(raw.expect_close().await.is_empty());
    assert!(
        broker.broker().sessions.get("stored").is_some(),
        "still stored"
    );
    broker.stop().await;
}

#[tokio::test]
async fn assigned_client_identifier_is_not_used_by_any_other_session() {
    // 5.0 [MQTT-3.2.2-16]: the Assigned Client Identifier is new, not used by any session in
    // the server; [MQTT-3.1.3-6] the assigned one is unique. Assigned ids are keyed by a random
    // per-node key, so a client cannot guess the next one and squat it; the broker also skips
    // any id a live session holds. Here: 20 assigned ids next to 20 persistent sessions of
    // chosen ids are all distinct, and nobody took anybody over.
    let broker = TestBroker::start().await;
    let mut clients = Vec::new();
    let mut chosen = Vec::new();
    for i in 0..20 {
        let id = format!("chosen-{i}");
        let mut o = v5::options(&broker, &id);
        o.set_clean_start(false)
            .set_session_expiry_interval(Some(60));
        clients.push(v5::Client::connect_with(o).await);
        chosen.push(id);
    }
    let mut assigned = std::collections::HashSet::new();
    for _ in 0..20 {
        let c = v5::Client::connect(&broker, "").await;
        let id = c
            .connack
            .properties
            .as_ref()
            .and_then(|p| p.assigned_client_identifier.clone())
            .expect("Assigned Client Identifier");
        assert!(!chosen.contains(&id), "{id} is already in use");
        assert!(assigned.insert(id.clone()), "{id} assigned twice");
        clients.push(c);
    }
    assert_eq!(broker.broker().metrics.takeovers.get(), 0);
    assert_eq!(broker.broker().sessions.len(), 40);
    broker.stop().await;
}

#[tokio::test]
async fn small_maximum_packet_size_keeps_reason_strings_and_user_properties_out() {
    // 5.0: nothing larger than the client's Maximum Packet Size is sent [MQTT-3.1.2-24]; a
    // Reason String or User Property that would make a packet too large is left out:
    // CONNACK [MQTT-3.2.2-19, MQTT-3.2.2-20], PUBACK [MQTT-3.4.2-2, MQTT-3.4.2-3], PUBREC
    // [MQTT-3.5.2-2, MQTT-3.5.2-3], PUBREL [MQTT-3.6.2-2, MQTT-3.6.2-3], PUBCOMP [MQTT-3.7.2-2,
    // MQTT-3.7.2-3], SUBACK [MQTT-3.9.2-1, MQTT-3.9.2-2], UNSUBACK [MQTT-3.11.2-1,
    // MQTT-3.11.2-2] and DISCONNECT [MQTT-3.14.2-3, MQTT-3.14.2-4], each exchange driven to an
    // error reason code where the broker has one (a reason string would be natural there). The
    // DISCONNECT of a protocol error carries a Reason String for a client that can take it
    // (tests/v5.rs::protocol_error_disconnect_carries_reason_string) and none here.
    const MAX: u32 = 20;
    let broker = TestBroker::start().await;
    let mut c = conn("small");
    c.properties.maximum_packet_size = Some(MAX);
    let mut raw = Raw::connect(&broker).await;
    raw.version = V5;
    raw.send(&enc(&Packet::Connect(Box::new(c)))).await;
    let mut frames = vec![recv_frame(&mut raw).await];

    let sizes = |frames: &[(Vec<u8>, Packet)]| {
        for (bytes, p) in frames {
            assert!(bytes.len() <= MAX as usize, "{} bytes: {p:?}", bytes.len());
        }
    };
    // PUBACK 0x10 and 0x99, PUBREC 0x10, PUBREL for an unknown id gets PUBCOMP 0x92.
    let bad_utf8 = proto::PublishProperties {
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    raw.send(&publish(
        "nobody",
        QoS::AtLeastOnce,
        Some(1),
        Default::default(),
        b"x",
    ))
    .await;
    raw.send(&publish(
        "nobody",
        QoS::AtLeastOnce,
        Some(2),
        bad_utf8,
        b"\xFF",
    ))
    .await;
    raw.send(&publish(
        "nobody",
        QoS::ExactlyOnce,
        Some(3),
        Default::default(),
        b"x",
    ))
    .await;
    raw.send(&ack(Packet::Pubrel(proto::PubAck::new(3)))).await;
    raw.send(&ack(Packet::Pubrel(proto::PubAck::new(99)))).await;
    for _ in 0..5 {
        frames.push(recv_frame(&mut raw).await);
    }
    // SUBACK 0x8F, UNSUBACK 0x11.
    raw.send(&sub_packet(
        4,
        &[("a/#/b", qos_opts(QoS::AtMostOnce))],
        None,
    ))
    .await;
    frames.push(recv_frame(&mut raw).await);
    raw.send(&unsubscribe(V5, 5, &[b"never"])).await;
    frames.push(recv_frame(&mut raw).await);
    // The broker's QoS 2 exchange towards the client: PUBREL after PUBREC, PUBREL 0x92 for an
    // unknown PUBREC.
    subscribe(&mut raw, "s/t", QoS::ExactlyOnce).await;
    let mut publ = v5::Client::connect(&broker, "small-pub").await;
    publ.publish("s/t", v5::QoS::ExactlyOnce, false, b"m").await;
    let (bytes, p) = recv_frame(&mut raw).await;
    let Packet::Publish(p) = p else {
        panic!("expected PUBLISH, got {p:?}")
    };
    frames.push((bytes, Packet::Publish(p.clone())));
    raw.send(&ack(Packet::Pubrec(proto::PubAck::new(
        p.packet_id.expect("id"),
    ))))
    .await;
    raw.send(&ack(Packet::Pubrec(proto::PubAck::new(999))))
        .await;
    frames.push(recv_frame(&mut raw).await);
    frames.push(recv_frame(&mut raw).await);
    sizes(&frames);
    let kinds: Vec<(&str, Option<ReasonCode>)> = frames
        .iter()
        .map(|(_, p)| match p {
            Packet::Connack(c) => {
                assert!(c.properties.reason_string.is_none());
                assert!(c.properties.user_properties.is_empty());
                ("CONNACK", Some(c.reason_code))
            }
            Packet::Puback(a) | Packet::Pubrec(a) | Packet::Pubrel(a) | Packet::Pubcomp(a) => {
                assert_eq!(a.properties, proto::AckProperties::default());
                let name = match p {
                    Packet::Puback(_) => "PUBACK",
                    Packet::Pubrec(_) => "PUBREC",
                    Packet::Pubrel(_) => "PUBREL",
                    _ => "PUBCOMP",
                };
                (name, Some(a.reason_code))
            }
            Packet::Suback(a) => {
                assert_eq!(a.properties, proto::AckProperties::default());
                ("SUBACK", a.reason_codes.first().copied())
            }
            Packet::Unsuback(a) => {
                assert_eq!(a.properties, proto::AckProperties::default());
                ("UNSUBACK", a.reason_codes.first().copied())
            }
            Packet::Publish(_) => ("PUBLISH", None),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    use ReasonCode as R;
    assert_eq!(
        kinds,
        vec![
            ("CONNACK", Some(R::Success)),
            ("PUBACK", Some(R::NoMatchingSubscribers)),
            ("PUBACK", Some(R::PayloadFormatInvalid)),
            ("PUBREC", Some(R::NoMatchingSubscribers)),
            ("PUBCOMP", Some(R::Success)),
            ("PUBCOMP", Some(R::PacketIdentifierNotFound)),
            ("SUBACK", Some(R::TopicFilterInvalid)),
            ("UNSUBACK", Some(R::NoSubscriptionExisted)),
            ("PUBLISH", None),
            ("PUBREL", Some(R::Success)),
            ("PUBREL", Some(R::PacketIdentifierNotFound)),
        ]
    );

    // A protocol error (a second CONNECT): DISCONNECT 0x82, its Reason String left out.
    raw.send(&Raw::connect_v5("small")).await;
    let (bytes, p) = recv_frame(&mut raw).await;
    assert!(bytes.len() <= MAX as usize, "{bytes:02X?}");
    match p {
        Packet::Disconnect(d) => {
            assert_eq!(d.reason_code, ReasonCode::ProtocolError);
            assert_eq!(d.properties.reason_string, None);
            assert!(d.properties.user_properties.is_empty());
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(raw.expect_close().await.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn request_problem_information_0_means_no_reason_string_outside_publish_connack_disconnect() {
    // 5.0 [MQTT-3.1.2-29]: with Request Problem Information 0 no Reason String or User Property
    // is sent on any packet but PUBLISH, CONNACK and DISCONNECT, even with error reason codes
    // (SUBACK 0x8F, UNSUBACK 0x11, PUBACK/PUBREC 0x10, 0x87 and 0x99, PUBREL/PUBCOMP 0x92).
    let broker = TestBroker::start().await;
    let mut c = conn("rpi");
    c.properties.request_problem_information = Some(false);
    let (mut raw, _) = accepted(&broker, c).await;
    let pfi = proto::PublishProperties {
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    let mut bytes = Vec::new();
    bytes.extend(publish(
        "none",
        QoS::AtLeastOnce,
        Some(1),
        Default::default(),
        b"x",
    ));
    bytes.extend(publish(
        "$SYS/x",
        QoS::AtLeastOnce,
        Some(2),
        Default::default(),
        b"x",
    ));
    bytes.extend(publish("p", QoS::ExactlyOnce, Some(3), pfi, b"\xC3"));
    bytes.extend(ack(Packet::Pubrel(proto::PubAck::new(4))));
    bytes.extend(ack(Packet::Pubrec(proto::PubAck::new(5))));
    bytes.extend(sub_packet(6, &[("#/a", qos_opts(QoS::AtMostOnce))], None));
    bytes.extend(unsubscribe(V5, 7, &[b"never"]));
    raw.send(&bytes).await;
    let mut errors_seen = 0;
    for _ in 0..7 {
        let (props, code) = match raw.next_packet().await {
            Packet::Puback(a) | Packet::Pubrec(a) | Packet::Pubrel(a) | Packet::Pubcomp(a) => {
                (a.properties, a.reason_code)
            }
            Packet::Suback(a) => (a.properties, a.reason_codes[0]),
            Packet::Unsuback(a) => (a.properties, a.reason_codes[0]),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(props, proto::AckProperties::default(), "{code:?}");
        if code != ReasonCode::NoMatchingSubscribers && code != ReasonCode::NoSubscriptionExisted {
            errors_seen += 1;
        }
    }
    assert_eq!(errors_seen, 5, "0x87, 0x99, 0x92, 0x92, 0x8F");
    broker.stop().await;
}

#[tokio::test]
async fn without_server_keep_alive_the_clients_keep_alive_applies() {
    // 5.0 [MQTT-3.2.2-22]: no Server Keep Alive in CONNACK, so the server uses the client's
    // Keep Alive (1 s): silence for 1.5 s ends the connection with DISCONNECT 0x8D
    // [MQTT-3.1.2-22].
    let broker = TestBroker::start().await;
    let mut c = conn("ka");
    c.keep_alive = 1;
    let (mut raw, connack) = accepted(&broker, c).await;
    let t0 = Instant::now();
    assert_eq!(connack.properties.server_keep_alive, None);
    let got = raw.expect_close().await;
    let elapsed = t0.elapsed();
    assert_eq!(only_disconnect(&got), ReasonCode::KeepAliveTimeout);
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn maximum_qos_0_is_advertised_and_subscribe_still_accepted() {
    // 5.0 [MQTT-3.2.2-9]: a server without QoS 1 and 2 says Maximum QoS 0 in CONNACK;
    // [MQTT-3.2.2-10] it still accepts SUBSCRIBE at QoS 0, 1 and 2 (granting 0); a QoS 1
    // PUBLISH is refused with DISCONNECT 0x9B [MQTT-3.2.2-11].
    let broker = TestBroker::start_with(|c| c.mqtt.max_qos_allowed = 0).await;
    let (mut raw, connack) = accepted(&broker, conn("mq0")).await;
    assert_eq!(connack.properties.maximum_qos, Some(QoS::AtMostOnce));
    raw.send(&sub_packet(
        1,
        &[
            ("q/0", qos_opts(QoS::AtMostOnce)),
            ("q/1", qos_opts(QoS::AtLeastOnce)),
            ("q/2", qos_opts(QoS::ExactlyOnce)),
        ],
        None,
    ))
    .await;
    match raw.next_packet().await {
        Packet::Suback(s) => assert_eq!(s.reason_codes, vec![ReasonCode::Success; 3]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    raw.send(&publish(
        "q/2",
        QoS::AtMostOnce,
        None,
        Default::default(),
        b"0",
    ))
    .await;
    let p = next_publish(&mut raw).await;
    assert_eq!((p.qos, &p.payload[..]), (QoS::AtMostOnce, &b"0"[..]));
    raw.send(&publish(
        "q/1",
        QoS::AtLeastOnce,
        Some(1),
        Default::default(),
        b"1",
    ))
    .await;
    match raw.expect_close().await.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason_code, ReasonCode::QoSNotSupported),
        other => panic!("expected DISCONNECT 0x9B, got {other:?}"),
    }
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3.3 PUBLISH
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn outgoing_dup_is_set_only_for_retransmissions() {
    // 5.0 [MQTT-3.3.1-3]: the DUP flag the server sends does not copy the incoming one: a
    // PUBLISH received with DUP 1 is forwarded with DUP 0, its first transmission.
    let broker = TestBroker::start().await;
    let (mut sub, _) = accepted(&broker, conn("dup-sub")).await;
    subscribe(&mut sub, "dup/t", QoS::ExactlyOnce).await;
    let (mut publ, _) = accepted(&broker, conn("dup-pub")).await;
    for (qos, id) in [(QoS::AtLeastOnce, 1u16), (QoS::ExactlyOnce, 2)] {
        publ.send(&enc(&Packet::Publish(proto::Publish {
            dup: true,
            qos,
            retain: false,
            topic: ByteString::from("dup/t"),
            packet_id: Some(id),
            properties: Default::default(),
            payload: Bytes::from_static(b"d"),
        })))
        .await;
        let p = next_publish(&mut sub).await;
        assert_eq!(p.qos, qos);
        assert!(!p.dup, "first transmission to the subscriber: DUP 0");
    }
    broker.stop().await;
}

#[tokio::test]
async fn topic_aliases_towards_the_client_are_forgotten_with_the_connection() {
    // 5.0 [MQTT-3.3.2-7]: the server does not carry its Topic Alias mappings over to the next
    // connection of the session: the first PUBLISH on a topic after the reconnect carries the
    // Topic Name again.
    let broker = TestBroker::start().await;
    let mut c = persistent("ta-sub", true);
    c.properties.topic_alias_maximum = Some(5);
    let (mut sub, _) = accepted(&broker, c.clone()).await;
    subscribe(&mut sub, "ta/t", QoS::AtLeastOnce).await;
    let mut publ = v5::Client::connect(&broker, "ta-pub").await;
    publ.publish("ta/t", v5::QoS::AtMostOnce, false, b"1").await;
    publ.publish("ta/t", v5::QoS::AtMostOnce, false, b"2").await;
    let a = next_publish(&mut sub).await;
    let b = next_publish(&mut sub).await;
    assert_eq!((&*a.topic, a.properties.topic_alias), ("ta/t", Some(1)));
    assert_eq!((&*b.topic, b.properties.topic_alias), ("", Some(1)));
    sub.send(&enc(&Packet::Disconnect(proto::Disconnect::new(
        ReasonCode::Success,
    ))))
    .await;
    sub.expect_close().await;
    eventually("offline", || {
        broker
            .broker()
            .sessions
            .get("ta-sub")
            .is_some_and(|s| !s.is_online())
    })
    .await;
    c.clean_start = false;
    let (mut sub, connack) = accepted(&broker, c).await;
    assert!(connack.session_present);
    publ.publish("ta/t", v5::QoS::AtMostOnce, false, b"3").await;
    let p = next_publish(&mut sub).await;
    assert_eq!(&*p.topic, "ta/t", "the topic again after the reconnect");
    assert_eq!(&p.payload[..], b"3");
    broker.stop().await;
}

#[tokio::test]
async fn topic_alias_maximum_0_means_no_aliases() {
    // 5.0 [MQTT-3.1.2-27]: a client that says Topic Alias Maximum 0 gets no Topic Alias.
    let broker = TestBroker::start().await;
    let mut c = conn("ta0");
    c.properties.topic_alias_maximum = Some(0);
    let (mut sub, _) = accepted(&broker, c).await;
    subscribe(&mut sub, "ta0/t", QoS::AtMostOnce).await;
    let mut publ = v5::Client::connect(&broker, "ta0-pub").await;
    for _ in 0..3 {
        publ.publish("ta0/t", v5::QoS::AtLeastOnce, false, b"x")
            .await;
        let p = next_publish(&mut sub).await;
        assert_eq!((&*p.topic, p.properties.topic_alias), ("ta0/t", None));
    }
    broker.stop().await;
}

#[tokio::test]
async fn topic_alias_0_is_refused() {
    // 5.0 [MQTT-3.3.2-8]: a Topic Alias of 0 is never valid: the connection is closed after a
    // DISCONNECT with an error reason code, and nothing is routed. (That the broker never sends
    // alias 0 is checked by tests/v5.rs::
    // broker_uses_topic_aliases_towards_a_client_that_allows_them.)
    let broker = TestBroker::start().await;
    let (mut raw, _) = accepted(&broker, conn("alias0")).await;
    let props = proto::PublishProperties {
        topic_alias: Some(1),
        ..Default::default()
    };
    raw.send(&publish("a0/t", QoS::AtLeastOnce, Some(1), props, b"ok"))
        .await;
    assert!(matches!(raw.next_packet().await, Packet::Puback(_)));
    // Alias 0, written by hand (the codec refuses to encode it): property 0x23, value 0.
    raw.send(&edge::publish(
        V5,
        0,
        false,
        b"a0/t",
        None,
        &[0x23, 0, 0],
        b"x",
    ))
    .await;
    let got = raw.expect_close().await;
    let reason = only_disconnect(&got);
    assert!(
        [ReasonCode::ProtocolError, ReasonCode::TopicAliasInvalid].contains(&reason),
        "{reason:?}"
    );
    assert_eq!(broker.broker().metrics.messages_received.get(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn every_topic_alias_up_to_the_maximum_is_accepted() {
    // 5.0 [MQTT-3.3.2-12]: the server accepts every Topic Alias from 1 to the Topic Alias
    // Maximum it returned in CONNACK, and resolves each to the topic it was bound to.
    const MAX: u16 = 10;
    let broker = TestBroker::start_with(|c| c.mqtt.max_topic_alias = MAX).await;
    let mut sub = v5::Client::connect(&broker, "all-sub").await;
    sub.subscribe("all/#", v5::QoS::AtLeastOnce).await;
    let (mut raw, connack) = accepted(&broker, conn("all-pub")).await;
    assert_eq!(connack.properties.topic_alias_maximum, Some(MAX));
    let alias = |n| proto::PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    };
    let mut id = 0;
    for n in 1..=MAX {
        id += 1;
        raw.send(&publish(
            &format!("all/{n}"),
            QoS::AtLeastOnce,
            Some(id),
            alias(n),
            b"bind",
        ))
        .await;
    }
    for n in (1..=MAX).rev() {
        id += 1;
        raw.send(&publish("", QoS::AtLeastOnce, Some(id), alias(n), b"use"))
            .await;
    }
    for _ in 0..id {
        assert!(matches!(raw.next_packet().await, Packet::Puback(a) if !a.reason_code.is_error()));
    }
    let mut got = Vec::new();
    for _ in 0..id {
        let p = sub.next_publish().await;
        got.push((topic_of(&p), p.payload.to_vec()));
    }
    let mut expected: Vec<(String, Vec<u8>)> = (1..=MAX)
        .map(|n| (format!("all/{n}"), b"bind".to_vec()))
        .collect();
    expected.extend(
        (1..=MAX)
            .rev()
            .map(|n| (format!("all/{n}"), b"use".to_vec())),
    );
    assert_eq!(got, expected);
    broker.stop().await;
}

#[tokio::test]
async fn response_topic_with_wildcards_is_a_protocol_error() {
    // 5.0 [MQTT-3.3.2-14]: the Response Topic has no wildcards. A PUBLISH with one is a
    // Protocol Error (DISCONNECT 0x82, nothing routed), and so is a will whose Response Topic
    // has one, which the server would otherwise publish (CONNACK 0x82).
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect(&broker, "rt-sub").await;
    sub.subscribe("rt/#", v5::QoS::AtLeastOnce).await;
    for (i, rt) in ["reply/+", "reply/#", "#"].into_iter().enumerate() {
        let (mut raw, _) = accepted(&broker, conn(&format!("rt-{i}"))).await;
        let props = proto::PublishProperties {
            response_topic: Some(ByteString::from(rt)),
            ..Default::default()
        };
        raw.send(&publish("rt/t", QoS::AtLeastOnce, Some(1), props, b"x"))
            .await;
        let got = raw.expect_close().await;
        assert_eq!(only_disconnect(&got), ReasonCode::ProtocolError, "{rt}");

        let mut c = conn(&format!("rt-will-{i}"));
        c.will = Some(proto::LastWill {
            topic: ByteString::from("rt/will"),
            payload: Bytes::from_static(b"w"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: proto::WillProperties {
                response_topic: Some(ByteString::from(rt)),
                ..Default::default()
            },
        });
        let (mut raw, connack) = open(&broker, c).await;
        assert_eq!(connack.reason_code, ReasonCode::ProtocolError, "will {rt}");
        assert!(raw.expect_close().await.is_empty());
    }
    // A valid Response Topic still goes through.
    let mut publ = v5::Client::connect(&broker, "rt-ok").await;
    let props = v5::PublishProperties {
        response_topic: Some("reply/ok".into()),
        ..Default::default()
    };
    publ.publish_with("rt/t", v5::QoS::AtLeastOnce, false, b"ok", props)
        .await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"ok", "nothing else was routed");
    assert_eq!(
        p.properties.and_then(|p| p.response_topic).as_deref(),
        Some("reply/ok")
    );
    broker.stop().await;
}

#[tokio::test]
async fn subscription_identifier_in_a_client_publish_is_a_protocol_error() {
    // 5.0 [MQTT-3.3.4-6]: a PUBLISH from a client carries no Subscription Identifier; one that
    // does is a Protocol Error (DISCONNECT 0x82) and is not routed.
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect(&broker, "sid-sub").await;
    sub.subscribe("sid/#", v5::QoS::AtLeastOnce).await;
    let (mut raw, _) = accepted(&broker, conn("sid-pub")).await;
    let props = proto::PublishProperties {
        subscription_identifiers: vec![7],
        ..Default::default()
    };
    raw.send(&publish("sid/t", QoS::AtLeastOnce, Some(1), props, b"x"))
        .await;
    let got = raw.expect_close().await;
    assert_eq!(only_disconnect(&got), ReasonCode::ProtocolError);
    assert_eq!(broker.broker().metrics.messages_received.get(), 0);
    assert_eq!(broker.broker().metrics.protocol_errors.get(), 1);
    assert!(sync5(&mut sub).await.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn each_qos_is_answered_as_its_protocol_requires() {
    // 5.0 [MQTT-3.3.4-1]: QoS 0 gets no answer, QoS 1 a PUBACK [MQTT-4.3.2-4], QoS 2 a PUBREC
    // [MQTT-4.3.3-8] and then, for the PUBREL, a PUBCOMP [MQTT-4.3.3-11], each with the
    // incoming packet identifier.
    let broker = TestBroker::start().await;
    let (mut raw, _) = accepted(&broker, conn("answers")).await;
    raw.send(&publish(
        "q/0",
        QoS::AtMostOnce,
        None,
        Default::default(),
        b"0",
    ))
    .await;
    nothing_before_pingresp(&mut raw, "QoS 0 has no acknowledgement").await;
    raw.send(&publish(
        "q/1",
        QoS::AtLeastOnce,
        Some(0x4001),
        Default::default(),
        b"1",
    ))
    .await;
    assert!(matches!(raw.next_packet().await, Packet::Puback(a) if a.packet_id == 0x4001));
    raw.send(&publish(
        "q/2",
        QoS::ExactlyOnce,
        Some(0x8002),
        Default::default(),
        b"2",
    ))
    .await;
    assert!(matches!(raw.next_packet().await, Packet::Pubrec(a) if a.packet_id == 0x8002));
    raw.send(&ack(Packet::Pubrel(proto::PubAck::new(0x8002))))
        .await;
    match raw.next_packet().await {
        Packet::Pubcomp(a) => {
            assert_eq!(a.packet_id, 0x8002);
            assert_eq!(a.reason_code, ReasonCode::Success);
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    nothing_before_pingresp(&mut raw, "one answer each").await;
    broker.stop().await;
}

#[tokio::test]
async fn acknowledgement_reason_codes_come_from_their_tables() {
    // 5.0 [MQTT-3.4.2-1] PUBACK, [MQTT-3.5.2-1] PUBREC, [MQTT-3.6.2-1] PUBREL and
    // [MQTT-3.7.2-1] PUBCOMP reason codes: every code the broker sends (success, 0x10, 0x87,
    // 0x99, 0x92) is in its packet's table, checked on the raw bytes; and an acknowledgement
    // from the client with a code outside its table is a Malformed Packet (DISCONNECT 0x81).
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect(&broker, "codes-sub").await;
    sub.subscribe("codes/matched", v5::QoS::AtLeastOnce).await;
    let (mut raw, _) = accepted(&broker, conn("codes")).await;
    let pfi = || proto::PublishProperties {
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    let mut id = 0;
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for (topic, props, payload) in [
            ("codes/matched", Default::default(), &b"x"[..]),
            ("codes/nobody", Default::default(), b"x"),
            ("$SYS/denied", Default::default(), b"x"),
            ("codes/matched", pfi(), b"\xFF\xFE"),
        ] {
            id += 1;
            raw.send(&publish(topic, qos, Some(id), props, payload))
                .await;
            let (bytes, p) = recv_frame(&mut raw).await;
            let code = if bytes.len() > 4 { bytes[4] } else { 0 };
            assert!(PUBACK_CODES.contains(&code), "{p:?}");
            if let Packet::Pubrec(a) = p {
                if !a.reason_code.is_error() {
                    raw.send(&ack(Packet::Pubrel(proto::PubAck::new(id)))).await;
                    let (bytes, _) = recv_frame(&mut raw).await;
                    assert_eq!(bytes[0], 0x70);
                    let code = if bytes.len() > 4 { bytes[4] } else { 0 };
                    assert!(PUBREL_CODES.contains(&code), "PUBCOMP {bytes:02X?}");
                }
            }
        }
    }
    // PUBREL for an unknown PUBREC, PUBCOMP for an unknown PUBREL: 0x92.
    raw.send(&ack(Packet::Pubrec(proto::PubAck::new(500))))
        .await;
    raw.send(&ack(Packet::Pubrel(proto::PubAck::new(501))))
        .await;
    for first in [0x62, 0x70] {
        let (bytes, _) = recv_frame(&mut raw).await;
        assert_eq!(bytes[0], first);
        assert_eq!(bytes[4], 0x92, "{bytes:02X?}");
        assert!(PUBREL_CODES.contains(&bytes[4]));
    }

    // From the client: a PUBACK with 0x05 (undefined), a PUBREC with 0x92 (PUBREL's), a
    // PUBREL with 0x10 and a PUBCOMP with 0x80 (PUBACK's).
    let cases: [(u8, u8); 4] = [(0x40, 0x05), (0x50, 0x92), (0x62, 0x10), (0x70, 0x80)];
    for (i, (first, code)) in cases.into_iter().enumerate() {
        let before = errors(&broker);
        send_bad(
            &broker,
            V5,
            &format!("bad-ack-{i}"),
            &[first, 3, 0, 1, code],
            ReasonCode::MalformedPacket,
        )
        .await;
        expect_errors(&broker, before, 1, 0).await;
    }
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3.8 SUBSCRIBE
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn resubscribing_replaces_the_subscription() {
    // 5.0 [MQTT-3.8.4-3]: a SUBSCRIBE with the filter of an existing non-shared subscription
    // replaces it: the new QoS and Subscription Identifier apply, and there is still one
    // subscription (one copy per message).
    let broker = TestBroker::start().await;
    let (mut raw, _) = accepted(&broker, conn("replace")).await;
    raw.send(&sub_packet(
        1,
        &[("r/t", qos_opts(QoS::ExactlyOnce))],
        Some(1),
    ))
    .await;
    assert!(matches!(raw.next_packet().await, Packet::Suback(_)));
    raw.send(&sub_packet(
        2,
        &[("r/t", qos_opts(QoS::AtMostOnce))],
        Some(2),
    ))
    .await;
    match raw.next_packet().await {
        Packet::Suback(s) => assert_eq!(s.reason_codes, vec![ReasonCode::Success]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    assert_eq!(broker.broker().routes.subscription_count(), 1);
    let mut publ = v5::Client::connect(&broker, "replace-pub").await;
    publ.publish("r/t", v5::QoS::ExactlyOnce, false, b"x").await;
    let p = next_publish(&mut raw).await;
    assert_eq!(p.qos, QoS::AtMostOnce, "the new subscription's QoS");
    assert_eq!(p.properties.subscription_identifiers, vec![2]);
    nothing_before_pingresp(&mut raw, "a second copy").await;
    broker.stop().await;
}

#[tokio::test]
async fn resubscribing_loses_no_messages() {
    // 5.0 [MQTT-3.8.4-4]: replacing a subscription (here 30 times, Retain Handling 0) while
    // messages flow loses none of them, and duplicates none, in order.
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect(&broker, "resub").await;
    sub.subscribe("resub/t", v5::QoS::AtLeastOnce).await;
    let mut publ = v5::Client::connect(&broker, "resub-pub").await;
    const N: u32 = 300;
    let producer = tokio::spawn(async move {
        for i in 0..N {
            publ.publish("resub/t", v5::QoS::AtLeastOnce, false, &i.to_be_bytes())
                .await;
        }
        publ
    });
    for _ in 0..30 {
        sub.subscribe("resub/t", v5::QoS::AtLeastOnce).await;
    }
    within("publisher done", producer).await.expect("publisher");
    let mut got = Vec::new();
    while got.len() < N as usize {
        let p = sub.next_publish().await;
        got.push(u32::from_be_bytes(
            p.payload[..].try_into().expect("4 bytes"),
        ));
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert!(sync5(&mut sub).await.is_empty(), "no duplicates");
    broker.stop().await;
}

#[tokio::test]
async fn several_filters_in_one_subscribe_are_handled_one_by_one() {
    // 5.0 [MQTT-3.8.4-5]: a SUBSCRIBE with three filters is three subscriptions answered by one
    // SUBACK, whose codes are Subscribe Reason Codes [MQTT-3.9.3-2]; messages are delivered at
    // the minimum of their QoS and the granted QoS [MQTT-3.8.4-8].
    let broker = TestBroker::start().await;
    let (mut raw, _) = accepted(&broker, conn("multi")).await;
    raw.send(&sub_packet(
        9,
        &[
            ("m/0", qos_opts(QoS::AtMostOnce)),
            ("m/1", qos_opts(QoS::AtLeastOnce)),
            ("m/2", qos_opts(QoS::ExactlyOnce)),
        ],
        None,
    ))
    .await;
    let (bytes, _) = recv_frame(&mut raw).await;
    assert_eq!(bytes, [0x90, 0x06, 0x00, 0x09, 0x00, 0x00, 0x01, 0x02]);
    assert!(bytes[5..].iter().all(|c| SUBACK_CODES.contains(c)));
    nothing_before_pingresp(&mut raw, "one SUBACK").await;
    assert_eq!(broker.broker().routes.subscription_count(), 3);

    let mut publ = v5::Client::connect(&broker, "multi-pub").await;
    for t in ["m/0", "m/1", "m/2"] {
        publ.publish(t, v5::QoS::ExactlyOnce, false, t.as_bytes())
            .await;
    }
    publ.publish("m/2", v5::QoS::AtLeastOnce, false, b"m/2 at 1")
        .await;
    let mut received = Vec::new();
    for _ in 0..4 {
        received.push(next_publish(&mut raw).await);
    }
    let mut got = Vec::new();
    for p in received {
        got.push((p.topic.to_string(), p.qos));
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                raw.send(&ack(Packet::Puback(proto::PubAck::new(id)))).await
            }
            (QoS::ExactlyOnce, Some(id)) => {
                raw.send(&ack(Packet::Pubrec(proto::PubAck::new(id)))).await;
                assert!(matches!(raw.next_packet().await, Packet::Pubrel(_)));
                raw.send(&ack(Packet::Pubcomp(proto::PubAck::new(id))))
                    .await;
            }
            _ => {}
        }
    }
    assert_eq!(
        got,
        vec![
            ("m/0".to_string(), QoS::AtMostOnce),
            ("m/1".to_string(), QoS::AtLeastOnce),
            ("m/2".to_string(), QoS::ExactlyOnce),
            ("m/2".to_string(), QoS::AtLeastOnce),
        ]
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3.14 DISCONNECT, 3.15 AUTH
// ---------------------------------------------------------------------------------------------

/// Reads until the close, asserting that a DISCONNECT with `reason` is the last packet and the
/// only DISCONNECT; returns how many PUBLISH packets came before it.
async fn disconnect_is_last(raw: &mut Raw, reason: ReasonCode) -> usize {
    let got = raw.expect_close().await;
    let (last, before) = got.split_last().expect("a DISCONNECT before the close");
    match last {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, reason),
        other => panic!("the last packet must be the DISCONNECT, got {other:?}"),
    }
    assert!(
        before.iter().all(|p| matches!(p, Packet::Publish(_))),
        "{before:?}"
    );
    before.len()
}

#[tokio::test]
async fn disconnect_is_the_last_packet_on_the_connection() {
    // 5.0 [MQTT-3.14.4-1]: after its DISCONNECT the server sends nothing more on the
    // connection, even with messages flowing towards it, and [MQTT-3.14.4-2] closes it. Two
    // ways to a server DISCONNECT: a protocol error (0x82) and a takeover (0x8E).
    let broker = TestBroker::start().await;
    let publ = v5::Client::connect(&broker, "flood-pub").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let flood = tokio::spawn(async move {
        let mut i = 0u32;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            publ.client
                .publish(
                    "flood/t",
                    v5::QoS::AtMostOnce,
                    false,
                    i.to_be_bytes().to_vec(),
                )
                .await
                .expect("queue PUBLISH");
            i += 1;
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        publ
    });
    for (id, reason) in [
        ("flood-a", ReasonCode::ProtocolError),
        ("flood-b", ReasonCode::SessionTakenOver),
    ] {
        let (mut raw, _) = accepted(&broker, conn(id)).await;
        subscribe(&mut raw, "flood/t", QoS::AtMostOnce).await;
        for _ in 0..50 {
            next_publish(&mut raw).await;
        }
        let _newcomer = if reason == ReasonCode::ProtocolError {
            raw.send(&Raw::connect_v5(id)).await;
            None
        } else {
            Some(v5::Client::connect(&broker, id).await)
        };
        disconnect_is_last(&mut raw, reason).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    within("flood stopped", flood).await.expect("flood task");
    broker.stop().await;
}

#[tokio::test]
async fn disconnect_with_an_undefined_reason_code_is_malformed() {
    // 5.0 [MQTT-3.14.2-1]: the client's DISCONNECT must use a DISCONNECT Reason Code: 0x84 (a
    // CONNACK code) and 0x03 (none at all) make it a Malformed Packet: DISCONNECT 0x81, and the
    // will is published since this is no normal disconnection.
    let broker = TestBroker::start().await;
    let mut w = v5::Client::connect(&broker, "dr-watch").await;
    w.subscribe("dr/#", v5::QoS::AtLeastOnce).await;
    for code in [0x84u8, 0x03] {
        let will = wire::Will::new(&format!("dr/{code}"), b"will");
        let connect = wire::connect(true, &format!("dr-{code}"), true, 60, &[], Some(&will));
        let (mut raw, _) = Raw::start_session(&broker, true, &connect).await;
        let before = errors(&broker);
        raw.send(&[0xE0, 0x01, code]).await;
        let got = raw.expect_close().await;
        assert_eq!(only_disconnect(&got), ReasonCode::MalformedPacket);
        expect_errors(&broker, before, 1, 0).await;
        assert_eq!(topic_of(&w.next_publish().await), format!("dr/{code}"));
    }
    broker.stop().await;
}

#[tokio::test]
async fn auth_with_reserved_flags_set_is_malformed() {
    // 5.0 [MQTT-3.15.1-1]: bits 3-0 of the AUTH fixed header are 0; any other value is a
    // Malformed Packet and the connection is closed (DISCONNECT 0x81).
    let broker = TestBroker::start().await;
    for (i, first) in [0xF1u8, 0xF2, 0xF8].into_iter().enumerate() {
        let before = errors(&broker);
        send_bad(
            &broker,
            V5,
            &format!("auth-flags-{i}"),
            &[first, 0x00],
            ReasonCode::MalformedPacket,
        )
        .await;
        expect_errors(&broker, before, 1, 0).await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn no_authentication_method_means_no_auth_from_the_server() {
    // 5.0 [MQTT-4.12.0-6]: without an Authentication Method in CONNECT the server sends no
    // Authentication Method in CONNACK and never an AUTH packet: an AUTH from the client
    // (which it must not send, [MQTT-4.12.0-7]) is answered with DISCONNECT 0x82, not AUTH.
    let broker = TestBroker::start().await;
    let (mut raw, connack) = accepted(&broker, conn("no-auth")).await;
    assert_eq!(connack.properties.authentication_method, None);
    assert_eq!(connack.properties.authentication_data, None);
    raw.send(&[0xF0, 0x02, 0x19, 0x00]).await;
    let got = raw.expect_close().await;
    assert_eq!(only_disconnect(&got), ReasonCode::ProtocolError);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4.1 Session state, 4.2 network connections
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn session_is_kept_while_the_connection_is_open() {
    // 5.0 [MQTT-4.1.0-1]: the Session Expiry Interval counts from the close only: a session
    // with a 1 s interval whose connection stays open for longer keeps its subscriptions.
    let broker = TestBroker::start().await;
    let mut o = v5::options(&broker, "open");
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(1));
    let mut c = v5::Client::connect_with(o).await;
    c.subscribe("open/t", v5::QoS::AtLeastOnce).await;
    // The passing of time is what is under test.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut publ = v5::Client::connect(&broker, "open-pub").await;
    publ.publish("open/t", v5::QoS::AtLeastOnce, false, b"still")
        .await;
    assert_eq!(&c.next_publish().await.payload[..], b"still");
    assert_eq!(broker.broker().metrics.sessions_expired.get(), 0);
    assert!(broker.broker().sessions.get("open").is_some());
    broker.stop().await;
}

#[tokio::test]
async fn packets_are_read_from_the_byte_stream_whatever_the_segments() {
    // 5.0 [MQTT-4.2.0-1]: the transport is an ordered stream of bytes: packets split over many
    // segments (one byte each, or cut inside a Remaining Length) or coalesced into one are
    // read the same.
    let broker = TestBroker::start().await;
    for (i, split) in ["bytes", "whole", "cut"].into_iter().enumerate() {
        let id = format!("seg-{i}");
        let topic = format!("seg/{i}");
        let mut bytes = enc(&Packet::Connect(Box::new(conn(&id))));
        let connect_len = bytes.len();
        bytes.extend(sub_packet(1, &[(&topic, qos_opts(QoS::AtLeastOnce))], None));
        let payload = vec![b'p'; 300];
        let publish_at = bytes.len();
        bytes.extend(publish(
            &topic,
            QoS::AtLeastOnce,
            Some(5),
            Default::default(),
            &payload,
        ));
        bytes.extend(PINGREQ);
        let mut raw = Raw::connect(&broker).await;
        raw.version = V5;
        raw.stream.set_nodelay(true).expect("nodelay");
        match split {
            "bytes" => {
                for b in &bytes {
                    raw.send(&[*b]).await;
                }
            }
            "whole" => raw.send(&bytes).await,
            _ => {
                // Inside the CONNECT, then between the two bytes of the PUBLISH's Remaining
                // Length.
                let cuts = [3, connect_len + 1, publish_at + 2, bytes.len()];
                let mut from = 0;
                for to in cuts {
                    raw.send(&bytes[from..to]).await;
                    from = to;
                    tokio::task::yield_now().await;
                }
            }
        }
        assert!(
            matches!(raw.next_packet().await, Packet::Connack(c) if c.reason_code == ReasonCode::Success)
        );
        assert!(matches!(raw.next_packet().await, Packet::Suback(_)));
        let mut puback = false;
        let mut pingresp = false;
        let mut delivered = None;
        for _ in 0..3 {
            match raw.next_packet().await {
                Packet::Puback(a) if a.packet_id == 5 => puback = true,
                Packet::Pingresp => pingresp = true,
                Packet::Publish(p) => delivered = Some(p.payload.len()),
                other => panic!("{split}: unexpected {other:?}"),
            }
        }
        assert!(puback && pingresp, "{split}");
        assert_eq!(delivered, Some(300), "{split}");
    }
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4.3 QoS flows, 4.4 retry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn qos1_packet_identifier_reused_after_puback_is_a_new_message() {
    // 5.0 [MQTT-4.3.2-5]: once the server sent PUBACK, a PUBLISH with the same Packet
    // Identifier is a new message, whatever its DUP flag.
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect(&broker, "reuse1-sub").await;
    sub.subscribe("reuse1/t", v5::QoS::AtLeastOnce).await;
    let (mut raw, _) = accepted(&broker, conn("reuse1")).await;
    for (dup, payload) in [(false, &b"first"[..]), (true, b"second"), (false, b"third")] {
        raw.send(&enc(&Packet::Publish(proto::Publish {
            dup,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteString::from("reuse1/t"),
            packet_id: Some(42),
            properties: Default::default(),
            payload: Bytes::copy_from_slice(payload),
        })))
        .await;
        assert!(matches!(raw.next_packet().await, Packet::Puback(a) if a.packet_id == 42));
    }
    for expected in [&b"first"[..], b"second", b"third"] {
        assert_eq!(&sub.next_publish().await.payload[..], expected);
    }
    broker.stop().await;
}

#[tokio::test]
async fn qos2_packet_identifier_reused_after_pubcomp_or_error_pubrec_is_a_new_message() {
    // 5.0 [MQTT-4.3.3-12]: after PUBCOMP, a PUBLISH with the same Packet Identifier is a new
    // message; [MQTT-4.3.3-9] so is one after a PUBREC with an error reason code (0x99 here:
    // a payload that says UTF-8 and is not).
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect(&broker, "reuse2-sub").await;
    sub.subscribe("reuse2/t", v5::QoS::ExactlyOnce).await;
    let (mut raw, _) = accepted(&broker, conn("reuse2")).await;
    let q2 = |props: proto::PublishProperties, payload: &[u8]| {
        publish("reuse2/t", QoS::ExactlyOnce, Some(9), props, payload)
    };
    raw.send(&q2(Default::default(), b"one")).await;
    assert!(
        matches!(raw.next_packet().await, Packet::Pubrec(a) if a.packet_id == 9 && !a.reason_code.is_error())
    );
    raw.send(&ack(Packet::Pubrel(proto::PubAck::new(9)))).await;
    assert!(
        matches!(raw.next_packet().await, Packet::Pubcomp(a) if a.reason_code == ReasonCode::Success)
    );
    raw.send(&q2(Default::default(), b"two")).await;
    assert!(matches!(raw.next_packet().await, Packet::Pubrec(a) if !a.reason_code.is_error()));
    raw.send(&ack(Packet::Pubrel(proto::PubAck::new(9)))).await;
    assert!(matches!(raw.next_packet().await, Packet::Pubcomp(_)));

    let pfi = proto::PublishProperties {
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    raw.send(&q2(pfi, b"\xFF")).await;
    assert!(
        matches!(raw.next_packet().await, Packet::Pubrec(a) if a.reason_code == ReasonCode::PayloadFormatInvalid)
    );
    raw.send(&q2(Default::default(), b"three")).await;
    assert!(matches!(raw.next_packet().await, Packet::Pubrec(a) if !a.reason_code.is_error()));
    raw.send(&ack(Packet::Pubrel(proto::PubAck::new(9)))).await;
    assert!(
        matches!(raw.next_packet().await, Packet::Pubcomp(a) if a.reason_code == ReasonCode::Success)
    );
    for expected in [&b"one"[..], b"two", b"three"] {
        assert_eq!(&sub.next_publish().await.payload[..], expected);
    }
    assert!(sync5(&mut sub).await.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn a_sent_publish_is_not_expired() {
    // 5.0 [MQTT-4.3.3-7]: once a PUBLISH was sent the server applies no Message Expiry to it: a
    // QoS 2 (and a QoS 1) message whose expiry passes while unacknowledged is still resent
    // when the session resumes, and its QoS 2 exchange completes.
    let broker = TestBroker::start().await;
    let (mut sub, _) = accepted(&broker, persistent("sent-exp", true)).await;
    subscribe(&mut sub, "se/t", QoS::ExactlyOnce).await;
    let mut publ = v5::Client::connect(&broker, "sent-exp-pub").await;
    let props = v5::PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    for qos in [v5::QoS::ExactlyOnce, v5::QoS::AtLeastOnce] {
        publ.publish_with("se/t", qos, false, b"short", props.clone())
            .await;
    }
    let first = [next_publish(&mut sub).await, next_publish(&mut sub).await];
    drop(sub);
    // Let the 1 s expiry run out while both are unacknowledged.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut sub, connack) = accepted(&broker, persistent("sent-exp", false)).await;
    assert!(connack.session_present);
    for original in &first {
        let p = next_publish(&mut sub).await;
        assert!(p.dup);
        assert_eq!((p.packet_id, p.qos), (original.packet_id, original.qos));
        assert_eq!(&p.payload[..], b"short");
    }
    let id = first[0].packet_id.expect("id");
    sub.send(&ack(Packet::Pubrec(proto::PubAck::new(id)))).await;
    assert!(matches!(sub.next_packet().await, Packet::Pubrel(r) if r.packet_id == id));
    sub.send(&ack(Packet::Pubcomp(proto::PubAck::new(id))))
        .await;
    assert_eq!(broker.broker().metrics.dropped.expired.get(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn qos2_handshake_completes_after_the_message_expired() {
    // 5.0 [MQTT-4.3.3-13]: the server, as receiver, completes the QoS 2 exchange of a message
    // whose Message Expiry Interval has passed: PUBREL gets PUBCOMP 0x00.
    let broker = TestBroker::start().await;
    let (mut raw, _) = accepted(&broker, conn("exp-q2")).await;
    let props = proto::PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    raw.send(&publish("eq/t", QoS::ExactlyOnce, Some(3), props, b"x"))
        .await;
    assert!(matches!(raw.next_packet().await, Packet::Pubrec(a) if a.packet_id == 3));
    // The passing of time is what is under test.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    raw.send(&ack(Packet::Pubrel(proto::PubAck::new(3)))).await;
    match raw.next_packet().await {
        Packet::Pubcomp(a) => {
            assert_eq!(a.packet_id, 3);
            assert_eq!(a.reason_code, ReasonCode::Success);
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn nothing_is_resent_while_the_connection_lasts() {
    // 5.0 [MQTT-4.4.0-1]: unacknowledged messages are resent when a session resumes and at no
    // other time: a QoS 1 and a QoS 2 PUBLISH left unacknowledged for a second are not sent
    // again on the same connection (there is no retry timer).
    let broker = TestBroker::start().await;
    let (mut raw, _) = accepted(&broker, conn("no-retry")).await;
    subscribe(&mut raw, "nr/t", QoS::ExactlyOnce).await;
    let mut publ = v5::Client::connect(&broker, "no-retry-pub").await;
    publ.publish("nr/t", v5::QoS::AtLeastOnce, false, b"1")
        .await;
    publ.publish("nr/t", v5::QoS::ExactlyOnce, false, b"2")
        .await;
    next_publish(&mut raw).await;
    let two = next_publish(&mut raw).await;
    raw.send(&ack(Packet::Pubrec(proto::PubAck::new(
        two.packet_id.expect("id"),
    ))))
    .await;
    assert!(matches!(raw.next_packet().await, Packet::Pubrel(_)));
    // The passing of time is what is under test.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    nothing_before_pingresp(&mut raw, "a resend within the connection").await;
    broker.stop().await;
}

#[tokio::test]
async fn error_acknowledgements_are_final() {
    // 5.0 [MQTT-4.4.0-2]: a PUBACK or PUBREC with a reason code of 0x80 or more acknowledges
    // the PUBLISH: no PUBREL follows the PUBREC, and neither message is resent when the
    // session resumes.
    let broker = TestBroker::start().await;
    let (mut raw, _) = accepted(&broker, persistent("final", true)).await;
    subscribe(&mut raw, "final/t", QoS::ExactlyOnce).await;
    let mut publ = v5::Client::connect(&broker, "final-pub").await;
    publ.publish("final/t", v5::QoS::AtLeastOnce, false, b"1")
        .await;
    publ.publish("final/t", v5::QoS::ExactlyOnce, false, b"2")
        .await;
    let one = next_publish(&mut raw).await;
    let two = next_publish(&mut raw).await;
    raw.send(&ack(Packet::Puback(proto::PubAck::with_reason(
        one.packet_id.expect("id"),
        ReasonCode::UnspecifiedError,
    ))))
    .await;
    raw.send(&ack(Packet::Pubrec(proto::PubAck::with_reason(
        two.packet_id.expect("id"),
        ReasonCode::ImplementationSpecificError,
    ))))
    .await;
    nothing_before_pingresp(&mut raw, "no PUBREL after an error PUBREC").await;
    drop(raw);
    eventually("offline", || {
        broker
            .broker()
            .sessions
            .get("final")
            .is_some_and(|s| !s.is_online())
    })
    .await;
    let (mut raw, connack) = accepted(&broker, persistent("final", false)).await;
    assert!(connack.session_present);
    nothing_before_pingresp(&mut raw, "a resend of an acknowledged message").await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4.7 Topics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn topic_name_must_be_present_and_not_empty() {
    // 5.0 [MQTT-4.7.3-1]: a Topic Name is at least one character: an empty one without a Topic
    // Alias is a Protocol Error (0x82); [MQTT-3.3.2-1] a PUBLISH without its Topic Name field is
    // malformed (0x81).
    let broker = TestBroker::start().await;
    let before = errors(&broker);
    send_bad(
        &broker,
        V5,
        "empty-topic",
        &edge::publish(V5, 1, false, b"", Some(1), &[], b"x"),
        ReasonCode::ProtocolError,
    )
    .await;
    expect_errors(&broker, before, 0, 1).await;
    for (i, bytes) in [vec![0x30, 0x00], vec![0x30, 0x01, 0x00]]
        .into_iter()
        .enumerate()
    {
        let before = errors(&broker);
        send_bad(
            &broker,
            V5,
            &format!("no-topic-{i}"),
            &bytes,
            ReasonCode::MalformedPacket,
        )
        .await;
        expect_errors(&broker, before, 1, 0).await;
    }
    assert_eq!(broker.broker().metrics.messages_received.get(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn longest_topic_name_and_filter_are_accepted() {
    // 5.0 [MQTT-4.7.3-3]: a Topic Name or Filter encodes to at most 65,535 bytes, and one of
    // exactly that length works: subscribed to, published to and delivered whole.
    let broker = TestBroker::start().await;
    let topic = format!("long/{}", "x".repeat(65_535 - 5));
    assert_eq!(topic.len(), 65_535);
    let (mut sub, _) = accepted(&broker, conn("long-sub")).await;
    subscribe(&mut sub, &topic, QoS::AtLeastOnce).await;
    let (mut publ, _) = accepted(&broker, conn("long-pub")).await;
    publ.send(&publish(
        &topic,
        QoS::AtLeastOnce,
        Some(1),
        Default::default(),
        b"x",
    ))
    .await;
    assert!(
        matches!(publ.next_packet().await, Packet::Puback(a) if a.reason_code == ReasonCode::Success)
    );
    let p = next_publish(&mut sub).await;
    assert_eq!(p.topic.len(), 65_535);
    assert_eq!(&*p.topic, topic.as_str());
    broker.stop().await;
}

#[tokio::test]
async fn topics_are_matched_without_normalisation() {
    // 5.0 [MQTT-4.7.3-4]: no normalisation of topics or filters: case, Unicode composition,
    // full-width forms, spaces and empty levels all make different topics.
    let broker = TestBroker::start().await;
    let mut c = v5::Client::connect(&broker, "norm").await;
    let nfc = "caf\u{e9}/x";
    let nfd = "cafe\u{301}/x";
    for f in ["a/b", nfc] {
        c.subscribe(f, v5::QoS::AtLeastOnce).await;
    }
    let mut publ = v5::Client::connect(&broker, "norm-pub").await;
    for t in [
        "A/b",
        "a/B",
        "a/b/",
        "/a/b",
        "a//b",
        "a /b",
        "a/b ",
        "\u{FF41}/b",
        nfd,
        "CAF\u{C9}/x",
    ] {
        publ.publish(t, v5::QoS::AtLeastOnce, false, t.as_bytes())
            .await;
    }
    publ.publish(nfc, v5::QoS::AtLeastOnce, false, b"nfc").await;
    publ.publish("a/b", v5::QoS::AtLeastOnce, false, b"exact")
        .await;
    let p = c.next_publish().await;
    assert_eq!((topic_of(&p).as_str(), &p.payload[..]), (nfc, &b"nfc"[..]));
    let p = c.next_publish().await;
    assert_eq!(
        (topic_of(&p).as_str(), &p.payload[..]),
        ("a/b", &b"exact"[..])
    );
    assert!(sync5(&mut c).await.is_empty());
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4.8 Shared subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn shared_subscription_delivers_at_the_granted_qos() {
    // 5.0 [MQTT-4.8.2-3]: a message sent through a shared subscription respects the QoS granted
    // to that member: QoS 2 published, delivered at 0, 1 and 2 to the members of three groups.
    let broker = TestBroker::start().await;
    let mut members = Vec::new();
    for (g, qos) in [
        ("g0", v5::QoS::AtMostOnce),
        ("g1", v5::QoS::AtLeastOnce),
        ("g2", v5::QoS::ExactlyOnce),
    ] {
        let mut m = v5::Client::connect(&broker, &format!("sq-{g}")).await;
        m.subscribe(&format!("$share/{g}/sq/t"), qos).await;
        members.push((m, qos));
    }
    let mut publ = v5::Client::connect(&broker, "sq-pub").await;
    publ.publish("sq/t", v5::QoS::ExactlyOnce, false, b"x")
        .await;
    for (m, qos) in &mut members {
        let p = m.next_publish().await;
        assert_eq!(p.qos, *qos);
    }
    broker.stop().await;
}

#[tokio::test]
async fn shared_qos2_delivery_resumes_with_the_same_member() {
    // 5.0 [MQTT-4.8.2-4]: a QoS 2 message whose delivery to the chosen member broke off with
    // its connection is completed with that member when it reconnects, not given to another.
    let broker = TestBroker::start().await;
    let (mut a, _) = accepted(&broker, persistent("sh-a", true)).await;
    subscribe(&mut a, "$share/g/sh/t", QoS::ExactlyOnce).await;
    let mut b = v5::Client::connect(&broker, "sh-b").await;
    b.subscribe("$share/g/sh/t", v5::QoS::ExactlyOnce).await;
    let mut publ = v5::Client::connect(&broker, "sh-pub").await;
    publ.publish("sh/t", v5::QoS::ExactlyOnce, false, b"0")
        .await;
    publ.publish("sh/t", v5::QoS::ExactlyOnce, false, b"1")
        .await;
    let first = next_publish(&mut a).await;
    drop(a);
    eventually("member offline", || {
        broker
            .broker()
            .sessions
            .get("sh-a")
            .is_some_and(|s| !s.is_online())
    })
    .await;
    let b_got = sync5(&mut b).await;
    assert_eq!(b_got.len(), 1, "only b's own message: {b_got:?}");
    assert_ne!(b_got[0].payload, first.payload);

    let (mut a, connack) = accepted(&broker, persistent("sh-a", false)).await;
    assert!(connack.session_present);
    let again = next_publish(&mut a).await;
    assert!(again.dup);
    assert_eq!(
        (again.packet_id, &again.payload[..]),
        (first.packet_id, &first.payload[..])
    );
    let id = again.packet_id.expect("id");
    a.send(&ack(Packet::Pubrec(proto::PubAck::new(id)))).await;
    assert!(matches!(a.next_packet().await, Packet::Pubrel(r) if r.packet_id == id));
    a.send(&ack(Packet::Pubcomp(proto::PubAck::new(id)))).await;
    nothing_before_pingresp(&mut a, "nothing else for a").await;
    assert!(sync5(&mut b).await.is_empty(), "b never gets a's message");
    broker.stop().await;
}

#[tokio::test]
async fn shared_message_refused_with_an_error_pubrec_is_not_sent_to_another_member() {
    // 5.0 [MQTT-4.8.2-6]: a PUBREC with a reason code of 0x80 or more from the chosen member
    // discards the message: no PUBREL, and no other member gets it, even when the refusing
    // member's session ends. (The PUBACK case is
    // tests/shared.rs::a_message_refused_by_its_member_is_not_sent_to_another.)
    let broker = TestBroker::start().await;
    let (mut a, _) = accepted(&broker, conn("rej-a")).await;
    subscribe(&mut a, "$share/g/rej/t", QoS::ExactlyOnce).await;
    let mut b = v5::Client::connect(&broker, "rej-b").await;
    b.subscribe("$share/g/rej/t", v5::QoS::ExactlyOnce).await;
    let mut publ = v5::Client::connect(&broker, "rej-pub").await;
    publ.publish("rej/t", v5::QoS::ExactlyOnce, false, b"0")
        .await;
    publ.publish("rej/t", v5::QoS::ExactlyOnce, false, b"1")
        .await;
    let refused = next_publish(&mut a).await;
    a.send(&ack(Packet::Pubrec(proto::PubAck::with_reason(
        refused.packet_id.expect("id"),
        ReasonCode::UnspecifiedError,
    ))))
    .await;
    nothing_before_pingresp(&mut a, "no PUBREL").await;
    a.send(&enc(&Packet::Disconnect(proto::Disconnect::new(
        ReasonCode::Success,
    ))))
    .await;
    a.expect_close().await;
    eventually("a's session ended", || {
        broker.broker().sessions.get("rej-a").is_none()
    })
    .await;
    let b_got = sync5(&mut b).await;
    assert_eq!(b_got.len(), 1, "only b's own message: {b_got:?}");
    assert_ne!(b_got[0].payload, refused.payload);
    broker.stop().await;
}
