//! Reporting as traces: each [`RequestReport`] becomes the service-entry span of a
//! Datadog-compatible trace, shipped to the local agent's trace intake (`PUT /v0.4/traces`,
//! msgpack), exactly as a ddtrace tracer with AppSec enabled would tag it. The agent and the
//! server then treat Warden-protected Rust services and ddtrace-instrumented ones alike.
//!
//! Why a background thread and a bounded queue: reporting must never slow down or fail a
//! request. `report` only `try_send`s the report (a move, no copy); the span is built, encoded
//! and shipped on the sender thread. When the queue is full the report is dropped and counted
//! ([`TraceStats::dropped`]). The thread ships a batch every second or
//! every 100 spans, whichever comes first. Spans carry `_sampling_priority_v1 = 2`
//! (user-keep) so no sampler downstream drops a security trace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::agent_client::AgentUrl;
use crate::config::{AgentConfig, ConfigError};
use crate::engine::{EventSink, RequestReport, TraceLink};

/// Spans waiting to be shipped before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 1_000;
/// Spans per batch at most; a full batch is shipped at once.
pub const BATCH_SPANS: usize = 100;
/// Longest time a span waits in a partial batch.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// `_sampling_priority_v1` of security traces: USER_KEEP.
const USER_KEEP: f64 = 2.0;

/// One span in the Datadog v0.4 trace format (serialized as a msgpack map).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub resource: String,
    pub trace_id: u64,
    pub span_id: u64,
    pub parent_id: u64,
    /// UNIX nanoseconds.
    pub start: i64,
    /// Nanoseconds.
    pub duration: i64,
    pub error: i32,
    pub meta: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
    #[serde(rename = "type")]
    pub span_type: String,
}

/// Counters of the trace sink (for logs, status pages and tests).
#[derive(Debug, Default)]
pub struct TraceStats {
    /// Spans accepted into the queue.
    pub queued: AtomicU64,
    /// Spans dropped because the queue was full (or the sender thread is gone).
    pub dropped: AtomicU64,
    /// Spans the agent acknowledged (2xx).
    pub sent: AtomicU64,
    /// Spans lost to a failed send (network error or non-2xx answer).
    pub failed: AtomicU64,
}

enum Msg {
    /// Turned into a span on the sender thread, not on the request path.
    Report(Box<RequestReport>),
    Flush(SyncSender<()>),
}

/// An [`EventSink`] that reports as trace spans to the agent (see the module doc).
pub struct TraceSink {
    tx: SyncSender<Msg>,
    cfg: AgentConfig,
    stats: Arc<TraceStats>,
}

impl std::fmt::Debug for TraceSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceSink")
            .field("agent", &self.cfg.url)
            .field("service", &self.cfg.service)
            .finish_non_exhaustive()
    }
}

impl TraceSink {
    /// Starts the sender thread for the agent at `cfg.url`.
    pub fn new(cfg: AgentConfig) -> Result<TraceSink, ConfigError> {
        let url = AgentUrl::parse(&cfg.url).ok_or_else(|| ConfigError::BadValue {
            var: "DD_TRACE_AGENT_URL",
            value: cfg.url.clone(),
            reason: "expected http://HOST[:PORT]",
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let stats = Arc::new(TraceStats::default());
        let st = Arc::clone(&stats);
        let span_cfg = cfg.clone();
        std::thread::Builder::new()
            .name("warden-appsec-traces".into())
            .spawn(move || sender(rx, url, span_cfg, st))
            .map_err(|e| ConfigError::BadValue {
                var: "WARDEN_APPSEC_TRACE",
                value: e.to_string(),
                reason: "cannot start the trace sender thread",
            })?;
        Ok(TraceSink { tx, cfg, stats })
    }

    pub fn stats(&self) -> &Arc<TraceStats> {
        &self.stats
    }

    /// Ships everything queued so far and waits (at most `timeout`) until it was sent or
    /// failed. For shutdown and tests; the request path never calls it.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        let mut msg = Msg::Flush(done_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        done_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

impl EventSink for TraceSink {
    fn report(&self, report: RequestReport) {
        match self.tx.try_send(Msg::Report(Box::new(report))) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n + 1,
                        "appsec: trace queue full, security span dropped"
                    );
                }
            }
        }
    }
}

/// Reports to several sinks (e.g. the [`TraceSink`] and an application's own recorder).
#[derive(Clone, Default)]
pub struct FanOut(pub Vec<Arc<dyn EventSink>>);

impl EventSink for FanOut {
    fn report(&self, report: RequestReport) {
        if let Some((last, rest)) = self.0.split_last() {
            for s in rest {
                s.report(report.clone());
            }
            last.report(report);
        }
    }
}

fn sender(rx: Receiver<Msg>, url: AgentUrl, cfg: AgentConfig, stats: Arc<TraceStats>) {
    let mut batch: Vec<Span> = Vec::with_capacity(BATCH_SPANS);
    let mut deadline: Option<Instant> = None;
    let mut failures: u64 = 0;
    loop {
        let msg = match deadline {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        let mut waiter = None;
        match msg {
            Some(Msg::Report(r)) => {
                batch.push(span_from_report(&r, &cfg));
                deadline.get_or_insert_with(|| Instant::now() + FLUSH_INTERVAL);
                if batch.len() < BATCH_SPANS {
                    continue;
                }
            }
            Some(Msg::Flush(w)) => waiter = Some(w),
            None => {}
        }
        if !batch.is_empty() {
            ship(&url, &mut batch, &stats, &mut failures);
        }
        deadline = None;
        if let Some(w) = waiter {
            let _ = w.try_send(());
        }
    }
    if !batch.is_empty() {
        ship(&url, &mut batch, &stats, &mut failures);
    }
}

fn ship(url: &AgentUrl, batch: &mut Vec<Span>, stats: &TraceStats, failures: &mut u64) {
    let n = batch.len() as u64;
    // One trace per span: each request is its own trace (or a part of the caller's).
    let traces: Vec<[&Span; 1]> = batch.iter().map(|s| [s]).collect();
    let result = match rmp_serde::to_vec_named(&traces) {
        Ok(body) => {
            let count = traces.len().to_string();
            url.request(
                "PUT",
                "/v0.4/traces",
                &[
                    ("Content-Type", "application/msgpack"),
                    ("X-Datadog-Trace-Count", &count),
                    ("Datadog-Meta-Lang", "rust"),
                    ("Datadog-Meta-Tracer-Version", env!("CARGO_PKG_VERSION")),
                ],
                &body,
                Duration::from_secs(5),
            )
            .map_err(|e| e.to_string())
            .and_then(|r| {
                if (200..300).contains(&r.status) {
                    Ok(())
                } else {
                    Err(format!("agent answered {}", r.status))
                }
            })
        }
        Err(e) => Err(format!("msgpack: {e}")),
    };
    batch.clear();
    match result {
        Ok(()) => {
            stats.sent.fetch_add(n, Ordering::Relaxed);
            if *failures > 0 {
                tracing::info!("appsec: trace intake reachable again");
            }
            *failures = 0;
        }
        Err(e) => {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            *failures += 1;
            if failures.is_power_of_two() {
                tracing::warn!(error = %e, spans = n, consecutive = *failures, "appsec: cannot send security spans to the agent");
            }
        }
    }
}

/// The span a tracer would have sent for this request.
pub fn span_from_report(r: &RequestReport, cfg: &AgentConfig) -> Span {
    let ids = ids_from_link(&r.trace, r.start_unix_ns);
    let path = r.uri.split('?').next().unwrap_or("");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        // Absolute-form request target: keep only the path.
        r.uri
            .parse::<http::Uri>()
            .map(|u| u.path().to_string())
            .unwrap_or_default()
    };
    let resource = format!("{} {}", r.method, r.route.as_deref().unwrap_or(&path));
    let mut meta: BTreeMap<String, String> = BTreeMap::new();
    // WAF attributes first so nothing below can be overridden by them.
    for (k, v) in &r.attributes {
        let s = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        meta.insert(k.clone(), s);
    }
    meta.extend(r.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut put = |k: &str, v: String| {
        meta.insert(k.to_string(), v);
    };
    put("_dd.origin", "appsec".into());
    put("_dd.p.dm", "-5".into());
    put("language", "rust".into());
    put("span.kind", "server".into());
    put("component", "warden-appsec".into());
    put("http.method", r.method.clone());
    put("http.url", redact_query(&r.uri));
    if let Some(s) = r.status {
        put("http.status_code", s.to_string());
    }
    if let Some(ip) = r.client_ip {
        put("http.client_ip", ip.to_string());
        put("network.client.ip", ip.to_string());
    }
    if let Some(route) = &r.route {
        put("http.route", route.clone());
    }
    if let Some(ua) = &r.user_agent {
        put("http.useragent", ua.clone());
    }
    if !r.events.is_empty() {
        put("appsec.event", "true".into());
        put("_dd.appsec.json", r.appsec_json().to_string());
    }
    if let Some(b) = &r.blocked {
        put("appsec.blocked", "true".into());
        put("security_response.id", b.request_id.clone());
        put("appsec.event", "true".into());
    }
    if let Some(v) = &r.rules_version {
        put("_dd.appsec.event_rules.version", v.clone());
    }
    let (a, b, c) = warden_waf::ENGINE_VERSION;
    put("_dd.appsec.waf.version", format!("warden-{a}.{b}.{c}"));
    if let Some(tid) = ids.tid_high {
        put("_dd.p.tid", format!("{tid:016x}"));
    }
    if let Some(e) = &cfg.env {
        put("env", e.clone());
    }
    if let Some(v) = &cfg.version {
        put("version", v.clone());
    }
    let mut metrics = BTreeMap::new();
    metrics.insert("_dd.appsec.enabled".to_string(), 1.0);
    metrics.insert(
        "_dd.appsec.waf.duration".to_string(),
        r.waf_duration_ns as f64 / 1000.0,
    );
    if r.waf_timeouts > 0 {
        metrics.insert(
            "_dd.appsec.waf.timeouts".to_string(),
            f64::from(r.waf_timeouts),
        );
    }
    metrics.insert("_sampling_priority_v1".to_string(), USER_KEEP);
    metrics.insert("_dd.top_level".to_string(), 1.0);
    Span {
        service: cfg.service.clone(),
        name: "http.request".into(),
        resource,
        trace_id: ids.trace_id,
        span_id: ids.span_id,
        parent_id: ids.parent_id,
        start: r.start_unix_ns,
        duration: i64::try_from(r.duration_ns).unwrap_or(i64::MAX).max(1),
        error: i32::from(r.status.is_some_and(|s| s >= 500)),
        meta,
        metrics,
        span_type: "web".into(),
    }
}

/// Query parameters whose name says they hold a credential, values replaced by `<redacted>`
/// (the spirit of ddtrace's default query-string obfuscation): URLs are stored and shown.
fn redact_query(uri: &str) -> String {
    let Some((path, query)) = uri.split_once('?') else {
        return uri.to_string();
    };
    const SECRET: [&str; 12] = [
        "pass",
        "pwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "api-key",
        "auth",
        "session",
        "sign",
        "credential",
        "private",
    ];
    let mut out = String::with_capacity(uri.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _))
                if {
                    let k = k.to_ascii_lowercase();
                    SECRET.iter().any(|s| k.contains(s))
                } =>
            {
                out.push_str(k);
                out.push_str("=<redacted>");
            }
            _ => out.push_str(pair),
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
struct Ids {
    trace_id: u64,
    tid_high: Option<u64>,
    span_id: u64,
    parent_id: u64,
}

/// Trace identity: the caller's Datadog headers, else its W3C `traceparent`, else a new trace
/// (128-bit, upper half = start seconds as Datadog tracers make them).
fn ids_from_link(link: &TraceLink, start_unix_ns: i64) -> Ids {
    let span_id = random_id();
    let dd_trace = link
        .datadog_trace_id
        .as_deref()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t != 0);
    if let Some(trace_id) = dd_trace {
        let parent_id = link
            .datadog_parent_id
            .as_deref()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        return Ids {
            trace_id,
            tid_high: None,
            span_id,
            parent_id,
        };
    }
    if let Some(tp) = link.traceparent.as_deref().and_then(parse_traceparent) {
        return Ids {
            trace_id: tp.0,
            tid_high: (tp.1 != 0).then_some(tp.1),
            span_id,
            parent_id: tp.2,
        };
    }
    let secs = u64::try_from(start_unix_ns / 1_000_000_000).unwrap_or(0) & 0xffff_ffff;
    Ids {
        trace_id: random_id(),
        tid_high: Some(secs << 32),
        span_id,
        parent_id: 0,
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<flags>` → (low 64, high 64, parent).
fn parse_traceparent(s: &str) -> Option<(u64, u64, u64)> {
    let mut it = s.trim().split('-');
    let version = it.next()?;
    let trace = it.next()?;
    let parent = it.next()?;
    let _flags = it.next()?;
    if version.len() != 2 || version == "ff" || trace.len() != 32 || parent.len() != 16 {
        return None;
    }
    let high = u64::from_str_radix(trace.get(..16)?, 16).ok()?;
    let low = u64::from_str_radix(trace.get(16..)?, 16).ok()?;
    let parent = u64::from_str_radix(parent, 16).ok()?;
    if (high == 0 && low == 0) || parent == 0 {
        return None;
    }
    Some((low, high, parent))
}

/// A non-zero 63-bit random id (not for secrets: `RandomState` keys, a counter and the clock).
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_query_strings_are_redacted() {
        assert_eq!(redact_query("/a?x=1"), "/a?x=1");
        assert_eq!(
            redact_query("/login?user=bob&Password=hunter2&access_token=abc&q=1"),
            "/login?user=bob&Password=<redacted>&access_token=<redacted>&q=1"
        );
        assert_eq!(redact_query("/p"), "/p");
        assert_eq!(
            redact_query("/p?flag&sessionid=9"),
            "/p?flag&sessionid=<redacted>"
        );
    }

    #[test]
    fn trace_identity_follows_the_caller() {
        let dd = TraceLink {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            datadog_trace_id: Some("1234".into()),
            datadog_parent_id: Some("5678".into()),
        };
        let ids = ids_from_link(&dd, 0);
        assert_eq!(
            (ids.trace_id, ids.parent_id, ids.tid_high),
            (1234, 5678, None)
        );
        let w3c = TraceLink {
            datadog_trace_id: None,
            ..dd.clone()
        };
        let ids = ids_from_link(&w3c, 0);
        assert_eq!(ids.trace_id, 0x8448eb211c80319c);
        assert_eq!(ids.tid_high, Some(0x0af7651916cd43dd));
        assert_eq!(ids.parent_id, 0xb7ad6b7169203331);
        let none = ids_from_link(&TraceLink::default(), 1_700_000_000_000_000_000);
        assert_ne!(none.trace_id, 0);
        assert_eq!(none.parent_id, 0);
        assert_eq!(none.tid_high, Some(1_700_000_000u64 << 32));
        assert_ne!(random_id(), random_id());
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none()
        );
        assert!(parse_traceparent("garbage").is_none());
    }
}
