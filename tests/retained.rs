//! Retained messages, 3.1.1 and 5.0: set, replace and clear, the RETAIN flag on delivery,
//! wildcard matching and `$` topics, v5 Retain Handling and Retain As Published, flow control
//! instead of truncation for large retained sets, and v5 message expiry of retained messages.
//!
//! Statement ids are given per version: "3.1.1" ids come from docs/spec/mqtt-3.1.1-statements.tsv,
//! "5.0" ids from docs/spec/mqtt-5.0-statements.tsv (the two number differently).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use beamq_actors::config::DurationStr;
use common::either::{Client, Msg, V};
use common::*;

/// Publishes a non-retained marker on `topic` from `publ` and asserts that it is the next thing
/// `c` receives (`c` must be subscribed to `topic`).
async fn expect_marker_next(publ: &mut Client, c: &mut Client, topic: &str) {
    publ.publish(topic, 1, false, b"marker").await;
    let m = c.next_msg().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        (topic, &b"marker"[..]),
        "nothing expected before the marker"
    );
}

// ---------------------------------------------------------------------------------------------
// Set, replace, clear; the RETAIN flag
// ---------------------------------------------------------------------------------------------

async fn set_replace_and_clear(v: V) {
    let broker = TestBroker::start().await;
    let store = &broker.broker().retained;
    let mut publ = Client::clean(&broker, v, "rp").await;

    // Stored with its QoS, then replaced (3.1.1 [MQTT-3.3.1-5]; 5.0 [MQTT-3.3.1-5]); a
    // RETAIN 0 publish neither stores nor replaces (3.1.1 [MQTT-3.3.1-12]; 5.0 [MQTT-3.3.1-8]).
    publ.publish("ret/a", 1, true, b"first").await;
    publ.publish("ret/a", 1, true, b"second").await;
    publ.publish("ret/a", 1, false, b"not retained").await;
    // A QoS 0 retained message replaces too (3.1.1 [MQTT-3.3.1-7]).
    publ.publish("ret/b", 1, true, b"qos1").await;
    publ.publish("ret/b", 0, true, b"qos0").await;
    assert_eq!(store.len(), 2);
    // Retained messages are not session state: they outlive the publisher's session (3.1.1
    // [MQTT-3.1.2-7]).
    publ.disconnect().await;
    eventually("publisher session ended", || {
        broker.broker().sessions.get("rp").is_none()
    })
    .await;
    assert_eq!(store.len(), 2);

    // Sent to a new subscription with RETAIN 1 (3.1.1 [MQTT-3.3.1-6], [MQTT-3.3.1-8]; 5.0
    // [MQTT-3.3.1-9] with Retain Handling 0, §3.3.1.3), at min(stored QoS, granted QoS).
    let mut s1 = Client::clean(&broker, v, "s1").await;
    s1.subscribe("ret/+", 2).await;
    let mut got: Vec<Msg> = vec![s1.next_msg().await, s1.next_msg().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    let summary: Vec<(&str, &[u8], u8, bool)> = got
        .iter()
        .map(|m| (m.topic.as_str(), &m.payload[..], m.qos, m.retain))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("ret/a", &b"second"[..], 1, true),
            ("ret/b", &b"qos0"[..], 0, true)
        ]
    );

    // Clear with an empty payload: delivered as normal to existing subscribers, RETAIN 0
    // (3.1.1 [MQTT-3.3.1-10], [MQTT-3.3.1-9]; 5.0 [MQTT-3.3.1-6], [MQTT-3.3.1-12]), and not
    // stored (3.1.1 [MQTT-3.3.1-11]; 5.0 [MQTT-3.3.1-7]).
    let mut publ = Client::clean(&broker, v, "rp").await;
    publ.publish("ret/a", 1, true, b"").await;
    let m = s1.next_msg().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.len(), m.retain),
        ("ret/a", 0, false)
    );
    assert_eq!(store.len(), 1);

    // A later subscriber gets ret/b only.
    let mut s2 = Client::clean(&broker, v, "s2").await;
    s2.subscribe("ret/#", 1).await;
    let m = s2.next_msg().await;
    assert_eq!((m.topic.as_str(), m.retain), ("ret/b", true));
    expect_marker_next(&mut publ, &mut s2, "ret/marker").await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_retained_set_replace_and_clear() {
    set_replace_and_clear(V::V311).await;
}

#[tokio::test]
async fn v5_retained_set_replace_and_clear() {
    set_replace_and_clear(V::V5).await;
}

async fn retain_flag_on_delivery(v: V) {
    let broker = TestBroker::start().await;
    let mut publ = Client::clean(&broker, v, "rf-pub").await;
    let mut s = Client::clean(&broker, v, "rf-sub").await;
    s.subscribe("rf/#", 1).await;

    // An established subscription gets RETAIN 0 even for a retained publish (3.1.1
    // [MQTT-3.3.1-9]; 5.0 [MQTT-3.3.1-12], Retain As Published 0 being the default).
    publ.publish("rf/t", 1, true, b"r").await;
    let m = s.next_msg().await;
    assert_eq!((&m.payload[..], m.retain), (&b"r"[..], false));

    // A new subscription gets it with RETAIN 1 (3.1.1 [MQTT-3.3.1-8]; 5.0 §3.3.1.3).
    let mut s2 = Client::clean(&broker, v, "rf-sub2").await;
    s2.subscribe("rf/t", 1).await;
    let m = s2.next_msg().await;
    assert_eq!((&m.payload[..], m.retain), (&b"r"[..], true));

    // Subscribing again to the same filter replaces the subscription and sends the retained
    // messages again (3.1.1 [MQTT-3.8.4-3]; 5.0 [MQTT-3.8.4-3], [MQTT-3.8.4-4] with Retain
    // Handling 0).
    s.subscribe("rf/#", 1).await;
    let m = s.next_msg().await;
    assert_eq!((&m.payload[..], m.retain), (&b"r"[..], true));
    expect_marker_next(&mut publ, &mut s, "rf/marker").await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_retain_flag_is_1_for_new_subscriptions_and_0_for_established_ones() {
    retain_flag_on_delivery(V::V311).await;
}

#[tokio::test]
async fn v5_retain_flag_is_1_for_new_subscriptions_and_0_for_established_ones() {
    retain_flag_on_delivery(V::V5).await;
}

// ---------------------------------------------------------------------------------------------
// Wildcards and `$` topics
// ---------------------------------------------------------------------------------------------

/// Receives messages until the marker on `marker` and returns the topics before it.
async fn topics_until_marker(publ: &mut Client, c: &mut Client, marker: &str) -> Vec<String> {
    publ.publish(marker, 1, false, b"marker").await;
    let mut topics = Vec::new();
    loop {
        let m = c.next_msg().await;
        if m.topic == marker {
            return topics;
        }
        assert!(m.retain, "only retained messages expected here: {m:?}");
        topics.push(m.topic);
    }
}

async fn wildcards_and_dollar_topics(v: V) {
    // $SYS values are published (retained) at start, then every minute.
    let broker =
        TestBroker::start_with(|c| c.sys.interval = DurationStr(Some(Duration::from_secs(60))))
            .await;
    eventually("$SYS values retained", || {
        !broker.broker().retained.is_empty()
    })
    .await;
    let mut publ = Client::clean(&broker, v, "wc-pub").await;
    for t in ["a/1", "a/2", "a/b/c", "b/1", "$test/x"] {
        publ.publish(t, 1, true, t.as_bytes()).await;
    }

    // Every retained message on a matching topic is sent (3.1.1 [MQTT-3.3.1-6]; 5.0
    // [MQTT-3.3.1-9]), and filters starting with a wildcard match no `$` topic (3.1.1 and 5.0
    // [MQTT-4.7.2-1]).
    let cases: [(&str, &[&str]); 5] = [
        ("#", &["a/1", "a/2", "a/b/c", "b/1"]),
        ("+/1", &["a/1", "b/1"]),
        ("a/#", &["a/1", "a/2", "a/b/c"]),
        ("+/+/+", &["a/b/c"]),
        ("$test/#", &["$test/x"]),
    ];
    for (filter, expected) in cases {
        let mut s = Client::clean(&broker, v, "wc-case").await;
        s.subscribe("marker", 1).await;
        s.subscribe(filter, 1).await;
        let got: BTreeSet<String> = topics_until_marker(&mut publ, &mut s, "marker")
            .await
            .into_iter()
            .collect();
        let expected: BTreeSet<String> = expected.iter().map(|t| t.to_string()).collect();
        assert_eq!(got, expected, "retained messages for {filter}");
        s.disconnect().await;
    }
    // The broker's own $SYS topics: only an explicit $SYS filter sees them.
    let mut s = Client::clean(&broker, v, "wc-sub").await;
    s.subscribe("marker", 1).await;
    s.subscribe("$SYS/#", 0).await;
    let sys = topics_until_marker(&mut publ, &mut s, "marker").await;
    assert!(!sys.is_empty());
    assert!(sys.iter().all(|t| t.starts_with("$SYS/")), "{sys:?}");
    broker.stop().await;
}

#[tokio::test]
async fn v311_wildcards_match_several_retained_but_no_dollar_topics() {
    wildcards_and_dollar_topics(V::V311).await;
}

#[tokio::test]
async fn v5_wildcards_match_several_retained_but_no_dollar_topics() {
    wildcards_and_dollar_topics(V::V5).await;
}

// ---------------------------------------------------------------------------------------------
// v5 subscription options
// ---------------------------------------------------------------------------------------------

fn filter(path: &str, rh: v5::RetainForwardRule, rap: bool) -> v5::Filter {
    let mut f = v5::Filter::new(path, v5::QoS::AtLeastOnce);
    f.retain_forward_rule = rh;
    f.preserve_retain = rap;
    f
}

/// Publishes a marker on `mk` and asserts it is the next thing `s` receives.
async fn v5_marker_next(publ: &mut v5::Client, s: &mut v5::Client) {
    publ.publish("mk", v5::QoS::AtLeastOnce, false, b"marker")
        .await;
    let p = s.next_publish().await;
    assert_eq!(
        &p.topic[..],
        b"mk",
        "nothing expected before the marker, got {p:?}"
    );
}

#[tokio::test]
async fn v5_retain_handling() {
    use v5::RetainForwardRule::{Never, OnEverySubscribe, OnNewSubscribe};
    let broker = TestBroker::start().await;
    let mut publ = v5::Client::connect(&broker, "rh-pub").await;
    publ.publish("rh/t", v5::QoS::AtLeastOnce, true, b"kept")
        .await;
    let mut s = v5::Client::connect(&broker, "rh-sub").await;
    s.subscribe("mk", v5::QoS::AtLeastOnce).await;

    // 2: never sent [MQTT-3.3.1-11].
    s.subscribe_filter(filter("rh/t", Never, false), None).await;
    v5_marker_next(&mut publ, &mut s).await;

    // 1 on a new subscription: sent [MQTT-3.3.1-10].
    s.subscribe_filter(filter("rh/+", OnNewSubscribe, false), None)
        .await;
    let p = s.next_publish().await;
    assert_eq!(
        (&p.topic[..], &p.payload[..], p.retain),
        (&b"rh/t"[..], &b"kept"[..], true)
    );

    // 1 on an existing subscription: not sent [MQTT-3.3.1-10].
    s.subscribe_filter(filter("rh/+", OnNewSubscribe, false), None)
        .await;
    v5_marker_next(&mut publ, &mut s).await;

    // 0 on an existing subscription: sent again [MQTT-3.3.1-9], [MQTT-3.8.4-4].
    s.subscribe_filter(filter("rh/+", OnEverySubscribe, false), None)
        .await;
    let p = s.next_publish().await;
    assert_eq!((&p.topic[..], p.retain), (&b"rh/t"[..], true));
    v5_marker_next(&mut publ, &mut s).await;
    broker.stop().await;
}

#[tokio::test]
async fn v5_retain_as_published() {
    use v5::RetainForwardRule::OnEverySubscribe;
    let broker = TestBroker::start().await;
    let mut keep = v5::Client::connect(&broker, "rap1").await;
    keep.subscribe_filter(filter("rap/t", OnEverySubscribe, true), None)
        .await;
    let mut clear = v5::Client::connect(&broker, "rap0").await;
    clear
        .subscribe_filter(filter("rap/t", OnEverySubscribe, false), None)
        .await;
    let mut publ = v5::Client::connect(&broker, "rap-pub").await;
    publ.publish("rap/t", v5::QoS::AtLeastOnce, true, b"retained")
        .await;
    publ.publish("rap/t", v5::QoS::AtLeastOnce, false, b"plain")
        .await;

    // Retain As Published 1: the flag as published [MQTT-3.3.1-13].
    let a = keep.next_publish().await;
    let b = keep.next_publish().await;
    assert_eq!((&a.payload[..], a.retain), (&b"retained"[..], true));
    assert_eq!((&b.payload[..], b.retain), (&b"plain"[..], false));
    // Retain As Published 0: always 0 on forwarding [MQTT-3.3.1-12].
    let a = clear.next_publish().await;
    let b = clear.next_publish().await;
    assert_eq!((&a.payload[..], a.retain), (&b"retained"[..], false));
    assert_eq!((&b.payload[..], b.retain), (&b"plain"[..], false));
    // A new subscription with Retain As Published 0 still gets the retained message with
    // RETAIN 1 (§3.3.1.3: messages sent because of a new subscription carry RETAIN 1).
    let mut late = v5::Client::connect(&broker, "rap-late").await;
    late.subscribe_filter(filter("rap/t", OnEverySubscribe, false), None)
        .await;
    let p = late.next_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b"retained"[..], true));
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// No silent truncation
// ---------------------------------------------------------------------------------------------

const MANY: usize = 5_000;

/// Stores `MANY` retained QoS 1 messages on distinct topics `many/{i}`.
async fn store_many(broker: &TestBroker) {
    let mut o = v5::options(broker, "many-pub");
    o.set_request_channel_capacity(MANY);
    let publ = v5::Client::connect_with(o).await;
    for i in 0..MANY {
        publ.client
            .publish(
                format!("many/{i}"),
                v5::QoS::AtLeastOnce,
                true,
                i.to_string(),
            )
            .await
            .expect("queue PUBLISH");
    }
    eventually("all retained stored", || {
        broker.broker().retained.len() == MANY
    })
    .await;
}

fn check_all(got: Vec<(String, bool)>) {
    assert_eq!(got.len(), MANY, "every retained message, none twice");
    let topics: BTreeSet<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics.len(), MANY, "distinct topics");
    assert!(got.iter().all(|(_, retain)| *retain), "RETAIN 1 on all");
}

#[tokio::test]
async fn v5_many_retained_messages_are_flow_controlled_not_truncated() {
    // 5,000 retained messages for one subscription, with a session queue limit of 100 and a
    // Receive Maximum of 10: they go out as the window allows (5.0 [MQTT-3.3.4-7] the server
    // never has more than Receive Maximum unacknowledged), all of them ([MQTT-3.3.1-9]), and
    // none is dropped for the queue limit.
    let broker = TestBroker::start_with(|c| c.mqtt.max_queued_messages = 100).await;
    store_many(&broker).await;
    let mut o = v5::options(&broker, "many-sub");
    o.set_receive_maximum(Some(10));
    let mut s = v5::Client::connect_with(o).await;
    s.subscribe("many/#", v5::QoS::AtLeastOnce).await;
    let mut got = Vec::with_capacity(MANY);
    for _ in 0..MANY {
        let p = s.next_publish().await;
        got.push((String::from_utf8_lossy(&p.topic).into_owned(), p.retain));
    }
    check_all(got);
    let m = &broker.broker().metrics;
    assert_eq!(m.messages_dropped(), 0, "no drops: {:?}", m.dropped);
    broker.stop().await;
}

#[tokio::test]
async fn v311_many_retained_messages_are_flow_controlled_not_truncated() {
    // The same for 3.1.1, whose window is the broker's max_inflight (3.1.1 [MQTT-3.3.1-6]:
    // the last retained message on each matching topic is sent).
    let broker = TestBroker::start_with(|c| {
        c.mqtt.max_queued_messages = 100;
        c.mqtt.max_inflight = 10;
    })
    .await;
    store_many(&broker).await;
    let mut s = v3::Client::connect(&broker, "many-sub").await;
    s.subscribe("many/#", v3::QoS::AtLeastOnce).await;
    let mut got = Vec::with_capacity(MANY);
    for _ in 0..MANY {
        let p = s.next_publish().await;
        got.push((p.topic.clone(), p.retain));
    }
    check_all(got);
    let m = &broker.broker().metrics;
    assert_eq!(m.messages_dropped(), 0, "no drops: {:?}", m.dropped);
    broker.stop().await;
}

#[tokio::test]
async fn v5_retained_burst_respects_receive_maximum() {
    // 5.0 [MQTT-3.3.4-7]: at most Receive Maximum QoS 1/2 PUBLISH packets unacknowledged. Raw,
    // to see exactly what is on the wire: after 10 retained messages, a PINGREQ is answered
    // before any 11th PUBLISH (everything the broker could send for the SUBSCRIBE was written
    // before it read the PINGREQ); each PUBACK then lets exactly one more through.
    use beamq_protocol::{Packet, QoS};
    let broker = TestBroker::start().await;
    let mut publ = v5::Client::connect(&broker, "rm-pub").await;
    for i in 0..30 {
        publ.publish(&format!("rm/{i}"), v5::QoS::AtLeastOnce, true, b"r")
            .await;
    }
    let connect = wire::connect(true, "rm-sub", true, 60, &[0x21, 0x00, 10], None);
    let (mut raw, _) = Raw::start_session(&broker, true, &connect).await;
    raw.send(&wire::subscribe(true, 1, "rm/#", 1)).await;
    assert!(matches!(raw.next_packet().await, Packet::Suback(_)));
    let mut ids = Vec::new();
    for _ in 0..10 {
        match raw.next_packet().await {
            Packet::Publish(p) => {
                assert_eq!(p.qos, QoS::AtLeastOnce);
                assert!(p.retain);
                ids.push(p.packet_id.expect("packet id"));
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    raw.send(&[0xC0, 0x00]).await;
    match raw.next_packet().await {
        Packet::Pingresp => {}
        other => panic!("an 11th unacknowledged PUBLISH or else: {other:?}"),
    }
    let mut received = 10;
    while received < 30 {
        raw.send(&wire::puback(ids.remove(0))).await;
        match raw.next_packet().await {
            Packet::Publish(p) => ids.push(p.packet_id.expect("packet id")),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        received += 1;
        raw.send(&[0xC0, 0x00]).await;
        assert!(
            matches!(raw.next_packet().await, Packet::Pingresp),
            "one PUBACK, one PUBLISH"
        );
    }
    assert_eq!(broker.broker().metrics.messages_dropped(), 0);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// v5 message expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v5_expired_retained_message_is_not_delivered() {
    // 5.0 [MQTT-3.3.2-5]: once the Message Expiry Interval has passed the message is not
    // delivered to new subscribers; before, it carries what is left of it ([MQTT-3.3.2-6]).
    let broker = TestBroker::start().await;
    let mut publ = v5::Client::connect(&broker, "exp-pub").await;
    let props = v5::PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    publ.publish_with("exp/short", v5::QoS::AtLeastOnce, true, b"short", props)
        .await;
    publ.publish("exp/keep", v5::QoS::AtLeastOnce, true, b"keep")
        .await;

    let mut early = v5::Client::connect(&broker, "exp-early").await;
    early.subscribe("exp/short", v5::QoS::AtLeastOnce).await;
    let p = early.next_publish().await;
    assert_eq!(&p.payload[..], b"short");
    let left = p.properties.and_then(|p| p.message_expiry_interval);
    assert_eq!(left, Some(1), "[MQTT-3.3.2-6] the time left, rounded up");

    let store = &broker.broker().retained;
    eventually("retained message expired", || {
        store.matching("exp/short", Instant::now()).is_empty()
    })
    .await;
    let mut late = v5::Client::connect(&broker, "exp-late").await;
    late.subscribe("mk", v5::QoS::AtLeastOnce).await;
    late.subscribe("exp/#", v5::QoS::AtLeastOnce).await;
    let p = late.next_publish().await;
    assert_eq!(
        &p.topic[..],
        b"exp/keep",
        "the expired message must not come"
    );
    v5_marker_next(&mut publ, &mut late).await;
    broker.stop().await;
}
