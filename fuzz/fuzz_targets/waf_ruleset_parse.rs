//! Fuzz target: arbitrary bytes as a ruleset configuration (also merged with a small base
//! configuration under a second builder path). Loading must never panic; whatever loads must build
//! and evaluate a small request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_waf::{Builder, Ruleset, Value};

/// A small base configuration (the real ruleset takes too long to compile per iteration).
const BASE: &str = r#"{"version": "2.2", "rules": [
  {"id": "b1", "name": "b", "tags": {"type": "t1"}, "conditions": [{"operator": "match_regex",
   "parameters": {"inputs": [{"address": "usr.id"}], "regex": "^adm"}}]},
  {"id": "b2", "name": "b", "tags": {"type": "t2"}, "on_match": ["block"], "conditions": [{"operator": "ip_match",
   "parameters": {"inputs": [{"address": "http.client_ip"}], "data": "blocked_ips"}}]}]}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((rs, diags)) = Ruleset::from_json(text) {
        let _ = serde_json_roundtrip(&diags);
        let rs = std::sync::Arc::new(rs);
        let req: Value = serde_json::json!({"a": "x", "server.request.query": {"q": ["1' or 1=1 --"]}});
        let _ = rs.context().run(&req, 10_000);
    }
    let mut b = Builder::new();
    let _ = b.add_or_update("ASM_DD/default", BASE);
    if b.add_or_update("ASM/fuzz", text).is_ok() {
        let rs = b.build();
        let req: Value = serde_json::json!({"http.client_ip": "10.0.0.1", "usr.id": text});
        let _ = rs.context().run(&req, 10_000);
        assert!(b.remove("ASM/fuzz").is_ok());
    }
});

fn serde_json_roundtrip(d: &warden_waf::Diagnostics) -> Option<String> {
    serde_json::to_string(d).ok()
}
