//! End to end: the official Python `datadog` DogStatsd client → `warden agent` (real binary,
//! real UDP) → forwarder over TLS → a real HTTPS receiver that decodes the payloads.
//! Every aggregated value is asserted against the numbers the DogStatsD spec defines.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;
use warden_proto::MetricType;
use warden_testkit::Receiver;

const PY_CLIENT: &str = r#"
import sys
from datadog.dogstatsd import DogStatsd
port = int(sys.argv[1])
s = DogStatsd(host="127.0.0.1", port=port, disable_telemetry=True, disable_buffering=False)
t = ["test:e2e", "team:core"]
for v in (1, 2, 3.5):
    s.gauge("e2e.gauge", v, tags=t)
for _ in range(5):
    s.increment("e2e.counter", 2, tags=t)
s.decrement("e2e.counter", 3, tags=t)
for v in range(1, 101):
    s.histogram("e2e.hist", v, tags=t)
    s.distribution("e2e.dist", v, tags=t)
for m in ("a", "b", "c", "a", "b"):
    s.set("e2e.set", m, tags=t)
s.timing("e2e.timer", 250, tags=t)
s.timing("e2e.timer", 750, tags=t)
s.event("deploy finished", "version 1.2\nall good", alert_type="success", aggregation_key="deploy-1", tags=t)
s.service_check("e2e.check", DogStatsd.CRITICAL, tags=t, message="db unreachable")
s.flush()
s.close_socket()
print("sent")
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn python_dogstatsd_client_values_arrive_exactly_aggregated() {
    let rt = runtime();
    let receiver = rt.block_on(Receiver::start("e2e-api-key"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "api_key: e2e-api-key\nserver_url: {}\ntls_ca_file: {}\nhostname: e2e-host\n\
             dogstatsd_port: {port}\ncollect_host_metrics: false\nforwarder_backoff_max: 1\n",
            receiver.url(),
            receiver.ca_file().display()
        ),
    );
    let agent = Agent::start(&cfg);
    agent.wait_started();

    // Everything must land in one 10 s bucket.
    align_to_bucket(1, 6);
    let out = Command::new(python())
        .arg("-c")
        .arg(PY_CLIENT)
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let arrived = rt.block_on(receiver.wait_for(Duration::from_secs(30), |s| {
        !s.values_of("e2e.gauge").is_empty()
            && !s.sketches.is_empty()
            && !s.events.is_empty()
            && !s.check_runs.is_empty()
    }));
    assert!(
        arrived,
        "payloads did not arrive; agent log:\n{}",
        agent.log_text()
    );
    let state = receiver.state();

    let one = |name: &str| -> (f64, i32, i64, Vec<String>, i64) {
        let s: Vec<_> = state.series.iter().filter(|s| s.metric == name).collect();
        assert_eq!(s.len(), 1, "exactly one series for {name}: {s:?}");
        let s = s[0];
        assert_eq!(s.points.len(), 1, "{name}: {:?}", s.points);
        assert!(
            s.resources
                .iter()
                .any(|r| r.r#type == "host" && r.name == "e2e-host"),
            "{s:?}"
        );
        let mut tags = s.tags.clone();
        tags.sort();
        (
            s.points[0].value,
            s.r#type,
            s.interval,
            tags,
            s.points[0].timestamp,
        )
    };
    let (g, gt, _, tags, ts) = one("e2e.gauge");
    assert_eq!(
        (g, gt),
        (3.5, MetricType::Gauge as i32),
        "gauge keeps the last value"
    );
    assert_eq!(tags, ["team:core", "test:e2e"]);
    assert_eq!(ts % 10, 0, "points are stamped with the bucket start");

    // 5 × 2 − 3 = 7 over 10 s → rate 0.7 with interval 10.
    let (c, ct, ci, ..) = one("e2e.counter");
    assert_eq!((ct, ci), (MetricType::Rate as i32, 10));
    assert!((c - 0.7).abs() < 1e-12, "counter rate {c}");

    // Histogram of 1..=100: spec aggregates max/median/avg/count and 95th percentile.
    assert_eq!(one("e2e.hist.max").0, 100.0);
    assert_eq!(one("e2e.hist.median").0, 50.0);
    assert_eq!(one("e2e.hist.avg").0, 50.5);
    let (hc, hct, ..) = one("e2e.hist.count");
    assert_eq!(
        (hc, hct),
        (10.0, MetricType::Rate as i32),
        "count is sent as a rate: 100/10"
    );
    assert_eq!(one("e2e.hist.95percentile").0, 95.0);
    assert_eq!(one("e2e.timer.max").0, 750.0);
    assert_eq!(one("e2e.timer.avg").0, 500.0);

    // Set: distinct members a, b, c.
    assert_eq!(one("e2e.set").0, 3.0);

    // Distribution: one sketch with exact summary statistics.
    let sk: Vec<_> = state
        .sketches
        .iter()
        .filter(|s| s.metric == "e2e.dist")
        .collect();
    assert_eq!(sk.len(), 1);
    assert_eq!(sk[0].host, "e2e-host");
    let d = &sk[0].dogsketches;
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].cnt, d[0].min, d[0].max, d[0].sum, d[0].avg),
        (100, 1.0, 100.0, 5050.0, 50.5)
    );
    assert_eq!(d[0].n.iter().map(|&n| u64::from(n)).sum::<u64>(), 100);

    // Event and service check.
    let ev = &state.events[0];
    assert_eq!(ev["msg_title"], "deploy finished");
    assert_eq!(ev["msg_text"], "version 1.2\nall good");
    assert_eq!(ev["alert_type"], "success");
    assert_eq!(ev["aggregation_key"], "deploy-1");
    assert_eq!(ev["host"], "e2e-host");
    let sc = &state.check_runs[0];
    assert_eq!(sc["check"], "e2e.check");
    assert_eq!(sc["status"], 2);
    assert_eq!(sc["message"], "db unreachable");
    assert_eq!(sc["host_name"], "e2e-host");
    let sc_ts = sc["timestamp"].as_i64().unwrap();
    assert!(
        (ts..ts + 60).contains(&sc_ts),
        "service check stamped on receipt: {sc_ts} vs bucket {ts}"
    );
    let mut sc_tags: Vec<&str> = sc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    sc_tags.sort_unstable();
    assert_eq!(sc_tags, ["team:core", "test:e2e"]);

    // The API key travels as DD-API-KEY on every request, payloads compressed with zstd.
    for r in state.requests.iter().filter(|r| r.status < 300) {
        assert_eq!(r.header("dd-api-key"), Some("e2e-api-key"));
        assert_eq!(r.header("content-encoding"), Some("zstd"), "{}", r.path);
    }
    let st = agent.stop();
    assert!(st.success(), "agent exit {st:?}");
}
