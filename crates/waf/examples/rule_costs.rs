//! Per-rule evaluation cost on a corpus: each rule alone in a ruleset (same processors and
//! scanners as the file), best of 3 passes, total µs over the corpus, most expensive first.
//!
//! ```text
//! cargo run -p warden-waf --release --example rule_costs -- RULES.json CORPUS.jsonl [--top N]
//! ```

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (rules, corpus) = match (args.get(1), args.get(2)) {
        (Some(r), Some(c)) => (r, c),
        _ => return Err("usage: rule_costs RULES.json CORPUS.jsonl [--top N]".into()),
    };
    let top: usize = match args.iter().position(|a| a == "--top") {
        Some(i) => args.get(i + 1).ok_or("--top N")?.parse()?,
        None => 25,
    };
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(rules)?)?;
    let requests: Vec<serde_json::Value> = std::fs::read_to_string(corpus)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v.get("addresses").cloned().unwrap_or(v))
        })
        .collect::<Result<_, serde_json::Error>>()?;
    let time = |d: &serde_json::Value| -> Result<f64, Box<dyn std::error::Error>> {
        let (rs, _) = warden_waf::Ruleset::from_json(&d.to_string())?;
        let rs = std::sync::Arc::new(rs);
        let mut best = f64::MAX;
        for _ in 0..3 {
            let mut tot = 0.0;
            for r in &requests {
                let input = r.clone();
                let mut ctx = rs.context();
                let t = Instant::now();
                ctx.run_owned(input, 1_000_000)?;
                tot += t.elapsed().as_secs_f64() * 1e6;
            }
            best = best.min(tot);
        }
        Ok(best)
    };
    let mut empty = doc.clone();
    // One rule on an address no request has: some rulesets refuse to load without rules.
    empty["rules"] = serde_json::json!([{"id": "never", "name": "never", "tags": {"type": "none"},
        "conditions": [{"operator": "match_regex", "parameters": {
            "inputs": [{"address": "never.address"}], "regex": "x"}}]}]);
    let base = time(&empty)?;
    let all = time(&doc)?;
    let mut costs = Vec::new();
    for r in doc["rules"].as_array().ok_or("no rules")? {
        let mut one = empty.clone();
        if let Some(a) = one["rules"].as_array_mut() {
            a.push(r.clone());
        }
        let c = time(&one)? - base;
        costs.push((c, r["id"].as_str().unwrap_or("?").to_string()));
    }
    costs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n = requests.len() as f64;
    println!(
        "whole ruleset {:.2} µs/request, no rules {:.2}, sum of single rules {:.2}",
        all / n,
        base / n,
        costs.iter().map(|c| c.0).sum::<f64>() / n
    );
    for (c, id) in costs.iter().take(top) {
        println!("{:>8.3} µs/request  {id}", c / n);
    }
    Ok(())
}
