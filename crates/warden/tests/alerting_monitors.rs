//! Monitors against the real `warden server`: the v1 API shapes and refusals, and a metric
//! monitor driven through Alert → (held by recovery) → Warn → OK and No Data by real ingested
//! points, with its rendered messages received by a local webhook receiver.
#![allow(clippy::unwrap_used)]

mod alerting_support;
mod server_support;

use alerting_support::*;
use serde_json::{Value, json};
use server_support::now;

/// The body the official client sends (captured, §8 of the spec).
fn captured_monitor() -> Value {
    json!({"message": "{{#is_alert}}CPU is {{value}}% on {{host.name}} @pagerduty-Infra @slack-ops{{/is_alert}}\n{{#is_recovery}}Recovered @slack-ops{{/is_recovery}} @webhook-selfhosted", "name": "High CPU on {{host.name}}", "options": {"escalation_message": "Still firing @pagerduty-Infra", "evaluation_delay": 60, "include_tags": true, "no_data_timeframe": 10, "notify_no_data": true, "renotify_interval": 30, "renotify_statuses": ["alert", "no data"], "require_full_window": false, "thresholds": {"critical": 90.0, "critical_recovery": 85.0, "warning": 80.0}}, "priority": 2, "tags": ["env:prod", "team:infra"], "query": "avg(last_5m):avg:system.cpu.user{env:prod} by {host} > 90", "type": "metric alert"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_api_shapes_crud_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let a = start(&tmp.path().join("d"), "http://127.0.0.1:9/enqueue");
    let m = a
        .ok("POST", "/api/v1/monitor", Some(captured_monitor()))
        .await;
    let id = m["id"].as_i64().expect("int64 id");
    assert!(id > 0);
    assert_eq!(m["type"], "query alert", "metric alert is normalised");
    assert_eq!(m["overall_state"], "No Data");
    assert_eq!(m["multi"], true);
    assert_eq!(m["priority"], 2);
    assert_eq!(m["deleted"], Value::Null);
    assert_eq!(m["options"]["thresholds"]["critical_recovery"], 85.0);
    assert_eq!(m["options"]["notify_audit"], false, "server default");
    assert_eq!(m["options"]["new_host_delay"], 300, "server default");
    assert_eq!(m["options"]["silenced"], json!({}));
    assert!(m["created"].as_str().unwrap().ends_with("+00:00"), "{m}");
    assert!(m["creator"]["handle"].is_string());

    let got = a.ok("GET", &format!("/api/v1/monitor/{id}"), None).await;
    assert_eq!(got["query"], m["query"]);
    assert_eq!(got["message"], m["message"]);

    // Ungrouped second monitor; list with a name filter and tag filter.
    let m2 = a
        .ok("POST", "/api/v1/monitor", Some(json!({"message": "x", "name": "server_index=1 check", "query": "avg(last_5m):avg:system.cpu.user{*} > 90", "type": "query alert"})))
        .await;
    assert_eq!(m2["multi"], false);
    assert_eq!(m2["options"]["thresholds"]["critical"], 90.0);
    let all = a.ok("GET", "/api/v1/monitor", None).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let named = a.ok("GET", "/api/v1/monitor?name=server_index", None).await;
    assert_eq!(named.as_array().unwrap().len(), 1);
    assert_eq!(named[0]["id"], m2["id"]);
    let tagged = a
        .ok("GET", "/api/v1/monitor?monitor_tags=team:infra", None)
        .await;
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    assert_eq!(tagged[0]["id"], id);

    // Update: partial body keeps the rest.
    let up = a
        .ok("PUT", &format!("/api/v1/monitor/{id}"), Some(json!({"name": "renamed", "options": {"thresholds": {"critical": 90, "warning": 70}}})))
        .await;
    assert_eq!(up["name"], "renamed");
    assert_eq!(up["query"], m["query"]);
    assert_eq!(up["options"]["thresholds"]["warning"], 70);

    // Validate: good → {}; bad → 400 naming the problem; nothing stored.
    assert_eq!(
        a.ok("POST", "/api/v1/monitor/validate", Some(captured_monitor()))
            .await,
        json!({})
    );
    for (body, want) in [
        (json!({"type": "metric alert"}), "query"),
        (
            json!({"type": "log alert", "query": "logs(\"x\").last(\"5m\") > 1"}),
            "not supported",
        ),
        (
            json!({"type": "metric alert", "query": "avg(last_5m):avg:cpu{*} >"}),
            "'query' is invalid",
        ),
        (
            json!({"type": "metric alert", "query": "avg(last_5m):avg:cpu{*} > 90", "options": {"thresholds": {"critical": 80}}}),
            "does not match",
        ),
        (
            json!({"type": "metric alert", "query": "avg(last_5m):avg:cpu{*} > 90", "options": {"thresholds": {"critical_recovery": 95}}}),
            "recovery",
        ),
        (
            json!({"type": "metric alert", "query": "avg(last_5m):avg:cpu{*} > 90", "message": "{{#is_alert}}x"}),
            "never closed",
        ),
        (
            json!({"type": "metric alert", "query": "avg(last_5m):avg:cpu{*} > 90", "priority": 9}),
            "priority",
        ),
        (
            json!({"type": "metric alert", "query": "avg(last_5m):avg:cpu{*} > 90", "options": {"notify_no_data": "yes"}}),
            "notify_no_data",
        ),
    ] {
        for path in ["/api/v1/monitor/validate", "/api/v1/monitor"] {
            let (s, v) = a.call("POST", path, Some(body.clone())).await;
            assert_eq!(s, 400, "{path} {body} -> {v}");
            assert!(
                v["errors"][0].as_str().unwrap().contains(want),
                "{body}: {v}"
            );
        }
    }
    let (s, _) = a
        .call("POST", "/api/v1/monitor", Some(json!("not an object")))
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        a.ok("GET", "/api/v1/monitor", None)
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Delete, then 404.
    let d = a.ok("DELETE", &format!("/api/v1/monitor/{id}"), None).await;
    assert_eq!(d["deleted_monitor_id"], id);
    let (s, v) = a.call("GET", &format!("/api/v1/monitor/{id}"), None).await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = a.call("GET", "/api/v1/monitor/abc", None).await;
    assert_eq!(s, 400);

    // Without keys: 403.
    let r = a
        .http
        .get(format!("{}/api/v1/monitor", a.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_monitor_alert_warn_ok_and_no_data_from_real_points() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::start();
    let a = start(&tmp.path().join("d"), &fake.url("/enqueue"));
    a.ok(
        "POST",
        "/api/v1/integration/webhooks/configuration/webhooks",
        Some(json!({"name": "selfhosted", "url": fake.url("/hook"),
            "payload": "{\"title\":\"$EVENT_TITLE\",\"msg\":\"$TEXT_ONLY_MSG\",\"transition\":\"$ALERT_TRANSITION\",\"key\":\"$AGGREG_KEY\",\"scope\":\"$ALERT_SCOPE\"}",
            "encode_as": "json"})),
    )
    .await;
    let msg = "{{#is_alert}}CPU is {{value}} on {{host.name}} (> {{threshold}}){{/is_alert}}\
               {{#is_warning}}CPU warm at {{value}} on {{host.name}} (warn {{warn_threshold}}){{/is_warning}}\
               {{#is_recovery}}Recovered on {{host.name}}{{/is_recovery}}\
               {{#is_no_data}}No data from {{host.name}}{{/is_no_data}} @webhook-selfhosted";
    let m = a
        .ok("POST", "/api/v1/monitor", Some(json!({
            "type": "metric alert", "name": "CPU on {{host.name}}", "message": msg,
            "query": "last(last_2m):avg:alert.test.cpu{*} by {host} > 90",
            "options": {"thresholds": {"critical": 90, "critical_recovery": 85, "warning": 80, "warning_recovery": 75},
                        "notify_no_data": true, "no_data_timeframe": 2, "evaluation_delay": 0}
        })))
        .await;
    let id = m["id"].as_i64().unwrap();
    let t = now();
    let group = |v: &Value, g: &str| {
        v["state"]["groups"][g]["status"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };

    // web-1 walks the thresholds; points 10 s apart so each is its own bucket.
    let steps: [(f64, &str, Option<&str>); 5] = [
        (95.0, "Alert", Some("Triggered")),
        (88.0, "Alert", None), // above critical_recovery: stays
        (83.0, "Warn", Some("Warn")),
        (78.0, "Warn", None), // above warning_recovery: stays
        (70.0, "OK", Some("Recovered")),
    ];
    let mut expected_msgs = 0;
    for (i, (v, state, transition)) in steps.iter().enumerate() {
        a.submit("alert.test.cpu", &[("web-1", t - 100 + 10 * i as i64, *v)])
            .await;
        let last = format!("{v}");
        a.wait_monitor(id, state, |m| {
            group(m, "host:web-1") == *state && m["state"]["groups"]["host:web-1"].is_object()
        })
        .await;
        if let Some(tr) = transition {
            expected_msgs += 1;
            let got = fake.wait("/hook", expected_msgs, tr).await;
            let body = got.last().unwrap().json();
            assert_eq!(body["transition"], *tr, "{body}");
            assert_eq!(body["scope"], "host:web-1");
            match *tr {
                "Triggered" => {
                    assert_eq!(body["msg"], "CPU is 95 on web-1 (> 90) @webhook-selfhosted");
                    assert_eq!(body["title"], "[Triggered on {host:web-1}] CPU on web-1");
                }
                "Warn" => assert_eq!(
                    body["msg"],
                    "CPU warm at 83 on web-1 (warn 80) @webhook-selfhosted"
                ),
                _ => assert_eq!(body["msg"], "Recovered on web-1 @webhook-selfhosted"),
            }
        } else {
            // Held by the recovery threshold: give the evaluator a few rounds, no message.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            let m = a
                .ok(
                    "GET",
                    &format!("/api/v1/monitor/{id}?group_states=all"),
                    None,
                )
                .await;
            assert_eq!(group(&m, "host:web-1"), *state, "{last}: {m}");
            assert_eq!(
                fake.on("/hook").len(),
                expected_msgs,
                "no message while held"
            );
        }
    }

    // web-2 reports once, near the start of the 2-minute window: it goes quiet, and after the
    // no-data timeframe (2 "minutes" = 2 s here) it is No Data, announced.
    a.submit("alert.test.cpu", &[("web-2", now() - 117, 50.0)])
        .await;
    a.wait_monitor(id, "web-2 OK", |m| group(m, "host:web-2") == "OK")
        .await;
    let v = a
        .wait_monitor(id, "web-2 No Data", |m| group(m, "host:web-2") == "No Data")
        .await;
    assert_eq!(
        v["overall_state"], "No Data",
        "worst group: No Data outranks OK: {v}"
    );
    let got = fake.wait("/hook", expected_msgs + 1, "No Data").await;
    let body = got.last().unwrap().json();
    assert_eq!(body["transition"], "No Data");
    assert_eq!(body["msg"], "No data from web-2 @webhook-selfhosted");
    assert!(
        v["state"]["groups"]["host:web-2"]["last_nodata_ts"].is_i64(),
        "{v}"
    );

    // Every delivery of web-1 is in the log, delivered on the first attempt.
    let key = body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("monitor-{id}-")), "{key}");
    let log = a.deliveries(&key).await;
    assert!(!log.is_empty());
    assert!(
        log.iter()
            .all(|d| d["status"] == "delivered" && d["attempts"] == 1),
        "{log:?}"
    );
}
