//! Loading the configuration: embedded defaults, then a file, then `BEAMQ__SECTION__KEY`
//! environment variables, then command-line flags (DESIGN §7), validated once.
//!
//! Errors name the key and the expected form; unknown keys are refused rather than ignored, so a
//! typo in a config file is found at start and not in production.

use std::path::{Path, PathBuf};

use beamq_actors::config::{Config, ConfigError};
use config::{Environment, File, FileFormat};

/// The default configuration file, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../config/beamq.toml");

/// Values given on the command line; `None` leaves the layers below in charge.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`
    pub config_file: Option<PathBuf>,
    /// `--listen ADDR:PORT` (the default TCP listener)
    pub listen: Option<String>,
    /// `--data-dir DIR`
    pub data_dir: Option<PathBuf>,
    /// `--log-level LEVEL`
    pub log_level: Option<String>,
    /// `--node NAME@HOST` (turns the cluster on)
    pub node: Option<String>,
    /// `--cookie SECRET` (turns the cluster on)
    pub cookie: Option<String>,
    /// `--seeds NAME@HOST,...` (static discovery; turns the cluster on)
    pub seeds: Option<Vec<String>>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file does not exist or cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A layer is not valid TOML, or a value has the wrong type or an unknown key was given.
    #[error("configuration error: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("configuration error: {0}")]
    Invalid(#[from] ConfigError),
}

/// Loads, layers and validates the configuration. `env` is the environment to read (the
/// process environment in `main`, a fixed map in tests).
pub fn load(
    overrides: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, LoadError> {
    let mut builder =
        config::Config::builder().add_source(File::from_str(DEFAULT_CONFIG, FileFormat::Toml));
    if let Some(path) = &overrides.config_file {
        let text = read_file(path)?;
        // A syntax error is reported with the file's name: the layered error below only knows
        // a line and a column.
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(LoadError::Parse(format!("{}: {e}", path.display())));
        }
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("BEAMQ__"))
        .collect();
    builder = builder.add_source(
        Environment::with_prefix("BEAMQ")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env)),
    );
    let set = |b: config::ConfigBuilder<config::builder::DefaultState>, key: &str, v: &str| {
        b.set_override(key, v.to_string())
            .map_err(|e| LoadError::Parse(e.to_string()))
    };
    if let Some(listen) = &overrides.listen {
        builder = set(builder, "listeners.tcp.default.bind", listen)?;
    }
    if let Some(dir) = &overrides.data_dir {
        builder = set(builder, "node.data_dir", &dir.to_string_lossy())?;
    }
    if let Some(level) = &overrides.log_level {
        builder = set(builder, "log.level", level)?;
    }
    if let Some(node) = &overrides.node {
        builder = set(builder, "node.name", node)?;
    }
    if let Some(cookie) = &overrides.cookie {
        builder = set(builder, "cluster.cookie", cookie)?;
    }
    if let Some(seeds) = &overrides.seeds {
        builder = builder
            .set_override("cluster.seeds", seeds.clone())
            .and_then(|b| b.set_override("cluster.discovery", "static"))
            .map_err(|e| LoadError::Parse(e.to_string()))?;
    }
    if overrides.node.is_some() || overrides.cookie.is_some() || overrides.seeds.is_some() {
        builder = set(builder, "cluster.enable", "true")?;
    }
    let layered = builder
        .build()
        .map_err(|e| LoadError::Parse(e.to_string()))?;
    let config: Config = layered
        .try_deserialize()
        .map_err(|e| LoadError::Parse(explain(e)))?;
    config.validate()?;
    Ok(config)
}

fn read_file(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The `config` crate reports serde's message and, where it knows it, the key; make sure the
/// reader sees both.
fn explain(e: config::ConfigError) -> String {
    e.to_string()
}

/// The effective configuration as TOML, for `--print-config`.
pub fn to_toml(config: &Config) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_equal_the_typed_defaults() {
        // The file and the struct must never drift apart.
        let loaded = load(&Overrides::default(), env(&[])).expect("defaults load");
        assert_eq!(loaded, Config::default());
    }

    #[test]
    fn env_and_flags_override_in_order() {
        let loaded = load(
            &Overrides {
                listen: Some("127.0.0.1:2883".into()),
                log_level: Some("debug".into()),
                ..Overrides::default()
            },
            env(&[
                ("BEAMQ__MQTT__MAX_INFLIGHT", "7"),
                ("BEAMQ__LOG__LEVEL", "warn"),
                ("OTHER", "ignored"),
            ]),
        )
        .expect("loads");
        assert_eq!(loaded.mqtt.max_inflight, 7);
        assert_eq!(loaded.log.level, "debug", "flags win over env");
        assert_eq!(
            loaded.listeners.tcp["default"].bind.to_string(),
            "127.0.0.1:2883"
        );
    }

    #[test]
    fn unknown_keys_are_reported_by_name() {
        let e = load(
            &Overrides::default(),
            env(&[("BEAMQ__MQTT__MAX_INFLIGTH", "7")]),
        )
        .expect_err("typo refused");
        let msg = e.to_string();
        assert!(msg.contains("max_infligth"), "{msg}");
    }

    #[test]
    fn worker_threads_from_env_and_bounded() {
        let loaded = load(
            &Overrides::default(),
            env(&[("BEAMQ__BROKER__WORKER_THREADS", "1")]),
        )
        .expect("loads");
        assert_eq!(loaded.broker.worker_threads, 1);
        let e = load(
            &Overrides::default(),
            env(&[("BEAMQ__BROKER__WORKER_THREADS", "5000")]),
        )
        .expect_err("refused");
        assert!(e.to_string().contains("broker.worker_threads"), "{e}");
    }

    #[test]
    fn shipped_example_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("config/examples") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let overrides = Overrides {
                    config_file: Some(path.clone()),
                    ..Overrides::default()
                };
                if let Err(e) = load(&overrides, env(&[])) {
                    panic!("{}: {e}", path.display());
                }
                seen += 1;
            }
        }
        assert!(seen > 0, "no example in {}", dir.display());
        let paho = load(
            &Overrides {
                config_file: Some(dir.join("paho-interop.toml")),
                ..Overrides::default()
            },
            env(&[]),
        )
        .expect("loads");
        assert_eq!(
            paho.mqtt.max_keepalive.0,
            Some(std::time::Duration::from_secs(60))
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = load(
            &Overrides::default(),
            env(&[("BEAMQ__MQTT__CONNECT_TIMEOUT", "soon")]),
        )
        .expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains("connect_timeout"), "{msg}");
        let e = load(
            &Overrides::default(),
            env(&[("BEAMQ__MQTT__RECEIVE_MAXIMUM", "0")]),
        )
        .expect_err("refused");
        assert!(e.to_string().contains("mqtt.receive_maximum"), "{e}");
        let e = load(
            &Overrides {
                listen: Some("not-an-address".into()),
                ..Overrides::default()
            },
            env(&[]),
        )
        .expect_err("refused");
        assert!(e.to_string().contains("bind"), "{e}");
    }

    #[test]
    fn cluster_flags_turn_the_cluster_on() {
        let loaded = load(
            &Overrides {
                node: Some("b2@127.0.0.1".into()),
                seeds: Some(vec!["b1@127.0.0.1".into(), "b3@127.0.0.1".into()]),
                ..Overrides::default()
            },
            env(&[("BEAMQ__CLUSTER__COOKIE", "s3cret")]),
        )
        .expect("loads");
        assert!(loaded.cluster.enable);
        assert_eq!(loaded.node.name, "b2@127.0.0.1");
        assert_eq!(loaded.cluster.cookie, "s3cret");
        assert_eq!(loaded.cluster.seeds, ["b1@127.0.0.1", "b3@127.0.0.1"]);
        let e = load(
            &Overrides {
                node: Some("no-at-sign".into()),
                ..Overrides::default()
            },
            env(&[]),
        )
        .expect_err("refused");
        assert!(e.to_string().contains("node.name"), "{e}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let e = load(
            &Overrides {
                config_file: Some("/nonexistent/beamq.toml".into()),
                ..Overrides::default()
            },
            env(&[]),
        )
        .expect_err("refused");
        assert!(e.to_string().contains("/nonexistent/beamq.toml"));
    }

    #[test]
    fn printed_config_loads_back_identically() {
        let c = Config::default();
        let text = to_toml(&c);
        let dir = std::env::temp_dir().join(format!("beamq-print-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("printed.toml");
        std::fs::write(&path, text).expect("write");
        let loaded = load(
            &Overrides {
                config_file: Some(path),
                ..Overrides::default()
            },
            env(&[]),
        )
        .expect("round trip");
        assert_eq!(loaded, c);
    }
}
