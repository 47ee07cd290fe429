//! The forwarder: turns [`Outgoing`] batches into Datadog intake payloads and delivers them
//! over TLS, queueing through outages.
//!
//! # Flow
//!
//! ```text
//! OutRx ─► serialize (split to intake limits, compress) ─► memory queue ─► one request in flight
//!                                                  ▲   │ full: spill oldest half        │
//!                                                  │   ▼                                 │ retryable error:
//!                               refill when healthy └─ disk queue (optional)            ◄┘ back into the queue
//! ```
//!
//! # Why it is built this way
//!
//! * **Datadog semantics** (`agent.md` §3): 2xx delivered; 400/403/413 dropped (the intake
//!   will never take them; counted in `payloads_rejected` and `payloads_dropped`); every other
//!   status, network, timeout and TLS error is retried. Each endpoint has a circuit breaker
//!   with exponential backoff (`retry.rs`); while it is blocked, its payloads wait.
//! * **Newest first, oldest evicted**: fresh data matters most when the intake comes back, so
//!   the queue sends the newest payload first; when the memory bound
//!   (`forwarder_retry_queue_payloads_max_size`) is hit, the oldest payloads go — to disk when
//!   the disk queue is enabled, otherwise they are dropped and counted (`payloads_evicted`).
//! * **No loss within bounds**: with `forwarder_storage_max_size_in_bytes > 0`, payloads leave
//!   the agent only by being delivered, rejected by the intake, or pushed out of the *disk*
//!   bound (counted). Graceful shutdown persists what is still in memory, and a new forwarder
//!   on the same `forwarder_storage_path` sends it (format and invariants: `disk.rs`).
//! * **Never fail open**: see `transport.rs`. A certificate error is a retryable error, so data
//!   waits for the operator to fix trust instead of being sent in clear or discarded.
//! * **One request in flight** (`forwarder_num_workers: 1`): simple ordering, bounded resource
//!   use; sends run on a spawned task so that intake of new batches never waits for the
//!   network.

mod disk;
mod queue;
mod retry;
mod serialize;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use disk::DiskError;
pub(crate) use transport::{error_chain, tls_config};

use crate::config::{AgentConfig, Compression};
use crate::telemetry::Telemetry;
use crate::{OutRx, Outgoing};
use disk::DiskQueue;
use queue::MemoryQueue;
use retry::{BackoffPolicy, Breaker, Jitter};
use serialize::{Endpoint, Payload, Serialized};
use transport::{Outcome, Transport};

/// Time given to in-flight and queued sends at shutdown before the rest is persisted
/// (`forwarder_stop_timeout`).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A success is logged every this many delivered payloads (`logging_frequency`).
const LOG_EVERY: u64 = 500;

/// Evictions from a full memory queue are logged at most this often (with a count).
const EVICTION_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a forwarder could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error(
        "server_url {url} is plain http://; set allow_insecure_http: true to permit sending \
         metrics and the API key without TLS, or use https://"
    )]
    InsecureUrl { url: String },
    #[error("server_url {url:?} is invalid: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("api_key contains characters that cannot be sent in an HTTP header")]
    InvalidApiKey,
    #[error("cannot read CA bundle {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA bundle {path} contains no usable PEM certificate")]
    NoCertificates { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    #[error("HTTP client: {0}")]
    Client(String),
    #[error(
        "the disk queue is enabled (forwarder_storage_max_size_in_bytes > 0) but neither \
         forwarder_storage_path nor run_path is set"
    )]
    NoStoragePath,
    #[error(transparent)]
    Storage(#[from] DiskError),
}

struct InFlight {
    payload: Payload,
    handle: JoinHandle<Outcome>,
}

/// Delivers agent payloads to the Warden intake (see module docs).
pub struct Forwarder {
    transport: Transport,
    telemetry: Arc<Telemetry>,
    hostname: String,
    /// `env:` of the agent's `tags`, reported in trace payloads.
    env: String,
    compression: Compression,
    policy: BackoffPolicy,
    memory: MemoryQueue,
    disk: Option<DiskQueue>,
    next_seq: u64,
    stop_timeout: Duration,
    breakers: [Breaker; serialize::ENDPOINTS],
    jitter: Jitter,
    delivered: u64,
    last_eviction_log: Option<Instant>,
    unlogged_evictions: u64,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("queued", &self.memory.len())
            .field("queued_bytes", &self.memory.bytes())
            .field("disk_bytes", &self.disk.as_ref().map(DiskQueue::bytes))
            .finish_non_exhaustive()
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Forwarder {
    /// Builds the TLS client and opens the disk queue (when enabled), indexing what a previous
    /// run left there so it is sent first thing.
    pub fn new(cfg: &AgentConfig, telemetry: Arc<Telemetry>) -> Result<Self, ForwarderError> {
        let transport = Transport::new(cfg)?;
        let disk = if cfg.forwarder_storage_max_size_in_bytes > 0 {
            let dir = if !cfg.forwarder_storage_path.as_os_str().is_empty() {
                cfg.forwarder_storage_path.clone()
            } else if !cfg.run_path.as_os_str().is_empty() {
                cfg.run_path.join("transactions_to_retry")
            } else {
                return Err(ForwarderError::NoStoragePath);
            };
            let q = DiskQueue::open(&dir, cfg.forwarder_storage_max_size_in_bytes)?;
            if !q.is_empty() {
                tracing::info!(
                    dir = %dir.display(),
                    payloads = q.records(),
                    bytes = q.bytes(),
                    "found payloads queued on disk by a previous run; they will be sent"
                );
            }
            Some(q)
        } else {
            None
        };
        let next_seq = disk
            .as_ref()
            .and_then(DiskQueue::max_seq)
            .map_or(0, |s| s + 1);
        let fwd = Self {
            transport,
            telemetry,
            hostname: cfg.hostname.clone(),
            env: cfg
                .tags
                .iter()
                .find_map(|t| t.strip_prefix("env:"))
                .unwrap_or_default()
                .to_owned(),
            compression: cfg.serializer_compressor_kind,
            policy: BackoffPolicy {
                base: cfg.forwarder_backoff_base,
                factor: cfg.forwarder_backoff_factor,
                max: cfg.forwarder_backoff_max,
                jitter: true,
            },
            memory: MemoryQueue::new(cfg.forwarder_retry_queue_payloads_max_size),
            disk,
            next_seq,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            breakers: [Breaker::default(); serialize::ENDPOINTS],
            jitter: Jitter::new(),
            delivered: 0,
            last_eviction_log: None,
            unlogged_evictions: 0,
        };
        fwd.update_gauges();
        Ok(fwd)
    }

    /// Changes how long [`Forwarder::run`] keeps sending after shutdown is signalled before it
    /// persists (or, without a disk queue, gives up on) what is left.
    pub fn with_stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Consumes batches until `shutdown` becomes `true` (or its sender is dropped), delivering
    /// and queueing as described in the module docs. On shutdown: takes the batches already in
    /// the channel, keeps sending for at most the stop timeout, then persists the rest to disk
    /// (when enabled) and returns. If every sender of `rx` is dropped, returns as soon as
    /// everything queued has been delivered.
    pub async fn run(mut self, mut rx: OutRx, mut shutdown: watch::Receiver<bool>) {
        let mut inflight: Option<InFlight> = None;
        let mut rx_open = true;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            self.refill_from_disk(now);
            if inflight.is_none() {
                inflight = self.start_next(now);
            }
            if !rx_open && inflight.is_none() && self.memory.is_empty() && self.disk_is_empty() {
                tracing::info!("forwarder input closed and every payload delivered; stopping");
                return;
            }
            let wake = if inflight.is_none() {
                self.next_wake(now)
            } else {
                None
            };
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        tracing::debug!("shutdown sender dropped; stopping the forwarder");
                        break;
                    }
                }
                (payload, outcome) = wait(&mut inflight), if inflight.is_some() => {
                    inflight = None;
                    self.on_outcome(payload, outcome);
                }
                msg = rx.recv(), if rx_open => match msg {
                    Some(batch) => self.accept(batch),
                    None => rx_open = false,
                },
                _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            }
        }
        self.stop(rx, inflight).await;
    }

    async fn stop(&mut self, mut rx: OutRx, mut inflight: Option<InFlight>) {
        rx.close();
        while let Ok(batch) = rx.try_recv() {
            self.accept(batch);
        }
        let deadline = Instant::now() + self.stop_timeout;
        loop {
            if inflight.is_none() {
                inflight = self.start_next(Instant::now());
            }
            let Some(f) = inflight.as_mut() else { break };
            match tokio::time::timeout_at(deadline, &mut f.handle).await {
                Ok(res) => {
                    let Some(f) = inflight.take() else { break };
                    let outcome = res.unwrap_or_else(|e| Outcome::Retry(format!("send task: {e}")));
                    self.on_outcome(f.payload, outcome);
                }
                Err(_) => {
                    if let Some(f) = inflight.take() {
                        f.handle.abort();
                        // Possibly delivered already: at-least-once, a duplicate is better
                        // than a loss.
                        self.memory.insert(f.payload);
                    }
                    break;
                }
            }
        }
        let pending = self.memory.drain();
        if !pending.is_empty() {
            let n = pending.len() as u64;
            if self.disk.is_some() {
                self.spill(pending);
                tracing::info!(
                    payloads = n,
                    "persisted undelivered payloads to the disk queue"
                );
            } else {
                Telemetry::add(&self.telemetry.payloads_dropped, n);
                tracing::warn!(
                    payloads = n,
                    "forwarder stopped with undelivered payloads and no disk queue \
                     (forwarder_storage_max_size_in_bytes = 0); they are lost"
                );
            }
        }
        self.update_gauges();
    }

    fn disk_is_empty(&self) -> bool {
        self.disk.as_ref().is_none_or(DiskQueue::is_empty)
    }

    /// Serializes a batch and queues its payloads as the newest.
    fn accept(&mut self, batch: Outgoing) {
        let now_ms = unix_ms();
        let ser: Serialized = match &batch {
            Outgoing::Series(s) => serialize::serialize_series(s, self.compression),
            Outgoing::Sketches(s) => serialize::serialize_sketches(s, self.compression),
            Outgoing::ServiceChecks(c) => serialize::serialize_checks(c, self.compression),
            Outgoing::Events(e) => {
                serialize::serialize_events(e, &self.hostname, now_ms / 1000, self.compression)
            }
            Outgoing::Traces(t) => {
                serialize::serialize_traces(t, &self.hostname, &self.env, self.compression)
            }
        };
        if ser.dropped_items > 0 {
            Telemetry::add(&self.telemetry.payloads_dropped, ser.dropped_items);
        }
        for b in ser.bodies {
            let p = Payload {
                seq: self.next_seq,
                created_ms: now_ms,
                endpoint: b.endpoint,
                encoding: self.compression,
                body: b.body.into(),
            };
            self.next_seq += 1;
            self.enqueue(p);
        }
        self.update_gauges();
    }

    fn enqueue(&mut self, p: Payload) {
        if p.size() > self.memory.max_bytes() {
            if self.disk.is_some() {
                self.spill(vec![p]);
            } else {
                self.evicted(1);
                tracing::warn!(
                    bytes = p.size(),
                    limit = self.memory.max_bytes(),
                    "payload larger than the whole retry queue; dropped"
                );
            }
            return;
        }
        self.memory.insert(p);
        if !self.memory.over() {
            return;
        }
        if self.disk.is_some() {
            // Spill the oldest half (`forwarder_flush_to_disk_mem_ratio` 0.5), at least the
            // overflow, as one segment.
            let overflow = self.memory.bytes() - self.memory.max_bytes();
            let batch = self
                .memory
                .take_oldest(overflow.max(self.memory.max_bytes() / 2));
            self.spill(batch);
        } else {
            let mut n = 0;
            while self.memory.over() {
                if self.memory.pop_oldest().is_none() {
                    break;
                }
                n += 1;
            }
            self.evicted(n);
            self.unlogged_evictions += n;
            let now = Instant::now();
            if self
                .last_eviction_log
                .is_none_or(|t| now.duration_since(t) >= EVICTION_LOG_EVERY)
            {
                tracing::warn!(
                    evicted = self.unlogged_evictions,
                    limit = self.memory.max_bytes(),
                    "retry queue full; oldest payloads dropped (enable the disk queue with \
                     forwarder_storage_max_size_in_bytes to keep them)"
                );
                self.last_eviction_log = Some(now);
                self.unlogged_evictions = 0;
            }
        }
    }

    fn evicted(&self, n: u64) {
        Telemetry::add(&self.telemetry.payloads_evicted, n);
        Telemetry::add(&self.telemetry.payloads_dropped, n);
    }

    fn spill(&mut self, batch: Vec<Payload>) {
        let Some(disk) = self.disk.as_mut() else {
            return;
        };
        let n = batch.len() as u64;
        match disk.push(batch) {
            Ok(0) => {}
            Ok(dropped) => {
                self.evicted(dropped);
                tracing::warn!(
                    dropped,
                    "disk queue full (forwarder_storage_max_size_in_bytes); oldest payloads dropped"
                );
            }
            Err(e) => {
                self.evicted(n);
                tracing::error!(error = %e, payloads = n, "cannot write the disk queue; payloads dropped");
            }
        }
        self.update_gauges();
    }

    /// Moves the newest disk segment into memory once memory is drained and no endpoint is
    /// backing off (retry order: memory first, then the newest segment).
    fn refill_from_disk(&mut self, now: Instant) {
        if !self.memory.is_empty() || self.breakers.iter().any(|b| b.is_blocked(now)) {
            return;
        }
        let Some(disk) = self.disk.as_mut() else {
            return;
        };
        if disk.is_empty() {
            return;
        }
        match disk.pop_newest() {
            Ok(Some(loaded)) => {
                let lost = loaded.corrupt + loaded.missing;
                if lost > 0 {
                    Telemetry::add(&self.telemetry.payloads_dropped, lost);
                }
                tracing::debug!(
                    payloads = loaded.payloads.len(),
                    "reloaded a disk-queue segment"
                );
                // Inserted without the bound check: a segment is at most half the memory
                // bound (or one payload larger than the bound, which could otherwise never
                // leave the disk); spilling it straight back would loop.
                for p in loaded.payloads {
                    self.memory.insert(p);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the disk queue"),
        }
        self.update_gauges();
    }

    fn start_next(&mut self, now: Instant) -> Option<InFlight> {
        let breakers = self.breakers;
        let payload = self
            .memory
            .pop_newest(|e| !breakers[e.index()].is_blocked(now))?;
        let transport = self.transport.clone();
        let copy = payload.clone();
        let handle = tokio::spawn(async move { transport.send(&copy).await });
        self.update_gauges();
        Some(InFlight { payload, handle })
    }

    fn on_outcome(&mut self, p: Payload, outcome: Outcome) {
        let ep = p.endpoint;
        match outcome {
            Outcome::Sent(status) => {
                tracing::trace!(
                    endpoint = ep.path(),
                    status,
                    bytes = p.size(),
                    "payload delivered"
                );
                if self.breakers[ep.index()].failing() {
                    tracing::info!(endpoint = ep.path(), "intake reachable again");
                }
                self.breakers[ep.index()].success();
                Telemetry::add(&self.telemetry.payloads_sent, 1);
                self.delivered += 1;
                if self.delivered % LOG_EVERY == 1 {
                    tracing::info!(
                        delivered = self.delivered,
                        "successfully posted payload to the intake (logged every {LOG_EVERY})"
                    );
                }
            }
            Outcome::Rejected(status, why) => {
                self.breakers[ep.index()].success();
                Telemetry::add(&self.telemetry.payloads_rejected, 1);
                Telemetry::add(&self.telemetry.payloads_dropped, 1);
                tracing::error!(
                    endpoint = ep.path(),
                    status,
                    bytes = p.size(),
                    reason = %why,
                    "intake rejected payload; dropped without retry"
                );
            }
            Outcome::Retry(why) => {
                Telemetry::add(&self.telemetry.payloads_retried, 1);
                let unit = self.jitter.unit();
                let delay = self.breakers[ep.index()].failure(Instant::now(), &self.policy, unit);
                tracing::warn!(
                    endpoint = ep.path(),
                    error = %why,
                    retry_in_ms = delay.as_millis() as u64,
                    queued = self.memory.len() + 1,
                    "send failed; payload kept for retry"
                );
                self.enqueue(p);
            }
        }
        self.update_gauges();
    }

    /// When to wake up if nothing else happens: the end of the earliest backoff that blocks a
    /// queued payload (or, with only disk data left, the end of the last backoff).
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let queued = self.memory.endpoints();
        let mut wake: Option<Instant> = None;
        for e in Endpoint::ALL {
            let b = &self.breakers[e.index()];
            if queued[e.index()] && b.is_blocked(now) {
                wake = min_opt(wake, b.blocked_until());
            }
        }
        if self.memory.is_empty() && !self.disk_is_empty() {
            let latest = self
                .breakers
                .iter()
                .filter(|b| b.is_blocked(now))
                .filter_map(Breaker::blocked_until)
                .max();
            wake = min_opt(wake, latest);
        }
        wake
    }

    fn update_gauges(&self) {
        Telemetry::set(&self.telemetry.queue_bytes, self.memory.bytes());
        Telemetry::set(
            &self.telemetry.disk_queue_bytes,
            self.disk.as_ref().map_or(0, DiskQueue::bytes),
        );
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

async fn wait(inflight: &mut Option<InFlight>) -> (Payload, Outcome) {
    match inflight.as_mut() {
        Some(f) => {
            let outcome = (&mut f.handle)
                .await
                .unwrap_or_else(|e| Outcome::Retry(format!("send task: {e}")));
            (f.payload.clone(), outcome)
        }
        None => std::future::pending().await,
    }
}
