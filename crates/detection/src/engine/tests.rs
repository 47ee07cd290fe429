use super::*;
use crate::defaults::default_rules;
use serde_json::json;

const MIN: i64 = 60_000;

fn rule(v: serde_json::Value) -> Rule {
    let mut r = Rule::from_json(&v).unwrap();
    if r.id.is_empty() {
        r.id = "r1".into();
    }
    r
}

fn attack(ip: &str, t: i64) -> SecurityEvent {
    SecurityEvent {
        id: format!("{ip}-{t}"),
        timestamp_ms: t,
        service: "shop".into(),
        env: "staging".into(),
        client_ip: Some(ip.into()),
        activity: vec!["attack_attempt.sql_injection".into()],
        ..Default::default()
    }
}

fn login(user: &str, ip: &str, ok: bool, t: i64) -> SecurityEvent {
    let a = if ok { "success" } else { "failure" };
    SecurityEvent {
        id: format!("{user}-{ip}-{t}"),
        timestamp_ms: t,
        service: "shop".into(),
        env: "prod".into(),
        client_ip: Some(ip.into()),
        usr_id: Some(user.into()),
        activity: vec![format!("business_logic.users.login.{a}")],
        ..Default::default()
    }
}

fn threshold_rule(cond: &str, window: i64, keep: i64, max: i64) -> Rule {
    rule(json!({
        "name": "attacks", "type": "application_security",
        "queries": [{"query": "@appsec.security_activity:attack_attempt.*", "groupByFields": ["@http.client_ip"]}],
        "cases": [{"status": "high", "condition": cond}],
        "options": {"evaluationWindow": window, "keepAlive": keep, "maxSignalDuration": max},
        "message": "attack @slack-sec",
    }))
}

fn run(e: &mut Engine, evs: &[SecurityEvent]) -> Vec<SignalUpdate> {
    let mut out = Vec::new();
    for ev in evs {
        e.process(ev, &mut out);
    }
    out
}

fn created(u: &[SignalUpdate]) -> Vec<&Signal> {
    u.iter()
        .filter(|u| u.kind == UpdateKind::Created)
        .map(|u| &*u.signal)
        .collect()
}

#[test]
fn threshold_counts_per_group_and_fires_once() {
    let mut e = Engine::new(1);
    e.set_rules(vec![threshold_rule("a > 3", 300, 600, 3600)]);
    let t0 = 1_000_000;
    // 3 from each of two IPs: below the threshold.
    let mut evs: Vec<_> = (0..3).map(|i| attack("1.1.1.1", t0 + i)).collect();
    evs.extend((0..3).map(|i| attack("2.2.2.2", t0 + i)));
    assert!(run(&mut e, &evs).is_empty());
    // The 4th from 1.1.1.1 fires; more events update the same signal.
    let u = run(
        &mut e,
        &[attack("1.1.1.1", t0 + 10), attack("1.1.1.1", t0 + 11)],
    );
    let c = created(&u);
    assert_eq!(c.len(), 1);
    let s = c[0];
    assert_eq!(s.group_by["@http.client_ip"], "1.1.1.1");
    assert_eq!(s.status, Severity::High);
    assert_eq!(s.events_matched, 4, "the events that crossed the threshold");
    assert_eq!(s.first_seen_ms, t0);
    assert_eq!(s.timestamp_ms, t0 + 10);
    assert_eq!(u[1].kind, UpdateKind::Updated);
    assert_eq!(u[1].signal.id, s.id);
    assert_eq!(u[1].signal.events_matched, 5);
    assert_eq!(s.notifications, vec!["@slack-sec"]);
    assert!(s.tags.contains(&"env:staging".to_string()));
    assert_eq!(e.stats().events_evaluated, 8);
    assert_eq!(e.stats().signals_created, 1);
}

#[test]
fn events_outside_the_window_do_not_count() {
    let mut e = Engine::new(1);
    e.set_rules(vec![threshold_rule("a >= 3", 60, 600, 3600)]);
    let t0 = 10 * MIN;
    let u = run(
        &mut e,
        &[
            attack("1.1.1.1", t0),
            attack("1.1.1.1", t0 + 30_000),
            attack("1.1.1.1", t0 + 61_000), // the first one has left the 60 s window
        ],
    );
    assert!(u.is_empty());
    let u = run(&mut e, &[attack("1.1.1.1", t0 + 62_000)]);
    assert_eq!(created(&u).len(), 1);
}

#[test]
fn keep_alive_extends_then_a_new_signal_needs_the_threshold_again() {
    let mut e = Engine::new(1);
    e.set_rules(vec![threshold_rule("a >= 2", 300, 600, 86400)]);
    let t0 = 100 * MIN;
    let u = run(&mut e, &[attack("9.9.9.9", t0), attack("9.9.9.9", t0 + 1)]);
    let first = created(&u)[0].id.clone();
    // Within keepAlive (600 s) of the last event: absorbed, even 9 minutes apart.
    let u = run(&mut e, &[attack("9.9.9.9", t0 + 9 * MIN)]);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].kind, UpdateKind::Updated);
    assert_eq!(u[0].signal.id, first);
    assert_eq!(u[0].signal.last_seen_ms, t0 + 9 * MIN);
    // 11 minutes of silence: the signal ended; one event alone does not reach a >= 2.
    let late = t0 + 20 * MIN + 1;
    assert!(run(&mut e, &[attack("9.9.9.9", late)]).is_empty());
    let u = run(&mut e, &[attack("9.9.9.9", late + 1)]);
    let c = created(&u);
    assert_eq!(c.len(), 1);
    assert_ne!(c[0].id, first);
}

#[test]
fn max_signal_duration_starts_a_new_signal() {
    let mut e = Engine::new(1);
    e.set_rules(vec![threshold_rule("a >= 1", 60, 3600, 600)]);
    let t0 = 100 * MIN;
    let mut ids = Vec::new();
    // One event a minute for 25 minutes: keepAlive never lapses, but max 10 min per signal.
    for i in 0..25 {
        for u in run(&mut e, &[attack("5.5.5.5", t0 + i * MIN)]) {
            if u.kind == UpdateKind::Created {
                ids.push((i, u.signal.id.clone()));
            }
        }
    }
    let starts: Vec<i64> = ids.iter().map(|(i, _)| *i).collect();
    assert_eq!(starts, vec![0, 10, 20]);
}

#[test]
fn first_matching_case_wins_and_a_higher_case_escalates() {
    let mut e = Engine::new(1);
    e.set_rules(vec![rule(json!({
        "name": "tiers", "type": "application_security",
        "queries": [{"query": "@appsec.security_activity:attack_attempt.*", "groupByFields": ["@http.client_ip"]}],
        "cases": [
            {"name": "crit", "status": "critical", "condition": "a >= 5"},
            {"name": "low", "status": "low", "condition": "a >= 2"},
            {"name": "high-unreachable", "status": "high", "condition": "a >= 2"}
        ],
        "options": {"evaluationWindow": 300, "keepAlive": 3600, "maxSignalDuration": 86400},
    }))]);
    let t0 = 100 * MIN;
    let evs: Vec<_> = (0..6).map(|i| attack("3.3.3.3", t0 + i)).collect();
    let u = run(&mut e, &evs);
    assert_eq!(u[0].kind, UpdateKind::Created);
    assert_eq!(
        u[0].signal.status,
        Severity::Low,
        "first case that holds, not the highest"
    );
    assert_eq!(u[0].signal.case_name, "low");
    let esc: Vec<_> = u
        .iter()
        .filter(|u| u.kind == UpdateKind::Escalated)
        .collect();
    assert_eq!(esc.len(), 1);
    assert_eq!(esc[0].signal.status, Severity::Critical);
    assert_eq!(esc[0].signal.id, u[0].signal.id);
    assert_eq!(e.stats().signals_escalated, 1);
}

#[test]
fn cardinality_counts_distinct_values() {
    let mut e = Engine::new(1);
    e.set_rules(default_rules());
    let t0 = 100 * MIN;
    // The same user failing 12 times from one IP is not credential stuffing...
    let same: Vec<_> = (0..12)
        .map(|i| login("bob", "7.7.7.7", false, t0 + i))
        .collect();
    let u = run(&mut e, &same);
    assert!(
        created(&u)
            .iter()
            .all(|s| s.rule_id != "warden-credential-stuffing"),
        "{:?}",
        created(&u).iter().map(|s| &s.rule_id).collect::<Vec<_>>()
    );
    // ...it is brute force on one account.
    assert!(
        created(&u)
            .iter()
            .any(|s| s.rule_id == "warden-brute-force-account")
    );
    // 10 distinct users from one IP is.
    let many: Vec<_> = (0..10)
        .map(|i| login(&format!("u{i}"), "8.8.8.8", false, t0 + 100 + i))
        .collect();
    let u = run(&mut e, &many);
    let cs: Vec<_> = created(&u)
        .into_iter()
        .filter(|s| s.rule_id == "warden-credential-stuffing")
        .collect();
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].group_by["@http.client_ip"], "8.8.8.8");
    assert_eq!(cs[0].status, Severity::High);
}

#[test]
fn account_takeover_needs_failures_then_success() {
    let mut e = Engine::new(1);
    e.set_rules(default_rules());
    let t0 = 100 * MIN;
    // Success alone: nothing.
    assert!(created(&run(&mut e, &[login("carol", "1.0.0.1", true, t0)])).is_empty());
    let mut evs: Vec<_> = (0..5)
        .map(|i| login("dave", "1.0.0.2", false, t0 + i))
        .collect();
    evs.push(login("dave", "1.0.0.2", true, t0 + 10));
    let u = run(&mut e, &evs);
    let ato: Vec<_> = created(&u)
        .into_iter()
        .filter(|s| s.rule_id == "warden-account-takeover")
        .collect();
    assert_eq!(ato.len(), 1);
    assert_eq!(ato[0].group_by["@usr.id"], "dave");
    assert_eq!(ato[0].status, Severity::High);
    // Four failures then success: below the bar.
    let mut evs: Vec<_> = (0..4)
        .map(|i| login("erin", "1.0.0.3", false, t0 + i))
        .collect();
    evs.push(login("erin", "1.0.0.3", true, t0 + 10));
    let u = run(&mut e, &evs);
    assert!(
        created(&u)
            .iter()
            .all(|s| s.rule_id != "warden-account-takeover")
    );
}

#[test]
fn default_attack_rules_fire_with_severity() {
    let mut e = Engine::new(1);
    e.set_rules(default_rules());
    let t0 = 100 * MIN;
    let evs: Vec<_> = (0..20).map(|i| attack("6.6.6.6", t0 + i)).collect();
    let u = run(&mut e, &evs);
    let c = created(&u);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].rule_id, "warden-attack-from-ip");
    assert_eq!(c[0].status, Severity::Medium);
    let last = &u.last().unwrap().signal;
    assert_eq!(last.status, Severity::High, "escalated at 20 attacks");
    // RASP match: critical at once.
    let mut rasp = attack("6.6.6.7", t0 + 100);
    rasp.activity = vec!["exploit_attempt.sql_injection".into()];
    let u = run(&mut e, &[rasp]);
    let c = created(&u);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].rule_id, "warden-vulnerable-code-path");
    assert_eq!(c[0].status, Severity::Critical);
    // Blocked requests that keep coming.
    let blocked: Vec<_> = (0..10)
        .map(|i| {
            let mut a = attack("6.6.6.8", t0 + 200 + i);
            a.blocked = true;
            a
        })
        .collect();
    let u = run(&mut e, &blocked);
    assert!(
        created(&u)
            .iter()
            .any(|s| s.rule_id == "warden-blocked-ip-attacking")
    );
}

#[test]
fn new_value_fires_on_unseen_values_after_learning() {
    let day = 86_400_000;
    let mut r = rule(json!({
        "name": "new ip for user", "type": "application_security",
        "queries": [{"query": "@appsec.security_activity:business_logic.users.login.success",
                     "aggregation": "new_value", "metrics": ["@http.client_ip"], "groupByFields": ["@usr.id"]}],
        "cases": [{"status": "medium", "name": "new ip"}],
        "options": {"detectionMethod": "new_value", "evaluationWindow": 0, "keepAlive": 3600, "maxSignalDuration": 86400,
                    "newValueOptions": {"learningDuration": 1, "forgetAfter": 7}},
    }));
    r.created_at = 10 * day;
    let mut e = Engine::new(1);
    e.set_rules(vec![r]);
    let t = 10 * day + 1000;
    // Learning day: known IPs are learned, no signal.
    assert!(run(&mut e, &[login("ann", "10.0.0.1", true, t)]).is_empty());
    let t = 11 * day + 1000;
    assert!(
        run(&mut e, &[login("ann", "10.0.0.1", true, t)]).is_empty(),
        "known value"
    );
    let u = run(&mut e, &[login("ann", "10.0.0.2", true, t + 1)]);
    let c = created(&u);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].new_value.as_deref(), Some("10.0.0.2"));
    assert_eq!(c[0].status, Severity::Medium);
    // Same new value again within keepAlive: absorbed.
    let u = run(&mut e, &[login("ann", "10.0.0.2", true, t + 2)]);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].kind, UpdateKind::Updated);
    // Forgotten after 7 days: new again.
    let u = run(&mut e, &[login("ann", "10.0.0.1", true, t + 8 * day)]);
    assert_eq!(created(&u).len(), 1);
}

#[test]
fn actions_block_the_group_ip_or_user() {
    let mut e = Engine::new(1);
    e.set_rules(vec![rule(json!({
        "name": "block", "type": "application_security",
        "queries": [{"query": "@appsec.security_activity:business_logic.users.login.failure", "groupByFields": ["service", "@http.client_ip"]}],
        "cases": [{"status": "high", "condition": "a > 2",
                   "actions": [{"type": "block_ip", "options": {"duration": 900}}, {"type": "block_user", "options": {"duration": 0}},
                               {"type": "flag_ip", "options": {"flaggedIPType": "FLAGGED"}}]}],
        "options": {"evaluationWindow": 900, "keepAlive": 3600, "maxSignalDuration": 86400},
    }))]);
    let evs: Vec<_> = (0..4)
        .map(|i| login("zed", "4.4.4.4", false, 1000 + i))
        .collect();
    let u = run(&mut e, &evs);
    assert_eq!(u[0].kind, UpdateKind::Created);
    assert_eq!(
        u[0].actions,
        vec![
            ActionRequest {
                kind: "block_ip".into(),
                value: "4.4.4.4".into(),
                duration_s: Some(900)
            },
            ActionRequest {
                kind: "block_user".into(),
                value: "zed".into(),
                duration_s: Some(0)
            },
        ]
    );
    assert!(u[1].actions.is_empty(), "actions run once per signal");
}

#[test]
fn missing_group_by_field_skips_unless_optional() {
    let mut e = Engine::new(1);
    e.set_rules(vec![threshold_rule("a >= 1", 300, 600, 3600)]);
    let mut ev = attack("x", 1000);
    ev.client_ip = None;
    assert!(run(&mut e, &[ev.clone()]).is_empty());
    let mut r = threshold_rule("a >= 1", 300, 600, 3600);
    r.queries[0].has_optional_group_by_fields = true;
    e.set_rules(vec![r]);
    assert_eq!(created(&run(&mut e, &[ev])).len(), 1);
}

#[test]
fn tick_forgets_ended_state_and_restore_readopts() {
    let mut e = Engine::new(1);
    e.set_rules(vec![threshold_rule("a >= 1", 60, 600, 3600)]);
    let u = run(&mut e, &[attack("1.2.3.4", 1000)]);
    let s = u[0].signal.clone();
    assert_eq!(e.live_signals(), 1);
    e.tick(1000 + 601_000);
    assert_eq!(e.live_signals(), 0);
    // After a restart the stored signal is re-adopted and absorbs new events.
    let mut e2 = Engine::new(2);
    e2.set_rules(vec![threshold_rule("a >= 1", 60, 600, 3600)]);
    e2.restore((*s).clone(), 2000);
    let u = run(&mut e2, &[attack("1.2.3.4", 3000)]);
    assert_eq!(u[0].kind, UpdateKind::Updated);
    assert_eq!(u[0].signal.id, s.id);
}

#[test]
fn rule_changes_keep_state_only_when_logic_is_unchanged() {
    let mut e = Engine::new(1);
    let r = threshold_rule("a >= 3", 300, 600, 3600);
    e.set_rules(vec![r.clone()]);
    run(&mut e, &[attack("1.1.1.1", 1000), attack("1.1.1.1", 1001)]);
    let mut renamed = r.clone();
    renamed.name = "renamed".into();
    e.set_rules(vec![renamed]);
    assert_eq!(created(&run(&mut e, &[attack("1.1.1.1", 1002)])).len(), 1);
    let mut changed = r;
    changed.cases[0].condition = "a >= 2".into();
    e.set_rules(vec![changed.clone()]);
    assert!(
        run(&mut e, &[attack("2.2.2.2", 1003)]).is_empty(),
        "fresh windows"
    );
    changed.is_enabled = false;
    e.set_rules(vec![changed]);
    assert!(run(&mut e, &[attack("2.2.2.2", 1004), attack("2.2.2.2", 1005)]).is_empty());
}

#[test]
fn signal_json_shapes_and_search() {
    let mut e = Engine::new(1);
    e.set_rules(default_rules());
    let evs: Vec<_> = (0..20)
        .map(|i| attack("6.6.6.6", 1_700_000_000_000 + i))
        .collect();
    let u = run(&mut e, &evs);
    let s = &u.last().unwrap().signal;
    let l = crate::api::list_item(s);
    assert_eq!(l["type"], "signal");
    assert_eq!(l["attributes"]["status"], "high");
    assert_eq!(
        l["attributes"]["attributes"]["workflow"]["triage"]["state"],
        "open"
    );
    assert_eq!(
        l["attributes"]["attributes"]["workflow"]["triage"]["assignee"],
        json!({"name": "Unassigned", "id": -1, "uuid": ""})
    );
    assert_eq!(
        l["attributes"]["attributes"]["workflow"]["rule"]["id"],
        "warden-attack-from-ip"
    );
    assert_eq!(l["attributes"]["timestamp"], "2023-11-14T22:13:20.004Z");
    let one = crate::api::single(s);
    assert!(one["data"]["attributes"]["custom"]["workflow"].is_object());
    assert!(one["data"]["attributes"].get("attributes").is_none());
    let q = |x: &str| crate::api::matches(&Query::parse(x).unwrap(), s);
    assert!(q("env:staging service:shop status:high"));
    assert!(q("@workflow.triage.state:open @http.client_ip:6.6.6.6"));
    assert!(q("security:attack"));
    assert!(!q("status:critical"));
    assert!(!q("env:prod"));
    assert!(q("@workflow.rule.id:warden-attack-*"));
}
