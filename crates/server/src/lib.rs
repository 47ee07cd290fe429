//! Warden's server: a Datadog-compatible HTTPS intake and query API over the encrypted store.
//!
//! Why this shape:
//! * **HTTPS by default.** On first start the server makes a private CA and a server
//!   certificate under `DIR/tls/` (see [`tls`]); plaintext needs an explicit opt-in. TLS 1.2 is
//!   the floor (1.3-only on request) and every response carries HSTS.
//! * **A 202 means durable.** Intake handlers validate the whole payload first (nothing is
//!   written when anything is wrong, see [`intake`]), then call the store's `append`, which
//!   returns after the WAL group commit is fsynced. Only then is 202 sent.
//! * **Hostile input is normal input.** Bodies are read through a size limit, decompressed
//!   through a bounded reader (a bomb is cut at the limit and answered 413), parsed without
//!   panicking, and every refusal is a 4xx naming the field at fault.
//! * **Tenancy by key.** Each API / application key belongs to one org ([`keys`]); every store
//!   call takes the org of the authenticated key, so one org never sees another's data.
//! * Plain hyper rather than a router framework: there are a handful of routes, and owning the
//!   body-reading path is what makes the limits above exact.

#[doc(hidden)]
pub mod fuzzing;
pub mod intake;
pub mod keys;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use warden_store::{Store, StoreError, StoreOptions};

pub use intake::Limits;
pub use keys::{KeyInfo, KeyKind, KeyStore, NewKey, Principal};
pub use warden_store::{FsyncPolicy, MasterKeySource, StoreOptions as StoreConfig};

/// `Strict-Transport-Security` sent on every response.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Where the server's certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSetup {
    /// Use (or create on first start) the private CA and certificate under `DIR/tls/`; the
    /// certificate also names `extra_names`.
    Generated { extra_names: Vec<String> },
    /// The operator's certificate chain and key (PEM).
    Files { cert: PathBuf, key: PathBuf },
    /// Plain HTTP. Only with `--insecure-http`.
    InsecureHttp,
}

/// Server configuration.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub tls: TlsSetup,
    /// Refuse TLS 1.2 (TLS 1.3 only).
    pub tls13_only: bool,
    pub limits: Limits,
    pub store: StoreOptions,
}

impl ServerOptions {
    /// Defaults for `data_dir` and `listen` (generated TLS, default limits and store options).
    pub fn new(data_dir: &Path, listen: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            listen,
            tls: TlsSetup::Generated {
                extra_names: Vec::new(),
            },
            tls13_only: false,
            limits: Limits::default(),
            store: StoreOptions::default(),
        }
    }
}

/// Paths inside the data directory.
pub fn meta_db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta.db")
}

/// Body limits per route: (compressed, decompressed) bytes.
#[derive(Clone, Copy, Debug)]
struct BodyLimit {
    compressed: usize,
    decompressed: usize,
}

/// `/api/v2/series`: what the Datadog agent's serializer produces at most.
const V2_SERIES: BodyLimit = BodyLimit {
    compressed: 512_000,
    decompressed: 5 * 1024 * 1024,
};
/// `/api/v1/series` (the spec allows 62 MiB decompressed; Warden holds the JSON tree in
/// memory to name bad fields, so it stops at 16 MiB).
const V1_SERIES: BodyLimit = BodyLimit {
    compressed: 3_200_000,
    decompressed: 16 * 1024 * 1024,
};
/// Sketches, check runs, events.
const OTHER: BodyLimit = BodyLimit {
    compressed: 3_200_000,
    decompressed: 8 * 1024 * 1024,
};
/// Query requests.
const QUERY: BodyLimit = BodyLimit {
    compressed: 256 * 1024,
    decompressed: 1024 * 1024,
};

/// Request counters (for logs and tests).
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub points: AtomicU64,
}

// Feature-module fields are read as those modules land (#5, #6).
#[allow(dead_code)]
struct AppState {
    store: Arc<Store>,
    keys: Arc<KeyStore>,
    limits: Limits,
    counters: Arc<Counters>,
    /// Trace intake and the security-event log.
    traces: traces::State,
    /// Blocked IPs and users.
    denylist: denylist::State,
    /// Detection rules and signals.
    security: security::State,
    /// Monitors, channels and escalation.
    alerting: alerting::State,
}

/// What the feature modules get when the server opens them.
#[allow(dead_code)]
pub(crate) struct OpenCtx<'a> {
    pub(crate) data_dir: &'a Path,
    pub(crate) store: &'a Arc<Store>,
    pub(crate) keys: &'a Arc<KeyStore>,
}

/// A running server. Dropping it stops accepting connections.
pub struct Server {
    addr: SocketAddr,
    https: bool,
    ca_file: Option<PathBuf>,
    keys: Arc<KeyStore>,
    store: Arc<Store>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("https", &self.https)
            .finish_non_exhaustive()
    }
}

fn private_dir(path: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ServerError::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

impl Server {
    /// Opens the data directory (store, key database, TLS material), binds `listen` and starts
    /// serving. Must be called inside a tokio runtime.
    pub async fn start(opts: ServerOptions) -> Result<Server, ServerError> {
        private_dir(&opts.data_dir)?;
        let (acceptor, ca_file) = match &opts.tls {
            TlsSetup::Generated { extra_names } => {
                let pki = tls::ensure_pki(&opts.data_dir, extra_names)?;
                let cfg = tls::server_config(&pki.cert, &pki.key, opts.tls13_only)?;
                (Some(TlsAcceptor::from(cfg)), Some(pki.ca_cert))
            }
            TlsSetup::Files { cert, key } => {
                let cfg = tls::server_config(cert, key, opts.tls13_only)?;
                (Some(TlsAcceptor::from(cfg)), None)
            }
            TlsSetup::InsecureHttp => (None, None),
        };
        let keys = Arc::new(KeyStore::open(&meta_db_path(&opts.data_dir))?);
        let store_dir = opts.data_dir.join("store");
        let store_opts = opts.store.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&store_dir, store_opts))
            .await
            .map_err(|e| ServerError::Io {
                path: opts.data_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
        let store = Arc::new(store);
        let mut limits = opts.limits;
        limits.max_age_secs = limits
            .max_age_secs
            .min(opts.store.retention_raw.as_secs() as i64);
        let listener =
            TcpListener::bind(opts.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: opts.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
        let counters = Arc::new(Counters::default());
        let ctx = OpenCtx {
            data_dir: &opts.data_dir,
            store: &store,
            keys: &keys,
        };
        let state = Arc::new(AppState {
            store: store.clone(),
            keys: keys.clone(),
            limits,
            counters: counters.clone(),
            traces: traces::State::open(&ctx)?,
            denylist: denylist::State::open(&ctx)?,
            security: security::State::open(&ctx)?,
            alerting: alerting::State::open(&ctx)?,
        });
        security::start(&state);
        let https = acceptor.is_some();
        if !https {
            tracing::warn!(
                %addr,
                "PLAINTEXT HTTP (--insecure-http): API keys and metrics cross the network \
                 unencrypted; use it only behind a TLS-terminating proxy on the same host"
            );
        }
        let task = tokio::spawn(accept_loop(listener, acceptor, state));
        tracing::info!(%addr, https, "warden server listening");
        Ok(Server {
            addr,
            https,
            ca_file,
            keys,
            store,
            counters,
            task,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `https://127.0.0.1:8443`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let host = match self.addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            ip => ip.to_string(),
        };
        format!("{scheme}://{host}:{}", self.addr.port())
    }

    /// The generated CA certificate clients should trust (None with operator certs or HTTP).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The key database.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// The store (for tests and maintenance).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Request counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Serves until `shutdown` resolves, then stops accepting and flushes the store.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        self.task.abort();
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
        tracing::info!("warden server stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<AppState>) {
    let mut conns = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let tls = tls.clone();
                let state = state.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .max_buf_size(64 * 1024);
                    match tls {
                        Some(acceptor) => {
                            match tokio::time::timeout(Duration::from_secs(15), acceptor.accept(stream)).await {
                                Ok(Ok(s)) => {
                                    let _ = http.serve_connection(TokioIo::new(s), svc).await;
                                }
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
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

/// An error answer: status and message (`{"errors": [message]}`).
#[derive(Debug)]
struct ApiError {
    status: u16,
    message: String,
    extra: Option<serde_json::Value>,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            extra: None,
        }
    }
    fn forbidden() -> Self {
        Self::new(403, "Forbidden")
    }
}

impl From<intake::Refusal> for ApiError {
    fn from(r: intake::Refusal) -> Self {
        ApiError::new(r.status, r.message)
    }
}

fn json_response(status: u16, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: ApiError) -> Response<Full<Bytes>> {
    let mut body = serde_json::json!({ "errors": [e.message] });
    if let (Some(serde_json::Value::Object(extra)), Some(obj)) = (e.extra, body.as_object_mut()) {
        obj.extend(extra);
    }
    json_response(e.status, &body)
}

async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = match route(&state, req).await {
        Ok(r) => {
            state.counters.accepted.fetch_add(1, Ordering::Relaxed);
            r
        }
        Err(e) => {
            state.counters.refused.fetch_add(1, Ordering::Relaxed);
            if e.status >= 500 {
                tracing::error!(%method, %path, status = e.status, error = %e.message, "request failed");
            } else {
                tracing::debug!(%method, %path, status = e.status, error = %e.message, "request refused");
            }
            error_response(e)
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// A query-string parameter (percent-decoded).
fn query_param(uri: &hyper::Uri, name: &str) -> Option<String> {
    let q = uri.query()?;
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k) == name {
            return Some(percent_decode(v));
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Checks one key on a blocking thread (the key database is SQLite).
async fn check_key(state: &AppState, kind: KeyKind, key: String) -> Result<Principal, ApiError> {
    let keys = state.keys.clone();
    let res = tokio::task::spawn_blocking(move || keys.authenticate(kind, &key))
        .await
        .map_err(|_| ApiError::new(500, "authentication task failed"))?;
    match res {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(ApiError::forbidden()),
        Err(e) => {
            tracing::error!(error = %e, "key database");
            Err(ApiError::new(503, "key database unavailable"))
        }
    }
}

/// The org of the request's API key (`DD-API-KEY` header, any case, or `?api_key=`).
async fn auth_api(state: &AppState, req: &Request<Incoming>) -> Result<Principal, ApiError> {
    let key = header_str(req.headers(), "dd-api-key")
        .map(str::to_owned)
        .or_else(|| query_param(req.uri(), "api_key"))
        .ok_or_else(ApiError::forbidden)?;
    check_key(state, KeyKind::Api, key).await
}

/// API key + application key of the same org (query endpoints).
async fn auth_app(state: &AppState, req: &Request<Incoming>) -> Result<Principal, ApiError> {
    let api = auth_api(state, req).await?;
    let key = header_str(req.headers(), "dd-application-key")
        .map(str::to_owned)
        .or_else(|| query_param(req.uri(), "application_key"))
        .ok_or_else(ApiError::forbidden)?;
    let app = check_key(state, KeyKind::App, key).await?;
    if app.org != api.org {
        return Err(ApiError::forbidden());
    }
    Ok(app)
}

/// Longest time a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; further ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

/// Most bytes read and discarded after a body is found too large, so the client (which is
/// still sending) gets to read the 413 instead of a connection reset.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// Reads and discards up to [`DRAIN_CAP`] bytes of `body` (at most 10 s).
async fn drain(mut body: Incoming) {
    let work = async {
        let mut n = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                n += d.len();
                if n > DRAIN_CAP {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
}

/// Reads the body within `limit` and decompresses it.
async fn read_body(req: Request<Incoming>, limit: BodyLimit) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            format!(
                "request body exceeds the limit of {} bytes",
                limit.compressed
            ),
        )
    };
    let declared = match header_str(req.headers(), "content-length") {
        Some(len) => match len.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return Err(ApiError::new(400, "invalid Content-Length")),
        },
        None => None,
    };
    let encoding = header_str(req.headers(), "content-encoding").map(str::to_owned);
    let mut body = req.into_body();
    if declared.is_some_and(|n| n > limit.compressed as u64) {
        drain(body).await;
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
    // A client trickling its body must not hold a connection forever.
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    loop {
        let next = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(f) => f,
            Err(_) => {
                return Err(ApiError::new(
                    408,
                    format!(
                        "request body not received within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
        match next {
            None => break,
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    if buf.len() + d.len() > limit.compressed {
                        drain(body).await;
                        return Err(too_large());
                    }
                    buf.extend_from_slice(d);
                }
            }
            Some(Err(e)) => return Err(ApiError::new(400, format!("cannot read body: {e}"))),
        }
    }
    let raw = tokio::task::spawn_blocking(move || {
        intake::decompress(encoding.as_deref(), &buf, limit.decompressed)
    })
    .await
    .map_err(|_| ApiError::new(500, "decompression task failed"))??;
    Ok(raw)
}

/// Media type without parameters, lower-cased.
fn content_type(req: &Request<Incoming>) -> String {
    header_str(req.headers(), "content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json(ct: &str) -> bool {
    ct == "application/json" || ct == "text/json" || ct.ends_with("+json")
}

fn unsupported_type(ct: &str, want: &str) -> ApiError {
    ApiError::new(
        415,
        format!(
            "unsupported Content-Type {:?}: this endpoint takes {want}",
            if ct.is_empty() { "(none)" } else { ct }
        ),
    )
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::InvalidInput(m) => ApiError::new(400, m),
        other => {
            tracing::error!(error = %other, "store write failed");
            ApiError::new(503, "storage unavailable; retry later")
        }
    }
}

fn accepted() -> Response<Full<Bytes>> {
    json_response(202, &serde_json::json!({ "status": "ok" }))
}

enum Kind {
    V2Series,
    V1Series,
    Sketches,
    CheckRun,
    Intake,
}

async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let kind = match path.as_str() {
        "/api/v2/series" => Kind::V2Series,
        "/api/v1/series" => Kind::V1Series,
        "/api/beta/sketches" => Kind::Sketches,
        "/api/v1/check_run" => Kind::CheckRun,
        "/intake" | "/intake/" => Kind::Intake,
        "/api/v1/validate" => {
            if method != Method::GET {
                return Err(ApiError::new(405, "method not allowed"));
            }
            auth_api(state, &req).await?;
            return Ok(json_response(200, &serde_json::json!({ "valid": true })));
        }
        "/api/v1/query" => {
            if method != Method::GET {
                return Err(ApiError::new(405, "method not allowed"));
            }
            let p = auth_app(state, &req).await?;
            return query::v1(state, p.org, req.uri()).await;
        }
        "/api/v2/query/timeseries" | "/api/v2/query/scalar" => {
            if method != Method::POST {
                return Err(ApiError::new(405, "method not allowed"));
            }
            let p = auth_app(state, &req).await?;
            let ct = content_type(&req);
            if !is_json(&ct) && !ct.is_empty() {
                return Err(unsupported_type(&ct, "application/json"));
            }
            let raw = read_body(req, QUERY).await?;
            return if path.ends_with("scalar") {
                query::v2_scalar(state, p.org, raw).await
            } else {
                query::v2(state, p.org, raw).await
            };
        }
        "/" | "/health" => {
            return Ok(json_response(200, &serde_json::json!({ "status": "ok" })));
        }
        p if traces::handles(p) => return traces::route(state, req).await,
        p if denylist::handles(p) => return denylist::route(state, req).await,
        p if security::handles(p) => return security::route(state, req).await,
        p if alerting::handles(p) => return alerting::route(state, req).await,
        _ => return Err(ApiError::new(404, format!("no route {path}"))),
    };
    if method != Method::POST {
        return Err(ApiError::new(405, "method not allowed; use POST"));
    }
    let principal = auth_api(state, &req).await?;
    let ct = content_type(&req);
    let (limit, proto) = match kind {
        Kind::V2Series => {
            if ct == "application/x-protobuf" || ct == "application/protobuf" {
                (V2_SERIES, true)
            } else if is_json(&ct) {
                (V2_SERIES, false)
            } else {
                return Err(unsupported_type(
                    &ct,
                    "application/x-protobuf or application/json",
                ));
            }
        }
        Kind::Sketches => {
            if ct != "application/x-protobuf" && ct != "application/protobuf" {
                return Err(unsupported_type(&ct, "application/x-protobuf"));
            }
            (OTHER, true)
        }
        Kind::V1Series => {
            if !is_json(&ct) && !ct.is_empty() {
                return Err(unsupported_type(&ct, "application/json"));
            }
            (V1_SERIES, false)
        }
        Kind::CheckRun | Kind::Intake => {
            if !is_json(&ct) && !ct.is_empty() {
                return Err(unsupported_type(&ct, "application/json"));
            }
            (OTHER, false)
        }
    };
    let raw = read_body(req, limit).await?;
    let ck = intake::Checker {
        limits: state.limits,
        now: now_secs(),
    };
    let store = state.store.clone();
    let org = principal.org;
    let counters = state.counters.clone();
    // Parse, validate and append off the async threads: all of it is CPU or blocking I/O.
    let res = tokio::task::spawn_blocking(move || -> Result<(), ApiError> {
        if let Kind::Sketches = kind {
            let writes = intake::sketches_protobuf(&raw, &ck)?;
            let n: usize = writes.iter().map(|w| w.points.len()).sum();
            store.append_sketches(org, &writes).map_err(store_error)?;
            counters.points.fetch_add(n as u64, Ordering::Relaxed);
            return Ok(());
        }
        let writes = match kind {
            Kind::V2Series if proto => intake::v2_protobuf(&raw, &ck)?,
            Kind::V2Series => intake::v2_json(&raw, &ck)?,
            Kind::V1Series => intake::v1_json(&raw, &ck)?,
            Kind::CheckRun => intake::check_runs(&raw, &ck)?,
            _ => intake::events(&raw, &ck)?,
        };
        if writes.is_empty() {
            return Ok(());
        }
        let n: usize = writes.iter().map(|w| w.points.len()).sum();
        store.append(org, &writes).map_err(store_error)?;
        counters.points.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    })
    .await
    .map_err(|_| ApiError::new(500, "intake task failed"))?;
    res?;
    Ok(accepted())
}

mod alerting;
mod denylist;
mod query;
mod security;
mod traces;
