//! The trace intake: what tracers (ddtrace, Warden's app-protection layer) talk to on
//! `127.0.0.1:8126`.
//!
//! Why it looks like the Datadog trace agent: tracers are configured for it, not for Warden.
//! They probe `/info`, send `/v0.4/traces` or `/v0.5/traces` msgpack (`/v0.3` and JSON
//! for old clients), read `rate_by_service` from the answer, and report their own telemetry
//! to `/telemetry/proxy/`. Anything they are not told about in `/info` they do not use.
//!
//! Why relay instead of process: the agent decodes (to refuse bad payloads with a 400 that
//! names the fault, and to re-encode as protobuf), groups spans into chunks, and hands them
//! to the forwarder like any other payload, so traces get the same TLS, retry, memory and
//! disk queueing as metrics. The server decides what to keep (security spans).
//!
//! Bounds: bodies over `apm_config.max_payload_size` get 413, decoding never panics and is
//! depth-limited (`decode.rs`), runs off the async threads, and a full forwarder channel
//! answers 429 after a short wait rather than buffering without limit. Loopback only
//! unless `apm_non_local_traffic` is set: the intake has no authentication, like Datadog's.

mod decode;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use warden_proto::trace::{Span, TraceChunk, TracerPayload};

use crate::config::AgentConfig;
use crate::telemetry::Telemetry;
use crate::{OutTx, Outgoing};

/// Chunks are grouped into tracer payloads of about this many encoded bytes, and a larger
/// chunk is cut, so every forwarder payload stays under the intake's size limits.
const PAYLOAD_BUDGET: usize = 2 * 1024 * 1024;
/// Longest a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request waits for room in the forwarder channel before a 429.
const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Bytes read and discarded after a 413 so the client reads the answer, not a reset.
const DRAIN_CAP: usize = 64 * 1024 * 1024;
/// `Datadog-Meta-*` values kept at most this long.
const HEADER_CAP: usize = 256;
/// Distinct tracers whose first payload is logged.
const MAX_TRACERS_LOGGED: usize = 64;
/// "No sampling priority given" (the Datadog agent's `PriorityNone`).
const PRIORITY_NONE: i32 = i8::MIN as i32;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Errors starting the trace intake.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace intake cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running trace intake. [`TraceReceiver::stop`] (or dropping it) stops accepting.
#[derive(Debug)]
pub struct TraceReceiver {
    addr: SocketAddr,
    appsec: Arc<crate::appsec_rc::AppsecRc>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Ctx {
    /// App-protection remote configuration served to local apps (`appsec_rc`).
    appsec: Arc<crate::appsec_rc::AppsecRc>,
    tx: OutTx,
    telemetry: Arc<Telemetry>,
    max_body: usize,
    /// The bound port, reported in `/info`.
    port: u16,
    /// Tracers (language, tracer version) seen so far, to log each one's first payload.
    seen: std::sync::Mutex<Vec<(String, String)>>,
}

impl TraceReceiver {
    /// Binds `apm_config.receiver_port` (loopback unless `apm_non_local_traffic`) and serves
    /// until stopped. Must be called inside a tokio runtime.
    pub async fn start(
        cfg: &AgentConfig,
        tx: OutTx,
        telemetry: Arc<Telemetry>,
    ) -> Result<TraceReceiver, TraceError> {
        let ip = if cfg.apm_config.apm_non_local_traffic {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        let addr = SocketAddr::new(ip, cfg.apm_config.receiver_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TraceError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| TraceError::Bind { addr, source })?;
        let appsec = Arc::new(crate::appsec_rc::AppsecRc::default());
        let ctx = Arc::new(Ctx {
            appsec: appsec.clone(),
            tx,
            telemetry,
            max_body: usize::try_from(cfg.apm_config.max_payload_size).unwrap_or(usize::MAX),
            port: addr.port(),
            seen: std::sync::Mutex::new(Vec::new()),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, ctx, stopped));
        tracing::info!(%addr, "trace intake listening");
        Ok(TraceReceiver {
            addr,
            appsec,
            stop,
            task,
        })
    }

    /// What `GET /v0.7/warden/appsec` serves (filled by `appsec_rc::run_poller`).
    pub fn appsec(&self) -> Arc<crate::appsec_rc::AppsecRc> {
        self.appsec.clone()
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; requests in progress finish (at most a few seconds).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, mut stopped: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "trace intake: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let ctx = ctx.clone();
                let mut stop = stopped.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    let svc = service_fn(move |req| handle(ctx.clone(), req));
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30));
                    let conn = http.serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    // Tracers keep connections open between flushes: at shutdown an idle one
                    // is closed at once, a request in progress finishes first.
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stopped.changed() => break,
        }
    }
    // Let requests in flight finish (their payloads are already in the channel or refused).
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

/// An answer with a status and a JSON or text body.
fn reply(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json(status: u16, v: &serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string())
}

fn error(status: u16, msg: impl std::fmt::Display) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": msg.to_string() }))
}

async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let resp = match path.as_str() {
        "/v0.3/traces" | "/v0.4/traces" | "/v0.5/traces" => {
            if method != Method::PUT && method != Method::POST {
                error(405, "method not allowed; use PUT or POST")
            } else {
                let resp = traces(&ctx, req, &path).await;
                if !resp.status().is_success() {
                    Telemetry::add(&ctx.telemetry.trace_payloads_refused, 1);
                }
                resp
            }
        }
        "/info" => json(200, &info(ctx.port)),
        crate::appsec_rc::PATH => crate::appsec_rc::respond(&ctx.appsec, &method),
        // Tracer telemetry (app-started, heartbeats): accepted and discarded.
        p if p.starts_with("/telemetry/proxy/") => {
            let _ = read_body(req, 4 * 1024 * 1024).await;
            json(202, &serde_json::json!({}))
        }
        // Remote configuration is not offered (`/info` does not list it); a tracer that polls
        // anyway gets a quiet "not here".
        "/v0.7/config" => error(404, "remote configuration is not available from this agent"),
        _ => error(404, format!("no route {path} on the Warden trace intake")),
    };
    Ok(resp)
}

/// What `/info` advertises: only the endpoints implemented here, and "send every trace"
/// (`client_drop_p0s: false`) so no security span is dropped in the tracer.
fn info(port: u16) -> serde_json::Value {
    serde_json::json!({
        "version": VERSION,
        "git_commit": "",
        "endpoints": ["/v0.3/traces", "/v0.4/traces", "/v0.5/traces", "/telemetry/proxy/"],
        "client_drop_p0s": false,
        "span_meta_structs": false,
        "long_running_spans": false,
        "feature_flags": [],
        "config": {
            "default_env": "none",
            "statsd_port": 8125,
            "receiver_port": port,
            "analyzed_spans_by_service": {},
        },
        "peer_tags": [],
    })
}

/// Why a body could not be read.
enum BodyError {
    TooLarge(usize),
    Timeout,
    Read(String),
}

impl BodyError {
    fn response(self) -> Response<Full<Bytes>> {
        match self {
            BodyError::TooLarge(max) => error(
                413,
                format!("request body exceeds apm_config.max_payload_size ({max} bytes)"),
            ),
            BodyError::Timeout => error(
                408,
                format!(
                    "request body not received within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ),
            BodyError::Read(e) => error(400, format!("cannot read body: {e}")),
        }
    }
}

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
    let _ = tokio::time::timeout(Duration::from_secs(5), work).await;
}

async fn read_body(req: Request<Incoming>, max: usize) -> Result<Vec<u8>, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut body = req.into_body();
    if declared.is_some_and(|n| n > max as u64) {
        drain(body).await;
        return Err(BodyError::TooLarge(max));
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(buf),
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if buf.len() + d.len() > max {
                        drain(body).await;
                        return Err(BodyError::TooLarge(max));
                    }
                    buf.extend_from_slice(d);
                }
            }
        }
    }
}

/// Tracer identity from the `Datadog-Meta-*` request headers.
#[derive(Clone, Debug, Default)]
struct TracerMeta {
    lang: String,
    lang_version: String,
    tracer_version: String,
    container_id: String,
}

fn header_value(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().chars().take(HEADER_CAP).collect())
        .unwrap_or_default()
}

async fn traces(ctx: &Ctx, req: Request<Incoming>, path: &str) -> Response<Full<Bytes>> {
    let version = if path == "/v0.5/traces" {
        decode::Version::V05
    } else {
        decode::Version::V04
    };
    let ct = header_value(&req, "content-type").to_ascii_lowercase();
    let is_json = ct.starts_with("application/json") || ct.starts_with("text/json");
    let encoding = header_value(&req, "content-encoding").to_ascii_lowercase();
    if !(encoding.is_empty() || encoding == "identity") {
        return error(
            415,
            format!("unsupported Content-Encoding {encoding:?}: send the body uncompressed"),
        );
    }
    let tracer = (
        header_value(&req, "datadog-meta-lang"),
        header_value(&req, "datadog-meta-tracer-version"),
    );
    let meta = TracerMeta {
        lang: header_value(&req, "datadog-meta-lang"),
        lang_version: header_value(&req, "datadog-meta-lang-version"),
        tracer_version: header_value(&req, "datadog-meta-tracer-version"),
        container_id: header_value(&req, "datadog-container-id"),
    };
    let body = match read_body(req, ctx.max_body).await {
        Ok(b) => b,
        Err(e) => return e.response(),
    };
    let decoded = tokio::task::spawn_blocking(move || {
        decode::decode(version, is_json, &body).map(|traces| build_payloads(traces, &meta))
    })
    .await;
    let (payloads, spans) = match decoded {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "trace intake: payload refused");
            return error(400, e);
        }
        Err(_) => return error(500, "trace decoding task failed"),
    };
    if !payloads.is_empty() {
        match ctx
            .tx
            .send_timeout(Outgoing::Traces(payloads), QUEUE_WAIT)
            .await
        {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::SendTimeoutError::Timeout(_)) => {
                return error(429, "the agent is busy (forwarder queue full); retry later");
            }
            Err(tokio::sync::mpsc::error::SendTimeoutError::Closed(_)) => {
                return error(503, "the agent is shutting down");
            }
        }
    }
    Telemetry::add(&ctx.telemetry.trace_payloads, 1);
    Telemetry::add(&ctx.telemetry.spans_received, spans as u64);
    // One line per tracer (bounded), so an operator sees that an application is connected.
    if let Ok(mut seen) = ctx.seen.lock()
        && seen.len() < MAX_TRACERS_LOGGED
        && !seen.contains(&tracer)
    {
        tracing::info!(
            lang = %tracer.0,
            tracer_version = %tracer.1,
            spans,
            "trace intake: first payload from this tracer"
        );
        seen.push(tracer);
    }
    if path == "/v0.3/traces" {
        return reply(200, "text/plain", "OK\n");
    }
    json(
        200,
        &serde_json::json!({ "rate_by_service": { "service:,env:": 1 } }),
    )
}

/// The span that starts a trace chunk: the one whose parent is not in the chunk (else the
/// first).
fn root(spans: &[Span]) -> Option<&Span> {
    spans
        .iter()
        .find(|s| s.parent_id == 0 || !spans.iter().any(|p| p.span_id == s.parent_id))
        .or_else(|| spans.first())
}

/// Groups decoded traces into tracer payloads of at most [`PAYLOAD_BUDGET`] encoded bytes
/// (cutting a larger trace into several chunks). Returns the payloads and the span count.
fn build_payloads(traces: Vec<Vec<Span>>, meta: &TracerMeta) -> (Vec<TracerPayload>, usize) {
    let mut spans_total = 0;
    let mut chunks = Vec::new();
    for spans in traces {
        if spans.is_empty() {
            continue;
        }
        spans_total += spans.len();
        let (priority, origin) = match root(&spans) {
            Some(r) => (
                spans
                    .iter()
                    .find_map(|s| s.metrics.get("_sampling_priority_v1"))
                    .map_or(PRIORITY_NONE, |p| *p as i32),
                r.meta.get("_dd.origin").cloned().unwrap_or_default(),
            ),
            None => (PRIORITY_NONE, String::new()),
        };
        let mut part = Vec::new();
        let mut part_bytes = 0;
        for s in spans {
            let n = s.encoded_len();
            if !part.is_empty() && part_bytes + n > PAYLOAD_BUDGET {
                chunks.push(chunk(priority, &origin, std::mem::take(&mut part)));
                part_bytes = 0;
            }
            part_bytes += n;
            part.push(s);
        }
        chunks.push(chunk(priority, &origin, part));
    }
    let mut out = Vec::new();
    let mut cur: Option<TracerPayload> = None;
    let mut cur_bytes = 0;
    for c in chunks {
        let n = c.encoded_len();
        if cur.is_some() && cur_bytes + n > PAYLOAD_BUDGET {
            out.extend(cur.take());
            cur_bytes = 0;
        }
        let p = cur.get_or_insert_with(|| new_payload(meta, &c));
        cur_bytes += n;
        p.chunks.push(c);
    }
    out.extend(cur);
    (out, spans_total)
}

fn chunk(priority: i32, origin: &str, spans: Vec<Span>) -> TraceChunk {
    TraceChunk {
        priority,
        origin: origin.to_owned(),
        spans,
        ..Default::default()
    }
}

/// A tracer payload for `meta`, with env / hostname / version taken from the first chunk's
/// root span, as the Datadog agent does.
fn new_payload(meta: &TracerMeta, first: &TraceChunk) -> TracerPayload {
    let r = root(&first.spans);
    let get = |k: &str| r.and_then(|s| s.meta.get(k)).cloned().unwrap_or_default();
    TracerPayload {
        container_id: meta.container_id.clone(),
        language_name: meta.lang.clone(),
        language_version: meta.lang_version.clone(),
        tracer_version: meta.tracer_version.clone(),
        runtime_id: get("runtime-id"),
        env: get("env"),
        hostname: get("_dd.hostname"),
        app_version: get("version"),
        ..Default::default()
    }
}

/// Entry point for the fuzz targets in `fuzz/` (no stability promise): the intake's decode
/// and chunking path without the HTTP layer around it.
#[doc(hidden)]
pub mod fuzzing {
    use super::{TracerMeta, build_payloads, decode};
    use warden_proto::trace::TracerPayload;

    /// Decodes `body` as `/v0.5/traces` (`v05`) or `/v0.4/traces`, msgpack or `json`, and
    /// groups the spans into tracer payloads; returns them and the span count, or the 400
    /// message.
    pub fn decode_and_chunk(
        v05: bool,
        json: bool,
        body: &[u8],
    ) -> Result<(Vec<TracerPayload>, usize), String> {
        let version = if v05 {
            decode::Version::V05
        } else {
            decode::Version::V04
        };
        let meta = TracerMeta {
            lang: "fuzz".into(),
            lang_version: String::new(),
            tracer_version: String::new(),
            container_id: String::new(),
        };
        decode::decode(version, json, body)
            .map(|traces| build_payloads(traces, &meta))
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
