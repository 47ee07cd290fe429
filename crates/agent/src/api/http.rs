//! The HTTPS plumbing shared by the local API and the GUI: accept loop with connection and
//! time limits, body reading with a size cap, response helpers.
//!
//! Why limits on a loopback server: any local user can connect, including a compromised
//! low-privilege process; it must not be able to pin the agent's memory or tasks with slow or
//! endless requests before authentication even happens.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// The response type of every handler.
pub(crate) type Resp = Response<Full<Bytes>>;

/// Connections served at once; more wait in the kernel backlog.
const MAX_CONNECTIONS: usize = 32;
/// Time allowed for the TLS handshake and for request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection (a check run through the API is bounded by its timeout).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);
/// Largest request body read.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Serves HTTPS on `listener` until `stop` turns true, calling `handle` for each request.
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    tls: TlsAcceptor,
    handle: F,
    mut stop: watch::Receiver<bool>,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "local API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let tls = tls.clone();
        let handle = handle.clone();
        conns.spawn(async move {
            let _permit = permit;
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await
            else {
                tracing::debug!(%peer, "local TLS handshake failed or timed out");
                return;
            };
            let svc = service_fn(move |req| {
                let handle = handle.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .max_buf_size(64 * 1024);
            let conn = http.serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Binds a TCP listener, with `SO_REUSEADDR` so a restart does not wait for TIME_WAIT.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(64)
}

/// Reads the whole body, refusing more than [`MAX_BODY`] bytes.
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, Resp> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large or unreadable\n",
        )),
    }
}

/// A response with a body and content type.
pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    response(status, "text/plain; charset=utf-8", body)
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    response(status, "application/json", body)
}

/// Adds the headers every local response carries: nothing here may be cached or framed.
pub(crate) fn harden(r: &mut Resp) {
    let h = r.headers_mut();
    let mut set = |k: &'static str, v: &'static str| {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    };
    set("cache-control", "no-store");
    set("x-content-type-options", "nosniff");
    set("referrer-policy", "no-referrer");
    set("x-frame-options", "DENY");
}

/// True when the `Host` header names a loopback host and our port (guards against DNS
/// rebinding: a page from `evil.example` resolving to 127.0.0.1 sends `Host: evil.example`).
pub(crate) fn host_is_local(req: &Request<Incoming>, port: u16) -> bool {
    let Some(host) = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let Some((name, p)) = host.rsplit_once(':') else {
        return false;
    };
    p.parse::<u16>() == Ok(port) && crate::config::is_loopback_host(name)
}
