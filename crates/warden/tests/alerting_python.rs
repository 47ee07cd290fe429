//! The official Python `datadog-api-client` (2.62.0) `MonitorsApi` against the real
//! `warden server`, with only the host, the CA file and the keys changed: create (the captured
//! request body), get, list, update, validate (good and bad) and delete must deserialise.
#![allow(clippy::unwrap_used)]

mod alerting_support;
mod server_support;
mod support;

const SCRIPT: &str = r#"
import json, sys
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.v1.api.monitors_api import MonitorsApi
from datadog_api_client.v1.model.monitor import Monitor
from datadog_api_client.v1.model.monitor_type import MonitorType
from datadog_api_client.v1.model.monitor_options import MonitorOptions
from datadog_api_client.v1.model.monitor_thresholds import MonitorThresholds
from datadog_api_client.v1.model.monitor_renotify_status_type import MonitorRenotifyStatusType
from datadog_api_client.v1.model.monitor_update_request import MonitorUpdateRequest

url, ca, api_key, app_key = sys.argv[1:5]
cfg = Configuration(host=url)
cfg.ssl_ca_cert = ca
cfg.api_key["apiKeyAuth"] = api_key
cfg.api_key["appKeyAuth"] = app_key
out = {}
with ApiClient(cfg) as client:
    api = MonitorsApi(client)
    body = Monitor(
        message="{{#is_alert}}CPU is {{value}}% on {{host.name}} @pagerduty-Infra @slack-ops{{/is_alert}}\n{{#is_recovery}}Recovered @slack-ops{{/is_recovery}} @webhook-selfhosted",
        name="High CPU on {{host.name}}",
        options=MonitorOptions(
            escalation_message="Still firing @pagerduty-Infra", evaluation_delay=60, include_tags=True,
            no_data_timeframe=10, notify_no_data=True, renotify_interval=30,
            renotify_statuses=[MonitorRenotifyStatusType.ALERT, MonitorRenotifyStatusType.NO_DATA],
            require_full_window=False,
            thresholds=MonitorThresholds(critical=90.0, critical_recovery=85.0, warning=80.0)),
        priority=2, tags=["env:prod", "team:infra"],
        query="avg(last_5m):avg:system.cpu.user{env:prod} by {host} > 90",
        type=MonitorType.METRIC_ALERT)
    out["validate"] = api.validate_monitor(body=body)
    m = api.create_monitor(body=body)
    out["created"] = {"id": m.id, "type": str(m.type), "overall_state": str(m.overall_state),
                      "critical": m.options.thresholds.critical, "multi": m.multi,
                      "created_is_datetime": type(m.created).__name__}
    g = api.get_monitor(monitor_id=m.id)
    out["got"] = {"id": g.id, "name": g.name, "query": g.query, "tags": list(g.tags)}
    out["list"] = [x.id for x in api.list_monitors()]
    u = api.update_monitor(monitor_id=m.id, body=MonitorUpdateRequest(name="renamed", priority=3))
    out["updated"] = {"name": u.name, "priority": u.priority, "query": u.query}
    try:
        api.validate_monitor(body=Monitor(query="avg(last_5m):avg:cpu{*} >", type=MonitorType.METRIC_ALERT))
        out["bad_validate"] = None
    except ApiException as e:
        b = e.body
        out["bad_validate"] = {"status": e.status, "body": json.loads(b) if isinstance(b, (str, bytes)) else b}
    out["deleted"] = api.delete_monitor(monitor_id=m.id).deleted_monitor_id
    try:
        api.get_monitor(monitor_id=m.id)
        out["after_delete"] = None
    except ApiException as e:
        out["after_delete"] = e.status
print(json.dumps(out))
"#;

#[test]
fn official_python_client_monitors_api() {
    let python = support::python();
    let tmp = tempfile::tempdir().unwrap();
    let a = alerting_support::start(&tmp.path().join("d"), "http://127.0.0.1:9/enqueue");
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(a.server.url())
        .arg(a.server.ca_file())
        .arg(&a.api)
        .arg(&a.app)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.server.log_text()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["validate"], serde_json::json!({}), "{v}");
    let id = v["created"]["id"].as_i64().unwrap();
    assert_eq!(v["created"]["type"], "query alert", "{v}");
    assert_eq!(v["created"]["overall_state"], "No Data", "{v}");
    assert_eq!(v["created"]["critical"], 90.0);
    assert_eq!(v["created"]["multi"], true);
    assert_eq!(v["created"]["created_is_datetime"], "datetime");
    assert_eq!(v["got"]["id"], id);
    assert_eq!(
        v["got"]["tags"],
        serde_json::json!(["env:prod", "team:infra"])
    );
    assert_eq!(v["list"], serde_json::json!([id]));
    assert_eq!(v["updated"]["name"], "renamed");
    assert_eq!(v["updated"]["priority"], 3);
    assert_eq!(v["bad_validate"]["status"], 400, "{v}");
    assert!(
        v["bad_validate"]["body"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("query"),
        "{v}"
    );
    assert_eq!(v["deleted"], id);
    assert_eq!(v["after_delete"], 404);
}
