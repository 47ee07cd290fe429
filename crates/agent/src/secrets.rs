//! Secrets backend: `ENC[handle]` config values resolved by an operator-provided executable,
//! with the Datadog agent's protocol (`specs/agent.md` §5), so existing backends
//! (`secret-generic-connector`, Vault/AWS helper scripts) work unchanged.
//!
//! Why an executable and not built-in vault clients: the agent stays small, and operators keep
//! whatever secret store they already use. Why so strict about it: the agent runs this program
//! with its own privileges and trusts its stdout with its API key, so:
//!
//! * the file must belong to the agent's user and give **no** rights to group or others
//!   (`mode & 0o077 == 0`), checked before every run; otherwise the agent refuses and says which
//!   `chmod`/`chown` fixes it (anyone who can write that file owns the agent);
//! * it is executed directly, never through a shell (handles cannot inject commands);
//! * it runs in its own process group, killed as a whole at `secret_backend_timeout`;
//! * stdout and stderr are each capped at `secret_backend_output_max_size`;
//! * resolved values live in [`zeroize::Zeroizing`] buffers (wiped on drop), never appear in
//!   logs or error messages (errors name handles, not values), and are handed to the scrubber
//!   ([`ResolvedSecrets::register_with`]) so that a value echoed anywhere else is masked too.
//!
//! Known limits of "memory only": the substituted config tree and the HTTP client keep their
//! own copies of the API key for as long as the agent runs, and serde's parse buffers are not
//! wiped. What this module controls is wiped.
//!
//! Protocol: stdin `{"version":"1.0","secrets":["h1","h2"]}`; stdout
//! `{"h1":{"value":"…","error":null},"h2":{"value":null,"error":"why"}}`. A missing handle, a
//! non-empty `error`, an empty `value`, a non-zero exit, a timeout or oversized output fails the
//! whole resolution.

use serde_json::Value as Json;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use warden_scrubber::Scrubber;
use zeroize::Zeroizing;

/// `secret_backend_timeout` default (Datadog docs: 30 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `secret_backend_output_max_size` default (Datadog docs: 1 MiB).
pub const DEFAULT_OUTPUT_MAX_SIZE: usize = 1024 * 1024;
/// How much of the backend's stderr goes into an error message.
const STDERR_EXCERPT: usize = 512;

/// The `secret_backend_*` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretBackendConfig {
    /// `secret_backend_command`: absolute path of the executable. `None` = no backend.
    pub command: Option<PathBuf>,
    /// `secret_backend_arguments`.
    pub arguments: Vec<String>,
    /// `secret_backend_timeout` (seconds in YAML).
    pub timeout: Duration,
    /// `secret_backend_output_max_size` (bytes), applied to stdout and stderr separately.
    pub output_max_size: usize,
    /// `secret_backend_remove_trailing_line_break`: strip one trailing `\n`/`\r\n` from values.
    pub remove_trailing_line_break: bool,
}

impl Default for SecretBackendConfig {
    fn default() -> Self {
        Self {
            command: None,
            arguments: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            output_max_size: DEFAULT_OUTPUT_MAX_SIZE,
            remove_trailing_line_break: false,
        }
    }
}

impl SecretBackendConfig {
    /// Read the `secret_backend_*` keys from the top level of a parsed `datadog.yaml`. Absent
    /// keys take their defaults; present keys of the wrong type are errors naming the key.
    pub fn from_yaml(root: &Value) -> Result<Self, SecretsError> {
        let mut cfg = Self::default();
        let get = |k: &str| {
            root.as_mapping()
                .and_then(|m| m.get(k))
                .filter(|v| !v.is_null())
        };
        if let Some(v) = get("secret_backend_command") {
            let s = v
                .as_str()
                .ok_or_else(|| invalid("secret_backend_command", "must be a string"))?;
            if !s.is_empty() {
                cfg.command = Some(PathBuf::from(s));
            }
        }
        if let Some(v) = get("secret_backend_arguments") {
            let seq = v
                .as_sequence()
                .ok_or_else(|| invalid("secret_backend_arguments", "must be a list of strings"))?;
            cfg.arguments = seq
                .iter()
                .map(|a| match a {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    Value::Bool(b) => Ok(b.to_string()),
                    _ => Err(invalid(
                        "secret_backend_arguments",
                        "must be a list of strings",
                    )),
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("secret_backend_timeout") {
            let secs = v.as_u64().filter(|s| *s > 0).ok_or_else(|| {
                invalid(
                    "secret_backend_timeout",
                    "must be a positive whole number of seconds",
                )
            })?;
            cfg.timeout = Duration::from_secs(secs);
        }
        if let Some(v) = get("secret_backend_output_max_size") {
            let n = v
                .as_u64()
                .filter(|n| *n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(
                        "secret_backend_output_max_size",
                        "must be a positive number of bytes",
                    )
                })?;
            cfg.output_max_size = n;
        }
        if let Some(v) = get("secret_backend_remove_trailing_line_break") {
            cfg.remove_trailing_line_break = v.as_bool().ok_or_else(|| {
                invalid(
                    "secret_backend_remove_trailing_line_break",
                    "must be true or false",
                )
            })?;
        }
        Ok(cfg)
    }
}

fn invalid(key: &'static str, reason: &str) -> SecretsError {
    SecretsError::InvalidSetting {
        key,
        reason: reason.to_string(),
    }
}

/// Everything that can go wrong. No variant ever carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("invalid {key}: {reason}")]
    InvalidSetting { key: &'static str, reason: String },
    #[error("{path}: ENC[] values are not allowed in secret_* settings")]
    EncInSecretSetting { path: String },
    #[error("{path}: ENC[] with an empty handle")]
    EmptyHandle { path: String },
    #[error(
        "the config uses ENC[] secrets (handles: {handles}) but secret_backend_command is not set"
    )]
    NoBackend { handles: String },
    #[error("secret_backend_command {0:?} must be an absolute path to the executable")]
    RelativeCommand(PathBuf),
    #[error("secret_backend_command {path}: {source}")]
    Stat { path: String, source: io::Error },
    #[error("refusing to run secret_backend_command {path}: {reason}; fix it with `{fix}`")]
    Permissions {
        path: String,
        reason: String,
        fix: String,
    },
    #[error("could not run secret_backend_command {path}: {source}")]
    Spawn { path: String, source: io::Error },
    #[error(
        "secret_backend_command {path} did not finish within {secs} s (secret_backend_timeout) and was killed"
    )]
    Timeout { path: String, secs: f64 },
    #[error(
        "secret_backend_command {path}: {stream} output exceeds {max} bytes (secret_backend_output_max_size); \
         the process was killed"
    )]
    OutputTooLarge {
        path: String,
        stream: &'static str,
        max: usize,
    },
    #[error("secret_backend_command {path} failed ({status}); stderr: {stderr}")]
    Failed {
        path: String,
        status: String,
        stderr: String,
    },
    #[error("secret_backend_command {path} printed invalid output: {reason}")]
    BadOutput { path: String, reason: String },
    #[error("secret backend returned no value for handle {0:?}")]
    MissingHandle(String),
    #[error("secret backend could not fetch handle {handle:?}: {error}")]
    HandleError { handle: String, error: String },
    #[error("secret backend returned an empty value for handle {0:?}")]
    EmptyValue(String),
}

/// Secrets resolved for one config load. Values are wiped from memory on drop.
#[derive(Default)]
pub struct ResolvedSecrets {
    values: BTreeMap<String, Zeroizing<String>>,
    /// Config paths (e.g. `api_key`, `instances[0].password`) that held `ENC[]`, with handles.
    origins: Vec<(String, String)>,
}

impl fmt::Debug for ResolvedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedSecrets")
            .field("handles", &self.values.keys().collect::<Vec<_>>())
            .field(
                "settings",
                &self.origins.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ResolvedSecrets {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Resolved handles, sorted.
    pub fn handles(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The secret for `handle`.
    pub fn get(&self, handle: &str) -> Option<&str> {
        self.values.get(handle).map(|v| v.as_str())
    }

    /// The resolved values, for exact-value scrubbing. Do not log them.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(|v| v.as_str())
    }

    /// `(config path, handle)` for every setting that held `ENC[handle]`.
    pub fn origins(&self) -> &[(String, String)] {
        &self.origins
    }

    /// Feed the scrubber: every value as an exact-value replacer and every setting's key name
    /// (last path segment) as a masked key, as Datadog does. Values too short for exact-value
    /// masking are still covered by their key name; the count of those is returned so the
    /// caller can warn (without the value).
    pub fn register_with(&self, scrubber: &Scrubber) -> usize {
        let mut too_short = 0;
        for v in self.values.values() {
            if scrubber.add_secret(v).is_err() {
                too_short += 1;
            }
        }
        for (path, _) in &self.origins {
            let key = path
                .rsplit(['.', '['])
                .next()
                .unwrap_or(path)
                .trim_end_matches(']');
            if key.parse::<usize>().is_err() {
                // add_key only fails on names without letters or digits.
                let _ = scrubber.add_key(key);
            }
        }
        too_short
    }
}

/// Find `ENC[handle]` whole-scalar values in `root`, resolve them with the backend described by
/// `cfg` (one run for all handles), and substitute the values in place. With no `ENC[]` value
/// the backend is not run (and need not be configured).
pub fn resolve_config_secrets(
    root: &mut Value,
    cfg: &SecretBackendConfig,
) -> Result<ResolvedSecrets, SecretsError> {
    let mut origins = Vec::new();
    collect_handles(root, &mut String::new(), 0, &mut origins)?;
    if origins.is_empty() {
        return Ok(ResolvedSecrets::default());
    }
    let handles: BTreeSet<String> = origins.iter().map(|(_, h)| h.clone()).collect();
    let Some(command) = cfg.command.as_deref() else {
        return Err(SecretsError::NoBackend {
            handles: handles.iter().cloned().collect::<Vec<_>>().join(", "),
        });
    };
    let handles: Vec<String> = handles.into_iter().collect();
    let values = fetch_secrets(command, cfg, &handles)?;
    substitute(root, &values);
    tracing::info!(
        handles = handles.len(),
        settings = origins.len(),
        "resolved ENC[] secrets with secret_backend_command"
    );
    Ok(ResolvedSecrets { values, origins })
}

/// `ENC[handle]` → `handle`.
fn enc_handle(s: &str) -> Option<&str> {
    s.trim().strip_prefix("ENC[")?.strip_suffix(']')
}

fn collect_handles(
    v: &Value,
    path: &mut String,
    depth: usize,
    out: &mut Vec<(String, String)>,
) -> Result<(), SecretsError> {
    match v {
        Value::String(s) => {
            if let Some(h) = enc_handle(s) {
                let h = h.trim();
                if h.is_empty() {
                    return Err(SecretsError::EmptyHandle { path: path.clone() });
                }
                out.push((path.clone(), h.to_string()));
            }
        }
        Value::Mapping(m) => {
            for (k, child) in m {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                if depth == 0 && key.starts_with("secret_") {
                    let mut inner = Vec::new();
                    collect_handles(child, &mut key.clone(), depth + 1, &mut inner)?;
                    if let Some((p, _)) = inner.into_iter().next() {
                        return Err(SecretsError::EncInSecretSetting { path: p });
                    }
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                collect_handles(child, path, depth + 1, out)?;
                path.truncate(len);
            }
        }
        Value::Sequence(seq) => {
            for (i, child) in seq.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                collect_handles(child, path, depth + 1, out)?;
                path.truncate(len);
            }
        }
        Value::Tagged(t) => collect_handles(&t.value, path, depth, out)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn substitute(v: &mut Value, values: &BTreeMap<String, Zeroizing<String>>) {
    match v {
        Value::String(s) => {
            if let Some(secret) = enc_handle(s).and_then(|h| values.get(h.trim())) {
                // Overwrite the placeholder; the config tree owns this copy from now on.
                *s = secret.as_str().to_string();
            }
        }
        Value::Mapping(m) => {
            for (_, child) in m.iter_mut() {
                substitute(child, values);
            }
        }
        Value::Sequence(seq) => seq.iter_mut().for_each(|c| substitute(c, values)),
        Value::Tagged(t) => substitute(&mut t.value, values),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The effective user id of this process.
#[allow(unsafe_code)]
fn current_euid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// SIGKILL every process in the backend's process group.
#[allow(unsafe_code)]
fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) only takes integers. `-pgid` targets the group we created with
    // `process_group(0)` for this child (its pid); a stale group id at worst yields ESRCH.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Refuse an executable the agent should not trust: not owned by the agent's user, any right
/// for group or others, or not executable by its owner.
pub fn check_permissions(path: &Path) -> Result<(), SecretsError> {
    let shown = path.display().to_string();
    if !path.is_absolute() {
        return Err(SecretsError::RelativeCommand(path.to_path_buf()));
    }
    let meta = std::fs::metadata(path).map_err(|source| SecretsError::Stat {
        path: shown.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SecretsError::Stat {
            path: shown,
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    let uid = current_euid();
    if meta.uid() != uid {
        return Err(SecretsError::Permissions {
            reason: format!(
                "it is owned by uid {} but the agent runs as uid {uid}",
                meta.uid()
            ),
            fix: format!("chown {uid} {shown}"),
            path: shown,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretsError::Permissions {
            reason: format!("its mode {mode:04o} gives rights to group or others (must be none)"),
            fix: format!("chmod 700 {shown}"),
            path: shown,
        });
    }
    if mode & 0o100 == 0 {
        return Err(SecretsError::Permissions {
            reason: format!("its mode {mode:04o} does not let its owner execute it"),
            fix: format!("chmod 700 {shown}"),
            path: shown,
        });
    }
    Ok(())
}

enum Event {
    Exited(io::Result<ExitStatus>),
    Out(&'static str, Result<Zeroizing<Vec<u8>>, ()>),
}

/// Read `r` to the end, up to `max` bytes; `Err(())` (after killing the group) beyond that.
fn read_capped(mut r: impl Read, max: usize, pgid: u32) -> Result<Zeroizing<Vec<u8>>, ()> {
    let mut buf = Zeroizing::new(Vec::new());
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        match r.read(&mut chunk[..]) {
            Ok(0) => return Ok(buf),
            Ok(n) => {
                if buf.len() + n > max {
                    kill_group(pgid);
                    return Err(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(buf),
        }
    }
}

/// Run the backend once for `handles` and validate its answer.
fn fetch_secrets(
    command: &Path,
    cfg: &SecretBackendConfig,
    handles: &[String],
) -> Result<BTreeMap<String, Zeroizing<String>>, SecretsError> {
    check_permissions(command)?;
    let shown = command.display().to_string();
    tracing::debug!(command = %shown, handles = ?handles, "running secret backend");

    let payload = serde_json::json!({ "version": "1.0", "secrets": handles }).to_string();
    let mut attempts = 0;
    let mut child = loop {
        let spawned = Command::new(command)
            .args(&cfg.arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        match spawned {
            Ok(c) => break c,
            // ETXTBSY: another thread forked while the file was open for writing (the backend
            // was just installed); the window closes at that child's exec, so retry briefly.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 5 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(SecretsError::Spawn {
                    path: shown.clone(),
                    source,
                });
            }
        }
    };
    let pgid = child.id();
    let deadline = Instant::now() + cfg.timeout;

    let (tx, rx) = mpsc::channel::<Event>();
    let max = cfg.output_max_size;
    if let Some(mut stdin) = child.stdin.take() {
        // A backend that never reads stdin must not block us: write from a thread; a broken
        // pipe is the backend's business (it will fail on its own terms).
        std::thread::spawn(move || {
            let _ = stdin.write_all(payload.as_bytes());
        });
    }
    for (name, stream) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let res = match stream {
                Some(s) => read_capped(s, max, pgid),
                None => Ok(Zeroizing::new(Vec::new())),
            };
            let _ = tx.send(Event::Out(name, res));
        });
    }
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(Event::Exited(child.wait()));
        });
    }
    drop(tx);

    let mut status = None;
    let mut stdout = None;
    let mut stderr = None;
    let mut overflow: Option<&'static str> = None;
    while status.is_none() || stdout.is_none() || stderr.is_none() {
        let now = Instant::now();
        let remaining = deadline.saturating_duration_since(now);
        match rx.recv_timeout(remaining) {
            Ok(Event::Exited(s)) => status = Some(s),
            Ok(Event::Out(name, Ok(buf))) => {
                if name == "stdout" {
                    stdout = Some(buf);
                } else {
                    stderr = Some(buf);
                }
            }
            Ok(Event::Out(name, Err(()))) => {
                overflow.get_or_insert(name);
                if name == "stdout" {
                    stdout = Some(Zeroizing::new(Vec::new()));
                } else {
                    stderr = Some(Zeroizing::new(Vec::new()));
                }
            }
            Err(_) => {
                // Also when the leader has exited: a background child may still hold the
                // pipes open, and while any member lives the group id cannot be reused.
                kill_group(pgid);
                return Err(SecretsError::Timeout {
                    path: shown,
                    secs: cfg.timeout.as_secs_f64(),
                });
            }
        }
    }
    if let Some(stream) = overflow {
        return Err(SecretsError::OutputTooLarge {
            path: shown,
            stream,
            max,
        });
    }
    let status = status
        .expect("loop exits only with a status")
        .map_err(|source| SecretsError::Spawn {
            path: shown.clone(),
            source,
        })?;
    let stdout = stdout.expect("loop exits only with stdout");
    let stderr = stderr.expect("loop exits only with stderr");

    if !status.success() {
        return Err(SecretsError::Failed {
            path: shown,
            status: status.to_string(),
            stderr: excerpt(&Scrubber::default(), &String::from_utf8_lossy(&stderr)),
        });
    }
    let values = parse_output(&shown, &stdout, handles, cfg.remove_trailing_line_break)?;
    if !stderr.is_empty() {
        // Datadog logs the backend's stderr; do it scrubbed, with the fresh values masked.
        let scrubber = Scrubber::default();
        for v in values.values() {
            let _ = scrubber.add_secret(v);
        }
        tracing::info!(command = %shown, stderr = %excerpt(&scrubber, &String::from_utf8_lossy(&stderr)), "secret backend stderr");
    }
    Ok(values)
}

/// Scrubbed, trimmed, truncated text for messages.
fn excerpt(scrubber: &Scrubber, text: &str) -> String {
    let scrubbed = scrubber.scrub_text(text.trim());
    if scrubbed.len() <= STDERR_EXCERPT {
        return scrubbed;
    }
    let mut end = STDERR_EXCERPT;
    while !scrubbed.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &scrubbed[..end], scrubbed.len())
}

fn parse_output(
    shown: &str,
    stdout: &[u8],
    handles: &[String],
    strip_line_break: bool,
) -> Result<BTreeMap<String, Zeroizing<String>>, SecretsError> {
    let bad = |reason: String| SecretsError::BadOutput {
        path: shown.to_string(),
        reason,
    };
    // Parse into a generic tree first: serde_json's syntax errors carry positions only, while
    // typed deserialisation errors can quote the offending (secret) string.
    let mut tree: Json =
        serde_json::from_slice(stdout).map_err(|e| bad(format!("not JSON ({e})")))?;
    let Json::Object(map) = &mut tree else {
        return Err(bad("expected a JSON object keyed by handle".to_string()));
    };
    let mut out = BTreeMap::new();
    let scrubber = Scrubber::default();
    for h in handles {
        let Some(entry) = map.get_mut(h) else {
            return Err(SecretsError::MissingHandle(h.clone()));
        };
        let Json::Object(entry) = entry else {
            return Err(bad(format!(
                "the entry for handle {h:?} is not an object {{\"value\",\"error\"}}"
            )));
        };
        match entry.get("error") {
            None | Some(Json::Null) => {}
            Some(Json::String(e)) if e.is_empty() => {}
            Some(Json::String(e)) => {
                return Err(SecretsError::HandleError {
                    handle: h.clone(),
                    error: excerpt(&scrubber, e),
                });
            }
            Some(_) => return Err(bad(format!("the error for handle {h:?} is not a string"))),
        }
        let value = match entry.get_mut("value") {
            Some(Json::String(s)) => Zeroizing::new(std::mem::take(s)),
            None | Some(Json::Null) => return Err(SecretsError::EmptyValue(h.clone())),
            Some(_) => return Err(bad(format!("the value for handle {h:?} is not a string"))),
        };
        let mut value = value;
        if strip_line_break {
            let cut = if value.ends_with("\r\n") {
                2
            } else {
                usize::from(value.ends_with('\n'))
            };
            let keep = value.len() - cut;
            value.truncate(keep);
        }
        if value.is_empty() {
            return Err(SecretsError::EmptyValue(h.clone()));
        }
        out.insert(h.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_yaml_defaults_and_errors() {
        let cfg = SecretBackendConfig::from_yaml(&Value::Null).expect("defaults");
        assert_eq!(cfg, SecretBackendConfig::default());
        assert_eq!(cfg.timeout, Duration::from_secs(30));
        assert_eq!(cfg.output_max_size, 1 << 20);
        let y: Value = serde_yaml::from_str(
            "secret_backend_command: /opt/b\nsecret_backend_arguments: [a, 2]\nsecret_backend_timeout: 5\nsecret_backend_output_max_size: 100\n",
        )
        .expect("yaml");
        let cfg = SecretBackendConfig::from_yaml(&y).expect("valid");
        assert_eq!(cfg.command.as_deref(), Some(Path::new("/opt/b")));
        assert_eq!(cfg.arguments, vec!["a", "2"]);
        assert_eq!(cfg.timeout, Duration::from_secs(5));
        assert_eq!(cfg.output_max_size, 100);
        let y: Value = serde_yaml::from_str("secret_backend_timeout: -1").expect("yaml");
        let e = SecretBackendConfig::from_yaml(&y)
            .expect_err("negative")
            .to_string();
        assert!(e.contains("secret_backend_timeout"), "{e}");
    }

    #[test]
    fn collects_whole_scalar_handles_with_paths() {
        let y: Value = serde_yaml::from_str(
            "api_key: ENC[dd_key]\nnote: not ENC[x] inside\ninstances:\n  - password: ENC[db]\n    host: h\n",
        )
        .expect("yaml");
        let mut out = Vec::new();
        collect_handles(&y, &mut String::new(), 0, &mut out).expect("ok");
        assert_eq!(
            out,
            vec![
                ("api_key".to_string(), "dd_key".to_string()),
                ("instances[0].password".to_string(), "db".to_string())
            ]
        );
        let y: Value = serde_yaml::from_str("secret_backend_command: ENC[x]").expect("yaml");
        let e = collect_handles(&y, &mut String::new(), 0, &mut Vec::new()).expect_err("refused");
        assert!(matches!(e, SecretsError::EncInSecretSetting { .. }), "{e}");
    }

    #[test]
    fn no_enc_values_needs_no_backend() {
        let mut y: Value = serde_yaml::from_str("api_key: abc").expect("yaml");
        let r =
            resolve_config_secrets(&mut y, &SecretBackendConfig::default()).expect("nothing to do");
        assert!(r.is_empty());
        let mut y: Value = serde_yaml::from_str("api_key: ENC[k]").expect("yaml");
        let e = resolve_config_secrets(&mut y, &SecretBackendConfig::default())
            .expect_err("no backend");
        assert!(
            e.to_string().contains("secret_backend_command is not set"),
            "{e}"
        );
    }

    #[test]
    fn output_validation_names_handles_not_values() {
        let hs = vec!["a".to_string(), "b".to_string()];
        let ok = parse_output(
            "/b",
            br#"{"a":{"value":"va1ue-A","error":null},"b":{"value":"vb"}}"#,
            &hs,
            false,
        )
        .expect("valid");
        assert_eq!(ok["a"].as_str(), "va1ue-A");
        let e =
            parse_output("/b", br#"{"a":{"value":"va1ue-A"}}"#, &hs, false).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "secret backend returned no value for handle \"b\""
        );
        let e = parse_output("/b", br#"{"a":{"value":""},"b":{"value":"x"}}"#, &hs, false)
            .expect_err("empty");
        assert!(matches!(e, SecretsError::EmptyValue(ref h) if h == "a"));
        let e = parse_output(
            "/b",
            br#"{"a":"va1ue-A-plain","b":{"value":"x"}}"#,
            &hs,
            false,
        )
        .expect_err("shape");
        assert!(!e.to_string().contains("va1ue-A-plain"), "{e}");
        let e = parse_output("/b", b"{\"a\": {\"value\": \"va1ue-A-trunc", &hs, false)
            .expect_err("syntax");
        assert!(!e.to_string().contains("va1ue-A-trunc"), "{e}");
        let nl = parse_output(
            "/b",
            br#"{"a":{"value":"x1\n"},"b":{"value":"y\r\n"}}"#,
            &hs,
            true,
        )
        .expect("valid");
        assert_eq!((nl["a"].as_str(), nl["b"].as_str()), ("x1", "y"));
    }
}
