//! The commands of the admin endpoint. Each returns a JSON value that `ctl` prints as a table
//! (an array of objects), as `key value` lines (an object), or as JSON with `--json`.
//!
//! Commands only read the shared tables and counters, or ask the actors that own a piece of
//! state (membership, bridge, a client); nothing here blocks the broker.

use beamq_actors::Broker;
use beamq_actors::client::ClientMsg;
use beamq_protocol::ReasonCode;
use serde_json::{Value, json};

/// The commands, for `help` (and the shell's completion later).
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "status",
        "version, uptime, node, actors, memory, connections, messages",
    ),
    ("cluster status", "members, links, per-peer send window"),
    (
        "cluster join NODE",
        "link with NODE and, through it, its cluster",
    ),
    (
        "cluster leave",
        "leave the cluster (every peer forgets this node)",
    ),
    (
        "cluster force-leave NODE",
        "remove NODE (gone for good) from the cluster",
    ),
    ("clients list", "client ids with a session on this node"),
    (
        "clients kick ID",
        "disconnect a client (v5: DISCONNECT 0x98) and end its session",
    ),
    ("help", "this list"),
];

/// Runs one command.
pub async fn run(broker: &Broker, args: &[String]) -> Result<Value, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["status"] => Ok(status(broker)),
        ["cluster", "status"] => Ok(cluster_status(broker).await),
        ["cluster", "join", node] => {
            broker.cluster.join(node).await?;
            Ok(json!({ "joining": node }))
        }
        ["cluster", "leave"] => {
            broker.cluster.leave()?;
            Ok(json!({ "left": broker.config.node.name }))
        }
        ["cluster", "force-leave", node] => {
            broker.cluster.force_leave(node)?;
            Ok(json!({ "removed": node }))
        }
        ["clients", "list"] => Ok(clients(broker)),
        ["clients", "kick", id] => kick(broker, id),
        ["help"] | [] => Ok(Value::Array(
            COMMANDS
                .iter()
                .map(|(c, what)| json!({ "command": c, "does": what }))
                .collect(),
        )),
        _ => Err(format!("unknown command `{}`; try `help`", args.join(" "))),
    }
}

fn status(broker: &Broker) -> Value {
    let m = &broker.metrics;
    json!({
        "node": broker.config.node.name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": broker.started_at.elapsed().as_secs(),
        "actors": ractor::registry::pid_registry::get_all_pids().len(),
        "rss_bytes": rss_bytes(),
        "open_fds": open_fds(),
        "connections": m.connections.get(),
        "sessions": m.sessions.get(),
        "subscriptions": broker.routes.subscription_count(),
        "routes": broker.routes.filter_count(),
        "retained": broker.retained.len(),
        "messages_received": m.messages_received.get(),
        "messages_sent": m.messages_sent.get(),
        "messages_dropped": m.messages_dropped(),
        "cluster_peers": broker.cluster.peers().len(),
        "cluster_routes": broker.cluster.routes.len(),
    })
}

async fn cluster_status(broker: &Broker) -> Value {
    let (members, peers) = broker.cluster.status().await;
    let rows: Vec<Value> = members
        .iter()
        .map(|m| {
            let peer = peers.iter().find(|p| p.name == m.name);
            json!({
                "member": m.name,
                "address": m.addr,
                "linked": peer.is_some(),
                "last_heard_ms": peer.map(|p| p.last_heard_ms),
                "send_window_used": peer.map(|p| p.in_flight),
                "routes": peer.map(|p| p.routes),
            })
        })
        .collect();
    json!({
        "node": broker.config.node.name,
        "cluster": broker.config.cluster.enable,
        "members": rows,
    })
}

fn clients(broker: &Broker) -> Value {
    let mut all = broker.sessions.all();
    all.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    Value::Array(
        all.iter()
            .map(|c| {
                json!({
                    "client_id": &*c.client_id,
                    "connected": c.is_online(),
                    "mailbox": c.queued(),
                })
            })
            .collect(),
    )
}

fn kick(broker: &Broker, id: &str) -> Result<Value, String> {
    let client = broker
        .sessions
        .get(id)
        .ok_or_else(|| format!("no session with client id `{id}`"))?;
    client
        .actor
        .cast(ClientMsg::Kick {
            reason: ReasonCode::AdministrativeAction,
            end_session: true,
        })
        .map_err(|e| e.to_string())?;
    Ok(json!({ "kicked": id }))
}

/// Resident set size from /proc (Linux); 0 where unavailable.
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * 4096
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}
