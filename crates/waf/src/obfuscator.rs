//! Redaction of sensitive values in events (`obfuscator` section, libddwaf defaults).
//!
//! Applied when events are serialised so that credentials seen in inputs are never echoed back
//! into traces: a parameter whose key path contains a sensitive key, or whose value matches the
//! value regex, has its value and highlights replaced by `<Redacted>`.

use regex::bytes::Regex;

const DEFAULT_KEY: &str = r"(?i)pass|pw(?:or)?d|secret|(?:api|private|public|access)[_-]?key|token|consumer[_-]?(?:id|key|secret)|sign(?:ed|ature)|bearer|authorization|jsessionid|phpsessid|asp\.net[_-]sessionid|sid|jwt";
const DEFAULT_VALUE: &str = r#"(?i)(?:p(?:ass)?w(?:or)?d|pass(?:[_-]?phrase)?|secret(?:[_-]?key)?|(?:(?:api|private|public|access)[_-]?)key(?:[_-]?id)?|(?:(?:auth|access|id|refresh)[_-]?)?token|consumer[_-]?(?:id|key|secret)|sign(?:ed|ature)?|auth(?:entication|orization)?|jsessionid|phpsessid|asp\.net(?:[_-]|-)sessionid|sid|jwt)(?:\s*=([^;&]+)|"\s*:\s*("[^"]+"|\d+))|bearer\s+([a-z0-9\._\-]+)|token\s*:\s*([a-z0-9]{13})|gh[opsu]_([0-9a-zA-Z]{36})|ey[I-L][\w=-]+\.(ey[I-L][\w=-]+(?:\.[\w.+\/=-]+)?)|[\-]{5}BEGIN[a-z\s]+PRIVATE\sKEY[\-]{5}([^\-]+)[\-]{5}END[a-z\s]+PRIVATE\sKEY|ssh-rsa\s*([a-z0-9\/\.+]{100,})"#;

pub(crate) const REDACTED: &str = "<Redacted>";

#[derive(Debug, Default)]
pub(crate) struct Obfuscator {
    key: Option<Regex>,
    value: Option<Regex>,
}

impl Obfuscator {
    pub(crate) fn default_regexes() -> Self {
        Self::new(Some(DEFAULT_KEY), Some(DEFAULT_VALUE))
    }

    /// Empty or invalid regexes disable that half (libddwaf does the same).
    pub(crate) fn new(key: Option<&str>, value: Option<&str>) -> Self {
        let build = |s: Option<&str>| {
            s.filter(|s| !s.is_empty())
                .and_then(|s| crate::matcher::compile_regex(s, true).ok())
        };
        Obfuscator {
            key: build(key),
            value: build(value),
        }
    }

    pub(crate) fn key_is_sensitive(&self, key: &str) -> bool {
        self.key
            .as_ref()
            .is_some_and(|r| r.is_match(key.as_bytes()))
    }

    pub(crate) fn value_is_sensitive(&self, v: &str) -> bool {
        self.value
            .as_ref()
            .is_some_and(|r| r.is_match(v.as_bytes()))
    }
}
