//! Probes count exactly what is in a mailbox: messages sent through the counted senders and
//! not yet taken out by the handler, including calls and timer ticks.

use std::sync::Arc;
use std::time::Duration;

use beamq_supervisors::probe::{self, Counted, Describe, Probe, Registration, Summary};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Semaphore;

enum Msg {
    /// Waits for a permit before returning (holds the mailbox still).
    Work,
    Describe(RpcReplyPort<Summary>),
}

impl ractor::Message for Msg {}

impl Describe for Msg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        Msg::Describe(reply)
    }
}

struct Worker;

struct State {
    gate: Arc<Semaphore>,
    done: u64,
    probe: Arc<Probe>,
    _registration: Registration,
}

impl Actor for Worker {
    type Msg = Msg;
    type State = State;
    type Arguments = Arc<Semaphore>;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        gate: Arc<Semaphore>,
    ) -> Result<State, ActorProcessingErr> {
        let (probe, registration) = probe::start(&myself, "worker");
        Ok(State {
            gate,
            done: 0,
            probe,
            _registration: registration,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.handled();
        match msg {
            Msg::Work => {
                state.gate.acquire().await?.forget();
                state.done += 1;
            }
            Msg::Describe(reply) => {
                let _ = reply.send(vec![("done".into(), state.done.to_string())]);
            }
        }
        Ok(())
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out: {what}");
}

#[tokio::test]
async fn mailbox_length_is_exact_while_the_handler_is_held() {
    let gate = Arc::new(Semaphore::new(0));
    let (actor, handle) = Actor::spawn(None, Worker, gate.clone())
        .await
        .expect("spawned");
    let probe = probe::lookup(actor.get_id()).expect("registered");
    for _ in 0..5 {
        actor.send(Msg::Work).expect("sent");
    }
    // The first message is being handled (taken out), four wait.
    eventually("first message taken", || {
        probe.probe().snapshot().handled == 1
    })
    .await;
    let s = probe.probe().snapshot();
    assert_eq!((s.mailbox, s.handled, s.kind), (4, 1, "worker"));

    // Timer ticks count when sent, not when scheduled.
    let timer = actor.counted_after(Duration::from_millis(20), || Msg::Work);
    assert_eq!(probe.probe().snapshot().mailbox, 4);
    timer.await.expect("timer ran");
    assert_eq!(probe.probe().snapshot().mailbox, 5);

    gate.add_permits(6);
    eventually("mailbox drained", || probe.probe().snapshot().mailbox == 0).await;
    // A call is counted too, and the actor describes itself.
    let summary = match actor.ask(Msg::Describe, Duration::from_secs(1)).await {
        Ok(CallResult::Success(s)) => s,
        _ => panic!("no answer"),
    };
    assert_eq!(summary, vec![("done".to_string(), "6".to_string())]);
    assert_eq!(probe.probe().snapshot().handled, 7);
    let described = probe::describe(actor.get_id(), Duration::from_secs(1))
        .await
        .expect("described through the registry");
    assert_eq!(described[0].0, "done");

    // Stopping unregisters the probe (the registration lives in the state).
    actor.stop(None);
    handle.await.expect("stopped");
    assert!(probe::lookup(actor.get_id()).is_none());
    // Sends to a stopped actor fail and count nothing.
    assert!(actor.send(Msg::Work).is_err());
}
