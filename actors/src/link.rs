//! [`ClientLink`]: how the rest of the broker reaches one client actor.
//!
//! ractor mailboxes are unbounded and expose no length (DESIGN §10), so every delivery sent to a
//! client goes through [`ClientLink::deliver`], which counts it in and refuses it once the
//! client's mailbox holds `max_mailbox` deliveries; the client counts them out as it handles
//! them. That is the bound on a mailbox that can grow (a client actor that cannot keep up), and
//! each refusal is counted as a `mailbox_full` drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use beamq_protocol::ByteString;
use beamq_protocol::session::Delivery;
use beamq_supervisors::probe::{Probe, Probed};
use ractor::ActorRef;

use ractor::MessagingErr;

use crate::client::ClientMsg;
use crate::metrics::Metrics;

/// What became of a batch sent to a client.
#[derive(Debug)]
pub enum Delivered {
    /// It is in the client's mailbox.
    Yes,
    /// The mailbox was over its bound: dropped and counted.
    Refused,
    /// The actor is gone (taken over, ended, crashed): the batch, back.
    Gone(Vec<Delivery>),
}

/// Shared handle on a client actor. Cloned into route entries, the registry and share groups.
pub type ClientHandle = Arc<ClientLink>;

/// The reachable side of a client actor.
#[derive(Debug)]
pub struct ClientLink {
    /// Client identifier.
    pub client_id: ByteString,
    /// The actor.
    pub actor: ActorRef<ClientMsg>,
    /// Deliveries sent and not yet handled.
    queued: AtomicUsize,
    /// Deliveries refused because the mailbox was full.
    refused: AtomicU64,
    /// True while a network connection is attached (shared subscriptions prefer online
    /// members).
    online: AtomicBool,
    max_mailbox: usize,
    /// Messages its session holds (in flight and queued), as of the actor's last message.
    pending: AtomicUsize,
    /// The actor's mailbox and message counters (embedded: no allocation of its own).
    probe: Probe,
    /// When the actor started (microseconds since the epoch): the newer of two connections
    /// racing for one client id on two nodes wins.
    pub started_us: u64,
}

impl ClientLink {
    /// A link to a freshly started client actor.
    pub fn new(client_id: ByteString, actor: ActorRef<ClientMsg>, max_mailbox: usize) -> Self {
        ClientLink {
            client_id,
            actor,
            queued: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            online: AtomicBool::new(true),
            max_mailbox,
            pending: AtomicUsize::new(0),
            probe: Probe::new("client"),
            started_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }

    /// Sends a batch of deliveries. A mailbox over its bound refuses the batch (counted as
    /// `mailbox_full` drops); an actor that is gone gives the batch back, for the caller to take
    /// elsewhere (see [`crate::broker::Broker::deliver_to`]).
    pub fn deliver(&self, batch: Vec<Delivery>, metrics: &Metrics) -> Delivered {
        let n = batch.len();
        if n == 0 {
            return Delivered::Yes;
        }
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before >= self.max_mailbox {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.refused.fetch_add(n as u64, Ordering::Relaxed);
            metrics.dropped.mailbox_full.add(n as u64);
            return Delivered::Refused;
        }
        // Counted here rather than through the registry: this is the publish path.
        self.probe.sent(1);
        match self.actor.cast(ClientMsg::Deliver(batch)) {
            Ok(()) => Delivered::Yes,
            Err(e) => {
                self.probe.unsent(1);
                self.queued.fetch_sub(n, Ordering::AcqRel);
                match e {
                    MessagingErr::SendErr(ClientMsg::Deliver(batch)) => Delivered::Gone(batch),
                    _ => Delivered::Gone(Vec::new()),
                }
            }
        }
    }

    /// Called by the client actor for each batch it takes out of its mailbox.
    pub fn handled(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// Messages the session holds, as of the actor's last message.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Set by the client actor after each message it handles: messages and their topic and
    /// payload bytes (the bytes are the memory its probe reports).
    pub fn set_pending(&self, n: usize, bytes: usize) {
        self.pending.store(n, Ordering::Relaxed);
        self.probe.set_bytes(bytes);
    }

    /// Topic and payload bytes the session holds, as of the actor's last message.
    pub fn pending_bytes(&self) -> usize {
        self.probe.bytes()
    }

    /// Deliveries waiting in the mailbox.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Deliveries refused for a full mailbox, ever.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether a network connection is attached.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Marks the connection state.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }
}

impl Probed for ClientLink {
    fn probe(&self) -> &Probe {
        &self.probe
    }

    fn label(&self) -> Option<String> {
        Some(self.client_id.to_string())
    }
}
