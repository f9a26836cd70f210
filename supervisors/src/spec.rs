//! The supervision tree as data: restart types, strategies, restart intensity, child specs and
//! supervisor specs.
//!
//! Nothing in this module runs anything. A [`SupervisorSpec`] is a plain value that can be cloned,
//! nested (a [`ChildSpec`] of kind [`ChildKind::Supervisor`] starts another supervisor) and handed to
//! [`crate::start_supervisor`]. Cloning a spec shares its [`SupervisorStats`], so counters survive
//! the restarts of the supervisor they describe.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use crate::dynamic::{DynamicSupervisorHandle, DynamicSupervisorSpec, start_dynamic_supervisor};
use crate::stats::SupervisorStats;
use crate::supervisor::start_supervisor;

/// Grace given to a worker to stop before it is killed (OTP's default `shutdown` for workers).
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_secs(5);

/// Grace given to a child supervisor to stop its own subtree in order before it is killed. OTP uses
/// `infinity` for supervisors; a finite but generous value keeps a wedged subtree from blocking a
/// node's shutdown forever.
pub const DEFAULT_SUPERVISOR_SHUTDOWN: Duration = Duration::from_secs(60);

/// The stop reason a supervisor gives its children when it stops them (OTP's `shutdown`).
pub const SHUTDOWN_REASON: &str = "shutdown";

/// Whether an actor's exit is *normal* in the OTP sense, given the exit reason ractor reported in
/// `SupervisionEvent::ActorTerminated`.
///
/// Normal exits are: no reason (`ActorRef::stop(None)`), `"normal"`, `"shutdown"`, any reason
/// starting with `"shutdown:"` (OTP's `{shutdown, Term}`) and `"Drained"` (ractor's reason after
/// `drain()`). Everything else (`"killed"`, `"actor_task_cancelled"`, any other string) is abnormal,
/// and so is every `SupervisionEvent::ActorFailed` (a panic or an `Err` from a handler).
pub fn is_normal_exit(reason: Option<&str>) -> bool {
    match reason {
        None => true,
        Some(r) => {
            r == "normal" || r == SHUTDOWN_REASON || r.starts_with("shutdown:") || r == "Drained"
        }
    }
}

/// When a child that exited is started again (OTP's restart type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Always restarted, whatever the exit reason.
    Permanent,
    /// Restarted only after an abnormal exit (see [`is_normal_exit`]); after a normal exit it stays
    /// in the child list, not running, until a group restart or `RestartChild` starts it again.
    Transient,
    /// Never restarted; removed from the child list when it exits, including when a group restart
    /// (`OneForAll`, `RestForOne`) stops it.
    Temporary,
}

impl Restart {
    /// Whether a child of this restart type is restarted after an exit that was `normal` or not.
    pub fn should_restart(self, normal: bool) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => !normal,
            Restart::Temporary => false,
        }
    }
}

/// Which children are restarted when one of them must be (OTP's restart strategy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Restart only the child that exited.
    OneForOne,
    /// Stop all other children in reverse start order, then start all of them in order.
    OneForAll,
    /// Stop the children started after the exited one in reverse order, then start the exited one
    /// and those after it in order.
    RestForOne,
}

/// Whether a child is a worker or a supervisor; informational (inspection, default shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildKind {
    /// An ordinary actor.
    Worker,
    /// A supervisor (static or dynamic) with its own subtree.
    Supervisor,
}

/// Restart intensity: if more than `max_restarts` restarts happen within `period`, the supervisor
/// gives up, stops all its children in reverse order and fails, so its own supervisor sees an
/// `ActorFailed` (escalation).
///
/// A restart is one decision to restart (one exit handled, whatever the strategy restarts), and every
/// further attempt after a child failed to start during a restart. `max_restarts == 0` means "never
/// restart": the first exit that would be restarted escalates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Intensity {
    /// Maximum number of restarts allowed within `period`.
    pub max_restarts: u32,
    /// The sliding window restarts are counted in.
    pub period: Duration,
}

impl Intensity {
    /// An intensity of `max_restarts` within `period`.
    pub const fn new(max_restarts: u32, period: Duration) -> Self {
        Self {
            max_restarts,
            period,
        }
    }
}

impl Default for Intensity {
    /// 3 restarts in 5 seconds. OTP's default is 1 in 5 s, which turns two crashes of a busy router
    /// in a burst into a node-level restart; 3 in 5 s still escalates a crash loop within seconds.
    fn default() -> Self {
        Self::new(3, Duration::from_secs(5))
    }
}

/// What a start closure may return for the started child: an [`ActorCell`], an [`ActorRef`], the
/// `(ActorRef, JoinHandle)` pair `Actor::spawn_linked` and [`crate::start_supervisor`] return, or the
/// `(DynamicSupervisorHandle, JoinHandle)` pair [`crate::start_dynamic_supervisor`] returns.
pub trait IntoChildCell {
    /// The child's cell.
    fn into_child_cell(self) -> ActorCell;
}

impl IntoChildCell for ActorCell {
    fn into_child_cell(self) -> ActorCell {
        self
    }
}

impl<M> IntoChildCell for ActorRef<M> {
    fn into_child_cell(self) -> ActorCell {
        self.get_cell()
    }
}

impl<M> IntoChildCell for (ActorRef<M>, JoinHandle<()>) {
    fn into_child_cell(self) -> ActorCell {
        self.0.get_cell()
    }
}

impl IntoChildCell for (DynamicSupervisorHandle, JoinHandle<()>) {
    fn into_child_cell(self) -> ActorCell {
        self.0.cell()
    }
}

/// The future a [`StartFn`] returns: the started child's cell, linked to the supervisor.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, ActorProcessingErr>> + Send>>;

/// How to start a child. It receives the supervisor's [`ActorCell`] and must spawn the child
/// linked to it (`Actor::spawn_linked(.., supervisor)`), returning the child's cell once started.
/// It is called again for every restart, so it must build fresh arguments each time.
///
/// It runs inside the supervisor's handler: it must not call the supervisor (that would wait for
/// itself until the call's timeout). A child that is not linked to the supervisor is linked after
/// the fact (with a warning); one that cannot be linked is stopped and reported as a start failure.
pub type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;

/// One child of a [`SupervisorSpec`] (OTP's child spec).
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among the supervisor's children; used by `TerminateChild`, `RestartChild`, logs.
    pub id: String,
    /// When the child is restarted.
    pub restart: Restart,
    /// Grace for a graceful stop before the child is killed.
    pub shutdown: Duration,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// How to start (and restart) the child.
    pub start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child spec from any start closure. The closure gets the supervisor's cell and returns a
    /// future resolving to the child (anything convertible to an [`ActorCell`], e.g. an `ActorRef`)
    /// or an error (anything convertible to [`ActorProcessingErr`], e.g. `SpawnErr`).
    /// The shutdown grace defaults by kind ([`DEFAULT_WORKER_SHUTDOWN`],
    /// [`DEFAULT_SUPERVISOR_SHUTDOWN`]).
    pub fn new<F, Fut, C, E>(
        id: impl Into<String>,
        kind: ChildKind,
        restart: Restart,
        start: F,
    ) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C, E>> + Send + 'static,
        C: IntoChildCell,
        E: Into<ActorProcessingErr>,
    {
        let start: StartFn = Arc::new(move |sup: ActorCell| -> StartFuture {
            let fut = start(sup);
            Box::pin(async move {
                fut.await
                    .map(IntoChildCell::into_child_cell)
                    .map_err(Into::into)
            })
        });
        Self {
            id: id.into(),
            restart,
            shutdown: match kind {
                ChildKind::Worker => DEFAULT_WORKER_SHUTDOWN,
                ChildKind::Supervisor => DEFAULT_SUPERVISOR_SHUTDOWN,
            },
            kind,
            start,
        }
    }

    /// A worker child started by `start`, e.g.
    /// `ChildSpec::worker("router", Restart::Permanent, move |sup| Actor::spawn_linked(None, Router, args.clone(), sup))`
    /// (the `(ActorRef, JoinHandle)` that `spawn_linked` returns is accepted as is; the join handle
    /// is dropped, which detaches it). See [`ChildSpec::actor`] for the common case.
    pub fn worker<F, Fut, C, E>(id: impl Into<String>, restart: Restart, start: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<C, E>> + Send + 'static,
        C: IntoChildCell,
        E: Into<ActorProcessingErr>,
    {
        Self::new(id, ChildKind::Worker, restart, start)
    }

    /// A worker child that is an unnamed actor `handler` started with a clone of `args` each time.
    pub fn actor<A>(id: impl Into<String>, restart: Restart, handler: A, args: A::Arguments) -> Self
    where
        A: Actor + Clone,
        A::Arguments: Clone + Sync,
    {
        Self::worker(id, restart, move |sup| {
            let handler = handler.clone();
            let args = args.clone();
            async move { Actor::spawn_linked(None, handler, args, sup).await }
        })
    }

    /// A permanent child that is a supervisor started from `spec` (a clone of it at every start,
    /// sharing its stats).
    pub fn supervisor(id: impl Into<String>, spec: SupervisorSpec) -> Self {
        Self::new(id, ChildKind::Supervisor, Restart::Permanent, move |sup| {
            let spec = spec.clone();
            async move { start_supervisor(spec, Some(sup)).await }
        })
    }

    /// A permanent child that is a [`crate::DynamicSupervisor`] started from `spec`.
    pub fn dynamic_supervisor(id: impl Into<String>, spec: DynamicSupervisorSpec) -> Self {
        Self::new(id, ChildKind::Supervisor, Restart::Permanent, move |sup| {
            let spec = spec.clone();
            async move { start_dynamic_supervisor(spec, Some(sup)).await }
        })
    }

    /// The same spec with another shutdown grace.
    pub fn with_shutdown(mut self, shutdown: Duration) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The same spec with another restart type.
    pub fn with_restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Run the start function for supervisor `sup`, turning a panic of the start code itself (not
    /// of the child's `pre_start`, which ractor already turns into an error) into an error.
    pub(crate) async fn run_start(&self, sup: ActorCell) -> Result<ActorCell, ActorProcessingErr> {
        let start = self.start.clone();
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| start(sup))) {
            Ok(fut) => fut,
            Err(panic) => return Err(panic_message(panic).into()),
        };
        CatchUnwind(fut).await
    }
}

/// A future adapter that turns a panic while polling into an `Err`, so that a buggy start function
/// is a start failure of one child rather than a crash of its supervisor.
struct CatchUnwind(StartFuture);

impl Future for CatchUnwind {
    type Output = Result<ActorCell, ActorProcessingErr>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => Poll::Ready(Err(panic_message(panic).into())),
        }
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(panic) => match panic.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "non-string panic payload".to_string(),
        },
    };
    format!("start function panicked: {text}")
}

/// A supervisor: its strategy, restart intensity and children, started in order and stopped in
/// reverse order. `Clone` shares `stats`.
#[derive(Clone, Debug)]
pub struct SupervisorSpec {
    /// Registered ractor name of the supervisor actor (`ractor::registry::where_is`), if any.
    pub name: Option<String>,
    /// Which children are restarted together.
    pub strategy: Strategy,
    /// When to give up and escalate.
    pub intensity: Intensity,
    /// Children, in start order.
    pub children: Vec<ChildSpec>,
    /// Counters readable from outside without a message; shared by every incarnation started from
    /// this spec or its clones.
    pub stats: Arc<SupervisorStats>,
}

impl SupervisorSpec {
    /// An unnamed supervisor with `strategy`, the default [`Intensity`] and no children yet.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            name: None,
            strategy,
            intensity: Intensity::default(),
            children: Vec::new(),
            stats: Arc::default(),
        }
    }

    /// The same spec, registered under `name`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The same spec with another intensity.
    pub fn with_intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Intensity::new(max_restarts, period);
        self
    }

    /// The same spec with `child` appended (started after the ones before it).
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// The shared counters of every supervisor started from this spec.
    pub fn stats(&self) -> Arc<SupervisorStats> {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_exit_reasons() {
        assert!(is_normal_exit(None));
        assert!(is_normal_exit(Some("normal")));
        assert!(is_normal_exit(Some("shutdown")));
        assert!(is_normal_exit(Some("shutdown: takeover")));
        assert!(is_normal_exit(Some("Drained")));
        assert!(!is_normal_exit(Some("killed")));
        assert!(!is_normal_exit(Some("actor_task_cancelled")));
        assert!(!is_normal_exit(Some("boom")));
        assert!(!is_normal_exit(Some("shutdownx")));
    }

    #[test]
    fn restart_types() {
        assert!(Restart::Permanent.should_restart(true));
        assert!(Restart::Permanent.should_restart(false));
        assert!(!Restart::Transient.should_restart(true));
        assert!(Restart::Transient.should_restart(false));
        assert!(!Restart::Temporary.should_restart(true));
        assert!(!Restart::Temporary.should_restart(false));
    }

    #[test]
    fn spec_clone_shares_stats() {
        let spec = SupervisorSpec::new(Strategy::OneForOne);
        let clone = spec.clone();
        assert!(Arc::ptr_eq(&spec.stats, &clone.stats));
    }
}
