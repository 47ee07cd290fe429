//! Starting and stopping the whole agent.
//!
//! Shutdown order matters for "nothing acknowledged is lost": sources stop first (the DogStatsD
//! parser closes its open buckets into the channel), then the forwarder is told to stop; it
//! drains the channel, keeps sending for its stop timeout, and persists the rest to the disk
//! queue when one is configured.
//!
//! The local API (and GUI) start last, once everything they report on exists, and stop
//! first. A bad `auth_token` file stops the agent before anything listens; a busy `cmd_port`
//! only disables the API (logged as an error): shipping data matters more than the management
//! interface, and the CLI pins the agent's certificate, so whatever holds the port cannot
//! impersonate the agent to it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use warden_scrubber::Scrubber;

use crate::api::{AgentView, ApiError, ApiServer, AuthToken, LogRing};

use crate::checks::{CheckRegistry, run_checks};
use crate::collector::run_collector;
use crate::config::AgentConfig;
use crate::dogstatsd::{DogstatsdError, DogstatsdServer};
use crate::forwarder::{Forwarder, ForwarderError};
use crate::telemetry::Telemetry;
use crate::traces::TraceReceiver;
use crate::{OutTx, Outgoing};

/// Errors that prevent the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Forwarder(#[from] ForwarderError),
    #[error(transparent)]
    Dogstatsd(#[from] DogstatsdError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// What the binary shares with the running agent.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The scrubber of the log writer; the agent adds its secrets (API key, auth token) to it
    /// and uses it for status, config output and flares.
    pub scrubber: Arc<Scrubber>,
    /// Recent log lines (fed by the binary's log writer) for the flare and the GUI.
    pub logs: Arc<LogRing>,
}

/// Seconds between `warden.agent.*` telemetry points.
const TELEMETRY_INTERVAL: u64 = 10;

/// Runs the agent until `shutdown` resolves, then stops it cleanly.
pub async fn run(cfg: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    run_with(cfg, RunOptions::default(), shutdown).await
}

/// [`run`] with a shared scrubber and log ring (what `warden agent` uses).
pub async fn run_with(
    cfg: AgentConfig,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let started = std::time::Instant::now();
    // Too-short values are refused by the scrubber; they are masked by key name instead.
    let _ = opts.scrubber.add_secret(&cfg.api_key);
    if let Some(resolved) = &cfg.secrets.0 {
        resolved.register_with(&opts.scrubber);
    }
    let token = if cfg.cmd_port >= 0 && cfg.run_path.as_os_str().is_empty() {
        // A configuration built in code rather than loaded from a file has no folder for
        // the token and certificate; never fall back to the current directory.
        tracing::warn!("no run_path: the local API is disabled");
        None
    } else if cfg.cmd_port >= 0 {
        let path = if cfg.auth_token_file_path.as_os_str().is_empty() {
            cfg.run_path.join("auth_token")
        } else {
            cfg.auth_token_file_path.clone()
        };
        let t = AuthToken::load_or_create(&path).map_err(ApiError::from)?;
        let _ = opts.scrubber.add_secret(t.expose());
        Some(t)
    } else {
        None
    };
    if running_as_root() {
        tracing::warn!(
            "the agent is running as root; run it as a dedicated unprivileged user \
             (see the systemd unit in dist/) — it needs no privileges"
        );
    }
    if cfg.server_url.starts_with("http://") {
        tracing::warn!(
            server_url = %cfg.server_url,
            "allow_insecure_http is set: payloads and the API key are sent UNENCRYPTED"
        );
    }
    let telemetry = Arc::new(Telemetry::default());
    let registry = CheckRegistry::new();
    let (tx, rx) = mpsc::channel::<Outgoing>(1024);
    let forwarder = Forwarder::new(&cfg, telemetry.clone())?;
    let dogstatsd = DogstatsdServer::start(&cfg, tx.clone(), telemetry.clone())?;

    let (stop_sources, sources_stopped) = watch::channel(false);
    let (stop_forwarder, forwarder_stopped) = watch::channel(false);
    let forwarder_task = tokio::spawn(forwarder.run(rx, forwarder_stopped));
    let mut sources = tokio::task::JoinSet::new();
    if cfg.collect_host_metrics {
        sources.spawn(run_collector(
            cfg.clone(),
            tx.clone(),
            sources_stopped.clone(),
        ));
    }
    sources.spawn(run_checks(
        cfg.clone(),
        tx.clone(),
        telemetry.clone(),
        registry.clone(),
        sources_stopped.clone(),
    ));
    sources.spawn(run_telemetry(
        cfg.clone(),
        tx.clone(),
        telemetry.clone(),
        sources_stopped,
    ));
    // Like the local API, a busy trace port disables only the trace intake: metrics matter
    // more, and the error says what to change.
    let traces = if cfg.apm_config.enabled {
        match TraceReceiver::start(&cfg, tx.clone(), telemetry.clone()).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "the trace intake is disabled until the agent restarts (set \
                     apm_config.receiver_port, or apm_config.enabled: false)"
                );
                None
            }
        }
    } else {
        None
    };
    // Denylists and the ruleset for protected apps, pulled from the server and served on the
    // trace port.
    if let Some(t) = &traces {
        if cfg.appsec_rc_interval > 0 {
            match crate::appsec_rc::client(&cfg) {
                Ok(c) => {
                    sources.spawn(crate::appsec_rc::run_poller(
                        cfg.clone(),
                        t.appsec(),
                        c,
                        stop_sources.subscribe(),
                    ));
                }
                Err(e) => tracing::error!(error = %e, "appsec remote configuration disabled"),
            }
        }
    }
    drop(tx);
    let api = token.and_then(|token| {
        let view = AgentView {
            cfg: Arc::new(cfg.clone()),
            telemetry: telemetry.clone(),
            registry: registry.clone(),
            scrubber: opts.scrubber.clone(),
            logs: opts.logs.clone(),
            started,
            started_unix: crate::checks::unix_now(),
        };
        match ApiServer::start(view, token) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "the local API is disabled: `warden agent status|config|check|flare|gui` \
                     will not work until the agent restarts"
                );
                None
            }
        }
    });
    tracing::info!(host = %cfg.hostname, server = %cfg.server_url, "warden agent started");

    shutdown.await;
    tracing::info!("stopping: flushing open buckets and queued payloads");
    if let Some(api) = api {
        api.stop().await;
    }
    if let Some(t) = traces {
        t.stop().await;
    }
    let _ = stop_sources.send(true);
    let _ = tokio::task::spawn_blocking(move || dogstatsd.stop()).await;
    while sources.join_next().await.is_some() {}
    let _ = stop_forwarder.send(true);
    let _ = forwarder_task.await;
    tracing::info!("warden agent stopped");
    Ok(())
}

/// Ships `warden.agent.*` every [`TELEMETRY_INTERVAL`] seconds.
async fn run_telemetry(
    cfg: AgentConfig,
    tx: OutTx,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut previous = telemetry.snapshot();
    let mut tick = tokio::time::interval(Duration::from_secs(TELEMETRY_INTERVAL));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let current = telemetry.snapshot();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let series = Telemetry::to_series(
            &previous,
            &current,
            now,
            TELEMETRY_INTERVAL as i64,
            &cfg.hostname,
            &cfg.tags,
        );
        previous = current;
        if tx.send(Outgoing::Series(series)).await.is_err() {
            return;
        }
    }
}

/// True when the effective user is root (read from `/proc/self/status`, no `unsafe`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
