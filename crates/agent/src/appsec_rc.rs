//! App-protection remote configuration: the agent pulls the org's denylist (`rules_data`) and
//! uploaded ruleset from the server and serves them to local applications on the trace port
//! (`GET /v0.7/warden/appsec`), where Warden's tower layer polls them.
//!
//! Why through the agent: applications already talk to it (traces) without credentials; the
//! agent holds the API key and the TLS trust for the server. Why keep the last good copy on
//! errors: a server outage must not unblock attackers, so a failed poll changes nothing, and
//! only a successful answer replaces what applications get. `version` goes up on every
//! change, so a client can tell an update from a re-poll.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::AgentConfig;

/// Path local applications poll.
pub const PATH: &str = "/v0.7/warden/appsec";

const RULES_DATA: &str = "/api/v2/warden/appsec/rules_data";
const RULESET: &str = "/api/v2/warden/appsec/ruleset";

/// What the agent serves to local applications.
#[derive(Debug)]
pub struct AppsecRc {
    inner: RwLock<Snapshot>,
}

#[derive(Debug)]
struct Snapshot {
    rules_data: Value,
    ruleset: Value,
    version: u64,
    body: Bytes,
}

impl Default for AppsecRc {
    fn default() -> Self {
        let mut s = Snapshot {
            rules_data: Value::Array(Vec::new()),
            ruleset: Value::Null,
            version: 0,
            body: Bytes::new(),
        };
        s.render();
        AppsecRc {
            inner: RwLock::new(s),
        }
    }
}

impl Snapshot {
    fn render(&mut self) {
        self.body = Bytes::from(
            json!({"rules_data": self.rules_data, "ruleset": self.ruleset, "version": self.version})
                .to_string(),
        );
    }
}

impl AppsecRc {
    /// The JSON document applications get: `{"rules_data": [...], "ruleset": {...}|null,
    /// "version": N}`.
    pub fn body(&self) -> Bytes {
        match self.inner.read() {
            Ok(g) => g.body.clone(),
            Err(p) => p.into_inner().body.clone(),
        }
    }

    /// Current version (0 until the first change from the server).
    pub fn version(&self) -> u64 {
        match self.inner.read() {
            Ok(g) => g.version,
            Err(p) => p.into_inner().version,
        }
    }

    /// Replaces the documents; true (and a new version) when anything changed.
    pub fn update(&self, rules_data: Value, ruleset: Value) -> bool {
        let mut g = match self.inner.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.rules_data == rules_data && g.ruleset == ruleset {
            return false;
        }
        g.rules_data = rules_data;
        g.ruleset = ruleset;
        g.version += 1;
        g.render();
        true
    }
}

/// Polls the server every `appsec_rc_interval` seconds until `shutdown`.
pub async fn run_poller(
    cfg: AgentConfig,
    rc: Arc<AppsecRc>,
    client: reqwest::Client,
    mut shutdown: watch::Receiver<bool>,
) {
    let base = cfg.server_url.trim_end_matches('/').to_owned();
    let every = Duration::from_secs(cfg.appsec_rc_interval.max(1));
    let mut failures: u64 = 0;
    loop {
        match fetch(&client, &base, &cfg.api_key).await {
            Ok((rules_data, ruleset)) => {
                if failures > 0 {
                    tracing::info!("appsec remote configuration: server reachable again");
                }
                failures = 0;
                if rc.update(rules_data, ruleset) {
                    tracing::info!(
                        version = rc.version(),
                        "appsec remote configuration updated"
                    );
                }
            }
            Err(e) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(error = %e, consecutive = failures,
                        "appsec remote configuration: cannot fetch from the server; applications keep the last copy");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn fetch(
    client: &reqwest::Client,
    base: &str,
    api_key: &str,
) -> Result<(Value, Value), String> {
    let get = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .header("DD-API-KEY", api_key)
            .header("Accept", "application/json")
            .send()
    };
    let r = get(RULES_DATA)
        .await
        .map_err(|e| crate::forwarder::error_chain(&e))?;
    if !r.status().is_success() {
        return Err(format!("{RULES_DATA}: HTTP {}", r.status().as_u16()));
    }
    let doc: Value = r
        .bytes()
        .await
        .map_err(|e| format!("{RULES_DATA}: {e}"))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("{RULES_DATA}: {e}")))?;
    let rules_data = match doc.get("rules_data") {
        Some(v @ Value::Array(_)) => v.clone(),
        _ => return Err(format!("{RULES_DATA}: no `rules_data` array")),
    };
    let r = get(RULESET)
        .await
        .map_err(|e| crate::forwarder::error_chain(&e))?;
    let ruleset = match r.status().as_u16() {
        200 => {
            let v: Value = r
                .bytes()
                .await
                .map_err(|e| format!("{RULESET}: {e}"))
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("{RULESET}: {e}")))?;
            if !v.is_object() {
                return Err(format!("{RULESET}: not a JSON object"));
            }
            v
        }
        // Nothing uploaded (or an older server): applications keep their built-in ruleset.
        204 | 404 => Value::Null,
        s => return Err(format!("{RULESET}: HTTP {s}")),
    };
    Ok((rules_data, ruleset))
}

/// The HTTP client for the server (same trust and TLS floor as the forwarder).
pub fn client(cfg: &AgentConfig) -> Result<reqwest::Client, crate::forwarder::ForwarderError> {
    let plaintext = cfg.server_url.starts_with("http://") && cfg.allow_insecure_http;
    reqwest::Client::builder()
        .use_preconfigured_tls(crate::forwarder::tls_config(cfg)?)
        .https_only(!plaintext)
        .user_agent(format!("warden-agent/{}", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(cfg.forwarder_timeout.max(1)))
        .no_proxy()
        .build()
        .map_err(|e| crate::forwarder::ForwarderError::Client(crate::forwarder::error_chain(&e)))
}

/// Answers `GET /v0.7/warden/appsec` on the trace port.
pub fn respond(
    rc: &AppsecRc,
    method: &hyper::Method,
) -> hyper::Response<http_body_util::Full<Bytes>> {
    let (status, body, ct) = if method == hyper::Method::GET || method == hyper::Method::HEAD {
        (200, rc.body(), "application/json")
    } else {
        (
            405,
            Bytes::from_static(br#"{"error":"method not allowed; use GET"}"#),
            "application/json",
        )
    };
    let mut r = hyper::Response::new(http_body_util::Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ct),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_change_only_with_content() {
        let rc = AppsecRc::default();
        assert_eq!(rc.version(), 0);
        let v: Value = serde_json::from_slice(&rc.body()).expect("json");
        assert_eq!(v, json!({"rules_data": [], "ruleset": null, "version": 0}));
        let rd = json!([{"id": "blocked_ips", "type": "ip_with_expiration", "data": [{"value": "1.2.3.4", "expiration": 0}]}]);
        assert!(rc.update(rd.clone(), Value::Null));
        assert!(!rc.update(rd.clone(), Value::Null));
        assert_eq!(rc.version(), 1);
        let v: Value = serde_json::from_slice(&rc.body()).expect("json");
        assert_eq!(v["rules_data"], rd);
        assert_eq!(v["version"], 1);
        assert!(rc.update(rd, json!({"version": "2.2", "rules": []})));
        assert_eq!(rc.version(), 2);
    }
}
