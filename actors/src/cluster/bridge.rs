//! Bridge actor: this node's voice in the cluster, and the only remotable actor of a node.
//!
//! Supervised by: `cluster_sup` (rest_for_one, after the node server and membership), restart
//! type permanent.
//! Receives: [`Wire`] messages from the bridges of other nodes (hello with a full route sync,
//! route changes, forwarded publishes, retained sync, acks, pings); `FilterAdded` /
//! `FilterRemoved` from routers; its own heartbeat `Tick`; `Peers` from inspection; process
//! group changes of [`BRIDGE_GROUP`] from ractor (a peer's bridge appears or goes).
//! Owns: the liveness record of each peer and the acks it owes. The peers' send handles and
//! routes live in [`ClusterState`] (the broker context); a restarted bridge clears them and
//! greets every peer again, and each answers with a full sync.
//!
//! A peer is linked once its Hello has arrived. It is unlinked when its bridge leaves the
//! group (the link closed) or when it has been silent for `cluster.failure_timeout`; then its
//! routes are purged and, in the second case, its link is closed so that both sides start
//! over cleanly (membership dials it again).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use beamq_protocol::ByteString;
use beamq_protocol::session::ShareRef;
use beamq_supervisors::probe::{self, Counted, Probe, Registration, Summary};
use ractor::pg::{self, GroupChangeMessage};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
    rpc::CallResult,
};
use ractor_cluster::NodeServerMessage;
use tokio::task::JoinHandle;

use super::remote_routes::PeerName;
use super::wire::{
    BRIDGE_GROUP, BridgeMsg, Local, PeerStatus, Wire, WireForward, WireMessage, WireSession,
};
use super::{ClusterState, Peer, Target};
use crate::broker::Broker;
use crate::client::ClientMsg;

/// Acks are sent once this many forwarded messages have been dispatched (and at every tick),
/// so credit flows back without one ack per batch.
const ACK_EVERY: u64 = 1024;
/// Retained messages per sync message.
const RETAINED_PAGE: usize = 256;
/// How long a connecting client waits for the peers to answer for its session.
const TAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// State of the bridge.
#[derive(Debug)]
pub struct BridgeState {
    broker: Arc<Broker>,
    incarnation: u64,
    /// Remote bridge actor -> its node, for the peers linked through it.
    by_actor: HashMap<ActorId, PeerName>,
    last_heard: HashMap<PeerName, Instant>,
    /// Forwarded messages dispatched and not acknowledged yet, per peer.
    owed_acks: HashMap<PeerName, u64>,
    failure_timeout: Duration,
    timer: Option<JoinHandle<()>>,
    /// Session requests of local clients waiting for the peers' answers.
    takes: HashMap<u64, PendingTake>,
    next_req: u64,
    probe: Arc<Probe>,
    _registration: Registration,
}

/// A local client's request for its session, waiting for every peer asked.
#[derive(Debug)]
struct PendingTake {
    waiting: Vec<PeerName>,
    found: Option<WireSession>,
    deadline: Instant,
    reply: RpcReplyPort<Option<WireSession>>,
}

impl Drop for BridgeState {
    fn drop(&mut self) {
        if let Some(t) = &self.timer {
            t.abort();
        }
        // Runs after a panic too (ractor skips post_stop then): announcements go nowhere
        // until a new bridge registers.
        self.broker.cluster.set_bridge(None);
    }
}

/// The bridge actor.
#[derive(Debug, Clone, Copy)]
pub struct Bridge;

impl Actor for Bridge {
    type Msg = BridgeMsg;
    type State = BridgeState;
    type Arguments = Arc<Broker>;

    async fn pre_start(
        &self,
        myself: ActorRef<BridgeMsg>,
        broker: Arc<Broker>,
    ) -> Result<BridgeState, ActorProcessingErr> {
        let cfg = &broker.config.cluster;
        let heartbeat = cfg
            .heartbeat_interval
            .get()
            .unwrap_or(Duration::from_secs(1));
        let failure_timeout = cfg.failure_timeout.get().unwrap_or(Duration::from_secs(5));
        // Start from nothing: whatever a previous bridge knew may be stale, and every peer
        // answers the Hello below with a full sync.
        for peer in broker.cluster.peers() {
            broker.cluster.remove_peer(&peer.name);
            broker.cluster.routes.purge(&peer.name);
        }
        broker.cluster.set_bridge(Some(myself.clone()));
        pg::join(BRIDGE_GROUP.to_string(), vec![myself.get_cell()]);
        pg::monitor(BRIDGE_GROUP.to_string(), myself.get_cell());
        let (probe, registration) = probe::start(&myself, "cluster_bridge");
        let timer = myself.counted_interval(heartbeat, || BridgeMsg::Local(Local::Tick));
        let state = BridgeState {
            incarnation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            broker,
            by_actor: HashMap::new(),
            last_heard: HashMap::new(),
            owed_acks: HashMap::new(),
            failure_timeout,
            timer: Some(timer),
            takes: HashMap::new(),
            next_req: 1,
            probe,
            _registration: registration,
        };
        for cell in remote_bridges() {
            state.hello(&cell, true);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<BridgeMsg>,
        msg: BridgeMsg,
        state: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        match &msg {
            // Enqueued by ractor_cluster, not counted when sent: counted now (see probe).
            BridgeMsg::Remote(_) => state.probe.remote_handled(),
            BridgeMsg::Local(_) => state.probe.handled(),
        }
        match msg {
            BridgeMsg::Remote(wire) => state.remote(wire).await,
            BridgeMsg::Local(Local::Describe(reply)) => {
                let _ = reply.send(state.summary());
            }
            BridgeMsg::Local(Local::FilterAdded(f)) => state.announce(vec![f], Vec::new()),
            BridgeMsg::Local(Local::FilterRemoved(f)) => state.announce(Vec::new(), vec![f]),
            BridgeMsg::Local(Local::Tick) => state.tick().await,
            BridgeMsg::Local(Local::Peers(reply)) => {
                let _ = reply.send(state.status());
            }
            BridgeMsg::Local(Local::TakeSession {
                client_id,
                clean_start,
                started_us,
                reply,
            }) => state.ask_for_session(client_id, clean_start, started_us, reply),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<BridgeMsg>,
        event: SupervisionEvent,
        state: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        // The bridge supervises nothing; the only events it gets are group changes.
        state.probe.event_handled();
        if let SupervisionEvent::ProcessGroupChanged(change) = event {
            match change {
                GroupChangeMessage::Join(_, group, cells) if group == BRIDGE_GROUP => {
                    for cell in cells.iter().filter(|c| !c.get_id().is_local()) {
                        state.hello(cell, true);
                    }
                }
                GroupChangeMessage::Leave(_, group, cells) if group == BRIDGE_GROUP => {
                    for cell in cells {
                        if let Some(name) = state.by_actor.remove(&cell.get_id()) {
                            state.unlink(&name, cell.get_id(), "link closed");
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl BridgeState {
    fn summary(&self) -> Summary {
        let peers = self.cluster().peers();
        let mut out: Summary = vec![
            ("node".into(), self.node()),
            ("peers".into(), peers.len().to_string()),
            (
                "remote routes".into(),
                self.cluster().routes.len().to_string(),
            ),
            (
                "session requests waiting".into(),
                self.takes.len().to_string(),
            ),
        ];
        for p in self.status() {
            out.push((
                format!("peer {}", p.name),
                format!(
                    "heard {} ms ago, {} in flight, {} routes",
                    p.last_heard_ms, p.in_flight, p.routes
                ),
            ));
        }
        out
    }

    fn node(&self) -> String {
        self.broker.cluster.node.to_string()
    }

    fn cluster(&self) -> &ClusterState {
        &self.broker.cluster
    }

    /// Greets a peer's bridge with this node's full route set.
    fn hello(&self, cell: &ActorCell, reply: bool) {
        let filters = self
            .broker
            .routes
            .announced_filters()
            .into_iter()
            .map(|f| f.to_string())
            .collect();
        let peers = self
            .cluster()
            .peers()
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        let to: ActorRef<BridgeMsg> = cell.clone().into();
        let _ = to.send(BridgeMsg::Remote(Wire::Hello {
            from: self.node(),
            incarnation: self.incarnation,
            filters,
            peers,
            reply,
        }));
    }

    async fn remote(&mut self, wire: Wire) {
        let now = Instant::now();
        match wire {
            Wire::Hello {
                from,
                incarnation,
                filters,
                peers,
                reply,
            } => {
                self.cluster().learn(peers);
                let Some(cell) = resolve_bridge(&from).await else {
                    // Its link is not fully up yet as seen from here; the next tick greets
                    // every bridge not linked, and it answers again.
                    tracing::debug!(peer = %from, "hello from a bridge not resolvable yet");
                    return;
                };
                let name: PeerName = Arc::from(from.as_str());
                let previous = self.cluster().peer(&name);
                if previous
                    .as_ref()
                    .is_none_or(|p| p.bridge.get_id() != cell.get_id())
                {
                    tracing::info!(peer = %name, incarnation, "cluster peer linked");
                    self.cluster().set_peer(Arc::new(Peer {
                        name: name.clone(),
                        bridge: cell.clone().into(),
                        in_flight: 0.into(),
                    }));
                }
                self.by_actor.insert(cell.get_id(), name.clone());
                self.last_heard.insert(name.clone(), now);
                self.cluster().routes.replace(&name, filters);
                if reply {
                    self.hello(&cell, false);
                    self.sync_retained(&cell);
                }
            }
            Wire::Routes { from, add, del } => {
                let Some(name) = self.heard(&from, now) else {
                    return;
                };
                for f in add {
                    self.cluster().routes.add(&name, ByteString::from(f));
                }
                for f in del {
                    self.cluster().routes.remove(&name, &f);
                }
            }
            Wire::Forward { from, messages } => {
                let Some(name) = self.heard(&from, now) else {
                    // Not linked (yet, or any more): credit would go nowhere; dispatch anyway,
                    // the message was published and routed to us.
                    self.dispatch(messages, now);
                    return;
                };
                let n = messages.len() as u64;
                self.dispatch(messages, now);
                let owed = self.owed_acks.entry(name.clone()).or_default();
                *owed += n;
                if *owed >= ACK_EVERY {
                    let count = std::mem::take(owed);
                    self.ack(&name, count);
                }
            }
            Wire::Retained { from, messages } => {
                self.heard(&from, now);
                for w in messages {
                    match w.into_message(now) {
                        Some(m) => {
                            if self.broker.retained.apply(&m).is_err() {
                                self.broker.metrics.retained_refused.inc();
                            }
                        }
                        None => self.broker.metrics.cluster_bad_messages.inc(),
                    }
                }
            }
            Wire::Ack { from, count } => {
                if let Some(peer) = self.cluster().peer(&from) {
                    // Never below zero, whatever a confused peer says.
                    let _ =
                        peer.in_flight
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                                Some(v.saturating_sub(count))
                            });
                }
                self.heard(&from, now);
            }
            Wire::Ping { from } => {
                self.heard(&from, now);
            }
            Wire::Leaving { from } => {
                tracing::info!(peer = %from, "cluster peer leaves");
                self.cluster().forget(from);
            }
            Wire::Forget { from, node } => {
                tracing::info!(peer = %from, %node, "cluster peer removed a member");
                if *node != *self.cluster().node {
                    self.cluster().forget(node);
                }
            }
            Wire::TakeSession {
                from,
                req,
                client_id,
                clean_start,
                started_us,
            } => {
                self.heard(&from, now);
                let broker = self.broker.clone();
                // The old owner may take a while to answer (it closes its connection, drains
                // its mailbox): never block the bridge on it.
                tokio::spawn(async move {
                    let session = hand_over(&broker, &client_id, clean_start, started_us).await;
                    if let Some(peer) = broker.cluster.peer(&from) {
                        let _ = peer.bridge.send(BridgeMsg::Remote(Wire::SessionHandoff {
                            from: broker.cluster.node.to_string(),
                            req,
                            session,
                        }));
                    }
                });
            }
            Wire::SessionHandoff { from, req, session } => {
                self.heard(&from, now);
                if let Some(take) = self.takes.get_mut(&req) {
                    take.waiting.retain(|n| **n != *from);
                    if session.is_some() {
                        take.found = session;
                    }
                    if take.waiting.is_empty() {
                        self.finish_take(req);
                    }
                }
            }
        }
    }

    /// Records that `from` spoke; its name if it is a linked peer.
    fn heard(&mut self, from: &str, now: Instant) -> Option<PeerName> {
        let peer = self.cluster().peer(from)?;
        self.last_heard.insert(peer.name.clone(), now);
        Some(peer.name.clone())
    }

    fn dispatch(&self, messages: Vec<WireForward>, now: Instant) {
        let mut batch = Vec::with_capacity(messages.len());
        for w in messages {
            let target = Target {
                direct: w.direct,
                shares: w
                    .shares
                    .into_iter()
                    .map(|(group, filter)| ShareRef { group, filter })
                    .collect(),
            };
            match w.message.into_message(now) {
                Some(m) => batch.push((m, target)),
                None => self.broker.metrics.cluster_bad_messages.inc(),
            }
        }
        self.broker.metrics.cluster_received.add(batch.len() as u64);
        self.broker.dispatch_from_peer(batch);
    }

    fn ack(&self, name: &str, count: u64) {
        if let Some(peer) = self.cluster().peer(name) {
            let _ = peer.bridge.send(BridgeMsg::Remote(Wire::Ack {
                from: self.node(),
                count,
            }));
        }
    }

    /// Sends this node's retained messages to a new peer, a page per message.
    fn sync_retained(&self, cell: &ActorCell) {
        let to: ActorRef<BridgeMsg> = cell.clone().into();
        let now = Instant::now();
        let mut after: Option<String> = None;
        loop {
            let page =
                self.broker
                    .retained
                    .page("#", after.as_deref(), u64::MAX, RETAINED_PAGE, now);
            let Some(last) = page.last() else { break };
            after = Some(last.topic.to_string());
            let full = page.len() == RETAINED_PAGE;
            let messages = page
                .iter()
                .map(|m| WireMessage::from_message(m, now))
                .collect();
            if to
                .send(BridgeMsg::Remote(Wire::Retained {
                    from: self.node(),
                    messages,
                }))
                .is_err()
                || !full
            {
                break;
            }
        }
    }

    fn announce(&self, add: Vec<ByteString>, del: Vec<ByteString>) {
        let add: Vec<String> = add.iter().map(|f| f.to_string()).collect();
        let del: Vec<String> = del.iter().map(|f| f.to_string()).collect();
        if add.is_empty() && del.is_empty() {
            return;
        }
        for peer in self.cluster().peers() {
            let _ = peer.bridge.send(BridgeMsg::Remote(Wire::Routes {
                from: self.node(),
                add: add.clone(),
                del: del.clone(),
            }));
        }
    }

    fn ask_for_session(
        &mut self,
        client_id: ByteString,
        clean_start: bool,
        started_us: u64,
        reply: RpcReplyPort<Option<WireSession>>,
    ) {
        let peers = self.cluster().peers();
        if peers.is_empty() {
            let _ = reply.send(None);
            return;
        }
        let req = self.next_req;
        self.next_req += 1;
        for peer in &peers {
            let _ = peer.bridge.send(BridgeMsg::Remote(Wire::TakeSession {
                from: self.node(),
                req,
                client_id: client_id.clone(),
                clean_start,
                started_us,
            }));
        }
        self.takes.insert(
            req,
            PendingTake {
                waiting: peers.iter().map(|p| p.name.clone()).collect(),
                found: None,
                deadline: Instant::now() + TAKE_TIMEOUT,
                reply,
            },
        );
    }

    fn finish_take(&mut self, req: u64) {
        if let Some(take) = self.takes.remove(&req) {
            let _ = take.reply.send(take.found);
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        // A peer that went down (or never answers) does not hold a connecting client forever.
        let overdue: Vec<u64> = self
            .takes
            .iter()
            .filter(|(_, t)| now >= t.deadline)
            .map(|(req, _)| *req)
            .collect();
        for req in overdue {
            self.finish_take(req);
        }
        for peer in self.cluster().peers() {
            let owed = self.owed_acks.remove(&peer.name).unwrap_or(0);
            if owed > 0 {
                self.ack(&peer.name, owed);
            }
            let _ = peer
                .bridge
                .send(BridgeMsg::Remote(Wire::Ping { from: self.node() }));
            let silent = self
                .last_heard
                .get(&peer.name)
                .is_none_or(|t| now.duration_since(*t) > self.failure_timeout);
            if silent {
                self.broker.metrics.cluster_peers_timed_out.inc();
                tracing::warn!(
                    peer = %peer.name,
                    timeout_ms = self.failure_timeout.as_millis() as u64,
                    "cluster peer silent, declared down"
                );
                self.unlink(&peer.name, peer.bridge.get_id(), "heartbeat timeout");
                close_link(&peer.name).await;
            }
        }
        // Bridges whose Hello never arrived or could not be resolved: greet them again.
        let linked: Vec<ActorId> = self
            .cluster()
            .peers()
            .iter()
            .map(|p| p.bridge.get_id())
            .collect();
        for cell in remote_bridges() {
            if !linked.contains(&cell.get_id()) {
                self.hello(&cell, true);
            }
        }
    }

    /// Forgets a peer reached through bridge `via` (a newer link's peer entry stays).
    fn unlink(&mut self, name: &str, via: ActorId, why: &str) {
        let current = self.cluster().peer(name);
        if current.as_ref().is_some_and(|p| p.bridge.get_id() != via) {
            return;
        }
        self.cluster().remove_peer(name);
        let routes = self.cluster().routes.purge(name);
        self.last_heard.remove(name);
        self.owed_acks.remove(name);
        self.by_actor.retain(|_, n| &**n != name);
        tracing::warn!(peer = %name, routes, reason = why, "cluster peer unlinked");
    }

    fn status(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        self.cluster()
            .peers()
            .iter()
            .map(|p| PeerStatus {
                name: p.name.to_string(),
                last_heard_ms: self
                    .last_heard
                    .get(&p.name)
                    .map_or(u64::MAX, |t| now.duration_since(*t).as_millis() as u64),
                in_flight: p.in_flight.load(Ordering::Relaxed),
                routes: self.cluster().routes.filters_of(&p.name).len(),
            })
            .collect()
    }
}

fn remote_bridges() -> Vec<ActorCell> {
    pg::get_members(&BRIDGE_GROUP.to_string())
        .into_iter()
        .filter(|c| !c.get_id().is_local())
        .collect()
}

/// The link sessions of the node server: (node name, ractor node id, session actor).
async fn sessions() -> Vec<(String, u64, ActorCell)> {
    let Some(server) = super::membership::node_server() else {
        return Vec::new();
    };
    match server
        .ask(NodeServerMessage::GetSessions, Duration::from_secs(2))
        .await
    {
        Ok(CallResult::Success(map)) => map
            .into_values()
            .filter_map(|s| {
                let name = s.peer_name.map(|p| p.name)?;
                Some((name, s.node_id, s.actor.get_cell()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The bridge of node `name`: the remote member of the group reached through its link.
async fn resolve_bridge(name: &str) -> Option<ActorCell> {
    let node_ids: Vec<u64> = sessions()
        .await
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, id, _)| id)
        .collect();
    remote_bridges()
        .into_iter()
        .find(|c| node_ids.contains(&c.get_id().node()))
}

/// Closes every link to node `name`; membership dials it again.
pub(crate) async fn close_link(name: &str) {
    for (n, _, session) in sessions().await {
        if n == name {
            session.stop(Some("beamq: peer declared down".to_string()));
        }
    }
}

/// Hands this node's session of `client_id` to a connection on another node: the local owner
/// closes its connection (v5 DISCONNECT 0x8E, wills as the spec says) and gives up its
/// session, its routes and its client id. Nothing is handed when the local connection is the
/// newer of two racing ones (`started_us`): that one stays, and its own request takes the other.
async fn hand_over(
    broker: &Broker,
    client_id: &str,
    clean_start: bool,
    started_us: u64,
) -> Option<WireSession> {
    let old = broker.sessions.get(client_id)?;
    if old.started_us > started_us {
        tracing::info!(client_id, "newer local connection keeps the client id");
        return None;
    }
    broker.metrics.takeovers.inc();
    let timeout = crate::broker::CALL_TIMEOUT;
    let session = match old
        .actor
        .ask(
            |reply| ClientMsg::TakeoverBegin { clean_start, reply },
            timeout,
        )
        .await
    {
        Ok(CallResult::Success(s)) => s,
        _ => {
            tracing::warn!(client_id, "session owner did not hand over; killed");
            old.actor.kill();
            return None;
        }
    };
    let buffered = match old
        .actor
        .ask(|reply| ClientMsg::HandoffEnd { reply }, timeout)
        .await
    {
        Ok(CallResult::Success(b)) => b,
        _ => Vec::new(),
    };
    let wire = session.map(|s| WireSession::from_state(*s, buffered, Instant::now()));
    tracing::info!(
        client_id,
        moved = wire.is_some(),
        messages = wire.as_ref().map_or(0, |w| w.messages.len()),
        "session handed to another node"
    );
    wire
}

/// Asks the other nodes for `link`'s session (see [`Wire::TakeSession`]); the session and
/// the messages owed to the client when one was handed over.
pub async fn take_session(
    broker: &Broker,
    link: &crate::link::ClientHandle,
    clean_start: bool,
) -> Option<(
    beamq_protocol::session::SessionState,
    Vec<beamq_protocol::session::Delivery>,
)> {
    if !broker.cluster.has_peers() {
        return None;
    }
    let bridge = broker.cluster.bridge()?;
    let res = bridge
        .ask(
            |reply| {
                BridgeMsg::Local(Local::TakeSession {
                    client_id: link.client_id.clone(),
                    clean_start,
                    started_us: link.started_us,
                    reply,
                })
            },
            TAKE_TIMEOUT + Duration::from_secs(2),
        )
        .await;
    let Ok(CallResult::Success(Some(session))) = res else {
        return None;
    };
    let (state, deliveries, bad) = session.into_state(Instant::now());
    broker.metrics.cluster_bad_messages.add(bad as u64);
    Some((state, deliveries))
}
