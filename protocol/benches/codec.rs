//! Codec costs on the broker's hot path: decoding and encoding a QoS 1 PUBLISH with a 64-byte
//! payload (3.1.1, and 5.0 with a few properties), decoding a batch of 100 frames from one read
//! buffer, and topic matching.
//!
//! Run with `cargo bench -p beamq-protocol --bench codec`.

use std::hint::black_box;

use beamq_protocol::codec::{decode, encode_publish};
use beamq_protocol::topic;
use beamq_protocol::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn sample_publish(v5: bool) -> Publish {
    let properties = if v5 {
        PublishProperties {
            message_expiry_interval: Some(3600),
            content_type: Some(ByteString::from_static("application/json")),
            user_properties: vec![(
                ByteString::from_static("trace"),
                ByteString::from_static("abc123"),
            )],
            ..Default::default()
        }
    } else {
        PublishProperties::default()
    };
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from_static("sensors/building-1/floor-2/temperature"),
        packet_id: Some(42),
        properties,
        payload: Bytes::from(vec![0x5A; 64]),
    }
}

fn encoded(p: &Publish, v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_publish(p, v, &mut buf).expect("encodable");
    buf
}

fn bench_publish(c: &mut Criterion) {
    for (name, v, v5) in [
        ("v3.1.1", ProtocolVersion::V3_1_1, false),
        ("v5+props", ProtocolVersion::V5, true),
    ] {
        let p = sample_publish(v5);
        let frame = encoded(&p, v).freeze();

        let mut g = c.benchmark_group(format!("publish_qos1_64B/{name}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("decode", |b| {
            b.iter(|| {
                // Building the BytesMut is part of what a reader does per frame anyway, and is
                // one copy of ~110 bytes; decode itself copies nothing.
                let mut buf = BytesMut::from(&frame[..]);
                black_box(decode(&mut buf, v, u32::MAX).expect("valid"))
            })
        });
        let mut out = BytesMut::with_capacity(4096);
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                encode_publish(black_box(&p), v, &mut out).expect("encodable");
                black_box(out.len())
            })
        });
        g.finish();
    }
}

fn bench_batch(c: &mut Criterion) {
    let v = ProtocolVersion::V3_1_1;
    let p = sample_publish(false);
    let one = encoded(&p, v);
    let mut batch = BytesMut::new();
    for _ in 0..100 {
        batch.extend_from_slice(&one);
    }
    let batch = batch.freeze();

    let mut g = c.benchmark_group("decode_batch_100_publish_v3.1.1");
    g.throughput(Throughput::Elements(100));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&batch[..]);
            let mut n = 0;
            while let Some(p) = decode(&mut buf, v, u32::MAX).expect("valid") {
                black_box(&p);
                n += 1;
            }
            assert_eq!(n, 100);
        })
    });
    g.finish();
}

fn bench_topic_matches(c: &mut Criterion) {
    let cases = [
        ("exact", "sensors/b1/f2/temp", "sensors/b1/f2/temp"),
        ("plus", "sensors/+/+/temp", "sensors/b1/f2/temp"),
        ("hash", "sensors/#", "sensors/b1/f2/temp"),
        ("miss_early", "alerts/#", "sensors/b1/f2/temp"),
        ("dollar_vs_hash", "#", "$SYS/broker/uptime"),
    ];
    let mut g = c.benchmark_group("topic_matches");
    for (name, filter, topic_name) in cases {
        g.bench_function(name, |b| {
            b.iter(|| topic::matches(black_box(filter), black_box(topic_name)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_publish, bench_batch, bench_topic_matches);
criterion_main!(benches);
