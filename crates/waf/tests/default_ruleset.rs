#![allow(clippy::unwrap_used)]
//! The built-in default ruleset loads on this engine with every rule accepted.

#[test]
fn default_ruleset_loads_without_failures() {
    let (_rs, diag) = warden_waf::Ruleset::from_json(warden_waf::DEFAULT_RULESET_JSON).unwrap();
    let rules = diag.sections.get("rules").unwrap();
    assert!(!rules.loaded.is_empty());
    assert!(rules.failed.is_empty(), "failed rules: {:?}", rules.failed);
    assert!(
        rules.skipped.is_empty(),
        "skipped rules: {:?}",
        rules.skipped
    );
}
