//! The secrets backend never logs a value: every tracing event emitted while resolving is
//! captured (own test binary, so no other test shares tracing's global callsite state) and
//! searched for the planted values. The backend's stderr is logged, scrubbed.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_agent::secrets::{SecretBackendConfig, resolve_config_secrets};

const API_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const DB_PASS: &str = "Db-pa55-Zx9!q";

#[test]
fn resolving_logs_handles_and_scrubbed_stderr_but_no_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("backend");
    std::fs::write(
        &exe,
        format!(
            "#!/bin/sh\ncat > /dev/null\necho \"backend: served {API_KEY} and {DB_PASS}\" >&2\nprintf '{{\"dd_api_key\":{{\"value\":\"{API_KEY}\",\"error\":null}},\"db_pass\":{{\"value\":\"{DB_PASS}\",\"error\":null}}}}'\n"
        ),
    )
    .expect("write");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let cfg = SecretBackendConfig {
        command: Some(exe),
        timeout: Duration::from_secs(10),
        ..SecretBackendConfig::default()
    };
    let mut y: serde_yaml::Value =
        serde_yaml::from_str("api_key: ENC[dd_api_key]\ndb:\n  password: ENC[db_pass]\n")
            .expect("yaml");

    let (resolved, logs) = capture_logs(|| resolve_config_secrets(&mut y, &cfg));
    let resolved = resolved.expect("resolves");
    assert_eq!(resolved.len(), 2);
    assert!(logs.contains("resolved ENC[] secrets"), "{logs}");
    assert!(
        logs.contains("db_pass") && logs.contains("dd_api_key"),
        "handles are logged: {logs}"
    );
    assert!(
        logs.contains("backend: served ********"),
        "stderr logged scrubbed: {logs}"
    );
    assert!(!logs.contains(API_KEY), "{logs}");
    assert!(!logs.contains(DB_PASS), "{logs}");
}

/// Run `f` with a minimal tracing subscriber that records every event's fields as text.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buf = Arc::new(Mutex::new(String::new()));
    let sub = Capture(Arc::clone(&buf));
    let out = tracing::subscriber::with_default(sub, f);
    let text = buf.lock().expect("log buffer").clone();
    (out, text)
}

struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut s = self.0.lock().expect("log buffer");
        event.record(&mut Fields(&mut s));
        s.push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
