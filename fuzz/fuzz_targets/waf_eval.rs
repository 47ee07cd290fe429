//! Fuzz target: evaluate arbitrary request data with the real 1.18.2 ruleset. A JSON object is
//! used as the address map; other bytes are fed as a string to every inspected address,
//! including the RASP ones through a subcontext. Invariants: no panic, at most one event per
//! rule, every event names a loaded rule, timeouts only with a tiny budget.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use warden_waf::{Ruleset, Value};

fn rules() -> &'static Arc<Ruleset> {
    static RS: OnceLock<Arc<Ruleset>> = OnceLock::new();
    RS.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/waf/datadog-rules-1.18.2.json"))
            .expect("shared/waf/datadog-rules-1.18.2.json next to the project");
        Arc::new(Ruleset::from_json(&text).expect("ruleset loads").0)
    })
}

fn check(rs: &Ruleset, res: &warden_waf::EvalResult, seen: &mut HashSet<String>) {
    let ids: HashSet<String> = rs.rule_ids().into_iter().collect();
    for e in &res.events {
        assert!(ids.contains(&e.rule.id), "unknown rule {}", e.rule.id);
        assert!(seen.insert(e.rule.id.clone()), "rule {} reported twice in one context", e.rule.id);
        assert!(!e.rule_matches.is_empty());
    }
    let _ = serde_json::to_string(&res.to_libddwaf_json()).expect("serialisable");
}

fuzz_target!(|data: &[u8]| {
    let rs = rules();
    let input: Value = match serde_json::from_slice::<Value>(data) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let s = String::from_utf8_lossy(data).into_owned();
            serde_json::json!({
                "server.request.query": {"q": [s.clone()]},
                "server.request.body": {"b": s.clone()},
                "server.request.path_params": {"p": s.clone()},
                "server.request.uri.raw": format!("/x?{s}"),
                "server.request.headers.no_cookies": {"user-agent": s.clone(), "authorization": s.clone()},
                "server.request.cookies": {"c": [s.clone()]},
                "http.client_ip": s.clone(),
            })
        }
    };
    let mut seen = HashSet::new();
    let mut ctx = rs.context();
    let res = ctx.run(&input, 2_000_000).expect("object input");
    check(rs, &res, &mut seen);
    let s = String::from_utf8_lossy(data).into_owned();
    let rasp = serde_json::json!({
        "server.io.fs.file": s.clone(),
        "server.io.net.url": s.clone(),
        "server.db.statement": s.clone(),
        "server.db.system": "mysql",
        "server.sys.shell.cmd": s.clone(),
        "server.sys.exec.cmd": ["sh", "-c", s.clone()],
    });
    let mut sub = ctx.subcontext();
    let r2 = sub.run(&rasp, 2_000_000).expect("object input");
    let mut sub_seen = seen.clone();
    check(rs, &r2, &mut sub_seen);
    let _ = rs.context().run(&input, 0).expect("zero budget still returns");
});
