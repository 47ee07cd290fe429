//! Fuzz target: the detection crate's parsers of API input.
//! First byte selects:
//! * 0: signals `filter[query]` / rule query (`Query::parse`), then matching against a
//!   fixed document and the exact-value extraction the engine indexes rules by;
//! * 1: `filter[from]`/`filter[to]` time expressions (`now-1h`, ISO-8601, UNIX ms);
//! * 2: a rule body (JSON) through `Rule::from_json` and `validate`.
//! Invariants: no panic; a parsed query prints as written and parses again; errors carry a
//! position inside the query; an ISO time printed by `format_iso` parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use warden_detection::search::JsonDoc;
use warden_detection::{Query, Rule, time};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => {
            let Ok(s) = std::str::from_utf8(body) else {
                return;
            };
            match Query::parse(s) {
                Ok(q) => {
                    assert_eq!(q.to_string(), s);
                    let again = Query::parse(&q.to_string()).expect("a parsed query parses again");
                    let top =
                        json!({"status": "high", "service": "web", "env": "prod", "host": "h-1"});
                    let attrs = json!({
                        "http": {"url": "/a?x=1", "status_code": 403, "method": "GET"},
                        "network": {"client": {"ip": "10.0.0.1"}},
                        "appsec": {"triggers": [{"rule": {"id": "crs-942-100", "tags": {"category": "attack_attempt"}}}]},
                        "n": 1.5, "b": true, "list": ["a", "b"]
                    });
                    let tags = ["env:prod".to_string(), "team:sec".into()];
                    let text = ["SQL injection attempt", "GET /a"];
                    let doc = JsonDoc {
                        top: &top,
                        attrs: &attrs,
                        tags: &tags,
                        text: &text,
                    };
                    assert_eq!(q.matches(&doc), again.matches(&doc));
                    for f in [
                        "service",
                        "@appsec.triggers.rule.id",
                        "env",
                        "@http.status_code",
                    ] {
                        let _ = q.required_exact(f);
                    }
                }
                Err(e) => {
                    assert!(
                        e.position <= s.len(),
                        "error position {} past {}",
                        e.position,
                        s.len()
                    );
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        1 => {
            let Ok(s) = std::str::from_utf8(body) else {
                return;
            };
            for now in [1_700_000_000_000, 0, i64::MAX, i64::MIN] {
                let _ = time::parse_time(s, now);
            }
            if let Ok(ms) = time::parse_iso(s) {
                // Years 0..=9999 print as four digits; that is the range parse_iso reads.
                if (-62_167_219_200_000..253_402_300_800_000).contains(&ms) {
                    let iso = time::format_iso(ms);
                    assert_eq!(
                        time::parse_iso(&iso).ok(),
                        Some(ms),
                        "{s:?} -> {ms} -> {iso}"
                    );
                }
            }
        }
        _ => {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
                return;
            };
            if let Ok(mut r) = Rule::from_json(&v) {
                r.normalize();
                if r.validate().is_ok() {
                    let _ = r.to_response();
                    assert!(r.same_logic(&r.clone()));
                }
            }
        }
    }
});
