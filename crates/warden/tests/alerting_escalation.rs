//! End to end through the real `warden server` to local fakes that check every request
//! against the spec (PagerDuty Events v2 §3.1, Slack §4, webhooks §2.5): a metric monitor
//! triggers → PagerDuty trigger + Slack + webhook with custom headers + escalation step 1;
//! nobody acknowledges → step 2 fires; acknowledged → PagerDuty acknowledge and escalation
//! stops; recovered → PagerDuty resolve with the same dedup_key. Then retries (only 429/5xx),
//! the signed acknowledgement link, and secrets never coming back from the API.
#![allow(clippy::unwrap_used)]

mod alerting_support;
mod server_support;

use std::time::Duration;

use alerting_support::*;
use serde_json::{Value, json};
use server_support::now;

const ROUTING_KEY: &str = "0123456789abcdef0123456789abcdef";

async fn channels(a: &Alerting, fake: &Fake) {
    a.ok(
        "POST",
        "/api/v2/warden/integrations/pagerduty/services",
        Some(json!({"service_name": "Infra", "service_key": ROUTING_KEY})),
    )
    .await;
    for (name, path) in [("ops", "/slack/ops"), ("oncall-l1", "/slack/l1")] {
        a.ok(
            "POST",
            "/api/v2/warden/integrations/slack/channels",
            Some(json!({"name": name, "url": fake.url(path)})),
        )
        .await;
    }
    a.ok(
        "POST",
        "/api/v1/integration/webhooks/configuration/webhooks",
        Some(json!({"name": "selfhosted", "url": fake.url("/hook"),
            "payload": "{\"id\":\"$ID\",\"title\":\"$EVENT_TITLE\",\"body\":\"$EVENT_MSG\",\"transition\":\"$ALERT_TRANSITION\",\"type\":\"$ALERT_TYPE\",\"link\":\"$LINK\",\"date\":$DATE}",
            "custom_headers": "{\"X-Token\": \"s3cret-header-value\", \"X-Team\": \"infra\"}",
            "encode_as": "json"})),
    )
    .await;
    a.ok(
        "POST",
        "/api/v1/integration/webhooks/configuration/webhooks",
        Some(
            json!({"name": "l2", "url": fake.url("/hook-l2"), "encode_as": "form",
            "payload": "{\"title\":\"$EVENT_TITLE\",\"key\":\"$AGGREG_KEY\"}"}),
        ),
    )
    .await;
}

fn pd_events(fake: &Fake) -> Vec<Value> {
    fake.on("/enqueue")
        .iter()
        .filter(|r| r.status == 202)
        .map(Recorded::json)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_escalate_acknowledge_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::start();
    let a = start(&tmp.path().join("d"), &fake.url("/enqueue"));
    channels(&a, &fake).await;
    let p = a
        .ok(
            "POST",
            "/api/v2/warden/escalation_policies",
            Some(json!({"name": "primary", "repeat": 1, "steps": [
                {"delay_seconds": 3, "targets": ["@slack-oncall-l1"]},
                {"delay_seconds": 3, "targets": ["@webhook-l2"]}]})),
        )
        .await;
    assert_eq!(p["steps"][1]["delay_seconds"], 3);

    // Secrets never come back.
    for path in [
        "/api/v2/warden/integrations/pagerduty/services",
        "/api/v2/warden/integrations/slack/channels",
        "/api/v1/integration/webhooks/configuration/webhooks",
        "/api/v1/integration/webhooks/configuration/webhooks/selfhosted",
        "/api/v2/warden/integrations/pagerduty/services/Infra",
    ] {
        let v = a.ok("GET", path, None).await.to_string();
        for secret in [ROUTING_KEY, "s3cret-header-value", "/slack/ops", "/hook"] {
            assert!(!v.contains(secret), "{path} leaks {secret}: {v}");
        }
    }
    let hook = a
        .ok(
            "GET",
            "/api/v1/integration/webhooks/configuration/webhooks/selfhosted",
            None,
        )
        .await;
    assert_eq!(hook["name"], "selfhosted");
    assert_eq!(hook["encode_as"], "json");
    assert!(hook["custom_headers"].as_str().unwrap().contains("X-Token"));
    // ... nor sit in the database in clear.
    let db = std::fs::read(tmp.path().join("d/alerting.db")).unwrap();
    let db = String::from_utf8_lossy(&db);
    assert!(!db.contains(ROUTING_KEY) && !db.contains("s3cret-header-value"));

    let m = a
        .ok("POST", "/api/v1/monitor", Some(json!({
            "type": "metric alert", "name": "Esc CPU",
            "query": "last(last_2m):avg:esc.test.cpu{*} > 90",
            "message": "{{#is_alert}}CPU {{value}} @pagerduty-Infra @slack-ops @webhook-selfhosted @oncall-primary{{/is_alert}}{{#is_recovery}}CPU back to {{value}} @slack-ops{{/is_recovery}}",
            "tags": ["env:prod", "service:checkout"],
            "options": {"thresholds": {"critical": 90}}
        })))
        .await;
    let id = m["id"].as_i64().unwrap();
    let key = format!("monitor-{id}");
    let t0 = now();
    a.submit("esc.test.cpu", &[("h1", t0 - 30, 95.0)]).await;

    // Trigger: PagerDuty, Slack, webhook, and step 1 of the policy.
    let pd = fake.wait("/enqueue", 1, "PagerDuty trigger").await;
    let ev = pd[0].json();
    check_pagerduty(&ev).unwrap_or_else(|e| panic!("PagerDuty schema: {e}: {ev}"));
    assert_eq!(ev["event_action"], "trigger");
    assert_eq!(ev["routing_key"], ROUTING_KEY);
    assert_eq!(ev["dedup_key"], key.as_str());
    assert_eq!(ev["payload"]["severity"], "critical");
    assert_eq!(ev["payload"]["summary"], "[Triggered] Esc CPU");
    assert_eq!(ev["payload"]["source"], "checkout");
    assert_eq!(pd[0].header("content-type"), Some("application/json"));
    let link = ev["links"][0]["href"].as_str().unwrap().to_owned();
    assert!(
        link.contains(&format!("/api/v2/warden/alerts/{key}/ack?")),
        "{link}"
    );

    let slack = fake.wait("/slack/ops", 1, "Slack").await;
    let s = slack[0].json();
    check_slack(&s).unwrap_or_else(|e| panic!("Slack schema: {e}: {s}"));
    assert!(s["text"].as_str().unwrap().contains("CPU 95"), "{s}");
    assert_eq!(s["blocks"][2]["elements"][0]["url"], link.as_str());

    let hook = fake.wait("/hook", 1, "webhook").await;
    assert_eq!(hook[0].header("x-token"), Some("s3cret-header-value"));
    assert_eq!(hook[0].header("x-team"), Some("infra"));
    assert_eq!(hook[0].header("content-type"), Some("application/json"));
    let h = hook[0].json();
    assert_eq!(h["id"], key.as_str());
    assert_eq!(h["transition"], "Triggered");
    assert_eq!(h["type"], "error");
    assert_eq!(h["title"], "[Triggered] Esc CPU");
    assert_eq!(h["link"], link.as_str());
    assert!(
        h["body"]
            .as_str()
            .unwrap()
            .contains("CPU 95 @pagerduty-Infra"),
        "{h}"
    );
    assert!(h["date"].as_i64().unwrap() >= t0 * 1000);
    let l1 = fake.wait("/slack/l1", 1, "escalation step 1").await;
    check_slack(&l1[0].json()).unwrap();
    assert!(
        fake.on("/hook-l2").is_empty(),
        "step 2 must wait for its delay"
    );

    // Nobody acknowledges: step 2 fires after 3 s.
    let l2 = fake.wait("/hook-l2", 1, "escalation step 2").await;
    assert_eq!(
        l2[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(
        l2[0].body.starts_with("key=monitor-")
            && l2[0].body.contains("title=%5BEscalated%3A+step+2%5D"),
        "{}",
        l2[0].body
    );
    let alert = a
        .ok("GET", &format!("/api/v2/warden/alerts/{key}"), None)
        .await;
    assert_eq!(alert["status"], "triggered");
    assert_eq!(alert["escalation"]["step"], 2);

    // Acknowledge: PagerDuty acknowledge with the same key; escalation stops (with repeat 1
    // step 1 would fire again 3 s after step 2).
    let acked = a
        .ok(
            "POST",
            &format!("/api/v2/warden/alerts/{key}/acknowledge"),
            None,
        )
        .await;
    assert_eq!(acked["status"], "acknowledged");
    let pd = fake.wait("/enqueue", 2, "PagerDuty acknowledge").await;
    let ack = pd[1].json();
    check_pagerduty(&ack).unwrap();
    assert_eq!(ack["event_action"], "acknowledge");
    assert_eq!(ack["dedup_key"], key.as_str());
    assert_eq!(ack["routing_key"], ROUTING_KEY);
    let (l1_n, l2_n) = (fake.on("/slack/l1").len(), fake.on("/hook-l2").len());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let step_msgs = |path: &str| {
        fake.on(path)
            .iter()
            .filter(|r| r.body.contains("Escalated"))
            .count()
    };
    assert_eq!(step_msgs("/slack/l1"), 0, "step 1 re-fired after the ack");
    assert_eq!(step_msgs("/hook-l2"), 1, "step 2 re-fired after the ack");
    assert!(fake.on("/slack/l1").len() <= l1_n + 1 && fake.on("/hook-l2").len() <= l2_n + 1);

    // Recover: PagerDuty resolve with the same dedup key, Slack gets the recovery message.
    a.submit("esc.test.cpu", &[("h1", now() - 10, 50.0)]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let resolve = loop {
        if let Some(r) = pd_events(&fake)
            .into_iter()
            .find(|e| e["event_action"] == "resolve")
        {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no resolve: {:?}",
            pd_events(&fake)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    check_pagerduty(&resolve).unwrap();
    assert_eq!(resolve["dedup_key"], key.as_str());
    assert_eq!(resolve["routing_key"], ROUTING_KEY);
    let slack = fake
        .wait("/slack/ops", 3, "Slack acknowledge and recovery")
        .await;
    let texts: Vec<String> = slack
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(texts[1].starts_with("[Acknowledged]"), "{texts:?}");
    assert!(texts[2].contains("CPU back to 50"), "{texts:?}");
    for r in &slack {
        check_slack(&r.json()).unwrap();
    }
    let pd_actions: Vec<String> = pd_events(&fake)
        .iter()
        .map(|e| e["event_action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pd_actions, ["trigger", "acknowledge", "resolve"]);
    let alert = a
        .ok("GET", &format!("/api/v2/warden/alerts/{key}"), None)
        .await;
    assert_eq!(alert["status"], "resolved");

    // The delivery log: everything delivered on the first attempt, nothing secret in it.
    let log = a.deliveries(&key).await;
    assert!(log.len() >= 10, "{log:?}");
    assert!(
        log.iter()
            .all(|d| d["status"] == "delivered" && d["attempts"] == 1),
        "{log:?}"
    );
    let log_text = serde_json::to_string(&log).unwrap();
    assert!(!log_text.contains(ROUTING_KEY) && !log_text.contains("s3cret"));
    assert!(!a.server.log_text().contains("s3cret-header-value"));
    assert!(!a.server.log_text().contains(ROUTING_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_only_429_and_5xx_and_signed_link_acknowledges() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::start();
    let a = start(&tmp.path().join("d"), &fake.url("/enqueue"));
    channels(&a, &fake).await;
    for name in ["flaky", "broken"] {
        a.ok(
            "POST",
            "/api/v1/integration/webhooks/configuration/webhooks",
            Some(json!({"name": name, "url": fake.url(&format!("/{name}"))})),
        )
        .await;
    }
    // The org's default policy applies to alerts whose message names none.
    a.ok(
        "POST",
        "/api/v2/warden/escalation_policies",
        Some(json!({"name": "fallback", "default": true,
            "steps": [{"delay_minutes": 60, "targets": ["@slack-ops"]}]})),
    )
    .await;
    fake.script("/flaky", &[500, 503]);
    fake.script("/broken", &[400, 400, 400]);
    fake.script("/enqueue", &[429]);
    let m = a
        .ok("POST", "/api/v1/monitor", Some(json!({
            "type": "query alert", "name": "Retry CPU",
            "query": "last(last_2m):avg:retry.test.cpu{*} > 90",
            "message": "{{#is_alert}}hot @webhook-flaky @webhook-broken @pagerduty-Infra{{/is_alert}}",
        })))
        .await;
    let key = format!("monitor-{}", m["id"]);
    a.submit("retry.test.cpu", &[("h1", now() - 30, 99.0)])
        .await;

    let flaky = fake
        .wait("/flaky", 3, "flaky webhook retried to success")
        .await;
    assert_eq!(
        flaky.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 503, 200]
    );
    let pd = fake
        .wait("/enqueue", 2, "PagerDuty retried after 429")
        .await;
    assert_eq!(pd[0].status, 429);
    assert_eq!(pd[0].body, pd[1].body, "the retry is the same event");
    check_pagerduty(&pd[1].json()).unwrap();
    // The default payload (§2.5 key set) went to the broken one, once: a 400 is final.
    let broken = fake.wait("/broken", 1, "broken webhook").await;
    let mut keys: Vec<String> = broken[0]
        .json()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "body",
            "date",
            "event_type",
            "id",
            "last_updated",
            "org",
            "title"
        ]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.on("/broken").len(), 1, "a 400 is not retried");

    let log = a.deliveries(&key).await;
    let find = |name: &str| {
        log.iter()
            .find(|d| d["channel"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {log:?}"))
            .clone()
    };
    let f = find("flaky");
    assert_eq!(
        (f["status"].as_str(), f["attempts"].as_i64()),
        (Some("delivered"), Some(3))
    );
    let b = find("broken");
    assert_eq!(
        (b["status"].as_str(), b["attempts"].as_i64()),
        (Some("failed"), Some(1))
    );
    assert_eq!(b["last_status_code"], 400);
    let p = find("Infra");
    assert_eq!(
        (p["status"].as_str(), p["attempts"].as_i64()),
        (Some("delivered"), Some(2))
    );

    let alert = a
        .ok("GET", &format!("/api/v2/warden/alerts/{key}"), None)
        .await;
    assert_eq!(alert["policy"], "fallback", "{alert}");
    let step1 = fake.wait("/slack/ops", 1, "default policy step 1").await;
    check_slack(&step1[0].json()).unwrap();

    // The signed link: no keys needed; GET only shows, POST acknowledges; tampering is 403.
    let link = pd[1].json()["links"][0]["href"]
        .as_str()
        .unwrap()
        .to_owned();
    let anon = server_support::client(&a.server.ca_file());
    let page = anon.get(&link).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    let alert = a
        .ok("GET", &format!("/api/v2/warden/alerts/{key}"), None)
        .await;
    assert_eq!(alert["status"], "triggered", "a GET must not acknowledge");
    let tampered_sig = format!("{}0", &link[..link.len() - 1]);
    let exp: i64 = link
        .split("exp=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let tampered_exp = link.replace(&format!("exp={exp}"), &format!("exp={}", exp + 1));
    let other_key = link.replace(&key, "monitor-999");
    for bad in [&tampered_sig, &tampered_exp, &other_key] {
        let r = anon.post(bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{bad}");
    }
    let r = anon.post(&link).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let alert = a
        .ok("GET", &format!("/api/v2/warden/alerts/{key}"), None)
        .await;
    assert_eq!(alert["status"], "acknowledged");
    assert_eq!(alert["acknowledged_by"], "signed link");
    let pd = fake
        .wait("/enqueue", 3, "PagerDuty acknowledge from the link")
        .await;
    assert_eq!(pd[2].json()["event_action"], "acknowledge");
    // Acknowledging twice is harmless.
    assert_eq!(
        anon.post(&link).send().await.unwrap().status().as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let a = start(&tmp.path().join("d"), "http://127.0.0.1:9/enqueue");
    for (path, body, want) in [
        (
            "/api/v2/warden/integrations/pagerduty/services",
            json!({"service_name": "x", "service_key": "short"}),
            "32-character",
        ),
        (
            "/api/v2/warden/integrations/slack/channels",
            json!({"name": "ops", "url": "http://hooks.slack.com/services/x"}),
            "https://",
        ),
        (
            "/api/v1/integration/webhooks/configuration/webhooks",
            json!({"name": "w", "url": "https://example.com", "payload": "{\"a\": }"}),
            "payload",
        ),
        (
            "/api/v1/integration/webhooks/configuration/webhooks",
            json!({"name": "w", "url": "https://example.com", "custom_headers": "[1]"}),
            "custom_headers",
        ),
        (
            "/api/v1/integration/webhooks/configuration/webhooks",
            json!({"name": "w", "url": "https://example.com", "encode_as": "xml"}),
            "encode_as",
        ),
        (
            "/api/v1/integration/webhooks/configuration/webhooks",
            json!({"name": "bad name", "url": "https://example.com"}),
            "name",
        ),
        (
            "/api/v2/warden/escalation_policies",
            json!({"name": "p", "steps": [{"delay_minutes": 5, "targets": ["@email-x"]}]}),
            "targets[0]",
        ),
        (
            "/api/v2/warden/escalation_policies",
            json!({"name": "p", "steps": []}),
            "steps",
        ),
    ] {
        let (s, v) = a.call("POST", path, Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["errors"][0].as_str().unwrap().contains(want),
            "{body}: {v}"
        );
    }
    let (s, _) = a
        .call("POST", "/api/v2/warden/alerts/nope/acknowledge", None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = a
        .call(
            "GET",
            "/api/v2/warden/alerts/nope/ack?org=1&exp=1&sig=zz",
            None,
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_delivery_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let fake = Fake::start();
    fake.script("/down", &[503; 200]);
    let a = start(&dir, &fake.url("/enqueue"));
    a.ok(
        "POST",
        "/api/v1/integration/webhooks/configuration/webhooks",
        Some(json!({"name": "down", "url": fake.url("/down")})),
    )
    .await;
    let m = a
        .ok(
            "POST",
            "/api/v1/monitor",
            Some(json!({
                "type": "query alert", "name": "Restart CPU",
                "query": "last(last_2m):avg:restart.test.cpu{*} > 90",
                "message": "hot @webhook-down",
            })),
        )
        .await;
    let key = format!("monitor-{}", m["id"]);
    a.submit("restart.test.cpu", &[("h1", now() - 30, 99.0)])
        .await;
    fake.wait("/down", 2, "first attempts").await;
    let before = a.deliveries(&key).await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["status"], "pending", "{before:?}");
    assert!(before[0]["next_retry_at"].is_string());
    // Crash, let the receiver recover, start again on the same data directory.
    a.server.kill9();
    fake.unscript("/down");
    let n_before = fake.on("/down").len();
    let b = start(&dir, &fake.url("/enqueue"));
    let got = fake
        .wait("/down", n_before + 1, "delivery resumed after restart")
        .await;
    assert_eq!(got.last().unwrap().status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = b.deliveries(&key).await;
        if log[0]["status"] == "delivered" {
            assert_eq!(log.len(), 1, "the same delivery, not a new one: {log:?}");
            assert!(log[0]["attempts"].as_i64().unwrap() >= 3, "{log:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The monitor's state survived too: no second trigger after the restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.deliveries(&key).await.len(), 1);
}
