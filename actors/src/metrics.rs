//! Broker-wide counters: plain atomics that any actor bumps without a message, read by `$SYS`,
//! the admin shell and the tests.
//!
//! Relaxed ordering everywhere: each counter is independent, and readers want a recent value,
//! not a consistent snapshot across counters.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use beamq_protocol::session::DropReason;

/// One counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        if n != 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (connections open, sessions alive).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Current value (never reported below zero).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed).max(0) as u64
    }
}

/// Why a message was dropped, broker-wide.
#[derive(Debug, Default)]
pub struct DropCounters {
    /// A session queue was full.
    pub queue_full: Counter,
    /// Message expiry passed before delivery.
    pub expired: Counter,
    /// Larger than the client's Maximum Packet Size.
    pub too_large: Counter,
    /// QoS 0 not queued for an offline or busy client.
    pub qos0_not_queued: Counter,
    /// A client's mailbox was over its bound.
    pub mailbox_full: Counter,
}

impl DropCounters {
    /// Counts a drop reported by a channel.
    pub fn count(&self, reason: DropReason) {
        match reason {
            DropReason::QueueFull => self.queue_full.inc(),
            DropReason::Expired => self.expired.inc(),
            DropReason::TooLarge => self.too_large.inc(),
            DropReason::Qos0NotQueued => self.qos0_not_queued.inc(),
        }
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.queue_full.get()
            + self.expired.get()
            + self.too_large.get()
            + self.qos0_not_queued.get()
            + self.mailbox_full.get()
    }
}

/// Every broker-wide counter.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Network connections open now (after CONNECT was accepted).
    pub connections: Gauge,
    /// Sockets accepted, ever.
    pub sockets_accepted: Counter,
    /// Connections accepted (CONNACK success), ever.
    pub connects: Counter,
    /// CONNECTs refused.
    pub connects_refused: Counter,
    /// Sockets closed because they sent no CONNECT in time.
    pub connect_timeouts: Counter,
    /// Sockets refused because a limit (max clients, listener max connections) was reached.
    pub connections_over_limit: Counter,
    /// Sessions alive (connected or waiting for their client).
    pub sessions: Gauge,
    /// Sessions taken over by a new connection.
    pub takeovers: Counter,
    /// Sessions that expired.
    pub sessions_expired: Counter,
    /// Client actors that crashed (panic or error).
    pub client_crashes: Counter,
    /// Connections closed for keep-alive timeout.
    pub keepalive_timeouts: Counter,
    /// Connections closed because the client accepted no bytes for `broker.send_timeout`.
    pub send_timeouts: Counter,
    /// Malformed packets received (connection closed).
    pub malformed_packets: Counter,
    /// Protocol errors by clients (connection closed).
    pub protocol_errors: Counter,
    /// Application messages accepted from clients and routed. A resent QoS 2 PUBLISH that was
    /// already accepted is not counted again; wills are counted in `wills_published`.
    pub messages_received: Counter,
    /// PUBLISH packets sent to clients.
    pub messages_sent: Counter,
    /// PUBLISH packets refused by authorization (for now: client publishes to `$SYS`).
    pub publishes_denied: Counter,
    /// Publishes that matched no subscription.
    pub messages_no_subscribers: Counter,
    /// Dropped deliveries by reason.
    pub dropped: DropCounters,
    /// Will messages published.
    pub wills_published: Counter,
    /// Bytes read from clients.
    pub bytes_received: Counter,
    /// Bytes written to clients.
    pub bytes_sent: Counter,
    /// Retained messages refused for space or size.
    pub retained_refused: Counter,
    /// Messages forwarded to other nodes (one per message per node).
    pub cluster_forwarded: Counter,
    /// Messages received from other nodes for local dispatch.
    pub cluster_received: Counter,
    /// Messages not forwarded: the peer's send window was full or the peer was gone.
    pub cluster_dropped: Counter,
    /// Messages from a peer that could not be used (bad QoS, undecodable).
    pub cluster_bad_messages: Counter,
    /// Peers declared down because they stopped answering heartbeats.
    pub cluster_peers_timed_out: Counter,
    /// Cluster links closed because they did not authenticate in time, or failed to.
    pub cluster_links_refused: Counter,
}

impl Metrics {
    /// Total dropped deliveries.
    pub fn messages_dropped(&self) -> u64 {
        self.dropped.total()
    }
}
