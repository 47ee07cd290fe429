//! `key <sep> value` scanner: YAML (`password: x`), JSON (`"token": "x"`, also JSON escaped
//! inside a JSON string), `key=value` (query strings, libpq DSNs, logfmt), Ruby `=>`, and
//! HTTP header lines (`X-Api-Key: x`).
//!
//! A regex finds every candidate `key<sep>` pair; `keys::classify` decides whether the key is
//! sensitive; plain code then decides how far the value goes, which a regex without look-around
//! cannot express well:
//! * quoted value: up to the matching quote (escapes honoured; `\"` when the quote was escaped);
//! * YAML form (key first on the line, `:`): the rest of the line, written back as `"********"`
//!   so that config output stays valid YAML (`*` would start an alias);
//! * inline form: up to whitespace, `&`, or a quote.
//!
//! A sensitive YAML key with no value (or a block-scalar indicator `|`/`>`) starts a multi-line
//! block whose lines are masked by the line state machine in `lib.rs`.

use crate::MASK;
use crate::keys::{KeyKind, classify};
use regex::Regex;

/// `"********"`: the YAML-safe mask.
pub(crate) const QUOTED_MASK: &str = "\"********\"";

pub(crate) struct KvScanner {
    pair: Regex,
}

/// A sensitive YAML key whose value continues on the following lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockStart {
    /// Column of the key (after any `- ` list marker).
    pub(crate) indent: usize,
    /// `key:` with nothing after it: a list may follow at the same indentation.
    pub(crate) same_indent_list: bool,
}

impl KvScanner {
    pub(crate) fn new() -> Self {
        // key, optional closing quote of the key, separator, optional opening quote of the value.
        let pair = Regex::new(
            r#"(?P<key>[A-Za-z0-9_.\-]+)(?:\\?["'])?[ \t]*(?P<sep>=>|[:=])[ \t]*(?P<q>\\?["'])?"#,
        )
        .expect("static key/value regex is valid");
        Self { pair }
    }

    /// Mask sensitive values in `line`. Returns `None` when nothing changed, plus the block start
    /// when the line opens a multi-line sensitive YAML value.
    /// Keys are looked for from byte `from` on (a token start, see [`token_start`]).
    pub(crate) fn scrub(
        &self,
        line: &str,
        from: usize,
        extra: &[String],
    ) -> (Option<String>, Option<BlockStart>) {
        let mut out: Option<String> = None;
        let mut copied = 0; // bytes of `line` already copied into `out`
        let mut pos = from;
        let mut block = None;
        while pos < line.len() {
            let Some(caps) = self.pair.captures_at(line, pos) else {
                break;
            };
            let whole = caps.get(0).expect("group 0 always matches");
            let key = caps.name("key").expect("key group always matches");
            let sep = caps.name("sep").expect("sep group always matches");
            let Some(kind) = classify(key.as_str(), extra) else {
                pos = sep.end();
                continue;
            };
            let value_start = whole.end();
            let quote = caps.name("q").map(|q| q.as_str());
            let yaml_form =
                quote.is_none() && sep.as_str() == ":" && is_line_start(&line[..key.start()]);
            let (span_end, replacement) = match quote {
                Some(q) => {
                    let end = quoted_end(line, value_start, q);
                    let value = &line[value_start..end];
                    (end, mask_value(value, kind))
                }
                None if yaml_form => {
                    let rest = line[value_start..].trim_end();
                    if rest.is_empty() || is_block_indicator(rest) {
                        let prefix = &line[..key.start()];
                        let indent = key.start() - usize::from(prefix.ends_with(['"', '\'']));
                        block = Some(BlockStart {
                            indent,
                            same_indent_list: rest.is_empty(),
                        });
                        break;
                    }
                    let end = value_start + rest.len();
                    let repl = match kind {
                        KeyKind::KeepLast4 => format!("\"{}\"", mask_value(rest, kind)),
                        _ => QUOTED_MASK.to_string(),
                    };
                    if rest == repl {
                        (end, rest.to_string())
                    } else {
                        (end, repl)
                    }
                }
                None => {
                    let end = inline_end(line, value_start, kind);
                    (end, mask_value(&line[value_start..end], kind))
                }
            };
            if span_end > value_start && line[value_start..span_end] != replacement {
                let o = out.get_or_insert_with(|| String::with_capacity(line.len()));
                o.push_str(&line[copied..value_start]);
                o.push_str(&replacement);
                copied = span_end;
            }
            pos = span_end.max(sep.end());
        }
        let out = out.map(|mut o| {
            o.push_str(&line[copied..]);
            o
        });
        (out, block)
    }
}

/// Start of the key token around byte `pos`: back over key characters (`[A-Za-z0-9_.-]`).
pub(crate) fn token_start(line: &str, pos: usize) -> usize {
    let b = line.as_bytes();
    let mut i = pos.min(b.len());
    while i > 0 && (b[i - 1].is_ascii_alphanumeric() || matches!(b[i - 1], b'_' | b'.' | b'-')) {
        i -= 1;
    }
    i
}

/// Only whitespace, optionally followed by a YAML list marker `- `, precedes the key.
fn is_line_start(prefix: &str) -> bool {
    let t = prefix.trim_start();
    t.is_empty() || t == "- " || t == "-\t" || t == "\"" || t == "'" || t == "- \"" || t == "- '"
}

fn is_block_indicator(rest: &str) -> bool {
    let mut chars = rest.chars();
    matches!(chars.next(), Some('|' | '>')) && chars.all(|c| matches!(c, '-' | '+' | '0'..='9'))
}

/// End (exclusive) of a quoted value starting at `start`. `q` is `"`, `'`, `\"` or `\'`.
fn quoted_end(line: &str, start: usize, q: &str) -> usize {
    let bytes = line.as_bytes();
    if q.len() == 2 {
        // Escaped quote (JSON inside a JSON string): the value ends at the next `\"`.
        let close = q.as_bytes()[1];
        let mut i = start;
        while i + 1 < bytes.len() {
            if bytes[i] == b'\\' && bytes[i + 1] == close {
                return i;
            }
            i += 1;
        }
        return line.len();
    }
    let qb = q.as_bytes()[0];
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if qb == b'"' => i += 2,
            b if b == qb => return i,
            _ => i += 1,
        }
    }
    line.len()
}

/// End (exclusive) of an unquoted inline value.
fn inline_end(line: &str, start: usize, kind: KeyKind) -> usize {
    let bytes = line.as_bytes();
    let stop = |b: u8| b.is_ascii_whitespace() || matches!(b, b'&' | b'"' | b'\'');
    let mut i = start;
    while i < bytes.len() && !stop(bytes[i]) {
        i += 1;
    }
    if kind == KeyKind::Authorization && i > start && is_scheme(&line[start..i]) {
        // `Authorization: Bearer xyz`: the credentials are the next word.
        let mut j = i;
        while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
            j += 1;
        }
        let mut k = j;
        while k < bytes.len() && !stop(bytes[k]) {
            k += 1;
        }
        if k > j {
            return k;
        }
    }
    i
}

fn is_scheme(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    matches!(
        w.as_str(),
        "bearer"
            | "basic"
            | "digest"
            | "token"
            | "negotiate"
            | "ntlm"
            | "apikey"
            | "dsn"
            | "splunk"
            | "ssws"
    ) || w.starts_with("aws4-hmac")
}

/// Already scrubbed (`********` optionally followed by the kept last characters)?
pub(crate) fn already_masked(v: &str) -> bool {
    v.strip_prefix(MASK)
        .is_some_and(|rest| rest.len() <= 5 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The replacement for a value, by key kind.
pub(crate) fn mask_value(value: &str, kind: KeyKind) -> String {
    if value.is_empty() || already_masked(value) {
        return value.to_string();
    }
    match kind {
        KeyKind::KeepLast4 => keep_last(value, 4, 16),
        KeyKind::Authorization => {
            // Keep a leading scheme word, mask the rest.
            match value.split_once([' ', '\t']) {
                Some((scheme, creds)) if is_scheme(scheme) => {
                    let creds = creds.trim_start();
                    if already_masked(creds) {
                        value.to_string()
                    } else {
                        format!("{scheme} {MASK}")
                    }
                }
                _ => MASK.to_string(),
            }
        }
        KeyKind::Secret => MASK.to_string(),
    }
}

/// `********` + the last `n` characters when the value is long enough (`min_len`) and ends in
/// ASCII alphanumerics; a full mask otherwise (a short value would be half revealed).
pub(crate) fn keep_last(value: &str, n: usize, min_len: usize) -> String {
    let b = value.as_bytes();
    if b.len() >= min_len && b[b.len() - n..].iter().all(u8::is_ascii_alphanumeric) {
        format!("{MASK}{}", &value[value.len() - n..])
    } else {
        MASK.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: &str) -> String {
        KvScanner::new()
            .scrub(line, 0, &[])
            .0
            .unwrap_or_else(|| line.to_string())
    }

    #[test]
    fn forms() {
        assert_eq!(s("password: hunter2 hunter3"), "password: \"********\"");
        assert_eq!(s("  - password: 'x y'"), "  - password: '********'");
        assert_eq!(
            s(r#"{"token":"abc\"def","user":"bob"}"#),
            r#"{"token":"********","user":"bob"}"#
        );
        assert_eq!(
            s(r#"msg="{\"password\":\"pw1\"}""#),
            r#"msg="{\"password\":\"********\"}""#
        );
        assert_eq!(
            s("GET /x?api_key=0123456789abcdef0123&x=1"),
            "GET /x?api_key=********0123&x=1"
        );
        assert_eq!(
            s("ts=1 host=db password=s3cr3t dbname=x"),
            "ts=1 host=db password=******** dbname=x"
        );
        assert_eq!(
            s("req Authorization: Bearer abc.def next"),
            "req Authorization: Bearer ******** next"
        );
        assert_eq!(
            s("tests passed: 5, bypass: true"),
            "tests passed: 5, bypass: true"
        );
        assert_eq!(s(":: = == :=:"), ":: = == :=:");
    }

    #[test]
    fn block_start() {
        let (_, b) = KvScanner::new().scrub("  community_strings:", 0, &[]);
        assert_eq!(
            b,
            Some(BlockStart {
                indent: 2,
                same_indent_list: true
            })
        );
        let (_, b) = KvScanner::new().scrub("- private_key: |-", 0, &[]);
        assert_eq!(
            b,
            Some(BlockStart {
                indent: 2,
                same_indent_list: false
            })
        );
    }
}
