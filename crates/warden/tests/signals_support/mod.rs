//! Helpers for the `signals_*` tests: a real `warden server`, keys, and security spans posted
//! to its trace intake (`POST /api/v0.2/traces`, the agent's protobuf `AgentPayload`) the way
//! a Datadog tracer's appsec tags look after the agent relays them.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::{Value, json};
use warden_proto::trace::{AgentPayload, Span, TraceChunk, TracerPayload};

use crate::server_support::{ServerProc, client, create_key, free_tcp_port};

pub struct Env {
    pub _tmp: tempfile::TempDir,
    pub server: ServerProc,
    pub api: String,
    pub app: String,
    pub http: reqwest::Client,
}

impl Env {
    pub fn start() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let server = ServerProc::start(&dir, free_tcp_port(), &[]);
        let api = create_key(&dir, "api", "default");
        let app = create_key(&dir, "app", "default");
        let http = client(&server.ca_file());
        Env {
            _tmp: tmp,
            server,
            api,
            app,
            http,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// One API call with both keys → (status, JSON or the raw text as a string).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url()))
            .query(query)
            .header("DD-API-KEY", &self.api)
            .header("DD-APPLICATION-KEY", &self.app);
        if let Some(b) = body {
            r = r
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Posts spans to the server's trace intake (202 expected).
    pub async fn post_spans(&self, spans: Vec<Span>) {
        let payload = AgentPayload {
            host_name: "signals-test-host".into(),
            env: "none".into(),
            tracer_payloads: vec![TracerPayload {
                language_name: "rust".into(),
                tracer_version: "test".into(),
                chunks: vec![TraceChunk {
                    priority: 2,
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            agent_version: "test".into(),
            ..Default::default()
        };
        let r = self
            .http
            .post(format!("{}/api/v0.2/traces", self.url()))
            .header("DD-API-KEY", &self.api)
            .header("Content-Type", "application/x-protobuf")
            .body(payload.encode_to_vec())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, 202, "trace intake: {text}");
    }

    /// Signals matching `query` (last hour), waiting up to `secs` for at least `n`.
    pub async fn wait_signals(&self, query: &str, n: usize, secs: u64) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (st, v) = self
                .call(
                    reqwest::Method::GET,
                    "/api/v2/security_monitoring/signals",
                    &[
                        ("filter[query]", query),
                        ("filter[from]", "now-1h"),
                        ("page[limit]", "1000"),
                    ],
                    None,
                )
                .await;
            assert_eq!(st, 200, "{v}");
            let data = v["data"].as_array().cloned().unwrap_or_default();
            if data.len() >= n || Instant::now() > deadline {
                return data;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stats(&self) -> Value {
        let (st, v) = self
            .call(
                reqwest::Method::GET,
                "/api/v2/security_monitoring/warden/stats",
                &[],
                None,
            )
            .await;
        assert_eq!(st, 200, "{v}");
        v
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn base_span(service: &str, env: &str, ip: &str, resource: &str) -> Span {
    // Unique per process run: a time-derived base plus a counter (the intake dedups by
    // trace and span id).
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| (now_ns() as u64) << 8);
    let id = base.wrapping_add(NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut meta = BTreeMap::new();
    meta.insert("env".into(), env.into());
    meta.insert("http.client_ip".into(), ip.into());
    meta.insert("http.method".into(), "GET".into());
    meta.insert("http.url".into(), format!("http://app.local{resource}"));
    meta.insert("http.status_code".into(), "200".into());
    Span {
        service: service.into(),
        name: "http.request".into(),
        resource: format!("GET {resource}"),
        trace_id: id,
        span_id: id,
        parent_id: 0,
        start: now_ns(),
        duration: 1_000_000,
        meta,
        ..Default::default()
    }
}

/// A WAF attack span (`attack_attempt.<typ>`), or a RASP match (`exploit_attempt.<typ>`).
pub fn attack_span(service: &str, env: &str, ip: &str, typ: &str, rasp: bool) -> Span {
    let mut s = base_span(service, env, ip, "/search");
    let mut tags = json!({"type": typ, "category": "attack_attempt"});
    if rasp {
        tags["module"] = json!("rasp");
        tags["category"] = json!("exploit");
    }
    let triggers = json!({"triggers": [{"rule": {"id": "crs-942-100", "name": "SQL injection", "tags": tags},
        "rule_matches": [{"operator": "is_sqli", "operator_value": "",
            "parameters": [{"address": "server.request.query", "key_path": ["q"], "value": "1' OR 1=1--", "highlight": ["1' OR 1=1--"]}]}]}]});
    s.meta.insert("appsec.event".into(), "true".into());
    s.meta
        .insert("_dd.appsec.json".into(), triggers.to_string());
    s
}

/// A login success or failure span (the SDK's `appsec.events.users.login.*` tags).
pub fn login_span(service: &str, env: &str, ip: &str, user: &str, ok: bool) -> Span {
    let mut s = base_span(service, env, ip, "/login");
    if ok {
        s.meta.insert(
            "appsec.events.users.login.success.track".into(),
            "true".into(),
        );
        s.meta.insert("usr.id".into(), user.into());
    } else {
        s.meta.insert(
            "appsec.events.users.login.failure.track".into(),
            "true".into(),
        );
        s.meta.insert(
            "appsec.events.users.login.failure.usr.id".into(),
            user.into(),
        );
        s.meta.insert(
            "appsec.events.users.login.failure.usr.exists".into(),
            "true".into(),
        );
    }
    s
}
