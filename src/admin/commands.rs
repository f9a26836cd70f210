//! The commands of the admin endpoint. Each returns a JSON value that `ctl` prints as a table
//! (an array of objects), as `key value` lines (an object), or as JSON with `--json`.
//!
//! Commands only read the shared tables and counters, or ask the actors that own a piece of
//! state (membership, bridge, a client); nothing here blocks the broker.

use beamq_actors::Broker;
use beamq_actors::client::{ClientInfo, ClientMsg};
use beamq_protocol::ReasonCode;
use beamq_supervisors::{ChildKind, ChildStatus, DynamicSupervisorMsg, Strategy, SupervisorMsg};
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
    (
        "tree",
        "the live supervision tree: strategies, intensity, children, restarts",
    ),
    (
        "actor kill NAME|ID",
        "kill an actor; its supervisor restarts it (a client is disconnected)",
    ),
    (
        "routes FILTER",
        "subscribers of FILTER here and the nodes that route it",
    ),
    (
        "retained list [FILTER]",
        "retained messages (topic, size), first 100",
    ),
    (
        "retained clean",
        "remove every retained message on this node",
    ),
    (
        "log level LEVEL [TARGET]",
        "change the log filter now (e.g. debug, or warn beamq_actors)",
    ),
    ("clients list", "client ids with a session on this node"),
    (
        "clients show ID",
        "one client as its actor reports it: peer, version, session, queues, drops",
    ),
    (
        "subscriptions show ID",
        "one client's subscriptions with their options",
    ),
    (
        "sessions top [--by queue] [--n N]",
        "sessions holding the most messages (in flight and queued)",
    ),
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
        ["tree"] => Ok(Value::Array(
            tree(broker).await?.into_iter().map(|r| r.json()).collect(),
        )),
        ["actor", "kill", who] => kill_actor(broker, who).await,
        ["routes", filter] => Ok(routes(broker, filter)),
        ["retained", "list"] => Ok(retained(broker, "#")),
        ["retained", "list", filter] => Ok(retained(broker, filter)),
        ["retained", "clean"] => Ok(json!({ "removed": broker.retained.clear() })),
        ["log", "level", level] => log_level(level),
        ["log", "level", level, target] => log_level(&format!("{target}={level}")),
        ["clients", "kick", id] => kick(broker, id),
        ["clients", "show", id] => {
            let info = inspect(broker, id).await?;
            Ok(json!({
                "client_id": info.client_id,
                "peer": info.peer,
                "version": info.version,
                "keep_alive": info.keep_alive,
                "session_expiry": info.session_expiry,
                "subscriptions": info.subscriptions.len(),
                "inflight": info.inflight,
                "pending": info.pending,
                "mailbox": info.mailbox,
                "dropped_queue_full": info.drops.queue_full,
                "dropped_expired": info.drops.expired,
                "dropped_too_large": info.drops.too_large,
                "dropped_qos0_not_queued": info.drops.qos0_not_queued,
            }))
        }
        ["subscriptions", "show", id] => {
            let info = inspect(broker, id).await?;
            Ok(Value::Array(
                info.subscriptions
                    .into_iter()
                    .map(|(filter, qos, nl, rap, rh, sid)| {
                        json!({
                            "filter": filter,
                            "qos": qos,
                            "no_local": nl,
                            "retain_as_published": rap,
                            "retain_handling": rh,
                            "subscription_id": sid,
                        })
                    })
                    .collect(),
            ))
        }
        ["sessions", "top", rest @ ..] => {
            let mut n = 10;
            for pair in rest.chunks(2) {
                match pair {
                    ["--n", v] => {
                        n = v
                            .parse()
                            .map_err(|_| format!("--n expects a number, got `{v}`"))?
                    }
                    ["--by", "queue"] => {}
                    ["--by", other] => {
                        return Err(format!(
                            "sessions top --by {other}: only `queue` is tracked so far"
                        ));
                    }
                    _ => return Err("usage: sessions top [--by queue] [--n N]".into()),
                }
            }
            Ok(sessions_top(broker, n))
        }
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

/// One actor of the supervision tree, as a row.
struct TreeRow {
    depth: usize,
    id: String,
    actor: Option<ractor::ActorCell>,
    kind: String,
    status: &'static str,
    restarts: u64,
}

impl TreeRow {
    fn json(&self) -> Value {
        json!({
            "name": format!("{}{}", "  ".repeat(self.depth), self.id),
            "actor_id": self.actor.as_ref().map(|c| c.get_id().to_string()),
            "kind": self.kind,
            "status": self.status,
            "restarts": self.restarts,
        })
    }
}

/// Walks the tree from the root, asking each supervisor for its report (supervisors answer
/// inspection requests themselves; nothing reads their state from outside). Rows come in start
/// order, depth first.
async fn tree(broker: &Broker) -> Result<Vec<TreeRow>, String> {
    let root = broker.root().ok_or("the node has not finished starting")?;
    let mut rows = Vec::new();
    walk(broker, 0, "beamq".into(), root, 0, &mut rows).await?;
    Ok(rows)
}

type Walk<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

fn walk<'a>(
    broker: &'a Broker,
    depth: usize,
    id: String,
    cell: ractor::ActorCell,
    restarts: u64,
    rows: &'a mut Vec<TreeRow>,
) -> Walk<'a> {
    Box::pin(async move {
        let dynamic = broker
            .session_sup()
            .is_some_and(|s| s.get_id() == cell.get_id());
        if dynamic {
            let sup: ractor::ActorRef<DynamicSupervisorMsg> = cell.clone().into();
            let report = ractor::call_t!(
                sup,
                |reply| DynamicSupervisorMsg::Inspect {
                    offset: 0,
                    limit: 0,
                    reply
                },
                2000
            )
            .map_err(|e| format!("{id}: {e}"))?;
            rows.push(TreeRow {
                depth,
                id,
                actor: Some(cell),
                kind: format!(
                    "dynamic supervisor: {} clients (started {}, failed {})",
                    report.linked_children, report.stats.started, report.stats.failed
                ),
                status: "running",
                restarts,
            });
            return Ok(());
        }
        let sup: ractor::ActorRef<SupervisorMsg> = cell.clone().into();
        let report =
            ractor::call_t!(sup, SupervisorMsg::Inspect, 2000).map_err(|e| format!("{id}: {e}"))?;
        rows.push(TreeRow {
            depth,
            id,
            actor: Some(cell),
            kind: format!(
                "supervisor {}, at most {} restarts in {:?} ({} used)",
                strategy(report.strategy),
                report.intensity.max_restarts,
                report.intensity.period,
                report.restarts_in_window
            ),
            status: "running",
            restarts,
        });
        for child in report.children {
            let running = child.status == ChildStatus::Running;
            match (child.kind, child.cell) {
                (ChildKind::Supervisor, Some(c)) if running => {
                    walk(broker, depth + 1, child.id, c, child.restarts, rows).await?;
                }
                (_, cell) => rows.push(TreeRow {
                    depth: depth + 1,
                    id: child.id,
                    actor: cell,
                    kind: "worker".into(),
                    status: if running { "running" } else { "stopped" },
                    restarts: child.restarts,
                }),
            }
        }
        Ok(())
    })
}

fn strategy(s: Strategy) -> &'static str {
    match s {
        Strategy::OneForOne => "one_for_one",
        Strategy::OneForAll => "one_for_all",
        Strategy::RestForOne => "rest_for_one",
    }
}

/// Kills the actor named `who` (a child id in the tree, e.g. `router-1`), or with actor id
/// `who` (e.g. `0.17`), or the client actor of client id `who`.
async fn kill_actor(broker: &Broker, who: &str) -> Result<Value, String> {
    let rows = tree(broker).await?;
    if let Some(row) = rows.iter().find(|r| {
        r.id == who
            || r.actor
                .as_ref()
                .is_some_and(|c| c.get_id().to_string() == who)
    }) {
        if row.depth == 0 {
            return Err("refusing to kill the root supervisor (stop the node instead)".into());
        }
        let cell = row.actor.as_ref().ok_or("that actor is not running")?;
        cell.kill();
        return Ok(json!({ "killed": row.id, "actor_id": cell.get_id().to_string() }));
    }
    let client = broker
        .sessions
        .all()
        .into_iter()
        .find(|c| &*c.client_id == who || c.actor.get_id().to_string() == who)
        .ok_or_else(|| format!("no actor named or numbered `{who}`"))?;
    client.actor.kill();
    Ok(json!({ "killed": &*client.client_id, "actor_id": client.actor.get_id().to_string() }))
}

fn routes(broker: &Broker, filter: &str) -> Value {
    let here = broker.routes.subscribers_of(filter);
    let mut nodes: Vec<String> = broker
        .cluster
        .peers()
        .iter()
        .filter(|p| {
            broker
                .cluster
                .routes
                .filters_of(&p.name)
                .iter()
                .any(|f| **f == *filter)
        })
        .map(|p| p.name.to_string())
        .collect();
    nodes.sort();
    json!({ "filter": filter, "local_subscribers": here, "nodes": nodes })
}

fn retained(broker: &Broker, filter: &str) -> Value {
    let now = std::time::Instant::now();
    let page = broker.retained.page(filter, None, u64::MAX, 100, now);
    Value::Array(
        page.iter()
            .map(|m| json!({ "topic": &*m.topic, "bytes": m.payload.len(), "qos": m.qos as u8 }))
            .collect(),
    )
}

fn log_level(filter: &str) -> Result<Value, String> {
    let handle = crate::logging::installed().ok_or("logging is not managed by this process")?;
    handle.set_level(filter)?;
    tracing::info!(filter, "log filter changed");
    Ok(json!({ "log_filter": filter }))
}

/// Asks a client's actor to describe itself.
async fn inspect(broker: &Broker, id: &str) -> Result<ClientInfo, String> {
    let client = broker
        .sessions
        .get(id)
        .ok_or_else(|| format!("no session with client id `{id}`"))?;
    ractor::call_t!(client.actor, ClientMsg::Inspect, 2000)
        .map_err(|e| format!("client `{id}` did not answer: {e}"))
}

/// The `n` sessions holding the most messages, from the gauge each client actor keeps on its
/// link: no actor is asked, so this costs the same with a million sessions.
fn sessions_top(broker: &Broker, n: usize) -> Value {
    let mut all = broker.sessions.all();
    all.sort_by(|a, b| {
        b.pending()
            .cmp(&a.pending())
            .then_with(|| a.client_id.cmp(&b.client_id))
    });
    Value::Array(
        all.iter()
            .take(n)
            .map(|c| {
                json!({
                    "client_id": &*c.client_id,
                    "pending": c.pending(),
                    "mailbox": c.queued(),
                    "connected": c.is_online(),
                })
            })
            .collect(),
    )
}
