//! `trace client ID|topic FILTER [--for SECS]`: streams the lines of a live trace
//! (`beamq_actors::trace`) to the admin connection until the time is up or the connection
//! closes. The trace is stopped as soon as either happens: a `ctl` or shell that goes away
//! leaves nothing running.

use std::time::Duration;

use beamq_actors::Broker;
use beamq_actors::trace::{BURST, RATE, TraceFilter};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::Response;
use super::server::send;

/// Default and longest trace.
const DEFAULT_FOR: Duration = Duration::from_secs(10);
const MAX_FOR: Duration = Duration::from_secs(600);

/// Parses what follows `trace`.
pub fn parse(args: &[String]) -> Result<(TraceFilter, Duration), String> {
    let usage = "usage: trace client ID|topic FILTER [--for SECS]";
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let (filter, rest) = match words.as_slice() {
        ["client", id, rest @ ..] => (TraceFilter::Client((*id).to_string()), rest),
        ["topic", f, rest @ ..] => {
            beamq_protocol::topic::validate_filter(f, 1024)
                .map_err(|_| format!("`{f}` is not a valid topic filter"))?;
            (TraceFilter::Topic((*f).to_string()), rest)
        }
        _ => return Err(usage.into()),
    };
    let duration = match rest {
        [] => DEFAULT_FOR,
        ["--for", secs] => {
            let s: u64 = secs
                .parse()
                .map_err(|_| format!("--for expects seconds, got `{secs}`"))?;
            Duration::from_secs(s).min(MAX_FOR)
        }
        _ => return Err(usage.into()),
    };
    Ok((filter, duration))
}

/// Runs the trace: one `Event` line per traced packet; returns the closing answer (what was
/// sent and dropped), or an error if the connection went away.
pub async fn stream(
    broker: &Broker,
    filter: TraceFilter,
    duration: Duration,
    mut read: OwnedReadHalf,
    write: &mut OwnedWriteHalf,
) -> Response {
    let (guard, mut lines) = broker.tracer.start(filter.clone());
    let header = json!({
        "tracing": format!("{filter:?}"),
        "for_s": duration.as_secs(),
        "rate_limit_per_s": RATE,
        "burst": BURST,
    });
    if send(write, &Response::Event(header)).await.is_err() {
        return Response::Error("connection closed".into());
    }
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    let mut sent = 0u64;
    let mut byte = [0u8; 1];
    loop {
        tokio::select! {
            () = &mut deadline => break,
            // The client never writes after its request: a read that returns means it left.
            _ = read.read(&mut byte) => {
                return Response::Error("connection closed".into());
            }
            line = lines.recv() => {
                let Some(line) = line else { break };
                if send(write, &Response::Event(Value::String(line))).await.is_err() {
                    return Response::Error("connection closed".into());
                }
                sent += 1;
            }
        }
    }
    Response::Ok(json!({ "lines": sent, "dropped": guard.trace.dropped() }))
}
