//! `$SYS/brokers/{node}/...`: the values the broker publishes every `sys.interval`, and the
//! rule that topic filters starting with a wildcard never match `$` topics.
//!
//! What the broker does with `$` topics that clients use (checked and documented by
//! `clients_may_publish_and_subscribe_to_dollar_topics`): a client may publish to any topic
//! starting with `$`, `$SYS/...` included, and a client subscribing to a filter that spells the
//! `$` level out receives those messages; the broker does not reserve `$SYS` for itself, so a
//! client can publish values there next to the broker's own (the next tick overwrites a
//! retained value it replaced).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use beamq_actors::config::DurationStr;
use common::*;
use v5::QoS;

async fn sys_broker() -> TestBroker {
    TestBroker::start_with(|c| c.sys.interval = DurationStr(Some(Duration::from_secs(1)))).await
}

/// `$SYS/brokers/{node}/`.
fn prefix(broker: &TestBroker) -> String {
    format!("$SYS/brokers/{}/", broker.broker().config.node.name)
}

/// A client subscribed to every `$SYS` value of the node.
async fn watcher(broker: &TestBroker, id: &str) -> v5::Client {
    let mut c = v5::Client::connect(broker, id).await;
    c.subscribe("$SYS/brokers/+/#", QoS::AtMostOnce).await;
    c
}

/// Reads `$SYS` values until the one under `suffix` satisfies `pred`; returns it.
async fn wait_value(
    c: &mut v5::Client,
    broker: &TestBroker,
    suffix: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let topic = format!("{}{suffix}", prefix(broker));
    within(&format!("$SYS value {suffix}"), async {
        loop {
            let p = c.next_publish().await;
            if p.topic[..] != *topic.as_bytes() {
                continue;
            }
            let value = String::from_utf8(p.payload.to_vec()).expect("UTF-8 value");
            if pred(&value) {
                return value;
            }
        }
    })
    .await
}

fn number(v: &str) -> u64 {
    v.parse().unwrap_or_else(|_| panic!("not a number: {v:?}"))
}

/// Round trip on a 5.0 client: the PUBLISH packets that arrived before the SUBACK of a new
/// SUBSCRIBE (see tests/shared.rs for why this is a sound "nothing more is coming").
async fn sync5(c: &mut v5::Client) -> Vec<String> {
    c.client
        .subscribe("sync/none", QoS::AtMostOnce)
        .await
        .expect("queue SUBSCRIBE");
    let mut got = Vec::new();
    loop {
        match c.next().await {
            Ok(v5::Packet::Publish(p)) => {
                got.push(String::from_utf8(p.topic.to_vec()).expect("UTF-8 topic"))
            }
            Ok(v5::Packet::SubAck(_)) => return got,
            Ok(_) => {}
            Err(e) => panic!("connection error during sync: {e}"),
        }
    }
}

async fn sync3(c: &mut v3::Client) -> Vec<String> {
    c.client
        .subscribe("sync/none", v3::QoS::AtMostOnce)
        .await
        .expect("queue SUBSCRIBE");
    let mut got = Vec::new();
    loop {
        match c.next().await {
            Ok(v3::Packet::Publish(p)) => got.push(p.topic.clone()),
            Ok(v3::Packet::SubAck(_)) => return got,
            Ok(_) => {}
            Err(e) => panic!("connection error during sync: {e}"),
        }
    }
}

/// Waits until `c` (subscribed to `$SYS/brokers/+/#`) has seen the live `uptime` value of two
/// ticks: every publish of the first of them has then been routed (the `$SYS` actor publishes
/// a tick's values one after the other, and the next tick only after).
async fn two_live_ticks(c: &mut v5::Client, broker: &TestBroker) {
    let topic = format!("{}uptime", prefix(broker));
    let mut live = 0;
    within("two $SYS ticks", async {
        while live < 2 {
            let p = c.next_publish().await;
            if p.topic[..] == *topic.as_bytes() && !p.retain {
                live += 1;
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sys_values_are_published_under_the_node_name() {
    // version, uptime and the other values appear under $SYS/brokers/{node}/, retained so that a
    // new subscriber gets the latest at once, then live every sys.interval.
    let broker = sys_broker().await;
    let mut c = watcher(&broker, "sys-names").await;
    let mut seen: HashMap<String, (String, bool)> = HashMap::new();
    let wanted = [
        "version",
        "uptime",
        "clients/connected",
        "clients/total",
        "sessions/count",
        "subscriptions/count",
        "retained/count",
        "messages/received",
        "messages/sent",
        "messages/dropped",
        "bytes/received",
        "bytes/sent",
    ];
    let p = prefix(&broker);
    within("every $SYS value", async {
        while !wanted.iter().all(|w| seen.contains_key(*w)) {
            let m = c.next_publish().await;
            let topic = String::from_utf8(m.topic.to_vec()).expect("UTF-8 topic");
            let suffix = topic
                .strip_prefix(&p)
                .unwrap_or_else(|| panic!("{topic} is not under {p}"))
                .to_string();
            let value = String::from_utf8(m.payload.to_vec()).expect("UTF-8 value");
            seen.insert(suffix, (value, m.retain));
        }
    })
    .await;
    assert_eq!(seen["version"].0, env!("CARGO_PKG_VERSION"));
    for w in wanted.iter().filter(|w| **w != "version") {
        number(&seen[*w].0);
    }
    let first_uptime = number(&seen["uptime"].0);
    let later = wait_value(&mut c, &broker, "uptime", |v| number(v) > first_uptime).await;
    assert!(number(&later) >= 1);

    // A subscriber that comes later gets the retained values at once, with RETAIN 1.
    let mut late = v5::Client::connect(&broker, "sys-late").await;
    late.subscribe(&format!("{p}version"), QoS::AtMostOnce)
        .await;
    let v = late.next_publish().await;
    assert!(v.retain);
    assert_eq!(&v.payload[..], env!("CARGO_PKG_VERSION").as_bytes());
    broker.stop().await;
}

#[tokio::test]
async fn clients_connected_follows_connections() {
    let broker = sys_broker().await;
    let mut c = watcher(&broker, "sys-clients").await;
    let a = v3::Client::connect(&broker, "sys-a").await;
    let b = v5::Client::connect(&broker, "sys-b").await;
    wait_value(&mut c, &broker, "clients/connected", |v| v == "3").await;
    a.disconnect().await;
    b.disconnect().await;
    wait_value(&mut c, &broker, "clients/connected", |v| v == "1").await;
    broker.stop().await;
}

#[tokio::test]
async fn message_and_subscription_counters() {
    // messages/received counts PUBLISH packets from clients, messages/sent PUBLISH packets to
    // clients (the $SYS ones included), messages/dropped the deliveries dropped for any reason,
    // subscriptions/count the subscriptions in the route table.
    let broker = sys_broker().await;
    let mut c = watcher(&broker, "sys-msgs").await;
    let mut o = v5::options(&broker, "sys-small");
    o.set_max_packet_size(Some(100));
    let mut small = v5::Client::connect_with(o).await;
    small.subscribe("count/#", QoS::AtLeastOnce).await;
    small.subscribe("count/x", QoS::AtLeastOnce).await;

    let mut publ = v5::Client::connect(&broker, "sys-pub").await;
    for i in 0..5u8 {
        publ.publish("count/x", QoS::AtLeastOnce, false, &[i]).await;
    }
    // Too large for "sys-small": dropped and counted.
    publ.publish("count/x", QoS::AtLeastOnce, false, &[0u8; 300])
        .await;
    for _ in 0..5 {
        small.next_publish().await;
    }
    eventually("drop counted", || {
        broker.broker().metrics.dropped.too_large.get() == 1
    })
    .await;

    wait_value(&mut c, &broker, "messages/received", |v| number(v) >= 6).await;
    wait_value(&mut c, &broker, "messages/sent", |v| number(v) >= 5).await;
    wait_value(&mut c, &broker, "messages/dropped", |v| number(v) >= 1).await;
    // The watcher's, and small's two.
    assert_eq!(broker.broker().routes.subscription_count(), 3);
    wait_value(&mut c, &broker, "subscriptions/count", |v| v == "3").await;
    broker.stop().await;
}

#[tokio::test]
async fn wildcards_at_the_first_level_never_match_sys_topics() {
    // [MQTT-4.7.2-1] (3.1.1 and 5.0): `#`, `+/...` filters (shared ones too) do not match topics
    // starting with `$`, neither for live messages nor for retained ones sent at subscription
    // time.
    let broker = sys_broker().await;
    let mut w = watcher(&broker, "sys-w").await;
    // Every retained $SYS value exists once the last one of a tick was seen.
    wait_value(&mut w, &broker, "bytes/sent", |_| true).await;

    let mut hash5 = v5::Client::connect(&broker, "sys-hash5").await;
    hash5.subscribe("#", QoS::AtMostOnce).await;
    let mut plus5 = v5::Client::connect(&broker, "sys-plus5").await;
    plus5.subscribe("+/brokers/#", QoS::AtMostOnce).await;
    let mut hash3 = v3::Client::connect(&broker, "sys-hash3").await;
    hash3.subscribe("#", v3::QoS::AtMostOnce).await;
    let mut plus3 = v3::Client::connect(&broker, "sys-plus3").await;
    plus3.subscribe("+/+/+/uptime", v3::QoS::AtMostOnce).await;
    let mut shared = v5::Client::connect(&broker, "sys-shared").await;
    shared.subscribe("$share/g/#", QoS::AtMostOnce).await;

    // Live values of at least one whole tick were routed after those subscriptions.
    two_live_ticks(&mut w, &broker).await;
    // "sync/none" subscriptions are the only traffic besides $SYS, and nothing publishes there.
    assert_eq!(sync5(&mut hash5).await, Vec::<String>::new(), "v5 #");
    assert_eq!(
        sync5(&mut plus5).await,
        Vec::<String>::new(),
        "v5 +/brokers/#"
    );
    assert_eq!(sync3(&mut hash3).await, Vec::<String>::new(), "3.1.1 #");
    assert_eq!(
        sync3(&mut plus3).await,
        Vec::<String>::new(),
        "3.1.1 +/+/+/uptime"
    );
    assert!(sync5(&mut shared).await.is_empty(), "$share/g/#");

    // The same filters do match ordinary topics.
    let mut publ = v5::Client::connect(&broker, "sys-norm").await;
    publ.publish("x/brokers/y/uptime", QoS::AtLeastOnce, false, b"1")
        .await;
    assert_eq!(&hash5.next_publish().await.topic[..], b"x/brokers/y/uptime");
    assert_eq!(&plus5.next_publish().await.topic[..], b"x/brokers/y/uptime");
    assert_eq!(hash3.next_publish().await.topic, "x/brokers/y/uptime");
    assert_eq!(plus3.next_publish().await.topic, "x/brokers/y/uptime");
    assert_eq!(
        &shared.next_publish().await.topic[..],
        b"x/brokers/y/uptime"
    );
    broker.stop().await;
}

#[tokio::test]
async fn clients_may_use_dollar_topics_but_not_write_sys() {
    // `$` topics other than `$SYS` are free for applications, and reach subscribers whose filter
    // names the `$` level; `#` still does not match them [MQTT-4.7.2-1]. `$SYS` is the broker's
    // namespace: a client PUBLISH there is refused (v5 PUBACK 0x87, 3.1.1 acknowledged and
    // dropped) and counted, so nobody can impersonate the broker's statistics.
    let broker = sys_broker().await;
    let mut dollar = v5::Client::connect(&broker, "dollar-sub").await;
    dollar.subscribe("$app/#", QoS::AtLeastOnce).await;
    dollar.subscribe("$SYS/custom/+", QoS::AtLeastOnce).await;
    let mut hash = v5::Client::connect(&broker, "dollar-hash").await;
    hash.subscribe("#", QoS::AtLeastOnce).await;

    let mut publ = v5::Client::connect(&broker, "dollar-pub").await;
    let ack = publ.publish("$app/x", QoS::AtLeastOnce, false, b"a").await;
    assert!(
        matches!(ack, Some(v5::Packet::PubAck(ref a)) if a.reason == rumqttc::v5::mqttbytes::v5::PubAckReason::Success),
        "{ack:?}"
    );
    assert_eq!(&dollar.next_publish().await.topic[..], b"$app/x");
    assert!(sync5(&mut hash).await.is_empty());

    let ack = publ
        .publish("$SYS/custom/y", QoS::AtLeastOnce, false, b"s")
        .await;
    assert!(
        matches!(ack, Some(v5::Packet::PubAck(ref a)) if a.reason == rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized),
        "{ack:?}"
    );
    let version = format!("{}version", prefix(&broker));
    publ.publish(&version, QoS::AtLeastOnce, true, b"spoofed")
        .await;
    let mut v3c = v3::Client::connect(&broker, "dollar-v3").await;
    v3c.publish("$SYS/custom/z", v3::QoS::AtLeastOnce, false, b"t")
        .await;
    assert_eq!(broker.broker().metrics.publishes_denied.get(), 3);
    assert!(
        sync5(&mut dollar).await.is_empty(),
        "nothing reached $SYS subscribers"
    );

    // The broker's own retained value is intact.
    let mut w = v5::Client::connect(&broker, "dollar-w").await;
    w.subscribe(&version, QoS::AtMostOnce).await;
    let first = w.next_publish().await;
    assert_eq!(&first.payload[..], env!("CARGO_PKG_VERSION").as_bytes());
    broker.stop().await;
}
