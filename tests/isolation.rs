//! Crash isolation (DESIGN §3), with `debug.fault_injection` on: a PUBLISH to
//! `$beamq/fault/client` panics the publishing client's actor, one to `$beamq/fault/router`
//! panics a router. A crashed client is cleaned up (disconnected, will published, routes
//! dropped, client id released) and nobody else notices; a crashed router is restarted by
//! `router_sup` with every route intact. With the switch off those topics are ordinary.

mod common;

use std::time::{Duration, Instant};

use beamq_supervisors::{ChildReport, SupervisorMsg, inspect, which_child};
use common::*;
use ractor::ActorRef;

const FAULT_CLIENT: &str = "$beamq/fault/client";
const FAULT_ROUTER: &str = "$beamq/fault/router";
const T: Duration = Duration::from_secs(5);

/// The children of `router_sup` as it reports them.
async fn router_sup_children(broker: &TestBroker) -> Vec<ChildReport> {
    let sup = which_child(broker.node().root(), "router_sup", T)
        .await
        .expect("root answers")
        .expect("router_sup running");
    let sup: ActorRef<SupervisorMsg> = sup.into();
    inspect(&sup, T).await.expect("router_sup answers").children
}

/// The child `router-0` of `router_sup`.
async fn router_0(broker: &TestBroker) -> ChildReport {
    router_sup_children(broker)
        .await
        .into_iter()
        .find(|c| c.id == "router-0")
        .expect("router-0 is a child of router_sup")
}

/// Restarts of all routers together.
async fn router_restarts(broker: &TestBroker) -> u64 {
    let children = router_sup_children(broker).await;
    assert!(children.iter().any(|c| c.id.starts_with("router-")));
    children
        .iter()
        .filter(|c| c.id.starts_with("router-"))
        .map(|c| c.restarts)
        .sum()
}

/// Every client in `v3s` and `v5s` receives one PUBLISH on `topic` with `payload`.
async fn all_receive(v3s: &mut [v3::Client], v5s: &mut [v5::Client], topic: &str, payload: &[u8]) {
    for c in v3s.iter_mut() {
        let p = c.next_publish().await;
        assert_eq!((p.topic.as_str(), &p.payload[..]), (topic, payload));
    }
    for c in v5s.iter_mut() {
        let p = c.next_publish().await;
        assert_eq!((&p.topic[..], &p.payload[..]), (topic.as_bytes(), payload));
    }
}

#[tokio::test]
async fn crashed_client_actor_is_cleaned_up_and_nobody_else_notices() {
    // A client actor panics (3.1.1, then 5.0): its connection is closed, its will is published
    // (the connection did not end with DISCONNECT: [MQTT-3.1.2-8] in 3.1.1 and 5.0), the crash
    // is counted, its subscriptions leave the route table, its client id can connect again, and
    // four other clients of both versions keep publishing and receiving throughout.
    let broker = TestBroker::start_with(|c| c.debug.fault_injection = true).await;
    let mut v3s = Vec::new();
    let mut v5s = Vec::new();
    for i in 0..2 {
        let mut c = v3::Client::connect(&broker, &format!("bystander3-{i}")).await;
        c.subscribe("iso/#", v3::QoS::AtLeastOnce).await;
        v3s.push(c);
        let mut c = v5::Client::connect(&broker, &format!("bystander5-{i}")).await;
        c.subscribe("iso/#", v5::QoS::AtLeastOnce).await;
        v5s.push(c);
    }
    let bystander_subs = broker.broker().routes.subscription_count();
    assert_eq!(bystander_subs, 4);
    let m = &broker.broker().metrics;

    for round in 0..2 {
        let id = format!("crasher-{round}");
        let will_payload = format!("{id} crashed");
        // Connect the crasher with a will and two subscriptions of its own.
        if round == 0 {
            let mut o = v3::options(&broker, &id);
            o.set_last_will(v3::LastWill::new(
                "iso/will",
                will_payload.clone(),
                v3::QoS::AtLeastOnce,
                false,
            ));
            let mut c = v3::Client::connect_with(o).await;
            c.subscribe("crasher/a", v3::QoS::AtLeastOnce).await;
            c.subscribe("crasher/b/#", v3::QoS::AtMostOnce).await;
            assert_eq!(
                broker.broker().routes.subscription_count(),
                bystander_subs + 2
            );
            c.client
                .publish(FAULT_CLIENT, v3::QoS::AtMostOnce, false, b"boom".to_vec())
                .await
                .expect("queue PUBLISH");
            let _ = c.closed().await;
        } else {
            let mut o = v5::options(&broker, &id);
            o.set_last_will(v5::LastWill::new(
                "iso/will",
                will_payload.clone(),
                v5::QoS::AtLeastOnce,
                false,
                None,
            ));
            let mut c = v5::Client::connect_with(o).await;
            c.subscribe("crasher/a", v5::QoS::AtLeastOnce).await;
            c.subscribe("crasher/b/#", v5::QoS::AtMostOnce).await;
            assert_eq!(
                broker.broker().routes.subscription_count(),
                bystander_subs + 2
            );
            c.client
                .publish(FAULT_CLIENT, v5::QoS::AtMostOnce, false, b"boom".to_vec())
                .await
                .expect("queue PUBLISH");
            // Not a protocol close: the socket is simply dropped.
            let _ = c.closed().await;
        }
        let crashes = round as u64 + 1;
        all_receive(&mut v3s, &mut v5s, "iso/will", will_payload.as_bytes()).await;
        eventually("crash counted", || m.client_crashes.get() == crashes).await;
        eventually("crasher's routes removed", || {
            broker.broker().routes.subscription_count() == bystander_subs
        })
        .await;
        eventually("crasher's session gone", || m.sessions.get() == 4).await;
        assert_eq!(m.wills_published.get(), crashes);

        // Everyone else still publishes and receives.
        for i in 0..v3s.len() {
            let topic = format!("iso/{round}/v3/{i}");
            v3s[i]
                .publish(&topic, v3::QoS::AtLeastOnce, false, b"v3")
                .await;
            all_receive(&mut v3s, &mut v5s, &topic, b"v3").await;
        }
        for i in 0..v5s.len() {
            let topic = format!("iso/{round}/v5/{i}");
            v5s[i]
                .publish(&topic, v5::QoS::AtLeastOnce, false, b"v5")
                .await;
            all_receive(&mut v3s, &mut v5s, &topic, b"v5").await;
        }

        // The crashed client's id is free: it connects again, with a fresh session, and works.
        let mut again = v5::Client::connect(&broker, &id).await;
        assert!(!again.connack.session_present);
        again.subscribe("crasher/a", v5::QoS::AtLeastOnce).await;
        v3s[0]
            .publish("crasher/a", v3::QoS::AtLeastOnce, false, b"back")
            .await;
        assert_eq!(&again.next_publish().await.payload[..], b"back");
        again.disconnect().await;
        eventually("reconnected crasher gone", || {
            broker.broker().routes.subscription_count() == bystander_subs
        })
        .await;
    }
    assert_eq!(m.client_crashes.get(), 2);
    assert_eq!(
        broker.node().root_stats().restarts(),
        0,
        "nothing above the client restarted"
    );
    broker.stop().await;
}

#[tokio::test]
async fn crashed_router_is_restarted_with_every_route_in_place() {
    // A router panics: router_sup (one_for_one) restarts it alone; the route table, owned above
    // it, loses nothing, so subscribers made before the crash still receive; the restarted
    // router serves new subscriptions and unsubscriptions. One router, so every filter goes
    // through the one that crashed.
    let broker = TestBroker::start_with(|c| {
        c.debug.fault_injection = true;
        c.broker.routers = 1;
    })
    .await;
    let before = router_0(&broker).await;
    assert_eq!(before.restarts, 0);
    let old_id = before.actor_id.expect("router-0 running");

    let mut s3 = v3::Client::connect(&broker, "early3").await;
    s3.subscribe("rt/a", v3::QoS::AtLeastOnce).await;
    s3.subscribe("rt/+/deep", v3::QoS::AtLeastOnce).await;
    let mut s5 = v5::Client::connect(&broker, "early5").await;
    s5.subscribe("rt/#", v5::QoS::AtLeastOnce).await;
    let subs = broker.broker().routes.subscription_count();
    assert_eq!(subs, 3);

    let mut p = v5::Client::connect(&broker, "trigger").await;
    p.publish(FAULT_ROUTER, v5::QoS::AtLeastOnce, false, b"boom")
        .await;
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let r = router_0(&broker).await;
        if r.restarts == 1 && r.actor_id.is_some() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "router-0 was not restarted: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_ne!(after.actor_id, Some(old_id), "a new incarnation");
    assert_eq!(
        broker.broker().routes.subscription_count(),
        subs,
        "no route lost"
    );

    // Subscriptions made before the crash still route.
    p.publish("rt/a", v5::QoS::AtLeastOnce, false, b"after")
        .await;
    assert_eq!(s3.next_publish().await.topic, "rt/a");
    assert_eq!(&s5.next_publish().await.topic[..], b"rt/a");
    p.publish("rt/x/deep", v5::QoS::AtLeastOnce, false, b"deep")
        .await;
    assert_eq!(s3.next_publish().await.topic, "rt/x/deep");
    assert_eq!(&s5.next_publish().await.topic[..], b"rt/x/deep");

    // New subscriptions and unsubscriptions go through the restarted router.
    let mut late = v3::Client::connect(&broker, "late").await;
    late.subscribe("rt/late", v3::QoS::AtLeastOnce).await;
    assert_eq!(broker.broker().routes.subscription_count(), subs + 1);
    p.publish("rt/late", v5::QoS::AtLeastOnce, false, b"new")
        .await;
    assert_eq!(&late.next_publish().await.payload[..], b"new");
    assert_eq!(&s5.next_publish().await.topic[..], b"rt/late");
    late.client
        .unsubscribe("rt/late")
        .await
        .expect("queue UNSUBSCRIBE");
    late.wait_for("UNSUBACK", |p| matches!(p, v3::Packet::UnsubAck(_)))
        .await;
    assert_eq!(broker.broker().routes.subscription_count(), subs);

    let m = &broker.broker().metrics;
    assert_eq!(m.client_crashes.get(), 0);
    assert_eq!(m.connections.get(), 4, "no client was disconnected");
    assert_eq!(
        broker.node().root_stats().restarts(),
        0,
        "the crash did not escalate"
    );
    broker.stop().await;
}

#[tokio::test]
async fn fault_topics_are_ordinary_when_fault_injection_is_off() {
    // The default configuration: publishing to the fault topics is a normal publish.
    let broker = TestBroker::start().await;
    assert!(!broker.broker().config.debug.fault_injection);
    let mut sub = v5::Client::connect(&broker, "fault-watcher").await;
    sub.subscribe("$beamq/fault/#", v5::QoS::AtLeastOnce).await;
    let mut p3 = v3::Client::connect(&broker, "fault-pub3").await;
    let mut p5 = v5::Client::connect(&broker, "fault-pub5").await;
    p3.publish(FAULT_CLIENT, v3::QoS::AtLeastOnce, false, b"c3")
        .await;
    p5.publish(FAULT_CLIENT, v5::QoS::AtLeastOnce, false, b"c5")
        .await;
    p3.publish(FAULT_ROUTER, v3::QoS::AtLeastOnce, false, b"r3")
        .await;
    p5.publish(FAULT_ROUTER, v5::QoS::AtLeastOnce, false, b"r5")
        .await;
    for (topic, payload) in [
        (FAULT_CLIENT, &b"c3"[..]),
        (FAULT_CLIENT, b"c5"),
        (FAULT_ROUTER, b"r3"),
        (FAULT_ROUTER, b"r5"),
    ] {
        let p = sub.next_publish().await;
        assert_eq!((&p.topic[..], &p.payload[..]), (topic.as_bytes(), payload));
    }
    // Both publishers are still connected and served.
    p3.publish("still/here", v3::QoS::AtLeastOnce, false, b"")
        .await;
    p5.publish("still/here", v5::QoS::AtLeastOnce, false, b"")
        .await;
    assert_eq!(broker.broker().metrics.client_crashes.get(), 0);
    assert_eq!(router_restarts(&broker).await, 0);
    broker.stop().await;
}
