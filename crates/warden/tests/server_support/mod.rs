//! Helpers for the `server_*` tests: run the real `warden server` / `warden up` binary on a
//! free port, make keys with `warden keys create`, talk HTTPS with reqwest trusting the
//! server's generated CA.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_warden");

/// A free TCP port on loopback (bound, read, released).
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A running `warden server`, killed (SIGKILL) on drop.
pub struct ServerProc {
    pub child: Child,
    pub dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    pub https: bool,
}

impl ServerProc {
    /// Starts `warden server --data-dir dir --listen 127.0.0.1:<port> <extra>` and waits until
    /// it accepts connections.
    pub fn start(dir: &Path, port: u16, extra: &[&str]) -> ServerProc {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.with_extension(format!("server-{}.log", now_nanos()));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .arg("server")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("WARDEN_LOG", "info")
            .env_remove("WARDEN_DATA_DIR")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn warden server");
        let s = ServerProc {
            child,
            dir: dir.to_owned(),
            port,
            log,
            https: !extra.contains(&"--insecure-http"),
        };
        s.wait_listening();
        s
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.log_text().contains("warden server listening") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not start; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// SIGKILL, no chance to flush.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// `warden keys create --kind <kind> --org <org>` → the secret.
pub fn create_key(dir: &Path, kind: &str, org: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "keys", "create", "--kind", kind, "--org", org, "--name", "test",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env_remove("WARDEN_DATA_DIR")
        .output()
        .expect("run warden keys create");
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with(&format!("wdn_{kind}_")), "{key}");
    key
}

/// An HTTPS client trusting only `ca`.
pub fn client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("read CA");
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `GET /api/v1/query` → (status, JSON).
pub async fn query(
    c: &reqwest::Client,
    url: &str,
    api: &str,
    app: &str,
    q: &str,
    from: i64,
    to: i64,
) -> (u16, serde_json::Value) {
    let r = c
        .get(format!("{url}/api/v1/query"))
        .query(&[
            ("from", from.to_string()),
            ("to", to.to_string()),
            ("query", q.to_string()),
        ])
        .header("DD-API-KEY", api)
        .header("DD-APPLICATION-KEY", app)
        .send()
        .await
        .expect("query request");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// Every non-null `(ms timestamp, value)` of every series of a v1 response.
pub fn points_of(v: &serde_json::Value) -> Vec<(f64, f64)> {
    v["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["pointlist"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
        .collect()
}
