//! The admin endpoint of a node and `beamq ctl`, its command-line client (DESIGN §6).
//!
//! A node listens on a unix socket whose path follows from its node name alone
//! ([`socket_path`]), so `beamq ctl --node NAME@HOST` finds it without any other
//! configuration, as `emqx ctl` finds its node. The socket is created mode 0600 and every
//! request carries the cookie, checked before anything runs: only local users who know the
//! cookie get in.
//!
//! One request per connection: a JSON line `{"cookie": ..., "args": [...]}`, answered by one
//! JSON line `{"ok": VALUE}` or `{"error": "..."}` (a `trace` first streams `{"event": LINE}`
//! lines). `ctl` prints VALUE as a table, or as JSON with `--json`.

pub mod actors;
pub mod client;
pub mod commands;
pub mod server;
pub mod shell;
pub mod trace;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest request accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The admin socket of node `node` (a node name, `name@host`).
pub fn socket_path(node: &str) -> PathBuf {
    let safe: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    std::env::temp_dir().join(format!("beamq-{safe}.sock"))
}

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The node's cookie.
    pub cookie: String,
    /// The command and its arguments, as typed after `beamq ctl`.
    pub args: Vec<String>,
}

/// One answer line. A streaming command (`trace`) sends `Event` lines, then one `Ok` or
/// `Error` line that ends the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// One line of a stream.
    Event(serde_json::Value),
    /// The command's result.
    Ok(serde_json::Value),
    /// Why it failed.
    Error(String),
}
