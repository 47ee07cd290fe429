//! Security events: what the detection rules read.
//!
//! Why a flattened span: tracers (ddtrace and Warden's own tower layer) report attacks and
//! login activity as tags on the service-entry span (`appsec.event`, `_dd.appsec.json`,
//! `appsec.events.users.login.*`, `usr.id`, `http.client_ip`). The server keeps exactly those
//! spans, flattened into this one shape, so the rules engine, the signals API and the search
//! syntax (`@attr:value`) see one model whatever produced the span. Building it from a span is
//! the trace intake's job; this crate only says what it is.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One security-relevant span (an attack, a RASP match, a login success or failure, a custom
/// business-logic event).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurityEvent {
    /// Unique per event (the trace intake uses `<trace_id>-<span_id>`).
    pub id: String,
    /// Span start, UNIX milliseconds.
    pub timestamp_ms: i64,
    pub service: String,
    pub env: String,
    pub host: String,
    /// Decimal 64-bit trace id (lower 64 bits), `"0"` when unknown.
    pub trace_id: String,
    pub span_id: String,
    /// Span resource, e.g. `GET /login`.
    pub resource: String,
    /// `http.client_ip` (or `network.client.ip`) as the tracer resolved it.
    pub client_ip: Option<String>,
    /// `usr.id`, or for a login failure `appsec.events.users.login.failure.usr.id`.
    pub usr_id: Option<String>,
    pub http_method: Option<String>,
    pub http_url: Option<String>,
    pub http_status: Option<u16>,
    pub http_route: Option<String>,
    /// Security activities, each `<category>.<type>` as Datadog forms them:
    /// `attack_attempt.sql_injection`, `business_logic.users.login.failure`,
    /// `business_logic.users.login.success`, `exploit_attempt.sql_injection` (RASP match).
    pub activity: Vec<String>,
    /// The request was blocked by the in-app WAF.
    pub blocked: bool,
    /// `_dd.appsec.json` (`{"triggers": [...]}`), `null` when the span had none.
    pub triggers: serde_json::Value,
    /// The span's string tags (`meta`), for `@attr:value` search and rule group-by.
    pub attributes: BTreeMap<String, String>,
}

impl SecurityEvent {
    /// True when any activity equals `a` or starts with `a.` (so `attack_attempt` matches
    /// `attack_attempt.sql_injection`).
    pub fn has_activity(&self, a: &str) -> bool {
        self.activity
            .iter()
            .any(|x| x == a || (x.starts_with(a) && x.as_bytes().get(a.len()) == Some(&b'.')))
    }

    /// An attribute for search and group-by: the typed fields under their Datadog facet
    /// names (`service`, `env`, `host`, `http.client_ip`, `usr.id`, `http.method`,
    /// `http.url`, `http.status_code`, `http.route`, `appsec.security_activity`), then `meta`.
    pub fn attribute(&self, name: &str) -> Option<String> {
        let s = |v: &str| Some(v.to_string());
        match name {
            "service" => s(&self.service),
            "env" => s(&self.env),
            "host" => s(&self.host),
            "trace_id" => s(&self.trace_id),
            "span_id" => s(&self.span_id),
            "resource" | "resource_name" => s(&self.resource),
            "http.client_ip" | "network.client.ip" => self.client_ip.clone(),
            "usr.id" => self.usr_id.clone(),
            "http.method" => self.http_method.clone(),
            "http.url" => self.http_url.clone(),
            "http.status_code" => self.http_status.map(|c| c.to_string()),
            "http.route" => self.http_route.clone(),
            "appsec.security_activity" => self.activity.first().cloned(),
            other => self.attributes.get(other).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_prefix_matches_whole_segments_only() {
        let e = SecurityEvent {
            activity: vec!["attack_attempt.sql_injection".into()],
            ..Default::default()
        };
        assert!(e.has_activity("attack_attempt"));
        assert!(e.has_activity("attack_attempt.sql_injection"));
        assert!(!e.has_activity("attack"));
        assert!(!e.has_activity("business_logic"));
    }

    #[test]
    fn attributes_map_facets_then_meta() {
        let mut e = SecurityEvent {
            client_ip: Some("203.0.113.9".into()),
            http_status: Some(403),
            ..Default::default()
        };
        e.attributes.insert("custom.k".into(), "v".into());
        assert_eq!(
            e.attribute("http.client_ip").as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(e.attribute("http.status_code").as_deref(), Some("403"));
        assert_eq!(e.attribute("custom.k").as_deref(), Some("v"));
        assert_eq!(e.attribute("missing"), None);
    }
}
