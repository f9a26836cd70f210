//! Will messages, 3.1.1 and 5.0: when they are published (abnormal close, keep-alive expiry,
//! takeover, protocol violation, v5 DISCONNECT 0x04) and when not (normal DISCONNECT), QoS and
//! retain, and the v5 Will Delay Interval and will properties.
//!
//! Statement ids are given per version: "3.1.1" ids come from docs/spec/mqtt-3.1.1-statements.tsv,
//! "5.0" ids from docs/spec/mqtt-5.0-statements.tsv (the two number differently).

mod common;

use std::time::{Duration, Instant};

use beamq_protocol::{Packet, ReasonCode};
use common::either::{Client, Msg, Opts, V};
use common::*;
use rumqttc::v5::mqttbytes::v5::LastWillProperties;

/// A clean client of version `v` subscribed to `will/#` at QoS 2: it sees wills and markers.
async fn watcher(broker: &TestBroker, v: V) -> Client {
    let mut w = Client::clean(broker, v, "watcher").await;
    assert_eq!(w.subscribe("will/#", 2).await, Some(2));
    w
}

/// Publishes a marker on `will/marker` and asserts that it is the next thing `w` receives: any
/// will that should not have been published would have come first.
async fn expect_marker_next(broker: &TestBroker, v: V, w: &mut Client) {
    let mut p = Client::clean(broker, v, "marker-pub").await;
    p.publish("will/marker", 1, false, b"marker").await;
    let m = w.next_msg().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("will/marker", &b"marker"[..]),
        "no will expected before the marker"
    );
    p.disconnect().await;
}

fn will_opts(topic: &str, payload: &[u8]) -> Opts {
    Opts::clean().will(topic, payload, 1, false)
}

/// A v5 client with a will carrying `props`, with the given session expiry.
async fn v5_with_will(
    broker: &TestBroker,
    id: &str,
    clean: bool,
    session_expiry: u32,
    topic: &str,
    props: LastWillProperties,
) -> v5::Client {
    let mut o = v5::options(broker, id);
    o.set_clean_start(clean);
    if session_expiry > 0 {
        o.set_session_expiry_interval(Some(session_expiry));
    }
    o.set_last_will(v5::LastWill::new(
        topic,
        b"will".to_vec(),
        v5::QoS::AtLeastOnce,
        false,
        Some(props),
    ));
    v5::Client::connect_with(o).await
}

fn will_delay(secs: u32) -> LastWillProperties {
    LastWillProperties {
        delay_interval: Some(secs),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// When a will is published, and when not
// ---------------------------------------------------------------------------------------------

async fn no_will_on_normal_disconnect(v: V) {
    // 3.1.1 [MQTT-3.1.2-10], [MQTT-3.14.4-3]; 5.0 [MQTT-3.1.2-10], [MQTT-3.14.4-3] (reason
    // 0x00): the will is discarded on DISCONNECT.
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, v).await;
    let c = Client::connect(&broker, v, "wn", &will_opts("will/wn", b"gone")).await;
    c.disconnect().await;
    // The session ends after the will decision was taken (same handler): once it is gone, a
    // will would already have been routed.
    eventually("session ended", || {
        broker.broker().sessions.get("wn").is_none()
    })
    .await;
    expect_marker_next(&broker, v, &mut w).await;
    assert_eq!(broker.broker().metrics.wills_published.get(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn v311_no_will_on_normal_disconnect() {
    no_will_on_normal_disconnect(V::V311).await;
}

#[tokio::test]
async fn v5_no_will_on_normal_disconnect() {
    no_will_on_normal_disconnect(V::V5).await;
}

async fn will_on_abnormal_close(v: V) {
    // 3.1.1 [MQTT-3.1.2-8]; 5.0 [MQTT-3.1.2-8]: the connection closed without DISCONNECT.
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, v).await;
    let c = Client::connect(&broker, v, "wk", &will_opts("will/wk", b"lost")).await;
    c.kill();
    let m = w.next_msg().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("will/wk", &b"lost"[..])
    );
    assert_eq!(m.qos, 1);
    assert!(!m.retain);
    assert_eq!(broker.broker().metrics.wills_published.get(), 1);
    // Published once: [MQTT-3.1.2-10] it is removed once published.
    expect_marker_next(&broker, v, &mut w).await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_will_on_abnormal_close() {
    will_on_abnormal_close(V::V311).await;
}

#[tokio::test]
async fn v5_will_on_abnormal_close() {
    will_on_abnormal_close(V::V5).await;
}

async fn will_on_keepalive_expiry(v: V) {
    // 3.1.1 [MQTT-3.1.2-24]; 5.0 [MQTT-3.1.2-22]: nothing within 1.5 × keep alive closes the
    // connection "as if the network had failed", so the will goes ([MQTT-3.1.2-8] both). v5
    // gets DISCONNECT 0x8D first (5.0 §4.13, [MQTT-4.13.1-1]).
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, v).await;
    let will = wire::Will::new("will/ka", b"silent");
    let connect = wire::connect(v.is_v5(), "wka", true, 1, &[], Some(&will));
    let (mut raw, connack) = Raw::start_session(&broker, v.is_v5(), &connect).await;
    assert_eq!(connack.reason_code, ReasonCode::Success);
    let t0 = Instant::now();
    // Silent from here on.
    let got = raw.expect_close().await;
    let elapsed = t0.elapsed();
    if v.is_v5() {
        match got.as_slice() {
            [Packet::Disconnect(d)] => assert_eq!(d.reason_code, ReasonCode::KeepAliveTimeout),
            other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
        }
    } else {
        assert!(got.is_empty(), "{got:?}");
    }
    // The timer started when the CONNECT was accepted, a little before CONNACK arrived here.
    assert!(
        elapsed >= Duration::from_millis(1400),
        "closed after {elapsed:?}, before 1.5 × keep alive"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "closed only after {elapsed:?}"
    );
    let m = w.next_msg().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("will/ka", &b"silent"[..])
    );
    assert_eq!(broker.broker().metrics.keepalive_timeouts.get(), 1);
    assert_eq!(broker.broker().metrics.wills_published.get(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn v311_will_on_keepalive_expiry() {
    will_on_keepalive_expiry(V::V311).await;
}

#[tokio::test]
async fn v5_will_on_keepalive_expiry() {
    will_on_keepalive_expiry(V::V5).await;
}

async fn will_on_takeover(v: V) {
    // The taken-over connection is closed by the server, not by DISCONNECT, so its will goes
    // (3.1.1 [MQTT-3.1.4-2] with [MQTT-3.1.2-8]; 5.0 [MQTT-3.1.4-3] with [MQTT-3.1.2-8] and the
    // non-normative comment of §3.1.4: "the Will Message for the existing connection is sent
    // unless the new connection specifies Clean Start of 0 and the Will Delay is greater than
    // zero"). Here the will has no delay and the newcomer resumes the session (Clean Start 0),
    // the case where brokers differ: this follows EMQX (emqx_channel publishes the will of a
    // 3.1.1 connection taken over unconditionally, and of a v5 one when the delay is 0);
    // Mosquitto instead drops the will of a persistent session resumed by a Clean Session 0
    // connection. The delayed case is in v5_reconnect_within_will_delay_cancels_the_will.
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, v).await;
    let opts = Opts::persistent().will("will/to", b"taken over", 1, false);
    let mut a = Client::connect(&broker, v, "wto", &opts).await;
    let b = Client::connect(&broker, v, "wto", &Opts::persistent()).await;
    assert!(b.session_present());
    a.closed().await;
    let m = w.next_msg().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("will/to", &b"taken over"[..])
    );
    assert_eq!(broker.broker().metrics.wills_published.get(), 1);
    // The newcomer has no will: its normal DISCONNECT publishes nothing either.
    b.disconnect().await;
    expect_marker_next(&broker, v, &mut w).await;
    assert_eq!(broker.broker().metrics.wills_published.get(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn v311_will_on_takeover() {
    will_on_takeover(V::V311).await;
}

#[tokio::test]
async fn v5_will_on_takeover_without_will_delay() {
    will_on_takeover(V::V5).await;
}

async fn will_on_protocol_violation(v: V) {
    // A malformed packet after CONNECT closes the connection (3.1.1 §4.8 / [MQTT-3.3.1-4]-style
    // errors; 5.0 [MQTT-4.13.1-1] with DISCONNECT 0x81 first); it is not a DISCONNECT, so the
    // will goes (3.1.1 [MQTT-3.1.2-8]; 5.0 [MQTT-3.1.2-8]).
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, v).await;
    let will = wire::Will::new("will/pv", b"violated");
    let connect = wire::connect(v.is_v5(), "wpv", true, 60, &[], Some(&will));
    let (mut raw, _) = Raw::start_session(&broker, v.is_v5(), &connect).await;
    // Packet type 0 is reserved: not a packet at all.
    raw.send(&[0x00, 0x00]).await;
    let got = raw.expect_close().await;
    if v.is_v5() {
        match got.as_slice() {
            [Packet::Disconnect(d)] => assert!(
                d.reason_code.is_error(),
                "an error reason code, got {:?}",
                d.reason_code
            ),
            other => panic!("expected DISCONNECT, got {other:?}"),
        }
    } else {
        assert!(got.is_empty(), "{got:?}");
    }
    let m = w.next_msg().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("will/pv", &b"violated"[..])
    );
    // Counted once, as malformed or as a protocol error depending on how the decoder
    // classifies a reserved packet type.
    let metrics = &broker.broker().metrics;
    assert_eq!(
        metrics.malformed_packets.get() + metrics.protocol_errors.get(),
        1
    );
    assert_eq!(metrics.wills_published.get(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn v311_will_on_protocol_violation() {
    will_on_protocol_violation(V::V311).await;
}

#[tokio::test]
async fn v5_will_on_protocol_violation() {
    will_on_protocol_violation(V::V5).await;
}

async fn will_qos_and_retain(v: V) {
    // Will QoS is used (3.1.1 [MQTT-3.1.2-9]; 5.0 §3.1.2.6) and delivered at min(will QoS,
    // granted QoS) (3.1.1 [MQTT-3.8.4-6]); Will Retain 1 publishes it retained (3.1.1
    // [MQTT-3.1.2-17]; 5.0 [MQTT-3.1.2-15]) and Will Retain 0 not retained (3.1.1
    // [MQTT-3.1.2-16]; 5.0 [MQTT-3.1.2-14]).
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, v).await;
    let retained = Opts::clean().will("will/retained", b"kept", 1, true);
    Client::connect(&broker, v, "wr", &retained).await.kill();
    let m = w.next_msg().await;
    assert_eq!((m.topic.as_str(), m.qos), ("will/retained", 1));
    // Sent to an existing subscription: RETAIN 0 (3.1.1 [MQTT-3.3.1-9]; 5.0 [MQTT-3.3.1-12],
    // Retain As Published 0).
    assert!(!m.retain);
    let plain = Opts::clean().will("will/plain", b"not kept", 2, false);
    Client::connect(&broker, v, "wp", &plain).await.kill();
    let m = w.next_msg().await;
    assert_eq!((m.topic.as_str(), m.qos), ("will/plain", 2));
    assert!(!m.retain);
    assert_eq!(
        broker.broker().retained.len(),
        1,
        "only the retained will is stored"
    );

    // A later subscriber gets the retained will, RETAIN 1, at its QoS, and not the other one.
    let mut late = Client::clean(&broker, v, "late").await;
    late.subscribe("will/#", 2).await;
    let m: Msg = late.next_msg().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos, m.retain),
        ("will/retained", &b"kept"[..], 1, true)
    );
    expect_marker_next(&broker, v, &mut late).await;
    broker.stop().await;
}

#[tokio::test]
async fn v311_will_qos_and_retain_are_honoured() {
    will_qos_and_retain(V::V311).await;
}

#[tokio::test]
async fn v5_will_qos_and_retain_are_honoured() {
    will_qos_and_retain(V::V5).await;
}

#[tokio::test]
async fn v5_disconnect_with_will_message_publishes_the_will() {
    // 5.0 §3.14.2.1 reason 0x04 "Disconnect with Will Message": the will is not deleted
    // ([MQTT-3.1.2-8] deletes it only for 0x00) and goes at once (no delay, session ends).
    // Raw: rumqttc only sends reason 0x00.
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, V::V5).await;
    let will = wire::Will::new("will/d4", b"on purpose");
    let connect = wire::connect(true, "wd4", true, 60, &[], Some(&will));
    let (mut raw, _) = Raw::start_session(&broker, true, &connect).await;
    raw.send(&wire::disconnect_v5(0x04, &[])).await;
    assert!(
        raw.expect_close().await.is_empty(),
        "the server sends nothing back"
    );
    let m = w.next_msg().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("will/d4", &b"on purpose"[..])
    );
    assert_eq!(broker.broker().metrics.wills_published.get(), 1);
    assert_eq!(broker.broker().metrics.protocol_errors.get(), 0);
    broker.stop().await;
}

// ---------------------------------------------------------------------------------------------
// v5 Will Delay Interval and will properties
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v5_will_waits_for_the_will_delay_interval() {
    // 5.0 §3.1.3.2.2, [MQTT-3.1.2-8]: published once the Will Delay Interval has elapsed (the
    // session, 300 s, outlives it).
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, V::V5).await;
    let c = v5_with_will(&broker, "wd", false, 300, "will/wd", will_delay(1)).await;
    let t0 = Instant::now();
    c.kill();
    let m = w.next_msg().await;
    let elapsed = t0.elapsed();
    assert_eq!(m.topic, "will/wd");
    assert!(
        elapsed >= Duration::from_millis(1000),
        "will after {elapsed:?}, before its 1 s delay"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "will only after {elapsed:?}"
    );
    assert_eq!(broker.broker().metrics.wills_published.get(), 1);
    // The session itself lives on.
    assert_eq!(broker.broker().metrics.sessions_expired.get(), 0);
    assert!(broker.broker().sessions.get("wd").is_some());
    broker.stop().await;
}

#[tokio::test]
async fn v5_reconnect_within_will_delay_cancels_the_will() {
    // 5.0 [MQTT-3.1.3-9]: a new connection to the session before the delay has passed means the
    // will is never sent.
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, V::V5).await;
    let a = v5_with_will(&broker, "wc", false, 300, "will/wc", will_delay(1)).await;
    a.kill();
    eventually("connection gone", || {
        broker
            .broker()
            .sessions
            .get("wc")
            .is_some_and(|s| !s.is_online())
    })
    .await;
    // Back within the delay, resuming the session.
    let mut o = v5::options(&broker, "wc");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(300));
    let back = v5::Client::connect_with(o).await;
    assert!(back.connack.session_present);
    // The same while the first connection is still open: the takeover closes it and the
    // resumed session cancels the delayed will at once (non-normative comment of §3.1.4).
    let _b = v5_with_will(&broker, "wc2", false, 300, "will/wc2", will_delay(1)).await;
    let mut o = v5::options(&broker, "wc2");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(300));
    let back2 = v5::Client::connect_with(o).await;
    assert!(back2.connack.session_present);

    // A control client with the same delay, closed after the first one: its will, once it
    // arrives, proves the first one's delay has passed too.
    let control = v5_with_will(&broker, "wctl", false, 300, "will/control", will_delay(1)).await;
    control.kill();
    let m = w.next_msg().await;
    assert_eq!(m.topic, "will/control", "the cancelled will must not come");
    expect_marker_next(&broker, V::V5, &mut w).await;
    assert_eq!(broker.broker().metrics.wills_published.get(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn v5_clean_start_within_will_delay_publishes_the_will_at_once() {
    // 5.0 §3.1.3.2.2: the will goes when the delay has elapsed "or the Session ends, whichever
    // happens first"; a Clean Start 1 connection ends the old session (5.0 [MQTT-3.1.2-4]),
    // as the non-normative comment of §3.1.4 says ("if Clean Start is 1 the Will Message is
    // sent because the Session ends"; EMQX does the same).
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, V::V5).await;
    let a = v5_with_will(&broker, "wcs", false, 300, "will/wcs", will_delay(30)).await;
    a.kill();
    eventually("connection gone", || {
        broker
            .broker()
            .sessions
            .get("wcs")
            .is_some_and(|s| !s.is_online())
    })
    .await;
    let t0 = Instant::now();
    let back = v5::Client::connect(&broker, "wcs").await;
    assert!(!back.connack.session_present);
    let m = w.next_msg().await;
    assert_eq!(m.topic, "will/wcs");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "not after the 30 s delay"
    );
    assert_eq!(broker.broker().metrics.wills_published.get(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn v5_will_goes_at_session_end_when_session_expiry_is_shorter() {
    // 5.0 §3.1.3.2.2 and [MQTT-3.1.2-8]: delay 30 s, session expiry 1 s: the will goes when the
    // session ends.
    let broker = TestBroker::start().await;
    let mut w = watcher(&broker, V::V5).await;
    let c = v5_with_will(&broker, "wse", false, 1, "will/wse", will_delay(30)).await;
    let t0 = Instant::now();
    c.kill();
    let m = w.next_msg().await;
    let elapsed = t0.elapsed();
    assert_eq!(m.topic, "will/wse");
    assert!(
        elapsed >= Duration::from_millis(1000),
        "will after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "will only after {elapsed:?}"
    );
    let metrics = &broker.broker().metrics;
    eventually("session expired", || metrics.sessions_expired.get() == 1).await;
    assert_eq!(metrics.wills_published.get(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn v5_will_properties_reach_the_subscriber() {
    // 5.0 §3.1.3.2: the will properties become the PUBLISH's: Payload Format Indicator, Message
    // Expiry Interval (less the time waited, [MQTT-3.3.2-6]), Content Type ([MQTT-3.3.2-20]),
    // Response Topic ([MQTT-3.3.2-15]), Correlation Data ([MQTT-3.3.2-16]) and User Properties
    // in order ([MQTT-3.1.3-10], [MQTT-3.3.2-17], [MQTT-3.3.2-18]).
    let broker = TestBroker::start().await;
    let mut w = v5::Client::connect(&broker, "watcher").await;
    w.subscribe("will/#", v5::QoS::AtLeastOnce).await;
    let user = vec![
        ("k1".to_string(), "v1".to_string()),
        ("k2".to_string(), "v2".to_string()),
        ("k1".to_string(), "v3".to_string()),
    ];
    let props = LastWillProperties {
        delay_interval: None,
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".to_string()),
        response_topic: Some("will/response".to_string()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr-1")),
        user_properties: user.clone(),
    };
    v5_with_will(&broker, "wprops", true, 0, "will/props", props)
        .await
        .kill();
    let p = w.next_publish().await;
    assert_eq!(&p.topic[..], b"will/props");
    assert_eq!(&p.payload[..], b"will");
    let got = p.properties.expect("will properties");
    assert_eq!(got.payload_format_indicator, Some(1));
    let expiry = got
        .message_expiry_interval
        .expect("Message Expiry Interval");
    assert!((58..=60).contains(&expiry), "expiry {expiry}");
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.response_topic.as_deref(), Some("will/response"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    assert_eq!(got.user_properties, user);
    assert_eq!(got.topic_alias, None);
    broker.stop().await;
}

#[tokio::test]
async fn shutdown_publishes_every_will_and_tells_v5_clients_0x8b() {
    // A graceful shutdown ends every session: the connections close without DISCONNECT from
    // the client, so wills are published (3.1.1 [MQTT-3.1.2-8]; 5.0 [MQTT-3.1.2-8]), a delayed
    // will included, since its session ends now (5.0 §3.1.3.2.2: "or the Session ends,
    // whichever happens first"). v5 clients are told why: DISCONNECT 0x8B.
    let broker = TestBroker::start().await;
    let ctx = broker.broker().clone();
    let a = Client::connect(&broker, V::V311, "sd-a", &will_opts("wills/a", b"a")).await;
    let mut b = v5_with_will(&broker, "sd-b", false, 120, "wills/b", will_delay(60)).await;
    eventually("both connected", || ctx.metrics.connections.get() == 2).await;
    let stop = tokio::spawn(broker.stop());
    let d = b.closed().await.expect("DISCONNECT before the close");
    assert_eq!(d.reason_code, v5::DisconnectReasonCode::ServerShuttingDown);
    within("shutdown", stop).await.expect("shutdown task");
    assert_eq!(ctx.metrics.wills_published.get(), 2);
    assert_eq!(ctx.metrics.sessions.get(), 0);
    drop(a);
}
