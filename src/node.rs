//! A beamq node: the application supervision tree (DESIGN §3) and its orderly shutdown.
//!
//! ```text
//! beamq (one_for_all)               a broken core restarts the node's core, as emqx_sup does
//! ├ cluster_sup (rest_for_one)      node_server, membership, bridge (only with cluster.enable)
//! ├ router_sup (one_for_one)        router-0 .. router-N (permanent), retainer (permanent)
//! ├ broker_sup (one_for_one)        registry (permanent), sys (permanent)
//! ├ session_sup (dynamic)           one temporary client actor per MQTT client
//! ├ listener_sup (one_for_one)      one listener per configured endpoint (permanent)
//! └ admin (permanent)               the admin socket (`beamq ctl`), unless admin.enable = false
//! ```
//!
//! The tree is data, built in one place ([`tree`]) and started in order; it stops in reverse
//! order, so listeners stop accepting before sessions go and sessions go before the tables'
//! writers. Registry and `$SYS` sit under their own one_for_one supervisor rather than directly
//! under the one_for_all root: a registry crash then restarts the registry alone, with its table
//! intact, instead of disconnecting every client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beamq_actors::Broker;

use crate::admin::server::Admin;
use beamq_actors::client::ClientMsg;
use beamq_actors::cluster::NODE_SERVER_NAME;
use beamq_actors::cluster::bridge::Bridge;
use beamq_actors::cluster::membership::Membership;
use beamq_actors::cluster::ractor_cluster::node::NodeConnectionMode;
use beamq_actors::cluster::tls_listener::{TlsListener, TlsListenerArgs};
use beamq_actors::config::Config;
use beamq_actors::config::NodeName;
use beamq_actors::listener::{Listener, ListenerArgs};
use beamq_actors::registry::Registry;
use beamq_actors::retainer::Retainer;
use beamq_actors::router::{Router, RouterArgs};
use beamq_actors::sys::Sys;
use beamq_protocol::ReasonCode;
use beamq_supervisors::probe::Counted;
use beamq_supervisors::{
    ChildKind, ChildSpec, DynamicSupervisorSpec, Restart, Strategy, SupervisorError, SupervisorMsg,
    SupervisorSpec, SupervisorStats, shutdown_within, start_dynamic_supervisor, start_supervisor,
    terminate_child,
};
use ractor::{Actor, ActorRef};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster TLS files cannot be used (the message names the key).
    #[error("cluster TLS: {0}")]
    ClusterTls(String),
    /// The supervision tree did not start (a listener could not bind, ...).
    #[error("node failed to start: {0}")]
    Start(String),
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    broker: Arc<Broker>,
    root: ActorRef<SupervisorMsg>,
    root_stats: Arc<SupervisorStats>,
}

/// Builds the supervision tree for `broker`.
pub fn tree(broker: &Arc<Broker>) -> SupervisorSpec {
    let config = &broker.config;

    let mut router_sup =
        SupervisorSpec::new(Strategy::OneForOne).with_intensity(10, Duration::from_secs(10));
    for index in 0..config.broker.routers {
        let args = RouterArgs {
            index,
            broker: broker.clone(),
        };
        router_sup = router_sup.child(ChildSpec::actor(
            format!("router-{index}"),
            Restart::Permanent,
            Router,
            args,
        ));
    }
    router_sup = router_sup.child(ChildSpec::actor(
        "retainer",
        Restart::Permanent,
        Retainer,
        broker.clone(),
    ));

    let broker_sup = SupervisorSpec::new(Strategy::OneForOne)
        .with_intensity(10, Duration::from_secs(10))
        .child(ChildSpec::actor(
            "registry",
            Restart::Permanent,
            Registry,
            broker.clone(),
        ))
        .child(ChildSpec::actor(
            "sys",
            Restart::Permanent,
            Sys,
            broker.clone(),
        ));

    let shutdown = config
        .broker
        .shutdown_timeout
        .get()
        .unwrap_or(Duration::from_secs(10));
    let sessions = DynamicSupervisorSpec::new()
        .with_max_children(config.mqtt.max_clients)
        .with_shutdown(shutdown);
    let b = broker.clone();
    let session_sup = ChildSpec::new(
        "session_sup",
        ChildKind::Supervisor,
        Restart::Permanent,
        move |parent| {
            let spec = sessions.clone();
            let broker = b.clone();
            async move {
                let (handle, _) = start_dynamic_supervisor(spec, Some(parent)).await?;
                broker.set_session_sup(Some(handle.cell()));
                Ok::<_, SupervisorError>(handle.cell())
            }
        },
    )
    .with_shutdown(shutdown + Duration::from_secs(1));

    let mut listener_sup = SupervisorSpec::new(Strategy::OneForOne);
    for (name, l) in config.listeners.tcp.iter().filter(|(_, l)| l.enable) {
        let args = ListenerArgs {
            name: format!("tcp:{name}"),
            config: l.clone(),
            broker: broker.clone(),
        };
        listener_sup = listener_sup.child(ChildSpec::worker(
            format!("tcp:{name}"),
            Restart::Permanent,
            move |sup| {
                let args = args.clone();
                async move { Actor::spawn_linked(None, Listener, args, sup).await }
            },
        ));
    }

    let mut root =
        SupervisorSpec::new(Strategy::OneForAll).with_intensity(3, Duration::from_secs(5));
    if config.cluster.enable {
        root = root.child(ChildSpec::supervisor("cluster_sup", cluster_sup(broker)));
    }
    let root = root
        .child(ChildSpec::supervisor("router_sup", router_sup))
        .child(ChildSpec::supervisor("broker_sup", broker_sup))
        .child(session_sup)
        .child(ChildSpec::supervisor("listener_sup", listener_sup));
    if config.admin.enable {
        root.child(ChildSpec::actor(
            "admin",
            Restart::Permanent,
            Admin,
            broker.clone(),
        ))
    } else {
        root
    }
}

/// The cluster's actors: ractor_cluster's node server (the link listener and its sessions),
/// membership (dialling, handshake timeouts) and the bridge. rest_for_one: membership
/// subscribes to the node server's events, so a new node server means a new membership; the
/// bridge restarts alone.
fn cluster_sup(broker: &Arc<Broker>) -> SupervisorSpec {
    let config = &broker.config;
    let cluster = config.cluster.clone();
    // Validated at load.
    let me = NodeName::parse(&config.node.name).unwrap_or(NodeName {
        name: "beamq".into(),
        host: "127.0.0.1".into(),
    });
    let port = cluster.port_for(&me);
    let bind = if cluster.bind.is_empty() {
        me.host.clone()
    } else {
        cluster.bind.clone()
    };
    let bind_host = bind.clone();
    let tls = broker.cluster.tls();
    let handshake = cluster
        .handshake_timeout
        .get()
        .unwrap_or(Duration::from_secs(5));
    let tls_on = tls.is_some();
    let mut sup = SupervisorSpec::new(Strategy::RestForOne)
        .with_intensity(10, Duration::from_secs(10))
        .child(ChildSpec::worker(
            "node_server",
            Restart::Permanent,
            move |sup| {
                let (me, cookie, bind) = (me.clone(), cluster.cookie.clone(), bind.clone());
                async move {
                    let ip = resolve_bind(&bind).await;
                    // With TLS, beamq's own listener owns the cluster port and hands finished
                    // handshakes over; the node server's built-in listener is kept off the
                    // network (loopback, any port), and meshing goes through membership,
                    // which dials with TLS (ractor_cluster's transitive dialling is plain).
                    let (server_port, mode, listen) = if tls_on {
                        (
                            0,
                            NodeConnectionMode::Isolated,
                            Some(IpAddr::from([127, 0, 0, 1])),
                        )
                    } else {
                        // `None` would mean Isolated: joining one member must mesh with all.
                        (port, NodeConnectionMode::Transitive, ip)
                    };
                    let mut server = beamq_actors::cluster::ractor_cluster::NodeServer::new(
                        server_port,
                        cookie,
                        me.name.clone(),
                        me.host.clone(),
                        None,
                        Some(mode),
                    );
                    if let Some(ip) = listen {
                        server = server.with_listen_addr(ip);
                    }
                    tracing::info!(node = %me, port, %bind, tls = tls_on, "cluster starting");
                    Actor::spawn_linked(Some(NODE_SERVER_NAME.to_string()), server, (), sup).await
                }
            },
        ));
    if let Some(tls) = tls {
        let (bind_host, broker) = (bind_host.clone(), broker.clone());
        sup = sup.child(ChildSpec::worker(
            "tls_listener",
            Restart::Permanent,
            move |sup| {
                let (tls, bind_host, broker) = (tls.clone(), bind_host.clone(), broker.clone());
                async move {
                    let ip = resolve_bind(&bind_host)
                        .await
                        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
                    let args = TlsListenerArgs {
                        addr: SocketAddr::new(ip, port),
                        tls,
                        handshake_timeout: handshake,
                        broker,
                    };
                    Actor::spawn_linked(None, TlsListener, args, sup).await
                }
            },
        ));
    }
    sup.child(ChildSpec::actor(
        "membership",
        Restart::Permanent,
        Membership,
        broker.clone(),
    ))
    .child(ChildSpec::actor(
        "bridge",
        Restart::Permanent,
        Bridge,
        broker.clone(),
    ))
}

/// The address the cluster listener binds: an address as given, or the first address of a
/// host name; `None` (all interfaces) when the name does not resolve.
async fn resolve_bind(host: &str) -> Option<std::net::IpAddr> {
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    match tokio::net::lookup_host((host, 0)).await {
        Ok(mut addrs) => addrs.next().map(|a| a.ip()),
        Err(e) => {
            tracing::warn!(host, error = %e, "cannot resolve the cluster bind host; binding all interfaces");
            None
        }
    }
}

impl Node {
    /// Starts a node with a validated configuration.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        let data_dir = config.node.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| NodeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let broker = Broker::new(config);
        let c = &broker.config.cluster;
        if c.enable && c.tls.enable {
            let tls = beamq_actors::cluster::tls::load(&c.tls).map_err(NodeError::ClusterTls)?;
            broker.cluster.set_tls(tls);
        }
        let spec = tree(&broker);
        let root_stats = spec.stats();
        let (root, _join) = start_supervisor(spec, None)
            .await
            .map_err(|e| NodeError::Start(error_chain(&e)))?;
        broker.set_root(Some(root.get_cell()));
        tracing::info!(node = %broker.config.node.name, "node started");
        Ok(Node {
            broker,
            root,
            root_stats,
        })
    }

    /// The broker context (tables, counters, configuration).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The root supervisor.
    pub fn root(&self) -> &ActorRef<SupervisorMsg> {
        &self.root
    }

    /// Counters of the root supervisor.
    pub fn root_stats(&self) -> &Arc<SupervisorStats> {
        &self.root_stats
    }

    /// The bound address of the default MQTT listener.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.broker.listen_addr("tcp:default")
    }

    /// Graceful shutdown: stop accepting, send every client DISCONNECT 0x8B (v5) and end its
    /// session (publishing wills), then stop the tree in reverse order.
    pub async fn shutdown(self) {
        let broker = self.broker.clone();
        broker.begin_shutdown();
        let grace = broker
            .config
            .broker
            .shutdown_timeout
            .get()
            .unwrap_or(Duration::from_secs(10));
        if let Err(e) = terminate_child(&self.root, "listener_sup", grace).await {
            tracing::warn!(error = %e, "listeners did not stop cleanly");
        }
        for client in broker.sessions.all() {
            let _ = client.actor.send(ClientMsg::Kick {
                reason: ReasonCode::ServerShuttingDown,
                end_session: true,
            });
        }
        let deadline = Instant::now() + grace;
        while broker.metrics.sessions.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = shutdown_within(&self.root.get_cell(), grace).await {
            tracing::warn!(error = %e, "supervision tree did not stop in time");
        }
        tracing::info!("node stopped");
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        // Wrapping errors often print their source already; say each thing once.
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}
