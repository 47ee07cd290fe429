//! The bodies sent to PagerDuty (Events API v2), Slack (incoming webhooks) and webhooks
//! (Datadog's `$VARIABLE` templates).
//!
//! Why substitution escapes per encoding: a webhook template is JSON with `"$EVENT_MSG"` inside
//! string literals, and messages contain quotes and newlines; each value is JSON-escaped (no
//! surrounding quotes) before it is put in, so the result is always the JSON the template
//! author wrote, whatever the message says.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// PagerDuty's `payload.summary` limit.
pub const PD_SUMMARY_MAX: usize = 1024;
/// PagerDuty's `dedup_key` limit.
pub const PD_DEDUP_MAX: usize = 255;

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `trigger`, `acknowledge` or `resolve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdAction {
    Trigger,
    Acknowledge,
    Resolve,
}

impl PdAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PdAction::Trigger => "trigger",
            PdAction::Acknowledge => "acknowledge",
            PdAction::Resolve => "resolve",
        }
    }
}

/// Maps a Warden severity (monitor `alert`/`warn`/`no data`, signal `critical`…`info`) to
/// PagerDuty's `critical|error|warning|info`.
pub fn pd_severity(sev: &str) -> &'static str {
    match sev.to_ascii_lowercase().as_str() {
        "critical" | "alert" => "critical",
        "high" | "error" | "no data" => "error",
        "medium" | "warn" | "warning" => "warning",
        _ => "info",
    }
}

/// What a PagerDuty trigger says.
#[derive(Clone, Debug, Default)]
pub struct PdTrigger {
    pub summary: String,
    pub source: String,
    pub severity: String,
    pub timestamp: i64,
    pub component: Option<String>,
    pub group: Option<String>,
    pub class: Option<String>,
    pub custom_details: Value,
    /// (href, text).
    pub links: Vec<(String, String)>,
}

/// An Events API v2 body. `trigger` is required for [`PdAction::Trigger`] and ignored
/// otherwise (follow-up events carry only the key and action).
pub fn pagerduty_event(
    routing_key: &str,
    action: PdAction,
    dedup_key: &str,
    trigger: Option<&PdTrigger>,
) -> Value {
    let mut ev = json!({
        "routing_key": routing_key,
        "event_action": action.as_str(),
        "dedup_key": truncate(dedup_key, PD_DEDUP_MAX),
    });
    if let (PdAction::Trigger, Some(t), Some(obj)) = (action, trigger, ev.as_object_mut()) {
        let summary = if t.summary.trim().is_empty() {
            "Warden alert"
        } else {
            truncate(&t.summary, PD_SUMMARY_MAX)
        };
        let source = if t.source.trim().is_empty() {
            "warden"
        } else {
            &t.source
        };
        let mut p = Map::new();
        p.insert("summary".into(), summary.into());
        p.insert("source".into(), source.into());
        p.insert("severity".into(), pd_severity(&t.severity).into());
        p.insert(
            "timestamp".into(),
            crate::time::pagerduty(t.timestamp).into(),
        );
        for (k, v) in [
            ("component", &t.component),
            ("group", &t.group),
            ("class", &t.class),
        ] {
            if let Some(v) = v {
                p.insert(k.into(), v.clone().into());
            }
        }
        if !t.custom_details.is_null() {
            p.insert("custom_details".into(), t.custom_details.clone());
        }
        obj.insert("payload".into(), Value::Object(p));
        obj.insert("client".into(), "Warden".into());
        if !t.links.is_empty() {
            obj.insert(
                "links".into(),
                t.links
                    .iter()
                    .map(|(href, text)| json!({"href": href, "text": text}))
                    .collect(),
            );
        }
    }
    ev
}

/// Escapes Slack mrkdwn control characters (`&`, `<`, `>`).
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack's limit on a section's text.
const SLACK_SECTION_MAX: usize = 3000;

/// An incoming-webhook body: `text` (the fallback shown in notifications) and Block Kit
/// `blocks`: a section with the title and message, a context line, and an Acknowledge link
/// button when `ack_link` is given.
pub fn slack_message(title: &str, message: &str, context: &str, ack_link: Option<&str>) -> Value {
    let text = format!("{title}\n{message}");
    let section = format!("*{}*\n{}", slack_escape(title), slack_escape(message));
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&section, SLACK_SECTION_MAX)}}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(&slack_escape(context), SLACK_SECTION_MAX)}]}),
    ];
    if let Some(link) = ack_link {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button", "action_id": "warden_ack", "style": "primary",
            "text": {"type": "plain_text", "text": "Acknowledge"}, "url": link
        }]}));
    }
    json!({"text": truncate(&text, 40_000), "blocks": blocks})
}

/// Datadog's default webhook payload (used when `payload` is null).
pub const DEFAULT_WEBHOOK_PAYLOAD: &str = r#"{"body":"$EVENT_MSG","last_updated":"$LAST_UPDATED","event_type":"$EVENT_TYPE","title":"$EVENT_TITLE","date":"$DATE","org":{"id":"$ORG_ID","name":"$ORG_NAME"},"id":"$ID"}"#;

fn json_escape(s: &str) -> String {
    let q = Value::String(s.to_owned()).to_string();
    q[1..q.len() - 1].to_owned()
}

/// Substitutes `$VARIABLE`s (and `$TAGS[key]`) in `template`. The longest known name wins
/// (`$ALERT_ID_x` is `$ALERT_ID` then `_x`); unknown `$NAMES` stay as written.
///
/// With `json`, the template is read as JSON text: inside a string literal a value is
/// JSON-escaped (`"$EVENT_MSG"`); outside one it goes in as is when it is itself JSON (`$DATE`,
/// `$SECURITY_SIGNAL_ATTRIBUTES`) and as a quoted string otherwise, so the result is JSON
/// whenever the template is.
pub fn substitute(template: &str, vars: &BTreeMap<String, String>, json: bool) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = template;
    loop {
        // Next '$', tracking JSON string state over the text before it.
        let Some(i) = rest.find('$') else {
            out.push_str(rest);
            return out;
        };
        for c in rest[..i].chars() {
            if escaped {
                escaped = false;
            } else if in_string && c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = !in_string;
            }
        }
        out.push_str(&rest[..i]);
        escaped = false;
        let after = &rest[i + 1..];
        let run = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let mut found = None;
        // `$TAGS[key]`.
        if after.starts_with("TAGS[") {
            // A tag key has no quotes, backslashes or spaces: `$TAGS[a": "b]` is not one (it
            // would swallow the string's closing quote).
            if let Some(close) = after.find(']').filter(|&c| {
                !after[5..c].contains(|ch: char| ch == '"' || ch == '\\' || ch.is_whitespace())
            }) {
                let key = &after[5..close];
                let tags = vars.get("TAGS").map(String::as_str).unwrap_or("");
                let val = tags
                    .split(',')
                    .filter_map(|t| t.split_once(':'))
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_owned())
                    .unwrap_or_default();
                found = Some((close + 1, val));
            }
        }
        if found.is_none() {
            for n in (1..=run).rev() {
                if let Some(v) = vars.get(&after[..n]) {
                    found = Some((n, v.clone()));
                    break;
                }
            }
        }
        match found {
            Some((n, v)) => {
                if !json {
                    out.push_str(&v);
                } else if in_string {
                    out.push_str(&json_escape(&v));
                } else if !v.trim().is_empty() && serde_json::from_str::<Value>(&v).is_ok() {
                    out.push_str(&v);
                } else {
                    out.push_str(&Value::String(v).to_string());
                }
                rest = &after[n..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
}

/// How a webhook body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Form,
}

/// Percent-encodes for `application/x-www-form-urlencoded`.
pub fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Renders a webhook body: (content type, bytes). In form mode the rendered template must be
/// a JSON object; each top-level key becomes a form field (strings as they are, other values
/// as JSON).
pub fn webhook_body(
    template: Option<&str>,
    vars: &BTreeMap<String, String>,
    enc: Encoding,
) -> Result<(&'static str, String), String> {
    let t = template.unwrap_or(DEFAULT_WEBHOOK_PAYLOAD);
    match enc {
        Encoding::Json => Ok(("application/json", substitute(t, vars, true))),
        Encoding::Form => {
            let rendered = substitute(t, vars, true);
            let v: Value = serde_json::from_str(&rendered)
                .map_err(|e| format!("payload is not JSON after substitution: {e}"))?;
            let Value::Object(m) = v else {
                return Err("a form-encoded payload must be a JSON object".into());
            };
            let body = m
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    format!("{}={}", form_escape(k), form_escape(&v))
                })
                .collect::<Vec<_>>()
                .join("&");
            Ok(("application/x-www-form-urlencoded", body))
        }
    }
}

/// Checks a payload template: with every `$VARIABLE` replaced by a value full of quotes and
/// backslashes (or a number for the numeric ones), it must still be JSON (and an object for
/// form encoding); and again with every value a JSON number, since a value that is itself
/// JSON goes in unquoted outside a string (`{$EVENT_MSG: 1}` passes the first check, but is
/// not JSON when the message is `5`). Returns the error to show the API caller.
pub fn validate_template(template: &str, enc: Encoding) -> Result<(), String> {
    for hostile in ["q\"uo\\te\n", "1"] {
        let mut vars = BTreeMap::new();
        for n in WEBHOOK_VARIABLES {
            let v = if NUMERIC_VARIABLES.contains(n) {
                "1700000000000"
            } else {
                hostile
            };
            vars.insert((*n).to_owned(), v.to_owned());
        }
        let rendered = substitute(template, &vars, true);
        let v: Value = serde_json::from_str(&rendered)
            .map_err(|e| format!("payload is not valid JSON: {e}"))?;
        if enc == Encoding::Form && !v.is_object() {
            return Err("payload must be a JSON object when encode_as is form".into());
        }
    }
    Ok(())
}

/// Variables whose value is always a number (milliseconds, ids).
pub const NUMERIC_VARIABLES: &[&str] = &["DATE", "LAST_UPDATED", "ALERT_ID", "ORG_ID"];

/// The `$VARIABLE`s Warden fills in (a subset of Datadog's list; the rest render as written).
pub const WEBHOOK_VARIABLES: &[&str] = &[
    "AGGREG_KEY",
    "ALERT_CYCLE_KEY",
    "ALERT_ID",
    "ALERT_METRIC",
    "ALERT_PRIORITY",
    "ALERT_QUERY",
    "ALERT_SCOPE",
    "ALERT_STATUS",
    "ALERT_TITLE",
    "ALERT_TRANSITION",
    "ALERT_TYPE",
    "DATE",
    "EVENT_MSG",
    "EVENT_TITLE",
    "EVENT_TYPE",
    "HOSTNAME",
    "ID",
    "LAST_UPDATED",
    "LINK",
    "ORG_ID",
    "ORG_NAME",
    "PRIORITY",
    "SECURITY_RULE_ID",
    "SECURITY_RULE_NAME",
    "SECURITY_SIGNAL_ID",
    "SECURITY_SIGNAL_SEVERITY",
    "SECURITY_SIGNAL_TITLE",
    "SECURITY_SIGNAL_MSG",
    "SECURITY_SIGNAL_ATTRIBUTES",
    "TAGS",
    "TEXT_ONLY_MSG",
    "USER",
    "USERNAME",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        v.insert("EVENT_MSG".into(), "CPU \"high\"\non web-1".into());
        v.insert("ALERT_ID".into(), "42".into());
        v.insert("ID".into(), "7".into());
        v.insert("TAGS".into(), "env:prod,host:web-1".into());
        v.insert("OBJ".into(), r#"{"ip":"1.2.3.4"}"#.into());
        v
    }

    #[test]
    fn json_substitution_escapes_and_longest_name_wins() {
        let t = r#"{"m":"$EVENT_MSG","a":"$ALERT_ID_x","i":$ID,"h":"$TAGS[host]","u":"$UNKNOWN","q":"a\"$ID","bare":$EVENT_MSG,"o":$OBJ}"#;
        let out = substitute(t, &vars(), true);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["m"], "CPU \"high\"\non web-1");
        assert_eq!(v["a"], "42_x");
        assert_eq!(v["i"], 7);
        assert_eq!(v["h"], "web-1");
        assert_eq!(v["u"], "$UNKNOWN");
        assert_eq!(v["q"], "a\"7", "an escaped quote does not end the string");
        assert_eq!(
            v["bare"], "CPU \"high\"\non web-1",
            "a bare text value is quoted"
        );
        assert_eq!(v["o"]["ip"], "1.2.3.4", "a bare JSON value goes in as JSON");
    }

    #[test]
    fn form_encoding() {
        let (ct, body) = webhook_body(
            Some(r#"{"text":"$EVENT_MSG","n":$ID}"#),
            &vars(),
            Encoding::Form,
        )
        .unwrap();
        assert_eq!(ct, "application/x-www-form-urlencoded");
        assert_eq!(body, "n=7&text=CPU+%22high%22%0Aon+web-1");
    }

    #[test]
    fn default_template_keys() {
        let (_, body) = webhook_body(None, &vars(), Encoding::Json).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "body",
                "date",
                "event_type",
                "id",
                "last_updated",
                "org",
                "title"
            ]
        );
    }

    #[test]
    fn template_validation() {
        assert!(validate_template(r#"{"a":"$EVENT_MSG"}"#, Encoding::Json).is_ok());
        assert!(
            validate_template(r#"{"a":$EVENT_MSG}"#, Encoding::Json).is_ok(),
            "quoted"
        );
        assert!(validate_template(r#"{"a": }"#, Encoding::Json).is_err());
        assert!(validate_template(r#"{"d":$DATE,"t":"$EVENT_TITLE"}"#, Encoding::Json).is_ok());
        assert!(validate_template(r#"["$ID"]"#, Encoding::Form).is_err());
    }

    #[test]
    fn pagerduty_trigger_shape() {
        let t = PdTrigger {
            summary: "x".repeat(2000),
            source: "web-1".into(),
            severity: "alert".into(),
            timestamp: 1_437_122_578,
            component: Some("cpu".into()),
            links: vec![("https://w/ack".into(), "Acknowledge".into())],
            ..PdTrigger::default()
        };
        let key = "0123456789abcdef0123456789abcdef";
        let ev = pagerduty_event(key, PdAction::Trigger, "monitor-1", Some(&t));
        assert_eq!(ev["event_action"], "trigger");
        assert_eq!(ev["payload"]["summary"].as_str().unwrap().len(), 1024);
        assert_eq!(ev["payload"]["severity"], "critical");
        assert_eq!(ev["payload"]["timestamp"], "2015-07-17T08:42:58.000+0000");
        assert_eq!(ev["links"][0]["href"], "https://w/ack");
        let r = pagerduty_event(key, PdAction::Resolve, "monitor-1", Some(&t));
        assert!(r.get("payload").is_none());
        assert_eq!(r["dedup_key"], "monitor-1");
    }

    /// Found by `fuzz/` (alerting_templates): a variable in key position passed validation (its
    /// test value is a string) but renders invalid JSON once the real value is itself JSON.
    #[test]
    fn validated_template_stays_json_when_a_value_is_json() {
        let t = r#"{$EVENT_MSG: 1}"#;
        let mut vars = BTreeMap::new();
        vars.insert("EVENT_MSG".to_string(), "5".to_string());
        assert!(serde_json::from_str::<Value>(&substitute(t, &vars, true)).is_err());
        assert!(validate_template(t, Encoding::Json).is_err());
        // Value positions still accept a bare variable.
        let ok = r#"{"a": $EVENT_MSG, "b": [$SECURITY_SIGNAL_ATTRIBUTES], "d": $DATE}"#;
        assert!(validate_template(ok, Encoding::Json).is_ok());
        assert!(validate_template(ok, Encoding::Form).is_ok());
        assert!(validate_template(DEFAULT_WEBHOOK_PAYLOAD, Encoding::Json).is_ok());
        // Found by `fuzz/`: a `$TAGS[` whose `]` lies past the string's closing quote.
        let t = r#"{"a$TAGS[x": "$TAGS[env]"}"#;
        let mut vars = BTreeMap::new();
        vars.insert("TAGS".to_string(), "env:prod".to_string());
        let out = substitute(t, &vars, true);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v.as_object().unwrap().values().next().unwrap(),
            "prod",
            "{out}"
        );
    }

    #[test]
    fn slack_shape() {
        let m = slack_message("T <b>", "a & b", "ctx", Some("https://w/ack"));
        assert_eq!(m["text"], "T <b>\na & b");
        assert_eq!(m["blocks"][0]["text"]["text"], "*T &lt;b&gt;*\na &amp; b");
        assert_eq!(m["blocks"][2]["elements"][0]["url"], "https://w/ack");
    }
}
