//! `$SYS` actor: publishes the node's vital statistics under `$SYS/brokers/{node}/...`.
//!
//! Supervised by: the root supervisor, restart type permanent.
//! Receives: `Tick` from its own interval timer.
//! Owns: the timer. Values are published retained, so a new subscriber sees the latest ones at
//! once; `$` topics are never matched by a leading wildcard [MQTT-4.7.2-1], so `#` subscribers
//! do not receive them.

use std::sync::Arc;
use std::time::Duration;

use beamq_protocol::session::Message;
use beamq_protocol::{ByteString, Bytes};
use beamq_supervisors::probe::{self, Counted, Describe, Probe, Registration, Summary};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

use crate::broker::Broker;

/// Messages of the `$SYS` actor.
#[derive(Debug)]
pub enum SysMsg {
    /// Publish the current values.
    Tick,
    /// A summary of the state, for `actor show`.
    Describe(RpcReplyPort<Summary>),
}

// Local only: client actors and their peers are never remotable (DESIGN §10), so the
// message needs no serialization even with ractor's `cluster` feature on.
impl ractor::Message for SysMsg {}

impl Describe for SysMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        SysMsg::Describe(reply)
    }
}

/// State: the broker and the timer (stopped on drop).
#[derive(Debug)]
pub struct SysState {
    broker: Arc<Broker>,
    timer: Option<JoinHandle<()>>,
    every: Duration,
    /// Rounds of `$SYS` messages published by this incarnation.
    rounds: u64,
    probe: Arc<Probe>,
    _registration: Registration,
}

impl Drop for SysState {
    fn drop(&mut self) {
        if let Some(t) = &self.timer {
            t.abort();
        }
    }
}

/// The `$SYS` actor.
#[derive(Debug, Clone, Copy)]
pub struct Sys;

impl Actor for Sys {
    type Msg = SysMsg;
    type State = SysState;
    type Arguments = Arc<Broker>;

    async fn pre_start(
        &self,
        myself: ActorRef<SysMsg>,
        broker: Arc<Broker>,
    ) -> Result<SysState, ActorProcessingErr> {
        let every = broker.config.sys.interval.get().unwrap_or(Duration::ZERO);
        let (probe, registration) = probe::start(&myself, "sys");
        let timer = (!every.is_zero()).then(|| {
            let _ = myself.send(SysMsg::Tick);
            myself.counted_interval(every, || SysMsg::Tick)
        });
        Ok(SysState {
            broker,
            timer,
            every,
            rounds: 0,
            probe,
            _registration: registration,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SysMsg>,
        msg: SysMsg,
        state: &mut SysState,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.handled();
        match msg {
            SysMsg::Tick => {
                state.rounds += 1;
                publish_all(&state.broker);
            }
            SysMsg::Describe(reply) => {
                let every = if state.every.is_zero() {
                    "off".to_string()
                } else {
                    format!("{:?}", state.every)
                };
                let _ = reply.send(vec![
                    ("interval".into(), every),
                    ("rounds published".into(), state.rounds.to_string()),
                ]);
            }
        }
        Ok(())
    }
}

/// The `$SYS` topics and their current values.
pub fn sys_values(broker: &Broker) -> Vec<(String, String)> {
    let m = &broker.metrics;
    let node = &broker.config.node.name;
    let p = |suffix: &str| format!("$SYS/brokers/{node}/{suffix}");
    let mut values = vec![
        (p("version"), env!("CARGO_PKG_VERSION").to_string()),
        (
            p("uptime"),
            broker.started_at.elapsed().as_secs().to_string(),
        ),
        (p("clients/connected"), m.connections.get().to_string()),
        (p("clients/total"), m.connects.get().to_string()),
        (p("sessions/count"), m.sessions.get().to_string()),
        (
            p("subscriptions/count"),
            broker.routes.subscription_count().to_string(),
        ),
        (p("retained/count"), broker.retained.len().to_string()),
        (
            p("messages/received"),
            m.messages_received.get().to_string(),
        ),
        (p("messages/sent"), m.messages_sent.get().to_string()),
        (p("messages/dropped"), m.messages_dropped().to_string()),
        (p("bytes/received"), m.bytes_received.get().to_string()),
        (p("bytes/sent"), m.bytes_sent.get().to_string()),
    ];
    if broker.config.cluster.enable {
        let c = &broker.cluster;
        values.extend([
            (p("cluster/peers"), c.peers().len().to_string()),
            (p("cluster/routes"), c.routes.len().to_string()),
            (
                p("cluster/forwarded"),
                m.cluster_forwarded.get().to_string(),
            ),
            (p("cluster/received"), m.cluster_received.get().to_string()),
            (p("cluster/dropped"), m.cluster_dropped.get().to_string()),
            (
                p("cluster/peers_timed_out"),
                m.cluster_peers_timed_out.get().to_string(),
            ),
            (
                p("cluster/links_refused"),
                m.cluster_links_refused.get().to_string(),
            ),
            (
                p("cluster/bad_messages"),
                m.cluster_bad_messages.get().to_string(),
            ),
        ]);
    }
    values
}

fn publish_all(broker: &Broker) {
    for (topic, value) in sys_values(broker) {
        let message = Message::system(ByteString::from(topic), Bytes::from(value), true);
        broker.publish(Arc::new(message));
    }
}
