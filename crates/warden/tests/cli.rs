//! The command-line edge: `warden dogstatsd parse` and `warden waf eval` on real processes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use std::io::Write;
use std::process::{Command, Stdio};

fn warden(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn dogstatsd_parse_prints_one_json_object_per_message_and_fails_on_bad_ones() {
    let (code, out, _) = warden(
        &["dogstatsd", "parse"],
        b"page.views:1:2|c|@0.5|#env:prod\n_sc|db.up|2|m:down\ndaemon:666|unknown\n",
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0]["kind"], "metric");
    assert_eq!(lines[0]["name"], "page.views");
    assert_eq!(lines[0]["values"], serde_json::json!([1.0, 2.0]));
    assert_eq!(lines[0]["sample_rate"], 0.5);
    assert_eq!(lines[0]["tags"], serde_json::json!(["env:prod"]));
    assert_eq!(lines[1]["kind"], "service_check");
    assert!(
        lines[2]["error"].as_str().unwrap().contains("unknown"),
        "{}",
        lines[2]
    );
    assert_eq!(code, 1, "a rejected message makes the exit code non-zero");

    let (code, _, _) = warden(&["dogstatsd", "parse"], b"ok:1|g\n");
    assert_eq!(code, 0);
}

#[test]
fn waf_eval_reports_verdicts_rule_ids_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"{"version": "2.2", "metadata": {"rules_version": "test-1"},
            "rules": [{"id": "t-001", "name": "evil query", "tags": {"type": "test", "category": "attack_attempt"},
                       "conditions": [{"operator": "match_regex", "parameters": {
                           "inputs": [{"address": "server.request.query"}], "regex": "evil"}}],
                       "on_match": ["block"]}]}"#,
    )
    .unwrap();
    let reqs = dir.path().join("reqs.jsonl");
    std::fs::write(
        &reqs,
        "{\"id\": \"a\", \"addresses\": {\"server.request.query\": {\"q\": [\"very evil\"]}}}\n\
         {\"id\": \"b\", \"addresses\": {\"server.request.query\": {\"q\": [\"nice\"]}}}\n",
    )
    .unwrap();
    let (code, out, err) = warden(
        &[
            "waf",
            "eval",
            "--rules",
            rules.to_str().unwrap(),
            reqs.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[0]["flagged"], true);
    assert_eq!(lines[0]["rule_ids"], serde_json::json!(["t-001"]));
    assert!(
        lines[0]["actions"].get("block_request").is_some(),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["flagged"], false);
    assert!(lines[1]["duration_us"].as_f64().unwrap() >= 0.0);
    assert!(err.contains("2 requests, 1 flagged"), "{err}");
    assert!(err.contains("1 loaded"), "{err}");

    let (code, _, err) = warden(
        &[
            "waf",
            "eval",
            "--rules",
            "/nonexistent.json",
            reqs.to_str().unwrap(),
        ],
        b"",
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot read ruleset"), "{err}");
}
