//! MQTT 5.0 features: message expiry, topic aliases, flow control (Receive Maximum), Maximum
//! Packet Size, subscription options and identifiers, forwarded properties, request/response,
//! Server Keep Alive, reason codes and the capabilities advertised in CONNACK.
//!
//! rumqttc v5 is the client wherever it can send what the test needs. Raw bytes (encoded with
//! the broker's codec, decoded likewise) are used for what rumqttc refuses to send (an alias
//! above the broker's maximum, an oversized packet, too many unreleased QoS 2 messages) and to
//! read the DISCONNECT a broker sends: rumqttc 0.25 turns a server DISCONNECT into an event-loop
//! error and leaves the packet itself in its internal queue, so the harness never sees it.

mod common;

use std::time::Duration;

use beamq_actors::config::{ByteSize, DurationStr};
use beamq_protocol::{self as proto, ByteString, BytesMut, ProtocolVersion, ReasonCode, codec};
use bytes::Bytes;
use common::*;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PubRecReason, UnsubAckReason};
use v5::{
    Filter, PublishProperties, QoS, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Encodes a client packet for the wire (v5).
fn wire(p: &proto::Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    codec::encode(p, ProtocolVersion::V5, &mut b).expect("encodable packet");
    b.to_vec()
}

/// A raw v5 connection (Clean Start 1) with the given CONNECT properties; returns it with the
/// CONNACK.
async fn raw5(
    broker: &TestBroker,
    id: &str,
    properties: proto::ConnectProperties,
) -> (Raw, proto::Connack) {
    raw5_connect(broker, id, true, properties).await
}

async fn raw5_connect(
    broker: &TestBroker,
    id: &str,
    clean_start: bool,
    properties: proto::ConnectProperties,
) -> (Raw, proto::Connack) {
    let mut raw = Raw::connect(broker).await;
    raw.version = ProtocolVersion::V5;
    let connect = proto::Connect {
        protocol: ProtocolVersion::V5,
        clean_start,
        keep_alive: 60,
        client_id: ByteString::from(id),
        will: None,
        username: None,
        password: None,
        properties,
    };
    raw.send(&wire(&proto::Packet::Connect(Box::new(connect))))
        .await;
    match raw.recv().await {
        Some(proto::Packet::Connack(c)) => {
            assert_eq!(c.reason_code, ReasonCode::Success, "CONNACK");
            (raw, c)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A client PUBLISH.
fn raw_publish(
    topic: &str,
    qos: proto::QoS,
    packet_id: Option<u16>,
    properties: proto::PublishProperties,
    payload: &[u8],
) -> Vec<u8> {
    wire(&proto::Packet::Publish(proto::Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id,
        properties,
        payload: Bytes::copy_from_slice(payload),
    }))
}

/// A PUBLISH property set with only a Topic Alias.
fn alias(n: u16) -> proto::PublishProperties {
    proto::PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    }
}

/// Reads until the broker closes the connection; returns the DISCONNECT it sent before.
async fn expect_disconnect(raw: &mut Raw) -> proto::Disconnect {
    let got = raw.expect_close().await;
    got.into_iter()
        .rev()
        .find_map(|p| match p {
            proto::Packet::Disconnect(d) => Some(d),
            _ => None,
        })
        .expect("a DISCONNECT before the close")
}

/// Round trip on `c`'s connection: a SUBSCRIBE to an unused filter, returning every PUBLISH that
/// arrived before its SUBACK. The broker handles a client's deliveries and packets in mailbox
/// order, so anything it would send for messages routed before this call is in the result: an
/// empty result proves that nothing more is coming for them.
async fn sync(c: &mut v5::Client) -> Vec<v5::Publish> {
    c.client
        .subscribe("sync/none", QoS::AtMostOnce)
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

fn props(p: &v5::Publish) -> PublishProperties {
    p.properties.clone().unwrap_or_default()
}

fn topic(p: &v5::Publish) -> &str {
    std::str::from_utf8(&p.topic).expect("UTF-8 topic")
}

fn payloads(ps: &[v5::Publish]) -> Vec<Vec<u8>> {
    ps.iter().map(|p| p.payload.to_vec()).collect()
}

fn persistent(broker: &TestBroker, id: &str) -> v5::MqttOptions {
    let mut o = v5::options(broker, id);
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(60));
    o
}

// ---------------------------------------------------------------------------------------------
// Message Expiry Interval
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn message_expiry_is_forwarded_minus_the_time_it_waited() {
    // [MQTT-3.3.2-6] the forwarded Message Expiry Interval is the received value minus the time
    // the message waited in the broker.
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect_with(persistent(&broker, "exp-sub")).await;
    sub.subscribe("exp/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    eventually("subscriber offline", || {
        broker.broker().metrics.connections.get() == 0
    })
    .await;

    let mut publ = v5::Client::connect(&broker, "exp-pub").await;
    let p = PublishProperties {
        message_expiry_interval: Some(3),
        ..Default::default()
    };
    publ.publish_with("exp/t", QoS::AtLeastOnce, false, b"m", p)
        .await;
    // The passing of time is what is under test here, not a synchronisation.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut sub = v5::Client::connect_with(persistent(&broker, "exp-sub")).await;
    assert!(sub.connack.session_present);
    let got = sub.next_publish().await;
    assert_eq!(&got.payload[..], b"m");
    let left = props(&got)
        .message_expiry_interval
        .expect("Message Expiry Interval forwarded");
    assert!(
        (1..3).contains(&left),
        "expiry must be decremented by the >1 s wait, got {left}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn expired_queued_message_is_not_delivered_and_counted() {
    // [MQTT-3.3.2-5] a message whose expiry passed before onward delivery started is deleted
    // for that subscriber; the drop is counted as `expired`.
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect_with(persistent(&broker, "exp2-sub")).await;
    sub.subscribe("exp2/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    eventually("subscriber offline", || {
        broker.broker().metrics.connections.get() == 0
    })
    .await;

    let mut publ = v5::Client::connect(&broker, "exp2-pub").await;
    let p = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    publ.publish_with("exp2/t", QoS::AtLeastOnce, false, b"expires", p)
        .await;
    publ.publish("exp2/t", QoS::AtLeastOnce, false, b"stays")
        .await;
    // Let the first message's 1 s expiry run out while it is queued.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let mut sub = v5::Client::connect_with(persistent(&broker, "exp2-sub")).await;
    let got = sub.next_publish().await;
    assert_eq!(
        &got.payload[..],
        b"stays",
        "the expired message is not sent"
    );
    assert_eq!(props(&got).message_expiry_interval, None);
    eventually("expired drop counted", || {
        broker.broker().metrics.dropped.expired.get() == 1
    })
    .await;
    assert!(sync(&mut sub).await.is_empty());
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Topic aliases
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn topic_alias_from_client_is_resolved_for_subscribers() {
    // [MQTT-3.3.2-12] the server accepts every alias up to its Topic Alias Maximum; an alias may
    // be re-bound by a PUBLISH that carries both topic and alias. Subscribers get the real
    // topic, and no alias since they allowed none [MQTT-3.1.2-27].
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect(&broker, "alias-sub").await;
    sub.subscribe("alias/#", QoS::AtLeastOnce).await;
    let mut publ = v5::Client::connect(&broker, "alias-pub").await;
    let advertised = publ
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.topic_alias_max);
    assert_eq!(advertised, Some(65535));
    let with_alias = |n| PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    };
    publ.publish_with("alias/t", QoS::AtLeastOnce, false, b"1", with_alias(1))
        .await;
    publ.publish_with("", QoS::AtLeastOnce, false, b"2", with_alias(1))
        .await;
    publ.publish_with("alias/u", QoS::AtLeastOnce, false, b"3", with_alias(1))
        .await;
    publ.publish_with("", QoS::AtLeastOnce, false, b"4", with_alias(1))
        .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let p = sub.next_publish().await;
        assert_eq!(props(&p).topic_alias, None, "[MQTT-3.1.2-27]");
        got.push((topic(&p).to_string(), p.payload.to_vec()));
    }
    assert_eq!(
        got,
        vec![
            ("alias/t".to_string(), b"1".to_vec()),
            ("alias/t".to_string(), b"2".to_vec()),
            ("alias/u".to_string(), b"3".to_vec()),
            ("alias/u".to_string(), b"4".to_vec()),
        ]
    );
    broker.stop().await;
}

#[tokio::test]
async fn topic_alias_above_maximum_is_disconnect_0x94_with_reason_string() {
    // [MQTT-3.2.2-17] [MQTT-3.3.2-9]: a client alias above the broker's Topic Alias Maximum is
    // answered with DISCONNECT 0x94 [MQTT-4.13.1-1], which carries a Reason String.
    let broker = TestBroker::start_with(|c| c.mqtt.max_topic_alias = 2).await;
    let (mut raw, connack) = raw5(&broker, "alias-max", Default::default()).await;
    assert_eq!(connack.properties.topic_alias_maximum, Some(2));
    raw.send(&raw_publish(
        "a/b",
        proto::QoS::AtMostOnce,
        None,
        alias(2),
        b"ok",
    ))
    .await;
    raw.send(&raw_publish(
        "a/b",
        proto::QoS::AtMostOnce,
        None,
        alias(3),
        b"x",
    ))
    .await;
    let d = expect_disconnect(&mut raw).await;
    assert_eq!(d.reason_code, ReasonCode::TopicAliasInvalid);
    let why = d.properties.reason_string.expect("a reason string");
    assert!(!why.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn topic_aliases_disabled_are_not_advertised_and_refused() {
    // With mqtt.max_topic_alias = 0 the CONNACK has no Topic Alias Maximum (absent = 0) and
    // any alias is above it [MQTT-3.2.2-18].
    let broker = TestBroker::start_with(|c| c.mqtt.max_topic_alias = 0).await;
    let (mut raw, connack) = raw5(&broker, "alias-off", Default::default()).await;
    assert_eq!(connack.properties.topic_alias_maximum, None);
    raw.send(&raw_publish(
        "a/b",
        proto::QoS::AtMostOnce,
        None,
        alias(1),
        b"x",
    ))
    .await;
    let d = expect_disconnect(&mut raw).await;
    assert_eq!(d.reason_code, ReasonCode::TopicAliasInvalid);
    broker.stop().await;
}

#[tokio::test]
async fn unknown_topic_alias_with_empty_topic_is_protocol_error() {
    // v5 §3.3.2.3.4: an empty Topic Name with an alias the receiver has no mapping for is a
    // Protocol Error: DISCONNECT 0x82 [MQTT-4.13.1-1].
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw5(&broker, "alias-unknown", Default::default()).await;
    raw.send(&raw_publish(
        "",
        proto::QoS::AtLeastOnce,
        Some(1),
        alias(7),
        b"x",
    ))
    .await;
    let d = expect_disconnect(&mut raw).await;
    assert_eq!(d.reason_code, ReasonCode::ProtocolError);
    assert!(d.properties.reason_string.is_some());
    assert_eq!(broker.broker().metrics.protocol_errors.get(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn topic_alias_mappings_do_not_survive_the_connection() {
    // [MQTT-3.3.2-7] a receiver does not carry alias mappings from one connection to the next,
    // even when the session continues.
    let broker = TestBroker::start().await;
    let props = proto::ConnectProperties {
        session_expiry_interval: Some(60),
        ..Default::default()
    };
    let (mut raw, _) = raw5(&broker, "alias-conn", props.clone()).await;
    raw.send(&raw_publish(
        "a/b",
        proto::QoS::AtLeastOnce,
        Some(1),
        alias(1),
        b"bind",
    ))
    .await;
    match raw.recv().await {
        Some(proto::Packet::Puback(a)) => assert_eq!(a.packet_id, 1),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    raw.send(&wire(&proto::Packet::Disconnect(proto::Disconnect::new(
        ReasonCode::Success,
    ))))
    .await;
    raw.expect_close().await;

    let (mut raw, connack) = raw5_connect(&broker, "alias-conn", false, props).await;
    assert!(connack.session_present, "the session continued");
    raw.send(&raw_publish(
        "",
        proto::QoS::AtLeastOnce,
        Some(2),
        alias(1),
        b"x",
    ))
    .await;
    let d = expect_disconnect(&mut raw).await;
    assert_eq!(d.reason_code, ReasonCode::ProtocolError);
    broker.stop().await;
}

#[tokio::test]
async fn broker_uses_topic_aliases_towards_a_client_that_allows_them() {
    // v5 §3.3.2.3.4: the broker sends the first PUBLISH on a topic with topic and alias, later
    // ones with the alias alone; never an alias above the client's maximum [MQTT-3.3.2-11,
    // MQTT-3.1.2-26]; none at all to a client that allowed none [MQTT-3.1.2-27].
    // rumqttc 0.25 reports an incoming PUBLISH as it was on the wire (it resolves the alias
    // only in its own state afterwards), so the wire form is visible here; the test also
    // resolves aliases itself and checks the topics that result.
    let broker = TestBroker::start().await;
    let mut o = v5::options(&broker, "sa-sub");
    o.set_topic_alias_max(Some(2));
    let mut sub = v5::Client::connect_with(o).await;
    sub.subscribe("sa/#", QoS::AtLeastOnce).await;
    let mut plain = v5::Client::connect(&broker, "sa-plain").await;
    plain.subscribe("sa/#", QoS::AtLeastOnce).await;

    let mut publ = v5::Client::connect(&broker, "sa-pub").await;
    let topics = ["sa/a", "sa/a", "sa/b", "sa/c", "sa/a", "sa/b", "sa/c"];
    for (i, t) in topics.iter().enumerate() {
        publ.publish(t, QoS::AtLeastOnce, false, &[i as u8]).await;
    }

    let expected_wire: [(&str, Option<u16>); 7] = [
        ("sa/a", Some(1)),
        ("", Some(1)),
        ("sa/b", Some(2)),
        // The client allows two aliases: a third topic goes without one.
        ("sa/c", None),
        ("", Some(1)),
        ("", Some(2)),
        ("sa/c", None),
    ];
    let mut map = std::collections::HashMap::new();
    for (i, (wire_topic, wire_alias)) in expected_wire.iter().enumerate() {
        let p = sub.next_publish().await;
        let a = props(&p).topic_alias;
        assert_eq!((topic(&p), a), (*wire_topic, *wire_alias), "PUBLISH #{i}");
        assert!(a.is_none_or(|a| (1..=2).contains(&a)));
        let resolved = match (topic(&p), a) {
            (t, Some(a)) if !t.is_empty() => {
                map.insert(a, t.to_string());
                t.to_string()
            }
            (_, Some(a)) => map.get(&a).cloned().expect("alias bound earlier"),
            (t, None) => t.to_string(),
        };
        assert_eq!(resolved, topics[i]);
        assert_eq!(&p.payload[..], &[i as u8]);
    }
    for (i, t) in topics.iter().enumerate() {
        let p = plain.next_publish().await;
        assert_eq!(topic(&p), *t, "#{i}");
        assert_eq!(props(&p).topic_alias, None, "[MQTT-3.1.2-27]");
    }
    broker.stop().await;
}

#[tokio::test]
async fn a_discarded_publish_binds_no_topic_alias() {
    // A PUBLISH the broker discards as larger than the client's Maximum Packet Size
    // [MQTT-3.1.2-25] never told the client an alias, so the next PUBLISH on that topic must
    // carry the topic name again (v5 §3.3.2.3.4: an alias the receiver has no mapping for is a
    // Protocol Error). Regression: the alias used to be bound before the size check.
    let broker = TestBroker::start().await;
    let mut o = v5::options(&broker, "ta-small");
    o.set_topic_alias_max(Some(5))
        .set_max_packet_size(Some(200));
    let mut sub = v5::Client::connect_with(o).await;
    sub.subscribe("ta/t", QoS::AtMostOnce).await;
    let mut publ = v5::Client::connect(&broker, "ta-pub").await;
    publ.publish("ta/t", QoS::AtLeastOnce, false, &[0u8; 500])
        .await;
    publ.publish("ta/t", QoS::AtLeastOnce, false, b"small")
        .await;
    publ.publish("ta/t", QoS::AtLeastOnce, false, b"again")
        .await;
    let p = sub.next_publish().await;
    assert_eq!(&p.payload[..], b"small");
    assert_eq!((topic(&p), props(&p).topic_alias), ("ta/t", Some(1)));
    let p = sub.next_publish().await;
    assert_eq!((topic(&p), props(&p).topic_alias), ("", Some(1)));
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Receive Maximum
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn broker_never_exceeds_the_client_receive_maximum() {
    // [MQTT-3.3.4-9] at most Receive Maximum unacknowledged QoS 1/2 PUBLISH towards the client;
    // [MQTT-3.3.4-10] other packets (the SUBACK of the sync round trip) are not held back.
    let broker = TestBroker::start().await;
    let mut o = v5::options(&broker, "rm-sub");
    o.set_receive_maximum(Some(3)).set_manual_acks(true);
    let mut sub = v5::Client::connect_with(o).await;
    sub.subscribe("rm/t", QoS::ExactlyOnce).await;
    let mut publ = v5::Client::connect(&broker, "rm-pub").await;
    for i in 0..10u8 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publ.publish("rm/t", qos, false, &[i]).await;
    }

    let mut received = sync(&mut sub).await;
    assert_eq!(payloads(&received), vec![vec![0], vec![1], vec![2]]);
    let mut acked = 0;
    while received.len() < 10 {
        // One acknowledgement frees one slot: exactly one more PUBLISH follows. A QoS 2 message
        // holds its slot until PUBCOMP; rumqttc answers the PUBREL itself.
        // For QoS 2 the slot is freed by the PUBCOMP that rumqttc sends when the PUBREL comes,
        // which may be after the sync's SUBSCRIBE: sync until the one message arrives.
        sub.client.ack(&received[acked]).await.expect("queue ack");
        acked += 1;
        let mut more = Vec::new();
        for _ in 0..100 {
            more.extend(sync(&mut sub).await);
            if !more.is_empty() {
                break;
            }
        }
        assert_eq!(more.len(), 1, "after {acked} acks");
        received.extend(more);
        assert!(received.len() - acked <= 3);
    }
    assert!(sync(&mut sub).await.is_empty());
    let expected: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    assert_eq!(payloads(&received), expected);
    broker.stop().await;
}

#[tokio::test]
async fn pubrec_with_an_error_frees_the_window_slot() {
    // [MQTT-3.3.4-9] counts PUBLISH packets without PUBACK, PUBCOMP, or PUBREC with a Reason
    // Code of 128 or greater: a failed PUBREC ends the QoS 2 exchange (no PUBREL, v5 §4.3.3) and
    // frees its slot. Raw: rumqttc cannot send an error PUBREC.
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw5(
        &broker,
        "rm-err",
        proto::ConnectProperties {
            receive_maximum: Some(1),
            ..Default::default()
        },
    )
    .await;
    raw.send(&wire(&proto::Packet::Subscribe(proto::Subscribe {
        packet_id: 1,
        filters: vec![(
            ByteString::from("rm/err"),
            proto::SubscriptionOptions {
                qos: proto::QoS::ExactlyOnce,
                ..Default::default()
            },
        )],
        properties: Default::default(),
    })))
    .await;
    assert!(matches!(raw.recv().await, Some(proto::Packet::Suback(_))));
    let mut publ = v5::Client::connect(&broker, "rm-err-pub").await;
    publ.publish("rm/err", QoS::ExactlyOnce, false, b"1").await;
    publ.publish("rm/err", QoS::ExactlyOnce, false, b"2").await;

    let first = match raw.recv().await {
        Some(proto::Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    assert_eq!(&first.payload[..], b"1");
    let id = first.packet_id.expect("QoS 2 packet id");
    raw.send(&wire(&proto::Packet::Pubrec(proto::PubAck::with_reason(
        id,
        ReasonCode::UnspecifiedError,
    ))))
    .await;
    // The slot is free: the second message comes, and no PUBREL for the first.
    match raw.recv().await {
        Some(proto::Packet::Publish(p)) => assert_eq!(&p.payload[..], b"2"),
        other => panic!("expected the second PUBLISH, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn client_exceeding_broker_receive_maximum_with_qos2_gets_0x93() {
    // The broker advertises mqtt.receive_maximum; a client with more unreleased QoS 2 messages
    // than that is disconnected with 0x93 (v5 §3.3.4, [MQTT-3.3.4-7] on the client).
    let broker = TestBroker::start_with(|c| c.mqtt.receive_maximum = 2).await;
    let (mut raw, connack) = raw5(&broker, "rm-in", Default::default()).await;
    assert_eq!(connack.properties.receive_maximum, Some(2));
    let q2 = |id| {
        raw_publish(
            "rm/in",
            proto::QoS::ExactlyOnce,
            Some(id),
            Default::default(),
            b"x",
        )
    };
    raw.send(&q2(1)).await;
    raw.send(&q2(2)).await;
    for id in [1, 2] {
        match raw.recv().await {
            Some(proto::Packet::Pubrec(a)) => assert_eq!(a.packet_id, id),
            other => panic!("expected PUBREC {id}, got {other:?}"),
        }
    }
    // Releasing one frees a slot.
    raw.send(&wire(&proto::Packet::Pubrel(proto::PubAck::new(1))))
        .await;
    match raw.recv().await {
        Some(proto::Packet::Pubcomp(a)) => assert_eq!(a.packet_id, 1),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    raw.send(&q2(3)).await;
    match raw.recv().await {
        Some(proto::Packet::Pubrec(a)) => assert_eq!(a.packet_id, 3),
        other => panic!("expected PUBREC 3, got {other:?}"),
    }
    // Two unreleased (2 and 3): a third is one too many.
    raw.send(&q2(4)).await;
    let d = expect_disconnect(&mut raw).await;
    assert_eq!(d.reason_code, ReasonCode::ReceiveMaximumExceeded);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Maximum Packet Size
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn broker_maximum_packet_size_is_advertised_and_enforced() {
    // CONNACK carries mqtt.max_packet_size; a client PUBLISH larger than it is answered with
    // DISCONNECT 0x95 (v5 §3.2.2.3.6, [MQTT-3.2.2-15] on the client); one of exactly that size is
    // accepted.
    let broker = TestBroker::start_with(|c| c.mqtt.max_packet_size = ByteSize(1024)).await;
    let seen = v5::Client::connect(&broker, "mps-seen").await;
    let advertised = seen
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.max_packet_size);
    assert_eq!(advertised, Some(1024));

    let (mut raw, connack) = raw5(&broker, "mps-raw", Default::default()).await;
    assert_eq!(connack.properties.maximum_packet_size, Some(1024));
    let sized = |id: u16, total: usize| {
        let empty = raw_publish(
            "big",
            proto::QoS::AtLeastOnce,
            Some(id),
            Default::default(),
            b"",
        );
        let body = vec![b'x'; total - empty.len() - 1];
        let p = raw_publish(
            "big",
            proto::QoS::AtLeastOnce,
            Some(id),
            Default::default(),
            &body,
        );
        assert_eq!(p.len(), total);
        p
    };
    raw.send(&sized(1, 1024)).await;
    match raw.recv().await {
        Some(proto::Packet::Puback(a)) => assert_eq!(a.packet_id, 1),
        other => panic!("a 1024-byte PUBLISH is within the limit: {other:?}"),
    }
    raw.send(&sized(2, 1025)).await;
    let d = expect_disconnect(&mut raw).await;
    assert_eq!(d.reason_code, ReasonCode::PacketTooLarge);
    broker.stop().await;
}

#[tokio::test]
async fn message_larger_than_client_maximum_is_dropped_for_that_client_only() {
    // [MQTT-3.1.2-24] nothing larger than the client's Maximum Packet Size is sent to it;
    // [MQTT-3.1.2-25] it is discarded as if sent: with a window of one and no acks, the next
    // message still goes out. Other clients get it; the drop is counted as `too_large`.
    let broker = TestBroker::start().await;
    let mut o = v5::options(&broker, "mps-small");
    o.set_max_packet_size(Some(200))
        .set_receive_maximum(Some(1))
        .set_manual_acks(true);
    let mut small = v5::Client::connect_with(o).await;
    small.subscribe("mps/t", QoS::AtLeastOnce).await;
    let mut big = v5::Client::connect(&broker, "mps-big").await;
    big.subscribe("mps/t", QoS::AtLeastOnce).await;

    let mut publ = v5::Client::connect(&broker, "mps-pub").await;
    let large = vec![7u8; 500];
    publ.publish("mps/t", QoS::AtLeastOnce, false, &large).await;
    publ.publish("mps/t", QoS::AtLeastOnce, false, b"marker")
        .await;

    let p = small.next_publish().await;
    assert_eq!(&p.payload[..], b"marker");
    assert_eq!(big.next_publish().await.payload.len(), 500);
    assert_eq!(&big.next_publish().await.payload[..], b"marker");
    eventually("too_large drop counted", || {
        broker.broker().metrics.dropped.too_large.get() == 1
    })
    .await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Subscription options
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_local_suppresses_own_messages() {
    // [MQTT-3.8.3-3] with No Local, messages are not forwarded to the publishing client id.
    let broker = TestBroker::start().await;
    let mut a = v5::Client::connect(&broker, "nl-a").await;
    let f = Filter {
        nolocal: true,
        ..Filter::new("nl/t", QoS::AtLeastOnce)
    };
    a.subscribe_filter(f, None).await;
    let mut b = v5::Client::connect(&broker, "nl-b").await;
    let f = Filter {
        nolocal: false,
        ..Filter::new("nl/t", QoS::AtLeastOnce)
    };
    b.subscribe_filter(f, None).await;
    let mut other = v5::Client::connect(&broker, "nl-other").await;

    a.publish("nl/t", QoS::AtLeastOnce, false, b"own").await;
    // Routed after "own": if "own" had been sent to a, it would come first.
    other
        .publish("nl/t", QoS::AtLeastOnce, false, b"other")
        .await;
    assert_eq!(&a.next_publish().await.payload[..], b"other");
    // Without No Local, b gets both.
    assert_eq!(&b.next_publish().await.payload[..], b"own");
    assert_eq!(&b.next_publish().await.payload[..], b"other");
    // And without No Local a client gets its own messages.
    b.client
        .publish("nl/t", QoS::AtMostOnce, false, &b"mine"[..])
        .await
        .expect("queue PUBLISH");
    assert_eq!(&b.next_publish().await.payload[..], b"mine");
    assert_eq!(&a.next_publish().await.payload[..], b"mine");
    assert!(sync(&mut a).await.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn retain_as_published() {
    // [MQTT-3.3.1-12] RAP 0: RETAIN forwarded as 0; [MQTT-3.3.1-13] RAP 1: as published.
    let broker = TestBroker::start().await;
    let mut keep = v5::Client::connect(&broker, "rap-1").await;
    let f = Filter {
        preserve_retain: true,
        ..Filter::new("rap/t", QoS::AtLeastOnce)
    };
    keep.subscribe_filter(f, None).await;
    let mut clear = v5::Client::connect(&broker, "rap-0").await;
    clear.subscribe("rap/t", QoS::AtLeastOnce).await;

    let mut publ = v5::Client::connect(&broker, "rap-pub").await;
    publ.publish("rap/t", QoS::AtLeastOnce, true, b"r").await;
    publ.publish("rap/t", QoS::AtLeastOnce, false, b"n").await;
    let k: Vec<bool> = vec![
        keep.next_publish().await.retain,
        keep.next_publish().await.retain,
    ];
    let c: Vec<bool> = vec![
        clear.next_publish().await.retain,
        clear.next_publish().await.retain,
    ];
    assert_eq!(k, vec![true, false], "Retain As Published 1");
    assert_eq!(c, vec![false, false], "Retain As Published 0");
    broker.stop().await;
}

#[tokio::test]
async fn retain_handling_basic() {
    // [MQTT-3.3.1-9] 0: send at subscribe; [MQTT-3.3.1-10] 1: only if the subscription is new;
    // [MQTT-3.3.1-11] 2: never. Retained messages follow the SUBACK, so each check is the
    // PUBLISH packets before the next sync round trip's SUBACK.
    let broker = TestBroker::start().await;
    let mut publ = v5::Client::connect(&broker, "rh-pub").await;
    publ.publish("rh/t", QoS::AtLeastOnce, true, b"kept").await;
    let mut c = v5::Client::connect(&broker, "rh-sub").await;
    let sub = |path: &str, rule| Filter {
        retain_forward_rule: rule,
        ..Filter::new(path, QoS::AtLeastOnce)
    };

    c.subscribe_filter(sub("rh/t", RetainForwardRule::Never), None)
        .await;
    assert!(sync(&mut c).await.is_empty(), "Retain Handling 2");
    // rh/t exists now (with Retain Handling 2): 1 sends nothing.
    c.subscribe_filter(sub("rh/t", RetainForwardRule::OnNewSubscribe), None)
        .await;
    assert!(sync(&mut c).await.is_empty(), "Retain Handling 1, existing");
    c.subscribe_filter(sub("rh/+", RetainForwardRule::OnNewSubscribe), None)
        .await;
    let got = sync(&mut c).await;
    assert_eq!(
        payloads(&got),
        vec![b"kept".to_vec()],
        "Retain Handling 1, new"
    );
    assert!(got[0].retain, "v5 §3.3.1.3: sent with RETAIN 1");
    c.subscribe_filter(sub("rh/+", RetainForwardRule::OnEverySubscribe), None)
        .await;
    assert_eq!(
        payloads(&sync(&mut c).await),
        vec![b"kept".to_vec()],
        "Retain Handling 0"
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Subscription identifiers
// ---------------------------------------------------------------------------------------------

fn with_id(id: usize) -> Option<SubscribeProperties> {
    Some(SubscribeProperties {
        id: Some(id),
        user_properties: vec![],
    })
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_with_every_identifier() {
    // [MQTT-3.3.4-3] [MQTT-3.3.4-4] one PUBLISH carrying the identifiers of all matching
    // subscriptions; none for a subscription made without one.
    let broker = TestBroker::start().await;
    let mut c = v5::Client::connect(&broker, "sid").await;
    c.subscribe_filter(Filter::new("sid/+", QoS::AtLeastOnce), with_id(1))
        .await;
    c.subscribe_filter(Filter::new("sid/a", QoS::AtLeastOnce), with_id(2))
        .await;
    c.subscribe_filter(Filter::new("sid/#", QoS::AtMostOnce), None)
        .await;
    c.subscribe("plain/t", QoS::AtLeastOnce).await;

    let mut publ = v5::Client::connect(&broker, "sid-pub").await;
    publ.publish("sid/a", QoS::AtLeastOnce, false, b"both")
        .await;
    publ.publish("sid/b", QoS::AtLeastOnce, false, b"one").await;
    publ.publish("plain/t", QoS::AtLeastOnce, false, b"none")
        .await;

    let p = c.next_publish().await;
    assert_eq!(&p.payload[..], b"both");
    let mut ids = props(&p).subscription_identifiers;
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
    // The highest QoS of the matching subscriptions [MQTT-3.3.4-2].
    assert_eq!(p.qos, QoS::AtLeastOnce);
    // The next PUBLISH is the next message: "both" came once.
    let p = c.next_publish().await;
    assert_eq!(&p.payload[..], b"one");
    assert_eq!(props(&p).subscription_identifiers, vec![1]);
    let p = c.next_publish().await;
    assert_eq!(&p.payload[..], b"none");
    assert!(props(&p).subscription_identifiers.is_empty());
    assert!(sync(&mut c).await.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn shared_and_direct_copies_each_carry_their_own_identifier() {
    // [MQTT-3.3.4-5] when the server sends several PUBLISH packets for one message (here a
    // shared and a non-shared subscription of the same client), each carries the identifier
    // of its own subscription.
    let broker = TestBroker::start().await;
    let mut c = v5::Client::connect(&broker, "sid2").await;
    c.subscribe_filter(Filter::new("$share/g/sid2/t", QoS::AtLeastOnce), with_id(3))
        .await;
    c.subscribe_filter(Filter::new("sid2/t", QoS::AtLeastOnce), with_id(4))
        .await;
    let mut publ = v5::Client::connect(&broker, "sid2-pub").await;
    publ.publish("sid2/t", QoS::AtLeastOnce, false, b"m").await;
    let mut ids: Vec<Vec<usize>> = vec![
        props(&c.next_publish().await).subscription_identifiers,
        props(&c.next_publish().await).subscription_identifiers,
    ];
    ids.sort();
    assert_eq!(ids, vec![vec![3], vec![4]]);
    assert!(sync(&mut c).await.is_empty());
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Forwarded properties, request/response
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn publish_properties_are_forwarded_unaltered() {
    // [MQTT-3.3.2-17] [MQTT-3.3.2-18] user properties unaltered and in order (repeated keys
    // included); [MQTT-3.3.2-15] Response Topic, [MQTT-3.3.2-16] Correlation Data,
    // [MQTT-3.3.2-20] Content Type, and the Payload Format Indicator (v5 §3.3.2.3.2) reach
    // every subscriber.
    let broker = TestBroker::start().await;
    let mut s1 = v5::Client::connect(&broker, "props-1").await;
    s1.subscribe("props/t", QoS::AtLeastOnce).await;
    let mut s2 = v5::Client::connect(&broker, "props-2").await;
    s2.subscribe("props/+", QoS::AtMostOnce).await;

    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("text/plain; charset=utf-8".into()),
        response_topic: Some("reply/props".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr\xff")),
        user_properties: vec![
            ("k".into(), "1".into()),
            ("a".into(), "2".into()),
            ("k".into(), "3".into()),
            ("".into(), "empty key".into()),
            ("ünï".into(), "cödé".into()),
        ],
        ..Default::default()
    };
    let mut publ = v5::Client::connect(&broker, "props-pub").await;
    publ.publish_with(
        "props/t",
        QoS::AtLeastOnce,
        false,
        "héllo".as_bytes(),
        sent.clone(),
    )
    .await;
    for s in [&mut s1, &mut s2] {
        let p = s.next_publish().await;
        assert_eq!(&p.payload[..], "héllo".as_bytes());
        let got = props(&p);
        assert_eq!(got.payload_format_indicator, sent.payload_format_indicator);
        assert_eq!(got.content_type, sent.content_type);
        assert_eq!(got.response_topic, sent.response_topic);
        assert_eq!(got.correlation_data, sent.correlation_data);
        assert_eq!(got.user_properties, sent.user_properties);
    }
    broker.stop().await;
}

#[tokio::test]
async fn invalid_utf8_with_payload_format_indicator_gets_puback_0x99() {
    // v5 §3.3.2.3.2: a PUBLISH claiming a UTF-8 payload that is not is refused with 0x99
    // Payload format invalid, and not forwarded. Without the indicator it is just bytes.
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect(&broker, "pfi-sub").await;
    sub.subscribe("pfi/t", QoS::AtLeastOnce).await;
    let mut publ = v5::Client::connect(&broker, "pfi-pub").await;
    let utf8 = PublishProperties {
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    let bad = [0xC3, 0x28, 0xFF];
    let ack = publ
        .publish_with("pfi/t", QoS::AtLeastOnce, false, &bad, utf8)
        .await;
    match ack {
        Some(v5::Packet::PubAck(a)) => assert_eq!(a.reason, PubAckReason::PayloadFormatInvalid),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let bytes = PublishProperties {
        payload_format_indicator: Some(0),
        ..Default::default()
    };
    let ack = publ
        .publish_with("pfi/t", QoS::AtLeastOnce, false, &bad, bytes)
        .await;
    match ack {
        Some(v5::Packet::PubAck(a)) => assert_eq!(a.reason, PubAckReason::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let p = sub.next_publish().await;
    assert_eq!(
        props(&p).payload_format_indicator,
        Some(0),
        "only the second one"
    );
    assert!(sync(&mut sub).await.is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn response_information_only_when_requested_and_configured() {
    // v5 §3.1.2.11.6 / §3.2.2.3.15: Response Information is returned to a client that requests
    // it; [MQTT-3.1.2-28] never to one that does not; none when nothing is configured.
    let broker =
        TestBroker::start_with(|c| c.mqtt.response_information = "reply/{clientid}".into()).await;
    let mut o = v5::options(&broker, "rr-1");
    o.set_request_response_info(Some(1));
    let c = v5::Client::connect_with(o).await;
    let info = c
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.response_information.clone());
    assert_eq!(info.as_deref(), Some("reply/rr-1"));

    let c = v5::Client::connect(&broker, "rr-2").await;
    let info = c
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.response_information.clone());
    assert_eq!(info, None, "not requested");
    let mut o = v5::options(&broker, "rr-3");
    o.set_request_response_info(Some(0));
    let c = v5::Client::connect_with(o).await;
    let info = c
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.response_information.clone());
    assert_eq!(info, None, "[MQTT-3.1.2-28]");
    broker.stop().await;

    let broker = TestBroker::start().await;
    let mut o = v5::options(&broker, "rr-4");
    o.set_request_response_info(Some(1));
    let c = v5::Client::connect_with(o).await;
    let info = c
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.response_information.clone());
    assert_eq!(info, None, "nothing configured");
    broker.stop().await;
}

#[tokio::test]
async fn request_response_round_trip() {
    // A requester subscribes to its response topic; the responder answers to the Response
    // Topic it received with the Correlation Data it received [MQTT-3.3.2-15, MQTT-3.3.2-16].
    let broker = TestBroker::start().await;
    let mut responder = v5::Client::connect(&broker, "rr-responder").await;
    responder.subscribe("service/echo", QoS::AtLeastOnce).await;
    let mut requester = v5::Client::connect(&broker, "rr-requester").await;
    requester
        .subscribe("reply/rr-requester", QoS::AtLeastOnce)
        .await;

    let req = PublishProperties {
        response_topic: Some("reply/rr-requester".into()),
        correlation_data: Some(Bytes::from_static(b"req-42")),
        ..Default::default()
    };
    requester
        .publish_with("service/echo", QoS::AtLeastOnce, false, b"ping", req)
        .await;
    let got = responder.next_publish().await;
    let p = props(&got);
    let reply_to = p.response_topic.expect("Response Topic");
    let resp = PublishProperties {
        correlation_data: p.correlation_data,
        ..Default::default()
    };
    responder
        .publish_with(&reply_to, QoS::AtLeastOnce, false, b"pong", resp)
        .await;
    let answer = requester.next_publish().await;
    assert_eq!(&answer.payload[..], b"pong");
    assert_eq!(
        props(&answer).correlation_data.as_deref(),
        Some(&b"req-42"[..])
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Server Keep Alive
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn server_keep_alive_caps_v5_and_refuses_v311() {
    // v5 §3.2.2.3.14: above mqtt.max_keepalive a v5 client is told Server Keep Alive, which it
    // must use [MQTT-3.2.2-21]; below it none is sent and the client's value stands
    // [MQTT-3.2.2-22]. A 3.1.1 client cannot be told: it is refused with return code 2.
    let broker = TestBroker::start_with(|c| {
        c.mqtt.max_keepalive = DurationStr(Some(Duration::from_secs(10)));
    })
    .await;
    let mut o = v5::options(&broker, "ka-60");
    o.set_keep_alive(Duration::from_secs(60));
    let c = v5::Client::connect_with(o).await;
    let ska = c
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.server_keep_alive);
    assert_eq!(ska, Some(10));

    let mut o = v5::options(&broker, "ka-5");
    o.set_keep_alive(Duration::from_secs(5));
    let c = v5::Client::connect_with(o).await;
    let ska = c
        .connack
        .properties
        .as_ref()
        .and_then(|p| p.server_keep_alive);
    assert_eq!(ska, None);

    let mut raw = Raw::connect(&broker).await;
    // Keep alive 60 in this CONNECT.
    raw.send(&Raw::connect_v311("ka-311")).await;
    assert_eq!(raw.read_exact(4).await, vec![0x20, 0x02, 0x00, 0x02]);
    assert!(raw.expect_close().await.is_empty());
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Reason codes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn puback_and_pubrec_say_no_matching_subscribers() {
    // v5 §3.4.2.1 / §3.5.2.1: 0x10 No matching subscribers when nobody is subscribed.
    let broker = TestBroker::start().await;
    let mut publ = v5::Client::connect(&broker, "nms-pub").await;
    match publ
        .publish("nobody/home", QoS::AtLeastOnce, false, b"x")
        .await
    {
        Some(v5::Packet::PubAck(a)) => assert_eq!(a.reason, PubAckReason::NoMatchingSubscribers),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    match publ
        .publish("nobody/home", QoS::ExactlyOnce, false, b"x")
        .await
    {
        Some(v5::Packet::PubRec(r)) => assert_eq!(r.reason, PubRecReason::NoMatchingSubscribers),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    let mut sub = v5::Client::connect(&broker, "nms-sub").await;
    sub.subscribe("nobody/home", QoS::AtMostOnce).await;
    match publ
        .publish("nobody/home", QoS::AtLeastOnce, false, b"x")
        .await
    {
        Some(v5::Packet::PubAck(a)) => assert_eq!(a.reason, PubAckReason::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn suback_0x8f_for_invalid_filters_in_order() {
    // v5 §3.9.3: 0x8F Topic Filter invalid, one code per filter in order [MQTT-3.9.3-1,
    // MQTT-3.8.4-6], same packet identifier [MQTT-3.8.4-2]. Raw: rumqttc refuses to send
    // these filters.
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw5(&broker, "sub-invalid", Default::default()).await;
    let opts = |qos| proto::SubscriptionOptions {
        qos,
        ..Default::default()
    };
    let filters = ["a/#/b", "ok/+", "c#", "", "d/e+"];
    raw.send(&wire(&proto::Packet::Subscribe(proto::Subscribe {
        packet_id: 7,
        filters: filters
            .iter()
            .map(|f| (ByteString::from(*f), opts(proto::QoS::AtLeastOnce)))
            .collect(),
        properties: Default::default(),
    })))
    .await;
    match raw.recv().await {
        Some(proto::Packet::Suback(s)) => {
            assert_eq!(s.packet_id, 7);
            assert_eq!(
                s.reason_codes,
                vec![
                    ReasonCode::TopicFilterInvalid,
                    ReasonCode::GrantedQoS1,
                    ReasonCode::TopicFilterInvalid,
                    ReasonCode::TopicFilterInvalid,
                    ReasonCode::TopicFilterInvalid,
                ]
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    assert_eq!(broker.broker().routes.subscription_count(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn granted_qos_is_capped_by_max_qos_allowed() {
    // [MQTT-3.2.2-10] a server without QoS 2 still accepts a SUBSCRIBE asking for it and grants
    // what it supports [MQTT-3.8.4-7]; CONNACK says Maximum QoS 1; delivery at the granted QoS
    // [MQTT-3.8.4-8]; a client PUBLISH above Maximum QoS is DISCONNECT 0x9B (v5 §3.2.2.3.4).
    let broker = TestBroker::start_with(|c| c.mqtt.max_qos_allowed = 1).await;
    let mut sub = v5::Client::connect(&broker, "mq-sub").await;
    assert_eq!(
        sub.connack.properties.as_ref().and_then(|p| p.max_qos),
        Some(1)
    );
    let codes = sub.subscribe("mq/t", QoS::ExactlyOnce).await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let mut publ = v5::Client::connect(&broker, "mq-pub").await;
    publ.publish("mq/t", QoS::AtLeastOnce, false, b"x").await;
    assert_eq!(sub.next_publish().await.qos, QoS::AtLeastOnce);

    let (mut raw, connack) = raw5(&broker, "mq-raw", Default::default()).await;
    assert_eq!(
        connack.properties.maximum_qos,
        Some(proto::QoS::AtLeastOnce)
    );
    raw.send(&raw_publish(
        "mq/t",
        proto::QoS::ExactlyOnce,
        Some(1),
        Default::default(),
        b"x",
    ))
    .await;
    let d = expect_disconnect(&mut raw).await;
    assert_eq!(d.reason_code, ReasonCode::QoSNotSupported);
    broker.stop().await;
}

#[tokio::test]
async fn unsuback_0x11_for_a_filter_not_subscribed() {
    // v5 §3.11.3: 0x11 No subscription existed; one code per filter [MQTT-3.11.3-1].
    let broker = TestBroker::start().await;
    let mut c = v5::Client::connect(&broker, "unsub").await;
    c.subscribe("un/a", QoS::AtMostOnce).await;
    for (filter, expected) in [
        ("un/never", UnsubAckReason::NoSubscriptionExisted),
        ("un/a", UnsubAckReason::Success),
        ("un/a", UnsubAckReason::NoSubscriptionExisted),
    ] {
        c.client
            .unsubscribe(filter)
            .await
            .expect("queue UNSUBSCRIBE");
        match c
            .wait_for("UNSUBACK", |p| matches!(p, v5::Packet::UnsubAck(_)))
            .await
        {
            v5::Packet::UnsubAck(u) => assert_eq!(u.reasons, vec![expected], "{filter}"),
            _ => unreachable!(),
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn protocol_error_disconnect_carries_reason_string() {
    // [MQTT-4.13.1-1] a protocol error (a second CONNECT [MQTT-3.1.0-2]) ends the connection
    // with DISCONNECT 0x82; the broker says why in a Reason String (v5 §3.14.2.2.3).
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw5(&broker, "twice", Default::default()).await;
    raw.send(&Raw::connect_v5("twice")).await;
    let d = expect_disconnect(&mut raw).await;
    assert_eq!(d.reason_code, ReasonCode::ProtocolError);
    let why = d.properties.reason_string.expect("a reason string");
    assert!(why.contains("CONNECT"), "reason string: {why}");
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// CONNACK capabilities
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connack_advertises_the_default_limits() {
    // v5 §3.2.2.3: Receive Maximum, Maximum Packet Size and Topic Alias Maximum from the
    // configuration; absent Maximum QoS, Retain/Wildcard/Subscription Identifier/Shared
    // availability mean "supported".
    let broker = TestBroker::start().await;
    let c = v5::Client::connect(&broker, "caps").await;
    let p = c.connack.properties.clone().expect("CONNACK properties");
    assert_eq!(p.receive_max, Some(32));
    assert_eq!(p.max_packet_size, Some(1024 * 1024));
    assert_eq!(p.topic_alias_max, Some(65535));
    assert_eq!(p.max_qos, None);
    assert_eq!(p.retain_available, None);
    assert_eq!(p.wildcard_subscription_available, None);
    assert_eq!(p.subscription_identifiers_available, None);
    assert_eq!(p.shared_subscription_available, None);
    assert_eq!(p.server_keep_alive, None);
    assert_eq!(p.response_information, None);
    broker.stop().await;
}

#[tokio::test]
async fn disabled_features_are_advertised_and_refused() {
    // v5 §3.2.2.3.11-13: features turned off in the configuration are advertised as 0 in
    // CONNACK; using them anyway gets SUBACK 0xA2 (wildcards), 0x9E (shared; 0x80 for 3.1.1),
    // and DISCONNECT 0xA1 (subscription identifiers, v5 §3.8.2.1.2).
    let broker = TestBroker::start_with(|c| {
        c.mqtt.wildcard_subscription = false;
        c.mqtt.shared_subscription = false;
        c.mqtt.subscription_identifiers = false;
    })
    .await;
    let mut c = v5::Client::connect(&broker, "off").await;
    let p = c.connack.properties.clone().expect("CONNACK properties");
    assert_eq!(p.wildcard_subscription_available, Some(0));
    assert_eq!(p.shared_subscription_available, Some(0));
    assert_eq!(p.subscription_identifiers_available, Some(0));
    assert_eq!(
        c.subscribe("w/+", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::WildcardSubscriptionsNotSupported]
    );
    assert_eq!(
        c.subscribe("w/#", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::WildcardSubscriptionsNotSupported]
    );
    assert_eq!(
        c.subscribe("$share/g/w", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::SharedSubscriptionsNotSupported]
    );
    assert_eq!(
        c.subscribe("w/plain", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );

    let mut c3 = v3::Client::connect(&broker, "off-311").await;
    assert_eq!(
        c3.subscribe("$share/g/w", v3::QoS::AtMostOnce).await,
        vec![v3::SubscribeReasonCode::Failure]
    );
    assert_eq!(
        c3.subscribe("w/+", v3::QoS::AtMostOnce).await,
        vec![v3::SubscribeReasonCode::Failure]
    );

    let (mut raw, _) = raw5(&broker, "off-raw", Default::default()).await;
    raw.send(&wire(&proto::Packet::Subscribe(proto::Subscribe {
        packet_id: 1,
        filters: vec![(ByteString::from("w/x"), Default::default())],
        properties: proto::SubscribeProperties {
            subscription_identifier: Some(5),
            user_properties: vec![],
        },
    })))
    .await;
    let d = expect_disconnect(&mut raw).await;
    assert_eq!(
        d.reason_code,
        ReasonCode::SubscriptionIdentifiersNotSupported
    );
    broker.stop().await;
}
