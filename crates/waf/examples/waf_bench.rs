//! Evaluation-time benchmark: one fresh context and one `run` per request over a JSONL corpus
//! (the shared corpora's format: `{"id", "addresses": {...}}` per line, or a bare address map),
//! like the libddwaf reference runner. Prints mean / p50 / p99 / max in µs of the engine's own
//! `duration_ns` and of the wall time around `run` (including the input copy), plus best-of-N.
//!
//! ```text
//! cargo run -p warden-waf --release --example waf_bench -- \
//!     ../shared/waf/datadog-rules-1.18.2.json ../shared/waf/crs-regression.jsonl [--repeat 5] [--timeout-us 1000000]
//! ```
//! Run it on a quiet machine; a shared VM inflates the tail by an order of magnitude.

use std::sync::Arc;
use std::time::Instant;

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut xs: Vec<f64>) {
    xs.sort_by(|a, b| a.total_cmp(b));
    let mean = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    println!(
        "{name:<14} n={:<6} mean={mean:>9.2} p50={:>9.2} p99={:>9.2} max={:>10.2} (µs)",
        xs.len(),
        pct(&xs, 0.5),
        pct(&xs, 0.99),
        xs.last().copied().unwrap_or(0.0)
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mut pos = Vec::new();
    let mut repeat = 1usize;
    let mut timeout_us = 1_000_000u64;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--repeat" => repeat = it.next().ok_or("--repeat N")?.parse()?,
            "--timeout-us" => timeout_us = it.next().ok_or("--timeout-us N")?.parse()?,
            _ => pos.push(a.clone()),
        }
    }
    let (rules, corpus) = match (pos.first(), pos.get(1)) {
        (Some(r), Some(c)) => (r, c),
        _ => {
            return Err(
                "usage: waf_bench RULES.json CORPUS.jsonl [--repeat N] [--timeout-us N]".into(),
            );
        }
    };
    let t0 = Instant::now();
    let (rs, diags) = warden_waf::Ruleset::from_json(&std::fs::read_to_string(rules)?)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rs = Arc::new(rs);
    let requests: Vec<serde_json::Value> = std::fs::read_to_string(corpus)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(match v.get("addresses") {
                Some(a) => a.clone(),
                None => v,
            })
        })
        .collect::<Result<_, serde_json::Error>>()?;
    println!(
        "ruleset {} loaded in {load_ms:.1} ms ({} items loaded); {} requests x {repeat}",
        diags.ruleset_version.as_deref().unwrap_or("?"),
        diags.total_loaded(),
        requests.len()
    );
    // Warm-up pass (untimed).
    for r in &requests {
        rs.context().run(r, timeout_us)?;
    }
    let mut engine = Vec::new();
    let mut wall = Vec::new();
    let mut best = vec![f64::MAX; requests.len()];
    let (mut flagged, mut timeouts) = (0usize, 0usize);
    for round in 0..repeat {
        for (i, r) in requests.iter().enumerate() {
            let start = Instant::now();
            let mut ctx = rs.context();
            let res = ctx.run(r, timeout_us)?;
            let w = start.elapsed().as_secs_f64() * 1e6;
            let e = res.duration_ns as f64 / 1e3;
            engine.push(e);
            wall.push(w);
            best[i] = best[i].min(e);
            if round == 0 {
                flagged += usize::from(!res.events.is_empty());
                timeouts += usize::from(res.timeout);
            }
        }
    }
    println!(
        "flagged {flagged} / {}, timeouts {timeouts}",
        requests.len()
    );
    report("engine", engine);
    report("wall", wall);
    if repeat > 1 {
        report("engine best", best);
    }
    Ok(())
}
