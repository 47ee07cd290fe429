//! The local API's access control, on the real `warden` binary: every route in the API's own
//! route table refuses requests without the token (401 + `WWW-Authenticate`) or with a wrong
//! one (403), the token file is created 0600, bad token files and non-loopback addresses stop
//! the agent, and the CLI refuses a wrong token or an impostor certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_api_common;
mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use agent_api_common::*;
use support::{Agent, write_config};
use warden_agent::api::ROUTES;

fn base_config(extra: &str) -> String {
    format!(
        "api_key: 0123456789abcdef0123456789abcdef\n\
         server_url: https://127.0.0.1:1\n\
         dogstatsd_port: 0\n\
         collect_host_metrics: false\n\
         cmd_port: 0\n\
         gui_port: 0\n\
         {extra}"
    )
}

#[test]
fn every_route_requires_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = checks_d(dir.path(), &[("okcheck", "#!/bin/sh\necho 'OK - fine'\n")]);
    let cfg = write_config(
        dir.path(),
        &base_config(&format!("checks_d: {}\n", d.display())),
    );
    let agent = Agent::start(&cfg);
    agent.wait_started();

    // The token file: created at start, 64 hex characters, 0600, owned by the agent's user.
    let token_path = dir.path().join("auth_token");
    let meta = std::fs::metadata(&token_path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), std::fs::metadata("/proc/self").unwrap().uid());
    let files = ApiFiles::read(dir.path());
    assert_eq!(files.token.len(), 64);
    assert!(files.token.bytes().all(|b| b.is_ascii_hexdigit()));

    let client = files.client();
    let rt = runtime();
    // Same length, last character changed: a constant-time compare must still say no.
    let mut near = files.token.clone().into_bytes();
    near[63] = if near[63] == b'0' { b'1' } else { b'0' };
    let near = String::from_utf8(near).unwrap();
    let send = |method: &str, path: &str, auth: Option<String>| {
        let mut req = client.request(method.parse().unwrap(), format!("{}{path}", files.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if method == "POST" {
            req = req
                .header("content-type", "application/json")
                .body(r#"{"name":"okcheck"}"#);
        }
        let resp = rt
            .block_on(async { req.send().await })
            .expect("request reaches the agent");
        let www = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        (resp.status().as_u16(), www)
    };

    assert!(ROUTES.len() >= 5, "the route table lists every endpoint");
    // Every route, plus paths and methods outside the table: auth comes before routing.
    let mut probes: Vec<(&str, &str)> = ROUTES.iter().map(|r| (r.method, r.path)).collect();
    probes.extend([
        ("GET", "/"),
        ("GET", "/agent/nope"),
        ("DELETE", "/agent/status"),
        ("POST", "/agent/status"),
    ]);
    for (method, path) in &probes {
        let (status, www) = send(method, path, None);
        assert_eq!(status, 401, "{method} {path} without a token");
        assert_eq!(
            www.as_deref(),
            Some("Bearer realm=\"Warden Agent\""),
            "{method} {path}"
        );
        let (status, _) = send(method, path, Some(format!("Basic {}", files.token)));
        assert_eq!(status, 401, "{method} {path} with a non-Bearer scheme");
        let (status, www) = send(method, path, Some("Bearer wrong".into()));
        assert_eq!(status, 403, "{method} {path} with a wrong token");
        assert_eq!(www, None);
        let (status, _) = send(method, path, Some(format!("Bearer {near}")));
        assert_eq!(status, 403, "{method} {path} with an almost-right token");
    }
    // With the token, every route of the table answers 2xx; the rest 404/405.
    for r in ROUTES {
        let (status, _) = send(r.method, r.path, Some(format!("Bearer {}", files.token)));
        assert!(
            (200..300).contains(&status),
            "{} {} with the token: {status}",
            r.method,
            r.path
        );
    }
    let bearer = Some(format!("Bearer {}", files.token));
    assert_eq!(send("GET", "/agent/nope", bearer.clone()).0, 404);
    assert_eq!(send("DELETE", "/agent/status", bearer).0, 405);

    // A foreign Host header (DNS rebinding) is refused even with the token.
    let resp = rt
        .block_on(async {
            client
                .get(format!("{}/agent/status", files.base))
                .header("host", "evil.example")
                .bearer_auth(&files.token)
                .send()
                .await
        })
        .unwrap();
    assert_eq!(resp.status().as_u16(), 421);

    // The token never shows up in the agent's log.
    let _ = agent.stop();
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("local API listening"), "{log}");
    assert!(!log.contains(&files.token));
}

#[test]
fn non_loopback_addresses_are_config_errors() {
    for host in ["0.0.0.0", "192.168.1.20", "::", "example.com"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), &base_config(&format!("cmd_host: \"{host}\"\n")));
        for args in [&["--check-config"][..], &[][..]] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
                .arg("agent")
                .args(args)
                .arg("--config")
                .arg(&cfg)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{host} {args:?}: {err}");
            assert!(
                err.contains("cmd_host") && err.contains("not a loopback address"),
                "{host}: {err}"
            );
        }
        assert!(!dir.path().join("auth_token").exists());
    }
}

#[test]
fn open_or_short_token_files_stop_the_agent() {
    let cases: [(&str, u32, &str); 3] = [
        ("0123456789abcdef0123456789abcdef0123", 0o644, "chmod 600"),
        ("0123456789abcdef0123456789abcdef0123", 0o640, "chmod 600"),
        ("0123456789abcdef", 0o600, "too short (16 characters"),
    ];
    for (token, mode, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth_token");
        std::fs::write(&p, token).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let cfg = write_config(dir.path(), &base_config(""));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["agent", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{mode:o}: agent started: {err}");
        assert!(err.contains(expect), "{mode:o}: {err}");
        assert!(
            !err.contains(token),
            "the token itself is never printed: {err}"
        );
        assert!(!dir.path().join("run").join("ipc_endpoint").exists());
    }
}

#[test]
fn cli_refuses_a_wrong_token_and_an_impostor_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &base_config(""));
    let agent = Agent::start(&cfg);
    agent.wait_started();
    let status = cli_ok(&cfg, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["pid"].as_u64(), Some(u64::from(agent.child.id())));

    // Another token of valid shape: the agent answers 403 and the CLI says so.
    let token = dir.path().join("auth_token");
    let real = std::fs::read_to_string(&token).unwrap();
    std::fs::write(&token, "f".repeat(64)).unwrap();
    let out = cli(&cfg, &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused the request (403)"), "{err}");
    std::fs::write(&token, &real).unwrap();

    // A certificate that is not the agent's: the TLS handshake fails, nothing is sent.
    let cert = dir.path().join("run").join("ipc_cert.pem");
    let original = std::fs::read_to_string(&cert).unwrap();
    let other = rcgen_like_cert(dir.path());
    std::fs::write(&cert, other).unwrap();
    let out = cli(&cfg, &["config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot reach the agent's local API"), "{err}");
    std::fs::write(&cert, original).unwrap();
    assert!(cli_ok(&cfg, &["config"]).contains("cmd_port: 0"));
    let _ = agent.stop();

    // Agent stopped: a clear "is the agent running?" error.
    let out = cli(&cfg, &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("is the agent running"), "{err}");
}

/// The certificate of another (test) server: a valid PEM that is not the agent's.
fn rcgen_like_cert(dir: &std::path::Path) -> String {
    let p = warden_testkit::write_unrelated_ca(dir).unwrap();
    std::fs::read_to_string(p).unwrap()
}
