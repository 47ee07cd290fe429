//! The agent GUI in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `playwright-core` (`tests/gui/gui_flow.js`; both installed by `scripts/test-deps`).
//!
//! Shown: the single-use link from `warden agent gui` signs in (HttpOnly, Secure,
//! SameSite=Strict cookie; status page; `no-store` and CSP headers); the "Run now" form works;
//! a POST without or with a wrong CSRF token and a cross-site form POST are refused with 403
//! and run nothing (the check's run counter proves it); a reused link is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_api_common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_api_common::*;
use support::{Agent, write_config};

fn node_modules() -> PathBuf {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/node/node_modules"
    ));
    assert!(
        p.join("playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "the GUI test needs chromium and playwright-core: run scripts/test-deps"
    );
    p.to_owned()
}

fn runs_of(cfg: &Path, name: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&cli_ok(cfg, &["status", "--json"])).unwrap();
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["runs"].as_u64())
        .unwrap_or(0)
}

#[test]
fn gui_signs_in_with_a_single_use_link_and_refuses_csrf() {
    let modules = node_modules();
    let dir = tempfile::tempdir().unwrap();
    let d = checks_d(dir.path(), &[("okcheck", "#!/bin/sh\necho 'OK - fine'\n")]);
    let cfg = write_config(
        dir.path(),
        &format!(
            "api_key: 0123456789abcdef0123456789abcdef\n\
             server_url: https://127.0.0.1:1\n\
             dogstatsd_port: 0\n\
             collect_host_metrics: false\n\
             cmd_port: 0\n\
             gui_port: 0\n\
             check_interval: 3600\n\
             checks_d: {}\n",
            d.display()
        ),
    );
    let agent = Agent::start(&cfg);
    agent.wait_started();
    // The scheduler runs each check once at start; later runs come only from the GUI.
    wait_for(20, "the first run of okcheck", || {
        (runs_of(&cfg, "okcheck") == 1).then_some(())
    });

    let out = cli_ok(&cfg, &["gui"]);
    let url = out
        .lines()
        .find(|l| l.starts_with("https://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no link in {out}"))
        .to_owned();
    assert!(url.contains("/auth?intent="), "{url}");
    let intent = url.split("intent=").nth(1).unwrap();
    assert_eq!(intent.len(), 64, "32 random bytes, hex");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gui/gui_flow.js");
    let run = Command::new("node")
        .arg(script)
        .arg(&url)
        .arg("okcheck")
        .env("NODE_PATH", &modules)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "browser script failed:\n{stdout}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&run.stderr),
        agent.log_text()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();

    // Sign-in: redirected to the status page, session cookie with every protection.
    assert_eq!(v["signin"]["status"], 200, "{v}");
    assert_eq!(v["signin"]["path"], "/", "{v}");
    assert_eq!(v["signin"]["shows_status"], true, "{v}");
    assert_eq!(v["signin"]["cache_control"], "no-store", "{v}");
    let csp = v["signin"]["csp"].as_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(v["tls"]["subject"], "Warden Agent local API", "{v}");
    assert_eq!(
        v["tls"]["issuer"], "Warden Agent local API",
        "self-signed: {v}"
    );
    assert_eq!(v["tls"]["protocol"], "TLS 1.3", "{v}");
    assert_eq!(v["cookie"]["httpOnly"], true, "{v}");
    assert_eq!(v["cookie"]["secure"], true, "{v}");
    assert_eq!(v["cookie"]["sameSite"], "Strict", "{v}");
    assert_eq!(v["cookie"]["length"], 64, "{v}");
    let expires_in = v["cookie"]["expires_in"].as_i64().unwrap();
    assert!((3000..=3600).contains(&expires_in), "{v}");
    assert_eq!(v["cookie_visible_to_js"], false, "{v}");

    // The legitimate form ran the check; every forged POST was refused.
    assert_eq!(
        v["run_now"]["status"],
        200,
        "{v}\nagent log:\n{}",
        agent.log_text()
    );
    assert_eq!(v["run_now"]["ran"], true, "{v}");
    assert_eq!(v["post_without_csrf"], 403, "{v}");
    assert_eq!(v["post_with_wrong_csrf"], 403, "{v}");
    assert_eq!(v["script_fetch_blocked"], true, "{v}");
    assert_eq!(v["cross_site_post"]["status"], 403, "{v}");
    assert_eq!(v["cross_site_post"]["body_refused"], true, "{v}");
    assert_eq!(
        runs_of(&cfg, "okcheck"),
        2,
        "only the start-up run and the legitimate GUI run happened"
    );

    assert_eq!(v["logs"]["status"], 200, "{v}");
    assert_eq!(v["logs"]["has_session_line"], true, "{v}");

    // The link works once.
    assert_eq!(v["reused_intent"]["status"], 403, "{v}");
    assert_eq!(v["reused_intent"]["cookies"], 0, "{v}");
    assert_eq!(v["anonymous_status_page"], 401, "{v}");

    let _ = agent.stop();
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("GUI refused a cross-site POST"), "{log}");
    assert!(
        log.contains("GUI refused a POST without a valid CSRF token"),
        "{log}"
    );
    assert!(!log.contains(intent), "the intent token is not logged");
}

#[test]
fn gui_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "api_key: 0123456789abcdef0123456789abcdef\n\
         server_url: https://127.0.0.1:1\n\
         dogstatsd_port: 0\n\
         collect_host_metrics: false\n\
         cmd_port: 0\n",
    );
    let agent = Agent::start(&cfg);
    agent.wait_started();
    let out = cli(&cfg, &["gui"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the GUI is disabled (gui_port: -1)"), "{err}");
    assert!(!agent.log_text().contains("agent GUI listening"));
}
