//! The failure matrix for `Supervisor`: strategies × restart types × exit kinds, failures in
//! `pre_start` (at start and during restarts), in `post_stop`, restart intensity and escalation
//! through nested supervisors, ordered start and reverse stop, and the message API.

mod common;

use std::time::Duration;

use beamq_supervisors::{
    ChildSpec, ChildStatus, Restart, Strategy, SupervisorError, SupervisorSpec, inspect,
    restart_child, shutdown, start_child, start_supervisor, terminate_child, which_child,
};
use common::*;
use ractor::{ActorStatus, SpawnErr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Panic,
    Err,
    /// `stop(None)`: normal.
    Stop,
    /// `stop(Some("boom"))`: abnormal, but `post_stop` runs.
    StopAbnormal,
}

impl Exit {
    fn normal(self) -> bool {
        self == Exit::Stop
    }
    fn msg(self) -> WorkerMsg {
        match self {
            Exit::Panic => WorkerMsg::Panic,
            Exit::Err => WorkerMsg::Fail,
            Exit::Stop => WorkerMsg::Stop,
            Exit::StopAbnormal => WorkerMsg::StopWith("boom".into()),
        }
    }
}

/// Children `x`, `t`, `y` (x and y permanent, t of `restart`); `t` exits by `exit`; check which
/// children were stopped and started, in which order, and the counters.
async fn matrix_case(strategy: Strategy, restart: Restart, exit: Exit) {
    let case = format!("{strategy:?} / {restart:?} / {exit:?}");
    let h = Harness::new();
    let spec = SupervisorSpec::new(strategy)
        .child(h.child("x", Restart::Permanent))
        .child(h.child("t", restart))
        .child(h.child("y", Restart::Permanent));
    let stats = spec.stats();
    let (sup, join) = start_supervisor(spec, None)
        .await
        .expect("supervisor starts");
    assert_eq!(h.events(), ["start:x", "start:t", "start:y"], "{case}");
    let before = inspect(&sup, CALL).await.unwrap();
    let ids_before: Vec<_> = before.children.iter().map(|c| c.actor_id).collect();

    let mark = h.len();
    worker_of(&sup, "t").await.send_message(exit.msg()).unwrap();
    // The exit is counted when the supervisor starts handling it; an Inspect sent afterwards is
    // answered after that handler (restart included) finished.
    wait_until(&case, || stats.child_exits() == 1).await;
    let report = inspect(&sup, CALL).await.unwrap();

    let restarted = restart.should_restart(exit.normal());
    let mut expected: Vec<&str> = Vec::new();
    if matches!(exit, Exit::Stop | Exit::StopAbnormal) {
        expected.push("stop:t"); // post_stop runs on a stop, not on a panic or Err
    }
    if restarted {
        match strategy {
            Strategy::OneForOne => expected.extend(["start:t"]),
            Strategy::OneForAll => {
                expected.extend(["stop:y", "stop:x", "start:x", "start:t", "start:y"])
            }
            Strategy::RestForOne => expected.extend(["stop:y", "start:t", "start:y"]),
        }
    }
    assert_eq!(h.events_since(mark), expected, "{case}: events");

    assert_eq!(stats.restarts(), restarted as u64, "{case}: restarts");
    assert_eq!(
        stats.child_failures(),
        !exit.normal() as u64,
        "{case}: failures"
    );
    assert_eq!(report.total_restarts, restarted as u64, "{case}");
    assert_eq!(report.restarts_in_window, restarted as usize, "{case}");

    let ids: Vec<&str> = report.children.iter().map(|c| c.id.as_str()).collect();
    if restart == Restart::Temporary {
        assert_eq!(ids, ["x", "y"], "{case}: temporary child removed");
    } else {
        assert_eq!(ids, ["x", "t", "y"], "{case}");
    }
    for child in &report.children {
        let pos = ["x", "t", "y"].iter().position(|c| *c == child.id).unwrap();
        let was_restarted = restarted
            && match strategy {
                Strategy::OneForOne => child.id == "t",
                Strategy::OneForAll => true,
                Strategy::RestForOne => child.id != "x",
            };
        assert_eq!(child.restarts, was_restarted as u64, "{case}: {}", child.id);
        if child.id == "t" && !restarted {
            assert_eq!(child.status, ChildStatus::Stopped, "{case}");
            assert_eq!(child.actor_id, None, "{case}");
        } else {
            assert_eq!(child.status, ChildStatus::Running, "{case}: {}", child.id);
            let same = child.actor_id == ids_before[pos];
            assert_eq!(same, !was_restarted, "{case}: {} new incarnation", child.id);
        }
    }

    let mark = h.len();
    shutdown(&sup).await;
    join.await.unwrap();
    let mut expected_stop: Vec<String> = report
        .children
        .iter()
        .filter(|c| c.status == ChildStatus::Running)
        .map(|c| format!("stop:{}", c.id))
        .collect();
    expected_stop.reverse();
    assert_eq!(h.events_since(mark), expected_stop, "{case}: reverse stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_restart_exit_matrix() {
    for strategy in [
        Strategy::OneForOne,
        Strategy::OneForAll,
        Strategy::RestForOne,
    ] {
        for restart in [Restart::Permanent, Restart::Transient, Restart::Temporary] {
            for exit in [Exit::Panic, Exit::Err, Exit::Stop, Exit::StopAbnormal] {
                matrix_case(strategy, restart, exit).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_restart_drops_temporary_siblings_and_restarts_stopped_transients() {
    // [p (permanent), tr (transient, exits normally first), tmp (temporary)] one_for_all.
    let h = Harness::new();
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .child(h.child("p", Restart::Permanent))
        .child(h.child("tr", Restart::Transient))
        .child(h.child("tmp", Restart::Temporary));
    let stats = spec.stats();
    let (sup, _join) = start_supervisor(spec, None).await.unwrap();
    worker_of(&sup, "tr")
        .await
        .send_message(WorkerMsg::Stop)
        .unwrap();
    wait_until("tr exit", || stats.child_exits() == 1).await;
    let report = inspect(&sup, CALL).await.unwrap();
    assert_eq!(report.children[1].status, ChildStatus::Stopped);

    let mark = h.len();
    worker_of(&sup, "p")
        .await
        .send_message(WorkerMsg::Panic)
        .unwrap();
    wait_until("p exit", || stats.child_exits() == 2).await;
    let report = inspect(&sup, CALL).await.unwrap();
    // OTP: the temporary sibling is stopped and dropped; the stopped transient is started again.
    assert_eq!(h.events_since(mark), ["stop:tmp", "start:p", "start:tr"]);
    let ids: Vec<_> = report.children.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["p", "tr"]);
    assert!(
        report
            .children
            .iter()
            .all(|c| c.status == ChildStatus::Running)
    );
    shutdown(&sup).await;
}

async fn start_failure_at_supervisor_start(fault: Fault) {
    let h = Harness::new();
    {
        let plan = h.plan("c");
        let mut plan = plan.lock();
        plan.pre_start = fault;
        plan.pre_start_faults = 1;
    }
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(h.child("a", Restart::Permanent))
        .child(h.child("b", Restart::Permanent))
        .child(h.child("c", Restart::Permanent))
        .child(h.child("d", Restart::Permanent));
    let stats = spec.stats();
    let err = start_supervisor(spec, None).await.expect_err("start fails");
    assert!(
        matches!(err, SupervisorError::Spawn(SpawnErr::StartupFailed(_))),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("child `c` failed to start"), "{text}");
    // Earlier children stopped in reverse order; later ones never started.
    assert_eq!(
        h.events(),
        ["start:a", "start:b", "startfail:c", "stop:b", "stop:a"]
    );
    assert_eq!(stats.starts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_child_pre_start_fails_supervisor_start_and_stops_earlier_children() {
    start_failure_at_supervisor_start(Fault::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_in_child_pre_start_fails_supervisor_start_and_stops_earlier_children() {
    start_failure_at_supervisor_start(Fault::Err).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_child_ids_fail_start() {
    let h = Harness::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(h.child("a", Restart::Permanent))
        .child(h.child("a", Restart::Permanent));
    let err = start_supervisor(spec, None).await.expect_err("duplicate");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(h.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_restart_is_retried_and_counts_towards_intensity() {
    // b fails to start twice, then starts: 3 restarts counted, 2 start failures, no escalation.
    let h = Harness::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .with_intensity(3, Duration::from_secs(60))
        .child(h.child("a", Restart::Permanent))
        .child(h.child("b", Restart::Permanent));
    let stats = spec.stats();
    let (sup, _join) = start_supervisor(spec, None).await.unwrap();
    {
        let plan = h.plan("b");
        let mut plan = plan.lock();
        plan.pre_start = Fault::Panic;
        plan.pre_start_faults = 2;
    }
    let mark = h.len();
    worker_of(&sup, "b")
        .await
        .send_message(WorkerMsg::Fail)
        .unwrap();
    wait_until("b exit", || stats.child_exits() == 1).await;
    let report = inspect(&sup, CALL).await.unwrap();
    assert_eq!(
        h.events_since(mark),
        ["startfail:b", "startfail:b", "start:b"]
    );
    assert_eq!(stats.restarts(), 3);
    assert_eq!(stats.start_failures(), 2);
    assert_eq!(stats.escalations(), 0);
    assert_eq!(report.restarts_in_window, 3);
    assert_eq!(report.children[1].restarts, 1);
    assert_eq!(report.children[1].status, ChildStatus::Running);
    shutdown(&sup).await;
}

async fn restart_start_failure_escalates(fault: Fault) {
    let h = Harness::new();
    let (parent, probe_log) = probe().await;
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .with_intensity(3, Duration::from_secs(60))
        .child(h.child("a", Restart::Permanent))
        .child(h.child("b", Restart::Permanent))
        .child(h.child("c", Restart::Permanent));
    let stats = spec.stats();
    let (sup, join) = start_supervisor(spec, Some(parent.clone())).await.unwrap();
    {
        let plan = h.plan("b");
        let mut plan = plan.lock();
        plan.pre_start = fault;
        plan.pre_start_faults = u32::MAX;
    }
    let mark = h.len();
    worker_of(&sup, "b")
        .await
        .send_message(WorkerMsg::Panic)
        .unwrap();
    join.await.unwrap();
    // 3 attempts allowed, the 4th exceeds the intensity: children stopped in reverse, then failure.
    assert_eq!(
        h.events_since(mark),
        [
            "startfail:b",
            "startfail:b",
            "startfail:b",
            "stop:c",
            "stop:a"
        ]
    );
    assert_eq!(stats.restarts(), 3);
    assert_eq!(stats.start_failures(), 3);
    assert_eq!(stats.escalations(), 1);
    wait_until("parent sees the failure", || {
        probe_log
            .lock()
            .iter()
            .any(|(id, e)| *id == sup.get_id() && e.starts_with("failed:"))
    })
    .await;
    let log = probe_log.lock().clone();
    let (_, event) = log
        .iter()
        .find(|(id, e)| *id == sup.get_id() && e.starts_with("failed:"))
        .unwrap();
    assert!(event.contains("restart intensity exceeded"), "{event}");
    assert!(event.contains("last error"), "{event}");
    assert_eq!(sup.get_status(), ActorStatus::Stopped);
    parent.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_pre_start_during_restart_escalates_after_intensity() {
    restart_start_failure_escalates(Fault::Panic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn err_in_pre_start_during_restart_escalates_after_intensity() {
    restart_start_failure_escalates(Fault::Err).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_all_failed_restart_stops_the_partial_group_and_retries() {
    // [a, b, c] one_for_all; c panics; b fails its first restart: a (started by the attempt) is
    // stopped again before the retry.
    let h = Harness::new();
    let spec = SupervisorSpec::new(Strategy::OneForAll)
        .child(h.child("a", Restart::Permanent))
        .child(h.child("b", Restart::Permanent))
        .child(h.child("c", Restart::Permanent));
    let stats = spec.stats();
    let (sup, _join) = start_supervisor(spec, None).await.unwrap();
    {
        let plan = h.plan("b");
        let mut plan = plan.lock();
        plan.pre_start = Fault::Err;
        plan.pre_start_faults = 1;
    }
    let mark = h.len();
    worker_of(&sup, "c")
        .await
        .send_message(WorkerMsg::Panic)
        .unwrap();
    wait_until("c exit", || stats.child_exits() == 1).await;
    let report = inspect(&sup, CALL).await.unwrap();
    assert_eq!(
        h.events_since(mark),
        [
            "stop:b",
            "stop:a", // group stopped, reverse
            "start:a",
            "startfail:b",
            "stop:a", // attempt 1 fails, partial group stopped
            "start:a",
            "start:b",
            "start:c", // attempt 2
        ]
    );
    assert_eq!(stats.restarts(), 2);
    assert_eq!(stats.start_failures(), 1);
    assert!(
        report
            .children
            .iter()
            .all(|c| c.status == ChildStatus::Running)
    );
    shutdown(&sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intensity_exceeded_escalates_to_parent_which_applies_its_strategy() {
    // root (one_for_all): [s, mid (one_for_one, 2 restarts / 60 s): [a, b, c]]
    let h = Harness::new();
    let mid = SupervisorSpec::new(Strategy::OneForOne)
        .with_intensity(2, Duration::from_secs(60))
        .child(h.child("a", Restart::Permanent))
        .child(h.child("b", Restart::Permanent))
        .child(h.child("c", Restart::Permanent));
    let mid_stats = mid.stats();
    let root = SupervisorSpec::new(Strategy::OneForAll)
        .with_intensity(5, Duration::from_secs(60))
        .child(h.child("s", Restart::Permanent))
        .child(ChildSpec::supervisor("mid", mid));
    let root_stats = root.stats();
    let (root, root_join) = start_supervisor(root, None).await.unwrap();
    assert_eq!(h.events(), ["start:s", "start:a", "start:b", "start:c"]);
    let mid_ref = which_child(&root, "mid", CALL).await.unwrap().unwrap();
    let mid_ref: ractor::ActorRef<beamq_supervisors::SupervisorMsg> = mid_ref.into();

    for n in 1..=2 {
        worker_of(&mid_ref, "b")
            .await
            .send_message(WorkerMsg::Panic)
            .unwrap();
        wait_until("b restarted", || mid_stats.child_exits() == n).await;
        inspect(&mid_ref, CALL).await.unwrap();
    }
    assert_eq!(mid_stats.restarts(), 2);
    let mark = h.len();
    worker_of(&mid_ref, "b")
        .await
        .send_message(WorkerMsg::Panic)
        .unwrap();
    wait_until("root restarted mid", || root_stats.child_exits() == 1).await;
    let report = inspect(&root, CALL).await.unwrap();
    assert_eq!(
        h.events_since(mark),
        [
            "stop:c", "stop:a", // mid gives up: its children in reverse order
            "stop:s", // root one_for_all: the sibling
            "start:s", "start:a", "start:b", "start:c", // everything again, in order
        ]
    );
    assert_eq!(mid_stats.escalations(), 1);
    assert_eq!(mid_stats.starts(), 2, "stats shared across incarnations");
    assert_eq!(root_stats.restarts(), 1);
    assert_eq!(root_stats.child_failures(), 1);
    let new_mid = report.children[1].actor_id.unwrap();
    assert_ne!(new_mid, mid_ref.get_id());
    assert_eq!(mid_ref.get_status(), ActorStatus::Stopped);

    let mark = h.len();
    shutdown(&root).await;
    root_join.await.unwrap();
    assert_eq!(
        h.events_since(mark),
        ["stop:c", "stop:b", "stop:a", "stop:s"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_intensity_escalates_on_first_restart() {
    let h = Harness::new();
    let (parent, probe_log) = probe().await;
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .with_intensity(0, Duration::from_secs(5))
        .child(h.child("a", Restart::Permanent))
        .child(h.child("b", Restart::Transient));
    let (sup, join) = start_supervisor(spec, Some(parent.clone())).await.unwrap();
    // A normal exit of a transient child is not a restart: no escalation.
    worker_of(&sup, "b")
        .await
        .send_message(WorkerMsg::Stop)
        .unwrap();
    wait_until_async("b stopped", || async {
        which_child(&sup, "b", CALL).await.unwrap().is_none()
    })
    .await;
    let mark = h.len();
    worker_of(&sup, "a")
        .await
        .send_message(WorkerMsg::Panic)
        .unwrap();
    join.await.unwrap();
    assert!(h.events_since(mark).is_empty(), "a died, b was not running");
    wait_until("parent sees failure", || {
        probe_log
            .lock()
            .iter()
            .any(|(_, e)| e.contains("restart intensity exceeded"))
    })
    .await;
    parent.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_stop_failures_do_not_break_the_supervisor() {
    for fault in [Fault::Panic, Fault::Err] {
        let h = Harness::new();
        h.plan("a").lock().post_stop = fault;
        h.plan("b").lock().post_stop = fault;
        let spec = SupervisorSpec::new(Strategy::OneForOne)
            .child(h.child("a", Restart::Transient))
            .child(h.child("b", Restart::Permanent))
            .child(h.child("c", Restart::Permanent));
        let stats = spec.stats();
        let (sup, join) = start_supervisor(spec, None).await.unwrap();

        // A normal stop whose post_stop fails is a failure: the transient child is restarted.
        let mark = h.len();
        worker_of(&sup, "a")
            .await
            .send_message(WorkerMsg::Stop)
            .unwrap();
        wait_until("a exit", || stats.child_exits() == 1).await;
        inspect(&sup, CALL).await.unwrap();
        assert_eq!(h.events_since(mark), ["stop:a", "start:a"], "{fault:?}");
        assert_eq!(stats.child_failures(), 1);

        // Stopped by the supervisor: the failure event of the old incarnation is ignored.
        terminate_child(&sup, "b", CALL).await.unwrap();
        let report = inspect(&sup, CALL).await.unwrap();
        assert_eq!(report.children.len(), 2);
        assert_eq!(stats.child_exits(), 1);
        assert_eq!(stats.restarts(), 1);

        // Shutdown goes on past a failing post_stop.
        let mark = h.len();
        shutdown(&sup).await;
        join.await.unwrap();
        assert_eq!(h.events_since(mark), ["stop:c", "stop:a"], "{fault:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_level_tree_starts_in_order_and_stops_in_reverse() {
    let h = Harness::new();
    let leaf = SupervisorSpec::new(Strategy::OneForOne)
        .child(h.child("c", Restart::Permanent))
        .child(h.child("d", Restart::Permanent));
    let mid = SupervisorSpec::new(Strategy::RestForOne)
        .child(h.child("b", Restart::Permanent))
        .child(ChildSpec::supervisor("leaf", leaf));
    let root = SupervisorSpec::new(Strategy::OneForAll)
        .with_name("three-level-root")
        .child(h.child("a", Restart::Permanent))
        .child(ChildSpec::supervisor("mid", mid))
        .child(h.child("e", Restart::Permanent));
    let (root, join) = start_supervisor(root, None).await.unwrap();
    assert_eq!(
        h.events(),
        ["start:a", "start:b", "start:c", "start:d", "start:e"]
    );
    let found = ractor::registry::where_is("three-level-root").unwrap();
    assert_eq!(found.get_id(), root.get_id());
    let mark = h.len();
    shutdown(&root).await;
    join.await.unwrap();
    assert_eq!(
        h.events_since(mark),
        ["stop:e", "stop:d", "stop:c", "stop:b", "stop:a"]
    );
    assert!(ractor::registry::where_is("three-level-root").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_that_ignores_stop_is_killed_after_its_grace() {
    let h = Harness::new();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(
            h.child("slow", Restart::Permanent)
                .with_shutdown(Duration::from_millis(100)),
        )
        .child(h.child("b", Restart::Permanent));
    let (sup, join) = start_supervisor(spec, None).await.unwrap();
    let slow = worker_of(&sup, "slow").await;
    slow.send_message(WorkerMsg::Busy(Duration::from_secs(3600)))
        .unwrap();
    wait_until("slow is busy", || {
        h.events().contains(&"busy:slow".to_string())
    })
    .await;
    let started = tokio::time::Instant::now();
    let mark = h.len();
    shutdown(&sup).await;
    join.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // Killed: no post_stop.
    assert_eq!(h.events_since(mark), ["stop:b"]);
    assert_eq!(slow.get_status(), ActorStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_and_dynamic_child_management() {
    let h = Harness::new();
    let spec = SupervisorSpec::new(Strategy::RestForOne)
        .with_name("api-sup")
        .with_intensity(7, Duration::from_secs(30))
        .child(h.child("a", Restart::Permanent));
    let (sup, join) = start_supervisor(spec, None).await.unwrap();

    let report = inspect(&sup, CALL).await.unwrap();
    assert_eq!(report.name.as_deref(), Some("api-sup"));
    assert_eq!(report.actor_id, sup.get_id());
    assert_eq!(report.strategy, Strategy::RestForOne);
    assert_eq!(report.intensity.max_restarts, 7);
    assert_eq!(report.intensity.period, Duration::from_secs(30));
    assert_eq!(report.restarts_in_window, 0);
    assert_eq!(report.stats.starts, 1);
    assert_eq!(report.children.len(), 1);
    let a = &report.children[0];
    assert_eq!(a.id, "a");
    assert_eq!(a.restart, Restart::Permanent);
    assert_eq!(a.kind, beamq_supervisors::ChildKind::Worker);
    assert_eq!(a.status, ChildStatus::Running);
    assert_eq!(a.actor_id, a.cell.as_ref().map(|c| c.get_id()));

    // StartChild appends and starts at once; duplicates refused.
    let b = start_child(&sup, h.child("b", Restart::Transient), CALL)
        .await
        .unwrap();
    // spawn returns once pre_start is done; ractor marks the actor Running a moment later.
    wait_until("b running", || b.get_status() == ActorStatus::Running).await;
    let dup = start_child(&sup, h.child("b", Restart::Permanent), CALL).await;
    assert!(matches!(dup, Err(SupervisorError::DuplicateChild(ref id)) if id == "b"));
    start_child(&sup, h.child("c", Restart::Permanent), CALL)
        .await
        .unwrap();
    assert_eq!(h.events(), ["start:a", "start:b", "start:c"]);

    // A child that fails to start is not added.
    h.plan("bad").lock().pre_start = Fault::Panic;
    h.plan("bad").lock().pre_start_faults = 1;
    let bad = start_child(&sup, h.child("bad", Restart::Permanent), CALL).await;
    assert!(matches!(bad, Err(SupervisorError::ChildStartFailed { ref id, .. }) if id == "bad"));

    // RestartChild: only that child, a new incarnation.
    let mark = h.len();
    let new_b = restart_child(&sup, "b", CALL).await.unwrap();
    assert_ne!(new_b.get_id(), b.get_id());
    assert_eq!(h.events_since(mark), ["stop:b", "start:b"]);

    // TerminateChild: stopped, removed, not restarted.
    let mark = h.len();
    terminate_child(&sup, "b", CALL).await.unwrap();
    assert_eq!(h.events_since(mark), ["stop:b"]);
    assert!(matches!(
        terminate_child(&sup, "b", CALL).await,
        Err(SupervisorError::NoSuchChild(_))
    ));
    assert!(matches!(
        restart_child(&sup, "nope", CALL).await,
        Err(SupervisorError::NoSuchChild(_))
    ));
    assert!(which_child(&sup, "b", CALL).await.unwrap().is_none());

    let report = inspect(&sup, CALL).await.unwrap();
    let ids: Vec<_> = report.children.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(report.stats.restarts, 0, "manual restarts are not counted");
    assert_eq!(
        report.stats.child_exits, 0,
        "exits we caused are not counted"
    );

    let mark = h.len();
    shutdown(&sup).await;
    join.await.unwrap();
    assert_eq!(h.events_since(mark), ["stop:c", "stop:a"]);
    assert!(matches!(
        inspect(&sup, CALL).await,
        Err(SupervisorError::NotRunning)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinked_child_is_linked_and_panicking_start_fn_is_a_start_failure() {
    let h = Harness::new();
    let worker = h.worker("u");
    let unlinked = ChildSpec::worker("u", Restart::Permanent, move |_sup| {
        let worker = worker.clone();
        async move { ractor::Actor::spawn(None, worker, ()).await }
    });
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(unlinked);
    let stats = spec.stats();
    let (sup, _join) = start_supervisor(spec, None).await.unwrap();
    let u = worker_of(&sup, "u").await;
    assert_eq!(
        u.try_get_supervisor().map(|s| s.get_id()),
        Some(sup.get_id())
    );
    u.send_message(WorkerMsg::Panic).unwrap();
    wait_until("u restarted", || stats.child_exits() == 1).await;
    let report = inspect(&sup, CALL).await.unwrap();
    assert_eq!(report.children[0].restarts, 1);

    // A start function that panics while polled, and one that panics before returning a future.
    let broken = ChildSpec::worker("broken", Restart::Permanent, |_sup| async move { buggy() });
    let err = start_child(&sup, broken, CALL).await.unwrap_err();
    assert!(err.to_string().contains("bug in start fn"), "{err}");
    let broken = ChildSpec::worker(
        "broken",
        Restart::Permanent,
        |_sup| -> std::future::Ready<Result<ractor::ActorCell, ractor::SpawnErr>> {
            panic!("sync bug in start fn")
        },
    );
    let err = start_child(&sup, broken, CALL).await.unwrap_err();
    assert!(err.to_string().contains("sync bug in start fn"), "{err}");
    assert!(inspect(&sup, CALL).await.is_ok(), "supervisor survived");
    shutdown(&sup).await;
}

fn buggy() -> Result<ractor::ActorCell, ractor::SpawnErr> {
    panic!("bug in start fn")
}
