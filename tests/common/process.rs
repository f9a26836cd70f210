//! `beamq start` as a child process: the binary as an operator runs it, for the CLI and cluster
//! tests. Output goes to files in the process's own directory (a pipe nobody reads could fill
//! up and block the broker); the process is killed on drop if still running.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::{WAIT, v3, v5};

pub const BIN: &str = env!("CARGO_BIN_EXE_beamq");

/// A command for the binary with no `BEAMQ__` variable inherited from the test's environment.
pub fn beamq() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BEAMQ__") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read the port, release it).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A `beamq start` child process with its own data directory; its output goes to files there
/// (a pipe nobody reads could fill up and block the broker). Killed on drop if still running.
pub struct Running {
    /// The process.
    pub child: Child,
    /// Its MQTT port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Running {
    pub fn spawn(port: u16) -> Running {
        Running::spawn_with(port, &[], &[])
    }

    /// `beamq start` on `port` with extra arguments and environment variables.
    pub fn spawn_with(port: u16, args: &[&str], env: &[(&str, &str)]) -> Running {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::fs::File::create(dir.path().join("stdout.log")).expect("log file");
        let err = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let child = beamq()
            .arg("start")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn beamq start");
        Running { child, port, dir }
    }

    /// Starts a broker and waits until its port accepts connections.
    pub async fn start() -> Running {
        let mut r = Running::spawn(free_port());
        r.wait_ready().await;
        r
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("beamq exited early with {status}:\n{}", self.logs());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "port never opened:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal to this child (by its pid) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit, for at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "beamq still running after {limit:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- stdout\n{}--- stderr\n{}",
            read("stdout.log"),
            read("stderr.log")
        )
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn v5_options(&self, id: &str) -> v5::MqttOptions {
        let mut o = v5::MqttOptions::new(id, "127.0.0.1", self.port);
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub fn v3_options(&self, id: &str) -> v3::MqttOptions {
        let mut o = v3::MqttOptions::new(id, "127.0.0.1", self.port);
        o.set_keep_alive(Duration::from_secs(30));
        o
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `beamq ctl --node NODE --cookie COOKIE ARGS...`: (exit code, stdout, stderr).
pub fn ctl(node: &str, cookie: &str, args: &[&str]) -> (i32, String, String) {
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

/// `beamq ctl ... ARGS --json`, which must succeed, parsed.
pub fn ctl_json(node: &str, cookie: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = ctl(node, cookie, &all);
    assert_eq!(code, 0, "ctl {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}
