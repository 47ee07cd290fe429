//! Rough throughput figures for the query engine (not a test): parse rate, and `run_v1` over an
//! in-memory source of many hosts. Run with `cargo run --release -p warden-query --example eval_bench`.

use std::time::Instant;

use warden_model::MetricKind;
use warden_query::{EvalOptions, MemorySource, parse, run_v1};

fn main() {
    let queries = [
        "avg:system.cpu.user{env:prod,!host:a} by {host}.rollup(avg, 60)",
        "top(sum:req{service:web-* AND (az:a OR az:b)} by {host}.as_count(), 10, 'mean', 'desc')",
        "(sum:errors{*}.as_count() / sum:req{*}.as_count()) * 100",
    ];
    let n = 100_000;
    let t = Instant::now();
    let mut ok = 0usize;
    for i in 0..n {
        ok += usize::from(parse(queries[i % queries.len()]).is_ok());
    }
    let el = t.elapsed();
    println!(
        "parse: {ok} queries in {el:?} ({:.0} queries/s)",
        n as f64 / el.as_secs_f64()
    );

    let t0 = 1_700_000_000 / 3600 * 3600;
    let (hosts, points) = (1000, 360);
    let mut ds = MemorySource::new();
    for h in 0..hosts {
        let pts: Vec<(i64, f64)> = (0..points)
            .map(|i| (t0 + i * 10, ((h * 7 + i) % 100) as f64))
            .collect();
        ds.add(
            "m",
            &format!("host-{h}"),
            &[if h % 2 == 0 { "env:prod" } else { "env:dev" }],
            MetricKind::Gauge,
            10,
            &pts,
        );
    }
    for q in [
        "avg:m{*}",
        "avg:m{*} by {host}",
        "sum:m{env:prod} by {env}.rollup(sum, 60)",
    ] {
        let t = Instant::now();
        let resp = run_v1(&ds, q, t0, t0 + 3600, &EvalOptions::default()).expect("query");
        let el = t.elapsed();
        let series = resp["series"].as_array().map_or(0, Vec::len);
        println!(
            "run_v1 {q:45} over {hosts} series x {points} points: {el:?} ({series} result series, {:.1} M points/s)",
            (hosts * points) as f64 / el.as_secs_f64() / 1e6
        );
    }
}
