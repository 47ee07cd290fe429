//! The secrets backend against real executables (`#!/bin/sh` scripts in a temp dir): a good
//! one, failing ones, a slow one (timeout), wrong permissions (refused before exec), one printing
//! 10 MB (refused), a missing handle. No mocks: every test runs a real process.

use serde_yaml::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use warden_agent::secrets::{
    SecretBackendConfig, SecretsError, check_permissions, resolve_config_secrets,
};
use warden_scrubber::Scrubber;

const API_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const DB_PASS: &str = "Db-pa55-Zx9!q";

fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn cfg(command: &Path, timeout: Duration) -> SecretBackendConfig {
    SecretBackendConfig {
        command: Some(command.to_path_buf()),
        timeout,
        ..SecretBackendConfig::default()
    }
}

fn config() -> Value {
    serde_yaml::from_str(
        "api_key: ENC[dd_api_key]\nsite: datadoghq.eu\ninstances:\n  - host: db\n    password: ENC[db_pass]\n    tags: [\"ENC[db_pass]\"]\n",
    )
    .expect("yaml")
}

/// A real backend: records its stdin and arguments, answers every handle it knows.
fn good_backend(dir: &Path) -> PathBuf {
    let stdin_copy = dir.join("stdin.json");
    let args_copy = dir.join("args.txt");
    script(
        dir,
        "good-backend",
        &format!(
            r#"cat > '{}'
echo "$@" > '{}'
echo "backend: served {API_KEY}" >&2
printf '{{"dd_api_key":{{"value":"{API_KEY}","error":null}},"db_pass":{{"value":"{DB_PASS}","error":null}}}}'"#,
            stdin_copy.display(),
            args_copy.display()
        ),
        0o700,
    )
}

#[test]
fn good_backend_resolves_and_substitutes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = good_backend(dir.path());
    let mut c = cfg(&exe, Duration::from_secs(10));
    c.arguments = vec!["--vault".into(), "prod".into()];
    let mut y = config();
    let resolved = resolve_config_secrets(&mut y, &c).expect("resolves");

    // The protocol: one batch, sorted unique handles, version 1.0; arguments passed as-is.
    let stdin: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("stdin.json")).expect("stdin copy"))
            .expect("json");
    assert_eq!(
        stdin,
        serde_json::json!({"version": "1.0", "secrets": ["db_pass", "dd_api_key"]})
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("args.txt"))
            .expect("args")
            .trim(),
        "--vault prod"
    );

    // Substituted in place, whole scalars only.
    assert_eq!(y["api_key"].as_str(), Some(API_KEY));
    assert_eq!(y["instances"][0]["password"].as_str(), Some(DB_PASS));
    assert_eq!(y["instances"][0]["tags"][0].as_str(), Some(DB_PASS));
    assert_eq!(y["site"].as_str(), Some("datadoghq.eu"));
    assert_eq!(resolved.len(), 2);
    assert_eq!(resolved.get("db_pass"), Some(DB_PASS));
    let paths: Vec<&str> = resolved.origins().iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["api_key", "instances[0].password", "instances[0].tags[0]"]
    );

    // Never in Debug output (logging is checked in secrets_logging.rs, its own process).
    let dbg = format!("{resolved:?}");
    assert!(!dbg.contains(API_KEY) && !dbg.contains(DB_PASS), "{dbg}");

    // Registered with a scrubber, the values are masked wherever they show up.
    let scrubber = Scrubber::default();
    assert_eq!(resolved.register_with(&scrubber), 0);
    let line = format!("retrying with {DB_PASS} and {API_KEY}");
    let out = scrubber.scrub_line(&line);
    assert!(!out.contains(DB_PASS) && !out.contains(API_KEY), "{out}");
}

#[test]
fn failing_backend_reports_exit_and_scrubbed_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = script(
        dir.path(),
        "failing",
        r#"cat > /dev/null
echo "vault login failed: password=Hunter2Secret99 token expired" >&2
printf '{"dd_api_key":{"value":null,"error":"permission denied"}}'
exit 1"#,
        0o700,
    );
    let mut y = config();
    let e =
        resolve_config_secrets(&mut y, &cfg(&exe, Duration::from_secs(10))).expect_err("exit 1");
    let msg = e.to_string();
    assert!(matches!(e, SecretsError::Failed { .. }), "{msg}");
    assert!(msg.contains("exit status: 1"), "{msg}");
    assert!(msg.contains("vault login failed"), "stderr included: {msg}");
    assert!(!msg.contains("Hunter2Secret99"), "stderr scrubbed: {msg}");
    // Nothing substituted.
    assert_eq!(y["api_key"].as_str(), Some("ENC[dd_api_key]"));
}

#[test]
fn handle_error_and_missing_handle_and_empty_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = script(
        dir.path(),
        "handle-error",
        r#"cat > /dev/null
printf '{"dd_api_key":{"value":null,"error":"secret not found in vault"},"db_pass":{"value":"x1y2z3w4","error":null}}'"#,
        0o700,
    );
    let e = resolve_config_secrets(&mut config(), &cfg(&exe, Duration::from_secs(10)))
        .expect_err("error");
    assert_eq!(
        e.to_string(),
        "secret backend could not fetch handle \"dd_api_key\": secret not found in vault"
    );

    let exe = script(
        dir.path(),
        "missing",
        &format!(
            "cat > /dev/null\nprintf '{{\"dd_api_key\":{{\"value\":\"{API_KEY}\",\"error\":null}}}}'"
        ),
        0o700,
    );
    let e = resolve_config_secrets(&mut config(), &cfg(&exe, Duration::from_secs(10)))
        .expect_err("missing");
    assert!(
        matches!(e, SecretsError::MissingHandle(ref h) if h == "db_pass"),
        "{e}"
    );
    assert!(!e.to_string().contains(API_KEY));

    let exe = script(
        dir.path(),
        "empty",
        r#"cat > /dev/null
printf '{"dd_api_key":{"value":"","error":null},"db_pass":{"value":"x1y2z3w4"}}'"#,
        0o700,
    );
    let e = resolve_config_secrets(&mut config(), &cfg(&exe, Duration::from_secs(10)))
        .expect_err("empty");
    assert_eq!(
        e.to_string(),
        "secret backend returned an empty value for handle \"dd_api_key\""
    );

    let exe = script(
        dir.path(),
        "garbage",
        "cat > /dev/null\necho 'the secret is x1y2z3w4'",
        0o700,
    );
    let e = resolve_config_secrets(&mut config(), &cfg(&exe, Duration::from_secs(10)))
        .expect_err("not json");
    assert!(matches!(e, SecretsError::BadOutput { .. }), "{e}");
    assert!(!e.to_string().contains("x1y2z3w4"), "{e}");
}

#[test]
fn slow_backend_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let exe = script(
        dir.path(),
        "slow",
        &format!("echo $$ > '{}'\nsleep 10\necho '{{}}'", pidfile.display()),
        0o700,
    );
    let t = Instant::now();
    let e = resolve_config_secrets(&mut config(), &cfg(&exe, Duration::from_secs(1)))
        .expect_err("timeout");
    let took = t.elapsed();
    assert!(matches!(e, SecretsError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("secret_backend_timeout"), "{e}");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    // The process group is gone: the shell (and its sleep) were killed, not left running.
    let pid = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .to_string();
    let gone = (0..100).any(|_| {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = !state.is_empty() && !state.contains(") Z ");
        if alive {
            std::thread::sleep(Duration::from_millis(20));
        }
        !alive
    });
    assert!(gone, "backend pid {pid} still running");
}

#[test]
fn wrong_permissions_are_refused_before_exec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran");
    let body = format!("touch '{}'\nprintf '{{}}'", marker.display());
    for (mode, needle) in [
        (0o755, "chmod 700"),
        (0o740, "chmod 700"),
        (0o701, "chmod 700"),
        (0o600, "chmod 700"),
    ] {
        let exe = script(dir.path(), &format!("backend-{mode:o}"), &body, mode);
        let e = resolve_config_secrets(&mut config(), &cfg(&exe, Duration::from_secs(10)))
            .expect_err("refused");
        let msg = e.to_string();
        assert!(
            matches!(e, SecretsError::Permissions { .. }),
            "{mode:o}: {msg}"
        );
        assert!(
            msg.contains(&format!("{needle} {}", exe.display())),
            "{mode:o}: {msg}"
        );
        assert!(
            msg.contains(&format!("{mode:04o}")),
            "names the mode: {msg}"
        );
        assert!(
            !marker.exists(),
            "mode {mode:o}: the backend must not have run"
        );
    }
    let e = check_permissions(Path::new("relative/backend")).expect_err("relative");
    assert!(e.to_string().contains("absolute path"), "{e}");
    let e = check_permissions(&dir.path().join("does-not-exist")).expect_err("missing");
    assert!(matches!(e, SecretsError::Stat { .. }), "{e}");
}

#[test]
fn foreign_owner_is_refused_with_chown_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = script(dir.path(), "foreign", "printf '{}'", 0o700);
    // Giving a file away needs root; as an ordinary user the check is shown by a file we
    // cannot own (a system binary owned by root) instead.
    let me = std::fs::metadata(dir.path())
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .expect("meta");
    let target = if me == 0 {
        std::os::unix::fs::chown(&exe, Some(65534), None).expect("chown as root");
        exe
    } else {
        PathBuf::from("/bin/sh")
    };
    let e = check_permissions(&target).expect_err("foreign owner");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("chown {me} {}", target.display())),
        "{msg}"
    );
}

#[test]
fn ten_megabytes_of_output_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = script(
        dir.path(),
        "flood",
        "cat > /dev/null\nhead -c 10485760 /dev/zero | tr '\\0' 'a'",
        0o700,
    );
    let t = Instant::now();
    let e = resolve_config_secrets(&mut config(), &cfg(&exe, Duration::from_secs(20)))
        .expect_err("too big");
    assert!(
        matches!(
            e,
            SecretsError::OutputTooLarge {
                stream: "stdout",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("output exceeds 1048576 bytes"),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "killed early, took {:?}",
        t.elapsed()
    );

    let exe = script(
        dir.path(),
        "flood-stderr",
        "cat > /dev/null\nhead -c 10485760 /dev/zero | tr '\\0' 'e' >&2",
        0o700,
    );
    let mut c = cfg(&exe, Duration::from_secs(20));
    c.output_max_size = 4096;
    let e = resolve_config_secrets(&mut config(), &c).expect_err("too big");
    assert!(
        e.to_string().contains("stderr output exceeds 4096 bytes"),
        "{e}"
    );
}

#[test]
fn config_keys_are_read_from_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = good_backend(dir.path());
    let mut y: Value = serde_yaml::from_str(&format!(
        "secret_backend_command: {}\nsecret_backend_timeout: 7\napi_key: ENC[dd_api_key]\n",
        exe.display()
    ))
    .expect("yaml");
    let c = SecretBackendConfig::from_yaml(&y).expect("valid");
    assert_eq!(c.timeout, Duration::from_secs(7));
    let r = resolve_config_secrets(&mut y, &c).expect("resolves");
    assert_eq!(r.get("dd_api_key"), Some(API_KEY));
    assert_eq!(y["api_key"].as_str(), Some(API_KEY));
}
