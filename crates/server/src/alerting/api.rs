//! The HTTP API: monitors (Datadog v1 shapes), channels (Datadog's webhooks integration shape,
//! PagerDuty services, Slack channels), escalation policies, alerts (acknowledge, resolve,
//! signed links) and the delivery log.
//!
//! Why channel secrets are write-only: routing keys, Slack URLs and webhook header values are
//! credentials to page people. The API takes them, seals them, and from then on shows masks:
//! an application key that can read the configuration cannot lift the credentials.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use rusqlite::Connection;
use serde_json::{Map, Value, json};
use warden_alerting::monitor::Thresholds;
use warden_alerting::payload::{Encoding, validate_template};
use warden_alerting::{Handle, HandleKind, Policy, Step};

use super::db::{self, AlertDoc};
use super::worker::{self, op_of};
use super::{App, Inner, Notification, Req, Resp, Source, Transition, iso_ms, now_ms};
use crate::{ApiError, QUERY, auth_app, json_response, percent_decode, query_param, read_body};

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(400, msg)
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(404, format!("{what} not found"))
}

/// Runs `f` with the database on a blocking thread.
async fn with_db<T: Send + 'static>(
    state: &App,
    f: impl FnOnce(&Inner, &mut Connection) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let inner = state.alerting.inner.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = inner.db.lock().unwrap_or_else(|p| p.into_inner());
        f(&inner, &mut c)
    })
    .await
    .map_err(|_| ApiError::new(500, "alerting task failed"))?
}

fn dberr(e: rusqlite::Error) -> ApiError {
    tracing::error!(error = %e, "alerting database");
    ApiError::new(503, "alerting database unavailable; retry later")
}

async fn body_json(req: Req) -> Result<Value, ApiError> {
    let raw = read_body(req, QUERY).await?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("request body is empty; expected a JSON object"));
    }
    let v: Value =
        serde_json::from_slice(&raw).map_err(|e| bad(format!("body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(bad("body must be a JSON object"));
    }
    Ok(v)
}

fn ok(v: Value) -> Resp {
    Ok(json_response(200, &v))
}

fn html(status: u16, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'"),
    );
    r.headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Ok(r)
}

pub(crate) async fn route(state: &App, req: Req) -> Resp {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().clone();
    // The signed link carries its own authority (no keys: it is clicked from a phone).
    if let Some(rest) = path.strip_prefix("/api/v2/warden/alerts/") {
        if let Some(key) = rest.strip_suffix("/ack") {
            return signed_ack(state, req, percent_decode(key)).await;
        }
    }
    let principal = auth_app(state, &req).await?;
    let org = principal.org;
    let segs: Vec<String> = path
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect::<Vec<_>>();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method.clone(), s.as_slice()) {
        // ---- monitors
        (Method::POST, ["api", "v1", "monitor"]) => {
            let body = body_json(req).await?;
            monitor_create(state, org, principal.key_id, body).await
        }
        (Method::GET, ["api", "v1", "monitor"]) => monitor_list(state, org, req.uri()).await,
        (Method::POST, ["api", "v1", "monitor", "validate"]) => {
            let body = body_json(req).await?;
            normalize_monitor(&body, None)?;
            ok(json!({}))
        }
        (Method::POST, ["api", "v1", "monitor", id, "validate"]) => {
            let id = monitor_id(id)?;
            let body = body_json(req).await?;
            let row = with_db(state, move |_, c| {
                db::monitor_get(c, org, id).map_err(dberr)
            })
            .await?
            .ok_or_else(|| not_found("Monitor"))?;
            normalize_monitor(&body, Some(&row.doc))?;
            ok(json!({}))
        }
        (Method::GET, ["api", "v1", "monitor", id]) => {
            let id = monitor_id(id)?;
            let groups = query_param(req.uri(), "group_states").is_some();
            monitor_get(state, org, id, groups).await
        }
        (Method::PUT, ["api", "v1", "monitor", id]) => {
            let id = monitor_id(id)?;
            let body = body_json(req).await?;
            monitor_update(state, org, id, body).await
        }
        (Method::DELETE, ["api", "v1", "monitor", id]) => {
            let id = monitor_id(id)?;
            let gone = with_db(state, move |_, c| {
                db::monitor_delete(c, org, id).map_err(dberr)
            })
            .await?;
            if !gone {
                return Err(not_found("Monitor"));
            }
            ok(json!({"deleted_monitor_id": id}))
        }
        // ---- webhooks (Datadog's integration API)
        (
            m,
            [
                "api",
                "v1",
                "integration",
                "webhooks",
                "configuration",
                "webhooks",
                rest @ ..,
            ],
        ) => webhooks(state, org, m, rest.first().copied(), req).await,
        // ---- PagerDuty services (Datadog's path and Warden's)
        (
            m,
            [
                "api",
                "v1",
                "integration",
                "pagerduty",
                "configuration",
                "services",
                rest @ ..,
            ],
        )
        | (
            m,
            [
                "api",
                "v2",
                "warden",
                "integrations",
                "pagerduty",
                "services",
                rest @ ..,
            ],
        ) => pagerduty(state, org, m, rest.first().copied(), req).await,
        (
            m,
            [
                "api",
                "v2",
                "warden",
                "integrations",
                "slack",
                "channels",
                rest @ ..,
            ],
        ) => slack(state, org, m, rest.first().copied(), req).await,
        // ---- escalation policies
        (m, ["api", "v2", "warden", "escalation_policies", rest @ ..]) => {
            policies(state, org, m, rest.first().copied(), req).await
        }
        // ---- alerts
        (Method::GET, ["api", "v2", "warden", "alerts"]) => {
            let list = with_db(state, move |_, c| {
                db::alert_list(c, Some(org)).map_err(dberr)
            })
            .await?;
            ok(json!({"data": list.iter().map(|(_, k, a)| alert_json(k, a)).collect::<Vec<_>>()}))
        }
        (Method::GET, ["api", "v2", "warden", "alerts", key]) => {
            let key = key.to_string();
            let k2 = key.clone();
            let a = with_db(state, move |_, c| db::alert_get(c, org, &k2).map_err(dberr))
                .await?
                .ok_or_else(|| not_found("Alert"))?;
            ok(alert_json(&key, &a))
        }
        (Method::POST, ["api", "v2", "warden", "alerts", key, action])
            if *action == "acknowledge" || *action == "resolve" =>
        {
            let t = if *action == "acknowledge" {
                Transition::Acknowledged
            } else {
                Transition::Resolved
            };
            let who = format!("api key {}", principal.key_id);
            let key = key.to_string();
            alert_action(state, org, key, t, who).await
        }
        // ---- delivery log
        (Method::GET, ["api", "v2", "warden", "notifications", "deliveries"]) => {
            let key = query_param(req.uri(), "dedup_key");
            let limit = query_param(req.uri(), "limit")
                .map(|l| {
                    l.parse::<usize>()
                        .map_err(|_| bad(format!("limit must be a number, got {l:?}")))
                })
                .transpose()?
                .unwrap_or(100)
                .clamp(1, 1000);
            let list = with_db(state, move |_, c| {
                db::delivery_list(c, org, key.as_deref(), limit).map_err(dberr)
            })
            .await?;
            ok(json!({"data": list}))
        }
        _ => Err(ApiError::new(
            if matches!(
                method,
                Method::GET | Method::POST | Method::PUT | Method::DELETE
            ) {
                404
            } else {
                405
            },
            format!("no route {method} {path}"),
        )),
    }
}

// ------------------------------------------------------------------ monitors

fn monitor_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| bad(format!("monitor id must be a positive integer, got {s:?}")))
}

fn opt_type(o: &Map<String, Value>, key: &str, want: &str) -> Result<(), ApiError> {
    let Some(v) = o.get(key) else { return Ok(()) };
    if v.is_null() {
        return Ok(());
    }
    let good = match want {
        "bool" => v.is_boolean(),
        "int" => v.as_i64().is_some_and(|i| i >= 0),
        "number" => v.as_f64().is_some(),
        "string" => v.is_string(),
        _ => true,
    };
    if good {
        Ok(())
    } else {
        let what = if want == "int" {
            "a non-negative integer"
        } else {
            want
        };
        Err(bad(format!("options.{key} must be {what}, got {v}")))
    }
}

/// Validates a create/update body (merged over `existing` for updates) and returns the stored
/// document. Every refusal names the field.
pub(super) fn normalize_monitor(body: &Value, existing: Option<&Value>) -> Result<Value, ApiError> {
    let mut doc = existing.cloned().unwrap_or_else(|| json!({}));
    let b = body
        .as_object()
        .ok_or_else(|| bad("body must be a JSON object"))?;
    for (k, v) in b {
        match k.as_str() {
            "type" | "query" | "name" | "message" | "tags" | "options" | "priority"
            | "restricted_roles" | "draft_status" => {
                doc[k] = v.clone();
            }
            // Read-only fields the client may echo back: ignored, like Datadog.
            _ => {}
        }
    }
    let t = doc["type"]
        .as_str()
        .ok_or_else(|| bad("missing required field \"type\""))?;
    if t != "metric alert" && t != "query alert" {
        return Err(bad(format!(
            "monitor type {t:?} is not supported: Warden evaluates metric monitors (\"metric alert\", \"query alert\")"
        )));
    }
    doc["type"] = "query alert".into();
    let q = doc["query"]
        .as_str()
        .ok_or_else(|| bad("missing required field \"query\""))?;
    let mq = warden_query::parse_monitor(q).map_err(|e| {
        bad(format!(
            "The value provided for parameter 'query' is invalid: {e}"
        ))
    })?;
    for f in ["name", "message"] {
        match &doc[f] {
            Value::Null => doc[f] = "".into(),
            Value::String(_) => {}
            other => return Err(bad(format!("{f} must be a string, got {other}"))),
        }
    }
    let name_len = doc["name"].as_str().map_or(0, str::len);
    if name_len > 1000 {
        return Err(bad("name is longer than 1000 characters"));
    }
    let message = doc["message"].as_str().unwrap_or_default().to_owned();
    if message.len() > 64 * 1024 {
        return Err(bad("message is longer than 65536 bytes"));
    }
    warden_alerting::template::validate(&message).map_err(bad)?;
    match &doc["tags"] {
        Value::Null => doc["tags"] = json!([]),
        Value::Array(a) if a.iter().all(Value::is_string) => {}
        other => {
            return Err(bad(format!(
                "tags must be an array of strings, got {other}"
            )));
        }
    }
    match &doc["priority"] {
        Value::Null => {}
        v if v.as_i64().is_some_and(|p| (1..=5).contains(&p)) => {}
        other => return Err(bad(format!("priority must be 1 to 5 or null, got {other}"))),
    }
    match &doc["restricted_roles"] {
        Value::Null => {}
        Value::Array(a) if a.iter().all(Value::is_string) => {}
        other => {
            return Err(bad(format!(
                "restricted_roles must be an array of strings or null, got {other}"
            )));
        }
    }
    if doc["options"].is_null() {
        doc["options"] = json!({});
    }
    let o = doc["options"]
        .as_object_mut()
        .ok_or_else(|| bad("options must be an object"))?;
    for (k, want) in [
        ("notify_no_data", "bool"),
        ("no_data_timeframe", "int"),
        ("renotify_interval", "int"),
        ("evaluation_delay", "int"),
        ("new_group_delay", "int"),
        ("new_host_delay", "int"),
        ("require_full_window", "bool"),
        ("include_tags", "bool"),
        ("notify_audit", "bool"),
        ("escalation_message", "string"),
        ("timeout_h", "int"),
    ] {
        opt_type(o, k, want)?;
    }
    if let Some(rs) = o.get("renotify_statuses").filter(|v| !v.is_null()) {
        let arr = rs
            .as_array()
            .ok_or_else(|| bad("options.renotify_statuses must be an array"))?;
        for s in arr {
            if !matches!(s.as_str(), Some("alert" | "warn" | "no data")) {
                return Err(bad(format!(
                    "options.renotify_statuses: {s} is not one of \"alert\", \"warn\", \"no data\""
                )));
            }
        }
    }
    if let Some(esc) = o.get("escalation_message").and_then(Value::as_str) {
        warden_alerting::template::validate(esc)
            .map_err(|e| bad(format!("options.escalation_message: {e}")))?;
    }
    for (k, v) in [
        ("notify_no_data", json!(false)),
        ("notify_audit", json!(false)),
        ("new_host_delay", json!(300)),
        ("include_tags", json!(true)),
        ("silenced", json!({})),
    ] {
        o.entry(k).or_insert(v);
    }
    let th = o.entry("thresholds").or_insert_with(|| json!({}));
    if th.is_null() {
        *th = json!({});
    }
    let th = th
        .as_object_mut()
        .ok_or_else(|| bad("options.thresholds must be an object"))?;
    for (k, v) in th.iter() {
        if !v.is_null() && v.as_f64().is_none() {
            return Err(bad(format!(
                "options.thresholds.{k} must be a number, got {v}"
            )));
        }
    }
    match th.get("critical").and_then(Value::as_f64) {
        Some(c) if c != mq.threshold => {
            return Err(bad(format!(
                "options.thresholds.critical ({c}) does not match the threshold in the query ({})",
                mq.threshold
            )));
        }
        Some(_) => {}
        None => {
            th.insert("critical".into(), json!(mq.threshold));
        }
    }
    let f = |k: &str| th.get(k).and_then(Value::as_f64);
    Thresholds {
        critical: mq.threshold,
        critical_recovery: f("critical_recovery"),
        warning: f("warning"),
        warning_recovery: f("warning_recovery"),
    }
    .validate(op_of(mq.comparator))
    .map_err(|e| bad(format!("options.thresholds: {e}")))?;
    Ok(doc)
}

fn overall(groups: &BTreeMap<String, warden_alerting::GroupState>) -> (String, Option<i64>) {
    if groups.is_empty() {
        return ("No Data".into(), None);
    }
    let mut s = warden_alerting::Status::Ok;
    let mut changed: Option<i64> = None;
    for g in groups.values() {
        s = s.worst(g.status);
        let last = [g.last_triggered_ts, g.last_resolved_ts, g.last_nodata_ts]
            .into_iter()
            .flatten()
            .max();
        changed = changed.max(last);
    }
    (s.as_str().into(), changed)
}

fn monitor_json(
    row: &db::MonitorRow,
    groups: &BTreeMap<String, warden_alerting::GroupState>,
    with_groups: bool,
) -> Value {
    let d = &row.doc;
    let multi = d["query"]
        .as_str()
        .and_then(|q| warden_query::parse_monitor(q).ok())
        .is_some_and(|m| m.expr.queries().iter().any(|q| !q.group_by.is_empty()));
    let (state, changed) = overall(groups);
    let creator_id = d["creator_key"].as_i64().unwrap_or(0);
    let mut v = json!({
        "id": row.id,
        "org_id": row.org,
        "type": d["type"],
        "name": d["name"],
        "message": d["message"],
        "tags": d["tags"],
        "query": d["query"],
        "options": d["options"],
        "multi": multi,
        "created_at": row.created_ms,
        "created": iso_ms(row.created_ms),
        "modified": iso_ms(row.modified_ms),
        "deleted": null,
        "restricted_roles": d["restricted_roles"],
        "priority": d["priority"],
        "draft_status": d["draft_status"].as_str().unwrap_or("published"),
        "overall_state_modified": changed.map(|t| iso_ms(t * 1000)),
        "overall_state": state,
        "creator": {
            "name": null,
            "handle": format!("key-{creator_id}"),
            "email": format!("key-{creator_id}@warden.invalid"),
            "id": creator_id,
        },
    });
    if with_groups {
        let mut gs = Map::new();
        for (name, g) in groups {
            let mut o = Map::new();
            o.insert("name".into(), name.clone().into());
            o.insert("status".into(), g.status.as_str().into());
            for (k, t) in [
                ("last_triggered_ts", g.last_triggered_ts),
                ("last_resolved_ts", g.last_resolved_ts),
                ("last_nodata_ts", g.last_nodata_ts),
                ("last_notified_ts", g.last_notified_ts),
            ] {
                if let Some(t) = t {
                    o.insert(k.into(), t.into());
                }
            }
            gs.insert(name.clone(), Value::Object(o));
        }
        v["state"] = json!({"groups": gs});
    }
    v
}

async fn monitor_create(state: &App, org: u64, key_id: i64, body: Value) -> Resp {
    let mut doc = normalize_monitor(&body, None)?;
    doc["creator_key"] = key_id.into();
    let row = with_db(state, move |_, c| {
        let now = now_ms();
        let id = db::monitor_insert(c, org, &doc, now).map_err(dberr)?;
        db::monitor_get(c, org, id)
            .map_err(dberr)?
            .ok_or_else(|| ApiError::new(500, "monitor vanished"))
    })
    .await?;
    tracing::info!(org, monitor = row.id, "monitor created");
    ok(monitor_json(&row, &BTreeMap::new(), false))
}

async fn monitor_get(state: &App, org: u64, id: i64, with_groups: bool) -> Resp {
    let (row, groups) = with_db(state, move |_, c| {
        let row = db::monitor_get(c, org, id)
            .map_err(dberr)?
            .ok_or_else(|| not_found("Monitor"))?;
        let g = db::groups_load(c, id).map_err(dberr)?;
        Ok((row, g))
    })
    .await?;
    ok(monitor_json(&row, &groups, with_groups))
}

async fn monitor_update(state: &App, org: u64, id: i64, body: Value) -> Resp {
    let (row, groups) = with_db(state, move |_, c| {
        let old = db::monitor_get(c, org, id)
            .map_err(dberr)?
            .ok_or_else(|| not_found("Monitor"))?;
        let creator = old.doc["creator_key"].clone();
        let mut doc = normalize_monitor(&body, Some(&old.doc))?;
        doc["creator_key"] = creator;
        db::monitor_update(c, org, id, &doc, now_ms()).map_err(dberr)?;
        let row = db::monitor_get(c, org, id)
            .map_err(dberr)?
            .ok_or_else(|| not_found("Monitor"))?;
        let g = db::groups_load(c, id).map_err(dberr)?;
        Ok((row, g))
    })
    .await?;
    ok(monitor_json(&row, &groups, false))
}

async fn monitor_list(state: &App, org: u64, uri: &hyper::Uri) -> Resp {
    let name = query_param(uri, "name").map(|n| n.to_lowercase());
    let want_tags: Vec<String> = query_param(uri, "monitor_tags")
        .map(|t| {
            t.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let num = |k: &str| -> Result<Option<usize>, ApiError> {
        query_param(uri, k)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad(format!("{k} must be a non-negative integer, got {v:?}")))
            })
            .transpose()
    };
    let page = num("page")?;
    let page_size = num("page_size")?.unwrap_or(100).clamp(1, 1000);
    let with_groups = query_param(uri, "group_states").is_some();
    let rows = with_db(state, move |_, c| {
        let rows = db::monitor_list(c, Some(org)).map_err(dberr)?;
        let mut out = Vec::new();
        for r in rows {
            let g = db::groups_load(c, r.id).map_err(dberr)?;
            out.push((r, g));
        }
        Ok(out)
    })
    .await?;
    let filtered: Vec<Value> = rows
        .iter()
        .filter(|(r, _)| {
            name.as_ref().is_none_or(|n| {
                r.doc["name"]
                    .as_str()
                    .is_some_and(|x| x.to_lowercase().contains(n))
            })
        })
        .filter(|(r, _)| {
            want_tags.iter().all(|t| {
                r.doc["tags"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == t))
            })
        })
        .map(|(r, g)| monitor_json(r, g, with_groups))
        .collect();
    let page_items: Vec<Value> = match page {
        Some(p) => filtered
            .into_iter()
            .skip(p * page_size)
            .take(page_size)
            .collect(),
        None => filtered,
    };
    ok(Value::Array(page_items))
}

// ------------------------------------------------------------------ channels

/// Outbound URLs: `https://`, or plain `http://` only to a loopback address (local receivers,
/// test fakes). Returns the parsed URL.
pub(super) fn check_url(field: &str, s: &str) -> Result<reqwest::Url, ApiError> {
    let u = reqwest::Url::parse(s.trim())
        .map_err(|e| bad(format!("{field} is not a valid URL: {e}")))?;
    if !super::outbound_url_ok(s) {
        return Err(bad(format!(
            "{field} must be an https:// URL (plain http:// only to a loopback address)"
        )));
    }
    Ok(u)
}

/// `https://hooks.slack.com/****`: scheme and host only.
fn mask_url(u: &reqwest::Url) -> String {
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{}{port}/****",
        u.scheme(),
        u.host_str().unwrap_or_default()
    )
}

fn check_name(field: &str, n: &str) -> Result<(), ApiError> {
    if n.is_empty()
        || n.len() > 100
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(format!(
            "{field} must be 1 to 100 characters of letters, digits, '-', '_' or '.', got {n:?}"
        )));
    }
    Ok(())
}

fn str_field<'a>(b: &'a Value, k: &str) -> Result<Option<&'a str>, ApiError> {
    match &b[k] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(bad(format!("{k} must be a string, got {other}"))),
    }
}

fn seal(
    inner: &Inner,
    org: u64,
    kind: &str,
    name: &str,
    secret: &Value,
) -> Result<Vec<u8>, ApiError> {
    inner
        .store
        .seal_record(
            &db::channel_aad(org, kind, name),
            secret.to_string().as_bytes(),
        )
        .map_err(|e| {
            tracing::error!(error = %e, "cannot seal a channel secret");
            ApiError::new(503, "cannot seal the channel configuration")
        })
}

/// How one channel kind is named in answers and errors.
struct ChannelNames {
    /// "use POST on the collection, PUT on a <item>".
    item: &'static str,
    /// "<what> not found".
    what: &'static str,
    /// The list answer: a bare array (Datadog's webhooks) or `{"<key>": [...]}`.
    list_key: Option<&'static str>,
}

enum ChannelOp {
    /// Answered: a list, a get or a delete.
    Done(Response<Full<Bytes>>),
    /// A write for the kind's own handler: POST on the collection (`None`) or PUT on the
    /// channel named in the path.
    Write(Option<String>),
}

/// What every channel kind shares: list, get and delete of the public (masked) documents,
/// and which method goes where. Writes differ per kind (fields, secrets) and stay with it.
async fn channel_common(
    state: &App,
    org: u64,
    kind: &'static str,
    m: Method,
    name: Option<&str>,
    names: ChannelNames,
) -> Result<ChannelOp, ApiError> {
    let name = name.map(str::to_owned);
    let answer = match (m, name) {
        (Method::GET, None) => {
            let rows = with_db(state, move |_, c| {
                db::channel_list(c, org, kind).map_err(dberr)
            })
            .await?;
            let list = Value::Array(rows.into_iter().map(|r| r.public).collect());
            match names.list_key {
                Some(k) => json!({ k: list }),
                None => list,
            }
        }
        (Method::GET, Some(n)) => {
            with_db(state, move |_, c| {
                db::channel_get(c, org, kind, &n).map_err(dberr)
            })
            .await?
            .ok_or_else(|| not_found(names.what))?
            .public
        }
        (Method::DELETE, Some(n)) => {
            let gone = with_db(state, move |_, c| {
                db::channel_delete(c, org, kind, &n).map_err(dberr)
            })
            .await?;
            if !gone {
                return Err(not_found(names.what));
            }
            json!({})
        }
        (m @ (Method::POST | Method::PUT), path_name) => {
            if (m == Method::POST) != path_name.is_none() {
                return Err(ApiError::new(
                    405,
                    format!("use POST on the collection, PUT on a {}", names.item),
                ));
            }
            return Ok(ChannelOp::Write(path_name));
        }
        _ => return Err(ApiError::new(405, "method not allowed")),
    };
    Ok(ChannelOp::Done(json_response(200, &answer)))
}

async fn webhooks(state: &App, org: u64, m: Method, name: Option<&str>, req: Req) -> Resp {
    const KIND: &str = "webhook";
    let names = ChannelNames {
        item: "webhook",
        what: "Webhook",
        list_key: None,
    };
    let path_name = match channel_common(state, org, KIND, m, name, names).await? {
        ChannelOp::Done(r) => return Ok(r),
        ChannelOp::Write(path_name) => path_name,
    };
    let body = body_json(req).await?;
    with_db(state, move |inner, c| {
        let old = match &path_name {
            Some(n) => Some(
                db::channel_get(c, org, KIND, n)
                    .map_err(dberr)?
                    .ok_or_else(|| not_found("Webhook"))?,
            ),
            None => None,
        };
        let old_secret = old.as_ref().map(|r| {
            inner
                .store
                .open_record(&db::channel_aad(org, KIND, &r.name), &r.sealed)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .unwrap_or(Value::Null)
        });
        let name = match (&path_name, str_field(&body, "name")?) {
            (Some(p), Some(b)) if p != b => {
                return Err(bad("name in the body differs from the webhook in the path"));
            }
            (Some(p), _) => p.clone(),
            (None, Some(b)) => b.to_owned(),
            (None, None) => return Err(bad("missing required field \"name\"")),
        };
        check_name("name", &name)?;
        if path_name.is_none()
            && db::channel_get(c, org, KIND, &name)
                .map_err(dberr)?
                .is_some()
        {
            return Err(ApiError::new(
                409,
                format!("webhook {name:?} already exists"),
            ));
        }
        let url = match (str_field(&body, "url")?, &old_secret) {
            (Some(u), _) => u.to_owned(),
            (None, Some(s)) => s["url"].as_str().unwrap_or_default().to_owned(),
            (None, None) => return Err(bad("missing required field \"url\"")),
        };
        let parsed = check_url("url", &url)?;
        let encode_as = match str_field(&body, "encode_as")? {
            Some(e @ ("json" | "form")) => e.to_owned(),
            Some(other) => {
                return Err(bad(format!(
                    "encode_as must be \"json\" or \"form\", got {other:?}"
                )));
            }
            None => old
                .as_ref()
                .and_then(|r| r.public["encode_as"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "json".into()),
        };
        let enc = if encode_as == "form" {
            Encoding::Form
        } else {
            Encoding::Json
        };
        let payload = if body.get("payload").is_some() {
            str_field(&body, "payload")?.map(str::to_owned)
        } else {
            old.as_ref()
                .and_then(|r| r.public["payload"].as_str().map(str::to_owned))
        };
        if let Some(p) = &payload {
            validate_template(p, enc).map_err(|e| bad(format!("payload: {e}")))?;
        }
        let headers: Value = if body.get("custom_headers").is_some() {
            match str_field(&body, "custom_headers")? {
                None => Value::Null,
                Some(h) if h.trim().is_empty() => Value::Null,
                Some(h) => {
                    let v: Value = serde_json::from_str(h).map_err(|e| {
                        bad(format!(
                            "custom_headers must be a JSON object in a string: {e}"
                        ))
                    })?;
                    let o = v.as_object().ok_or_else(|| {
                        bad("custom_headers must be a JSON object of header names to string values")
                    })?;
                    for (k, v) in o {
                        if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                            return Err(bad(format!(
                                "custom_headers: {k:?} is not a valid header name"
                            )));
                        }
                        let Some(s) = v.as_str() else {
                            return Err(bad(format!(
                                "custom_headers: the value of {k:?} must be a string"
                            )));
                        };
                        if HeaderValue::from_str(s).is_err() {
                            return Err(bad(format!(
                                "custom_headers: the value of {k:?} is not a valid header value"
                            )));
                        }
                    }
                    v
                }
            }
        } else {
            old_secret
                .as_ref()
                .map(|s| s["custom_headers"].clone())
                .unwrap_or(Value::Null)
        };
        let masked_headers = headers.as_object().map(|o| {
            let m: Map<String, Value> = o
                .keys()
                .map(|k| (k.clone(), Value::from("********")))
                .collect();
            Value::Object(m).to_string()
        });
        let public = json!({
            "name": name,
            "url": mask_url(&parsed),
            "payload": payload,
            "custom_headers": masked_headers,
            "encode_as": encode_as,
        });
        let secret = json!({"url": url, "custom_headers": headers});
        let sealed = seal(inner, org, KIND, &name, &secret)?;
        db::channel_put(c, org, KIND, &name, &public, &sealed, now_ms()).map_err(dberr)?;
        Ok(json_response(200, &public))
    })
    .await
}

async fn pagerduty(state: &App, org: u64, m: Method, name: Option<&str>, req: Req) -> Resp {
    const KIND: &str = "pagerduty";
    let names = ChannelNames {
        item: "service",
        what: "PagerDuty service",
        list_key: Some("services"),
    };
    let path_name = match channel_common(state, org, KIND, m, name, names).await? {
        ChannelOp::Done(r) => return Ok(r),
        ChannelOp::Write(path_name) => path_name,
    };
    let body = body_json(req).await?;
    let name = match (&path_name, str_field(&body, "service_name")?) {
        (Some(p), _) => p.clone(),
        (None, Some(b)) => b.to_owned(),
        (None, None) => return Err(bad("missing required field \"service_name\"")),
    };
    check_name("service_name", &name)?;
    let key = str_field(&body, "service_key")?
        .ok_or_else(|| bad("missing required field \"service_key\""))?
        .to_owned();
    if key.len() != 32 || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad(
            "service_key must be the service's 32-character Events API v2 integration (routing) key",
        ));
    }
    with_db(state, move |inner, c| {
        let public = json!({"service_name": name, "service_key": "*****"});
        let sealed = seal(inner, org, KIND, &name, &json!({"service_key": key}))?;
        db::channel_put(c, org, KIND, &name, &public, &sealed, now_ms()).map_err(dberr)?;
        Ok(json_response(200, &public))
    })
    .await
}

async fn slack(state: &App, org: u64, m: Method, name: Option<&str>, req: Req) -> Resp {
    const KIND: &str = "slack";
    let names = ChannelNames {
        item: "channel",
        what: "Slack channel",
        list_key: Some("channels"),
    };
    let path_name = match channel_common(state, org, KIND, m, name, names).await? {
        ChannelOp::Done(r) => return Ok(r),
        ChannelOp::Write(path_name) => path_name,
    };
    let body = body_json(req).await?;
    let name = match (&path_name, str_field(&body, "name")?) {
        (Some(p), _) => p.clone(),
        (None, Some(b)) => b.trim_start_matches('#').to_owned(),
        (None, None) => return Err(bad("missing required field \"name\"")),
    };
    check_name("name", &name)?;
    let url = str_field(&body, "url")?
        .ok_or_else(|| bad("missing required field \"url\" (the incoming-webhook URL)"))?
        .to_owned();
    let parsed = check_url("url", &url)?;
    with_db(state, move |inner, c| {
        let public = json!({"name": name, "url": mask_url(&parsed)});
        let sealed = seal(inner, org, KIND, &name, &json!({"url": url}))?;
        db::channel_put(c, org, KIND, &name, &public, &sealed, now_ms()).map_err(dberr)?;
        Ok(json_response(200, &public))
    })
    .await
}

// ------------------------------------------------------------------ escalation policies

fn policy_doc(body: &Value, path_name: Option<&str>) -> Result<(Value, bool), ApiError> {
    let name = match (path_name, str_field(body, "name")?) {
        (Some(p), Some(b)) if p != b => {
            return Err(bad("name in the body differs from the policy in the path"));
        }
        (Some(p), _) => p.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) => return Err(bad("missing required field \"name\"")),
    };
    check_name("name", &name)?;
    let steps = body["steps"]
        .as_array()
        .ok_or_else(|| bad("missing required field \"steps\" (an array)"))?;
    let mut out = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let delay = match (s.get("delay_seconds"), s.get("delay_minutes")) {
            (Some(v), _) if !v.is_null() => v
                .as_i64()
                .ok_or_else(|| bad(format!("steps[{i}].delay_seconds must be an integer")))?,
            (_, Some(v)) if !v.is_null() => v
                .as_i64()
                .and_then(|m| m.checked_mul(60))
                .ok_or_else(|| bad(format!("steps[{i}].delay_minutes must be an integer")))?,
            _ => {
                return Err(bad(format!(
                    "steps[{i}]: missing delay_minutes (or delay_seconds)"
                )));
            }
        };
        let targets = s["targets"]
            .as_array()
            .ok_or_else(|| bad(format!("steps[{i}].targets must be an array of handles")))?;
        let mut ts = Vec::new();
        for (j, t) in targets.iter().enumerate() {
            let h = t
                .as_str()
                .and_then(Handle::parse)
                .filter(|h| h.kind != HandleKind::Oncall)
                .ok_or_else(|| {
                    bad(format!(
                        "steps[{i}].targets[{j}]: {t} is not a @pagerduty-, @slack- or @webhook- handle"
                    ))
                })?;
            ts.push(h.to_string());
        }
        out.push(Step {
            delay_secs: delay,
            targets: ts,
        });
    }
    let repeat = match &body["repeat"] {
        Value::Null => 0,
        v => v
            .as_u64()
            .filter(|r| *r <= u32::MAX as u64)
            .ok_or_else(|| bad("repeat must be a non-negative integer"))? as u32,
    };
    let p = Policy {
        name: name.clone(),
        steps: out,
        repeat,
    };
    p.validate().map_err(bad)?;
    let default = match &body["default"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        other => return Err(bad(format!("default must be a boolean, got {other}"))),
    };
    let doc = json!({
        "name": p.name,
        "steps": p.steps.iter().map(|s| json!({"delay_seconds": s.delay_secs, "targets": s.targets})).collect::<Vec<_>>(),
        "repeat": p.repeat,
    });
    Ok((doc, default))
}

fn policy_json(doc: &Value, is_default: bool) -> Value {
    let mut v = doc.clone();
    v["default"] = is_default.into();
    v
}

async fn policies(state: &App, org: u64, m: Method, name: Option<&str>, req: Req) -> Resp {
    let name = name.map(str::to_owned);
    match (m, name) {
        (Method::GET, None) => {
            let list = with_db(state, move |_, c| db::policy_list(c, org).map_err(dberr)).await?;
            ok(
                json!({"data": list.iter().map(|(d, def)| policy_json(d, *def)).collect::<Vec<_>>()}),
            )
        }
        (Method::GET, Some(n)) => {
            let (d, def) = with_db(state, move |_, c| db::policy_get(c, org, &n).map_err(dberr))
                .await?
                .ok_or_else(|| not_found("Escalation policy"))?;
            ok(policy_json(&d, def))
        }
        (Method::DELETE, Some(n)) => {
            let gone = with_db(state, move |_, c| {
                db::policy_delete(c, org, &n).map_err(dberr)
            })
            .await?;
            if !gone {
                return Err(not_found("Escalation policy"));
            }
            ok(json!({}))
        }
        (m @ (Method::POST | Method::PUT), path_name) => {
            if (m == Method::POST) != path_name.is_none() {
                return Err(ApiError::new(
                    405,
                    "use POST on the collection, PUT on a policy",
                ));
            }
            let body = body_json(req).await?;
            let (doc, def) = policy_doc(&body, path_name.as_deref())?;
            with_db(state, move |_, c| {
                let name = doc["name"].as_str().unwrap_or_default().to_owned();
                let exists = db::policy_get(c, org, &name).map_err(dberr)?.is_some();
                if path_name.is_none() && exists {
                    return Err(ApiError::new(
                        409,
                        format!("escalation policy {name:?} already exists"),
                    ));
                }
                if path_name.is_some() && !exists {
                    return Err(not_found("Escalation policy"));
                }
                db::policy_put(c, org, &name, &doc, def).map_err(dberr)?;
                Ok(json_response(200, &policy_json(&doc, def)))
            })
            .await
        }
        _ => Err(ApiError::new(405, "method not allowed")),
    }
}

// ------------------------------------------------------------------ alerts

fn alert_json(key: &str, a: &AlertDoc) -> Value {
    json!({
        "dedup_key": key,
        "status": a.status,
        "source": a.source,
        "title": a.title,
        "severity": a.severity,
        "tags": a.tags,
        "policy": a.policy,
        "escalation": a.escalation.as_ref().map(|e| json!({
            "step": e.step + 1, "loops": e.loops,
            "next_escalation_at": e.next_at.map(|t| iso_ms(t * 1000)),
        })),
        "notified": a.notified,
        "cycle": a.cycle,
        "triggered_at": iso_ms(a.triggered_at * 1000),
        "acknowledged_at": a.acknowledged_at.map(|t| iso_ms(t * 1000)),
        "acknowledged_by": a.acknowledged_by,
        "resolved_at": a.resolved_at.map(|t| iso_ms(t * 1000)),
    })
}

/// Acknowledges or resolves an alert now (synchronously, so the answer shows the new state).
async fn alert_action(state: &App, org: u64, key: String, t: Transition, who: String) -> Resp {
    let k2 = key.clone();
    let inner = state.alerting.inner.clone();
    let (before, after) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let get = |k: &str| -> Result<AlertDoc, ApiError> {
            let c = inner.db.lock().unwrap_or_else(|p| p.into_inner());
            db::alert_get(&c, org, k)
                .map_err(dberr)?
                .ok_or_else(|| not_found("Alert"))
        };
        let a = get(&k2)?;
        let source = match a.source["type"].as_str() {
            Some("signal") => Source::Signal {
                id: a.source["id"].as_str().unwrap_or_default().to_owned(),
                rule_id: a.source["rule_id"].as_str().unwrap_or_default().to_owned(),
            },
            _ => Source::Monitor {
                id: a.source["id"].as_i64().unwrap_or(0),
                group: a.source["group"].as_str().unwrap_or("*").to_owned(),
            },
        };
        let mut vars = BTreeMap::new();
        vars.insert("ACKNOWLEDGED_BY".to_owned(), who.clone());
        let n = Notification {
            org,
            source,
            dedup_key: k2.clone(),
            transition: t,
            title: String::new(),
            message: String::new(),
            severity: a.severity.clone(),
            tags: a.tags.clone(),
            vars,
        };
        worker::process_now(&inner, &n).map_err(|e| ApiError::new(409, e))?;
        let after = get(&k2)?;
        Ok((a, after))
    })
    .await
    .map_err(|_| ApiError::new(500, "alerting task failed"))??;
    state.alerting.inner.wake.notify_one();
    if before.source["type"] == "signal" && before.status != after.status {
        // Triage follows the page: acknowledged → under review, resolved → archived. The
        // security module does not notify from `set_state`, so this cannot loop back here.
        let signal_id = before.source["id"].as_str().unwrap_or_default().to_owned();
        let triage = if t == Transition::Acknowledged {
            "under_review"
        } else {
            "archived"
        };
        let app = state.clone();
        let by = format!("alert {}", t.as_str());
        let r = tokio::task::spawn_blocking(move || {
            app.security.set_state(org, &signal_id, triage, &by)
        })
        .await;
        match r {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => tracing::warn!(org, key = %key, "alert's signal no longer exists"),
            Ok(Err(e)) => {
                tracing::warn!(org, key = %key, error = %e.message, "signal triage not updated")
            }
            Err(e) => tracing::error!(org, key = %key, error = %e, "signal triage task failed"),
        }
    }
    tracing::info!(org, key = %key, status = %after.status, "alert {}", t.as_str());
    ok(alert_json(&key, &after))
}

/// `GET /api/v2/warden/alerts/{key}/ack?org=&exp=&sig=` shows a confirmation page; `POST` to
/// the same URL acknowledges. A GET never changes anything, so link previews (Slack's
/// unfurler, mail scanners) cannot acknowledge a page nobody has read.
async fn signed_ack(state: &App, req: Req, key: String) -> Resp {
    let uri = req.uri().clone();
    let num = |k: &str| query_param(&uri, k).and_then(|v| v.parse::<i64>().ok());
    let (Some(org), Some(exp), Some(sig)) = (num("org"), num("exp"), query_param(&uri, "sig"))
    else {
        return Err(ApiError::new(403, "invalid acknowledgement link"));
    };
    let org = org as u64;
    let inner = &state.alerting.inner;
    if let Err(why) = inner.verify_link(org, &key, exp, &sig, now_ms() / 1000) {
        tracing::info!(org, key = %key, why, "acknowledgement link refused");
        return Err(ApiError::new(
            403,
            format!("invalid acknowledgement link: {why}"),
        ));
    }
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    match *req.method() {
        Method::GET => {
            let k2 = key.clone();
            let a = with_db(state, move |_, c| db::alert_get(c, org, &k2).map_err(dberr))
                .await?
                .ok_or_else(|| not_found("Alert"))?;
            let action = format!("?org={org}&exp={exp}&sig={}", esc(&sig));
            html(
                200,
                format!(
                    "<!doctype html><title>Acknowledge alert</title><h1>{}</h1><p>Status: {}</p>\
                     <form method=\"post\" action=\"{action}\"><button type=\"submit\">Acknowledge</button></form>",
                    esc(&a.title),
                    esc(&a.status)
                ),
            )
        }
        Method::POST => {
            let r = alert_action(
                state,
                org,
                key,
                Transition::Acknowledged,
                "signed link".into(),
            )
            .await?;
            let _ = r;
            html(
                200,
                "<!doctype html><title>Acknowledged</title><h1>Acknowledged</h1>".into(),
            )
        }
        _ => Err(ApiError::new(405, "method not allowed")),
    }
}
