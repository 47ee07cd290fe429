//! The tower layer: inspects the request before the inner service runs (a blocked request
//! never reaches it), hands the per-request [`RequestHandle`] to the handler through the
//! request extensions, inspects the response status and headers afterwards, and reports.
//!
//! The request body is buffered up to `Limits::max_body_bytes` and handed on rebuilt from
//! the bytes (hence `B: From<Bytes>`); larger bodies announced by `Content-Length` pass
//! through uninspected, and a chunked body that grows past the limit is refused with 413,
//! because by then it has been consumed and cannot be handed on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};
use tower_layer::Layer;
use tower_service::Service;

use crate::addresses;
use crate::body::BoxError;
use crate::engine::{
    Appsec, Inner, PathParams, PeerAddr, RequestHandle, RequestReport, TraceLink, lock,
};

/// Tower layer adding app protection to a service (axum `Router::layer`, `ServiceBuilder`, or
/// a hyper service wrapped with `tower::ServiceBuilder`).
#[derive(Clone, Debug)]
pub struct AppsecLayer {
    appsec: Appsec,
}

impl AppsecLayer {
    pub fn new(appsec: Appsec) -> Self {
        AppsecLayer { appsec }
    }
}

impl<S> Layer<S> for AppsecLayer {
    type Service = AppsecService<S>;
    fn layer(&self, inner: S) -> AppsecService<S> {
        AppsecService {
            inner,
            appsec: self.appsec.clone(),
        }
    }
}

/// The service produced by [`AppsecLayer`].
#[derive(Clone, Debug)]
pub struct AppsecService<S> {
    inner: S,
    appsec: Appsec,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for AppsecService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: From<Bytes> + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        // The instance that was polled ready serves this request.
        let inner = std::mem::replace(&mut self.inner, clone);
        match self.appsec.inner.clone() {
            None => {
                let mut inner = inner;
                Box::pin(inner.call(req))
            }
            Some(app) => Box::pin(protect(app, inner, req)),
        }
    }
}

fn plain<RB: From<Bytes>>(status: StatusCode, msg: &'static str) -> Response<RB> {
    let mut r = Response::new(RB::from(Bytes::from_static(msg.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn protect<S, B, RB>(
    app: Arc<Inner>,
    mut inner: S,
    req: Request<B>,
) -> Result<Response<RB>, S::Error>
where
    S: Service<Request<B>, Response = Response<RB>>,
    B: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: From<Bytes>,
{
    let lim = app.cfg.limits;
    let started = std::time::Instant::now();
    let start_unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let (mut parts, body) = req.into_parts();

    // Bounded body buffering.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let (raw, body) =
        if body.is_end_stream() || declared.is_some_and(|n| n > lim.max_body_bytes as u64) {
            (None, body)
        } else {
            match Limited::new(body, lim.max_body_bytes).collect().await {
                Ok(c) => {
                    let b = c.to_bytes();
                    (Some(b.clone()), B::from(b))
                }
                Err(e) if e.is::<LengthLimitError>() => {
                    return Ok(plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large\n",
                    ));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "appsec: request body could not be read");
                    return Ok(plain(
                        StatusCode::BAD_REQUEST,
                        "request body could not be read\n",
                    ));
                }
            }
        };

    // Addresses.
    let mut a = Map::new();
    a.insert(
        "server.request.method".into(),
        Value::from(parts.method.as_str()),
    );
    a.insert(
        "server.request.uri.raw".into(),
        Value::String(addresses::truncate(
            parts.uri.to_string(),
            lim.max_string_length,
        )),
    );
    if let Some(q) = parts.uri.query() {
        a.insert(
            "server.request.query".into(),
            Value::Object(addresses::parse_urlencoded(q.as_bytes(), &lim)),
        );
    }
    let (headers, cookies) = addresses::headers_and_cookies(&parts.headers, &lim);
    a.insert(
        "server.request.headers.no_cookies".into(),
        Value::Object(headers),
    );
    if !cookies.is_empty() {
        a.insert("server.request.cookies".into(), Value::Object(cookies));
    }
    let route = app.route_fn.as_ref().and_then(|f| f(&parts.extensions));
    if let Some(p) = parts.extensions.get::<PathParams>() {
        let m: Map<String, Value> =
            p.0.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
        a.insert(
            "server.request.path_params".into(),
            addresses::bound(Value::Object(m), &lim),
        );
    } else if let Some(t) = &route {
        let m = addresses::path_params(t, parts.uri.path(), &lim);
        if !m.is_empty() {
            a.insert("server.request.path_params".into(), Value::Object(m));
        }
    }
    let peer = parts
        .extensions
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .or_else(|| app.peer_fn.as_ref().and_then(|f| f(&parts.extensions)));
    let client_ip = addresses::client_ip(peer, &parts.headers, &app.cfg.trusted_proxies);
    if let Some(ip) = client_ip {
        a.insert("http.client_ip".into(), Value::from(ip.to_string()));
    }
    if let Some(raw) = &raw {
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let pb = addresses::parse_body(ct, raw, &lim);
        if let Some(b) = pb.body {
            a.insert("server.request.body".into(), b);
        }
        if !pb.filenames.is_empty() {
            a.insert(
                "server.request.body.filenames".into(),
                Value::Array(pb.filenames),
            );
        }
    }

    let accept = parts.headers.get(header::ACCEPT).cloned();
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .map(|v| addresses::truncate(String::from_utf8_lossy(v.as_bytes()).into_owned(), 512));
    let trace = trace_link(&parts.headers);
    let method = parts.method.to_string();
    let uri = parts.uri.to_string();

    let handle = RequestHandle::new(Arc::clone(&app), app.shared.load().context(), client_ip);
    let response = if let Err(b) = handle.eval(Value::Object(a)) {
        b.to_response(accept.as_ref())
    } else {
        parts.extensions.insert(handle.clone());
        let resp = inner.call(Request::from_parts(parts, body)).await?;
        match handle.blocked() {
            Some(b) => b.to_response(accept.as_ref()),
            None => {
                let mut rh = Map::new();
                for (k, v) in resp.headers() {
                    if k != header::SET_COOKIE && rh.len() < lim.max_container_size {
                        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                        rh.insert(
                            k.as_str().to_string(),
                            Value::String(addresses::truncate(v, lim.max_string_length)),
                        );
                    }
                }
                let addrs = serde_json::json!({
                    "server.response.status": resp.status().as_str(),
                    "server.response.headers.no_cookies": rh,
                });
                match handle.eval(addrs) {
                    Ok(()) => resp,
                    Err(b) => b.to_response(accept.as_ref()),
                }
            }
        }
    };

    let m = {
        let mut g = lock(&handle.st.m);
        (
            std::mem::take(&mut g.events),
            std::mem::take(&mut g.tags),
            std::mem::take(&mut g.attributes),
            g.blocked.clone(),
            g.waf_ns,
            g.timeouts,
        )
    };
    let (events, tags, attributes, blocked, waf_ns, timeouts) = m;
    if !events.is_empty() || !tags.is_empty() || blocked.is_some() {
        let rules_version = lock(&handle.st.m)
            .ctx
            .ruleset()
            .rules_version()
            .map(str::to_string);
        app.sink.report(RequestReport {
            method,
            uri,
            route,
            client_ip,
            status: Some(response.status().as_u16()),
            blocked,
            events,
            tags,
            attributes,
            waf_duration_ns: waf_ns,
            waf_timeouts: timeouts,
            trace,
            user_agent,
            start_unix_ns,
            duration_ns: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            rules_version,
        });
    }
    Ok(response)
}

fn trace_link(h: &HeaderMap) -> TraceLink {
    let get = |k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(128).collect::<String>())
    };
    TraceLink {
        traceparent: get("traceparent"),
        datadog_trace_id: get("x-datadog-trace-id"),
        datadog_parent_id: get("x-datadog-parent-id"),
    }
}
