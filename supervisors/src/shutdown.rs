//! Stopping actors the OTP way: a graceful stop with a grace period, then a kill.
//!
//! ractor's `stop` only takes effect between two messages (it never interrupts a running handler),
//! while `kill` cancels the running handler at its next `.await` and skips `post_stop`. A
//! supervisor therefore always asks first and kills only when the grace expires.

use std::time::Duration;

use ractor::{ActorCell, RactorErr};

use crate::error::SupervisorError;
use crate::spec::SHUTDOWN_REASON;

/// How long to wait for an actor to be gone after a kill. A killed actor exits at its next
/// `.await`; one that blocks its thread cannot be stopped at all, and is reported instead.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Stop `cell` with reason `"shutdown"`, wait up to `grace`, then kill it and wait for its exit.
/// `what` names the actor in logs. Returns `true` if it stopped gracefully.
pub(crate) async fn stop_or_kill(cell: &ActorCell, grace: Duration, what: &str) -> bool {
    match cell
        .stop_and_wait(Some(SHUTDOWN_REASON.to_string()), Some(grace))
        .await
    {
        Ok(()) => return true,
        Err(RactorErr::Timeout) => {}
        // The stop port is a oneshot: the actor is already stopping (someone else asked) or gone.
        // Either way, wait for it to finish within the same grace.
        Err(_) => {
            if cell.wait(Some(grace)).await.is_ok() {
                return true;
            }
        }
    }
    tracing::warn!(actor = what, id = %cell.get_id(), grace = ?grace, "did not stop within its shutdown grace; killing");
    if cell.kill_and_wait(Some(KILL_WAIT)).await.is_err() {
        tracing::error!(actor = what, id = %cell.get_id(), "still running after kill (blocked thread?)");
    }
    false
}

/// Stop a supervisor (or any actor) gracefully and wait until it and, for the supervisors of this
/// crate, its whole subtree are stopped. Each child is bounded by its own shutdown grace, so this
/// terminates unless an actor blocks its thread.
///
/// Meant for the root of a tree. A supervisor that has a parent `Supervisor` exits with reason
/// `"shutdown"` (normal), so a permanent one is restarted by its parent: use
/// [`crate::terminate_child`] on the parent instead.
pub async fn shutdown(sup: &ActorCell) {
    let stopped = sup
        .stop_and_wait(Some(SHUTDOWN_REASON.to_string()), None)
        .await;
    if stopped.is_err() {
        // Already stopping or stopped: wait for the end.
        let _ = sup.wait(None).await;
    }
}

/// Like [`shutdown`], but kill the supervisor if it is not stopped within `timeout` (its remaining
/// descendants are then killed by ractor, unordered) and report [`SupervisorError::ShutdownTimeout`].
pub async fn shutdown_within(sup: &ActorCell, timeout: Duration) -> Result<(), SupervisorError> {
    if stop_or_kill(sup, timeout, "supervisor").await {
        Ok(())
    } else {
        Err(SupervisorError::ShutdownTimeout(timeout))
    }
}
