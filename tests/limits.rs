//! Configured limits, enforced over real sockets: connect timeout, keep alive, client and
//! listener connection caps, topic levels, client id length, the broker's outbound inflight
//! cap, Maximum QoS and Retain Available. Each test checks the reaction, the counter where there
//! is one, and that well-behaved clients keep working.
//!
//! `broker.max_mailbox` is not tested here: filling a client actor's mailbox needs the actor to
//! fall behind its publishers, which a test cannot arrange deterministically over sockets.

mod common;
mod edge;

use std::time::{Duration, Instant};

use beamq_actors::config::DurationStr;
use beamq_actors::listener::ListenerMsg;
use beamq_protocol::{Packet, ProtocolVersion, QoS, ReasonCode};
use beamq_supervisors::{SupervisorMsg, which_child};
use common::*;
use edge::*;
use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::io::AsyncWriteExt;

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const BOTH: [ProtocolVersion; 2] = [V3, V5];

// ---------------------------------------------------------------------------------------------
// Connect timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sockets_that_do_not_complete_connect_in_time_are_closed() {
    // `mqtt.connect_timeout`: a socket that sends nothing, one that sends half a CONNECT and
    // stalls, and one that trickles a CONNECT a byte at a time (never idle, never done) are all
    // closed after the timeout, without any reply, and counted.
    let broker = TestBroker::start_with(|c| {
        c.mqtt.connect_timeout = DurationStr(Some(Duration::from_millis(300)));
    })
    .await;
    let mut w = Witness::start(&broker).await;
    let started = Instant::now();
    let mut silent = Raw::connect(&broker).await;
    let mut half = Raw::connect(&broker).await;
    let connect = connect_simple(V3, "half-connect", 60);
    half.send(&connect[..connect.len() / 2]).await;
    let trickle = Raw::connect(&broker).await;
    let (mut rd, mut wr) = trickle.stream.into_split();
    let trickler = tokio::spawn(async move {
        // The client's own pace, not synchronisation: one byte per 50 ms, for 5 s at most.
        for b in connect_simple(V3, "trickle", 60)
            .into_iter()
            .cycle()
            .take(100)
        {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    assert!(silent.expect_close().await.is_empty());
    assert!(half.expect_close().await.is_empty());
    let mut sink = Vec::new();
    within("trickling socket closed", async {
        use tokio::io::AsyncReadExt;
        let _ = rd.read_to_end(&mut sink).await;
    })
    .await;
    assert!(sink.is_empty(), "no CONNACK to an incomplete CONNECT");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "closed too late: {elapsed:?}"
    );
    trickler.abort();
    eventually("three connect timeouts counted", || {
        broker.broker().metrics.connect_timeouts.get() == 3
    })
    .await;
    assert_eq!(broker.broker().metrics.connects.get(), Witness::SESSIONS);
    w.check().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Keep alive
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn idle_client_is_disconnected_after_one_and_a_half_keep_alives() {
    // [MQTT-3.1.2-24 in 3.1.1], [MQTT-3.1.2-22 in 5.0]: nothing received within 1.5 x Keep
    // Alive closes the connection; v5 gets DISCONNECT 0x8D (Keep Alive timeout) first. The
    // connection ended abnormally, so the will is published.
    let broker = TestBroker::start().await;
    let mut w = Witness::start(&broker).await;
    let mut will_sub = v3::Client::connect(&broker, "will-sub").await;
    will_sub.subscribe("ka/will/#", v3::QoS::AtMostOnce).await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for v in BOTH {
        let topic = format!("ka/will/{}", v.level());
        let mut payload = s(format!("idle-{}", v.level()).as_bytes());
        if v.is_v5() {
            payload.push(0);
        }
        payload.extend_from_slice(&s(topic.as_bytes()));
        payload.extend_from_slice(&s(b"timed out"));
        let mut raw = Raw::connect(&broker).await;
        raw.version = v;
        raw.send(&connect(v, 0x02 | 0x04, 1, &[], &payload)).await;
        assert!(matches!(raw.recv().await, Some(Packet::Connack(_))));
        idle.push(raw);
    }
    for raw in &mut idle {
        expect_dropped(raw, ReasonCode::KeepAliveTimeout).await;
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400),
        "too early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "too late: {elapsed:?}");
    let mut wills = vec![
        will_sub.next_publish().await.topic,
        will_sub.next_publish().await.topic,
    ];
    wills.sort();
    assert_eq!(wills, ["ka/will/4", "ka/will/5"]);
    assert_eq!(broker.broker().metrics.keepalive_timeouts.get(), 2);
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn pinging_client_and_keep_alive_zero_stay_connected() {
    // [MQTT-3.1.2-24 in 3.1.1], [MQTT-3.1.2-22 in 5.0]: a client that sends PINGREQ in time is
    // not disconnected [MQTT-3.12.4-1 PINGRESP]; Keep Alive 0 turns the mechanism off. An idle
    // client with Keep Alive 1 is the clock: once it has been dropped, the Keep Alive 0 client
    // has been idle longer than that and must still be served.
    let broker = TestBroker::start().await;
    let mut clients = Vec::new();
    for v in BOTH {
        let mut zero = Raw::connect(&broker).await;
        zero.version = v;
        zero.send(&connect_simple(v, &format!("ka0-{}", v.level()), 0))
            .await;
        assert!(matches!(zero.recv().await, Some(Packet::Connack(_))));
        let mut pinger = Raw::connect(&broker).await;
        pinger.version = v;
        pinger
            .send(&connect_simple(v, &format!("pinger-{}", v.level()), 1))
            .await;
        assert!(matches!(pinger.recv().await, Some(Packet::Connack(_))));
        clients.push((zero, pinger));
    }
    let mut clock = Raw::connect(&broker).await;
    clock.version = V5;
    clock.send(&connect_simple(V5, "clock", 1)).await;
    assert!(matches!(clock.recv().await, Some(Packet::Connack(_))));
    let started = Instant::now();
    let clock_done = tokio::spawn(async move {
        expect_dropped(&mut clock, ReasonCode::KeepAliveTimeout).await;
    });
    // The pingers' own schedule: a PINGREQ every 500 ms (well inside 1 s) for 3 s.
    while started.elapsed() < Duration::from_secs(3) {
        for (_, pinger) in &mut clients {
            pinger.send(&PINGREQ).await;
            assert_eq!(pinger.recv().await, Some(Packet::Pingresp));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    within("clock client dropped", clock_done)
        .await
        .expect("clock task");
    for (zero, pinger) in &mut clients {
        zero.send(&PINGREQ).await;
        assert_eq!(
            zero.recv().await,
            Some(Packet::Pingresp),
            "keep alive 0 still served"
        );
        pinger.send(&PINGREQ).await;
        assert_eq!(pinger.recv().await, Some(Packet::Pingresp));
    }
    assert_eq!(
        broker.broker().metrics.keepalive_timeouts.get(),
        1,
        "only the clock"
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Connection caps
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_clients_refuses_the_extra_client_until_one_leaves() {
    // `mqtt.max_clients` = 2: a third CONNECT gets CONNACK 3 (Server unavailable, 3.1.1) or 0x97
    // (Quota exceeded, 5.0) and is closed [MQTT-3.2.2-5 in 3.1.1]; counted in
    // `connections_over_limit`. When a client leaves, a new one is accepted.
    let broker = TestBroker::start_with(|c| c.mqtt.max_clients = 2).await;
    let mut a = v3::Client::connect(&broker, "a").await;
    a.subscribe("cap/#", v3::QoS::AtLeastOnce).await;
    let mut b = v5::Client::connect(&broker, "b").await;

    let mut raw = Raw::connect(&broker).await;
    raw.send(&connect_simple(V3, "third-3", 60)).await;
    assert_eq!(raw.read_exact(4).await, [0x20, 0x02, 0x00, 0x03]);
    assert!(raw.expect_close().await.is_empty());
    let mut raw = Raw::connect(&broker).await;
    raw.version = V5;
    raw.send(&connect_simple(V5, "third-5", 60)).await;
    match raw.expect_close().await.as_slice() {
        [Packet::Connack(c)] => {
            assert_eq!(c.reason_code, ReasonCode::QuotaExceeded);
            assert!(!c.session_present, "[MQTT-3.2.2-6 in 5.0]");
        }
        other => panic!("expected CONNACK 0x97, got {other:?}"),
    }
    assert_eq!(broker.broker().metrics.connections_over_limit.get(), 2);
    // The two admitted clients are unaffected.
    b.publish("cap/x", v5::QoS::AtLeastOnce, false, b"still here")
        .await;
    assert_eq!(&a.next_publish().await.payload[..], b"still here");

    b.disconnect().await;
    eventually("b's connection gone", || {
        broker.broker().metrics.connections.get() == 1
    })
    .await;
    let mut c = v5::Client::connect(&broker, "c").await;
    c.publish("cap/y", v5::QoS::AtLeastOnce, false, b"newcomer")
        .await;
    assert_eq!(&a.next_publish().await.payload[..], b"newcomer");
    assert_eq!(broker.broker().metrics.connections_over_limit.get(), 2);
    broker.stop().await;
}

/// Sockets open through the default listener, as the listener reports them.
async fn listener_connections(broker: &TestBroker) -> usize {
    let t = Duration::from_secs(5);
    let sup = which_child(broker.node().root(), "listener_sup", t)
        .await
        .expect("root answers")
        .expect("listener_sup running");
    let sup: ActorRef<SupervisorMsg> = sup.into();
    let listener = which_child(&sup, "tcp:default", t)
        .await
        .expect("listener_sup answers")
        .expect("listener running");
    let listener: ActorRef<ListenerMsg> = listener.into();
    match listener.call(ListenerMsg::Inspect, Some(t)).await {
        Ok(CallResult::Success(info)) => info.connections,
        other => panic!("listener inspect failed: {other:?}"),
    }
}

#[tokio::test]
async fn listener_max_connections_closes_extra_sockets() {
    // `listeners.tcp.NAME.max_connections` = 2: the third socket is closed at accept, before any
    // MQTT is spoken, and counted in `connections_over_limit`; after one leaves, a new one is
    // accepted.
    let broker = TestBroker::start_with(|c| {
        if let Some(l) = c.listeners.tcp.get_mut("default") {
            l.max_connections = 2;
        }
    })
    .await;
    let mut a = v3::Client::connect(&broker, "a").await;
    a.subscribe("lcap/#", v3::QoS::AtLeastOnce).await;
    let b = v5::Client::connect(&broker, "b").await;

    let mut third = Raw::connect(&broker).await;
    // The socket may be gone before or after this write; either way nothing comes back.
    let _ = third
        .stream
        .write_all(&connect_simple(V3, "third", 60))
        .await;
    assert!(third.expect_close().await.is_empty());
    assert_eq!(broker.broker().metrics.connections_over_limit.get(), 1);
    assert_eq!(broker.broker().metrics.connects.get(), 2);

    b.disconnect().await;
    let deadline = Instant::now() + WAIT;
    while listener_connections(&broker).await != 1 {
        assert!(
            Instant::now() < deadline,
            "b's socket never left the listener"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut c = v5::Client::connect(&broker, "c").await;
    c.publish("lcap/y", v5::QoS::AtLeastOnce, false, b"newcomer")
        .await;
    assert_eq!(&a.next_publish().await.payload[..], b"newcomer");
    assert_eq!(listener_connections(&broker).await, 2);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Topic levels, client id length
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_topic_levels_limits_publish_and_subscribe() {
    // `mqtt.max_topic_levels` = 3: a PUBLISH to a deeper topic closes the connection (v5
    // DISCONNECT 0x90 Topic Name invalid); a deeper filter is refused in its SUBACK (v5 0x8F,
    // 3.1.1 0x80) while the other filters of the same SUBSCRIBE are granted [MQTT-3.9.3-1] and
    // the connection stays up.
    let broker = TestBroker::start_with(|c| c.mqtt.max_topic_levels = 3).await;
    let mut w = Witness::start(&broker).await;
    for v in BOTH {
        let bytes = publish(v, 1, false, b"a/b/c/d", Some(1), &[], b"deep");
        send_bad(
            &broker,
            v,
            &format!("deep-pub-{}", v.level()),
            &bytes,
            ReasonCode::TopicNameInvalid,
        )
        .await;
    }
    let mut sub3 = v3::Client::connect(&broker, "deep-sub3").await;
    sub3.client
        .subscribe_many(vec![
            rumqttc::SubscribeFilter::new("a/b/c/d".into(), v3::QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new("a/b/c".into(), v3::QoS::AtLeastOnce),
            rumqttc::SubscribeFilter::new("a/+/+/#".into(), v3::QoS::AtLeastOnce),
        ])
        .await
        .expect("queue SUBSCRIBE");
    match sub3
        .wait_for("SUBACK", |p| matches!(p, v3::Packet::SubAck(_)))
        .await
    {
        v3::Packet::SubAck(s) => assert_eq!(
            s.return_codes,
            [
                v3::SubscribeReasonCode::Failure,
                v3::SubscribeReasonCode::Success(v3::QoS::AtLeastOnce),
                v3::SubscribeReasonCode::Failure,
            ]
        ),
        _ => unreachable!(),
    }
    let mut sub5 = v5::Client::connect(&broker, "deep-sub5").await;
    let codes = sub5
        .subscribe_filter(v5::Filter::new("a/b/c/d", v5::QoS::AtLeastOnce), None)
        .await;
    assert_eq!(codes, [v5::SubscribeReasonCode::TopicFilterInvalid]);
    let codes = sub5
        .subscribe_filter(v5::Filter::new("a/b/+", v5::QoS::AtLeastOnce), None)
        .await;
    assert_eq!(
        codes,
        [v5::SubscribeReasonCode::Success(v5::QoS::AtLeastOnce)]
    );
    // Both subscribers are still connected and receive a three-level topic.
    let mut publ = v5::Client::connect(&broker, "deep-pub").await;
    publ.publish("a/b/c", v5::QoS::AtLeastOnce, false, b"three")
        .await;
    assert_eq!(sub3.next_publish().await.topic, "a/b/c");
    assert_eq!(&sub5.next_publish().await.topic[..], b"a/b/c");
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn client_identifier_longer_than_max_clientid_len_is_refused() {
    // `mqtt.max_clientid_len` = 23, the least the spec lets a server accept (3.1.1
    // [MQTT-3.1.3-5], 5.0 [MQTT-3.1.3-5]): a longer id gets 3.1.1 CONNACK 0x02 Identifier
    // rejected [MQTT-3.1.3-9 in 3.1.1] or 5.0 CONNACK 0x85 Client Identifier not valid
    // [MQTT-3.1.3-8 in 5.0]; then closed. Exactly 23 characters is accepted.
    let broker = TestBroker::start_with(|c| c.mqtt.max_clientid_len = 23).await;
    let mut w = Witness::start(&broker).await;
    let too_long = "x".repeat(24);
    let mut raw = Raw::connect(&broker).await;
    raw.send(&connect_simple(V3, &too_long, 60)).await;
    assert_eq!(raw.read_exact(4).await, [0x20, 0x02, 0x00, 0x02]);
    assert!(raw.expect_close().await.is_empty());
    let mut raw = Raw::connect(&broker).await;
    raw.version = V5;
    raw.send(&connect_simple(V5, &too_long, 60)).await;
    match raw.expect_close().await.as_slice() {
        [Packet::Connack(c)] => assert_eq!(c.reason_code, ReasonCode::ClientIdentifierNotValid),
        other => panic!("expected CONNACK 0x85, got {other:?}"),
    }
    assert_eq!(broker.broker().metrics.connects_refused.get(), 2);
    for v in BOTH {
        let _ok = session(&broker, v, &format!("{}{}", "y".repeat(22), v.level())).await;
    }
    w.check().await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Outbound inflight window
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_inflight_caps_the_window_below_the_clients_receive_maximum() {
    // `mqtt.max_inflight` = 2 while the v5 client allows 10 (Receive Maximum): at most 2 QoS 1
    // PUBLISH wait for PUBACK [MQTT-3.3.4-9 in 5.0 is the upper bound; the broker's own cap is
    // lower]; each PUBACK lets exactly one more go. 3.1.1 has no Receive Maximum: the cap alone
    // applies. Order is kept [MQTT-4.6.0-6].
    // A PINGREQ from the subscriber is the marker: the actor handles it after the deliveries
    // already in its mailbox, so a PUBLISH beyond the window would come before the PINGRESP.
    let broker = TestBroker::start_with(|c| c.mqtt.max_inflight = 2).await;
    let mut publ = v5::Client::connect(&broker, "inflight-pub").await;
    for v in BOTH {
        let props: &[u8] = if v.is_v5() { &[0x21, 0x00, 0x0A] } else { &[] };
        let id = format!("inflight-{}", v.level());
        let mut sub = Raw::connect(&broker).await;
        sub.version = v;
        sub.send(&connect(v, 0x02, 60, props, &s(id.as_bytes())))
            .await;
        assert!(matches!(sub.recv().await, Some(Packet::Connack(_))));
        let topic = format!("inflight/{}", v.level());
        sub.send(&subscribe(v, 1, &[], &[(topic.as_bytes(), 1)]))
            .await;
        assert!(matches!(sub.recv().await, Some(Packet::Suback(_))));
        let sent_before = broker.broker().metrics.messages_sent.get();

        for i in 0..5u8 {
            publ.publish(&topic, v5::QoS::AtLeastOnce, false, &[i])
                .await;
        }
        // The PUBACKs above mean all five deliveries are in the subscriber's mailbox.
        let mut ids = Vec::new();
        let expect_publish = |p: Option<Packet>, n: u8, ids: &mut Vec<u16>| match p {
            Some(Packet::Publish(p)) => {
                assert_eq!(p.qos, QoS::AtLeastOnce);
                assert_eq!(&p.payload[..], &[n], "in order");
                ids.push(p.packet_id.expect("QoS 1 has an id"));
            }
            other => panic!("expected PUBLISH {n}, got {other:?}"),
        };
        sub.send(&PINGREQ).await;
        expect_publish(sub.recv().await, 0, &mut ids);
        expect_publish(sub.recv().await, 1, &mut ids);
        assert_eq!(
            sub.recv().await,
            Some(Packet::Pingresp),
            "no third PUBLISH in flight"
        );
        assert_eq!(broker.broker().metrics.messages_sent.get(), sent_before + 2);

        for n in 2..5u8 {
            let oldest = ids.remove(0);
            let mut bytes = ack(0x40, oldest);
            bytes.extend_from_slice(&PINGREQ);
            sub.send(&bytes).await;
            expect_publish(sub.recv().await, n, &mut ids);
            assert_eq!(
                sub.recv().await,
                Some(Packet::Pingresp),
                "one PUBACK, one more"
            );
        }
        assert_eq!(broker.broker().metrics.messages_sent.get(), sent_before + 5);
    }
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Maximum QoS, Retain Available
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_qos_allowed_1_is_advertised_and_enforced() {
    // `mqtt.max_qos_allowed` = 1. 5.0: CONNACK Maximum QoS 1 [MQTT-3.2.2-9]; SUBSCRIBE at QoS 2 is
    // accepted and granted QoS 1 [MQTT-3.2.2-10]; a QoS 2 PUBLISH, which the client must not
    // send [MQTT-3.2.2-11], gets DISCONNECT 0x9B (§3.2.2.3.4); a will at QoS 2 is refused with
    // CONNACK 0x9B [MQTT-3.2.2-12]. 3.1.1: granted QoS 1 in SUBACK [MQTT-3.8.4-6 in 3.1.1
    // allows a lower grant], and a QoS 2 PUBLISH closes the connection.
    let broker = TestBroker::start_with(|c| c.mqtt.max_qos_allowed = 1).await;
    let mut w = Witness::start(&broker).await;
    let mut sub5 = v5::Client::connect(&broker, "mq-sub5").await;
    let props = sub5.connack.properties.clone().expect("CONNACK properties");
    assert_eq!(props.max_qos, Some(1));
    let codes = sub5.subscribe("mq/#", v5::QoS::ExactlyOnce).await;
    assert_eq!(
        codes,
        [v5::SubscribeReasonCode::Success(v5::QoS::AtLeastOnce)]
    );
    let mut sub3 = v3::Client::connect(&broker, "mq-sub3").await;
    let codes = sub3.subscribe("mq/#", v3::QoS::ExactlyOnce).await;
    assert_eq!(
        codes,
        [v3::SubscribeReasonCode::Success(v3::QoS::AtLeastOnce)]
    );

    for v in BOTH {
        let bytes = publish(v, 2, false, b"mq/two", Some(9), &[], b"2");
        send_bad(
            &broker,
            v,
            &format!("mq-pub-{}", v.level()),
            &bytes,
            ReasonCode::QoSNotSupported,
        )
        .await;
    }
    // The will case.
    let mut payload = s(b"mq-will");
    payload.push(0);
    payload.extend_from_slice(&s(b"mq/will"));
    payload.extend_from_slice(&s(b"w"));
    let mut raw = Raw::connect(&broker).await;
    raw.version = V5;
    raw.send(&connect(V5, 0x02 | 0x04 | 0x10, 60, &[], &payload))
        .await;
    match raw.expect_close().await.as_slice() {
        [Packet::Connack(c)] => assert_eq!(c.reason_code, ReasonCode::QoSNotSupported),
        other => panic!("expected CONNACK 0x9B, got {other:?}"),
    }

    // QoS 1 still flows, and nothing of the refused QoS 2 PUBLISHes was routed.
    let mut publ = v5::Client::connect(&broker, "mq-pub").await;
    publ.publish("mq/one", v5::QoS::AtLeastOnce, false, b"1")
        .await;
    let p = sub5.next_publish().await;
    assert_eq!(
        (&p.topic[..], p.qos),
        (&b"mq/one"[..], v5::QoS::AtLeastOnce)
    );
    let p = sub3.next_publish().await;
    assert_eq!((p.topic.as_str(), p.qos), ("mq/one", v3::QoS::AtLeastOnce));
    w.check().await;
    broker.stop().await;
}

#[tokio::test]
async fn retain_unavailable_is_advertised_and_enforced() {
    // `mqtt.retain_available` = false. 5.0: CONNACK Retain Available 0 (§3.2.2.3.5); a retained
    // PUBLISH, which the client must not send [MQTT-3.2.2-14], gets DISCONNECT 0x9A; a will with
    // Will Retain is refused with CONNACK 0x9A [MQTT-3.2.2-13]. 3.1.1 has no way to say it: a
    // retained PUBLISH closes the connection. Nothing is stored.
    let broker = TestBroker::start_with(|c| c.mqtt.retain_available = false).await;
    let mut w = Witness::start(&broker).await;
    let sub5 = v5::Client::connect(&broker, "ra-sub5").await;
    let props = sub5.connack.properties.clone().expect("CONNACK properties");
    assert_eq!(props.retain_available, Some(0));
    for v in BOTH {
        let bytes = publish(v, 1, true, b"ra/kept", Some(3), &[], b"r");
        send_bad(
            &broker,
            v,
            &format!("ra-pub-{}", v.level()),
            &bytes,
            ReasonCode::RetainNotSupported,
        )
        .await;
    }
    let mut payload = s(b"ra-will");
    payload.push(0);
    payload.extend_from_slice(&s(b"ra/will"));
    payload.extend_from_slice(&s(b"w"));
    let mut raw = Raw::connect(&broker).await;
    raw.version = V5;
    raw.send(&connect(V5, 0x02 | 0x04 | 0x20, 60, &[], &payload))
        .await;
    match raw.expect_close().await.as_slice() {
        [Packet::Connack(c)] => assert_eq!(c.reason_code, ReasonCode::RetainNotSupported),
        other => panic!("expected CONNACK 0x9A, got {other:?}"),
    }
    assert_eq!(broker.broker().retained.len(), 0);
    w.check().await;
    broker.stop().await;
}
