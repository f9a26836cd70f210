//! Membership actor: finds the other nodes and keeps this node linked with them.
//!
//! Supervised by: `cluster_sup` (rest_for_one, right after the node server it watches),
//! restart type permanent.
//! Receives: link events from ractor_cluster's `NodeServer` (opened, authenticated, ready,
//! disconnected), its own `Tick`, and `Join` / `Leave` / `Status` requests.
//! Owns: the list of known members and when each is to be dialled next, and the links that
//! have not authenticated yet.
//!
//! ractor_cluster dials a node once and never again; this actor adds what a cluster needs to
//! heal: every known member that is not linked is dialled again with exponential backoff (up
//! to `cluster.reconnect_max_backoff`), members are learnt from seeds, DNS and from whoever
//! links with us (ractor_cluster meshes transitively), and a link that has not authenticated
//! within `cluster.handshake_timeout` is closed, so a socket that never speaks (or a stopped
//! peer's kernel accepting for it) holds nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beamq_supervisors::probe::{self, Counted, Describe, Probe, Registration, Summary};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServerMessage, NodeSessionMessage};
use tokio::task::JoinHandle;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::NODE_SERVER_NAME;
use super::tls::{ClusterTls, TlsLink};
use crate::broker::Broker;
use crate::config::{DiscoveryStrategy, NodeName};

/// First wait before dialling a member again; doubles up to `cluster.reconnect_max_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Time the peers get to receive `Leaving` before this node closes its links.
const LEAVE_GRACE: Duration = Duration::from_millis(500);
/// How often the actor looks at its links.
const TICK: Duration = Duration::from_millis(250);

/// A link event from the node server.
#[derive(Debug)]
pub enum LinkEvent {
    /// A socket was opened (in or out); not authenticated yet.
    Opened(NodeServerSessionInformation),
    /// The cookie handshake succeeded.
    Authenticated(NodeServerSessionInformation),
    /// State exchange is done; the peer's actors are visible here.
    Ready(NodeServerSessionInformation),
    /// The link closed.
    Disconnected(NodeServerSessionInformation),
}

/// One member as membership sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Node name.
    pub name: String,
    /// Address dialled.
    pub addr: String,
    /// True while a link is up.
    pub linked: bool,
}

/// Messages of the membership actor.
#[derive(Debug)]
pub enum MembershipMsg {
    /// From the node server's event subscription.
    Link(LinkEvent),
    /// Timer.
    Tick,
    /// Link with this node (and, transitively, its cluster).
    Join(String, RpcReplyPort<Result<(), String>>),
    /// Forget this member and close its links (it left, or an operator removed it).
    Forget(String),
    /// Members a peer is linked with (dialled if new).
    Learn(Vec<String>),
    /// This node leaves: forget every member and close every link.
    ForgetAll,
    /// The grace after a leave is over: close the links still open, if still left.
    CloseAfterLeave,
    /// Known members.
    Status(RpcReplyPort<Vec<MemberStatus>>),
    /// What a DNS discovery round found.
    Discovered(Result<HashSet<String>, String>),
    /// A summary of the state, for `actor show`.
    Describe(RpcReplyPort<Summary>),
}

// Local only: membership never receives from another node.
impl ractor::Message for MembershipMsg {}

impl Describe for MembershipMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        MembershipMsg::Describe(reply)
    }
}

/// Forwards node server events to the membership actor (ractor_cluster calls these
/// synchronously inside the node server: a cast and nothing more).
struct Events(ActorRef<MembershipMsg>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(MembershipMsg::Link(LinkEvent::Opened(ses)));
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self
            .0
            .send(MembershipMsg::Link(LinkEvent::Disconnected(ses)));
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self
            .0
            .send(MembershipMsg::Link(LinkEvent::Authenticated(ses)));
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(MembershipMsg::Link(LinkEvent::Ready(ses)));
    }
}

#[derive(Debug)]
struct Member {
    host: String,
    addr: String,
    backoff: Duration,
    next_dial: Instant,
}

#[derive(Debug)]
struct Pending {
    opened: Instant,
    session: ActorRef<NodeSessionMessage>,
    peer_addr: String,
}

/// State of the membership actor.
#[derive(Debug)]
pub struct MembershipState {
    broker: Arc<Broker>,
    me: NodeName,
    members: BTreeMap<String, Member>,
    /// Links up, by peer name: the session actors carrying them.
    linked: HashMap<String, HashSet<ActorId>>,
    /// Links not authenticated yet.
    pending: HashMap<ActorId, Pending>,
    next_dns: Instant,
    /// A DNS discovery round is running.
    dns_busy: bool,
    timer: Option<JoinHandle<()>>,
    /// Set by `leave`: seeds, DNS and peers' lists are ignored until an explicit join.
    left: bool,
    /// Members known only from DNS, forgotten when their record goes.
    from_dns: HashSet<String>,
    probe: Arc<Probe>,
    _registration: Registration,
}

impl Drop for MembershipState {
    fn drop(&mut self) {
        if let Some(t) = &self.timer {
            t.abort();
        }
        self.broker.cluster.set_membership(None);
    }
}

/// The membership actor.
#[derive(Debug, Clone, Copy)]
pub struct Membership;

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = Arc<Broker>;

    async fn pre_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        broker: Arc<Broker>,
    ) -> Result<MembershipState, ActorProcessingErr> {
        let me = NodeName::parse(&broker.config.node.name)?;
        let server = node_server().ok_or("the cluster node server is not running")?;
        server.send(NodeServerMessage::SubscribeToEvents {
            id: "beamq.membership".to_string(),
            subscription: Box::new(Events(myself.clone())),
        })?;
        let (probe, registration) = probe::start(&myself, "cluster_membership");
        let timer = myself.counted_interval(TICK, || MembershipMsg::Tick);
        broker.cluster.set_membership(Some(myself.clone()));
        let mut state = MembershipState {
            me,
            members: BTreeMap::new(),
            linked: HashMap::new(),
            pending: HashMap::new(),
            next_dns: Instant::now(),
            dns_busy: false,
            timer: Some(timer),
            left: false,
            from_dns: HashSet::new(),
            broker,
            probe,
            _registration: registration,
        };
        if state.broker.config.cluster.discovery == DiscoveryStrategy::Static {
            for seed in state.broker.config.cluster.seeds.clone() {
                state.learn(&seed);
            }
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<MembershipMsg>,
        msg: MembershipMsg,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.handled();
        match msg {
            MembershipMsg::Describe(reply) => {
                let linked = state.linked.len();
                let _ = reply.send(vec![
                    ("node".into(), state.me.to_string()),
                    ("members known".into(), state.members.len().to_string()),
                    ("links up".into(), linked.to_string()),
                    (
                        "links authenticating".into(),
                        state.pending.len().to_string(),
                    ),
                    ("left".into(), state.left.to_string()),
                    (
                        "discovery".into(),
                        format!("{:?}", state.broker.config.cluster.discovery),
                    ),
                ]);
            }
            MembershipMsg::Link(event) => state.link_event(event),
            MembershipMsg::Tick => state.tick(&myself).await,
            MembershipMsg::Discovered(found) => state.discovered(found),
            MembershipMsg::Join(name, reply) => {
                state.left = false;
                let r = NodeName::parse(&name).map(|_| {
                    state.learn(&name);
                });
                let _ = reply.send(r);
            }
            MembershipMsg::Forget(name) => {
                state.members.remove(&name);
                state.from_dns.remove(&name);
                super::bridge::close_link(&name).await;
                tracing::info!(peer = %name, "cluster member forgotten");
            }
            MembershipMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            MembershipMsg::ForgetAll => {
                state.members.clear();
                state.from_dns.clear();
                // Members are no longer learnt from peers either, and links they open are
                // closed: this node is on its own until `cluster join`.
                state.left = true;
                // The peers were just told (Leaving) and close their side; closing ours at
                // once could drop that message before it is written, and a peer that never
                // heard it would dial again. Close what is still open a moment later.
                myself.counted_after(LEAVE_GRACE, || MembershipMsg::CloseAfterLeave);
                tracing::info!("left the cluster");
            }
            MembershipMsg::CloseAfterLeave => {
                // Unless a join came in between.
                if state.left {
                    let names: Vec<String> = state.linked.keys().cloned().collect();
                    for name in names {
                        super::bridge::close_link(&name).await;
                    }
                }
            }
            MembershipMsg::Learn(names) => {
                for name in names {
                    state.learn(&name);
                }
            }
        }
        Ok(())
    }
}

impl MembershipState {
    /// Adds a member to dial (now). Ignores this node itself. True when it is new.
    /// Applies a DNS discovery round: new members are dialled, members whose record is gone
    /// are no longer dialled (unless linked).
    fn discovered(&mut self, found: Result<HashSet<String>, String>) {
        let cfg = &self.broker.config.cluster;
        self.dns_busy = false;
        self.next_dns = Instant::now() + cfg.dns.interval.get().unwrap_or(Duration::from_secs(10));
        if self.left {
            return;
        }
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(name = %cfg.dns.name, error = %e, "DNS discovery failed");
                return;
            }
        };
        for name in &found {
            if self.learn(name) {
                self.from_dns.insert(name.clone());
            }
        }
        // Records that are gone (a pod replaced, with a new address): stop dialling them
        // unless a link is up.
        let gone: Vec<String> = self
            .from_dns
            .iter()
            .filter(|n| !found.contains(*n) && !self.linked.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.from_dns.remove(&name);
            self.members.remove(&name);
            tracing::info!(peer = %name, "no longer in DNS; not dialled any more");
        }
    }

    fn learn(&mut self, name: &str) -> bool {
        let Ok(node) = NodeName::parse(name) else {
            return false;
        };
        if self.left || node == self.me || self.members.contains_key(name) {
            return false;
        }
        let port = self.broker.config.cluster.port_for(&node);
        let addr = match node.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{}:{port}", node.host),
        };
        tracing::info!(peer = %name, %addr, "cluster member known");
        self.members.insert(
            name.to_string(),
            Member {
                host: node.host.clone(),
                addr,
                backoff: MIN_BACKOFF,
                next_dial: Instant::now(),
            },
        );
        true
    }

    fn link_event(&mut self, event: LinkEvent) {
        let now = Instant::now();
        match event {
            LinkEvent::Opened(ses) => {
                self.pending.insert(
                    ses.actor.get_id(),
                    Pending {
                        opened: now,
                        session: ses.actor,
                        peer_addr: ses.peer_addr,
                    },
                );
            }
            LinkEvent::Authenticated(ses) => {
                self.pending.remove(&ses.actor.get_id());
            }
            LinkEvent::Ready(ses) => {
                self.pending.remove(&ses.actor.get_id());
                let Some(name) = ses.peer_name.map(|p| p.name) else {
                    return;
                };
                if self.left {
                    // This node left: a peer that did not hear it is refused.
                    ses.actor
                        .stop(Some("beamq: this node left the cluster".into()));
                    return;
                }
                tracing::info!(peer = %name, addr = %ses.peer_addr, "cluster link up");
                self.learn(&name);
                if let Some(m) = self.members.get_mut(&name) {
                    m.backoff = MIN_BACKOFF;
                }
                self.linked
                    .entry(name)
                    .or_default()
                    .insert(ses.actor.get_id());
            }
            LinkEvent::Disconnected(ses) => {
                let id = ses.actor.get_id();
                if self.pending.remove(&id).is_some() {
                    self.broker.metrics.cluster_links_refused.inc();
                    tracing::warn!(
                        addr = %ses.peer_addr,
                        peer = ?ses.peer_name.as_ref().map(|p| p.name.as_str()),
                        "cluster link closed before authenticating (wrong cookie, a duplicate \
                         link, or not a beamq node)"
                    );
                }
                if let Some(name) = ses.peer_name.map(|p| p.name) {
                    if let Some(set) = self.linked.get_mut(&name) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.linked.remove(&name);
                            tracing::warn!(peer = %name, "cluster link down");
                            if let Some(m) = self.members.get_mut(&name) {
                                m.next_dial = now + m.backoff;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn tick(&mut self, myself: &ActorRef<MembershipMsg>) {
        let now = Instant::now();
        let cfg = self.broker.config.cluster.clone();
        let handshake = cfg
            .handshake_timeout
            .get()
            .unwrap_or(Duration::from_secs(5));
        let max_backoff = cfg
            .reconnect_max_backoff
            .get()
            .unwrap_or(Duration::from_secs(5));
        let expired: Vec<ActorId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.opened) > handshake)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                self.broker.metrics.cluster_links_refused.inc();
                tracing::warn!(
                    addr = %p.peer_addr,
                    timeout_ms = handshake.as_millis() as u64,
                    "cluster link did not authenticate in time, closed"
                );
                p.session.stop(Some("beamq: handshake timeout".to_string()));
            }
        }
        if cfg.discovery == DiscoveryStrategy::Dns
            && now >= self.next_dns
            && !self.left
            && !self.dns_busy
        {
            // Resolved in a task, so that a slow DNS server never holds up the links.
            self.dns_busy = true;
            let dns = cfg.dns.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                let found = super::dns::members(&dns).await;
                let _ = me.send(MembershipMsg::Discovered(found));
            });
        }
        let Some(server) = node_server() else { return };
        for (name, m) in &mut self.members {
            if self.linked.contains_key(name) || now < m.next_dial {
                continue;
            }
            m.next_dial = now + m.backoff;
            m.backoff = (m.backoff * 2).min(max_backoff);
            let (server, addr, host, name) =
                (server.clone(), m.addr.clone(), m.host.clone(), name.clone());
            let tls = self.broker.cluster.tls();
            tokio::spawn(async move {
                let dial = tokio::time::timeout(handshake, dial(server, addr.clone(), host, tls));
                match dial.await {
                    Ok(Ok(())) => tracing::debug!(peer = %name, %addr, "dialled cluster member"),
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %name, %addr, error = %e, "cannot reach cluster member")
                    }
                    Err(_) => tracing::debug!(peer = %name, %addr, "dial timed out"),
                }
            });
        }
    }

    fn status(&self) -> Vec<MemberStatus> {
        self.members
            .iter()
            .map(|(name, m)| MemberStatus {
                name: name.clone(),
                addr: m.addr.clone(),
                linked: self.linked.contains_key(name),
            })
            .collect()
    }
}

/// The running node server, if any.
pub fn node_server() -> Option<ActorRef<NodeServerMessage>> {
    ractor::registry::where_is(NODE_SERVER_NAME).map(Into::into)
}

/// Opens a link to `addr`: plain, or TLS with the peer's host name as the name its certificate
/// must carry. The cookie handshake follows in the node server.
async fn dial(
    server: ActorRef<NodeServerMessage>,
    addr: String,
    host: String,
    tls: Option<ClusterTls>,
) -> Result<(), String> {
    let Some(tls) = tls else {
        return ractor_cluster::client_connect(&server, addr.as_str())
            .await
            .map_err(|e| e.to_string());
    };
    let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
    let stream = TcpStream::connect(addr.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let stream = tls
        .connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    ractor_cluster::client_connect_external(&server, Box::new(TlsLink::new(stream, addr)))
        .await
        .map_err(|e| e.to_string())
}
