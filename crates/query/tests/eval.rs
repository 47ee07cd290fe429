//! Evaluation with exact numbers on an in-memory data source.

use std::collections::HashMap;

use warden_model::{DDSketch, MetricKind};
use warden_query::{EvalOptions, MemorySource, ResultSeries, RollupPoint, evaluate, parse};

/// Divisible by 3600 (so by every step used here).
const T: i64 = 1_699_999_200;

fn run(ds: &MemorySource, q: &str, from: i64, to: i64) -> Vec<ResultSeries> {
    run_opts(ds, q, from, to, &EvalOptions::default())
}

fn run_opts(
    ds: &MemorySource,
    q: &str,
    from: i64,
    to: i64,
    opts: &EvalOptions,
) -> Vec<ResultSeries> {
    let e = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    evaluate(ds, &e, from, to, opts, &HashMap::new())
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .series
}

fn by_tags(s: &[ResultSeries]) -> Vec<(Vec<String>, Vec<Option<f64>>)> {
    s.iter()
        .map(|x| (x.tag_set.clone(), x.values.clone()))
        .collect()
}

fn t(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn cpu() -> MemorySource {
    let mut ds = MemorySource::new();
    ds.add(
        "cpu",
        "a",
        &["env:prod"],
        MetricKind::Gauge,
        10,
        &[(T, 10.0), (T + 10, 20.0), (T + 20, 30.0), (T + 30, 40.0)],
    );
    ds.add(
        "cpu",
        "b",
        &["env:prod"],
        MetricKind::Gauge,
        10,
        &[(T, 100.0), (T + 20, 200.0)],
    );
    ds
}

#[test]
fn avg_by_host_and_space_aggregators() {
    let ds = cpu();
    let s = run(&ds, "avg:cpu{*} by {host}.rollup(avg, 20)", T, T + 40);
    assert_eq!(
        by_tags(&s),
        vec![
            (t(&["host:a"]), vec![Some(15.0), Some(35.0)]),
            (t(&["host:b"]), vec![Some(100.0), Some(200.0)]),
        ]
    );
    assert_eq!(s[0].scope, "host:a");
    assert_eq!(s[0].expression, "avg:cpu{host:a}.rollup(avg, 20)");
    for (agg, want) in [
        ("avg", [57.5, 117.5]),
        ("sum", [115.0, 235.0]),
        ("min", [15.0, 35.0]),
        ("max", [100.0, 200.0]),
        ("count", [2.0, 2.0]),
    ] {
        let s = run(&ds, &format!("{agg}:cpu{{*}}.rollup(avg, 20)"), T, T + 40);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].values, want.map(Some).to_vec(), "{agg}");
        assert_eq!(s[0].scope, "*");
        assert!(s[0].tag_set.is_empty());
    }
    // Time aggregation choices.
    let s = run(&ds, "sum:cpu{host:a}.rollup(max, 20)", T, T + 40);
    assert_eq!(s[0].values, vec![Some(20.0), Some(40.0)]);
    let s = run(&ds, "sum:cpu{host:a}.rollup(count, 40)", T, T + 40);
    assert_eq!(s[0].values, vec![Some(4.0)]);
}

#[test]
fn auto_interval_from_range() {
    let ds = cpu();
    let e = parse("avg:cpu{*}").expect("parse");
    let ev = evaluate(
        &ds,
        &e,
        T,
        T + 3600,
        &EvalOptions::default(),
        &HashMap::new(),
    )
    .expect("eval");
    assert_eq!((ev.grid.start, ev.grid.step, ev.grid.len), (T, 20, 180));
    let ev = evaluate(
        &ds,
        &e,
        T,
        T + 86_400,
        &EvalOptions::default(),
        &HashMap::new(),
    )
    .expect("eval");
    assert_eq!((ev.grid.step, ev.grid.len), (300, 288));
    let ev = evaluate(
        &ds,
        &e,
        T,
        T + 7 * 86_400,
        &EvalOptions::default(),
        &HashMap::new(),
    )
    .expect("eval");
    assert_eq!((ev.grid.step, ev.grid.len), (3600, 168));
    // A too-fine explicit rollup over a week is coarsened to <= 1500 points.
    let e = parse("avg:cpu{*}.rollup(avg, 1)").expect("parse");
    let ev = evaluate(
        &ds,
        &e,
        T,
        T + 7 * 86_400,
        &EvalOptions::default(),
        &HashMap::new(),
    )
    .expect("eval");
    assert_eq!(ev.grid.step, 600);
    assert!(ev.grid.len <= 1500);
}

#[test]
fn rollup_sum_with_tag_filter() {
    let mut ds = MemorySource::new();
    let pts = |f: &dyn Fn(i64) -> f64| (0..12).map(|i| (T + i * 10, f(i))).collect::<Vec<_>>();
    ds.add(
        "net",
        "a",
        &["env:prod"],
        MetricKind::Gauge,
        10,
        &pts(&|i| (i + 1) as f64),
    );
    ds.add(
        "net",
        "b",
        &["env:dev"],
        MetricKind::Gauge,
        10,
        &pts(&|_| 100.0),
    );
    ds.add(
        "net",
        "c",
        &["env:prod"],
        MetricKind::Gauge,
        10,
        &pts(&|_| 2.0),
    );
    let s = run(&ds, "sum:net{env:prod}.rollup(sum, 60)", T, T + 120);
    assert_eq!(by_tags(&s), vec![(vec![], vec![Some(33.0), Some(69.0)])]);
    assert_eq!(s[0].scope, "env:prod");
    let s = run(
        &ds,
        "sum:net{env:prod} by {host}.rollup(sum, 60)",
        T,
        T + 120,
    );
    assert_eq!(
        by_tags(&s),
        vec![
            (t(&["host:a"]), vec![Some(21.0), Some(57.0)]),
            (t(&["host:c"]), vec![Some(12.0), Some(12.0)]),
        ]
    );
    assert_eq!(s[1].scope, "env:prod,host:c");
    let s = run(&ds, "sum:net{!env:prod}.rollup(sum, 60)", T, T + 120);
    assert_eq!(s[0].values, vec![Some(600.0), Some(600.0)]);
}

#[test]
fn as_count_and_as_rate() {
    let mut ds = MemorySource::new();
    let every10 = |v: f64| (0..12).map(|i| (T + i * 10, v)).collect::<Vec<_>>();
    ds.add("hits", "a", &[], MetricKind::Rate, 10, &every10(0.5));
    ds.add("hits", "b", &[], MetricKind::Rate, 10, &every10(1.5));
    ds.add("errs", "a", &[], MetricKind::Count, 10, &every10(5.0));
    // Rate × interval, summed per minute, summed across hosts: 6 × (0.5 + 1.5) × 10.
    let s = run(&ds, "sum:hits{*}.as_count().rollup(sum, 60)", T, T + 120);
    assert_eq!(s[0].values, vec![Some(120.0), Some(120.0)]);
    let s = run(
        &ds,
        "sum:hits{host:a}.as_count().rollup(sum, 60)",
        T,
        T + 120,
    );
    assert_eq!(s[0].values, vec![Some(30.0), Some(30.0)]);
    // A rate without modifier is averaged in time.
    let s = run(&ds, "avg:hits{*}.rollup(avg, 60)", T, T + 120);
    assert_eq!(s[0].values, vec![Some(1.0), Some(1.0)]);
    // Counts sum by default; as_rate divides by the interval.
    let s = run(&ds, "sum:errs{*}.rollup(sum, 60)", T, T + 120);
    assert_eq!(s[0].values, vec![Some(30.0), Some(30.0)]);
    let s = run(&ds, "sum:errs{*}.as_rate().rollup(sum, 60)", T, T + 120);
    assert_eq!(s[0].values, vec![Some(0.5), Some(0.5)]);
    let s = run(&ds, "sum:errs{*}.as_count().rollup(sum, 30)", T, T + 120);
    assert_eq!(s[0].values, vec![Some(15.0); 4]);
    // Modifiers do nothing to gauges.
    ds.add("g", "a", &[], MetricKind::Gauge, 10, &every10(4.0));
    let s = run(&ds, "sum:g{*}.as_count().rollup(avg, 60)", T, T + 120);
    assert_eq!(s[0].values, vec![Some(4.0), Some(4.0)]);
}

#[test]
fn top_ranks_series() {
    let mut ds = MemorySource::new();
    for (h, v) in [("a", 1.0), ("b", 4.0), ("c", 3.0), ("d", 2.0)] {
        ds.add(
            "load",
            h,
            &[],
            MetricKind::Gauge,
            10,
            &[(T, v), (T + 10, v)],
        );
    }
    // d spikes at the end: highest max and last, but not the highest mean.
    ds.add("load", "d", &[], MetricKind::Gauge, 10, &[(T + 20, 50.0)]);
    let hosts = |s: &[ResultSeries]| s.iter().map(|x| x.tag_set.join(",")).collect::<Vec<_>>();
    let s = run(
        &ds,
        "top(avg:load{*} by {host}.rollup(avg, 10), 2, 'mean', 'desc')",
        T,
        T + 30,
    );
    assert_eq!(hosts(&s), vec!["host:d", "host:b"]); // d: mean (2+2+50)/3 = 18
    let s = run(
        &ds,
        "top(avg:load{*} by {host}.rollup(avg, 10), 2, 'min', 'desc')",
        T,
        T + 30,
    );
    assert_eq!(hosts(&s), vec!["host:b", "host:c"]);
    let s = run(
        &ds,
        "top(avg:load{*} by {host}.rollup(avg, 10), 2, 'mean', 'asc')",
        T,
        T + 30,
    );
    assert_eq!(hosts(&s), vec!["host:a", "host:c"]);
    let s = run(
        &ds,
        "top(avg:load{*} by {host}.rollup(avg, 10), 1, 'last', 'desc')",
        T,
        T + 30,
    );
    assert_eq!(hosts(&s), vec!["host:d"]);
    assert_eq!(s[0].values, vec![Some(2.0), Some(2.0), Some(50.0)]);
    let s = run(
        &ds,
        "bottom5(avg:load{*} by {host}.rollup(avg, 10))",
        T,
        T + 30,
    );
    assert_eq!(hosts(&s), vec!["host:a", "host:c", "host:b", "host:d"]);
}

#[test]
fn arithmetic_between_queries_and_constants() {
    let mut ds = MemorySource::new();
    ds.add("x", "a", &[], MetricKind::Gauge, 10, &[(T, 1.0)]);
    ds.add("x", "b", &[], MetricKind::Gauge, 10, &[(T, 3.0)]);
    ds.add("y", "a", &[], MetricKind::Gauge, 10, &[(T, 4.0)]);
    ds.add("y", "b", &[], MetricKind::Gauge, 10, &[(T, 6.0)]);
    ds.add("y", "c", &[], MetricKind::Gauge, 10, &[(T, 8.0)]);
    let s = run(
        &ds,
        "avg:x{*} by {host}.rollup(avg, 10) / avg:y{*} by {host}.rollup(avg, 10) * 100 + 1",
        T,
        T + 10,
    );
    assert_eq!(
        by_tags(&s),
        vec![
            (t(&["host:a"]), vec![Some(26.0)]),
            (t(&["host:b"]), vec![Some(51.0)])
        ]
    );
    assert_eq!(
        s[0].expression,
        "avg:x{host:a}.rollup(avg, 10) / avg:y{host:a}.rollup(avg, 10) * 100 + 1"
    );
    // One-series side is broadcast.
    let s = run(
        &ds,
        "sum:x{*} by {host}.rollup(avg, 10) / sum:x{*}.rollup(avg, 10)",
        T,
        T + 10,
    );
    assert_eq!(
        by_tags(&s),
        vec![
            (t(&["host:a"]), vec![Some(0.25)]),
            (t(&["host:b"]), vec![Some(0.75)])
        ]
    );
    let s = run(&ds, "2 * (sum:y{*}.rollup(avg, 10) - 10) / -3", T, T + 10);
    assert_eq!(
        s[0].values,
        vec![Some(-(2.0 * (8.0 + 6.0 + 4.0 - 10.0)) / 3.0)]
    );
    assert_eq!(s[0].expression, "2 * (sum:y{*}.rollup(avg, 10) - 10) / -3");
    // Division by zero is null, not inf.
    let s = run(&ds, "sum:x{*}.rollup(avg, 10) / 0", T, T + 10);
    assert_eq!(s[0].values, vec![None]);
}

#[test]
fn wildcard_and_negated_filters() {
    let mut ds = MemorySource::new();
    let one = [(T, 1.0)];
    ds.add(
        "r",
        "h1",
        &["service:web-1", "az:us-east-1a"],
        MetricKind::Gauge,
        10,
        &one,
    );
    ds.add(
        "r",
        "h2",
        &["service:web-2", "deploy:green-canary"],
        MetricKind::Gauge,
        10,
        &[(T, 10.0)],
    );
    ds.add(
        "r",
        "h3",
        &["service:api-1", "az:eu-west-1"],
        MetricKind::Gauge,
        10,
        &[(T, 100.0)],
    );
    ds.add(
        "r",
        "h4",
        &["service:web-3", "mytag"],
        MetricKind::Gauge,
        10,
        &[(T, 1000.0)],
    );
    let sum = |q: &str| {
        let s = run(&ds, &format!("sum:r{{{q}}}.rollup(sum, 10)"), T, T + 10);
        s.first().and_then(|x| x.values[0])
    };
    assert_eq!(sum("service:web-*"), Some(1011.0));
    assert_eq!(sum("!service:web-*"), Some(100.0));
    assert_eq!(sum("*-canary"), Some(10.0));
    assert_eq!(sum("*east*"), Some(1.0));
    assert_eq!(sum("az:*west*"), Some(100.0));
    assert_eq!(sum("mytag"), Some(1000.0));
    assert_eq!(sum("service:web-*,!host:h1"), Some(1010.0));
    assert_eq!(sum("service IN (web-1, api-1)"), Some(101.0));
    assert_eq!(sum("service NOT IN (web-1, api-1)"), Some(1010.0));
    assert_eq!(sum("service:web-* AND NOT (host:h2 OR mytag)"), Some(1.0));
    assert_eq!(sum("host:h9"), None);
}

fn sketch(vals: impl Iterator<Item = f64>) -> DDSketch {
    let mut s = DDSketch::new();
    for v in vals {
        s.insert(v);
    }
    s
}

#[test]
fn percentiles_from_merged_sketches() {
    let mut ds = MemorySource::new();
    ds.add_sketches(
        "lat",
        "a",
        &["env:prod"],
        vec![
            (T, sketch((1..=100).map(f64::from))),
            (T + 10, sketch((1..=10).map(f64::from))),
        ],
    );
    ds.add_sketches(
        "lat",
        "b",
        &["env:prod"],
        vec![(T, sketch((101..=200).map(f64::from)))],
    );
    let s = run(&ds, "p50:lat{*}.rollup(avg, 10)", T, T + 20);
    assert_eq!(s.len(), 1);
    // Merged sketch of 1..=200: rank round_half_even(0.5 * 199) = 100 → the 101st value.
    let v = s[0].values[0].expect("p50");
    assert!((v - 101.0).abs() / 101.0 < 0.01, "p50 = {v}");
    let mut merged = sketch((1..=100).map(f64::from));
    merged.merge(&sketch((101..=200).map(f64::from)));
    assert_eq!(Some(v), merged.quantile(0.5));
    let p99 = s[0].values[1];
    assert_eq!(
        run(&ds, "p99:lat{*}.rollup(avg, 10)", T, T + 20)[0].values[1],
        sketch((1..=10).map(f64::from)).quantile(0.99)
    );
    assert!(p99.is_some());
    // Grouped percentiles and exact distribution aggregates.
    let s = run(&ds, "p90:lat{*} by {host}.rollup(avg, 10)", T, T + 20);
    assert_eq!(s.len(), 2);
    assert_eq!(
        s[1].values,
        vec![sketch((101..=200).map(f64::from)).quantile(0.9), None]
    );
    let s = run(&ds, "avg:lat{*}.rollup(avg, 10)", T, T + 20);
    assert_eq!(s[0].values, vec![Some(100.5), Some(5.5)]);
    let s = run(&ds, "count:lat{*}.rollup(avg, 10)", T, T + 20);
    assert_eq!(s[0].values, vec![Some(200.0), Some(10.0)]);
    let s = run(&ds, "max:lat{*}.rollup(avg, 10)", T, T + 20);
    assert_eq!(s[0].values, vec![Some(200.0), Some(10.0)]);
    // Percentiles of a non-distribution are an error at the query.
    ds.add("gauge", "a", &[], MetricKind::Gauge, 10, &[(T, 1.0)]);
    let q = "abs(p95:gauge{*})";
    let err = warden_query::evaluate(
        &ds,
        &parse(q).expect("parse"),
        T,
        T + 20,
        &EvalOptions::default(),
        &HashMap::new(),
    )
    .expect_err("p95 on gauge");
    assert_eq!(err.position, 4);
    assert!(err.message.contains("distribution"), "{err}");
}

#[test]
fn null_gaps_and_fill() {
    let mut ds = MemorySource::new();
    ds.add(
        "g",
        "a",
        &[],
        MetricKind::Gauge,
        10,
        &[(T, 1.0), (T + 40, 5.0)],
    );
    let s = run(&ds, "avg:g{*}.rollup(avg, 10)", T, T + 50);
    assert_eq!(s[0].values, vec![Some(1.0), None, None, None, Some(5.0)]);
    let s = run(&ds, "avg:g{*}.rollup(avg, 10).fill(zero)", T, T + 50);
    assert_eq!(
        s[0].values,
        vec![Some(1.0), Some(0.0), Some(0.0), Some(0.0), Some(5.0)]
    );
    let s = run(&ds, "avg:g{*}.rollup(avg, 10).fill(linear)", T, T + 50);
    assert_eq!(
        s[0].values,
        vec![Some(1.0), Some(2.0), Some(3.0), Some(4.0), Some(5.0)]
    );
    let s = run(&ds, "avg:g{*}.rollup(avg, 10).fill(last, 20)", T, T + 50);
    assert_eq!(
        s[0].values,
        vec![Some(1.0), Some(1.0), Some(1.0), None, Some(5.0)]
    );
    let s = run(&ds, "avg:g{*}.rollup(avg, 10).fill(linear, 20)", T, T + 50);
    assert_eq!(
        s[0].values,
        vec![Some(1.0), None, None, None, Some(5.0)],
        "gap longer than the limit"
    );
    let s = run(&ds, "default_zero(avg:g{*}.rollup(avg, 10))", T, T + 50);
    assert_eq!(
        s[0].values,
        vec![Some(1.0), Some(0.0), Some(0.0), Some(0.0), Some(5.0)]
    );
    // No data at all in the range: no series.
    assert!(run(&ds, "avg:g{*}.rollup(avg, 10)", T + 100, T + 200).is_empty());
}

#[test]
fn rollup_only_data_gives_exact_avg() {
    let mut ds = MemorySource::new();
    let r = |ts, min, max, sum, count| RollupPoint {
        ts,
        min,
        max,
        sum,
        count,
    };
    ds.add_rollups(
        "old",
        "a",
        &[],
        MetricKind::Gauge,
        vec![r(T, 1.0, 3.0, 6.0, 3), r(T + 60, 100.0, 100.0, 100.0, 1)],
    );
    let opts = EvalOptions {
        raw_retention_secs: 86_400,
        now: T + 10 * 86_400,
        ..EvalOptions::default()
    };
    let s = run_opts(&ds, "avg:old{*}.rollup(avg, 120)", T, T + 240, &opts);
    // Σsum / Σcount = 106 / 4, not the average of averages (51).
    assert_eq!(s[0].values, vec![Some(26.5), None]);
    let s = run_opts(&ds, "avg:old{*}.rollup(max, 120)", T, T + 240, &opts);
    assert_eq!(s[0].values, vec![Some(100.0), None]);
    let s = run_opts(&ds, "avg:old{*}.rollup(min, 120)", T, T + 240, &opts);
    assert_eq!(s[0].values, vec![Some(1.0), None]);
    let s = run_opts(&ds, "avg:old{*}.rollup(count, 120)", T, T + 240, &opts);
    assert_eq!(s[0].values, vec![Some(4.0), None]);
    let s = run_opts(&ds, "avg:old{*}.rollup(sum, 120)", T, T + 240, &opts);
    assert_eq!(s[0].values, vec![Some(106.0), None]);
    // Rollup mode forces a step of at least one minute; raw mode on the same data sees nothing.
    let e = parse("avg:old{*}.rollup(avg, 20)").expect("parse");
    let ev = evaluate(&ds, &e, T, T + 240, &opts, &HashMap::new()).expect("eval");
    assert_eq!(ev.grid.step, 60);
    assert_eq!(
        ev.series[0].values,
        vec![Some(2.0), Some(100.0), None, None]
    );
    assert!(run(&ds, "avg:old{*}.rollup(avg, 120)", T, T + 240).is_empty());
}

#[test]
fn raw_and_rollup_reads_agree_on_the_same_points() {
    let mut ds = MemorySource::new();
    let pts: Vec<(i64, f64)> = (0..30)
        .map(|i| (T + i * 10, ((i * 7) % 11) as f64))
        .collect();
    ds.add("m", "a", &[], MetricKind::Gauge, 10, &pts);
    let rollup_opts = EvalOptions {
        raw_retention_secs: 60,
        now: T + 100_000,
        ..EvalOptions::default()
    };
    for agg in ["avg", "sum", "min", "max", "count"] {
        let q = format!("avg:m{{*}}.rollup({agg}, 60)");
        assert_eq!(
            run(&ds, &q, T, T + 300),
            run_opts(&ds, &q, T, T + 300, &rollup_opts),
            "{agg}"
        );
    }
}

#[test]
fn functions_on_series() {
    let mut ds = MemorySource::new();
    ds.add(
        "c",
        "a",
        &[],
        MetricKind::Gauge,
        10,
        &[(T, 1.0), (T + 10, 4.0), (T + 20, 2.0), (T + 30, -8.0)],
    );
    let v = |q: &str| run(&ds, q, T, T + 40)[0].values.clone();
    let m = "avg:c{*}.rollup(avg, 10)";
    assert_eq!(
        v(&format!("abs({m})")),
        vec![Some(1.0), Some(4.0), Some(2.0), Some(8.0)]
    );
    assert_eq!(
        v(&format!("cumsum({m})")),
        vec![Some(1.0), Some(5.0), Some(7.0), Some(-1.0)]
    );
    assert_eq!(
        v(&format!("integral({m})")),
        vec![Some(10.0), Some(50.0), Some(70.0), Some(-10.0)]
    );
    assert_eq!(
        v(&format!("diff({m})")),
        vec![None, Some(3.0), Some(-2.0), Some(-10.0)]
    );
    assert_eq!(
        v(&format!("monotonic_diff({m})")),
        vec![None, Some(3.0), None, None]
    );
    assert_eq!(
        v(&format!("derivative({m})")),
        vec![None, Some(0.3), Some(-0.2), Some(-1.0)]
    );
    assert_eq!(
        v(&format!("dt({m})")),
        vec![None, Some(10.0), Some(10.0), Some(10.0)]
    );
    assert_eq!(
        v(&format!("per_minute({m})")),
        vec![Some(6.0), Some(24.0), Some(12.0), Some(-48.0)]
    );
    assert_eq!(
        v(&format!("log2({m})")),
        vec![Some(0.0), Some(2.0), Some(1.0), None]
    );
    assert_eq!(
        v(&format!("clamp_min({m}, 2)")),
        vec![Some(2.0), Some(4.0), Some(2.0), Some(2.0)]
    );
    assert_eq!(
        v(&format!("clamp_max({m}, 2)")),
        vec![Some(1.0), Some(2.0), Some(2.0), Some(-8.0)]
    );
    assert_eq!(
        v(&format!("cutoff_min({m}, 2)")),
        vec![None, Some(4.0), Some(2.0), None]
    );
    assert_eq!(
        v(&format!("cutoff_max({m}, 2)")),
        vec![Some(1.0), None, Some(2.0), Some(-8.0)]
    );
    assert_eq!(
        v(&format!("moving_rollup({m}, 20, 'sum')")),
        vec![Some(1.0), Some(5.0), Some(6.0), Some(-6.0)]
    );
    assert_eq!(
        v(&format!("median_3({m})")),
        vec![Some(1.0), Some(2.5), Some(2.0), Some(2.0)]
    );
    // Timeshift reads the past onto the current grid.
    assert_eq!(
        run(&ds, &format!("timeshift({m}, -20)"), T + 20, T + 60)[0].values,
        vec![Some(1.0), Some(4.0), Some(2.0), Some(-8.0)]
    );
    ds.add(
        "c2",
        "a",
        &[],
        MetricKind::Gauge,
        10,
        &[(T, 0.0), (T + 10, 1.0)],
    );
    ds.add("c2", "b", &[], MetricKind::Gauge, 10, &[(T, 2.0)]);
    ds.add("c2", "", &[], MetricKind::Gauge, 10, &[(T, 3.0)]);
    let s = run(
        &ds,
        "count_nonzero(avg:c2{*} by {host}.rollup(avg, 10))",
        T,
        T + 20,
    );
    assert_eq!(s[0].values, vec![Some(2.0), Some(1.0)]);
    let s = run(
        &ds,
        "count_not_null(avg:c2{*} by {host}.rollup(avg, 10))",
        T,
        T + 20,
    );
    assert_eq!(s[0].values, vec![Some(3.0), Some(1.0)]);
    let s = run(&ds, "avg:c2{*} by {host}.rollup(avg, 10)", T, T + 20);
    assert_eq!(
        s.iter().map(|x| x.tag_set.join("")).collect::<Vec<_>>(),
        vec!["host:N/A", "host:a", "host:b"]
    );
    let s = run(
        &ds,
        "exclude_null(avg:c2{*} by {host}.rollup(avg, 10))",
        T,
        T + 20,
    );
    assert_eq!(s.len(), 2);
}

#[test]
fn monitor_queries_reduce_and_compare() {
    use warden_query::{evaluate_monitor, parse_monitor};
    let mut ds = MemorySource::new();
    let now = T + 300;
    ds.add(
        "cpu",
        "a",
        &[],
        MetricKind::Gauge,
        10,
        &[(now - 200, 95.0), (now - 100, 85.0), (now - 10, 99.0)],
    );
    ds.add(
        "cpu",
        "b",
        &[],
        MetricKind::Gauge,
        10,
        &[(now - 200, 10.0), (now - 100, 20.0)],
    );
    ds.add(
        "cpu",
        "c",
        &[],
        MetricKind::Gauge,
        10,
        &[(now - 1000, 100.0)],
    );
    let groups = |q: &str| {
        let m = parse_monitor(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        evaluate_monitor(&ds, &m, now, &EvalOptions::default())
            .expect("eval")
            .into_iter()
            .map(|g| (g.tag_set.join(","), g.value, g.triggered))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        groups("avg(last_5m):avg:cpu{*} by {host} > 90"),
        vec![
            ("host:a".into(), Some(93.0), true),
            ("host:b".into(), Some(15.0), false)
        ]
    );
    assert_eq!(
        groups("max(last_5m):max:cpu{*} >= 99"),
        vec![(String::new(), Some(99.0), true)]
    );
    assert_eq!(
        groups("last(last_5m):avg:cpu{host:b} < 20"),
        vec![("".into(), Some(20.0), false)]
    );
    assert_eq!(
        groups("change(last_5m):avg:cpu{host:a} == 4"),
        vec![("".into(), Some(4.0), true)]
    );
    assert_eq!(
        groups("sum(last_5m):avg:cpu{host:b} != 30"),
        vec![("".into(), Some(30.0), false)]
    );
}

#[test]
fn relative_times_and_bounds() {
    use warden_query::parse_time;
    assert_eq!(parse_time("now", T), Ok(T));
    assert_eq!(parse_time("-1h", T), Ok(T - 3600));
    assert_eq!(parse_time("-15m", T), Ok(T - 900));
    assert_eq!(parse_time("-2d", T), Ok(T - 172_800));
    assert_eq!(parse_time("1700000000", T), Ok(1_700_000_000));
    assert_eq!(parse_time("-1y", T).expect_err("unit").position, 2);
    assert!(parse_time("yesterday", T).is_err());
    assert!(parse_time("-99999999999999999h", T).is_err());
    let ds = cpu();
    let e = parse("avg:cpu{*}").expect("parse");
    for (from, to) in [(-5, 10), (0, i64::MAX), (i64::MIN, 0)] {
        let err = evaluate(&ds, &e, from, to, &EvalOptions::default(), &HashMap::new())
            .expect_err("bounds");
        assert!(err.message.contains("out of bounds"), "{err}");
    }
}

#[test]
fn auto_step_is_not_finer_than_the_data() {
    let mut ds = MemorySource::new();
    ds.add(
        "m",
        "a",
        &[],
        MetricKind::Gauge,
        10,
        &[(T, 1.0), (T + 10, 2.0)],
    );
    ds.add("m", "b", &[], MetricKind::Gauge, 15, &[(T + 5, 3.0)]);
    let e = parse("avg:m{*}").expect("parse");
    let ev = evaluate(
        &ds,
        &e,
        T,
        T + 300,
        &EvalOptions::default(),
        &HashMap::new(),
    )
    .expect("eval");
    // 300 s / 300 points would be 1 s; the 15 s series lifts it to the 20 s ladder step.
    assert_eq!((ev.grid.step, ev.grid.len), (20, 15));
    // Time aggregation per host first (a: 1.5, b: 3), then the space average.
    assert_eq!(
        ev.series[0].values[0],
        Some(2.25),
        "hosts a and b share bucket 0"
    );
    // An explicit rollup is honoured even if finer.
    let e = parse("avg:m{*}.rollup(avg, 5)").expect("parse");
    let ev = evaluate(
        &ds,
        &e,
        T,
        T + 300,
        &EvalOptions::default(),
        &HashMap::new(),
    )
    .expect("eval");
    assert_eq!(ev.grid.step, 5);
}
