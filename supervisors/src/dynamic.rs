//! `DynamicSupervisor`: OTP's `simple_one_for_one` for very many short-lived temporary children
//! (one per MQTT client).
//!
//! - Supervised by: whoever passes `parent` to [`start_dynamic_supervisor`] — usually a
//!   [`crate::Supervisor`] through [`crate::ChildSpec::dynamic_supervisor`].
//! - Restart type: whatever its parent's child spec says (permanent via `dynamic_supervisor`).
//! - Receives: [`DynamicSupervisorMsg`] from operators; supervision events from its children.
//! - Owns: its children, which callers spawn themselves with
//!   `Actor::spawn_linked(None, actor, args, handle.cell())` or [`DynamicSupervisorHandle::spawn_child`]
//!   — no message round trip through the supervisor on the connect path. Children are never
//!   restarted; an exit (even a panic) never stops the supervisor (ractor's default handler would);
//!   failures are logged and counted in [`DynamicSupervisorStats`].
//!
//! On stop it asks every child to stop at once, waits for all of them against one overall
//! deadline (`spec.shutdown`), then kills the rest: thousands of children stop in the time of the
//! slowest, not the sum.
//!
//! Invariant: `live` holds the ids of the children whose `ActorStarted` was handled and whose exit
//! was not; `stats.active` mirrors its length. A child that fails in `post_start` exits without
//! having started: it is counted as failed but never entered `live`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, Message, RpcReplyPort,
    SupervisionEvent,
};
use tokio::task::JoinHandle;

use crate::error::SupervisorError;
use crate::probe::{self, Describe, Probe, Registration, Summary};
use crate::spec::{DEFAULT_SUPERVISOR_SHUTDOWN, SHUTDOWN_REASON, is_normal_exit};
use crate::stats::{DynamicSupervisorStats, DynamicSupervisorStatsSnapshot};
use crate::supervisor::call;

/// How long to wait for killed children to be gone at the end of a shutdown.
const KILL_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// The dynamic supervisor's API; use [`DynamicSupervisorHandle::inspect`] (it has a timeout).
pub enum DynamicSupervisorMsg {
    /// Counters, the exact number of linked children and one page of their ids (sorted, so pages
    /// are stable while the set does not change).
    Inspect {
        /// Index of the first child id to return.
        offset: usize,
        /// Maximum number of child ids to return.
        limit: usize,
        /// Where the report goes.
        reply: RpcReplyPort<DynamicSupervisorReport>,
    },
    /// A summary of the state, for `actor show`.
    Describe(RpcReplyPort<Summary>),
}

// Required because ractor's `cluster` feature is on (see Cargo.toml); never sent to another node.
impl Message for DynamicSupervisorMsg {}

impl Describe for DynamicSupervisorMsg {
    fn describe(reply: RpcReplyPort<Summary>) -> Self {
        DynamicSupervisorMsg::Describe(reply)
    }
}

/// What [`DynamicSupervisorMsg::Inspect`] returns.
#[derive(Clone, Debug)]
pub struct DynamicSupervisorReport {
    /// Registered name, if any.
    pub name: Option<String>,
    /// The supervisor actor's id.
    pub actor_id: ActorId,
    /// The configured limit.
    pub max_children: Option<usize>,
    /// Exact number of children linked right now.
    pub linked_children: usize,
    /// Counters (shared across incarnations; `active` is this incarnation's gauge).
    pub stats: DynamicSupervisorStatsSnapshot,
    /// The requested page of child ids.
    pub children: Vec<ActorId>,
    /// The `offset` the page starts at.
    pub offset: usize,
}

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

/// How to run a dynamic supervisor. `Clone` shares `stats`.
#[derive(Clone, Debug)]
pub struct DynamicSupervisorSpec {
    /// Registered ractor name, if any (lets callers find the current incarnation after a restart:
    /// [`DynamicSupervisorSpec::handle_by_name`]).
    pub name: Option<String>,
    /// Soft limit checked by [`DynamicSupervisorHandle::check_capacity`] and
    /// [`DynamicSupervisorHandle::spawn_child`]; `None` for no limit.
    pub max_children: Option<usize>,
    /// Overall deadline for all children to stop when the supervisor stops, before they are killed.
    pub shutdown: Duration,
    /// Counters readable from outside; shared by every incarnation started from this spec.
    pub stats: Arc<DynamicSupervisorStats>,
}

impl Default for DynamicSupervisorSpec {
    fn default() -> Self {
        Self {
            name: None,
            max_children: None,
            shutdown: DEFAULT_SUPERVISOR_SHUTDOWN,
            stats: Arc::default(),
        }
    }
}

impl DynamicSupervisorSpec {
    /// An unnamed dynamic supervisor with no limit and the default shutdown deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same spec, registered under `name`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The same spec with a child limit.
    pub fn with_max_children(mut self, max: usize) -> Self {
        self.max_children = Some(max);
        self
    }

    /// The same spec with another overall shutdown deadline.
    pub fn with_shutdown(mut self, shutdown: Duration) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<DynamicSupervisorStats> {
        self.stats.clone()
    }

    /// A handle on the running incarnation registered under this spec's name (`None` if the spec
    /// has no name or none is running). A registry lookup: cheap enough for every connect.
    pub fn handle_by_name(&self) -> Option<DynamicSupervisorHandle> {
        let name = self.name.as_ref()?;
        let cell = ractor::registry::where_is(name)?;
        if cell.is_message_type_of::<DynamicSupervisorMsg>() == Some(false) {
            return None;
        }
        Some(DynamicSupervisorHandle {
            actor: cell.into(),
            stats: self.stats.clone(),
            max_children: self.max_children,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Handle
// ---------------------------------------------------------------------------------------------

/// What callers hold to spawn children under a dynamic supervisor and read its counters.
#[derive(Clone, Debug)]
pub struct DynamicSupervisorHandle {
    actor: ActorRef<DynamicSupervisorMsg>,
    stats: Arc<DynamicSupervisorStats>,
    max_children: Option<usize>,
}

impl DynamicSupervisorHandle {
    /// The supervisor's cell: pass it to `Actor::spawn_linked` as the supervisor.
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// The supervisor's typed reference.
    pub fn actor(&self) -> &ActorRef<DynamicSupervisorMsg> {
        &self.actor
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<DynamicSupervisorStats> {
        &self.stats
    }

    /// `Err(MaxChildren)` if the limit is reached, judged by the O(1) `active` gauge. It is a soft
    /// limit: children spawned but not yet announced to the supervisor are not counted, so a burst
    /// can overshoot by the number of spawns in flight.
    pub fn check_capacity(&self) -> Result<(), SupervisorError> {
        match self.max_children {
            Some(max) if self.stats.active() >= max => Err(SupervisorError::MaxChildren { max }),
            _ => Ok(()),
        }
    }

    /// Exact number of children linked right now; O(n) (clones every child's cell).
    pub fn count_children(&self) -> usize {
        self.actor.get_children().len()
    }

    /// [`check_capacity`](Self::check_capacity), then `Actor::spawn_linked(name, handler, args,
    /// self.cell())`. Runs in the caller's task; the supervisor is not involved.
    pub async fn spawn_child<A: Actor>(
        &self,
        name: Option<String>,
        handler: A,
        args: A::Arguments,
    ) -> Result<(ActorRef<A::Msg>, JoinHandle<()>), SupervisorError> {
        self.check_capacity()?;
        Actor::spawn_linked(name, handler, args, self.cell())
            .await
            .map_err(SupervisorError::Spawn)
    }

    /// [`DynamicSupervisorMsg::Inspect`] with a timeout.
    pub async fn inspect(
        &self,
        offset: usize,
        limit: usize,
        timeout: Duration,
    ) -> Result<DynamicSupervisorReport, SupervisorError> {
        call(
            &self.actor,
            |reply| DynamicSupervisorMsg::Inspect {
                offset,
                limit,
                reply,
            },
            timeout,
        )
        .await
    }
}

/// Start a dynamic supervisor, linked to `parent` if given.
pub async fn start_dynamic_supervisor(
    spec: DynamicSupervisorSpec,
    parent: Option<ActorCell>,
) -> Result<(DynamicSupervisorHandle, JoinHandle<()>), SupervisorError> {
    let stats = spec.stats.clone();
    let max_children = spec.max_children;
    let name = spec.name.clone();
    let (actor, join) = match parent {
        Some(parent) => Actor::spawn_linked(name, DynamicSupervisor, spec, parent).await,
        None => Actor::spawn(name, DynamicSupervisor, spec).await,
    }
    .map_err(SupervisorError::Spawn)?;
    Ok((
        DynamicSupervisorHandle {
            actor,
            stats,
            max_children,
        },
        join,
    ))
}

// ---------------------------------------------------------------------------------------------
// State and actor
// ---------------------------------------------------------------------------------------------

/// The dynamic supervisor's state (opaque outside this module).
pub struct DynamicSupervisorState {
    name: Option<String>,
    label: String,
    max_children: Option<usize>,
    shutdown: Duration,
    stats: Arc<DynamicSupervisorStats>,
    /// See the module invariant. Bounded by the number of live children (a few tens of bytes each).
    live: HashSet<ActorId>,
    probe: Arc<Probe>,
    _registration: Registration,
}

/// The dynamic supervisor actor; start it with [`start_dynamic_supervisor`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DynamicSupervisor;

impl Actor for DynamicSupervisor {
    type Msg = DynamicSupervisorMsg;
    type State = DynamicSupervisorState;
    type Arguments = DynamicSupervisorSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        spec: DynamicSupervisorSpec,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A new incarnation starts with no children, whatever the previous one left in the gauge.
        spec.stats.set_active(0);
        let label = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("dynamic supervisor {}", myself.get_id()));
        let (probe, registration) = probe::start(&myself, "dynamic_supervisor");
        Ok(DynamicSupervisorState {
            name: spec.name,
            label,
            max_children: spec.max_children,
            shutdown: spec.shutdown,
            stats: spec.stats,
            live: HashSet::new(),
            probe,
            _registration: registration,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        stop_all_children(&myself.get_cell(), state.shutdown, &state.label).await;
        state.live.clear();
        state.stats.set_active(0);
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
            DynamicSupervisorMsg::Describe(reply) => {
                let stats = state.stats.snapshot();
                let _ = reply.send(vec![
                    ("children".into(), state.live.len().to_string()),
                    (
                        "max children".into(),
                        state
                            .max_children
                            .map_or_else(|| "unlimited".into(), |m| m.to_string()),
                    ),
                    ("started".into(), stats.started.to_string()),
                    ("exited normally".into(), stats.exited_normally.to_string()),
                    ("failed".into(), stats.failed.to_string()),
                ]);
            }
            DynamicSupervisorMsg::Inspect {
                offset,
                limit,
                reply,
            } => {
                let mut ids: Vec<ActorId> = myself
                    .get_children()
                    .iter()
                    .map(ActorCell::get_id)
                    .collect();
                ids.sort_unstable();
                let linked_children = ids.len();
                let children = ids.into_iter().skip(offset).take(limit).collect();
                let _ = reply.send(DynamicSupervisorReport {
                    name: state.name.clone(),
                    actor_id: myself.get_id(),
                    max_children: state.max_children,
                    linked_children,
                    stats: state.stats.snapshot(),
                    children,
                    offset,
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.event_handled();
        match event {
            SupervisionEvent::ActorStarted(who) => {
                state.stats.record_started();
                state.live.insert(who.get_id());
            }
            SupervisionEvent::ActorTerminated(who, _, reason) => {
                let normal = is_normal_exit(reason.as_deref());
                if !normal {
                    tracing::warn!(supervisor = %state.label, child = %who.get_id(), reason = reason.as_deref().unwrap_or(""), "child stopped abnormally");
                }
                state.stats.record_exit(normal);
                state.live.remove(&who.get_id());
            }
            SupervisionEvent::ActorFailed(who, err) => {
                tracing::warn!(supervisor = %state.label, child = %who.get_id(), error = %err, "child failed");
                state.stats.record_exit(false);
                state.live.remove(&who.get_id());
            }
            SupervisionEvent::ProcessGroupChanged(_) | SupervisionEvent::PidLifecycleEvent(_) => {}
        }
        state.stats.set_active(state.live.len());
        Ok(())
    }
}

/// Ask every child of `sup` to stop, wait for all of them until one overall deadline, then kill the
/// ones still running and wait (bounded) for them.
async fn stop_all_children(sup: &ActorCell, shutdown: Duration, label: &str) {
    let children = sup.get_children();
    if children.is_empty() {
        return;
    }
    for child in &children {
        child.stop(Some(SHUTDOWN_REASON.to_string()));
    }
    let deadline = tokio::time::Instant::now() + shutdown;
    let mut remaining = Vec::new();
    for child in children {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if child.wait(Some(left)).await.is_err() {
            remaining.push(child);
        }
    }
    if remaining.is_empty() {
        return;
    }
    tracing::warn!(supervisor = %label, count = remaining.len(), deadline = ?shutdown, "children did not stop in time; killing");
    for child in &remaining {
        child.kill();
    }
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    for child in &remaining {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = child.wait(Some(left)).await;
    }
    let stuck = remaining
        .iter()
        .filter(|c| c.get_status() != ActorStatus::Stopped)
        .count();
    if stuck > 0 {
        tracing::error!(supervisor = %label, count = stuck, "children still running after kill (blocked threads?)");
    }
}
