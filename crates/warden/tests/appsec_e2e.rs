//! App protection end to end, every piece real: `protected_app` (Warden's tower layer, child
//! process) → `warden agent` (trace intake on its own port, remote configuration) →
//! `warden server` (security events, denylist API), all over real sockets.
//!
//! * CRS attacks from `../shared/waf/crs-regression.jsonl` pass in monitor mode and every
//!   request the layer reported reaches the server as a security event with its triggers;
//! * credential stuffing: 50 failed logins for 50 users from one IP (through a trusted proxy)
//!   reach the server as login-failure events with the user and IP;
//! * denylist: an IP and a user blocked through the server API are blocked by the layer
//!   within seconds, without a restart, and pass again once unblocked.
//!
//! `protected_app` is the `warden-appsec` example: `cargo test --workspace` builds it; for a
//! single-crate run build it first (`cargo build -p warden-appsec --example protected_app`).
#![allow(clippy::unwrap_used)]

#[path = "../../appsec/tests/common/mod.rs"]
mod common;
mod server_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use server_support::{ServerProc, client, create_key, free_tcp_port};

/// Server + agent for one test (killed on drop).
struct Stack {
    _tmp: tempfile::TempDir,
    server: ServerProc,
    agent: support::Agent,
    trace_port: u16,
    api: String,
    app: String,
    http: reqwest::Client,
}

impl Stack {
    fn start() -> Stack {
        ensure_protected_app();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let port = free_tcp_port();
        let server = ServerProc::start(&dir, port, &[]);
        let api = create_key(&dir, "api", "default");
        let app = create_key(&dir, "app", "default");
        let trace_port = free_tcp_port();
        let run = tmp.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let cfg = support::write_config(
            tmp.path(),
            &format!(
                "api_key: {api}\nserver_url: {}\ntls_ca_file: {}\nhostname: appsec-e2e\n\
                 dogstatsd_port: 0\ncollect_host_metrics: false\ncmd_port: -1\n\
                 run_path: {}\nforwarder_backoff_base: 0.5\nforwarder_backoff_max: 2\n\
                 apm_config:\n  receiver_port: {trace_port}\nappsec_rc_interval: 1\n",
                server.url(),
                server.ca_file().display(),
                run.display(),
            ),
        );
        let agent = support::Agent::start(&cfg);
        agent.wait_started();
        let http = client(&server.ca_file());
        Stack {
            _tmp: tmp,
            server,
            agent,
            trace_port,
            api,
            app,
            http,
        }
    }

    fn agent_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.trace_port)
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.server.url()))
            .header("DD-API-KEY", &self.api)
            .header("DD-APPLICATION-KEY", &self.app);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = r.send().await.unwrap();
        let s = r.status().as_u16();
        let t = r.text().await.unwrap();
        (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    /// Security events stored by the server matching `query` (Spans API search syntax).
    async fn events(&self, query: &str) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/api/v2/spans/events", self.server.url()))
            .query(&[
                ("filter[from]", "now-1h"),
                ("filter[to]", "now"),
                ("filter[query]", query),
                ("page[limit]", "1000"),
            ])
            .header("DD-API-KEY", &self.api)
            .header("DD-APPLICATION-KEY", &self.app)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["attributes"]["custom"].clone())
            .collect()
    }

    /// Polls until `n` events match (at most 30 s).
    async fn wait_events(&self, query: &str, n: usize) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let ev = self.events(query).await;
            if ev.len() >= n {
                return ev;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{} of {n} events for {query:?} after 30 s; agent log:\n{}\nserver log:\n{}",
                ev.len(),
                self.agent.log_text(),
                self.server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `common::App::start` finds the example next to the test binaries; say how to get it when
/// this crate's tests run alone (a nested `cargo build` could wait on cargo's own lock).
fn ensure_protected_app() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/protected_app");
    assert!(
        bin.exists(),
        "{} not found: `cargo test --workspace` builds it, or run \
         `cargo build -p warden-appsec --example protected_app` first",
        bin.display()
    );
}

fn flush(app: &common::App) {
    let req = common::HttpReq {
        id: "flush".into(),
        method: "POST".into(),
        target: "/__flush".into(),
        headers: vec![],
        body: vec![],
    };
    let r = common::send(app.port, &req).unwrap();
    assert!(r.text().contains("true"), "flush: {}", r.text());
}

fn rule_ids(triggers: &Value) -> Vec<String> {
    triggers["triggers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["rule"]["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_and_credential_stuffing_reach_the_server() {
    let stack = Stack::start();
    let rules = common::rules_path();
    let agent = stack.agent_url();
    let app = common::App::start(&[
        ("WARDEN_APPSEC_ENABLED", "true"),
        ("WARDEN_APPSEC_RULES", rules.as_str()),
        ("WARDEN_APPSEC_MODE", "monitor"),
        // Debug build on a loaded CI box: the 5 ms default budget could drop events.
        ("WARDEN_APPSEC_WAF_TIMEOUT_US", "2000000"),
        ("WARDEN_APPSEC_TRUSTED_PROXIES", "127.0.0.1"),
        ("WARDEN_APPSEC_TRACE", "true"),
        ("DD_TRACE_AGENT_URL", agent.as_str()),
        ("DD_SERVICE", "protected-app"),
        ("DD_ENV", "e2e"),
    ]);

    // CRS attacks that libddwaf flags with ruleset 1.18.2, monitor mode: none is blocked.
    let flagged: std::collections::HashSet<String> =
        common::read_jsonl("expected/crs-regression.libddwaf.jsonl")
            .iter()
            .filter(|e| e["rule_ids"].as_array().is_some_and(|a| !a.is_empty()))
            .filter_map(|e| e["id"].as_str().map(str::to_string))
            .collect();
    let attacks: Vec<common::HttpReq> = common::read_jsonl("crs-regression.jsonl")
        .iter()
        .filter(|r| r["label"] == "attack")
        .filter(|r| r["id"].as_str().is_some_and(|id| flagged.contains(id)))
        .filter_map(common::to_http)
        // HEAD answers carry a Content-Length but no body; the raw client reads bodies.
        .filter(|r| r.method != "HEAD")
        .take(150)
        .collect();
    assert!(attacks.len() >= 100);
    for req in &attacks {
        let r = common::send(app.port, req).unwrap();
        assert_ne!(
            r.status,
            403,
            "{}: blocked in monitor mode: {}",
            req.id,
            r.text()
        );
    }
    // What the layer saw, by (method, uri): the rules it reported.
    let mut reported: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for rep in app.reports() {
        let rules: Vec<String> = rep["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        if !rules.is_empty() {
            reported
                .entry((
                    rep["method"].as_str().unwrap().to_string(),
                    rep["uri"].as_str().unwrap().to_string(),
                ))
                .or_default()
                .extend(rules);
        }
    }
    assert!(
        reported.len() >= 50,
        "only {} attacks detected",
        reported.len()
    );
    flush(&app);
    // Every request the layer reported is stored, with at least the rules it reported. The
    // service's events are read until all have arrived (requests sharing a method and URL
    // are compared by the union of their rules).
    let t = Instant::now();
    let stored = loop {
        let events = stack.events("service:protected-app").await;
        let mut stored: BTreeMap<(String, String), (Vec<String>, Value)> = BTreeMap::new();
        for e in events {
            let k = (
                e["http_method"].as_str().unwrap_or("").to_string(),
                e["http_url"].as_str().unwrap_or("").to_string(),
            );
            let entry = stored.entry(k).or_insert_with(|| (Vec::new(), e.clone()));
            entry.0.extend(rule_ids(&e["triggers"]));
        }
        let missing: Vec<_> = reported
            .keys()
            .filter(|k| !stored.contains_key(*k))
            .collect();
        if missing.is_empty() {
            break stored;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{} of {} reported attacks not on the server after 30 s, e.g. {:?}; agent log:\n{}",
            missing.len(),
            reported.len(),
            missing.first(),
            stack.agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for (k, rules) in &reported {
        let (got, e) = &stored[k];
        for r in rules {
            assert!(
                got.contains(r),
                "{k:?}: rule {r} missing on the server: {got:?}"
            );
        }
        assert_eq!(e["env"], "e2e");
        assert_eq!(e["attributes"]["_dd.origin"], "appsec");
        assert_eq!(e["client_ip"], "127.0.0.1");
        assert!(
            e["activity"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.as_str().unwrap().starts_with("attack_attempt.")),
            "{k:?}: {:?}",
            e["activity"]
        );
    }

    // Credential stuffing: 50 users, one IP, behind the trusted proxy, within a minute.
    let started = Instant::now();
    for i in 0..50 {
        let req = common::HttpReq::login(
            format!("login-{i}"),
            Some("198.51.100.66"),
            &format!("victim{i:02}"),
            &format!("hunter{i}"),
        );
        let r = common::send(app.port, &req).unwrap();
        assert_eq!(r.status, 401);
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    flush(&app);
    let events = stack
        .wait_events(
            "@http.client_ip:198.51.100.66 @appsec.security_activity:business_logic.users.login.failure",
            50,
        )
        .await;
    assert_eq!(events.len(), 50);
    let mut users: Vec<String> = events
        .iter()
        .map(|e| {
            assert_eq!(e["client_ip"], "198.51.100.66");
            assert_eq!(
                e["attributes"]["appsec.events.users.login.failure.usr.exists"],
                "false"
            );
            assert_eq!(e["http_status"], 401);
            e["usr_id"].as_str().unwrap().to_string()
        })
        .collect();
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 50, "{users:?}");
    assert_eq!(users[0], "victim00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denylist_from_the_server_blocks_without_restart() {
    let stack = Stack::start();
    let agent = stack.agent_url();
    // The built-in ruleset (no WARDEN_APPSEC_RULES), monitor mode: only denylists block.
    let app = common::App::start(&[
        ("WARDEN_APPSEC_ENABLED", "true"),
        ("WARDEN_APPSEC_MODE", "monitor"),
        // Debug build on a loaded CI box: the 5 ms default budget could drop events.
        ("WARDEN_APPSEC_WAF_TIMEOUT_US", "2000000"),
        ("WARDEN_APPSEC_TRUSTED_PROXIES", "127.0.0.1"),
        ("WARDEN_APPSEC_TRACE", "true"),
        ("DD_TRACE_AGENT_URL", agent.as_str()),
        ("WARDEN_APPSEC_REMOTE_CONFIG_INTERVAL_MS", "500"),
    ]);
    let from = [("x-forwarded-for", "203.0.113.99")];
    assert_eq!(common::get(app.port, "/hello", &from).status, 200);
    assert_eq!(
        common::get(app.port, "/me", &[("x-user", "mallory")]).status,
        200
    );

    let block = |target: &str, value: &str| {
        json!({"data": {"type": "denylist_entry", "attributes": {
            "target": target, "value": value, "expires_at": server_support::now() + 600,
            "reason": "e2e"}}})
    };
    let (s, v) = stack
        .api(
            reqwest::Method::POST,
            "/api/v2/warden/denylist",
            Some(block("ip", "203.0.113.99")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = stack
        .api(
            reqwest::Method::POST,
            "/api/v2/warden/denylist",
            Some(block("user", "mallory")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let t = Instant::now();
    while common::get(app.port, "/hello", &from).status != 403 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "IP not blocked within 10 s; agent log:\n{}",
            stack.agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let blocked_after = t.elapsed();
    let r = common::get(app.port, "/me", &[("x-user", "mallory")]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        common::get(app.port, "/hello", &[("x-forwarded-for", "203.0.113.100")]).status,
        200
    );
    assert_eq!(
        common::get(app.port, "/me", &[("x-user", "alice")]).status,
        200
    );

    let (s, _) = stack
        .api(
            reqwest::Method::DELETE,
            "/api/v2/warden/denylist/ip/203.0.113.99",
            None,
        )
        .await;
    assert_eq!(s, 204);
    let t = Instant::now();
    while common::get(app.port, "/hello", &from).status != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "IP still blocked 10 s after unblocking"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The user stays blocked; the block itself was reported to the server.
    assert_eq!(
        common::get(app.port, "/me", &[("x-user", "mallory")]).status,
        403
    );
    flush(&app);
    let ev = stack.wait_events("@http.client_ip:203.0.113.99", 1).await;
    assert!(ev.iter().any(|e| e["blocked"] == true), "{ev:#?}");
    eprintln!("blocked {blocked_after:?} after the API call");

    // The server goes away: the agent keeps serving its last good copy, so the user stays
    // blocked (an outage must not unblock anyone).
    let pid = stack.server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        common::get(app.port, "/me", &[("x-user", "mallory")]).status,
        403
    );
    assert_eq!(common::get(app.port, "/hello", &from).status, 200);
}
