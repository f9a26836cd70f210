//! Counters shared between a supervisor and whoever wants to read them without sending a message
//! (metrics, the admin shell, tests).
//!
//! They are plain atomics behind an `Arc` held by the spec, so they outlive any one incarnation of
//! the supervisor: a supervisor restarted by its parent keeps counting where the previous one
//! stopped. Only the supervisor writes them; readers use `Relaxed` loads because each counter is
//! independent and only ever grows (except the `active` gauge of a dynamic supervisor).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters of a [`crate::Supervisor`] (static child list).
#[derive(Debug, Default)]
pub struct SupervisorStats {
    starts: AtomicU64,
    restarts: AtomicU64,
    child_exits: AtomicU64,
    child_failures: AtomicU64,
    start_failures: AtomicU64,
    escalations: AtomicU64,
}

/// A point-in-time copy of [`SupervisorStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SupervisorStatsSnapshot {
    /// Times a supervisor was started (successfully) from this spec.
    pub starts: u64,
    /// Restarts counted towards the intensity (one per handled exit, plus one per retry after a
    /// child failed to start during a restart).
    pub restarts: u64,
    /// Exits of children the supervisor did not cause (normal and abnormal).
    pub child_exits: u64,
    /// The abnormal subset of `child_exits` (panic, `Err`, kill, non-normal stop reason).
    pub child_failures: u64,
    /// Children that failed to start during a restart.
    pub start_failures: u64,
    /// Times the supervisor gave up (intensity exceeded) and failed.
    pub escalations: u64,
}

impl SupervisorStats {
    /// Times a supervisor was started from this spec.
    pub fn starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }
    /// Restarts counted towards the intensity.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
    /// Exits of children the supervisor did not cause (normal and abnormal).
    pub fn child_exits(&self) -> u64 {
        self.child_exits.load(Ordering::Relaxed)
    }
    /// Abnormal exits of children.
    pub fn child_failures(&self) -> u64 {
        self.child_failures.load(Ordering::Relaxed)
    }
    /// Children that failed to start during a restart.
    pub fn start_failures(&self) -> u64 {
        self.start_failures.load(Ordering::Relaxed)
    }
    /// Times the supervisor gave up and failed.
    pub fn escalations(&self) -> u64 {
        self.escalations.load(Ordering::Relaxed)
    }

    /// All counters at once (each read independently).
    pub fn snapshot(&self) -> SupervisorStatsSnapshot {
        SupervisorStatsSnapshot {
            starts: self.starts(),
            restarts: self.restarts(),
            child_exits: self.child_exits(),
            child_failures: self.child_failures(),
            start_failures: self.start_failures(),
            escalations: self.escalations(),
        }
    }

    pub(crate) fn record_start(&self) {
        self.starts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_child_exit(&self, normal: bool) {
        self.child_exits.fetch_add(1, Ordering::Relaxed);
        if !normal {
            self.child_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub(crate) fn record_start_failure(&self) {
        self.start_failures.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_escalation(&self) {
        self.escalations.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of a [`crate::DynamicSupervisor`]. Exits of children that the supervisor itself stops
/// when it shuts down are not counted (it no longer handles events by then).
#[derive(Debug, Default)]
pub struct DynamicSupervisorStats {
    started: AtomicU64,
    exited_normally: AtomicU64,
    failed: AtomicU64,
    active: AtomicUsize,
}

/// A point-in-time copy of [`DynamicSupervisorStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DynamicSupervisorStatsSnapshot {
    /// Children that finished starting (`post_start` done) while linked.
    pub started: u64,
    /// Children that exited normally (see [`crate::is_normal_exit`]).
    pub exited_normally: u64,
    /// Children that failed: panic or `Err` in a handler (or in `post_start`), killed, or stopped
    /// with an abnormal reason.
    pub failed: u64,
    /// Children started and not yet exited, as of the last supervision event handled.
    pub active: usize,
}

impl DynamicSupervisorStats {
    /// Children that finished starting while linked.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }
    /// Children that exited normally.
    pub fn exited_normally(&self) -> u64 {
        self.exited_normally.load(Ordering::Relaxed)
    }
    /// Children that failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// Children started and not yet exited, O(1). It lags reality by the supervisor's mailbox:
    /// a child counts once its `ActorStarted` event is handled and stops counting once its exit
    /// event is. For an exact (O(n)) count use
    /// [`crate::DynamicSupervisorHandle::count_children`].
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// All counters at once (each read independently).
    pub fn snapshot(&self) -> DynamicSupervisorStatsSnapshot {
        DynamicSupervisorStatsSnapshot {
            started: self.started(),
            exited_normally: self.exited_normally(),
            failed: self.failed(),
            active: self.active(),
        }
    }

    pub(crate) fn record_started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_exit(&self, normal: bool) {
        if normal {
            self.exited_normally.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub(crate) fn set_active(&self, active: usize) {
        self.active.store(active, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_counters() {
        let s = SupervisorStats::default();
        s.record_start();
        s.record_restart();
        s.record_child_exit(true);
        s.record_child_exit(false);
        s.record_start_failure();
        s.record_escalation();
        assert_eq!(
            s.snapshot(),
            SupervisorStatsSnapshot {
                starts: 1,
                restarts: 1,
                child_exits: 2,
                child_failures: 1,
                start_failures: 1,
                escalations: 1,
            }
        );
    }

    #[test]
    fn dynamic_counters() {
        let s = DynamicSupervisorStats::default();
        s.record_started();
        s.record_started();
        s.record_exit(true);
        s.record_exit(false);
        s.set_active(0);
        assert_eq!(
            s.snapshot(),
            DynamicSupervisorStatsSnapshot {
                started: 2,
                exited_normally: 1,
                failed: 1,
                active: 0,
            }
        );
    }
}
