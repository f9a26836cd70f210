//! `beamq ctl`: sends one command to a node's admin socket and prints the answer.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{Request, Response};

/// How long a command may take end to end.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `args` on the node whose admin socket is `socket`; the printed answer, or why not.
pub async fn run(
    socket: &Path,
    cookie: &str,
    args: &[String],
    json: bool,
) -> Result<String, String> {
    // A closed stdout (`| head`) ends the command instead of panicking in `println!`.
    let mut print = |line: String| {
        use std::io::Write;
        writeln!(std::io::stdout(), "{line}").is_ok()
    };
    run_with(socket, cookie, args, json, &mut print).await
}

/// As [`run`], with streamed lines (a `trace`) handed to `on_line` as they arrive; `on_line`
/// returns false to stop (the connection is dropped, which stops the trace on the node).
pub async fn run_with(
    socket: &Path,
    cookie: &str,
    args: &[String],
    json: bool,
    on_line: &mut (dyn FnMut(String) -> bool + Send),
) -> Result<String, String> {
    // A trace runs as long as asked (at most 600 s); everything else answers at once.
    let limit = if args.first().map(String::as_str) == Some("trace") {
        Duration::from_secs(620)
    } else {
        TIMEOUT
    };
    let value = tokio::time::timeout(limit, request(socket, cookie, args, json, on_line))
        .await
        .map_err(|_| "the node did not answer in time".to_string())??;
    Ok(if json {
        serde_json::to_string_pretty(&value).unwrap_or_default()
    } else {
        render(&value)
    })
}

async fn request(
    socket: &Path,
    cookie: &str,
    args: &[String],
    json: bool,
    on_line: &mut (dyn FnMut(String) -> bool + Send),
) -> Result<Value, String> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        format!(
            "cannot reach the node at {} ({e}); is it running, under this node name?",
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(&Request {
        cookie: cookie.to_string(),
        args: args.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(read);
    loop {
        let mut answer = String::new();
        let n = reader
            .read_line(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the node closed the connection without an answer".into());
        }
        match serde_json::from_str::<Response>(&answer) {
            Ok(Response::Event(v)) => {
                let line = if json {
                    v.to_string()
                } else {
                    match v {
                        Value::String(s) => s,
                        other => render(&other).trim_end().to_string(),
                    }
                };
                if !on_line(line) {
                    return Err("output closed".into());
                }
            }
            Ok(Response::Ok(v)) => return Ok(v),
            Ok(Response::Error(e)) => return Err(e),
            Err(e) => return Err(format!("unreadable answer from the node: {e}")),
        }
    }
}

pub fn render(v: &Value) -> String {
    match v {
        Value::Array(rows) => table(rows),
        // One page of a listing: the rows, and how to ask for the next page.
        Value::Object(map)
            if map.len() == 2 && map.contains_key("rows") && map.contains_key("next") =>
        {
            let rows = map["rows"].as_array().map_or(&[][..], Vec::as_slice);
            let mut out = table(rows);
            if let Some(next) = map["next"].as_str() {
                out.push_str(&format!("(more: add --after {next})\n"));
            }
            out
        }
        Value::Object(map) => {
            let width = map
                .iter()
                .filter(|(_, v)| !v.is_array() && !v.is_object())
                .map(|(k, _)| k.len())
                .max()
                .unwrap_or(0);
            let mut out = String::new();
            let mut nested = String::new();
            for (k, v) in map {
                match v {
                    Value::Array(rows) => {
                        nested.push_str(&format!("\n{k}:\n{}", table(rows)));
                    }
                    Value::Object(_) => {
                        let inner: String = render(v).lines().map(|l| format!("  {l}\n")).collect();
                        nested.push_str(&format!("\n{k}:\n{inner}"));
                    }
                    _ => out.push_str(&format!("{k:width$}  {}\n", cell(v))),
                }
            }
            out + &nested
        }
        other => format!("{}\n", cell(other)),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn table(rows: &[Value]) -> String {
    let Some(Value::Object(first)) = rows.first() else {
        return if rows.is_empty() {
            "(none)\n".into()
        } else {
            rows.iter().map(|r| cell(r) + "\n").collect()
        };
    };
    let columns: Vec<&String> = first.keys().collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| r.get(c.as_str()).map_or("-".into(), cell))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| -> String {
        let mut s: String = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:w$}  "))
            .collect();
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(columns.iter().map(|c| c.as_str()).collect());
    for r in &cells {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_and_key_value_lines() {
        let t = render(&json!([{"id": "a", "n": 1}, {"id": "bbb", "n": null}]));
        assert_eq!(t, "id   n\na    1\nbbb  -\n");
        let kv = render(&json!({"node": "b1@h", "members": [{"m": "x"}]}));
        assert_eq!(kv, "node  b1@h\n\nmembers:\nm\nx\n");
        assert_eq!(render(&json!([])), "(none)\n");
    }
}
