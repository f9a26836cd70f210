//! `beamq shell`: the interactive form of `beamq ctl`, with line editing, a history file
//! (`~/.beamq_history`), completion of command names (Tab) and `help`. Each line is one
//! request to the node, as `ctl` sends it; the shell holds nothing on the node between
//! commands, so a shell that goes away leaves nothing running there.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::commands::COMMANDS;

/// Completes the line so far against the command list (`cl` -> `clients `, `cluster `).
struct Commands;

impl Completer for Commands {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        Ok((0, candidates(&line[..pos])))
    }
}

/// Command prefixes that extend `typed`, up to the end of the next word.
fn candidates(typed: &str) -> Vec<Pair> {
    let mut out: Vec<String> = Vec::new();
    for (command, _) in COMMANDS {
        // Templates such as `clients kick ID`: complete the literal words only.
        let literal: Vec<&str> = command
            .split(' ')
            .take_while(|w| !w.chars().any(|c| c.is_ascii_uppercase() || c == '['))
            .collect();
        let full = literal.join(" ");
        if !full.starts_with(typed) || full == typed.trim_end() {
            continue;
        }
        // Up to the end of the word being typed.
        let rest = &full[typed.len()..];
        let end = rest.find(' ').map_or(full.len(), |i| typed.len() + i);
        let mut candidate = full[..end].to_string();
        candidate.push(' ');
        if !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out.into_iter()
        .map(|c| Pair {
            display: c.clone(),
            replacement: c,
        })
        .collect()
}

impl Hinter for Commands {
    type Hint = String;
}
impl Highlighter for Commands {}
impl Validator for Commands {}
impl Helper for Commands {}

/// Runs the shell until `quit`, `exit` or end of input.
pub fn run(socket: &Path, cookie: &str, node: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut editor: Editor<Commands, DefaultHistory> = Editor::new().map_err(|e| e.to_string())?;
    editor.set_helper(Some(Commands));
    let history: Option<PathBuf> =
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".beamq_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("beamq shell on {node}; `help` lists the commands, `quit` leaves");
    let prompt = format!("{node}> ");
    loop {
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.to_string()),
        };
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        match words.first().map(String::as_str) {
            None => continue,
            Some("quit" | "exit") => break,
            Some(_) => {}
        }
        let _ = editor.add_history_entry(line.as_str());
        let json = words.iter().any(|w| w == "--json");
        let args: Vec<String> = words.into_iter().filter(|w| w != "--json").collect();
        // `actors top` refreshes like top on a terminal, until Ctrl-C.
        let live = !json
            && args.len() >= 2
            && args[0] == "actors"
            && args[1] == "top"
            && std::io::stdin().is_terminal();
        runtime.block_on(async {
            loop {
                // Ctrl-C ends a long command (a trace, a live view): dropping its connection
                // stops it on the node too.
                let result = tokio::select! {
                    r = super::client::run(socket, cookie, &args, json) => r,
                    _ = tokio::signal::ctrl_c() => return,
                };
                if live {
                    print!("\x1b[2J\x1b[H{node}  actors top (refreshed until Ctrl-C)\n\n");
                }
                match result {
                    Ok(text) => {
                        print!("{text}");
                        if !text.ends_with('\n') {
                            println!();
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return;
                    }
                }
                if !live {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = tokio::signal::ctrl_c() => return,
                }
            }
        });
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(typed: &str) -> Vec<String> {
        candidates(typed)
            .into_iter()
            .map(|p| p.replacement)
            .collect()
    }

    #[test]
    fn completion_extends_the_word_being_typed() {
        assert_eq!(names("cl"), ["cluster ", "clients "]);
        assert_eq!(names("cluster j"), ["cluster join "]);
        assert_eq!(names("st"), ["status "]);
        assert!(names("zzz").is_empty());
    }
}
