//! Listener actor: one per configured endpoint; accepts sockets and starts their tasks.
//!
//! Supervised by: `listener_sup` (one_for_one), restart type permanent.
//! Receives: nothing in normal operation (stop from its supervisor); `Inspect` reports its
//! address and counts.
//! Owns: the bound socket, via the accept task it spawns in `pre_start`. The accept loop runs in
//! its own task, never inside a handler (DESIGN §3: a handler that loops on a socket cannot be
//! stopped), and is aborted when the actor's state is dropped, however the actor ends.
//!
//! Binding happens in `pre_start`, so an address in use fails the node's start with a clear
//! error instead of a listener that silently does nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use beamq_supervisors::probe::{self, Describe, Probe, Registration, Summary};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::config::TcpListenerConfig;
use crate::connection;

/// Messages of a listener.
#[derive(Debug)]
pub enum ListenerMsg {
    /// Reports the bound address and the connections open through it.
    Inspect(RpcReplyPort<ListenerInfo>),
    /// A summary of the state, for `actor show`.
    Describe(RpcReplyPort<Summary>),
}

// Local only: client actors and their peers are never remotable (DESIGN §10), so the
// message needs no serialization even with ractor's `cluster` feature on.
impl ractor::Message for ListenerMsg {}

impl Describe for ListenerMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        ListenerMsg::Describe(reply)
    }
}

/// What a listener reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// `tcp:NAME`.
    pub name: String,
    /// Bound address.
    pub addr: SocketAddr,
    /// Sockets open through this listener.
    pub connections: usize,
}

/// Arguments of a listener.
#[derive(Debug, Clone)]
pub struct ListenerArgs {
    /// `tcp:NAME`.
    pub name: String,
    /// Its configuration.
    pub config: TcpListenerConfig,
    /// The broker context.
    pub broker: Arc<Broker>,
}

/// State: the accept task (aborted on drop).
#[derive(Debug)]
pub struct ListenerState {
    name: String,
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    accept_task: JoinHandle<()>,
    probe: Arc<Probe>,
    _registration: Registration,
}

impl Drop for ListenerState {
    fn drop(&mut self) {
        // Stop accepting whatever way the actor ends; open connections are not affected.
        self.accept_task.abort();
    }
}

/// The listener actor.
#[derive(Debug, Clone, Copy)]
pub struct Listener;

impl Actor for Listener {
    type Msg = ListenerMsg;
    type State = ListenerState;
    type Arguments = ListenerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ListenerMsg>,
        args: ListenerArgs,
    ) -> Result<ListenerState, ActorProcessingErr> {
        let listener = bind(&args.config)
            .map_err(|e| format!("cannot listen on {} ({}): {e}", args.config.bind, args.name))?;
        let addr = listener.local_addr()?;
        args.broker.set_listen_addr(&args.name, addr);
        tracing::info!(listener = %args.name, %addr, "listening");
        let open = Arc::new(AtomicUsize::new(0));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            args.broker.clone(),
            args.config.max_connections,
            open.clone(),
        ));
        let (probe, registration) = probe::start(&myself, "listener");
        Ok(ListenerState {
            name: args.name,
            addr,
            open,
            accept_task,
            probe,
            _registration: registration,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ListenerMsg>,
        msg: ListenerMsg,
        state: &mut ListenerState,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.handled();
        match msg {
            ListenerMsg::Describe(reply) => {
                let _ = reply.send(vec![
                    ("listener".into(), state.name.clone()),
                    ("address".into(), state.addr.to_string()),
                    (
                        "connections".into(),
                        state.open.load(Ordering::Relaxed).to_string(),
                    ),
                ]);
            }
            ListenerMsg::Inspect(reply) => {
                let _ = reply.send(ListenerInfo {
                    name: state.name.clone(),
                    addr: state.addr,
                    connections: state.open.load(Ordering::Relaxed),
                });
            }
        }
        Ok(())
    }
}

fn bind(config: &TcpListenerConfig) -> std::io::Result<TcpListener> {
    let socket = if config.bind.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted node must be able to bind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(config.bind)?;
    socket.listen(config.backlog)
}

/// Decrements the listener's open count when a connection task ends, however it ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    max_connections: usize,
    open: Arc<AtomicUsize>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Typically EMFILE: out of file descriptors. Back off instead of spinning;
                // the listener recovers when connections close.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        broker.metrics.sockets_accepted.inc();
        if broker.is_shutting_down() {
            continue;
        }
        if open.load(Ordering::Relaxed) >= max_connections {
            broker.metrics.connections_over_limit.inc();
            tracing::debug!(%peer, "listener at max_connections; closing socket");
            continue;
        }
        let _ = stream.set_nodelay(true);
        // TCP keep-alive finds peers that vanished without a FIN (power loss, NAT timeout)
        // even when MQTT keep alive is 0 and nothing is being written.
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(120))
                .with_interval(Duration::from_secs(15))
                .with_retries(4),
        );
        open.fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(open.clone());
        let broker = broker.clone();
        tokio::spawn(async move {
            let _guard = guard;
            connection::serve(connection::SharedTcp::new(stream), peer, broker).await;
        });
    }
}
