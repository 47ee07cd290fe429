//! The official Python `datadog-api-client` (2.62.0, installed by `scripts/test-deps`) against
//! the real `warden server` over TLS, with only the host, the CA file and the keys changed:
//! `MetricsApi.submit_metrics` (v2) then `MetricsApi.query_metrics` (v1) must return exactly the
//! values submitted.
#![allow(clippy::unwrap_used)]

mod server_support;
mod support;

use server_support::*;

const SCRIPT: &str = r#"
import json, sys
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v1.api.authentication_api import AuthenticationApi
from datadog_api_client.v1.api.metrics_api import MetricsApi as MetricsApiV1
from datadog_api_client.v2.api.metrics_api import MetricsApi
from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
from datadog_api_client.v2.model.metric_payload import MetricPayload
from datadog_api_client.v2.model.metric_point import MetricPoint
from datadog_api_client.v2.model.metric_resource import MetricResource
from datadog_api_client.v2.model.metric_series import MetricSeries

url, ca, api_key, app_key, t0, values = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), json.loads(sys.argv[6])
cfg = Configuration(host=url)
cfg.ssl_ca_cert = ca
cfg.api_key["apiKeyAuth"] = api_key
cfg.api_key["appKeyAuth"] = app_key
out = {}
with ApiClient(cfg) as client:
    out["valid"] = AuthenticationApi(client).validate().valid
    body = MetricPayload(series=[MetricSeries(
        metric="pyclient.exact",
        type=MetricIntakeType.GAUGE,
        points=[MetricPoint(timestamp=t0 + 60 * i, value=v) for i, v in enumerate(values)],
        resources=[MetricResource(name="py-host", type="host")],
        tags=["env:py"],
    )])
    resp = MetricsApi(client).submit_metrics(body=body)
    out["submit_errors"] = list(resp.get("errors", []) or [])
    q = MetricsApiV1(client).query_metrics(
        _from=t0 - 60, to=t0 + 60 * len(values),
        query="avg:pyclient.exact{env:py} by {host}.rollup(avg, 60)")
    out["series"] = [
        {"scope": s.scope, "tag_set": list(s.tag_set), "pointlist": [[p.value[0], p.value[1]] for p in s.pointlist]}
        for s in q.series
    ]
print(json.dumps(out))
"#;

#[test]
fn official_python_client_submits_v2_and_queries_v1_exactly() {
    let python = support::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = ServerProc::start(&dir, free_tcp_port(), &[]);
    let api = create_key(&dir, "api", "default");
    let app = create_key(&dir, "app", "default");
    // Minute-aligned points in the recent past; values chosen to catch any rounding.
    let t0 = (now() - 600) / 60 * 60;
    let values = [0.1, 1234.5678, -3.25, 1e-9, 98765432.125];
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(server.url())
        .arg(server.ca_file())
        .arg(&api)
        .arg(&app)
        .arg(t0.to_string())
        .arg(serde_json::to_string(&values).unwrap())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["submit_errors"], serde_json::json!([]), "{v}");
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{v}");
    assert_eq!(series[0]["tag_set"], serde_json::json!(["host:py-host"]));
    let got: Vec<(i64, f64)> = series[0]["pointlist"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p[1].is_null())
        .map(|p| {
            (
                (p[0].as_f64().unwrap() / 1000.0) as i64,
                p[1].as_f64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (t0 + 60 * i as i64, *v))
        .collect();
    assert_eq!(got, want, "{v}");
    assert!(
        !server.log_text().contains(&api),
        "API key in the server log"
    );
}
