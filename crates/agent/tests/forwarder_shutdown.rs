//! Graceful shutdown: pending payloads are flushed to a healthy intake, persisted to the disk
//! queue when the intake is down (and sent by the next forwarder), and counted as dropped when
//! there is nowhere to keep them.

mod forwarder_support;

use std::sync::Arc;
use std::time::Duration;

use forwarder_support::*;
use tokio::sync::{mpsc, watch};
use warden_agent::Outgoing;
use warden_agent::forwarder::Forwarder;
use warden_agent::telemetry::Telemetry;
use warden_testkit::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_batches_already_handed_over() {
    let rx = Receiver::start(KEY).await;
    let cfg = config(&rx.url(), Some(rx.ca_file()), "");
    let fwd = spawn(&cfg);
    for i in 0..20 {
        fwd.send(Outgoing::Series(vec![gauge("flush", f64::from(i), 1)]))
            .await;
    }
    // Stop right away: whatever is still in the channel or queue must go out first.
    let telemetry = fwd.telemetry.clone();
    fwd.stop().await;
    let mut got = rx.state().values_of("flush");
    got.sort_by(f64::total_cmp);
    assert_eq!(got, (0..20).map(f64::from).collect::<Vec<_>>());
    assert_eq!(load(&telemetry.payloads_sent), 20);
    assert_eq!(load(&telemetry.payloads_dropped), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_persists_the_memory_queue_and_the_next_forwarder_sends_it() {
    let rx = Receiver::start(KEY).await;
    let store = tempfile::tempdir().unwrap();
    // Default (15 MiB) memory queue: nothing spills while running, only shutdown writes.
    let extra = format!(
        "{FAST_BACKOFF}forwarder_storage_max_size_in_bytes: 1000000\nforwarder_storage_path: {}\n",
        store.path().display()
    );
    let cfg = config(&rx.url(), Some(rx.ca_file()), &extra);
    rx.set_down(true).await;
    let fwd = spawn(&cfg);
    for i in 0..5 {
        fwd.send(Outgoing::Series(vec![gauge("persist", f64::from(i), 1)]))
            .await;
    }
    assert!(
        fwd.wait_telemetry(Duration::from_secs(5), |t| load(&t.payloads_retried) >= 1)
            .await
    );
    assert_eq!(
        fwd.get(|t| &t.disk_queue_bytes),
        0,
        "no spill while running"
    );
    let t1 = fwd.telemetry.clone();
    fwd.stop().await;
    assert!(load(&t1.disk_queue_bytes) > 0, "persisted at shutdown");
    assert_eq!(load(&t1.payloads_dropped), 0);
    assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 1);
    // The API key is rebuilt at send time, never written with the payloads.
    for f in std::fs::read_dir(store.path()).unwrap() {
        let path = f.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        assert!(data.len() > 32, "segment holds the payloads");
        assert!(
            !data.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "API key found in {}",
            path.display()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "segment readable by the agent user only");
    }

    rx.set_down(false).await;
    let fwd = spawn(&cfg);
    assert!(
        rx.wait_for(Duration::from_secs(10), |s| s.values_of("persist").len()
            == 5)
            .await
    );
    let mut got = rx.state().values_of("persist");
    got.sort_by(f64::total_cmp);
    assert_eq!(got, [0.0, 1.0, 2.0, 3.0, 4.0]);
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_disk_counts_undeliverable_payloads_as_dropped() {
    let rx = Receiver::start(KEY).await;
    let cfg = config(&rx.url(), Some(rx.ca_file()), FAST_BACKOFF);
    rx.set_down(true).await;
    let fwd = spawn(&cfg);
    for i in 0..4 {
        fwd.send(Outgoing::Series(vec![gauge("lost", f64::from(i), 1)]))
            .await;
    }
    let t = fwd.telemetry.clone();
    fwd.stop().await;
    assert_eq!(load(&t.payloads_sent), 0);
    assert_eq!(load(&t.payloads_dropped), 4);
    assert_eq!(load(&t.queue_bytes), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_channel_returns_once_everything_is_delivered() {
    let rx = Receiver::start(KEY).await;
    let cfg = config(&rx.url(), Some(rx.ca_file()), FAST_BACKOFF);
    let telemetry = Arc::new(Telemetry::default());
    let fwd = Forwarder::new(&cfg, telemetry.clone()).unwrap();
    let (tx, out_rx) = mpsc::channel(16);
    let (_keep, shutdown) = watch::channel(false);
    rx.fail_next(503, 2);
    let handle = tokio::spawn(fwd.run(out_rx, shutdown));
    tx.send(Outgoing::Series(vec![gauge("closed", 1.0, 1)]))
        .await
        .unwrap();
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("run returns after the queue drained")
        .unwrap();
    assert_eq!(rx.state().values_of("closed"), [1.0]);
    assert_eq!(load(&telemetry.payloads_retried), 2);
    assert_eq!(load(&telemetry.payloads_sent), 1);
}
