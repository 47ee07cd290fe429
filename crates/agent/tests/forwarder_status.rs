//! Response handling (`agent.md` §3): 400/403/413 are dropped and counted, everything else is
//! retried with backoff until delivered.

mod forwarder_support;

use std::time::Duration;

use forwarder_support::*;
use warden_agent::Outgoing;
use warden_testkit::Receiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_400_403_413_are_dropped_and_counted() {
    let rx = Receiver::start(KEY).await;
    let cfg = config(&rx.url(), Some(rx.ca_file()), FAST_BACKOFF);
    let fwd = spawn(&cfg);
    for (i, status) in [400u16, 403, 413].into_iter().enumerate() {
        rx.fail_next(status, 1);
        fwd.send(Outgoing::Series(vec![gauge("rejected", i as f64, 1)]))
            .await;
        assert!(
            rx.wait_for(Duration::from_secs(10), |s| s.requests.len() == i + 1)
                .await
        );
    }
    fwd.send(Outgoing::Series(vec![gauge("accepted", 9.0, 1)]))
        .await;
    assert!(
        rx.wait_for(Duration::from_secs(10), |s| s.values_of("accepted")
            == [9.0])
            .await
    );
    // Give a wrongly retried payload time to show up before checking that none did.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = rx.state();
    let statuses: Vec<u16> = st.requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 403, 413, 202]);
    assert!(st.values_of("rejected").is_empty());
    assert_eq!(fwd.get(|t| &t.payloads_rejected), 3);
    assert_eq!(fwd.get(|t| &t.payloads_dropped), 3);
    assert_eq!(fwd.get(|t| &t.payloads_retried), 0);
    // The receiver records before it answers; the forwarder counts after the answer.
    assert!(
        fwd.wait_telemetry(Duration::from_secs(5), |t| load(&t.payloads_sent) == 1)
            .await
    );
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_key_is_rejected_by_the_intake_and_not_retried() {
    let rx = Receiver::start("the-real-key").await;
    let cfg = config(&rx.url(), Some(rx.ca_file()), FAST_BACKOFF);
    let fwd = spawn(&cfg);
    fwd.send(Outgoing::Series(vec![gauge("badkey", 1.0, 1)]))
        .await;
    assert!(
        fwd.wait_telemetry(Duration::from_secs(10), |t| load(&t.payloads_rejected) == 1)
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(rx.requests()[0].status, 403);
    assert_eq!(fwd.get(|t| &t.payloads_dropped), 1);
    assert_eq!(fwd.get(|t| &t.queue_bytes), 0);
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_500_429_404_are_retried_then_delivered() {
    let rx = Receiver::start(KEY).await;
    rx.fail_next(500, 2);
    rx.fail_next(429, 1);
    rx.fail_next(404, 1);
    let cfg = config(&rx.url(), Some(rx.ca_file()), FAST_BACKOFF);
    let fwd = spawn(&cfg);
    fwd.send(Outgoing::Series(vec![gauge("retried", 5.0, 1)]))
        .await;
    assert!(
        rx.wait_for(Duration::from_secs(15), |s| s.values_of("retried") == [5.0])
            .await,
        "{:?}",
        rx.requests()
    );
    let statuses: Vec<u16> = rx.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 429, 404, 202]);
    assert_eq!(fwd.get(|t| &t.payloads_retried), 4);
    // The receiver records before it answers; the forwarder counts after the answer.
    assert!(
        fwd.wait_telemetry(Duration::from_secs(5), |t| load(&t.payloads_sent) == 1)
            .await
    );
    assert_eq!(fwd.get(|t| &t.payloads_dropped), 0);
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_intake_times_out_and_the_payload_is_retried() {
    let rx = Receiver::start(KEY).await;
    rx.set_delay(Duration::from_secs(30));
    let extra = "forwarder_timeout: 1\nforwarder_backoff_base: 0.05\nforwarder_backoff_max: 0.2\n";
    let cfg = config(&rx.url(), Some(rx.ca_file()), extra);
    let fwd = spawn(&cfg);
    let started = std::time::Instant::now();
    fwd.send(Outgoing::Series(vec![gauge("slow", 4.0, 1)]))
        .await;
    assert!(
        fwd.wait_telemetry(Duration::from_secs(5), |t| load(&t.payloads_retried) >= 1)
            .await,
        "the 1 s forwarder_timeout fired"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    rx.set_delay(Duration::ZERO);
    assert!(
        rx.wait_for(Duration::from_secs(10), |s| s
            .values_of("slow")
            .contains(&4.0))
            .await
    );
    assert_eq!(fwd.get(|t| &t.payloads_dropped), 0);
    fwd.stop().await;
}
