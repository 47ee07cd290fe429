//! `warden waf eval`: runs a ruleset over recorded requests, so users can see what a rule or
//! ruleset change does to their own traffic before deploying it.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{Value, json};

/// Per-request verdicts on stdout (JSON lines), a summary on stderr.
pub(crate) fn eval(
    rules: Option<&Path>,
    timeout_us: u64,
    requests: &Path,
) -> anyhow::Result<ExitCode> {
    let (ruleset, diagnostics, rules_name) = load_ruleset(rules)?;
    let mut loaded = 0;
    let mut failed = 0;
    let mut skipped = 0;
    for s in diagnostics.sections.values() {
        loaded += s.loaded.len();
        failed += s.failed.len();
        skipped += s.skipped.len();
    }
    eprintln!(
        "ruleset {rules_name} (version {}): {loaded} loaded, {failed} failed, {skipped} skipped",
        diagnostics.ruleset_version.as_deref().unwrap_or("unknown"),
    );

    let file = std::fs::File::open(requests)
        .with_context(|| format!("cannot open requests {}", requests.display()))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut durations = Vec::new();
    let mut flagged = 0usize;
    let mut bad_lines = 0usize;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", requests.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let req: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                bad_lines += 1;
                eprintln!("{}:{}: not JSON: {e}", requests.display(), n + 1);
                continue;
            }
        };
        let Some(addresses) = req.get("addresses") else {
            bad_lines += 1;
            eprintln!("{}:{}: missing \"addresses\"", requests.display(), n + 1);
            continue;
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let mut ctx = ruleset.context();
        let result = match ctx.run(addresses, timeout_us) {
            Ok(r) => r,
            Err(e) => {
                bad_lines += 1;
                eprintln!("{}:{}: {e}", requests.display(), n + 1);
                continue;
            }
        };
        let duration_us = result.duration_ns as f64 / 1000.0;
        durations.push(duration_us);
        let mut rule_ids: Vec<&str> = result.events.iter().map(|e| e.rule.id.as_str()).collect();
        rule_ids.sort_unstable();
        rule_ids.dedup();
        if result.is_match() {
            flagged += 1;
        }
        let line = json!({
            "id": id,
            "flagged": result.is_match(),
            "rule_ids": rule_ids,
            "actions": result.actions_map(),
            "timeout": result.timeout,
            "duration_us": duration_us,
        });
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let total = durations.len();
    durations.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if durations.is_empty() {
            return 0.0;
        }
        let i = ((p * total as f64).ceil() as usize).clamp(1, total) - 1;
        durations[i]
    };
    let mean = if total == 0 {
        0.0
    } else {
        durations.iter().sum::<f64>() / total as f64
    };
    eprintln!(
        "{total} requests, {flagged} flagged ({:.2}%), {bad_lines} unreadable; eval time mean {mean:.2} µs, p50 {:.2} µs, p99 {:.2} µs",
        if total == 0 {
            0.0
        } else {
            100.0 * flagged as f64 / total as f64
        },
        pct(0.50),
        pct(0.99),
    );
    Ok(if bad_lines == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Loads `--rules FILE`, or Warden's built-in default ruleset when no file is given.
fn load_ruleset(
    rules: Option<&Path>,
) -> anyhow::Result<(Arc<warden_waf::Ruleset>, warden_waf::Diagnostics, String)> {
    let (text, name) = match rules {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read ruleset {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            warden_waf::DEFAULT_RULESET_JSON.to_string(),
            "(built-in default)".to_string(),
        ),
    };
    let (ruleset, diagnostics) = warden_waf::Ruleset::from_json(&text)
        .with_context(|| format!("cannot load ruleset {name}"))?;
    Ok((Arc::new(ruleset), diagnostics, name))
}
