//! Test actors and helpers shared by the integration tests.
//!
//! `Worker` records `start:<id>` when its `pre_start` succeeds, `startfail:<id>` when its plan makes
//! it fail there, and `stop:<id>` in `post_stop`, into one shared log, so tests can assert the order
//! of starts and stops across a whole tree. Its `Plan` is shared by all incarnations of one child
//! id, so a test can make *restarts* fail.
//!
//! `Probe` is a parent for supervisors under test: it records the supervision events it receives
//! and never stops because of them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use beamq_supervisors::{ChildSpec, Restart, SupervisorMsg, which_child};
use parking_lot::Mutex;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, Message, RpcReplyPort,
    SupervisionEvent,
};

pub const CALL: Duration = Duration::from_secs(5);
pub const DEADLINE: Duration = Duration::from_secs(10);

pub type Log = Arc<Mutex<Vec<String>>>;

/// A fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    Panic,
    Err,
}

/// What the incarnations of one child id do.
#[derive(Debug)]
pub struct Plan {
    /// Fault of the next `pre_start_faults` starts.
    pub pre_start: Fault,
    pub pre_start_faults: u32,
    /// Fault of every `post_stop`.
    pub post_stop: Fault,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            pre_start: Fault::None,
            pre_start_faults: 0,
            post_stop: Fault::None,
        }
    }
}

#[derive(Clone)]
pub struct Worker {
    pub id: String,
    pub log: Log,
    pub plan: Arc<Mutex<Plan>>,
}

pub enum WorkerMsg {
    /// Panic in `handle`.
    Panic,
    /// Return `Err` from `handle`.
    Fail,
    /// Stop normally (reason `None`).
    Stop,
    /// Stop with a reason.
    StopWith(String),
    /// Answer.
    Ping(RpcReplyPort<()>),
    /// Log `busy:<id>` and stay busy in `handle` (stop does not interrupt it; kill does).
    Busy(Duration),
}

impl Message for WorkerMsg {}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<WorkerMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        let fault = {
            let mut plan = self.plan.lock();
            if plan.pre_start_faults > 0 && plan.pre_start != Fault::None {
                plan.pre_start_faults -= 1;
                plan.pre_start
            } else {
                Fault::None
            }
        };
        match fault {
            Fault::None => {
                self.log.lock().push(format!("start:{}", self.id));
                Ok(())
            }
            Fault::Panic => {
                self.log.lock().push(format!("startfail:{}", self.id));
                panic!("pre_start panic in {}", self.id)
            }
            Fault::Err => {
                self.log.lock().push(format!("startfail:{}", self.id));
                Err(format!("pre_start error in {}", self.id).into())
            }
        }
    }

    async fn post_stop(
        &self,
        _: ActorRef<WorkerMsg>,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        self.log.lock().push(format!("stop:{}", self.id));
        let fault = self.plan.lock().post_stop;
        match fault {
            Fault::None => Ok(()),
            Fault::Panic => panic!("post_stop panic in {}", self.id),
            Fault::Err => Err(format!("post_stop error in {}", self.id).into()),
        }
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Panic => panic!("handle panic in {}", self.id),
            WorkerMsg::Fail => return Err(format!("handle error in {}", self.id).into()),
            WorkerMsg::Stop => myself.stop(None),
            WorkerMsg::StopWith(reason) => myself.stop(Some(reason)),
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            WorkerMsg::Busy(d) => {
                self.log.lock().push(format!("busy:{}", self.id));
                tokio::time::sleep(d).await
            }
        }
        Ok(())
    }
}

/// One log and one plan per child id.
#[derive(Default)]
pub struct Harness {
    pub log: Log,
    plans: Mutex<HashMap<String, Arc<Mutex<Plan>>>>,
}

impl Harness {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn plan(&self, id: &str) -> Arc<Mutex<Plan>> {
        self.plans.lock().entry(id.to_string()).or_default().clone()
    }

    pub fn worker(&self, id: &str) -> Worker {
        Worker {
            id: id.to_string(),
            log: self.log.clone(),
            plan: self.plan(id),
        }
    }

    /// A child spec running a `Worker` with this id.
    pub fn child(&self, id: &str, restart: Restart) -> ChildSpec {
        ChildSpec::actor(id, restart, self.worker(id), ())
    }

    pub fn events(&self) -> Vec<String> {
        self.log.lock().clone()
    }

    /// Events logged after the first `n`.
    pub fn events_since(&self, n: usize) -> Vec<String> {
        self.log.lock()[n..].to_vec()
    }

    pub fn len(&self) -> usize {
        self.log.lock().len()
    }

    pub fn clear(&self) {
        self.log.lock().clear();
    }
}

/// Poll `cond` every few milliseconds until it holds; panic after `DEADLINE`.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Same, with an async condition.
pub async fn wait_until_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The running worker `id` of `sup`.
pub async fn worker_of(sup: &ActorRef<SupervisorMsg>, id: &str) -> ActorRef<WorkerMsg> {
    which_child(sup, id, CALL)
        .await
        .expect("supervisor answers")
        .unwrap_or_else(|| panic!("child {id} is running"))
        .into()
}

/// Records the supervision events of its children; never stops because of them.
pub struct Probe;

pub type ProbeLog = Arc<Mutex<Vec<(ActorId, String)>>>;

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ProbeLog;
    type Arguments = ProbeLog;

    async fn pre_start(
        &self,
        _: ActorRef<ProbeMsg>,
        log: ProbeLog,
    ) -> Result<ProbeLog, ActorProcessingErr> {
        Ok(log)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<ProbeMsg>,
        evt: SupervisionEvent,
        log: &mut ProbeLog,
    ) -> Result<(), ActorProcessingErr> {
        let entry = match evt {
            SupervisionEvent::ActorStarted(who) => (who.get_id(), "started".to_string()),
            SupervisionEvent::ActorTerminated(who, _, reason) => (
                who.get_id(),
                format!("terminated:{}", reason.unwrap_or_default()),
            ),
            SupervisionEvent::ActorFailed(who, err) => (who.get_id(), format!("failed:{err}")),
            _ => return Ok(()),
        };
        log.lock().push(entry);
        Ok(())
    }
}

pub enum ProbeMsg {}
impl Message for ProbeMsg {}

pub async fn probe() -> (ActorCell, ProbeLog) {
    let log = ProbeLog::default();
    let (probe, _) = Actor::spawn(None, Probe, log.clone())
        .await
        .expect("probe starts");
    (probe.get_cell(), log)
}
