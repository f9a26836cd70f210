//! Mailbox length and message counts for actors (ractor exposes neither, DESIGN §10).
//!
//! Every actor of the project owns a [`Probe`]: `sent` counts the messages put in its mailbox,
//! `handled` the messages its handler took out, so the mailbox holds `sent - handled`. For
//! that to be exact, every message that reaches an actor must be counted where it is sent:
//! - casts and calls go through [`Counted::send`] / [`Counted::ask`] (an extension of
//!   `ActorRef`), which find the target's probe in the registry by actor id; the hot paths
//!   hold the probe and count without a lookup ([`Held`] for a client's socket task, the
//!   client link's embedded probe for deliveries);
//! - timers go through [`Counted::counted_after`] / [`Counted::counted_interval`] (named apart from
//!   ractor's inherent `send_after` / `send_interval`, which would otherwise win), which count each
//!   tick as it is sent (ractor's own timers would bypass the count);
//! - messages from other nodes are enqueued by ractor_cluster itself, out of reach: the one
//!   remotable actor (the cluster bridge) counts them when it handles them
//!   ([`Probe::remote_handled`]), so they appear in its message counts but not in its mailbox
//!   length while queued;
//! - supervision events travel on ractor's separate supervision port and are counted when
//!   handled ([`Probe::event_handled`]), apart from the mailbox.
//!
//! A test (`tests/counted_sends.rs`) fails if code outside this module sends with ractor's
//! uncounted methods.
//!
//! Cost: one relaxed atomic add per message on each side, plus one read-locked hash lookup per
//! send for actors reached by id (control traffic; the publish path holds its probes).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorId, ActorRef, Message, MessagingErr, RpcReplyPort};
use tokio::task::JoinHandle;

/// What an actor says about itself for `actor show`: key, value pairs.
pub type Summary = Vec<(String, String)>;

/// The counters of one actor.
#[derive(Debug)]
pub struct Probe {
    kind: &'static str,
    sent: AtomicU64,
    handled: AtomicU64,
    remote: AtomicU64,
    events: AtomicU64,
    /// Heap bytes the actor reports it owns (queued messages, buffers), beyond its fixed cost.
    bytes: AtomicUsize,
    started: Instant,
}

impl Probe {
    /// A probe for an actor of `kind` ("client", "router", ...).
    pub fn new(kind: &'static str) -> Probe {
        Probe {
            kind,
            sent: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            remote: AtomicU64::new(0),
            events: AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    /// The actor's kind.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// `n` messages were put in the mailbox.
    pub fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// A send counted with [`Probe::sent`] failed (the actor is gone).
    pub fn unsent(&self, n: u64) {
        self.sent.fetch_sub(n, Ordering::Relaxed);
    }

    /// The handler took one message out of the mailbox.
    pub fn handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
    }

    /// The handler took a message that another node sent (enqueued by ractor_cluster).
    pub fn remote_handled(&self) {
        self.remote.fetch_add(1, Ordering::Relaxed);
    }

    /// The actor handled a supervision event (a child's exit, a process group change).
    pub fn event_handled(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the heap bytes the actor owns.
    pub fn set_bytes(&self, bytes: usize) {
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// The heap bytes the actor last reported.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A consistent-enough reading of the counters.
    pub fn snapshot(&self) -> ProbeSnapshot {
        // `handled` first: a send racing with the reading can only make the mailbox look
        // longer by the messages in between, never negative.
        let handled = self.handled.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        ProbeSnapshot {
            kind: self.kind,
            mailbox: sent.saturating_sub(handled),
            handled,
            remote: self.remote.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            uptime: self.started.elapsed(),
        }
    }
}

/// The counters of one actor at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSnapshot {
    /// The actor's kind.
    pub kind: &'static str,
    /// Messages in the mailbox now (sent by this node, not handled yet).
    pub mailbox: u64,
    /// Messages handled (local senders).
    pub handled: u64,
    /// Messages from other nodes handled.
    pub remote: u64,
    /// Supervision events handled.
    pub events: u64,
    /// Heap bytes the actor reports it owns.
    pub bytes: usize,
    /// Time since the probe was made (the actor's start).
    pub uptime: Duration,
}

/// Anything that holds an actor's probe (a [`Probe`] itself, or a handle that embeds one so
/// that the actor costs no extra allocation).
pub trait Probed: Send + Sync + std::fmt::Debug + 'static {
    /// The probe.
    fn probe(&self) -> &Probe;

    /// What the actor is called when it has no registered name (a client id).
    fn label(&self) -> Option<String> {
        None
    }
}

impl Probed for Probe {
    fn probe(&self) -> &Probe {
        self
    }
}

/// Asks an actor for its [`Summary`] (see [`Describe`]).
type Describer = fn(ActorCell, Duration) -> Pin<Box<dyn Future<Output = Option<Summary>> + Send>>;

/// Message types whose actors report a summary of their state.
pub trait Describe: Message + Sized {
    /// The message asking for it.
    fn describe(reply: RpcReplyPort<Summary>) -> Self;
}

fn describe_via<M: Describe>(
    cell: ActorCell,
    timeout: Duration,
) -> Pin<Box<dyn Future<Output = Option<Summary>> + Send>> {
    Box::pin(async move {
        let actor: ActorRef<M> = cell.into();
        match actor.ask(M::describe, timeout).await {
            Ok(CallResult::Success(s)) => Some(s),
            _ => None,
        }
    })
}

#[derive(Debug, Clone)]
struct Entry {
    probed: Arc<dyn Probed>,
    describe: Describer,
}

fn registry() -> &'static RwLock<HashMap<ActorId, Entry>> {
    static REGISTRY: OnceLock<RwLock<HashMap<ActorId, Entry>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Registers the probe of actor `id` (in its `pre_start`). The actor unregisters it when its
/// state drops (which also happens after a panic, when `post_stop` does not run).
pub fn register<M: Describe>(id: ActorId, probed: Arc<dyn Probed>) {
    registry().write().insert(
        id,
        Entry {
            probed,
            describe: describe_via::<M>,
        },
    );
}

/// Removes the probe of actor `id`.
pub fn unregister(id: ActorId) {
    registry().write().remove(&id);
}

/// The probe of actor `id`.
pub fn lookup(id: ActorId) -> Option<Arc<dyn Probed>> {
    registry().read().get(&id).map(|e| e.probed.clone())
}

/// Every registered actor's id and probe.
pub fn all() -> Vec<(ActorId, Arc<dyn Probed>)> {
    registry()
        .read()
        .iter()
        .map(|(id, e)| (*id, e.probed.clone()))
        .collect()
}

/// Asks actor `id` for its summary (`None` if it is not registered or does not answer in
/// time).
pub async fn describe(id: ActorId, timeout: Duration) -> Option<Summary> {
    let describer = registry().read().get(&id).map(|e| e.describe)?;
    let cell = ractor::registry::where_is_pid(id)?;
    describer(cell, timeout).await
}

/// Unregisters a probe when dropped: keep one in an actor's state.
#[derive(Debug)]
pub struct Registration(pub ActorId);

impl Drop for Registration {
    fn drop(&mut self) {
        unregister(self.0);
    }
}

/// Registers a fresh [`Probe`] of `kind` for `myself` and returns it with the registration
/// that removes it (for actors whose probe is not embedded elsewhere).
pub fn start<M: Describe>(myself: &ActorRef<M>, kind: &'static str) -> (Arc<Probe>, Registration) {
    let probe = Arc::new(Probe::new(kind));
    let id = myself.get_id();
    register::<M>(id, probe.clone());
    (probe, Registration(id))
}

/// Counted sends: what the project uses instead of ractor's `cast`, `call`, `send_after` and
/// `send_interval`.
pub trait Counted<M: Message> {
    /// `cast`, counted in the target's probe.
    fn send(&self, msg: M) -> Result<(), MessagingErr<M>>;

    /// `call`, counted in the target's probe.
    fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> M + Send,
        timeout: Duration,
    ) -> impl Future<Output = Result<CallResult<T>, MessagingErr<M>>> + Send;

    /// Sends `msg()` after `after`, counted when it is sent.
    fn counted_after(
        &self,
        after: Duration,
        msg: impl FnOnce() -> M + Send + 'static,
    ) -> JoinHandle<()>;

    /// Sends `msg()` every `every` (first after `every`), counted; stops when the actor is gone.
    fn counted_interval(
        &self,
        every: Duration,
        msg: impl Fn() -> M + Send + 'static,
    ) -> JoinHandle<()>;
}

/// Casts `msg`, counted in `probe` when there is one (actors on other nodes have no probe
/// here; their bridge counts on arrival).
fn counted_cast<M: Message>(
    actor: &ActorRef<M>,
    probe: Option<&dyn Probed>,
    msg: M,
) -> Result<(), MessagingErr<M>> {
    let Some(p) = probe else {
        return actor.cast(msg);
    };
    p.probe().sent(1);
    let r = actor.cast(msg);
    if r.is_err() {
        p.probe().unsent(1);
    }
    r
}

/// An actor reference holding its target's probe, for a sender that sends often to one actor
/// (a client's socket task): counted sends without a registry lookup each time.
#[derive(Debug)]
pub struct Held<M: Message> {
    actor: ActorRef<M>,
    probe: Option<Arc<dyn Probed>>,
}

// By hand: a derive would require `M: Clone`.
impl<M: Message> Clone for Held<M> {
    fn clone(&self) -> Self {
        Held {
            actor: self.actor.clone(),
            probe: self.probe.clone(),
        }
    }
}

impl<M: Message> Held<M> {
    /// Holds `actor` and its probe (looked up once; call after the actor's `pre_start`).
    pub fn new(actor: ActorRef<M>) -> Held<M> {
        let probe = lookup(actor.get_id());
        Held { actor, probe }
    }

    /// `cast`, counted.
    pub fn send(&self, msg: M) -> Result<(), MessagingErr<M>> {
        counted_cast(&self.actor, self.probe.as_deref(), msg)
    }

    /// The actor.
    pub fn actor(&self) -> &ActorRef<M> {
        &self.actor
    }
}

impl<M: Message> Counted<M> for ActorRef<M> {
    fn send(&self, msg: M) -> Result<(), MessagingErr<M>> {
        counted_cast(self, lookup(self.get_id()).as_deref(), msg)
    }

    async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> M + Send,
        timeout: Duration,
    ) -> Result<CallResult<T>, MessagingErr<M>> {
        let probe = lookup(self.get_id());
        if let Some(p) = &probe {
            p.probe().sent(1);
        }
        let r = self.call(build, Some(timeout)).await;
        if let (Err(MessagingErr::SendErr(_)), Some(p)) = (&r, &probe) {
            p.probe().unsent(1);
        }
        r
    }

    fn counted_after(
        &self,
        after: Duration,
        msg: impl FnOnce() -> M + Send + 'static,
    ) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = me.send(msg());
        })
    }

    fn counted_interval(
        &self,
        every: Duration,
        msg: impl Fn() -> M + Send + 'static,
    ) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if me.send(msg()).is_err() {
                    return;
                }
            }
        })
    }
}
