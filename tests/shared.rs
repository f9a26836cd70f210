//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5.0 §4.8.2, also offered to 3.1.1
//! clients, and EMQX's `$queue/{filter}`): one member per group gets each message, the member
//! strategies, redelivery when a member goes away, and the rules on share names.
//!
//! Counting is done with sync round trips: a client's deliveries and its packets are handled in
//! mailbox order by its actor, so once a publisher has its acknowledgements, every PUBLISH the
//! broker will send for those messages precedes the SUBACK of a later SUBSCRIBE on the
//! subscriber's connection.

mod common;

use std::collections::{BTreeSet, HashMap};

use beamq_actors::config::ShareStrategy;
use beamq_protocol::{self as proto, ByteString, BytesMut, ProtocolVersion, ReasonCode, codec};
use common::*;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// A group member: either protocol version.
enum Member {
    V3(v3::Client),
    V5(Box<v5::Client>),
}

impl Member {
    async fn v3(broker: &TestBroker, id: &str) -> Member {
        Member::V3(v3::Client::connect(broker, id).await)
    }

    async fn v5(broker: &TestBroker, id: &str) -> Member {
        Member::V5(Box::new(v5::Client::connect(broker, id).await))
    }

    /// Subscribes at QoS 1 and checks that it was granted.
    async fn subscribe(&mut self, filter: &str) {
        match self {
            Member::V3(c) => assert_eq!(
                c.subscribe(filter, v3::QoS::AtLeastOnce).await,
                vec![v3::SubscribeReasonCode::Success(v3::QoS::AtLeastOnce)],
                "{filter}"
            ),
            Member::V5(c) => assert_eq!(
                c.subscribe(filter, v5::QoS::AtLeastOnce).await,
                vec![v5::SubscribeReasonCode::Success(v5::QoS::AtLeastOnce)],
                "{filter}"
            ),
        }
    }

    /// Every PUBLISH received so far, as (topic, payload), ending with a sync round trip.
    async fn sync(&mut self) -> Vec<(String, Vec<u8>)> {
        match self {
            Member::V3(c) => sync3(c).await,
            Member::V5(c) => sync5(c).await,
        }
    }
}

async fn sync3(c: &mut v3::Client) -> Vec<(String, Vec<u8>)> {
    c.client
        .subscribe("sync/none", v3::QoS::AtMostOnce)
        .await
        .expect("queue SUBSCRIBE");
    let mut got = Vec::new();
    loop {
        match c.next().await {
            Ok(v3::Packet::Publish(p)) => got.push((p.topic.clone(), p.payload.to_vec())),
            Ok(v3::Packet::SubAck(_)) => return got,
            Ok(_) => {}
            Err(e) => panic!("connection error during sync: {e}"),
        }
    }
}

async fn sync5(c: &mut v5::Client) -> Vec<(String, Vec<u8>)> {
    c.client
        .subscribe("sync/none", v5::QoS::AtMostOnce)
        .await
        .expect("queue SUBSCRIBE");
    let mut got = Vec::new();
    loop {
        match c.next().await {
            Ok(v5::Packet::Publish(p)) => got.push((
                String::from_utf8(p.topic.to_vec()).expect("UTF-8 topic"),
                p.payload.to_vec(),
            )),
            Ok(v5::Packet::SubAck(_)) => return got,
            Ok(_) => {}
            Err(e) => panic!("connection error during sync: {e}"),
        }
    }
}

fn payloads(got: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    got.iter().map(|(_, p)| p.clone()).collect()
}

/// Publishes `n` QoS 1 messages with payloads "0", "1", ... and waits for each PUBACK.
async fn publish_n(publ: &mut v5::Client, topic: &str, n: usize) {
    for i in 0..n {
        publ.publish(topic, v5::QoS::AtLeastOnce, false, i.to_string().as_bytes())
            .await;
    }
}

fn numbered(n: usize) -> BTreeSet<Vec<u8>> {
    (0..n).map(|i| i.to_string().into_bytes()).collect()
}

/// Checks that the members' messages are disjoint and together exactly `expected`; returns how
/// many each got.
fn assert_partition(got: &[Vec<Vec<u8>>], expected: &BTreeSet<Vec<u8>>) -> Vec<usize> {
    let total: usize = got.iter().map(Vec::len).sum();
    let union: BTreeSet<Vec<u8>> = got.iter().flatten().cloned().collect();
    assert_eq!(
        total,
        expected.len(),
        "each message to exactly one member: {got:?}"
    );
    assert_eq!(&union, expected, "no message lost");
    got.iter().map(Vec::len).collect()
}

async fn with_strategy(strategy: ShareStrategy) -> TestBroker {
    TestBroker::start_with(|c| c.mqtt.shared_subscription_strategy = strategy).await
}

/// Three members of `$share/g/{filter}`: one 3.1.1 and two 5.0 clients.
async fn three_members(broker: &TestBroker, prefix: &str, filter: &str) -> Vec<Member> {
    let mut members = vec![
        Member::v3(broker, &format!("{prefix}-m1")).await,
        Member::v5(broker, &format!("{prefix}-m2")).await,
        Member::v5(broker, &format!("{prefix}-m3")).await,
    ];
    for m in &mut members {
        m.subscribe(&format!("$share/g/{filter}")).await;
    }
    members
}

fn wire(p: &proto::Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    codec::encode(p, ProtocolVersion::V5, &mut b).expect("encodable packet");
    b.to_vec()
}

// ---------------------------------------------------------------------------------------------
// delivery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn one_copy_per_group_and_per_plain_subscriber() {
    // v5 §4.8.2: each message goes to one member of each share group, 3.1.1 and 5.0 members
    // alike; a second group on the same filter gets its own copy, and so does a non-shared
    // subscriber. Shared filters may contain wildcards.
    let broker = TestBroker::start().await;
    let mut g = three_members(&broker, "one", "sh/+").await;
    let mut h = Member::v3(&broker, "one-h1").await;
    h.subscribe("$share/h/sh/+").await;
    let mut plain = Member::v5(&broker, "one-plain").await;
    plain.subscribe("sh/+").await;

    let mut publ = v5::Client::connect(&broker, "one-pub").await;
    publish_n(&mut publ, "sh/t", 12).await;

    let mut got = Vec::new();
    for m in &mut g {
        let msgs = m.sync().await;
        assert!(
            msgs.iter().all(|(t, _)| t == "sh/t"),
            "the real topic: {msgs:?}"
        );
        got.push(payloads(&msgs));
    }
    assert_partition(&got, &numbered(12));
    let in_order: Vec<Vec<u8>> = numbered(12).into_iter().collect();
    let mut h_got = payloads(&h.sync().await);
    let mut plain_got = payloads(&plain.sync().await);
    h_got.sort();
    plain_got.sort();
    assert_eq!(h_got, in_order, "group h gets every message once");
    assert_eq!(
        plain_got, in_order,
        "the plain subscriber gets every message once"
    );
    broker.stop().await;
}

#[tokio::test]
async fn round_robin_is_the_default_and_even() {
    // mqtt.shared_subscription_strategy = round_robin (the default): 30 messages over three
    // members are 10 each.
    let broker = TestBroker::start().await;
    assert_eq!(
        broker.broker().config.mqtt.shared_subscription_strategy,
        ShareStrategy::RoundRobin
    );
    let mut members = three_members(&broker, "rr", "rr/t").await;
    let mut publ = v5::Client::connect(&broker, "rr-pub").await;
    publish_n(&mut publ, "rr/t", 30).await;
    let mut got = Vec::new();
    for m in &mut members {
        got.push(payloads(&m.sync().await));
    }
    assert_eq!(assert_partition(&got, &numbered(30)), vec![10, 10, 10]);
    broker.stop().await;
}

#[tokio::test]
async fn random_strategy_delivers_each_message_exactly_once() {
    let broker = with_strategy(ShareStrategy::Random).await;
    let mut members = three_members(&broker, "rand", "rand/t").await;
    let mut publ = v5::Client::connect(&broker, "rand-pub").await;
    publish_n(&mut publ, "rand/t", 30).await;
    let mut got = Vec::new();
    for m in &mut members {
        got.push(payloads(&m.sync().await));
    }
    let counts = assert_partition(&got, &numbered(30));
    // All 30 to one member has probability 3 * 3^-30.
    assert!(counts.iter().filter(|&&n| n > 0).count() >= 2, "{counts:?}");
    broker.stop().await;
}

#[tokio::test]
async fn sticky_strategy_keeps_one_member_while_it_stays() {
    let broker = with_strategy(ShareStrategy::Sticky).await;
    let mut members = three_members(&broker, "sticky", "sticky/t").await;
    let mut publ = v5::Client::connect(&broker, "sticky-pub").await;
    publish_n(&mut publ, "sticky/t", 30).await;
    let mut got = Vec::new();
    for m in &mut members {
        got.push(payloads(&m.sync().await));
    }
    let counts = assert_partition(&got, &numbered(30));
    let chosen = counts
        .iter()
        .position(|&n| n == 30)
        .expect("all to one member");

    // The chosen member leaves: another one takes over, alone.
    match members.remove(chosen) {
        Member::V3(c) => c.disconnect().await,
        Member::V5(c) => c.disconnect().await,
    }
    // Two members left, each with its share and its sync subscription.
    eventually("member gone from the group", || {
        broker.broker().routes.subscription_count() == 2 * 2
    })
    .await;
    publish_n(&mut publ, "sticky/t", 10).await;
    let mut got = Vec::new();
    for m in &mut members {
        got.push(payloads(&m.sync().await));
    }
    let mut counts = assert_partition(&got, &numbered(10));
    counts.sort_unstable();
    assert_eq!(counts, vec![0, 10]);
    broker.stop().await;
}

#[tokio::test]
async fn hash_clientid_strategy_maps_a_publisher_to_one_member() {
    let broker = with_strategy(ShareStrategy::HashClientid).await;
    let mut members = three_members(&broker, "hc", "hc/t").await;
    for p in 0..6 {
        let mut publ = v5::Client::connect(&broker, &format!("hc-pub-{p}")).await;
        for i in 0..5 {
            publ.publish(
                "hc/t",
                v5::QoS::AtLeastOnce,
                false,
                format!("{p}:{i}").as_bytes(),
            )
            .await;
        }
        publ.disconnect().await;
    }
    let mut by_publisher: HashMap<String, BTreeSet<usize>> = HashMap::new();
    let mut got = Vec::new();
    for (k, m) in members.iter_mut().enumerate() {
        let msgs = payloads(&m.sync().await);
        for payload in &msgs {
            let text = String::from_utf8(payload.clone()).expect("text");
            let publisher = text.split(':').next().expect("publisher").to_string();
            by_publisher.entry(publisher).or_default().insert(k);
        }
        got.push(msgs);
    }
    let all: BTreeSet<Vec<u8>> = (0..6)
        .flat_map(|p| (0..5).map(move |i| format!("{p}:{i}").into_bytes()))
        .collect();
    assert_partition(&got, &all);
    assert_eq!(by_publisher.len(), 6);
    for (publisher, to) in &by_publisher {
        assert_eq!(to.len(), 1, "publisher {publisher} reached members {to:?}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn hash_topic_strategy_maps_a_topic_to_one_member() {
    let broker = with_strategy(ShareStrategy::HashTopic).await;
    let mut members = three_members(&broker, "ht", "ht/+").await;
    let mut publ = v5::Client::connect(&broker, "ht-pub").await;
    for round in 0..4 {
        for t in 0..8 {
            publ.publish(
                &format!("ht/{t}"),
                v5::QoS::AtLeastOnce,
                false,
                format!("{t}:{round}").as_bytes(),
            )
            .await;
        }
    }
    let mut by_topic: HashMap<String, BTreeSet<usize>> = HashMap::new();
    let mut got = Vec::new();
    for (k, m) in members.iter_mut().enumerate() {
        let msgs = m.sync().await;
        for (topic, _) in &msgs {
            by_topic.entry(topic.clone()).or_default().insert(k);
        }
        got.push(payloads(&msgs));
    }
    let all: BTreeSet<Vec<u8>> = (0..8)
        .flat_map(|t| (0..4).map(move |r| format!("{t}:{r}").into_bytes()))
        .collect();
    assert_partition(&got, &all);
    assert_eq!(by_topic.len(), 8);
    for (topic, to) in &by_topic {
        assert_eq!(to.len(), 1, "topic {topic} reached members {to:?}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn queue_prefix_is_a_share_group() {
    // `$queue/{filter}` (EMQX) is one share group per filter.
    let broker = TestBroker::start().await;
    let mut a = Member::v3(&broker, "q-a").await;
    let mut b = Member::v5(&broker, "q-b").await;
    a.subscribe("$queue/q/t").await;
    b.subscribe("$queue/q/t").await;
    let mut plain = Member::v5(&broker, "q-plain").await;
    plain.subscribe("q/t").await;
    let mut publ = v5::Client::connect(&broker, "q-pub").await;
    publish_n(&mut publ, "q/t", 10).await;
    let got = vec![payloads(&a.sync().await), payloads(&b.sync().await)];
    assert_eq!(assert_partition(&got, &numbered(10)), vec![5, 5]);
    assert_eq!(payloads(&plain.sync().await).len(), 10);
    broker.stop().await;
}

#[tokio::test]
async fn offline_member_of_a_persistent_session_is_passed_over() {
    // A member whose session waits offline would only queue the message: online members are
    // preferred.
    let broker = TestBroker::start().await;
    let mut o = v5::options(&broker, "off-a");
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(60));
    let mut a = v5::Client::connect_with(o.clone()).await;
    a.subscribe("$share/g/off/t", v5::QoS::AtLeastOnce).await;
    a.disconnect().await;
    let mut b = Member::v3(&broker, "off-b").await;
    b.subscribe("$share/g/off/t").await;
    let mut publ = v5::Client::connect(&broker, "off-pub").await;
    publish_n(&mut publ, "off/t", 6).await;
    assert_eq!(payloads(&b.sync().await).len(), 6);
    let mut a = v5::Client::connect_with(o).await;
    assert!(a.connack.session_present);
    assert!(
        sync5(&mut a).await.is_empty(),
        "nothing was queued for the offline member"
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// a member goes away
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unacknowledged_qos1_messages_go_to_another_member() {
    // v5 §4.8.2: if a member's session ends before it acknowledged a QoS 1 message, the server
    // should send the message to another member of the group: not lost, and not duplicated.
    let broker = TestBroker::start().await;
    let mut o = v5::options(&broker, "rd-a");
    o.set_manual_acks(true);
    let mut a = v5::Client::connect_with(o).await;
    a.subscribe("$share/g/rd/t", v5::QoS::AtLeastOnce).await;
    let mut b = v3::Client::connect(&broker, "rd-b").await;
    b.subscribe("$share/g/rd/t", v3::QoS::AtLeastOnce).await;

    let mut publ = v5::Client::connect(&broker, "rd-pub").await;
    publish_n(&mut publ, "rd/t", 10).await;
    let unacked = payloads(&sync5(&mut a).await);
    assert_eq!(
        unacked.len(),
        5,
        "round robin: half for a, never acknowledged"
    );
    // Clean session: the connection's end is the session's end.
    a.kill();

    let mut b_got = BTreeSet::new();
    while b_got.len() < 10 {
        let p = b.next_publish().await.payload.to_vec();
        assert!(b_got.insert(p.clone()), "duplicate {p:?}");
    }
    assert_eq!(b_got, numbered(10));
    assert!(unacked.iter().all(|p| b_got.contains(p)));
    assert!(
        sync3(&mut b).await.is_empty(),
        "nothing more, no duplicates"
    );
    broker.stop().await;
}

#[tokio::test]
async fn qos2_messages_already_sent_are_not_redelivered_elsewhere() {
    // [MQTT-4.8.2-5] a QoS 2 message whose delivery to the chosen member started is not sent to
    // any other member when that member's session ends.
    let broker = TestBroker::start().await;
    let mut o = v5::options(&broker, "q2-a");
    o.set_manual_acks(true);
    let mut a = v5::Client::connect_with(o).await;
    a.subscribe("$share/g/q2/t", v5::QoS::ExactlyOnce).await;
    let mut b = v5::Client::connect(&broker, "q2-b").await;
    b.subscribe("$share/g/q2/t", v5::QoS::ExactlyOnce).await;

    let mut publ = v5::Client::connect(&broker, "q2-pub").await;
    for i in 0..4 {
        publ.publish(
            "q2/t",
            v5::QoS::ExactlyOnce,
            false,
            i.to_string().as_bytes(),
        )
        .await;
    }
    let a_got = payloads(&sync5(&mut a).await);
    assert_eq!(a_got.len(), 2, "sent to a, never acknowledged");
    a.kill();
    // The session is gone once the registry forgot the client id; a redelivery would have been
    // sent to b before that.
    eventually("a's session ended", || {
        broker.broker().sessions.get("q2-a").is_none()
    })
    .await;
    let b_got = payloads(&sync5(&mut b).await);
    assert_eq!(b_got.len(), 2, "only b's own messages: {b_got:?}");
    assert!(b_got.iter().all(|p| !a_got.contains(p)));
    broker.stop().await;
}

#[tokio::test]
async fn a_message_refused_by_its_member_is_not_sent_to_another() {
    // [MQTT-4.8.2-6] a PUBACK with a Reason Code of 0x80 or more from the chosen member: the
    // message is discarded, not sent to another member, even when that member then leaves
    // (which redelivers what it had not acknowledged, as the QoS 1 test above shows).
    let broker = TestBroker::start().await;
    let mut a = Raw::connect(&broker).await;
    a.handshake(ProtocolVersion::V5, "refuse-a").await;
    a.send(&wire(&proto::Packet::Subscribe(proto::Subscribe {
        packet_id: 1,
        filters: vec![(
            ByteString::from("$share/g/refuse/t"),
            proto::SubscriptionOptions {
                qos: proto::QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
        properties: Default::default(),
    })))
    .await;
    assert!(matches!(a.recv().await, Some(proto::Packet::Suback(_))));
    let mut b = v5::Client::connect(&broker, "refuse-b").await;
    b.subscribe("$share/g/refuse/t", v5::QoS::AtLeastOnce).await;

    let mut publ = v5::Client::connect(&broker, "refuse-pub").await;
    publish_n(&mut publ, "refuse/t", 2).await;
    let refused = match a.recv().await {
        Some(proto::Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    a.send(&wire(&proto::Packet::Puback(proto::PubAck::with_reason(
        refused.packet_id.expect("QoS 1 packet id"),
        ReasonCode::UnspecifiedError,
    ))))
    .await;
    a.send(&wire(&proto::Packet::Disconnect(proto::Disconnect::new(
        ReasonCode::Success,
    ))))
    .await;
    a.expect_close().await;
    eventually("a's session ended", || {
        broker.broker().sessions.get("refuse-a").is_none()
    })
    .await;
    let b_got = payloads(&sync5(&mut b).await);
    assert_eq!(b_got.len(), 1, "only b's own message: {b_got:?}");
    assert_ne!(b_got[0], refused.payload.to_vec());
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// rules
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn retained_messages_are_not_sent_to_a_new_shared_subscription() {
    // v5 §4.8.2: retained messages are not sent when a shared subscription is made (they are
    // for a non-shared one, the control case).
    let broker = TestBroker::start().await;
    let mut publ = v5::Client::connect(&broker, "rt-pub").await;
    publ.publish("rt/t", v5::QoS::AtLeastOnce, true, b"kept")
        .await;

    let mut c5 = v5::Client::connect(&broker, "rt-5").await;
    c5.subscribe("$share/g/rt/t", v5::QoS::AtLeastOnce).await;
    // Retained messages follow the SUBACK: the next round trip would catch them.
    assert!(sync5(&mut c5).await.is_empty(), "v5 shared");
    let mut c3 = v3::Client::connect(&broker, "rt-3").await;
    c3.subscribe("$share/g2/rt/+", v3::QoS::AtLeastOnce).await;
    assert!(sync3(&mut c3).await.is_empty(), "3.1.1 shared");

    c5.subscribe("rt/t", v5::QoS::AtLeastOnce).await;
    assert_eq!(
        payloads(&sync5(&mut c5).await),
        vec![b"kept".to_vec()],
        "non-shared"
    );
    broker.stop().await;
}

const INVALID_SHARES: [&str; 6] = [
    "$share/+/a",
    "$share/g",
    "$share//a",
    "$share/g/",
    "$share/#",
    "$queue/",
];

#[tokio::test]
async fn invalid_share_names_are_refused_in_suback() {
    // [MQTT-4.8.2-1] a ShareName of at least one character; [MQTT-4.8.2-2] without "/", "+" or
    // "#", followed by "/" and a Topic Filter. Refused per filter: 0x8F for 5.0, 0x80 for 3.1.1.
    let broker = TestBroker::start().await;
    let mut c5 = v5::Client::connect(&broker, "inv-5").await;
    let mut c3 = v3::Client::connect(&broker, "inv-3").await;
    for f in INVALID_SHARES {
        assert_eq!(
            c5.subscribe(f, v5::QoS::AtLeastOnce).await,
            vec![v5::SubscribeReasonCode::TopicFilterInvalid],
            "v5 {f}"
        );
        assert_eq!(
            c3.subscribe(f, v3::QoS::AtLeastOnce).await,
            vec![v3::SubscribeReasonCode::Failure],
            "3.1.1 {f}"
        );
    }
    assert_eq!(broker.broker().routes.subscription_count(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error: DISCONNECT 0x82.
    // Raw: the DISCONNECT is what is checked (rumqttc hides it behind an event-loop error).
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(&broker).await;
    raw.handshake(ProtocolVersion::V5, "nl-shared").await;
    raw.send(&wire(&proto::Packet::Subscribe(proto::Subscribe {
        packet_id: 1,
        filters: vec![(
            ByteString::from("$share/g/nl/t"),
            proto::SubscriptionOptions {
                qos: proto::QoS::AtLeastOnce,
                no_local: true,
                ..Default::default()
            },
        )],
        properties: Default::default(),
    })))
    .await;
    let got = raw.expect_close().await;
    match got.last() {
        Some(proto::Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::ProtocolError),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_eq!(broker.broker().routes.subscription_count(), 0);
    broker.stop().await;
}
