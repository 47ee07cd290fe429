//! Remote configuration from the local agent: denylists (`rules_data`) and the operator's
//! ruleset, refreshed without restarting the application.
//!
//! Why polling the agent rather than the server: the application talks only to its local
//! agent (no API key, no TLS trust to configure in every service); the agent holds the API key
//! and pulls from the server. The poller holds only a weak reference, so it ends by itself
//! once the [`crate::Appsec`] is dropped, and it applies a document only when it changed:
//! a denylist refresh rebuilds the ruleset once, not every interval.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;

use crate::agent_client::AgentUrl;
use crate::config::ConfigError;
use crate::engine::{AppsecError, Inner};

/// Where the agent serves the configuration for local applications.
pub const REMOTE_CONFIG_PATH: &str = "/v0.7/warden/appsec";

pub(crate) fn start(inner: &Arc<Inner>) -> Result<(), AppsecError> {
    let cfg = &inner.cfg.agent;
    let url = AgentUrl::parse(&cfg.url).ok_or_else(|| ConfigError::BadValue {
        var: "DD_TRACE_AGENT_URL",
        value: cfg.url.clone(),
        reason: "expected http://HOST[:PORT]",
    })?;
    let every = Duration::from_millis(cfg.remote_config_interval_ms);
    let weak = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("warden-appsec-rc".into())
        .spawn(move || poll(weak, url, every))
        .map_err(|e| ConfigError::BadValue {
            var: "WARDEN_APPSEC_REMOTE_CONFIG",
            value: e.to_string(),
            reason: "cannot start the remote configuration thread",
        })?;
    Ok(())
}

/// What was last applied (to apply only changes).
#[derive(Default)]
struct Applied {
    rules_data: Option<Value>,
    ruleset: Option<Value>,
    failures: u64,
}

fn poll(weak: Weak<Inner>, url: AgentUrl, every: Duration) {
    let mut applied = Applied::default();
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        match url.request(
            "GET",
            REMOTE_CONFIG_PATH,
            &[("Accept", "application/json")],
            b"",
            Duration::from_secs(5),
        ) {
            Ok(r) if r.status == 200 => {
                applied.failures = 0;
                match serde_json::from_slice::<Value>(&r.body) {
                    Ok(doc) => apply(&inner, &doc, &mut applied),
                    Err(e) => {
                        tracing::warn!(error = %e, "appsec: remote configuration is not JSON")
                    }
                }
            }
            Ok(r) => {
                applied.failures += 1;
                if applied.failures.is_power_of_two() {
                    tracing::debug!(
                        status = r.status,
                        "appsec: the agent serves no remote configuration"
                    );
                }
            }
            Err(e) => {
                applied.failures += 1;
                if applied.failures.is_power_of_two() {
                    tracing::debug!(error = %e, "appsec: agent unreachable for remote configuration");
                }
            }
        }
        drop(inner);
        std::thread::sleep(every);
    }
}

fn apply(inner: &Inner, doc: &Value, applied: &mut Applied) {
    // `rules_data` is the array; the whole ASM_DATA document (`{"rules_data": [...]}`) is
    // accepted too.
    let data = match doc.get("rules_data") {
        Some(Value::Object(o)) => o.get("rules_data").cloned().unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    };
    let nothing = data.as_array().is_none_or(Vec::is_empty);
    if applied.rules_data.is_none() && nothing {
        // Nothing remote yet and nothing applied: no rebuild needed.
        applied.rules_data = Some(data);
    } else if applied.rules_data.as_ref() != Some(&data) {
        match inner.set_remote_rules_data(&data) {
            Ok(()) => {
                tracing::info!(
                    lists = data.as_array().map_or(0, Vec::len),
                    "appsec: denylists updated from the agent"
                );
                applied.rules_data = Some(data);
            }
            Err(e) => {
                tracing::warn!(error = %e, "appsec: denylists from the agent refused");
                applied.rules_data = Some(data);
            }
        }
    }
    let ruleset = doc.get("ruleset").cloned().unwrap_or(Value::Null);
    if applied.ruleset.as_ref() != Some(&ruleset) {
        let first = applied.ruleset.is_none();
        let res = match &ruleset {
            // Nothing remote and nothing applied before: keep the built-in one as it is.
            Value::Null if first => Ok(()),
            Value::Null => inner.swap_ruleset(None),
            r => inner.swap_ruleset(Some(r)),
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "appsec: ruleset from the agent refused; keeping the current one");
        }
        applied.ruleset = Some(ruleset);
    }
}
