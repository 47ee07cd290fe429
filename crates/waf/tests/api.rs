//! Public API behaviour: builder paths and atomic swap, diagnostics, timeouts, subcontexts,
//! actions, event format and obfuscation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};
use warden_waf::{Builder, Parameter, Ruleset, SharedRuleset};

fn rules_1_18_2() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/waf/datadog-rules-1.18.2.json"
    ))
    .expect("ruleset file")
}

fn ids(res: &warden_waf::EvalResult) -> Vec<String> {
    res.events.iter().map(|e| e.rule.id.clone()).collect()
}

#[test]
fn builder_rules_data_add_update_remove() {
    let mut b = Builder::new();
    b.add_or_update("ASM_DD/default", &rules_1_18_2())
        .expect("base loads");
    let req = json!({"http.client_ip": "1.2.3.4"});
    let rs = b.build();
    assert!(
        rs.context()
            .run(&req, 100_000)
            .expect("eval")
            .events
            .is_empty()
    );

    let data = json!({"rules_data": [{"id": "blocked_ips", "type": "ip_with_expiration",
        "data": [{"value": "1.2.3.0/24", "expiration": 0}]}]});
    let d = b
        .add_or_update("ASM_DATA/blocked", &data.to_string())
        .expect("data loads");
    assert_eq!(
        d.section("rules_data").expect("section").loaded,
        vec!["blocked_ips"]
    );
    let rs = b.build();
    let res = rs.context().run(&req, 100_000).expect("eval");
    assert_eq!(ids(&res), vec!["blk-001-001"]);
    // blk-001-001 blocks: the block action is reported.
    assert_eq!(res.actions_map()["block_request"]["status_code"], 403);

    // Expired entries do not match.
    let expired = json!({"rules_data": [{"id": "blocked_ips", "type": "ip_with_expiration",
        "data": [{"value": "1.2.3.4", "expiration": 1}]}]});
    b.add_or_update("ASM_DATA/blocked", &expired.to_string())
        .expect("update");
    assert!(
        b.build()
            .context()
            .run(&req, 100_000)
            .expect("eval")
            .events
            .is_empty()
    );

    b.remove("ASM_DATA/blocked").expect("remove");
    assert!(
        b.remove("ASM_DATA/blocked").is_err(),
        "second remove reports the unknown path"
    );
    assert!(
        b.build()
            .context()
            .run(&req, 100_000)
            .expect("eval")
            .events
            .is_empty()
    );
}

#[test]
fn rules_override_and_exclusions() {
    let mut b = Builder::new();
    b.add_or_update("ASM_DD/default", &rules_1_18_2())
        .expect("base");
    let req = json!({"server.request.query": {"q": ["1' OR '1'='1' --"]}});
    assert!(
        ids(&b.build().context().run(&req, 100_000).expect("eval"))
            .contains(&"crs-942-100".to_string())
    );

    let ov = json!({"rules_override": [{"rules_target": [{"rule_id": "crs-942-100"}], "enabled": false}]});
    b.add_or_update("ASM/override", &ov.to_string())
        .expect("override");
    assert!(
        !ids(&b.build().context().run(&req, 100_000).expect("eval"))
            .contains(&"crs-942-100".to_string())
    );
    b.remove("ASM/override").expect("remove");

    let excl = json!({"exclusions": [{"id": "skip-q", "rules_target": [{"tags": {"type": "sql_injection"}}],
        "inputs": [{"address": "server.request.query", "key_path": ["q"]}]}]});
    b.add_or_update("ASM/excl", &excl.to_string())
        .expect("exclusion");
    let res = b.build().context().run(&req, 100_000).expect("eval");
    assert!(
        res.events
            .iter()
            .all(|e| e.rule.tags["type"] != "sql_injection"),
        "{:?}",
        ids(&res)
    );
}

#[test]
fn shared_ruleset_swaps_while_other_threads_evaluate() {
    let (rs, _) = Ruleset::from_json(&rules_1_18_2()).expect("loads");
    let shared = Arc::new(SharedRuleset::new(Arc::new(rs)));
    let stop = Arc::new(AtomicBool::new(false));
    let evaluated = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (shared, stop, evaluated) = (
            Arc::clone(&shared),
            Arc::clone(&stop),
            Arc::clone(&evaluated),
        );
        std::thread::spawn(move || {
            let req =
                json!({"server.request.headers.no_cookies": {"user-agent": "Arachni/v1.5.1"}});
            while !stop.load(Ordering::Relaxed) {
                let rs = shared.load();
                let res = rs.context().run(&req, 1_000_000).expect("eval");
                // Both generations flag the scanner; the old one stays valid while in use.
                assert!(!res.events.is_empty());
                evaluated.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut b = Builder::new();
    b.add_or_update("ASM_DD/default", &rules_1_18_2())
        .expect("base");
    let custom = json!({"custom_rules": [{"id": "cust-1", "name": "c", "tags": {"type": "custom", "category": "x"},
        "conditions": [{"operator": "match_regex", "parameters": {"inputs": [{"address": "usr.id"}], "regex": "^evil$"}}]}]});
    b.add_or_update("ASM/custom", &custom.to_string())
        .expect("custom");
    let old = shared.store(b.build());
    while evaluated.load(Ordering::Relaxed) < 3 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("worker ok");
    assert!(old.rule_ids().len() < shared.load().rule_ids().len());
    let res = shared
        .load()
        .context()
        .run(&json!({"usr.id": "evil"}), 100_000)
        .expect("eval");
    assert_eq!(ids(&res), vec!["cust-1"]);
}

#[test]
fn diagnostics_report_items_not_whole_rejection() {
    let cfg = json!({"version": "2.2", "rules": [
        {"id": "ok", "name": "n", "tags": {"type": "t"}, "conditions": [{"operator": "match_regex", "parameters": {"inputs": [{"address": "a"}], "regex": "x"}}]},
        {"id": "bad-regex", "name": "n", "tags": {"type": "t"}, "conditions": [{"operator": "match_regex", "parameters": {"inputs": [{"address": "a"}], "regex": "(?=x)"}}]},
        {"id": "no-type", "name": "n", "tags": {}, "conditions": [{"operator": "match_regex", "parameters": {"inputs": [{"address": "a"}], "regex": "x"}}]},
        {"id": "future-op", "name": "n", "tags": {"type": "t"}, "conditions": [{"operator": "lfi_detector@v9", "parameters": {"resource": [{"address": "a"}], "params": [{"address": "b"}]}}]},
        {"id": "future-engine", "name": "n", "min_version": "99.0.0", "tags": {"type": "t"}, "conditions": [{"operator": "match_regex", "parameters": {"inputs": [{"address": "a"}], "regex": "x"}}]},
        {"id": "bad-transformer", "name": "n", "tags": {"type": "t"}, "transformers": ["rot13"], "conditions": [{"operator": "match_regex", "parameters": {"inputs": [{"address": "a"}], "regex": "x"}}]}
    ]});
    let (rs, d) = Ruleset::from_json(&cfg.to_string()).expect("partial load is fine");
    let r = d.section("rules").expect("rules");
    assert_eq!(r.loaded, vec!["ok"]);
    assert_eq!(r.skipped, vec!["future-op", "future-engine"]);
    assert_eq!(r.failed, vec!["bad-regex", "no-type", "bad-transformer"]);
    assert!(
        r.errors.keys().any(|k| k.contains("missing key 'type'")),
        "{:?}",
        r.errors
    );
    assert_eq!(rs.rule_ids(), vec!["ok"]);
    assert!(Ruleset::from_json("{\"version\": \"3.0\", \"rules\": []}").is_err());
    assert!(Ruleset::from_json("not json").is_err());
}

#[test]
fn timeout_returns_partial_results() {
    let (rs, _) = Ruleset::from_json(&rules_1_18_2()).expect("loads");
    let rs = Arc::new(rs);
    let big = "a".repeat(256 * 1024);
    let req = json!({"server.request.query": {"x": [big]},
        "server.request.headers.no_cookies": {"user-agent": "Arachni/v1.5.1"}});
    let res = rs.context().run(&req, 1).expect("eval");
    assert!(res.timeout, "a 1 µs budget cannot cover a 256 KiB value");
    let res = rs.context().run(&req, 60_000_000).expect("eval");
    assert!(!res.timeout);
    assert!(!res.events.is_empty());
}

#[test]
fn context_persists_and_subcontext_is_ephemeral() {
    let (rs, _) = Ruleset::from_json(&rules_1_18_2()).expect("loads");
    let rs = Arc::new(rs);
    let mut ctx = rs.context();
    let q = json!({"server.request.query": {"file": ["../../../../etc/passwd"]}});
    let first = ctx.run(&q, 1_000_000).expect("eval");
    assert!(
        first.events.iter().any(|e| e.rule.tags["type"] == "lfi"),
        "{:?}",
        ids(&first)
    );
    // Same addresses again: nothing new, no duplicate events.
    assert!(ctx.run(&q, 1_000_000).expect("eval").events.is_empty());

    // RASP in a subcontext: sees the query from the context.
    let rasp = json!({"server.io.fs.file": "/var/www/../../../../etc/passwd"});
    let mut sub = ctx.subcontext();
    let res = sub.run(&rasp, 1_000_000).expect("eval");
    assert_eq!(ids(&res), vec!["rasp-930-100"]);
    let ev = &res.events[0];
    assert!(ev.stack_id.is_some());
    assert_eq!(res.actions[0].kind, "generate_stack");
    match &ev.rule_matches[0].parameters[0] {
        Parameter::Structured { args, highlight } => {
            assert_eq!(args["params"].value, "../../../../etc/passwd");
            assert_eq!(highlight, &vec!["../../../../etc/passwd".to_string()]);
        }
        other => panic!("unexpected {other:?}"),
    }
    drop(sub);
    // A new subcontext still detects (the first one's match was dropped with it).
    let again = ctx.subcontext().run(&rasp, 1_000_000).expect("eval");
    assert_eq!(ids(&again), vec!["rasp-930-100"]);
}

#[test]
fn event_format_and_obfuscation() {
    let (rs, _) = Ruleset::from_json(&rules_1_18_2()).expect("loads");
    let rs = Arc::new(rs);
    let res = rs
        .context()
        .run(
            &json!({"server.request.query": {"id": ["1' OR '1'='1' --"]}}),
            1_000_000,
        )
        .expect("eval");
    let v: Value = serde_json::to_value(&res.events).expect("serialise");
    let ev = v
        .as_array()
        .and_then(|a| a.iter().find(|e| e["rule"]["id"] == "crs-942-100"))
        .expect("event");
    assert_eq!(ev["rule"]["tags"]["type"], "sql_injection");
    let p = &ev["rule_matches"][0];
    assert_eq!(p["operator"], "is_sqli");
    assert_eq!(p["parameters"][0]["address"], "server.request.query");
    assert_eq!(p["parameters"][0]["key_path"], json!(["id", 0]));
    assert_eq!(p["parameters"][0]["highlight"], json!(["s&sos"]));

    // A value under a sensitive key is redacted in the event.
    let res = rs
        .context()
        .run(
            &json!({"server.request.body": {"password": ["1' OR '1'='1' --"]}}),
            1_000_000,
        )
        .expect("eval");
    let ev = res
        .events
        .iter()
        .find(|e| e.rule.id == "crs-942-100")
        .expect("event");
    match &ev.rule_matches[0].parameters[0] {
        Parameter::Scalar(sp) => {
            assert_eq!(sp.value, "<Redacted>");
            assert_eq!(sp.highlight, vec!["<Redacted>".to_string()]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn processors_produce_attributes_and_jwt_address() {
    let (rs, _) = Ruleset::from_json(&rules_1_18_2()).expect("loads");
    let rs = Arc::new(rs);
    let res = rs
        .context()
        .run(
            &json!({"server.request.method": "GET", "server.request.uri.raw": "/a?b=1",
                     "server.request.query": {"b": ["1"]},
                     "server.request.headers.no_cookies": {"user-agent": "Mozilla/5.0",
                        "authorization": "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0."}}),
            1_000_000,
        )
        .expect("eval");
    let fp = res.derivatives["_dd.appsec.fp.http.endpoint"]
        .as_str()
        .expect("endpoint fp");
    assert!(fp.starts_with("http-get-"), "{fp}");
    assert!(res.derivatives.contains_key("_dd.appsec.fp.http.header"));
    // The jwt_decode processor derives server.request.jwt; the api-001-* rules (output
    // attributes, no events) read it.
    assert_eq!(res.derivatives["_dd.appsec.api.jwt.none_alg"], 1);
    assert_eq!(res.derivatives["api.security.jwt.alg"], "none");
    assert_eq!(res.derivatives["_dd.appsec.api.jwt.no_expiry"], 1);
    assert!(res.keep);
    assert!(res.events.is_empty(), "{:?}", ids(&res));
}

#[test]
fn invalid_input_is_an_error() {
    let (rs, _) = Ruleset::from_json(&rules_1_18_2()).expect("loads");
    let rs = Arc::new(rs);
    assert!(rs.context().run(&json!([1, 2]), 1000).is_err());
    assert!(rs.context().run(&json!("x"), 1000).is_err());
    assert!(
        rs.context()
            .run(&Value::Null, 1000)
            .expect("null is empty")
            .events
            .is_empty()
    );
}

#[test]
fn extract_schema_with_scanners_and_processor_overrides() {
    let req = json!({"waf.context.processor": {"extract-schema": true},
        "server.request.body": {"email": "john.doe@example.com", "n": 3, "card": "4111111111111111", "tags": ["a", "b"]}});
    let mut b = Builder::new();
    b.add_or_update("ASM_DD/default", &rules_1_18_2())
        .expect("base");
    let res = b.build().context().run(&req, 1_000_000).expect("eval");
    let schema = &res.derivatives["_dd.appsec.s.req.body"][0];
    assert_eq!(
        schema["email"],
        json!([8, {"category": "pii", "type": "email"}])
    );
    assert_eq!(schema["card"][1]["category"], "payment");
    assert_eq!(schema["n"], json!([4]));
    assert_eq!(schema["tags"], json!([[[8]], {"len": 2}]));

    // Without the processor switch no schema is extracted.
    let plain = json!({"server.request.body": {"email": "john.doe@example.com"}});
    let res = b.build().context().run(&plain, 1_000_000).expect("eval");
    assert!(!res.derivatives.contains_key("_dd.appsec.s.req.body"));

    let ov = json!({"processor_overrides": [{"target": [{"id": "extract-content"}],
        "scanners": {"exclude": [{"id": "PuXiVTCkTHOtj0Yad1ppsw"}]}}]});
    let d = b
        .add_or_update("ASM/proc", &ov.to_string())
        .expect("override");
    assert_eq!(
        d.section("processor_overrides")
            .expect("section")
            .loaded
            .len(),
        1
    );
    let res = b.build().context().run(&req, 1_000_000).expect("eval");
    assert_eq!(
        res.derivatives["_dd.appsec.s.req.body"][0]["email"],
        json!([8])
    );
}
