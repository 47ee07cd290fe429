//! Helpers for the `traces_*` tests: a real `warden server` and a real `warden agent` whose
//! trace intake listens on a free loopback port, a tiny msgpack writer (so payloads are
//! built byte by byte, exactly as tracers write them), and the security-events reader
//! (`GET /api/v2/spans/events`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../server_support/mod.rs"]
mod server_support;
pub use server_support::*;

/// A msgpack writer covering what tracers emit.
#[derive(Default)]
pub struct Mp(pub Vec<u8>);

impl Mp {
    pub fn array(&mut self, n: usize) -> &mut Self {
        if n < 16 {
            self.0.push(0x90 | n as u8);
        } else if n < 65_536 {
            self.0.push(0xdc);
            self.0.extend((n as u16).to_be_bytes());
        } else {
            self.0.push(0xdd);
            self.0.extend((n as u32).to_be_bytes());
        }
        self
    }
    pub fn map(&mut self, n: usize) -> &mut Self {
        if n < 16 {
            self.0.push(0x80 | n as u8);
        } else if n < 65_536 {
            self.0.push(0xde);
            self.0.extend((n as u16).to_be_bytes());
        } else {
            self.0.push(0xdf);
            self.0.extend((n as u32).to_be_bytes());
        }
        self
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        let n = s.len();
        if n < 32 {
            self.0.push(0xa0 | n as u8);
        } else if n < 256 {
            self.0.push(0xd9);
            self.0.push(n as u8);
        } else if n < 65_536 {
            self.0.push(0xda);
            self.0.extend((n as u16).to_be_bytes());
        } else {
            self.0.push(0xdb);
            self.0.extend((n as u32).to_be_bytes());
        }
        self.0.extend(s.as_bytes());
        self
    }
    pub fn uint(&mut self, v: u64) -> &mut Self {
        if v < 128 {
            self.0.push(v as u8);
        } else if v <= u64::from(u32::MAX) {
            self.0.push(0xce);
            self.0.extend((v as u32).to_be_bytes());
        } else {
            self.0.push(0xcf);
            self.0.extend(v.to_be_bytes());
        }
        self
    }
    pub fn int(&mut self, v: i64) -> &mut Self {
        if v >= 0 {
            return self.uint(v as u64);
        }
        self.0.push(0xd3);
        self.0.extend(v.to_be_bytes());
        self
    }
    pub fn float(&mut self, v: f64) -> &mut Self {
        self.0.push(0xcb);
        self.0.extend(v.to_be_bytes());
        self
    }
    pub fn nil(&mut self) -> &mut Self {
        self.0.push(0xc0);
        self
    }
}

/// One span as the tests describe it.
#[derive(Clone, Debug)]
pub struct TestSpan {
    pub service: String,
    pub name: String,
    pub resource: String,
    pub trace_id: u64,
    pub span_id: u64,
    pub parent_id: u64,
    pub start_ns: i64,
    pub meta: Vec<(String, String)>,
    pub metrics: Vec<(String, f64)>,
}

impl TestSpan {
    pub fn new(trace_id: u64, span_id: u64, meta: &[(&str, &str)]) -> TestSpan {
        TestSpan {
            service: "shop".into(),
            name: "http.request".into(),
            resource: "GET /search".into(),
            trace_id,
            span_id,
            parent_id: 0,
            start_ns: now_ms() * 1_000_000,
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metrics: vec![("_sampling_priority_v1".into(), 2.0)],
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `/v0.4/traces` body: an array of traces, each an array of span maps.
pub fn v04(traces: &[Vec<TestSpan>]) -> Vec<u8> {
    let mut m = Mp::default();
    m.array(traces.len());
    for t in traces {
        m.array(t.len());
        for s in t {
            m.map(12);
            m.str("service").str(&s.service);
            m.str("name").str(&s.name);
            m.str("resource").str(&s.resource);
            m.str("trace_id").uint(s.trace_id);
            m.str("span_id").uint(s.span_id);
            m.str("parent_id").uint(s.parent_id);
            m.str("start").int(s.start_ns);
            m.str("duration").int(1_234_567);
            m.str("error").int(0);
            m.str("type").str("web");
            m.str("meta").map(s.meta.len());
            for (k, v) in &s.meta {
                m.str(k).str(v);
            }
            m.str("metrics").map(s.metrics.len());
            for (k, v) in &s.metrics {
                m.str(k).float(*v);
            }
        }
    }
    m.0
}

/// `/v0.5/traces` body: `[string table, traces]` with 12-element spans of indexes.
pub fn v05(traces: &[Vec<TestSpan>]) -> Vec<u8> {
    let mut table: Vec<String> = vec![String::new()];
    let mut idx = |s: &str| -> u64 {
        if let Some(i) = table.iter().position(|x| x == s) {
            return i as u64;
        }
        table.push(s.to_owned());
        (table.len() - 1) as u64
    };
    let mut body = Mp::default();
    body.array(traces.len());
    for t in traces {
        body.array(t.len());
        for s in t {
            body.array(12);
            body.uint(idx(&s.service));
            body.uint(idx(&s.name));
            body.uint(idx(&s.resource));
            body.uint(s.trace_id).uint(s.span_id).uint(s.parent_id);
            body.int(s.start_ns).int(1_000).int(0);
            body.map(s.meta.len());
            for (k, v) in &s.meta {
                let (k, v) = (idx(k), idx(v));
                body.uint(k).uint(v);
            }
            body.map(s.metrics.len());
            for (k, v) in &s.metrics {
                let k = idx(k);
                body.uint(k).float(*v);
            }
            body.uint(idx("web"));
        }
    }
    let mut m = Mp::default();
    m.array(2).array(table.len());
    for s in &table {
        m.str(s);
    }
    m.0.extend(body.0);
    m.0
}

/// A running `warden agent` whose trace intake listens on `trace_port`.
pub struct AgentProc {
    pub child: Child,
    pub log: PathBuf,
    pub trace_port: u16,
}

impl AgentProc {
    /// Starts an agent forwarding to `server_url` (trusting `ca`), `extra_apm` added under
    /// `apm_config:`.
    pub fn start(dir: &Path, server_url: &str, ca: &Path, api_key: &str, extra_apm: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let trace_port = free_tcp_port();
        let yaml = format!(
            "api_key: {api_key}\nserver_url: {server_url}\ntls_ca_file: {ca}\nhostname: traces-test-host\n\
             dogstatsd_port: 0\ncmd_port: -1\ncollect_host_metrics: false\nrun_path: {run}\n\
             forwarder_backoff_base: 0.2\nforwarder_backoff_max: 1\n\
             apm_config:\n  receiver_port: {trace_port}\n{extra_apm}",
            ca = ca.display(),
            run = dir.join("run").display(),
        );
        let cfg = dir.join("agent.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        let log = dir.join("agent.log");
        let child = Command::new(BIN)
            .args(["agent", "--config"])
            .arg(&cfg)
            .env("WARDEN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let a = AgentProc {
            child,
            log,
            trace_port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !a.log_text().contains("trace intake listening") {
            assert!(
                Instant::now() < deadline,
                "agent trace intake did not start:\n{}",
                a.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.trace_port)
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM; waits for the exit and returns how long it took.
    pub fn stop(&mut self) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t.elapsed());
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "agent did not stop:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with one org's API and application keys.
pub struct Stack {
    pub tmp: tempfile::TempDir,
    pub server: ServerProc,
    pub api: String,
    pub app: String,
}

impl Stack {
    pub fn start() -> Stack {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let api = create_key(&dir, "api", "acme");
        let app = create_key(&dir, "app", "acme");
        let server = ServerProc::start(&dir, free_tcp_port(), &[]);
        Stack {
            tmp,
            server,
            api,
            app,
        }
    }

    pub fn agent(&self, extra_apm: &str) -> AgentProc {
        AgentProc::start(
            &self.tmp.path().join("agent"),
            &self.server.url(),
            &self.server.ca_file(),
            &self.api,
            extra_apm,
        )
    }

    /// `GET /api/v2/spans/events` → the events (`data[].attributes.custom`).
    pub async fn events(&self, c: &reqwest::Client, query: &str) -> Vec<serde_json::Value> {
        let r = c
            .get(format!("{}/api/v2/spans/events", self.server.url()))
            .query(&[
                ("filter[from]", "now-1h"),
                ("filter[to]", "now"),
                ("filter[query]", query),
                ("page[limit]", "1000"),
            ])
            .header("DD-API-KEY", &self.api)
            .header("DD-APPLICATION-KEY", &self.app)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(status, 200, "{body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["attributes"]["custom"].clone())
            .collect()
    }

    /// Polls until `pred` holds for the events matching `query` (at most `secs`).
    pub async fn wait_events(
        &self,
        c: &reqwest::Client,
        query: &str,
        secs: u64,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = self.events(c, query).await;
            if pred(&ev) {
                return ev;
            }
            assert!(
                Instant::now() < deadline,
                "events never matched; last: {ev:#?}\nserver log:\n{}",
                self.server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(data) = std::fs::read(&p)
                && data.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}
