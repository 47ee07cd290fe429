//! The denylist and ruleset API of the real `warden server`: block / list / unblock IPs and
//! users with expiries (application key), the `rules_data` and ruleset documents agents pull
//! (API key), validation answered 4xx with the field at fault, org isolation, persistence
//! across a restart and no plaintext values on disk.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::path::Path;

use serde_json::{Value, json};
use server_support::*;

struct Api {
    c: reqwest::Client,
    url: String,
    api: String,
    app: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .c
            .request(method, format!("{}{path}", self.url))
            .header("DD-API-KEY", &self.api)
            .header("DD-APPLICATION-KEY", &self.app);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn block(&self, target: &str, value: &str, expires_at: Value) -> (u16, Value) {
        let body = json!({"data": {"type": "denylist_entry", "attributes": {
            "target": target, "value": value, "expires_at": expires_at, "reason": "test"}}});
        self.send(reqwest::Method::POST, "/api/v2/warden/denylist", Some(body))
            .await
    }

    async fn list(&self) -> Vec<(String, String, Value)> {
        let (s, v) = self
            .send(reqwest::Method::GET, "/api/v2/warden/denylist", None)
            .await;
        assert_eq!(s, 200, "{v}");
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let a = &e["attributes"];
                (
                    a["target"].as_str().unwrap().to_string(),
                    a["value"].as_str().unwrap().to_string(),
                    a["expires_at"].clone(),
                )
            })
            .collect()
    }

    /// What an agent pulls with only its API key.
    async fn rules_data(&self) -> Value {
        let r = self
            .c
            .get(format!("{}/api/v2/warden/appsec/rules_data", self.url))
            .header("DD-API-KEY", &self.api)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        serde_json::from_str(&r.text().await.unwrap()).unwrap()
    }
}

fn data_of<'a>(rd: &'a Value, id: &str) -> &'a Vec<Value> {
    rd["rules_data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap()["data"]
        .as_array()
        .unwrap()
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .map(|data| data.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denylist_and_ruleset_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_tcp_port();
    let server = ServerProc::start(&dir, port, &[]);
    let a = Api {
        c: client(&server.ca_file()),
        url: server.url(),
        api: create_key(&dir, "api", "default"),
        app: create_key(&dir, "app", "default"),
    };
    let later = now() + 3600;

    // Block an IP (with expiry), a network and a user (no expiry).
    let (s, v) = a.block("ip", "203.0.113.77", json!(later)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["data"]["attributes"]["value"], "203.0.113.77");
    assert_eq!(v["data"]["attributes"]["expires_at"], later);
    assert_eq!(a.block("ip", "198.51.100.0/24", Value::Null).await.0, 201);
    assert_eq!(a.block("user", "mallory-4711", Value::Null).await.0, 201);
    // Blocking again updates (200), does not duplicate.
    let (s, _) = a.block("ip", "203.0.113.77", json!(later + 60)).await;
    assert_eq!(s, 200);
    let l = a.list().await;
    assert_eq!(l.len(), 3, "{l:?}");
    assert!(l.contains(&("ip".into(), "203.0.113.77".into(), json!(later + 60))));

    // The agent's view: rules_data in the ASM_DATA format.
    let rd = a.rules_data().await;
    let ips = data_of(&rd, "blocked_ips");
    assert!(ips.contains(&json!({"value": "203.0.113.77", "expiration": later + 60})));
    assert!(ips.contains(&json!({"value": "198.51.100.0/24", "expiration": 0})));
    assert_eq!(
        data_of(&rd, "blocked_users"),
        &vec![json!({"value": "mallory-4711", "expiration": 0})]
    );
    assert_eq!(rd["rules_data"][0]["type"], "ip_with_expiration");
    assert_eq!(rd["rules_data"][1]["type"], "data_with_expiration");

    // Bad input: 4xx naming the problem.
    for (target, value, exp, want) in [
        ("ip", "not-an-ip", Value::Null, "not an IP"),
        ("ip", "0.0.0.0/0", Value::Null, "too broad"),
        ("ip", "10.0.0.0/40", Value::Null, "prefix"),
        ("host", "x", Value::Null, "target"),
        ("user", "", Value::Null, "empty"),
        ("ip", "1.2.3.4", json!(now() - 10), "future"),
        ("ip", "1.2.3.4", json!("tomorrow"), "expires_at"),
    ] {
        let (s, v) = a.block(target, value, exp).await;
        assert_eq!(s, 400, "{target} {value}: {v}");
        assert!(
            v["errors"][0].as_str().unwrap().contains(want),
            "{want}: {v}"
        );
    }
    let long = "u".repeat(300);
    assert_eq!(a.block("user", &long, Value::Null).await.0, 400);
    let (s, _) = a
        .send(
            reqwest::Method::POST,
            "/api/v2/warden/denylist",
            Some(json!([1])),
        )
        .await;
    assert_eq!(s, 400);

    // Authentication: the list needs the application key; rules_data the API key.
    let r =
        a.c.get(format!("{}/api/v2/warden/denylist", a.url))
            .header("DD-API-KEY", &a.api)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r =
        a.c.get(format!("{}/api/v2/warden/appsec/rules_data", a.url))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Another org sees nothing of this one.
    let other = Api {
        c: a.c.clone(),
        url: a.url.clone(),
        api: create_key(&dir, "api", "other"),
        app: create_key(&dir, "app", "other"),
    };
    assert!(other.list().await.is_empty());
    assert!(data_of(&other.rules_data().await, "blocked_ips").is_empty());

    // Unblock (a network's `/` may be raw or %2F); unknown → 404.
    let (s, _) = a
        .send(
            reqwest::Method::DELETE,
            "/api/v2/warden/denylist/ip/198.51.100.0%2F24",
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, v) = a
        .send(
            reqwest::Method::DELETE,
            "/api/v2/warden/denylist/ip/198.51.100.0/24",
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = a
        .send(
            reqwest::Method::DELETE,
            "/api/v2/warden/denylist/user/mallory-4711",
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(a.list().await.len(), 1);

    // Ruleset: none → 204 for agents; an upload loading no rule is refused with diagnostics;
    // a good one is served back to agents.
    let get_ruleset = || async {
        let r =
            a.c.get(format!("{}/api/v2/warden/appsec/ruleset", a.url))
                .header("DD-API-KEY", &a.api)
                .send()
                .await
                .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(get_ruleset().await.0, 204);
    let bad = json!({"version": "2.2", "rules": [{"id": "r1", "conditions": "nope"}]});
    let (s, v) = a
        .send(
            reqwest::Method::PUT,
            "/api/v2/warden/appsec/ruleset",
            Some(bad),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("cannot be loaded"),
        "{v}"
    );
    // Something loads (an action), but no rule: refused, with the engine's diagnostics.
    let no_rule = json!({"version": "2.2",
        "rules": [{"id": "r1", "conditions": "nope"}],
        "actions": [{"id": "a1", "type": "block_request",
                     "parameters": {"status_code": 403, "type": "auto"}}]});
    let (s, v) = a
        .send(
            reqwest::Method::PUT,
            "/api/v2/warden/appsec/ruleset",
            Some(no_rule),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("no rule"), "{v}");
    assert_eq!(v["diagnostics"]["rules"]["failed"][0], "r1", "{v}");
    let (s, _) = a
        .send(
            reqwest::Method::PUT,
            "/api/v2/warden/appsec/ruleset",
            Some(json!([])),
        )
        .await;
    assert_eq!(s, 400);
    let good = json!({"version": "2.2", "metadata": {"rules_version": "custom-7"}, "rules": [{
        "id": "custom-001", "name": "canary", "tags": {"type": "canary", "category": "attack_attempt"},
        "conditions": [{"operator": "phrase_match", "parameters": {
            "inputs": [{"address": "server.request.query"}], "list": ["canary-4711"]}}]}]});
    let (s, v) = a
        .send(
            reqwest::Method::PUT,
            "/api/v2/warden/appsec/ruleset",
            Some(good.clone()),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["attributes"]["rules_loaded"], 1);
    assert_eq!(v["data"]["attributes"]["rules_version"], "custom-7");
    let (s, text) = get_ruleset().await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), good);

    // Sealed at rest: neither the values nor the ruleset are readable on disk.
    drop(server);
    for needle in [&b"203.0.113.77"[..], b"mallory-4711", b"canary-4711"] {
        let hits = files_containing(&dir, needle);
        assert!(
            hits.is_empty(),
            "{:?} in plaintext in {hits:?}",
            String::from_utf8_lossy(needle)
        );
    }

    // Survives a restart.
    let server = ServerProc::start(&dir, port, &[]);
    let a = Api {
        url: server.url(),
        ..a
    };
    assert_eq!(
        a.list().await,
        vec![(
            "ip".to_string(),
            "203.0.113.77".to_string(),
            json!(later + 60)
        )]
    );
    let (s, _) = a
        .send(
            reqwest::Method::DELETE,
            "/api/v2/warden/appsec/ruleset",
            None,
        )
        .await;
    assert_eq!(s, 204);
    let r =
        a.c.get(format!("{}/api/v2/warden/appsec/ruleset", a.url))
            .header("DD-API-KEY", &a.api)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 204);
}
