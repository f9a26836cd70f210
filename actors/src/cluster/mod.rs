//! The cluster: nodes linked by ractor_cluster into one broker (DESIGN §5).
//!
//! ractor_cluster provides authenticated links (the cookie handshake), transitive meshing and
//! process groups that span nodes. It is young (no reconnect, no back-pressure, no failure
//! detection, no handshake timeout), so everything beamq needs from it goes through this
//! module, which adds those:
//! - [`membership`]: the actor that owns the `NodeServer`, finds members (seeds, DNS), dials
//!   them again with backoff after a link drops, and closes links that do not authenticate in
//!   time;
//! - [`bridge`]: the one remotable actor of a node, in the process group [`wire::BRIDGE_GROUP`]
//!   on every node: it exchanges routes, receives forwarded messages and dispatches them
//!   locally, sends heartbeats and declares silent peers down;
//! - [`remote_routes`]: filter -> nodes, what the peers announced;
//! - [`ClusterState`]: what the publish path needs (the peers' bridges and send windows), in
//!   the broker context so that it survives the restart of any cluster actor.
//!
//! Delivery to another node is one actor send per node per batch of publishes: the
//! publishing client's actor casts a `Forward` to the peer's bridge (a `RemoteActor` here),
//! and ractor_cluster carries it.

pub mod bridge;
pub mod dns;
pub mod membership;
pub mod remote_routes;
pub mod tls;
pub mod tls_listener;
pub mod wire;

/// The link layer, for the node wiring that starts its `NodeServer`.
pub use ractor_cluster;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use beamq_protocol::ByteString;
use beamq_protocol::session::{Message, ShareRef};
use beamq_supervisors::probe::Counted;
use parking_lot::RwLock;
use ractor::ActorRef;
use ractor::rpc::CallResult;

use crate::config::ShareStrategy;
use crate::metrics::Metrics;
use membership::{MemberStatus, MembershipMsg};
use remote_routes::{PeerName, RemoteRoutes};
use tls::ClusterTls;
use wire::{BridgeMsg, Local, PeerStatus, Wire, WireForward, WireMessage};

/// Registered name of the `NodeServer` actor, so that the cluster actors find it again after a
/// restart.
pub const NODE_SERVER_NAME: &str = "beamq.node_server";

/// What a node receiving a forwarded message delivers it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its direct (non-shared) subscribers.
    pub direct: bool,
    /// One member of each of these shared groups.
    pub shares: Vec<ShareRef>,
}

impl Target {
    /// Direct subscribers only.
    pub fn direct() -> Target {
        Target {
            direct: true,
            shares: Vec::new(),
        }
    }
}

/// A linked peer, as the publish path sees it.
#[derive(Debug)]
pub struct Peer {
    /// Its node name.
    pub name: PeerName,
    /// Its bridge (a remote actor).
    pub bridge: ActorRef<BridgeMsg>,
    /// Messages forwarded and not acknowledged yet: the send window.
    pub in_flight: AtomicU64,
}

/// The cluster side of the broker context.
#[derive(Debug)]
pub struct ClusterState {
    /// This node's name.
    pub node: PeerName,
    /// What the peers route.
    pub routes: RemoteRoutes,
    /// Linked peers by name.
    peers: RwLock<HashMap<PeerName, Arc<Peer>>>,
    /// This node's bridge, for route announcements.
    bridge: RwLock<Option<ActorRef<BridgeMsg>>>,
    membership: RwLock<Option<ActorRef<MembershipMsg>>>,
    tls: OnceLock<ClusterTls>,
    window: u64,
    /// Round-robin position over the nodes of shared groups.
    share_cursor: AtomicUsize,
}

impl ClusterState {
    /// The state of node `node` with a send window of `window` messages per peer.
    pub fn new(node: &str, window: usize) -> ClusterState {
        ClusterState {
            node: Arc::from(node),
            routes: RemoteRoutes::default(),
            peers: RwLock::new(HashMap::new()),
            bridge: RwLock::new(None),
            membership: RwLock::new(None),
            tls: OnceLock::new(),
            window: window as u64,
            share_cursor: AtomicUsize::new(0),
        }
    }

    /// True when at least one peer is linked.
    pub fn has_peers(&self) -> bool {
        !self.peers.read().is_empty()
    }

    /// The linked peers.
    pub fn peers(&self) -> Vec<Arc<Peer>> {
        let mut v: Vec<Arc<Peer>> = self.peers.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One peer.
    pub fn peer(&self, name: &str) -> Option<Arc<Peer>> {
        self.peers.read().get(name).cloned()
    }

    pub(crate) fn set_peer(&self, peer: Arc<Peer>) {
        self.peers.write().insert(peer.name.clone(), peer);
    }

    pub(crate) fn remove_peer(&self, name: &str) -> Option<Arc<Peer>> {
        self.peers.write().remove(name)
    }

    /// Sets the TLS configuration of cluster links (once, at node start).
    pub fn set_tls(&self, tls: ClusterTls) {
        let _ = self.tls.set(tls);
    }

    /// TLS for cluster links, when enabled.
    pub fn tls(&self) -> Option<ClusterTls> {
        self.tls.get().cloned()
    }

    pub(crate) fn set_membership(&self, m: Option<ActorRef<MembershipMsg>>) {
        *self.membership.write() = m;
    }

    /// Members a peer knows of: membership dials the ones this node does not know yet, which
    /// meshes the cluster however nodes were introduced.
    pub(crate) fn learn(&self, names: Vec<String>) {
        if let Some(m) = &*self.membership.read() {
            let _ = m.send(MembershipMsg::Learn(names));
        }
    }

    pub(crate) fn forget(&self, name: String) {
        if let Some(m) = &*self.membership.read() {
            let _ = m.send(MembershipMsg::Forget(name));
        }
    }

    /// Tells every peer something (best effort).
    fn broadcast(&self, wire: impl Fn() -> Wire) {
        for peer in self.peers() {
            let _ = peer.bridge.send(BridgeMsg::Remote(wire()));
        }
    }

    /// Known members as membership sees them, and the linked peers as the bridge sees them.
    /// Empty without a running cluster.
    pub async fn status(&self) -> (Vec<MemberStatus>, Vec<PeerStatus>) {
        let timeout = Duration::from_secs(2);
        let membership = self.membership.read().clone();
        let members = match membership {
            Some(m) => match m.ask(MembershipMsg::Status, timeout).await {
                Ok(CallResult::Success(v)) => v,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        let peers = match self.bridge() {
            Some(b) => match b.ask(|r| BridgeMsg::Local(Local::Peers(r)), timeout).await {
                Ok(CallResult::Success(v)) => v,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        (members, peers)
    }

    /// Links with `node` (and, through it, its cluster).
    pub async fn join(&self, node: &str) -> Result<(), String> {
        let m = self
            .membership
            .read()
            .clone()
            .ok_or("the cluster is not running on this node")?;
        match m
            .ask(
                |r| MembershipMsg::Join(node.to_string(), r),
                Duration::from_secs(2),
            )
            .await
        {
            Ok(CallResult::Success(r)) => r,
            _ => Err("membership did not answer".into()),
        }
    }

    /// This node leaves: every peer is told to forget it, and it forgets them all.
    pub fn leave(&self) -> Result<(), String> {
        if self.membership.read().is_none() {
            return Err("the cluster is not running on this node".into());
        }
        self.broadcast(|| Wire::Leaving {
            from: self.node.to_string(),
        });
        if let Some(m) = &*self.membership.read() {
            let _ = m.send(MembershipMsg::ForgetAll);
        }
        Ok(())
    }

    /// Removes `node` from the cluster: this node and every peer forget it and close its
    /// links (for a node that is gone for good).
    pub fn force_leave(&self, node: &str) -> Result<(), String> {
        if *node == *self.node {
            return Err("use `cluster leave` for this node".into());
        }
        if self.membership.read().is_none() {
            return Err("the cluster is not running on this node".into());
        }
        self.broadcast(|| Wire::Forget {
            from: self.node.to_string(),
            node: node.to_string(),
        });
        self.forget(node.to_string());
        Ok(())
    }

    pub(crate) fn bridge(&self) -> Option<ActorRef<BridgeMsg>> {
        self.bridge.read().clone()
    }

    pub(crate) fn set_bridge(&self, bridge: Option<ActorRef<BridgeMsg>>) {
        *self.bridge.write() = bridge;
    }

    /// Tells the bridge that a filter gained its first (`added`) or lost its last local
    /// subscriber. Without a running bridge (no cluster, or it is restarting) nothing is
    /// sent: a bridge that starts reads the whole local route table anyway.
    pub fn announce(&self, filter: &ByteString, added: bool) {
        if let Some(bridge) = &*self.bridge.read() {
            let event = if added {
                Local::FilterAdded(filter.clone())
            } else {
                Local::FilterRemoved(filter.clone())
            };
            let _ = bridge.send(BridgeMsg::Local(event));
        }
    }

    /// Which of `candidates` nodes gets a shared-group message: round robin (also for
    /// `random` and `sticky`, whose per-member choice is made on the node picked), or a stable
    /// hash of the publisher or the topic for the hash strategies, so that the same key always
    /// reaches the same node.
    pub fn pick_share(
        &self,
        strategy: ShareStrategy,
        message: &Message,
        candidates: usize,
    ) -> usize {
        let n = candidates.max(1);
        let hash = |s: &str| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(s, &mut h);
            std::hash::Hasher::finish(&h) as usize
        };
        match strategy {
            ShareStrategy::HashClientid => hash(&message.publisher) % n,
            ShareStrategy::HashTopic => hash(&message.topic) % n,
            _ => self.share_cursor.fetch_add(1, Ordering::Relaxed) % n,
        }
    }

    /// Sends `messages` to `node` in one actor message, within its send window. Messages
    /// beyond the window, or for a peer that is gone, are dropped and counted.
    pub fn forward(&self, node: &str, messages: &[(Arc<Message>, Target)], metrics: &Metrics) {
        let n = messages.len() as u64;
        let Some(peer) = self.peer(node) else {
            metrics.cluster_dropped.add(n);
            return;
        };
        let before = peer.in_flight.fetch_add(n, Ordering::Relaxed);
        if before + n > self.window {
            peer.in_flight.fetch_sub(n, Ordering::Relaxed);
            metrics.cluster_dropped.add(n);
            tracing::debug!(peer = %peer.name, n, "cluster send window full, messages dropped");
            return;
        }
        let now = Instant::now();
        let wire = Wire::Forward {
            from: self.node.to_string(),
            messages: messages
                .iter()
                .map(|(m, target)| WireForward {
                    message: WireMessage::from_message(m, now),
                    direct: target.direct,
                    shares: target
                        .shares
                        .iter()
                        .map(|s| (s.group.clone(), s.filter.clone()))
                        .collect(),
                })
                .collect(),
        };
        if peer.bridge.send(BridgeMsg::Remote(wire)).is_err() {
            peer.in_flight.fetch_sub(n, Ordering::Relaxed);
            metrics.cluster_dropped.add(n);
        } else {
            metrics.cluster_forwarded.add(n);
        }
    }
}
