//! Detection rules and security signals over the real `warden server` (HTTPS, real keys):
//! rules CRUD in Datadog's shapes, signals from security spans posted to the trace intake
//! (list, search, get, triage, cursor paging), the two curl | jq CI-gate forms from issue #6
//! run literally through bash with real curl and jq, and `warden signals` (CLI).
#![allow(clippy::unwrap_used)]

mod server_support;
mod signals_support;

use reqwest::Method;
use serde_json::{Value, json};
use signals_support::{Env, attack_span, login_span};

const RULES: &str = "/api/v2/security_monitoring/rules";
const SIGNALS: &str = "/api/v2/security_monitoring/signals";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_crud_in_datadog_shapes() {
    let env = Env::start();
    // Defaults are listed, flagged, paged.
    let (st, v) = env
        .call(Method::GET, RULES, &[("page[size]", "100")], None)
        .await;
    assert_eq!(st, 200, "{v}");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for want in [
        "warden-attack-from-ip",
        "warden-vulnerable-code-path",
        "warden-credential-stuffing",
        "warden-brute-force-account",
        "warden-account-takeover",
        "warden-blocked-ip-attacking",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["isDefault"] == true)
    );
    assert_eq!(v["meta"]["page"]["total_count"], 6);
    let (_, p) = env
        .call(
            Method::GET,
            RULES,
            &[("page[size]", "4"), ("page[number]", "1")],
            None,
        )
        .await;
    assert_eq!(p["data"].as_array().unwrap().len(), 2);

    // Create: the feature file's application_security rule, verbatim.
    let body = json!({"type":"application_security","name":"test_appsec_rule",
        "queries":[{"query":"@appsec.security_activity:business_logic.users.login.failure","aggregation":"count","groupByFields":["service","@http.client_ip"],"distinctFields":[]}],
        "filters":[],
        "cases":[{"name":"","status":"info","notifications":[],"condition":"a > 100000",
          "actions":[{"type":"block_ip","options":{"duration":900}},{"type":"user_behavior","options":{"userBehaviorName":"behavior"}},{"type":"flag_ip","options":{"flaggedIPType":"FLAGGED"}}]}],
        "options":{"keepAlive":3600,"maxSignalDuration":86400,"evaluationWindow":900,"detectionMethod":"threshold"},
        "isEnabled":true,"message":"Test rule","tags":[],"groupSignalsBy":["service"]});
    let (st, r) = env.call(Method::POST, RULES, &[], Some(body)).await;
    assert_eq!(st, 200, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 11, "abc-def-ghi: {id}");
    assert_eq!(r["isDefault"], false);
    assert_eq!(r["version"], 1);
    assert_eq!(r["queries"][0]["hasOptionalGroupByFields"], false);
    assert_eq!(r["groupSignalsBy"], json!(["service"]));
    assert!(r["createdAt"].as_i64().unwrap() > 1_600_000_000_000);
    let (st, g) = env
        .call(Method::GET, &format!("{RULES}/{id}"), &[], None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(g, r, "GET returns what POST returned");
    // Update (PUT merges), version bumps.
    let (st, u) = env
        .call(
            Method::PUT,
            &format!("{RULES}/{id}"),
            &[],
            Some(json!({"name": "renamed", "isEnabled": false})),
        )
        .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["name"], "renamed");
    assert_eq!(u["isEnabled"], false);
    assert_eq!(u["version"], 2);
    assert_eq!(u["cases"], r["cases"]);
    // Bad input: 400 naming the field.
    let (st, e) = env
        .call(
            Method::POST,
            RULES,
            &[],
            Some(json!({"name": "x", "queries": [{"query": "a:(b"}], "cases": [{"status": "high", "condition": "a > 1"}]})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(
        e["errors"][0]
            .as_str()
            .unwrap()
            .contains("queries[0].query"),
        "{e}"
    );
    let (st, e) = env
        .call(
            Method::PUT,
            &format!("{RULES}/{id}"),
            &[],
            Some(json!({"options": {"evaluationWindow": 17}})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(
        e["errors"][0]
            .as_str()
            .unwrap()
            .contains("evaluationWindow"),
        "{e}"
    );
    // Defaults: disable yes, delete no.
    let (st, d) = env
        .call(
            Method::PUT,
            &format!("{RULES}/warden-blocked-ip-attacking"),
            &[],
            Some(json!({"isEnabled": false})),
        )
        .await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["isDefault"], true);
    let (st, _) = env
        .call(
            Method::DELETE,
            &format!("{RULES}/warden-blocked-ip-attacking"),
            &[],
            None,
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = env
        .call(Method::DELETE, &format!("{RULES}/{id}"), &[], None)
        .await;
    assert_eq!(st, 204);
    let (st, _) = env
        .call(Method::GET, &format!("{RULES}/{id}"), &[], None)
        .await;
    assert_eq!(st, 404);
    let (_, v) = env
        .call(Method::GET, RULES, &[("page[size]", "100")], None)
        .await;
    assert_eq!(v["meta"]["page"]["total_count"], 6);
    let disabled = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "warden-blocked-ip-attacking")
        .unwrap()
        .clone();
    assert_eq!(disabled["isEnabled"], false, "override persisted");
    // Keys: the API key alone is not enough.
    let r = env
        .http
        .get(format!("{}{RULES}", env.url()))
        .header("DD-API-KEY", &env.api)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

/// An attack scenario through the trace intake: 25 SQL injections from one IP on
/// staging/my-service (a high signal), a RASP match on prod (critical), credential
/// stuffing on staging/other-service (high), five attacks from another IP (medium).
async fn attack_scenario(env: &Env) {
    let mut spans: Vec<_> = (0..25)
        .map(|_| {
            attack_span(
                "my-service",
                "staging",
                "203.0.113.10",
                "sql_injection",
                false,
            )
        })
        .collect();
    spans.push(attack_span(
        "my-service",
        "prod",
        "203.0.113.11",
        "sql_injection",
        true,
    ));
    spans.extend((0..12).map(|i| {
        login_span(
            "other-service",
            "staging",
            "203.0.113.12",
            &format!("user{i}"),
            false,
        )
    }));
    spans
        .extend((0..5).map(|_| attack_span("my-service", "staging", "203.0.113.13", "lfi", false)));
    env.post_spans(spans).await;
}

fn ids(v: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = v
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_list_search_get_and_triage() {
    let env = Env::start();
    assert!(env.wait_signals("", 0, 0).await.is_empty());
    attack_scenario(&env).await;
    // warden-attack-from-ip x2, vulnerable-code-path, credential-stuffing, brute-force x0
    // (12 users, one failure each), account-takeover x0.
    let all = env.wait_signals("", 4, 10).await;
    assert_eq!(all.len(), 4, "{all:#?}");
    // Absorbed events are written coalesced (within 250 ms): wait for all 25.
    let t = std::time::Instant::now();
    let high = loop {
        let h = env
            .wait_signals("env:staging service:my-service status:high", 1, 0)
            .await;
        if h.len() == 1 && h[0]["attributes"]["attributes"]["workflow"]["events_matched"] == 25
            || t.elapsed() > std::time::Duration::from_secs(5)
        {
            break h;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(high.len(), 1);
    let s = &high[0];
    assert_eq!(s["type"], "signal");
    assert_eq!(
        s["attributes"]["attributes"]["workflow"]["rule"]["id"],
        "warden-attack-from-ip"
    );
    assert_eq!(
        s["attributes"]["attributes"]["workflow"]["events_matched"],
        25
    );
    assert_eq!(
        s["attributes"]["attributes"]["workflow"]["triage"]["state"],
        "open"
    );
    assert_eq!(
        s["attributes"]["attributes"]["http"]["client_ip"],
        "203.0.113.10"
    );
    assert!(
        s["attributes"]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("security:attack"))
    );
    let crit = env
        .wait_signals(
            "status:critical @appsec.security_activity:exploit_attempt.*",
            1,
            0,
        )
        .await;
    assert_eq!(crit.len(), 1);
    assert_eq!(crit[0]["attributes"]["env"], json!(["prod"]));
    let stuffing = env
        .wait_signals(
            "@workflow.rule.id:warden-credential-stuffing @http.client_ip:203.0.113.12",
            1,
            0,
        )
        .await;
    assert_eq!(stuffing.len(), 1);
    let or = env
        .wait_signals("status:critical OR (status:medium -service:nope)", 2, 0)
        .await;
    assert_eq!(or.len(), 2);
    assert!(env.wait_signals("env:qa", 0, 0).await.is_empty());

    // Search body, also POSTed to the list path.
    let body = json!({"filter": {"query": "status:high", "from": "now-1h", "to": "now"}, "page": {"limit": 25}, "sort": "timestamp"});
    let (st, a) = env
        .call(
            Method::POST,
            &format!("{SIGNALS}/search"),
            &[],
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, 200, "{a}");
    let (st, b) = env.call(Method::POST, SIGNALS, &[], Some(body)).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        ids(a["data"].as_array().unwrap()),
        ids(b["data"].as_array().unwrap())
    );
    assert_eq!(a["data"].as_array().unwrap().len(), 2);
    // Bad filters: 400 naming what is wrong.
    let (st, e) = env
        .call(
            Method::GET,
            SIGNALS,
            &[("filter[query]", "status:(high")],
            None,
        )
        .await;
    assert_eq!(st, 400);
    assert!(e["errors"][0].as_str().unwrap().contains("position"), "{e}");
    let (st, e) = env
        .call(Method::GET, SIGNALS, &[("filter[from]", "yesterday")], None)
        .await;
    assert_eq!(st, 400);
    assert!(
        e["errors"][0].as_str().unwrap().contains("filter[from]"),
        "{e}"
    );
    // ISO-8601 and epoch-ms bounds.
    let ts = s["attributes"]["timestamp"].as_str().unwrap();
    let (_, v) = env
        .call(
            Method::GET,
            SIGNALS,
            &[
                ("filter[from]", ts),
                ("filter[to]", ts),
                ("filter[query]", "status:high"),
            ],
            None,
        )
        .await;
    assert!(ids(v["data"].as_array().unwrap()).contains(&s["id"].as_str().unwrap().to_string()));
    let (_, v) = env
        .call(
            Method::GET,
            SIGNALS,
            &[("filter[from]", "4102444800000")],
            None,
        )
        .await;
    assert_eq!(v["data"], json!([]), "year 2100 and later: nothing");

    // Cursor paging: 4 signals, pages of 3 then 1, no overlap.
    let (_, p1) = env
        .call(
            Method::GET,
            SIGNALS,
            &[("page[limit]", "3"), ("sort", "timestamp")],
            None,
        )
        .await;
    let after = p1["meta"]["page"]["after"].as_str().unwrap().to_string();
    assert!(
        p1["links"]["next"]
            .as_str()
            .unwrap()
            .contains("page%5Bcursor%5D")
    );
    let (_, p2) = env
        .call(
            Method::GET,
            SIGNALS,
            &[
                ("page[limit]", "3"),
                ("sort", "timestamp"),
                ("page[cursor]", &after),
            ],
            None,
        )
        .await;
    assert_eq!(p2["data"].as_array().unwrap().len(), 1);
    assert!(p2["meta"]["page"].get("after").is_none());
    let mut both = ids(p1["data"].as_array().unwrap());
    both.extend(ids(p2["data"].as_array().unwrap()));
    both.sort();
    assert_eq!(both, ids(&all));

    // Single signal: attributes under `custom`.
    let id = s["id"].as_str().unwrap();
    let (st, one) = env
        .call(Method::GET, &format!("{SIGNALS}/{id}"), &[], None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(one["data"]["id"], id);
    assert_eq!(
        one["data"]["attributes"]["custom"]["workflow"]["rule"]["id"],
        "warden-attack-from-ip"
    );
    let (st, _) = env
        .call(Method::GET, &format!("{SIGNALS}/AQAAAnope"), &[], None)
        .await;
    assert_eq!(st, 404);

    // Triage: the recorded request shapes.
    let (st, t) = env
        .call(
            Method::PATCH,
            &format!("{SIGNALS}/{id}/state"),
            &[],
            Some(json!({"data": {"type": "signal_metadata", "attributes": {"archive_comment": "confirmed by actor via TOTP", "archive_reason": "false_positive", "state": "archived"}}})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["data"]["type"], "signal_metadata");
    assert_eq!(t["data"]["attributes"]["state"], "archived");
    assert_eq!(t["data"]["attributes"]["archive_reason"], "false_positive");
    assert_eq!(
        t["data"]["attributes"]["assignee"],
        json!({"id": -1, "name": "Unassigned", "uuid": ""})
    );
    assert_eq!(t["data"]["attributes"]["incident_ids"], json!([]));
    let (st, _) = env
        .call(
            Method::PATCH,
            &format!("{SIGNALS}/{id}/state"),
            &[],
            Some(json!({"data": {"attributes": {"archive_reason": "none", "state": "open"}}})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, e) = env
        .call(
            Method::PATCH,
            &format!("{SIGNALS}/{id}/state"),
            &[],
            Some(json!({"data": {"attributes": {"state": "closed"}}})),
        )
        .await;
    assert_eq!(st, 400);
    assert!(
        e["errors"][0]
            .as_str()
            .unwrap()
            .contains("data.attributes.state"),
        "{e}"
    );
    let (st, t) = env
        .call(
            Method::PATCH,
            &format!("{SIGNALS}/{id}/assignee"),
            &[],
            Some(json!({"data": {"attributes": {"assignee": {"uuid": "773b045d-ccf8-4808-bd3b-955ef6a8c940"}}}})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(
        t["data"]["attributes"]["assignee"]["uuid"],
        "773b045d-ccf8-4808-bd3b-955ef6a8c940"
    );
    let under = env
        .wait_signals("@workflow.triage.assignee.uuid:773b045d-*", 1, 0)
        .await;
    assert_eq!(ids(&under), vec![id.to_string()]);
    let (st, _) = env
        .call(
            Method::PATCH,
            &format!("{SIGNALS}/nope/state"),
            &[],
            Some(json!({"data": {"attributes": {"state": "open"}}})),
        )
        .await;
    assert_eq!(st, 404);
}

/// Runs a shell pipeline with URL, K and A set, returning trimmed stdout.
fn sh(env: &Env, script: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("URL", env.url())
        .env("K", &env.api)
        .env("A", &env.app)
        .env("CURL_CA_BUNDLE", env.server.ca_file())
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The two CI-gate forms of issue #6, verbatim (only the host comes from `$URL`; curl trusts
/// the server's CA through `CURL_CA_BUNDLE`).
const GATE_GET: &str = r#"curl -s "$URL/api/v2/security_monitoring/signals" -H "DD-API-KEY: $K" -H "DD-APPLICATION-KEY: $A" -G --data-urlencode "filter[query]=env:staging service:my-service status:high" --data-urlencode "filter[from]=now-1h" | jq '.data | length'"#;
const GATE_POST: &str = r#"curl -s "$URL/api/v2/security_monitoring/signals" -H "DD-API-KEY: $K" -H "DD-APPLICATION-KEY: $A" -d '{"filter": {"query": "env:staging", "from": "now-1h"}}' | jq '[.data[] | select(.attributes.status == "high")] | length'"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_gate_curl_jq_forms_count_true_signals() {
    for tool in ["curl", "jq"] {
        assert!(
            std::process::Command::new("which")
                .arg(tool)
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} not installed: run scripts/test-deps"
        );
    }
    let env = Env::start();
    assert_eq!(sh(&env, GATE_GET), "0");
    assert_eq!(sh(&env, GATE_POST), "0");
    attack_scenario(&env).await;
    env.wait_signals("", 4, 10).await;
    // The true counts: one high signal on staging/my-service; on staging, two high signals
    // (the SQL injections and the credential stuffing), the medium one not counted.
    let truth_get = env
        .wait_signals("env:staging service:my-service status:high", 0, 0)
        .await
        .len();
    let truth_post = env
        .wait_signals("env:staging", 0, 0)
        .await
        .iter()
        .filter(|s| s["attributes"]["status"] == "high")
        .count();
    assert_eq!((truth_get, truth_post), (1, 2));
    assert_eq!(sh(&env, GATE_GET), truth_get.to_string());
    assert_eq!(sh(&env, GATE_POST), truth_post.to_string());
}

fn warden(env: &Env, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(server_support::BIN)
        .arg("signals")
        .args(args)
        .args(["--url", &env.url()])
        .arg("--ca-file")
        .arg(env.server.ca_file())
        .env("DD_API_KEY", &env.api)
        .env("DD_APP_KEY", &env.app)
        .env_remove("WARDEN_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_shows_acknowledges_and_resolves() {
    let env = Env::start();
    let (ok, out, _) = warden(&env, &["list"]);
    assert!(ok);
    assert_eq!(out.trim(), "no signals");
    env.post_spans(
        (0..5)
            .map(|_| attack_span("cli-svc", "qa", "198.51.100.7", "xss", false))
            .collect(),
    )
    .await;
    let s = env.wait_signals("service:cli-svc", 1, 10).await;
    let id = s[0]["id"].as_str().unwrap().to_string();
    let (ok, out, err) = warden(&env, &["list", "--query", "env:qa"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&id) && out.contains("medium") && out.contains("open"),
        "{out}"
    );
    let (ok, out, err) = warden(&env, &["get", &id]);
    assert!(ok, "{err}");
    assert!(
        out.contains("warden-attack-from-ip") && out.contains("@http.client_ip:198.51.100.7"),
        "{out}"
    );
    let (ok, out, err) = warden(&env, &["ack", &id]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("{id}: under_review"));
    assert_eq!(
        env.wait_signals("@workflow.triage.state:under_review", 1, 0)
            .await
            .len(),
        1
    );
    let (ok, out, err) = warden(
        &env,
        &["resolve", &id, "--reason", "true_positive_malicious"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("{id}: archived"));
    let (ok, _, err) = warden(&env, &["ack", "AQAAAmissing"]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
    let (ok, _, err) = warden(&env, &["list", "--query", "status:(high"]);
    assert!(!ok);
    assert!(err.contains("position"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_a_4xx_naming_the_problem() {
    let env = Env::start();
    let get = |q: &'static [(&'static str, &'static str)]| env.call(Method::GET, SIGNALS, q, None);
    for (q, needle) in [
        (&[("page[limit]", "0")][..], "page[limit]"),
        (&[("page[limit]", "1001")][..], "page[limit]"),
        (&[("sort", "name")][..], "sort"),
        (&[("page[cursor]", "not-a-cursor")][..], "page[cursor]"),
        (&[("filter[to]", "now-1x")][..], "filter[to]"),
        (
            &[("filter[from]", "now"), ("filter[to]", "now-1h")][..],
            "filter[from]",
        ),
        (&[("filter[query]", "env:")][..], "position 4"),
        (&[("filter[query]", "\"unterminated")][..], "position 0"),
    ] {
        let (st, v) = get(q).await;
        assert_eq!(st, 400, "{q:?}: {v}");
        assert!(
            v["errors"][0].as_str().unwrap().contains(needle),
            "{q:?}: {v}"
        );
    }
    let long = "a".repeat(10_000);
    let (st, _) = env
        .call(
            Method::GET,
            SIGNALS,
            &[("filter[query]", long.as_str())],
            None,
        )
        .await;
    assert_eq!(st, 400);
    for (path, method, body) in [
        (format!("{SIGNALS}/search"), Method::POST, json!([])),
        (
            format!("{SIGNALS}/search"),
            Method::POST,
            json!({"filter": {"query": 5}}),
        ),
        (
            format!("{SIGNALS}/x/state"),
            Method::PATCH,
            json!({"data": []}),
        ),
        (
            format!("{SIGNALS}/x/state"),
            Method::PATCH,
            json!({"data": {"attributes": {"state": "archived", "archive_reason": "bored"}}}),
        ),
        (
            format!("{SIGNALS}/x/assignee"),
            Method::PATCH,
            json!({"data": {"attributes": {"assignee": 7}}}),
        ),
        (
            RULES.to_string(),
            Method::POST,
            json!({"name": 5, "queries": [], "cases": []}),
        ),
        (
            RULES.to_string(),
            Method::POST,
            json!({"name": "x", "queries": [{"query": "a:b", "aggregation": "median"}], "cases": [{"status": "high", "condition": "a > 1"}]}),
        ),
        (
            RULES.to_string(),
            Method::POST,
            json!({"name": "x", "queries": [{"query": "a:b"}], "cases": [{"status": "high", "condition": "a >"}]}),
        ),
        (
            RULES.to_string(),
            Method::POST,
            json!({"name": "x", "queries": [{"query": "a:b"}], "cases": [{"status": "high", "condition": "a > 1", "actions": [{"type": "nuke"}]}]}),
        ),
    ] {
        let (st, v) = env
            .call(method.clone(), &path, &[], Some(body.clone()))
            .await;
        assert_eq!(st, 400, "{method} {path} {body}: {v}");
        assert!(v["errors"][0].is_string(), "{v}");
    }
    // Not JSON at all.
    let r = env
        .http
        .post(format!("{}{SIGNALS}/search", env.url()))
        .header("DD-API-KEY", &env.api)
        .header("DD-APPLICATION-KEY", &env.app)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(!env.server.log_text().contains("panicked"));
}
