//! The summary of a run: printed as text, or written as JSON for `scripts/bench-compare.sh`.

use serde::Serialize;

use crate::net::Target;
use crate::run::{ConnResult, Plan, TrafficResult};
use crate::stats::{Latency, Snapshot};

/// Everything a run reports. Fields that do not apply to the scenario are left out of the JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario and QoS, e.g. `fan-in-qos1`.
    pub scenario: String,
    /// `--label`.
    pub label: String,
    /// Broker address.
    pub broker: String,
    /// MQTT version.
    pub protocol: String,
    /// Open-file limit in force.
    pub fd_limit: u64,
    /// Publishers and subscribers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<Clients>,
    /// Counters at the end of the run.
    pub totals: Snapshot,
    /// Traffic figures over the measured window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    /// Publish-to-receive latency during the window (traffic), or connect-to-CONNACK (conn).
    pub latency: Latency,
    /// Connection figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<Connections>,
    /// The generator's own CPU use, percent of one core, over the measured phase.
    pub generator_cpu_pct: f64,
    /// The broker's CPU and memory, given `--broker-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_process: Option<BrokerProcess>,
    /// Anything that limited the run.
    pub notes: Vec<String>,
    #[serde(skip)]
    broker_pid: Option<u32>,
}

/// Who took part.
#[derive(Debug, Serialize)]
pub struct Clients {
    /// Publishers.
    pub publishers: usize,
    /// Subscribers.
    pub subscribers: usize,
    /// QoS.
    pub qos: u8,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Rate per publisher (0 = unlimited).
    pub rate_per_publisher: f64,
}

/// Rates over the measured window, and the loss check.
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// Length of the window, seconds.
    pub window_s: f64,
    /// Messages published per second.
    pub published_per_s: f64,
    /// Messages delivered to subscribers per second (the figure compared).
    pub delivered_per_s: f64,
    /// QoS 1 with a known fan-out: messages the subscribers should have received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// Expected minus received (QoS 1): messages lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
}

/// Connection figures.
#[derive(Debug, Serialize)]
pub struct Connections {
    /// Asked for.
    pub requested: usize,
    /// Seconds from the first connect to the last CONNACK.
    pub elapsed_s: f64,
    /// Successful connections per second.
    pub rate_per_s: f64,
    /// The broker's resident memory per connection, bytes (with `--broker-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_bytes_per_connection: Option<f64>,
}

/// The broker process.
#[derive(Debug, Serialize)]
pub struct BrokerProcess {
    /// Process id.
    pub pid: u32,
    /// CPU use over the measured phase, percent of one core.
    pub cpu_pct: f64,
    /// Resident memory at the start of the phase, KiB.
    pub rss_before_kib: u64,
    /// Resident memory at its end, KiB.
    pub rss_kib: u64,
    /// Peak resident memory since the broker started, KiB.
    pub peak_rss_kib: u64,
}

impl Report {
    /// An empty report for a run.
    pub fn new(
        scenario: &str,
        label: &str,
        target: &Target,
        fd_limit: u64,
        broker_pid: Option<u32>,
    ) -> Self {
        Report {
            scenario: scenario.to_string(),
            label: label.to_string(),
            broker: target.addr.to_string(),
            protocol: target.version.to_string(),
            fd_limit,
            clients: None,
            totals: Snapshot::default(),
            throughput: None,
            latency: Latency::default(),
            connections: None,
            generator_cpu_pct: 0.0,
            broker_process: None,
            notes: Vec::new(),
            broker_pid,
        }
    }

    /// Adds a note.
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Fills in a traffic run.
    pub fn set_traffic(&mut self, plan: &Plan, r: &TrafficResult) {
        let secs = r.window_len.as_secs_f64().max(1e-9);
        let (a, b) = r.window;
        let received = r.totals.received;
        self.clients = Some(Clients {
            publishers: plan.pubs.len(),
            subscribers: plan.subs.len(),
            qos: plan.load.qos.as_u8(),
            payload_bytes: plan.load.size,
            rate_per_publisher: plan.load.rate,
        });
        self.totals = r.totals;
        self.throughput = Some(Throughput {
            window_s: secs,
            published_per_s: (b.published - a.published) as f64 / secs,
            delivered_per_s: (b.received - a.received) as f64 / secs,
            expected: r.expected,
            lost: r.expected.map(|e| e.saturating_sub(received)),
        });
        self.latency = r.latency.clone();
        self.generator_cpu_pct = r.own_cpu.as_secs_f64() / secs * 100.0;
        self.set_broker(r.broker, secs);
    }

    /// Fills in a connection run.
    pub fn set_conn(&mut self, requested: usize, r: &ConnResult) {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        self.totals = r.totals;
        self.latency = r.latency.clone();
        self.generator_cpu_pct = r.own_cpu.as_secs_f64() / secs * 100.0;
        let per_conn = r.broker.and_then(|(a, b)| {
            (r.totals.connected > 0)
                .then(|| (b.rss_kib as f64 - a.rss_kib as f64) * 1024.0 / r.totals.connected as f64)
        });
        self.connections = Some(Connections {
            requested,
            elapsed_s: secs,
            rate_per_s: r.totals.connected as f64 / secs,
            broker_bytes_per_connection: per_conn,
        });
        self.set_broker(r.broker, f64::INFINITY);
        if let (Some(b), Some(cpu)) = (&mut self.broker_process, r.broker_connect_cpu_s) {
            // Over the connect phase; memory is sampled after the hold.
            b.cpu_pct = cpu / secs * 100.0;
        }
    }

    fn set_broker(
        &mut self,
        samples: Option<(crate::stats::ProcSample, crate::stats::ProcSample)>,
        secs: f64,
    ) {
        let (Some((a, b)), Some(pid)) = (samples, self.broker_pid) else {
            return;
        };
        self.broker_process = Some(BrokerProcess {
            pid,
            cpu_pct: if secs.is_finite() {
                (b.cpu_s - a.cpu_s) / secs * 100.0
            } else {
                0.0
            },
            rss_before_kib: a.rss_kib,
            rss_kib: b.rss_kib,
            peak_rss_kib: b.hwm_kib,
        });
    }

    /// Prints the summary (text) and writes JSON where asked.
    pub fn emit(&self, json: Option<&str>) -> Result<(), String> {
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(self)
                .map_err(|e| format!("cannot encode the summary: {e}"))?;
            if path == "-" {
                println!("{text}");
                return Ok(());
            }
            std::fs::write(path, text + "\n").map_err(|e| format!("--json {path}: {e}"))?;
        }
        print!("{}", self.text());
        Ok(())
    }

    /// The human-readable summary.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== {} against {} {} (MQTT {})",
            self.scenario, self.label, self.broker, self.protocol
        );
        if let Some(c) = &self.clients {
            let _ = writeln!(
                s,
                "clients: {} publishers, {} subscribers, QoS {}, {} B payload, rate {}",
                c.publishers,
                c.subscribers,
                c.qos,
                c.payload_bytes,
                if c.rate_per_publisher > 0.0 {
                    format!("{}/s per publisher", c.rate_per_publisher)
                } else {
                    "unlimited".into()
                }
            );
        }
        if let Some(t) = &self.throughput {
            let _ = writeln!(
                s,
                "throughput over {:.1} s: published {:.0} msg/s, delivered {:.0} msg/s",
                t.window_s, t.published_per_s, t.delivered_per_s
            );
            if let (Some(e), Some(l)) = (t.expected, t.lost) {
                let _ = writeln!(
                    s,
                    "QoS 1 check: expected {e}, received {}, lost {l}",
                    self.totals.received
                );
            }
        }
        if let Some(c) = &self.connections {
            let _ = writeln!(
                s,
                "connections: {} of {} in {:.2} s = {:.0}/s",
                self.totals.connected, c.requested, c.elapsed_s, c.rate_per_s
            );
            if let Some(b) = c.broker_bytes_per_connection {
                let _ = writeln!(
                    s,
                    "broker memory per connection: {:.0} B ({:.1} KiB)",
                    b,
                    b / 1024.0
                );
            }
        }
        let l = &self.latency;
        if l.count > 0 {
            let _ = writeln!(
                s,
                "latency (us, {} samples): min {:.1} p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
                l.count, l.min_us, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
            );
        }
        let t = &self.totals;
        let _ = writeln!(
            s,
            "totals: published {} acked {} received {} | errors: connect {} ack {} lost connections {} | window write-offs {}",
            t.published,
            t.acked,
            t.received,
            t.connect_errors,
            t.ack_errors,
            t.conn_lost,
            t.window_stalls
        );
        let _ = writeln!(
            s,
            "generator cpu: {:.0}% of one core",
            self.generator_cpu_pct
        );
        if let Some(b) = &self.broker_process {
            let _ = writeln!(
                s,
                "broker: cpu {:.0}% of one core, rss {} -> {} KiB, peak {} KiB",
                b.cpu_pct, b.rss_before_kib, b.rss_kib, b.peak_rss_kib
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}
