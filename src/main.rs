//! `beamq`: the broker binary.
//!
//! `beamq start` runs a node in the foreground until SIGINT or SIGTERM, then shuts it down
//! gracefully (v5 clients get DISCONNECT 0x8B, wills are published) and exits 0.
//! `beamq --print-config` prints the effective configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use beamq::Node;
use beamq::config::{self, Overrides};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "beamq",
    version,
    about = "An MQTT 3.1 / 3.1.1 / 5.0 broker on supervised actors"
)]
struct Cli {
    /// Print the effective configuration (defaults, file, environment, flags) and exit.
    #[arg(long, global = true)]
    print_config: bool,

    #[command(flatten)]
    opts: ConfigArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node in the foreground.
    Start(ConfigArgs),
    /// Run one command on a running node and print the answer (`beamq ctl help` lists them).
    Ctl(CtlArgs),
    /// Attach an interactive shell to a running node (history, Tab completion, `help`).
    Shell(CtlArgs),
    /// Load-test an MQTT broker (this one or another): connections, publishers,
    /// subscribers, and the standard scenarios (`beamq bench help`).
    Bench(beamq_bench::BenchArgs),
}

#[derive(Args, Debug)]
struct CtlArgs {
    /// The node to ask (default: node.name of the configuration, beamq@127.0.0.1).
    #[arg(long, value_name = "NAME@HOST")]
    node: Option<String>,
    /// Its cookie (default: cluster.cookie of the configuration).
    #[arg(long, value_name = "SECRET")]
    cookie: Option<String>,
    /// Configuration file to take the defaults from.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
    /// The command, e.g. `status`, `cluster status`, `clients kick ID`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Args, Debug, Clone, Default)]
struct ConfigArgs {
    /// Configuration file (TOML, same shape as config/beamq.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the default MQTT/TCP listener.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Directory for the node's files.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Node name for the cluster, NAME@HOST (cluster port: 4370 + NAME's numeric suffix).
    #[arg(long, value_name = "NAME@HOST")]
    node: Option<String>,
    /// Cluster cookie: nodes link only with nodes that have the same.
    #[arg(long, value_name = "SECRET")]
    cookie: Option<String>,
    /// Cluster members to link with (static discovery), comma-separated node names.
    #[arg(long, value_name = "NAME@HOST,...", value_delimiter = ',')]
    seeds: Option<Vec<String>>,
}

impl ConfigArgs {
    fn merge(self, other: ConfigArgs) -> Overrides {
        Overrides {
            config_file: other.config.or(self.config),
            listen: other.listen.or(self.listen),
            data_dir: other.data_dir.or(self.data_dir),
            log_level: other.log_level.or(self.log_level),
            node: other.node.or(self.node),
            cookie: other.cookie.or(self.cookie),
            seeds: other.seeds.or(self.seeds),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (run, sub) = match cli.command {
        Some(Command::Start(args)) => (true, args),
        Some(Command::Ctl(args)) => return ctl(args),
        Some(Command::Shell(args)) => return shell(args),
        Some(Command::Bench(args)) => {
            return match beamq_bench::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("beamq bench: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => (false, ConfigArgs::default()),
    };
    let overrides = cli.opts.merge(sub);
    let cfg = match config::load(&overrides, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("beamq: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config::to_toml(&cfg));
        return ExitCode::SUCCESS;
    }
    if !run {
        eprintln!("beamq: nothing to do; try `beamq start` or `beamq --help`");
        return ExitCode::from(2);
    }
    if let Err(e) = beamq::logging::init(&cfg.log) {
        eprintln!("beamq: {e}");
        return ExitCode::from(2);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if cfg.broker.worker_threads > 0 {
        builder.worker_threads(cfg.broker.worker_threads);
    }
    // With `broker.arrival_order`, a worker no longer runs the task it woke last before the
    // ones woken earlier: two clients whose packets arrive in one wake-up are served in the
    // order they arrived, at the price of a cross-thread wake-up per hand-over (README
    // "Arrival order", docs/BENCHMARKS.md).
    #[cfg(tokio_unstable)]
    if cfg.broker.arrival_order {
        builder.disable_lifo_slot();
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("beamq: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let node = match Node::start(cfg).await {
            Ok(node) => node,
            Err(e) => {
                tracing::error!(error = %e, "start failed");
                eprintln!("beamq: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(addr) = node.mqtt_addr() {
            tracing::info!(%addr, "MQTT listener ready");
        }
        wait_for_signal().await;
        tracing::info!("shutting down");
        node.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `beamq ctl`: exit 0 with the answer on stdout, 1 with the node's error (or why it could not
/// be reached) on stderr, 2 for a configuration error.
fn ctl(args: CtlArgs) -> ExitCode {
    let Some((node, cookie)) = target(&args) else {
        return ExitCode::from(2);
    };
    // `beamq ctl status --json`: the flag may follow the command.
    let json = args.json || args.command.iter().any(|a| a == "--json");
    let command: Vec<String> = args.command.into_iter().filter(|a| a != "--json").collect();
    let socket = beamq::admin::socket_path(&node);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("beamq: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(beamq::admin::client::run(&socket, &cookie, &command, json)) {
        Ok(text) => {
            use std::io::Write;
            let end = if text.ends_with('\n') { "" } else { "\n" };
            // Ignored: a closed stdout (`| head`) is not an error of the command.
            let _ = write!(std::io::stdout(), "{text}{end}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("beamq ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `beamq shell`: the node and cookie are found as for `ctl`.
fn shell(args: CtlArgs) -> ExitCode {
    let Some((node, cookie)) = target(&args) else {
        return ExitCode::from(2);
    };
    let socket = beamq::admin::socket_path(&node);
    match beamq::admin::shell::run(&socket, &cookie, &node) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beamq shell: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The node and cookie for `ctl` and `shell`: flags, else the configuration's.
fn target(args: &CtlArgs) -> Option<(String, String)> {
    let overrides = Overrides {
        config_file: args.config.clone(),
        ..Overrides::default()
    };
    match config::load(&overrides, std::env::vars()) {
        Ok(cfg) => Some((
            args.node.clone().unwrap_or(cfg.node.name),
            args.cookie.clone().unwrap_or(cfg.cluster.cookie),
        )),
        Err(e) => {
            eprintln!("beamq: {e}");
            None
        }
    }
}
