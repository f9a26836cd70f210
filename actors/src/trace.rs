//! Live traces for the admin shell (`trace client ID` / `trace topic FILTER`): decoded packets
//! a client sends and the messages delivered to it, as one line each.
//!
//! The publish path pays one relaxed atomic load per packet batch while no trace runs. A
//! running trace costs a lock-free check per packet and, for matching ones, a formatted line;
//! each trace is rate-limited (a token bucket) and its queue is bounded, and a line that does
//! not fit is counted as dropped, never waited for: a trace cannot slow a client down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use beamq_protocol::{Packet, topic};
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

/// Lines per second a trace may emit (bursts up to [`BURST`]).
pub const RATE: f64 = 100.0;
/// Largest burst of lines.
pub const BURST: f64 = 200.0;
/// Lines a trace may have waiting for its reader.
const QUEUE: usize = 256;

/// What a trace follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceFilter {
    /// Everything one client sends and receives.
    Client(String),
    /// PUBLISH packets (in and out) whose topic matches a filter.
    Topic(String),
}

/// Direction of a traced packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the client.
    In,
    /// To the client.
    Out,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One running trace.
#[derive(Debug)]
pub struct Trace {
    filter: TraceFilter,
    tx: mpsc::Sender<String>,
    bucket: Mutex<Bucket>,
    dropped: AtomicU64,
}

impl Trace {
    /// Lines not sent (rate limit or full queue).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn emit(&self, line: impl FnOnce() -> String) {
        {
            let mut b = self.bucket.lock();
            let now = Instant::now();
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * RATE).min(BURST);
            b.at = now;
            if b.tokens < 1.0 {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            b.tokens -= 1.0;
        }
        if self.tx.try_send(line()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The traces running on this node.
#[derive(Debug, Default)]
pub struct Tracer {
    active: AtomicUsize,
    traces: RwLock<Vec<Arc<Trace>>>,
}

/// A running trace; it stops when this is dropped (the admin connection ended).
#[derive(Debug)]
pub struct TraceGuard<'a> {
    tracer: &'a Tracer,
    /// The trace.
    pub trace: Arc<Trace>,
}

impl Drop for TraceGuard<'_> {
    fn drop(&mut self) {
        let mut traces = self.tracer.traces.write();
        traces.retain(|t| !Arc::ptr_eq(t, &self.trace));
        self.tracer.active.store(traces.len(), Ordering::Relaxed);
    }
}

impl Tracer {
    /// True while at least one trace runs (the hot path's only cost otherwise).
    pub fn is_active(&self) -> bool {
        self.running() > 0
    }

    /// Traces running now.
    pub fn running(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Starts a trace; its lines arrive on the receiver until the guard is dropped.
    pub fn start(&self, filter: TraceFilter) -> (TraceGuard<'_>, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let trace = Arc::new(Trace {
            filter,
            tx,
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                at: Instant::now(),
            }),
            dropped: AtomicU64::new(0),
        });
        let mut traces = self.traces.write();
        traces.push(trace.clone());
        self.active.store(traces.len(), Ordering::Relaxed);
        (
            TraceGuard {
                tracer: self,
                trace,
            },
            rx,
        )
    }

    /// A packet of `client_id` in direction `dir`: sent to every trace that follows it.
    pub fn packet(&self, client_id: &str, dir: Dir, packet: &Packet) {
        let traces = self.traces.read();
        for t in traces.iter() {
            let wanted = match (&t.filter, packet) {
                (TraceFilter::Client(id), _) => id == client_id,
                (TraceFilter::Topic(f), Packet::Publish(p)) => topic::matches(f, &p.topic),
                (TraceFilter::Topic(_), _) => false,
            };
            if wanted {
                t.emit(|| line(client_id, dir, &describe(packet)));
            }
        }
    }

    /// A message delivered to `client_id` (what its session sends as PUBLISH).
    pub fn delivery(&self, client_id: &str, topic_name: &str, qos: u8, bytes: usize) {
        let traces = self.traces.read();
        for t in traces.iter() {
            let wanted = match &t.filter {
                TraceFilter::Client(id) => id == client_id,
                TraceFilter::Topic(f) => topic::matches(f, topic_name),
            };
            if wanted {
                t.emit(|| {
                    line(
                        client_id,
                        Dir::Out,
                        &format!("PUBLISH topic={topic_name} qos={qos} payload={bytes}B"),
                    )
                });
            }
        }
    }
}

fn line(client_id: &str, dir: Dir, what: &str) -> String {
    let arrow = match dir {
        Dir::In => "->",
        Dir::Out => "<-",
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.{:06} {client_id} {arrow} {what}",
        now.as_secs(),
        now.subsec_micros()
    )
}

/// A packet in one line: its type and the fields an operator looks for (never the payload).
fn describe(p: &Packet) -> String {
    match p {
        Packet::Publish(p) => format!(
            "PUBLISH topic={} qos={:?} retain={} id={:?} payload={}B",
            p.topic,
            p.qos,
            p.retain,
            p.packet_id,
            p.payload.len()
        ),
        Packet::Subscribe(s) => format!(
            "SUBSCRIBE id={} filters={:?}",
            s.packet_id,
            s.filters
                .iter()
                .map(|f| f.0.to_string())
                .collect::<Vec<_>>()
        ),
        Packet::Unsubscribe(u) => format!(
            "UNSUBSCRIBE id={} filters={:?}",
            u.packet_id,
            u.filters
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ),
        other => {
            // Acks, pings, DISCONNECT, AUTH: the Debug form is short and complete.
            let s = format!("{other:?}");
            s.chars().take(200).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beamq_protocol::{ByteString, Bytes, Publish, QoS};

    fn publish(topic: &str) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteString::from(topic),
            packet_id: None,
            properties: Default::default(),
            payload: Bytes::from_static(b"hello"),
        })
    }

    #[test]
    fn a_trace_sees_only_what_it_follows_and_stops_with_its_guard() {
        let tracer = Tracer::default();
        assert!(!tracer.is_active());
        {
            let (_guard, mut rx) = tracer.start(TraceFilter::Topic("a/+".into()));
            assert!(tracer.is_active());
            tracer.packet("c1", Dir::In, &publish("a/b"));
            tracer.packet("c1", Dir::In, &publish("x/y"));
            tracer.delivery("c2", "a/c", 1, 5);
            let first = rx.try_recv().expect("a/b traced");
            assert!(first.contains("c1 -> PUBLISH topic=a/b"), "{first}");
            let second = rx.try_recv().expect("delivery traced");
            assert!(second.contains("c2 <- PUBLISH topic=a/c qos=1"), "{second}");
            assert!(rx.try_recv().is_err());
        }
        assert!(!tracer.is_active());
    }

    #[test]
    fn a_burst_beyond_the_limit_is_dropped_and_counted() {
        let tracer = Tracer::default();
        let (guard, mut rx) = tracer.start(TraceFilter::Client("c".into()));
        for _ in 0..1000 {
            tracer.packet("c", Dir::In, &Packet::Pingreq);
        }
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        // At most the burst (and the queue) got through; the rest is counted.
        assert!(got <= QUEUE && got > 0, "{got}");
        assert_eq!(got as u64 + guard.trace.dropped(), 1000);
    }
}
