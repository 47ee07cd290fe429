//! End to end through a network split: the intake goes away for 60 s while DogStatsD traffic
//! keeps coming, the agent is restarted in the middle, and when the intake returns every point
//! the agent received must arrive (disk queue). With only a tiny memory queue, the oldest
//! payloads are dropped, counted, and the newest still arrive.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod support;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;
use warden_testkit::Receiver;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Sends packed datagrams of 20 counter increments every 10 ms while `run` is set and
/// `paused` is not; counts the lines sent.
struct Load {
    run: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, line: &'static str) -> Load {
        let run = Arc::new(AtomicBool::new(true));
        let paused = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (r, p, s) = (run.clone(), paused.clone(), sent.clone());
        let handle = std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let datagram: String = std::iter::repeat_n(line, 20).collect::<Vec<_>>().join("\n");
            while r.load(Ordering::SeqCst) {
                if !p.load(Ordering::SeqCst) {
                    sock.send_to(datagram.as_bytes(), ("127.0.0.1", port))
                        .unwrap();
                    s.fetch_add(20, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Load {
            run,
            paused,
            sent,
            handle: Some(handle),
        }
    }

    fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::SeqCst);
        // Let an in-flight send finish before the caller acts.
        std::thread::sleep(Duration::from_millis(30));
    }

    fn stop(mut self) -> u64 {
        self.run.store(false, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.sent.load(Ordering::SeqCst)
    }
}

/// Sum over every received point of `value × interval` for a counter: the number of
/// increments the intake learned about.
fn received_count(state: &warden_testkit::State, metric: &str) -> f64 {
    state
        .series
        .iter()
        .filter(|s| s.metric == metric)
        .flat_map(|s| s.points.iter().map(move |p| p.value * s.interval as f64))
        .sum()
}

#[test]
fn sixty_second_outage_with_restart_loses_nothing_with_the_disk_queue() {
    let rt = runtime();
    let receiver = rt.block_on(Receiver::start("outage-key"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "api_key: outage-key\nserver_url: {}\ntls_ca_file: {}\nhostname: outage-host\n\
             dogstatsd_port: {port}\ncollect_host_metrics: false\n\
             forwarder_backoff_base: 0.5\nforwarder_backoff_max: 2\n\
             forwarder_retry_queue_payloads_max_size: 65536\n\
             forwarder_storage_max_size_in_bytes: 67108864\n",
            receiver.url(),
            receiver.ca_file().display()
        ),
    );
    let agent = Agent::start(&cfg);
    agent.wait_started();
    let load = Load::start(port, "outage.count:1|c|#run:disk");
    std::thread::sleep(Duration::from_secs(3));

    rt.block_on(receiver.set_down(true));
    let down_at = Instant::now();
    std::thread::sleep(Duration::from_secs(30));

    // Restart the agent in the middle of the outage: what it holds must survive on disk.
    load.pause(true);
    let st = agent.stop();
    assert!(st.success(), "agent exit {st:?}");
    let agent = Agent::start(&cfg);
    agent.wait_started();
    assert!(
        agent.log_text().contains("found payloads queued on disk"),
        "the restarted agent should find the spilled payloads:\n{}",
        agent.log_text()
    );
    load.pause(false);

    let remaining = Duration::from_secs(60).saturating_sub(down_at.elapsed());
    std::thread::sleep(remaining);
    let sent = load.stop();
    rt.block_on(receiver.set_down(false));

    let all_arrived = rt.block_on(receiver.wait_for(Duration::from_secs(60), |s| {
        received_count(s, "outage.count") >= sent as f64
    }));
    let got = received_count(&receiver.state(), "outage.count");
    assert!(
        all_arrived,
        "sent {sent} increments, intake saw {got}; log:\n{}",
        agent.log_text()
    );
    assert_eq!(got, sent as f64, "no point lost and none duplicated");
    assert!(sent > 50_000, "the load was real: {sent} lines");
    drop(agent);
}

#[test]
fn tiny_memory_queue_drops_the_oldest_and_counts_them() {
    let rt = runtime();
    let receiver = rt.block_on(Receiver::start("tiny-key"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "api_key: tiny-key\nserver_url: {}\ntls_ca_file: {}\nhostname: tiny-host\n\
             dogstatsd_port: {port}\ncollect_host_metrics: false\n\
             forwarder_backoff_base: 0.5\nforwarder_backoff_max: 1\n\
             forwarder_retry_queue_payloads_max_size: 1500\n",
            receiver.url(),
            receiver.ca_file().display()
        ),
    );
    let agent = Agent::start(&cfg);
    agent.wait_started();
    rt.block_on(receiver.set_down(true));

    // One timestamped gauge per second of outage (`|T` samples skip aggregation, so each
    // becomes its own payload at the next 1 s flush): tick 0 is the oldest.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ticks = 25;
    for i in 0..ticks {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let line = format!("tiny.tick:{i}|g|#tick:{i}|T{now}");
        sock.send_to(line.as_bytes(), ("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    // Let the last flush be queued, then restore the intake.
    std::thread::sleep(Duration::from_secs(2));
    rt.block_on(receiver.set_down(false));
    let newest = f64::from(ticks - 1);
    let ok = rt.block_on(receiver.wait_for(Duration::from_secs(30), |s| {
        s.values_of("tiny.tick").contains(&newest)
            && s.values_of("warden.agent.payloads_evicted")
                .iter()
                .sum::<f64>()
                > 0.0
    }));
    let state = receiver.state();
    let ticks_seen = state.values_of("tiny.tick");
    let evicted: f64 = state
        .values_of("warden.agent.payloads_evicted")
        .iter()
        .sum();
    assert!(
        ok,
        "newest tick and eviction telemetry expected; ticks {ticks_seen:?}, evicted {evicted}\n{}",
        agent.log_text()
    );
    assert!(
        !ticks_seen.contains(&0.0),
        "the oldest tick should have been dropped: {ticks_seen:?}"
    );
    assert!(
        ticks_seen.len() < ticks as usize,
        "some ticks must be missing: {ticks_seen:?}"
    );
    assert!(
        evicted >= 1.0,
        "evictions are counted in warden.agent.payloads_evicted"
    );
}
