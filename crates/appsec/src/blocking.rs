//! Blocking verdicts and the responses sent instead of the application's: JSON or HTML chosen
//! by `Accept` (or forced by the action's `type`), always carrying the request id that the
//! report carries too, so a blocked user can quote it to support; or a redirect.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value};
use warden_waf::Action;

/// What the WAF asked for: block with a status, or redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockAction {
    Block {
        status: u16,
        /// `auto` (by Accept), `json` or `html`.
        kind: String,
    },
    Redirect {
        status: u16,
        location: String,
    },
}

/// A block verdict. Returned by RASP hooks and user-tracking calls; the layer also records it
/// on the request, so the application can return any error and the layer still sends the
/// blocking response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request blocked by app protection (rule {rule_id}, security_response_id {request_id})")]
pub struct Blocked {
    pub action: BlockAction,
    /// `security_response_id`: also in the response body and in the report.
    pub request_id: String,
    /// The first rule that matched in the evaluation that blocked.
    pub rule_id: String,
}

impl Blocked {
    /// Build a verdict from WAF actions (`block_request` / `redirect_request`), if any.
    pub(crate) fn from_actions(actions: &[Action], rule_id: &str) -> Option<Blocked> {
        let a = actions
            .iter()
            .find(|a| a.kind == "block_request" || a.kind == "redirect_request")?;
        let p = &a.parameters;
        let id = p
            .get("security_response_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| "unknown".to_string());
        let action = if a.kind == "redirect_request" {
            BlockAction::Redirect {
                status: status_of(p, 303),
                location: p
                    .get("location")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_string(),
            }
        } else {
            BlockAction::Block {
                status: status_of(p, 403),
                kind: p
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("auto")
                    .to_string(),
            }
        };
        Some(Blocked {
            action,
            request_id: id,
            rule_id: rule_id.to_string(),
        })
    }

    /// The HTTP status this verdict responds with.
    pub fn status(&self) -> u16 {
        match &self.action {
            BlockAction::Block { status, .. } | BlockAction::Redirect { status, .. } => *status,
        }
    }

    /// The blocking response for a request that sent `accept`.
    pub fn to_response<B: From<Bytes>>(&self, accept: Option<&HeaderValue>) -> Response<B> {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::FORBIDDEN);
        let mut b = Response::builder().status(status);
        let body = match &self.action {
            BlockAction::Redirect { location, .. } => {
                if let Ok(v) = HeaderValue::from_str(location) {
                    b = b.header(header::LOCATION, v);
                }
                Bytes::new()
            }
            BlockAction::Block { kind, .. } => {
                let html = match kind.as_str() {
                    "html" => true,
                    "json" => false,
                    _ => prefers_html(accept),
                };
                if html {
                    b = b.header(header::CONTENT_TYPE, "text/html; charset=utf-8");
                    Bytes::from(html_body(&self.request_id))
                } else {
                    b = b.header(header::CONTENT_TYPE, "application/json");
                    Bytes::from(json_body(&self.request_id))
                }
            }
        };
        b = b.header(header::CACHE_CONTROL, "no-store");
        match b.body(B::from(body)) {
            Ok(r) => r,
            Err(_) => {
                // Only reachable with an invalid header, which the code above never builds.
                let mut r = Response::new(B::from(Bytes::new()));
                *r.status_mut() = StatusCode::FORBIDDEN;
                r
            }
        }
    }
}

fn status_of(p: &Map<String, Value>, default: u16) -> u16 {
    p.get("status_code")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..600).contains(s))
        .unwrap_or(default)
}

/// True when `Accept` weighs `text/html` above `application/json` (JSON wins ties and
/// absent headers, as in Datadog tracers).
pub(crate) fn prefers_html(accept: Option<&HeaderValue>) -> bool {
    let Some(a) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let mut html = 0.0f32;
    let mut json = 0.0f32;
    for range in a.split(',') {
        let mut it = range.split(';');
        let mime = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match mime.as_str() {
            "text/html" => html = html.max(q),
            "application/json" => json = json.max(q),
            _ => {}
        }
    }
    html > json
}

fn json_body(id: &str) -> String {
    serde_json::json!({
        "errors": [{
            "title": "You've been blocked",
            "detail": "Sorry, you cannot access this page. Please contact the customer service \
                       team. Security provided by Warden."
        }],
        "security_response_id": id,
    })
    .to_string()
}

fn html_body(id: &str) -> String {
    let id: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"UTF-8\">\
         <title>You've been blocked</title></head><body><h1>Sorry, you cannot access this \
         page.</h1><p>Please contact the customer service team. Security provided by \
         Warden.</p><p>Security Response ID: {id}</p></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn accept_negotiation() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(!prefers_html(None));
        assert!(prefers_html(Some(&h(
            "text/html,application/xhtml+xml,*/*;q=0.8"
        ))));
        assert!(!prefers_html(Some(&h("application/json, text/html;q=0.9"))));
        assert!(!prefers_html(Some(&h("*/*"))));
        assert!(prefers_html(Some(&h("application/json;q=0.5, text/html"))));
    }

    #[test]
    fn actions_become_responses() {
        let mut p = Map::new();
        p.insert("status_code".into(), Value::from(418));
        p.insert("type".into(), Value::from("auto"));
        p.insert("security_response_id".into(), Value::from("abc-1"));
        let a = Action {
            kind: "block_request".into(),
            parameters: p,
        };
        let b = Blocked::from_actions(std::slice::from_ref(&a), "r1").expect("blocking action");
        assert_eq!(b.status(), 418);
        let r: Response<Full<Bytes>> = b.to_response(None);
        assert_eq!(r.status(), 418);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let mut p = Map::new();
        p.insert("location".into(), Value::from("/blocked"));
        let red = Action {
            kind: "redirect_request".into(),
            parameters: p,
        };
        let b = Blocked::from_actions(&[red], "r2").expect("redirect");
        let r: Response<Full<Bytes>> = b.to_response(None);
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()[header::LOCATION], "/blocked");
        let none = Action {
            kind: "generate_stack".into(),
            parameters: Map::new(),
        };
        assert!(Blocked::from_actions(&[none], "r3").is_none());
    }
}
