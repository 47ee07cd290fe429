//! Built-in http / tcp / process checks against real sockets, a real HTTPS server and the real
//! process table.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use warden_agent::checks::{CheckKind, CheckOutput, CheckRegistry, run_checks, run_once};
use warden_agent::{AgentConfig, Outgoing, Telemetry};
use warden_model::{CheckStatus, MetricKind, ServiceCheck};

fn config(checks_yaml: &str) -> AgentConfig {
    let yaml = format!("api_key: k\nhostname: test-host\ntags: [env:test]\nchecks:\n{checks_yaml}");
    AgentConfig::from_yaml_with_env(&yaml, "test", &[]).expect("valid test config")
}

/// A minimal HTTP/1.1 server answering every request with `status_line`.
async fn http_server(status_line: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 {status_line}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// A loopback port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

fn sc<'a>(out: &'a CheckOutput, name: &str) -> &'a ServiceCheck {
    out.service_checks
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("service check {name} missing in {out:#?}"))
}

fn metric(out: &CheckOutput, name: &str) -> Option<f64> {
    out.series
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.points[0].value)
}

#[tokio::test]
async fn http_200_is_ok_with_response_time() {
    let addr = http_server("200 OK").await;
    let url = format!("http://{addr}/health");
    let cfg = config(&format!(
        "  http:\n    - name: web\n      url: {url}\n      timeout: 3\n      tags: [team:a]\n"
    ));
    let out = run_once(&cfg, "web").await.unwrap();
    assert_eq!(out.kind, CheckKind::Http);
    assert_eq!(out.status, CheckStatus::Ok, "{out:#?}");
    assert!(out.error.is_none());
    let s = sc(&out, "http.can_connect");
    assert_eq!(s.status, CheckStatus::Ok);
    assert_eq!(s.host, "test-host");
    assert_eq!(
        s.tags,
        ["env:test", &format!("url:{url}"), "instance:web", "team:a"]
    );
    let rt = metric(&out, "network.http.response_time").unwrap();
    assert!(rt > 0.0 && rt < 3.0, "{rt}");
    assert_eq!(metric(&out, "network.http.can_connect"), Some(1.0));
    assert!(
        out.service_checks.iter().all(|s| s.name != "http.ssl_cert"),
        "no certificate check for plain http"
    );
}

#[tokio::test]
async fn http_500_and_unexpected_status_are_critical_with_the_status() {
    let addr = http_server("500 Internal Server Error").await;
    let ok_addr = http_server("200 OK").await;
    let cfg = config(&format!(
        "  http:\n    - name: broken\n      url: http://{addr}/\n      timeout: 3\n\
         \x20   - name: picky\n      url: http://{ok_addr}/\n      expected_status: 204\n"
    ));
    let out = run_once(&cfg, "broken").await.unwrap();
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(out.message.contains("500"), "{}", out.message);
    assert_eq!(sc(&out, "http.can_connect").status, CheckStatus::Critical);
    assert!(out.error.is_none(), "a 500 is a result, not a check error");
    assert_eq!(metric(&out, "network.http.can_connect"), Some(0.0));

    let out = run_once(&cfg, "picky").await.unwrap();
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(
        out.message.contains("200") && out.message.contains("204"),
        "{}",
        out.message
    );
}

#[tokio::test]
async fn http_closed_port_is_critical() {
    let port = closed_port().await;
    let cfg = config(&format!(
        "  http:\n    - name: gone\n      url: http://127.0.0.1:{port}/\n      timeout: 3\n"
    ));
    let t0 = Instant::now();
    let out = run_once(&cfg, "gone").await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(out.message.contains("failed"), "{}", out.message);
    assert!(
        out.message.to_lowercase().contains("refused"),
        "{}",
        out.message
    );
    assert!(metric(&out, "network.http.response_time").is_none());
}

#[tokio::test]
async fn https_reports_certificate_days_left_and_thresholds() {
    let rx = warden_testkit::Receiver::start("key").await;
    let ca = rx.ca_file().display().to_string();
    let url = format!("{}/", rx.url());
    // rcgen certificates are valid until 4096-01-01T00:00:00Z (67090118400).
    let cfg = config(&format!(
        "  http:\n    - name: tls\n      url: {url}\n      ca_file: {ca}\n\
         \x20   - name: tls-warn\n      url: {url}\n      ca_file: {ca}\n      days_warning: 10000000\n      days_critical: 1\n\
         \x20   - name: tls-crit\n      url: {url}\n      ca_file: {ca}\n      days_warning: 10000000\n      days_critical: 9000000\n"
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let out = run_once(&cfg, "tls").await.unwrap();
    // The intake answers 403 without an API key: reachable, but not a healthy status.
    assert!(out.message.contains("403"), "{}", out.message);
    let cert = sc(&out, "http.ssl_cert");
    assert_eq!(cert.status, CheckStatus::Ok, "{cert:?}");
    let days = metric(&out, "http.ssl.days_left").unwrap();
    let expected = (67_090_118_400.0 - now) / 86_400.0;
    assert!((days - expected).abs() < 0.01, "{days} vs {expected}");
    let secs = metric(&out, "http.ssl.seconds_left").unwrap();
    assert!((secs / 86_400.0 - days).abs() < 1e-9);

    let out = run_once(&cfg, "tls-warn").await.unwrap();
    assert_eq!(sc(&out, "http.ssl_cert").status, CheckStatus::Warning);
    let out = run_once(&cfg, "tls-crit").await.unwrap();
    let cert = sc(&out, "http.ssl_cert");
    assert_eq!(cert.status, CheckStatus::Critical);
    assert!(
        cert.message.as_deref().unwrap().contains("expires in"),
        "{cert:?}"
    );
}

#[tokio::test]
async fn https_with_untrusted_certificate_is_critical() {
    let rx = warden_testkit::Receiver::start("key").await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = warden_testkit::write_unrelated_ca(dir.path()).unwrap();
    let cfg = config(&format!(
        "  http:\n    - name: mitm\n      url: {}/\n      ca_file: {}\n",
        rx.url(),
        other_ca.display()
    ));
    let out = run_once(&cfg, "mitm").await.unwrap();
    assert_eq!(out.status, CheckStatus::Critical);
    let cert = sc(&out, "http.ssl_cert");
    assert_eq!(cert.status, CheckStatus::Critical);
    let msg = cert.message.as_deref().unwrap().to_lowercase();
    assert!(msg.contains("certificate"), "{msg}");
    assert!(metric(&out, "http.ssl.days_left").is_none());
}

#[tokio::test]
async fn http_bad_ca_file_is_a_check_error() {
    let cfg = config(
        "  http:\n    - name: badca\n      url: https://127.0.0.1:1/\n      ca_file: /nonexistent/ca.pem\n",
    );
    let out = run_once(&cfg, "badca").await.unwrap();
    assert_eq!(out.status, CheckStatus::Critical);
    let err = out.error.unwrap();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test]
async fn tcp_open_and_closed_ports() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = l.local_addr().unwrap().port();
    let closed = closed_port().await;
    let cfg = config(&format!(
        "  tcp:\n    - name: open\n      host: 127.0.0.1\n      port: {open}\n\
         \x20   - name: closed\n      host: 127.0.0.1\n      port: {closed}\n      timeout: 2\n"
    ));
    let out = run_once(&cfg, "open").await.unwrap();
    assert_eq!(out.kind, CheckKind::Tcp);
    assert_eq!(out.status, CheckStatus::Ok, "{out:#?}");
    let s = sc(&out, "tcp.can_connect");
    assert_eq!(
        s.tags,
        [
            "env:test",
            "instance:open",
            "target_host:127.0.0.1",
            &format!("port:{open}")
        ]
    );
    let rt = metric(&out, "network.tcp.response_time").unwrap();
    assert!((0.0..2.0).contains(&rt), "{rt}");
    assert_eq!(metric(&out, "network.tcp.can_connect"), Some(1.0));

    let out = run_once(&cfg, "closed").await.unwrap();
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(out.message.contains(&closed.to_string()), "{}", out.message);
    assert!(metric(&out, "network.tcp.response_time").is_none());
    assert_eq!(metric(&out, "network.tcp.can_connect"), Some(0.0));
}

#[tokio::test]
async fn process_check_finds_this_test_process() {
    let comm = std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim()
        .to_owned();
    let exe = std::env::current_exe().unwrap();
    let exe_name = exe.file_name().unwrap().to_str().unwrap().to_owned();
    let cfg = config(&format!(
        "  process:\n    - name: me\n      process_name: \"{comm}\"\n\
         \x20   - name: me-by-cmdline\n      search_string: \"{exe_name}\"\n\
         \x20   - name: ghost\n      process_name: no-such-process-xyz\n      min_procs: 1\n"
    ));
    // Burn CPU in another thread of this process while the check samples.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let burner = std::thread::spawn(move || {
        let mut x = 0u64;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
    });
    let out = run_once(&cfg, "me").await.unwrap();
    let by_cmdline = run_once(&cfg, "me-by-cmdline").await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    burner.join().unwrap();

    assert_eq!(out.kind, CheckKind::Process);
    assert_eq!(out.status, CheckStatus::Ok, "{out:#?}");
    assert!(metric(&out, "system.processes.number").unwrap() >= 1.0);
    let rss = metric(&out, "system.processes.mem.rss").unwrap();
    assert!(rss > 1024.0 * 1024.0, "rss {rss}");
    let cpu = metric(&out, "system.processes.cpu.pct").unwrap();
    // One thread spins through the 250 ms window: up to one core, but the shared test machine
    // may give it only a small share; zero would mean the delta is broken.
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    assert!(cpu > 1.0 && cpu <= 100.0 * cores + 5.0, "cpu {cpu}");
    let up = sc(&out, "process.up");
    assert_eq!(up.tags, ["env:test", "process_name:me"]);
    let series = out
        .series
        .iter()
        .find(|s| s.name == "system.processes.number")
        .unwrap();
    assert_eq!(series.kind, MetricKind::Gauge);
    assert_eq!(series.tags, ["env:test", "process_name:me"]);
    assert!(metric(&by_cmdline, "system.processes.number").unwrap() >= 1.0);

    let ghost = run_once(&cfg, "ghost").await.unwrap();
    assert_eq!(ghost.status, CheckStatus::Critical);
    assert_eq!(metric(&ghost, "system.processes.number"), Some(0.0));
    assert!(
        ghost.message.contains("expected at least 1"),
        "{}",
        ghost.message
    );
}

#[tokio::test]
async fn unknown_check_name_lists_the_known_ones() {
    let cfg = config("  tcp:\n    - name: db\n      host: 127.0.0.1\n      port: 1\n");
    let err = run_once(&cfg, "nope").await.unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("db"), "{err}");
}

#[tokio::test]
async fn run_checks_sends_results_and_fills_the_registry() {
    let addr = http_server("200 OK").await;
    let closed = closed_port().await;
    let cfg = config(&format!(
        "  http:\n    - name: web\n      url: http://{addr}/\n      interval: 1\n\
         \x20 tcp:\n    - name: down\n      host: 127.0.0.1\n      port: {closed}\n      interval: 1\n"
    ));
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let registry = CheckRegistry::new();
    let telemetry = Arc::new(Telemetry::default());
    let task = tokio::spawn(run_checks(
        cfg,
        tx,
        telemetry.clone(),
        registry.clone(),
        stop_rx,
    ));
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(seen.contains(&"http.can_connect".to_string())
        && seen.contains(&"tcp.can_connect".to_string()))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, rx.recv())
            .await
            .expect("service checks within 10 s")
            .unwrap();
        if let Outgoing::ServiceChecks(v) = msg {
            seen.extend(v.into_iter().map(|s| s.name));
        }
    }
    let web = registry.get("web").unwrap();
    assert_eq!(web.last.status, CheckStatus::Ok);
    assert!(web.runs >= 1);
    let down = registry.get("down").unwrap();
    assert_eq!(down.last.status, CheckStatus::Critical);
    assert_eq!(
        down.errors, 0,
        "a closed port is a result, not a check error"
    );
    assert_eq!(registry.snapshot().len(), 2);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run_checks stops on shutdown")
        .unwrap();
}
