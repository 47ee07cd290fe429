//! Traces end to end over real sockets: tracer-format msgpack (v0.4 and v0.5) → the real
//! `warden agent` trace intake → forwarder (TLS, the server's CA) → the real `warden server`
//! trace intake → security events, read back through `GET /api/v2/spans/events`. Plus what
//! hostile payloads get from the agent and from the server, and that nothing a span carried
//! is stored in plaintext under the server's data directory.
#![allow(clippy::unwrap_used)]

mod traces_support;

use std::time::Duration;

use prost::Message;
use traces_support::*;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v04_and_v05_security_spans_become_sealed_security_events() {
    let stack = Stack::start();
    let mut agent = stack.agent("");
    let http = client();
    let tls = traces_support::client(&stack.server.ca_file());

    // The agent answers /info like the Datadog trace agent.
    let info: serde_json::Value = http
        .get(format!("{}/info", agent.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert!(
        info["endpoints"]
            .as_array()
            .unwrap()
            .contains(&"/v0.4/traces".into()),
        "{info}"
    );
    assert_eq!(info["client_drop_p0s"], false);
    assert_eq!(info["config"]["receiver_port"], agent.trace_port);

    // v0.4: an attack span (WAF triggers, blocked) with its child, and a benign trace.
    let attack_ip = "203.0.113.77";
    let triggers = r#"{"triggers":[{"rule":{"id":"crs-942-100","name":"SQL injection","tags":{"type":"sql_injection","category":"attack_attempt"}},"rule_matches":[{"operator":"is_sqli","operator_value":"","parameters":[{"address":"server.request.query","key_path":["q",0],"value":"needle-sqli' OR 1=1--","highlight":["s&sos"]}]}]}]}"#;
    let mut root = TestSpan::new(
        0xfeed_0000_0000_0001,
        101,
        &[
            ("appsec.event", "true"),
            ("_dd.appsec.json", triggers),
            ("http.client_ip", attack_ip),
            ("http.url", "http://shop.local/search?q=needle-url-v04"),
            ("http.method", "GET"),
            ("http.status_code", "403"),
            ("appsec.blocked", "true"),
            ("usr.id", "needle-user-v04"),
            ("env", "prod"),
        ],
    );
    root.resource = "GET /search".into();
    let mut child = TestSpan::new(root.trace_id, 102, &[("db.statement", "SELECT 1")]);
    child.parent_id = 101;
    child.name = "sqlite.query".into();
    let benign = TestSpan::new(
        0xbeef,
        201,
        &[("http.url", "http://shop.local/needle-benign")],
    );
    let r = http
        .put(format!("{}/v0.4/traces", agent.url()))
        .header("Content-Type", "application/msgpack")
        .header("X-Datadog-Trace-Count", "2")
        .header("Datadog-Meta-Lang", "rust")
        .header("Datadog-Meta-Tracer-Version", "test")
        .body(v04(&[vec![root, child], vec![benign]]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["rate_by_service"]["service:,env:"], 1, "{body}");

    // v0.5: a login failure (business-logic event, no WAF trigger).
    let login = TestSpan::new(
        0xabc,
        301,
        &[
            ("appsec.events.users.login.failure.track", "true"),
            (
                "appsec.events.users.login.failure.usr.id",
                "needle-user-v05",
            ),
            ("appsec.events.users.login.failure.usr.exists", "false"),
            ("network.client.ip", "198.51.100.23"),
            ("_dd.appsec.events.users.login.failure.sdk", "true"),
        ],
    );
    let r = http
        .post(format!("{}/v0.5/traces", agent.url()))
        .header("Content-Type", "application/msgpack")
        .body(v05(&[vec![login]]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let events = stack.wait_events(&tls, "", 30, |ev| ev.len() >= 2).await;
    assert_eq!(
        events.len(),
        2,
        "only the two security spans are kept: {events:#?}"
    );
    let attack = events
        .iter()
        .find(|e| e["span_id"] == "101")
        .expect("attack event");
    assert_eq!(attack["id"], format!("{}-101", 0xfeed_0000_0000_0001u64));
    assert_eq!(
        attack["activity"],
        serde_json::json!(["attack_attempt.sql_injection"])
    );
    assert_eq!(attack["client_ip"], attack_ip);
    assert_eq!(attack["usr_id"], "needle-user-v04");
    assert_eq!(attack["blocked"], true);
    assert_eq!(attack["http_status"], 403);
    assert_eq!(attack["env"], "prod");
    assert_eq!(attack["host"], "traces-test-host");
    assert_eq!(attack["service"], "shop");
    assert_eq!(
        attack["triggers"]["triggers"][0]["rule"]["id"],
        "crs-942-100"
    );
    let login = events
        .iter()
        .find(|e| e["span_id"] == "301")
        .expect("login event");
    assert_eq!(
        login["activity"],
        serde_json::json!(["business_logic.users.login.failure"])
    );
    assert_eq!(login["usr_id"], "needle-user-v05");
    assert_eq!(login["client_ip"], "198.51.100.23");
    assert_eq!(login["blocked"], false);

    // The search syntax narrows the list.
    let only = stack
        .events(
            &tls,
            "@appsec.security_activity:business_logic.users.login.*",
        )
        .await;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["span_id"], "301");

    // Another org sees nothing.
    let other_dir = stack.tmp.path().join("data");
    let other_api = create_key(&other_dir, "api", "other-org");
    let other_app = create_key(&other_dir, "app", "other-org");
    let r: serde_json::Value = tls
        .get(format!("{}/api/v2/spans/events", stack.server.url()))
        .query(&[("filter[from]", "now-1h")])
        .header("DD-API-KEY", &other_api)
        .header("DD-APPLICATION-KEY", &other_app)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(r["data"], serde_json::json!([]), "{r}");

    // A retried payload (the agent is at-least-once) does not duplicate events.
    let again = TestSpan::new(
        0xabc,
        301,
        &[("appsec.events.users.login.failure.track", "true")],
    );
    let r = http
        .put(format!("{}/v0.4/traces", agent.url()))
        .header("Content-Type", "application/msgpack")
        .body(v04(&[vec![again]]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.events(&tls, "").await.len(), 2);
    assert!(agent.alive());

    // Nothing the spans carried is in plaintext anywhere under the data directory.
    let data = stack.tmp.path().join("data");
    assert!(data.join("events.db").exists());
    let server = stack.server;
    assert!(server.stop().success());
    for needle in [
        "needle-user-v04",
        "needle-user-v05",
        "needle-url-v04",
        "needle-sqli",
        attack_ip,
        "198.51.100.23",
        "crs-942-100",
        "users.login.failure",
    ] {
        let hits = files_containing(&data, needle.as_bytes());
        assert!(hits.is_empty(), "{needle:?} in plaintext in {hits:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_get_4xx_from_agent_and_server_and_nothing_breaks() {
    let stack = Stack::start();
    let mut agent = stack.agent("  max_payload_size: 1048576\n");
    let http = client();
    let url = agent.url();
    let put = |path: &str, ct: &str, body: Vec<u8>| {
        http.put(format!("{url}{path}"))
            .header("Content-Type", ct)
            .body(body)
            .send()
    };
    let good = v04(&[vec![TestSpan::new(1, 2, &[("appsec.event", "true")])]]);
    let mp = "application/msgpack";

    // Truncated msgpack at several cut points.
    for cut in [1, good.len() / 3, good.len() - 1] {
        let r = put("/v0.4/traces", mp, good[..cut].to_vec()).await.unwrap();
        assert_eq!(r.status(), 400, "cut {cut}");
        let e = r.text().await.unwrap();
        assert!(e.contains("invalid msgpack trace payload"), "{e}");
    }
    // Wrong types: the error names the span and field.
    let mut m = Mp::default();
    m.array(1)
        .array(1)
        .map(1)
        .str("trace_id")
        .str("not-a-number");
    let r = put("/v0.4/traces", mp, m.0).await.unwrap();
    assert_eq!(r.status(), 400);
    let e = r.text().await.unwrap();
    assert!(e.contains("trace 0: span 0: field \\\"trace_id\\\""), "{e}");
    // v0.5 with a string index past its table.
    let mut m = Mp::default();
    m.array(2).array(1).str("");
    m.array(1).array(1).array(12);
    for _ in 0..9 {
        m.uint(0);
    }
    m.map(0).map(0).uint(99);
    let r = put("/v0.5/traces", mp, m.0).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("string index 99 out of range")
    );
    // A nesting bomb and an absurd announced length.
    let mut bomb = vec![0x91, 0x91, 0x81, 0xa1, b'x'];
    bomb.extend(std::iter::repeat_n(0x91u8, 200_000));
    assert_eq!(put("/v0.4/traces", mp, bomb).await.unwrap().status(), 400);
    assert_eq!(
        put("/v0.4/traces", mp, vec![0xdd, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap()
            .status(),
        400
    );
    // Bad JSON.
    let r = put(
        "/v0.4/traces",
        "application/json",
        b"[[{\"trace_id\": {}}]]".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    // Over max_payload_size (1 MiB here).
    let r = put("/v0.4/traces", mp, vec![0x90; 2 * 1024 * 1024])
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Wrong method, unknown path, compressed body, the quiet endpoints.
    let r = http.get(format!("{url}/v0.4/traces")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        http.get(format!("{url}/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = http
        .put(format!("{url}/v0.4/traces"))
        .header("Content-Encoding", "br")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        http.get(format!("{url}/v0.7/config"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = http
        .post(format!("{url}/telemetry/proxy/api/v2/apmtelemetry"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // JSON on /v0.3 works and answers like the Datadog agent.
    let r = http
        .put(format!("{url}/v0.3/traces"))
        .header("Content-Type", "application/json")
        .body(r#"[[{"trace_id": 5, "span_id": 6, "service": "s", "meta": {"a": "b"}}]]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "OK\n");
    // After all that the agent is alive and still takes good payloads.
    assert!(agent.alive(), "{}", agent.log_text());
    let r = put("/v0.4/traces", mp, good).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !agent.log_text().contains("panicked"),
        "{}",
        agent.log_text()
    );
    // `http` still holds an idle keep-alive connection, as tracers do between flushes: it
    // must not hold up the agent's shutdown.
    let (st, took) = agent.stop();
    assert!(st.success(), "{}", agent.log_text());
    eprintln!("agent stopped in {took:?} with an idle tracer connection open");
    assert!(took < Duration::from_millis(2500), "{took:?}");

    // The server's trace intake: auth, content type, garbage protobuf, decompression bomb.
    let tls = traces_support::client(&stack.server.ca_file());
    let surl = format!("{}/api/v0.2/traces", stack.server.url());
    let r = tls.post(&surl).body(vec![1, 2, 3]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = tls
        .post(&surl)
        .header("DD-API-KEY", &stack.api)
        .header("Content-Type", "application/x-protobuf")
        .body(vec![0x2a, 0xff, 0xff, 0xff, 0x0f, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("AgentPayload"));
    let r = tls
        .post(&surl)
        .header("DD-API-KEY", &stack.api)
        .header("Content-Type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let bomb = zstd::bulk::compress(&vec![0u8; 200 * 1024 * 1024], 3).unwrap();
    let r = tls
        .post(&surl)
        .header("DD-API-KEY", &stack.api)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "zstd")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A valid AgentPayload with a security span is accepted (202) directly as well.
    let mut span = warden_proto::trace::Span {
        trace_id: 77,
        span_id: 78,
        start: now_ms() * 1_000_000,
        ..Default::default()
    };
    span.meta.insert("appsec.event".into(), "true".into());
    let payload = warden_proto::trace::AgentPayload {
        host_name: "direct".into(),
        tracer_payloads: vec![warden_proto::trace::TracerPayload {
            chunks: vec![warden_proto::trace::TraceChunk {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = tls
        .post(&surl)
        .header("DD-API-KEY", &stack.api)
        .header("Content-Type", "application/x-protobuf")
        .body(payload.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let ev = stack
        .wait_events(&tls, "host:direct", 10, |e| !e.is_empty())
        .await;
    assert_eq!(ev[0]["id"], "77-78");
    // A security span older than the raw retention (457 days by default) is not stored.
    let mut old = payload.clone();
    let span = &mut old.tracer_payloads[0].chunks[0].spans[0];
    span.span_id = 79;
    span.start = (now_ms() - 500 * 86_400_000) * 1_000_000;
    let r = tls
        .post(&surl)
        .header("DD-API-KEY", &stack.api)
        .header("Content-Type", "application/x-protobuf")
        .body(old.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = tls
        .get(format!("{}/api/v2/spans/events", stack.server.url()))
        .query(&[("filter[from]", "0"), ("filter[query]", "host:direct")])
        .header("DD-API-KEY", &stack.api)
        .header("DD-APPLICATION-KEY", &stack.app)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(body.contains("77-78") && !body.contains("77-79"), "{body}");
    // Bad query parameters on the read side are 400s that say why.
    let r = tls
        .get(format!("{}/api/v2/spans/events", stack.server.url()))
        .query(&[("filter[from]", "yesterday")])
        .header("DD-API-KEY", &stack.api)
        .header("DD-APPLICATION-KEY", &stack.app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("filter[from]"));
    assert!(!stack.server.log_text().contains("panicked"));
}
