//! Wire shapes of the v1 and v2 query responses, checked against the examples in
//! `/work/shared/specs/metrics-api.md` (read in place).

use std::collections::BTreeSet;

use serde_json::{Value, json};
use warden_model::MetricKind;
use warden_query::{EvalOptions, MemorySource, render_table, run_v1, run_v1_json, run_v2};

const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/specs/metrics-api.md"
);

/// Removes `// comments` outside strings.
fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut cut = line.len();
        for (i, c) in line.char_indices() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            }
            if !in_str && c == '/' && prev == '/' {
                cut = i - 1;
                break;
            }
            prev = c;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

/// The first ```json block after `heading` (and after `marker` inside that section, if given).
fn spec_block(heading: &str, marker: &str) -> String {
    let spec = std::fs::read_to_string(SPEC).expect("spec file readable");
    let sec = &spec[spec.find(heading).expect("heading")..];
    let sec = &sec[sec.find(marker).expect("marker")..];
    let start = sec.find("```json").expect("json block") + 7;
    let end = start + sec[start..].find("```").expect("block end");
    strip_comments(&sec[start..end])
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

const T: i64 = 1_681_680_000;

fn source() -> MemorySource {
    let mut ds = MemorySource::new();
    let pts: Vec<(i64, f64)> = (0..360)
        .map(|i| (T + i * 10, 50.0 + (i % 7) as f64))
        .collect();
    let id = ds.add(
        "system.cpu.user",
        "a",
        &["env:prod"],
        MetricKind::Gauge,
        10,
        &pts,
    );
    ds.series[id as usize].unit = Some("percent".into());
    ds.add(
        "system.cpu.user",
        "b",
        &["env:prod"],
        MetricKind::Gauge,
        10,
        &pts[..100],
    );
    ds.add(
        "system.cpu.user",
        "c",
        &["env:dev"],
        MetricKind::Gauge,
        10,
        &pts,
    );
    ds.add(
        "system.cpu.system",
        "a",
        &["env:prod"],
        MetricKind::Gauge,
        10,
        &pts,
    );
    ds
}

#[test]
fn v1_response_matches_spec_shape() {
    let example: Value = serde_json::from_str(&spec_block("### GET /api/v1/query", "Response"))
        .expect("spec example parses");
    let ds = source();
    let q = "avg:system.cpu.user{env:prod} by {host}";
    let got = run_v1(&ds, q, T, T + 3600, &EvalOptions::default()).expect("query");
    assert_eq!(keys(&got), keys(&example));
    for k in keys(&example) {
        assert_eq!(kind(&got[&k]), kind(&example[&k]), "top-level {k}");
    }
    let (gs, es) = (&got["series"][0], &example["series"][0]);
    assert_eq!(keys(gs), keys(es));
    for k in keys(es) {
        assert_eq!(kind(&gs[&k]), kind(&es[&k]), "series.{k}");
    }
    assert_eq!(keys(&gs["unit"][0]), keys(&es["unit"][0]));
    assert_eq!(
        gs["unit"][0], es["unit"][0],
        "percent unit object as in the spec"
    );
    assert!(gs["unit"][1].is_null());

    // Values, against the spec's conventions.
    assert_eq!(got["status"], "ok");
    assert_eq!(got["res_type"], "time_series");
    assert_eq!(got["query"], q);
    assert_eq!(got["from_date"], json!(T * 1000));
    assert_eq!(got["to_date"], json!((T + 3600) * 1000));
    assert_eq!(got["group_by"], json!(["host"]));
    let series = got["series"].as_array().expect("series");
    assert_eq!(series.len(), 2);
    assert_eq!(gs["metric"], "system.cpu.user");
    assert_eq!(gs["aggr"], "avg");
    assert_eq!(gs["scope"], "env:prod,host:a");
    assert_eq!(gs["expression"], "avg:system.cpu.user{env:prod,host:a}");
    assert_eq!(gs["tag_set"], json!(["host:a"]));
    assert_eq!(gs["interval"], 20);
    assert_eq!(gs["length"], 180);
    assert_eq!(gs["start"], json!(T * 1000));
    assert_eq!(
        gs["end"],
        json!((T + 3599) * 1000),
        "last millisecond covered, like the spec"
    );
    let pl = gs["pointlist"].as_array().expect("pointlist");
    assert_eq!(pl.len(), 180);
    assert_eq!(pl[0], json!([(T * 1000) as f64, 50.5]));
    assert!(pl[0][0].is_f64(), "timestamps are floats in ms");
    // Host b stops after 1000 s: its later buckets are null.
    let pb = series[1]["pointlist"].as_array().expect("pointlist");
    assert!(pb[49][1].is_number());
    assert!(pb[50][1].is_null());
    assert!(series[1]["unit"][0].is_null());
}

#[test]
fn v1_multiple_queries_and_errors() {
    let ds = source();
    let got = run_v1(
        &ds,
        "avg:system.cpu.user{*},sum:system.cpu.system{*} by {env}",
        T,
        T + 600,
        &EvalOptions::default(),
    )
    .expect("query");
    let idx: Vec<i64> = got["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| s["query_index"].as_i64().expect("index"))
        .collect();
    assert_eq!(idx, vec![0, 1]);
    assert_eq!(got["group_by"], json!(["env"]));
    let err = run_v1(
        &ds,
        "avg:system.cpu.user{env:prod,}",
        T,
        T + 60,
        &EvalOptions::default(),
    )
    .expect_err("bad");
    assert_eq!(err.position, 29);
    let err = run_v1(&ds, "avg:m{*}", T + 10, T, &EvalOptions::default()).expect_err("to < from");
    assert!(err.message.contains("before"), "{err}");
}

#[test]
fn v2_request_from_spec_and_response_shape() {
    let mut req: Value =
        serde_json::from_str(&spec_block("### POST /api/v2/query/timeseries", "Request"))
            .expect("spec request parses");
    assert_eq!(req["data"]["attributes"]["from"], json!(T * 1000));
    let ds = source();
    let resp = run_v2(&ds, &req, &EvalOptions::default()).expect("v2");
    // Keys named in the spec's response example.
    let spec_resp = spec_block("### POST /api/v2/query/timeseries", "Response");
    for k in [
        "data",
        "type",
        "attributes",
        "series",
        "group_tags",
        "query_index",
        "unit",
        "times",
        "values",
    ] {
        assert!(spec_resp.contains(&format!("\"{k}\"")), "spec names {k}");
    }
    assert_eq!(keys(&resp), BTreeSet::from(["data".to_string()]));
    assert_eq!(
        keys(&resp["data"]),
        BTreeSet::from(["type".to_string(), "attributes".to_string()])
    );
    assert_eq!(resp["data"]["type"], "timeseries_response");
    let attrs = &resp["data"]["attributes"];
    assert_eq!(
        keys(attrs),
        ["series", "times", "values"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let series = attrs["series"].as_array().expect("series");
    assert_eq!(series.len(), 2, "hosts a and b in env:prod");
    assert_eq!(
        keys(&series[0]),
        ["group_tags", "query_index", "unit"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(series[0]["group_tags"], json!(["host:a"]));
    assert_eq!(series[0]["query_index"], 0);
    let times = attrs["times"].as_array().expect("times");
    assert_eq!(times.len(), 60, "interval 60000 ms over one hour");
    assert_eq!(
        times[1].as_i64().expect("ms") - times[0].as_i64().expect("ms"),
        60_000
    );
    let values = attrs["values"].as_array().expect("values");
    assert_eq!(values.len(), series.len());
    assert!(
        values
            .iter()
            .all(|v| v.as_array().expect("row").len() == times.len())
    );

    // Formulas referencing query names, with a limit.
    req["data"]["attributes"]["queries"] = json!([
        {"data_source": "metrics", "name": "a", "query": "sum:system.cpu.system{*}"},
        {"data_source": "metrics", "name": "b", "query": "sum:system.cpu.user{*} by {host}"}
    ]);
    req["data"]["attributes"]["formulas"] = json!([
        {"formula": "a / b * 100", "limit": {"count": 2, "order": "asc"}},
        {"formula": "b"}
    ]);
    let resp = run_v2(&ds, &req, &EvalOptions::default()).expect("v2 formulas");
    let series = resp["data"]["attributes"]["series"]
        .as_array()
        .expect("series");
    let idx: Vec<i64> = series
        .iter()
        .map(|s| s["query_index"].as_i64().expect("i"))
        .collect();
    assert_eq!(idx, vec![0, 0, 1, 1, 1]);
    // `a` (one series) is broadcast over `b`'s hosts. Hosts a and c equal `a` (100 everywhere);
    // host b stops mid-minute 16, where its average (55+56+50+51)/4 = 53 exceeds a's
    // (55+56+50+51+52+53)/6, so its mean is below 100 and asc ranks it first.
    assert_eq!(series[0]["group_tags"], json!(["host:b"]));
    assert_eq!(series[1]["group_tags"], json!(["host:a"]));
    let values = resp["data"]["attributes"]["values"]
        .as_array()
        .expect("values");
    let v16 = values[0][16].as_f64().expect("minute 16");
    assert!((v16 - 317.0 / 6.0 / 53.0 * 100.0).abs() < 1e-9, "{v16}");
    assert!(values[0][17].is_null(), "host b has no data after 1000 s");
    assert_eq!(values[1][0].as_f64(), Some(100.0));
    assert_eq!(
        values[2][0].as_f64(),
        Some(52.5),
        "(50 + 51 + ... + 55) / 6 in the first minute"
    );
}

#[test]
fn v2_bad_requests_name_the_field() {
    let ds = source();
    let base = json!({"data": {"type": "timeseries_request", "attributes": {
        "from": T * 1000, "to": (T + 3600) * 1000,
        "queries": [{"data_source": "metrics", "name": "a", "query": "avg:system.cpu.user{*}"}]}}});
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "missing field body.data"),
        (
            json!({"data": {"type": "scalar_request", "attributes": {}}}),
            "data.type must be \"timeseries_request\"",
        ),
        (
            json!({"data": {"type": "timeseries_request"}}),
            "missing field data.attributes",
        ),
        (
            patch(&base, "from", json!("yesterday")),
            "data.attributes.from must be an integer",
        ),
        (
            patch(&base, "to", Value::Null),
            "data.attributes.to must be an integer",
        ),
        (
            patch(&base, "queries", json!([])),
            "data.attributes.queries must not be empty",
        ),
        (
            patch(&base, "queries", json!([{"name": "a"}])),
            "missing field data.attributes.queries[0].query",
        ),
        (
            patch(
                &base,
                "queries",
                json!([{"name": "a", "query": "avg:m{*}", "data_source": "logs"}]),
            ),
            "queries[0].data_source \"logs\" is not supported",
        ),
        (
            patch(&base, "interval", json!(-5)),
            "data.attributes.interval must be positive",
        ),
        (
            patch(&base, "formulas", json!([{"formula": "a +"}])),
            "data.attributes.formulas[0].formula: unexpected end of query",
        ),
        (
            patch(&base, "formulas", json!([{"formula": "zz * 2"}])),
            "unknown query 'zz' in formula",
        ),
        (
            patch(
                &base,
                "formulas",
                json!([{"formula": "a", "limit": {"order": "sideways"}}]),
            ),
            "formulas[0].limit.order must be",
        ),
    ];
    for (req, frag) in cases {
        let err = run_v2(&ds, &req, &EvalOptions::default()).expect_err(frag);
        assert!(err.to_string().contains(frag), "'{err}' lacks '{frag}'");
    }
    let err = run_v2(
        &ds,
        &patch(&base, "queries", json!([{"name": "a", "query": "avg:m{)"}])),
        &EvalOptions::default(),
    )
    .expect_err("bad query");
    assert_eq!(err.position, 6);
    assert!(
        err.message
            .starts_with("data.attributes.queries[0].query: unexpected ')'"),
        "{err}"
    );
}

fn patch(base: &Value, key: &str, v: Value) -> Value {
    let mut b = base.clone();
    b["data"]["attributes"][key] = v;
    b
}

#[test]
fn render_table_shows_stats_and_sparklines() {
    let mut ds = MemorySource::new();
    let rising: Vec<(i64, f64)> = (0..8).map(|i| (T + i * 60, i as f64)).collect();
    ds.add("m", "web-1", &[], MetricKind::Gauge, 60, &rising);
    ds.add(
        "m",
        "db",
        &[],
        MetricKind::Gauge,
        60,
        &[(T, 5.0), (T + 420, 5.0)],
    );
    let resp = run_v1(
        &ds,
        "avg:m{*} by {host}.rollup(avg, 60)",
        T,
        T + 480,
        &EvalOptions::default(),
    )
    .expect("query");
    let out = render_table(&resp);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "avg:m{*} by {host}.rollup(avg, 60)");
    assert!(lines[1].starts_with("SERIES"), "{out}");
    assert_eq!(lines.len(), 4, "{out}");
    let db = lines
        .iter()
        .find(|l| l.contains("host:db"))
        .expect("db row");
    assert!(db.ends_with("▄      ▄"), "flat series with a gap: {db:?}");
    let web = lines
        .iter()
        .find(|l| l.contains("host:web-1"))
        .expect("web row");
    assert!(web.ends_with("▁▂▃▄▅▆▇█"), "{web:?}");
    let cols: Vec<&str> = web.split_whitespace().collect();
    assert_eq!(
        &cols[2..6],
        &["7", "0", "3.5", "7"],
        "last min avg max: {web}"
    );
    assert_eq!(render_table(&json!({"series": []})).trim(), "no data");
    assert!(render_table(&json!(42)).contains("not a query response"));
}

#[test]
fn v2_scalar_reduces_queries_and_formulas() {
    use warden_model::DDSketch;
    use warden_query::run_v2_scalar;
    let mut ds = MemorySource::new();
    ds.add(
        "x",
        "a",
        &[],
        MetricKind::Gauge,
        60,
        &[(T, 1.0), (T + 60, 3.0), (T + 120, 8.0)],
    );
    ds.add("x", "b", &[], MetricKind::Gauge, 60, &[(T, 10.0)]);
    ds.add(
        "y",
        "a",
        &[],
        MetricKind::Gauge,
        60,
        &[(T, 2.0), (T + 60, 2.0)],
    );
    ds.add("y", "b", &[], MetricKind::Gauge, 60, &[(T, 5.0)]);
    let mut early = DDSketch::new();
    let mut late = DDSketch::new();
    (1..=50).for_each(|v| {
        early.insert(f64::from(v));
    });
    (51..=100).for_each(|v| {
        late.insert(f64::from(v));
    });
    ds.add_sketches(
        "lat",
        "a",
        &[],
        vec![(T, early.clone()), (T + 600, late.clone())],
    );
    let req = |queries: Value, formulas: Value| {
        json!({"data": {"type": "scalar_request", "attributes": {
            "from": T * 1000, "to": (T + 3600) * 1000, "queries": queries, "formulas": formulas}}})
    };
    let resp = run_v2_scalar(
        &ds,
        &req(
            json!([
                {"data_source": "metrics", "name": "a", "query": "avg:x{*} by {host}", "aggregator": "avg"},
                {"data_source": "metrics", "name": "m", "query": "max:x{*} by {host}", "aggregator": "max"},
                {"data_source": "metrics", "name": "p", "query": "p50:lat{*}", "aggregator": "percentile"}
            ]),
            Value::Null,
        ),
        &EvalOptions::default(),
    )
    .expect("scalar");
    assert_eq!(resp["data"]["type"], "scalar_response");
    let cols = resp["data"]["attributes"]["columns"]
        .as_array()
        .expect("columns");
    assert_eq!(cols.len(), 6);
    assert_eq!(
        cols[0],
        json!({"name": "a", "type": "group", "values": [["host:a"], ["host:b"]]})
    );
    assert_eq!(cols[1]["type"], "number");
    assert_eq!(
        cols[1]["values"],
        json!([4.0, 10.0]),
        "mean of 1, 3, 8 and of 10"
    );
    assert_eq!(cols[3]["values"], json!([8.0, 10.0]));
    let mut all = early;
    all.merge(&late);
    assert_eq!(
        cols[5]["values"],
        json!([all.quantile(0.5)]),
        "p50 of the whole window"
    );

    // Formulas combine the reduced values per group.
    let resp = run_v2_scalar(
        &ds,
        &req(
            json!([
                {"name": "a", "query": "avg:x{*} by {host}", "aggregator": "sum"},
                {"name": "b", "query": "avg:y{*} by {host}", "aggregator": "sum"}
            ]),
            json!([{"formula": "a / b", "alias": "ratio"}]),
        ),
        &EvalOptions::default(),
    )
    .expect("scalar formulas");
    let cols = resp["data"]["attributes"]["columns"]
        .as_array()
        .expect("columns");
    assert_eq!(cols[1]["name"], "ratio");
    assert_eq!(
        cols[1]["values"],
        json!([3.0, 2.0]),
        "(1+3+8)/(2+2) and 10/5"
    );
    let err = run_v2_scalar(
        &ds,
        &req(
            json!([{"name": "a", "query": "avg:x{*}", "aggregator": "median"}]),
            Value::Null,
        ),
        &EvalOptions::default(),
    )
    .expect_err("bad aggregator");
    assert!(
        err.message.contains("queries[0].aggregator \"median\""),
        "{err}"
    );
}

/// The server sends `run_v1_json`; it must be the very text of `run_v1` serialized, for every
/// shape: groups, nulls (host b stops early), units, several queries, arithmetic, no result,
/// strings that need escaping, and the parallel evaluator.
#[test]
fn v1_json_bytes_equal_the_value_rendering() {
    let ds = source();
    let queries = [
        "avg:system.cpu.user{*} by {host}",
        "avg:system.cpu.user{env:prod}.rollup(max, 60), sum:system.cpu.system{*}",
        "top(avg:system.cpu.user{*} by {host}, 2, 'mean', 'desc') * 2",
        "avg:system.cpu.user{host:b} by {env}.fill(zero)",
        "avg:no.such.metric{*}",
        "avg:system.cpu.user{env:\"quoted\\\\x*}",
    ];
    for threads in [1, 4] {
        let opts = EvalOptions {
            threads,
            ..EvalOptions::default()
        };
        for q in queries {
            let want = match run_v1(&ds, q, T, T + 3600, &opts) {
                Ok(v) => v.to_string(),
                Err(e) => {
                    assert_eq!(
                        run_v1_json(&ds, q, T, T + 3600, &opts)
                            .expect_err(q)
                            .message,
                        e.message
                    );
                    continue;
                }
            };
            let got = run_v1_json(&ds, q, T, T + 3600, &opts).expect(q);
            assert_eq!(String::from_utf8(got).expect("utf-8"), want, "{q}");
        }
    }
}

/// Enough series for the evaluator to really split the work: same answer as one thread.
#[test]
fn parallel_evaluation_gives_the_same_answer() {
    let mut ds = MemorySource::new();
    for h in 0..150 {
        let pts: Vec<(i64, f64)> = (0..360)
            .filter(|i| (i + h) % 11 != 0)
            .map(|i| (T + i * 10, (h * 7 + i) as f64 * 0.5))
            .collect();
        let tags = [format!("az:z{}", h % 3)];
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        ds.add("m", &format!("h{h:03}"), &tags, MetricKind::Gauge, 10, &pts);
    }
    for q in ["avg:m{*} by {host}", "sum:m{*} by {az}", "max:m{az:z1}"] {
        let one = run_v1_json(&ds, q, T, T + 3600, &EvalOptions::default()).expect(q);
        let four = EvalOptions {
            threads: 4,
            ..EvalOptions::default()
        };
        assert_eq!(
            one,
            run_v1_json(&ds, q, T, T + 3600, &four).expect(q),
            "{q}"
        );
    }
}

/// `run_v1_json` writes pointlist timestamps as integers plus ".0"; serde_json's own f64
/// rendering must agree over the whole accepted time range.
#[test]
fn millisecond_timestamps_render_like_serde_json_floats() {
    for secs in [
        0i64,
        1,
        10,
        1_681_680_000,
        4_102_444_800,
        99_999_999_990,
        100_000_000_000,
    ] {
        let ms = secs * 1000;
        assert_eq!(
            serde_json::to_string(&(ms as f64)).expect("f64"),
            format!("{ms}.0"),
            "{secs}"
        );
    }
}
