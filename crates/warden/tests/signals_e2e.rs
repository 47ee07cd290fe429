//! The issue #6 gate end to end, every piece real: attacks on `protected_app` (Warden's tower
//! layer, monitor mode, reporting traces) → `warden agent` (trace intake) → `warden server`
//! (security events → rules engine → signals) → the two curl | jq CI-gate forms, run
//! literally through bash with real curl and jq: 0 before the attack, the true count after,
//! and a signal within 10 s of the attack being reported.
#![allow(clippy::unwrap_used)]

#[path = "../../appsec/tests/common/mod.rs"]
mod common;
mod server_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use server_support::{ServerProc, client, create_key, free_tcp_port};

const GATE_GET: &str = r#"curl -s "$URL/api/v2/security_monitoring/signals" -H "DD-API-KEY: $K" -H "DD-APPLICATION-KEY: $A" -G --data-urlencode "filter[query]=env:staging service:my-service status:high" --data-urlencode "filter[from]=now-1h" | jq '.data | length'"#;
const GATE_POST: &str = r#"curl -s "$URL/api/v2/security_monitoring/signals" -H "DD-API-KEY: $K" -H "DD-APPLICATION-KEY: $A" -d '{"filter": {"query": "env:staging", "from": "now-1h"}}' | jq '[.data[] | select(.attributes.status == "high")] | length'"#;

fn ensure_protected_app() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let exe = std::env::current_exe().unwrap();
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("examples/protected_app");
        if bin.exists() {
            return;
        }
        let st = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "warden-appsec", "--example", "protected_app"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(st.success(), "cannot build protected_app");
    });
}

fn sh(server: &ServerProc, api: &str, app: &str, script: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("URL", server.url())
        .env("K", api)
        .env("A", app)
        .env("CURL_CA_BUNDLE", server.ca_file())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn signals(
    http: &reqwest::Client,
    server: &ServerProc,
    api: &str,
    app: &str,
    q: &str,
) -> Vec<Value> {
    let r = http
        .get(format!(
            "{}/api/v2/security_monitoring/signals",
            server.url()
        ))
        .query(&[
            ("filter[query]", q),
            ("filter[from]", "now-1h"),
            ("page[limit]", "1000"),
        ])
        .header("DD-API-KEY", api)
        .header("DD-APPLICATION-KEY", app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    v["data"].as_array().cloned().unwrap_or_default()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_on_protected_app_gate_ci_with_curl_and_jq() {
    ensure_protected_app();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = ServerProc::start(&dir, free_tcp_port(), &[]);
    let api = create_key(&dir, "api", "default");
    let app_key = create_key(&dir, "app", "default");
    let trace_port = free_tcp_port();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let cfg = support::write_config(
        tmp.path(),
        &format!(
            "api_key: {api}\nserver_url: {}\ntls_ca_file: {}\nhostname: signals-e2e\n\
             dogstatsd_port: 0\ncollect_host_metrics: false\ncmd_port: -1\n\
             run_path: {}\nforwarder_backoff_base: 0.5\nforwarder_backoff_max: 2\n\
             apm_config:\n  receiver_port: {trace_port}\n",
            server.url(),
            server.ca_file().display(),
            run.display(),
        ),
    );
    let agent = support::Agent::start(&cfg);
    agent.wait_started();
    let http = client(&server.ca_file());

    // Nothing happened yet: both gates say 0.
    assert_eq!(sh(&server, &api, &app_key, GATE_GET), "0");
    assert_eq!(sh(&server, &api, &app_key, GATE_POST), "0");

    let agent_url = format!("http://127.0.0.1:{trace_port}");
    let rules = common::rules_path();
    let app = common::App::start(&[
        ("WARDEN_APPSEC_ENABLED", "true"),
        ("WARDEN_APPSEC_RULES", rules.as_str()),
        ("WARDEN_APPSEC_MODE", "monitor"),
        // Debug build on a loaded CI box: the 5 ms default budget could drop events.
        ("WARDEN_APPSEC_WAF_TIMEOUT_US", "2000000"),
        ("WARDEN_APPSEC_TRUSTED_PROXIES", "127.0.0.1"),
        ("WARDEN_APPSEC_TRACE", "true"),
        ("DD_TRACE_AGENT_URL", agent_url.as_str()),
        ("DD_SERVICE", "my-service"),
        ("DD_ENV", "staging"),
    ]);
    // The attack scenario: 30 SQL injection / XSS probes from one client (behind the
    // trusted proxy), then credential stuffing (12 users from another).
    let payloads = [
        "1' OR '1'='1' --",
        "1 UNION SELECT username, password FROM users--",
        "<script>alert(1)</script>",
    ];
    let mut answered = 0;
    for i in 0..30 {
        let q: String = payloads[i % payloads.len()]
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let req = common::HttpReq {
            id: format!("attack-{i}"),
            method: "GET".into(),
            target: format!("/search?q={q}&n={i}"),
            headers: vec![("x-forwarded-for".into(), "203.0.113.50".into())],
            body: vec![],
        };
        if common::send(app.port, &req).is_ok() {
            answered += 1;
        }
    }
    assert_eq!(answered, 30);
    for i in 0..12 {
        let req = common::HttpReq::login(
            format!("login-{i}"),
            Some("198.51.100.77"),
            &format!("victim{i:02}"),
            &format!("wrong{i}"),
        );
        common::send(app.port, &req).unwrap();
    }
    flush(&app);
    let reported = Instant::now();
    // Both high signals within 10 s of the app reporting.
    let high = loop {
        let s = signals(
            &http,
            &server,
            &api,
            &app_key,
            "env:staging service:my-service status:high",
        )
        .await;
        if s.len() >= 2 {
            break s;
        }
        let all: Vec<String> = signals(&http, &server, &api, &app_key, "")
            .await
            .iter()
            .map(|s| {
                format!(
                    "{} {} {}",
                    s["attributes"]["attributes"]["workflow"]["rule"]["id"],
                    s["attributes"]["status"],
                    s["attributes"]["attributes"]["workflow"]["events_matched"]
                )
            })
            .collect();
        assert!(
            reported.elapsed() < Duration::from_secs(10),
            "{} high signals after 10 s (all: {all:?}): {s:#?}\nagent log:\n{}\nserver log:\n{}",
            s.len(),
            agent.log_text(),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut rules: Vec<&str> = high
        .iter()
        .map(|s| {
            s["attributes"]["attributes"]["workflow"]["rule"]["id"]
                .as_str()
                .unwrap()
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        ["warden-attack-from-ip", "warden-credential-stuffing"]
    );
    // Let late events settle, then the gates must equal the API's truth.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let truth_get = signals(
        &http,
        &server,
        &api,
        &app_key,
        "env:staging service:my-service status:high",
    )
    .await
    .len();
    let truth_post = signals(&http, &server, &api, &app_key, "env:staging")
        .await
        .iter()
        .filter(|s| s["attributes"]["status"] == "high")
        .count();
    assert_eq!(sh(&server, &api, &app_key, GATE_GET), truth_get.to_string());
    assert_eq!(
        sh(&server, &api, &app_key, GATE_POST),
        truth_post.to_string()
    );
    assert!(truth_get >= 2 && truth_post >= truth_get);
}
