//! `Supervisor`: an OTP supervisor with a static (but amendable) list of children.
//!
//! - Supervised by: whoever passes `parent` to [`start_supervisor`] — usually another `Supervisor`
//!   through [`ChildSpec::supervisor`]; nobody for the root of a tree.
//! - Restart type: whatever its parent's child spec says (`ChildSpec::supervisor` makes it
//!   permanent).
//! - Receives: [`SupervisorMsg`] from operators and code that inspects or amends the tree;
//!   supervision events from its children (linked by their start functions).
//! - Owns: its children. It starts them in order in `pre_start`, restarts them according to its
//!   [`Strategy`] and [`Intensity`], and stops them in reverse order (graceful stop, then kill after
//!   each child's shutdown grace) when it stops, when it gives up, and when a start fails.
//!
//! Invariants:
//! - `children` is in start order; `Child::cell` is `Some` exactly while that incarnation is running
//!   as far as the supervisor knows. A supervision event is acted upon only if it names the current
//!   cell of a child: events from incarnations the supervisor itself stopped (group restarts,
//!   `TerminateChild`, `RestartChild`) arrive after the fact and are ignored, which is why children
//!   need no names.
//! - The supervisor never fails except on purpose (intensity exceeded), and then only after its
//!   children are stopped: ractor would otherwise kill them, unordered and without `post_stop`,
//!   when the supervisor's task ends.
//! - Every restart and every child start runs inside one handler, so a report never shows a
//!   half-restarted group.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, Message, RpcReplyPort,
    SupervisionEvent,
};
use tokio::task::JoinHandle;

use crate::error::SupervisorError;
use crate::intensity::RestartWindow;
use crate::probe::{self, Counted, Describe, Probe, Registration, Summary};
use crate::shutdown::stop_or_kill;
use crate::spec::{
    ChildKind, ChildSpec, Intensity, Restart, Strategy, SupervisorSpec, is_normal_exit,
};
use crate::stats::{SupervisorStats, SupervisorStatsSnapshot};

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// The supervisor's API. Use the functions of this module ([`inspect`], [`start_child`], ...)
/// rather than building calls by hand: they all take a timeout.
///
/// Every request is handled between two supervision events, never concurrently with a restart.
pub enum SupervisorMsg {
    /// Report strategy, intensity, restart counts and every child.
    Inspect(RpcReplyPort<SupervisorReport>),
    /// Append a child and start it at once. Fails with `DuplicateChild` if the id is taken or
    /// `ChildStartFailed` (and the child is not added) if it fails to start; a failed dynamic start
    /// does not count towards the intensity. Replies with the child's cell.
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Stop the child with this id (graceful, then kill after its shutdown grace) and remove it from
    /// the child list: it is not restarted. `NoSuchChild` if absent.
    TerminateChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// Stop the child with this id if it is running, then start it again (only that child, whatever
    /// the strategy; not counted towards the intensity; counted in the child's `restarts`). If the
    /// start fails the child stays in the list, not running, and `ChildStartFailed` is returned.
    RestartChild(String, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// The current cell of the child with this id; `None` if absent or not running.
    GetChild(String, RpcReplyPort<Option<ActorCell>>),
    /// A summary of the state, for `actor show`.
    Describe(RpcReplyPort<Summary>),
}

// Required because ractor's `cluster` feature is on (see Cargo.toml); never sent to another node.
impl Message for SupervisorMsg {}

impl Describe for SupervisorMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        SupervisorMsg::Describe(reply)
    }
}

/// Whether a child is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildStatus {
    /// Started and not known to have exited.
    Running,
    /// Not running: a transient child that exited normally, or a child whose `RestartChild` start
    /// failed. It is started again by a group restart or `RestartChild`.
    Stopped,
}

/// One child in a [`SupervisorReport`].
#[derive(Clone, Debug)]
pub struct ChildReport {
    /// The child spec's id.
    pub id: String,
    /// Its restart type.
    pub restart: Restart,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Its shutdown grace.
    pub shutdown: Duration,
    /// The running incarnation, `None` while not running.
    pub cell: Option<ActorCell>,
    /// `cell`'s id.
    pub actor_id: Option<ActorId>,
    /// Times this child was started again after its first start (by restarts of any strategy and by
    /// `RestartChild`), in this supervisor incarnation.
    pub restarts: u64,
    /// Running or not.
    pub status: ChildStatus,
}

/// What [`SupervisorMsg::Inspect`] returns.
#[derive(Clone, Debug)]
pub struct SupervisorReport {
    /// The supervisor's registered name, if any.
    pub name: Option<String>,
    /// The supervisor actor's id.
    pub actor_id: ActorId,
    /// Its strategy.
    pub strategy: Strategy,
    /// Its intensity.
    pub intensity: Intensity,
    /// Restarts within the current intensity period.
    pub restarts_in_window: usize,
    /// Restarts counted towards the intensity in this incarnation.
    pub total_restarts: u64,
    /// The shared counters (across incarnations).
    pub stats: SupervisorStatsSnapshot,
    /// Children in start order.
    pub children: Vec<ChildReport>,
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// One child slot.
struct Child {
    spec: ChildSpec,
    /// The running incarnation; see the module invariants.
    cell: Option<ActorCell>,
    restarts: u64,
}

/// The supervisor's state (opaque outside this module).
pub struct SupervisorState {
    name: Option<String>,
    /// The name, or the actor id, for logs.
    label: String,
    strategy: Strategy,
    intensity: Intensity,
    window: RestartWindow,
    total_restarts: u64,
    children: Vec<Child>,
    stats: Arc<SupervisorStats>,
    probe: Arc<Probe>,
    _registration: Registration,
}

// ---------------------------------------------------------------------------------------------
// Actor
// ---------------------------------------------------------------------------------------------

/// The supervisor actor. Start it with [`start_supervisor`] (or `Actor::spawn{,_linked}` with a
/// [`SupervisorSpec`] as arguments).
#[derive(Clone, Copy, Debug, Default)]
pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        spec: SupervisorSpec,
    ) -> Result<Self::State, ActorProcessingErr> {
        for (i, child) in spec.children.iter().enumerate() {
            if spec.children[..i].iter().any(|c| c.id == child.id) {
                return Err(SupervisorError::DuplicateChild(child.id.clone()).into());
            }
        }
        let label = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("supervisor {}", myself.get_id()));
        let (probe, registration) = probe::start(&myself, "supervisor");
        let mut state = SupervisorState {
            name: spec.name,
            label,
            strategy: spec.strategy,
            intensity: spec.intensity,
            window: RestartWindow::new(spec.intensity),
            total_restarts: 0,
            children: Vec::with_capacity(spec.children.len()),
            stats: spec.stats,
            probe,
            _registration: registration,
        };
        // Start in order. OTP: if one fails, the ones already started are stopped in reverse
        // order and the supervisor itself fails to start.
        for child in spec.children {
            match launch_child(&myself.get_cell(), &child).await {
                Ok(cell) => state.children.push(Child {
                    spec: child,
                    cell: Some(cell),
                    restarts: 0,
                }),
                Err(err) => {
                    tracing::error!(supervisor = %state.label, child = %err_child(&err), error = %err, "child failed to start; supervisor start aborted");
                    state.stop_children_from(0, false).await;
                    return Err(err.into());
                }
            }
        }
        state.stats.record_start();
        tracing::debug!(supervisor = %state.label, children = state.children.len(), "supervisor started");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_children_from(0, false).await;
        tracing::debug!(supervisor = %state.label, "supervisor stopped");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.handled();
        match message {
            SupervisorMsg::Inspect(reply) => {
                let _ = reply.send(state.report(myself.get_id()));
            }
            SupervisorMsg::Describe(reply) => {
                let _ = reply.send(state.summary());
            }
            SupervisorMsg::StartChild(spec, reply) => {
                let result = if state.position(&spec.id).is_some() {
                    Err(SupervisorError::DuplicateChild(spec.id.clone()))
                } else {
                    match launch_child(&myself.get_cell(), &spec).await {
                        Ok(cell) => {
                            tracing::info!(supervisor = %state.label, child = %spec.id, "child added");
                            state.children.push(Child {
                                spec,
                                cell: Some(cell.clone()),
                                restarts: 0,
                            });
                            Ok(cell)
                        }
                        Err(err) => Err(err),
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let result = match state.position(&id) {
                    None => Err(SupervisorError::NoSuchChild(id)),
                    Some(idx) => {
                        let mut child = state.children.remove(idx);
                        if let Some(cell) = child.cell.take() {
                            stop_or_kill(&cell, child.spec.shutdown, &child.spec.id).await;
                        }
                        tracing::info!(supervisor = %state.label, child = %id, "child terminated and removed");
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let result = match state.position(&id) {
                    None => Err(SupervisorError::NoSuchChild(id)),
                    Some(idx) => {
                        if let Some(cell) = state.children[idx].cell.take() {
                            let spec = &state.children[idx].spec;
                            stop_or_kill(&cell, spec.shutdown, &spec.id).await;
                        }
                        match launch_child(&myself.get_cell(), &state.children[idx].spec).await {
                            Ok(cell) => {
                                let child = &mut state.children[idx];
                                child.cell = Some(cell.clone());
                                child.restarts += 1;
                                tracing::info!(supervisor = %state.label, child = %id, "child restarted on request");
                                Ok(cell)
                            }
                            Err(err) => Err(err),
                        }
                    }
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::GetChild(id, reply) => {
                let cell = state
                    .position(&id)
                    .and_then(|idx| state.children[idx].cell.clone());
                let _ = reply.send(cell);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.event_handled();
        let (who, normal, reason) = match event {
            SupervisionEvent::ActorStarted(_) => return Ok(()),
            SupervisionEvent::ActorTerminated(who, _, reason) => {
                let normal = is_normal_exit(reason.as_deref());
                let reason = reason.unwrap_or_else(|| "normal".to_string());
                (who, normal, reason)
            }
            SupervisionEvent::ActorFailed(who, err) => (who, false, err.to_string()),
            SupervisionEvent::ProcessGroupChanged(_) | SupervisionEvent::PidLifecycleEvent(_) => {
                return Ok(());
            }
        };
        state
            .on_child_exit(&myself, who.get_id(), normal, reason)
            .await
            .map_err(Into::into)
    }
}

// ---------------------------------------------------------------------------------------------
// Restart logic
// ---------------------------------------------------------------------------------------------

impl SupervisorState {
    fn summary(&self) -> Summary {
        let running = self.children.iter().filter(|c| c.cell.is_some()).count();
        vec![
            ("strategy".into(), format!("{:?}", self.strategy)),
            (
                "intensity".into(),
                format!(
                    "{} in {:?}",
                    self.intensity.max_restarts, self.intensity.period
                ),
            ),
            (
                "restarts in window".into(),
                self.window.in_window(Instant::now()).to_string(),
            ),
            ("restarts".into(), self.total_restarts.to_string()),
            (
                "children".into(),
                format!("{} ({running} running)", self.children.len()),
            ),
        ]
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    fn position_of_cell(&self, actor: ActorId) -> Option<usize> {
        self.children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|cell| cell.get_id() == actor))
    }

    fn report(&self, actor_id: ActorId) -> SupervisorReport {
        SupervisorReport {
            name: self.name.clone(),
            actor_id,
            strategy: self.strategy,
            intensity: self.intensity,
            restarts_in_window: self.window.in_window(Instant::now()),
            total_restarts: self.total_restarts,
            stats: self.stats.snapshot(),
            children: self
                .children
                .iter()
                .map(|c| ChildReport {
                    id: c.spec.id.clone(),
                    restart: c.spec.restart,
                    kind: c.spec.kind,
                    shutdown: c.spec.shutdown,
                    actor_id: c.cell.as_ref().map(ActorCell::get_id),
                    cell: c.cell.clone(),
                    restarts: c.restarts,
                    status: if c.cell.is_some() {
                        ChildStatus::Running
                    } else {
                        ChildStatus::Stopped
                    },
                })
                .collect(),
        }
    }

    /// A child exited on its own (not stopped by us). Returns `Err` to make the supervisor fail
    /// (escalation) after its children have been stopped.
    async fn on_child_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        actor: ActorId,
        normal: bool,
        reason: String,
    ) -> Result<(), SupervisorError> {
        let Some(idx) = self.position_of_cell(actor) else {
            // An incarnation we stopped ourselves, or an actor someone else linked to us.
            tracing::trace!(supervisor = %self.label, actor = %actor, "exit of a non-current child ignored");
            return Ok(());
        };
        self.stats.record_child_exit(normal);
        self.children[idx].cell = None;
        let id = self.children[idx].spec.id.clone();
        let restart = self.children[idx].spec.restart;
        if normal {
            tracing::info!(supervisor = %self.label, child = %id, reason = %reason, "child exited normally");
        } else {
            tracing::warn!(supervisor = %self.label, child = %id, reason = %reason, "child failed");
        }
        if !restart.should_restart(normal) {
            if restart == Restart::Temporary {
                self.children.remove(idx);
            }
            return Ok(());
        }
        self.restart(myself, &id).await
    }

    /// Restart after child `id` exited, per the strategy, retrying failed starts until the
    /// intensity is exceeded.
    async fn restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
    ) -> Result<(), SupervisorError> {
        let mut last_error: Option<String> = None;
        loop {
            if !self.window.record(Instant::now()) {
                return Err(self.give_up(last_error).await);
            }
            self.total_restarts += 1;
            self.stats.record_restart();
            // Invariant: only this handler removes children, and never the one being restarted.
            let Some(idx) = self.position(id) else {
                return Ok(());
            };
            let first = match self.strategy {
                Strategy::OneForOne => idx,
                Strategy::OneForAll => {
                    self.stop_children_from(0, true).await;
                    0
                }
                Strategy::RestForOne => {
                    self.stop_children_from(idx + 1, true).await;
                    idx
                }
            };
            // one_for_all restarts the whole (possibly shortened) list; rest_for_one only removed
            // temporaries after `idx`, so `idx` is still the position of `id`.
            let last = match self.strategy {
                Strategy::OneForOne => idx + 1,
                Strategy::OneForAll | Strategy::RestForOne => self.children.len(),
            };
            tracing::info!(supervisor = %self.label, child = %id, strategy = ?self.strategy, "restarting");
            match self.start_range(myself, first, last).await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    self.stats.record_start_failure();
                    tracing::warn!(supervisor = %self.label, error = %err, "restart failed; retrying");
                    last_error = Some(err.to_string());
                }
            }
        }
    }

    /// Start the non-running children in `first..last`, in order. If one fails, the ones started
    /// by this call are stopped again in reverse order and the error is returned.
    async fn start_range(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        first: usize,
        last: usize,
    ) -> Result<(), SupervisorError> {
        let mut started = Vec::new();
        for i in first..last {
            if self.children[i].cell.is_some() {
                continue;
            }
            match launch_child(&myself.get_cell(), &self.children[i].spec).await {
                Ok(cell) => {
                    self.children[i].cell = Some(cell);
                    self.children[i].restarts += 1;
                    started.push(i);
                }
                Err(err) => {
                    for &j in started.iter().rev() {
                        if let Some(cell) = self.children[j].cell.take() {
                            let spec = &self.children[j].spec;
                            stop_or_kill(&cell, spec.shutdown, &spec.id).await;
                        }
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Stop the running children at positions `first..`, last first. With `drop_temporary`, the
    /// temporary ones among them are removed (OTP: a temporary child stopped by a group restart is
    /// never restarted).
    async fn stop_children_from(&mut self, first: usize, drop_temporary: bool) {
        for i in (first..self.children.len()).rev() {
            if let Some(cell) = self.children[i].cell.take() {
                let spec = &self.children[i].spec;
                stop_or_kill(&cell, spec.shutdown, &spec.id).await;
            }
            if drop_temporary && self.children[i].spec.restart == Restart::Temporary {
                self.children.remove(i);
            }
        }
    }

    /// Intensity exceeded: stop everything in reverse order and return the error the supervisor
    /// fails with.
    async fn give_up(&mut self, last_error: Option<String>) -> SupervisorError {
        self.stats.record_escalation();
        tracing::error!(
            supervisor = %self.label,
            max_restarts = self.intensity.max_restarts,
            period = ?self.intensity.period,
            "restart intensity exceeded; stopping children and escalating"
        );
        self.stop_children_from(0, false).await;
        SupervisorError::IntensityExceeded {
            max_restarts: self.intensity.max_restarts,
            period: self.intensity.period,
            last_error,
        }
    }
}

/// Run a child's start function and make sure the child is linked to `sup`.
async fn launch_child(sup: &ActorCell, spec: &ChildSpec) -> Result<ActorCell, SupervisorError> {
    let failed = |reason: String| SupervisorError::ChildStartFailed {
        id: spec.id.clone(),
        reason,
    };
    let cell = spec
        .run_start(sup.clone())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let linked_to = |cell: &ActorCell| {
        cell.try_get_supervisor()
            .is_some_and(|s| s.get_id() == sup.get_id())
    };
    if !linked_to(&cell) {
        tracing::warn!(child = %spec.id, "start function did not link the child to its supervisor; linking");
        cell.link(sup.clone());
        if !linked_to(&cell) {
            cell.stop(Some(crate::spec::SHUTDOWN_REASON.to_string()));
            return Err(failed("child could not be linked to its supervisor".into()));
        }
    }
    Ok(cell)
}

fn err_child(err: &SupervisorError) -> &str {
    match err {
        SupervisorError::ChildStartFailed { id, .. } => id,
        _ => "?",
    }
}

// ---------------------------------------------------------------------------------------------
// Client functions
// ---------------------------------------------------------------------------------------------

/// Start a supervisor from `spec`, linked to `parent` if given. Returns once every child has
/// started, in order. If a child fails to start, the ones before it are stopped in reverse order
/// and the result is `Err(SupervisorError::Spawn(SpawnErr::StartupFailed(..)))` wrapping
/// `ChildStartFailed` (or `DuplicateChild`).
pub async fn start_supervisor(
    spec: SupervisorSpec,
    parent: Option<ActorCell>,
) -> Result<(ActorRef<SupervisorMsg>, JoinHandle<()>), SupervisorError> {
    let name = spec.name.clone();
    match parent {
        Some(parent) => Actor::spawn_linked(name, Supervisor, spec, parent).await,
        None => Actor::spawn(name, Supervisor, spec).await,
    }
    .map_err(SupervisorError::Spawn)
}

/// Send a request to an actor and wait at most `timeout` for the answer.
pub(crate) async fn call<M, T>(
    actor: &ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<T>) -> M + Send,
    timeout: Duration,
) -> Result<T, SupervisorError>
where
    M: Message,
    T: Send + 'static,
{
    match actor.ask(build, timeout).await {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout) => Err(SupervisorError::CallTimeout(timeout)),
        Ok(CallResult::SenderError) | Err(_) => Err(SupervisorError::NotRunning),
    }
}

/// [`SupervisorMsg::Inspect`] with a timeout.
pub async fn inspect(
    sup: &ActorRef<SupervisorMsg>,
    timeout: Duration,
) -> Result<SupervisorReport, SupervisorError> {
    call(sup, SupervisorMsg::Inspect, timeout).await
}

/// [`SupervisorMsg::StartChild`] with a timeout (which must cover the child's start).
pub async fn start_child(
    sup: &ActorRef<SupervisorMsg>,
    spec: ChildSpec,
    timeout: Duration,
) -> Result<ActorCell, SupervisorError> {
    call(sup, |r| SupervisorMsg::StartChild(spec, r), timeout).await?
}

/// [`SupervisorMsg::TerminateChild`] with a timeout (which must cover the child's shutdown grace).
pub async fn terminate_child(
    sup: &ActorRef<SupervisorMsg>,
    id: impl Into<String>,
    timeout: Duration,
) -> Result<(), SupervisorError> {
    let id = id.into();
    call(sup, |r| SupervisorMsg::TerminateChild(id, r), timeout).await?
}

/// [`SupervisorMsg::RestartChild`] with a timeout (covering the child's shutdown and start).
pub async fn restart_child(
    sup: &ActorRef<SupervisorMsg>,
    id: impl Into<String>,
    timeout: Duration,
) -> Result<ActorCell, SupervisorError> {
    let id = id.into();
    call(sup, |r| SupervisorMsg::RestartChild(id, r), timeout).await?
}

/// [`SupervisorMsg::GetChild`] with a timeout.
pub async fn which_child(
    sup: &ActorRef<SupervisorMsg>,
    id: impl Into<String>,
    timeout: Duration,
) -> Result<Option<ActorCell>, SupervisorError> {
    let id = id.into();
    call(sup, |r| SupervisorMsg::GetChild(id, r), timeout).await
}
