//! Publish/subscribe at QoS 0, 1 and 2 in both directions, 3.1.1 and 5.0, and message order.

mod common;

use common::*;

#[tokio::test]
async fn v311_qos_levels_are_delivered_with_min_of_publish_and_subscription_qos() {
    // [MQTT-3.8.4-6] granted QoS; [MQTT-3.3.5-1] delivered at min(publish QoS, granted QoS).
    let broker = TestBroker::start().await;
    let mut sub = v3::Client::connect(&broker, "sub").await;
    let codes = sub.subscribe("qos/+", v3::QoS::AtLeastOnce).await;
    assert_eq!(
        codes,
        vec![v3::SubscribeReasonCode::Success(v3::QoS::AtLeastOnce)]
    );
    let mut publ = v3::Client::connect(&broker, "pub").await;
    publ.publish("qos/0", v3::QoS::AtMostOnce, false, b"zero")
        .await;
    publ.publish("qos/1", v3::QoS::AtLeastOnce, false, b"one")
        .await;
    publ.publish("qos/2", v3::QoS::ExactlyOnce, false, b"two")
        .await;
    let got: Vec<(String, v3::QoS, Vec<u8>)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let p = sub.next_publish().await;
            v.push((p.topic.clone(), p.qos, p.payload.to_vec()));
        }
        v
    };
    assert_eq!(
        got,
        vec![
            ("qos/0".to_string(), v3::QoS::AtMostOnce, b"zero".to_vec()),
            ("qos/1".to_string(), v3::QoS::AtLeastOnce, b"one".to_vec()),
            ("qos/2".to_string(), v3::QoS::AtLeastOnce, b"two".to_vec()),
        ]
    );
    broker.stop().await;
}

#[tokio::test]
async fn v311_qos2_end_to_end() {
    // [MQTT-4.3.3-1] QoS 2 flow towards the subscriber: PUBLISH, PUBREC, PUBREL, PUBCOMP
    // (rumqttc drives the subscriber side and would fail on a wrong packet identifier).
    let broker = TestBroker::start().await;
    let mut sub = v3::Client::connect(&broker, "sub2").await;
    sub.subscribe("exactly/once", v3::QoS::ExactlyOnce).await;
    let mut publ = v3::Client::connect(&broker, "pub2").await;
    for i in 0..20u8 {
        publ.publish("exactly/once", v3::QoS::ExactlyOnce, false, &[i])
            .await;
    }
    for i in 0..20u8 {
        let p = sub.next_publish().await;
        assert_eq!(p.qos, v3::QoS::ExactlyOnce);
        assert_eq!(
            &p.payload[..],
            &[i],
            "[MQTT-4.6.0-6] order per publisher and topic"
        );
    }
    eventually("all QoS 2 exchanges complete", || {
        broker.broker().metrics.messages_sent.get() >= 20
    })
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn v5_pubsub_qos_levels() {
    let broker = TestBroker::start().await;
    let mut sub = v5::Client::connect(&broker, "sub5").await;
    sub.subscribe("v5/#", v5::QoS::ExactlyOnce).await;
    let mut publ = v5::Client::connect(&broker, "pub5").await;
    publ.publish("v5/a", v5::QoS::AtMostOnce, false, b"0").await;
    publ.publish("v5/b", v5::QoS::AtLeastOnce, false, b"1")
        .await;
    publ.publish("v5/c", v5::QoS::ExactlyOnce, false, b"2")
        .await;
    for (topic, qos) in [
        ("v5/a", v5::QoS::AtMostOnce),
        ("v5/b", v5::QoS::AtLeastOnce),
        ("v5/c", v5::QoS::ExactlyOnce),
    ] {
        let p = sub.next_publish().await;
        assert_eq!(&p.topic[..], topic.as_bytes());
        assert_eq!(p.qos, qos);
    }
    broker.stop().await;
}

#[tokio::test]
async fn ordering_is_kept_per_publisher_and_topic_under_load() {
    // [MQTT-4.6.0-6] an ordered topic: 2,000 QoS 1 messages arrive in the order sent. The
    // publisher outruns the subscriber's window of 32, so the queue must hold the backlog (the
    // default of 1,000 would drop the oldest, counted: see the session tests).
    let broker = TestBroker::start_with(|c| c.mqtt.max_queued_messages = 10_000).await;
    let mut sub = v3::Client::connect(&broker, "ord-sub").await;
    sub.subscribe("ord", v3::QoS::AtLeastOnce).await;
    let publ = v3::Client::connect(&broker, "ord-pub").await;
    let n = 2000u32;
    for i in 0..n {
        publ.client
            .publish("ord", v3::QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
            .await
            .expect("queue");
    }
    let mut got = Vec::new();
    for _ in 0..n {
        let p = sub.next_publish().await;
        got.push(u32::from_be_bytes(
            p.payload[..].try_into().expect("4 bytes"),
        ));
    }
    let expected: Vec<u32> = (0..n).collect();
    if got != expected {
        let first_bad = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "out of order from index {first_bad}: {:?}",
            &got[first_bad.saturating_sub(3)..(first_bad + 40).min(got.len())]
        );
    }
    broker.stop().await;
}
