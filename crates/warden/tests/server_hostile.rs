//! Malformed and hostile intake payloads against the real `warden server` over TLS: every one
//! gets a 4xx with a message naming what is wrong, HSTS is on every answer, nothing from a
//! refused payload is stored, and a good series written first is still queryable after.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::io::Write;

use prost::Message;
use server_support::*;
use warden_proto as proto;

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// Substring of `errors[0]`.
    error: &'static str,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn series_pb(value: f64, ts: i64, t: i32) -> Vec<u8> {
    proto::MetricPayload {
        series: vec![proto::MetricSeries {
            metric: "hostile.bad".into(),
            points: vec![proto::MetricPoint {
                value,
                timestamp: ts,
            }],
            r#type: t,
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn v1(series: &str) -> Vec<u8> {
    format!(r#"{{"series":[{series}]}}"#).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_get_4xx_with_clear_errors_and_the_store_stays_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_tcp_port();
    let server = ServerProc::start(&dir, port, &[]);
    let api = create_key(&dir, "api", "default");
    let app = create_key(&dir, "app", "default");
    let c = client(&server.ca_file());
    let url = server.url();
    let now = now();

    // A good series first.
    let good_ts = now - 30;
    let r = c
        .post(format!("{url}/api/v1/series"))
        .header("DD-API-KEY", &api)
        .header("Content-Type", "text/json")
        .body(v1(&format!(
            r#"{{"metric":"hostile.good","points":[[{good_ts},42.5]],"tags":["t:1"]}}"#
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    let json = || ("Content-Type", "application/json".to_string());
    let pb = || ("Content-Type", "application/x-protobuf".to_string());
    let key = || ("DD-API-KEY", api.clone());
    let enc = |e: &str| ("Content-Encoding", e.to_string());
    let ok_point = format!("[[{now},1]]");
    let valid_pb = series_pb(1.0, now, 3);
    let mut sketch_bad = proto::SketchPayload {
        sketches: vec![proto::Sketch {
            metric: "hostile.bad".into(),
            dogsketches: vec![proto::Dogsketch {
                ts: now,
                cnt: 2,
                k: vec![1, 2, 3],
                n: vec![1],
                ..Default::default()
            }],
            ..Default::default()
        }],
        metadata: None,
    }
    .encode_to_vec();
    let many_tags: Vec<String> = (0..10_000).map(|i| format!("\"k{i}:v\"")).collect();
    let zeros = vec![b' '; 20 << 20];

    let mut cases = vec![
        Case {
            name: "truncated protobuf",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), pb()],
            body: valid_pb[..valid_pb.len() - 5].to_vec(),
            status: 400,
            error: "not a valid protobuf MetricPayload",
        },
        Case {
            name: "garbage protobuf",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), pb()],
            body: vec![0xff; 64],
            status: 400,
            error: "not a valid protobuf",
        },
        Case {
            name: "gzip header, plain body",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json(), enc("gzip")],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","points":{ok_point}}}"#
            )),
            status: 400,
            error: "not valid gzip data",
        },
        Case {
            name: "zstd garbage",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), pb(), enc("zstd")],
            body: b"\x28\xb5\x2f\xfd garbage".to_vec(),
            status: 400,
            error: "not valid zstd data",
        },
        Case {
            name: "truncated deflate",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), pb(), enc("deflate")],
            body: {
                let d = deflate(&valid_pb);
                d[..d.len() / 2].to_vec()
            },
            status: 400,
            error: "not valid deflate data",
        },
        Case {
            name: "gzip bomb (20 MiB in a few KiB) on v2",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), json(), enc("gzip")],
            body: gzip(&zeros),
            status: 413,
            error: "decompressed body exceeds the limit",
        },
        Case {
            name: "zstd bomb on v1",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json(), enc("zstd")],
            body: zstd::encode_all(zeros.as_slice(), 19).unwrap(),
            status: 413,
            error: "decompressed body exceeds the limit",
        },
        Case {
            name: "deflate bomb on check_run",
            method: "POST",
            path: "/api/v1/check_run",
            headers: vec![key(), json(), enc("deflate")],
            body: deflate(&zeros),
            status: 413,
            error: "decompressed body exceeds the limit",
        },
        Case {
            name: "unsupported encoding",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), pb(), enc("br")],
            body: valid_pb.clone(),
            status: 415,
            error: "unsupported Content-Encoding \"br\"",
        },
        Case {
            name: "v2 body over the compressed limit",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), pb()],
            body: vec![0u8; 600_000],
            status: 413,
            error: "request body exceeds the limit of 512000 bytes",
        },
        Case {
            name: "huge v1 body",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: vec![b' '; 4_000_000],
            status: 413,
            error: "request body exceeds the limit",
        },
        Case {
            name: "text/plain on v2",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), ("Content-Type", "text/plain".into())],
            body: valid_pb.clone(),
            status: 415,
            error: "unsupported Content-Type \"text/plain\"",
        },
        Case {
            name: "no content type on v2",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key()],
            body: valid_pb.clone(),
            status: 415,
            error: "unsupported Content-Type \"(none)\"",
        },
        Case {
            name: "protobuf on v1",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), pb()],
            body: valid_pb.clone(),
            status: 415,
            error: "this endpoint takes application/json",
        },
        Case {
            name: "JSON on sketches",
            method: "POST",
            path: "/api/beta/sketches",
            headers: vec![key(), json()],
            body: b"{}".to_vec(),
            status: 415,
            error: "application/x-protobuf",
        },
        Case {
            name: "bad JSON",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: br#"{"series": [{"metric": "hostile.bad""#.to_vec(),
            status: 400,
            error: "body is not valid JSON",
        },
        Case {
            name: "JSON array instead of object",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), json()],
            body: b"[1,2]".to_vec(),
            status: 400,
            error: "body: expected an object, got an array",
        },
        Case {
            name: "missing series",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: b"{}".to_vec(),
            status: 400,
            error: "body.series: missing required field",
        },
        Case {
            name: "empty series",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: br#"{"series":[]}"#.to_vec(),
            status: 400,
            error: "series: must contain at least one series",
        },
        Case {
            name: "missing metric",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(r#"{{"points":{ok_point}}}"#)),
            status: 400,
            error: "series[0].metric: missing required field",
        },
        Case {
            name: "missing points",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), json()],
            body: v1(r#"{"metric":"hostile.bad"}"#),
            status: 400,
            error: "series[0].points: missing required field",
        },
        Case {
            name: "metric is a number",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(r#"{{"metric":5,"points":{ok_point}}}"#)),
            status: 400,
            error: "series[0].metric: expected a string, got a number",
        },
        Case {
            name: "points is a string",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(r#"{"metric":"hostile.bad","points":"1,2"}"#),
            status: 400,
            error: "series[0].points: expected an array, got a string",
        },
        Case {
            name: "value is a string",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","points":[[{now},"12"]]}}"#
            )),
            status: 400,
            error: "series[0].points[0][1]: expected a number, got a string",
        },
        Case {
            name: "point with three elements",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","points":[[{now},1,2]]}}"#
            )),
            status: 400,
            error: "series[0].points[0]: expected [timestamp, value], got 3 elements",
        },
        Case {
            name: "10k tags",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","points":{ok_point},"tags":[{}]}}"#,
                many_tags.join(",")
            )),
            status: 400,
            error: "series[0].tags: 10000 tags, more than the limit of 256",
        },
        Case {
            name: "300-byte tag",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","points":{ok_point},"tags":["{}"]}}"#,
                "x".repeat(300)
            )),
            status: 400,
            error: "series[0].tags[0]: 300 bytes, longer than the limit of 200",
        },
        Case {
            name: "NaN literal in JSON",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","points":[[{now},NaN]]}}"#
            )),
            status: 400,
            error: "body is not valid JSON",
        },
        Case {
            name: "NaN in protobuf",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), pb()],
            body: series_pb(f64::NAN, now, 3),
            status: 400,
            error: "series[0].points[0]: value is NaN",
        },
        Case {
            name: "infinity in protobuf (gzip)",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), pb(), enc("gzip")],
            body: gzip(&series_pb(f64::INFINITY, now, 3)),
            status: 400,
            error: "series[0].points[0]: value is infinite",
        },
        Case {
            name: "timestamp 2 days ahead, after a good series (all or nothing)",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","points":[{{"timestamp":{now},"value":1}}]}},
                   {{"metric":"hostile.bad","points":[{{"timestamp":{},"value":1}}]}}"#,
                now + 2 * 86_400 + 60
            )),
            status: 400,
            error: "series[1].points[0]: timestamp is 2 days in the future",
        },
        Case {
            name: "timestamp 1000 days ago",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","points":[[{},1]]}}"#,
                now - 1000 * 86_400
            )),
            status: 400,
            error: "series[0].points[0]: timestamp is 1000 days in the past, older than the raw retention",
        },
        Case {
            name: "timestamp 1e300",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(r#"{"metric":"hostile.bad","points":[[1e300,1]]}"#),
            status: 400,
            error: "series[0].points[0][0]: timestamp 1e+300 is out of range",
        },
        Case {
            name: "unknown v1 type",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","type":"histogram","points":{ok_point}}}"#
            )),
            status: 400,
            error: "series[0].type: unknown metric type \"histogram\"",
        },
        Case {
            name: "unknown protobuf type",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), pb()],
            body: series_pb(1.0, now, 9),
            status: 400,
            error: "series[0].type: unknown metric type 9",
        },
        Case {
            name: "v2 JSON type as a string",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","type":"gauge","points":[{{"timestamp":{now},"value":1}}]}}"#
            )),
            status: 400,
            error: "series[0].type: expected an integer, got a string",
        },
        Case {
            name: "empty metric name",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(r#"{{"metric":"","points":{ok_point}}}"#)),
            status: 400,
            error: "series[0].metric: must not be empty",
        },
        Case {
            name: "metric name with a newline",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad\nx","points":{ok_point}}}"#
            )),
            status: 400,
            error: "series[0].metric: must not contain whitespace",
        },
        Case {
            name: "negative interval",
            method: "POST",
            path: "/api/v1/series",
            headers: vec![key(), json()],
            body: v1(&format!(
                r#"{{"metric":"hostile.bad","interval":-5,"points":{ok_point}}}"#
            )),
            status: 400,
            error: "series[0].interval: -5 is not between 0 and 86400",
        },
        Case {
            name: "check_run status 7",
            method: "POST",
            path: "/api/v1/check_run",
            headers: vec![key(), json()],
            body: br#"[{"check":"hostile.bad","status":7}]"#.to_vec(),
            status: 400,
            error: "[0].status: 7 is not a service check status",
        },
        Case {
            name: "check_run object instead of array",
            method: "POST",
            path: "/api/v1/check_run",
            headers: vec![key(), json()],
            body: br#"{"check":"hostile.bad","status":0}"#.to_vec(),
            status: 400,
            error: "body: expected an array, got an object",
        },
        Case {
            name: "intake events as an array",
            method: "POST",
            path: "/intake/",
            headers: vec![key(), json()],
            body: br#"{"events":[]}"#.to_vec(),
            status: 400,
            error: "events: expected an object, got an array",
        },
        Case {
            name: "truncated sketch protobuf",
            method: "POST",
            path: "/api/beta/sketches",
            headers: vec![key(), pb()],
            body: sketch_bad[..sketch_bad.len() - 3].to_vec(),
            status: 400,
            error: "not a valid protobuf SketchPayload",
        },
        Case {
            name: "sketch keys/counts mismatch",
            method: "POST",
            path: "/api/beta/sketches",
            headers: vec![key(), pb()],
            body: std::mem::take(&mut sketch_bad),
            status: 400,
            error: "sketches[0].dogsketches[0]",
        },
        Case {
            name: "no API key",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![pb()],
            body: valid_pb.clone(),
            status: 403,
            error: "Forbidden",
        },
        Case {
            name: "well-formed unknown API key",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![
                pb(),
                (
                    "DD-API-KEY",
                    "wdn_api_00000000000000000000000000000000000000".into(),
                ),
            ],
            body: valid_pb.clone(),
            status: 403,
            error: "Forbidden",
        },
        Case {
            name: "application key as API key",
            method: "POST",
            path: "/api/v2/series",
            headers: vec![pb(), ("dd-api-key", app.clone())],
            body: valid_pb.clone(),
            status: 403,
            error: "Forbidden",
        },
        Case {
            name: "GET on an intake route",
            method: "GET",
            path: "/api/v1/series",
            headers: vec![key()],
            body: Vec::new(),
            status: 405,
            error: "method not allowed",
        },
        Case {
            name: "unknown route",
            method: "POST",
            path: "/api/v9/nothing",
            headers: vec![key()],
            body: Vec::new(),
            status: 404,
            error: "no route /api/v9/nothing",
        },
        Case {
            name: "query without from",
            method: "GET",
            path: "/api/v1/query?to=1&query=avg:hostile.good{*}",
            headers: vec![key(), ("DD-APPLICATION-KEY", app.clone())],
            body: Vec::new(),
            status: 400,
            error: "missing required parameter \"from\"",
        },
        Case {
            name: "query syntax error",
            method: "GET",
            path: "/api/v1/query?from=1&to=2&query=avg:hostile.good%7Benv:a",
            headers: vec![key(), ("DD-APPLICATION-KEY", app.clone())],
            body: Vec::new(),
            status: 400,
            error: "position",
        },
        Case {
            name: "v2 query body not JSON",
            method: "POST",
            path: "/api/v2/query/timeseries",
            headers: vec![key(), ("DD-APPLICATION-KEY", app.clone()), json()],
            body: b"{nope".to_vec(),
            status: 400,
            error: "body is not valid JSON",
        },
        Case {
            name: "query with only an API key",
            method: "GET",
            path: "/api/v1/query?from=1&to=2&query=avg:hostile.good%7B*%7D",
            headers: vec![key()],
            body: Vec::new(),
            status: 403,
            error: "Forbidden",
        },
    ];
    assert!(cases.len() >= 30, "{} cases", cases.len());

    let mut failures = Vec::new();
    for case in cases.drain(..) {
        let mut rb = c.request(case.method.parse().unwrap(), format!("{url}{}", case.path));
        for (k, v) in &case.headers {
            rb = rb.header(*k, v);
        }
        let r = match rb.body(case.body).send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: request failed: {e}", case.name));
                continue;
            }
        };
        let status = r.status().as_u16();
        let hsts = r
            .headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = r.text().await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let msg = v["errors"][0].as_str().unwrap_or("");
        if status != case.status || !msg.contains(case.error) {
            failures.push(format!(
                "{}: got {status} {body:?}, want {} containing {:?}",
                case.name, case.status, case.error
            ));
        }
        if hsts.as_deref() != Some("max-age=31536000; includeSubDomains") {
            failures.push(format!("{}: HSTS header {hsts:?}", case.name));
        }
        if case.error == "position" && v["position"].as_u64().is_none() {
            failures.push(format!("{}: no position in {body}", case.name));
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));

    // The server is alive, the good series is intact, and nothing refused was stored.
    let (st, v) = query(&c, &url, &api, &app, "avg:hostile.good{*}", now - 120, now).await;
    assert_eq!(st, 200, "{v}");
    let pts = points_of(&v);
    assert_eq!(pts.len(), 1, "{v}");
    assert_eq!(pts[0].1, 42.5);
    for m in ["hostile.bad", "service_check.status", "events.count"] {
        let (st, v) = query(
            &c,
            &url,
            &api,
            &app,
            &format!("max:{m}{{*}}"),
            now - 600,
            now + 600,
        )
        .await;
        assert_eq!(st, 200, "{v}");
        assert!(
            points_of(&v).is_empty(),
            "{m} was stored from a refused payload: {v}"
        );
    }
    let log = server.log_text();
    assert!(!log.contains("request failed"), "a 5xx was logged:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !log.contains(&api) && !log.contains(&app),
        "a key reached the log"
    );
}
