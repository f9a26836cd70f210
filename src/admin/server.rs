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
use beamq_supervisors::probe::{self, Describe, Probe, Registration, Summary};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::{MAX_REQUEST, Request, Response, commands};

/// Time a connection has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The actor owns the accept task; its only message is the inspection every actor answers.
#[derive(Debug)]
pub enum AdminMsg {
    /// A summary of the state, for `actor show`.
    Describe(RpcReplyPort<Summary>),
}

// Local only.
impl ractor::Message for AdminMsg {}

impl Describe for AdminMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        AdminMsg::Describe(reply)
    }
}

/// State: the socket path and the accept task (none when another node holds the socket).
#[derive(Debug)]
pub struct AdminState {
    serving: Option<(PathBuf, JoinHandle<()>)>,
    probe: Arc<Probe>,
    _registration: Registration,
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
        myself: ActorRef<AdminMsg>,
        broker: Arc<Broker>,
    ) -> Result<AdminState, ActorProcessingErr> {
        let (probe, registration) = probe::start(&myself, "admin");
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
                return Ok(AdminState {
                    serving: None,
                    probe,
                    _registration: registration,
                });
            }
            let _ = std::fs::remove_file(&path);
        }
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                // Another node of this name got there first (or the directory is not
                // writable): the node runs on, without an admin endpoint.
                tracing::warn!(socket = %path.display(), error = %e, "cannot create the admin socket; admin endpoint disabled");
                return Ok(AdminState {
                    serving: None,
                    probe,
                    _registration: registration,
                });
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
            probe,
            _registration: registration,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<AdminMsg>,
        msg: AdminMsg,
        state: &mut AdminState,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.handled();
        match msg {
            AdminMsg::Describe(reply) => {
                let socket = state.serving.as_ref().map_or_else(
                    || "none (disabled)".to_string(),
                    |(p, _)| p.display().to_string(),
                );
                let _ = reply.send(vec![("socket".into(), socket)]);
            }
        }
        Ok(())
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
                if req.args.first().map(String::as_str) == Some("trace") {
                    let response = match super::trace::parse(&req.args[1..]) {
                        Ok((filter, duration)) => {
                            let reader = reader.into_inner().into_inner();
                            super::trace::stream(&broker, filter, duration, reader, &mut write)
                                .await
                        }
                        Err(e) => Response::Error(e),
                    };
                    let _ = send(&mut write, &response).await;
                    let _ = write.shutdown().await;
                    return;
                }
                match commands::run(&broker, &req.args).await {
                    Ok(v) => Response::Ok(v),
                    Err(e) => Response::Error(e),
                }
            }
        },
    };
    let _ = send(&mut write, &response).await;
    let _ = write.shutdown().await;
}

/// Writes one answer line.
pub(crate) async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(response).unwrap_or_else(|_| b"{\"error\":\"?\"}".to_vec());
    out.push(b'\n');
    write.write_all(&out).await
}

/// Compares secrets in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
