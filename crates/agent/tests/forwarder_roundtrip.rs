//! Forwarder → real HTTPS receiver: every payload kind arrives with exact values and the
//! Datadog headers.

mod forwarder_support;

use std::time::Duration;

use forwarder_support::*;
use serde_json::json;
use warden_agent::Outgoing;
use warden_model::{
    AlertType, CheckStatus, DDSketch, Event, MetricKind, Point, Priority, Series, ServiceCheck,
    SketchSeries,
};
use warden_testkit::Receiver;

fn sample_series() -> Vec<Series> {
    vec![
        Series {
            name: "app.requests".into(),
            tags: vec!["env:prod".into(), "service:api".into()],
            host: "web-1".into(),
            kind: MetricKind::Count,
            interval: 10,
            unit: Some("request".into()),
            source_type_name: Some("dogstatsd".into()),
            points: vec![
                Point {
                    timestamp: 1_700_000_000,
                    value: 42.0,
                },
                Point {
                    timestamp: 1_700_000_010,
                    value: 7.25,
                },
            ],
        },
        Series {
            name: "app.rate".into(),
            tags: vec![],
            host: String::new(),
            kind: MetricKind::Rate,
            interval: 15,
            unit: None,
            source_type_name: None,
            points: vec![Point {
                timestamp: 1_700_000_005,
                value: -3.5,
            }],
        },
        gauge("app.temp", 21.5, 1_700_000_001),
    ]
}

fn sample_sketch() -> (SketchSeries, DDSketch) {
    let mut sk = DDSketch::new();
    for v in [1.0, 2.0, 2.0, 10.0, 250.5] {
        sk.insert(v);
    }
    (
        SketchSeries {
            name: "app.latency".into(),
            tags: vec!["route:/x".into()],
            host: "web-1".into(),
            points: vec![(1_700_000_000, sk.clone())],
        },
        sk,
    )
}

async fn round_trip(extra: &str, expect_encoding: &str) {
    let rx = Receiver::start(KEY).await;
    let cfg = config(&rx.url(), Some(rx.ca_file()), extra);
    let fwd = spawn(&cfg);

    fwd.send(Outgoing::Series(sample_series())).await;
    let (sketch, sk) = sample_sketch();
    fwd.send(Outgoing::Sketches(vec![sketch])).await;
    fwd.send(Outgoing::ServiceChecks(vec![ServiceCheck {
        name: "app.can_connect".into(),
        status: CheckStatus::Warning,
        host: "web-1".into(),
        timestamp: 1_700_000_002,
        tags: vec!["port:443".into()],
        message: Some("slow \"handshake\"".into()),
    }]))
    .await;
    fwd.send(Outgoing::Events(vec![
        Event {
            title: "Deploy".into(),
            text: "v1.2 → v1.3".into(),
            timestamp: Some(1_700_000_003),
            host: "web-1".into(),
            aggregation_key: Some("deploy-42".into()),
            priority: Priority::Low,
            source_type_name: Some("jenkins".into()),
            alert_type: AlertType::Success,
            tags: vec!["team:core".into()],
        },
        Event {
            title: "Note".into(),
            text: "plain".into(),
            timestamp: Some(1_700_000_004),
            host: "web-2".into(),
            aggregation_key: None,
            priority: Priority::Normal,
            source_type_name: None,
            alert_type: AlertType::Info,
            tags: vec![],
        },
    ]))
    .await;

    assert!(
        rx.wait_for(Duration::from_secs(10), |s| s.accepted == 4)
            .await,
        "all four payloads delivered: {:?}",
        rx.requests()
    );
    let st = rx.state();

    // Series: host as a resource, numeric types, interval, unit, source type, exact points.
    assert_eq!(st.series.len(), 3);
    let s = &st.series[0];
    assert_eq!(s.metric, "app.requests");
    assert_eq!(s.resources.len(), 1);
    assert_eq!(s.resources[0].r#type, "host");
    assert_eq!(s.resources[0].name, "web-1");
    assert_eq!(s.tags, ["env:prod", "service:api"]);
    assert_eq!(s.r#type, 1, "COUNT");
    assert_eq!(s.interval, 10);
    assert_eq!(s.unit, "request");
    assert_eq!(s.source_type_name, "dogstatsd");
    let pts: Vec<(i64, f64)> = s.points.iter().map(|p| (p.timestamp, p.value)).collect();
    assert_eq!(pts, [(1_700_000_000, 42.0), (1_700_000_010, 7.25)]);
    assert_eq!(st.series[1].r#type, 2, "RATE");
    assert!(st.series[1].resources.is_empty(), "no host, no resource");
    assert_eq!(st.series[1].points[0].value, -3.5);
    assert_eq!(st.series[2].r#type, 3, "GAUGE");
    assert_eq!(st.series[2].points[0].value, 21.5);

    // Sketch: summary and bins exactly as the sketch reports them.
    assert_eq!(st.sketches.len(), 1);
    let d = &st.sketches[0];
    assert_eq!(d.metric, "app.latency");
    assert_eq!(d.host, "web-1");
    assert_eq!(d.tags, ["route:/x"]);
    assert_eq!(d.dogsketches.len(), 1);
    let ds = &d.dogsketches[0];
    assert_eq!(ds.ts, 1_700_000_000);
    assert_eq!(ds.cnt, 5);
    assert_eq!(ds.min, 1.0);
    assert_eq!(ds.max, 250.5);
    assert_eq!(ds.sum, 265.5);
    assert_eq!(ds.avg, sk.avg());
    assert_eq!(ds.k, sk.keys());
    assert_eq!(ds.n, sk.counts());
    assert_eq!(ds.n.iter().sum::<u32>(), 5);

    // Service check: the agent's v1 JSON object.
    assert_eq!(
        st.check_runs,
        [
            json!({"check":"app.can_connect","host_name":"web-1","timestamp":1_700_000_002,
                "status":1,"message":"slow \"handshake\"","tags":["port:443"]})
        ]
    );

    // Events: grouped by source type (`api` when none), agent field names.
    assert_eq!(st.intake_bodies.len(), 1);
    let body = &st.intake_bodies[0];
    assert_eq!(body["internalHostname"], "test-host");
    assert_eq!(
        body["events"]["jenkins"][0],
        json!({"msg_title":"Deploy","msg_text":"v1.2 → v1.3","timestamp":1_700_000_003,
               "priority":"low","host":"web-1","tags":["team:core"],"alert_type":"success",
               "aggregation_key":"deploy-42","source_type_name":"jenkins"})
    );
    assert_eq!(
        body["events"]["api"][0],
        json!({"msg_title":"Note","msg_text":"plain","timestamp":1_700_000_004,
               "priority":"normal","host":"web-2","alert_type":"info"})
    );

    // Headers.
    for r in &st.requests {
        assert_eq!(r.status, 202);
        assert_eq!(r.header("dd-api-key"), Some(KEY));
        assert_eq!(r.header("content-encoding"), Some(expect_encoding));
        assert!(
            r.header("user-agent")
                .is_some_and(|u| u.starts_with("warden-agent/")),
            "{r:?}"
        );
        assert!(r.header("dd-agent-version").is_some(), "{r:?}");
        let proto = r.path == "/api/v2/series" || r.path == "/api/beta/sketches";
        let ct = if proto {
            "application/x-protobuf"
        } else {
            "application/json"
        };
        assert_eq!(r.header("content-type"), Some(ct), "{r:?}");
        assert_eq!(r.header("dd-agent-payload").is_some(), proto, "{r:?}");
    }

    // The receiver records before it answers; the forwarder counts after the answer.
    assert!(
        fwd.wait_telemetry(Duration::from_secs(5), |t| load(&t.payloads_sent) == 4)
            .await
    );
    assert_eq!(fwd.get(|t| &t.payloads_dropped), 0);
    assert_eq!(fwd.get(|t| &t.payloads_retried), 0);
    fwd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_kind_arrives_intact_over_tls_with_zstd() {
    round_trip("", "zstd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zlib_compression_is_sent_as_deflate() {
    round_trip("serializer_compressor_kind: zlib\n", "deflate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_split_and_every_point_arrives() {
    let rx = Receiver::start(KEY).await;
    let cfg = config(&rx.url(), Some(rx.ca_file()), "");
    let fwd = spawn(&cfg);
    // 25 000 points in 50 series: more than two payloads' worth of points.
    let batch: Vec<Series> = (0..50)
        .map(|i| Series {
            points: (0..500)
                .map(|j| Point {
                    timestamp: 1_700_000_000 + j,
                    value: (i * 500 + j) as f64,
                })
                .collect(),
            ..gauge(&format!("bulk.{i}"), 0.0, 0)
        })
        .collect();
    fwd.send(Outgoing::Series(batch)).await;
    assert!(
        rx.wait_for(Duration::from_secs(10), |s| s
            .series
            .iter()
            .map(|x| x.points.len())
            .sum::<usize>()
            == 25_000)
            .await
    );
    let st = rx.state();
    assert!(st.accepted >= 3, "split into {} payloads", st.accepted);
    let mut values: Vec<i64> = st
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.value as i64))
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..25_000).collect::<Vec<i64>>());
    fwd.stop().await;
}
