//! Every intake route and content encoding of the real `warden server` on the happy path, read
//! back through `/api/v1/query` and `/api/v2/query/timeseries`.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::io::Write;

use prost::Message;
use server_support::*;
use warden_proto as proto;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_encoding_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = ServerProc::start(&dir, free_tcp_port(), &[]);
    let api = create_key(&dir, "api", "default");
    let app = create_key(&dir, "app", "default");
    let c = client(&server.ca_file());
    let url = server.url();
    let t = (now() - 300) / 60 * 60;

    let post = |path: &str, ct: &str, enc: Option<&str>, body: Vec<u8>| {
        let mut rb = c
            .post(format!("{url}{path}"))
            .header("Dd-Api-Key", &api)
            .header("Content-Type", ct);
        if let Some(e) = enc {
            rb = rb.header("Content-Encoding", e);
        }
        rb.body(body).send()
    };
    let accepted = |r: reqwest::Response| async move {
        let st = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!((st, body.as_str()), (202, r#"{"status":"ok"}"#));
    };

    // v1 JSON, gzip, a count with an interval.
    let v1 = format!(
        r#"{{"series":[{{"metric":"intake.v1","type":"count","interval":10,"host":"h1","tags":["src:v1"],"points":[[{t},3],[{},4]]}}]}}"#,
        t + 60
    );
    accepted(
        post(
            "/api/v1/series",
            "text/json",
            Some("gzip"),
            gzip(v1.as_bytes()),
        )
        .await
        .unwrap(),
    )
    .await;
    // v2 JSON, deflate, host as a resource.
    let v2 = format!(
        r#"{{"series":[{{"metric":"intake.v2json","type":3,"points":[{{"timestamp":{t},"value":-7.5}}],"resources":[{{"name":"h2","type":"host"}}]}}]}}"#
    );
    accepted(
        post(
            "/api/v2/series",
            "application/json",
            Some("deflate"),
            deflate(v2.as_bytes()),
        )
        .await
        .unwrap(),
    )
    .await;
    // v2 protobuf, zstd, type 0 (GAUGE in old agent-payload numbering).
    let pb = proto::MetricPayload {
        series: vec![proto::MetricSeries {
            metric: "intake.v2pb".into(),
            points: vec![proto::MetricPoint {
                value: 0.001,
                timestamp: t,
            }],
            r#type: 0,
            ..Default::default()
        }],
    };
    accepted(
        post(
            "/api/v2/series",
            "application/x-protobuf",
            Some("zstd"),
            zstd::encode_all(pb.encode_to_vec().as_slice(), 3).unwrap(),
        )
        .await
        .unwrap(),
    )
    .await;
    // Sketches: 1..=100 in one bucket.
    let mut sk = warden_model::DDSketch::new();
    for v in 1..=100 {
        sk.insert(f64::from(v));
    }
    let sketches = proto::SketchPayload {
        sketches: vec![proto::Sketch {
            metric: "intake.dist".into(),
            host: "h3".into(),
            tags: vec!["src:sk".into()],
            dogsketches: vec![proto::Dogsketch {
                ts: t,
                cnt: sk.count() as i64,
                min: sk.min(),
                max: sk.max(),
                avg: sk.avg(),
                sum: sk.sum(),
                k: sk.keys(),
                n: sk.counts(),
            }],
        }],
        metadata: None,
    };
    accepted(
        post(
            "/api/beta/sketches",
            "application/x-protobuf",
            None,
            sketches.encode_to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    // Service check and events.
    accepted(
        post(
            "/api/v1/check_run",
            "application/json",
            None,
            format!(r#"[{{"check":"intake.check","status":2,"host_name":"h4","timestamp":{t},"message":"down","tags":["a:b"]}}]"#).into_bytes(),
        )
        .await
        .unwrap(),
    )
    .await;
    accepted(
        post(
            "/intake/",
            "application/json",
            Some("gzip"),
            gzip(format!(r#"{{"apiKey":"","events":{{"api":[{{"msg_title":"a","msg_text":"b","timestamp":{t},"host":"h5","alert_type":"error"}},{{"msg_title":"c","msg_text":"d","timestamp":{t}}}]}},"internalHostname":"h5"}}"#).as_bytes()),
        )
        .await
        .unwrap(),
    )
    .await;
    // `?api_key=` instead of the header.
    let r = c
        .post(format!("{url}/api/v1/series?api_key={api}"))
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"series":[{{"metric":"intake.qs","points":[[{t},9]]}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let (from, to) = (t - 60, t + 180);
    let vals = |v: &serde_json::Value| points_of(v).into_iter().map(|p| p.1).collect::<Vec<_>>();
    let (_, v) = query(
        &c,
        &url,
        &api,
        &app,
        "sum:intake.v1{src:v1,host:h1}.as_count()",
        from,
        to,
    )
    .await;
    assert_eq!(vals(&v).iter().sum::<f64>(), 7.0, "{v}");
    let (_, v) = query(&c, &url, &api, &app, "avg:intake.v2json{host:h2}", from, to).await;
    assert_eq!(vals(&v), [-7.5], "{v}");
    let (_, v) = query(&c, &url, &api, &app, "avg:intake.v2pb{*}", from, to).await;
    assert_eq!(vals(&v), [0.001], "{v}");
    let (_, v) = query(&c, &url, &api, &app, "p50:intake.dist{src:sk}", from, to).await;
    let p50 = vals(&v);
    assert_eq!(p50.len(), 1, "{v}");
    // DDSketch with the agent's mapping: ~1.6 % relative accuracy around the true 50.5.
    assert!((p50[0] - 50.5).abs() / 50.5 <= 0.03, "{v}");
    let (_, v) = query(
        &c,
        &url,
        &api,
        &app,
        "max:service_check.status{check:intake.check}",
        from,
        to,
    )
    .await;
    assert_eq!(vals(&v), [2.0], "{v}");
    let (_, v) = query(
        &c,
        &url,
        &api,
        &app,
        "sum:events.count{source_type_name:api}.as_count()",
        from,
        to,
    )
    .await;
    assert_eq!(vals(&v).iter().sum::<f64>(), 2.0, "{v}");
    let (_, v) = query(&c, &url, &api, &app, "avg:intake.qs{*}", from, to).await;
    assert_eq!(vals(&v), [9.0], "{v}");

    // v2 timeseries query.
    let req = serde_json::json!({"data": {"type": "timeseries_request", "attributes": {
        "from": from * 1000, "to": to * 1000, "interval": 60000,
        "queries": [{"data_source": "metrics", "name": "a", "query": "avg:intake.v2json{*} by {host}"}],
        "formulas": [{"formula": "a * 2"}]}}});
    let r = c
        .post(format!("{url}/api/v2/query/timeseries"))
        .header("DD-API-KEY", &api)
        .header("DD-APPLICATION-KEY", &app)
        .header("Content-Type", "application/json")
        .body(req.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let attrs = &v["data"]["attributes"];
    assert_eq!(
        attrs["series"][0]["group_tags"],
        serde_json::json!(["host:h2"]),
        "{v}"
    );
    let got: Vec<f64> = attrs["values"][0]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    assert_eq!(got, [-15.0], "{v}");
}
