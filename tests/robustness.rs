//! Flow control and hostile clients: a slow reader, a client that never reads, takeovers under
//! load, a will aimed at `$SYS`. Each of these once broke the broker (found in review); the
//! tests keep them fixed.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use beamq_actors::config::{ByteSize, DurationStr};
use beamq_protocol::{Packet, ProtocolVersion};
use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_slow_qos0_reader_gets_everything_once_it_reads() {
    // A subscriber that does not read for a while fills its socket and the write buffer; the
    // rest waits in its session queue. Once it reads, everything arrives, in order, and later
    // messages still flow: nothing stays stuck behind a queue nobody drains (QoS 0 brings no
    // acknowledgements to wake it).
    let broker = TestBroker::start_with(|c| {
        c.broker.write_buffer_high_watermark = ByteSize(4096);
        c.mqtt.max_queued_messages = 0;
    })
    .await;
    let mut sub = Raw::connect(&broker).await;
    sub.handshake(ProtocolVersion::V3_1_1, "slow-reader").await;
    sub.send(&wire::subscribe(false, 1, "flood/#", 0)).await;
    assert!(matches!(sub.recv().await, Some(Packet::Suback(_))));

    let mut publ = v3::Client::connect(&broker, "flooder").await;
    let n = 5000u32;
    let payload = vec![b'p'; 100];
    for i in 0..n {
        let mut p = i.to_be_bytes().to_vec();
        p.extend_from_slice(&payload);
        publ.client
            .publish("flood/x", v3::QoS::AtMostOnce, false, p)
            .await
            .expect("queue");
    }
    // The last one is QoS 1: once it is acknowledged, all were routed.
    publ.publish("flood/x", v3::QoS::AtLeastOnce, false, b"end")
        .await;

    let mut got = 0u32;
    loop {
        match sub.recv().await {
            Some(Packet::Publish(p)) if &p.payload[..] == b"end" => break,
            Some(Packet::Publish(p)) => {
                let i = u32::from_be_bytes(p.payload[..4].try_into().expect("counter"));
                assert_eq!(i, got, "[MQTT-4.6.0-6] order kept");
                got += 1;
            }
            Some(_) => {}
            None => panic!("connection closed after {got} messages"),
        }
    }
    assert_eq!(got, n);
    // And the queue is not stuck afterwards.
    publ.publish("flood/x", v3::QoS::AtMostOnce, false, b"after")
        .await;
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"after"),
        other => panic!("expected the later message, got {other:?}"),
    }
    assert_eq!(broker.broker().metrics.messages_dropped(), 0);
    broker.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_held_back_then_disconnected() {
    // A client that writes without reading (here: PINGREQ after PINGREQ) makes answers pile up.
    // The broker stops reading from it once they exceed twice the write buffer watermark, so
    // its memory stays bounded, and disconnects it after `broker.send_timeout` without a byte
    // accepted. Other clients are not affected.
    let broker = TestBroker::start_with(|c| {
        c.broker.write_buffer_high_watermark = ByteSize(4096);
        c.broker.send_timeout = DurationStr(Some(Duration::from_millis(800)));
    })
    .await;
    let mut rude = Raw::connect(&broker).await;
    rude.handshake(ProtocolVersion::V3_1_1, "never-reads").await;
    let pings = [0xC0u8, 0x00].repeat(64 * 1024);
    let writer = tokio::spawn(async move {
        let started = Instant::now();
        let mut written = 0usize;
        // Up to 64 MB; the broker must push back long before.
        for _ in 0..512 {
            match tokio::time::timeout(Duration::from_secs(3), rude.stream.write_all(&pings)).await
            {
                Ok(Ok(())) => written += pings.len(),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        (written, started.elapsed())
    });
    let mut other = v5::Client::connect(&broker, "bystander").await;
    other.subscribe("still/works", v5::QoS::AtLeastOnce).await;
    other
        .publish("still/works", v5::QoS::AtLeastOnce, false, b"yes")
        .await;
    assert_eq!(&other.next_publish().await.payload[..], b"yes");

    eventually("send timeout", || {
        broker.broker().metrics.send_timeouts.get() == 1
    })
    .await;
    let (written, _) = within("writer ends", writer).await.expect("writer task");
    assert!(
        written < 32 * 1024 * 1024,
        "the broker kept reading from a client that does not read ({written} bytes)"
    );
    eventually("disconnected", || {
        broker.broker().metrics.connections.get() == 1
    })
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn takeovers_under_load_lose_no_qos1_message() {
    // A persistent subscriber reconnects (takeover of its own session) again and again while a
    // publisher streams QoS 1 messages. Publishers look routes up while the session moves from
    // one actor to the next; whatever reaches the old actor is handed or forwarded to the new
    // one. Every message arrives at least once [MQTT-4.3.2 in 3.1.1, MQTT-4.4.0-1].
    let broker = TestBroker::start_with(|c| c.mqtt.max_queued_messages = 0).await;
    // Manual acks: a message counts as received only once the test took it; rumqttc would
    // otherwise acknowledge what its event loop read but the test never saw.
    let opts = |b: &TestBroker| {
        let mut o = v3::options(b, "hopper");
        o.set_clean_session(false).set_manual_acks(true);
        o
    };
    let mut sub = v3::Client::connect_with(opts(&broker)).await;
    sub.subscribe("stream", v3::QoS::AtLeastOnce).await;

    // The publisher writes its QoS 1 messages in large pipelined bursts (without waiting for
    // acknowledgements): the broker routes a burst in one go and sends the deliveries at its
    // end, which widens the window in which a route looked up for the old actor is used after
    // the session moved.
    let n = 6000u32;
    let mut publ = Raw::connect(&broker).await;
    publ.handshake(ProtocolVersion::V3_1_1, "streamer").await;
    let publisher = tokio::spawn(async move {
        let mut burst = Vec::new();
        for i in 0..n {
            let id = (i % 60000 + 1) as u16;
            burst.extend(wire::publish(
                false,
                "stream",
                1,
                false,
                false,
                id,
                &[],
                &i.to_be_bytes(),
            ));
            if burst.len() > 16 * 1024 {
                publ.stream.write_all(&burst).await.expect("write");
                burst.clear();
                tokio::task::yield_now().await;
            }
        }
        burst.extend(wire::publish(
            false,
            "stream",
            1,
            false,
            false,
            60001,
            &[],
            b"done",
        ));
        publ.stream.write_all(&burst).await.expect("write");
        publ
    });

    let mut seen = BTreeSet::new();
    let mut takeovers = 0;
    let mut done = false;
    while !done {
        // Take a few messages, then reconnect: the new connection takes the session over while
        // messages are in flight and in the old actor's mailbox.
        for _ in 0..25 {
            let p = sub.next_publish().await;
            sub.client.ack(&p).await.expect("ack");
            if &p.payload[..] == b"done" {
                done = true;
                break;
            }
            seen.insert(u32::from_be_bytes(
                p.payload[..4].try_into().expect("counter"),
            ));
        }
        if !done {
            let next = v3::Client::connect_with(opts(&broker)).await;
            sub.kill();
            sub = next;
            takeovers += 1;
        }
    }
    let _publ = within("publisher", publisher)
        .await
        .expect("publisher task");
    // "done" was published last; with per-publisher order kept, everything before it arrived
    // before it, apart from messages that were in flight and are resent after a takeover.
    while seen.len() < n as usize {
        let p = match tokio::time::timeout(Duration::from_secs(5), sub.next_publish()).await {
            Ok(p) => p,
            Err(_) => {
                let missing: Vec<u32> = (0..n).filter(|i| !seen.contains(i)).take(20).collect();
                panic!("{} of {n} arrived; missing {missing:?}", seen.len());
            }
        };
        sub.client.ack(&p).await.expect("ack");
        if p.payload.len() == 4 {
            seen.insert(u32::from_be_bytes(
                p.payload[..4].try_into().expect("counter"),
            ));
        }
    }
    assert!(takeovers > 20, "only {takeovers} takeovers");
    assert_eq!(seen.len(), n as usize);
    broker.stop().await;
}

#[tokio::test]
async fn a_will_cannot_write_to_sys() {
    // `$SYS` is the broker's namespace: a will aimed there is refused at publication like a
    // PUBLISH would be, and counted.
    let broker = TestBroker::start().await;
    let mut raw = Raw::connect(&broker).await;
    let will = wire::Will {
        topic: "$SYS/fake".into(),
        payload: b"spoof".to_vec(),
        qos: 0,
        retain: true,
        props: Vec::new(),
    };
    raw.send(&wire::connect(
        false,
        "sys-will",
        true,
        60,
        &[],
        Some(&will),
    ))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::Connack(_))));
    drop(raw);
    eventually("will refused", || {
        broker.broker().metrics.publishes_denied.get() == 1
    })
    .await;
    assert_eq!(broker.broker().metrics.wills_published.get(), 0);
    assert!(
        broker
            .broker()
            .retained
            .matching("$SYS/#", Instant::now())
            .is_empty()
    );
    broker.stop().await;
}
