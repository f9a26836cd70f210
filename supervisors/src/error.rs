//! The one error type of this crate.

use std::time::Duration;

use ractor::SpawnErr;

/// Errors from starting, calling and stopping supervisors.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The supervisor actor (or a dynamic child) could not be spawned; for a supervisor this wraps
    /// the reason its `pre_start` failed, e.g. [`SupervisorError::ChildStartFailed`].
    #[error("spawn failed: {0}")]
    Spawn(#[source] SpawnErr),
    /// A child's start function failed (or the started child could not be linked).
    #[error("child `{id}` failed to start: {reason}")]
    ChildStartFailed {
        /// The child's id.
        id: String,
        /// Why, as text (the original error is not `Send`-cloneable across replies).
        reason: String,
    },
    /// Two children with the same id (in a spec, or `StartChild` with an id already present).
    #[error("a child with id `{0}` already exists")]
    DuplicateChild(String),
    /// `TerminateChild` / `RestartChild` named no current child.
    #[error("no child with id `{0}`")]
    NoSuchChild(String),
    /// More restarts than the intensity allows: the supervisor stopped its children and failed.
    /// This is the error its own supervisor sees in `ActorFailed`.
    #[error(
        "restart intensity exceeded: more than {max_restarts} restarts within {period:?}{}",
        last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    IntensityExceeded {
        /// The intensity's `max_restarts`.
        max_restarts: u32,
        /// The intensity's `period`.
        period: Duration,
        /// The last child start failure, if the restarts that exceeded it were failed starts.
        last_error: Option<String>,
    },
    /// A dynamic supervisor already has `max` children.
    #[error("dynamic supervisor is at its limit of {max} children")]
    MaxChildren {
        /// The configured limit.
        max: usize,
    },
    /// A call to a supervisor got no answer in time.
    #[error("supervisor did not answer within {0:?}")]
    CallTimeout(Duration),
    /// The supervisor is not running (or died before answering).
    #[error("supervisor is not running")]
    NotRunning,
    /// [`crate::shutdown_within`] had to kill the supervisor.
    #[error("supervisor did not stop within {0:?} and was killed")]
    ShutdownTimeout(Duration),
}
