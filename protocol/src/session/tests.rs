//! The channel fed packets with the clock passed in (DESIGN §8 tier 1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec;
use crate::packet::*;
use crate::reason::ReasonCode;
use crate::session::*;

#[derive(Default)]
struct Recorder {
    published: Vec<Arc<Message>>,
    matches: usize,
    /// Retained messages by topic with the store sequence they were stored at.
    retained: Vec<(Arc<Message>, u64)>,
}

impl Dispatcher for Recorder {
    fn authorize_publish(&mut self, topic: &str) -> bool {
        !topic.starts_with("denied")
    }

    fn dispatch(&mut self, message: Arc<Message>) -> usize {
        self.published.push(message);
        self.matches
    }

    fn retained_page(
        &mut self,
        filter: &str,
        after: Option<&str>,
        watermark: u64,
        limit: usize,
    ) -> Vec<Arc<Message>> {
        let mut matching: Vec<&(Arc<Message>, u64)> = self
            .retained
            .iter()
            .filter(|(m, seq)| *seq <= watermark && crate::topic::matches(filter, &m.topic))
            .collect();
        matching.sort_by(|a, b| a.0.topic.cmp(&b.0.topic));
        matching
            .into_iter()
            .filter(|(m, _)| after.is_none_or(|a| &*m.topic > a))
            .take(limit)
            .map(|(m, _)| m.clone())
            .collect()
    }
}

fn connect(version: ProtocolVersion) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: ByteString::from("c1"),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn channel_with(c: Connect, limits: Limits) -> Channel {
    let limits = Arc::new(limits);
    let accepted = connect::accept(&c, &limits, || "gen".into()).expect("accepted");
    let mut ch = Channel::new(
        c,
        &accepted,
        limits,
        SessionState::new(accepted.session_expiry),
    );
    let mut fx = Vec::new();
    ch.start(
        &accepted,
        false,
        Instant::now(),
        &mut Recorder::default(),
        &mut fx,
    );
    ch.out.clear();
    ch
}

fn channel(version: ProtocolVersion) -> Channel {
    channel_with(connect(version), Limits::default())
}

/// Decodes everything the channel wrote.
fn written(ch: &mut Channel) -> Vec<Packet> {
    let mut buf: BytesMut = ch.out.split();
    let mut out = Vec::new();
    while let Some(p) = codec::decode(&mut buf, ch.version(), u32::MAX).expect("valid output") {
        out.push(p);
    }
    assert!(buf.is_empty());
    out
}

fn publish(topic: &str, qos: QoS, packet_id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id,
        properties: PublishProperties::default(),
        payload: Bytes::from_static(b"hello"),
    })
}

fn delivery(topic: &str, qos: QoS) -> Delivery {
    let m = Message::system(ByteString::from(topic), Bytes::from_static(b"m"), false);
    Delivery::new(Arc::new(m), qos, false)
}

fn handle(ch: &mut Channel, p: Packet, d: &mut Recorder) -> Result<Vec<Effect>, Violation> {
    let mut fx = Vec::new();
    ch.handle(p, Instant::now(), d, &mut fx)?;
    Ok(fx)
}

#[test]
fn qos1_publish_is_dispatched_then_acknowledged() {
    // [MQTT-4.3.2-2] PUBACK with the packet identifier; v5 0x10 when nobody matched.
    let mut ch = channel(ProtocolVersion::V5);
    let mut d = Recorder::default();
    handle(&mut ch, publish("a/b", QoS::AtLeastOnce, Some(7)), &mut d).expect("ok");
    assert_eq!(d.published.len(), 1);
    assert_eq!(&*d.published[0].topic, "a/b");
    assert_eq!(&*d.published[0].publisher, "c1");
    assert_eq!(
        written(&mut ch),
        vec![Packet::Puback(PubAck::with_reason(
            7,
            ReasonCode::NoMatchingSubscribers
        ))]
    );
    d.matches = 1;
    handle(&mut ch, publish("a/b", QoS::AtLeastOnce, Some(8)), &mut d).expect("ok");
    assert_eq!(written(&mut ch), vec![Packet::Puback(PubAck::new(8))]);
}

#[test]
fn v311_puback_never_carries_0x10() {
    let mut ch = channel(ProtocolVersion::V3_1_1);
    let mut d = Recorder::default();
    handle(&mut ch, publish("a", QoS::AtLeastOnce, Some(1)), &mut d).expect("ok");
    assert_eq!(written(&mut ch), vec![Packet::Puback(PubAck::new(1))]);
}

#[test]
fn qos2_is_routed_once_even_when_resent() {
    // [MQTT-4.3.3-9] a resent PUBLISH with the same id is not a new message.
    let mut ch = channel(ProtocolVersion::V3_1_1);
    let mut d = Recorder {
        matches: 1,
        ..Recorder::default()
    };
    handle(&mut ch, publish("a", QoS::ExactlyOnce, Some(3)), &mut d).expect("ok");
    let mut dup = publish("a", QoS::ExactlyOnce, Some(3));
    if let Packet::Publish(p) = &mut dup {
        p.dup = true;
    }
    handle(&mut ch, dup, &mut d).expect("ok");
    assert_eq!(d.published.len(), 1);
    assert_eq!(
        written(&mut ch),
        vec![
            Packet::Pubrec(PubAck::new(3)),
            Packet::Pubrec(PubAck::new(3))
        ]
    );
    handle(&mut ch, Packet::Pubrel(PubAck::new(3)), &mut d).expect("ok");
    assert_eq!(written(&mut ch), vec![Packet::Pubcomp(PubAck::new(3))]);
    // After release the identifier is free again and a new message with it is routed.
    handle(&mut ch, publish("a", QoS::ExactlyOnce, Some(3)), &mut d).expect("ok");
    assert_eq!(d.published.len(), 2);
}

#[test]
fn pubrel_for_unknown_id_gets_0x92_in_v5() {
    let mut ch = channel(ProtocolVersion::V5);
    let mut d = Recorder::default();
    handle(&mut ch, Packet::Pubrel(PubAck::new(9)), &mut d).expect("ok");
    assert_eq!(
        written(&mut ch),
        vec![Packet::Pubcomp(PubAck::with_reason(
            9,
            ReasonCode::PacketIdentifierNotFound
        ))]
    );
}

#[test]
fn receive_maximum_exceeded_is_0x93() {
    // [MQTT-3.3.4-9]
    let limits = Limits {
        receive_maximum: 2,
        ..Limits::default()
    };
    let mut ch = channel_with(connect(ProtocolVersion::V5), limits);
    let mut d = Recorder::default();
    handle(&mut ch, publish("a", QoS::ExactlyOnce, Some(1)), &mut d).expect("ok");
    handle(&mut ch, publish("a", QoS::ExactlyOnce, Some(2)), &mut d).expect("ok");
    let err = handle(&mut ch, publish("a", QoS::ExactlyOnce, Some(3)), &mut d).expect_err("93");
    assert_eq!(err.reason, ReasonCode::ReceiveMaximumExceeded);
}

#[test]
fn inbound_topic_aliases() {
    let limits = Limits {
        topic_alias_maximum: 5,
        ..Limits::default()
    };
    let mut ch = channel_with(connect(ProtocolVersion::V5), limits);
    let mut d = Recorder::default();
    let with_alias = |topic: &str, alias: u16| {
        let mut p = publish(topic, QoS::AtMostOnce, None);
        if let Packet::Publish(p) = &mut p {
            p.properties.topic_alias = Some(alias);
        }
        p
    };
    handle(&mut ch, with_alias("x/y", 1), &mut d).expect("set");
    handle(&mut ch, with_alias("", 1), &mut d).expect("use");
    assert_eq!(&*d.published[1].topic, "x/y");
    // [MQTT-3.3.2-9] above Topic Alias Maximum.
    let e = handle(&mut ch, with_alias("x", 6), &mut d).expect_err("0x94");
    assert_eq!(e.reason, ReasonCode::TopicAliasInvalid);
    // An alias never set.
    let e = handle(&mut ch, with_alias("", 2), &mut d).expect_err("unknown");
    assert_eq!(e.reason, ReasonCode::ProtocolError);
}

#[test]
fn outbound_window_queues_then_drains_on_ack() {
    let mut c = connect(ProtocolVersion::V5);
    c.properties.receive_maximum = Some(2);
    let mut ch = channel_with(c, Limits::default());
    let now = Instant::now();
    let mut fx = Vec::new();
    for _ in 0..3 {
        ch.deliver(
            delivery("t", QoS::AtLeastOnce),
            now,
            &mut Recorder::default(),
            &mut fx,
        );
    }
    let sent = written(&mut ch);
    assert_eq!(
        sent.len(),
        2,
        "[MQTT-4.9.0-2] no more than Receive Maximum in flight"
    );
    assert_eq!(ch.session.queue.len(), 1);
    let Packet::Publish(first) = &sent[0] else {
        panic!("publish expected")
    };
    let mut d = Recorder::default();
    handle(
        &mut ch,
        Packet::Puback(PubAck::new(first.packet_id.expect("id"))),
        &mut d,
    )
    .expect("ok");
    assert_eq!(written(&mut ch).len(), 1);
    assert!(ch.session.queue.is_empty());
    assert!(fx.is_empty());
}

#[test]
fn full_queue_drops_oldest_and_reports_it() {
    let limits = Limits {
        max_queued_messages: 2,
        ..Limits::default()
    };
    let mut ch = channel_with(connect(ProtocolVersion::V3_1_1), limits);
    ch.disconnected();
    let now = Instant::now();
    let mut fx = Vec::new();
    for i in 0..3 {
        ch.deliver(
            delivery(&format!("t/{i}"), QoS::AtLeastOnce),
            now,
            &mut Recorder::default(),
            &mut fx,
        );
    }
    assert_eq!(fx, vec![Effect::Dropped(DropReason::QueueFull)]);
    let topics: Vec<&str> = ch.session.queue.iter().map(|d| &*d.message.topic).collect();
    assert_eq!(topics, vec!["t/1", "t/2"]);
}

#[test]
fn qos0_offline_not_queued_when_disabled() {
    let limits = Limits {
        queue_qos0: false,
        ..Limits::default()
    };
    let mut ch = channel_with(connect(ProtocolVersion::V3_1_1), limits);
    ch.disconnected();
    let mut fx = Vec::new();
    ch.deliver(
        delivery("t", QoS::AtMostOnce),
        Instant::now(),
        &mut Recorder::default(),
        &mut fx,
    );
    assert_eq!(fx, vec![Effect::Dropped(DropReason::Qos0NotQueued)]);
}

#[test]
fn resumed_session_resends_inflight_with_dup_then_queue() {
    // [MQTT-4.4.0-1] original packet identifiers; [MQTT-3.3.1-1] DUP set on resend.
    let mut c = connect(ProtocolVersion::V3_1_1);
    c.clean_start = false;
    let limits = Arc::new(Limits::default());
    let accepted = connect::accept(&c, &limits, || "x".into()).expect("ok");
    let mut ch = Channel::new(
        c.clone(),
        &accepted,
        limits.clone(),
        SessionState::new(accepted.session_expiry),
    );
    let now = Instant::now();
    let mut fx = Vec::new();
    ch.start(&accepted, false, now, &mut Recorder::default(), &mut fx);
    ch.deliver(
        delivery("a", QoS::AtLeastOnce),
        now,
        &mut Recorder::default(),
        &mut fx,
    );
    ch.deliver(
        delivery("b", QoS::ExactlyOnce),
        now,
        &mut Recorder::default(),
        &mut fx,
    );
    let first = written(&mut ch);
    let ids: Vec<u16> = first
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => p.packet_id,
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    // PUBREC for the QoS 2 one moves it to PUBREL.
    let mut d = Recorder::default();
    handle(&mut ch, Packet::Pubrec(PubAck::new(ids[1])), &mut d).expect("ok");
    assert_eq!(written(&mut ch), vec![Packet::Pubrel(PubAck::new(ids[1]))]);
    ch.disconnected();
    ch.deliver(
        delivery("c", QoS::AtLeastOnce),
        now,
        &mut Recorder::default(),
        &mut fx,
    );

    let session = std::mem::take(&mut ch.session);
    let mut ch = Channel::new(c, &accepted, limits, session);
    ch.start(&accepted, true, now, &mut Recorder::default(), &mut fx);
    let again = written(&mut ch);
    assert!(matches!(&again[0], Packet::Connack(c) if c.session_present));
    match &again[1] {
        Packet::Publish(p) => {
            assert!(p.dup);
            assert_eq!(p.packet_id, Some(ids[0]));
            assert_eq!(&*p.topic, "a");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(again[2], Packet::Pubrel(PubAck::new(ids[1])));
    match &again[3] {
        Packet::Publish(p) => {
            assert!(!p.dup);
            assert_eq!(&*p.topic, "c");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn too_large_for_the_client_is_dropped_and_counted() {
    // [MQTT-3.1.2-24]
    let mut c = connect(ProtocolVersion::V5);
    c.properties.maximum_packet_size = Some(20);
    let mut ch = channel_with(c, Limits::default());
    let mut fx = Vec::new();
    let m = Message::system(ByteString::from("t"), Bytes::from(vec![0u8; 100]), false);
    ch.deliver(
        Delivery::new(Arc::new(m), QoS::AtLeastOnce, false),
        Instant::now(),
        &mut Recorder::default(),
        &mut fx,
    );
    assert_eq!(fx, vec![Effect::Dropped(DropReason::TooLarge)]);
    assert!(ch.out.is_empty());
    assert!(ch.session.inflight().is_empty(), "as if it had been sent");
}

#[test]
fn outbound_topic_aliases_when_allowed() {
    let mut c = connect(ProtocolVersion::V5);
    c.properties.topic_alias_maximum = Some(1);
    let mut ch = channel_with(c, Limits::default());
    let now = Instant::now();
    let mut fx = Vec::new();
    ch.deliver(
        delivery("long/topic", QoS::AtMostOnce),
        now,
        &mut Recorder::default(),
        &mut fx,
    );
    ch.deliver(
        delivery("long/topic", QoS::AtMostOnce),
        now,
        &mut Recorder::default(),
        &mut fx,
    );
    ch.deliver(
        delivery("other", QoS::AtMostOnce),
        now,
        &mut Recorder::default(),
        &mut fx,
    );
    let sent = written(&mut ch);
    let shape: Vec<(String, Option<u16>)> = sent
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.topic.to_string(), p.properties.topic_alias),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("long/topic".to_string(), Some(1)),
            (String::new(), Some(1)),
            ("other".to_string(), None)
        ]
    );
}

#[test]
fn message_expiry_is_decremented_and_expired_messages_dropped() {
    // [MQTT-3.3.2-5] expired while queued: dropped. [MQTT-3.3.2-6] the interval sent onward is
    // what is left.
    let mut ch = channel(ProtocolVersion::V5);
    let t0 = Instant::now();
    let mut p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteString::from("t"),
        packet_id: None,
        properties: PublishProperties::default(),
        payload: Bytes::new(),
    };
    p.properties.message_expiry_interval = Some(10);
    let m = Arc::new(Message::from_publish(
        p,
        ByteString::from("t"),
        ByteString::from("x"),
        t0,
    ));
    let mut fx = Vec::new();
    ch.deliver(
        Delivery::new(m.clone(), QoS::AtMostOnce, false),
        t0 + Duration::from_secs(4),
        &mut Recorder::default(),
        &mut fx,
    );
    match &written(&mut ch)[0] {
        Packet::Publish(p) => assert_eq!(p.properties.message_expiry_interval, Some(6)),
        other => panic!("unexpected {other:?}"),
    }
    ch.deliver(
        Delivery::new(m, QoS::AtMostOnce, false),
        t0 + Duration::from_secs(10),
        &mut Recorder::default(),
        &mut fx,
    );
    assert_eq!(fx, vec![Effect::Dropped(DropReason::Expired)]);
}

#[test]
fn subscribe_validates_filters_and_orders_effects() {
    let mut ch = channel(ProtocolVersion::V5);
    let mut d = Recorder::default();
    let opts = |qos, rh| SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: rh,
    };
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 5,
        filters: vec![
            (
                ByteString::from("a/+"),
                opts(QoS::ExactlyOnce, RetainHandling::SendAtSubscribe),
            ),
            (
                ByteString::from("a/#/b"),
                opts(QoS::AtMostOnce, RetainHandling::SendAtSubscribe),
            ),
            (
                ByteString::from("$share/g/c"),
                opts(QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
            ),
            (
                ByteString::from("d"),
                opts(QoS::AtLeastOnce, RetainHandling::DoNotSend),
            ),
        ],
        properties: SubscribeProperties {
            subscription_identifier: Some(42),
            user_properties: vec![],
        },
    });
    let fx = handle(&mut ch, sub, &mut d).expect("ok");
    let suback = written(&mut ch);
    assert_eq!(
        suback,
        vec![Packet::Suback(Suback {
            packet_id: 5,
            // [MQTT-3.8.4-6] one code per filter in order; 0x8F for the invalid filter.
            reason_codes: vec![
                ReasonCode::GrantedQoS2,
                ReasonCode::TopicFilterInvalid,
                ReasonCode::GrantedQoS1,
                ReasonCode::GrantedQoS1
            ],
            properties: AckProperties::default(),
        })]
    );
    let kinds: Vec<String> = fx
        .iter()
        .map(|e| match e {
            Effect::Subscribe { filter, .. } => format!("sub {filter}"),
            Effect::SendRetained { filter, .. } => format!("retained {filter}"),
            other => format!("{other:?}"),
        })
        .collect();
    // Retained only for the non-shared one with retain handling 0, after all subscribes.
    assert_eq!(
        kinds,
        vec!["sub a/+", "sub $share/g/c", "sub d", "retained a/+"]
    );
    match &fx[0] {
        Effect::Subscribe { subscription, .. } => assert_eq!(subscription.id, Some(42)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn v311_invalid_filter_gets_0x80() {
    let mut ch = channel(ProtocolVersion::V3_1_1);
    let mut d = Recorder::default();
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(ByteString::from("a+"), SubscriptionOptions::default())],
        properties: SubscribeProperties::default(),
    });
    handle(&mut ch, sub, &mut d).expect("ok");
    let mut buf = ch.out.split();
    // The raw SUBACK return code is 0x80 [MQTT-3.9.3-2].
    assert_eq!(&buf[..], &[0x90, 3, 0, 1, 0x80]);
    assert!(
        codec::decode(&mut buf, ProtocolVersion::V3_1_1, u32::MAX)
            .expect("valid")
            .is_some()
    );
}

#[test]
fn no_local_on_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4]
    let mut ch = channel(ProtocolVersion::V5);
    let mut d = Recorder::default();
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            ByteString::from("$share/g/a"),
            SubscriptionOptions {
                no_local: true,
                ..SubscriptionOptions::default()
            },
        )],
        properties: SubscribeProperties::default(),
    });
    let e = handle(&mut ch, sub, &mut d).expect_err("violation");
    assert_eq!(e.reason, ReasonCode::ProtocolError);
}

#[test]
fn retain_handling_1_sends_only_for_new_subscriptions() {
    let mut ch = channel(ProtocolVersion::V5);
    let mut d = Recorder::default();
    let sub = || {
        Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(
                ByteString::from("a"),
                SubscriptionOptions {
                    retain_handling: RetainHandling::SendAtSubscribeIfNew,
                    ..SubscriptionOptions::default()
                },
            )],
            properties: SubscribeProperties::default(),
        })
    };
    let fx = handle(&mut ch, sub(), &mut d).expect("ok");
    assert!(fx.iter().any(|e| matches!(e, Effect::SendRetained { .. })));
    let fx = handle(&mut ch, sub(), &mut d).expect("ok");
    assert!(!fx.iter().any(|e| matches!(e, Effect::SendRetained { .. })));
}

#[test]
fn unsubscribe_reports_missing_subscriptions_in_v5() {
    let mut ch = channel(ProtocolVersion::V5);
    let mut d = Recorder::default();
    let fx = handle(
        &mut ch,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec![ByteString::from("nope")],
            user_properties: vec![],
        }),
        &mut d,
    )
    .expect("ok");
    assert!(fx.is_empty());
    assert_eq!(
        written(&mut ch),
        vec![Packet::Unsuback(Unsuback {
            packet_id: 2,
            reason_codes: vec![ReasonCode::NoSubscriptionExisted],
            properties: AckProperties::default(),
        })]
    );
}

#[test]
fn disconnect_rules() {
    // [MQTT-3.14.2-2] expiry 0 at CONNECT cannot become non-zero at DISCONNECT.
    let mut ch = channel(ProtocolVersion::V5);
    let mut d = Recorder::default();
    let mut disc = Disconnect::new(ReasonCode::Success);
    disc.properties.session_expiry_interval = Some(30);
    let e = handle(&mut ch, Packet::Disconnect(disc), &mut d).expect_err("violation");
    assert_eq!(e.reason, ReasonCode::ProtocolError);

    // 0x04 keeps the will for publishing; 0x00 discards it [MQTT-3.14.4-3].
    let mut c = connect(ProtocolVersion::V5);
    c.will = Some(LastWill {
        topic: ByteString::from("w"),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    let mut ch = channel_with(c.clone(), Limits::default());
    let fx = handle(
        &mut ch,
        Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWill)),
        &mut d,
    )
    .expect("ok");
    assert_eq!(
        fx,
        vec![Effect::ClientDisconnect {
            publish_will: true,
            reason: ReasonCode::DisconnectWithWill
        }]
    );
    assert!(ch.will().is_some());
    let mut ch = channel_with(c, Limits::default());
    handle(
        &mut ch,
        Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
        &mut d,
    )
    .expect("ok");
    assert!(ch.will().is_none());
}

#[test]
fn second_connect_and_server_packets_are_violations() {
    let mut ch = channel(ProtocolVersion::V3_1_1);
    let mut d = Recorder::default();
    let e = handle(
        &mut ch,
        Packet::Connect(Box::new(connect(ProtocolVersion::V3_1_1))),
        &mut d,
    )
    .expect_err("[MQTT-3.1.0-2]");
    assert_eq!(e.reason, ReasonCode::ProtocolError);
    assert!(handle(&mut ch, Packet::Pingresp, &mut d).is_err());
    handle(&mut ch, Packet::Pingreq, &mut d).expect("ok");
    assert_eq!(written(&mut ch), vec![Packet::Pingresp]);
}

fn retained_store(n: usize, seq: u64) -> Recorder {
    let mut d = Recorder::default();
    for i in 0..n {
        let m = Message::system(
            ByteString::from(format!("r/{i:04}")),
            Bytes::from_static(b"m"),
            true,
        );
        let mut m = m;
        m.qos = QoS::AtLeastOnce;
        d.retained.push((Arc::new(m), seq));
    }
    d
}

fn sub_qos1() -> Subscription {
    Subscription {
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..SubscriptionOptions::default()
        },
        id: Some(9),
    }
}

#[test]
fn retained_backlog_is_flow_controlled_not_truncated() {
    // A wildcard subscription matching many retained messages: all are delivered, in topic
    // order, window by window, none dropped even though the queue limit is small; the session
    // holds at most one page of them at a time.
    let limits = Limits {
        max_queued_messages: 10,
        ..Limits::default()
    };
    let mut ch = channel_with(connect(ProtocolVersion::V5), limits);
    let now = Instant::now();
    let mut fx = Vec::new();
    let mut d = retained_store(500, 1);
    ch.push_retained(ByteString::from("r/#"), sub_qos1(), 1, now, &mut d, &mut fx);
    let mut received = Vec::new();
    loop {
        assert!(ch.session.retained_page.len() <= 64);
        let sent = written(&mut ch);
        if sent.is_empty() {
            break;
        }
        for p in sent {
            if let Packet::Publish(p) = p {
                assert!(
                    p.retain,
                    "[MQTT-3.3.1-9] retained messages for a new subscription carry RETAIN 1"
                );
                assert_eq!(p.properties.subscription_identifiers, vec![9]);
                received.push(p.topic.to_string());
                handle(
                    &mut ch,
                    Packet::Puback(PubAck::new(p.packet_id.expect("id"))),
                    &mut d,
                )
                .expect("ok");
            }
        }
    }
    let want: Vec<String> = (0..500).map(|i| format!("r/{i:04}")).collect();
    assert_eq!(received, want);
    assert!(fx.is_empty());
    assert!(ch.session.retained.is_empty());
}

#[test]
fn retained_messages_stored_after_the_watermark_are_not_sent_from_the_store() {
    // They reach the subscription live through the route table; sending them again from the
    // store would deliver them twice.
    let mut ch = channel(ProtocolVersion::V5);
    let mut d = retained_store(3, 1);
    let later = Message::system(
        ByteString::from("r/9999"),
        Bytes::from_static(b"late"),
        true,
    );
    d.retained.push((Arc::new(later), 7));
    let mut fx = Vec::new();
    ch.push_retained(
        ByteString::from("r/#"),
        sub_qos1(),
        5,
        Instant::now(),
        &mut d,
        &mut fx,
    );
    let topics: Vec<String> = written(&mut ch)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.topic.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(topics, vec!["r/0000", "r/0001", "r/0002"]);
}

#[test]
fn subscribing_again_replaces_what_was_still_owed() {
    // [MQTT-3.8.4-3]: retained messages are re-sent for a repeated SUBSCRIBE, but a client
    // repeating it cannot make the session owe the store many times over: one cursor per filter.
    let mut ch = channel(ProtocolVersion::V5);
    ch.set_write_budget(0);
    let mut d = retained_store(1000, 1);
    let mut fx = Vec::new();
    for _ in 0..100 {
        ch.push_retained(
            ByteString::from("r/#"),
            sub_qos1(),
            1,
            Instant::now(),
            &mut d,
            &mut fx,
        );
    }
    assert_eq!(ch.session.retained.len(), 1);
    assert!(ch.session.retained_page.len() <= 64);
}

#[test]
fn write_budget_holds_messages_back() {
    let mut ch = channel(ProtocolVersion::V3_1_1);
    let now = Instant::now();
    let mut fx = Vec::new();
    ch.set_write_budget(1);
    ch.deliver(
        delivery("a", QoS::AtMostOnce),
        now,
        &mut Recorder::default(),
        &mut fx,
    );
    ch.deliver(
        delivery("b", QoS::AtMostOnce),
        now,
        &mut Recorder::default(),
        &mut fx,
    );
    assert_eq!(
        written(&mut ch).len(),
        1,
        "the first one used the budget up"
    );
    assert_eq!(ch.session.queue.len(), 1);
    ch.set_write_budget(1 << 20);
    ch.drain(now, &mut Recorder::default(), &mut fx);
    assert_eq!(written(&mut ch).len(), 1);
}

#[test]
fn refused_publish_is_not_routed_and_v5_is_told_0x87() {
    let mut d = Recorder::default();
    let mut ch = channel(ProtocolVersion::V5);
    handle(
        &mut ch,
        publish("denied/x", QoS::AtLeastOnce, Some(4)),
        &mut d,
    )
    .expect("ok");
    assert!(d.published.is_empty());
    assert_eq!(
        written(&mut ch),
        vec![Packet::Puback(PubAck::with_reason(
            4,
            ReasonCode::NotAuthorized
        ))]
    );
    // 3.1.1 cannot say no: a plain acknowledgement, and the message is still dropped.
    let mut ch = channel(ProtocolVersion::V3_1_1);
    handle(
        &mut ch,
        publish("denied/x", QoS::ExactlyOnce, Some(5)),
        &mut d,
    )
    .expect("ok");
    assert!(d.published.is_empty());
    assert_eq!(written(&mut ch), vec![Packet::Pubrec(PubAck::new(5))]);
}

#[test]
fn resumption_resends_no_more_than_the_new_window() {
    // [MQTT-4.4.0-1] everything unacknowledged is resent, but [MQTT-3.3.4-9] (5.0) never more
    // at a time than the new connection's Receive Maximum: the rest follows as acks arrive.
    let mut c = connect(ProtocolVersion::V5);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let limits = Arc::new(Limits::default());
    let accepted = connect::accept(&c, &limits, || "x".into()).expect("ok");
    let mut ch = Channel::new(c.clone(), &accepted, limits.clone(), SessionState::new(60));
    let now = Instant::now();
    let mut fx = Vec::new();
    let mut d = Recorder::default();
    ch.start(&accepted, false, now, &mut d, &mut fx);
    for i in 0..6 {
        ch.deliver(
            delivery(&format!("t/{i}"), QoS::AtLeastOnce),
            now,
            &mut d,
            &mut fx,
        );
    }
    assert_eq!(written(&mut ch).len(), 7, "CONNACK and six PUBLISH");
    ch.disconnected();

    c.properties.receive_maximum = Some(2);
    let accepted = connect::accept(&c, &limits, || "x".into()).expect("ok");
    let session = std::mem::take(&mut ch.session);
    let mut ch = Channel::new(c, &accepted, limits, session);
    ch.start(&accepted, true, now, &mut d, &mut fx);
    let first: Vec<u16> = written(&mut ch)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => {
                assert!(p.dup);
                p.packet_id
            }
            _ => None,
        })
        .collect();
    assert_eq!(first.len(), 2);
    handle(&mut ch, Packet::Puback(PubAck::new(first[0])), &mut d).expect("ok");
    let next: Vec<Packet> = written(&mut ch);
    assert_eq!(next.len(), 1, "one ack, one more resend");
    assert!(matches!(&next[0], Packet::Publish(p) if p.dup && &*p.topic == "t/2"));
}
