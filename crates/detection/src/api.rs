//! Signals in the JSON shapes of Datadog's v2 API (pure functions; the server does the HTTP).
//!
//! Why two shapes: the real API answers a list/search with the signal's attributes under
//! `attributes.attributes`, and `GET /signals/{id}` with the same object under
//! `attributes.custom` (the 2.62.0 Python client documents exactly that split). Searching uses
//! the list shape, so `@workflow.triage.state:open` and `@http.client_ip:...` mean the same
//! thing a Datadog user expects.

use serde_json::{Value, json};

use crate::engine::Signal;
use crate::search::{JsonDoc, Query};
use crate::time::format_iso;

/// Triage states accepted by `PATCH .../state`.
pub const STATES: [&str; 3] = ["open", "under_review", "archived"];
/// Archive reasons accepted by `PATCH .../state`.
pub const ARCHIVE_REASONS: [&str; 8] = [
    "none",
    "false_positive",
    "testing_or_maintenance",
    "remediated",
    "investigated_case_opened",
    "true_positive_benign",
    "true_positive_malicious",
    "other",
];

fn one_or_many(v: &[String]) -> Value {
    match v {
        [] => Value::Null,
        [one] => Value::String(one.clone()),
        many => json!(many),
    }
}

fn assignee(uuid: &str) -> Value {
    if uuid.is_empty() {
        json!({"name": "Unassigned", "id": -1, "uuid": ""})
    } else {
        json!({"uuid": uuid, "name": uuid, "handle": uuid})
    }
}

/// The nested attribute object (`attributes.attributes` in lists, `attributes.custom` alone).
pub fn inner_attributes(s: &Signal) -> Value {
    let mut entities: Vec<String> = s
        .group_by
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    if let Some(v) = &s.new_value {
        entities.push(format!("new_value:{v}"));
    }
    let mut triage = json!({
        "state": s.triage.state,
        "assignee": assignee(&s.triage.assignee),
        "incidentIds": [],
        "updater": {"handle": s.triage.updater, "name": ""},
        "creator": {"handle": "", "name": ""},
    });
    if let Some(o) = triage.as_object_mut() {
        if let Some(r) = &s.triage.archive_reason {
            o.insert("archiveReason".into(), json!(r));
        }
        if let Some(c) = &s.triage.archive_comment {
            o.insert("archiveComment".into(), json!(c));
        }
        if s.triage.state_update_ms > 0 {
            o.insert(
                "stateUpdateTimestamp".into(),
                json!(s.triage.state_update_ms),
            );
        }
    }
    let mut v = json!({
        "title": s.title,
        "status": s.status.as_str(),
        "service": s.services.first().cloned().unwrap_or_default(),
        "env": s.envs.first().cloned().unwrap_or_default(),
        "hostname": s.hosts.first().cloned().unwrap_or_default(),
        "entities": entities,
        "groupByPaths": s.group_by.keys().map(|k| k.trim_start_matches('@')).collect::<Vec<_>>(),
        "triggeringRuleCase": {"status": s.status.as_str(), "name": s.case_name, "condition": s.case_condition},
        "workflow": {
            "events_matched": s.events_matched,
            "first_seen": format_iso(s.first_seen_ms),
            "last_seen": format_iso(s.last_seen_ms),
            "rule": {
                "id": s.rule_id, "name": s.rule_name, "type": s.rule_type,
                "detectionMethod": s.detection_method, "version": s.rule_version,
                "isDefaultRule": s.is_default_rule,
            },
            "high_cardinality": {"attributes": [], "tags": []},
            "triage": triage,
        },
        "notifications": s.notifications,
        "samples": s.samples,
    });
    if let Some(o) = v.as_object_mut() {
        if !s.client_ips.is_empty() {
            o.insert(
                "http".into(),
                json!({"client_ip": one_or_many(&s.client_ips)}),
            );
            o.insert(
                "network".into(),
                json!({"client": {"ip": one_or_many(&s.client_ips)}}),
            );
        }
        if !s.users.is_empty() {
            o.insert("usr".into(), json!({"id": one_or_many(&s.users)}));
        }
        if !s.activities.is_empty() {
            o.insert(
                "appsec".into(),
                json!({"security_activity": one_or_many(&s.activities)}),
            );
        }
        if let Some(nv) = &s.new_value {
            o.insert("new_value".into(), json!(nv));
        }
    }
    v
}

/// Top-level reserved attributes (`status`, `service`, `env`, `host`).
fn top_attributes(s: &Signal) -> Value {
    let services = if s.services.is_empty() {
        vec![String::new()]
    } else {
        s.services.clone()
    };
    json!({
        "status": s.status.as_str(),
        "service": services,
        "env": s.envs,
        "host": s.hosts.first().cloned().unwrap_or_default(),
        "timestamp": format_iso(s.timestamp_ms),
        "tags": s.tags,
        "message": s.message,
    })
}

/// One element of `data` in a list or search response.
pub fn list_item(s: &Signal) -> Value {
    let mut a = top_attributes(s);
    if let Some(o) = a.as_object_mut() {
        o.insert("attributes".into(), inner_attributes(s));
    }
    json!({"type": "signal", "id": s.id, "attributes": a})
}

/// `GET /signals/{id}`: `{"data": ...}` with the attributes under `custom`.
pub fn single(s: &Signal) -> Value {
    let mut a = top_attributes(s);
    if let Some(o) = a.as_object_mut() {
        o.insert("custom".into(), inner_attributes(s));
    }
    json!({"data": {"type": "signal", "id": s.id, "attributes": a}})
}

/// The answer to a triage `PATCH` (`signal_metadata`).
pub fn triage_response(s: &Signal) -> Value {
    let t = &s.triage;
    let mut a = json!({
        "incident_ids": [],
        "assignee": assignee(&t.assignee),
        "state": t.state,
        "archive_reason": t.archive_reason.clone().unwrap_or_else(|| "none".into()),
        "state_update_timestamp": t.state_update_ms.max(0),
        "state_update_user": {"handle": t.updater, "uuid": "", "name": t.updater},
    });
    if let (Some(c), Some(o)) = (&t.archive_comment, a.as_object_mut()) {
        o.insert("archive_comment".into(), json!(c));
    }
    json!({"data": {"type": "signal_metadata", "id": s.id, "attributes": a}})
}

/// True when `q` matches the signal as the list shape presents it.
pub fn matches(q: &Query, s: &Signal) -> bool {
    let top = top_attributes(s);
    let inner = inner_attributes(s);
    let text = [s.title.as_str(), s.message.as_str()];
    let doc = JsonDoc {
        top: &top,
        attrs: &inner,
        tags: &s.tags,
        text: &text,
    };
    q.matches(&doc)
}
