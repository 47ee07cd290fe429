//! Planted secrets never leave the agent through the channels a human reads: its log, `warden
//! agent status`, `config`, `check`, and the flare archive (extracted with the system `tar`).
//!
//! The secrets — an API key, a password in a DSN, a bearer token, a Warden key, a private key
//! block and a `password=` pair — are planted in the configuration (tags, an HTTP check URL)
//! and printed by two `checks_d` scripts: one that succeeds (its message holds them) and one
//! that fails with them on stderr (so they reach the log through the "check run failed"
//! warning). The API key itself comes from a secrets backend (`ENC[intake_key]`). Each output is also checked to actually contain the place where the secret was,
//! masked — an empty output would pass the negative checks trivially.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_api_common;
mod support;

use std::path::Path;

use agent_api_common::*;
use support::{Agent, write_config};
use warden_testkit::Receiver;

const API_KEY: &str = "5f3c9a7e1b2d4f6089abcdef01234567";
const DB_PASSWORD: &str = "Pg-S3cret-Pw-7781";
const BEARER: &str = "6f1d2c3b4a5e6f7081928374655647382910abcdef";
const WARDEN_KEY: &str = "wdn_api_Q2xZ8mV4nR7tK1pL9sD3fG6hJ0wE5yU2";
const PASSWORD: &str = "hunter2-Zz9-pass";
const PEM_1: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj";
const PEM_2: &str = "MZ5s3LIxhQW3vSwDE2p1pG3fJoHhd8Z1UcQ2Bu5Xb9KkYEL0AQb4jXG0ZR1Fb5Ut";

/// Substrings that must never appear. Rules that keep the last 4-5 characters of a key (to
/// tell keys apart) are allowed to, so the tails are not part of the needles.
fn needles(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("api key", API_KEY[..28].to_owned()),
        ("DSN password", DB_PASSWORD.to_owned()),
        ("bearer token", BEARER[..36].to_owned()),
        ("warden key", WARDEN_KEY[8..32].to_owned()),
        ("password", PASSWORD.to_owned()),
        ("private key line 1", PEM_1[..40].to_owned()),
        ("private key line 2", PEM_2[..40].to_owned()),
        ("local API token", token[..60].to_owned()),
    ]
}

fn pem_block(sep: &str) -> String {
    format!("-----BEGIN PRIVATE KEY-----{sep}{PEM_1}{sep}{PEM_2}{sep}-----END PRIVATE KEY-----")
}

fn config(dir: &Path, receiver: &Receiver, checks_d: &Path) -> String {
    let pem = pem_block("\n    ");
    format!(
        "api_key: ENC[intake_key]\n\
         secret_backend_command: {backend}\n\
         server_url: {url}\n\
         tls_ca_file: {ca}\n\
         dogstatsd_port: 0\n\
         collect_host_metrics: false\n\
         cmd_port: 0\n\
         gui_port: -1\n\
         check_interval: 1\n\
         check_timeout: 5\n\
         checks_d: {checks_d}\n\
         run_path: {run}\n\
         tags:\n\
         \x20 - \"env:test\"\n\
         \x20 - \"auth:Bearer {BEARER}\"\n\
         \x20 - \"dsn:postgres://app:{DB_PASSWORD}@db.internal:5432/app\"\n\
         \x20 - \"key:{WARDEN_KEY}\"\n\
         \x20 - \"api_key={API_KEY}\"\n\
         \x20 - |\n    {pem}\n\
         checks:\n\
         \x20 http:\n\
         \x20   - name: dsn_http\n\
         \x20     url: \"http://app:{DB_PASSWORD}@127.0.0.1:1/health\"\n\
         \x20     interval: 1\n\
         \x20     timeout: 2\n\
         \x20     tags: [\"password={PASSWORD}\"]\n",
        url = receiver.url(),
        ca = receiver.ca_file().display(),
        checks_d = checks_d.display(),
        run = dir.join("run").display(),
        backend = backend(dir).display(),
    )
}

/// A secrets backend (Datadog protocol) that resolves `intake_key` to the API key and counts
/// its runs in `backend.runs`: the CLI must not run it just to find the agent.
fn backend(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("backend.sh");
    if !p.exists() {
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\ncat >/dev/null\necho run >> {runs}\n\
                 printf '{{\"intake_key\":{{\"value\":\"{API_KEY}\",\"error\":null}}}}'\n",
                runs = dir.join("backend.runs").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    p
}

fn scripts() -> Vec<(&'static str, String)> {
    let all = format!(
        "login failed for postgres://app:{DB_PASSWORD}@db.internal:5432/app api_key={API_KEY} \
         Authorization: Bearer {BEARER} key {WARDEN_KEY} password={PASSWORD}"
    );
    let json = serde_json::json!({
        "service_checks": [{
            "name": "leaky.conn",
            "status": 2,
            "message": format!("{all}\n{}", pem_block("\n")),
            "tags": [format!("token:Bearer {BEARER}")],
        }],
        "metrics": [{
            "name": "leaky.value",
            "value": 1,
            "tags": [format!("dsn:postgres://app:{DB_PASSWORD}@db.internal:5432/app")],
        }],
    });
    vec![
        (
            "leaky_json",
            format!("#!/bin/sh\ncat <<'EOF'\n{json}\nEOF\n"),
        ),
        (
            "leaky_fail",
            format!(
                "#!/bin/sh\necho '{all} {}' >&2\necho '{}' >&2\nexit 7\n",
                pem_block(" "),
                pem_block("\n")
            ),
        ),
    ]
}

#[test]
fn planted_secrets_never_reach_logs_status_config_or_flare() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = rt.block_on(Receiver::start(API_KEY));
    let dir = tempfile::tempdir().unwrap();
    let scripts = scripts();
    let refs: Vec<(&str, &str)> = scripts.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let d = checks_d(dir.path(), &refs);
    let cfg = write_config(dir.path(), &config(dir.path(), &receiver, &d));
    let agent = Agent::start(&cfg);
    agent.wait_started();

    // Every check has run (and the failing one has failed) at least once.
    let status_json = wait_for(30, "all checks to run", || {
        let out = cli(&cfg, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let checks = v["checks"].as_array()?;
        let ran = |n: &str| {
            checks
                .iter()
                .any(|c| c["name"] == n && c["runs"].as_u64().unwrap_or(0) >= 1)
        };
        (ran("leaky_json")
            && ran("leaky_fail")
            && ran("dsn_http")
            && v["check_errors"].as_u64()? >= 1)
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    // The intake received the check runs: the agent works normally with all this in place.
    // Payload data is not scrubbed (it is the user's data, sent over TLS to their own server):
    // the secrets really were emitted, so the checks below are not vacuous.
    assert!(
        rt.block_on(receiver.wait_for(std::time::Duration::from_secs(20), |s| {
            s.check_runs
                .iter()
                .any(|c| c.to_string().contains(DB_PASSWORD) && c.to_string().contains(PEM_1))
        }))
    );

    let mut outputs: Vec<(String, String)> = vec![("status --json".into(), status_json)];
    outputs.push(("status".into(), cli_ok(&cfg, &["status"])));
    outputs.push(("config".into(), cli_ok(&cfg, &["config"])));
    outputs.push((
        "check leaky_json".into(),
        cli_ok(&cfg, &["check", "leaky_json"]),
    ));
    outputs.push((
        "check leaky_json --json".into(),
        cli_ok(&cfg, &["check", "leaky_json", "--json"]),
    ));
    outputs.push((
        "check dsn_http --json".into(),
        cli_ok(&cfg, &["check", "dsn_http", "--json"]),
    ));
    let failed = cli(&cfg, &["check", "leaky_fail"]);
    assert_eq!(failed.status.code(), Some(1), "a failed run exits 1");
    outputs.push((
        "check leaky_fail".into(),
        String::from_utf8_lossy(&failed.stdout).into_owned(),
    ));

    // The flare, extracted by the system tar (which also validates the archive format).
    let flare = dir.path().join("flare.tar.gz");
    let msg = cli_ok(&cfg, &["flare", "--output", flare.to_str().unwrap()]);
    assert!(msg.contains("flare written to"), "{msg}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&flare).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the flare is private to its creator");
    let x = dir.path().join("flare");
    std::fs::create_dir(&x).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&flare)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(tar.success());
    let mut flare_files = Vec::new();
    collect_files(&x, &mut flare_files);
    let names: Vec<String> = flare_files.iter().map(|(n, _)| n.clone()).collect();
    for want in [
        "status.json",
        "config.yaml",
        "logs/agent.log",
        "checks_d.txt",
        "version.txt",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(want)),
            "{want} in flare: {names:?}"
        );
    }
    let token = std::fs::read_to_string(dir.path().join("auth_token")).unwrap();
    let backend_runs = std::fs::read_to_string(dir.path().join("backend.runs")).unwrap();
    assert_eq!(
        backend_runs.lines().count(),
        1,
        "only the agent ran the secrets backend, none of the CLI commands"
    );
    let _ = agent.stop();
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    outputs.push(("agent log".into(), log.clone()));
    for (n, text) in flare_files {
        outputs.push((format!("flare:{n}"), text));
    }

    // The places where secrets were are present, masked.
    let get = |name: &str| {
        outputs
            .iter()
            .find(|(n, _)| n == name || n.ends_with(name))
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("no output {name}"))
    };
    assert!(log.contains("check run failed"), "{log}");
    assert!(log.contains("leaky_fail") && log.contains("exited with code 7"));
    let log_line = log
        .lines()
        .find(|l| l.contains("check run failed"))
        .unwrap();
    assert!(
        log_line.contains("login failed for postgres://app:********@"),
        "{log_line}"
    );
    let flare_log = get("logs/agent.log");
    assert!(flare_log.contains("check run failed"), "{flare_log}");
    let config = get("config");
    assert!(
        config.contains("dsn:postgres://app:********@db.internal"),
        "{config}"
    );
    assert!(config.contains("dsn_http"), "{config}");
    let check = get("check leaky_json");
    assert!(check.contains("leaky.conn CRITICAL"), "{check}");
    assert!(
        check.contains("login failed for postgres://app:********@"),
        "{check}"
    );
    let human = get("status");
    for want in [
        "uptime:",
        "Forwarder",
        "DogStatsD",
        "leaky_fail [user]: UNKNOWN",
        "error: exited with code 7",
        "leaky_json [user]: OK",
    ] {
        assert!(human.contains(want), "{want} in status:\n{human}");
    }
    let status = get("status --json");
    assert!(status.contains("exited with code 7"), "{status}");
    assert!(get("status.json").contains("leaky_fail"));

    let mut leaks = Vec::new();
    for (what, needle) in needles(token.trim()) {
        for (name, text) in &outputs {
            if text.contains(&needle) {
                leaks.push(format!("{what} ({needle}) in {name}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets leaked:\n{}\n\noutputs:\n{}",
        leaks.join("\n"),
        outputs
            .iter()
            .map(|(n, t)| format!("=== {n}\n{t}"))
            .collect::<String>()
    );
}

fn collect_files(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect_files(&p, out);
        } else {
            let name = p.to_string_lossy().into_owned();
            out.push((
                name,
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
            ));
        }
    }
}
