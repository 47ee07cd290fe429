//! Checks: built-in `http`, `tcp` and `process` probes plus user executables from `checks_d`,
//! each on its own timer, producing metrics and service checks for the forwarder.
//!
//! Why one task per check: a check can hang (a black-holed TCP peer, a stuck script); with its
//! own timer and its own timeout it can only ever delay itself. Every run ends in a
//! [`CheckOutput`] — failures included — so a broken check shows up as a CRITICAL service check
//! with the reason instead of silently disappearing, and never takes the agent down.
//!
//! The last output of every check is kept in a shared [`CheckRegistry`] so that `warden agent
//! status` can list it, and [`run_once`] runs a single check by name for `warden agent check`.
//!
//! What counts as a check *error* (the `warden.agent.check_errors` counter and
//! [`CheckOutput::error`]): the check could not produce a trustworthy result — a user check that
//! timed out, crashed, printed invalid JSON or was refused, an HTTP check whose `ca_file` cannot
//! be loaded, a process table that cannot be read. A monitored service being down (HTTP 500,
//! connection refused, a Nagios plugin exiting 2) is a valid CRITICAL result, not an error.
//!
//! Built-in check semantics and tags follow the Datadog integrations (`http_check`,
//! `tcp_check`, `process`); the user-check output protocol is documented in `docs/checks.md`.

mod http;
mod process;
mod sys;
mod tcp;
mod user;
mod x509;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use warden_model::{CheckStatus, MetricKind, Point, Series, ServiceCheck};

use crate::config::{AgentConfig, HttpCheckConfig, ProcessCheckConfig, TcpCheckConfig};
use crate::telemetry::Telemetry;
use crate::{OutTx, Outgoing};

pub use user::MAX_OUTPUT_BYTES;

/// Which kind of check produced an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Http,
    Tcp,
    Process,
    /// An executable from `checks_d`.
    User,
}

/// Everything one run of one check produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckOutput {
    /// The check's name (config `name`, or the file name of a user check).
    pub name: String,
    pub kind: CheckKind,
    /// Status of the check's main service check (`http.can_connect`, `tcp.can_connect`,
    /// `process.up`, `warden.check.<file>`).
    pub status: CheckStatus,
    /// Human-readable outcome (the main service check's message).
    pub message: String,
    /// Set when the run itself failed (see the module docs); such runs are CRITICAL, or
    /// UNKNOWN for a Nagios-style check exiting with a code above 3.
    pub error: Option<String>,
    pub series: Vec<Series>,
    pub service_checks: Vec<ServiceCheck>,
    /// UNIX seconds at the end of the run.
    pub timestamp: i64,
    pub duration_ms: u64,
}

/// The registry's view of one check: its last output and run counters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckRecord {
    pub last: CheckOutput,
    pub runs: u64,
    /// Runs that ended with [`CheckOutput::error`] set.
    pub errors: u64,
}

/// Last result of every check, by name; cheap to clone and share.
#[derive(Clone, Debug, Default)]
pub struct CheckRegistry {
    inner: Arc<Mutex<BTreeMap<String, CheckRecord>>>,
}

impl CheckRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CheckRecord>> {
        // A panic while holding the lock cannot leave a half-written record (inserts are
        // single operations), so a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record of one check, if it has run.
    pub fn get(&self, name: &str) -> Option<CheckRecord> {
        self.lock().get(name).cloned()
    }

    /// Every record, sorted by check name.
    pub fn snapshot(&self) -> Vec<CheckRecord> {
        self.lock().values().cloned().collect()
    }

    /// Stores the output of a run.
    pub fn record(&self, out: &CheckOutput) {
        let mut map = self.lock();
        let rec = map.entry(out.name.clone()).or_insert_with(|| CheckRecord {
            last: out.clone(),
            runs: 0,
            errors: 0,
        });
        rec.last = out.clone();
        rec.runs += 1;
        rec.errors += u64::from(out.error.is_some());
    }

    /// Forgets a check (its executable was removed).
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }
}

/// Why a check could not be found or started by [`run_once`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no check named `{name}`; configured checks: {}", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    NotFound { name: String, known: Vec<String> },
    #[error("cannot read checks_d folder {path}: {source}")]
    ChecksDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What every check needs from the agent configuration.
#[derive(Debug)]
pub(crate) struct Ctx {
    host: String,
    tags: Vec<String>,
    procfs: PathBuf,
    check_timeout: Duration,
}

impl Ctx {
    fn new(cfg: &AgentConfig) -> Self {
        Self {
            host: cfg.hostname.clone(),
            tags: cfg.tags.clone(),
            procfs: cfg.procfs_path.clone(),
            check_timeout: Duration::from_secs(cfg.check_timeout.max(1)),
        }
    }

    /// Host tags followed by `extra`.
    fn tags_with(&self, extra: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut t = self.tags.clone();
        t.extend(extra);
        t
    }

    fn service_check(
        &self,
        name: &str,
        status: CheckStatus,
        tags: &[String],
        message: &str,
        now: i64,
    ) -> ServiceCheck {
        ServiceCheck {
            name: name.to_owned(),
            status,
            host: self.host.clone(),
            timestamp: now,
            tags: tags.to_vec(),
            message: (!message.is_empty()).then(|| message.to_owned()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn series(
        &self,
        name: &str,
        kind: MetricKind,
        unit: Option<&str>,
        value: f64,
        tags: &[String],
        now: i64,
        interval: Duration,
    ) -> Series {
        Series {
            name: name.to_owned(),
            tags: tags.to_vec(),
            host: self.host.clone(),
            kind,
            interval: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
            unit: unit.map(str::to_owned),
            source_type_name: None,
            points: vec![Point {
                timestamp: now,
                value,
            }],
        }
    }
}

/// One configured check with whatever state it keeps between runs.
#[derive(Debug)]
enum Check {
    Http(http::HttpCheck),
    Tcp(TcpCheckConfig),
    Process(process::ProcessCheck),
    User(user::UserCheck),
}

impl Check {
    fn name(&self) -> &str {
        match self {
            Check::Http(c) => &c.cfg.name,
            Check::Tcp(c) => &c.name,
            Check::Process(c) => &c.cfg.name,
            Check::User(c) => &c.name,
        }
    }

    fn interval(&self) -> Duration {
        let secs = match self {
            Check::Http(c) => c.cfg.interval,
            Check::Tcp(c) => c.interval,
            Check::Process(c) => c.cfg.interval,
            Check::User(c) => c.interval,
        };
        Duration::from_secs(secs.max(1))
    }

    async fn run(&mut self, ctx: &Ctx) -> CheckOutput {
        let started = Instant::now();
        let mut out = match self {
            Check::Http(c) => c.run(ctx).await,
            Check::Tcp(c) => tcp::run(c, ctx).await,
            Check::Process(c) => c.run(ctx).await,
            Check::User(c) => c.run(ctx).await,
        };
        out.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        out
    }
}

fn builtin_checks(cfg: &AgentConfig) -> Vec<Check> {
    let mut v: Vec<Check> = Vec::new();
    v.extend(
        cfg.checks
            .http
            .iter()
            .map(|c: &HttpCheckConfig| Check::Http(http::HttpCheck::new(c.clone()))),
    );
    v.extend(cfg.checks.tcp.iter().cloned().map(Check::Tcp));
    v.extend(
        cfg.checks
            .process
            .iter()
            .map(|c: &ProcessCheckConfig| Check::Process(process::ProcessCheck::new(c.clone()))),
    );
    v
}

/// Names of every configured check: built-ins, then runnable files of `checks_d`.
pub fn check_names(cfg: &AgentConfig) -> Result<Vec<String>, CheckError> {
    let mut names: Vec<String> = builtin_checks(cfg)
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    if let Some(dir) = &cfg.checks_d {
        let found = user::scan(dir).map_err(|source| CheckError::ChecksDir {
            path: dir.clone(),
            source,
        })?;
        names.extend(found.runnable.into_iter().map(|(n, _)| n));
    }
    Ok(names)
}

/// Runs the check called `name` once and returns its output (nothing is sent anywhere).
/// A process check samples CPU twice, 250 ms apart, so its `cpu.pct` is meaningful.
pub async fn run_once(cfg: &AgentConfig, name: &str) -> Result<CheckOutput, CheckError> {
    let ctx = Ctx::new(cfg);
    if let Some(mut check) = builtin_checks(cfg).into_iter().find(|c| c.name() == name) {
        return Ok(check.run(&ctx).await);
    }
    if let Some(dir) = &cfg.checks_d {
        let found = user::scan(dir).map_err(|source| CheckError::ChecksDir {
            path: dir.clone(),
            source,
        })?;
        if let Some((n, path)) = found.runnable.into_iter().find(|(n, _)| n == name) {
            let mut check = Check::User(user::UserCheck::new(n, path, cfg.check_interval));
            return Ok(check.run(&ctx).await);
        }
    }
    Err(CheckError::NotFound {
        name: name.to_owned(),
        known: check_names(cfg).unwrap_or_default(),
    })
}

/// Resolves when shutdown is requested or its sender is gone.
async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Shared pieces every check task needs.
#[derive(Clone)]
struct Sink {
    ctx: Arc<Ctx>,
    tx: OutTx,
    telemetry: Arc<Telemetry>,
    registry: CheckRegistry,
}

impl Sink {
    /// Records and forwards one output; false when the forwarder is gone.
    async fn deliver(&self, out: CheckOutput) -> bool {
        if let Some(err) = &out.error {
            Telemetry::add(&self.telemetry.check_errors, 1);
            tracing::warn!(check = %out.name, error = %err, "check run failed");
        }
        self.registry.record(&out);
        if !out.series.is_empty() && self.tx.send(Outgoing::Series(out.series)).await.is_err() {
            return false;
        }
        if !out.service_checks.is_empty()
            && self
                .tx
                .send(Outgoing::ServiceChecks(out.service_checks))
                .await
                .is_err()
        {
            return false;
        }
        true
    }
}

/// Runs one check every interval until shutdown. A shutdown during a run cancels it (a user
/// check's process group is killed by its guard).
async fn check_loop(mut check: Check, sink: Sink, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(check.interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown_requested(&mut shutdown) => return,
        }
        let out = tokio::select! {
            out = check.run(&sink.ctx) => out,
            () = shutdown_requested(&mut shutdown) => return,
        };
        if !sink.deliver(out).await {
            tracing::debug!(check = %check.name(), "forwarder channel closed; check stops");
            return;
        }
    }
}

/// Runs every configured check on its own interval until `shutdown` turns true.
///
/// `checks_d` is rescanned every `check_interval` seconds: new executables start running,
/// removed ones stop and leave the registry. A user check whose name equals a built-in
/// check's name is ignored with an error log (names are the registry keys).
pub async fn run_checks(
    cfg: AgentConfig,
    tx: OutTx,
    telemetry: Arc<Telemetry>,
    registry: CheckRegistry,
    mut shutdown: watch::Receiver<bool>,
) {
    let sink = Sink {
        ctx: Arc::new(Ctx::new(&cfg)),
        tx,
        telemetry,
        registry,
    };
    let mut tasks = tokio::task::JoinSet::new();
    let builtins = builtin_checks(&cfg);
    let builtin_names: Vec<String> = builtins.iter().map(|c| c.name().to_owned()).collect();
    for check in builtins {
        tasks.spawn(check_loop(check, sink.clone(), shutdown.clone()));
    }
    let Some(dir) = cfg.checks_d.clone() else {
        shutdown_requested(&mut shutdown).await;
        tasks.shutdown().await;
        return;
    };
    let mut users: BTreeMap<String, (PathBuf, tokio::task::AbortHandle)> = BTreeMap::new();
    let mut warned: std::collections::BTreeSet<String> = Default::default();
    let mut rescan = tokio::time::interval(Duration::from_secs(cfg.check_interval.max(1)));
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = rescan.tick() => {}
            () = shutdown_requested(&mut shutdown) => break,
        }
        let found = match user::scan(&dir) {
            Ok(f) => f,
            Err(err) => {
                if warned.insert(format!("dir:{err}")) {
                    tracing::error!(dir = %dir.display(), %err, "cannot read checks_d");
                }
                continue;
            }
        };
        for name in found.not_executable {
            if warned.insert(format!("noexec:{name}")) {
                tracing::warn!(file = %name, dir = %dir.display(),
                    "checks_d file is not executable; skipped (chmod u+x to enable it)");
            }
        }
        let current: BTreeMap<String, PathBuf> = found.runnable.into_iter().collect();
        users.retain(|name, (path, handle)| {
            let keep = current.get(name) == Some(path);
            if !keep {
                handle.abort();
                sink.registry.remove(name);
                tracing::info!(check = %name, "user check removed");
            }
            keep
        });
        for (name, path) in current {
            if users.contains_key(&name) {
                continue;
            }
            if builtin_names.contains(&name) {
                if warned.insert(format!("dup:{name}")) {
                    tracing::error!(check = %name, "user check has the name of a built-in check; ignored");
                }
                continue;
            }
            tracing::info!(check = %name, path = %path.display(), "user check scheduled");
            let check = Check::User(user::UserCheck::new(
                name.clone(),
                path.clone(),
                cfg.check_interval,
            ));
            let handle = tasks.spawn(check_loop(check, sink.clone(), shutdown.clone()));
            users.insert(name, (path, handle));
        }
        // Reap finished tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An error and its sources, joined with `: `, without repeating a message its wrapper
/// already includes.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}
