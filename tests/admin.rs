//! `beamq ctl` against running `beamq` processes: the admin socket found from the node name,
//! the cookie checked, tables and `--json`, and the commands that exist so far.

mod common;

use common::process::*;
use common::*;
use serde_json::Value;
use v5::QoS;

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
    let ids: Vec<&str> = clients["rows"]
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

    // The interactive shell reads commands line by line (here from a pipe) until `quit`.
    let mut shell = beamq()
        .args(["shell", "--node", node, "--cookie", "k1"])
        .env("HOME", std::env::temp_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("beamq shell");
    {
        use std::io::Write;
        let mut stdin = shell.stdin.take().expect("stdin");
        stdin
            .write_all(b"status\nfrobnicate\nclients list --json\nquit\n")
            .expect("write");
    }
    let out = shell.wait_with_output().expect("shell output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("node               {node}")),
        "{stdout}"
    );
    assert!(stdout.contains("[]"), "JSON answer in the shell: {stdout}");
    assert!(stderr.contains("unknown command `frobnicate`"), "{stderr}");

    // The socket goes with the node.
    r.signal("TERM");
    r.wait_exit(WAIT).await;
    assert!(!beamq::admin::socket_path(node).exists());
}

fn row<'a>(tree: &'a Value, name: &str) -> &'a Value {
    tree.as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"].as_str().is_some_and(|n| n.trim() == name))
        .unwrap_or_else(|| panic!("no {name} in {tree}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_tree_kill_routes_retained_and_log_level() {
    let node = "adm2@127.0.0.1";
    let mut r = Running::spawn_with(
        free_port(),
        &[],
        &[
            ("BEAMQ__NODE__NAME", node),
            ("BEAMQ__CLUSTER__COOKIE", "k2"),
        ],
    );
    r.wait_ready().await;
    eventually("admin socket", || beamq::admin::socket_path(node).exists()).await;

    let tree = ctl_json(node, "k2", &["tree"]);
    for name in [
        "beamq",
        "router_sup",
        "router-0",
        "router-3",
        "retainer",
        "registry",
        "session_sup",
        "admin",
    ] {
        row(&tree, name);
    }
    assert!(
        row(&tree, "router_sup")["kind"]
            .as_str()
            .is_some_and(|k| k.contains("one_for_one"))
    );
    // Start order, depth first: the routers come right after their supervisor.
    let names: Vec<String> = tree
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").trim().to_string())
        .collect();
    let at = |n: &str| names.iter().position(|x| x == n).expect("present");
    assert!(
        at("router_sup") < at("router-0") && at("router-3") < at("broker_sup"),
        "{names:?}"
    );

    // Kill a router: its supervisor restarts it, counted, and routing keeps working.
    let mut sub = v5::Client::connect_with(r.v5_options("kill-watch")).await;
    sub.subscribe("k/+", QoS::AtLeastOnce).await;
    let before = row(&tree, "router-1")["actor_id"].clone();
    let killed = ctl_json(node, "k2", &["actor", "kill", "router-1"]);
    assert_eq!(killed["killed"], "router-1");
    let mut after = Value::Null;
    eventually("router-1 restarted", || {
        after = ctl_json(node, "k2", &["tree"]);
        let r1 = row(&after, "router-1");
        r1["restarts"] == 1 && r1["status"] == "running" && r1["actor_id"] != before
    })
    .await;
    let mut publ = v5::Client::connect_with(r.v5_options("kill-pub")).await;
    publ.publish("k/x", QoS::AtLeastOnce, true, b"still routed")
        .await;
    let p = within("delivery after the kill", sub.next_publish()).await;
    assert_eq!(p.payload.as_ref(), b"still routed");

    // Routes and retained messages.
    let routes = ctl_json(node, "k2", &["routes", "k/+"]);
    assert_eq!(
        routes["local_subscribers"],
        serde_json::json!(["kill-watch"])
    );
    let retained = ctl_json(node, "k2", &["retained", "list", "k/#"]);
    assert_eq!(retained[0]["topic"], "k/x");
    assert_eq!(retained[0]["bytes"], 12);
    let cleaned = ctl_json(node, "k2", &["retained", "clean"]);
    assert!(
        cleaned["removed"].as_u64().is_some_and(|n| n >= 1),
        "{cleaned}"
    );
    assert_eq!(
        ctl_json(node, "k2", &["retained", "list", "k/#"]),
        serde_json::json!([])
    );

    // Log level at run time: debug lines appear after the change.
    assert!(!r.logs().contains("DEBUG"));
    ctl_json(node, "k2", &["log", "level", "debug"]);
    // A closing connection logs at debug level ("connection closed").
    let c = v5::Client::connect_with(r.v5_options("after-debug")).await;
    c.disconnect().await;
    eventually("debug lines", || r.logs().contains("DEBUG")).await;
    let (code, _, err) = ctl(node, "k2", &["log", "level", "no=such=level"]);
    assert_eq!(code, 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_clients_show_subscriptions_and_sessions_top() {
    let node = "adm3@127.0.0.1";
    let mut r = Running::spawn_with(
        free_port(),
        &[],
        &[
            ("BEAMQ__NODE__NAME", node),
            ("BEAMQ__CLUSTER__COOKIE", "k3"),
        ],
    );
    r.wait_ready().await;
    eventually("admin socket", || beamq::admin::socket_path(node).exists()).await;

    // A persistent session that is offline with messages queued, and a connected client.
    let mut o = r.v5_options("sleeper");
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(300));
    let mut sleeper = v5::Client::connect_with(o).await;
    sleeper.subscribe("q/#", QoS::AtLeastOnce).await;
    sleeper.kill();
    let mut p = v5::Client::connect_with(r.v5_options("talker")).await;
    p.subscribe("other", QoS::AtMostOnce).await;
    eventually("sleeper offline", || {
        let clients = ctl_json(node, "k3", &["clients", "list"]);
        clients["rows"].as_array().is_some_and(|a| {
            a.iter()
                .any(|c| c["client_id"] == "sleeper" && c["connected"] == false)
        })
    })
    .await;
    for i in 0..5 {
        p.publish("q/x", QoS::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
    }

    let show = ctl_json(node, "k3", &["clients", "show", "talker"]);
    assert_eq!(show["version"], "5.0", "{show}");
    assert!(
        show["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{show}"
    );
    assert_eq!(show["subscriptions"], 1);
    let subs = ctl_json(node, "k3", &["subscriptions", "show", "sleeper"]);
    assert_eq!(subs[0]["filter"], "q/#");
    assert_eq!(subs[0]["qos"], 1);

    let mut top = Value::Null;
    eventually("sleeper holds the 5 messages", || {
        top = ctl_json(
            node,
            "k3",
            &["sessions", "top", "--by", "queue", "--n", "1"],
        );
        top[0]["client_id"] == "sleeper" && top[0]["pending"] == 5
    })
    .await;
    assert_eq!(top.as_array().map(Vec::len), Some(1));
    // By bytes: five messages of topic "q/x" (3 bytes) and a one-byte payload.
    let top = ctl_json(node, "k3", &["sessions", "top", "--by", "bytes"]);
    assert_eq!(top[0]["client_id"], "sleeper", "{top}");
    assert_eq!(top[0]["pending_bytes"], 5 * 4, "{top}");
    let (code, _, err) = ctl(node, "k3", &["sessions", "top", "--by", "age"]);
    assert_eq!(code, 1);
    assert!(err.contains("usage"), "{err}");
}

fn find<'a>(rows: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|r| r[key] == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_actors_top_actor_show_listings_paged_and_trace() {
    let node = "adm4@127.0.0.1";
    let mut r = Running::spawn_with(
        free_port(),
        &[],
        &[
            ("BEAMQ__NODE__NAME", node),
            ("BEAMQ__CLUSTER__COOKIE", "k4"),
            ("BEAMQ__SYS__INTERVAL", "0s"),
        ],
    );
    r.wait_ready().await;
    eventually("admin socket", || beamq::admin::socket_path(node).exists()).await;

    // Three subscribers and a publisher.
    let mut subs = Vec::new();
    for i in 0..3 {
        let mut c = v5::Client::connect_with(r.v5_options(&format!("sub-{i}"))).await;
        c.subscribe(&format!("t/{i}"), QoS::AtMostOnce).await;
        subs.push(c);
    }
    let mut publisher = v5::Client::connect_with(r.v5_options("pub")).await;

    // Paged listings: two rows, then the rest after the last key shown.
    let page = ctl_json(node, "k4", &["clients", "list", "--n", "2"]);
    assert_eq!(page["rows"].as_array().map(Vec::len), Some(2), "{page}");
    assert_eq!(page["next"], "sub-0", "{page}");
    let rest = ctl_json(node, "k4", &["clients", "list", "--after", "sub-0"]);
    let ids: Vec<&str> = rest["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|c| c["client_id"].as_str())
        .collect();
    assert_eq!(ids, ["sub-1", "sub-2"]);
    assert!(rest["next"].is_null(), "{rest}");
    let subscriptions = ctl_json(node, "k4", &["subscriptions", "list"]);
    let rows = &subscriptions["rows"];
    assert_eq!(rows.as_array().map(Vec::len), Some(3), "{subscriptions}");
    assert_eq!(
        find(rows, "filter", "t/1").expect("t/1")["client_id"],
        "sub-1"
    );
    let (_, table, _) = ctl(node, "k4", &["subscriptions", "list", "--n", "1"]);
    assert!(table.contains("(more: add --after"), "{table}");

    // A trace of sub-1 while messages flow to it: the delivery appears in the stream.
    let trace = tokio::task::spawn_blocking(move || {
        ctl(node, "k4", &["trace", "client", "sub-1", "--for", "2"])
    });
    let mut traced = String::new();
    for n in 0..30 {
        publisher
            .publish("t/1", QoS::AtMostOnce, false, format!("m{n}").as_bytes())
            .await;
        subs[1].next_publish().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (code, out, err) = trace.await.expect("trace ran");
    assert_eq!(code, 0, "{err}");
    traced.push_str(&out);
    assert!(
        traced.contains("sub-1 <- PUBLISH topic=t/1 qos=0 payload="),
        "{traced}"
    );
    assert!(!traced.contains("sub-0"), "{traced}");
    // The closing line says how many lines went out.
    assert!(traced.contains("lines"), "{traced}");
    // A trace whose ctl goes away stops on the node at once, not when its time is up.
    let mut long = beamq()
        .args(["ctl", "--node", node, "--cookie", "k4"])
        .args(["trace", "topic", "t/#", "--for", "60"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ctl trace");
    eventually("the trace runs", || {
        ctl_json(node, "k4", &["status"])["traces_running"] == 1
    })
    .await;
    long.kill().expect("kill ctl");
    let _ = long.wait();
    eventually("the trace stopped with its ctl", || {
        ctl_json(node, "k4", &["status"])["traces_running"] == 0
    })
    .await;
    let (code, _, err) = ctl(node, "k4", &["trace", "topic", "a/#/b"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a valid topic filter"), "{err}");

    // actors top: every actor of the node with its counters; sub-1's actor handled the
    // deliveries and its mailbox is empty now.
    let top = ctl_json(
        node,
        "k4",
        &[
            "actors",
            "top",
            "--by",
            "rate",
            "--n",
            "100",
            "--interval",
            "100",
        ],
    );
    let me = find(&top, "name", "sub-1").expect("sub-1 listed");
    assert_eq!(me["kind"], "client");
    assert_eq!(me["mailbox"], 0);
    assert!(me["handled"].as_u64().is_some_and(|n| n >= 30), "{me}");
    assert_eq!(me["supervisor"], "session_sup", "{me}");
    for kind in [
        "router",
        "registry",
        "retainer",
        "listener",
        "supervisor",
        "admin",
    ] {
        assert!(find(&top, "kind", kind).is_some(), "no {kind} in {top}");
    }
    // Sorted by what was asked.
    let mem = ctl_json(node, "k4", &["actors", "top", "--by", "memory", "--n", "3"]);
    let m: Vec<u64> = mem
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["memory_est"].as_u64())
        .collect();
    assert!(m.windows(2).all(|w| w[0] >= w[1]), "{mem}");

    // actor show, by child name and by client id: counters and the actor's own summary.
    let router = ctl_json(node, "k4", &["actor", "show", "router-0"]);
    assert_eq!(router["kind"], "router", "{router}");
    assert_eq!(router["supervisor"], "router_sup", "{router}");
    assert!(
        router["state"]["subscriptions added"]
            .as_str()
            .is_some_and(|n| n.parse::<u64>().is_ok()),
        "{router}"
    );
    let client = ctl_json(node, "k4", &["actor", "show", "sub-2"]);
    assert_eq!(client["kind"], "client");
    assert_eq!(client["state"]["client id"], "sub-2", "{client}");
    assert_eq!(client["state"]["subscriptions"], "1", "{client}");
    let (code, table, _) = ctl(node, "k4", &["actor", "show", "registry"]);
    assert_eq!(code, 0);
    assert!(table.contains("sessions"), "{table}");
    let (code, _, err) = ctl(node, "k4", &["actor", "show", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no actor"), "{err}");

    // status carries the memory estimate by subsystem.
    let status = ctl_json(node, "k4", &["status"]);
    assert!(
        status["memory_est"]["actors"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{status}"
    );
    assert!(status["actors_probed"].as_u64().is_some_and(|n| n >= 10));
}
