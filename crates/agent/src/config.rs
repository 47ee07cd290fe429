//! Agent configuration: one YAML file, Datadog-like key names, `WARDEN_*` environment overrides.
//!
//! Two phases, like ripgrep's low/high args: the YAML is read into a loose mapping, then every
//! known key is converted and validated on its own so that *all* problems are reported at once,
//! each with the line it came from, instead of stopping at the first one. Unknown keys are
//! errors too (with a suggestion): a typo in `forwarder_storage_max_size_in_bytes` must not
//! silently turn off the disk queue.
//!
//! Security: the file may hold the API key, so the agent refuses to start when the file is
//! readable or writable by others (or writable by its group), and says which `chmod` fixes it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Minimum TLS version for outgoing connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MinTlsVersion {
    #[serde(rename = "tlsv1.2")]
    Tls12,
    #[serde(rename = "tlsv1.3")]
    Tls13,
}

/// Compression of forwarded payloads (`serializer_compressor_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    /// zlib, sent as `Content-Encoding: deflate` like the Datadog agent.
    Zlib,
}

/// A built-in HTTP check (`checks.http[]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckConfig {
    pub name: String,
    pub url: String,
    /// Seconds between runs (default 15).
    #[serde(default = "default_check_interval")]
    pub interval: u64,
    /// Seconds before the request is abandoned and reported CRITICAL (default 10).
    #[serde(default = "default_check_timeout")]
    pub timeout: u64,
    /// Expected status code; any 2xx/3xx when absent.
    #[serde(default)]
    pub expected_status: Option<u16>,
    /// Extra CA bundle (PEM) to trust for this endpoint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Days before certificate expiry at which the check turns WARNING (default 14) / CRITICAL (7).
    #[serde(default = "default_days_warning")]
    pub days_warning: u64,
    #[serde(default = "default_days_critical")]
    pub days_critical: u64,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A built-in TCP connect check (`checks.tcp[]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheckConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    #[serde(default = "default_check_interval")]
    pub interval: u64,
    #[serde(default = "default_check_timeout")]
    pub timeout: u64,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A built-in process check (`checks.process[]`): processes whose name equals `process_name`
/// or whose command line contains `search_string`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessCheckConfig {
    pub name: String,
    #[serde(default)]
    pub process_name: Option<String>,
    #[serde(default)]
    pub search_string: Option<String>,
    /// Fewer matching processes than this is CRITICAL (default 1).
    #[serde(default = "default_min_procs")]
    pub min_procs: u64,
    #[serde(default = "default_check_interval")]
    pub interval: u64,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Built-in checks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksConfig {
    #[serde(default)]
    pub http: Vec<HttpCheckConfig>,
    #[serde(default)]
    pub tcp: Vec<TcpCheckConfig>,
    #[serde(default)]
    pub process: Vec<ProcessCheckConfig>,
}

fn default_check_interval() -> u64 {
    15
}
fn default_check_timeout() -> u64 {
    10
}
fn default_days_warning() -> u64 {
    14
}
fn default_days_critical() -> u64 {
    7
}
fn default_min_procs() -> u64 {
    1
}

/// The trace intake (`apm_config`): where tracers (ddtrace, Warden's app-protection layer)
/// send their spans.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApmConfig {
    /// Run the trace intake (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// TCP port of the intake (default 8126, like the Datadog trace agent; 0 = any free port).
    #[serde(default = "default_receiver_port")]
    pub receiver_port: u16,
    /// Listen on all interfaces instead of loopback (default false).
    #[serde(default)]
    pub apm_non_local_traffic: bool,
    /// Largest request body accepted, bytes (default 50 MiB); larger ones get 413.
    #[serde(default = "default_max_payload_size")]
    pub max_payload_size: u64,
}

impl Default for ApmConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            receiver_port: default_receiver_port(),
            apm_non_local_traffic: false,
            max_payload_size: default_max_payload_size(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_receiver_port() -> u16 {
    8126
}
fn default_max_payload_size() -> u64 {
    50 * 1024 * 1024
}

/// Secrets resolved from the backend. Never printed (its `Debug` only counts them) and
/// ignored by equality, which compares settings, not secret material.
#[derive(Clone, Default)]
pub struct SecretValues(pub Option<Arc<crate::secrets::ResolvedSecrets>>);

impl PartialEq for SecretValues {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.as_ref().map_or(0, |r| r.len());
        write!(f, "SecretValues({n} redacted)")
    }
}

/// The validated agent configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentConfig {
    /// Where the file was read from (None when built in code).
    #[serde(skip)]
    pub path: Option<PathBuf>,
    /// Values resolved from `ENC[handle]` by the secrets backend (memory only, zeroized on
    /// drop); the scrubber masks them wherever they might be printed.
    #[serde(skip)]
    pub secrets: SecretValues,
    pub api_key: String,
    /// Base URL of the Warden server intake, e.g. `https://warden.example:8443`.
    pub server_url: String,
    /// Host name reported with every series; the system host name when absent.
    pub hostname: String,
    pub tags: Vec<String>,
    pub log_level: String,

    // --- DogStatsD ---------------------------------------------------------------------
    /// UDP port; 0 disables UDP.
    pub dogstatsd_port: u16,
    /// Address the UDP listener binds (`bind_host`), loopback by default.
    pub bind_host: String,
    /// Listen on all interfaces instead of `bind_host`.
    pub dogstatsd_non_local_traffic: bool,
    /// Unix datagram socket path; empty/absent disables it.
    pub dogstatsd_socket: Option<PathBuf>,
    /// Largest datagram read, bytes.
    pub dogstatsd_buffer_size: usize,
    /// Requested `SO_RCVBUF`, bytes (0 = kernel default).
    pub dogstatsd_so_rcvbuf: usize,
    /// Batches of datagrams queued between the reader thread and the parser.
    pub dogstatsd_queue_size: usize,
    /// Tags added to every DogStatsD metric.
    pub dogstatsd_tags: Vec<String>,
    /// Seconds a counter keeps reporting 0 after its last sample.
    pub dogstatsd_expiry_seconds: u64,
    /// Transports (`udp`, `uds`) on which an unterminated last line is dropped.
    pub dogstatsd_eol_required: Vec<String>,
    pub histogram_aggregates: Vec<String>,
    pub histogram_percentiles: Vec<f64>,

    // --- Host collector and checks ----------------------------------------------------
    /// Collect the `system.*` host metrics.
    pub collect_host_metrics: bool,
    /// Seconds between host-metric collections.
    pub host_metrics_interval: u64,
    /// Root of procfs (for containers: `/host/proc`).
    pub procfs_path: PathBuf,
    /// Root of sysfs.
    pub sysfs_path: PathBuf,
    pub checks: ChecksConfig,
    /// Folder of user check executables.
    pub checks_d: Option<PathBuf>,
    /// Default seconds between runs of a user check.
    pub check_interval: u64,
    /// Default seconds before a user check is killed and reported CRITICAL.
    pub check_timeout: u64,

    // --- Forwarder ---------------------------------------------------------------------
    pub min_tls_version: MinTlsVersion,
    /// PEM bundle of CAs to trust for the server (the Warden server's own CA).
    pub tls_ca_file: Option<PathBuf>,
    /// Permit an `http://` `server_url` (never implied).
    pub allow_insecure_http: bool,
    pub serializer_compressor_kind: Compression,
    /// Seconds before one HTTP transaction is abandoned (and retried).
    pub forwarder_timeout: u64,
    pub forwarder_backoff_base: f64,
    pub forwarder_backoff_factor: f64,
    /// Upper bound of the retry backoff, seconds.
    pub forwarder_backoff_max: f64,
    /// Memory retry queue bound, bytes of payload.
    pub forwarder_retry_queue_payloads_max_size: u64,
    /// On-disk retry queue bound, bytes; 0 disables the disk queue.
    pub forwarder_storage_max_size_in_bytes: u64,
    /// Folder of the on-disk retry queue.
    pub forwarder_storage_path: PathBuf,
    /// Seconds between flushes of closed aggregation buckets and of agent telemetry.
    pub flush_interval: u64,
    /// Folder for runtime state (queue, tokens).
    pub run_path: PathBuf,

    // --- Local API and GUI ---------------------------------------------------------------
    /// Address of the local command API (`warden agent status|config|check|flare|gui`). Must
    /// be a loopback address: the API is for local administration only.
    pub cmd_host: String,
    /// HTTPS port of the local API: -1 disables it, 0 picks a free port (written to
    /// `<run_path>/ipc_endpoint` for the CLI).
    pub cmd_port: i32,
    /// File holding the local API bearer token (created 0600 if missing); default
    /// `<config dir>/auth_token`.
    pub auth_token_file_path: PathBuf,
    /// HTTPS port of the browser GUI on `cmd_host`: -1 (default) disables it, 0 picks a free
    /// port.
    pub gui_port: i32,
    /// Seconds between pulls of the app-protection denylists and ruleset from the server
    /// (served to local apps on the trace port); 0 disables. Default 30.
    pub appsec_rc_interval: u64,

    // --- Trace intake --------------------------------------------------------------------
    pub apm_config: ApmConfig,
}

/// One problem in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key (`checks.http`), or empty for whole-file problems.
    pub key: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.line, self.key.is_empty()) {
            (Some(l), false) => write!(f, "line {l}: `{}`: {}", self.key, self.message),
            (None, false) => write!(f, "`{}`: {}", self.key, self.message),
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "config file {path} is accessible by other users (mode {mode:04o}); it may hold secrets, \
         so the agent refuses to start. Fix: chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{} problem(s) in {}:\n{}", .issues.len(), .source_name, render(.issues))]
    Invalid {
        source_name: String,
        issues: Vec<ConfigIssue>,
    },
}

fn render(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Keys the agent understands, for unknown-key detection and suggestions.
const KNOWN_KEYS: &[&str] = &[
    "api_key",
    "server_url",
    "hostname",
    "tags",
    "log_level",
    "dogstatsd_port",
    "bind_host",
    "dogstatsd_non_local_traffic",
    "dogstatsd_socket",
    "dogstatsd_buffer_size",
    "dogstatsd_so_rcvbuf",
    "dogstatsd_queue_size",
    "dogstatsd_tags",
    "dogstatsd_expiry_seconds",
    "dogstatsd_eol_required",
    "histogram_aggregates",
    "histogram_percentiles",
    "collect_host_metrics",
    "host_metrics_interval",
    "procfs_path",
    "sysfs_path",
    "checks",
    "checks_d",
    "check_interval",
    "check_timeout",
    "min_tls_version",
    "tls_ca_file",
    "allow_insecure_http",
    "skip_ssl_validation",
    "serializer_compressor_kind",
    "forwarder_timeout",
    "forwarder_backoff_base",
    "forwarder_backoff_factor",
    "forwarder_backoff_max",
    "forwarder_retry_queue_payloads_max_size",
    "forwarder_storage_max_size_in_bytes",
    "forwarder_storage_path",
    "flush_interval",
    "run_path",
    "cmd_host",
    "cmd_port",
    "auth_token_file_path",
    "gui_port",
    "apm_config",
    "appsec_rc_interval",
    "secret_backend_command",
    "secret_backend_arguments",
    "secret_backend_timeout",
    "secret_backend_output_max_size",
    "secret_backend_remove_trailing_line_break",
];

const HISTOGRAM_AGGREGATES: &[&str] = &["max", "min", "median", "avg", "sum", "count"];

impl AgentConfig {
    /// Reads, checks permissions of, and validates a config file, applying `WARDEN_*`
    /// overrides from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        check_permissions(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        let mut cfg = Self::from_yaml_with_env(&text, &path.display().to_string(), &env)?;
        cfg.path = Some(path.to_owned());
        if cfg.run_path == Path::new("") {
            cfg.run_path = path.parent().unwrap_or(Path::new(".")).join("run");
        }
        if cfg.forwarder_storage_path == Path::new("") {
            cfg.forwarder_storage_path = cfg.run_path.join("transactions_to_retry");
        }
        if cfg.auth_token_file_path == Path::new("") {
            cfg.auth_token_file_path = path.parent().unwrap_or(Path::new(".")).join("auth_token");
        }
        Ok(cfg)
    }

    /// Validates YAML text plus `WARDEN_*` overrides (given explicitly, for tests).
    ///
    /// Relative defaults that depend on the file location (`run_path`) are left empty here and
    /// filled by [`AgentConfig::load`].
    pub fn from_yaml_with_env(
        text: &str,
        source_name: &str,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut issues = Vec::new();
        let mut map: BTreeMap<String, serde_yaml::Value> = BTreeMap::new();
        let mut parsed = serde_yaml::from_str::<serde_yaml::Value>(text);
        // `ENC[handle]` values are resolved by the secrets backend before anything else looks
        // at the values, so validation sees the real ones and nothing is written anywhere.
        let mut secrets = SecretValues::default();
        if let Ok(root @ serde_yaml::Value::Mapping(_)) = &mut parsed {
            let resolved = crate::secrets::SecretBackendConfig::from_yaml(root)
                .and_then(|sb| crate::secrets::resolve_config_secrets(root, &sb));
            match resolved {
                Ok(r) if !r.is_empty() => secrets = SecretValues(Some(Arc::new(r))),
                Ok(_) => {}
                Err(e) => issues.push(ConfigIssue {
                    key: "secret_backend_command".into(),
                    line: line_of(text, "secret_backend_command"),
                    message: e.to_string(),
                }),
            }
        }
        match parsed {
            Ok(serde_yaml::Value::Mapping(m)) => {
                for (k, v) in m {
                    match k {
                        serde_yaml::Value::String(k) => {
                            map.insert(k, v);
                        }
                        other => issues.push(ConfigIssue {
                            key: String::new(),
                            line: None,
                            message: format!("keys must be strings, found {other:?}"),
                        }),
                    }
                }
            }
            Ok(serde_yaml::Value::Null) => {}
            Ok(_) => issues.push(ConfigIssue {
                key: String::new(),
                line: Some(1),
                message: "the configuration must be a YAML mapping of `key: value`".into(),
            }),
            Err(e) => issues.push(ConfigIssue {
                key: String::new(),
                line: e.location().map(|l| l.line()),
                message: format!("invalid YAML: {e}"),
            }),
        }
        let mut overridden = Vec::new();
        for (k, v) in env {
            let Some(key) = k.strip_prefix("WARDEN_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if !KNOWN_KEYS.contains(&key.as_str()) || key == "checks" || key == "apm_config" {
                continue;
            }
            map.insert(key.clone(), env_value(v));
            overridden.push(key);
        }

        for key in map.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                let hint = suggest(key)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                issues.push(ConfigIssue {
                    key: key.clone(),
                    line: line_of(text, key),
                    message: format!("unknown key{hint}"),
                });
            }
        }

        let mut r = Reader {
            text,
            map: &map,
            issues: &mut issues,
            overridden: &overridden,
        };
        let api_key: String = r.get("api_key").unwrap_or_default();
        if api_key.trim().is_empty() {
            r.issue(
                "api_key",
                "is required (the Warden API key used for intake)",
            );
        }
        let server_url: String = r
            .get("server_url")
            .unwrap_or_else(|| "https://127.0.0.1:8443".into());
        let allow_insecure_http: bool = r.get("allow_insecure_http").unwrap_or(false);
        match server_url.split_once("://") {
            Some(("https", rest)) if !rest.is_empty() => {}
            Some(("http", rest)) if !rest.is_empty() => {
                if !allow_insecure_http {
                    r.issue(
                        "server_url",
                        "is plaintext http://; use https:// or set `allow_insecure_http: true` \
                         to accept sending data and the API key unencrypted",
                    );
                }
            }
            _ => r.issue(
                "server_url",
                &format!("must be an https:// URL, got {server_url:?}"),
            ),
        }
        if r.get::<bool>("skip_ssl_validation").unwrap_or(false) {
            r.issue(
                "skip_ssl_validation",
                "is not supported: Warden never disables certificate checks; trust the \
                 server's CA with `tls_ca_file` instead",
            );
        }
        let hostname: String = r.get("hostname").unwrap_or_else(system_hostname);
        let tags: Vec<String> = r.get("tags").unwrap_or_default();
        let log_level: String = r.get("log_level").unwrap_or_else(|| "info".into());
        if !["trace", "debug", "info", "warn", "error", "off"].contains(&log_level.as_str()) {
            r.issue(
                "log_level",
                "must be one of trace, debug, info, warn, error, off",
            );
        }

        let histogram_aggregates: Vec<String> = r
            .get("histogram_aggregates")
            .unwrap_or_else(|| ["max", "median", "avg", "count"].map(String::from).to_vec());
        for a in &histogram_aggregates {
            if !HISTOGRAM_AGGREGATES.contains(&a.as_str()) {
                r.issue(
                    "histogram_aggregates",
                    &format!(
                        "unknown aggregate {a:?} (allowed: {})",
                        HISTOGRAM_AGGREGATES.join(", ")
                    ),
                );
            }
        }
        let histogram_percentiles: Vec<f64> = match r
            .get::<Vec<serde_yaml::Value>>("histogram_percentiles")
        {
            None => vec![0.95],
            Some(vals) => {
                let mut out = Vec::new();
                for v in vals {
                    let p = match &v {
                        serde_yaml::Value::Number(n) => n.as_f64(),
                        serde_yaml::Value::String(s) => s.parse::<f64>().ok(),
                        _ => None,
                    };
                    match p {
                        Some(p) if p > 0.0 && p < 1.0 => out.push(p),
                        _ => r.issue(
                            "histogram_percentiles",
                            &format!("{v:?} is not a percentile between 0 and 1 (e.g. \"0.95\")"),
                        ),
                    }
                }
                out
            }
        };
        let eol: Vec<String> = r.get("dogstatsd_eol_required").unwrap_or_default();
        for t in &eol {
            if !["udp", "uds"].contains(&t.as_str()) {
                r.issue(
                    "dogstatsd_eol_required",
                    &format!("unknown transport {t:?} (udp, uds)"),
                );
            }
        }
        let buffer_size: usize = r.get("dogstatsd_buffer_size").unwrap_or(8192);
        if !(512..=65_536).contains(&buffer_size) {
            r.issue(
                "dogstatsd_buffer_size",
                "must be between 512 and 65536 bytes",
            );
        }
        let queue_size: usize = r.get("dogstatsd_queue_size").unwrap_or(1024);
        if queue_size == 0 {
            r.issue("dogstatsd_queue_size", "must be at least 1");
        }
        let backoff_max: f64 = r.get("forwarder_backoff_max").unwrap_or(64.0);
        let backoff_base: f64 = r.get("forwarder_backoff_base").unwrap_or(2.0);
        let backoff_factor: f64 = r.get("forwarder_backoff_factor").unwrap_or(2.0);
        if backoff_base <= 0.0 || backoff_factor < 1.0 || backoff_max <= 0.0 {
            r.issue(
                "forwarder_backoff_base",
                "backoff settings must be positive (base > 0, factor >= 1, max > 0)",
            );
        }
        let mem_queue: u64 = r
            .get("forwarder_retry_queue_payloads_max_size")
            .unwrap_or(15 * 1024 * 1024);
        let checks: ChecksConfig = r.get("checks").unwrap_or_default();
        for p in &checks.process {
            if p.process_name.is_none() && p.search_string.is_none() {
                r.issue(
                    "checks",
                    &format!(
                        "process check {:?} needs `process_name` or `search_string`",
                        p.name
                    ),
                );
            }
        }
        for h in &checks.http {
            if !(h.url.starts_with("https://") || h.url.starts_with("http://")) {
                r.issue(
                    "checks",
                    &format!(
                        "http check {:?}: url must start with http:// or https://",
                        h.name
                    ),
                );
            }
        }
        let cmd_host: String = r.get("cmd_host").unwrap_or_else(|| "127.0.0.1".into());
        if !is_loopback_host(&cmd_host) {
            r.issue(
                "cmd_host",
                &format!(
                    "{cmd_host:?} is not a loopback address; the local API and GUI only listen \
                     on 127.0.0.1, ::1 or localhost"
                ),
            );
        }
        let cmd_port: i32 = r.get("cmd_port").unwrap_or(5001);
        let gui_port: i32 = r.get("gui_port").unwrap_or(-1);
        for (key, port) in [("cmd_port", cmd_port), ("gui_port", gui_port)] {
            if !(-1..=65_535).contains(&port) {
                r.issue(
                    key,
                    "must be a port 1-65535, 0 (any free port) or -1 (disabled)",
                );
            }
        }
        if cmd_port >= 1 && cmd_port == gui_port {
            r.issue("gui_port", "must differ from `cmd_port`");
        }
        if gui_port >= 0 && cmd_port < 0 {
            r.issue(
                "gui_port",
                "the GUI needs the local API for sign-in links; set `cmd_port` too",
            );
        }
        let apm_config: ApmConfig = r.get("apm_config").unwrap_or_default();
        if apm_config.max_payload_size == 0 {
            r.issue("apm_config", "`max_payload_size` must be at least 1 byte");
        }
        let flush_interval: u64 = r.get("flush_interval").unwrap_or(1);
        if flush_interval == 0 {
            r.issue("flush_interval", "must be at least 1 second");
        }

        let cfg = AgentConfig {
            path: None,
            secrets,
            api_key,
            server_url: server_url.trim_end_matches('/').to_owned(),
            hostname,
            tags,
            log_level,
            dogstatsd_port: r.get("dogstatsd_port").unwrap_or(8125),
            bind_host: r.get("bind_host").unwrap_or_else(|| "127.0.0.1".into()),
            dogstatsd_non_local_traffic: r.get("dogstatsd_non_local_traffic").unwrap_or(false),
            dogstatsd_socket: r
                .get::<String>("dogstatsd_socket")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            dogstatsd_buffer_size: buffer_size,
            dogstatsd_so_rcvbuf: r.get("dogstatsd_so_rcvbuf").unwrap_or(16 * 1024 * 1024),
            dogstatsd_queue_size: queue_size,
            dogstatsd_tags: r.get("dogstatsd_tags").unwrap_or_default(),
            dogstatsd_expiry_seconds: r.get("dogstatsd_expiry_seconds").unwrap_or(300),
            dogstatsd_eol_required: eol,
            histogram_aggregates,
            histogram_percentiles,
            collect_host_metrics: r.get("collect_host_metrics").unwrap_or(true),
            host_metrics_interval: r.get("host_metrics_interval").unwrap_or(15),
            procfs_path: r
                .get("procfs_path")
                .unwrap_or_else(|| PathBuf::from("/proc")),
            sysfs_path: r.get("sysfs_path").unwrap_or_else(|| PathBuf::from("/sys")),
            checks,
            checks_d: r.get("checks_d"),
            check_interval: r.get("check_interval").unwrap_or(15),
            check_timeout: r.get("check_timeout").unwrap_or(10),
            min_tls_version: r.get("min_tls_version").unwrap_or(MinTlsVersion::Tls12),
            tls_ca_file: r.get("tls_ca_file"),
            allow_insecure_http,
            serializer_compressor_kind: r
                .get("serializer_compressor_kind")
                .unwrap_or(Compression::Zstd),
            forwarder_timeout: r.get("forwarder_timeout").unwrap_or(20),
            forwarder_backoff_base: backoff_base,
            forwarder_backoff_factor: backoff_factor,
            forwarder_backoff_max: backoff_max,
            forwarder_retry_queue_payloads_max_size: mem_queue,
            forwarder_storage_max_size_in_bytes: r
                .get("forwarder_storage_max_size_in_bytes")
                .unwrap_or(0),
            forwarder_storage_path: r.get("forwarder_storage_path").unwrap_or_default(),
            flush_interval,
            run_path: r.get("run_path").unwrap_or_default(),
            cmd_host,
            cmd_port,
            auth_token_file_path: r.get("auth_token_file_path").unwrap_or_default(),
            gui_port,
            apm_config,
            appsec_rc_interval: r.get("appsec_rc_interval").unwrap_or(30),
        };
        if issues.is_empty() {
            Ok(cfg)
        } else {
            issues.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
            Err(ConfigError::Invalid {
                source_name: source_name.to_owned(),
                issues,
            })
        }
    }
}

/// Field-by-field converter that records problems instead of stopping.
struct Reader<'a> {
    text: &'a str,
    map: &'a BTreeMap<String, serde_yaml::Value>,
    issues: &'a mut Vec<ConfigIssue>,
    overridden: &'a [String],
}

impl Reader<'_> {
    fn get<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let v = self.map.get(key)?;
        if v.is_null() {
            return None;
        }
        match serde_yaml::from_value::<T>(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                let from_env = self.overridden.iter().any(|k| k == key);
                let msg = if from_env {
                    format!(
                        "{e} (value from environment variable WARDEN_{})",
                        key.to_ascii_uppercase()
                    )
                } else {
                    e.to_string()
                };
                self.issue(key, &msg);
                None
            }
        }
    }

    fn issue(&mut self, key: &str, message: &str) {
        let from_env = self.overridden.iter().any(|k| k == key);
        self.issues.push(ConfigIssue {
            key: key.to_owned(),
            line: if from_env {
                None
            } else {
                line_of(self.text, key)
            },
            message: message.to_owned(),
        });
    }
}

/// Interprets an environment override as YAML (so `8125`, `true`, `[a, b]` work), falling
/// back to a comma-separated list or a plain string.
fn env_value(v: &str) -> serde_yaml::Value {
    match serde_yaml::from_str::<serde_yaml::Value>(v) {
        Ok(serde_yaml::Value::String(s)) if s.contains(',') && !s.contains("://") => {
            serde_yaml::Value::Sequence(
                s.split(',')
                    .map(|p| serde_yaml::Value::String(p.trim().to_owned()))
                    .collect(),
            )
        }
        Ok(val @ (serde_yaml::Value::Mapping(_) | serde_yaml::Value::Tagged(_))) => {
            let _ = val;
            serde_yaml::Value::String(v.to_owned())
        }
        Ok(val) => val,
        Err(_) => serde_yaml::Value::String(v.to_owned()),
    }
}

/// 1-based line of a top-level `key:` in the YAML text.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

fn suggest(unknown: &str) -> Option<&'static str> {
    KNOWN_KEYS
        .iter()
        .map(|k| (strsim(unknown, k), *k))
        .filter(|(d, k)| *d <= 3.max(k.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (small inputs only).
fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// True for `localhost` and loopback IP literals (`127.0.0.0/8`, `::1`).
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The kernel's host name, or `localhost` if it cannot be read.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Refuses files that others can read or write, or that the group can write.
pub fn check_permissions(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o007 != 0 || mode & 0o020 != 0 {
        return Err(ConfigError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_yaml_with_env(text, "test.yaml", &[])
    }

    #[test]
    fn defaults_follow_the_datadog_agent() {
        let c = parse("api_key: abc\n").unwrap();
        assert_eq!(c.dogstatsd_port, 8125);
        assert_eq!(c.bind_host, "127.0.0.1");
        assert_eq!(c.histogram_aggregates, ["max", "median", "avg", "count"]);
        assert_eq!(c.histogram_percentiles, [0.95]);
        assert_eq!(c.forwarder_retry_queue_payloads_max_size, 15 * 1024 * 1024);
        assert_eq!(c.forwarder_storage_max_size_in_bytes, 0);
        assert_eq!(c.min_tls_version, MinTlsVersion::Tls12);
        assert_eq!(c.serializer_compressor_kind, Compression::Zstd);
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_line() {
        let text = "api_key: abc\ndogstatsd_port: nope\nmin_tls_version: tlsv1.0\nforwarder_storage_max_size_in_byte: 5\nhistogram_aggregates: [max, p42]\n";
        let err = parse(text).unwrap_err();
        let ConfigError::Invalid { issues, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(issues.len(), 4, "{err}");
        let lines: Vec<_> = issues.iter().map(|i| i.line).collect();
        assert_eq!(lines, [Some(2), Some(3), Some(4), Some(5)]);
        let msg = err.to_string();
        assert!(
            msg.contains("did you mean `forwarder_storage_max_size_in_bytes`"),
            "{msg}"
        );
        assert!(msg.contains("p42"), "{msg}");
    }

    #[test]
    fn plaintext_requires_explicit_opt_in_and_tls_cannot_be_disabled() {
        let e = parse("api_key: a\nserver_url: http://x:80\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow_insecure_http"), "{e}");
        assert!(parse("api_key: a\nserver_url: http://x:80\nallow_insecure_http: true\n").is_ok());
        let e = parse("api_key: a\nskip_ssl_validation: true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("never disables"), "{e}");
        let e = parse("api_key: a\nserver_url: ftp://x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("https://"), "{e}");
    }

    #[test]
    fn environment_overrides_win_and_are_validated() {
        let env = vec![
            ("WARDEN_DOGSTATSD_PORT".to_string(), "9125".to_string()),
            ("WARDEN_TAGS".to_string(), "env:prod,team:a".to_string()),
            ("WARDEN_API_KEY".to_string(), "fromenv".to_string()),
        ];
        let c = AgentConfig::from_yaml_with_env("api_key: file\n", "t", &env).unwrap();
        assert_eq!(c.dogstatsd_port, 9125);
        assert_eq!(c.tags, ["env:prod", "team:a"]);
        assert_eq!(c.api_key, "fromenv");
        let env = vec![("WARDEN_DOGSTATSD_PORT".to_string(), "abc".to_string())];
        let e = AgentConfig::from_yaml_with_env("api_key: a\n", "t", &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("WARDEN_DOGSTATSD_PORT"), "{e}");
    }

    #[test]
    fn missing_api_key_and_bad_yaml_are_clear() {
        assert!(
            parse("hostname: h\n")
                .unwrap_err()
                .to_string()
                .contains("api_key")
        );
        let e = parse("api_key: [unclosed\n").unwrap_err().to_string();
        assert!(e.contains("invalid YAML"), "{e}");
    }

    #[test]
    fn world_readable_file_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.yaml");
        std::fs::write(&p, "api_key: a\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = AgentConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.run_path, dir.path().join("run"));
        assert_eq!(c.auth_token_file_path, dir.path().join("auth_token"));
    }

    #[test]
    fn local_api_listens_on_loopback_only() {
        let c = parse("api_key: a\n").unwrap();
        assert_eq!(
            (c.cmd_host.as_str(), c.cmd_port, c.gui_port),
            ("127.0.0.1", 5001, -1)
        );
        for ok in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(
                parse(&format!("api_key: a\ncmd_host: \"{ok}\"\n")).is_ok(),
                "{ok}"
            );
        }
        for bad in ["0.0.0.0", "::", "192.168.1.10", "example.com", ""] {
            let e = parse(&format!("api_key: a\ncmd_host: \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("cmd_host") && e.contains("loopback"),
                "{bad}: {e}"
            );
        }
        let e = parse("api_key: a\ncmd_port: 70000\ngui_port: -2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cmd_port") && e.contains("gui_port"), "{e}");
        let e = parse("api_key: a\ncmd_port: 6000\ngui_port: 6000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("must differ"), "{e}");
    }

    #[test]
    fn enc_handles_are_resolved_by_the_secrets_backend_before_validation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("backend.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\ncat >/dev/null\nprintf '{\"api\": {\"value\": \"resolved-key-42\", \"error\": null}, \"port\": {\"value\": \"9125\", \"error\": null}}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        let text = format!(
            "api_key: ENC[api]\nhostname: ENC[port]\nsecret_backend_command: {}\n",
            script.display()
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.api_key, "resolved-key-42");
        assert_eq!(c.hostname, "9125");
        let resolved = c.secrets.0.as_ref().expect("secrets kept for the scrubber");
        assert_eq!(resolved.len(), 2);
        assert!(!format!("{:?}", c.secrets).contains("resolved-key-42"));

        // A backend with open permissions is refused, with the fix, as a config problem.
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("chmod 700"), "{e}");
        assert!(!e.contains("resolved-key-42"), "{e}");
    }
}
