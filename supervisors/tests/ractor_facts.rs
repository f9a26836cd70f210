//! Plain ractor 0.16 behaviour this crate is designed around, pinned by tests so that an upgrade
//! that changes it fails here first.

mod common;

use std::time::Duration;

use common::*;
use ractor::{Actor, ActorStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_killed_without_post_stop_when_their_parent_stops() {
    let h = Harness::new();
    let (parent, _) = probe().await;
    let mut children = Vec::new();
    for id in ["a", "b", "c"] {
        let (c, _) = Actor::spawn_linked(None, h.worker(id), (), parent.clone())
            .await
            .unwrap();
        children.push(c);
    }
    parent.stop_and_wait(None, Some(CALL)).await.unwrap();
    for c in &children {
        c.wait(Some(CALL)).await.unwrap();
        assert_eq!(c.get_status(), ActorStatus::Stopped);
    }
    assert_eq!(
        h.events(),
        ["start:a", "start:b", "start:c"],
        "no post_stop ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_killed_when_their_parent_fails_and_parent_post_stop_is_skipped() {
    let h = Harness::new();
    let (parent, _) = Actor::spawn(None, h.worker("p"), ()).await.unwrap();
    let (child, _) = Actor::spawn_linked(None, h.worker("c"), (), parent.get_cell())
        .await
        .unwrap();
    parent.send_message(WorkerMsg::Panic).unwrap();
    child.wait(Some(CALL)).await.unwrap();
    parent.wait(Some(CALL)).await.unwrap();
    assert_eq!(h.events(), ["start:p", "start:c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_supervisor_handler_stops_the_parent_when_a_child_exits() {
    let h = Harness::new();
    let (parent, _) = Actor::spawn(None, h.worker("p"), ()).await.unwrap();
    let (child, _) = Actor::spawn_linked(None, h.worker("c"), (), parent.get_cell())
        .await
        .unwrap();
    child.send_message(WorkerMsg::Stop).unwrap();
    parent.wait(Some(CALL)).await.unwrap();
    assert_eq!(h.events(), ["start:p", "start:c", "stop:c", "stop:p"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_in_pre_start_fails_spawn_and_sends_no_event() {
    let h = Harness::new();
    let (parent, log) = probe().await;
    h.plan("c").lock().pre_start = Fault::Panic;
    h.plan("c").lock().pre_start_faults = 1;
    let err = Actor::spawn_linked(None, h.worker("c"), (), parent.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pre_start panic in c"), "{err}");
    // A second child that starts and stops gives a later event to wait for.
    let (ok, _) = Actor::spawn_linked(None, h.worker("d"), (), parent.clone())
        .await
        .unwrap();
    ok.stop(None);
    wait_until("d's exit", || {
        log.lock()
            .iter()
            .any(|(id, e)| *id == ok.get_id() && e.starts_with("terminated"))
    })
    .await;
    assert!(log.lock().iter().all(|(id, _)| *id == ok.get_id()));
    assert!(parent.get_children().is_empty());
    parent.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_and_err_in_handle_reach_the_supervisor_as_failed_without_post_stop() {
    let h = Harness::new();
    let (parent, log) = probe().await;
    let (a, _) = Actor::spawn_linked(None, h.worker("a"), (), parent.clone())
        .await
        .unwrap();
    let (b, _) = Actor::spawn_linked(None, h.worker("b"), (), parent.clone())
        .await
        .unwrap();
    a.send_message(WorkerMsg::Panic).unwrap();
    b.send_message(WorkerMsg::Fail).unwrap();
    wait_until("both failed", || {
        log.lock()
            .iter()
            .filter(|(_, e)| e.starts_with("failed:"))
            .count()
            == 2
    })
    .await;
    assert_eq!(h.events(), ["start:a", "start:b"]);
    parent.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_does_not_interrupt_a_running_handler() {
    let h = Harness::new();
    let (a, _) = Actor::spawn(None, h.worker("a"), ()).await.unwrap();
    a.send_message(WorkerMsg::Busy(Duration::from_millis(300)))
        .unwrap();
    wait_until("busy", || h.events().contains(&"busy:a".to_string())).await;
    let t = tokio::time::Instant::now();
    a.stop_and_wait(None, Some(CALL)).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "stop waited for the handler"
    );
    assert_eq!(h.events(), ["start:a", "busy:a", "stop:a"]);
}
