//! Admin actor: serves the node's admin socket.
//!
//! Supervised by: the root supervisor (`beamq`), restart type permanent; started last, so the
//! node is whole before anyone can inspect it, and stopped first.
//! Receives: nothing (stop from its supervisor).
//! Owns: the unix socket (removed when the state drops) and its accept task; each connection
//! is a task of its own with a deadline, so a client that connects and says nothing holds
//! nothing for long, and a shell that disconnects leaves nothing running.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use beamq_actors::Broker;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::{MAX_REQUEST, Request, Response, commands};

/// Time a connection has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// No messages.
#[derive(Debug)]
pub enum AdminMsg {}

// Local only.
impl ractor::Message for AdminMsg {}

/// State: the socket path and the accept task (none when another node holds the socket).
#[derive(Debug)]
pub struct AdminState {
    serving: Option<(PathBuf, JoinHandle<()>)>,
}

impl Drop for AdminState {
    fn drop(&mut self) {
        if let Some((path, task)) = &self.serving {
            task.abort();
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The admin actor.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl Actor for Admin {
    type Msg = AdminMsg;
    type State = AdminState;
    type Arguments = Arc<Broker>;

    async fn pre_start(
        &self,
        _myself: ActorRef<AdminMsg>,
        broker: Arc<Broker>,
    ) -> Result<AdminState, ActorProcessingErr> {
        let path = super::socket_path(&broker.config.node.name);
        // A socket left by a node that was killed: if nobody answers on it, it is stale.
        if path.exists() {
            if UnixStream::connect(&path).await.is_ok() {
                // Two standalone brokers on one host keep the default name; the second still
                // runs, without an admin endpoint. (Cluster nodes have names of their own.)
                tracing::warn!(
                    socket = %path.display(),
                    node = %broker.config.node.name,
                    "another node with this name serves the admin socket; admin endpoint disabled"
                );
                return Ok(AdminState { serving: None });
            }
            let _ = std::fs::remove_file(&path);
        }
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                // Another node of this name got there first (or the directory is not
                // writable): the node runs on, without an admin endpoint.
                tracing::warn!(socket = %path.display(), error = %e, "cannot create the admin socket; admin endpoint disabled");
                return Ok(AdminState { serving: None });
            }
        };
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        tracing::info!(socket = %path.display(), "admin endpoint ready");
        let task = tokio::spawn(accept_loop(listener, broker));
        Ok(AdminState {
            serving: Some((path, task)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<AdminMsg>,
        msg: AdminMsg,
        _state: &mut AdminState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {}
    }
}

async fn accept_loop(listener: UnixListener, broker: Arc<Broker>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, broker.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: UnixStream, broker: Arc<Broker>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Response::Error("no request in time".into()),
        Ok(Err(e)) => Response::Error(format!("cannot read the request: {e}")),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::Error(format!("malformed request: {e}")),
            Ok(req)
                if !same(
                    req.cookie.as_bytes(),
                    broker.config.cluster.cookie.as_bytes(),
                ) =>
            {
                tracing::warn!("admin request with a wrong cookie refused");
                Response::Error("wrong cookie".into())
            }
            Ok(req) => {
                tracing::info!(command = %req.args.join(" "), "admin command");
                match commands::run(&broker, &req.args).await {
                    Ok(v) => Response::Ok(v),
                    Err(e) => Response::Error(e),
                }
            }
        },
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"error\":\"?\"}".to_vec());
    out.push(b'\n');
    let _ = write.write_all(&out).await;
    let _ = write.shutdown().await;
}

/// Compares secrets in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
