//! The broker context: what every actor of a node shares.
//!
//! It owns the shared tables (routes, retained messages, sessions by client id) and the
//! counters, and knows where the permanent actors currently live. It sits above the supervision
//! tree, so that an actor restarted by its supervisor comes back to the same tables: a router
//! restart loses no subscription, a registry restart no session (DESIGN §3).
//!
//! It also holds the publish path used outside a client's own handler (wills, `$SYS`,
//! redelivery of shared-subscription messages) and the calls to routers and the registry with
//! their timeouts and retries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use beamq_protocol::session::{Delivery, Limits, Message, Subscription};
use beamq_protocol::{ByteString, topic};
use beamq_supervisors::probe::Counted;
use parking_lot::{Mutex, RwLock};
use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef};

use crate::cluster::remote_routes::{PeerName, RemoteMatches};
use crate::cluster::{ClusterState, Target};
use crate::config::Config;
use crate::link::{ClientHandle, Delivered};
use crate::metrics::Metrics;
use crate::registry::{RegistryMsg, SessionTable};
use crate::retained::RetainedStore;
use crate::route_table::{Matches, RouteTable};
use crate::router::RouterMsg;

/// How long a call to a router or the registry may take before it is retried.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller keeps retrying while a permanent actor is being restarted.
const RESTART_GRACE: Duration = Duration::from_secs(5);

/// How many times a batch whose recipient is gone is passed on (to the client id's new owner,
/// to another share-group member) before it is given up: members that keep vanishing must not
/// bounce a message around forever.
const MAX_HOPS: u8 = 3;

/// Topic that panics the publishing client's actor when `debug.fault_injection` is on.
pub const FAULT_CLIENT_TOPIC: &str = "$beamq/fault/client";
/// Topic that panics a router actor when `debug.fault_injection` is on.
pub const FAULT_ROUTER_TOPIC: &str = "$beamq/fault/router";

/// Errors of the broker-internal calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// A permanent actor did not answer within the grace period (it is down and not coming
    /// back, or overloaded).
    #[error("{0} unavailable")]
    Unavailable(&'static str),
}

/// The shared context of one node.
#[derive(Debug)]
pub struct Broker {
    /// Configuration, validated.
    pub config: Arc<Config>,
    /// Protocol limits derived from it.
    pub limits: Arc<Limits>,
    /// Counters.
    pub metrics: Metrics,
    /// Route table.
    pub routes: RouteTable,
    /// Retained messages.
    pub retained: RetainedStore,
    /// Sessions by client id (written by the registry actor).
    pub sessions: SessionTable,
    /// When the node started.
    pub started_at: Instant,
    /// Peers, their routes and send windows (empty on a node without cluster).
    pub cluster: ClusterState,
    /// Live packet traces of the admin shell.
    pub tracer: crate::trace::Tracer,
    routers: RwLock<Vec<Option<ActorRef<RouterMsg>>>>,
    registry: RwLock<Option<ActorRef<RegistryMsg>>>,
    session_sup: RwLock<Option<ActorCell>>,
    root: RwLock<Option<ActorCell>>,
    listen_addrs: Mutex<HashMap<String, SocketAddr>>,
    shutting_down: AtomicBool,
    next_client_id: AtomicU64,
    /// Start time in microseconds since the epoch: keeps assigned client ids unique across
    /// restarts.
    epoch_salt: u64,
    /// Random keys that make assigned client ids unpredictable.
    id_keys: ahash::RandomState,
}

impl Broker {
    /// A fresh context for a validated configuration.
    pub fn new(config: Config) -> Arc<Broker> {
        let limits = Arc::new(config.limits());
        let routers = config.broker.routers;
        let retained = RetainedStore::new(
            config.retainer.max_retained_messages,
            usize::try_from(config.retainer.max_payload_size.0).unwrap_or(usize::MAX),
        );
        Arc::new(Broker {
            cluster: ClusterState::new(&config.node.name, config.cluster.send_window),
            tracer: Default::default(),
            routes: RouteTable::new(config.mqtt.shared_subscription_strategy),
            retained,
            sessions: SessionTable::default(),
            metrics: Metrics::default(),
            started_at: Instant::now(),
            routers: RwLock::new(vec![None; routers]),
            registry: RwLock::new(None),
            session_sup: RwLock::new(None),
            root: RwLock::new(None),
            listen_addrs: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            next_client_id: AtomicU64::new(1),
            epoch_salt: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            id_keys: ahash::RandomState::new(),
            limits,
            config: Arc::new(config),
        })
    }

    /// A server-assigned client identifier, unique within this node's life and not the id of
    /// any session held now [MQTT-3.2.2-16]: a client may have picked the next one on purpose
    /// (it can guess it from the one it was assigned), and must not be taken over by it.
    pub fn assign_client_id(&self) -> String {
        loop {
            let n = self.next_client_id.fetch_add(1, Ordering::Relaxed);
            // Keyed by this node's random hasher: the next id cannot be guessed from one seen.
            let id = format!(
                "beamq-{:x}-{:016x}",
                self.epoch_salt,
                self.id_keys.hash_one(n)
            );
            if self.sessions.get(&id).is_none() {
                return id;
            }
        }
    }

    // ---- where the permanent actors are ----

    /// Called by router `index` when it starts (also after a restart).
    pub fn set_router(&self, index: usize, router: Option<ActorRef<RouterMsg>>) {
        if let Some(slot) = self.routers.write().get_mut(index) {
            *slot = router;
        }
    }

    /// Router actors currently running, by index.
    pub fn routers(&self) -> Vec<Option<ActorRef<RouterMsg>>> {
        self.routers.read().clone()
    }

    /// Called by the registry when it starts.
    pub fn set_registry(&self, registry: Option<ActorRef<RegistryMsg>>) {
        *self.registry.write() = registry;
    }

    /// The session supervisor, parent of every client actor.
    pub fn session_sup(&self) -> Option<ActorCell> {
        self.session_sup.read().clone()
    }

    /// The root supervisor of the node's tree (for inspection).
    pub fn root(&self) -> Option<ActorCell> {
        self.root.read().clone()
    }

    /// Set by the node once its tree has started.
    pub fn set_root(&self, cell: Option<ActorCell>) {
        *self.root.write() = cell;
    }

    /// Set by the node when the session supervisor starts.
    pub fn set_session_sup(&self, cell: Option<ActorCell>) {
        *self.session_sup.write() = cell;
    }

    /// Records the address a listener is bound to (tests bind port 0).
    pub fn set_listen_addr(&self, name: &str, addr: SocketAddr) {
        self.listen_addrs.lock().insert(name.to_string(), addr);
    }

    /// Address of a listener by name (`tcp:default`).
    pub fn listen_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listen_addrs.lock().get(name).copied()
    }

    /// Marks the node as shutting down: listeners stop accepting, new CONNECTs are refused.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    // ---- publishing outside a client handler ----

    /// Routes one message (a will, a `$SYS` value, a redelivery) and returns how many
    /// subscriptions it reached.
    pub fn publish(&self, message: Arc<Message>) -> usize {
        let mut fanout = Fanout::default();
        let n = self.route(message, &mut fanout);
        fanout.flush(self);
        n
    }

    /// May a client publish to `topic`? `$SYS` is the broker's own namespace: clients read it,
    /// they do not write it (a retained client PUBLISH there would impersonate the broker's
    /// statistics). Applies to PUBLISH packets and to wills. Refusals are logged and counted.
    pub fn authorize_publish(&self, topic: &str) -> bool {
        let allowed = !(topic == "$SYS" || topic.starts_with("$SYS/"));
        if !allowed {
            self.metrics.publishes_denied.inc();
            tracing::info!(topic, "PUBLISH to $SYS refused");
        }
        allowed
    }

    /// Sends a batch to `client`. If its actor is gone, the batch goes to whoever owns the
    /// client id now (a takeover in between), and failing that its shared-subscription
    /// messages go to other members of their groups.
    pub fn deliver_to(&self, client: &ClientHandle, batch: Vec<Delivery>) {
        self.deliver_hops(client, batch, 0);
    }

    fn deliver_hops(&self, client: &ClientHandle, batch: Vec<Delivery>, hops: u8) {
        let Delivered::Gone(batch) = client.deliver(batch, &self.metrics) else {
            return;
        };
        if batch.is_empty() || hops >= MAX_HOPS {
            return;
        }
        if let Some(owner) = self.sessions.get(&client.client_id) {
            if !Arc::ptr_eq(&owner, client) {
                self.deliver_hops(&owner, batch, hops + 1);
                return;
            }
        }
        self.redeliver_hops(batch, client, hops + 1);
    }

    /// The publish path: stores a retained message, looks up the subscribers and adds one
    /// delivery per subscriber to `fanout` (sent when the caller flushes it, so a burst of
    /// publishes becomes one actor message per subscriber), and the message once for each
    /// other node with a matching route (a retained message goes to every node, which all
    /// keep it). Returns how many subscriptions and nodes it reached.
    pub fn route(&self, message: Arc<Message>, fanout: &mut Fanout) -> usize {
        self.store_retained(&message);
        self.routes
            .lookup(&message.topic, &message.publisher, &mut fanout.matches);
        let remote = if self.cluster.has_peers() {
            self.plan_remote(&message, fanout)
        } else {
            0
        };
        let n = self.push_matches(&message, fanout) + remote;
        if n == 0 {
            self.metrics.messages_no_subscribers.inc();
        }
        n
    }

    /// Decides what goes to other nodes: the message once to each node with a direct route
    /// (to every node when retained, so that all keep it), and for each shared group with
    /// members elsewhere one node picked among those and this one (by the configured
    /// strategy); when another node is picked, the local pick is dropped, so the message goes
    /// to exactly one member cluster-wide. Returns the number of nodes it goes to.
    fn plan_remote(&self, message: &Arc<Message>, fanout: &mut Fanout) -> usize {
        self.cluster
            .routes
            .lookup(&message.topic, &mut fanout.remote_matches);
        let mut targets: Vec<(PeerName, Target)> = Vec::new();
        let direct = |node: PeerName| (node, Target::direct());
        if message.retain {
            targets.extend(
                self.cluster
                    .peers()
                    .into_iter()
                    .map(|p| direct(p.name.clone())),
            );
        } else {
            targets.extend(fanout.remote_matches.nodes.drain(..).map(direct));
        }
        for (share, mut nodes) in fanout.remote_matches.shares.drain(..) {
            nodes.sort();
            let local = fanout
                .matches
                .list
                .iter()
                .position(|m| m.share.as_ref() == Some(&share));
            let candidates = nodes.len() + usize::from(local.is_some());
            let pick = self.cluster.pick_share(
                self.config.mqtt.shared_subscription_strategy,
                message,
                candidates,
            );
            // Candidate 0 is this node when it has a member.
            let remote_index = match local {
                Some(_) if pick == 0 => continue,
                Some(i) => {
                    fanout.matches.list.remove(i);
                    pick - 1
                }
                None => pick,
            };
            let node = nodes.swap_remove(remote_index);
            match targets.iter_mut().find(|(n, _)| *n == node) {
                Some((_, t)) => t.shares.push(share),
                None => targets.push((
                    node,
                    Target {
                        direct: false,
                        shares: vec![share],
                    },
                )),
            }
        }
        let n = targets.len();
        for (node, target) in targets {
            fanout.push_remote(node, message.clone(), target);
        }
        n
    }

    /// Messages forwarded by another node: stored if retained and delivered to this node's
    /// subscribers as the sender decided (direct subscribers, and one member of each shared
    /// group it picked this node for), never forwarded again: a publish crosses one link.
    pub fn dispatch_from_peer(&self, messages: Vec<(Arc<Message>, Target)>) {
        let mut fanout = Fanout::default();
        for (m, target) in messages {
            self.store_retained(&m);
            self.routes
                .lookup(&m.topic, &m.publisher, &mut fanout.matches);
            fanout.matches.list.retain(|x| match &x.share {
                None => target.direct,
                Some(share) => target.shares.contains(share),
            });
            self.push_matches(&m, &mut fanout);
        }
        fanout.flush(self);
    }

    fn store_retained(&self, message: &Arc<Message>) {
        if message.retain {
            if let Err(e) = self.retained.apply(message) {
                self.metrics.retained_refused.inc();
                tracing::debug!(topic = %message.topic, error = %e, "retained message refused");
            }
        }
    }

    /// One delivery per match of the last lookup, into `fanout`.
    fn push_matches(&self, message: &Arc<Message>, fanout: &mut Fanout) -> usize {
        let n = fanout.matches.list.len();
        for i in 0..n {
            let m = &mut fanout.matches.list[i];
            let delivery = Delivery {
                message: message.clone(),
                qos: message.qos.min(m.qos),
                // [MQTT-3.3.1-12, MQTT-3.3.1-13]
                retain: message.retain && m.retain_as_published,
                subscription_ids: std::mem::take(&mut m.subscription_ids),
                share: m.share.take(),
            };
            let client = m.client.clone();
            fanout.push(client, delivery);
        }
        n
    }

    /// Sends messages that a departed shared-subscription member had not received to another
    /// member of the same group; messages of other subscriptions are the departed session's
    /// own and go with it.
    pub fn redeliver_shared(&self, undelivered: Vec<Delivery>, from: &ClientHandle) {
        self.redeliver_hops(undelivered, from, 0);
    }

    fn redeliver_hops(&self, undelivered: Vec<Delivery>, from: &ClientHandle, hops: u8) {
        let mut fanout = Fanout::default();
        for d in undelivered {
            let Some(share) = &d.share else { continue };
            if let Some(entry) = self.routes.pick_other(share, from) {
                let qos = d.message.qos.min(entry.subscription.options.qos);
                fanout.push(
                    entry.client.clone(),
                    Delivery {
                        qos,
                        subscription_ids: entry.subscription.id.into_iter().collect(),
                        ..d
                    },
                );
            }
        }
        fanout.flush_hops(self, hops);
    }

    // ---- calls to routers and the registry ----

    fn router_index(&self, filter: &str) -> usize {
        let inner = topic::split_shared(filter).map_or(filter, |s| s.filter);
        let n = self.routers.read().len().max(1);
        (ahash_one(inner) as usize) % n
    }

    /// Adds subscriptions through their routers and returns when all are in place. Retries
    /// while a router is being restarted.
    pub async fn subscribe(
        &self,
        client: &ClientHandle,
        subs: Vec<(ByteString, Subscription)>,
    ) -> Result<(), BrokerError> {
        let mut by_router: HashMap<usize, Vec<(ByteString, Subscription)>> = HashMap::new();
        for (filter, sub) in subs {
            by_router
                .entry(self.router_index(&filter))
                .or_default()
                .push((filter, sub));
        }
        for (index, subs) in by_router {
            self.call_router(index, |reply| RouterMsg::Subscribe {
                client: client.clone(),
                subs: subs.clone(),
                reply,
            })
            .await?;
        }
        Ok(())
    }

    /// Removes subscriptions through their routers and returns when they are gone.
    pub async fn unsubscribe(
        &self,
        client: &ClientHandle,
        filters: Vec<ByteString>,
    ) -> Result<(), BrokerError> {
        let mut by_router: HashMap<usize, Vec<ByteString>> = HashMap::new();
        for filter in filters {
            by_router
                .entry(self.router_index(&filter))
                .or_default()
                .push(filter);
        }
        for (index, filters) in by_router {
            self.call_router(index, |reply| RouterMsg::Unsubscribe {
                client: client.clone(),
                filters: filters.clone(),
                reply,
            })
            .await?;
        }
        Ok(())
    }

    async fn call_router(
        &self,
        index: usize,
        msg: impl Fn(ractor::RpcReplyPort<()>) -> RouterMsg + Sync,
    ) -> Result<(), BrokerError> {
        let deadline = Instant::now() + RESTART_GRACE;
        loop {
            let router = self.routers.read().get(index).cloned().flatten();
            if let Some(router) = router {
                if let Ok(CallResult::Success(())) = router.ask(&msg, CALL_TIMEOUT).await {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(BrokerError::Unavailable("router"));
            }
            // The router is being restarted by its supervisor; it registers itself again in
            // pre_start. Poll its slot briefly.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Registers `client` as the owner of its client id; returns the previous owner, whose
    /// session is to be taken over or discarded.
    pub async fn register(
        &self,
        client: &ClientHandle,
    ) -> Result<Option<ClientHandle>, BrokerError> {
        let deadline = Instant::now() + RESTART_GRACE;
        loop {
            let registry = self.registry.read().clone();
            if let Some(registry) = registry {
                let res = registry
                    .ask(
                        |reply| RegistryMsg::Register {
                            client: client.clone(),
                            reply,
                        },
                        CALL_TIMEOUT,
                    )
                    .await;
                if let Ok(CallResult::Success(previous)) = res {
                    return Ok(previous);
                }
            }
            if Instant::now() >= deadline {
                return Err(BrokerError::Unavailable("registry"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Removes `client` from the registry if it is still the owner of its id.
    pub fn unregister(&self, client: &ClientHandle) {
        let registry = self.registry.read().clone();
        let sent = registry.is_some_and(|r| {
            r.send(RegistryMsg::Unregister {
                client: client.clone(),
            })
            .is_ok()
        });
        if !sent {
            // The registry is restarting; the table is ours to fix in that case, and the
            // removal is conditional on ownership, so it cannot undo a newer registration.
            self.sessions.remove_if_owner(client);
        }
    }
}

/// Messages for one other node, each with what that node delivers it to.
type RemoteBatch = Vec<(Arc<Message>, Target)>;

/// Deliveries gathered while handling a burst of publishes, one batch per subscriber.
#[derive(Debug, Default)]
pub struct Fanout {
    /// Scratch space for route lookups.
    pub matches: Matches,
    /// Scratch space for cluster route lookups.
    remote_matches: RemoteMatches,
    pending: Vec<(ClientHandle, Vec<Delivery>)>,
    index: HashMap<usize, usize, ahash::RandomState>,
    /// Messages for other nodes, one batch per node, in publish order.
    remote: Vec<(PeerName, RemoteBatch)>,
}

impl Fanout {
    /// Adds a delivery for `client`.
    pub fn push(&mut self, client: ClientHandle, delivery: Delivery) {
        let key = Arc::as_ptr(&client) as usize;
        match self.index.get(&key) {
            Some(&i) => self.pending[i].1.push(delivery),
            None => {
                self.index.insert(key, self.pending.len());
                self.pending.push((client, vec![delivery]));
            }
        }
    }

    /// Adds a message for another node.
    fn push_remote(&mut self, node: PeerName, message: Arc<Message>, target: Target) {
        match self.remote.iter_mut().find(|(n, _)| *n == node) {
            Some((_, batch)) => batch.push((message, target)),
            None => self.remote.push((node, vec![(message, target)])),
        }
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.remote.is_empty()
    }

    /// Sends every batch: one actor message per subscriber.
    pub fn flush(&mut self, broker: &Broker) {
        self.flush_hops(broker, 0);
    }

    fn flush_hops(&mut self, broker: &Broker, hops: u8) {
        self.index.clear();
        for (client, batch) in self.pending.drain(..) {
            broker.deliver_hops(&client, batch, hops);
        }
        for (node, batch) in self.remote.drain(..) {
            broker.cluster.forward(&node, &batch, &broker.metrics);
        }
    }
}

fn ahash_one(s: &str) -> u64 {
    // A fixed seed: the filter -> router mapping must not change when a router restarts.
    ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(s)
}
