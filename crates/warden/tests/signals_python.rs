//! The official Python `datadog-api-client` (2.62.0, from `scripts/test-deps`) against the real
//! `warden server`, only the host, CA file and keys changed: `SecurityMonitoringApi` rules
//! list/create/get, signals list (also with the client's cursor pagination), search, get, and
//! triage state/assignee. The client deserializes every response into its typed models, so a
//! wrong type or enum in Warden's JSON fails here.
#![allow(clippy::unwrap_used)]

mod server_support;
mod signals_support;
mod support;

use signals_support::{Env, attack_span, login_span};

const SCRIPT: &str = r#"
import json, sys
from datetime import datetime, timedelta, timezone
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v2.api.security_monitoring_api import SecurityMonitoringApi
from datadog_api_client.v2.model.security_monitoring_signals_sort import SecurityMonitoringSignalsSort
from datadog_api_client.v2.model.security_monitoring_signal_list_request import SecurityMonitoringSignalListRequest
from datadog_api_client.v2.model.security_monitoring_signal_list_request_filter import SecurityMonitoringSignalListRequestFilter
from datadog_api_client.v2.model.security_monitoring_signal_list_request_page import SecurityMonitoringSignalListRequestPage
from datadog_api_client.v2.model.security_monitoring_signal_state_update_request import SecurityMonitoringSignalStateUpdateRequest
from datadog_api_client.v2.model.security_monitoring_signal_state_update_data import SecurityMonitoringSignalStateUpdateData
from datadog_api_client.v2.model.security_monitoring_signal_state_update_attributes import SecurityMonitoringSignalStateUpdateAttributes
from datadog_api_client.v2.model.security_monitoring_signal_state import SecurityMonitoringSignalState
from datadog_api_client.v2.model.security_monitoring_signal_archive_reason import SecurityMonitoringSignalArchiveReason
from datadog_api_client.v2.model.security_monitoring_signal_metadata_type import SecurityMonitoringSignalMetadataType
from datadog_api_client.v2.model.security_monitoring_signal_assignee_update_request import SecurityMonitoringSignalAssigneeUpdateRequest
from datadog_api_client.v2.model.security_monitoring_signal_assignee_update_data import SecurityMonitoringSignalAssigneeUpdateData
from datadog_api_client.v2.model.security_monitoring_signal_assignee_update_attributes import SecurityMonitoringSignalAssigneeUpdateAttributes
from datadog_api_client.v2.model.security_monitoring_triage_user import SecurityMonitoringTriageUser
from datadog_api_client.v2.model.security_monitoring_standard_rule_create_payload import SecurityMonitoringStandardRuleCreatePayload
from datadog_api_client.v2.model.security_monitoring_standard_rule_query import SecurityMonitoringStandardRuleQuery
from datadog_api_client.v2.model.security_monitoring_rule_query_aggregation import SecurityMonitoringRuleQueryAggregation
from datadog_api_client.v2.model.security_monitoring_rule_case_create import SecurityMonitoringRuleCaseCreate
from datadog_api_client.v2.model.security_monitoring_rule_severity import SecurityMonitoringRuleSeverity
from datadog_api_client.v2.model.security_monitoring_rule_options import SecurityMonitoringRuleOptions
from datadog_api_client.v2.model.security_monitoring_rule_evaluation_window import SecurityMonitoringRuleEvaluationWindow
from datadog_api_client.v2.model.security_monitoring_rule_keep_alive import SecurityMonitoringRuleKeepAlive
from datadog_api_client.v2.model.security_monitoring_rule_max_signal_duration import SecurityMonitoringRuleMaxSignalDuration
from datadog_api_client.v2.model.security_monitoring_rule_type_create import SecurityMonitoringRuleTypeCreate

url, ca, api_key, app_key = sys.argv[1:5]
cfg = Configuration(host=url)
cfg.ssl_ca_cert = ca
cfg.api_key["apiKeyAuth"] = api_key
cfg.api_key["appKeyAuth"] = app_key
out = {}
now = datetime.now(timezone.utc)
with ApiClient(cfg) as client:
    api = SecurityMonitoringApi(client)
    rules = api.list_security_monitoring_rules(page_size=100)
    out["rule_ids"] = sorted(r.id for r in rules.data)
    out["rules_total"] = rules.meta.page.total_count
    created = api.create_security_monitoring_rule(body=SecurityMonitoringStandardRuleCreatePayload(
        name="py rule", is_enabled=True, message="from python @slack-sec", tags=["team:py"],
        type=SecurityMonitoringRuleTypeCreate.APPLICATION_SECURITY,
        queries=[SecurityMonitoringStandardRuleQuery(query="@appsec.security_activity:attack_attempt.*",
            aggregation=SecurityMonitoringRuleQueryAggregation.COUNT, group_by_fields=["service"], distinct_fields=[])],
        cases=[SecurityMonitoringRuleCaseCreate(name="py", status=SecurityMonitoringRuleSeverity.LOW, condition="a > 2", notifications=[])],
        options=SecurityMonitoringRuleOptions(evaluation_window=SecurityMonitoringRuleEvaluationWindow.FIVE_MINUTES,
            keep_alive=SecurityMonitoringRuleKeepAlive.ONE_HOUR, max_signal_duration=SecurityMonitoringRuleMaxSignalDuration.ONE_DAY)))
    got = api.get_security_monitoring_rule(rule_id=created.id)
    out["created"] = {"id": created.id, "name": got.name, "is_default": got.is_default, "type": str(got.type),
                      "cases": len(got.cases), "query": got.queries[0].query}

    listed = api.list_security_monitoring_signals(filter_query="env:pystage status:high",
        filter_from=now - timedelta(hours=1), filter_to=now + timedelta(minutes=5),
        sort=SecurityMonitoringSignalsSort.TIMESTAMP_DESCENDING, page_limit=25)
    out["high"] = [{"id": s.id, "type": str(s.type), "status": s.attributes["status"],
                    "state": s.attributes.attributes["workflow"]["triage"]["state"],
                    "rule": s.attributes.attributes["workflow"]["rule"]["id"],
                    "ts": s.attributes.timestamp.isoformat()} for s in listed.data]
    paged = list(api.list_security_monitoring_signals_with_pagination(filter_query="env:pystage",
        filter_from=now - timedelta(hours=1), page_limit=2))
    out["paged_ids"] = sorted(s.id for s in paged)
    body = SecurityMonitoringSignalListRequest(
        filter=SecurityMonitoringSignalListRequestFilter(query="env:pystage", _from=now - timedelta(hours=1), to=now + timedelta(minutes=5)),
        page=SecurityMonitoringSignalListRequestPage(limit=25), sort=SecurityMonitoringSignalsSort.TIMESTAMP_ASCENDING)
    searched = api.search_security_monitoring_signals(body=body)
    out["searched_ids"] = sorted(s.id for s in searched.data)

    sid = out["high"][0]["id"]
    one = api.get_security_monitoring_signal(signal_id=sid)
    out["one"] = {"id": one.data.id, "rule": one.data.attributes.custom["workflow"]["rule"]["id"],
                  "tags": list(one.data.attributes.tags)}
    st = api.edit_security_monitoring_signal_state(signal_id=sid, body=SecurityMonitoringSignalStateUpdateRequest(
        data=SecurityMonitoringSignalStateUpdateData(type=SecurityMonitoringSignalMetadataType.SIGNAL_METADATA,
            attributes=SecurityMonitoringSignalStateUpdateAttributes(state=SecurityMonitoringSignalState.ARCHIVED,
                archive_reason=SecurityMonitoringSignalArchiveReason.FALSE_POSITIVE, archive_comment="confirmed by actor via TOTP"))))
    out["state"] = {"state": str(st.data.attributes.state), "reason": str(st.data.attributes.archive_reason),
                    "assignee_id": st.data.attributes.assignee.id, "type": str(st.data.type)}
    asg = api.edit_security_monitoring_signal_assignee(signal_id=sid, body=SecurityMonitoringSignalAssigneeUpdateRequest(
        data=SecurityMonitoringSignalAssigneeUpdateData(attributes=SecurityMonitoringSignalAssigneeUpdateAttributes(
            assignee=SecurityMonitoringTriageUser(uuid="773b045d-ccf8-4808-bd3b-955ef6a8c940")))))
    out["assignee"] = asg.data.attributes.assignee.uuid
    after = api.list_security_monitoring_signals(filter_query="@workflow.triage.state:archived", filter_from=now - timedelta(hours=1))
    out["archived_ids"] = [s.id for s in after.data]
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_security_monitoring_api() {
    let python = support::python();
    let env = Env::start();
    // One high signal (25 SQL injections), one medium (5 XSS), one high (credential stuffing).
    let mut spans: Vec<_> = (0..25)
        .map(|_| attack_span("py-svc", "pystage", "192.0.2.1", "sql_injection", false))
        .collect();
    spans.extend((0..5).map(|_| attack_span("py-svc", "pystage", "192.0.2.2", "xss", false)));
    spans.extend(
        (0..10).map(|i| login_span("py-login", "pystage", "192.0.2.3", &format!("u{i}"), false)),
    );
    env.post_spans(spans).await;
    let all = env.wait_signals("env:pystage", 3, 10).await;
    assert_eq!(all.len(), 3);
    let out = tokio::task::spawn_blocking({
        let (url, ca, api, app) = (
            env.url(),
            env.server.ca_file(),
            env.api.clone(),
            env.app.clone(),
        );
        move || {
            std::process::Command::new(python)
                .arg("-c")
                .arg(SCRIPT)
                .arg(url)
                .arg(ca)
                .arg(api)
                .arg(app)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.server.log_text()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rules_total"], 6, "{v}");
    assert!(
        v["rule_ids"]
            .as_array()
            .unwrap()
            .contains(&"warden-credential-stuffing".into())
    );
    assert_eq!(v["created"]["name"], "py rule");
    assert_eq!(v["created"]["is_default"], false);
    assert_eq!(v["created"]["type"], "application_security");
    assert_eq!(
        v["created"]["query"],
        "@appsec.security_activity:attack_attempt.*"
    );
    let high = v["high"].as_array().unwrap();
    assert_eq!(high.len(), 2, "{v}");
    for s in high {
        assert_eq!(s["type"], "signal");
        assert_eq!(s["status"], "high");
        assert_eq!(s["state"], "open");
    }
    let mut all_ids: Vec<String> = all
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    all_ids.sort();
    assert_eq!(
        v["paged_ids"],
        serde_json::json!(all_ids),
        "client pagination over 2-signal pages"
    );
    assert_eq!(v["searched_ids"], serde_json::json!(all_ids));
    assert_eq!(v["one"]["id"], high[0]["id"]);
    assert_eq!(v["state"]["state"], "archived");
    assert_eq!(v["state"]["reason"], "false_positive");
    assert_eq!(v["state"]["assignee_id"], -1);
    assert_eq!(v["state"]["type"], "signal_metadata");
    assert_eq!(v["assignee"], "773b045d-ccf8-4808-bd3b-955ef6a8c940");
    assert_eq!(v["archived_ids"], serde_json::json!([high[0]["id"]]));
    assert!(
        !env.server.log_text().contains(&env.app),
        "application key in the server log"
    );
}
