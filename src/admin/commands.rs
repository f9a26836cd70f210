//! The commands of the admin endpoint. Each returns a JSON value that `ctl` prints as a table
//! (an array of objects), as `key value` lines (an object), or as JSON with `--json`.
//!
//! Commands only read the shared tables and counters, or ask the actors that own a piece of
//! state (membership, bridge, a client); nothing here blocks the broker.

use beamq_actors::Broker;
use beamq_actors::client::{ClientInfo, ClientMsg};
use beamq_protocol::ReasonCode;
use beamq_supervisors::probe::Counted;
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
        "actor kill ID|NAME",
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
    (
        "clients list [--n N] [--after ID]",
        "client ids with a session on this node, one page",
    ),
    (
        "subscriptions list [--n N] [--after KEY]",
        "every subscription on this node (filter, client, QoS), one page",
    ),
    (
        "actors top [--by mailbox|rate|memory] [--n N] [--interval MS]",
        "busiest actors (live in the shell, refreshed until Ctrl-C)",
    ),
    (
        "actor show ID|NAME",
        "one actor: kind, supervisor, mailbox, messages, restarts, its own state summary",
    ),
    (
        "trace client ID|topic FILTER [--for SECS]",
        "stream a client's packets or a topic's messages (rate-limited)",
    ),
    (
        "clients show ID",
        "one client as its actor reports it: peer, version, session, queues, drops",
    ),
    (
        "subscriptions show ID",
        "one client's subscriptions with their options",
    ),
    (
        "sessions top [--by queue|bytes] [--n N]",
        "sessions holding the most messages or bytes (in flight and queued)",
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
        ["clients", "list", rest @ ..] => {
            let page = Page::parse(rest)?;
            Ok(clients(broker, &page))
        }
        ["subscriptions", "list", rest @ ..] => {
            let page = Page::parse(rest)?;
            Ok(subscriptions(broker, &page))
        }
        ["actors", "top", rest @ ..] => {
            let args = super::actors::TopArgs::parse(rest)?;
            Ok(super::actors::top(broker, args).await)
        }
        ["actor", "show", who] => super::actors::show(broker, who).await,
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
            let mut by_bytes = false;
            for pair in rest.chunks(2) {
                match pair {
                    ["--n", v] => {
                        n = v
                            .parse()
                            .map_err(|_| format!("--n expects a number, got `{v}`"))?
                    }
                    ["--by", "queue"] => by_bytes = false,
                    ["--by", "bytes"] => by_bytes = true,
                    _ => return Err("usage: sessions top [--by queue|bytes] [--n N]".into()),
                }
            }
            Ok(sessions_top(broker, n, by_bytes))
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

/// Estimated bytes of one subscription in the route table: the filter key's share, the entry
/// (a link handle and the options) and the hash map slot around it.
const ROUTE_ENTRY_BYTES: usize = 128;

/// Memory by subsystem, estimated from what each keeps count of (no table is walked): actors
/// at their fixed cost, the messages sessions hold, the retained store and the route table.
/// Shared payloads count once per session holding them, so the sum can exceed the RSS.
fn memory_estimate(broker: &Broker) -> Value {
    let probes = beamq_supervisors::probe::all();
    let actors = probes.len() * super::actors::ACTOR_BASE_BYTES;
    let sessions: usize = broker
        .sessions
        .all()
        .iter()
        .map(|c| c.pending_bytes())
        .sum();
    let routes = broker.routes.subscription_count() * ROUTE_ENTRY_BYTES;
    json!({
        "actors": actors,
        "session_messages": sessions,
        "retained": broker.retained.bytes(),
        "routes": routes,
    })
}

fn status(broker: &Broker) -> Value {
    let m = &broker.metrics;
    json!({
        "node": broker.config.node.name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": broker.started_at.elapsed().as_secs(),
        "actors": ractor::registry::pid_registry::get_all_pids().len(),
        "actors_probed": beamq_supervisors::probe::all().len(),
        "rss_bytes": rss_bytes(),
        "memory_est": memory_estimate(broker),
        "traces_running": broker.tracer.running(),
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

/// `[--n N] [--after KEY]`: one page of a listing sorted by key, and where the next starts.
pub(crate) struct Page {
    n: usize,
    after: Option<String>,
}

impl Page {
    /// Listings return at most this many rows per page by default.
    const DEFAULT: usize = 100;

    fn parse(rest: &[&str]) -> Result<Page, String> {
        let mut page = Page {
            n: Page::DEFAULT,
            after: None,
        };
        for pair in rest.chunks(2) {
            match pair {
                ["--n", v] => {
                    page.n = v
                        .parse()
                        .map_err(|_| format!("--n expects a number, got `{v}`"))?;
                }
                ["--after", v] => page.after = Some((*v).to_string()),
                _ => return Err("usage: ... [--n N] [--after KEY]".into()),
            }
        }
        Ok(page)
    }

    /// The page of `rows` (sorted by key) and the key to pass as `--after` for the next.
    fn cut<T>(&self, rows: Vec<(String, T)>) -> (Vec<T>, Option<String>) {
        let mut out = Vec::new();
        let mut next = None;
        for (key, row) in rows {
            if self
                .after
                .as_ref()
                .is_some_and(|a| key.as_str() <= a.as_str())
            {
                continue;
            }
            if out.len() == self.n {
                next = Some(key);
                break;
            }
            out.push((key, row));
        }
        // `--after` takes the last key shown, so the next page starts right after it.
        let next = next.and(out.last().map(|(k, _)| k.clone()));
        (out.into_iter().map(|(_, r)| r).collect(), next)
    }
}

/// A page as `{"rows": [...], "next": KEY|null}`.
fn paged(rows: Vec<Value>, next: Option<String>) -> Value {
    json!({ "rows": rows, "next": next })
}

fn clients(broker: &Broker, page: &Page) -> Value {
    let mut all = broker.sessions.all();
    all.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let rows = all
        .into_iter()
        .map(|c| {
            let row = json!({
                "client_id": &*c.client_id,
                "connected": c.is_online(),
                "mailbox": c.queued(),
                "pending": c.pending(),
            });
            (c.client_id.to_string(), row)
        })
        .collect();
    let (rows, next) = page.cut(rows);
    paged(rows, next)
}

/// Every subscription on this node (from the route table, not from the actors), one page.
fn subscriptions(broker: &Broker, page: &Page) -> Value {
    let mut all: Vec<(String, Value)> = broker
        .routes
        .all_subscriptions()
        .into_iter()
        .map(|(filter, client, qos)| {
            // Sorted and paged by filter, then client id.
            let key = format!("{filter}\u{0}{client}");
            (
                key,
                json!({ "filter": &*filter, "client_id": &*client, "qos": qos }),
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let (rows, next) = page.cut(all);
    paged(rows, next)
}

fn kick(broker: &Broker, id: &str) -> Result<Value, String> {
    let client = broker
        .sessions
        .get(id)
        .ok_or_else(|| format!("no session with client id `{id}`"))?;
    client
        .actor
        .send(ClientMsg::Kick {
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
pub(crate) struct TreeRow {
    pub(crate) depth: usize,
    pub(crate) id: String,
    pub(crate) actor: Option<ractor::ActorCell>,
    kind: String,
    status: &'static str,
    pub(crate) restarts: u64,
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
pub(crate) async fn tree(broker: &Broker) -> Result<Vec<TreeRow>, String> {
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
            let report = ask(&sup, |reply| DynamicSupervisorMsg::Inspect {
                offset: 0,
                limit: 0,
                reply,
            })
            .await
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
        let report = ask(&sup, SupervisorMsg::Inspect)
            .await
            .map_err(|e| format!("{id}: {e}"))?;
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
    let (cell, name, depth) = super::actors::resolve(broker, who).await?;
    if depth == 0 {
        return Err("refusing to kill the root supervisor (stop the node instead)".into());
    }
    cell.kill();
    Ok(json!({ "killed": name, "actor_id": cell.get_id().to_string() }))
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
    ask(&client.actor, ClientMsg::Inspect)
        .await
        .map_err(|e| format!("client `{id}` did not answer: {e}"))
}

/// How long a command waits for an actor's answer.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks an actor (a counted call) and waits at most [`ASK_TIMEOUT`].
async fn ask<M: ractor::Message, T: Send + 'static>(
    actor: &ractor::ActorRef<M>,
    build: impl FnOnce(ractor::RpcReplyPort<T>) -> M + Send,
) -> Result<T, String> {
    match actor.ask(build, ASK_TIMEOUT).await {
        Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
        Ok(ractor::rpc::CallResult::Timeout) => Err(format!("no answer within {ASK_TIMEOUT:?}")),
        _ => Err("not running".into()),
    }
}

/// The `n` sessions holding the most messages (or bytes), from the gauges each client actor
/// keeps on its link: no actor is asked, so this costs the same with a million sessions.
fn sessions_top(broker: &Broker, n: usize, by_bytes: bool) -> Value {
    let mut all = broker.sessions.all();
    let key = |c: &beamq_actors::link::ClientHandle| {
        if by_bytes {
            c.pending_bytes()
        } else {
            c.pending()
        }
    };
    all.sort_by(|a, b| {
        key(b)
            .cmp(&key(a))
            .then_with(|| a.client_id.cmp(&b.client_id))
    });
    Value::Array(
        all.iter()
            .take(n)
            .map(|c| {
                json!({
                    "client_id": &*c.client_id,
                    "pending": c.pending(),
                    "pending_bytes": c.pending_bytes(),
                    "mailbox": c.queued(),
                    "connected": c.is_online(),
                })
            })
            .collect(),
    )
}
