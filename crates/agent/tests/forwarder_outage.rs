//! Intake outages with payloads still flowing: with the disk queue nothing is lost (also
//! across a forwarder restart); with only a small memory queue the oldest payloads are dropped,
//! the newest delivered, and the drop counter says exactly how many.

mod forwarder_support;

use std::collections::BTreeSet;
use std::time::Duration;

use forwarder_support::*;
use warden_agent::Outgoing;
use warden_testkit::Receiver;

const METRIC: &str = "outage.seq";

/// Sends `range` as one single-point batch each, `gap` apart.
async fn feed(fwd: &Running, range: std::ops::Range<u32>, gap: Duration) {
    for i in range {
        fwd.send(Outgoing::Series(vec![gauge(
            METRIC,
            f64::from(i),
            1_700_000_000 + i64::from(i),
        )]))
        .await;
        tokio::time::sleep(gap).await;
    }
}

fn received(rx: &Receiver) -> Vec<u32> {
    rx.state()
        .values_of(METRIC)
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_queue_loses_nothing_through_an_outage() {
    let rx = Receiver::start(KEY).await;
    let store = tempfile::tempdir().unwrap();
    // A memory queue of a few payloads forces spills to disk during the outage.
    let extra = format!(
        "{FAST_BACKOFF}forwarder_retry_queue_payloads_max_size: 1500\n\
         forwarder_storage_max_size_in_bytes: 10000000\nforwarder_storage_path: {}\n",
        store.path().display()
    );
    let cfg = config(&rx.url(), Some(rx.ca_file()), &extra);
    let fwd = spawn(&cfg);

    feed(&fwd, 0..10, Duration::from_millis(10)).await;
    assert!(
        rx.wait_for(Duration::from_secs(10), |s| s.values_of(METRIC).len() == 10)
            .await
    );

    rx.set_down(true).await;
    feed(&fwd, 10..150, Duration::from_millis(20)).await;
    assert!(
        fwd.get(|t| &t.disk_queue_bytes) > 0,
        "the outage spilled to disk"
    );
    assert!(files_in(store.path()) > 0);
    assert!(fwd.get(|t| &t.payloads_retried) > 0);

    rx.set_down(false).await;
    // Keep producing while the backlog drains.
    feed(&fwd, 150..160, Duration::from_millis(20)).await;
    let all = rx
        .wait_for(Duration::from_secs(20), |s| {
            s.values_of(METRIC)
                .iter()
                .map(|v| *v as u32)
                .collect::<BTreeSet<_>>()
                .len()
                == 160
        })
        .await;
    let got: BTreeSet<u32> = received(&rx).into_iter().collect();
    let missing: Vec<u32> = (0..160).filter(|i| !got.contains(i)).collect();
    assert!(all, "missing after the outage: {missing:?}");
    assert_eq!(fwd.get(|t| &t.payloads_dropped), 0);
    assert_eq!(fwd.get(|t| &t.payloads_evicted), 0);
    assert!(
        fwd.wait_telemetry(Duration::from_secs(5), |t| load(&t.disk_queue_bytes) == 0
            && load(&t.queue_bytes) == 0)
            .await
    );
    assert_eq!(files_in(store.path()), 0, "delivered segments are deleted");
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_queue_survives_a_forwarder_restart_during_an_outage() {
    let rx = Receiver::start(KEY).await;
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "{FAST_BACKOFF}forwarder_retry_queue_payloads_max_size: 2000\n\
         forwarder_storage_max_size_in_bytes: 10000000\nforwarder_storage_path: {}\n",
        store.path().display()
    );
    let cfg = config(&rx.url(), Some(rx.ca_file()), &extra);
    rx.set_down(true).await;

    let first = spawn(&cfg);
    feed(&first, 0..80, Duration::from_millis(5)).await;
    // Shut down while the intake is still down: memory is persisted next to the spills.
    let first_telemetry = first.telemetry.clone();
    first.stop().await;
    assert_eq!(load(&first_telemetry.payloads_dropped), 0);
    assert_eq!(load(&first_telemetry.payloads_sent), 0);
    assert!(files_in(store.path()) > 0);
    assert!(received(&rx).is_empty());

    let second = spawn(&cfg);
    feed(&second, 80..90, Duration::from_millis(5)).await;
    rx.set_down(false).await;
    let ok = rx
        .wait_for(Duration::from_secs(20), |s| s.values_of(METRIC).len() >= 90)
        .await;
    let mut got = received(&rx);
    got.sort_unstable();
    assert!(ok, "received {} of 90: {got:?}", got.len());
    // Nothing lost, nothing duplicated (no delivery happened before the outage ended).
    assert_eq!(got, (0..90).collect::<Vec<u32>>());
    assert_eq!(second.get(|t| &t.payloads_dropped), 0);
    second.stop().await;
    assert_eq!(files_in(store.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_only_queue_drops_oldest_keeps_newest_and_counts_exactly() {
    let rx = Receiver::start(KEY).await;
    // Room for a handful of ~100-byte payloads, no disk queue.
    let extra = format!("{FAST_BACKOFF}forwarder_retry_queue_payloads_max_size: 1000\n");
    let cfg = config(&rx.url(), Some(rx.ca_file()), &extra);
    let fwd = spawn(&cfg);
    rx.set_down(true).await;
    const N: u32 = 60;
    feed(&fwd, 0..N, Duration::from_millis(10)).await;
    let evicted_during_outage = fwd.get(|t| &t.payloads_evicted);
    assert!(evicted_during_outage > 0, "the queue overflowed");
    rx.set_down(false).await;

    // Everything still queued is delivered; the rest was counted as evicted.
    let settled = fwd
        .wait_telemetry(Duration::from_secs(15), |t| {
            load(&t.payloads_sent) + load(&t.payloads_evicted) == u64::from(N)
                && load(&t.queue_bytes) == 0
        })
        .await;
    assert!(
        settled,
        "sent {} evicted {}",
        fwd.get(|t| &t.payloads_sent),
        fwd.get(|t| &t.payloads_evicted)
    );
    let got: BTreeSet<u32> = received(&rx).into_iter().collect();
    let missing: Vec<u32> = (0..N).filter(|i| !got.contains(i)).collect();
    let evicted = fwd.get(|t| &t.payloads_evicted);
    assert_eq!(missing.len() as u64, evicted, "missing {missing:?}");
    assert_eq!(fwd.get(|t| &t.payloads_dropped), evicted);
    // Exactly the oldest ones are gone and the newest arrived.
    assert_eq!(missing, (0..evicted as u32).collect::<Vec<u32>>());
    assert!(got.contains(&(N - 1)));
    assert_eq!(received(&rx).len(), got.len(), "no duplicates");
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_queue_drops_oldest_and_counts_exactly() {
    let rx = Receiver::start(KEY).await;
    let store = tempfile::tempdir().unwrap();
    // Tiny memory and a disk bound of a few segments: the outage overflows both.
    let extra = format!(
        "{FAST_BACKOFF}forwarder_retry_queue_payloads_max_size: 600\n\
         forwarder_storage_max_size_in_bytes: 2500\nforwarder_storage_path: {}\n",
        store.path().display()
    );
    let cfg = config(&rx.url(), Some(rx.ca_file()), &extra);
    let fwd = spawn(&cfg);
    rx.set_down(true).await;
    const N: u32 = 80;
    feed(&fwd, 0..N, Duration::from_millis(10)).await;
    assert!(
        fwd.get(|t| &t.payloads_evicted) > 0,
        "the disk bound was hit"
    );
    assert!(fwd.get(|t| &t.disk_queue_bytes) <= 2500);
    rx.set_down(false).await;
    let settled = fwd
        .wait_telemetry(Duration::from_secs(15), |t| {
            load(&t.payloads_sent) + load(&t.payloads_evicted) == u64::from(N)
                && load(&t.queue_bytes) == 0
                && load(&t.disk_queue_bytes) == 0
        })
        .await;
    assert!(
        settled,
        "sent {} evicted {}",
        fwd.get(|t| &t.payloads_sent),
        fwd.get(|t| &t.payloads_evicted)
    );
    let got: BTreeSet<u32> = received(&rx).into_iter().collect();
    let missing: Vec<u32> = (0..N).filter(|i| !got.contains(i)).collect();
    let evicted = fwd.get(|t| &t.payloads_evicted);
    assert_eq!(missing.len() as u64, evicted, "missing {missing:?}");
    assert_eq!(missing, (0..evicted as u32).collect::<Vec<u32>>());
    assert!(got.contains(&(N - 1)));
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_larger_than_the_memory_bound_goes_through_disk_and_is_delivered() {
    let rx = Receiver::start(KEY).await;
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "{FAST_BACKOFF}forwarder_retry_queue_payloads_max_size: 100\n\
         forwarder_storage_max_size_in_bytes: 1000000\nforwarder_storage_path: {}\n",
        store.path().display()
    );
    let cfg = config(&rx.url(), Some(rx.ca_file()), &extra);
    let fwd = spawn(&cfg);
    // 300 distinct points compress to well over 100 bytes.
    let big = warden_model::Series {
        points: (0..300)
            .map(|i| warden_model::Point {
                timestamp: 1_700_000_000 + i,
                value: (i as f64).sqrt(),
            })
            .collect(),
        ..gauge("big", 0.0, 0)
    };
    fwd.send(Outgoing::Series(vec![big])).await;
    assert!(
        rx.wait_for(Duration::from_secs(10), |s| s.values_of("big").len() == 300)
            .await
    );
    assert_eq!(rx.requests()[0].status, 202);
    assert!(rx.requests()[0].body_len > 100);
    assert_eq!(fwd.get(|t| &t.payloads_dropped), 0);
    fwd.stop().await;
}
