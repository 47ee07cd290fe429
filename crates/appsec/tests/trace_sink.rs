//! Reporting as traces and remote configuration, against a local HTTP receiver standing in
//! for the agent's trace port: `protected_app` (child process, real HTTP) sends its security
//! spans as msgpack v0.4 to `PUT /v0.4/traces` and polls `GET /v0.7/warden/appsec`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{App, get, rules_path};
use serde_json::{Value, json};

/// One request the fake agent received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A plain-HTTP receiver on a free port: records every request, answers trace PUTs with
/// the agent's `rate_by_service` and `/v0.7/warden/appsec` with the configured document.
struct FakeAgent {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    remote: Arc<Mutex<Value>>,
}

impl FakeAgent {
    fn start() -> FakeAgent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let remote = Arc::new(Mutex::new(
            json!({"rules_data": [], "ruleset": null, "version": 1}),
        ));
        let (g, r) = (got.clone(), remote.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut rd = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if rd.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let mut headers = BTreeMap::new();
                loop {
                    let mut h = String::new();
                    if rd.read_line(&mut h).unwrap_or(0) == 0 {
                        break;
                    }
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let n: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; n];
                let _ = rd.read_exact(&mut body);
                let answer = if path == "/v0.7/warden/appsec" {
                    r.lock().unwrap().to_string()
                } else {
                    r#"{"rate_by_service":{}}"#.to_string()
                };
                g.lock().unwrap().push(Received {
                    method,
                    path,
                    headers,
                    body,
                });
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    answer.len(),
                    answer
                );
            }
        });
        FakeAgent { port, got, remote }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span of every trace PUT so far, decoded from msgpack.
    fn spans(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for r in self.got.lock().unwrap().iter() {
            if r.path != "/v0.4/traces" {
                continue;
            }
            let traces: Value = rmp_serde::from_slice(&r.body).expect("v0.4 msgpack");
            for t in traces.as_array().expect("array of traces") {
                out.extend(t.as_array().expect("trace is an array of spans").clone());
            }
        }
        out
    }
}

fn flush(app: &App) {
    let req = common::HttpReq {
        id: "flush".into(),
        method: "POST".into(),
        target: "/__flush".into(),
        headers: vec![],
        body: vec![],
    };
    let r = common::send(app.port, &req).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("true"), "flush failed: {}", r.text());
}

fn post_form(port: u16, target: &str, form: &str, headers: &[(&str, &str)]) -> common::HttpResp {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    h.push((
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    let req = common::HttpReq {
        id: target.into(),
        method: "POST".into(),
        target: target.into(),
        headers: h,
        body: form.as_bytes().to_vec(),
    };
    common::send(port, &req).unwrap()
}

fn meta<'a>(span: &'a Value, k: &str) -> Option<&'a str> {
    span["meta"][k].as_str()
}

#[test]
fn security_spans_reach_the_trace_intake_as_msgpack_v04() {
    let agent = FakeAgent::start();
    let rules = rules_path();
    let url = agent.url();
    let app = App::start(&[
        ("WARDEN_APPSEC_ENABLED", "true"),
        ("WARDEN_APPSEC_RULES", rules.as_str()),
        ("WARDEN_APPSEC_MODE", "block"),
        ("WARDEN_APPSEC_TRUSTED_PROXIES", "127.0.0.1"),
        ("WARDEN_APPSEC_TRACE", "true"),
        ("DD_TRACE_AGENT_URL", url.as_str()),
        ("DD_SERVICE", "shop"),
        ("DD_ENV", "test"),
        ("DD_VERSION", "1.2.3"),
    ]);

    // An attack blocked in block mode (scanner user agent, `ua0-600-56x` blocks on its own),
    // with a W3C parent.
    let r = get(
        app.port,
        "/hello?name=x&api_key=s3cr3t",
        &[
            ("user-agent", "Arachni/v1.5"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-forwarded-for", "203.0.113.50"),
        ],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // A SQL injection reported (not blocked: its rule is not high-confidence) with Datadog ids.
    let r = get(
        app.port,
        "/users/1%27%20OR%201%3D1--",
        &[
            ("x-datadog-trace-id", "4242"),
            ("x-datadog-parent-id", "77"),
        ],
    );
    assert_eq!(r.status, 200);
    // Login failure and success; set_user.
    let r = post_form(
        app.port,
        "/login",
        "user=bob&password=nope",
        &[("x-forwarded-for", "198.51.100.9")],
    );
    assert_eq!(r.status, 401);
    let r = post_form(app.port, "/login", "user=alice&password=correct+horse", &[]);
    assert_eq!(r.status, 200);
    let r = get(app.port, "/me", &[("x-user", "carol")]);
    assert_eq!(r.status, 200);
    flush(&app);

    let puts: Vec<Received> = agent
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/v0.4/traces")
        .cloned()
        .collect();
    assert!(!puts.is_empty(), "no trace PUT received");
    let mut traces = 0;
    for p in &puts {
        assert_eq!(p.method, "PUT");
        assert_eq!(p.headers["content-type"], "application/msgpack");
        assert_eq!(p.headers["datadog-meta-lang"], "rust");
        let v: Value = rmp_serde::from_slice(&p.body).unwrap();
        let n = v.as_array().unwrap().len();
        assert_eq!(p.headers["x-datadog-trace-count"], n.to_string());
        traces += n;
    }
    let spans = agent.spans();
    assert_eq!(spans.len(), traces);
    assert_eq!(spans.len(), 5, "{spans:#?}");

    for s in &spans {
        assert_eq!(s["name"], "http.request");
        assert_eq!(s["type"], "web");
        assert_eq!(s["service"], "shop");
        assert_eq!(meta(s, "env"), Some("test"));
        assert_eq!(meta(s, "version"), Some("1.2.3"));
        assert_eq!(meta(s, "_dd.origin"), Some("appsec"));
        assert_eq!(s["metrics"]["_dd.appsec.enabled"], 1.0);
        assert_eq!(s["metrics"]["_sampling_priority_v1"], 2.0);
        assert!(s["metrics"]["_dd.appsec.waf.duration"].as_f64().unwrap() > 0.0);
        assert!(s["span_id"].as_u64().unwrap() > 0);
        assert!(s["trace_id"].as_u64().unwrap() > 0);
        assert!(s["start"].as_i64().unwrap() > 1_600_000_000_000_000_000);
        assert!(s["duration"].as_i64().unwrap() > 0);
    }
    let find = |resource: &str| {
        spans
            .iter()
            .find(|s| s["resource"] == resource)
            .unwrap_or_else(|| panic!("no span {resource}: {spans:#?}"))
    };

    let blocked = find("GET /hello");
    assert_eq!(meta(blocked, "appsec.event"), Some("true"));
    assert_eq!(meta(blocked, "appsec.blocked"), Some("true"));
    assert_eq!(meta(blocked, "http.status_code"), Some("403"));
    assert_eq!(meta(blocked, "http.method"), Some("GET"));
    assert_eq!(
        meta(blocked, "http.url"),
        Some("/hello?name=x&api_key=<redacted>")
    );
    assert_eq!(meta(blocked, "http.route"), Some("/hello"));
    assert_eq!(meta(blocked, "http.useragent"), Some("Arachni/v1.5"));
    assert_eq!(meta(blocked, "http.client_ip"), Some("203.0.113.50"));
    assert_eq!(blocked["trace_id"].as_u64(), Some(0x8448eb211c80319c));
    assert_eq!(blocked["parent_id"].as_u64(), Some(0xb7ad6b7169203331));
    assert_eq!(meta(blocked, "_dd.p.tid"), Some("0af7651916cd43dd"));
    let j: Value = serde_json::from_str(meta(blocked, "_dd.appsec.json").unwrap()).unwrap();
    let ids: Vec<&str> = j["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rule"]["id"].as_str().unwrap())
        .collect();
    assert!(ids.iter().any(|i| i.starts_with("ua0-600-")), "{ids:?}");
    assert!(j["triggers"][0]["rule_matches"].is_array());

    let sqli = find("GET /users/{id}");
    assert_eq!(meta(sqli, "appsec.event"), Some("true"));
    assert_eq!(meta(sqli, "appsec.blocked"), None);
    assert_eq!(sqli["trace_id"].as_u64(), Some(4242));
    assert_eq!(sqli["parent_id"].as_u64(), Some(77));
    assert!(
        meta(sqli, "_dd.appsec.json")
            .unwrap()
            .contains("sql_injection")
    );

    let logins: Vec<&Value> = spans
        .iter()
        .filter(|s| s["resource"] == "POST /login")
        .collect();
    assert_eq!(logins.len(), 2);
    let failure = logins
        .iter()
        .find(|s| meta(s, "appsec.events.users.login.failure.track").is_some())
        .unwrap();
    assert_eq!(
        meta(failure, "appsec.events.users.login.failure.track"),
        Some("true")
    );
    assert_eq!(
        meta(failure, "appsec.events.users.login.failure.usr.id"),
        Some("bob")
    );
    assert_eq!(
        meta(failure, "appsec.events.users.login.failure.usr.exists"),
        Some("false")
    );
    assert_eq!(
        meta(failure, "appsec.events.users.login.failure.method"),
        Some("password")
    );
    assert_eq!(meta(failure, "http.client_ip"), Some("198.51.100.9"));
    assert_eq!(meta(failure, "http.status_code"), Some("401"));
    assert_eq!(meta(failure, "usr.id"), None);
    assert_eq!(meta(failure, "appsec.event"), None);
    let success = logins
        .iter()
        .find(|s| meta(s, "appsec.events.users.login.success.track").is_some())
        .unwrap();
    assert_eq!(meta(success, "usr.id"), Some("alice"));
    assert_eq!(
        meta(success, "appsec.events.users.login.success.track"),
        Some("true")
    );
    assert_eq!(
        meta(success, "_dd.appsec.events.users.login.success.sdk"),
        Some("true")
    );
    assert_eq!(
        meta(success, "appsec.events.users.login.success.method"),
        Some("password")
    );
    let me = find("GET /me");
    assert_eq!(meta(me, "usr.id"), Some("carol"));
    assert_eq!(meta(me, "usr.session_id"), Some("sess-1"));

    // The recorder still sees every report (fan-out).
    assert_eq!(app.reports().len(), 5);
}

#[test]
fn denylists_and_ruleset_from_the_agent_apply_without_restart() {
    let agent = FakeAgent::start();
    let rules = rules_path();
    let url = agent.url();
    let app = App::start(&[
        ("WARDEN_APPSEC_ENABLED", "true"),
        ("WARDEN_APPSEC_RULES", rules.as_str()),
        ("WARDEN_APPSEC_MODE", "block"),
        ("WARDEN_APPSEC_TRUSTED_PROXIES", "127.0.0.1"),
        ("WARDEN_APPSEC_TRACE", "true"),
        ("DD_TRACE_AGENT_URL", url.as_str()),
        ("WARDEN_APPSEC_REMOTE_CONFIG_INTERVAL_MS", "200"),
    ]);
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(get(app.port, "/hello", &from("203.0.113.7")).status, 200);
    let polled = || {
        agent
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "/v0.7/warden/appsec" && r.method == "GET")
            .count()
    };
    wait_for("first poll", &|| polled() > 0);

    let future = 4_000_000_000u64;
    *agent.remote.lock().unwrap() = json!({
        "version": 2,
        "ruleset": null,
        "rules_data": [
            {"id": "blocked_ips", "type": "ip_with_expiration", "data": [
                {"value": "203.0.113.7", "expiration": future},
                {"value": "198.51.100.0/24", "expiration": 0},
                {"value": "192.0.2.1", "expiration": 1}
            ]},
            {"id": "blocked_users", "type": "data_with_expiration", "data": [
                {"value": "mallory", "expiration": future}
            ]}
        ]
    });
    wait_for("IP blocked", &|| {
        get(app.port, "/hello", &from("203.0.113.7")).status == 403
    });
    assert_eq!(get(app.port, "/hello", &from("198.51.100.20")).status, 403);
    // Already expired: not blocked.
    assert_eq!(get(app.port, "/hello", &from("192.0.2.1")).status, 200);
    assert_eq!(get(app.port, "/me", &[("x-user", "mallory")]).status, 403);
    assert_eq!(get(app.port, "/me", &[("x-user", "alice")]).status, 200);

    // A ruleset pushed by the operator replaces the built-in one: here a single custom rule.
    *agent.remote.lock().unwrap() = json!({
        "version": 3,
        "rules_data": [],
        "ruleset": {
            "version": "2.2",
            "metadata": {"rules_version": "custom-1"},
            "rules": [{
                "id": "custom-001", "name": "canary", "tags": {"type": "canary", "category": "attack_attempt"},
                "conditions": [{"operator": "phrase_match", "parameters": {
                    "inputs": [{"address": "server.request.query"}], "list": ["canary-4711"]}}],
                "on_match": ["block"]
            }]
        }
    });
    wait_for("unblocked", &|| {
        get(app.port, "/hello", &from("203.0.113.7")).status == 200
    });
    wait_for("custom rule", &|| {
        get(app.port, "/hello?q=canary-4711", &[]).status == 403
    });
    let r = app.reports();
    assert!(
        r.iter().any(|x| x["rules"][0] == "custom-001"),
        "no custom-001 report: {r:#?}"
    );
    // Withdrawn: back to the configured ruleset.
    *agent.remote.lock().unwrap() = json!({"version": 4, "rules_data": [], "ruleset": null});
    wait_for("custom rule withdrawn", &|| {
        get(app.port, "/hello?q=canary-4711", &[]).status == 200
    });
}

/// An agent that accepts connections and never answers: the sender thread is stuck in its
/// first request, the bounded queue fills, and further spans are dropped and counted while
/// `report` (the request path) keeps returning at once.
#[test]
fn a_stuck_agent_never_blocks_the_request_path() {
    let stuck = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", stuck.local_addr().unwrap());
    let sink = warden_appsec::TraceSink::new(warden_appsec::AgentConfig {
        url,
        service: "stuck".into(),
        ..Default::default()
    })
    .unwrap();
    let report = warden_appsec::RequestReport {
        method: "POST".into(),
        uri: "/login".into(),
        route: Some("/login".into()),
        client_ip: Some("198.51.100.1".parse().unwrap()),
        status: Some(401),
        blocked: None,
        events: Vec::new(),
        tags: [(
            "appsec.events.users.login.failure.track".to_string(),
            "true".to_string(),
        )]
        .into_iter()
        .collect(),
        attributes: serde_json::Map::new(),
        waf_duration_ns: 1_000,
        waf_timeouts: 0,
        trace: warden_appsec::TraceLink::default(),
        user_agent: None,
        start_unix_ns: 1_700_000_000_000_000_000,
        duration_ns: 1_000,
        rules_version: None,
    };
    use warden_appsec::EventSink;
    let n = 3 * warden_appsec::trace::QUEUE_CAPACITY;
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let one = Instant::now();
        sink.report(report.clone());
        slowest = slowest.max(one.elapsed());
    }
    let total = t.elapsed();
    use std::sync::atomic::Ordering::Relaxed;
    let st = sink.stats();
    let (queued, dropped) = (st.queued.load(Relaxed), st.dropped.load(Relaxed));
    assert_eq!(queued + dropped, n as u64);
    // At most the queue plus the batch the stuck sender holds got in; the rest was dropped.
    assert!(
        queued as usize <= warden_appsec::trace::QUEUE_CAPACITY + warden_appsec::trace::BATCH_SPANS,
        "queued {queued}"
    );
    assert!(
        dropped as usize
            >= n - warden_appsec::trace::QUEUE_CAPACITY - warden_appsec::trace::BATCH_SPANS
    );
    assert!(total < Duration::from_secs(2), "{n} reports took {total:?}");
    assert!(
        slowest < Duration::from_millis(100),
        "one report took {slowest:?}"
    );
    assert_eq!(st.sent.load(Relaxed), 0);
    drop(stuck);
}
