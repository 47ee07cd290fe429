//! Developer probe: evaluate every waf-module rule independently (each rule made its own
//! collection) over a corpus and print `id<TAB>type:rule,...` lines; used to measure which
//! rules libddwaf reports first when several rules of one attack type match.
//! Usage: cargo run -p warden-waf --release --example waf_probe_all -- RULES.json CORPUS.jsonl
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (rules, corpus) = match (args.get(1), args.get(2)) {
        (Some(r), Some(c)) => (r, c),
        _ => return Err("usage: waf_probe_all RULES.json CORPUS.jsonl".into()),
    };
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(rules)?)?;
    let mut types = std::collections::HashMap::new();
    for sec in ["rules", "rules_compat"] {
        if let Some(a) = doc.get_mut(sec).and_then(|v| v.as_array_mut()) {
            for r in a {
                let id = r["id"].as_str().unwrap_or_default().to_string();
                let ty = r["tags"]["type"].as_str().unwrap_or_default().to_string();
                types.insert(id.clone(), ty);
                r["tags"]["type"] = serde_json::Value::from(id);
            }
        }
    }
    let (rs, _) = warden_waf::Ruleset::from_json(&doc.to_string())?;
    let rs = Arc::new(rs);
    for line in std::fs::read_to_string(corpus)?.lines() {
        let req: serde_json::Value = serde_json::from_str(line)?;
        let mut ctx = rs.context();
        let res = ctx.run(&req["addresses"], u64::MAX / 2)?;
        let ids: Vec<String> = res
            .events
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    types.get(&e.rule.id).cloned().unwrap_or_default(),
                    e.rule.id
                )
            })
            .collect();
        println!(
            "{}\t{}",
            req["id"].as_str().unwrap_or_default(),
            ids.join(",")
        );
    }
    Ok(())
}
