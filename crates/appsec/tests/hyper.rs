//! The layer on a plain hyper server (no axum): hyper's `Incoming` body is mapped to
//! `warden_appsec::Body`, the peer address given through `PeerAddr`, path params through
//! `PathParams`; real sockets, in-process.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tower_layer::Layer;
use tower_service::Service;
use warden_appsec::{Appsec, Body, Config, Mode, PathParams, PeerAddr, RequestHandle};

/// The application: counts calls, echoes the body, runs the file RASP hook on `?file=`.
#[derive(Clone)]
struct Echo(Arc<AtomicU64>);

impl Service<Request<Body>> for Echo {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let handle = req.extensions().get::<RequestHandle>().cloned();
            let file = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("file="))
                .map(str::to_string);
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            if let (Some(h), Some(f)) = (handle, file) {
                if h.check_file_open(&format!("/srv/data/{f}")).is_err() {
                    return Ok(Response::new(Body::from(Bytes::from_static(b"refused"))));
                }
            }
            Ok(Response::new(Body::from(body)))
        })
    }
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn start(appsec: Appsec, calls: Arc<AtomicU64>) -> u16 {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let svc = appsec.layer().layer(Echo(calls));
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let svc = svc.clone();
            tokio::spawn(async move {
                let hsvc =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let mut svc = svc.clone();
                        let mut req = req.map(Body::new);
                        req.extensions_mut().insert(PeerAddr(peer));
                        if let Some(id) = req.uri().path().strip_prefix("/items/") {
                            let p = PathParams(vec![("id".into(), pct_decode(id))]);
                            req.extensions_mut().insert(p);
                        }
                        async move { svc.call(req).await }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, hsvc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_service_is_protected() {
    let cfg = Config {
        agent: quiet(),
        enabled: true,
        mode: Mode::Block,
        rules_path: Some(common::shared("datadog-rules-1.18.2.json")),
        blocked_ips: vec![],
        ..Config::default()
    };
    let appsec = Appsec::builder(cfg).build().expect("appsec");
    let calls = Arc::new(AtomicU64::new(0));
    let port = start(appsec.clone(), calls.clone()).await;
    let _: SocketAddr = ([127, 0, 0, 1], port).into();

    let run = |req: common::HttpReq| {
        tokio::task::spawn_blocking(move || common::send(port, &req).expect("send"))
    };
    let req = |method: &str, target: &str, body: &str| common::HttpReq {
        id: target.into(),
        method: method.into(),
        target: target.into(),
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: body.as_bytes().to_vec(),
    };

    // Benign: the body reaches the handler intact after inspection.
    let r = run(req("POST", "/echo", "a=hello+world"))
        .await
        .expect("join");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a=hello+world");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // XSS in the form body: blocked before the handler.
    let r = run(req(
        "POST",
        "/echo",
        "q=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E",
    ))
    .await
    .expect("join");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Only detected by a rule without `confidence: 1` (libinjection, crs-942-100): reported,
    // not blocked, in block mode (as Datadog's recommended blocking policy); RASP is what
    // stops the actual SQL injection.
    let r = run(req("POST", "/echo", "q=1' OR '1'='1' --"))
        .await
        .expect("join");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Path params given by the application are inspected: the same segment elsewhere (only
    // in the raw URI, still encoded) passes.
    let xss = "%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E";
    let r = run(req("GET", &format!("/other/{xss}"), ""))
        .await
        .expect("join");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let r = run(req("GET", &format!("/items/{xss}"), ""))
        .await
        .expect("join");
    assert_eq!(r.status, 403, "XSS in a path param: {}", r.text());
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // RASP through the handle: the hook blocks, the layer answers for the handler.
    let r = run(req("GET", "/read?file=../../etc/shadow", ""))
        .await
        .expect("join");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_ne!(
        r.text(),
        "refused",
        "the layer's blocking response replaces the handler's"
    );

    // Denylist changed at run time: the peer itself (no trusted proxies) is blocked.
    appsec
        .set_blocked_ips(&["127.0.0.1".to_string()])
        .expect("denylist");
    let before = calls.load(Ordering::SeqCst);
    let r = run(req("GET", "/echo", "")).await.expect("join");
    assert_eq!(r.status, 403);
    assert_eq!(calls.load(Ordering::SeqCst), before);
    appsec.set_blocked_ips(&[]).expect("denylist");
    let r = run(req("GET", "/echo", "")).await.expect("join");
    assert_eq!(r.status, 200);
    assert!(appsec.set_blocked_ips(&["not-an-ip".to_string()]).is_err());
}

/// No trace shipping or remote configuration in these tests (no agent here).
fn quiet() -> warden_appsec::AgentConfig {
    warden_appsec::AgentConfig {
        trace: false,
        remote_config: false,
        ..Default::default()
    }
}

#[test]
fn disabled_or_misconfigured_instances() {
    let off = Appsec::builder(Config::default())
        .build()
        .expect("disabled");
    assert!(!off.is_enabled());
    // No ruleset configured: Warden's built-in one.
    let default = Appsec::builder(Config {
        enabled: true,
        agent: quiet(),
        ..Config::default()
    })
    .build()
    .expect("built-in ruleset");
    assert!(default.is_enabled());
    let bad = Appsec::builder(Config {
        enabled: true,
        ..Config::default()
    })
    .rules_json("[1, 2]")
    .build()
    .expect_err("not an object");
    assert!(bad.to_string().contains("not an object"), "{bad}");
    let missing = Appsec::builder(Config {
        enabled: true,
        rules_path: Some("/nonexistent/rules.json".into()),
        ..Config::default()
    })
    .build()
    .expect_err("missing file");
    assert!(
        missing.to_string().contains("/nonexistent/rules.json"),
        "{missing}"
    );
}
