//! `DynamicSupervisor`: many temporary children spawned by callers, exits counted and never
//! restarted, the supervisor unaffected by failures, and shutdown of thousands of children.

mod common;

use std::time::Duration;

use beamq_supervisors::{
    ChildSpec, DynamicSupervisorSpec, Restart, Strategy, SupervisorError, SupervisorMsg,
    SupervisorSpec, inspect, shutdown, start_dynamic_supervisor, start_supervisor, terminate_child,
    which_child,
};
use common::*;
use ractor::{Actor, ActorRef, ActorStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_children_some_fail_counters_exact_supervisor_survives() {
    let h = Harness::new();
    let spec = DynamicSupervisorSpec::new();
    let stats = spec.stats();
    let (sup, join) = start_dynamic_supervisor(spec, None).await.unwrap();

    let mut children: Vec<ActorRef<WorkerMsg>> = Vec::with_capacity(1000);
    for i in 0..1000 {
        let worker = h.worker(&format!("w{i}"));
        // Half through the helper, half with a plain spawn_linked: both are counted the same.
        let (child, _) = if i % 2 == 0 {
            sup.spawn_child(None, worker, ()).await.unwrap()
        } else {
            Actor::spawn_linked(None, worker, (), sup.cell())
                .await
                .unwrap()
        };
        children.push(child);
    }
    wait_until("all started", || stats.active() == 1000).await;
    assert_eq!(sup.count_children(), 1000);

    for (i, child) in children.iter().enumerate() {
        let msg = match i % 10 {
            0 => WorkerMsg::Panic,
            1 => WorkerMsg::Fail,
            2 => WorkerMsg::StopWith("boom".into()),
            _ => WorkerMsg::Stop,
        };
        child.send_message(msg).unwrap();
    }
    wait_until("all exited", || {
        stats.exited_normally() + stats.failed() == 1000
    })
    .await;
    assert_eq!(stats.started(), 1000);
    assert_eq!(stats.exited_normally(), 700);
    assert_eq!(stats.failed(), 300);
    assert_eq!(stats.active(), 0);
    wait_until("all unlinked", || sup.count_children() == 0).await;

    // Still running and answering.
    let report = sup.inspect(0, 10, CALL).await.unwrap();
    assert_eq!(report.linked_children, 0);
    assert_eq!(report.stats.failed, 300);
    assert_eq!(sup.actor().get_status(), ActorStatus::Running);
    // Never restarted: exactly 1000 starts were logged.
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e.starts_with("start:"))
            .count(),
        1000
    );

    shutdown(&sup.cell()).await;
    join.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_all_children_then_kills_stragglers() {
    let h = Harness::new();
    let spec = DynamicSupervisorSpec::new().with_shutdown(Duration::from_millis(300));
    let stats = spec.stats();
    let (sup, join) = start_dynamic_supervisor(spec, None).await.unwrap();
    let mut children = Vec::new();
    for i in 0..1000 {
        let (child, _) = sup
            .spawn_child(None, h.worker(&format!("w{i}")), ())
            .await
            .unwrap();
        children.push(child);
    }
    let (busy, _) = sup.spawn_child(None, h.worker("busy"), ()).await.unwrap();
    busy.send_message(WorkerMsg::Busy(Duration::from_secs(3600)))
        .unwrap();
    wait_until("busy", || h.events().contains(&"busy:busy".to_string())).await;

    let started = tokio::time::Instant::now();
    shutdown(&sup.cell()).await;
    join.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let stops = h.events().iter().filter(|e| e.starts_with("stop:")).count();
    assert_eq!(
        stops, 1000,
        "every idle child ran post_stop; the busy one was killed"
    );
    assert!(!h.events().contains(&"stop:busy".to_string()));
    assert!(
        children
            .iter()
            .all(|c| c.get_status() == ActorStatus::Stopped)
    );
    assert_eq!(busy.get_status(), ActorStatus::Stopped);
    assert_eq!(stats.active(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_children_and_paged_inspect() {
    let h = Harness::new();
    let spec = DynamicSupervisorSpec::new()
        .with_name("dyn-paged")
        .with_max_children(10);
    let (sup, join) = start_dynamic_supervisor(spec.clone(), None).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        let (child, _) = sup
            .spawn_child(None, h.worker(&format!("w{i}")), ())
            .await
            .unwrap();
        ids.push(child.get_id());
    }
    wait_until("gauge", || sup.stats().active() == 10).await;
    let err = sup
        .spawn_child(None, h.worker("extra"), ())
        .await
        .unwrap_err();
    assert!(matches!(err, SupervisorError::MaxChildren { max: 10 }));
    assert!(sup.check_capacity().is_err());

    ids.sort_unstable();
    let report = sup.inspect(3, 4, CALL).await.unwrap();
    assert_eq!(report.name.as_deref(), Some("dyn-paged"));
    assert_eq!(report.max_children, Some(10));
    assert_eq!(report.linked_children, 10);
    assert_eq!(report.offset, 3);
    assert_eq!(report.children, ids[3..7]);
    let tail = sup.inspect(8, 100, CALL).await.unwrap();
    assert_eq!(tail.children, ids[8..]);

    // Found by name, sharing the same stats.
    let by_name = spec.handle_by_name().unwrap();
    assert_eq!(by_name.cell().get_id(), sup.cell().get_id());
    assert_eq!(by_name.stats().active(), 10);

    shutdown(&sup.cell()).await;
    join.await.unwrap();
    assert!(spec.handle_by_name().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_supervisor_in_a_static_tree() {
    let h = Harness::new();
    let sessions = DynamicSupervisorSpec::new()
        .with_name("sessions-in-tree")
        .with_shutdown(Duration::from_secs(2));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(h.child("router", Restart::Permanent))
        .child(ChildSpec::dynamic_supervisor("sessions", sessions.clone()));
    let stats = spec.stats();
    let (root, join) = start_supervisor(spec, None).await.unwrap();
    let dyn_sup = sessions.handle_by_name().unwrap();
    for i in 0..50 {
        dyn_sup
            .spawn_child(None, h.worker(&format!("s{i}")), ())
            .await
            .unwrap();
    }
    wait_until("sessions up", || sessions.stats.active() == 50).await;

    // Killing the dynamic supervisor: ractor kills its children; the root restarts it.
    let old = dyn_sup.cell();
    old.kill();
    wait_until("restarted", || stats.child_exits() == 1).await;
    let new = which_child(&root, "sessions", CALL).await.unwrap().unwrap();
    assert_ne!(new.get_id(), old.get_id());
    assert_eq!(stats.child_failures(), 1, "killed is abnormal");
    assert_eq!(sessions.stats.active(), 0, "new incarnation starts empty");
    let dyn_sup = sessions.handle_by_name().unwrap();
    assert_eq!(dyn_sup.cell().get_id(), new.get_id());
    for i in 0..20 {
        dyn_sup
            .spawn_child(None, h.worker(&format!("t{i}")), ())
            .await
            .unwrap();
    }

    // TerminateChild of the dynamic supervisor stops all its children gracefully.
    let mark = h.len();
    terminate_child(&root, "sessions", CALL).await.unwrap();
    let stops = h.events_since(mark);
    assert_eq!(stops.len(), 20);
    assert!(stops.iter().all(|e| e.starts_with("stop:t")));
    let report = inspect(&root, CALL).await.unwrap();
    assert_eq!(report.children.len(), 1);
    let root_ref: ActorRef<SupervisorMsg> = root.clone();
    shutdown(&root_ref).await;
    join.await.unwrap();
}
