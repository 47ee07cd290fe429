//! Security monitoring: detection rules over security events, signals and their API, in
//! Datadog's v2 shapes (`/api/v2/security_monitoring/rules`, `/signals`, `/signals/search`,
//! triage `PATCH`es).
//!
//! Why this shape:
//! * **The request path never runs rules.** [`State::ingest`] only queues; one engine thread
//!   ([`worker`]) evaluates (`warden-detection`), persists and then notifies and blocks.
//! * **Sealed at rest.** `DIR/security.db` keeps org, id, time, severity and triage state in
//!   clear for filtering; rule and signal bodies are sealed with the store's record key
//!   ([`db`]).
//! * **What clients really send.** Search filters arrive as query parameters, as the search
//!   body, and (curl's `-d` without `-G`) as a JSON body POSTed to the list path with a form
//!   content type; all three are one search.
//! * **Default rules are code.** They are listed with `isDefault: true`; a `PUT` stores an
//!   override (e.g. `isEnabled: false`); they cannot be deleted.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use warden_detection::defaults::{default_rules, is_default_id};
use warden_detection::{ActionRequest, Query, Rule, Signal, api as sigjson};

use crate::{ApiError, AppState, ServerError};

mod db;
mod worker;

/// Events waiting for the engine (in batches); beyond it batches are dropped and counted.
const QUEUE_BATCHES: usize = 65_536;
const PREFIX: &str = "/api/v2/security_monitoring/";

/// What the engine thread does besides persisting: notify and block. A trait so the engine
/// can be tested without a whole server.
pub(crate) trait Effects: Send + Sync {
    fn signal_triggered(&self, org: u64, s: &Signal);
    fn action(&self, org: u64, s: &Signal, a: &ActionRequest);
}

pub(crate) enum Msg {
    Events {
        org: u64,
        events: Vec<warden_model::SecurityEvent>,
        at: std::time::Instant,
    },
    Reload(u64),
    #[cfg_attr(not(test), allow(dead_code))]
    Sync(std::sync::mpsc::Sender<()>),
}

/// Engine counters of one org (`GET /api/v2/security_monitoring/warden/stats`): per org,
/// so one tenant learns nothing about another's traffic.
#[derive(Clone, Default)]
pub(crate) struct OrgStats {
    pub(crate) events_in: u64,
    pub(crate) events_evaluated: u64,
    pub(crate) events_dropped: u64,
    pub(crate) signals_created: u64,
    pub(crate) signal_writes: u64,
    pub(crate) persist_errors: u64,
    /// Event queued → new or escalated signal persisted, microseconds (capped sample).
    pub(crate) latency_us: Vec<u64>,
    /// Event queued → absorbed-events update persisted (coalesced), microseconds.
    pub(crate) update_latency_us: Vec<u64>,
}

#[derive(Default)]
pub(crate) struct Stats(Mutex<std::collections::HashMap<u64, OrgStats>>);

impl Stats {
    pub(crate) fn with(&self, org: u64, f: impl FnOnce(&mut OrgStats)) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(org).or_default());
    }

    fn get(&self, org: u64) -> OrgStats {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&org).cloned().unwrap_or_default()
    }
}

pub(crate) struct Shared {
    db: Mutex<db::Db>,
    stats: Stats,
}

/// Rules, signals and the engine's queue.
pub(crate) struct State {
    shared: Arc<Shared>,
    tx: SyncSender<Msg>,
    effects: Arc<Mutex<Option<Arc<dyn Effects>>>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn db_err(e: String) -> ApiError {
    tracing::error!(error = %e, "security database");
    ApiError::new(503, "security database unavailable; retry later")
}

/// Default rules with the org's overrides, then the org's own rules.
fn load_rules(shared: &Shared, org: u64) -> Result<Vec<Rule>, String> {
    let stored = shared.db.lock().map_err(|e| e.to_string())?.rules(org)?;
    let mut out = Vec::new();
    for d in default_rules() {
        match stored.iter().find(|r| r.id == d.id) {
            Some(o) => out.push(o.clone()),
            None => out.push(d),
        }
    }
    out.extend(stored.into_iter().filter(|r| !is_default_id(&r.id)));
    Ok(out)
}

/// The real effects: the server's alerting and denylist.
struct AppEffects(Weak<AppState>);

fn notification(
    org: u64,
    s: &Signal,
    transition: crate::alerting::Transition,
) -> crate::alerting::Notification {
    let mut vars = BTreeMap::new();
    let attrs = sigjson::inner_attributes(s);
    vars.insert("SECURITY_SIGNAL_ID".into(), s.id.clone());
    vars.insert("SECURITY_SIGNAL_SEVERITY".into(), s.status.as_str().into());
    vars.insert("SECURITY_SIGNAL_TITLE".into(), s.title.clone());
    vars.insert("SECURITY_SIGNAL_MSG".into(), s.message.clone());
    vars.insert(
        "SECURITY_SIGNAL_ATTRIBUTES".into(),
        json!({"network": attrs.get("network"), "http": attrs.get("http"), "usr": attrs.get("usr"),
               "service": s.services, "env": s.envs})
        .to_string(),
    );
    vars.insert("SECURITY_RULE_ID".into(), s.rule_id.clone());
    vars.insert("SECURITY_RULE_NAME".into(), s.rule_name.clone());
    vars.insert("SECURITY_RULE_TYPE".into(), s.rule_type.clone());
    vars.insert(
        "SECURITY_RULE_GROUP_BY_FIELDS".into(),
        json!(s.group_by).to_string(),
    );
    let mut message = s.message.clone();
    for h in &s.notifications {
        if !message.contains(h.as_str()) {
            message.push(' ');
            message.push_str(h);
        }
    }
    crate::alerting::Notification {
        org,
        source: crate::alerting::Source::Signal {
            id: s.id.clone(),
            rule_id: s.rule_id.clone(),
        },
        dedup_key: s.id.clone(),
        transition,
        title: s.title.clone(),
        message,
        severity: s.status.as_str().into(),
        tags: s.tags.clone(),
        vars,
    }
}

impl Effects for AppEffects {
    fn signal_triggered(&self, org: u64, s: &Signal) {
        if let Some(app) = self.0.upgrade() {
            app.alerting
                .notify(notification(org, s, crate::alerting::Transition::Triggered));
        }
    }

    fn action(&self, org: u64, s: &Signal, a: &ActionRequest) {
        let Some(app) = self.0.upgrade() else {
            return;
        };
        let target = match a.kind.as_str() {
            "block_ip" => crate::denylist::Target::Ip,
            "block_user" => crate::denylist::Target::User,
            _ => return,
        };
        let expires = a
            .duration_s
            .filter(|d| *d > 0)
            .map(|d| crate::now_secs() + d);
        let reason = format!("signal {} (rule {})", s.id, s.rule_id);
        if let Err(e) = app.denylist.block(org, target, &a.value, expires, &reason) {
            tracing::error!(org, error = %e, rule = %s.rule_id, "rule action {} failed", a.kind);
        }
    }
}

/// Wires the engine's effects to the running server (called once `AppState` exists).
pub(crate) fn start(app: &Arc<AppState>) {
    app.security
        .set_effects(Arc::new(AppEffects(Arc::downgrade(app))));
}

impl State {
    pub(crate) fn open(ctx: &crate::OpenCtx<'_>) -> Result<State, ServerError> {
        let path = ctx.data_dir.join("security.db");
        let db = db::Db::open(&path, ctx.store.clone()).map_err(|e| ServerError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        Ok(Self::with_db(db))
    }

    fn with_db(db: db::Db) -> State {
        let shared = Arc::new(Shared {
            db: Mutex::new(db),
            stats: Stats::default(),
        });
        let (tx, rx): (SyncSender<Msg>, Receiver<Msg>) =
            std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        let effects: Arc<Mutex<Option<Arc<dyn Effects>>>> = Arc::new(Mutex::new(None));
        let (s2, e2) = (shared.clone(), effects.clone());
        let spawned = std::thread::Builder::new()
            .name("warden-detection".into())
            .spawn(move || worker::run(s2, rx, e2));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the detection thread; security events will be counted as dropped");
        }
        State {
            shared,
            tx,
            effects,
        }
    }

    pub(crate) fn set_effects(&self, fx: Arc<dyn Effects>) {
        if let Ok(mut g) = self.effects.lock() {
            *g = Some(fx);
        }
    }

    /// Feeds durably stored security events of `org` to the detection rules. Called by the
    /// trace intake after the events are persisted; never blocks (a full queue drops the
    /// batch and counts it).
    pub(crate) fn ingest(&self, org: u64, events: &[warden_model::SecurityEvent]) {
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        self.shared.stats.with(org, |s| s.events_in += n);
        let msg = Msg::Events {
            org,
            events: events.to_vec(),
            at: std::time::Instant::now(),
        };
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.shared.stats.with(org, |s| s.events_dropped += n);
                tracing::warn!(org, n, "detection queue full; security events dropped");
            }
        }
    }

    /// Waits until everything queued before the call is evaluated and persisted.
    #[cfg(test)]
    pub(crate) fn sync(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(60));
        }
    }

    fn reload(&self, org: u64) {
        let _ = self.tx.try_send(Msg::Reload(org));
    }

    /// Sets a signal's triage state on behalf of `by` (the alerting module's signed ack link,
    /// the CLI through the API). Returns the updated signal, `None` when there is no such
    /// signal. Does not notify: callers that need a notification send it.
    pub(crate) fn set_state(
        &self,
        org: u64,
        signal_id: &str,
        state: &str,
        by: &str,
    ) -> Result<Option<Signal>, ApiError> {
        self.update_triage(
            org,
            signal_id,
            by,
            None,
            &mut |t| {
                t.state = state.to_string();
                Ok(())
            },
            state,
        )
    }

    fn update_triage(
        &self,
        org: u64,
        id: &str,
        by: &str,
        version: Option<i64>,
        change: &mut dyn FnMut(&mut warden_detection::Triage) -> Result<(), ApiError>,
        state_for_check: &str,
    ) -> Result<Option<Signal>, ApiError> {
        if !sigjson::STATES.contains(&state_for_check) {
            return Err(ApiError::new(
                400,
                format!(
                    "data.attributes.state: {state_for_check:?} is not one of open, under_review, archived"
                ),
            ));
        }
        let db = self.shared.db.lock().map_err(|e| db_err(e.to_string()))?;
        let Some(row) = db.signal(org, id).map_err(db_err)? else {
            return Ok(None);
        };
        let mut s = row.signal;
        if let Some(v) = version {
            if v < s.triage.version {
                return Err(ApiError::new(
                    409,
                    format!(
                        "data.attributes.version {v} is older than the signal's ({})",
                        s.triage.version
                    ),
                ));
            }
        }
        change(&mut s.triage)?;
        s.triage.version += 1;
        s.triage.state_update_ms = crate::now_secs() * 1000;
        s.triage.updater = by.to_string();
        db.put_triage(org, id, &s.triage).map_err(db_err)?;
        Ok(Some(s))
    }
}

/// True for the paths this module answers.
pub(crate) fn handles(path: &str) -> bool {
    path.strip_prefix(PREFIX).is_some_and(|rest| {
        rest == "rules"
            || rest.starts_with("rules/")
            || rest == "signals"
            || rest.starts_with("signals/")
            || rest == "warden/stats"
    })
}

fn json_ok(v: &Value) -> Response<Full<Bytes>> {
    crate::json_response(200, v)
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(404, format!("{what} {id:?} not found"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(500, "security task failed"))?
}

pub(crate) async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let principal = crate::auth_app(state, &req).await?;
    let org = principal.org;
    let by = format!("key:{}", principal.key_id);
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix(PREFIX).unwrap_or("");
    let parts: Vec<&str> = rest.split('/').collect();
    let method = req.method().clone();
    match (parts.as_slice(), &method) {
        (["rules"], &Method::GET) => list_rules(state, org, req.uri()).await,
        (["rules"], &Method::POST) => {
            let body = json_body(req).await?;
            create_rule(state, org, body).await
        }
        (["rules", id], m) if !id.is_empty() => {
            let id = crate::percent_decode(id);
            match *m {
                Method::GET => get_rule(state, org, id).await,
                Method::PUT | Method::PATCH => {
                    let body = json_body(req).await?;
                    update_rule(state, org, id, body).await
                }
                Method::DELETE => delete_rule(state, org, id).await,
                _ => Err(ApiError::new(
                    405,
                    "method not allowed; use GET, PUT or DELETE",
                )),
            }
        }
        (["rules", ..], _) => Err(ApiError::new(405, "method not allowed")),
        (["signals"], &Method::GET) => {
            let p = SearchParams::from_query(req.uri())?;
            search(state, org, p).await
        }
        (["signals"], &Method::POST) | (["signals", "search"], &Method::POST) => {
            let list_path = parts.len() == 1;
            let mut p = if list_path {
                SearchParams::from_query(req.uri())?
            } else {
                SearchParams::default()
            };
            let raw = crate::read_body(req, crate::QUERY).await?;
            p.merge_body(&raw)?;
            search(state, org, p).await
        }
        (["signals", id], &Method::GET) if !id.is_empty() => {
            let id = crate::percent_decode(id);
            let s = state.security.shared.clone();
            let row = blocking(move || {
                let db = s.db.lock().map_err(|e| db_err(e.to_string()))?;
                db.signal(org, &id)
                    .map_err(db_err)?
                    .ok_or_else(|| not_found("signal", &id))
            })
            .await?;
            Ok(json_ok(&sigjson::single(&row.signal)))
        }
        (["signals", id, "state"], &Method::PATCH) => {
            let id = crate::percent_decode(id);
            let body = json_body(req).await?;
            patch_state(state, org, id, body, by).await
        }
        (["signals", id, "assignee"], &Method::PATCH) => {
            let id = crate::percent_decode(id);
            let body = json_body(req).await?;
            patch_assignee(state, org, id, body, by).await
        }
        (["signals", ..], _) => Err(ApiError::new(405, "method not allowed")),
        (["warden", "stats"], &Method::GET) => Ok(json_ok(&stats_json(&state.security, org))),
        _ => Err(ApiError::new(404, format!("no route {path}"))),
    }
}

async fn json_body(req: Request<Incoming>) -> Result<Value, ApiError> {
    let raw = crate::read_body(req, crate::QUERY).await?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            400,
            "request body: a JSON object is required",
        ));
    }
    serde_json::from_slice(&raw)
        .map_err(|e| ApiError::new(400, format!("request body: invalid JSON: {e}")))
}

fn percentiles(mut v: Vec<u64>) -> Value {
    v.sort_unstable();
    let pct = |p: f64| -> u64 {
        if v.is_empty() {
            0
        } else {
            v[((v.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    json!({"p50": pct(0.5), "p99": pct(0.99), "max": v.last().copied().unwrap_or(0), "samples": v.len()})
}

fn stats_json(s: &State, org: u64) -> Value {
    let st = s.shared.stats.get(org);
    json!({
        "events_in": st.events_in,
        "events_evaluated": st.events_evaluated,
        "events_dropped": st.events_dropped,
        "signals_created": st.signals_created,
        "signal_writes": st.signal_writes,
        "persist_errors": st.persist_errors,
        "latency_us": percentiles(st.latency_us),
        "update_latency_us": percentiles(st.update_latency_us),
    })
}

// ------------------------------------------------------------------ rules

fn random_rule_id() -> String {
    let mut b = [0u8; 9];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let c: Vec<char> = b.iter().map(|x| A[*x as usize % A.len()] as char).collect();
    format!(
        "{}{}{}-{}{}{}-{}{}{}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
    )
}

fn rule_error(e: warden_detection::RuleError) -> ApiError {
    ApiError::new(400, e.to_string())
}

async fn list_rules(
    state: &Arc<AppState>,
    org: u64,
    uri: &hyper::Uri,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let num = |name: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match crate::query_param(uri, name) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(ApiError::new(
                    400,
                    format!("{name}: expected an integer from 0 to {max}, got {v:?}"),
                )),
            },
        }
    };
    let size = num("page[size]", 10, 100)?.max(1);
    let number = num("page[number]", 0, 1_000_000)?;
    let q = crate::query_param(uri, "query")
        .unwrap_or_default()
        .to_lowercase();
    let shared = state.security.shared.clone();
    let rules = blocking(move || load_rules(&shared, org).map_err(db_err)).await?;
    let total = rules.len();
    let filtered: Vec<Rule> = rules
        .into_iter()
        .filter(|r| q.is_empty() || r.name.to_lowercase().contains(&q) || r.id.contains(&q))
        .collect();
    let n_filtered = filtered.len();
    let data: Vec<Value> = filtered
        .iter()
        .skip(number.saturating_mul(size))
        .take(size)
        .map(Rule::to_response)
        .collect();
    Ok(json_ok(&json!({
        "data": data,
        "meta": {"page": {"total_count": total, "total_filtered_count": n_filtered}},
    })))
}

async fn create_rule(
    state: &Arc<AppState>,
    org: u64,
    body: Value,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let mut rule = Rule::from_json(&body).map_err(rule_error)?;
    rule.id = random_rule_id();
    rule.is_default = false;
    rule.version = 1;
    rule.created_at = crate::now_secs() * 1000;
    rule.updated_at = rule.created_at;
    save_rule(state, org, rule).await
}

/// Stores a created or updated rule, makes the engine reload the org's rules, and answers
/// with the rule.
async fn save_rule(
    state: &Arc<AppState>,
    org: u64,
    rule: Rule,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let shared = state.security.shared.clone();
    let r2 = rule.clone();
    blocking(move || {
        shared
            .db
            .lock()
            .map_err(|e| db_err(e.to_string()))?
            .put_rule(org, &r2)
            .map_err(db_err)
    })
    .await?;
    state.security.reload(org);
    Ok(json_ok(&rule.to_response()))
}

async fn find_rule(state: &Arc<AppState>, org: u64, id: String) -> Result<Rule, ApiError> {
    let shared = state.security.shared.clone();
    let rules = blocking(move || load_rules(&shared, org).map_err(db_err)).await?;
    rules
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| not_found("rule", &id))
}

async fn get_rule(
    state: &Arc<AppState>,
    org: u64,
    id: String,
) -> Result<Response<Full<Bytes>>, ApiError> {
    Ok(json_ok(&find_rule(state, org, id).await?.to_response()))
}

async fn update_rule(
    state: &Arc<AppState>,
    org: u64,
    id: String,
    body: Value,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let Some(patch) = body.as_object() else {
        return Err(ApiError::new(400, "request body: expected a JSON object"));
    };
    let old = find_rule(state, org, id.clone()).await?;
    let mut merged = serde_json::to_value(&old).map_err(|e| ApiError::new(500, e.to_string()))?;
    if let Some(m) = merged.as_object_mut() {
        for (k, v) in patch {
            match k.as_str() {
                "id" | "isDefault" | "createdAt" | "updatedAt" | "version" => {}
                _ => {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let mut rule = Rule::from_json(&merged).map_err(rule_error)?;
    rule.id = old.id.clone();
    rule.is_default = old.is_default;
    rule.created_at = old.created_at;
    rule.version = old.version + 1;
    rule.updated_at = crate::now_secs() * 1000;
    save_rule(state, org, rule).await
}

async fn delete_rule(
    state: &Arc<AppState>,
    org: u64,
    id: String,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if is_default_id(&id) && default_rules().iter().any(|r| r.id == id) {
        return Err(ApiError::new(
            400,
            format!(
                "rule {id:?} is a default rule: it cannot be deleted (disable it with PUT {{\"isEnabled\": false}})"
            ),
        ));
    }
    let shared = state.security.shared.clone();
    let id2 = id.clone();
    let found = blocking(move || {
        shared
            .db
            .lock()
            .map_err(|e| db_err(e.to_string()))?
            .delete_rule(org, &id2)
            .map_err(db_err)
    })
    .await?;
    if !found {
        return Err(not_found("rule", &id));
    }
    state.security.reload(org);
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = hyper::StatusCode::NO_CONTENT;
    Ok(r)
}

// ---------------------------------------------------------------- signals

/// A signals search, from query parameters and/or a body.
#[derive(Debug, Default)]
pub(crate) struct SearchParams {
    query: Option<String>,
    from: Option<String>,
    to: Option<String>,
    sort: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

impl SearchParams {
    fn from_query(uri: &hyper::Uri) -> Result<SearchParams, ApiError> {
        let q = |n: &str| crate::query_param(uri, n);
        Ok(SearchParams {
            query: q("filter[query]"),
            from: q("filter[from]"),
            to: q("filter[to]"),
            sort: q("sort"),
            cursor: q("page[cursor]"),
            limit: q("page[limit]").or_else(|| q("page[size]")),
        })
    }

    /// The search body (`{"filter": {...}, "page": {...}, "sort": ...}`), or form fields
    /// (`filter[query]=...`) when the body is not JSON. Body values win.
    fn merge_body(&mut self, raw: &[u8]) -> Result<(), ApiError> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| ApiError::new(400, "request body: not UTF-8"))?
            .trim();
        if text.is_empty() {
            return Ok(());
        }
        if text.starts_with('[') || text.starts_with('"') {
            return Err(ApiError::new(
                400,
                "request body: expected a JSON object ({\"filter\": {...}, \"page\": {...}, \"sort\": ...})",
            ));
        }
        if text.starts_with('{') {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| ApiError::new(400, format!("request body: invalid JSON: {e}")))?;
            // Numbers only where a number makes sense (epoch ms bounds, the page size).
            let s = |v: &Value, what: &str| -> Result<Option<String>, ApiError> {
                let numeric = matches!(what, "filter.from" | "filter.to" | "page.limit");
                match v {
                    Value::Null => Ok(None),
                    Value::String(s) => Ok(Some(s.clone())),
                    Value::Number(n) if numeric => Ok(Some(n.to_string())),
                    _ if numeric => Err(ApiError::new(
                        400,
                        format!("{what}: expected a number or a string"),
                    )),
                    _ => Err(ApiError::new(400, format!("{what}: expected a string"))),
                }
            };
            for (obj, what) in [(&v["filter"], "filter"), (&v["page"], "page")] {
                if !obj.is_null() && !obj.is_object() {
                    return Err(ApiError::new(400, format!("{what}: expected an object")));
                }
            }
            if !v.is_object() {
                return Err(ApiError::new(400, "request body: expected a JSON object"));
            }
            let f = &v["filter"];
            if let Some(x) = s(&f["query"], "filter.query")? {
                self.query = Some(x);
            }
            if let Some(x) = s(&f["from"], "filter.from")? {
                self.from = Some(x);
            }
            if let Some(x) = s(&f["to"], "filter.to")? {
                self.to = Some(x);
            }
            if let Some(x) = s(&v["sort"], "sort")? {
                self.sort = Some(x);
            }
            if let Some(x) = s(&v["page"]["cursor"], "page.cursor")? {
                self.cursor = Some(x);
            }
            if let Some(x) = s(&v["page"]["limit"], "page.limit")? {
                self.limit = Some(x);
            }
            return Ok(());
        }
        if !text.contains('=') {
            return Err(ApiError::new(
                400,
                "request body: expected a JSON object or form fields (filter[query]=...)",
            ));
        }
        for pair in text.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = crate::percent_decode(v);
            match crate::percent_decode(k).as_str() {
                "filter[query]" => self.query = Some(v),
                "filter[from]" => self.from = Some(v),
                "filter[to]" => self.to = Some(v),
                "sort" => self.sort = Some(v),
                "page[cursor]" => self.cursor = Some(v),
                "page[limit]" | "page[size]" => self.limit = Some(v),
                _ => {}
            }
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn encode_cursor(ts: i64, id: &str) -> String {
    hex(format!("{ts}|{id}").as_bytes())
}

fn decode_cursor(c: &str) -> Result<(i64, String), ApiError> {
    let bad = || {
        ApiError::new(
            400,
            "page[cursor]: not a cursor returned by this server (take it from meta.page.after)",
        )
    };
    let raw = unhex(c).ok_or_else(bad)?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (ts, id) = text.split_once('|').ok_or_else(bad)?;
    Ok((ts.parse().map_err(|_| bad())?, id.to_string()))
}

fn query_string(pairs: &[(&str, String)]) -> String {
    fn enc(s: &str) -> String {
        let mut o = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    o.push(b as char)
                }
                b' ' => o.push('+'),
                _ => o.push_str(&format!("%{b:02X}")),
            }
        }
        o
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Runs a search and renders the list response.
pub(crate) fn run_search(
    state: &State,
    org: u64,
    p: &SearchParams,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let query_text = p.query.clone().unwrap_or_default();
    let query = Query::parse(&query_text).map_err(|e| ApiError {
        status: 400,
        message: format!("filter[query]: {e}"),
        extra: Some(json!({"position": e.position})),
    })?;
    let time = |v: &Option<String>, name: &str, default: i64| -> Result<i64, ApiError> {
        match v.as_deref() {
            None | Some("") => Ok(default),
            Some(s) => warden_detection::time::parse_time(s, now_ms)
                .map_err(|e| ApiError::new(400, format!("{name}: {e}"))),
        }
    };
    let from = time(&p.from, "filter[from]", 0)?;
    let to = time(&p.to, "filter[to]", i64::MAX)?;
    if from > to {
        return Err(ApiError::new(400, "filter[from] is after filter[to]"));
    }
    let desc = match p.sort.as_deref() {
        None | Some("") | Some("-timestamp") => true,
        Some("timestamp") => false,
        Some(other) => {
            return Err(ApiError::new(
                400,
                format!("sort: {other:?} is not one of timestamp, -timestamp"),
            ));
        }
    };
    let limit = match p.limit.as_deref() {
        None | Some("") => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::new(
                    400,
                    format!("page[limit]: expected an integer from 1 to 1000, got {v:?}"),
                ));
            }
        },
    };
    let after = match p.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c)?),
    };
    let status = query.required_exact("status").into_iter().next();
    let tstate = query
        .required_exact("@workflow.triage.state")
        .into_iter()
        .next();
    let mut found: Vec<Signal> = Vec::new();
    let mut more = false;
    {
        let db = state.shared.db.lock().map_err(|e| db_err(e.to_string()))?;
        db.scan(
            org,
            from,
            to,
            desc,
            after,
            status.as_deref(),
            tstate.as_deref(),
            &mut |row| {
                if !sigjson::matches(&query, &row.signal) {
                    return true;
                }
                if found.len() == limit {
                    more = true;
                    return false;
                }
                found.push(row.signal);
                true
            },
        )
        .map_err(db_err)?;
    }
    let data: Vec<Value> = found.iter().map(sigjson::list_item).collect();
    let mut out = json!({"data": data, "meta": {"page": {}}, "links": {}});
    if more {
        if let Some(last) = found.last() {
            let c = encode_cursor(last.timestamp_ms, &last.id);
            let mut pairs = vec![
                ("filter[query]", query_text.clone()),
                (
                    "sort",
                    if desc {
                        "-timestamp".into()
                    } else {
                        "timestamp".into()
                    },
                ),
                ("page[cursor]", c.clone()),
                ("page[limit]", limit.to_string()),
            ];
            if let Some(f) = &p.from {
                pairs.push(("filter[from]", f.clone()));
            }
            if let Some(t) = &p.to {
                pairs.push(("filter[to]", t.clone()));
            }
            out["meta"]["page"]["after"] = json!(c);
            out["links"]["next"] = json!(format!(
                "/api/v2/security_monitoring/signals?{}",
                query_string(&pairs)
            ));
        }
    }
    Ok(out)
}

async fn search(
    state: &Arc<AppState>,
    org: u64,
    p: SearchParams,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let app = state.clone();
    let now = now_ms();
    let v = blocking(move || run_search(&app.security, org, &p, now)).await?;
    Ok(json_ok(&v))
}

fn attrs_of(body: &Value) -> Result<&serde_json::Map<String, Value>, ApiError> {
    body.get("data")
        .and_then(|d| d.get("attributes"))
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::new(400, "data.attributes: required object"))
}

async fn patch_state(
    state: &Arc<AppState>,
    org: u64,
    id: String,
    body: Value,
    by: String,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let a = attrs_of(&body)?;
    let new_state = a
        .get("state")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::new(
                400,
                "data.attributes.state: required (open, under_review, archived)",
            )
        })?
        .to_string();
    let reason = match a.get("archive_reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if sigjson::ARCHIVE_REASONS.contains(&r.as_str()) => Some(r.clone()),
        Some(other) => {
            return Err(ApiError::new(
                400,
                format!(
                    "data.attributes.archive_reason: {other} is not one of {:?}",
                    sigjson::ARCHIVE_REASONS
                ),
            ));
        }
    };
    let comment = match a.get("archive_comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(_) => {
            return Err(ApiError::new(
                400,
                "data.attributes.archive_comment: expected a string",
            ));
        }
    };
    let version =
        match a.get("version") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                ApiError::new(400, "data.attributes.version: expected an integer")
            })?),
        };
    let app = state.clone();
    let (id2, st2) = (id.clone(), new_state.clone());
    let updated = blocking(move || {
        app.security.update_triage(
            org,
            &id2,
            &by,
            version,
            &mut |t| {
                let prev = t.state.clone();
                t.state = st2.clone();
                if st2 == "archived" {
                    t.archive_reason = reason.clone().or(Some("none".into()));
                    t.archive_comment = comment.clone();
                } else {
                    t.archive_reason = reason.clone();
                    if prev == "archived" {
                        t.archive_comment = None;
                    }
                }
                Ok(())
            },
            &st2,
        )
    })
    .await?;
    let Some(s) = updated else {
        return Err(not_found("signal", &id));
    };
    let transition = match new_state.as_str() {
        "under_review" => Some(crate::alerting::Transition::Acknowledged),
        "archived" => Some(crate::alerting::Transition::Resolved),
        _ => None,
    };
    if let Some(t) = transition {
        state.alerting.notify(notification(org, &s, t));
    }
    Ok(json_ok(&sigjson::triage_response(&s)))
}

async fn patch_assignee(
    state: &Arc<AppState>,
    org: u64,
    id: String,
    body: Value,
    by: String,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let a = attrs_of(&body)?;
    let uuid = match a.get("assignee") {
        Some(Value::Object(o)) => match o.get("uuid") {
            Some(Value::String(u)) => u.clone(),
            None | Some(Value::Null) => String::new(),
            Some(_) => {
                return Err(ApiError::new(
                    400,
                    "data.attributes.assignee.uuid: expected a string",
                ));
            }
        },
        Some(Value::String(u)) => u.clone(),
        _ => {
            return Err(ApiError::new(
                400,
                "data.attributes.assignee: required ({\"uuid\": ...})",
            ));
        }
    };
    if uuid.len() > 200 {
        return Err(ApiError::new(
            400,
            "data.attributes.assignee.uuid: too long",
        ));
    }
    let version = a.get("version").and_then(Value::as_i64);
    let app = state.clone();
    let id2 = id.clone();
    let updated = blocking(move || {
        let current = {
            let db = app
                .security
                .shared
                .db
                .lock()
                .map_err(|e| db_err(e.to_string()))?;
            db.signal(org, &id2)
                .map_err(db_err)?
                .map(|r| r.signal.triage.state)
        };
        let Some(cur) = current else {
            return Ok(None);
        };
        app.security.update_triage(
            org,
            &id2,
            &by,
            version,
            &mut |t| {
                t.assignee = uuid.clone();
                Ok(())
            },
            &cur,
        )
    })
    .await?;
    match updated {
        Some(s) => Ok(json_ok(&sigjson::triage_response(&s))),
        None => Err(not_found("signal", &id)),
    }
}

#[cfg(test)]
mod tests;
