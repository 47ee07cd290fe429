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
    let (ruleset, loaded, failed, skipped, rules_name) =
        load_profiled(rules, warden_waf::Profile::Default)?;
    eprintln!(
        "ruleset {rules_name} (version {}): {loaded} loaded, {failed} failed, {skipped} skipped",
        ruleset.rules_version().unwrap_or("unknown"),
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

/// Builds the ruleset for `--rules`/`--profile`: the file (or the built-in default) under one
/// path, and the profile's overlay under another, merged like remote-config updates.
pub(crate) fn load_profiled(
    rules: Option<&Path>,
    profile: warden_waf::Profile,
) -> anyhow::Result<(Arc<warden_waf::Ruleset>, usize, usize, usize, String)> {
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
    let mut builder = warden_waf::Builder::new();
    let mut diags = vec![
        builder
            .add_or_update("warden/base", &text)
            .with_context(|| format!("cannot load ruleset {name}"))?,
    ];
    if let Some(overlay) = profile.overlay_json() {
        diags.push(
            builder
                .add_or_update("warden/profile", overlay)
                .context("cannot load the profile overlay")?,
        );
    }
    let (mut loaded, mut failed, mut skipped) = (0, 0, 0);
    for d in &diags {
        for s in d.sections.values() {
            loaded += s.loaded.len();
            failed += s.failed.len();
            skipped += s.skipped.len();
        }
    }
    Ok((builder.build(), loaded, failed, skipped, name))
}

/// Families whose attack stages count towards the application-attack detection figure.
const APP_ATTACK_FAMILIES: &[&str] = &[
    "930", "931", "932", "933", "934", "941", "942", "943", "944",
];

#[derive(Default, Clone, serde::Serialize)]
struct Tally {
    attack: usize,
    attack_flagged: usize,
    negative: usize,
    negative_flagged: usize,
    benign: usize,
    benign_flagged: usize,
    other: usize,
    other_flagged: usize,
}

impl Tally {
    fn add(&mut self, label: &str, flagged: bool) {
        let f = usize::from(flagged);
        match label {
            "attack" => {
                self.attack += 1;
                self.attack_flagged += f;
            }
            "negative" => {
                self.negative += 1;
                self.negative_flagged += f;
            }
            "benign" => {
                self.benign += 1;
                self.benign_flagged += f;
            }
            _ => {
                self.other += 1;
                self.other_flagged += f;
            }
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.attack += o.attack;
        self.attack_flagged += o.attack_flagged;
        self.negative += o.negative;
        self.negative_flagged += o.negative_flagged;
        self.benign += o.benign;
        self.benign_flagged += o.benign_flagged;
        self.other += o.other;
        self.other_flagged += o.other_flagged;
    }

    fn json(&self) -> Value {
        let rate = |a: usize, n: usize| {
            if n == 0 {
                Value::Null
            } else {
                json!(a as f64 / n as f64)
            }
        };
        json!({
            "attack": self.attack, "attack_flagged": self.attack_flagged,
            "detection_rate": rate(self.attack_flagged, self.attack),
            "negative": self.negative, "negative_flagged": self.negative_flagged,
            "negative_rate": rate(self.negative_flagged, self.negative),
            "benign": self.benign, "benign_flagged": self.benign_flagged,
            "benign_rate": rate(self.benign_flagged, self.benign),
            "other": self.other, "other_flagged": self.other_flagged,
        })
    }
}

/// Family of a corpus record: its CRS file (`REQUEST-942-APPLICATION-ATTACK-SQLI`), else its
/// `family` field, else its label (`benign`).
fn family_of(req: &Value) -> String {
    for k in ["crs_file", "family"] {
        if let Some(f) = req.get(k).and_then(Value::as_str) {
            return f.to_string();
        }
    }
    req.get("label")
        .and_then(Value::as_str)
        .unwrap_or("unlabelled")
        .to_string()
}

fn is_app_attack_family(family: &str) -> bool {
    family
        .split('-')
        .nth(1)
        .is_some_and(|n| APP_ATTACK_FAMILIES.contains(&n))
        && family.starts_with("REQUEST-")
}

/// Options of `warden waf score`.
pub(crate) struct ScoreArgs<'a> {
    pub(crate) rules: Option<&'a Path>,
    pub(crate) profile: warden_waf::Profile,
    pub(crate) timeout_us: u64,
    pub(crate) json: bool,
    pub(crate) corpora: &'a [std::path::PathBuf],
}

/// `warden waf score`: detection and false-positive rates per family and per rule.
pub(crate) fn score(args: &ScoreArgs<'_>) -> anyhow::Result<ExitCode> {
    let (ruleset, loaded, failed, skipped, name) = load_profiled(args.rules, args.profile)?;
    let mut families: std::collections::BTreeMap<String, Tally> = Default::default();
    // rule id -> tally of the requests it was reported on
    let mut per_rule: std::collections::BTreeMap<String, Tally> = Default::default();
    let mut durations = Vec::new();
    let mut bad_lines = 0usize;
    let mut timeouts = 0usize;
    for corpus in args.corpora {
        let file = std::fs::File::open(corpus)
            .with_context(|| format!("cannot open corpus {}", corpus.display()))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", corpus.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let req: Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(e) => {
                    bad_lines += 1;
                    eprintln!("{}:{}: not JSON: {e}", corpus.display(), n + 1);
                    continue;
                }
            };
            let Some(addresses) = req.get("addresses") else {
                bad_lines += 1;
                eprintln!("{}:{}: missing \"addresses\"", corpus.display(), n + 1);
                continue;
            };
            let label = req.get("label").and_then(Value::as_str).unwrap_or("other");
            let mut ctx = ruleset.context();
            let result = match ctx.run(addresses, args.timeout_us) {
                Ok(r) => r,
                Err(e) => {
                    bad_lines += 1;
                    eprintln!("{}:{}: {e}", corpus.display(), n + 1);
                    continue;
                }
            };
            durations.push(result.duration_ns as f64 / 1000.0);
            timeouts += usize::from(result.timeout);
            let flagged = result.is_match();
            families
                .entry(family_of(&req))
                .or_default()
                .add(label, flagged);
            let mut ids: Vec<&str> = result.events.iter().map(|e| e.rule.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                per_rule.entry(id.to_string()).or_default().add(label, true);
            }
        }
    }
    let mut app = Tally::default();
    let mut all = Tally::default();
    for (f, t) in &families {
        all.merge(t);
        if is_app_attack_family(f) {
            app.merge(t);
        }
    }
    durations.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if durations.is_empty() {
            return 0.0;
        }
        let i = ((p * durations.len() as f64).ceil() as usize).clamp(1, durations.len()) - 1;
        durations[i]
    };
    let mean = if durations.is_empty() {
        0.0
    } else {
        durations.iter().sum::<f64>() / durations.len() as f64
    };
    let profile = match args.profile {
        warden_waf::Profile::Default => "default",
        warden_waf::Profile::Paranoid => "paranoid",
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        let doc = json!({
            "ruleset": name,
            "rules_version": ruleset.rules_version(),
            "profile": profile,
            "loaded": loaded, "failed": failed, "skipped": skipped,
            "requests": durations.len(), "unreadable": bad_lines, "timeouts": timeouts,
            "eval_us": {"mean": mean, "p50": pct(0.5), "p99": pct(0.99)},
            "total": all.json(),
            "application_attack_families": app.json(),
            "families": families.iter().map(|(f, t)| (f.clone(), t.json())).collect::<serde_json::Map<_, _>>(),
            "rules": per_rule.iter().map(|(r, t)| (r.clone(), t.json())).collect::<serde_json::Map<_, _>>(),
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        out.write_all(b"\n")?;
    } else {
        writeln!(
            out,
            "ruleset {name} (version {}), profile {profile}: {loaded} loaded, {failed} failed, {skipped} skipped",
            ruleset.rules_version().unwrap_or("unknown")
        )?;
        writeln!(
            out,
            "{} requests, {bad_lines} unreadable, {timeouts} timed out; eval time mean {mean:.2} µs, p50 {:.2} µs, p99 {:.2} µs\n",
            durations.len(),
            pct(0.5),
            pct(0.99)
        )?;
        let header = format!(
            "{:<48} {:>17} {:>17} {:>17} {:>9}",
            "family", "attack flagged", "negative flagged", "benign flagged", "other"
        );
        writeln!(out, "{header}")?;
        for (f, t) in &families {
            write_row(&mut out, f, t)?;
        }
        writeln!(out, "{}", "-".repeat(header.chars().count()))?;
        write_row(&mut out, "application attacks (930-934, 941-944)", &app)?;
        write_row(&mut out, "all", &all)?;
        writeln!(out)?;
        let header = format!(
            "{:<48} {:>17} {:>17} {:>17} {:>9}",
            "rule (requests it was reported on)", "attack", "negative", "benign", "other"
        );
        writeln!(out, "{header}")?;
        let mut rules: Vec<_> = per_rule.iter().collect();
        rules.sort_by(|a, b| {
            (b.1.attack_flagged + b.1.negative_flagged + b.1.benign_flagged)
                .cmp(&(a.1.attack_flagged + a.1.negative_flagged + a.1.benign_flagged))
                .then(a.0.cmp(b.0))
        });
        for (r, t) in rules {
            writeln!(
                out,
                "{:<48} {:>17} {:>17} {:>17} {:>9}",
                r, t.attack_flagged, t.negative_flagged, t.benign_flagged, t.other_flagged
            )?;
        }
    }
    out.flush()?;
    Ok(if bad_lines == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn write_row(out: &mut impl Write, name: &str, t: &Tally) -> std::io::Result<()> {
    let cell = |a: usize, n: usize| -> String {
        if n == 0 {
            "-".to_string()
        } else {
            format!("{a}/{n} {:5.1}%", 100.0 * a as f64 / n as f64)
        }
    };
    writeln!(
        out,
        "{:<48} {:>17} {:>17} {:>17} {:>9}",
        name,
        cell(t.attack_flagged, t.attack),
        cell(t.negative_flagged, t.negative),
        cell(t.benign_flagged, t.benign),
        if t.other == 0 {
            "-".to_string()
        } else {
            format!("{}/{}", t.other_flagged, t.other)
        }
    )
}
