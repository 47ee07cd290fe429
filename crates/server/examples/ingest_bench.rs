//! Ingest and query throughput of an in-process server over real TLS sockets.
//!
//! `cargo run --release -p warden-server --example ingest_bench -- [SECONDS] [CLIENTS]`
//!
//! Each client posts `/api/v2/series` protobuf payloads of 100 series × 10 points (zstd) in a
//! loop; every 202 is durable (fsynced group commit). Then a `by {host}` query over all series
//! is timed. Prints requests/s, points/s and latency percentiles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use prost::Message;
use warden_proto as proto;
use warden_server::{KeyKind, Server, ServerOptions};

const SERIES: usize = 100;
const POINTS: i64 = 10;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let clients: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(
        tmp.path(),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .unwrap();
    let api = server
        .keys()
        .create_key("bench", KeyKind::Api, "bench")
        .unwrap()
        .secret;
    let app = server
        .keys()
        .create_key("bench", KeyKind::App, "bench")
        .unwrap()
        .secret;
    let pem = std::fs::read(server.ca_file().unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let url = server.url();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let base = now - 6 * 3600;
    let stop = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url, api) = (client.clone(), url.clone(), api.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut round: i64 = 0;
            while Instant::now() < stop {
                let series = (0..SERIES)
                    .map(|s| proto::MetricSeries {
                        metric: "bench.cpu".into(),
                        tags: vec![format!("client:{c}"), "env:bench".into()],
                        resources: vec![proto::Resource {
                            r#type: "host".into(),
                            name: format!("host-{s}"),
                        }],
                        points: (0..POINTS)
                            .map(|p| proto::MetricPoint {
                                value: (round * POINTS + p) as f64 * 0.5,
                                timestamp: base + (round * POINTS + p) % 20_000,
                            })
                            .collect(),
                        r#type: 3,
                        ..Default::default()
                    })
                    .collect();
                let body = proto::MetricPayload { series }.encode_to_vec();
                let body = zstd::encode_all(body.as_slice(), 1).unwrap();
                let t = Instant::now();
                let r = client
                    .post(format!("{url}/api/v2/series"))
                    .header("DD-API-KEY", &api)
                    .header("Content-Type", "application/x-protobuf")
                    .header("Content-Encoding", "zstd")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                lat.push(t.elapsed());
                round += 1;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let el = started.elapsed().as_secs_f64();
    lat.sort();
    let reqs = lat.len();
    let points = reqs * SERIES * POINTS as usize;
    println!(
        "ingest: {clients} clients, {secs} s: {reqs} requests ({:.0}/s), {points} points ({:.0}/s), latency p50 {:?} p99 {:?}",
        reqs as f64 / el,
        points as f64 / el,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    let mut qlat = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = client
            .get(format!("{url}/api/v1/query"))
            .query(&[
                ("from", base.to_string()),
                ("to", (base + 20_000).to_string()),
                ("query", "avg:bench.cpu{env:bench} by {host}".to_string()),
            ])
            .header("DD-API-KEY", &api)
            .header("DD-APPLICATION-KEY", &app)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let _ = r.bytes().await.unwrap();
        qlat.push(t.elapsed());
    }
    qlat.sort();
    println!(
        "query: avg by {{host}} over {} series × ≤20000 s: median {:?}, max {:?}",
        SERIES * clients,
        pct(&qlat, 0.5),
        qlat[qlat.len() - 1]
    );
    let st = server.store().stats();
    println!(
        "store: {} series, {} points, {} bytes on disk",
        st.series, st.points, st.bytes_on_disk
    );
}
