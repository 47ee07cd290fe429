//! Test support shared by the integration tests and the overhead benchmark: the corpora read
//! in place from `../shared/waf/`, their conversion back to raw HTTP requests, a raw-TCP
//! HTTP/1.1 client, and starting the real `protected_app` example as a child process.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Map, Value};

pub fn shared(p: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/waf/")).join(p)
}

pub fn read_jsonl(p: &str) -> Vec<Value> {
    let path = shared(p);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("corpus line is JSON"))
        .collect()
}

/// A corpus record turned back into an HTTP request.
#[derive(Debug, Clone)]
pub struct HttpReq {
    pub id: String,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReq {
    /// A form login to `protected_app`'s `POST /login`, optionally from `forwarded_for`
    /// (honoured when the test trusts the loopback proxy).
    pub fn login(id: String, forwarded_for: Option<&str>, user: &str, password: &str) -> HttpReq {
        let mut headers = vec![(
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )];
        if let Some(ip) = forwarded_for {
            headers.insert(0, ("x-forwarded-for".into(), ip.into()));
        }
        HttpReq {
            id,
            method: "POST".into(),
            target: "/login".into(),
            headers,
            body: format!("user={user}&password={}", password.replace(' ', "+")).into_bytes(),
        }
    }

    pub fn to_bytes(&self, port: u16, keep_alive: bool) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n",
            self.method, self.target
        )
        .into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn pct(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Null => vec![],
        other => vec![other.to_string()],
    }
}

fn is_form_shaped(m: &Map<String, Value>) -> bool {
    m.values().all(|v| match v {
        Value::String(_) => true,
        Value::Array(a) => a.iter().all(Value::is_string),
        _ => false,
    })
}

/// Convert a corpus record (WAF addresses) to an HTTP request; `None` when HTTP/1.1 cannot
/// carry it (control characters in the target or a header, non-ASCII target).
pub fn to_http(rec: &Value) -> Option<HttpReq> {
    let a = rec.get("addresses")?.as_object()?;
    let method = a.get("server.request.method")?.as_str()?.to_string();
    let target = a.get("server.request.uri.raw")?.as_str()?.to_string();
    if target.is_empty()
        || !target.starts_with('/')
        || target.bytes().any(|b| b <= b' ' || b >= 0x7f)
        || !method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return None;
    }
    // Characters HTTP servers refuse in a request target are sent percent-encoded, as a
    // browser would; the decoded query values the WAF sees stay the same.
    let target = if target.parse::<http::Uri>().is_ok() {
        target
    } else {
        let mut t = String::new();
        for c in target.chars() {
            if "\"<>`{}|\\^[]".contains(c) {
                t.push_str(&format!("%{:02X}", c as u32));
            } else {
                t.push(c);
            }
        }
        t.parse::<http::Uri>().ok()?;
        t
    };
    let hdrs = a
        .get("server.request.headers.no_cookies")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut headers = Vec::new();
    let mut content_type = None;
    for (k, v) in &hdrs {
        let v = strings(v).join(", ");
        if v.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f)
            || k.is_empty()
            || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        {
            return None;
        }
        match k.as_str() {
            "host" | "content-length" | "transfer-encoding" | "connection" | "expect"
            | "upgrade" | "te" | "trailer" | "keep-alive" | "proxy-connection" => continue,
            "content-type" => {
                content_type = Some(v);
                continue;
            }
            _ => headers.push((k.clone(), v)),
        }
    }
    if let Some(c) = a.get("server.request.cookies").and_then(Value::as_object) {
        let mut parts = Vec::new();
        for (k, v) in c {
            for s in strings(v) {
                parts.push(format!("{k}={s}"));
            }
        }
        let cookie = parts.join("; ");
        if cookie.bytes().any(|b| b < b' ' || b == 0x7f) {
            return None;
        }
        if !cookie.is_empty() {
            headers.push(("cookie".into(), cookie));
        }
    }
    let ct = content_type
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let filenames: Vec<String> = a
        .get("server.request.body.filenames")
        .map(strings)
        .unwrap_or_default();
    let mut body = Vec::new();
    match a.get("server.request.body") {
        None | Some(Value::Null) if filenames.is_empty() => {
            if let Some(ct) = content_type {
                headers.push(("content-type".into(), ct));
            }
        }
        Some(Value::String(s)) => {
            body = s.clone().into_bytes();
            let ct = content_type.unwrap_or_else(|| "text/plain".into());
            headers.push(("content-type".into(), ct));
        }
        other => {
            let m = other
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if ct.starts_with("multipart/") || !filenames.is_empty() {
                let bd = "wardenBoundary7MA4YWxkTrZu0gW";
                for (k, v) in &m {
                    for s in strings(v) {
                        body.extend_from_slice(
                            format!("--{bd}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{s}\r\n")
                                .as_bytes(),
                        );
                    }
                }
                for f in &filenames {
                    if f.contains('"') || f.contains('\r') || f.contains('\n') {
                        return None;
                    }
                    body.extend_from_slice(
                        format!("--{bd}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n")
                            .as_bytes(),
                    );
                }
                body.extend_from_slice(format!("--{bd}--\r\n").as_bytes());
                headers.push((
                    "content-type".into(),
                    format!("multipart/form-data; boundary={bd}"),
                ));
            } else if is_form_shaped(&m) && !ct.contains("json") && !ct.contains("xml") {
                let mut pairs = Vec::new();
                for (k, v) in &m {
                    for s in strings(v) {
                        pairs.push(format!("{}={}", pct(k), pct(&s)));
                    }
                }
                body = pairs.join("&").into_bytes();
                headers.push((
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ));
            } else {
                body = serde_json::to_vec(&Value::Object(m)).expect("json");
                headers.push(("content-type".into(), "application/json".into()));
            }
        }
    }
    Some(HttpReq {
        id: rec
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        method,
        target,
        headers,
        body,
    })
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResp {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Read one response from a buffered stream (Content-Length or chunked bodies).
pub fn read_response<R: BufRead>(r: &mut R) -> std::io::Result<HttpResp> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l)?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut l = String::new();
            r.read_line(&mut l)?;
            let n = usize::from_str_radix(l.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body)?;
    }
    Ok(HttpResp {
        status,
        headers,
        body,
    })
}

/// One request on a fresh connection.
pub fn send(port: u16, req: &HttpReq) -> std::io::Result<HttpResp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(&req.to_bytes(port, false))?;
    read_response(&mut BufReader::new(s))
}

pub fn get(port: u16, target: &str, headers: &[(&str, &str)]) -> HttpResp {
    let req = HttpReq {
        id: target.into(),
        method: "GET".into(),
        target: target.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: Vec::new(),
    };
    send(port, &req).unwrap_or_else(|e| panic!("GET {target}: {e}"))
}

/// The `protected_app` example (built by `cargo test` next to the test binaries) running as a
/// child process on a free port; killed on drop.
pub struct App {
    child: Child,
    pub port: u16,
}

impl App {
    pub fn start(env: &[(&str, &str)]) -> App {
        let exe = std::env::current_exe().expect("test exe path");
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target profile dir");
        let bin = dir.join("examples").join("protected_app");
        assert!(
            bin.exists(),
            "{} not found: run through `cargo test -p warden-appsec` (it builds examples)",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            // No trace shipping unless a test asks for it (and then to its own receiver).
            .env("WARDEN_APPSEC_TRACE", "false")
            // These tests check verdicts, not speed: the example is a debug build on a shared
            // CI machine, where the default 5 ms WAF budget can run out on a large CRS request
            // and turn a request-phase block into a response-phase one. (A test may override.)
            .env("WARDEN_APPSEC_WAF_TIMEOUT_US", "2000000")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn protected_app");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("read listen line");
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("protected_app did not start: {line:?}"));
        App { child, port }
    }

    pub fn handled(&self) -> u64 {
        let r = get(self.port, "/__stats", &[]);
        let v: Value = serde_json::from_slice(&r.body).expect("stats json");
        v["handled"].as_u64().expect("handled count")
    }

    pub fn reports(&self) -> Vec<Value> {
        let r = get(self.port, "/__reports", &[]);
        match serde_json::from_slice(&r.body).expect("reports json") {
            Value::Array(a) => a,
            other => panic!("reports: {other}"),
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rules_path() -> String {
    shared("datadog-rules-1.18.2.json").display().to_string()
}
