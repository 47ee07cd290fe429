//! The engine thread, the database and the search over real sealed rows (no HTTP: the
//! `crates/warden/tests/signals_*.rs` tests cover the wire).

use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use warden_model::SecurityEvent;

use super::*;

#[derive(Default)]
struct Recorder {
    triggered: StdMutex<Vec<(u64, String, String)>>,
    actions: StdMutex<Vec<(u64, ActionRequest)>>,
}

impl Effects for Recorder {
    fn signal_triggered(&self, org: u64, s: &Signal) {
        self.triggered
            .lock()
            .unwrap()
            .push((org, s.id.clone(), s.status.as_str().to_string()));
    }
    fn action(&self, org: u64, _s: &Signal, a: &ActionRequest) {
        self.actions.lock().unwrap().push((org, a.clone()));
    }
}

struct Env {
    _dir: tempfile::TempDir,
    state: State,
    fx: Arc<Recorder>,
    store: Arc<warden_store::Store>,
    path: std::path::PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        warden_store::Store::open(
            &dir.path().join("store"),
            warden_store::StoreOptions::default(),
        )
        .unwrap(),
    );
    let path = dir.path().join("security.db");
    let state = State::with_db(db::Db::open(&path, store.clone()).unwrap());
    let fx = Arc::new(Recorder::default());
    state.set_effects(fx.clone());
    Env {
        _dir: dir,
        state,
        fx,
        store,
        path,
    }
}

fn attack(ip: &str, t: i64, env: &str, service: &str) -> SecurityEvent {
    SecurityEvent {
        id: format!("{ip}-{t}"),
        timestamp_ms: t,
        service: service.into(),
        env: env.into(),
        client_ip: Some(ip.into()),
        activity: vec!["attack_attempt.sql_injection".into()],
        ..Default::default()
    }
}

fn search(e: &Env, org: u64, q: &str, from: &str) -> Value {
    let p = SearchParams {
        query: Some(q.into()),
        from: Some(from.into()),
        ..Default::default()
    };
    run_search(&e.state, org, &p, now_ms()).unwrap()
}

#[test]
fn events_become_sealed_signals_searchable_per_org() {
    let e = env();
    let now = now_ms();
    assert_eq!(search(&e, 1, "env:staging", "now-1h")["data"], json!([]));
    let evs: Vec<_> = (0..25)
        .map(|i| attack("6.6.6.6", now + i, "staging", "shop"))
        .collect();
    e.state.ingest(1, &evs);
    e.state.ingest(2, &evs[..5]);
    e.state.sync();
    let r = search(&e, 1, "env:staging service:shop status:high", "now-1h");
    assert_eq!(r["data"].as_array().unwrap().len(), 1, "{r}");
    let s = &r["data"][0];
    assert_eq!(
        s["attributes"]["attributes"]["workflow"]["events_matched"],
        25
    );
    assert_eq!(
        s["attributes"]["attributes"]["workflow"]["rule"]["id"],
        "warden-attack-from-ip"
    );
    // Org 2 saw 5 attacks: a medium signal of its own, invisible to org 1.
    let r2 = search(&e, 2, "", "now-1h");
    assert_eq!(r2["data"].as_array().unwrap().len(), 1);
    assert_eq!(r2["data"][0]["attributes"]["status"], "medium");
    assert_ne!(r2["data"][0]["id"], s["id"]);
    assert_eq!(search(&e, 1, "env:prod", "now-1h")["data"], json!([]));
    assert_eq!(
        search(&e, 1, "", "now+1m")["data"],
        json!([]),
        "time filter"
    );
    // Created (medium) then escalated (high) for org 1, created for org 2.
    let trig = e.fx.triggered.lock().unwrap().clone();
    assert_eq!(trig.len(), 3, "{trig:?}");
    assert_eq!(trig.iter().filter(|t| t.2 == "high").count(), 1);
    let st = stats_json(&e.state, 1);
    assert_eq!(st["events_in"], 25);
    assert_eq!(st["events_evaluated"], 25);
    assert_eq!(stats_json(&e.state, 2)["events_evaluated"], 5);
    assert_eq!(st["events_dropped"], 0);
    // At rest: no IP or service in the clear.
    let raw = std::fs::read(&e.path).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains("6.6.6.6") && !text.contains("shop"),
        "plaintext in security.db"
    );
    drop(e.store);
}

#[test]
fn cursor_paging_and_sort_cover_every_signal_once() {
    let e = env();
    let now = now_ms();
    // RASP matches: one critical signal per IP.
    for i in 0..23 {
        let mut ev = attack(&format!("10.0.0.{i}"), now - 1000 + i, "prod", "api");
        ev.activity = vec!["exploit_attempt.sql_injection".into()];
        e.state.ingest(7, &[ev]);
    }
    e.state.sync();
    for (sort, desc) in [("timestamp", false), ("-timestamp", true)] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let p = SearchParams {
                query: Some("status:critical".into()),
                sort: Some(sort.into()),
                limit: Some("5".into()),
                cursor: cursor.clone(),
                ..Default::default()
            };
            let r = run_search(&e.state, 7, &p, now_ms()).unwrap();
            for d in r["data"].as_array().unwrap() {
                seen.push((
                    d["attributes"]["timestamp"].as_str().unwrap().to_string(),
                    d["id"].as_str().unwrap().to_string(),
                ));
            }
            match r["meta"]["page"]["after"].as_str() {
                Some(c) => {
                    assert!(
                        r["links"]["next"]
                            .as_str()
                            .unwrap()
                            .contains("page%5Bcursor%5D=")
                    );
                    cursor = Some(c.to_string())
                }
                None => break,
            }
        }
        assert_eq!(seen.len(), 23, "{sort}");
        let mut sorted = seen.clone();
        sorted.sort();
        if desc {
            sorted.reverse();
        }
        assert_eq!(seen, sorted, "{sort}");
    }
    let bad = SearchParams {
        cursor: Some("zz".into()),
        ..Default::default()
    };
    assert_eq!(
        run_search(&e.state, 7, &bad, now_ms()).unwrap_err().status,
        400
    );
    let bad = SearchParams {
        query: Some("status:(high".into()),
        ..Default::default()
    };
    let err = run_search(&e.state, 7, &bad, now_ms()).unwrap_err();
    assert_eq!(err.status, 400);
    assert!(err.message.contains("position 7"), "{}", err.message);
}

#[test]
fn triage_is_kept_apart_from_engine_updates_and_survives_reopen() {
    let e = env();
    let now = now_ms();
    let evs: Vec<_> = (0..5)
        .map(|i| attack("1.1.1.1", now + i, "qa", "web"))
        .collect();
    e.state.ingest(3, &evs);
    e.state.sync();
    let r = search(&e, 3, "@workflow.triage.state:open", "now-1h");
    let id = r["data"][0]["id"].as_str().unwrap().to_string();
    let s = e
        .state
        .set_state(3, &id, "under_review", "test")
        .unwrap()
        .unwrap();
    assert_eq!(s.triage.state, "under_review");
    assert!(
        e.state
            .set_state(3, "nope", "archived", "test")
            .unwrap()
            .is_none()
    );
    assert_eq!(
        e.state.set_state(3, &id, "closed", "t").unwrap_err().status,
        400
    );
    // More events update the signal; the triage stays.
    e.state
        .ingest(3, &[attack("1.1.1.1", now + 10, "qa", "web")]);
    e.state.sync();
    let r = search(&e, 3, "@workflow.triage.state:under_review", "now-1h");
    assert_eq!(r["data"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(
        r["data"][0]["attributes"]["attributes"]["workflow"]["events_matched"],
        6
    );
    assert_eq!(
        search(&e, 3, "@workflow.triage.state:open", "now-1h")["data"],
        json!([])
    );
}

#[test]
fn rule_actions_and_custom_rules_reach_the_effects() {
    let e = env();
    let rule = Rule::from_json(&json!({
        "name": "block stuffing", "type": "application_security",
        "queries": [{"query": "@appsec.security_activity:business_logic.users.login.failure", "groupByFields": ["@http.client_ip"]}],
        "cases": [{"status": "high", "condition": "a > 2", "notifications": ["@slack-sec"],
                   "actions": [{"type": "block_ip", "options": {"duration": 900}}]}],
        "options": {"evaluationWindow": 60, "keepAlive": 600, "maxSignalDuration": 3600},
        "message": "blocked @pagerduty-oncall",
    }))
    .map(|mut r| {
        r.id = "abc-def-ghi".into();
        r
    })
    .unwrap();
    e.state
        .shared
        .db
        .lock()
        .unwrap()
        .put_rule(4, &rule)
        .unwrap();
    let now = now_ms();
    let evs: Vec<_> = (0..3)
        .map(|i| SecurityEvent {
            timestamp_ms: now + i,
            client_ip: Some("2.2.2.2".into()),
            usr_id: Some(format!("u{i}")),
            activity: vec!["business_logic.users.login.failure".into()],
            ..Default::default()
        })
        .collect();
    e.state.ingest(4, &evs);
    e.state.sync();
    let acts = e.fx.actions.lock().unwrap().clone();
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].1.kind, "block_ip");
    assert_eq!(acts[0].1.value, "2.2.2.2");
    assert_eq!(acts[0].1.duration_s, Some(900));
    let r = search(&e, 4, "@workflow.rule.id:abc-def-ghi", "now-1h");
    let notes = &r["data"][0]["attributes"]["attributes"]["notifications"];
    assert_eq!(notes, &json!(["@slack-sec", "@pagerduty-oncall"]));
}

/// Events in = events evaluated at `rate` events/s for `secs`, with the p99 printed.
fn load(rate: usize, secs: usize) {
    let e = env();
    let t0 = Instant::now();
    let now = now_ms();
    let per_tick = rate / 100; // 10 ms ticks
    let mut sent = 0usize;
    for tick in 0..(secs * 100) {
        let batch: Vec<SecurityEvent> = (0..per_tick)
            .map(|i| {
                let n = sent + i;
                let mut ev = attack(
                    &format!("198.51.{}.{}", n % 7, n % 251),
                    now + (n as i64),
                    "load",
                    "svc",
                );
                if n % 3 == 0 {
                    ev.activity = vec!["business_logic.users.login.failure".into()];
                    ev.usr_id = Some(format!("user{}", n % 97));
                }
                ev
            })
            .collect();
        sent += batch.len();
        e.state.ingest(9, &batch);
        let due = t0 + Duration::from_millis(10 * (tick as u64 + 1));
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let send_secs = t0.elapsed().as_secs_f64();
    e.state.sync();
    let st = stats_json(&e.state, 9);
    eprintln!(
        "detection load: {sent} events in {send_secs:.1} s ({:.0}/s); evaluated {}, dropped {}, signals {}, signal writes {}, \
         event->new/escalated signal persisted p50 {} us, p99 {} us, max {} us ({} samples); absorbed-event updates p99 {} us",
        sent as f64 / send_secs,
        st["events_evaluated"],
        st["events_dropped"],
        st["signals_created"],
        st["signal_writes"],
        st["latency_us"]["p50"],
        st["latency_us"]["p99"],
        st["latency_us"]["max"],
        st["latency_us"]["samples"],
        st["update_latency_us"]["p99"],
    );
    assert_eq!(st["events_in"], sent as u64);
    assert_eq!(st["events_evaluated"], sent as u64, "events lost: {st}");
    assert_eq!(st["events_dropped"], 0);
    assert!(st["signals_created"].as_u64().unwrap() > 0);
    assert!(send_secs < secs as f64 * 2.0, "could not keep the rate");
}

#[test]
fn load_1000_events_per_second_for_5_seconds_without_loss() {
    load(1000, 5);
}

/// The full figure for docs/benchmarks.md:
/// `cargo test --release -p warden-server --lib security::tests::load_60s -- --ignored --nocapture`
#[test]
#[ignore]
fn load_60s() {
    load(1000, 60);
}
