//! `warden up` end to end: one command starts the server and an embedded agent; DogStatsD
//! sent to the agent reaches the server over TLS (trusting the server's generated CA) and is
//! queried back through `/api/v1/query` and `warden query`.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server_support::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_server_and_agent_and_dogstatsd_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_tcp_port();
    let udp = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let out_path = tmp.path().join("up.out");
    let err_path = tmp.path().join("up.err");
    let mut child = Command::new(BIN)
        .arg("up")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--dogstatsd-port", &udp.to_string()])
        .env("WARDEN_LOG", "info")
        .env_remove("WARDEN_DATA_DIR")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let logs = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&out_path).unwrap_or_default(),
            std::fs::read_to_string(&err_path).unwrap_or_default()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&err_path)
        .unwrap_or_default()
        .contains("warden agent started")
    {
        assert!(Instant::now() < deadline, "up did not start\n{}", logs());
        assert!(child.try_wait().unwrap().is_none(), "up exited\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    // What `up` hands the user.
    let cred_path = dir.join("credentials.json");
    assert_eq!(mode(&cred_path), 0o600);
    let creds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cred_path).unwrap()).unwrap();
    let url = creds["url"].as_str().unwrap().to_owned();
    let api = creds["api_key"].as_str().unwrap().to_owned();
    let app = creds["app_key"].as_str().unwrap().to_owned();
    let ca = std::path::PathBuf::from(creds["ca_file"].as_str().unwrap());
    assert_eq!(url, format!("https://127.0.0.1:{port}"));
    assert_eq!(creds["dogstatsd_port"], udp);
    assert!(api.starts_with("wdn_api_") && app.starts_with("wdn_app_"));
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    for want in [&url, &api, &app, &ca.display().to_string()] {
        assert!(
            stdout.contains(want.as_str()),
            "{want} not printed:\n{stdout}"
        );
    }
    assert_eq!(mode(&dir.join("tls/server.key")), 0o600);
    assert_eq!(mode(&dir.join("tls/ca.key")), 0o600);
    assert_eq!(mode(&dir.join("meta.db")), 0o600);

    // DogStatsD → agent → HTTPS → server → store → query.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let c = client(&ca);
    let start = now() - 60;
    for _ in 0..7 {
        sock.send_to(b"up.e2e.count:1|c|#src:e2e", ("127.0.0.1", udp))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = serde_json::Value::Null;
    let mut gauge_ok = false;
    let mut count_ok = false;
    while Instant::now() < deadline && !(gauge_ok && count_ok) {
        sock.send_to(b"up.e2e.gauge:123.25|g|#src:e2e", ("127.0.0.1", udp))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (st, v) = query(
            &c,
            &url,
            &api,
            &app,
            "max:up.e2e.gauge{src:e2e}",
            start,
            now(),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        gauge_ok = points_of(&v).iter().any(|p| p.1 == 123.25);
        let (st, v) = query(
            &c,
            &url,
            &api,
            &app,
            "sum:up.e2e.count{src:e2e}.as_count()",
            start,
            now() + 60,
        )
        .await;
        assert_eq!(st, 200, "{v}");
        count_ok = points_of(&v).iter().map(|p| p.1).sum::<f64>() == 7.0;
        last = v;
    }
    assert!(gauge_ok && count_ok, "not queryable: {last}\n{}", logs());

    // The CLI reads credentials.json and prints a table.
    let q = Command::new(BIN)
        .args(["query", "max:up.e2e.gauge{*} by {src}", "--from", "-5m"])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("WARDEN_DATA_DIR")
        .env_remove("DD_API_KEY")
        .env_remove("DD_APP_KEY")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&q.stdout);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert!(
        table.contains("up.e2e.gauge") && table.contains("123.25") && table.contains("src:e2e"),
        "{table}"
    );

    // A second `up` would reuse the keys; stop this one cleanly.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "up did not stop\n{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{}", logs());
    let all = logs();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        !stderr.contains(&api) && !stderr.contains(&app),
        "key in logs:\n{all}"
    );
}

#[test]
fn up_exits_with_an_error_when_the_agent_cannot_start() {
    let tmp = tempfile::tempdir().unwrap();
    // Hold the DogStatsD port so the embedded agent cannot bind it.
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = taken.local_addr().unwrap().port();
    let mut child = Command::new(BIN)
        .arg("up")
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_tcp_port())])
        .args(["--dogstatsd-port", &udp.to_string()])
        .env_remove("WARDEN_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("warden up kept running with a dead agent");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("warden: the agent stopped"), "{err}");
    drop(taken);
}
