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

use beamq_supervisors::probe::{self, Counted, Describe, Probe, Registration, Summary};
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
    /// A summary of the state, for `actor show`.
    Describe(RpcReplyPort<Summary>),
}

// Local only: client actors and their peers are never remotable (DESIGN §10), so the
// message needs no serialization even with ractor's `cluster` feature on.
impl ractor::Message for RetainerMsg {}

impl Describe for RetainerMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        RetainerMsg::Describe(reply)
    }
}

/// State: the broker and the sweep timer (stopped on drop).
#[derive(Debug)]
pub struct RetainerState {
    broker: Arc<Broker>,
    timer: JoinHandle<()>,
    every: Duration,
    /// Expired messages removed by this incarnation.
    swept: u64,
    probe: Arc<Probe>,
    _registration: Registration,
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
        let (probe, registration) = probe::start(&myself, "retainer");
        let timer = myself.counted_interval(every, || RetainerMsg::Sweep);
        Ok(RetainerState {
            broker,
            timer,
            every,
            swept: 0,
            probe,
            _registration: registration,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RetainerMsg>,
        msg: RetainerMsg,
        state: &mut RetainerState,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.handled();
        match msg {
            RetainerMsg::Describe(reply) => {
                let _ = reply.send(vec![
                    ("retained".into(), state.broker.retained.len().to_string()),
                    ("sweep every".into(), format!("{:?}", state.every)),
                    ("expired removed".into(), state.swept.to_string()),
                ]);
            }
            RetainerMsg::Sweep => {
                let n = state.broker.retained.sweep_expired(Instant::now());
                state.swept += n as u64;
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
