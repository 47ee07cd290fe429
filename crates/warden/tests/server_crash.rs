//! `kill -9` of `warden server` during sustained ingest: after a restart on the same data
//! directory, every point that was answered 202 is there, with its exact value.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use server_support::*;
use warden_proto as proto;

const WRITERS: usize = 4;
const PER_REQUEST: i64 = 5;
/// Requests per writer at most (5000 distinct seconds per metric).
const MAX_REQUESTS: i64 = 1000;
/// Acknowledged requests (all writers) after which the server is killed.
const KILL_AFTER: usize = 2000;

fn value(i: i64) -> f64 {
    i as f64 * 1.25 + 0.5
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_point_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_tcp_port();
    let server = ServerProc::start(&dir, port, &[]);
    let api = create_key(&dir, "api", "default");
    let app = create_key(&dir, "app", "default");
    let url = server.url();
    let c = client(&server.ca_file());
    let base = now() - 5100;
    let acked_total = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (c, url, api, acked_total) = (c.clone(), url.clone(), api.clone(), acked_total.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked: Vec<i64> = Vec::new();
            for req in 0..MAX_REQUESTS {
                let points = (0..PER_REQUEST)
                    .map(|j| {
                        let i = req * PER_REQUEST + j;
                        proto::MetricPoint {
                            value: value(i),
                            timestamp: base + i,
                        }
                    })
                    .collect();
                let body = proto::MetricPayload {
                    series: vec![proto::MetricSeries {
                        metric: format!("crash.w{w}"),
                        tags: vec!["test:crash".into()],
                        points,
                        r#type: 3,
                        ..Default::default()
                    }],
                }
                .encode_to_vec();
                let res = c
                    .post(format!("{url}/api/v2/series"))
                    .header("DD-API-KEY", &api)
                    .header("Content-Type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().as_u16() == 202 => {
                        acked.extend((0..PER_REQUEST).map(|j| req * PER_REQUEST + j));
                        acked_total.fetch_add(1, Ordering::SeqCst);
                    }
                    // The server died mid-request: not acknowledged, stop writing.
                    _ => break,
                }
            }
            acked
        }));
    }
    // Kill while the writers are still busy.
    while acked_total.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "ingest too slow; log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    let elapsed = started.elapsed();
    let mut acked: Vec<Vec<i64>> = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(
        acked
            .iter()
            .all(|a| (a.len() as i64) < MAX_REQUESTS * PER_REQUEST),
        "a writer finished before the kill: not a test of sustained ingest"
    );
    eprintln!(
        "acknowledged {total} points in {} requests ({} writers) before kill -9 after {:.2} s",
        total as i64 / PER_REQUEST,
        WRITERS,
        elapsed.as_secs_f64()
    );

    // Restart on the same directory and read everything back.
    let server = ServerProc::start(&dir, port, &[]);
    for (w, idx) in acked.iter().enumerate() {
        // 1-second buckets, 1000 per query (the engine caps a query at 1500 points).
        let mut got = std::collections::HashMap::new();
        for window in 0..(MAX_REQUESTS * PER_REQUEST / 1000) {
            let from = base + window * 1000;
            let (st, v) = query(
                &c,
                &url,
                &api,
                &app,
                &format!("avg:crash.w{w}{{test:crash}}.rollup(avg, 1)"),
                // Overlapping windows: the grid's last bucket may end before `to`.
                from - 10,
                from + 1010,
            )
            .await;
            assert_eq!(st, 200, "{v}");
            got.extend(
                points_of(&v)
                    .into_iter()
                    .map(|(ms, val)| ((ms / 1000.0) as i64, val)),
            );
        }
        for i in idx {
            assert_eq!(
                got.get(&(base + i)),
                Some(&value(*i)),
                "writer {w}: acknowledged point {i} missing after kill -9; log:\n{}",
                server.log_text()
            );
        }
    }
}
