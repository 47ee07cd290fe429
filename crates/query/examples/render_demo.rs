//! Prints `render_table` output for a small synthetic data set (what `warden query` shows).
//! `cargo run -p warden-query --example render_demo`

use warden_model::MetricKind;
use warden_query::{EvalOptions, MemorySource, parse, render_table, run_v1};

fn main() {
    let t0 = 1_700_000_000 / 3600 * 3600;
    let mut ds = MemorySource::new();
    for (h, base) in [("web-1", 20.0), ("web-2", 55.0), ("db-1", 80.0)] {
        let pts: Vec<(i64, f64)> = (0..360)
            .filter(|i| h != "web-2" || !(100..140).contains(i))
            .map(|i| (t0 + i * 10, base + 15.0 * ((i as f64) / 40.0).sin()))
            .collect();
        ds.add(
            "system.cpu.user",
            h,
            &["env:prod"],
            MetricKind::Gauge,
            10,
            &pts,
        );
    }
    let q = "avg:system.cpu.user{*} by {host}";
    let resp = run_v1(&ds, q, t0, t0 + 3600, &EvalOptions::default()).expect("query");
    print!("{}", render_table(&resp));
    let bad = "avg:system.cpu.user{env:prod,)";
    if let Err(e) = parse(bad) {
        println!("\nerror: {e}\n{}", e.caret(bad));
    }
}
