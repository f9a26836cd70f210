//! `beamq bench`, the load tool, run as an operator runs it against a real broker: a scenario's
//! JSON summary adds up (every QoS 1 message acknowledged and received, latency recorded, the
//! broker's process sampled), `conn` holds the connections it reports, the latency scenario
//! keeps its rate, and an unreachable broker is a clear error. These check the tool's
//! bookkeeping, not speed: figures are in docs/BENCHMARKS.md.

mod common;

use std::process::Output;

use common::process::*;
use serde_json::Value;

async fn bench(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        beamq()
            .arg("bench")
            .args(&args)
            .output()
            .expect("run beamq bench")
    })
    .await
    .expect("bench task")
}

async fn bench_json(broker: &Running, args: &[&str]) -> Value {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(
        [
            "--port",
            &broker.port.to_string(),
            "--broker-pid",
            &broker.child.id().to_string(),
            "--quiet",
            "--json",
            "-",
        ]
        .map(String::from),
    );
    let out = bench(all).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "beamq bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for key in path {
        at = &at[key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_in_qos1_every_acknowledged_message_is_received_once() {
    let broker = Running::start().await;
    let r = bench_json(
        &broker,
        &["fan-in", "--qos", "1", "--duration", "1", "--warmup", "0.2"],
    )
    .await;
    assert_eq!(r["scenario"], "fan-in-qos1");
    assert_eq!(num(&r, &["clients", "publishers"]), 4.0);
    assert_eq!(num(&r, &["clients", "subscribers"]), 1.0);
    let published = num(&r, &["totals", "published"]);
    let acked = num(&r, &["totals", "acked"]);
    let received = num(&r, &["totals", "received"]);
    assert!(published > 0.0, "{r:#}");
    // [MQTT-4.3.2-4]/[MQTT-4.3.3] at-least-once: every PUBACKed message reaches the
    // subscriber; the tool publishes no more than its window allows, so the default queue
    // limit never drops one.
    assert_eq!(acked, published, "{r:#}");
    assert_eq!(received, acked, "{r:#}");
    assert_eq!(num(&r, &["throughput", "expected"]), acked);
    assert_eq!(num(&r, &["throughput", "lost"]), 0.0);
    assert!(num(&r, &["throughput", "delivered_per_s"]) > 0.0);
    assert!(num(&r, &["latency", "count"]) > 0.0);
    let p50 = num(&r, &["latency", "p50_us"]);
    assert!(p50 > 0.0 && p50 <= num(&r, &["latency", "p99_us"]), "{r:#}");
    assert_eq!(num(&r, &["totals", "conn_lost"]), 0.0);
    assert_eq!(
        num(&r, &["broker_process", "pid"]),
        f64::from(broker.child.id())
    );
    assert!(num(&r, &["broker_process", "peak_rss_kib"]) > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn fan_out_v5_delivers_each_message_to_all_sixteen_subscribers() {
    let broker = Running::start().await;
    let r = bench_json(
        &broker,
        &[
            "fan-out",
            "--qos",
            "1",
            "--protocol",
            "5",
            "--duration",
            "1",
            "--warmup",
            "0.2",
        ],
    )
    .await;
    assert_eq!(r["protocol"], "5.0");
    let acked = num(&r, &["totals", "acked"]);
    assert!(acked > 0.0);
    assert_eq!(num(&r, &["totals", "received"]), acked * 16.0, "{r:#}");
    assert_eq!(num(&r, &["throughput", "lost"]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn conn_holds_every_connection_and_reports_memory_per_connection() {
    let broker = Running::start().await;
    let r = bench_json(&broker, &["conn", "--count", "300", "--hold", "0.5"]).await;
    assert_eq!(num(&r, &["totals", "connected"]), 300.0, "{r:#}");
    assert_eq!(num(&r, &["totals", "connect_errors"]), 0.0);
    assert_eq!(num(&r, &["totals", "conn_lost"]), 0.0);
    assert!(num(&r, &["connections", "rate_per_s"]) > 0.0);
    // The broker held 300 more connections at the end than at the start.
    assert!(
        num(&r, &["connections", "broker_bytes_per_connection"]) > 0.0,
        "{r:#}"
    );
    assert_eq!(num(&r, &["latency", "count"]), 300.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_scenario_publishes_at_its_fixed_rate() {
    let broker = Running::start().await;
    let r = bench_json(
        &broker,
        &[
            "latency",
            "--rate",
            "200",
            "--duration",
            "1",
            "--warmup",
            "0.2",
        ],
    )
    .await;
    // Paced by due time, not by sleeping a fixed interval: a late tick catches up.
    let rate = num(&r, &["throughput", "published_per_s"]);
    assert!((150.0..=250.0).contains(&rate), "rate {rate}: {r:#}");
    assert_eq!(
        num(&r, &["totals", "received"]),
        num(&r, &["totals", "published"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_is_a_clear_error() {
    let port = free_port();
    let out = bench(
        [
            "fan-in",
            "--port",
            &port.to_string(),
            "--quiet",
            "--duration",
            "1",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("beamq bench: client bench-sub-") && err.contains("connect"),
        "{err}"
    );
    let bad = bench(["fan-in", "--size", "4"].map(String::from).to_vec()).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--size"));
}
