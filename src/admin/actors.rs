//! `actors top` and `actor show`: the live actors of the node, from their probes
//! (`beamq_supervisors::probe`).
//!
//! Counters are read from atomics, so listing every actor asks none of them; only `actor show`
//! sends one message, the actor's own `Describe`, answered between two of its messages.
//! Rates are measured over a short interval (`--interval`, default 1 s) during which the
//! command waits in its own task; the broker is not involved.

use std::collections::HashMap;
use std::time::Duration;

use beamq_actors::Broker;
use beamq_supervisors::probe::{self, ProbeSnapshot};
use ractor::{ActorCell, ActorId};
use serde_json::{Value, json};

use super::commands::{TreeRow, tree};

/// What an idle actor costs before its state: its task, cell and mailbox (tokio allocates the
/// mailbox's first 32-slot block eagerly). Measured for ractor 0.16 with the `cluster` feature
/// (DESIGN §10: about 10.9 KB); the memory column adds what each actor reports it holds.
pub const ACTOR_BASE_BYTES: usize = 10_900;

/// How `actors top` sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// Messages waiting.
    Mailbox,
    /// Messages handled per second.
    Rate,
    /// Estimated bytes.
    Memory,
}

/// Options of `actors top`.
#[derive(Debug, Clone, Copy)]
pub struct TopArgs {
    /// Sort key.
    pub by: By,
    /// Rows.
    pub n: usize,
    /// Rate interval.
    pub interval: Duration,
}

impl TopArgs {
    /// Parses `[--by mailbox|rate|memory] [--n N] [--interval MS]`.
    pub fn parse(rest: &[&str]) -> Result<TopArgs, String> {
        let usage = "usage: actors top [--by mailbox|rate|memory] [--n N] [--interval MS]";
        let mut a = TopArgs {
            by: By::Mailbox,
            n: 20,
            interval: Duration::from_secs(1),
        };
        for pair in rest.chunks(2) {
            match pair {
                ["--by", "mailbox"] => a.by = By::Mailbox,
                ["--by", "rate"] => a.by = By::Rate,
                ["--by", "memory"] => a.by = By::Memory,
                ["--n", v] => {
                    a.n = v
                        .parse()
                        .map_err(|_| format!("--n expects a number, got `{v}`"))?;
                }
                ["--interval", v] => {
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| format!("--interval expects milliseconds, got `{v}`"))?;
                    // Bounded: the command holds its connection for this long.
                    a.interval = Duration::from_millis(ms.clamp(10, 4000));
                }
                _ => return Err(usage.into()),
            }
        }
        Ok(a)
    }
}

/// One actor's name and supervisor, for display.
fn naming(
    id: ActorId,
    cell: Option<&ActorCell>,
    label: Option<String>,
    tree_names: &HashMap<ActorId, String>,
) -> (String, String) {
    let name = tree_names
        .get(&id)
        .cloned()
        .or_else(|| cell.and_then(ActorCell::get_name))
        .or(label)
        .unwrap_or_default();
    let supervisor = cell
        .and_then(ActorCell::try_get_supervisor)
        .map(|s| {
            tree_names
                .get(&s.get_id())
                .cloned()
                .or_else(|| s.get_name())
                .unwrap_or_else(|| s.get_id().to_string())
        })
        .unwrap_or_default();
    (name, supervisor)
}

/// Child ids of the supervision tree by actor id (the names operators know actors by).
fn tree_names(rows: &[TreeRow]) -> HashMap<ActorId, String> {
    rows.iter()
        .filter_map(|r| Some((r.actor.as_ref()?.get_id(), r.id.clone())))
        .collect()
}

fn snapshots() -> HashMap<ActorId, (ProbeSnapshot, Option<String>)> {
    probe::all()
        .into_iter()
        .map(|(id, p)| (id, (p.probe().snapshot(), p.label())))
        .collect()
}

/// `actors top`.
pub async fn top(broker: &Broker, args: TopArgs) -> Value {
    let before = snapshots();
    tokio::time::sleep(args.interval).await;
    let after = snapshots();
    let names = tree_names(&tree(broker).await.unwrap_or_default());
    let secs = args.interval.as_secs_f64();
    let mut rows: Vec<(u64, f64, usize, Value)> = after
        .into_iter()
        .map(|(id, (s, label))| {
            let handled = s.handled + s.remote;
            let rate = before.get(&id).map_or(0.0, |(b, _)| {
                handled.saturating_sub(b.handled + b.remote) as f64 / secs
            });
            let memory = ACTOR_BASE_BYTES + s.bytes;
            let cell = ractor::registry::where_is_pid(id);
            let (name, supervisor) = naming(id, cell.as_ref(), label, &names);
            let row = json!({
                "actor_id": id.to_string(),
                "name": name,
                "kind": s.kind,
                "mailbox": s.mailbox,
                "rate": (rate * 10.0).round() / 10.0,
                "handled": handled,
                "memory_est": memory,
                "supervisor": supervisor,
            });
            (s.mailbox, rate, memory, row)
        })
        .collect();
    // Ties (idle actors, mostly) in a stable order, so a live view does not reshuffle them.
    let stable = |a: &Value, b: &Value| {
        let key = |v: &Value| {
            (
                v["handled"].as_u64().unwrap_or(0),
                v["actor_id"].to_string(),
            )
        };
        key(b)
            .0
            .cmp(&key(a).0)
            .then_with(|| key(a).1.cmp(&key(b).1))
    };
    match args.by {
        By::Mailbox => rows.sort_by(|a, b| {
            (b.0.cmp(&a.0))
                .then(b.1.total_cmp(&a.1))
                .then_with(|| stable(&a.3, &b.3))
        }),
        By::Rate => rows.sort_by(|a, b| {
            (b.1.total_cmp(&a.1))
                .then(b.0.cmp(&a.0))
                .then_with(|| stable(&a.3, &b.3))
        }),
        By::Memory => rows.sort_by(|a, b| {
            (b.2.cmp(&a.2))
                .then(b.0.cmp(&a.0))
                .then_with(|| stable(&a.3, &b.3))
        }),
    }
    Value::Array(rows.into_iter().take(args.n).map(|r| r.3).collect())
}

/// Finds an actor by child id in the tree (`router-1`), actor id (`0.17`) or client id.
/// Returns its cell and the name it goes by.
pub async fn resolve(broker: &Broker, who: &str) -> Result<(ActorCell, String, usize), String> {
    resolve_in(&tree(broker).await?, broker, who)
}

/// [`resolve`] against rows of the tree already read.
fn resolve_in(
    rows: &[TreeRow],
    broker: &Broker,
    who: &str,
) -> Result<(ActorCell, String, usize), String> {
    if let Some(row) = rows.iter().find(|r| {
        r.id == who
            || r.actor
                .as_ref()
                .is_some_and(|c| c.get_id().to_string() == who)
    }) {
        let cell = row.actor.clone().ok_or("that actor is not running")?;
        return Ok((cell, row.id.clone(), row.depth));
    }
    if let Some(client) = broker.sessions.get(who) {
        return Ok((client.actor.get_cell(), who.to_string(), usize::MAX));
    }
    // Any other actor with a probe (a client by actor id, say).
    probe::all()
        .into_iter()
        .find(|(id, _)| id.to_string() == who)
        .and_then(|(id, p)| {
            let cell = ractor::registry::where_is_pid(id)?;
            Some((
                cell,
                p.label().unwrap_or_else(|| who.to_string()),
                usize::MAX,
            ))
        })
        .ok_or_else(|| format!("no actor named or numbered `{who}`"))
}

/// `actor show`.
pub async fn show(broker: &Broker, who: &str) -> Result<Value, String> {
    let rows = tree(broker).await?;
    let (cell, name, _) = resolve_in(&rows, broker, who)?;
    let id = cell.get_id();
    let probed = probe::lookup(id).ok_or("that actor has no probe (not one of beamq's)")?;
    let s = probed.probe().snapshot();
    let (_, supervisor) = naming(id, Some(&cell), None, &tree_names(&rows));
    let restarts = rows
        .iter()
        .find(|r| r.actor.as_ref().is_some_and(|c| c.get_id() == id))
        .map_or(0, |r| r.restarts);
    let state: serde_json::Map<String, Value> = probe::describe(id, Duration::from_secs(2))
        .await
        .map(|kv| kv.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
        .unwrap_or_default();
    Ok(json!({
        "actor_id": id.to_string(),
        "name": name,
        "kind": s.kind,
        "supervisor": supervisor,
        "status": format!("{:?}", cell.get_status()),
        "uptime_s": s.uptime.as_secs(),
        "mailbox": s.mailbox,
        "handled": s.handled,
        "handled_from_peers": s.remote,
        "supervision_events": s.events,
        "restarts": restarts,
        "memory_est": ACTOR_BASE_BYTES + s.bytes,
        "state": state,
    }))
}
