//! Configuration: everything can come from the environment (`WARDEN_APPSEC_*`) so protection is
//! switched on without code changes; the same struct can be filled in code for tests.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Errors found while reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {reason} (got {value:?})")]
    BadValue {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("invalid CIDR {0:?}: expected an IP address or ADDRESS/PREFIX")]
    BadCidr(String),
    #[error("cannot read ruleset {path}: {source}")]
    ReadRuleset {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What happens when a rule asks to block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Detect and report only. The only blocks honoured are the operator's explicit denylists
    /// (blocked IPs and users: `network-acl` / `authentication-acl` rules).
    #[default]
    Monitor,
    /// Block: high-confidence attack rules (`tags.confidence == "1"`), every RASP rule, rules
    /// whose own `on_match` blocks, and the denylists.
    Block,
}

impl FromStr for Mode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "monitor" | "monitoring" => Ok(Mode::Monitor),
            "block" | "blocking" | "protect" => Ok(Mode::Block),
            _ => Err(()),
        }
    }
}

/// Bounds on what is buffered and handed to the WAF (defaults follow ddtrace: depth 20,
/// 256 elements per container, 4096 bytes per string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request bodies larger than this are not buffered: with a `Content-Length` above it the
    /// body passes through uninspected; a chunked body that grows past it gets a 413.
    /// 0 turns body inspection off (bodies pass through untouched).
    pub max_body_bytes: usize,
    pub max_depth: usize,
    pub max_container_size: usize,
    pub max_string_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_depth: 20,
            max_container_size: 256,
            max_string_length: 4096,
        }
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::BadCidr(s.to_string());
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr = canonical(IpAddr::from_str(a).map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

/// App protection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `WARDEN_APPSEC_ENABLED` (`true`/`false`/`1`/`0`), default false: the layer is a
    /// pass-through.
    pub enabled: bool,
    /// `WARDEN_APPSEC_MODE` = `monitor` (default) | `block`.
    pub mode: Mode,
    /// `WARDEN_APPSEC_RULES`: path of a ruleset (Datadog AppSec format 2.x); Warden's built-in
    /// default ruleset when absent.
    pub rules_path: Option<PathBuf>,
    /// `WARDEN_APPSEC_WAF_TIMEOUT_US`: WAF budget per evaluation, default 5000 (as ddtrace).
    pub waf_timeout_us: u64,
    /// `WARDEN_APPSEC_BLOCK_STATUS`: status of Warden's blocking responses, default 403.
    pub block_status: u16,
    /// `WARDEN_APPSEC_TRUSTED_PROXIES`: comma-separated CIDRs. `X-Forwarded-For` / `Forwarded`
    /// are only believed when the peer (and each hop walked through) is in this list.
    pub trusted_proxies: Vec<Cidr>,
    /// `WARDEN_APPSEC_BLOCKED_IPS` / `WARDEN_APPSEC_BLOCKED_USERS`: comma-separated static
    /// denylists (can also be changed at run time with `Appsec::set_blocked_*`).
    pub blocked_ips: Vec<String>,
    pub blocked_users: Vec<String>,
    /// `WARDEN_APPSEC_MAX_BODY_BYTES`, `_MAX_DEPTH`, `_MAX_CONTAINER_SIZE`, `_MAX_STRING_LENGTH`.
    pub limits: Limits,
    /// Where reports go as trace spans and where remote configuration comes from.
    pub agent: AgentConfig,
}

/// Reporting to, and configuration from, the local Warden (or Datadog) agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `WARDEN_APPSEC_TRACE` (default true): send each report as a trace span to the agent
    /// (the default sink of [`crate::Appsec::from_env`]).
    pub trace: bool,
    /// `DD_TRACE_AGENT_URL` / `WARDEN_TRACE_AGENT_URL`, else
    /// `http://$DD_AGENT_HOST:$DD_TRACE_AGENT_PORT`; default `http://127.0.0.1:8126`.
    pub url: String,
    /// `DD_SERVICE` / `WARDEN_SERVICE`; default: the executable's name.
    pub service: String,
    /// `DD_ENV` / `WARDEN_ENV`.
    pub env: Option<String>,
    /// `DD_VERSION` / `WARDEN_VERSION`.
    pub version: Option<String>,
    /// `WARDEN_APPSEC_REMOTE_CONFIG` (default: the value of `trace`): poll the agent for
    /// denylists and ruleset updates.
    pub remote_config: bool,
    /// `WARDEN_APPSEC_REMOTE_CONFIG_INTERVAL_MS`, default 5000.
    pub remote_config_interval_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            trace: true,
            url: "http://127.0.0.1:8126".into(),
            service: default_service(),
            env: None,
            version: None,
            remote_config: true,
            remote_config_interval_ms: 5_000,
        }
    }
}

fn default_service() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "rust-app".into())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            mode: Mode::Monitor,
            rules_path: None,
            waf_timeout_us: 5_000,
            block_status: 403,
            trusted_proxies: Vec::new(),
            blocked_ips: Vec::new(),
            blocked_users: Vec::new(),
            limits: Limits::default(),
            agent: AgentConfig::default(),
        }
    }
}

impl Config {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read the configuration from any key lookup (the environment, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(v) = get("WARDEN_APPSEC_ENABLED") {
            c.enabled = parse_bool("WARDEN_APPSEC_ENABLED", &v)?;
        }
        if let Some(v) = get("WARDEN_APPSEC_MODE") {
            c.mode = v.parse().map_err(|()| ConfigError::BadValue {
                var: "WARDEN_APPSEC_MODE",
                value: v.clone(),
                reason: "expected monitor or block",
            })?;
        }
        if let Some(v) = get("WARDEN_APPSEC_RULES").filter(|v| !v.trim().is_empty()) {
            c.rules_path = Some(PathBuf::from(v));
        }
        if let Some(v) = get("WARDEN_APPSEC_WAF_TIMEOUT_US") {
            c.waf_timeout_us = parse_num("WARDEN_APPSEC_WAF_TIMEOUT_US", &v, 1, 10_000_000)?;
        }
        if let Some(v) = get("WARDEN_APPSEC_BLOCK_STATUS") {
            let s = parse_num("WARDEN_APPSEC_BLOCK_STATUS", &v, 100, 599)?;
            c.block_status = u16::try_from(s).unwrap_or(403);
        }
        if let Some(v) = get("WARDEN_APPSEC_TRUSTED_PROXIES") {
            c.trusted_proxies = split_list(&v)
                .map(|s| s.parse())
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("WARDEN_APPSEC_BLOCKED_IPS") {
            c.blocked_ips = split_list(&v).map(str::to_string).collect();
            for ip in &c.blocked_ips {
                ip.parse::<Cidr>()?;
            }
        }
        if let Some(v) = get("WARDEN_APPSEC_BLOCKED_USERS") {
            c.blocked_users = split_list(&v).map(str::to_string).collect();
        }
        let lim = &mut c.limits;
        let max = usize::MAX as u64;
        if let Some(v) = get("WARDEN_APPSEC_MAX_BODY_BYTES") {
            lim.max_body_bytes = parse_num("WARDEN_APPSEC_MAX_BODY_BYTES", &v, 0, max)? as usize;
        }
        if let Some(v) = get("WARDEN_APPSEC_MAX_DEPTH") {
            lim.max_depth = parse_num("WARDEN_APPSEC_MAX_DEPTH", &v, 1, 1000)? as usize;
        }
        if let Some(v) = get("WARDEN_APPSEC_MAX_CONTAINER_SIZE") {
            lim.max_container_size =
                parse_num("WARDEN_APPSEC_MAX_CONTAINER_SIZE", &v, 1, max)? as usize;
        }
        if let Some(v) = get("WARDEN_APPSEC_MAX_STRING_LENGTH") {
            lim.max_string_length =
                parse_num("WARDEN_APPSEC_MAX_STRING_LENGTH", &v, 1, max)? as usize;
        }
        c.agent = AgentConfig::from_lookup(&get)?;
        Ok(c)
    }
}

impl AgentConfig {
    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<AgentConfig, ConfigError> {
        let mut a = AgentConfig::default();
        let first = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| get(k).filter(|v| !v.trim().is_empty()))
                .map(|v| v.trim().to_string())
        };
        if let Some(v) = get("WARDEN_APPSEC_TRACE") {
            a.trace = parse_bool("WARDEN_APPSEC_TRACE", &v)?;
        }
        a.remote_config = a.trace;
        if let Some(v) = get("WARDEN_APPSEC_REMOTE_CONFIG") {
            a.remote_config = parse_bool("WARDEN_APPSEC_REMOTE_CONFIG", &v)?;
        }
        if let Some(v) = get("WARDEN_APPSEC_REMOTE_CONFIG_INTERVAL_MS") {
            a.remote_config_interval_ms = parse_num(
                "WARDEN_APPSEC_REMOTE_CONFIG_INTERVAL_MS",
                &v,
                100,
                86_400_000,
            )?;
        }
        if let Some(url) = first(&["WARDEN_TRACE_AGENT_URL", "DD_TRACE_AGENT_URL"]) {
            if !url.starts_with("http://") {
                return Err(ConfigError::BadValue {
                    var: "DD_TRACE_AGENT_URL",
                    value: url,
                    reason: "expected an http:// URL of the local agent",
                });
            }
            a.url = url.trim_end_matches('/').to_string();
        } else {
            let host = first(&["WARDEN_AGENT_HOST", "DD_AGENT_HOST"])
                .unwrap_or_else(|| "127.0.0.1".into());
            let port = match get("DD_TRACE_AGENT_PORT").filter(|v| !v.trim().is_empty()) {
                Some(p) => parse_num("DD_TRACE_AGENT_PORT", &p, 1, 65_535)?,
                None => 8126,
            };
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            a.url = format!("http://{host}:{port}");
        }
        if let Some(v) = first(&["WARDEN_SERVICE", "DD_SERVICE"]) {
            a.service = v;
        }
        a.env = first(&["WARDEN_ENV", "DD_ENV"]);
        a.version = first(&["WARDEN_VERSION", "DD_VERSION"]);
        Ok(a)
    }
}

fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_bool(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::BadValue {
            var,
            value: v.to_string(),
            reason: "expected true or false",
        }),
    }
}

fn parse_num(var: &'static str, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = v.trim().parse().map_err(|_| ConfigError::BadValue {
        var,
        value: v.to_string(),
        reason: "expected a whole number",
    })?;
    if n < min || n > max {
        return Err(ConfigError::BadValue {
            var,
            value: v.to_string(),
            reason: "out of range",
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn env_values_parse_and_bad_ones_are_named() {
        let c = cfg(&[
            ("WARDEN_APPSEC_ENABLED", "true"),
            ("WARDEN_APPSEC_MODE", "block"),
            ("WARDEN_APPSEC_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
            ("WARDEN_APPSEC_BLOCK_STATUS", "429"),
        ])
        .expect("valid");
        assert!(c.enabled);
        assert_eq!(c.mode, Mode::Block);
        assert_eq!(c.block_status, 429);
        assert_eq!(c.trusted_proxies.len(), 2);
        let e = cfg(&[("WARDEN_APPSEC_MODE", "loud")]).expect_err("bad mode");
        assert!(e.to_string().contains("WARDEN_APPSEC_MODE"), "{e}");
        let e = cfg(&[("WARDEN_APPSEC_TRUSTED_PROXIES", "10.0.0.0/33")]).expect_err("bad cidr");
        assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
        assert!(cfg(&[("WARDEN_APPSEC_BLOCK_STATUS", "99")]).is_err());
        assert!(cfg(&[("WARDEN_APPSEC_ENABLED", "maybe")]).is_err());
    }

    #[test]
    fn agent_settings_follow_datadog_variables() {
        let c = cfg(&[]).expect("defaults");
        assert!(c.agent.trace && c.agent.remote_config);
        assert_eq!(c.agent.url, "http://127.0.0.1:8126");
        let c = cfg(&[
            ("DD_AGENT_HOST", "::1"),
            ("DD_TRACE_AGENT_PORT", "9126"),
            ("DD_SERVICE", "shop"),
            ("DD_ENV", "prod"),
            ("DD_VERSION", "1.2"),
        ])
        .expect("valid");
        assert_eq!(c.agent.url, "http://[::1]:9126");
        assert_eq!(
            (
                c.agent.service.as_str(),
                c.agent.env.as_deref(),
                c.agent.version.as_deref()
            ),
            ("shop", Some("prod"), Some("1.2"))
        );
        let c = cfg(&[
            ("DD_TRACE_AGENT_URL", "http://agent:8126/"),
            ("DD_AGENT_HOST", "ignored"),
            ("WARDEN_SERVICE", "wins"),
            ("DD_SERVICE", "loses"),
        ])
        .expect("valid");
        assert_eq!(c.agent.url, "http://agent:8126");
        assert_eq!(c.agent.service, "wins");
        let c = cfg(&[("WARDEN_APPSEC_TRACE", "false")]).expect("valid");
        assert!(!c.agent.trace && !c.agent.remote_config);
        let c = cfg(&[
            ("WARDEN_APPSEC_TRACE", "false"),
            ("WARDEN_APPSEC_REMOTE_CONFIG", "true"),
            ("WARDEN_APPSEC_REMOTE_CONFIG_INTERVAL_MS", "250"),
        ])
        .expect("valid");
        assert!(c.agent.remote_config);
        assert_eq!(c.agent.remote_config_interval_ms, 250);
        for bad in [
            ("DD_TRACE_AGENT_URL", "https://agent"),
            ("DD_TRACE_AGENT_PORT", "0"),
            ("WARDEN_APPSEC_REMOTE_CONFIG_INTERVAL_MS", "5"),
        ] {
            let e = cfg(&[bad]).expect_err("bad value");
            assert!(e.to_string().contains(bad.0), "{e}");
        }
    }

    #[test]
    fn cidr_membership() {
        let n: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(n.contains("10.1.200.3".parse().expect("ip")));
        assert!(!n.contains("10.2.0.1".parse().expect("ip")));
        assert!(n.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let one: Cidr = "::1".parse().expect("cidr");
        assert!(one.contains("::1".parse().expect("ip")));
        assert!(!one.contains("::2".parse().expect("ip")));
    }
}
