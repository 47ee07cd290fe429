//! Stable JSON form of parsed messages, for `warden dogstatsd parse` and for test tables.
//!
//! Shapes (keys are emitted in sorted order by `serde_json`; every key is always present):
//!
//! ```text
//! {"kind":"metric", "name":str, "type":"count|gauge|histogram|timing|set|distribution",
//!  "values":[num...] (sets: [member]), "sample_rate":num, "tags":[str...] (as sent),
//!  "host":str|null (last host: tag), "timestamp":int|null,
//!  "local_data":str|null, "container_id":str|null, "inode":int|null (parsed from c:),
//!  "external_data":str|null, "cardinality":"none|low|orchestrator|high"|null}
//! {"kind":"event", "title":str, "text":str, "timestamp":int|null,
//!  "host":str|null (h:, else last host: tag), "aggregation_key":str|null,
//!  "priority":"normal|low", "source_type_name":str|null,
//!  "alert_type":"error|warning|info|success", "tags":[str...],
//!  "local_data", "container_id", "inode", "external_data", "cardinality" as for metrics}
//! {"kind":"service_check", "name":str, "status":0..3, "timestamp":int|null,
//!  "host":str|null (h:, else last host: tag), "tags":[str...], "message":str|null,
//!  "local_data", "container_id", "inode", "external_data", "cardinality" as for metrics}
//! ```
//!
//! Numbers that JSON cannot carry are strings: `"NaN"`, `"Inf"`, `"-Inf"`.

use serde_json::{Value, json};
use warden_model::{AlertType, Priority};

use crate::parse::{Cardinality, LocalData, Message, MetricValue, ParseError, Tags};

/// A float as JSON: a number when finite, else `"NaN"`, `"Inf"` or `"-Inf"`.
pub fn f64_to_json(v: f64) -> Value {
    if v.is_nan() {
        Value::from("NaN")
    } else if v == f64::INFINITY {
        Value::from("Inf")
    } else if v == f64::NEG_INFINITY {
        Value::from("-Inf")
    } else {
        json!(v)
    }
}

fn tags_json(tags: &Tags<'_>) -> Value {
    Value::Array(tags.iter().map(Value::from).collect())
}

fn card_json(c: Option<Cardinality>) -> Value {
    c.map_or(Value::Null, |c| Value::from(c.as_str()))
}

fn origin_fields(
    obj: &mut serde_json::Map<String, Value>,
    local: Option<&str>,
    external: Option<&str>,
    card: Option<Cardinality>,
) {
    let parsed = local.map(LocalData::parse).unwrap_or_default();
    obj.insert("local_data".into(), json!(local));
    obj.insert("container_id".into(), json!(parsed.container_id));
    obj.insert("inode".into(), json!(parsed.inode));
    obj.insert("external_data".into(), json!(external));
    obj.insert("cardinality".into(), card_json(card));
}

fn priority_str(p: Priority) -> &'static str {
    match p {
        Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

fn alert_str(a: AlertType) -> &'static str {
    match a {
        AlertType::Error => "error",
        AlertType::Warning => "warning",
        AlertType::Info => "info",
        AlertType::Success => "success",
    }
}

/// The documented JSON object for one message (see the module docs).
pub fn message_to_json(msg: &Message<'_>) -> Value {
    match msg {
        Message::Metric(m) => {
            let values = match m.value {
                MetricValue::Set(member) => vec![Value::from(member)],
                other => other.iter().map(f64_to_json).collect(),
            };
            let mut v = json!({
                "kind": "metric",
                "name": m.name,
                "type": m.metric_type.as_str(),
                "values": values,
                "sample_rate": f64_to_json(m.sample_rate),
                "tags": tags_json(&m.tags),
                "host": m.tags.host(),
                "timestamp": m.timestamp,
            });
            if let Some(obj) = v.as_object_mut() {
                origin_fields(obj, m.local_data, m.external_data, m.cardinality);
            }
            v
        }
        Message::Event(e) => {
            let mut v = json!({
                "kind": "event",
                "title": e.title,
                "text": e.text,
                "timestamp": e.timestamp,
                "host": e.hostname.or_else(|| e.tags.host()),
                "aggregation_key": e.aggregation_key,
                "priority": priority_str(e.priority),
                "source_type_name": e.source_type_name,
                "alert_type": alert_str(e.alert_type),
                "tags": tags_json(&e.tags),
            });
            if let Some(obj) = v.as_object_mut() {
                origin_fields(obj, e.local_data, e.external_data, e.cardinality);
            }
            v
        }
        Message::ServiceCheck(s) => {
            let mut v = json!({
                "kind": "service_check",
                "name": s.name,
                "status": s.status as u8,
                "timestamp": s.timestamp,
                "host": s.hostname.or_else(|| s.tags.host()),
                "tags": tags_json(&s.tags),
                "message": s.message,
            });
            if let Some(obj) = v.as_object_mut() {
                origin_fields(obj, s.local_data, s.external_data, s.cardinality);
            }
            v
        }
    }
}

/// `{"error": "<Display of the error>"}`, the CLI's form for rejected lines.
pub fn error_to_json(err: &ParseError) -> Value {
    json!({ "error": err.to_string() })
}

impl serde::Serialize for Message<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        message_to_json(self).serialize(s)
    }
}
