//! Clusters of real `beamq` processes on loopback: cross-node publish/subscribe at every QoS,
//! wildcards, retained messages seen on every node (also by a node that joins later), a node
//! killed with SIGKILL and restarted, a node stopped with SIGSTOP declared down and healed
//! after SIGCONT, and a node with the wrong cookie refused.
//!
//! Each test puts its nodes on hosts of its own (127.0.N.x), so the cluster ports that follow
//! from the node names (4370 + suffix) never collide between tests running at once. Routes
//! spread asynchronously (as in EMQX), so a test first waits until a probe published on one
//! node reaches a subscriber on another, polling with a deadline, never a fixed sleep.

mod common;

use std::time::{Duration, Instant};

use common::process::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use v5::{Packet, PublishProperties, QoS};

/// Fast failure detection for the tests (defaults: 1 s heartbeat, 5 s timeout).
const FAST: &[(&str, &str)] = &[
    ("BEAMQ__CLUSTER__HEARTBEAT_INTERVAL", "200ms"),
    ("BEAMQ__CLUSTER__FAILURE_TIMEOUT", "2s"),
    ("BEAMQ__CLUSTER__RECONNECT_MAX_BACKOFF", "1s"),
    ("BEAMQ__SYS__INTERVAL", "0s"),
    ("RUST_LOG", "info,beamq_actors::client=debug"),
];

/// Starts node `name@host` seeded with `seeds`, waits for its MQTT port.
async fn node(name: &str, host: &str, seeds: &[String], cookie: &str) -> Running {
    node_with(name, host, seeds, cookie, &[]).await
}

/// As [`node`], with environment variables on top of [`FAST`].
async fn node_with(
    name: &str,
    host: &str,
    seeds: &[String],
    cookie: &str,
    env: &[(&str, &str)],
) -> Running {
    let node_name = format!("{name}@{host}");
    let mut args = vec!["--node", node_name.as_str(), "--cookie", cookie];
    let seeds = seeds.join(",");
    if !seeds.is_empty() {
        args.extend(["--seeds", seeds.as_str()]);
    }
    let env: Vec<(&str, &str)> = FAST.iter().chain(env).copied().collect();
    let mut r = Running::spawn_with(free_port(), &args, &env);
    r.wait_ready().await;
    r
}

/// Options for a v5 client on `node` with a persistent session (clean start 0, 600 s expiry).
fn persistent(node: &Running, id: &str) -> v5::MqttOptions {
    let mut o = node.v5_options(id);
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(600));
    o
}

async fn client(node: &Running, id: &str) -> v5::Client {
    v5::Client::connect_with(node.v5_options(id)).await
}

/// Publishes probes on `topic` from `publisher` until `subscriber` receives one: the route of
/// the subscriber's node has reached the publisher's node. Probes that arrive late are
/// drained too, so the test starts with an empty inbox.
async fn await_route(publisher: &mut v5::Client, subscriber: &mut v5::Client, topic: &str) {
    let deadline = Instant::now() + WAIT;
    'probing: loop {
        publisher
            .publish(topic, QoS::AtMostOnce, false, b"probe")
            .await;
        // Only a probe counts: messages published earlier (while a node was stopped, say) may
        // still be arriving and say nothing about the route now.
        let window = Instant::now() + Duration::from_millis(200);
        while let Ok(p) = tokio::time::timeout_at(window.into(), subscriber.next_publish()).await {
            if p.payload.as_ref() == b"probe" {
                break 'probing;
            }
        }
        assert!(
            Instant::now() < deadline,
            "route for {topic} never reached the publisher's node"
        );
    }
    drain(subscriber).await;
}

/// Discards what arrives until nothing has for 300 ms (late probes).
async fn drain(client: &mut v5::Client) {
    while tokio::time::timeout(Duration::from_millis(300), client.next_publish())
        .await
        .is_ok()
    {}
}

/// Waits until a QoS 1 publish on `topic` from `publisher` is answered `want`.
async fn await_puback(publisher: &mut v5::Client, topic: &str, want: PubAckReason, what: &str) {
    let deadline = Instant::now() + WAIT + WAIT;
    loop {
        match publisher
            .publish(topic, QoS::AtLeastOnce, false, b"check")
            .await
        {
            Some(Packet::PubAck(a)) if a.reason == want => return,
            Some(Packet::PubAck(_)) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn payloads(sub: &mut v5::Client, n: usize) -> Vec<(String, QoS, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let p = within("cross-node PUBLISH", sub.next_publish()).await;
        out.push((
            String::from_utf8_lossy(&p.topic).into_owned(),
            p.qos,
            p.payload.to_vec(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_mesh_from_one_seed_and_deliver_across_nodes_at_every_qos() {
    let host = |i: u8| format!("127.0.11.{i}");
    let seed = vec![format!("b1@{}", host(1))];
    let n1 = node("b1", &host(1), &[], "c1").await;
    // b2 and b3 only know b1: they find each other through it (transitive meshing).
    let n2 = node("b2", &host(2), &seed, "c1").await;
    let n3 = node("b3", &host(3), &seed, "c1").await;

    let mut s2 = client(&n2, "sub-2").await;
    s2.subscribe("t/+/x", QoS::ExactlyOnce).await;
    let mut s3 = client(&n3, "sub-3").await;
    s3.subscribe("t/#", QoS::AtLeastOnce).await;
    let mut p1 = client(&n1, "pub-1").await;
    await_route(&mut p1, &mut s2, "t/probe/x").await;
    await_route(&mut p1, &mut s3, "t/probe").await;
    // b3 learnt of b2 only through b1: a publish on b3 reaching b2 proves the mesh.
    let mut p3 = client(&n3, "pub-3").await;
    await_route(&mut p3, &mut s2, "t/mesh/x").await;
    drain(&mut s3).await;

    // [MQTT-3.3.4-2]-style downgrade travels with the subscription: each subscriber gets
    // min(publish QoS, granted QoS), once, in publish order [MQTT-4.6.0-5].
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        p1.publish("t/a/x", qos, false, format!("m{i}").as_bytes())
            .await;
    }
    let got2 = payloads(&mut s2, 3).await;
    let got3 = payloads(&mut s3, 3).await;
    let expect = |max: QoS| -> Vec<(String, QoS, Vec<u8>)> {
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
            .map(|(i, q)| {
                let q = if (q as u8) < (max as u8) { q } else { max };
                ("t/a/x".to_string(), q, format!("m{i}").into_bytes())
            })
            .collect()
    };
    assert_eq!(got2, expect(QoS::ExactlyOnce));
    assert_eq!(got3, expect(QoS::AtLeastOnce));
    // Nothing more: the message crossed each link once.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), s2.next_publish())
            .await
            .is_err(),
        "duplicate delivery on b2"
    );

    // v5 properties survive the hop; the Message Expiry Interval is decremented, never raised
    // [MQTT-3.3.2-6], and user properties keep their order [MQTT-3.3.2-18].
    let props = PublishProperties {
        message_expiry_interval: Some(60),
        user_properties: vec![("k1".into(), "v1".into()), ("k2".into(), "v2".into())],
        content_type: Some("text/plain".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr")),
        response_topic: Some("reply/here".into()),
        ..PublishProperties::default()
    };
    p1.publish_with("t/b/x", QoS::AtLeastOnce, false, b"props", props)
        .await;
    let p = within("PUBLISH with properties", s2.next_publish()).await;
    let got = p.properties.expect("properties forwarded");
    assert!(
        got.message_expiry_interval
            .is_some_and(|s| s <= 60 && s > 50)
    );
    assert_eq!(
        got.user_properties,
        vec![
            ("k1".to_string(), "v1".to_string()),
            ("k2".to_string(), "v2".to_string())
        ]
    );
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.response_topic.as_deref(), Some("reply/here"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"corr"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_seen_on_every_node_including_one_that_joins_later() {
    let host = |i: u8| format!("127.0.12.{i}");
    let n1 = node("b1", &host(1), &[], "c2").await;
    let n2 = node("b2", &host(2), &[format!("b1@{}", host(1))], "c2").await;
    let mut s2 = client(&n2, "ret-sub-2").await;
    s2.subscribe("link/check", QoS::AtMostOnce).await;
    let mut p1 = client(&n1, "ret-pub-1").await;
    await_route(&mut p1, &mut s2, "link/check").await;

    p1.publish("r/one", QoS::AtLeastOnce, true, b"kept").await;
    // A subscriber on b2 that arrives afterwards gets it from b2's own store
    // [MQTT-3.3.1-6], with RETAIN set [MQTT-3.3.1-8].
    let deadline = Instant::now() + WAIT;
    loop {
        let mut late = client(&n2, "ret-late").await;
        late.subscribe("r/#", QoS::AtLeastOnce).await;
        if let Ok(p) = tokio::time::timeout(Duration::from_millis(300), late.next_publish()).await {
            assert_eq!(p.payload.as_ref(), b"kept");
            assert!(p.retain, "[MQTT-3.3.1-8]");
            late.disconnect().await;
            break;
        }
        late.disconnect().await;
        assert!(
            Instant::now() < deadline,
            "retained message never reached b2"
        );
    }

    // A node that joins after the publish receives the retained messages in its sync.
    let n3 = node("b3", &host(3), &[format!("b2@{}", host(2))], "c2").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s3 = client(&n3, "ret-sub-3").await;
        s3.subscribe("r/+", QoS::AtMostOnce).await;
        let got = tokio::time::timeout(Duration::from_millis(300), s3.next_publish()).await;
        s3.disconnect().await;
        if let Ok(p) = got {
            assert_eq!(p.payload.as_ref(), b"kept");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b3 never got the retained message"
        );
    }

    // Clearing on one node clears everywhere [MQTT-3.3.1-10].
    p1.publish("r/one", QoS::AtLeastOnce, true, b"").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut s3 = client(&n3, "ret-sub-3b").await;
        s3.subscribe("r/+", QoS::AtMostOnce).await;
        let got = tokio::time::timeout(Duration::from_millis(300), s3.next_publish()).await;
        s3.disconnect().await;
        if got.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retained message never cleared on b3"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_its_routes_and_rejoins_by_itself_when_restarted() {
    let host = |i: u8| format!("127.0.13.{i}");
    let n1 = node("b1", &host(1), &[], "c3").await;
    let mut n2 = node("b2", &host(2), &[format!("b1@{}", host(1))], "c3").await;
    let mut s2 = client(&n2, "kill-sub").await;
    s2.subscribe("k/t", QoS::AtLeastOnce).await;
    let mut p1 = client(&n1, "kill-pub").await;
    await_route(&mut p1, &mut s2, "k/t").await;
    // Only a remote subscriber: the PUBACK says a subscriber exists.
    await_puback(
        &mut p1,
        "k/t",
        PubAckReason::Success,
        "remote route counted",
    )
    .await;

    n2.signal("KILL");
    n2.wait_exit(WAIT).await;
    // b1 sees the link close and purges b2's routes: nobody matches any more.
    await_puback(
        &mut p1,
        "k/t",
        PubAckReason::NoMatchingSubscribers,
        "routes of the killed node purged",
    )
    .await;

    // Restarted without seeds: b1 knows it and dials it again.
    let n2 = node("b2", &host(2), &[], "c3").await;
    let mut s2 = client(&n2, "kill-sub").await;
    s2.subscribe("k/t", QoS::AtLeastOnce).await;
    await_route(&mut p1, &mut s2, "k/t").await;
    p1.publish("k/t", QoS::AtLeastOnce, false, b"after").await;
    let p = within("delivery after rejoin", s2.next_publish()).await;
    assert_eq!(p.payload.as_ref(), b"after");
}

/// Two nodes on 127.0.`net`.x, a subscriber to `s/t` on b2 and a publisher on b1; b2 is
/// stopped (SIGSTOP), must be declared down by b1 within a few failure timeouts, then resumed
/// (SIGCONT), after which the route comes back: probes from b1 reach the subscriber again.
async fn stop_and_heal(net: u8) -> (Running, Running, v5::Client, v5::Client) {
    let host = |i: u8| format!("127.0.{net}.{i}");
    let n1 = node("b1", &host(1), &[], "c4").await;
    let n2 = node("b2", &host(2), &[format!("b1@{}", host(1))], "c4").await;
    let mut s2 = client(&n2, "stop-sub").await;
    s2.subscribe("s/t", QoS::AtLeastOnce).await;
    let mut p1 = client(&n1, "stop-pub").await;
    await_route(&mut p1, &mut s2, "s/t").await;

    // A stopped process keeps its sockets open: only the missing heartbeats show it is gone.
    n2.signal("STOP");
    let stopped = Instant::now();
    await_puback(
        &mut p1,
        "s/t",
        PubAckReason::NoMatchingSubscribers,
        "stopped node declared down",
    )
    .await;
    // failure_timeout is 2 s here; detection must not take much more.
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopped.elapsed()
    );
    assert!(n1.logs().contains("declared down"), "{}", n1.logs());

    n2.signal("CONT");
    // The subscriber's own connection survived the stop (keep alive 30 s); once the nodes
    // have linked again its route is back and deliveries resume (the probes of await_route
    // reach it).
    await_route(&mut p1, &mut s2, "s/t").await;
    (n1, n2, p1, s2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_declared_down_and_heals_after_sigcont() {
    stop_and_heal(14).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_stop_and_heal_a_qos1_message_reaches_the_subscriber() {
    let (n1, n2, mut p1, mut s2) = stop_and_heal(23).await;
    // The route is back on b1 (a probe went through after the relink): the publish is
    // forwarded, not answered "no matching subscribers".
    match p1.publish("s/t", QoS::AtLeastOnce, false, b"healed").await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason, PubAckReason::Success),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let p = match tokio::time::timeout(WAIT / 2, s2.next_publish()).await {
        Ok(p) => p,
        Err(_) => panic!(
            "no delivery after SIGCONT\n--- b1\n{}\n--- b2\n{}",
            n1.logs(),
            n2.logs()
        ),
    };
    assert_eq!(p.payload.as_ref(), b"healed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_cookie_is_refused_and_logged() {
    let host = |i: u8| format!("127.0.15.{i}");
    let n1 = node("b1", &host(1), &[], "right").await;
    let n2 = node("b2", &host(2), &[format!("b1@{}", host(1))], "wrong").await;
    let mut s2 = client(&n2, "cookie-sub").await;
    s2.subscribe("c/t", QoS::AtLeastOnce).await;
    eventually("b1 logs the refused link", || {
        n1.logs().contains("closed before authenticating")
    })
    .await;
    // Refused for good: b2's subscription never becomes a route on b1.
    let mut p1 = client(&n1, "cookie-pub").await;
    for _ in 0..5 {
        match p1.publish("c/t", QoS::AtLeastOnce, false, b"x").await {
            Some(Packet::PubAck(a)) => assert_eq!(a.reason, PubAckReason::NoMatchingSubscribers),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s2.next_publish())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnecting_to_another_node_takes_its_session_over() {
    let host = |i: u8| format!("127.0.16.{i}");
    let n1 = node("b1", &host(1), &[], "c6").await;
    let n2 = node("b2", &host(2), &[format!("b1@{}", host(1))], "c6").await;
    let mut p2 = client(&n2, "move-pub").await;
    let mut probe = client(&n1, "move-probe").await;
    probe.subscribe("link/up", QoS::AtMostOnce).await;
    await_route(&mut p2, &mut probe, "link/up").await;

    // A persistent session on b1 with a subscription, then messages queued while it is
    // offline (published on b2).
    let o = persistent(&n1, "mover");
    let mut first = v5::Client::connect_with(o).await;
    first.subscribe("move/t", QoS::AtLeastOnce).await;
    // While it is connected, a second connection with its id on b2 takes it over: the first
    // is told why [MQTT-3.1.4-3] (v5 DISCONNECT 0x8E).
    let o2 = persistent(&n2, "mover");
    let mut second = v5::Client::connect_with(o2).await;
    assert!(
        second.connack.session_present,
        "[MQTT-3.2.2-2] session moved from b1"
    );
    let d = first.closed().await.expect("DISCONNECT before the close");
    assert_eq!(d.reason_code, v5::DisconnectReasonCode::SessionTakenOver);
    // The subscription moved with it: a publish on b2 reaches the new connection there.
    await_route(&mut p2, &mut second, "move/t").await;

    // kill() aborts the client's task, which may still take (and acknowledge) a message or
    // two before it stops: wait until b2 has seen the connection go, so that what follows is
    // queued for the offline session.
    second.kill();
    let b2 = format!("b2@{}", host(2));
    eventually("b2 sees mover offline", || {
        ctl_json(&b2, "c6", &["clients", "list"])["rows"]
            .as_array()
            .is_some_and(|a| {
                a.iter()
                    .any(|c| c["client_id"] == "mover" && c["connected"] == false)
            })
    })
    .await;
    for i in 0..3 {
        p2.publish(
            "move/t",
            QoS::AtLeastOnce,
            false,
            format!("q{i}").as_bytes(),
        )
        .await;
    }
    // Queued on b2 while offline; a reconnection on b1 takes them back across.
    let back = persistent(&n1, "mover");
    let mut third = v5::Client::connect_with(back).await;
    assert!(third.connack.session_present);
    let got = match tokio::time::timeout(WAIT / 2, payloads(&mut third, 3)).await {
        Ok(got) => got,
        Err(_) => panic!(
            "queued messages did not move\n--- b1\n{}\n--- b2\n{}",
            n1.logs(),
            n2.logs()
        ),
    };
    let bodies: Vec<Vec<u8>> = got.into_iter().map(|(_, _, p)| p).collect();
    assert_eq!(bodies, [b"q0".to_vec(), b"q1".to_vec(), b"q2".to_vec()]);
    // And the route is b1's now: a publish on b2 arrives.
    await_route(&mut p2, &mut third, "move/t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_one_client_id_end_with_exactly_one_owner() {
    let host = |i: u8| format!("127.0.17.{i}");
    let n1 = node("b1", &host(1), &[], "c7").await;
    let n2 = node("b2", &host(2), &[format!("b1@{}", host(1))], "c7").await;
    let mut p1 = client(&n1, "race-pub").await;
    let mut probe = client(&n2, "race-probe").await;
    probe.subscribe("link/up", QoS::AtMostOnce).await;
    await_route(&mut p1, &mut probe, "link/up").await;

    for round in 0..3 {
        let id = format!("racer-{round}");
        let (a, b) = tokio::join!(
            v5::Client::try_connect(n1.v5_options(&id)),
            v5::Client::try_connect(n2.v5_options(&id)),
        );
        let (mut a, mut b) = (a.expect("b1 accepts"), b.expect("b2 accepts"));
        // One of them is closed with 0x8E; waiting on both tells which.
        let (mut survivor, loser_reason) = tokio::select! {
            d = a.closed() => (b, d),
            d = b.closed() => (a, d),
        };
        assert_eq!(
            loser_reason.map(|d| d.reason_code),
            Some(v5::DisconnectReasonCode::SessionTakenOver),
            "[MQTT-3.1.4-3]"
        );
        // The other one owns the id: it still receives.
        let topic = format!("race/{round}");
        survivor.subscribe(&topic, QoS::AtMostOnce).await;
        await_route(&mut p1, &mut survivor, &topic).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_spanning_nodes_gets_each_message_exactly_once() {
    let host = |i: u8| format!("127.0.18.{i}");
    let n1 = node("b1", &host(1), &[], "c8").await;
    let n2 = node("b2", &host(2), &[format!("b1@{}", host(1))], "c8").await;
    let mut m1 = client(&n1, "member-1").await;
    m1.subscribe("$share/g/sh/#", QoS::AtLeastOnce).await;
    let mut m2 = client(&n2, "member-2").await;
    m2.subscribe("$share/g/sh/#", QoS::AtLeastOnce).await;
    // A group whose only member is on b2: publishes on b1 must still reach it.
    let mut lone = client(&n2, "lone").await;
    lone.subscribe("$share/only2/solo", QoS::AtLeastOnce).await;
    let mut p1 = client(&n1, "share-pub-1").await;
    let mut p2 = client(&n2, "share-pub-2").await;
    await_route(&mut p1, &mut lone, "solo").await;
    // The group's route of each node has reached the other: b1's PUBACK for a topic only the
    // group matches and whose member there is gone would be 0x10 otherwise; simply wait until
    // each member has received something published on the other node.
    let mut seen1 = false;
    let mut seen2 = false;
    let deadline = Instant::now() + WAIT;
    while !(seen1 && seen2) {
        p1.publish("sh/probe", QoS::AtMostOnce, false, b"p").await;
        p2.publish("sh/probe", QoS::AtMostOnce, false, b"p").await;
        seen1 |= tokio::time::timeout(Duration::from_millis(100), m1.next_publish())
            .await
            .is_ok();
        seen2 |= tokio::time::timeout(Duration::from_millis(100), m2.next_publish())
            .await
            .is_ok();
        assert!(Instant::now() < deadline, "group routes never spread");
    }
    for m in [&mut m1, &mut m2] {
        drain(m).await;
    }

    // [MQTT-4.8.2-3 in 5.0 terms]: each message to one member of the group, cluster-wide.
    const N: usize = 20;
    for i in 0..N {
        p1.publish("sh/x", QoS::AtLeastOnce, false, format!("a{i}").as_bytes())
            .await;
        p2.publish("sh/x", QoS::AtLeastOnce, false, format!("b{i}").as_bytes())
            .await;
    }
    let mut got: Vec<String> = Vec::new();
    let mut per_member = [0usize; 2];
    let deadline = Instant::now() + WAIT;
    while got.len() < 2 * N {
        tokio::select! {
            p = m1.next_publish() => { per_member[0] += 1; got.push(String::from_utf8_lossy(&p.payload).into()); }
            p = m2.next_publish() => { per_member[1] += 1; got.push(String::from_utf8_lossy(&p.payload).into()); }
            _ = tokio::time::sleep_until(deadline.into()) => panic!("only {} of {} arrived: {got:?}", got.len(), 2 * N),
        }
    }
    for m in [&mut m1, &mut m2] {
        assert!(
            tokio::time::timeout(Duration::from_millis(500), m.next_publish())
                .await
                .is_err(),
            "a message reached two members"
        );
    }
    got.sort();
    let mut want: Vec<String> = (0..N)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    want.sort();
    assert_eq!(got, want, "every message exactly once");
    assert!(
        per_member[0] > 0 && per_member[1] > 0,
        "both nodes' members take part: {per_member:?}"
    );

    p1.publish("solo", QoS::AtLeastOnce, false, b"to b2").await;
    let p = within("group member on the other node", lone.next_publish()).await;
    assert_eq!(p.payload.as_ref(), b"to b2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_to_a_peer_that_stopped_reading_is_bounded_by_the_send_window() {
    let host = |i: u8| format!("127.0.19.{i}");
    // Failure detection is slow here on purpose: the peer stays linked while it is stopped.
    let env = [
        ("BEAMQ__CLUSTER__SEND_WINDOW", "50"),
        ("BEAMQ__CLUSTER__FAILURE_TIMEOUT", "60s"),
        ("BEAMQ__SYS__INTERVAL", "200ms"),
    ];
    let n1 = node_with("b1", &host(1), &[], "c9", &env).await;
    let n2 = node_with("b2", &host(2), &[format!("b1@{}", host(1))], "c9", &env).await;
    let mut s2 = client(&n2, "window-sub").await;
    s2.subscribe("w/t", QoS::AtMostOnce).await;
    let mut p1 = client(&n1, "window-pub").await;
    await_route(&mut p1, &mut s2, "w/t").await;
    let mut sys = client(&n1, "window-sys").await;
    let dropped_topic = format!("$SYS/brokers/b1@{}/cluster/dropped", host(1));
    sys.subscribe(&dropped_topic, QoS::AtMostOnce).await;

    n2.signal("STOP");
    for i in 0..300 {
        p1.publish("w/t", QoS::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
    }
    // At most a window's worth went to the stopped peer; the rest was dropped and counted.
    let deadline = Instant::now() + WAIT;
    loop {
        let p = within("$SYS cluster/dropped", sys.next_publish()).await;
        let dropped: u64 = String::from_utf8_lossy(&p.payload)
            .parse()
            .expect("a number");
        assert!(dropped <= 300, "{dropped}");
        if dropped >= 250 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {dropped} counted as dropped"
        );
    }
    n2.signal("CONT");
}

/// A CA and, for each host, a certificate for that IP signed by it, as PEM files in `dir`:
/// `ca.pem`, `{host}.pem`, `{host}.key`.
fn make_certs(dir: &std::path::Path, hosts: &[String]) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for host in hosts {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![host.clone()]).expect("params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
        std::fs::write(dir.join(format!("{host}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{host}.key")), key.serialize_pem()).expect("write");
    }
}

fn tls_env(dir: &std::path::Path, host: &str) -> Vec<(String, String)> {
    let p = |f: String| dir.join(f).to_string_lossy().into_owned();
    vec![
        ("BEAMQ__CLUSTER__TLS__ENABLE".into(), "true".into()),
        (
            "BEAMQ__CLUSTER__TLS__CERT_FILE".into(),
            p(format!("{host}.pem")),
        ),
        (
            "BEAMQ__CLUSTER__TLS__KEY_FILE".into(),
            p(format!("{host}.key")),
        ),
        ("BEAMQ__CLUSTER__TLS__CA_FILE".into(), p("ca.pem".into())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_links_over_mutual_tls_mesh_and_refuse_a_foreign_ca() {
    let host = |i: u8| format!("127.0.20.{i}");
    let good = tempfile::tempdir().expect("dir");
    let rogue = tempfile::tempdir().expect("dir");
    make_certs(good.path(), &[host(1), host(2), host(3)]);
    make_certs(rogue.path(), &[host(4)]);
    let start = |i: u8, dir: &std::path::Path, seeds: Vec<String>| {
        let env = tls_env(dir, &host(i));
        let name = format!("b{i}");
        let h = host(i);
        async move {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            node_with(&name, &h, &seeds, "c10", &env).await
        }
    };
    let n1 = start(1, good.path(), vec![]).await;
    // b3 is introduced to b2 only through b1: with TLS, meshing is beamq's own.
    let n2 = start(2, good.path(), vec![format!("b1@{}", host(1))]).await;
    let n3 = start(3, good.path(), vec![format!("b1@{}", host(1))]).await;
    let mut s3 = client(&n3, "tls-sub").await;
    s3.subscribe("tls/t", QoS::AtLeastOnce).await;
    let mut p2 = client(&n2, "tls-pub").await;
    await_route(&mut p2, &mut s3, "tls/t").await;
    p2.publish("tls/t", QoS::AtLeastOnce, false, b"sealed")
        .await;
    let p = within("delivery over TLS", s3.next_publish()).await;
    assert_eq!(p.payload.as_ref(), b"sealed");

    // Same cookie, certificate from another CA: refused at the TLS handshake.
    let n4 = start(4, rogue.path(), vec![format!("b1@{}", host(1))]).await;
    eventually("b1 refuses the foreign certificate", || {
        n1.logs().contains("cluster TLS handshake refused")
    })
    .await;
    let mut s4 = client(&n4, "rogue-sub").await;
    s4.subscribe("tls/r", QoS::AtLeastOnce).await;
    let mut p1 = client(&n1, "tls-pub-1").await;
    for _ in 0..3 {
        match p1.publish("tls/r", QoS::AtLeastOnce, false, b"x").await {
            Some(Packet::PubAck(a)) => assert_eq!(a.reason, PubAckReason::NoMatchingSubscribers),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn unusable_cluster_tls_files_stop_the_start_naming_the_key() {
    let mut r = Running::spawn_with(
        free_port(),
        &["--node", "b1@127.0.21.1"],
        &[
            ("BEAMQ__CLUSTER__TLS__ENABLE", "true"),
            ("BEAMQ__CLUSTER__TLS__CERT_FILE", "/nonexistent/cert.pem"),
            ("BEAMQ__CLUSTER__TLS__KEY_FILE", "/nonexistent/key.pem"),
            ("BEAMQ__CLUSTER__TLS__CA_FILE", "/nonexistent/ca.pem"),
        ],
    );
    let status = r.wait_exit(WAIT).await;
    assert!(!status.success());
    assert!(r.logs().contains("cluster.tls.cert_file"), "{}", r.logs());
    // Enabled without files: a configuration error, exit status 2.
    let mut r = Running::spawn_with(
        free_port(),
        &["--node", "b1@127.0.21.2"],
        &[("BEAMQ__CLUSTER__TLS__ENABLE", "true")],
    );
    assert_eq!(r.wait_exit(WAIT).await.code(), Some(2));
    assert!(r.logs().contains("cluster.tls.cert_file"), "{}", r.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_finds_members_from_the_records_of_a_name() {
    // `localhost` resolves to 127.0.0.1 (and perhaps ::1, where nobody listens): with app
    // `d1`, the member found is d1@127.0.0.1. (These nodes use 127.0.0.1 and the derived
    // ports 4371/4372; the other tests keep to hosts of their own.)
    let n1 = node("d1", "127.0.0.1", &[], "c11").await;
    let env = [
        ("BEAMQ__CLUSTER__DISCOVERY", "dns"),
        ("BEAMQ__CLUSTER__DNS__NAME", "localhost"),
        ("BEAMQ__CLUSTER__DNS__APP", "d1"),
        ("BEAMQ__CLUSTER__DNS__INTERVAL", "1s"),
    ];
    let n2 = node_with("d2", "127.0.0.1", &[], "c11", &env).await;
    let mut s1 = client(&n1, "dns-sub").await;
    s1.subscribe("dns/t", QoS::AtLeastOnce).await;
    let mut p2 = client(&n2, "dns-pub").await;
    await_route(&mut p2, &mut s1, "dns/t").await;
    assert!(n2.logs().contains("d1@127.0.0.1"), "{}", n2.logs());
}

/// A DNS server on `addr` that answers every SRV query with one record per target (and
/// nothing else): what a Kubernetes headless service gives. Runs until the test ends.
fn srv_server(addr: &str, targets: &[&str]) -> std::net::SocketAddr {
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::rdata::SRV;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    let socket = std::net::UdpSocket::bind(addr).expect("bind the DNS server");
    let local = socket.local_addr().expect("its address");
    let targets: Vec<Name> = targets
        .iter()
        .map(|t| Name::from_ascii(t).expect("target name"))
        .collect();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = Message::response(query.metadata.id, OpCode::Query);
            answer.metadata.recursion_desired = query.metadata.recursion_desired;
            answer.metadata.recursion_available = true;
            for q in &query.queries {
                answer.add_query(q.clone());
                if q.query_type() == RecordType::SRV {
                    for t in &targets {
                        let srv = RData::SRV(SRV::new(0, 10, 4370, t.clone()));
                        answer.add_answer(Record::from_rdata(q.name().clone(), 5, srv));
                    }
                }
            }
            if let Ok(bytes) = answer.to_vec() {
                let _ = socket.send_to(&bytes, from);
            }
        }
    });
    local
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_srv_discovery_finds_members_from_the_targets_of_srv_records() {
    // Two nodes named `beamq@host`, as pods of one headless service are; the SRV records of
    // `_beamq._tcp.beamq.test` name both hosts. Neither node has a seed.
    let host = |i: u8| format!("127.0.31.{i}");
    let dns = srv_server("127.0.31.53:0", &["127.0.31.1.", "127.0.31.2."]).to_string();
    let env = [
        ("BEAMQ__CLUSTER__DISCOVERY", "dns"),
        ("BEAMQ__CLUSTER__DNS__NAME", "_beamq._tcp.beamq.test"),
        ("BEAMQ__CLUSTER__DNS__RECORD_TYPE", "srv"),
        ("BEAMQ__CLUSTER__DNS__SERVER", dns.as_str()),
        ("BEAMQ__CLUSTER__DNS__INTERVAL", "1s"),
    ];
    let n1 = node_with("beamq", &host(1), &[], "c13", &env).await;
    let n2 = node_with("beamq", &host(2), &[], "c13", &env).await;
    let mut s1 = client(&n1, "srv-sub").await;
    s1.subscribe("srv/t", QoS::AtLeastOnce).await;
    let mut p2 = client(&n2, "srv-pub").await;
    await_route(&mut p2, &mut s1, "srv/t").await;
    let status = ctl_json(&format!("beamq@{}", host(2)), "c13", &["cluster", "status"]);
    assert_eq!(
        linked(&status, &format!("beamq@{}", host(1))),
        Some(true),
        "{status}"
    );
}

fn linked(status: &serde_json::Value, member: &str) -> Option<bool> {
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["member"] == member)
        .and_then(|m| m["linked"].as_bool())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_cluster_status_leave_and_join() {
    let host = |i: u8| format!("127.0.22.{i}");
    let (b1, b2) = (format!("b1@{}", host(1)), format!("b2@{}", host(2)));
    let n1 = node("b1", &host(1), &[], "c12").await;
    let n2 = node("b2", &host(2), std::slice::from_ref(&b1), "c12").await;
    let mut s2 = client(&n2, "ctl-sub").await;
    s2.subscribe("ctl/t", QoS::AtLeastOnce).await;
    let mut p1 = client(&n1, "ctl-pub").await;
    await_route(&mut p1, &mut s2, "ctl/t").await;
    let status = ctl_json(&b1, "c12", &["cluster", "status"]);
    assert_eq!(linked(&status, &b2), Some(true), "{status}");

    // b2 leaves: b1 forgets it (no member, no route) and nobody dials again.
    ctl_json(&b2, "c12", &["cluster", "leave"]);
    await_puback(
        &mut p1,
        "ctl/t",
        PubAckReason::NoMatchingSubscribers,
        "b2's routes gone after leave",
    )
    .await;
    eventually("b1 forgot b2", || {
        linked(&ctl_json(&b1, "c12", &["cluster", "status"]), &b2).is_none()
    })
    .await;

    // And joins again by name.
    ctl_json(&b2, "c12", &["cluster", "join", &b1]);
    await_route(&mut p1, &mut s2, "ctl/t").await;
    let status = ctl_json(&b2, "c12", &["cluster", "status"]);
    assert_eq!(linked(&status, &b1), Some(true), "{status}");
}
