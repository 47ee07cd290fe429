//! Trace intake and the security-event store (issue #5).
//!
//! Why only security spans are kept: Warden is not an APM backend. Agents relay every span
//! tracers send (`POST /api/v0.2/traces`, Datadog's protobuf `AgentPayload`); the server keeps
//! the spans that carry security data — WAF/RASP triggers (`appsec.event`, `_dd.appsec.json`,
//! `meta_struct.appsec`), business-logic events (`appsec.events.*`, login success/failure),
//! blocked requests — flattened into [`SecurityEvent`], and counts and drops the rest.
//!
//! Why a SQLite table of sealed rows rather than the metrics store: events are documents
//! read by time range, not series. Each row has plaintext columns only for what the database
//! must index (org, timestamp, id); everything an attacker or an operator typed (URLs, user
//! ids, IPs, payloads) is in `payload`, sealed with the store's records key
//! (`Store::seal_record`, AAD `event|<org>|<id>`, so a row cannot be moved to another org or
//! id). WAL with `synchronous = FULL` and one transaction per request: a 202 means the events
//! are on disk. Ids are `<trace_id>-<span_id>`, so an agent retrying a payload it is unsure
//! was delivered does not create duplicates, and only newly stored events go to the rules
//! engine (`security.ingest`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use warden_model::SecurityEvent;
use warden_proto::trace::{AgentPayload, Span, TracerPayload};
use warden_store::Store;

use crate::{ApiError, AppState, BodyLimit, ServerError};

/// `/api/v0.2/traces` bodies: the agent sends at most 2.5 MiB compressed / 4 MiB raw per
/// payload; other Datadog-protocol agents may send more.
const TRACES: BodyLimit = BodyLimit {
    compressed: 10 * 1024 * 1024,
    decompressed: 32 * 1024 * 1024,
};

/// File name of the event database in the data directory.
pub(crate) const EVENTS_DB: &str = "events.db";

/// Largest `page[limit]` of the spans list.
const MAX_PAGE: usize = 1000;

/// Nesting accepted when decoding a `meta_struct.appsec` msgpack value.
const MAX_STRUCT_DEPTH: usize = 32;

/// Errors reading or writing the event store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EventStoreError {
    #[error("event database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("event encryption: {0}")]
    Seal(#[from] warden_store::StoreError),
    #[error("event {id}: stored payload is not a security event: {source}")]
    Corrupt {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("event database lock poisoned")]
    Poisoned,
}

/// Trace intake state (the security-event log).
pub(crate) struct State {
    db: Mutex<Connection>,
    store: Arc<Store>,
    /// Spans received (all of them) and security events stored since start.
    spans: AtomicU64,
    events: AtomicU64,
    /// Orgs whose first trace payload was logged.
    seen_orgs: Mutex<Vec<u64>>,
    /// When events past the retention were last deleted (UNIX ms; 0 = not yet).
    last_prune_ms: AtomicI64,
}

/// Retention pruning runs at most this often (on intake).
const PRUNE_EVERY_MS: i64 = 3_600_000;

impl State {
    pub(crate) fn open(ctx: &crate::OpenCtx<'_>) -> Result<State, ServerError> {
        let path = ctx.data_dir.join(EVENTS_DB);
        let io = |source: std::io::Error| ServerError::Io {
            path: path.clone(),
            source,
        };
        let db_err = |e: rusqlite::Error| io(std::io::Error::other(e.to_string()));
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
        }
        let conn = Connection::open(&path).map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS security_events (
                 org INTEGER NOT NULL,
                 timestamp_ms INTEGER NOT NULL,
                 id TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 PRIMARY KEY (org, id)
             );
             CREATE INDEX IF NOT EXISTS security_events_by_time
                 ON security_events (org, timestamp_ms);",
        )
        .map_err(db_err)?;
        for p in [
            &path,
            &path.with_extension("db-wal"),
            &path.with_extension("db-shm"),
        ] {
            private(p).map_err(io)?;
        }
        Ok(State {
            db: Mutex::new(conn),
            store: ctx.store.clone(),
            spans: AtomicU64::new(0),
            events: AtomicU64::new(0),
            seen_orgs: Mutex::new(Vec::new()),
            last_prune_ms: AtomicI64::new(0),
        })
    }

    /// Stores `events` of `org` in one transaction; returns those not stored before (a
    /// retried payload yields only its new events).
    pub(crate) fn persist(
        &self,
        org: u64,
        events: Vec<SecurityEvent>,
    ) -> Result<Vec<SecurityEvent>, EventStoreError> {
        let mut sealed = Vec::with_capacity(events.len());
        for e in &events {
            let json = serde_json::to_vec(e).map_err(|source| EventStoreError::Corrupt {
                id: e.id.clone(),
                source,
            })?;
            sealed.push(self.store.seal_record(aad(org, &e.id).as_bytes(), &json)?);
        }
        let mut db = self.db.lock().map_err(|_| EventStoreError::Poisoned)?;
        let tx = db.transaction()?;
        let mut fresh = Vec::with_capacity(events.len());
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO security_events (org, timestamp_ms, id, payload)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (e, blob) in events.into_iter().zip(sealed) {
                let n = stmt.execute(params![org as i64, e.timestamp_ms, e.id, blob])?;
                if n > 0 {
                    fresh.push(e);
                }
            }
        }
        tx.commit()?;
        self.events.fetch_add(fresh.len() as u64, Ordering::Relaxed);
        Ok(fresh)
    }

    /// Deletes events older than `cutoff_ms` (every org), at most once per
    /// [`PRUNE_EVERY_MS`]. Errors are logged: pruning is retried at the next due time.
    pub(crate) fn prune_if_due(&self, cutoff_ms: i64) {
        let now = crate::now_secs().saturating_mul(1000);
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now - last < PRUNE_EVERY_MS
            || self
                .last_prune_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let res = self
            .db
            .lock()
            .map_err(|_| EventStoreError::Poisoned)
            .and_then(|db| {
                db.execute(
                    "DELETE FROM security_events WHERE timestamp_ms < ?1",
                    params![cutoff_ms],
                )
                .map_err(EventStoreError::from)
            });
        match res {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "security events past the retention deleted"),
            Err(e) => tracing::warn!(error = %e, "security-event retention pruning failed"),
        }
    }

    /// Security events of `org` with `from_ms <= timestamp_ms <= to_ms`, newest first, at
    /// most `limit`.
    pub(crate) fn query(
        &self,
        org: u64,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, EventStoreError> {
        let rows: Vec<(String, Vec<u8>)> = {
            let db = self.db.lock().map_err(|_| EventStoreError::Poisoned)?;
            let mut stmt = db.prepare_cached(
                "SELECT id, payload FROM security_events
                 WHERE org = ?1 AND timestamp_ms >= ?2 AND timestamp_ms <= ?3
                 ORDER BY timestamp_ms DESC, id DESC LIMIT ?4",
            )?;
            let it = stmt.query_map(
                params![
                    org as i64,
                    from_ms,
                    to_ms,
                    limit.min(i64::MAX as usize) as i64
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            it.collect::<Result<_, _>>()?
        };
        rows.into_iter()
            .map(|(id, blob)| {
                let plain = self.store.open_record(aad(org, &id).as_bytes(), &blob)?;
                serde_json::from_slice(&plain)
                    .map_err(|source| EventStoreError::Corrupt { id, source })
            })
            .collect()
    }

    /// One event of `org` by id (for signals that link their samples).
    #[allow(dead_code)]
    pub(crate) fn get(&self, org: u64, id: &str) -> Result<Option<SecurityEvent>, EventStoreError> {
        let blob: Option<Vec<u8>> = {
            let db = self.db.lock().map_err(|_| EventStoreError::Poisoned)?;
            db.query_row(
                "SELECT payload FROM security_events WHERE org = ?1 AND id = ?2",
                params![org as i64, id],
                |r| r.get(0),
            )
            .optional()?
        };
        let Some(blob) = blob else { return Ok(None) };
        let plain = self.store.open_record(aad(org, id).as_bytes(), &blob)?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|source| EventStoreError::Corrupt {
                id: id.to_owned(),
                source,
            })
    }
}

fn private(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if p.exists() {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn aad(org: u64, id: &str) -> String {
    format!("event|{org}|{id}")
}

/// True for the paths this module answers.
pub(crate) fn handles(path: &str) -> bool {
    matches!(path, "/api/v0.2/traces" | "/api/v2/spans/events")
}

pub(crate) async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    match req.uri().path() {
        "/api/v0.2/traces" => intake(state, req).await,
        _ => list(state, req).await,
    }
}

async fn intake(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::new(405, "method not allowed; use POST"));
    }
    let principal = crate::auth_api(state, &req).await?;
    let ct = crate::content_type(&req);
    if !(ct.is_empty() || ct == "application/x-protobuf" || ct == "application/protobuf") {
        return Err(crate::unsupported_type(&ct, "application/x-protobuf"));
    }
    let raw = crate::read_body(req, TRACES).await?;
    let org = principal.org;
    let st = state.clone();
    let fresh = tokio::task::spawn_blocking(move || -> Result<Vec<SecurityEvent>, ApiError> {
        let payload = AgentPayload::decode(raw.as_slice()).map_err(|e| {
            ApiError::new(
                400,
                format!("body is not a valid AgentPayload protobuf: {e}"),
            )
        })?;
        let (spans, mut events) = security_events(&payload);
        // Older than the raw retention: refused like old metric points (and pruned below).
        let cutoff_ms = (crate::now_secs() - st.limits.max_age_secs).saturating_mul(1000);
        let before = events.len();
        events.retain(|e| e.timestamp_ms >= cutoff_ms);
        if events.len() < before {
            tracing::debug!(
                org,
                dropped = before - events.len(),
                "security spans older than the retention dropped"
            );
        }
        st.traces.prune_if_due(cutoff_ms);
        let total = st.traces.spans.fetch_add(spans, Ordering::Relaxed) + spans;
        tracing::debug!(
            org,
            spans,
            security_spans = events.len(),
            spans_since_start = total,
            events_since_start = st.traces.events.load(Ordering::Relaxed),
            "trace payload received"
        );
        // Once per org: the operator sees that traces arrive (most are not kept).
        if let Ok(mut seen) = st.traces.seen_orgs.lock()
            && !seen.contains(&org)
        {
            tracing::info!(
                org,
                spans,
                security_spans = events.len(),
                "first trace payload for this org (only security spans are stored)"
            );
            seen.push(org);
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        st.traces.persist(org, events).map_err(|e| {
            tracing::error!(error = %e, "security events not stored");
            ApiError::new(503, "storage unavailable; retry later")
        })
    })
    .await
    .map_err(|_| ApiError::new(500, "trace intake task failed"))??;
    if !fresh.is_empty() {
        tracing::debug!(org, events = fresh.len(), "security events stored");
        state.security.ingest(org, &fresh);
    }
    Ok(crate::accepted())
}

/// Counts the spans of `p` and flattens the security ones.
pub(crate) fn security_events(p: &AgentPayload) -> (u64, Vec<SecurityEvent>) {
    let mut spans = 0u64;
    let mut out = Vec::new();
    for tp in &p.tracer_payloads {
        for chunk in &tp.chunks {
            for span in &chunk.spans {
                spans += 1;
                if is_security(span) {
                    out.push(flatten(span, tp, p));
                }
            }
        }
    }
    (spans, out)
}

/// A span carrying security data: WAF/RASP triggers, a business-logic (login, custom)
/// event, or a blocked request.
pub(crate) fn is_security(s: &Span) -> bool {
    s.meta.get("appsec.event").is_some_and(|v| v == "true")
        || s.meta.contains_key("_dd.appsec.json")
        || s.meta_struct.contains_key("appsec")
        || s.meta.get("appsec.blocked").is_some_and(|v| v == "true")
        || s.meta.keys().any(|k| k.starts_with("appsec.events."))
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Decodes `meta_struct.appsec` (msgpack) into JSON; `Null` when it is not decodable.
fn struct_triggers(bytes: &[u8]) -> Value {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_STRUCT_DEPTH);
    serde::Deserialize::deserialize(&mut de).unwrap_or(Value::Null)
}

/// Security activities from the triggers (`<category>.<type>`; RASP matches as
/// `exploit_attempt.<type>`) and from `appsec.events.<name>.track` tags
/// (`business_logic.<name>`, e.g. `business_logic.users.login.failure`).
fn activities(triggers: &Value, meta: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |a: String| {
        if !a.is_empty() && !out.contains(&a) {
            out.push(a);
        }
    };
    if let Some(list) = triggers.get("triggers").and_then(Value::as_array) {
        for t in list {
            let tags = &t["rule"]["tags"];
            let category = tags["category"].as_str().unwrap_or("");
            let typ = tags["type"].as_str().unwrap_or("");
            let rasp = tags["module"].as_str() == Some("rasp") || category == "exploit";
            let category = if rasp { "exploit_attempt" } else { category };
            match (category.is_empty(), typ.is_empty()) {
                (false, false) => push(format!("{category}.{typ}")),
                (false, true) => push(category.to_owned()),
                (true, false) => push(format!("attack_attempt.{typ}")),
                (true, true) => {}
            }
        }
    }
    for (k, v) in meta {
        if let Some(name) = k
            .strip_prefix("appsec.events.")
            .and_then(|r| r.strip_suffix(".track"))
            && v == "true"
            && !name.is_empty()
        {
            push(format!("business_logic.{name}"));
        }
    }
    out
}

/// Flattens one security span (see [`SecurityEvent`]).
pub(crate) fn flatten(s: &Span, tp: &TracerPayload, p: &AgentPayload) -> SecurityEvent {
    let meta = &s.meta;
    let get = |k: &str| meta.get(k).filter(|v| !v.is_empty()).cloned();
    let triggers = match meta.get("_dd.appsec.json") {
        Some(j) => serde_json::from_str(j).unwrap_or_else(|_| Value::String(j.clone())),
        None => s
            .meta_struct
            .get("appsec")
            .map(|b| struct_triggers(b))
            .unwrap_or(Value::Null),
    };
    let activity = activities(&triggers, meta);
    let blocked = get("appsec.blocked").is_some_and(|v| v == "true")
        || meta.keys().any(|k| k.starts_with("security_response"));
    let usr_id = get("usr.id")
        .or_else(|| get("appsec.events.users.login.failure.usr.id"))
        .or_else(|| get("appsec.events.users.login.success.usr.id"));
    let client_ip = get("http.client_ip")
        .or_else(|| get("network.client.ip"))
        .or_else(|| get("actor.ip"));
    let attributes = meta
        .iter()
        .filter(|(k, _)| k.as_str() != "_dd.appsec.json")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    SecurityEvent {
        id: format!("{}-{}", s.trace_id, s.span_id),
        timestamp_ms: s.start.div_euclid(1_000_000),
        service: s.service.clone(),
        env: get("env")
            .or_else(|| nonempty(&tp.env))
            .or_else(|| nonempty(&p.env))
            .unwrap_or_default(),
        host: get("_dd.hostname")
            .or_else(|| nonempty(&tp.hostname))
            .or_else(|| nonempty(&p.host_name))
            .unwrap_or_default(),
        trace_id: s.trace_id.to_string(),
        span_id: s.span_id.to_string(),
        resource: s.resource.clone(),
        client_ip,
        usr_id,
        http_method: get("http.method"),
        http_url: get("http.url"),
        http_status: get("http.status_code").and_then(|c| c.trim().parse().ok()),
        http_route: get("http.route"),
        activity,
        blocked,
        triggers,
        attributes,
    }
}

// --- GET /api/v2/spans/events ------------------------------------------------------------

/// A time bound: UNIX milliseconds, `now`, `now-<n><s|m|h|d>` or `-<n><s|m|h|d>`.
pub(crate) fn parse_time(s: &str, now_ms: i64) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let rest = match s.strip_prefix("now") {
        Some(r) => r,
        None if s.starts_with('-') => s,
        None => return None,
    };
    if rest.is_empty() {
        return Some(now_ms);
    }
    let rest = rest.strip_prefix('-')?;
    // The unit is the last character (not byte: the value comes from the query string).
    let (num, unit) = rest.split_at(rest.char_indices().last()?.0);
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    now_ms.checked_sub(n.checked_mul(mult)?)
}

/// One `key:value` term of `filter[query]` (`@attr:value`, `service:x`, `env:x`; a trailing
/// `*` matches a prefix).
pub(crate) struct Term {
    key: String,
    value: String,
}

pub(crate) fn parse_query(q: &str) -> Result<Vec<Term>, ApiError> {
    let mut out = Vec::new();
    for word in q.split_whitespace() {
        if word == "*" {
            continue;
        }
        let (k, v) = word.split_once(':').ok_or_else(|| {
            ApiError::new(
                400,
                format!(
                    "filter[query]: term {word:?} is not `@attribute:value` or `service:value`"
                ),
            )
        })?;
        let key = k.strip_prefix('@').unwrap_or(k);
        if key.is_empty() || v.is_empty() {
            return Err(ApiError::new(
                400,
                format!("filter[query]: empty key or value in {word:?}"),
            ));
        }
        out.push(Term {
            key: key.to_owned(),
            value: v.trim_matches('"').to_owned(),
        });
    }
    Ok(out)
}

fn matches(e: &SecurityEvent, terms: &[Term]) -> bool {
    terms.iter().all(|t| {
        let cmp = |v: &str| match t.value.strip_suffix('*') {
            Some(prefix) => v.starts_with(prefix),
            None => v == t.value,
        };
        if t.key == "appsec.security_activity" {
            return e.activity.iter().any(|a| cmp(a));
        }
        e.attribute(&t.key).is_some_and(|v| cmp(&v))
    })
}

fn iso8601(ms: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), UTC.
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

/// The Datadog Spans API list (`GET /api/v2/spans/events`) over the stored security spans:
/// `filter[from]`, `filter[to]` (ms or `now-15m`), `filter[query]` (`@attr:value` terms,
/// AND), `page[limit]` (default 10, at most 1000). Newest first.
async fn list(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if req.method() != Method::GET {
        return Err(ApiError::new(405, "method not allowed; use GET"));
    }
    let principal = crate::auth_app(state, &req).await?;
    let uri = req.uri().clone();
    let now_ms = crate::now_secs() * 1000 + 999;
    let time = |name: &str, default: i64| -> Result<i64, ApiError> {
        match crate::query_param(&uri, name) {
            None => Ok(default),
            Some(v) => parse_time(&v, now_ms).ok_or_else(|| {
                ApiError::new(
                    400,
                    format!("{name}: {v:?} is not UNIX milliseconds, now, now-<n>[s|m|h|d] or -<n>[s|m|h|d]"),
                )
            }),
        }
    };
    let from = time("filter[from]", now_ms - 15 * 60_000)?;
    let to = time("filter[to]", now_ms)?;
    let limit = match crate::query_param(&uri, "page[limit]") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::new(
                    400,
                    format!("page[limit]: {v:?} is not a number from 1 to {MAX_PAGE}"),
                ));
            }
        },
    };
    let terms = parse_query(&crate::query_param(&uri, "filter[query]").unwrap_or_default())?;
    let org = principal.org;
    let st = state.clone();
    let events = tokio::task::spawn_blocking(move || -> Result<Vec<SecurityEvent>, ApiError> {
        // Filtering happens after decryption; read a bounded window beyond the page.
        let window = if terms.is_empty() { limit } else { 50_000 };
        let all = st.traces.query(org, from, to, window).map_err(|e| {
            tracing::error!(error = %e, "security events not readable");
            ApiError::new(503, "storage unavailable; retry later")
        })?;
        Ok(all
            .into_iter()
            .filter(|e| matches(e, &terms))
            .take(limit)
            .collect())
    })
    .await
    .map_err(|_| ApiError::new(500, "query task failed"))??;
    let data: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "type": "spans",
                "id": e.id,
                "attributes": {
                    "service": e.service,
                    "env": e.env,
                    "host": e.host,
                    "resource_name": e.resource,
                    "trace_id": e.trace_id,
                    "span_id": e.span_id,
                    "start_timestamp": iso8601(e.timestamp_ms),
                    "custom": e,
                },
            })
        })
        .collect();
    Ok(crate::json_response(
        200,
        &json!({ "data": data, "meta": { "status": "done" } }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(meta: &[(&str, &str)]) -> Span {
        Span {
            service: "shop".into(),
            name: "flask.request".into(),
            resource: "GET /search".into(),
            trace_id: 11,
            span_id: 22,
            start: 1_700_000_000_123_456_789,
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_security_spans_are_kept() {
        assert!(!is_security(&span(&[("http.method", "GET")])));
        assert!(!is_security(&span(&[("_dd.appsec.enabled", "1")])));
        assert!(!is_security(&span(&[("appsec.event", "false")])));
        assert!(is_security(&span(&[("appsec.event", "true")])));
        assert!(is_security(&span(&[("_dd.appsec.json", "{}")])));
        assert!(is_security(&span(&[(
            "appsec.events.users.login.failure.track",
            "true"
        )])));
        let mut s = span(&[]);
        s.meta_struct.insert("appsec".into(), vec![0x80]);
        assert!(is_security(&s));
    }

    #[test]
    fn triggers_become_activities_and_facets_are_extracted() {
        let triggers = r#"{"triggers":[
            {"rule":{"id":"ua0-600-55x","tags":{"type":"security_scanner","category":"attack_attempt"}}},
            {"rule":{"id":"rasp-942-100","tags":{"type":"sql_injection","category":"vulnerability_trigger","module":"rasp"}}},
            {"rule":{"id":"crs-941-110","tags":{"type":"xss","category":"attack_attempt"}}},
            {"rule":{"id":"dup","tags":{"type":"xss","category":"attack_attempt"}}}]}"#;
        let s = span(&[
            ("appsec.event", "true"),
            ("_dd.appsec.json", triggers),
            ("http.client_ip", "203.0.113.7"),
            ("http.status_code", "403"),
            ("appsec.blocked", "true"),
            ("env", "prod"),
            ("usr.id", "alice"),
        ]);
        let p = AgentPayload {
            host_name: "agent-host".into(),
            ..Default::default()
        };
        let e = flatten(&s, &TracerPayload::default(), &p);
        assert_eq!(
            e.activity,
            [
                "attack_attempt.security_scanner",
                "exploit_attempt.sql_injection",
                "attack_attempt.xss"
            ]
        );
        assert_eq!(e.id, "11-22");
        assert_eq!(e.timestamp_ms, 1_700_000_000_123);
        assert_eq!(e.client_ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(e.usr_id.as_deref(), Some("alice"));
        assert_eq!(e.http_status, Some(403));
        assert!(e.blocked);
        assert_eq!((e.env.as_str(), e.host.as_str()), ("prod", "agent-host"));
        assert_eq!(e.triggers["triggers"][0]["rule"]["id"], "ua0-600-55x");
        assert!(!e.attributes.contains_key("_dd.appsec.json"));
    }

    #[test]
    fn login_events_become_business_logic_activities() {
        let s = span(&[
            ("appsec.events.users.login.failure.track", "true"),
            ("appsec.events.users.login.failure.usr.id", "bob"),
            ("appsec.events.users.login.failure.usr.exists", "false"),
            ("network.client.ip", "198.51.100.4"),
        ]);
        let e = flatten(&s, &TracerPayload::default(), &AgentPayload::default());
        assert_eq!(e.activity, ["business_logic.users.login.failure"]);
        assert_eq!(e.usr_id.as_deref(), Some("bob"));
        assert_eq!(e.client_ip.as_deref(), Some("198.51.100.4"));
        assert!(!e.blocked);
        assert!(e.triggers.is_null());
        let s = span(&[
            ("appsec.events.users.login.success.track", "true"),
            ("usr.id", "carol"),
        ]);
        let e = flatten(&s, &TracerPayload::default(), &AgentPayload::default());
        assert_eq!(e.activity, ["business_logic.users.login.success"]);
    }

    #[test]
    fn meta_struct_triggers_are_decoded_and_bad_ones_ignored() {
        let v = json!({"triggers":[{"rule":{"id":"x","tags":{"category":"attack_attempt","type":"lfi"}}}]});
        let mut s = span(&[]);
        s.meta_struct
            .insert("appsec".into(), rmp_serde::to_vec_named(&v).unwrap());
        let e = flatten(&s, &TracerPayload::default(), &AgentPayload::default());
        assert_eq!(e.activity, ["attack_attempt.lfi"]);
        s.meta_struct
            .insert("appsec".into(), vec![0xdd, 0xff, 0xff]);
        let e = flatten(&s, &TracerPayload::default(), &AgentPayload::default());
        assert!(e.triggers.is_null());
    }

    #[test]
    fn time_bounds_and_query_terms() {
        assert_eq!(parse_time("1000", 5), Some(1000));
        assert_eq!(parse_time("now", 90_000), Some(90_000));
        assert_eq!(parse_time("now-1m", 90_000), Some(30_000));
        assert_eq!(parse_time("-30s", 90_000), Some(60_000));
        assert_eq!(parse_time("yesterday", 0), None);
        assert_eq!(parse_time("now-", 0), None);
        // Found by `fuzz/` (server_trace_intake): a negative count moved `now` past i64::MAX
        // (a panic in debug builds, a wrapped bound in release).
        assert_eq!(
            parse_time("now--9223372036854775s", 1_700_000_000_000),
            None
        );
        assert_eq!(parse_time("-15m", i64::MIN), None);
        // Found by `fuzz/` (server_trace_intake): a multi-byte last character was split
        // inside (a panic on `filter[from]=now-5é`).
        assert_eq!(parse_time("now-5\u{597}", 1_700_000_000_000), None);
        assert_eq!(parse_time("-\u{e9}", 0), None);
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        let e = SecurityEvent {
            service: "shop".into(),
            activity: vec!["attack_attempt.sql_injection".into()],
            ..Default::default()
        };
        let q = |s: &str| matches(&e, &parse_query(s).unwrap());
        assert!(q("@appsec.security_activity:attack_attempt.*"));
        assert!(q(
            "service:shop @appsec.security_activity:attack_attempt.sql_injection"
        ));
        assert!(!q("service:other"));
        assert!(parse_query("nocolon").is_err());
    }
}
