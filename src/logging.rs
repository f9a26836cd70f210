//! Logging through `tracing`: text or JSON lines on stderr, level from `RUST_LOG`, else the
//! configuration (`log.level`, which `--log-level` sets). The filter sits behind a reload layer
//! so the level can be changed while the node runs.

use std::io::IsTerminal;

use beamq_actors::config::{LogConfig, LogFormat};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogHandle(reload::Handle<EnvFilter, Registry>);

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogHandle")
    }
}

impl LogHandle {
    /// Replaces the filter, e.g. `debug` or `beamq_actors=trace,info`.
    pub fn set_level(&self, filter: &str) -> Result<(), String> {
        let f = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        self.0.reload(f).map_err(|e| e.to_string())
    }
}

static INSTALLED: std::sync::OnceLock<LogHandle> = std::sync::OnceLock::new();

/// The handle of the subscriber [`init`] installed (none in tests that start nodes in-process).
pub fn installed() -> Option<LogHandle> {
    INSTALLED.get().cloned()
}

/// Installs the global subscriber. Fails if the filter does not parse (naming `log.level`).
pub fn init(cfg: &LogConfig) -> Result<LogHandle, String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(&s).map_err(|e| format!("RUST_LOG: {e}"))?,
        _ => EnvFilter::try_new(&cfg.level)
            .map_err(|e| format!("invalid value for `log.level`: {e}"))?,
    };
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match cfg.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    // Colour only on a terminal: escape codes in log files help nobody.
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    installed.map_err(|e| e.to_string())?;
    let handle = LogHandle(handle);
    let _ = INSTALLED.set(handle.clone());
    Ok(handle)
}
