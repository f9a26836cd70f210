//! TLS listener actor: accepts cluster links when `cluster.tls.enable` is set.
//!
//! Supervised by: `cluster_sup` (rest_for_one, right after the node server it feeds), restart
//! type permanent.
//! Receives: nothing (stop from its supervisor).
//! Owns: the cluster port, through its accept task (aborted when the state drops). Each
//! accepted socket gets its own task for the TLS handshake, bounded by
//! `cluster.handshake_timeout`; only a finished handshake reaches the node server, which then
//! checks the cookie. Binding happens in `pre_start`, so a port in use fails the start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use beamq_supervisors::probe::{self, Counted, Describe, Probe, Registration, Summary};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::NodeServerMessage;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::membership::node_server;
use super::tls::{ClusterTls, TlsLink};
use crate::broker::Broker;

/// The actor exists to own the accept task under supervision; its only message is the
/// inspection every actor answers.
#[derive(Debug)]
pub enum TlsListenerMsg {
    /// A summary of the state, for `actor show`.
    Describe(RpcReplyPort<Summary>),
}

// Local only.
impl ractor::Message for TlsListenerMsg {}

impl Describe for TlsListenerMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        TlsListenerMsg::Describe(reply)
    }
}

/// Arguments: where to listen, the TLS setup, and the handshake limit.
#[derive(Debug, Clone)]
pub struct TlsListenerArgs {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Certificates.
    pub tls: ClusterTls,
    /// Time a peer has to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// The broker (for counting refused links).
    pub broker: Arc<Broker>,
}

/// State: the accept task.
#[derive(Debug)]
pub struct TlsListenerState {
    task: JoinHandle<()>,
    addr: SocketAddr,
    probe: Arc<Probe>,
    _registration: Registration,
}

impl Drop for TlsListenerState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The actor.
#[derive(Debug, Clone, Copy)]
pub struct TlsListener;

impl Actor for TlsListener {
    type Msg = TlsListenerMsg;
    type State = TlsListenerState;
    type Arguments = TlsListenerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TlsListenerMsg>,
        args: TlsListenerArgs,
    ) -> Result<TlsListenerState, ActorProcessingErr> {
        let listener = TcpListener::bind(args.addr)
            .await
            .map_err(|e| format!("cannot bind the cluster port {}: {e}", args.addr))?;
        tracing::info!(addr = %args.addr, "cluster TLS listener ready");
        let addr = args.addr;
        let task = tokio::spawn(accept_loop(listener, args));
        let (probe, registration) = probe::start(&myself, "cluster_tls_listener");
        Ok(TlsListenerState {
            task,
            addr,
            probe,
            _registration: registration,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<TlsListenerMsg>,
        msg: TlsListenerMsg,
        state: &mut TlsListenerState,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.handled();
        match msg {
            TlsListenerMsg::Describe(reply) => {
                let _ = reply.send(vec![("address".into(), state.addr.to_string())]);
            }
        }
        Ok(())
    }
}

async fn accept_loop(listener: TcpListener, args: TlsListenerArgs) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, typically: back off instead of spinning.
                tracing::warn!(error = %e, "cluster accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, limit) = (args.tls.acceptor.clone(), args.handshake_timeout);
        let broker = args.broker.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let Some(server) = node_server() else { return };
                    let _ = server.send(NodeServerMessage::ConnectionOpenedExternal {
                        stream: Box::new(TlsLink::new(tls, peer.to_string())),
                        is_server: true,
                    });
                }
                Ok(Err(e)) => {
                    broker.metrics.cluster_links_refused.inc();
                    tracing::warn!(%peer, error = %e, "cluster TLS handshake refused");
                }
                Err(_) => {
                    broker.metrics.cluster_links_refused.inc();
                    tracing::warn!(%peer, "cluster TLS handshake did not finish in time");
                }
            }
        });
    }
}
