//! Server-side request forgery: a user parameter found in an outgoing URL that changes where
//! the request goes (authority), escapes the path, injects query parameters, or supplies a
//! forbidden scheme; plus an optional policy check of the URL alone (forbidden IPs/domains and
//! schemes) when `enforce-policy-without-injection` is set.

use serde_json::{Map, Value};

use super::Found;
use crate::config::ConfigError;
use crate::matcher::{DataEntries, Matcher};

const DEFAULT_IPS: &[&str] = &[
    "169.254.0.0/16",
    "127.0.0.1/32",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "2001:db8:1234:1a00::/56",
];
const DEFAULT_DOMAINS: &[&str] = &[
    "metadata.google",
    "burpcollaborator.net",
    ".local",
    ".internal",
    "ram.aliyuncs.com",
    "ifconfig.pro",
    "localhost",
    "fuf.me",
    "localtest.me",
    "ulh.us",
];
const DEFAULT_SCHEMES: &[&str] = &["https", "http", "ftps", "ftp"];

#[derive(Debug)]
pub(crate) struct SsrfConfig {
    authority: bool,
    path: bool,
    query: bool,
    forbid_full_url: bool,
    policy_only: bool,
    schemes: Vec<String>,
    domains: Vec<String>,
    ips: Matcher,
}

fn opt(o: Option<&Map<String, Value>>, k: &str, d: bool) -> bool {
    o.and_then(|o| o.get(k))
        .and_then(Value::as_bool)
        .unwrap_or(d)
}

fn list(p: Option<&Map<String, Value>>, k: &str, d: &[&str]) -> Vec<String> {
    match p.and_then(|p| p.get(k)).and_then(Value::as_array) {
        Some(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_ascii_lowercase))
            .collect(),
        None => d.iter().map(|s| s.to_string()).collect(),
    }
}

impl SsrfConfig {
    pub(crate) fn parse(p: &Map<String, Value>) -> Result<Self, ConfigError> {
        let o = p.get("options").and_then(Value::as_object);
        let pol = p.get("policy").and_then(Value::as_object);
        let ips: DataEntries = list(pol, "forbidden-ips", DEFAULT_IPS)
            .into_iter()
            .map(|s| (s, 0))
            .collect();
        Ok(SsrfConfig {
            authority: opt(o, "authority-inspection", true),
            path: opt(o, "path-inspection", false),
            query: opt(o, "query-inspection", false),
            forbid_full_url: opt(o, "forbid-full-url-injection", false),
            policy_only: opt(o, "enforce-policy-without-injection", false),
            schemes: list(pol, "allowed-schemes", DEFAULT_SCHEMES),
            domains: list(pol, "forbidden-domains", DEFAULT_DOMAINS),
            ips: Matcher::ip_from(&ips),
        })
    }
}

/// Offsets into the raw URL.
pub(crate) struct ParsedUrl<'a> {
    scheme: &'a str,
    /// end of `scheme://authority`
    authority_end: usize,
    host_start: usize,
    host: &'a str,
    path_start: usize,
    path_end: usize,
    query_start: Option<usize>,
}

pub(crate) fn parse_url(s: &str) -> Option<ParsedUrl<'_>> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    if scheme.is_empty()
        || !scheme.as_bytes()[0].is_ascii_alphabetic()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
    {
        return None;
    }
    let rest = &s[colon + 1..];
    let (auth_start, has_auth) = if rest.starts_with("//") {
        (colon + 3, true)
    } else {
        (colon + 1, false)
    };
    let mut authority_end = auth_start;
    let (mut host_start, mut host) = (auth_start, "");
    if has_auth {
        let a = &s[auth_start..];
        let end = a.find(['/', '?', '#']).unwrap_or(a.len());
        authority_end = auth_start + end;
        let auth = &a[..end];
        let after_user = auth.rfind('@').map_or(0, |i| i + 1);
        let hp = &auth[after_user..];
        let h = if hp.starts_with('[') {
            hp.find(']').map_or(hp, |i| &hp[..=i])
        } else {
            hp.rsplit_once(':').map_or(hp, |(h, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    h
                } else {
                    hp
                }
            })
        };
        host_start = auth_start + after_user;
        host = h;
    }
    let tail = &s[authority_end..];
    let q = tail.find('?').map(|i| authority_end + i);
    let frag = tail.find('#').map(|i| authority_end + i);
    let path_end = match (q, frag) {
        (Some(q), Some(f)) => q.min(f),
        (Some(q), None) => q,
        (None, Some(f)) => f,
        (None, None) => s.len(),
    };
    Some(ParsedUrl {
        scheme,
        authority_end,
        host_start,
        host,
        path_start: authority_end,
        path_end,
        query_start: q.map(|x| x + 1),
    })
}

fn host_ip_forbidden(cfg: &SsrfConfig, host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    cfg.ips.match_bytes(h.as_bytes()).is_some()
}

fn forbidden_domain<'c>(cfg: &'c SsrfConfig, host: &str) -> Option<&'c str> {
    let h = host.to_ascii_lowercase();
    cfg.domains
        .iter()
        .find(|d| h.ends_with(d.as_str()))
        .map(String::as_str)
}

fn scheme_allowed(cfg: &SsrfConfig, scheme: &str) -> bool {
    // An empty allow-list disables the scheme check.
    cfg.schemes.is_empty() || cfg.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme))
}

fn has_dotdot(v: &str) -> bool {
    v.split(['/', '\\']).any(|p| p == "..")
}

pub(crate) fn check(cfg: &SsrfConfig, u: &ParsedUrl<'_>, raw: &str, param: &str) -> Option<Found> {
    if param.len() < 4 {
        return None;
    }
    let index = raw.find(param)?;
    let end = index + param.len();
    let found = || {
        Some(Found {
            highlight: param.to_string(),
            resource_value: None,
        })
    };
    if index == 0 && end == raw.len() {
        // The whole URL comes from the user.
        return if cfg.forbid_full_url { found() } else { None };
    }
    let scheme_len = u.scheme.len();
    if cfg.authority && index < u.authority_end && end > scheme_len + 3 {
        if end - 1 > u.authority_end {
            return found();
        }
        let host_fully = index <= u.host_start && end >= u.host_start + u.host.len();
        if host_fully && host_ip_forbidden(cfg, u.host) {
            return found();
        }
        if let Some(d) = forbidden_domain(cfg, u.host) {
            if param.eq_ignore_ascii_case(d) || (host_fully && !u.host.is_empty()) {
                return found();
            }
        }
    }
    if index == 0 && !scheme_allowed(cfg, u.scheme) {
        return found();
    }
    if cfg.path && index >= u.path_start && index < u.path_end && has_dotdot(param) {
        return found();
    }
    if cfg.query {
        if let Some(qs) = u.query_start {
            if index >= qs && (param.contains('&') || param.contains('=')) {
                return found();
            }
        }
    }
    None
}

pub(crate) fn check_policy_only(cfg: &SsrfConfig, u: &ParsedUrl<'_>, _raw: &str) -> Option<Found> {
    if !cfg.policy_only {
        return None;
    }
    let hit = (!u.host.is_empty() && host_ip_forbidden(cfg, u.host))
        || (!u.host.is_empty() && forbidden_domain(cfg, u.host).is_some())
        || !scheme_allowed(cfg, u.scheme);
    hit.then(|| Found {
        highlight: String::new(),
        resource_value: None,
    })
}
