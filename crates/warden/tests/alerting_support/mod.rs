//! Helpers for the `alerting_*` tests: a `warden server` started with the alerting knobs
//! shortened, and local fake receivers for PagerDuty, Slack and webhooks that record every
//! request and check it against `../shared/specs/security-api.md` (§3.1, §4, §2.5).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server_support::{BIN, ServerProc, client, create_key, free_tcp_port};

/// A `warden server` with alerting env knobs, plus keys and an HTTPS client.
pub struct Alerting {
    pub server: ServerProc,
    pub api: String,
    pub app: String,
    pub http: reqwest::Client,
}

/// Starts `warden server` with `WARDEN_ALERTING_*` shortened: evaluation every 500 ms,
/// ticks every 100 ms, retries from 200 ms, a "minute" of monitor options = 1 s, and PagerDuty
/// events sent to `pagerduty_url`.
pub fn start(dir: &Path, pagerduty_url: &str) -> Alerting {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_tcp_port();
    let log = dir.with_extension(format!("alerting-{port}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(BIN)
        .arg("server")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("WARDEN_LOG", "info")
        .env_remove("WARDEN_DATA_DIR")
        .env("WARDEN_ALERTING_EVAL_INTERVAL_MS", "500")
        .env("WARDEN_ALERTING_TICK_MS", "100")
        .env("WARDEN_ALERTING_RETRY_BASE_MS", "200")
        .env("WARDEN_ALERTING_MINUTE_SECS", "1")
        .env("WARDEN_PAGERDUTY_EVENTS_URL", pagerduty_url)
        .env("WARDEN_PUBLIC_URL", format!("https://127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    let server = ServerProc {
        child,
        dir: dir.to_owned(),
        port,
        log,
        https: true,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.log_text().contains("warden server listening") {
        assert!(
            Instant::now() < deadline,
            "no start:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let api = create_key(dir, "api", "default");
    let app = create_key(dir, "app", "default");
    let http = client(&server.ca_file());
    Alerting {
        server,
        api,
        app,
        http,
    }
}

impl Alerting {
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self
            .http
            .request(m, format!("{}{path}", self.server.url()))
            .header("DD-API-KEY", &self.api)
            .header("DD-APPLICATION-KEY", &self.app);
        if let Some(b) = body {
            r = r
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Like [`Alerting::call`] but asserts a 200.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method, path, body).await;
        assert_eq!(
            s,
            200,
            "{method} {path} -> {s} {v}\nlog:\n{}",
            self.server.log_text()
        );
        v
    }

    /// Submits one gauge point per (host, ts, value) through `/api/v1/series`.
    pub async fn submit(&self, metric: &str, points: &[(&str, i64, f64)]) {
        let series: Vec<Value> = points
            .iter()
            .map(|(h, t, v)| json!({"metric": metric, "points": [[t, v]], "host": h, "type": "gauge"}))
            .collect();
        let r = self
            .http
            .post(format!("{}/api/v1/series", self.server.url()))
            .header("DD-API-KEY", &self.api)
            .header("Content-Type", "application/json")
            .body(json!({ "series": series }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    }

    /// Polls `GET /api/v1/monitor/{id}?group_states=all` until `pred` holds.
    pub async fn wait_monitor(&self, id: i64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self
                .ok(
                    "GET",
                    &format!("/api/v1/monitor/{id}?group_states=all"),
                    None,
                )
                .await;
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "monitor never reached {what}: {v}\nlog:\n{}",
                self.server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The delivery log of `key`.
    pub async fn deliveries(&self, key: &str) -> Vec<Value> {
        let v = self
            .ok(
                "GET",
                &format!("/api/v2/warden/notifications/deliveries?dedup_key={key}"),
                None,
            )
            .await;
        v["data"].as_array().cloned().unwrap_or_default()
    }
}

/// Scripted statuses of one path.
type Script = (String, VecDeque<u16>);

/// One request a fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// What the fake answered.
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A plain-HTTP receiver on 127.0.0.1. Each path answers from its script (a queue of statuses)
/// then with its default; PagerDuty paths answer 202 with the documented body, others 200 `ok`.
#[derive(Clone)]
pub struct Fake {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Vec<Script>>>,
}

impl Fake {
    pub fn start() -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let f = Fake {
            port,
            got: Arc::default(),
            script: Arc::default(),
        };
        let f2 = f.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let f = f2.clone();
                std::thread::spawn(move || f.serve(s));
            }
        });
        f
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next answers of `path` (then the default).
    pub fn script(&self, path: &str, statuses: &[u16]) {
        self.script
            .lock()
            .unwrap()
            .push((path.to_owned(), statuses.iter().copied().collect()));
    }

    /// Drops the remaining script of `path` (back to the default answer).
    pub fn unscript(&self, path: &str) {
        self.script.lock().unwrap().retain(|(p, _)| p != path);
    }

    pub fn on(&self, path: &str) -> Vec<Recorded> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` has at least `n` requests.
    pub async fn wait(&self, path: &str, n: usize, what: &str) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.on(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {path} got {} of {n} requests: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn serve(&self, s: std::net::TcpStream) {
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.trim_end().split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let mut body = vec![0u8; len];
        let _ = r.read_exact(&mut body);
        let scripted = {
            let mut sc = self.script.lock().unwrap();
            sc.iter_mut()
                .find(|(p, q)| *p == path && !q.is_empty())
                .and_then(|(_, q)| q.pop_front())
        };
        let pd = path.contains("enqueue");
        let status = scripted.unwrap_or(if pd { 202 } else { 200 });
        let reply = match (pd, status) {
            (true, 202) => json!({"status": "success", "message": "Event processed"}).to_string(),
            (true, 400) => json!({"status": "Unrecognized object", "message": "Event object format is unrecognized", "errors": ["JSON parse error"]}).to_string(),
            (_, 200) => "ok".to_owned(),
            _ => "error".to_owned(),
        };
        self.got.lock().unwrap().push(Recorded {
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            status,
        });
        let mut w = s;
        let _ = write!(
            w,
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        );
    }
}

/// Checks a PagerDuty Events API v2 body against §3.1: routing_key of 32 characters,
/// event_action, dedup_key ≤ 255; for triggers payload.summary (≤ 1024), source, severity in
/// the enum, and a parseable timestamp; links/images well-formed.
pub fn check_pagerduty(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("body is not an object")?;
    let rk = o["routing_key"].as_str().ok_or("routing_key missing")?;
    if rk.len() != 32 {
        return Err(format!("routing_key has {} chars, want 32", rk.len()));
    }
    let action = o
        .get("event_action")
        .and_then(Value::as_str)
        .ok_or("event_action missing")?;
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        return Err(format!("event_action {action:?}"));
    }
    let key = o
        .get("dedup_key")
        .and_then(Value::as_str)
        .ok_or("dedup_key missing")?;
    if key.is_empty() || key.len() > 255 {
        return Err("dedup_key empty or > 255".into());
    }
    for k in o.keys() {
        if ![
            "routing_key",
            "event_action",
            "dedup_key",
            "payload",
            "client",
            "client_url",
            "links",
            "images",
        ]
        .contains(&k.as_str())
        {
            return Err(format!("unknown top-level field {k:?}"));
        }
    }
    if action != "trigger" {
        return Ok(());
    }
    let p = o
        .get("payload")
        .and_then(Value::as_object)
        .ok_or("payload missing")?;
    let summary = p
        .get("summary")
        .and_then(Value::as_str)
        .ok_or("summary missing")?;
    if summary.is_empty() || summary.chars().count() > 1024 {
        return Err("summary empty or > 1024".into());
    }
    p.get("source")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("source missing")?;
    let sev = p
        .get("severity")
        .and_then(Value::as_str)
        .ok_or("severity missing")?;
    if !["critical", "error", "warning", "info"].contains(&sev) {
        return Err(format!("severity {sev:?}"));
    }
    if let Some(ts) = p.get("timestamp") {
        let ts = ts.as_str().ok_or("timestamp not a string")?;
        if ts.len() < 20 || &ts[4..5] != "-" || &ts[10..11] != "T" {
            return Err(format!("timestamp {ts:?} is not ISO 8601"));
        }
    }
    for k in p.keys() {
        if ![
            "summary",
            "source",
            "severity",
            "timestamp",
            "component",
            "group",
            "class",
            "custom_details",
        ]
        .contains(&k.as_str())
        {
            return Err(format!("unknown payload field {k:?}"));
        }
    }
    if let Some(links) = o.get("links") {
        for l in links.as_array().ok_or("links not an array")? {
            l.get("href")
                .and_then(Value::as_str)
                .ok_or("link without href")?;
        }
    }
    Ok(())
}

/// Checks a Slack incoming-webhook body (§4): a non-empty `text`, and `blocks` of known types
/// with mrkdwn/plain_text text objects; buttons need text and a url or value.
pub fn check_slack(v: &Value) -> Result<(), String> {
    let text = v
        .get("text")
        .and_then(Value::as_str)
        .ok_or("text missing")?;
    if text.is_empty() {
        return Err("text empty".into());
    }
    let blocks = v
        .get("blocks")
        .and_then(Value::as_array)
        .ok_or("blocks missing")?;
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("section") => {
                let t = &b["text"];
                if t["type"] != "mrkdwn" && t["type"] != "plain_text" {
                    return Err(format!("section text type {}", t["type"]));
                }
                let s = t["text"].as_str().ok_or("section without text")?;
                if s.is_empty() || s.len() > 3000 {
                    return Err("section text empty or > 3000".into());
                }
            }
            Some("context") => {
                b["elements"].as_array().ok_or("context without elements")?;
            }
            Some("actions") => {
                for e in b["elements"].as_array().ok_or("actions without elements")? {
                    if e["type"] != "button" || e["text"]["type"] != "plain_text" {
                        return Err(format!("bad action element {e}"));
                    }
                    if e.get("url").is_none() && e.get("value").is_none() {
                        return Err("button without url or value".into());
                    }
                }
            }
            other => return Err(format!("unexpected block type {other:?}")),
        }
    }
    Ok(())
}
