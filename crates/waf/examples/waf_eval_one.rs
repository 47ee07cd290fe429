//! Developer helper: evaluate one JSON map of addresses (argv[2]) against a ruleset file
//! (argv[1]) with a fresh context and print the result as libddwaf-style JSON.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (rules, input) = match (args.get(1), args.get(2)) {
        (Some(r), Some(i)) => (r, i),
        _ => return Err("usage: waf_eval_one RULES.json '{\"address\": value}'".into()),
    };
    let (rs, _) = warden_waf::Ruleset::from_json(&std::fs::read_to_string(rules)?)?;
    let rs = std::sync::Arc::new(rs);
    let v: serde_json::Value = serde_json::from_str(input)?;
    let res = rs.context().run(&v, 1_000_000)?;
    println!("{}", serde_json::to_string_pretty(&res.to_libddwaf_json())?);
    Ok(())
}
