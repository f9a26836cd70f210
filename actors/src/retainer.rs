//! Retainer actor: upkeep of the retained-message store.
//!
//! Supervised by: `router_sup` (one_for_one), restart type permanent.
//! Receives: `Sweep` from its own interval timer (removes expired retained messages),
//! `Inspect` (count), `Clean` (removes every retained message, for the admin shell).
//! Owns: the sweep timer. The store itself is in the broker context: publishers write it
//! directly while they handle a PUBLISH, so that a retained message is in place before the
//! PUBACK; a restarted retainer therefore finds every message where it was.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

use crate::broker::Broker;

/// Messages of the retainer.
#[derive(Debug)]
pub enum RetainerMsg {
    /// Remove expired retained messages (sent by the actor's own timer).
    Sweep,
    /// Number of retained messages.
    Count(RpcReplyPort<usize>),
    /// Remove every retained message; replies with how many were removed.
    Clean(RpcReplyPort<usize>),
}

// Local only: client actors and their peers are never remotable (DESIGN §10), so the
// message needs no serialization even with ractor's `cluster` feature on.
impl ractor::Message for RetainerMsg {}

/// State: the broker and the sweep timer (stopped on drop).
#[derive(Debug)]
pub struct RetainerState {
    broker: Arc<Broker>,
    timer: JoinHandle<()>,
}

impl Drop for RetainerState {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// The retainer actor.
#[derive(Debug, Clone, Copy)]
pub struct Retainer;

impl Actor for Retainer {
    type Msg = RetainerMsg;
    type State = RetainerState;
    type Arguments = Arc<Broker>;

    async fn pre_start(
        &self,
        myself: ActorRef<RetainerMsg>,
        broker: Arc<Broker>,
    ) -> Result<RetainerState, ActorProcessingErr> {
        let every = broker
            .config
            .retainer
            .expiry_check_interval
            .get()
            .unwrap_or(Duration::from_secs(10));
        let timer = myself.send_interval(every, || RetainerMsg::Sweep);
        Ok(RetainerState { broker, timer })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RetainerMsg>,
        msg: RetainerMsg,
        state: &mut RetainerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RetainerMsg::Sweep => {
                let n = state.broker.retained.sweep_expired(Instant::now());
                if n > 0 {
                    tracing::debug!(removed = n, "expired retained messages removed");
                }
            }
            RetainerMsg::Count(reply) => {
                let _ = reply.send(state.broker.retained.len());
            }
            RetainerMsg::Clean(reply) => {
                let _ = reply.send(state.broker.retained.clear());
            }
        }
        Ok(())
    }
}
