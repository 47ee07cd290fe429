//! Which key names hold secrets.
//!
//! Datadog's scrubber encodes key names in one regex per family (`\w*pass\w*\s*:` and so on).
//! That matches too much (`passed: 5`, `bypass: true`) and too little (`dbPass`, `X-Vault-Token`
//! written in JSON). Warden classifies the key *name* instead: it splits the name into segments
//! (on `_`, `-`, `.` and camelCase boundaries), lower-cases them and checks whole segments or
//! well-known endings. The scanner in `kv.rs` finds `key<sep>value` pairs; this module decides
//! whether the value must go.

/// How a sensitive value is masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// Replace the whole value.
    Secret,
    /// Datadog API / application keys: keep the last 4 characters so an operator can tell keys
    /// apart in a flare, like the Datadog agent does.
    KeepLast4,
    /// `Authorization`-style headers: the first word may be a scheme (`Bearer`, `Basic`) which is
    /// kept; the credentials after it are masked.
    Authorization,
}

/// Endings of the compacted (lower-case, separators removed) key name that mark a secret.
const SECRET_ENDINGS: &[&str] = &[
    "token",
    "tokenid",
    "jwt",
    "secret",
    "secretid",
    "secretkey",
    "accesskey",
    "privatekey",
    "privkey",
    "authkey",
    "authenticationkey",
    "privacykey",
    "consumerkey",
    "encryptionkey",
    "signingkey",
    "masterkey",
    "community",
    "communitystring",
    "communitystrings",
    "cookie",
    "credentials",
    "additionalendpoints",
];

const KEEP_LAST4_ENDINGS: &[&str] = &["apikey", "appkey", "applicationkey"];

/// Whole segments that mark a password (`db_pass`, `PWD`, `dbPass`), without matching `passed`
/// or `bypass`.
const PASSWORD_SEGMENTS: &[&str] = &["pass", "pwd", "pswd", "passwd", "password", "pw"];

/// Substrings of the compacted name that always mark a password (`PGPASSWORD`, `dbpasswd`).
const PASSWORD_PARTS: &[&str] = &["password", "passwd", "passphrase", "pswd"];

/// Header-style names: `x-<anything>-key|token|auth|secret`.
const HEADER_ENDINGS: &[&str] = &["key", "token", "auth", "secret"];

/// The hint substrings (ASCII case-insensitive) under which a line can contain a sensitive key.
/// Every ending and part above contains one of them; `lib.rs` builds the prefilter from these.
pub(crate) const KEY_HINTS: &[&str] = &[
    "pass",
    "pwd",
    "pswd",
    "pw",
    "token",
    "jwt",
    "secret",
    "key",
    "auth",
    "community",
    "cookie",
    "credentials",
    "additional_endpoints",
];

/// Lower-cased name with `_ - .` removed; used for endings and for `add_key` names.
pub(crate) fn compact(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Classify a key name (as written, possibly with quotes or leading dashes stripped already).
/// `extra` holds compacted names added with `Scrubber::add_key`.
pub(crate) fn classify(raw: &str, extra: &[String]) -> Option<KeyKind> {
    let c = compact(raw);
    if c.is_empty() {
        return None;
    }
    if extra.contains(&c) {
        return Some(KeyKind::Secret);
    }
    if KEEP_LAST4_ENDINGS.iter().any(|e| c.ends_with(e)) {
        return Some(KeyKind::KeepLast4);
    }
    if c.ends_with("authorization") {
        return Some(KeyKind::Authorization);
    }
    if c == "auth" || c == "pw" {
        return Some(KeyKind::Secret);
    }
    if SECRET_ENDINGS.iter().any(|e| c.ends_with(e)) || PASSWORD_PARTS.iter().any(|p| c.contains(p))
    {
        return Some(KeyKind::Secret);
    }
    let lower_raw = raw.trim_start_matches('-').to_ascii_lowercase();
    if lower_raw.starts_with("x-") && HEADER_ENDINGS.iter().any(|e| c.ends_with(e)) {
        return Some(KeyKind::Secret);
    }
    if segments(raw).any(|s| PASSWORD_SEGMENTS.iter().any(|p| s.eq_ignore_ascii_case(p))) {
        return Some(KeyKind::Secret);
    }
    None
}

/// Split on `_ - .` and lower→upper camelCase boundaries. Yields borrowed pieces.
fn segments(raw: &str) -> impl Iterator<Item = &str> {
    let bytes = raw.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    for i in 0..bytes.len() {
        let b = bytes[i];
        if !b.is_ascii_alphanumeric() {
            if start < i {
                pieces.push(&raw[start..i]);
            }
            start = i + 1;
        } else if i > start && b.is_ascii_uppercase() && bytes[i - 1].is_ascii_lowercase() {
            pieces.push(&raw[start..i]);
            start = i;
        }
    }
    if start < bytes.len() {
        pieces.push(&raw[start..]);
    }
    pieces.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_by_segment_not_substring() {
        for k in [
            "password",
            "db_pass",
            "dbPass",
            "PGPASSWORD",
            "mysql-pwd",
            "passphrase",
            "PASS",
        ] {
            assert_eq!(classify(k, &[]), Some(KeyKind::Secret), "{k}");
        }
        for k in [
            "passed",
            "bypass",
            "compass",
            "passing_tests",
            "path",
            "user",
            "host",
        ] {
            assert_eq!(classify(k, &[]), None, "{k}");
        }
    }

    #[test]
    fn api_and_app_keys_keep_last4() {
        for k in [
            "api_key",
            "apiKey",
            "DD_API_KEY",
            "app_key",
            "application_key",
            "x-api-key",
            "dd-api-key",
        ] {
            assert_eq!(classify(k, &[]), Some(KeyKind::KeepLast4), "{k}");
        }
    }

    #[test]
    fn headers_tokens_and_snmp() {
        for k in [
            "X-Vault-Token",
            "x-custom-key",
            "X-Some-Auth",
            "x-client-secret",
            "access_token",
            "private-token",
            "session_token",
            "accesstoken",
            "consumer_key",
            "token_id",
            "community_string",
            "community",
            "authKey",
            "priv_key",
            "authentication_key",
            "privacy_key",
            "Cookie",
            "client_secret",
            "aws_secret_access_key",
        ] {
            assert_eq!(classify(k, &[]), Some(KeyKind::Secret), "{k}");
        }
        assert_eq!(classify("Authorization", &[]), Some(KeyKind::Authorization));
        for k in [
            "cache_key",
            "key",
            "primary_key_column",
            "x-request-id",
            "max_tokens",
            "author",
        ] {
            assert_eq!(classify(k, &[]), None, "{k}");
        }
    }

    #[test]
    fn extra_keys_match_compacted() {
        let extra = vec![compact("my_custom_field")];
        assert_eq!(classify("My-Custom-Field", &extra), Some(KeyKind::Secret));
    }
}
