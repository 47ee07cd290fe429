//! The end to end, every piece real: attacks on `protected_app` (Warden's tower layer)
//! → `warden agent` (trace intake) → `warden server` (security events, detection rule) → a
//! signal within 10 s → PagerDuty Events v2 trigger, Slack message and webhook with custom
//! headers at local receivers that check the spec → not acknowledged: escalation step 2 →
//! `warden signals ack ID` (the CLI): PagerDuty acknowledge, escalation stops →
//! resolve through the alerting API: PagerDuty resolve with the same dedup_key, signal archived.
#![allow(clippy::unwrap_used)]

mod alerting_support;
#[path = "../../appsec/tests/common/mod.rs"]
mod common;
mod server_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use alerting_support::*;
use serde_json::json;
use server_support::{BIN, free_tcp_port};

const ROUTING_KEY: &str = "fedcba9876543210fedcba9876543210";

/// Builds the `protected_app` example when this crate's tests run alone.
fn ensure_protected_app() {
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
}

/// `warden signals <args> ID` with the server's URL, CA and keys.
fn signals_cli(a: &Alerting, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .arg("signals")
        .args(args)
        .arg("--url")
        .arg(a.server.url())
        .arg("--ca-file")
        .arg(a.server.ca_file())
        .env("DD_API_KEY", &a.api)
        .env("DD_APP_KEY", &a.app)
        .env_remove("WARDEN_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "warden signals {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_signal_pages_escalates_and_is_acknowledged_and_resolved() {
    ensure_protected_app();
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::start();
    let a = start(&tmp.path().join("d"), &fake.url("/enqueue"));

    // Channels, a policy, and a detection rule that notifies them.
    a.ok(
        "POST",
        "/api/v2/warden/integrations/pagerduty/services",
        Some(json!({"service_name": "Sec", "service_key": ROUTING_KEY})),
    )
    .await;
    for (name, path) in [("sec", "/slack/sec"), ("sec-l1", "/slack/l1")] {
        a.ok(
            "POST",
            "/api/v2/warden/integrations/slack/channels",
            Some(json!({"name": name, "url": fake.url(path)})),
        )
        .await;
    }
    for (name, path, headers) in [
        (
            "siem",
            "/siem",
            Some("{\"Authorization\": \"Bearer siem-token-123\"}"),
        ),
        ("l2", "/l2", None),
    ] {
        a.ok(
            "POST",
            "/api/v1/integration/webhooks/configuration/webhooks",
            Some(json!({"name": name, "url": fake.url(path), "custom_headers": headers,
                "payload": "{\"signal\":\"$SECURITY_SIGNAL_ID\",\"rule\":\"$SECURITY_RULE_NAME\",\"severity\":\"$SECURITY_SIGNAL_SEVERITY\",\"title\":\"$EVENT_TITLE\",\"transition\":\"$ALERT_TRANSITION\",\"attributes\":$SECURITY_SIGNAL_ATTRIBUTES}"})),
        )
        .await;
    }
    a.ok(
        "POST",
        "/api/v2/warden/escalation_policies",
        Some(json!({"name": "sec", "repeat": 1, "steps": [
            {"delay_seconds": 3, "targets": ["@slack-sec-l1"]},
            {"delay_seconds": 3, "targets": ["@webhook-l2"]}]})),
    )
    .await;
    let rule = a
        .ok(
            "POST",
            "/api/v2/security_monitoring/rules",
            Some(json!({
                "name": "E2E attacks on protected-app", "type": "application_security",
                "isEnabled": true,
                "queries": [{"query": "@appsec.security_activity:attack_attempt.* service:protected-app",
                             "aggregation": "count", "groupByFields": ["@http.client_ip"],
                             "distinctFields": [], "name": "attacks"}],
                "cases": [{"name": "attacked", "status": "high", "condition": "attacks >= 5",
                           "notifications": ["@pagerduty-Sec", "@slack-sec", "@webhook-siem"]}],
                "options": {"evaluationWindow": 300, "keepAlive": 3600, "maxSignalDuration": 86400,
                            "detectionMethod": "threshold"},
                "message": "Attacks on protected-app @oncall-sec",
                "tags": ["team:sec"]
            })),
        )
        .await;
    let rule_id = rule["id"].as_str().unwrap().to_owned();

    // The agent with its trace intake, and the protected app reporting to it.
    let trace_port = free_tcp_port();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let cfg = support::write_config(
        tmp.path(),
        &format!(
            "api_key: {}\nserver_url: {}\ntls_ca_file: {}\nhostname: alerting-e2e\n\
             dogstatsd_port: 0\ncollect_host_metrics: false\ncmd_port: -1\n\
             run_path: {}\nforwarder_backoff_base: 0.5\nforwarder_backoff_max: 2\n\
             apm_config:\n  receiver_port: {trace_port}\n",
            a.api,
            a.server.url(),
            a.server.ca_file().display(),
            run.display(),
        ),
    );
    let agent = support::Agent::start(&cfg);
    agent.wait_started();
    let rules = common::rules_path();
    let agent_url = format!("http://127.0.0.1:{trace_port}");
    let app = common::App::start(&[
        ("WARDEN_APPSEC_ENABLED", "true"),
        ("WARDEN_APPSEC_RULES", rules.as_str()),
        ("WARDEN_APPSEC_MODE", "monitor"),
        // Debug build on a loaded CI box: the 5 ms default budget could drop events.
        ("WARDEN_APPSEC_WAF_TIMEOUT_US", "2000000"),
        ("WARDEN_APPSEC_TRACE", "true"),
        ("DD_TRACE_AGENT_URL", agent_url.as_str()),
        ("DD_SERVICE", "protected-app"),
        ("DD_ENV", "staging"),
    ]);

    // Attacks the WAF flags (CRS regression cases libddwaf flags too).
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
        .filter(|r| r.method == "GET")
        .take(20)
        .collect();
    assert!(attacks.len() >= 10);
    for req in &attacks {
        common::send(app.port, req).unwrap();
    }
    let flush = common::HttpReq {
        id: "flush".into(),
        method: "POST".into(),
        target: "/__flush".into(),
        headers: vec![],
        body: vec![],
    };
    common::send(app.port, &flush).unwrap();
    let attacked_at = Instant::now();

    // A signal of the rule within 10 s.
    let signal = loop {
        let (s, v) = a
            .call(
                "GET",
                &format!(
                    "/api/v2/security_monitoring/signals?filter%5Bquery%5D=rule_id%3A{rule_id}&filter%5Bfrom%5D=now-1h"
                ),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        if let Some(sig) = v["data"].as_array().and_then(|d| d.first()).cloned() {
            break sig;
        }
        assert!(
            attacked_at.elapsed() < Duration::from_secs(10),
            "no signal within 10 s; agent log:\n{}\nserver log:\n{}",
            agent.log_text(),
            a.server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let signal_after = attacked_at.elapsed();
    let id = signal["id"].as_str().unwrap().to_owned();

    // PagerDuty, Slack, the webhook with its custom header, and escalation step 1.
    let pd = fake.wait("/enqueue", 1, "PagerDuty trigger").await;
    let paged_after = attacked_at.elapsed();
    let ev = pd[0].json();
    check_pagerduty(&ev).unwrap_or_else(|e| panic!("PagerDuty schema: {e}: {ev}"));
    assert_eq!(ev["event_action"], "trigger");
    assert_eq!(ev["routing_key"], ROUTING_KEY);
    assert_eq!(ev["dedup_key"], id.as_str());
    assert_eq!(
        ev["payload"]["severity"], "error",
        "signal high → PagerDuty error"
    );
    assert_eq!(ev["payload"]["class"], "security_signal");
    let slack = fake.wait("/slack/sec", 1, "Slack").await;
    check_slack(&slack[0].json()).unwrap();
    let siem = fake.wait("/siem", 1, "webhook").await;
    assert_eq!(
        siem[0].header("authorization"),
        Some("Bearer siem-token-123")
    );
    let w = siem[0].json();
    assert_eq!(w["signal"], id.as_str());
    assert_eq!(w["rule"], "E2E attacks on protected-app");
    assert_eq!(w["transition"], "Triggered");
    assert!(w["attributes"].is_object(), "{w}");
    fake.wait("/slack/l1", 1, "escalation step 1").await;

    // Nobody acknowledges: step 2.
    fake.wait("/l2", 1, "escalation step 2").await;

    // `warden signals ack ID`: PagerDuty acknowledge, escalation stops.
    let out = signals_cli(&a, &["ack", &id]);
    assert!(out.contains("under_review"), "{out}");
    let pd = fake.wait("/enqueue", 2, "PagerDuty acknowledge").await;
    let ack = pd[1].json();
    check_pagerduty(&ack).unwrap();
    assert_eq!(ack["event_action"], "acknowledge");
    assert_eq!(ack["dedup_key"], id.as_str());
    let alert = a
        .ok("GET", &format!("/api/v2/warden/alerts/{id}"), None)
        .await;
    assert_eq!(alert["status"], "acknowledged", "{alert}");
    tokio::time::sleep(Duration::from_secs(7)).await;
    let escalated = |p: &str| {
        fake.on(p)
            .iter()
            .filter(|r| r.body.contains("Escalated"))
            .count()
    };
    assert_eq!(escalated("/slack/l1"), 0, "step 1 looped after the ack");
    assert_eq!(escalated("/l2"), 1, "step 2 repeated after the ack");

    // Resolved through the alerting API: PagerDuty resolve with the same dedup key, and the
    // signal's triage follows (archived).
    let resolved = a
        .ok("POST", &format!("/api/v2/warden/alerts/{id}/resolve"), None)
        .await;
    assert_eq!(resolved["status"], "resolved");
    let (s, sig) = a
        .call(
            "GET",
            &format!("/api/v2/security_monitoring/signals/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{sig}");
    assert!(
        sig.to_string().contains("\"state\":\"archived\""),
        "signal not archived: {sig}"
    );
    let pd = fake.wait("/enqueue", 3, "PagerDuty resolve").await;
    let res = pd[2].json();
    check_pagerduty(&res).unwrap();
    assert_eq!(res["event_action"], "resolve");
    assert_eq!(res["dedup_key"], id.as_str());
    assert_eq!(res["routing_key"], ROUTING_KEY);
    let log = a.deliveries(&id).await;
    assert!(log.iter().all(|d| d["status"] == "delivered"), "{log:?}");
    eprintln!(
        "attack → signal visible: {} ms, → PagerDuty trigger received: {} ms",
        signal_after.as_millis(),
        paged_after.as_millis()
    );
}
