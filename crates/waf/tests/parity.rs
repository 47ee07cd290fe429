//! Verdict parity with libddwaf 2.1.0 + ruleset 1.18.2 on the shared corpora
//! (`shared/waf/{crs-regression,benign-faker}.jsonl` vs `shared/waf/expected/`), read in place.
//! One fresh context and one eval per request, no deadline, like the reference runner.
//! Every remaining divergence must be listed with a reason in `tests/expected-divergences.txt`.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use warden_waf::Ruleset;

fn shared(p: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/waf/")).join(p)
}

fn load_rules() -> Arc<Ruleset> {
    let json = std::fs::read_to_string(shared("datadog-rules-1.18.2.json")).expect("ruleset file");
    let (rs, _) = Ruleset::from_json(&json).expect("ruleset loads");
    Arc::new(rs)
}

#[test]
fn datadog_rules_1_18_2_diagnostics() {
    let json = std::fs::read_to_string(shared("datadog-rules-1.18.2.json")).expect("ruleset file");
    let (rs, d) = Ruleset::from_json(&json).expect("ruleset loads");
    let rules = d.section("rules").expect("rules section");
    assert_eq!(rules.loaded.len(), 204, "failed: {:?}", rules.errors);
    assert_eq!(rules.failed.len(), 0, "{:?}", rules.errors);
    assert_eq!(rules.skipped, vec!["dog-920-001".to_string()]);
    let compat = d.section("rules_compat").expect("rules_compat");
    assert_eq!(
        (compat.loaded.len(), compat.failed.len()),
        (17, 0),
        "{:?}",
        compat.errors
    );
    let procs = d.section("processors").expect("processors");
    assert_eq!(
        (procs.loaded.len(), procs.failed.len()),
        (8, 0),
        "{:?}",
        procs.errors
    );
    let scanners = d.section("scanners").expect("scanners");
    assert_eq!(
        (scanners.loaded.len(), scanners.failed.len()),
        (37, 0),
        "{:?}",
        scanners.errors
    );
    assert_eq!(d.ruleset_version.as_deref(), Some("1.18.2"));
    assert_eq!(rs.rule_ids().len(), 204 + 17);
    // Diagnostics serialise like libddwaf's (per section loaded/failed/skipped/errors).
    let j = serde_json::to_value(&d).expect("serialise");
    assert_eq!(j["rules"]["skipped"][0], "dog-920-001");
}

struct Verdict {
    flagged: bool,
    ids: BTreeSet<String>,
}

fn expected(file: &str) -> HashMap<String, Verdict> {
    let text = std::fs::read_to_string(shared(file)).expect("expected file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            let ids = v["rule_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (
                v["id"].as_str().expect("id").to_string(),
                Verdict {
                    flagged: v["flagged"].as_bool().unwrap_or(false),
                    ids,
                },
            )
        })
        .collect()
}

fn listed_divergences() -> BTreeSet<String> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/expected-divergences.txt"
    );
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Returns (total, flagged-identical, flagged-both, same-ids, divergent ids with detail).
fn compare(
    rs: &Arc<Ruleset>,
    corpus: &str,
    exp: &str,
) -> (usize, usize, usize, usize, Vec<String>) {
    let expected = expected(exp);
    let text = std::fs::read_to_string(shared(corpus)).expect("corpus");
    let (mut total, mut same_flag, mut both, mut same_ids) = (0, 0, 0, 0);
    let mut div = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let req: Value = serde_json::from_str(line).expect("json");
        let id = req["id"].as_str().expect("id").to_string();
        let mut ctx = rs.context();
        let res = ctx.run(&req["addresses"], u64::MAX / 2).expect("eval");
        let got: BTreeSet<String> = res.events.iter().map(|e| e.rule.id.clone()).collect();
        let want = expected.get(&id).expect("expected verdict for id");
        total += 1;
        let flagged = !res.events.is_empty();
        if flagged == want.flagged {
            same_flag += 1;
        }
        if flagged && want.flagged {
            both += 1;
            if got == want.ids {
                same_ids += 1;
            }
        }
        if flagged != want.flagged || got != want.ids {
            div.push(format!("{id} got={got:?} want={:?}", want.ids));
        }
    }
    (total, same_flag, both, same_ids, div)
}

fn check_corpus(corpus: &str, exp: &str) {
    let rs = load_rules();
    let (total, same_flag, both, same_ids, div) = compare(&rs, corpus, exp);
    let listed = listed_divergences();
    for d in &div {
        eprintln!("DIVERGENCE {d}");
    }
    let flag_pct = same_flag as f64 * 100.0 / total as f64;
    let ids_pct = if both == 0 {
        100.0
    } else {
        same_ids as f64 * 100.0 / both as f64
    };
    eprintln!(
        "{corpus}: {total} requests, flagged identical {same_flag} ({flag_pct:.2}%), same rule ids {same_ids}/{both} ({ids_pct:.2}%), divergences {}",
        div.len()
    );
    assert!(flag_pct >= 99.5, "flagged parity {flag_pct:.2}% < 99.5%");
    assert!(ids_pct >= 99.0, "rule id parity {ids_pct:.2}% < 99%");
    let unlisted: Vec<&String> = div
        .iter()
        .filter(|d| !listed.contains(d.split_whitespace().next().unwrap_or("")))
        .collect();
    assert!(
        unlisted.is_empty(),
        "divergences not in expected-divergences.txt: {unlisted:#?}"
    );
}

#[test]
fn parity_crs_regression() {
    check_corpus(
        "crs-regression.jsonl",
        "expected/crs-regression.libddwaf.jsonl",
    );
}

#[test]
fn parity_benign_faker() {
    check_corpus("benign-faker.jsonl", "expected/benign-faker.libddwaf.jsonl");
}
