//! TLS policy of the forwarder against a real receiver: trust only the configured CA, honour
//! `min_tls_version`, refuse plaintext unless explicitly allowed, and never drop a payload
//! because of a certificate problem (it stays queued for retry).

mod forwarder_support;

use std::time::Duration;

use forwarder_support::*;
use warden_agent::Outgoing;
use warden_agent::forwarder::{Forwarder, ForwarderError};
use warden_agent::telemetry::Telemetry;
use warden_testkit::{Mode, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificate_is_retried_never_delivered_or_dropped() {
    let rx = Receiver::start(KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = warden_testkit::write_unrelated_ca(dir.path()).unwrap();
    let cfg = config(&rx.url(), Some(&other_ca), FAST_BACKOFF);
    let fwd = spawn(&cfg);
    fwd.send(Outgoing::Series(vec![gauge("tls.untrusted", 1.0, 1)]))
        .await;
    assert!(
        fwd.wait_telemetry(Duration::from_secs(10), |t| load(&t.payloads_retried) >= 3)
            .await,
        "the payload is retried"
    );
    // No request ever reached the HTTP layer: the handshake failed before.
    assert!(rx.requests().is_empty(), "{:?}", rx.requests());
    assert_eq!(fwd.get(|t| &t.payloads_sent), 0);
    assert_eq!(fwd.get(|t| &t.payloads_dropped), 0);
    assert_eq!(fwd.get(|t| &t.payloads_rejected), 0);
    assert!(fwd.get(|t| &t.queue_bytes) > 0, "payload still queued");
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_roots_do_not_trust_a_private_ca() {
    // Without tls_ca_file the system bundle is used, which must not trust the test CA.
    let rx = Receiver::start(KEY).await;
    let cfg = config(&rx.url(), None, FAST_BACKOFF);
    let fwd = spawn(&cfg);
    fwd.send(Outgoing::Series(vec![gauge("tls.system", 1.0, 1)]))
        .await;
    assert!(
        fwd.wait_telemetry(Duration::from_secs(10), |t| load(&t.payloads_retried) >= 1)
            .await
    );
    assert!(rx.requests().is_empty());
    assert_eq!(fwd.get(|t| &t.payloads_dropped), 0);
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_tls13_refuses_a_tls12_only_intake_which_tls12_accepts() {
    let rx = Receiver::start_with(KEY, Mode::Tls12Only).await.unwrap();

    let strict = config(
        &rx.url(),
        Some(rx.ca_file()),
        &format!("min_tls_version: tlsv1.3\n{FAST_BACKOFF}"),
    );
    let fwd = spawn(&strict);
    fwd.send(Outgoing::Series(vec![gauge("tls.v13", 1.0, 1)]))
        .await;
    assert!(
        fwd.wait_telemetry(Duration::from_secs(10), |t| load(&t.payloads_retried) >= 2)
            .await
    );
    assert!(rx.requests().is_empty(), "no TLS 1.3 handshake possible");
    assert_eq!(fwd.get(|t| &t.payloads_dropped), 0);
    fwd.stop().await;

    let default = config(&rx.url(), Some(rx.ca_file()), FAST_BACKOFF);
    let fwd = spawn(&default);
    fwd.send(Outgoing::Series(vec![gauge("tls.v12", 2.0, 1)]))
        .await;
    assert!(
        rx.wait_for(Duration::from_secs(10), |s| s.values_of("tls.v12") == [2.0])
            .await
    );
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_needs_allow_insecure_http() {
    let rx = Receiver::start_with(KEY, Mode::Plain).await.unwrap();
    assert!(rx.url().starts_with("http://"));
    let mut cfg = config(&rx.url(), None, "allow_insecure_http: true\n");
    // The config loader refuses this combination already; the forwarder must too, on its own.
    cfg.allow_insecure_http = false;
    let err = Forwarder::new(&cfg, Default::default()).unwrap_err();
    assert!(matches!(err, ForwarderError::InsecureUrl { .. }), "{err}");
    assert!(err.to_string().contains("allow_insecure_http"), "{err}");

    cfg.allow_insecure_http = true;
    let fwd = spawn(&cfg);
    fwd.send(Outgoing::Series(vec![gauge("plain.ok", 3.0, 1)]))
        .await;
    assert!(
        rx.wait_for(Duration::from_secs(10), |s| s.values_of("plain.ok")
            == [3.0])
            .await
    );
    fwd.stop().await;
}

#[tokio::test]
async fn unreadable_or_empty_ca_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let cfg = config("https://127.0.0.1:1", Some(&missing), "");
    let err = Forwarder::new(&cfg, std::sync::Arc::new(Telemetry::default())).unwrap_err();
    assert!(matches!(err, ForwarderError::CaFile { .. }), "{err}");
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let cfg = config("https://127.0.0.1:1", Some(&empty), "");
    let err = Forwarder::new(&cfg, Default::default()).unwrap_err();
    assert!(
        matches!(err, ForwarderError::NoCertificates { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("empty.pem"), "{err}");
}
