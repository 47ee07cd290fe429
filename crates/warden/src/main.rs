//! The `warden` binary: a thin command-line edge over the library crates.
//!
//! Every subcommand parses its flags, calls one library entry point and turns errors into a
//! readable message and a non-zero exit code. No business logic lives here.

mod agent_cmd;
mod dogstatsd_cmd;
mod server_cmd;
mod signals_cmd;
mod waf_build;
mod waf_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Warden: self-hosted, security-first observability.
#[derive(Parser, Debug)]
#[command(name = "warden", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the host agent (DogStatsD, host metrics, checks, forwarder), or with a
    /// subcommand, talk to the running agent.
    Agent(AgentArgs),
    /// DogStatsD tools.
    #[command(subcommand)]
    Dogstatsd(DogstatsdCommand),
    /// Web application firewall tools.
    #[command(subcommand)]
    Waf(WafCommand),
    /// Run the Warden server (HTTPS intake and query API).
    Server(server_cmd::ServerArgs),
    /// Run a server plus an agent for this host, with fresh keys: nothing else to install.
    Up(server_cmd::UpArgs),
    /// Manage API (write) and application (read) keys in the server's data directory.
    Keys {
        /// Data directory of the server.
        #[arg(long, value_name = "DIR", env = "WARDEN_DATA_DIR", global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: server_cmd::KeysCommand,
    },
    /// Query metrics from a Warden server and print a table.
    Query(server_cmd::QueryArgs),
    /// Security signals: list, show, acknowledge, resolve.
    Signals(signals_cmd::SignalsArgs),
}

#[derive(Subcommand, Debug)]
enum WafCommand {
    /// Evaluate a ruleset over recorded requests (JSONL: `{"id", "addresses": {...}}` per
    /// line); prints one verdict per line and a timing summary on stderr.
    Eval {
        /// Ruleset in the Datadog AppSec format (JSON); Warden's built-in default when omitted.
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
        /// Time budget per request in microseconds (results are partial past it).
        #[arg(long, value_name = "N", default_value_t = 1_000_000)]
        timeout_us: u64,
        /// Requests to evaluate.
        #[arg(value_name = "REQUESTS.jsonl")]
        requests: PathBuf,
    },
    /// Detection and false-positive rates of a ruleset per family and per rule over labelled
    /// corpora (JSONL: `{"label": "attack"|"negative"|"benign"|..., "crs_file"?, "addresses"}`).
    Score {
        /// Ruleset in the Datadog AppSec format (JSON); Warden's built-in default when omitted.
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
        /// `default` (as loaded) or `paranoid` (adds paranoid rules, monitor only).
        #[arg(long, default_value = "default", value_parser = ["default", "paranoid"])]
        profile: String,
        /// Time budget per request in microseconds.
        #[arg(long, value_name = "N", default_value_t = 1_000_000)]
        timeout_us: u64,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
        /// Labelled corpora to score.
        #[arg(value_name = "CORPUS.jsonl", required = true)]
        corpora: Vec<PathBuf>,
    },
    /// Compile the default ruleset's YAML sources into the JSON the engine embeds.
    BuildRules {
        /// Directory of `*.yaml` rule sources.
        #[arg(long, value_name = "DIR", default_value = "rules/src")]
        src: PathBuf,
        /// Output ruleset.
        #[arg(long, value_name = "FILE", default_value = "rules/warden-default.json")]
        out: PathBuf,
        /// Do not write: fail if the output is not what the sources build to.
        #[arg(long)]
        check: bool,
    },
}

#[derive(clap::Args, Debug)]
struct AgentArgs {
    /// Talk to the running agent instead of running one.
    #[command(subcommand)]
    command: Option<agent_cmd::AgentCommand>,
    /// Agent configuration file (YAML, mode 0600).
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        env = "WARDEN_CONFIG",
        global = true
    )]
    config: Option<PathBuf>,
    /// Validate the configuration, print every problem found, and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Subcommand, Debug)]
enum DogstatsdCommand {
    /// Read DogStatsD datagrams on stdin (one per line, or `--datagrams` for NUL-separated)
    /// and print one JSON object per message, or `{"error": ...}` per bad message.
    Parse {
        /// Treat stdin as NUL-separated datagrams instead of newline-separated messages.
        #[arg(long)]
        nul_separated: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => run_agent(args),
        Command::Dogstatsd(DogstatsdCommand::Parse { nul_separated }) => {
            dogstatsd_cmd::parse_stdin(nul_separated)
        }
        Command::Waf(WafCommand::Eval {
            rules,
            timeout_us,
            requests,
        }) => waf_cmd::eval(rules.as_deref(), timeout_us, &requests),
        Command::Waf(WafCommand::Score {
            rules,
            profile,
            timeout_us,
            json,
            corpora,
        }) => waf_cmd::score(&waf_cmd::ScoreArgs {
            rules: rules.as_deref(),
            profile: warden_waf::Profile::parse(&profile).unwrap_or_default(),
            timeout_us,
            json,
            corpora: &corpora,
        }),
        Command::Waf(WafCommand::BuildRules { src, out, check }) => {
            waf_build::build_rules(&src, &out, check)
        }
        Command::Server(args) => server_cmd::server(args),
        Command::Up(args) => server_cmd::up(args),
        Command::Keys { data_dir, command } => server_cmd::keys(data_dir, command),
        Command::Query(args) => server_cmd::query(args),
        Command::Signals(args) => signals_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr through the scrubber, and (scrubbed) into the ring the flare and GUI
/// read. One writer behind a mutex: the scrubber's multi-line state (PEM blocks) must see
/// the lines in order.
fn init_logging(level: &str, opts: &warden_agent::RunOptions) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let writer = warden_scrubber::ScrubWriter::new(
        warden_agent::api::RingTee::new(std::io::stderr(), opts.logs.clone()),
        opts.scrubber.clone(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::sync::Mutex::new(writer))
        .init();
}

fn run_agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let Some(config) = args.config else {
        eprintln!("warden: --config FILE (or WARDEN_CONFIG) is required");
        return Ok(ExitCode::from(2));
    };
    if let Some(cmd) = args.command {
        return agent_cmd::run(cmd, &config);
    }
    let cfg = match warden_agent::AgentConfig::load(&config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("warden: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if args.check_config {
        println!("{}: configuration is valid", config.display());
        return Ok(ExitCode::SUCCESS);
    }
    let opts = warden_agent::RunOptions::default();
    // Registered before the first log line; the agent adds its auth token itself.
    let _ = opts.scrubber.add_secret(&cfg.api_key);
    if let Some(resolved) = &cfg.secrets.0 {
        resolved.register_with(&opts.scrubber);
    }
    init_logging(&cfg.log_level, &opts);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("warden-agent")
        .build()?;
    rt.block_on(warden_agent::run_with(cfg, opts, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
