//! Evaluation-time benchmark: one fresh context and one evaluation per request over a JSONL
//! corpus (the shared corpora's format: `{"id", "addresses": {...}}` per line, or a bare address
//! map). It mirrors the libddwaf reference runner (`ddwaf_reference.py --summary-only --repeat N`)
//! so the two can be compared number for number (`scripts/bench-waf.sh` runs both):
//!
//! * same loop: `--warmup` untimed passes over the corpus, then each request evaluated `--repeat`
//!   times back to back, each time in a fresh context;
//! * same timed region: the engine's own `duration_ns` (libddwaf: `duration`), which starts when
//!   the input is handed over. The input is copied and the context created *before* the clock
//!   starts and handed over by value with [`warden_waf::Context::run_owned`], as libddwaf takes
//!   ownership of a `ddwaf_object` converted beforehand. (`Context::run(&Value)` would also count
//!   a deep copy of the input.) `wall` is the wall time around that one call only (the runner's
//!   `eval`, without the ctypes overhead);
//! * same statistics: all samples, and best-of-N per request; mean, p50, p99, max in µs with the
//!   runner's percentile rule (nearest rank, index `round(q·(n-1))`, ties to even).
//!
//! ```text
//! cargo run -p warden-waf --release --example waf_bench -- \
//!     ../shared/waf/datadog-rules-1.18.2.json ../shared/waf/crs-regression.jsonl \
//!     [--repeat 5] [--warmup 1] [--timeout-us 1000000]
//! ```
//! Run it on a quiet machine; a shared VM inflates the tail by an order of magnitude.

use std::sync::Arc;
use std::time::Instant;

/// Nearest-rank percentile as the reference runner computes it (Python `round`, ties to even).
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round_ties_even() as usize;
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
    let mut warmup = 1usize;
    let mut timeout_us = 1_000_000u64;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--repeat" => repeat = it.next().ok_or("--repeat N")?.parse()?,
            "--warmup" => warmup = it.next().ok_or("--warmup N")?.parse()?,
            "--timeout-us" => timeout_us = it.next().ok_or("--timeout-us N")?.parse()?,
            _ => pos.push(a.clone()),
        }
    }
    let (rules, corpus) = match (pos.first(), pos.get(1)) {
        (Some(r), Some(c)) => (r, c),
        _ => {
            return Err(
                "usage: waf_bench RULES.json CORPUS.jsonl [--repeat N] [--warmup N] \
                        [--timeout-us N]"
                    .into(),
            );
        }
    };
    if repeat == 0 {
        return Err("--repeat must be at least 1".into());
    }
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
        "ruleset {} loaded in {load_ms:.1} ms ({} items loaded); {} requests x {repeat}, warmup {warmup}",
        diags.ruleset_version.as_deref().unwrap_or("?"),
        diags.total_loaded(),
        requests.len()
    );
    // Warm-up passes (untimed), same work as a measured evaluation.
    for _ in 0..warmup {
        for r in &requests {
            rs.context().run_owned(r.clone(), timeout_us)?;
        }
    }
    let mut engine = Vec::with_capacity(requests.len() * repeat);
    let mut wall = Vec::with_capacity(requests.len() * repeat);
    let mut best = Vec::with_capacity(requests.len());
    let (mut flagged, mut timeouts) = (0usize, 0usize);
    let t_all = Instant::now();
    for r in &requests {
        let mut b = f64::MAX;
        for rep in 0..repeat {
            // Untimed: the input copy (libddwaf: JSON -> ddwaf_object) and the context.
            let input = r.clone();
            let mut ctx = rs.context();
            let start = Instant::now();
            let res = ctx.run_owned(input, timeout_us)?;
            let w = start.elapsed().as_secs_f64() * 1e6;
            let e = res.duration_ns as f64 / 1e3;
            engine.push(e);
            wall.push(w);
            b = b.min(e);
            timeouts += usize::from(res.timeout);
            if rep == 0 {
                flagged += usize::from(res.is_match());
            }
        }
        best.push(b);
    }
    println!(
        "flagged {flagged} / {}, timeouts {timeouts}, loop {:.3} s",
        requests.len(),
        t_all.elapsed().as_secs_f64()
    );
    report("engine", engine);
    report("wall", wall);
    if repeat > 1 {
        report("engine best", best);
    }
    Ok(())
}
