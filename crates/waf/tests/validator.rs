//! libddwaf's black-box validator suite (425 tests over 48 synthetic rulesets), read in place
//! from `shared/waf/validator/`, checked the way the reference runner checks libddwaf:
//! return code, number of events, each expected event matched by a distinct event including
//! its (address, value) condition matches, and action types when given.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use warden_waf::{EvalResult, Parameter, Ruleset};

fn shared(p: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/waf/")).join(p)
}

fn event_pairs(e: &warden_waf::Event) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for rm in &e.rule_matches {
        for p in &rm.parameters {
            if let Parameter::Scalar(sp) = p {
                out.insert((sp.address.clone(), sp.value.clone()));
            }
        }
    }
    out
}

fn vstr(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => {
            if *b {
                "True".into()
            } else {
                "False".into()
            }
        }
        other => other.to_string(),
    }
}

fn check_run(run: &Value, res: &EvalResult, errs: &mut Vec<String>) {
    let want_match = run.get("code").and_then(Value::as_str) == Some("match");
    // libddwaf returns MATCH for events or attributes; the validator compares that code.
    let got_match = !res.events.is_empty() || !res.derivatives.is_empty();
    if got_match != want_match {
        errs.push(format!("code match={got_match} want {want_match}"));
    }
    let expected = run
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if run.get("rules").is_some() || !want_match {
        if res.events.len() != expected.len() {
            let ids: Vec<&str> = res.events.iter().map(|e| e.rule.id.as_str()).collect();
            errs.push(format!("events {ids:?} != {} expected", expected.len()));
        }
        let mut used = vec![false; res.events.len()];
        for alts in &expected {
            let Some(alts) = alts.as_object() else {
                continue;
            };
            let mut hit = false;
            for (j, e) in res.events.iter().enumerate() {
                if used[j] {
                    continue;
                }
                let ok = alts.iter().any(|(rid, matches)| {
                    if e.rule.id != *rid {
                        return false;
                    }
                    let want: BTreeSet<(String, String)> = matches
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|cm| {
                                    Some((vstr(cm.get("address")?), vstr(cm.get("value")?)))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    want.is_subset(&event_pairs(e))
                });
                if ok {
                    used[j] = true;
                    hit = true;
                    break;
                }
            }
            if !hit {
                let keys: Vec<&String> = alts.keys().collect();
                errs.push(format!(
                    "no event for {keys:?} (got {:?})",
                    serde_json::to_string(&res.events).unwrap_or_default()
                ));
            }
        }
    }
    if let Some(a) = run.get("actions").and_then(Value::as_object) {
        if !a.is_empty() {
            let want: BTreeSet<&String> = a.keys().collect();
            let got: BTreeSet<&String> = res.actions.iter().map(|x| &x.kind).collect();
            if want != got {
                errs.push(format!("actions {got:?} != {want:?}"));
            }
        }
    }
}

#[test]
fn libddwaf_validator_suite() {
    let rulesets: HashMap<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(shared("validator/libddwaf-validator-rulesets.json"))
            .expect("rulesets file"),
    )
    .expect("rulesets json");
    let tests = std::fs::read_to_string(shared("validator/libddwaf-validator.jsonl"))
        .expect("validator file");
    let mut cache: HashMap<String, Arc<Ruleset>> = HashMap::new();
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    for line in tests.lines().filter(|l| !l.trim().is_empty()) {
        let t: Value = serde_json::from_str(line).expect("test json");
        let dir = t["dir"].as_str().expect("dir").to_string();
        let id = t["id"].as_str().expect("id").to_string();
        let rs = cache
            .entry(dir.clone())
            .or_insert_with(|| {
                let (rs, _d) =
                    Ruleset::from_json(&rulesets[&dir].to_string()).expect("ruleset loads");
                Arc::new(rs)
            })
            .clone();
        let mut errs = Vec::new();
        let mut ctx = rs.context();
        for run in t["runs"].as_array().expect("runs") {
            if let Some(seq) = run.as_array() {
                let mut sub = ctx.subcontext();
                for r in seq {
                    let res = sub.run(&r["input"], 10_000_000).expect("eval");
                    check_run(r, &res, &mut errs);
                }
            } else {
                let res = ctx.run(&run["input"], 10_000_000).expect("eval");
                check_run(run, &res, &mut errs);
            }
        }
        let mut ok = errs.is_empty();
        if t["expected_fail"].as_bool() == Some(true) {
            ok = !ok;
        }
        if ok {
            passed += 1;
        } else {
            failed += 1;
            let msg = errs.join("; ");
            failures.push(format!("FAIL {id}: {}", &msg[..msg.len().min(400)]));
        }
    }
    for f in &failures {
        eprintln!("{f}");
    }
    eprintln!("validator: {passed} passed, {failed} failed");
    assert_eq!(passed, 425, "validator: {passed} passed, {failed} failed");
}
