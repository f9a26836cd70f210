//! What a run counts and measures: shared counters (read live by the progress line), latency
//! histograms (one per task, merged at the end: recording never takes a lock), the generator's
//! own CPU time and the broker's CPU and memory read from `/proc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters every task adds to; relaxed atomics, read by the progress line and the summary.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections that got CONNACK 0.
    pub connected: AtomicU64,
    /// Connections that failed (refused, timed out, closed during the handshake).
    pub connect_errors: AtomicU64,
    /// PUBLISH packets written.
    pub published: AtomicU64,
    /// PUBACKs received with a success code.
    pub acked: AtomicU64,
    /// PUBACKs received with an error code (0x80 and above).
    pub ack_errors: AtomicU64,
    /// PUBLISH packets received by subscribers.
    pub received: AtomicU64,
    /// Connections lost or broken after the handshake (closed by the broker, undecodable bytes).
    pub conn_lost: AtomicU64,
    /// Messages the end-to-end window stopped waiting for (not received within 0.5 s).
    pub window_stalls: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            connected: get(&self.connected),
            connect_errors: get(&self.connect_errors),
            published: get(&self.published),
            acked: get(&self.acked),
            ack_errors: get(&self.ack_errors),
            received: get(&self.received),
            conn_lost: get(&self.conn_lost),
            window_stalls: get(&self.window_stalls),
        }
    }
}

/// [`Counters`] at one moment.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Snapshot {
    /// See [`Counters::connected`].
    pub connected: u64,
    /// See [`Counters::connect_errors`].
    pub connect_errors: u64,
    /// See [`Counters::published`].
    pub published: u64,
    /// See [`Counters::acked`].
    pub acked: u64,
    /// See [`Counters::ack_errors`].
    pub ack_errors: u64,
    /// See [`Counters::received`].
    pub received: u64,
    /// See [`Counters::conn_lost`].
    pub conn_lost: u64,
    /// See [`Counters::window_stalls`].
    pub window_stalls: u64,
}

impl Snapshot {
    /// Errors of every kind.
    pub fn errors(&self) -> u64 {
        self.connect_errors + self.ack_errors + self.conn_lost
    }
}

/// A latency histogram in nanoseconds, 1 ns to 100 s, three significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failing here would be a bug.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency percentiles in microseconds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Percentiles and extremes, microseconds.
    pub min_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Latency {
    /// Summarises a histogram.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min_us: us(h.min()),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// CPU time this process has used (user + system).
pub fn own_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What `/proc` says about another process (the broker under test).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct ProcSample {
    /// CPU time used so far (user + system), seconds.
    pub cpu_s: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started, KiB.
    pub hwm_kib: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` if the process is gone.
pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_s: ticks as f64 / hz,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_proc_entry() {
        let s = proc_sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        assert!(proc_sample(u32::MAX).is_none());
    }

    #[test]
    fn latency_summary_in_microseconds() {
        let mut h = histogram();
        for ns in [10_000u64, 20_000, 30_000, 1_000_000] {
            h.record(ns).expect("in range");
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 4);
        assert!((l.p50_us - 20.0).abs() < 0.1, "{l:?}");
        assert!((l.max_us - 1000.0).abs() < 1.0, "{l:?}");
    }
}
