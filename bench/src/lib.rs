//! `beamq bench`: a load tool for MQTT brokers, in the spirit of emqtt-bench.
//!
//! It drives any broker (beamq, Mosquitto, ...) over TCP: `conn` opens and holds connections,
//! `pub` and `sub` run publishers or subscribers, and the standard scenarios (`fan-in`,
//! `fan-out`, `p2p`, `latency`) run both sides in one process. Every run is bounded in time,
//! prints a progress line each second on stderr, and ends with a summary (text, or JSON with
//! `--json`) of throughput, latency percentiles (HDR histogram), errors, its own CPU use (the
//! generator must not be the bottleneck) and, given `--broker-pid`, the broker's CPU and
//! memory. `scripts/bench-compare.sh` runs the scenarios against beamq and Mosquitto.

mod net;
mod report;
mod run;
mod stats;
mod wire;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use beamq_protocol::{ProtocolVersion, QoS};
use clap::{Args, Subcommand};

pub use report::Report;
use run::{Load, Plan, PubSpec, Shared, SubSpec, Timing};

/// Arguments of `beamq bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Open N connections (CONNECT, then idle), hold them, report connect rate and the broker's
    /// memory per connection.
    Conn {
        /// Connections to open.
        #[arg(long, short = 'c', default_value_t = 19_000)]
        count: usize,
        /// Connections per second (0 = as fast as they go).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Handshakes in progress at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Seconds to hold the connections once all are open (memory is sampled at the end).
        #[arg(long, default_value_t = 3.0)]
        hold: f64,
        /// Most seconds for the connect phase.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
    },
    /// N publishers; `%i` in the topic is the client's index.
    Pub {
        /// Publishers.
        #[arg(long, short = 'c', default_value_t = 1)]
        count: usize,
        /// Topic, `%i` replaced by the publisher's index.
        #[arg(long, short = 't', default_value = "bench/%i")]
        topic: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// N subscribers; `%i` in the filter is the client's index.
    Sub {
        /// Subscribers.
        #[arg(long, short = 'c', default_value_t = 1)]
        count: usize,
        /// Topic filter, `%i` replaced by the subscriber's index.
        #[arg(long, short = 't', default_value = "bench/#")]
        topic: String,
        /// Subscription QoS (0 or 1).
        #[arg(long, short = 'q', default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
    },
    /// 4 publishers -> 1 subscriber on a wildcard filter.
    FanIn {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// 1 publisher -> 16 subscribers of its topic.
    FanOut {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// 16 publisher/subscriber pairs, each on its own topic.
    P2p {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// 1 publisher at a fixed rate (default 1,000 msg/s) -> 1 subscriber: latency.
    Latency {
        #[command(flatten)]
        load: LoadArgs,
    },
}

#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// QoS of publishes and subscriptions (0 or 1).
    #[arg(long, short = 'q', default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Payload bytes (at least 12: the send timestamp and the publisher's index).
    #[arg(long, short = 's', default_value_t = 64)]
    size: usize,
    /// Messages per second per publisher (0 = as fast as the broker takes them; the latency
    /// scenario defaults to 1000).
    #[arg(long)]
    rate: Option<f64>,
    /// Unacknowledged QoS 1 messages per publisher.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Most messages per write.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Messages per publisher published and not yet received by every subscriber: the
    /// publisher waits beyond it, so the figure is the rate the broker sustains without
    /// queueing up (or dropping). 0 = no window: publish at `--rate` or flat out whatever
    /// happens to the messages. Only when the subscribers run in this process.
    #[arg(long, default_value_t = 200)]
    window: u64,
}

#[derive(Args, Debug)]
struct Common {
    /// Broker host.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, short = 'p', global = true, default_value_t = 1883)]
    port: u16,
    /// MQTT version: 3.1.1 or 5.
    #[arg(long, global = true, default_value = "3.1.1")]
    protocol: String,
    /// Source addresses, used in turn (several pass the ~28,000 ephemeral ports of one).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4"
    )]
    sources: Vec<IpAddr>,
    /// Keep alive, seconds.
    #[arg(long, global = true, default_value_t = 60)]
    keepalive: u16,
    /// Username for CONNECT.
    #[arg(long, global = true)]
    username: Option<String>,
    /// Password for CONNECT.
    #[arg(long, global = true)]
    password: Option<String>,
    /// Seconds of unmeasured warm-up.
    #[arg(long, global = true, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, short = 'd', global = true, default_value_t = 10.0)]
    duration: f64,
    /// Most seconds to wait for messages in flight after publishing stops.
    #[arg(long, global = true, default_value_t = 5.0)]
    drain: f64,
    /// The broker's process id: its CPU and memory go into the summary.
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    /// A name for the broker under test, carried into the summary.
    #[arg(long, global = true, default_value = "")]
    label: String,
    /// Write the summary as JSON to FILE (`-`: stdout, instead of the text summary).
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<String>,
    /// No progress line.
    #[arg(long, global = true)]
    quiet: bool,
    /// Generator threads.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
}

/// Runs `beamq bench`; the error is a message for the user.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let common = &args.common;
    let fd_limit = net::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(common.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime.block_on(execute(&args, fd_limit))?;
    report.emit(common.json.as_deref())
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "3.1.1" | "4" | "311" => Ok(ProtocolVersion::V3_1_1),
        "5" | "5.0" => Ok(ProtocolVersion::V5),
        "3.1" | "3" => Ok(ProtocolVersion::V3_1),
        other => Err(format!(
            "--protocol: unknown MQTT version {other:?} (3.1, 3.1.1 or 5)"
        )),
    }
}

fn secs(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{name}: not a duration in seconds: {s}"))
}

async fn execute(args: &BenchArgs, fd_limit: u64) -> Result<Report, String> {
    let c = &args.common;
    let addr: SocketAddr = (c.host.as_str(), c.port)
        .to_socket_addrs()
        .map_err(|e| format!("--host {}: {e}", c.host))?
        .next()
        .ok_or_else(|| format!("--host {}: no address", c.host))?;
    let target = net::Target {
        addr,
        sources: if addr.ip().is_loopback() {
            c.sources.clone()
        } else {
            Vec::new()
        },
        version: parse_version(&c.protocol)?,
        keep_alive: c.keepalive,
        username: c.username.clone(),
        password: c.password.clone(),
        handshake_timeout: Duration::from_secs(30),
    };
    let shared = |publishers: usize, subscribers: usize| {
        Arc::new(Shared {
            counters: Default::default(),
            measuring: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            broker_pid: c.broker_pid,
            progress: !c.quiet,
            tracks: (0..publishers)
                .map(|_| run::Track::new(subscribers))
                .collect(),
        })
    };
    let mut report = Report::new(
        &args.scenario_name(),
        &c.label,
        &target,
        fd_limit,
        c.broker_pid,
    );
    // A few descriptors for the runtime, stdio and the broker's /proc files.
    let max_clients = fd_limit.saturating_sub(64) as usize;

    if let Scenario::Conn {
        count,
        rate,
        concurrency,
        hold,
        timeout,
    } = &args.scenario
    {
        let mut count = *count;
        if count > max_clients {
            report.note(format!(
                "the open-file limit ({fd_limit}, raised to the hard limit) caps this run at {max_clients} connections instead of {count}"
            ));
            eprintln!(
                "beamq bench: {}",
                report.notes.last().map_or("", String::as_str)
            );
            count = max_clients;
        }
        let result = run::conn(
            &target,
            count,
            *rate,
            *concurrency,
            secs("hold", *hold)?,
            secs("timeout", *timeout)?,
            &shared(0, 0),
        )
        .await;
        report.set_conn(count, &result);
        return Ok(report);
    }

    let plan = args.plan()?;
    if plan.pubs.len() + plan.subs.len() > max_clients {
        return Err(format!(
            "{} clients need more than the open-file limit ({fd_limit}) allows",
            plan.pubs.len() + plan.subs.len()
        ));
    }
    let timing = Timing {
        warmup: secs("warmup", c.warmup)?,
        duration: secs("duration", c.duration)?,
        drain: secs("drain", c.drain)?,
    };
    let result = run::traffic(
        &target,
        &plan,
        timing,
        &shared(plan.pubs.len(), plan.subs.len()),
    )
    .await?;
    report.set_traffic(&plan, &result);
    Ok(report)
}

impl BenchArgs {
    fn scenario_name(&self) -> String {
        let (name, qos) = match &self.scenario {
            Scenario::Conn { .. } => ("conn", None),
            Scenario::Pub { load, .. } => ("pub", Some(load.qos)),
            Scenario::Sub { qos, .. } => ("sub", Some(*qos)),
            Scenario::FanIn { load } => ("fan-in", Some(load.qos)),
            Scenario::FanOut { load } => ("fan-out", Some(load.qos)),
            Scenario::P2p { load } => ("p2p", Some(load.qos)),
            Scenario::Latency { load } => ("latency", Some(load.qos)),
        };
        match qos {
            Some(q) => format!("{name}-qos{q}"),
            None => name.to_string(),
        }
    }

    /// The clients of a traffic scenario. Client ids and topics carry the process id, so two
    /// runs (or a leftover persistent session) never share a topic.
    fn plan(&self) -> Result<Plan, String> {
        let run = std::process::id();
        let subs = |n: usize, filter: &dyn Fn(usize) -> String| -> Vec<SubSpec> {
            (0..n)
                .map(|i| SubSpec {
                    client_id: format!("bench-sub-{run}-{i}"),
                    filter: filter(i),
                })
                .collect()
        };
        // `receivers(i)`: the subscribers that get publisher i's messages.
        let pubs = |n: usize,
                    topic: &dyn Fn(usize) -> String,
                    receivers: &dyn Fn(usize) -> Vec<usize>|
         -> Vec<PubSpec> {
            (0..n)
                .map(|i| PubSpec {
                    client_id: format!("bench-pub-{run}-{i}"),
                    topic: topic(i),
                    receivers: receivers(i),
                })
                .collect()
        };
        let base = format!("bench/{run}");
        let (subs, pubs, load, fanout) = match &self.scenario {
            Scenario::Conn { .. } => return Err("conn has no traffic plan".into()),
            Scenario::Pub { count, topic, load } => (
                Vec::new(),
                pubs(*count, &|i| topic.replace("%i", &i.to_string()), &|_| {
                    Vec::new()
                }),
                load.to_load(0.0)?,
                None,
            ),
            Scenario::Sub { count, topic, qos } => {
                let load = LoadArgs {
                    qos: *qos,
                    size: 64,
                    rate: None,
                    inflight: 1,
                    batch: 1,
                    window: 0,
                };
                (
                    subs(*count, &|i| topic.replace("%i", &i.to_string())),
                    Vec::new(),
                    load.to_load(0.0)?,
                    None,
                )
            }
            Scenario::FanIn { load } => (
                subs(1, &|_| format!("{base}/fanin/+")),
                pubs(4, &|i| format!("{base}/fanin/{i}"), &|_| vec![0]),
                load.to_load(0.0)?,
                Some(1),
            ),
            Scenario::FanOut { load } => (
                subs(16, &|_| format!("{base}/fanout")),
                pubs(1, &|_| format!("{base}/fanout"), &|_| (0..16).collect()),
                load.to_load(0.0)?,
                Some(16),
            ),
            Scenario::P2p { load } => (
                subs(16, &|i| format!("{base}/p2p/{i}")),
                pubs(16, &|i| format!("{base}/p2p/{i}"), &|i| vec![i]),
                load.to_load(0.0)?,
                Some(1),
            ),
            Scenario::Latency { load } => (
                subs(1, &|_| format!("{base}/latency")),
                pubs(1, &|_| format!("{base}/latency"), &|_| vec![0]),
                load.to_load(1000.0)?,
                Some(1),
            ),
        };
        Ok(Plan {
            subs,
            pubs,
            load,
            fanout,
        })
    }
}

impl LoadArgs {
    fn to_load(&self, default_rate: f64) -> Result<Load, String> {
        let rate = self.rate.unwrap_or(default_rate);
        if !(rate.is_finite() && rate >= 0.0) {
            return Err(format!("--rate: not a rate: {rate}"));
        }
        if self.size < wire::MIN_PAYLOAD {
            return Err(format!(
                "--size: at least {} bytes (the send timestamp and the publisher's index)",
                wire::MIN_PAYLOAD
            ));
        }
        Ok(Load {
            qos: if self.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            size: self.size,
            rate,
            inflight: self.inflight.clamp(1, 65_535),
            batch: self.batch.max(1),
            window: self.window,
        })
    }
}
