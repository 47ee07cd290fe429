//! The protection engine shared by all requests ([`Appsec`]) and the per-request handle
//! ([`RequestHandle`]) that the layer puts in the request extensions, so handlers can call the
//! RASP hooks and user tracking against the same WAF context as the request.
//!
//! Block mode is expressed as WAF configuration, not as code in the layer: a `rules_override`
//! (under its own builder path) adds a `warden_block` action to the high-confidence rules and
//! to the RASP rules, so the engine produces the `block_request` action and its
//! `security_response_id`, exactly as remote configuration does for Datadog tracers. Denylists
//! are `rules_data` under another path, swapped in at run time.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use warden_waf::{Builder, Context, EvalResult, Event, LoadError, SharedRuleset};

use crate::blocking::Blocked;
use crate::config::{Cidr, Config, ConfigError, Mode};
use crate::trace::{FanOut, TraceSink};

/// Builder path of the application's ruleset.
const PATH_RULES: &str = "ASM_DD/default";
/// Builder path of the block-mode overrides.
const PATH_BLOCKING: &str = "warden/blocking";
/// Builder path of the static denylists (`blocked_ips`, `blocked_users`).
const PATH_DENYLIST: &str = "warden/denylist";
/// Builder path of the denylist rules Warden adds when the ruleset has none of its own.
const PATH_ACL_RULES: &str = "warden/acl-rules";
/// Builder path of the denylists pulled from the agent (merged with the static ones).
const PATH_REMOTE_DATA: &str = "ASM_DATA/warden";

/// Errors while setting up app protection.
#[derive(Debug, thiserror::Error)]
pub enum AppsecError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("ruleset: {0}")]
    Ruleset(#[from] LoadError),
    #[error("ruleset loaded no rules (check its diagnostics): nothing would be protected")]
    NoRules,
    #[error("ruleset is not a JSON object: {0}")]
    RulesetJson(String),
    #[error("rules_data: {0}")]
    RulesData(String),
}

/// Receives what app protection saw on a request (events, blocking, user tracking).
/// Reporting as traces plugs in here.
pub trait EventSink: Send + Sync + 'static {
    fn report(&self, report: RequestReport);
}

/// Default sink: one `tracing` warning per request with events.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl EventSink for LogSink {
    fn report(&self, r: RequestReport) {
        if r.events.is_empty() && r.blocked.is_none() {
            tracing::debug!(method = %r.method, uri = %r.uri, tags = ?r.tags, "appsec: user activity");
            return;
        }
        tracing::warn!(
            method = %r.method,
            uri = %r.uri,
            client_ip = ?r.client_ip,
            blocked = r.blocked.is_some(),
            rules = ?r.events.iter().map(|e| e.rule.id.as_str()).collect::<Vec<_>>(),
            "appsec: security events"
        );
    }
}

/// Identifiers that link a report to the request's trace (W3C and Datadog propagation
/// headers, as received).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceLink {
    pub traceparent: Option<String>,
    pub datadog_trace_id: Option<String>,
    pub datadog_parent_id: Option<String>,
}

/// Everything app protection recorded for one request.
#[derive(Debug, Clone)]
pub struct RequestReport {
    pub method: String,
    pub uri: String,
    pub route: Option<String>,
    pub client_ip: Option<IpAddr>,
    /// Final response status (the blocking one when blocked).
    pub status: Option<u16>,
    pub blocked: Option<Blocked>,
    pub events: Vec<Event>,
    /// Span tags from user tracking (`usr.id`, `appsec.events.users.login.success.track`, ...).
    pub tags: BTreeMap<String, String>,
    /// WAF attributes (fingerprints such as `_dd.appsec.fp.http.header`, rule outputs).
    pub attributes: serde_json::Map<String, Value>,
    pub waf_duration_ns: u64,
    pub waf_timeouts: u32,
    pub trace: TraceLink,
    /// `User-Agent` of the request.
    pub user_agent: Option<String>,
    /// When the layer received the request, UNIX nanoseconds.
    pub start_unix_ns: i64,
    /// Time from receiving the request to the final response head, nanoseconds.
    pub duration_ns: u64,
    /// `metadata.rules_version` of the ruleset that evaluated the request.
    pub rules_version: Option<String>,
}

impl RequestReport {
    /// `_dd.appsec.json` content: `{"triggers": [events]}`.
    pub fn appsec_json(&self) -> Value {
        json!({ "triggers": serde_json::to_value(&self.events).unwrap_or(Value::Null) })
    }
}

/// Gives the route template (`/users/{id}`) of a routed request, e.g. from axum's
/// `MatchedPath` extension; used to derive `server.request.path_params`.
pub type RouteFn = Arc<dyn Fn(&http::Extensions) -> Option<String> + Send + Sync>;
/// Gives the TCP peer address, e.g. from axum's `ConnectInfo<SocketAddr>` extension.
pub type PeerFn = Arc<dyn Fn(&http::Extensions) -> Option<IpAddr> + Send + Sync>;

/// Put this in the request extensions (hyper) to tell the layer the TCP peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Path parameters known to the application; put in the request extensions before the layer,
/// or give them later with [`RequestHandle::set_path_params`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams(pub Vec<(String, String)>);

pub(crate) struct Inner {
    pub(crate) cfg: Config,
    pub(crate) shared: SharedRuleset,
    builder: Mutex<Builder>,
    /// The ruleset the instance was built with (restored when a remote one is withdrawn).
    startup_rules: Value,
    pub(crate) sink: Arc<dyn EventSink>,
    trace: Option<Arc<TraceSink>>,
    pub(crate) route_fn: Option<RouteFn>,
    pub(crate) peer_fn: Option<PeerFn>,
    blocked_ips: Mutex<Vec<String>>,
    blocked_users: Mutex<Vec<String>>,
}

/// App protection: the compiled ruleset and settings shared by all requests. Cheap to clone.
#[derive(Clone)]
pub struct Appsec {
    pub(crate) inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Appsec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appsec")
            .field("enabled", &self.inner.is_some())
            .field("mode", &self.inner.as_ref().map(|i| i.cfg.mode))
            .finish()
    }
}

/// Builds an [`Appsec`] from a [`Config`] plus code-only hooks.
pub struct AppsecBuilder {
    cfg: Config,
    rules_json: Option<String>,
    sink: Option<Arc<dyn EventSink>>,
    extra_sinks: Vec<Arc<dyn EventSink>>,
    route_fn: Option<RouteFn>,
    peer_fn: Option<PeerFn>,
}

impl Appsec {
    /// Configuration from `WARDEN_APPSEC_*` variables, default hooks: reports go to the agent
    /// as trace spans ([`TraceSink`]; [`LogSink`] with `WARDEN_APPSEC_TRACE=false`), the peer
    /// comes from [`PeerAddr`], denylists and ruleset updates are pulled from the agent.
    pub fn from_env() -> Result<Appsec, AppsecError> {
        Appsec::builder(Config::from_env()?).build()
    }

    pub fn builder(cfg: Config) -> AppsecBuilder {
        AppsecBuilder {
            cfg,
            rules_json: None,
            sink: None,
            extra_sinks: Vec::new(),
            route_fn: None,
            peer_fn: None,
        }
    }

    /// A disabled instance: the layer forwards every request untouched.
    pub fn disabled() -> Appsec {
        Appsec { inner: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn mode(&self) -> Option<Mode> {
        self.inner.as_ref().map(|i| i.cfg.mode)
    }

    /// Ships the security spans queued so far to the agent and waits for the answer (at most
    /// `timeout`). False when it timed out or no trace sink is in use.
    pub fn flush_traces(&self, timeout: Duration) -> bool {
        match self.inner.as_ref().and_then(|i| i.trace.as_ref()) {
            Some(t) => t.flush(timeout),
            None => false,
        }
    }

    /// Counters of the trace sink, when reports go to the agent.
    pub fn trace_stats(&self) -> Option<Arc<crate::trace::TraceStats>> {
        let t = self.inner.as_ref()?.trace.as_ref()?;
        Some(Arc::clone(t.stats()))
    }

    /// Replace the denylists received from remote configuration: a `rules_data` array
    /// (`[{"id":"blocked_ips","type":"ip_with_expiration","data":[{"value","expiration"}]}]`,
    /// expirations in UNIX seconds, 0 = never). Merged with the static denylists.
    pub fn set_rules_data(&self, rules_data: &Value) -> Result<(), AppsecError> {
        match &self.inner {
            Some(inner) => inner.set_remote_rules_data(rules_data),
            None => Ok(()),
        }
    }

    /// Swap the ruleset for new requests (`None` restores the one the instance was built
    /// with). A ruleset that loads no rule is refused and the current one stays.
    pub fn update_ruleset(&self, doc: Option<&Value>) -> Result<(), AppsecError> {
        match &self.inner {
            Some(inner) => inner.swap_ruleset(doc),
            None => Ok(()),
        }
    }

    /// The tower layer that protects a service with this instance.
    pub fn layer(&self) -> crate::AppsecLayer {
        crate::AppsecLayer::new(self.clone())
    }

    /// Replace the IP denylist (addresses or CIDRs); takes effect for new requests.
    pub fn set_blocked_ips(&self, ips: &[String]) -> Result<(), AppsecError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        for ip in ips {
            ip.parse::<Cidr>()?;
        }
        *lock(&inner.blocked_ips) = ips.to_vec();
        inner.rebuild_denylist()
    }

    /// Replace the user denylist (`usr.id` values); takes effect for new requests and for
    /// `set_user` / `track_login_success` calls.
    pub fn set_blocked_users(&self, users: &[String]) -> Result<(), AppsecError> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        *lock(&inner.blocked_users) = users.to_vec();
        inner.rebuild_denylist()
    }
}

impl AppsecBuilder {
    /// Use this ruleset (JSON text) instead of reading `Config::rules_path`.
    pub fn rules_json(mut self, json: impl Into<String>) -> Self {
        self.rules_json = Some(json.into());
        self
    }

    /// Report to `sink` instead of the default ([`TraceSink`], or [`LogSink`] with
    /// `WARDEN_APPSEC_TRACE=false`).
    pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Report to `sink` as well as to the main sink (default or [`Self::event_sink`]).
    pub fn add_event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.extra_sinks.push(sink);
        self
    }

    pub fn route_template(
        mut self,
        f: impl Fn(&http::Extensions) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.route_fn = Some(Arc::new(f));
        self
    }

    pub fn peer_addr(
        mut self,
        f: impl Fn(&http::Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.peer_fn = Some(Arc::new(f));
        self
    }

    /// Load and compile the ruleset: the configured one, else Warden's built-in default.
    /// Disabled configurations give a pass-through instance.
    pub fn build(self) -> Result<Appsec, AppsecError> {
        if !self.cfg.enabled {
            return Ok(Appsec::disabled());
        }
        let json = match (self.rules_json, self.cfg.rules_path.clone()) {
            (Some(j), _) => j,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::ReadRuleset { path, source })?,
            (None, None) => warden_waf::DEFAULT_RULESET_JSON.to_string(),
        };
        let doc: Value =
            serde_json::from_str(&json).map_err(|e| AppsecError::RulesetJson(e.to_string()))?;
        if !doc.is_object() {
            return Err(AppsecError::RulesetJson(
                "top level is not an object".into(),
            ));
        }
        let mut builder = Builder::new();
        let diags = builder.add_or_update_value(PATH_RULES, &doc)?;
        if diags.total_loaded() == 0 {
            return Err(AppsecError::NoRules);
        }
        tracing::info!(
            rules_version = ?diags.ruleset_version,
            loaded = diags.total_loaded(),
            mode = ?self.cfg.mode,
            "appsec: ruleset loaded"
        );
        if self.cfg.mode == Mode::Block {
            builder.add_or_update_value(
                PATH_BLOCKING,
                &blocking_config(&doc, self.cfg.block_status),
            )?;
        }
        set_acl_rules(&mut builder, &doc)?;
        let rs = builder.build();
        let mut trace = None;
        let main: Arc<dyn EventSink> = match self.sink {
            Some(s) => s,
            None if self.cfg.agent.trace => {
                let t = Arc::new(TraceSink::new(self.cfg.agent.clone())?);
                tracing::info!(agent = %self.cfg.agent.url, service = %self.cfg.agent.service,
                    "appsec: security events reported as traces to the agent");
                trace = Some(Arc::clone(&t));
                t
            }
            None => Arc::new(LogSink),
        };
        let sink: Arc<dyn EventSink> = if self.extra_sinks.is_empty() {
            main
        } else {
            let mut all = vec![main];
            all.extend(self.extra_sinks);
            Arc::new(FanOut(all))
        };
        let inner = Arc::new(Inner {
            blocked_ips: Mutex::new(self.cfg.blocked_ips.clone()),
            blocked_users: Mutex::new(self.cfg.blocked_users.clone()),
            cfg: self.cfg,
            shared: SharedRuleset::new(rs),
            builder: Mutex::new(builder),
            startup_rules: doc,
            sink,
            trace,
            route_fn: self.route_fn,
            peer_fn: self.peer_fn,
        });
        if !lock(&inner.blocked_ips).is_empty() || !lock(&inner.blocked_users).is_empty() {
            inner.rebuild_denylist()?;
        }
        if inner.cfg.agent.remote_config {
            crate::remote::start(&inner)?;
        }
        Ok(Appsec { inner: Some(inner) })
    }
}

/// Denylists only act through rules that read `blocked_ips` / `blocked_users`. Datadog's
/// ruleset has them (`blk-001-001`, `blk-001-002`); for a ruleset without them (Warden's
/// default, an operator's custom one) the same two rules are added under their own path, so
/// the denylists work whatever the ruleset.
fn set_acl_rules(b: &mut Builder, doc: &Value) -> Result<(), AppsecError> {
    let mut has_ip = false;
    let mut has_user = false;
    for section in ["rules", "rules_compat"] {
        for r in doc
            .get(section)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let id = r.get("id").and_then(Value::as_str).unwrap_or("");
            has_ip |= id == "blk-001-001";
            has_user |= id == "blk-001-002";
            for c in r
                .get("conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match c.pointer("/parameters/data").and_then(Value::as_str) {
                    Some("blocked_ips") => has_ip = true,
                    Some("blocked_users") => has_user = true,
                    _ => {}
                }
            }
        }
    }
    let mut rules = Vec::new();
    if !has_ip {
        rules.push(json!({"id": "blk-001-001", "name": "Block IP Addresses",
            "tags": {"type": "block_ip", "category": "security_response", "module": "network-acl"},
            "conditions": [{"operator": "ip_match", "parameters": {
                "inputs": [{"address": "http.client_ip"}], "data": "blocked_ips"}}],
            "transformers": [], "on_match": ["block"]}));
    }
    if !has_user {
        rules.push(json!({"id": "blk-001-002", "name": "Block User Addresses",
            "tags": {"type": "block_user", "category": "security_response", "module": "authentication-acl"},
            "conditions": [{"operator": "exact_match", "parameters": {
                "inputs": [{"address": "usr.id"}], "data": "blocked_users"}}],
            "transformers": [], "on_match": ["block"]}));
    }
    if rules.is_empty() {
        let _ = b.remove(PATH_ACL_RULES);
    } else {
        b.add_or_update_value(PATH_ACL_RULES, &json!({"version": "2.2", "rules": rules}))?;
    }
    Ok(())
}

impl Inner {
    pub(crate) fn set_remote_rules_data(&self, data: &Value) -> Result<(), AppsecError> {
        let empty = match data {
            Value::Array(a) => a.is_empty(),
            Value::Null => true,
            _ => {
                return Err(AppsecError::RulesData(
                    "expected an array of {id, type, data}".into(),
                ));
            }
        };
        let mut b = lock(&self.builder);
        if empty {
            let _ = b.remove(PATH_REMOTE_DATA);
        } else {
            let doc = json!({ "version": "2.2", "rules_data": data });
            b.add_or_update_value(PATH_REMOTE_DATA, &doc)?;
        }
        self.shared.store(b.build());
        Ok(())
    }

    pub(crate) fn swap_ruleset(&self, doc: Option<&Value>) -> Result<(), AppsecError> {
        let doc = doc.unwrap_or(&self.startup_rules);
        if !doc.is_object() {
            return Err(AppsecError::RulesetJson(
                "top level is not an object".into(),
            ));
        }
        // Checked on the side first: a ruleset that loads nothing must not replace one that
        // protects.
        if Builder::new()
            .add_or_update_value(PATH_RULES, doc)?
            .total_loaded()
            == 0
        {
            return Err(AppsecError::NoRules);
        }
        let mut b = lock(&self.builder);
        let diags = b.add_or_update_value(PATH_RULES, doc)?;
        if self.cfg.mode == Mode::Block {
            b.add_or_update_value(PATH_BLOCKING, &blocking_config(doc, self.cfg.block_status))?;
        }
        set_acl_rules(&mut b, doc)?;
        self.shared.store(b.build());
        tracing::info!(
            rules_version = ?diags.ruleset_version,
            loaded = diags.total_loaded(),
            "appsec: ruleset updated"
        );
        Ok(())
    }

    fn rebuild_denylist(&self) -> Result<(), AppsecError> {
        let entries = |v: &[String]| -> Vec<Value> {
            v.iter()
                .map(|x| json!({"value": x, "expiration": 0}))
                .collect()
        };
        let doc = json!({
            "version": "2.2",
            "rules_data": [
                {"id": "blocked_ips", "type": "ip_with_expiration", "data": entries(&lock(&self.blocked_ips))},
                {"id": "blocked_users", "type": "data_with_expiration", "data": entries(&lock(&self.blocked_users))},
            ]
        });
        let mut b = lock(&self.builder);
        b.add_or_update_value(PATH_DENYLIST, &doc)?;
        self.shared.store(b.build());
        Ok(())
    }
}

/// Block-mode overrides: every RASP rule and every `waf` rule with `confidence: "1"` gets the
/// `warden_block` action (unless it already blocks); `warden_block` carries the configured
/// status.
fn blocking_config(doc: &Value, status: u16) -> Value {
    let mut blocking_ids: HashSet<&str> = HashSet::from(["block"]);
    if let Some(actions) = doc.get("actions").and_then(Value::as_array) {
        for a in actions {
            let kind = a.get("type").and_then(Value::as_str).unwrap_or("");
            if kind == "block_request" || kind == "redirect_request" {
                if let Some(id) = a.get("id").and_then(Value::as_str) {
                    blocking_ids.insert(id);
                }
            }
        }
    }
    let mut overrides = Vec::new();
    for section in ["rules", "rules_compat"] {
        let Some(rules) = doc.get(section).and_then(Value::as_array) else {
            continue;
        };
        for r in rules {
            let Some(id) = r.get("id").and_then(Value::as_str) else {
                continue;
            };
            let tag = |k: &str| r.pointer(&format!("/tags/{k}")).and_then(Value::as_str);
            let module = tag("module").unwrap_or("waf");
            let wanted = module == "rasp" || (module == "waf" && tag("confidence") == Some("1"));
            if !wanted {
                continue;
            }
            let mut on_match: Vec<String> = r
                .get("on_match")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if on_match.iter().any(|a| blocking_ids.contains(a.as_str())) {
                continue;
            }
            on_match.push("warden_block".into());
            overrides.push(json!({"rules_target": [{"rule_id": id}], "on_match": on_match}));
        }
    }
    json!({
        "version": "2.2",
        "actions": [{"id": "warden_block", "type": "block_request",
                     "parameters": {"status_code": status, "type": "auto", "grpc_status_code": 10}}],
        "rules_override": overrides,
    })
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

pub(crate) struct ReqMut {
    pub(crate) ctx: Context,
    pub(crate) events: Vec<Event>,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) attributes: serde_json::Map<String, Value>,
    pub(crate) blocked: Option<Blocked>,
    pub(crate) waf_ns: u64,
    pub(crate) timeouts: u32,
}

pub(crate) struct ReqState {
    pub(crate) appsec: Arc<Inner>,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) m: Mutex<ReqMut>,
}

/// Per-request handle, found in the request extensions of a protected request (axum:
/// `Extension<RequestHandle>`). RASP hooks and user tracking go through it; a `Err(Blocked)`
/// means "stop and let the layer answer": the layer sends the blocking response whatever the
/// handler returns afterwards.
#[derive(Clone)]
pub struct RequestHandle {
    pub(crate) st: Arc<ReqState>,
}

impl std::fmt::Debug for RequestHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHandle")
            .field("client_ip", &self.st.client_ip)
            .finish()
    }
}

impl RequestHandle {
    pub(crate) fn new(appsec: Arc<Inner>, ctx: Context, client_ip: Option<IpAddr>) -> Self {
        RequestHandle {
            st: Arc::new(ReqState {
                appsec,
                client_ip,
                m: Mutex::new(ReqMut {
                    ctx,
                    events: Vec::new(),
                    tags: BTreeMap::new(),
                    attributes: serde_json::Map::new(),
                    blocked: None,
                    waf_ns: 0,
                    timeouts: 0,
                }),
            }),
        }
    }

    /// The client IP as resolved through the trusted proxies.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.st.client_ip
    }

    /// The block verdict already reached for this request, if any.
    pub fn blocked(&self) -> Option<Blocked> {
        lock(&self.st.m).blocked.clone()
    }

    /// Evaluate persistent request addresses (they stay for later evaluations).
    pub(crate) fn eval(&self, addrs: Value) -> Result<(), Blocked> {
        let mut m = lock(&self.st.m);
        if let Some(b) = &m.blocked {
            return Err(b.clone());
        }
        let res = m.ctx.run_owned(addrs, self.st.appsec.cfg.waf_timeout_us);
        self.absorb(&mut m, res)
    }

    /// Evaluate ephemeral (RASP) addresses in a subcontext with the request's addresses.
    fn eval_rasp(&self, addrs: Value) -> Result<(), Blocked> {
        let mut m = lock(&self.st.m);
        if let Some(b) = &m.blocked {
            return Err(b.clone());
        }
        let mut sub = m.ctx.subcontext();
        let res = sub.run(&addrs, self.st.appsec.cfg.waf_timeout_us);
        self.absorb(&mut m, res)
    }

    fn absorb(
        &self,
        m: &mut ReqMut,
        res: Result<EvalResult, warden_waf::EvalError>,
    ) -> Result<(), Blocked> {
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "appsec: WAF evaluation refused its input");
                return Ok(());
            }
        };
        m.waf_ns += res.duration_ns;
        if res.timeout {
            m.timeouts += 1;
        }
        let verdict = decide(self.st.appsec.cfg.mode, &res);
        m.events.extend(res.events);
        m.attributes.extend(res.derivatives);
        if let Some(b) = verdict {
            m.blocked = Some(b.clone());
            return Err(b);
        }
        Ok(())
    }

    /// Path parameters known only after routing (see also [`PathParams`]).
    pub fn set_path_params<K: AsRef<str>, V: AsRef<str>>(
        &self,
        params: &[(K, V)],
    ) -> Result<(), Blocked> {
        let lim = &self.st.appsec.cfg.limits;
        let m: serde_json::Map<String, Value> = params
            .iter()
            .map(|(k, v)| {
                (
                    k.as_ref().to_string(),
                    Value::String(v.as_ref().to_string()),
                )
            })
            .collect();
        let v = crate::addresses::bound(Value::Object(m), lim);
        self.eval(json!({ "server.request.path_params": v }))
    }

    /// The authenticated user of this request; a blocked user is blocked from here on.
    pub fn set_user(&self, user_id: &str, session_id: Option<&str>) -> Result<(), Blocked> {
        let mut addrs = serde_json::Map::new();
        {
            let mut m = lock(&self.st.m);
            m.tags.insert("usr.id".into(), user_id.into());
            addrs.insert("usr.id".into(), Value::from(user_id));
            if let Some(s) = session_id {
                m.tags.insert("usr.session_id".into(), s.into());
                addrs.insert("usr.session_id".into(), Value::from(s));
            }
        }
        self.eval(Value::Object(addrs))
    }

    /// A successful login (`users.login.success`); the user becomes the request's user.
    pub fn track_login_success(
        &self,
        user_id: &str,
        metadata: &[(&str, &str)],
    ) -> Result<(), Blocked> {
        {
            let mut m = lock(&self.st.m);
            let p = "appsec.events.users.login.success";
            m.tags.insert(format!("{p}.track"), "true".into());
            m.tags.insert(format!("_dd.{p}.sdk"), "true".into());
            m.tags.insert("usr.id".into(), user_id.into());
            for (k, v) in metadata {
                m.tags.insert(format!("{p}.{k}"), (*v).into());
            }
        }
        self.eval(json!({ "usr.id": user_id }))
    }

    /// A failed login (`users.login.failure`). The user is not authenticated, so it is not
    /// the request's user and the user denylist does not apply.
    pub fn track_login_failure(
        &self,
        user_id: &str,
        exists: bool,
        metadata: &[(&str, &str)],
    ) -> Result<(), Blocked> {
        {
            let mut m = lock(&self.st.m);
            let p = "appsec.events.users.login.failure";
            m.tags.insert(format!("{p}.track"), "true".into());
            m.tags.insert(format!("_dd.{p}.sdk"), "true".into());
            m.tags.insert(format!("{p}.usr.id"), user_id.into());
            m.tags.insert(format!("{p}.usr.exists"), exists.to_string());
            for (k, v) in metadata {
                m.tags.insert(format!("{p}.{k}"), (*v).into());
            }
        }
        // Nothing for the WAF to evaluate in ruleset 1.18.x; kept fallible so business-logic
        // rules can block here later without an API change.
        match lock(&self.st.m).blocked.clone() {
            Some(b) => Err(b),
            None => Ok(()),
        }
    }

    /// RASP: before running a SQL statement (`db_system`: `sqlite`, `postgresql`, `mysql`, ...).
    pub fn check_sql(&self, statement: &str, db_system: &str) -> Result<(), Blocked> {
        self.eval_rasp(json!({"server.db.statement": statement, "server.db.system": db_system}))
    }

    /// RASP: before opening a file.
    pub fn check_file_open(&self, path: &str) -> Result<(), Blocked> {
        self.eval_rasp(json!({ "server.io.fs.file": path }))
    }

    /// RASP: before an outbound HTTP request.
    pub fn check_outbound_url(&self, url: &str) -> Result<(), Blocked> {
        self.eval_rasp(json!({ "server.io.net.url": url }))
    }

    /// RASP: before running a command line through a shell (`sh -c <cmd>`).
    pub fn check_shell(&self, cmd: &str) -> Result<(), Blocked> {
        self.eval_rasp(json!({ "server.sys.shell.cmd": cmd }))
    }

    /// RASP: before executing a program with arguments (argv, program first).
    pub fn check_exec(&self, argv: &[&str]) -> Result<(), Blocked> {
        self.eval_rasp(json!({ "server.sys.exec.cmd": argv }))
    }
}

/// Block mode: any blocking action. Monitor mode: only denylist rules block.
fn decide(mode: Mode, res: &EvalResult) -> Option<Blocked> {
    let ev = res
        .events
        .iter()
        .find(|e| e.security_response_id.is_some())
        .or_else(|| res.events.first());
    let rule_id = ev.map(|e| e.rule.id.as_str()).unwrap_or("");
    let b = Blocked::from_actions(&res.actions, rule_id)?;
    match mode {
        Mode::Block => Some(b),
        Mode::Monitor => res
            .events
            .iter()
            .any(|e| {
                matches!(
                    e.rule.tags.get("module").map(String::as_str),
                    Some("network-acl" | "authentication-acl")
                ) && e.security_response_id.is_some()
            })
            .then_some(b),
    }
}
