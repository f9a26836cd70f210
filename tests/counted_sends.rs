//! Mailbox lengths and message counts are exact only if every message the project sends to
//! an actor is counted (beamq_supervisors::probe). This test reads the sources and fails on a
//! send through ractor's uncounted methods, and on an actor that does not register a probe or
//! count what it handles.

use std::path::{Path, PathBuf};

/// ractor's ways to put a message in a mailbox without our count.
const UNCOUNTED: &[&str] = &[
    ".cast(",
    ".call(",
    ".send_after(",
    ".send_interval(",
    ".send_message(",
    "cast!(",
    "call!(",
    "call_t!(",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The non-test part of a source file.
fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("readable source");
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn all_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "actors/src", "supervisors/src"] {
        sources(&root.join(dir), &mut files);
    }
    files
        .into_iter()
        .filter(|p| !p.ends_with("supervisors/src/probe.rs"))
        .collect()
}

#[test]
fn every_send_to_an_actor_is_counted() {
    let mut offences = Vec::new();
    for path in all_sources() {
        let code = production_code(&path);
        let lines: Vec<&str> = code.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if UNCOUNTED.iter().any(|p| line.contains(p)) {
                // A hot path that counts by hand says so just above.
                let vouched = lines[i.saturating_sub(3)..i]
                    .iter()
                    .any(|l| l.contains("Counted here"));
                if !vouched {
                    offences.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "uncounted sends (use beamq_supervisors::probe::Counted):\n{}",
        offences.join("\n")
    );
}

#[test]
fn every_actor_registers_a_probe_and_counts_what_it_handles() {
    let mut offences = Vec::new();
    for path in all_sources() {
        let code = production_code(&path);
        let is_actor = code
            .lines()
            .any(|l| !l.trim_start().starts_with("//") && l.contains("impl Actor for "));
        if !is_actor {
            continue;
        }
        let registers = code.contains("probe::start(") || code.contains("probe::register::<");
        let counts = code.contains(".handled()");
        if !registers || !counts {
            offences.push(format!(
                "{}: registers a probe: {registers}, counts handled messages: {counts}",
                path.display()
            ));
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}
