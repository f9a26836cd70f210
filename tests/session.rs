//! Session semantics, 3.1.1 and 5.0: Clean Session / Clean Start and Session Present, persistent
//! sessions and their bounded offline queue, redelivery on resumption (DUP, PUBREL), exactly
//! once across reconnects, v5 Session Expiry, client id takeover, assigned client identifiers,
//! and ordering across a reconnect of the subscriber.
//!
//! Statement ids are given per version: "3.1.1" ids come from docs/spec/mqtt-3.1.1-statements.tsv,
//! "5.0" ids from docs/spec/mqtt-5.0-statements.tsv (the two number differently).

mod common;

use std::time::Duration;

use beamq_actors::config::{DropPolicyConfig, DurationStr};
use beamq_protocol::{Packet, QoS, ReasonCode};
use common::either::{Client, Msg, Opts, V};
use common::*;

/// A CONNECT for `Raw`: Clean Session/Start `clean`, keep alive 60, and for v5 a Session Expiry
/// Interval when `expiry` > 0.
fn raw_connect(v: V, id: &str, clean: bool, expiry: u32) -> Vec<u8> {
    let props = if v.is_v5() && expiry > 0 {
        wire::prop_u32(0x11, expiry)
    } else {
        Vec::new()
    };
    wire::connect(v.is_v5(), id, clean, 60, &props, None)
}

/// Opens a raw session and checks that CONNACK accepts it; returns the Session Present flag.
async fn raw_session(broker: &TestBroker, v: V, id: &str, clean: bool) -> (Raw, bool) {
    let (raw, connack) =
        Raw::start_session(broker, v.is_v5(), &raw_connect(v, id, clean, 300)).await;
    assert_eq!(connack.reason_code, ReasonCode::Success, "CONNACK refused");
    (raw, connack.session_present)
}

fn payloads(msgs: &[Msg]) -> Vec<Vec<u8>> {
    msgs.iter().map(|m| m.payload.clone()).collect()
}

async fn receive(c: &mut Client, n: usize) -> Vec<Msg> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(c.next_msg().await);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Clean Session / Clean Start and Session Present
// ---------------------------------------------------------------------------------------------

async fn session_present_and_clean_session(v: V) {
    let broker = TestBroker::start().await;
    let mut publ = Client::clean(&broker, v, "sp-pub").await;

    // No stored session: Session Present 0 (3.1.1 [MQTT-3.2.2-3]; 5.0 [MQTT-3.2.2-3],
    // [MQTT-3.1.2-6]).
    let mut c = Client::connect(&broker, v, "sp", &Opts::persistent()).await;
    assert!(!c.session_present(), "no session was stored yet");
    c.subscribe("sp/t", 1).await;
    c.disconnect().await;

    // Stored session: Session Present 1 and the subscription is still there (3.1.1
    // [MQTT-3.2.2-2], [MQTT-3.1.2-4]; 5.0 [MQTT-3.2.2-3], [MQTT-3.1.2-5]).
    let mut c = Client::connect(&broker, v, "sp", &Opts::persistent()).await;
    assert!(c.session_present(), "the session was stored");
    publ.publish("sp/t", 1, false, b"still subscribed").await;
    assert_eq!(c.next_msg().await.payload, b"still subscribed");
    c.disconnect().await;

    // Clean: Session Present 0 and the old session is discarded, subscriptions included
    // (3.1.1 [MQTT-3.2.2-1], [MQTT-3.1.2-6]; 5.0 [MQTT-3.2.2-2], [MQTT-3.1.2-4]).
    let mut c = Client::clean(&broker, v, "sp").await;
    assert!(
        !c.session_present(),
        "clean session must not report a session"
    );
    c.subscribe("sp/marker", 1).await;
    publ.publish("sp/t", 1, false, b"old subscription").await;
    publ.publish("sp/marker", 1, false, b"marker").await;
    assert_eq!(
        c.next_msg().await.payload,
        b"marker",
        "the discarded session's subscription must not deliver"
    );
    // sp/marker only.
    assert_eq!(broker.broker().routes.subscription_count(), 1);
    c.disconnect().await;

    // The clean session lasted as long as its connection: nothing is resumed from it
    // (3.1.1 [MQTT-3.1.2-6]; 5.0: Session Expiry 0 ends it at the close, [MQTT-3.1.2-6]).
    let c = Client::connect(&broker, v, "sp", &Opts::persistent()).await;
    assert!(!c.session_present());
    assert_eq!(broker.broker().routes.subscription_count(), 0);
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_session_present_and_clean_session() {
    session_present_and_clean_session(V::V311).await;
}

#[tokio::test]
async fn v5_session_present_and_clean_start() {
    session_present_and_clean_session(V::V5).await;
}

// ---------------------------------------------------------------------------------------------
// Persistent sessions and the offline queue
// ---------------------------------------------------------------------------------------------

async fn offline_messages_are_queued(v: V) {
    let broker = TestBroker::start().await;
    let mut sub = Client::connect(&broker, v, "off", &Opts::persistent()).await;
    sub.subscribe("off/#", 2).await;
    sub.disconnect().await;

    // Published while the subscriber is away. The QoS 2 publish completes only after the QoS 0
    // and 1 ones were routed (one connection, handled in order).
    let mut publ = Client::clean(&broker, v, "off-pub").await;
    publ.publish("off/0", 0, false, b"zero").await;
    publ.publish("off/1", 1, false, b"one").await;
    publ.publish("off/2", 2, false, b"two").await;

    // 3.1.1 [MQTT-3.1.2-5]: QoS 1 and 2 messages are stored for the session; QoS 0 may be, and
    // is with the default mqtt.queue_qos0 = true (as Mosquitto's queue_qos0_messages and EMQX's
    // mqueue_store_qos0). 5.0 [MQTT-3.1.2-23] the session state is kept while it has not
    // expired; 4.1 lists queued messages as part of it.
    let mut sub = Client::connect(&broker, v, "off", &Opts::persistent()).await;
    assert!(sub.session_present());
    let got = receive(&mut sub, 3).await;
    let summary: Vec<(String, u8, Vec<u8>)> = got
        .iter()
        .map(|m| (m.topic.clone(), m.qos, m.payload.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("off/0".to_string(), 0, b"zero".to_vec()),
            ("off/1".to_string(), 1, b"one".to_vec()),
            ("off/2".to_string(), 2, b"two".to_vec()),
        ]
    );
    assert!(got.iter().all(|m| !m.dup), "first delivery has DUP 0");
    assert_eq!(broker.broker().metrics.messages_dropped(), 0);
    sub.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_offline_messages_are_queued_for_a_persistent_session() {
    offline_messages_are_queued(V::V311).await;
}

#[tokio::test]
async fn v5_offline_messages_are_queued_while_the_session_lives() {
    offline_messages_are_queued(V::V5).await;
}

async fn qos0_not_queued_when_disabled(v: V) {
    let broker = TestBroker::start_with(|c| c.mqtt.queue_qos0 = false).await;
    let mut sub = Client::connect(&broker, v, "q0", &Opts::persistent()).await;
    sub.subscribe("q0/#", 1).await;
    sub.disconnect().await;

    let mut publ = Client::clean(&broker, v, "q0-pub").await;
    publ.publish("q0/a", 0, false, b"qos0").await;
    publ.publish("q0/b", 1, false, b"qos1").await;

    let mut sub = Client::connect(&broker, v, "q0", &Opts::persistent()).await;
    assert!(sub.session_present());
    let m = sub.next_msg().await;
    assert_eq!(
        m.payload, b"qos1",
        "QoS 0 must not be queued with queue_qos0 = false"
    );
    let drops = &broker.broker().metrics.dropped;
    assert_eq!(drops.qos0_not_queued.get(), 1);
    assert_eq!(broker.broker().metrics.messages_dropped(), 1);
    sub.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_qos0_is_not_queued_when_queue_qos0_is_off() {
    qos0_not_queued_when_disabled(V::V311).await;
}

#[tokio::test]
async fn v5_qos0_is_not_queued_when_queue_qos0_is_off() {
    qos0_not_queued_when_disabled(V::V5).await;
}

/// Publishes `n` QoS 1 messages "0", "1", ... while the subscriber is away, reconnects it and
/// returns what it receives before a marker published afterwards.
async fn offline_overflow(
    v: V,
    policy: DropPolicyConfig,
    limit: usize,
    n: usize,
) -> (TestBroker, Vec<Vec<u8>>) {
    let broker = TestBroker::start_with(|c| {
        c.mqtt.max_queued_messages = limit;
        c.mqtt.drop_policy = policy;
    })
    .await;
    let mut sub = Client::connect(&broker, v, "ovf", &Opts::persistent()).await;
    sub.subscribe("ovf/#", 1).await;
    sub.disconnect().await;

    let mut publ = Client::clean(&broker, v, "ovf-pub").await;
    for i in 0..n {
        publ.publish("ovf/t", 1, false, i.to_string().as_bytes())
            .await;
    }
    let mut sub = Client::connect(&broker, v, "ovf", &Opts::persistent()).await;
    assert!(sub.session_present());
    // The marker goes after the queue has been handed over: it is the last thing received.
    publ.publish("ovf/marker", 1, false, b"marker").await;
    let mut got = Vec::new();
    loop {
        let m = sub.next_msg().await;
        if m.payload == b"marker" {
            break;
        }
        got.push(m.payload);
    }
    sub.disconnect().await;
    (broker, got)
}

fn numbered(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| i.to_string().into_bytes()).collect()
}

async fn offline_queue_drop_oldest(v: V) {
    // The queue is bounded (DESIGN §4); the default policy drops the oldest, as EMQX's mqueue
    // and Mosquitto's max_queued_messages do, and counts every drop.
    let (broker, got) = offline_overflow(v, DropPolicyConfig::DropOldest, 5, 8).await;
    assert_eq!(got, numbered(3..8), "the newest N, in order");
    assert_eq!(broker.broker().metrics.dropped.queue_full.get(), 3);
    broker.stop().await;
}

#[tokio::test]
async fn v311_offline_queue_is_bounded_drop_oldest() {
    offline_queue_drop_oldest(V::V311).await;
}

#[tokio::test]
async fn v5_offline_queue_is_bounded_drop_oldest() {
    offline_queue_drop_oldest(V::V5).await;
}

async fn offline_queue_drop_newest(v: V) {
    let (broker, got) = offline_overflow(v, DropPolicyConfig::DropNewest, 5, 8).await;
    assert_eq!(got, numbered(0..5), "the first N, in order");
    assert_eq!(broker.broker().metrics.dropped.queue_full.get(), 3);
    broker.stop().await;
}

#[tokio::test]
async fn v311_offline_queue_is_bounded_drop_newest() {
    offline_queue_drop_newest(V::V311).await;
}

#[tokio::test]
async fn v5_offline_queue_is_bounded_drop_newest() {
    offline_queue_drop_newest(V::V5).await;
}

// ---------------------------------------------------------------------------------------------
// Redelivery on resumption
// ---------------------------------------------------------------------------------------------

async fn qos1_unacked_are_resent_with_dup(v: V) {
    // 3.1.1 and 5.0 [MQTT-4.4.0-1]: on resumption unacknowledged PUBLISH packets are resent with
    // their original packet identifiers; [MQTT-3.3.1-1] with DUP 1.
    let broker = TestBroker::start().await;
    let mut sub = Client::connect(&broker, v, "dup", &Opts::persistent().manual_acks()).await;
    sub.subscribe("dup/t", 1).await;
    let mut publ = Client::clean(&broker, v, "dup-pub").await;
    for p in [b"a", b"b", b"c"] {
        publ.publish("dup/t", 1, false, p).await;
    }
    let first = receive(&mut sub, 3).await;
    assert_eq!(
        payloads(&first),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert!(first.iter().all(|m| !m.dup && m.qos == 1));
    // "a" is acknowledged; the SUBACK that follows proves the PUBACK was handled (one
    // connection, in order). "b" and "c" are not.
    sub.ack(&first[0]).await;
    sub.subscribe("dup/sync", 1).await;
    sub.kill();

    let mut sub = Client::connect(&broker, v, "dup", &Opts::persistent()).await;
    assert!(sub.session_present());
    let again = receive(&mut sub, 2).await;
    assert_eq!(payloads(&again), vec![b"b".to_vec(), b"c".to_vec()]);
    for (resent, original) in again.iter().zip(&first[1..]) {
        assert!(resent.dup, "[MQTT-3.3.1-1] a redelivered PUBLISH has DUP 1");
        assert_eq!(
            resent.pkid, original.pkid,
            "[MQTT-4.4.0-1] original packet identifier"
        );
        assert_eq!(resent.qos, 1);
    }
    // Now acknowledged (automatic acks): nothing is resent on the next resumption, and new
    // messages go with DUP 0.
    sub.disconnect().await;
    let mut sub = Client::connect(&broker, v, "dup", &Opts::persistent()).await;
    assert!(sub.session_present());
    publ.publish("dup/t", 1, false, b"new").await;
    let m = sub.next_msg().await;
    assert_eq!(
        m.payload, b"new",
        "acknowledged messages must not come back"
    );
    assert!(!m.dup);
    sub.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_unacknowledged_qos1_is_resent_with_dup_and_same_packet_id() {
    qos1_unacked_are_resent_with_dup(V::V311).await;
}

#[tokio::test]
async fn v5_unacknowledged_qos1_is_resent_with_dup_and_same_packet_id() {
    qos1_unacked_are_resent_with_dup(V::V5).await;
}

async fn qos2_pubrel_is_resent(v: V) {
    // A raw subscriber, because rumqttc refuses a PUBREL it does not know (it keeps no state
    // across event loops). 3.1.1 and 5.0 [MQTT-4.4.0-1]: unacknowledged PUBLISH and PUBREL
    // packets are resent with their identifiers; 5.0 [MQTT-4.3.3-6] (3.1.1 [MQTT-4.3.3-1]) a
    // PUBLISH whose PUBREL was sent is not resent.
    let broker = TestBroker::start().await;
    let (mut raw, present) = raw_session(&broker, v, "q2sub", false).await;
    assert!(!present);
    raw.send(&wire::subscribe(v.is_v5(), 1, "q2/t", 2)).await;
    assert!(matches!(raw.next_packet().await, Packet::Suback(_)));

    let mut publ = Client::clean(&broker, v, "q2pub").await;
    publ.publish("q2/t", 2, false, b"m1").await;
    publ.publish("q2/t", 2, false, b"m2").await;
    let mut ids = Vec::new();
    for expected in [&b"m1"[..], b"m2"] {
        match raw.next_packet().await {
            Packet::Publish(p) => {
                assert_eq!(&p.payload[..], expected);
                assert_eq!(p.qos, QoS::ExactlyOnce);
                assert!(!p.dup);
                ids.push(p.packet_id.expect("QoS 2 has a packet id"));
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    let (p1, p2) = (ids[0], ids[1]);
    // PUBREC for m1 only; the broker answers PUBREL, which we leave without PUBCOMP.
    raw.send(&wire::pubrec(p1)).await;
    match raw.next_packet().await {
        Packet::Pubrel(a) => assert_eq!(a.packet_id, p1),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    drop(raw);

    let (mut raw, present) = raw_session(&broker, v, "q2sub", false).await;
    assert!(present);
    let mut pubrel = None;
    let mut republish = None;
    for _ in 0..2 {
        match raw.next_packet().await {
            Packet::Pubrel(a) => pubrel = Some(a.packet_id),
            Packet::Publish(p) => republish = Some(p),
            other => panic!("expected PUBREL or PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(pubrel, Some(p1), "PUBREL resent with its identifier");
    let p = republish.expect("m2 resent");
    assert_eq!(
        &p.payload[..],
        b"m2",
        "m1 (PUBREL sent) must not be resent as PUBLISH"
    );
    assert!(p.dup, "[MQTT-3.3.1-1]");
    assert_eq!(p.packet_id, Some(p2));

    // Finish both exchanges.
    raw.send(&wire::pubcomp(p1)).await;
    raw.send(&wire::pubrec(p2)).await;
    match raw.next_packet().await {
        Packet::Pubrel(a) => assert_eq!(a.packet_id, p2),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    raw.send(&wire::pubcomp(p2)).await;
    // Nothing else is owed: the next packet is a new message, DUP 0.
    publ.publish("q2/t", 2, false, b"m3").await;
    match raw.next_packet().await {
        Packet::Publish(p) => {
            assert_eq!(&p.payload[..], b"m3");
            assert!(!p.dup);
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn v311_qos2_pubrel_is_resent_on_resumption() {
    qos2_pubrel_is_resent(V::V311).await;
}

#[tokio::test]
async fn v5_qos2_pubrel_is_resent_on_resumption() {
    qos2_pubrel_is_resent(V::V5).await;
}

async fn qos2_inbound_exactly_once_across_reconnect(v: V) {
    // The broker as QoS 2 receiver: it owns the message once it sent PUBREC, and a resend with
    // the same identifier on the resumed session is acknowledged again but not delivered again
    // (3.1.1 [MQTT-4.3.3-2]; 5.0 [MQTT-4.3.3-8], [MQTT-4.3.3-10], [MQTT-4.3.3-11]; resend on
    // resumption [MQTT-4.4.0-1]).
    let broker = TestBroker::start().await;
    let mut sub = Client::clean(&broker, v, "eo-sub").await;
    sub.subscribe("eo/#", 2).await;

    let (mut raw, _) = raw_session(&broker, v, "eo-pub", false).await;
    raw.send(&wire::publish(
        v.is_v5(),
        "eo/t",
        2,
        false,
        false,
        7,
        &[],
        b"once",
    ))
    .await;
    match raw.next_packet().await {
        Packet::Pubrec(a) => assert_eq!(a.packet_id, 7),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    drop(raw);

    let (mut raw, present) = raw_session(&broker, v, "eo-pub", false).await;
    assert!(
        present,
        "the publisher's session (with packet 7 unreleased) is resumed"
    );
    raw.send(&wire::publish(
        v.is_v5(),
        "eo/t",
        2,
        false,
        true,
        7,
        &[],
        b"once",
    ))
    .await;
    match raw.next_packet().await {
        Packet::Pubrec(a) => assert_eq!(a.packet_id, 7),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    raw.send(&wire::pubrel(7)).await;
    match raw.next_packet().await {
        Packet::Pubcomp(a) => {
            assert_eq!(a.packet_id, 7);
            assert_eq!(a.reason_code, ReasonCode::Success, "packet 7 was known");
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    raw.send(&wire::publish(
        v.is_v5(),
        "eo/marker",
        1,
        false,
        false,
        8,
        &[],
        b"marker",
    ))
    .await;
    match raw.next_packet().await {
        Packet::Puback(a) => assert_eq!(a.packet_id, 8),
        other => panic!("expected PUBACK, got {other:?}"),
    }

    let m = sub.next_msg().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("eo/t", &b"once"[..]));
    let m = sub.next_msg().await;
    assert_eq!(
        m.payload, b"marker",
        "the QoS 2 message must arrive exactly once"
    );
    broker.stop().await;
}

#[tokio::test]
async fn v311_inbound_qos2_is_delivered_exactly_once_across_reconnect() {
    qos2_inbound_exactly_once_across_reconnect(V::V311).await;
}

#[tokio::test]
async fn v5_inbound_qos2_is_delivered_exactly_once_across_reconnect() {
    qos2_inbound_exactly_once_across_reconnect(V::V5).await;
}

// ---------------------------------------------------------------------------------------------
// v5 Session Expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v5_session_expires_after_its_interval() {
    // 5.0 [MQTT-3.1.2-23] kept after the close while the interval runs; [MQTT-4.1.0-2]
    // discarded once it has passed; then [MQTT-3.2.2-3] Session Present 0.
    let broker = TestBroker::start().await;
    let opts = Opts {
        session_expiry: 1,
        ..Opts::persistent()
    };
    let mut c = Client::connect(&broker, V::V5, "exp", &opts).await;
    c.subscribe("exp/t", 1).await;
    c.disconnect().await;
    // Still there right after the close (the interval is a whole second).
    assert_eq!(broker.broker().sessions.len(), 1);
    assert_eq!(broker.broker().routes.subscription_count(), 1);
    let m = &broker.broker().metrics;
    eventually("session expiry", || m.sessions_expired.get() == 1).await;
    eventually("session removed", || broker.broker().sessions.is_empty()).await;
    eventually("routes removed", || {
        broker.broker().routes.subscription_count() == 0
    })
    .await;
    let c = Client::connect(&broker, V::V5, "exp", &opts).await;
    assert!(
        !c.session_present(),
        "the expired session must not be resumed"
    );
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_persistent_session_expires_after_the_configured_interval() {
    // 3.1.1 has no Session Expiry; §3.1.2.4 lets the server discard a session "in response to
    // an administrator command or automatically based on a time limit" (EMQX's
    // session_expiry_interval, Mosquitto's persistent_client_expiration). mqtt.session_expiry_interval
    // is that limit here.
    let broker = TestBroker::start_with(|c| {
        c.mqtt.session_expiry_interval = DurationStr(Some(Duration::from_secs(1)))
    })
    .await;
    let mut c = Client::connect(&broker, V::V311, "exp3", &Opts::persistent()).await;
    c.subscribe("exp3/t", 1).await;
    c.disconnect().await;
    assert_eq!(broker.broker().sessions.len(), 1);
    let m = &broker.broker().metrics;
    eventually("session expiry", || m.sessions_expired.get() == 1).await;
    eventually("session removed", || broker.broker().sessions.is_empty()).await;
    // [MQTT-3.2.2-3] no stored session any more.
    let c = Client::connect(&broker, V::V311, "exp3", &Opts::persistent()).await;
    assert!(!c.session_present());
    assert_eq!(broker.broker().routes.subscription_count(), 0);
    c.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn v5_session_expiry_zero_at_disconnect_ends_the_session_at_once() {
    // 5.0 §3.14.2.2.2: the client may change the Session Expiry Interval on DISCONNECT; 0 ends
    // the session with the connection ([MQTT-4.1.0-2]).
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw_session(&broker, V::V5, "dz", false).await;
    raw.send(&wire::subscribe(true, 1, "dz/t", 1)).await;
    assert!(matches!(raw.next_packet().await, Packet::Suback(_)));
    raw.send(&wire::disconnect_v5(0x00, &wire::prop_u32(0x11, 0)))
        .await;
    assert!(
        raw.expect_close().await.is_empty(),
        "the server sends nothing back"
    );
    eventually("session ended", || broker.broker().sessions.is_empty()).await;
    eventually("routes removed", || {
        broker.broker().routes.subscription_count() == 0
    })
    .await;
    let (_raw, present) = raw_session(&broker, V::V5, "dz", false).await;
    assert!(!present);
    broker.stop().await;
}

#[tokio::test]
async fn v5_session_expiry_shortened_at_disconnect() {
    // 5.0 §3.14.2.2.2: CONNECT asked for 300 s, DISCONNECT says 1 s; the session ends after 1 s.
    let broker = TestBroker::start().await;
    let (mut raw, _) = raw_session(&broker, V::V5, "ds", false).await;
    raw.send(&wire::disconnect_v5(0x00, &wire::prop_u32(0x11, 1)))
        .await;
    raw.expect_close().await;
    let m = &broker.broker().metrics;
    eventually("session expiry", || m.sessions_expired.get() == 1).await;
    eventually("session removed", || broker.broker().sessions.is_empty()).await;
    broker.stop().await;
}

#[tokio::test]
async fn v5_nonzero_session_expiry_at_disconnect_after_zero_is_a_protocol_error() {
    // 5.0 §3.14.2.2.2: "If the Session Expiry Interval in the CONNECT packet was zero, then it is
    // a Protocol Error to set a non-zero Session Expiry Interval in the DISCONNECT packet sent
    // by the Client" (no statement id; the broker's comment cites [MQTT-3.14.2-2], which is the
    // rule checked second here: the server never sends Session Expiry on its DISCONNECT).
    // [MQTT-4.13.1-1] the server answers with DISCONNECT 0x82 and closes.
    let broker = TestBroker::start().await;
    let connect = wire::connect(true, "dnz", true, 60, &[], None);
    let (mut raw, _) = Raw::start_session(&broker, true, &connect).await;
    raw.send(&wire::disconnect_v5(0x00, &wire::prop_u32(0x11, 60)))
        .await;
    let got = raw.expect_close().await;
    match got.as_slice() {
        [Packet::Disconnect(d)] => {
            assert_eq!(d.reason_code, ReasonCode::ProtocolError);
            assert_eq!(
                d.properties.session_expiry_interval, None,
                "[MQTT-3.14.2-2] no Session Expiry on a server DISCONNECT"
            );
        }
        other => panic!("expected one DISCONNECT 0x82, got {other:?}"),
    }
    assert_eq!(broker.broker().metrics.protocol_errors.get(), 1);
    // The expiry stays 0: the session ends with the connection.
    eventually("session ended", || broker.broker().sessions.is_empty()).await;
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Client identifier takeover
// ---------------------------------------------------------------------------------------------

/// Expects the broker to close a connection that was taken over: 3.1.1 has no server
/// DISCONNECT; v5 gets DISCONNECT 0x8E first ([MQTT-3.1.4-3]).
///
/// The first connection is raw because rumqttc 0.25 loses a DISCONNECT whose Remaining Length is
/// 1 (reason code only, property length omitted as 5.0 §3.14.2.2.1 allows, and as Mosquitto
/// also sends it): it reports the close as ConnectionAborted instead.
async fn expect_taken_over(v: V, raw: &mut Raw) {
    let got = raw.expect_close().await;
    if v.is_v5() {
        match got.as_slice() {
            [Packet::Disconnect(d)] => {
                assert_eq!(
                    d.reason_code,
                    ReasonCode::SessionTakenOver,
                    "[MQTT-3.1.4-3]"
                )
            }
            other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
        }
    } else {
        assert!(got.is_empty(), "3.1.1 has no server DISCONNECT: {got:?}");
    }
}

async fn takeover_closes_the_first_connection(v: V) {
    // 3.1.1 [MQTT-3.1.4-2] the existing client is disconnected; 5.0 [MQTT-3.1.4-3] it gets
    // DISCONNECT 0x8E first. Clean Session/Start 0: the session carries over (3.1.1
    // [MQTT-3.1.2-4], [MQTT-3.2.2-2]; 5.0 [MQTT-3.1.2-5], [MQTT-3.2.2-3]).
    let broker = TestBroker::start().await;
    let (mut a, _) = raw_session(&broker, v, "to", false).await;
    a.send(&wire::subscribe(v.is_v5(), 1, "to/t", 1)).await;
    assert!(matches!(a.next_packet().await, Packet::Suback(_)));
    let mut b = Client::connect(&broker, v, "to", &Opts::persistent()).await;
    assert!(b.session_present(), "the live session is handed over");
    expect_taken_over(v, &mut a).await;
    let m = &broker.broker().metrics;
    assert_eq!(m.takeovers.get(), 1);
    eventually("one connection left", || m.connections.get() == 1).await;
    assert_eq!(broker.broker().sessions.len(), 1);

    let mut publ = Client::clean(&broker, v, "to-pub").await;
    publ.publish("to/t", 1, false, b"to b").await;
    assert_eq!(b.next_msg().await.payload, b"to b");
    b.subscribe("to/marker", 1).await;
    assert_eq!(broker.broker().routes.subscription_count(), 2);
    b.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_takeover_closes_the_first_connection_and_keeps_the_session() {
    takeover_closes_the_first_connection(V::V311).await;
}

#[tokio::test]
async fn v5_takeover_sends_0x8e_and_keeps_the_session() {
    takeover_closes_the_first_connection(V::V5).await;
}

async fn takeover_carries_inflight_and_queued(v: V) {
    // With a window of 1, "1" is in flight (unacknowledged) and "2", "3" are queued when the
    // second connection takes over: all of it moves, in order, "1" as a resend (DUP 1, same
    // identifier: [MQTT-4.4.0-1], [MQTT-3.3.1-1]).
    let broker = TestBroker::start_with(|c| c.mqtt.max_inflight = 1).await;
    let mut a = Client::connect(&broker, v, "tq", &Opts::persistent().manual_acks()).await;
    a.subscribe("tq/t", 1).await;
    let mut publ = Client::clean(&broker, v, "tq-pub").await;
    for p in [b"1", b"2", b"3"] {
        publ.publish("tq/t", 1, false, p).await;
    }
    let first = a.next_msg().await;
    assert_eq!(first.payload, b"1");

    let mut b = Client::connect(&broker, v, "tq", &Opts::persistent()).await;
    assert!(b.session_present());
    a.closed().await;
    let got = receive(&mut b, 3).await;
    assert_eq!(
        payloads(&got),
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
    assert!(got[0].dup);
    assert_eq!(got[0].pkid, first.pkid);
    assert!(!got[1].dup && !got[2].dup, "never sent before: DUP 0");
    publ.publish("tq/t", 1, false, b"4").await;
    assert_eq!(b.next_msg().await.payload, b"4");
    assert_eq!(broker.broker().metrics.messages_dropped(), 0);
    b.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_takeover_carries_inflight_and_queued_messages() {
    takeover_carries_inflight_and_queued(V::V311).await;
}

#[tokio::test]
async fn v5_takeover_carries_inflight_and_queued_messages() {
    takeover_carries_inflight_and_queued(V::V5).await;
}

async fn takeover_with_clean_start_discards(v: V) {
    // 3.1.1 [MQTT-3.1.4-2], [MQTT-3.1.2-6], [MQTT-3.2.2-1]; 5.0 [MQTT-3.1.4-3], [MQTT-3.1.2-4],
    // [MQTT-3.2.2-2].
    let broker = TestBroker::start().await;
    let (mut a, _) = raw_session(&broker, v, "tc", false).await;
    a.send(&wire::subscribe(v.is_v5(), 1, "tc/t", 1)).await;
    assert!(matches!(a.next_packet().await, Packet::Suback(_)));
    let mut b = Client::clean(&broker, v, "tc").await;
    assert!(!b.session_present());
    expect_taken_over(v, &mut a).await;
    b.subscribe("tc/marker", 1).await;
    let mut publ = Client::clean(&broker, v, "tc-pub").await;
    publ.publish("tc/t", 1, false, b"old").await;
    publ.publish("tc/marker", 1, false, b"marker").await;
    assert_eq!(b.next_msg().await.payload, b"marker");
    assert_eq!(broker.broker().routes.subscription_count(), 1);
    b.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_takeover_with_clean_session_discards_the_old_session() {
    takeover_with_clean_start_discards(V::V311).await;
}

#[tokio::test]
async fn v5_takeover_with_clean_start_discards_the_old_session() {
    takeover_with_clean_start_discards(V::V5).await;
}

/// Asks a client for a SUBACK: true if it comes, false if its event loop ended first (the
/// broker closed the connection).
async fn still_connected(c: &mut Client) -> bool {
    match c {
        Client::V3(c) => {
            if c.client
                .subscribe("race/probe", v3::QoS::AtMostOnce)
                .await
                .is_err()
            {
                return false;
            }
            loop {
                match c.next().await {
                    Ok(v3::Packet::SubAck(_)) => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        }
        Client::V5(c) => {
            if c.client
                .subscribe("race/probe", v5::QoS::AtMostOnce)
                .await
                .is_err()
            {
                return false;
            }
            loop {
                match c.next().await {
                    Ok(v5::Packet::SubAck(_)) => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        }
    }
}

async fn racing_connections(v: V) {
    // Five connections with one client id at once: the registry orders them, each takes over
    // from the one before, and exactly one stays connected (3.1.1 [MQTT-3.1.4-2]; 5.0
    // [MQTT-3.1.4-3]).
    const N: usize = 5;
    let broker = TestBroker::start().await;
    let opts = Opts::persistent();
    let connects = (0..N)
        .map(|_| Client::try_connect(&broker, v, "race", &opts))
        .collect();
    let results = within("racing connects", join_all(connects)).await;
    let mut clients: Vec<Client> = results
        .into_iter()
        .map(|r| r.expect("every CONNECT is accepted"))
        .collect();
    let m = &broker.broker().metrics;
    eventually("one connection left", || m.connections.get() == 1).await;
    assert_eq!(broker.broker().sessions.len(), 1);
    assert_eq!(m.takeovers.get(), (N - 1) as u64);
    // (The 0x8E reason code is checked by the raw takeover tests: see expect_taken_over.)
    let mut alive = 0;
    for c in &mut clients {
        if still_connected(c).await {
            alive += 1;
        }
    }
    assert_eq!(alive, 1, "exactly one of the racing connections stays");
    broker.stop().await;
}

/// Polls the futures together on this task (no extra crate: a tiny join_all).
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::Poll;
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => out[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(out.iter_mut().map(|o| o.take().expect("ready")).collect())
        }
    })
    .await
}

#[tokio::test]
async fn v311_racing_connections_with_one_client_id_end_with_one_connected() {
    racing_connections(V::V311).await;
}

#[tokio::test]
async fn v5_racing_connections_with_one_client_id_end_with_one_connected() {
    racing_connections(V::V5).await;
}

// ---------------------------------------------------------------------------------------------
// Assigned client identifiers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v5_empty_client_id_gets_an_assigned_identifier() {
    // 5.0 [MQTT-3.1.3-6], [MQTT-3.1.3-7], [MQTT-3.2.2-16]: a unique identifier, returned in
    // CONNACK, and the connection works as if the client had sent it.
    let broker = TestBroker::start().await;
    let mut a = v5::Client::connect(&broker, "").await;
    let mut b = v5::Client::connect(&broker, "").await;
    let id = |c: &v5::Client| {
        c.connack
            .properties
            .as_ref()
            .and_then(|p| p.assigned_client_identifier.clone())
            .expect("Assigned Client Identifier in CONNACK")
    };
    let (ida, idb) = (id(&a), id(&b));
    assert!(!ida.is_empty());
    assert_ne!(ida, idb, "[MQTT-3.2.2-16] not used by any other session");
    assert!(broker.broker().sessions.get(&ida).is_some());
    assert!(broker.broker().sessions.get(&idb).is_some());
    assert_eq!(broker.broker().metrics.takeovers.get(), 0);

    a.subscribe("assigned/t", v5::QoS::AtLeastOnce).await;
    b.publish("assigned/t", v5::QoS::AtLeastOnce, false, b"hello")
        .await;
    assert_eq!(&a.next_publish().await.payload[..], b"hello");
    broker.stop().await;
}

#[tokio::test]
async fn v311_empty_client_id_with_clean_session_is_accepted() {
    // 3.1.1 [MQTT-3.1.3-6]: a unique id is assigned internally (3.1.1 cannot return it).
    let broker = TestBroker::start().await;
    let mut a = v3::Client::connect(&broker, "").await;
    let mut b = v3::Client::connect(&broker, "").await;
    assert!(!a.connack.session_present);
    assert_eq!(broker.broker().sessions.len(), 2, "two distinct sessions");
    assert_eq!(broker.broker().metrics.takeovers.get(), 0);
    a.subscribe("assigned/t", v3::QoS::AtLeastOnce).await;
    b.publish("assigned/t", v3::QoS::AtLeastOnce, false, b"hello")
        .await;
    assert_eq!(&a.next_publish().await.payload[..], b"hello");
    broker.stop().await;
}

#[tokio::test]
async fn v311_empty_client_id_without_clean_session_is_refused_with_rc2() {
    // 3.1.1 [MQTT-3.1.3-8] CONNACK return code 2 then close; [MQTT-3.2.2-4] Session Present 0;
    // [MQTT-3.2.2-5] close after a non-zero return code. Raw: rumqttc asserts on this input.
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(&broker).await;
    raw.send(&wire::connect(false, "", false, 60, &[], None))
        .await;
    assert_eq!(raw.read_exact(4).await, vec![0x20, 0x02, 0x00, 0x02]);
    assert!(raw.expect_close().await.is_empty());
    assert_eq!(broker.broker().metrics.connects_refused.get(), 1);
    assert!(broker.broker().sessions.is_empty());
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Ordering across a reconnect of the subscriber
// ---------------------------------------------------------------------------------------------

async fn ordering_across_reconnect(v: V) {
    // 3.1.1 [MQTT-4.6.0-5], [MQTT-4.6.0-6]; 5.0 [MQTT-4.6.0-5], [MQTT-4.6.0-6]: messages of one
    // publisher on one topic reach the subscriber in the order published, also when the
    // subscriber's connection drops in the middle and the rest comes from the session (resends
    // first, then the queue). Repeats are allowed (QoS 1) but only as DUP resends.
    let broker = TestBroker::start().await;
    // Manual acknowledgements: what the test has not looked at is not acknowledged either, so
    // it is still the session's to resend (rumqttc would otherwise acknowledge everything its
    // event loop read, including what this test never took from the channel).
    let mut sub = Client::connect(&broker, v, "ord", &Opts::persistent().manual_acks()).await;
    sub.subscribe("ord/t", 1).await;
    let mut publ = Client::clean(&broker, v, "ord-pub").await;
    for i in 0..30u32 {
        publ.publish("ord/t", 1, false, &i.to_be_bytes()).await;
    }
    let mut seen: Vec<u32> = Vec::new();
    let record = |m: Msg, seen: &mut Vec<u32>| {
        let n = u32::from_be_bytes(m.payload[..].try_into().expect("4 bytes"));
        if seen.contains(&n) {
            assert!(m.dup, "message {n} repeated without DUP");
        } else {
            seen.push(n);
        }
    };
    for _ in 0..10 {
        let m = sub.next_msg().await;
        sub.ack(&m).await;
        record(m, &mut seen);
    }
    sub.kill();
    for i in 30..60u32 {
        publ.publish("ord/t", 1, false, &i.to_be_bytes()).await;
    }
    let mut sub = Client::connect(&broker, v, "ord", &Opts::persistent()).await;
    assert!(sub.session_present());
    while seen.len() < 60 {
        let m = sub.next_msg().await;
        record(m, &mut seen);
    }
    assert_eq!(
        seen,
        (0..60).collect::<Vec<u32>>(),
        "order per publisher and topic"
    );
    assert_eq!(broker.broker().metrics.messages_dropped(), 0);
    sub.disconnect().await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_order_is_kept_across_a_subscriber_reconnect() {
    ordering_across_reconnect(V::V311).await;
}

#[tokio::test]
async fn v5_order_is_kept_across_a_subscriber_reconnect() {
    ordering_across_reconnect(V::V5).await;
}

#[tokio::test]
async fn v5_takeover_reason_reaches_an_independent_client() {
    // [MQTT-3.1.4-3] (5.0): the existing connection gets DISCONNECT 0x8E, as rumqttc sees it.
    let broker = TestBroker::start().await;
    let mut first = v5::Client::connect(&broker, "dup-id").await;
    let _second = v5::Client::connect(&broker, "dup-id").await;
    let d = first.closed().await.expect("DISCONNECT before the close");
    assert_eq!(d.reason_code, v5::DisconnectReasonCode::SessionTakenOver);
    broker.stop().await;
}
