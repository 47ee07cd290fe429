//! A real Datadog tracer against Warden: a Flask app run with `ddtrace` (pip, AppSec on,
//! libddwaf from its wheel) reports to the real `warden agent` trace intake, which forwards to
//! the real `warden server`. An attack (scanner user agent + XSS in the query) must come out
//! as a SecurityEvent with the activities ddtrace's WAF assigned; a normal request's trace
//! must reach the agent and the server and not be stored.
#![allow(clippy::unwrap_used)]

mod traces_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use traces_support::*;

const APP: &str = r#"
import ddtrace.auto  # noqa: F401  (what ddtrace-run does)
import os
from flask import Flask, request

app = Flask(__name__)

@app.route("/search")
def search():
    return "results for " + request.args.get("q", "")

@app.route("/")
def index():
    return "ok"

app.run(host="127.0.0.1", port=int(os.environ["PORT"]), use_reloader=False)
"#;

/// The test venv's interpreter (`scripts/test-deps` installs ddtrace and flask there).
fn python() -> String {
    if let Ok(p) = std::env::var("WARDEN_TEST_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/pyenv/bin/python");
    assert!(
        std::path::Path::new(venv).exists(),
        "no test Python: run scripts/test-deps (installs ddtrace and flask)"
    );
    venv.to_owned()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddtrace_flask_appsec_events_reach_the_server() {
    let stack = Stack::start();
    let agent = stack.agent("");
    let dir = stack.tmp.path().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), APP).unwrap();
    let port = free_tcp_port();
    let log = dir.join("app.log");
    let app = Killed(
        Command::new(python())
            .arg(dir.join("app.py"))
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("DD_APPSEC_ENABLED", "true")
            .env("DD_TRACE_AGENT_URL", agent.url())
            .env("DD_SERVICE", "flaskshop")
            .env("DD_ENV", "ddtrace-test")
            .env("DD_REMOTE_CONFIGURATION_ENABLED", "false")
            .env("DD_TRACE_WRITER_INTERVAL_SECONDS", "0.5")
            .env_remove("DD_AGENT_HOST")
            .env_remove("DD_API_KEY")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let app_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{base}/")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flask app did not start:\n{}",
            app_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The attack: a scanner's user agent and a script in the query (monitor mode: served).
    let r = http
        .get(format!("{base}/search"))
        .query(&[("q", "<script>alert(1)</script>")])
        .header("User-Agent", "Arachni/v1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A normal request.
    let r = http
        .get(format!("{base}/search"))
        .query(&[("q", "shoes")])
        .header("User-Agent", "Mozilla/5.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let tls = traces_support::client(&stack.server.ca_file());
    let events = stack
        .wait_events(&tls, "service:flaskshop", 25, |ev| !ev.is_empty())
        .await;
    // Give a late duplicate or a wrongly kept benign span a chance to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = {
        let again = stack.events(&tls, "service:flaskshop").await;
        if again.len() >= events.len() {
            again
        } else {
            events
        }
    };
    assert_eq!(
        events.len(),
        1,
        "one security span (the attack), none for the normal request: {events:#?}"
    );
    let e = &events[0];
    let activity: Vec<&str> = e["activity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        activity.contains(&"attack_attempt.attack_tool")
            || activity.contains(&"attack_attempt.security_scanner"),
        "scanner rule not reported: {activity:?}\n{e:#}"
    );
    assert!(
        activity.contains(&"attack_attempt.xss"),
        "XSS rule not reported: {activity:?}\n{e:#}"
    );
    assert_eq!(e["env"], "ddtrace-test");
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["http_method"], "GET");
    assert_eq!(e["http_status"], 200);
    assert_eq!(e["blocked"], false);
    assert!(e["http_url"].as_str().unwrap().contains("/search"), "{e:#}");
    assert_eq!(e["attributes"]["appsec.event"], "true");
    assert_eq!(
        e["attributes"]["http.request.headers.user-agent"],
        "Arachni/v1.0"
    );
    // The triggers carry the WAF's own rule ids (ddtrace sends them in meta_struct).
    let rule_ids: Vec<&str> = e["triggers"]["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["rule"]["id"].as_str())
        .collect();
    assert!(rule_ids.len() >= 2, "{rule_ids:?}");

    // The tracer's traces (both requests, with all their child spans) reached the agent and
    // the server, which logged its first payload for this org.
    let alog = agent.log_text();
    assert!(
        alog.contains("trace intake: first payload from this tracer") && alog.contains("python"),
        "{alog}"
    );
    let slog = stack.server.log_text();
    assert!(slog.contains("first trace payload for this org"), "{slog}");
    assert!(!alog.contains("ERROR"), "{alog}");
    drop(app);
}
