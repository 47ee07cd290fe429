//! Test support for Warden: a real HTTPS intake [`Receiver`] that decodes and records what an
//! agent sends.
//!
//! Why a real server and not a mock: the forwarder's correctness is mostly about the wire —
//! TLS trust and versions, compression, headers, status handling, reconnects after an outage.
//! Only real sockets exercise those, so the receiver is hyper 1 over tokio-rustls with a
//! throw-away CA from rcgen (its PEM written to a temp file so an agent can trust it through
//! `tls_ca_file`), and it can be taken down and brought back **on the same port**.
//!
//! It decodes `zstd` / `deflate` (zlib) / `gzip` bodies, protobuf `MetricPayload` and
//! `SketchPayload`, and the JSON of `/api/v1/check_run` and `/intake/`; checks `DD-API-KEY`
//! (403 when missing or wrong); answers 202 `{"status":"ok"}`; and records everything for
//! assertions.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use warden_proto as proto;

/// Largest decompressed body accepted (protects tests from a runaway payload).
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// Errors of the test kit.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct RequestLog {
    pub path: String,
    /// Status answered.
    pub status: u16,
    /// Header names lower-cased; the API key value is kept (tests compare it).
    pub headers: Vec<(String, String)>,
    /// Compressed body length.
    pub body_len: usize,
    /// Why the request was refused, when it was.
    pub error: Option<String>,
}

impl RequestLog {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Everything recorded so far.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Series of every accepted `/api/v2/series` payload, in arrival order.
    pub series: Vec<proto::MetricSeries>,
    /// Sketches of every accepted `/api/beta/sketches` payload.
    pub sketches: Vec<proto::Sketch>,
    /// Objects of every accepted `/api/v1/check_run` array.
    pub check_runs: Vec<serde_json::Value>,
    /// Event objects of every accepted `/intake/` payload (flattened over source types).
    pub events: Vec<serde_json::Value>,
    /// Whole `/intake/` bodies, to check the envelope (`internalHostname`, grouping).
    pub intake_bodies: Vec<serde_json::Value>,
    /// Every request, accepted or not.
    pub requests: Vec<RequestLog>,
    /// Accepted payloads (2xx).
    pub accepted: usize,
    fail_next: VecDeque<u16>,
    delay: Duration,
}

impl State {
    /// Every point value of every recorded series named `metric`.
    pub fn values_of(&self, metric: &str) -> Vec<f64> {
        self.series
            .iter()
            .filter(|s| s.metric == metric)
            .flat_map(|s| s.points.iter().map(|p| p.value))
            .collect()
    }
}

struct Inner {
    api_key: String,
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the data from the others.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Which protocol the receiver speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// TLS 1.2 and 1.3.
    Tls,
    /// TLS 1.2 only (to test `min_tls_version: tlsv1.3`).
    Tls12Only,
    /// Plain HTTP (to test `allow_insecure_http`).
    Plain,
}

/// A throw-away CA and a server certificate for `127.0.0.1` / `localhost`.
pub struct TestPki {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// Server certificate chain (leaf, CA), DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// Server key, PKCS#8 DER.
    pub key: Vec<u8>,
}

impl TestPki {
    /// Generates a fresh CA and a server certificate signed by it.
    pub fn generate() -> Result<Self, TestkitError> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "warden-testkit CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = ca_params.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "warden-testkit intake");
        let leaf = params.signed_by(&key, &ca, &ca_key)?;
        Ok(Self {
            ca_pem: ca.pem(),
            chain: vec![leaf.der().clone(), ca.der().clone()],
            key: key.serialize_der(),
        })
    }
}

/// Writes the PEM of a fresh CA that signed nothing the receiver uses, for "untrusted server
/// certificate" tests. Returns the file path (inside `dir`).
pub fn write_unrelated_ca(dir: &Path) -> Result<PathBuf, TestkitError> {
    let pki = TestPki::generate()?;
    let path = dir.join("unrelated-ca.pem");
    std::fs::write(&path, pki.ca_pem)?;
    Ok(path)
}

struct Server {
    task: JoinHandle<()>,
}

/// A real intake server for tests (see crate docs). Stops when dropped.
pub struct Receiver {
    inner: Arc<Inner>,
    addr: SocketAddr,
    mode: Mode,
    tls: Option<TlsAcceptor>,
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    server: Mutex<Option<Server>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Starts an HTTPS receiver (TLS 1.2 + 1.3) on a free loopback port, expecting `api_key`.
    ///
    /// # Panics
    /// When the certificate or the socket cannot be set up (a broken test environment).
    pub async fn start(api_key: &str) -> Receiver {
        Self::start_with(api_key, Mode::Tls)
            .await
            .expect("start the test receiver")
    }

    /// Starts a receiver in the given [`Mode`].
    pub async fn start_with(api_key: &str, mode: Mode) -> Result<Receiver, TestkitError> {
        let dir = tempfile::tempdir()?;
        let pki = TestPki::generate()?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem)?;
        let tls = match mode {
            Mode::Plain => None,
            Mode::Tls | Mode::Tls12Only => {
                let versions: &[&'static rustls::SupportedProtocolVersion] = if mode == Mode::Tls {
                    &[&rustls::version::TLS13, &rustls::version::TLS12]
                } else {
                    &[&rustls::version::TLS12]
                };
                let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_protocol_versions(versions)?
                .with_no_client_auth()
                .with_single_cert(
                    pki.chain.clone(),
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone())),
                )?;
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(TlsAcceptor::from(Arc::new(cfg)))
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let r = Receiver {
            inner: Arc::new(Inner {
                api_key: api_key.to_owned(),
                state: Mutex::new(State::default()),
            }),
            addr,
            mode,
            tls,
            _dir: dir,
            ca_file,
            server: Mutex::new(None),
        };
        r.serve(listener);
        Ok(r)
    }

    fn serve(&self, listener: TcpListener) {
        let task = tokio::spawn(accept_loop(listener, self.tls.clone(), self.inner.clone()));
        *self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Server { task });
    }

    /// Base URL for `server_url` (`https://127.0.0.1:<port>` or `http://...`).
    pub fn url(&self) -> String {
        let scheme = if self.mode == Mode::Plain {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Address the receiver listens on (kept across [`Receiver::set_down`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM file of the CA that signed the server certificate (for `tls_ca_file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// `true`: close the listener and every open connection (clients get "connection
    /// refused"). `false`: listen again on the same port.
    ///
    /// # Panics
    /// When the port cannot be bound again within 10 s.
    pub async fn set_down(&self, down: bool) {
        if down {
            let server = self
                .server
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(s) = server {
                s.task.abort();
                let _ = s.task.await;
            }
            return;
        }
        if self.is_up() {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Whether the receiver is accepting connections.
    pub fn is_up(&self) -> bool {
        self.server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|s| !s.task.is_finished())
    }

    /// Answer `status` (without recording the payload) to the next `n` requests that carry a
    /// valid API key.
    pub fn fail_next(&self, status: u16, n: usize) {
        let mut st = self.inner.lock();
        st.fail_next.extend(std::iter::repeat_n(status, n));
    }

    /// Holds every response for `delay` before answering (`Duration::ZERO` to stop), to
    /// exercise client timeouts.
    pub fn set_delay(&self, delay: Duration) {
        self.inner.lock().delay = delay;
    }

    /// Forgets everything recorded so far (injected failures and the delay stay).
    pub fn clear(&self) {
        let mut st = self.inner.lock();
        let (fail_next, delay) = (std::mem::take(&mut st.fail_next), st.delay);
        *st = State {
            fail_next,
            delay,
            ..State::default()
        };
    }

    /// A copy of everything recorded.
    pub fn state(&self) -> State {
        self.inner.lock().clone()
    }

    /// Recorded series.
    pub fn series(&self) -> Vec<proto::MetricSeries> {
        self.inner.lock().series.clone()
    }

    /// Recorded sketches.
    pub fn sketches(&self) -> Vec<proto::Sketch> {
        self.inner.lock().sketches.clone()
    }

    /// Recorded service checks.
    pub fn check_runs(&self) -> Vec<serde_json::Value> {
        self.inner.lock().check_runs.clone()
    }

    /// Recorded events.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.inner.lock().events.clone()
    }

    /// Every request seen.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.inner.lock().requests.clone()
    }

    /// Polls until `pred` holds (returns `true`) or `timeout` passes (returns `false`).
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&State) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.inner.lock()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            s.task.abort();
        }
    }
}

/// Owns the listener and every connection task; aborting it closes them all (a `JoinSet`
/// aborts its tasks when dropped).
async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, inner: Arc<Inner>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let tls = tls.clone();
                let inner = inner.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(inner.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            // A failed handshake (untrusted client, version mismatch) just
                            // closes the connection, like a real server.
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn respond(status: u16, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(respond(400, &format!("{{\"error\":\"body: {e}\"}}"))),
    };
    let mut log = RequestLog {
        path: path.clone(),
        status: 202,
        headers: headers.clone(),
        body_len: body.len(),
        error: None,
    };
    let delay = inner.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let key_ok = header("dd-api-key").is_some_and(|k| k == inner.api_key);
    let outcome: Result<Decoded, (u16, String)> = if !key_ok {
        Err((403, "missing or invalid DD-API-KEY".into()))
    } else if let Some(status) = inner.lock().fail_next.pop_front() {
        Err((status, "failure injected by the test".into()))
    } else {
        decompress(header("content-encoding").as_deref(), &body).and_then(|raw| decode(&path, &raw))
    };
    let mut st = inner.lock();
    let resp = match outcome {
        Ok(d) => {
            st.accepted += 1;
            match d {
                Decoded::Series(s) => st.series.extend(s),
                Decoded::Sketches(s) => st.sketches.extend(s),
                Decoded::Checks(c) => st.check_runs.extend(c),
                Decoded::Intake(body, evs) => {
                    st.intake_bodies.push(body);
                    st.events.extend(evs);
                }
            }
            respond(202, r#"{"status":"ok"}"#)
        }
        Err((status, why)) => {
            log.status = status;
            let r = respond(status, &serde_json::json!({ "errors": [why] }).to_string());
            log.error = Some(why);
            r
        }
    };
    st.requests.push(log);
    Ok(resp)
}

enum Decoded {
    Series(Vec<proto::MetricSeries>),
    Sketches(Vec<proto::Sketch>),
    Checks(Vec<serde_json::Value>),
    Intake(serde_json::Value, Vec<serde_json::Value>),
}

fn decompress(encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>, (u16, String)> {
    let mut out = Vec::new();
    let res = match encoding.unwrap_or("identity") {
        "zstd" => zstd::stream::read::Decoder::new(body)
            .and_then(|d| d.take(MAX_BODY).read_to_end(&mut out)),
        "deflate" => flate2::read::ZlibDecoder::new(body)
            .take(MAX_BODY)
            .read_to_end(&mut out),
        "gzip" => flate2::read::GzDecoder::new(body)
            .take(MAX_BODY)
            .read_to_end(&mut out),
        "identity" | "" => {
            out.extend_from_slice(body);
            Ok(out.len())
        }
        other => return Err((415, format!("unsupported Content-Encoding {other:?}"))),
    };
    res.map_err(|e| (400, format!("cannot decompress body: {e}")))?;
    Ok(out)
}

fn decode(path: &str, raw: &[u8]) -> Result<Decoded, (u16, String)> {
    let bad = |what: &str, e: &dyn std::fmt::Display| (400, format!("invalid {what}: {e}"));
    match path {
        "/api/v2/series" => proto::MetricPayload::decode(raw)
            .map(|p| Decoded::Series(p.series))
            .map_err(|e| bad("MetricPayload", &e)),
        "/api/beta/sketches" => proto::SketchPayload::decode(raw)
            .map(|p| Decoded::Sketches(p.sketches))
            .map_err(|e| bad("SketchPayload", &e)),
        "/api/v1/check_run" => match serde_json::from_slice::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Array(a)) => Ok(Decoded::Checks(a)),
            Ok(_) => Err((400, "check_run body must be a JSON array".into())),
            Err(e) => Err(bad("check_run JSON", &e)),
        },
        "/intake/" | "/intake" => {
            let v: serde_json::Value =
                serde_json::from_slice(raw).map_err(|e| bad("intake JSON", &e))?;
            let Some(groups) = v.get("events").and_then(|e| e.as_object()) else {
                return Err((400, "intake body has no \"events\" object".into()));
            };
            let mut evs = Vec::new();
            for list in groups.values() {
                let Some(list) = list.as_array() else {
                    return Err((400, "intake events must be arrays".into()));
                };
                evs.extend(list.iter().cloned());
            }
            Ok(Decoded::Intake(v, evs))
        }
        other => Err((404, format!("no route {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One raw HTTP/1.1 request over plain TCP; returns the status code.
    async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        resp.split(' ').nth(1).unwrap().parse().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[tokio::test]
    async fn decodes_gzip_checks_keys_routes_and_injected_failures() {
        let r = Receiver::start_with("k", Mode::Plain).await.unwrap();
        let body = gzip(br#"[{"check":"c","status":0}]"#);
        let gz = [("DD-API-KEY", "k"), ("Content-Encoding", "gzip")];
        assert_eq!(post(r.addr(), "/api/v1/check_run", &gz, &body).await, 202);
        assert_eq!(
            r.check_runs(),
            [serde_json::json!({"check":"c","status":0})]
        );
        let wrong = [("DD-API-KEY", "nope"), ("Content-Encoding", "gzip")];
        assert_eq!(
            post(r.addr(), "/api/v1/check_run", &wrong, &body).await,
            403
        );
        assert_eq!(post(r.addr(), "/api/v1/check_run", &[], &body).await, 403);
        assert_eq!(post(r.addr(), "/nowhere", &gz, &body).await, 404);
        assert_eq!(
            post(r.addr(), "/api/v2/series", &gz, &gzip(b"\xff\xff")).await,
            400
        );
        r.fail_next(503, 1);
        assert_eq!(post(r.addr(), "/api/v1/check_run", &gz, &body).await, 503);
        assert_eq!(post(r.addr(), "/api/v1/check_run", &gz, &body).await, 202);
        assert_eq!(r.check_runs().len(), 2);
        assert_eq!(r.state().accepted, 2);
        assert_eq!(r.requests().len(), 7);
        r.clear();
        assert!(r.requests().is_empty() && r.check_runs().is_empty());

        // Down: connection refused; up again on the same port.
        r.set_down(true).await;
        assert!(!r.is_up());
        assert!(tokio::net::TcpStream::connect(r.addr()).await.is_err());
        r.set_down(false).await;
        assert_eq!(post(r.addr(), "/api/v1/check_run", &gz, &body).await, 202);
    }
}
