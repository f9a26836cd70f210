//! The `beamq` binary as an operator runs it: `--print-config` with the layers it reflects
//! (defaults, `--config` file, `BEAMQ__` environment, flags), configuration errors that name the
//! key, graceful shutdown on SIGTERM and SIGINT (v5 clients get DISCONNECT 0x8B, exit status 0),
//! and a clear failure when the port is taken.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use beamq_actors::config::{Config, DurationStr};
use beamq_protocol::{BytesMut, Packet, ProtocolVersion, ReasonCode, codec};
use common::process::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs to completion with a deadline (these commands never start a node).
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn beamq");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("beamq did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse(stdout: &[u8]) -> Config {
    let s = text(stdout);
    toml::from_str(&s).unwrap_or_else(|e| panic!("printed config is not valid TOML: {e}\n{s}"))
}

fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write file");
    path
}

// ---------------------------------------------------------------------------------------------
// --print-config
// ---------------------------------------------------------------------------------------------

#[test]
fn print_config_prints_the_defaults_as_toml() {
    // `beamq --print-config` and `beamq start --print-config` print the effective
    // configuration and exit 0 without starting a node.
    for args in [&["--print-config"][..], &["start", "--print-config"]] {
        let out = run(beamq().args(args));
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let s = text(&out.stdout);
        for key in [
            "[node]",
            "[listeners.tcp.default]",
            "[mqtt]",
            "max_inflight = 32",
            "connect_timeout = \"15s\"",
            "max_packet_size = \"1MB\"",
            "[debug]",
            "fault_injection = false",
        ] {
            assert!(s.contains(key), "{args:?}: `{key}` missing in:\n{s}");
        }
        assert_eq!(parse(&out.stdout), Config::default(), "{args:?}");
    }
}

#[test]
fn print_config_reflects_file_environment_and_flags_in_that_order() {
    // DESIGN §7: defaults < --config file < BEAMQ__SECTION__KEY < flags.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write_file(
        dir.path(),
        "beamq.toml",
        "[mqtt]\nmax_clients = 5\nmax_inflight = 3\n\n[log]\nlevel = \"error\"\n",
    );
    let data = dir.path().join("somewhere");
    let out = run(beamq()
        .arg("start")
        .arg("--print-config")
        .arg("--config")
        .arg(&file)
        .arg("--listen")
        .arg("127.0.0.1:2999")
        .arg("--data-dir")
        .arg(&data)
        .arg("--log-level")
        .arg("debug")
        .env("BEAMQ__MQTT__MAX_INFLIGHT", "7")
        .env("BEAMQ__MQTT__CONNECT_TIMEOUT", "500ms")
        .env("BEAMQ__LOG__LEVEL", "warn"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let c = parse(&out.stdout);
    assert_eq!(c.mqtt.max_clients, 5, "from the file");
    assert_eq!(c.mqtt.max_inflight, 7, "environment over file");
    assert_eq!(
        c.mqtt.connect_timeout,
        DurationStr(Some(Duration::from_millis(500))),
        "from the environment"
    );
    assert_eq!(c.log.level, "debug", "flag over environment and file");
    assert_eq!(
        c.listeners.tcp["default"].bind.to_string(),
        "127.0.0.1:2999"
    );
    assert_eq!(c.node.data_dir, data);
    assert!(!data.exists(), "--print-config starts nothing");
    // Global flag before the subcommand works too.
    let out = run(beamq()
        .arg("--print-config")
        .arg("--listen")
        .arg("127.0.0.1:3999"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        parse(&out.stdout).listeners.tcp["default"].bind.to_string(),
        "127.0.0.1:3999"
    );
}

#[test]
fn invalid_configuration_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let typo = write_file(dir.path(), "typo.toml", "[mqtt]\nmax_infligth = 3\n");
    let not_toml = write_file(dir.path(), "broken.toml", "[mqtt\nmax_inflight = \n");
    let missing = dir.path().join("missing.toml");
    let data = dir.path().join("data");
    let cases: Vec<(Command, &str)> = vec![
        {
            let mut c = beamq();
            c.arg("start").env("BEAMQ__MQTT__CONNECT_TIMEOUT", "soon");
            (c, "mqtt.connect_timeout")
        },
        {
            let mut c = beamq();
            c.arg("start").env("BEAMQ__MQTT__RECEIVE_MAXIMUM", "0");
            (c, "mqtt.receive_maximum")
        },
        {
            let mut c = beamq();
            c.arg("start").env("BEAMQ__MQTT__MAX_INFLIGTH", "4");
            (c, "max_infligth")
        },
        {
            let mut c = beamq();
            c.arg("start").arg("--config").arg(&typo);
            (c, "max_infligth")
        },
        {
            let mut c = beamq();
            c.arg("start").arg("--config").arg(&not_toml);
            (c, "broken.toml")
        },
        {
            let mut c = beamq();
            c.arg("start").arg("--config").arg(&missing);
            (c, "missing.toml")
        },
        {
            let mut c = beamq();
            c.arg("start").arg("--listen").arg("not-an-address");
            (c, "listeners.tcp.default.bind")
        },
        {
            let mut c = beamq();
            c.arg("--print-config")
                .arg("--listen")
                .arg("127.0.0.1:99999");
            (c, "listeners.tcp.default.bind")
        },
    ];
    for (mut cmd, key) in cases {
        cmd.arg("--data-dir").arg(&data);
        let out = run(&mut cmd);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{cmd:?} must fail");
        assert!(
            err.contains(key),
            "{cmd:?}: the error must name `{key}`:\n{err}"
        );
        assert!(out.stdout.is_empty(), "{cmd:?}: nothing printed on stdout");
        assert!(!data.exists(), "{cmd:?}: no node was started");
    }
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// Reads one packet sent by the broker (5.0 framing); `None` once the connection is closed.
async fn read_packet(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    loop {
        match codec::decode(buf, ProtocolVersion::V5, u32::MAX) {
            Ok(Some(p)) => return Some(p),
            Ok(None) => {}
            Err(e) => panic!("broker sent an undecodable packet: {e}"),
        }
        match within("packet", stream.read_buf(buf)).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Connects a raw v5 client (rumqttc 0.25 loses a DISCONNECT without properties, see
/// `v5_disconnect_reason`), a 3.1.1 client with a will and a subscriber to that will; sends
/// `sig`; checks the v5 client's DISCONNECT 0x8B and the exit status 0.
async fn graceful_shutdown_on(sig: &str) {
    let mut broker = Running::start().await;
    let mut raw5 = TcpStream::connect(("127.0.0.1", broker.port))
        .await
        .expect("connect");
    let mut buf = BytesMut::new();
    raw5.write_all(&Raw::connect_v5("cli-v5"))
        .await
        .expect("write");
    match read_packet(&mut raw5, &mut buf).await {
        Some(Packet::Connack(c)) => assert_eq!(c.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let mut will_sub = v3::Client::connect_with(broker.v3_options("cli-will-sub")).await;
    will_sub.subscribe("cli/#", v3::QoS::AtLeastOnce).await;
    let mut o = broker.v3_options("cli-v3");
    o.set_last_will(v3::LastWill::new(
        "cli/will",
        "gone",
        v3::QoS::AtLeastOnce,
        false,
    ));
    let mut v3c = v3::Client::connect_with(o).await;
    // The node works before the signal.
    v3c.publish("cli/hello", v3::QoS::AtLeastOnce, false, b"hi")
        .await;
    assert_eq!(&will_sub.next_publish().await.payload[..], b"hi");

    broker.signal(sig);
    // 5.0: the server says why it closes (§3.14.2.1, 0x8B Server shutting down), then closes.
    // Wills are published as the sessions end; whether the will subscriber, itself being
    // disconnected, still gets it depends on the order of the shutdown, so it is not asserted.
    match read_packet(&mut raw5, &mut buf).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::ServerShuttingDown),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    assert_eq!(
        read_packet(&mut raw5, &mut buf).await,
        None,
        "then the close"
    );
    let closed = v3c.closed().await;
    assert!(!closed.is_empty());
    let status = broker.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}:\n{}", broker.logs());
    assert!(
        !broker.stderr().lines().any(|l| l.starts_with("beamq: ")),
        "no error reported:\n{}",
        broker.logs()
    );
    // The port is released.
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", broker.port)).is_ok(),
        "port still taken after exit"
    );
}

#[tokio::test]
async fn sigterm_disconnects_clients_and_exits_0() {
    graceful_shutdown_on("TERM").await;
}

#[tokio::test]
async fn sigint_disconnects_clients_and_exits_0() {
    graceful_shutdown_on("INT").await;
}

#[tokio::test]
async fn second_broker_on_the_same_port_fails_with_a_clear_error() {
    let mut first = Running::start().await;
    let mut second = Running::spawn(first.port);
    let status = second.wait_exit(WAIT).await;
    assert!(!status.success(), "second broker must fail");
    let err = second.stderr();
    let addr = format!("127.0.0.1:{}", first.port);
    assert!(err.contains(&addr), "the error names the address:\n{err}");
    assert!(
        err.to_lowercase().contains("in use"),
        "the error says why:\n{err}"
    );
    // The first one is unaffected.
    let c = v5::Client::connect_with(first.v5_options("still-first")).await;
    c.disconnect().await;
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(10)).await.success());
}
