//! `beamq ctl` against running `beamq` processes: the admin socket found from the node name,
//! the cookie checked, tables and `--json`, and the commands that exist so far.

mod common;

use common::process::*;
use common::*;
use serde_json::Value;
use v5::QoS;

/// `beamq ctl --node NODE --cookie COOKIE ARGS...`: (exit code, stdout, stderr).
fn ctl(node: &str, cookie: &str, args: &[&str]) -> (i32, String, String) {
    let out = beamq()
        .args(["ctl", "--node", node, "--cookie", cookie])
        .args(args)
        .output()
        .expect("run beamq ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ctl_json(node: &str, cookie: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = ctl(node, cookie, &all);
    assert_eq!(code, 0, "ctl {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_status_clients_and_kick_on_a_standalone_node() {
    let node = "adm1@127.0.0.1";
    let mut r = Running::spawn_with(
        free_port(),
        &[],
        &[
            ("BEAMQ__NODE__NAME", node),
            ("BEAMQ__CLUSTER__COOKIE", "k1"),
        ],
    );
    r.wait_ready().await;
    eventually("admin socket", || beamq::admin::socket_path(node).exists()).await;

    let status = ctl_json(node, "k1", &["status"]);
    assert_eq!(status["node"], node);
    assert!(status["actors"].as_u64().is_some_and(|n| n > 5), "{status}");
    assert!(
        status["rss_bytes"].as_u64().is_some_and(|n| n > 0),
        "{status}"
    );

    let mut c = v5::Client::connect_with(r.v5_options("seen-by-ctl")).await;
    c.subscribe("x", QoS::AtMostOnce).await;
    let clients = ctl_json(node, "k1", &["clients", "list"]);
    let ids: Vec<&str> = clients
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["client_id"].as_str())
        .collect();
    assert_eq!(ids, ["seen-by-ctl"]);
    // The readable form is a table with a header.
    let (code, table, _) = ctl(node, "k1", &["clients", "list"]);
    assert_eq!(code, 0);
    assert!(table.starts_with("client_id"), "{table}");
    assert!(table.contains("seen-by-ctl"), "{table}");

    let kicked = ctl_json(node, "k1", &["clients", "kick", "seen-by-ctl"]);
    assert_eq!(kicked["kicked"], "seen-by-ctl");
    let d = c.closed().await.expect("DISCONNECT");
    assert_eq!(
        d.reason_code,
        v5::DisconnectReasonCode::AdministrativeAction
    );

    // Refusals: wrong cookie, unknown command, unknown client, nobody at that name.
    let (code, _, err) = ctl(node, "not-it", &["status"]);
    assert_eq!(code, 1);
    assert!(err.contains("wrong cookie"), "{err}");
    let (code, _, err) = ctl(node, "k1", &["frobnicate"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown command"), "{err}");
    let (code, _, err) = ctl(node, "k1", &["clients", "kick", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no session"), "{err}");
    let (code, _, err) = ctl("nosuchnode@127.0.0.1", "k1", &["status"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");

    // The socket goes with the node.
    r.signal("TERM");
    r.wait_exit(WAIT).await;
    assert!(!beamq::admin::socket_path(node).exists());
}
