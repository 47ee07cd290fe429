//! Built-in detection rules (listed with `isDefault: true`; can be disabled, not deleted).
//!
//! Why these six: they are the attack and account-abuse patterns Datadog's out-of-the-box
//! AAP rules cover that the security events Warden receives can show (WAF attack triggers,
//! RASP exploit matches, login success/failure tracking, blocked requests). Thresholds are
//! conservative so a single scanner hit or one typo'd password stays quiet.

use serde_json::json;

use crate::rule::Rule;

/// The default rules, validated.
pub fn default_rules() -> Vec<Rule> {
    let defs = [
        json!({
            "id": "warden-attack-from-ip",
            "name": "Attack attempts from one IP",
            "type": "application_security",
            "queries": [{"query": "@appsec.security_activity:attack_attempt.*", "aggregation": "count",
                          "groupByFields": ["@http.client_ip"], "distinctFields": [], "name": "attacks"}],
            "cases": [
                {"name": "sustained attack", "status": "high", "condition": "attacks >= 20", "notifications": []},
                {"name": "attack attempts", "status": "medium", "condition": "attacks >= 5", "notifications": []}
            ],
            "options": {"evaluationWindow": 300, "keepAlive": 3600, "maxSignalDuration": 86400, "detectionMethod": "threshold"},
            "message": "## Goal\nDetect an IP sending many requests that the in-app WAF flags as attacks.\n\n## Triage\nCheck the samples: a scanner is noisy but harmless if nothing reached a vulnerable code path. Block the IP if it keeps going.",
            "tags": ["security:attack", "category:attack_attempt"],
        }),
        json!({
            "id": "warden-vulnerable-code-path",
            "name": "Attack reached a vulnerable code path (exploit attempt)",
            "type": "application_security",
            "queries": [{"query": "@appsec.security_activity:exploit_attempt.*", "aggregation": "count",
                          "groupByFields": ["service", "@http.client_ip"], "distinctFields": [], "name": "exploits",
                          "hasOptionalGroupByFields": true}],
            "cases": [{"name": "exploit attempt", "status": "critical", "condition": "exploits > 0", "notifications": []}],
            "options": {"evaluationWindow": 300, "keepAlive": 3600, "maxSignalDuration": 86400, "detectionMethod": "threshold"},
            "message": "## Goal\nDetect an attack payload that reached a dangerous call (SQL query, file access, outbound request, shell) and was caught by runtime protection (RASP).\n\n## Triage\nThe code path is exploitable: fix it. Block the IP.",
            "tags": ["security:attack", "category:exploit_attempt"],
        }),
        json!({
            "id": "warden-credential-stuffing",
            "name": "Credential stuffing: many users failing to log in from one IP",
            "type": "application_security",
            "queries": [{"query": "@appsec.security_activity:business_logic.users.login.failure", "aggregation": "cardinality",
                          "groupByFields": ["@http.client_ip"], "distinctFields": ["@usr.id"], "name": "users"}],
            "cases": [{"name": "credential stuffing", "status": "high", "condition": "users >= 10", "notifications": []}],
            "options": {"evaluationWindow": 600, "keepAlive": 3600, "maxSignalDuration": 86400, "detectionMethod": "threshold"},
            "message": "## Goal\nDetect one IP trying leaked credentials for many accounts.\n\n## Triage\nBlock the IP; check whether any of its logins succeeded.",
            "tags": ["security:attack", "technique:T1110-brute-force", "category:business_logic"],
        }),
        json!({
            "id": "warden-brute-force-account",
            "name": "Brute force on one account",
            "type": "application_security",
            "queries": [{"query": "@appsec.security_activity:business_logic.users.login.failure", "aggregation": "count",
                          "groupByFields": ["@usr.id"], "distinctFields": [], "name": "failures"}],
            "cases": [{"name": "brute force", "status": "medium", "condition": "failures >= 10", "notifications": []}],
            "options": {"evaluationWindow": 600, "keepAlive": 3600, "maxSignalDuration": 86400, "detectionMethod": "threshold"},
            "message": "## Goal\nDetect many failed logins for one account.\n\n## Triage\nCheck the source IPs; consider locking the account or requiring a second factor.",
            "tags": ["security:attack", "technique:T1110-brute-force", "category:business_logic"],
        }),
        json!({
            "id": "warden-account-takeover",
            "name": "Login success after many failures (possible account takeover)",
            "type": "application_security",
            "queries": [
                {"query": "@appsec.security_activity:business_logic.users.login.failure", "aggregation": "count",
                 "groupByFields": ["@usr.id"], "distinctFields": [], "name": "failures"},
                {"query": "@appsec.security_activity:business_logic.users.login.success", "aggregation": "count",
                 "groupByFields": ["@usr.id"], "distinctFields": [], "name": "successes"}
            ],
            "cases": [{"name": "account takeover", "status": "high", "condition": "failures >= 5 && successes > 0", "notifications": []}],
            "options": {"evaluationWindow": 900, "keepAlive": 3600, "maxSignalDuration": 86400, "detectionMethod": "threshold"},
            "message": "## Goal\nDetect a successful login right after a run of failures for the same account.\n\n## Triage\nConfirm with the account owner; revoke sessions and reset the password if it was not them.",
            "tags": ["security:attack", "technique:T1078-valid-accounts", "category:business_logic"],
        }),
        json!({
            "id": "warden-blocked-ip-attacking",
            "name": "Blocked IP still attacking",
            "type": "application_security",
            "queries": [{"query": "@appsec.blocked:true @appsec.security_activity:attack_attempt.*", "aggregation": "count",
                          "groupByFields": ["@http.client_ip"], "distinctFields": [], "name": "blocked"}],
            "cases": [{"name": "persistent attacker", "status": "low", "condition": "blocked >= 10", "notifications": []}],
            "options": {"evaluationWindow": 600, "keepAlive": 3600, "maxSignalDuration": 86400, "detectionMethod": "threshold"},
            "message": "## Goal\nDetect an IP whose requests are blocked but that keeps attacking.\n\n## Triage\nBlocking works; consider blocking the IP at the edge to save resources.",
            "tags": ["security:attack", "category:security_response"],
        }),
    ];
    let mut out = Vec::new();
    for d in defs {
        match Rule::from_json(&d) {
            Ok(mut r) => {
                r.is_default = true;
                r.version = 1;
                out.push(r);
            }
            // Covered by a unit test; never reached in a build that passed it.
            Err(e) => debug_assert!(false, "default rule invalid: {e}"),
        }
    }
    out
}

/// True for a default rule id.
pub fn is_default_id(id: &str) -> bool {
    id.starts_with("warden-")
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_default_rules_are_valid() {
        let r = super::default_rules();
        assert_eq!(r.len(), 6);
        assert!(
            r.iter()
                .all(|r| r.is_default && super::is_default_id(&r.id))
        );
    }
}
