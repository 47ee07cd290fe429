//! Secret scrubber for everything the agent writes where a human (or a support ticket) can read
//! it: its own log lines, the flare, `config` output. Later shared with the server's log
//! pipeline.
//!
//! # Rules
//!
//! The default set follows the Datadog agent (`pkg/util/scrubber/default.go`, see
//! `specs/agent.md` §6) plus Warden's own key format:
//!
//! * API / application keys: `api_key=…`, `app_key: …`, bare 32/40-digit hex keys, `ddapp_…`,
//!   `DDRCM_…`; masked to `********` + the last 4 characters (last 5 for `DDRCM_`).
//! * Warden keys `wdn_api_<random>[_<crc>]`, `wdn_app_…` (any `wdn_<kind>_`): prefix kept,
//!   random part masked, last 4 characters kept.
//! * Passwords in URLs and DSNs (`postgres://user:pass@`, `user:pass@tcp(…)`), `password=`,
//!   `pwd:`, YAML/JSON keys holding passwords, tokens, secrets, access/private keys, SNMP
//!   communities and auth/priv keys, cookies, `Authorization`, header-style `x-*-key|token|auth|secret`,
//!   command-line `--password x`.
//! * `Bearer <token>` / `Basic <base64>` anywhere.
//! * PEM blocks (`-----BEGIN …-----` … `-----END …-----`), across lines.
//! * Dynamic: exact secret values resolved by the secrets backend ([`Scrubber::add_secret`]),
//!   extra key names from config ([`Scrubber::add_key`]).
//!
//! The replacement is `********`; in YAML form it is written `"********"` so that scrubbed
//! config output still parses.
//!
//! # Why hints
//!
//! Almost every log line is benign. Running a dozen regexes over each one would cost far more
//! than writing the line. Like Datadog's `Hints`, each rule lists substrings that any match must
//! contain (`pass`, `token`, `key`, `@`, `Bearer`, `-----BEGIN`, `wdn_` …). One Aho-Corasick
//! automaton over all hints answers "could anything match here?" in a single pass; only lines
//! that contain a hint run the rules it selects. Bare hex keys have no hint and are found by a
//! skip-ahead byte loop (`hex.rs`); exact dynamic secrets by a second automaton.
//!
//! # Why `Cow`
//!
//! [`Scrubber::scrub_line`] returns `Cow::Borrowed` when nothing matched, so the common path
//! allocates nothing and copies nothing; a caller writing to a log sink writes the borrowed
//! slice directly.
//!
//! # Multi-line content
//!
//! A PEM block or a YAML block value (`community_strings:` followed by a list, `password: |`)
//! spans lines. [`Scrubber::scrub_text`] and [`ScrubWriter`] carry a small state machine across
//! lines (and, for the writer, across `write` calls). [`Scrubber::scrub_line`] sees one line
//! only: a `-----BEGIN` without its `-----END` masks the rest of that line, but the following
//! base64 lines are not recognisable on their own — use the stateful APIs for multi-line input.
//!
//! # Use
//!
//! ```
//! use std::io::Write;
//! use std::sync::Arc;
//! use warden_scrubber::{ScrubWriter, Scrubber};
//!
//! let scrubber = Arc::new(Scrubber::default());
//! assert_eq!(
//!     scrubber.scrub_line("connect postgres://app:hunter2@db/x"),
//!     "connect postgres://app:********@db/x"
//! );
//! // Values resolved by the secrets backend, key names from `scrubber.additional_keys`:
//! scrubber.add_secret("s3cr3t-from-vault").unwrap();
//! scrubber.add_key("my_field").unwrap();
//!
//! // A log sink: scrubs whole lines, carries PEM/YAML state across writes. For tracing, wrap
//! // it in a `Mutex` (`tracing_subscriber::fmt().with_writer(Mutex::new(w))`): one shared
//! // writer, so the multi-line state survives between events.
//! let mut w = ScrubWriter::new(Vec::new(), Arc::clone(&scrubber));
//! w.write_all(b"my_field: 42\nvalue s3cr3t-from-vault seen\n").unwrap();
//! let out = String::from_utf8(w.finish().unwrap()).unwrap();
//! assert_eq!(out, "my_field: \"********\"\nvalue ******** seen\n");
//! ```

mod hex;
mod keys;
mod kv;
mod stream;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::{Captures, Regex};
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use zeroize::Zeroizing;

pub use stream::ScrubWriter;

/// What a secret is replaced with.
pub const MASK: &str = "********";

/// Secrets shorter than this are not added as exact-value replacers (see [`Scrubber::add_secret`]).
pub const MIN_SECRET_LEN: usize = 6;

/// Errors from configuring a [`Scrubber`]. Never contain a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("secret value is empty: nothing to mask")]
    EmptySecret,
    #[error(
        "secret value is {len} bytes long; values shorter than {min} bytes are not masked by value \
         (masking such a short string everywhere would destroy the logs); mask the setting by name \
         with add_key instead"
    )]
    SecretTooShort { len: usize, min: usize },
    #[error("key name {0:?} must be non-empty and contain a letter or digit")]
    InvalidKey(String),
    #[error("could not build the matcher for dynamic secrets/keys: {0}")]
    Matcher(String),
}

// Rule bits selected by hints.
const R_KV: u32 = 1 << 0;
const R_URI: u32 = 1 << 1;
const R_AUTH: u32 = 1 << 2;
const R_WDN: u32 = 1 << 3;
const R_DDAPP: u32 = 1 << 4;
const R_DDRCM: u32 = 1 << 5;
const R_PEM: u32 = 1 << 6;
const R_FLAG: u32 = 1 << 7;

/// Hints: (substring, rules it selects). Matched ASCII case-insensitively.
const HINTS: &[(&str, u32)] = &[
    ("@", R_URI),
    ("bearer", R_AUTH),
    ("basic", R_AUTH),
    ("wdn_", R_WDN),
    ("ddapp_", R_DDAPP),
    ("ddrcm_", R_DDRCM),
    ("-----begin", R_PEM),
];

/// Regex rules, compiled once.
struct Rules {
    wdn: Regex,
    ddapp: Regex,
    ddrcm: Regex,
    auth: Regex,
    uri: Regex,
    flag: Regex,
    pem_begin: Regex,
    pem_end: Regex,
}

impl Rules {
    fn new() -> Self {
        let re = |s: &str| Regex::new(s).expect("static scrubber regex is valid");
        Self {
            wdn: re(r"(?P<p>(?i:wdn)_[a-z]{2,6}_)(?P<r>[A-Za-z0-9]{12,}(?:_[A-Za-z0-9]{4,10})?)"),
            ddapp: re(r"ddapp_[A-Za-z0-9_]{20,}"),
            ddrcm: re(r"DDRCM_[A-Z0-9]{10,}"),
            auth: re(r"\b(?P<s>(?i:bearer|basic))[ \t]+(?P<t>[A-Za-z0-9._~+/=\-]+)"),
            // With a scheme the user may be empty (`redis://:pw@`); without one it must start
            // a token, so `image=repo/name:tag@…` does not look like `user:pass@`.
            uri: re(
                r#"(?:(?i:[a-z][a-z0-9+.\-]*)://[^:/\s@"'|]*|(?:^|[\s=(,;"'])[^:/\s@"'|=(,;]+):(?P<pass>[^\s"'|/]+)@"#,
            ),
            flag: re(
                r#"(?i)(?:^|\s)--?[a-z0-9_.\-]*(?:password|passwd|pass|pwd|token|secret|api-key|api_key|apikey|app-key|app_key|appkey|auth)[ \t]+(?P<v>"[^"]*"|'[^']*'|[^\s\-"'][^\s"']*)"#,
            ),
            pem_begin: re(r"-----BEGIN[^\n-]*-----"),
            pem_end: re(r"-----END[^\n-]*-----"),
        }
    }
}

/// Configuration that can change after construction: secrets resolved by the backend and key
/// names from config arrive after the logger (which owns a scrubber) is set up.
#[derive(Default)]
struct Dynamic {
    /// Compacted names (see `keys::compact`) for classification.
    extra_keys: Vec<String>,
    /// One alphanumeric segment per extra key, as hint.
    extra_hint_words: Vec<String>,
    extra_hints: Option<AhoCorasick>,
    secrets: Vec<Zeroizing<String>>,
    secret_ac: Option<AhoCorasick>,
}

/// Multi-line state carried between lines by [`Scrubber::scrub_text`] and [`ScrubWriter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Block {
    #[default]
    None,
    /// Inside a PEM block: lines are dropped until `-----END`.
    Pem,
    /// Inside a sensitive YAML value: more-indented lines are masked.
    Yaml(kv::BlockStart),
}

/// What a single line leaves behind for the next one.
enum Effect {
    None,
    PemOpen,
    YamlOpen(kv::BlockStart),
}

/// The scrubber. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Scrubber {
    /// Fast "any hint at all?" check (leftmost-first enables the SIMD prefilter).
    hint_any: AhoCorasick,
    /// All hints, overlapping, to select rules once a line is known to need work.
    hint_all: AhoCorasick,
    hint_bits: Vec<u32>,
    /// Key-name hints only: where the first candidate key can start.
    key_hints: AhoCorasick,
    rules: Rules,
    kv: kv::KvScanner,
    dynamic: RwLock<Arc<Dynamic>>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.dyn_snapshot();
        // Never print secret values, only how many there are.
        f.debug_struct("Scrubber")
            .field("hints", &self.hint_bits.len())
            .field("extra_keys", &d.extra_keys)
            .field("secrets", &d.secrets.len())
            .finish()
    }
}

impl Default for Scrubber {
    /// The default rules of `specs/agent.md` §6 plus Warden key formats.
    fn default() -> Self {
        let mut pats: Vec<&str> = Vec::new();
        let mut bits: Vec<u32> = Vec::new();
        for (h, b) in HINTS {
            pats.push(h);
            bits.push(*b);
        }
        for h in keys::KEY_HINTS {
            pats.push(h);
            bits.push(R_KV | R_FLAG);
        }
        let build = |kind| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(kind)
                .build(&pats)
                .expect("static hint automaton builds")
        };
        Self {
            hint_any: build(MatchKind::LeftmostFirst),
            hint_all: build(MatchKind::Standard),
            hint_bits: bits,
            key_hints: AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostFirst)
                .build(keys::KEY_HINTS)
                .expect("static key hint automaton builds"),
            rules: Rules::new(),
            kv: kv::KvScanner::new(),
            dynamic: RwLock::new(Arc::new(Dynamic::default())),
        }
    }
}

impl Scrubber {
    fn dyn_snapshot(&self) -> Arc<Dynamic> {
        Arc::clone(&self.dynamic.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn update_dynamic(&self, f: impl FnOnce(&mut Dynamic)) -> Result<(), ScrubError> {
        let mut guard = self.dynamic.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = Dynamic {
            extra_keys: guard.extra_keys.clone(),
            extra_hint_words: guard.extra_hint_words.clone(),
            extra_hints: None,
            secrets: guard.secrets.clone(),
            secret_ac: None,
        };
        f(&mut next);
        next.extra_hints = build_exact(next.extra_hint_words.iter().map(String::as_str), true)?;
        next.secret_ac = build_exact(next.secrets.iter().map(|s| s.as_str()), false)?;
        *guard = Arc::new(next);
        Ok(())
    }

    /// Mask every later occurrence of this exact value (a secret resolved by the secrets
    /// backend, a password read from a file). The value is kept in zeroize-on-drop memory;
    /// the matcher automaton holds its own copy which cannot be wiped.
    ///
    /// Values shorter than [`MIN_SECRET_LEN`] are refused: mask their setting by name instead.
    pub fn add_secret(&self, value: &str) -> Result<(), ScrubError> {
        if value.is_empty() {
            return Err(ScrubError::EmptySecret);
        }
        if value.len() < MIN_SECRET_LEN {
            return Err(ScrubError::SecretTooShort {
                len: value.len(),
                min: MIN_SECRET_LEN,
            });
        }
        self.update_dynamic(|d| {
            if !d.secrets.iter().any(|s| s.as_str() == value) {
                d.secrets.push(Zeroizing::new(value.to_string()));
            }
        })
    }

    /// Treat values of this key (case-insensitive; `_`, `-`, `.` ignored) as secrets, in every
    /// form the key/value rule knows (YAML, JSON, `key=value`, headers).
    pub fn add_key(&self, name: &str) -> Result<(), ScrubError> {
        let c = keys::compact(name);
        if c.is_empty() {
            return Err(ScrubError::InvalidKey(name.to_string()));
        }
        // The longest alphanumeric run is a substring of every spelling of the name
        // (`my_field`, `My-Field`) only if it has no separator, so hint on one segment.
        let word = name
            .split(|ch: char| !ch.is_ascii_alphanumeric())
            .max_by_key(|w| w.len())
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.update_dynamic(|d| {
            if !d.extra_keys.contains(&c) {
                d.extra_keys.push(c);
                d.extra_hint_words.push(word);
            }
        })
    }

    /// Scrub one line (no trailing newline expected; a `\n` inside is treated as text).
    /// Borrowed when nothing matched.
    pub fn scrub_line<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let d = self.dyn_snapshot();
        self.scrub_one(&d, line).0
    }

    /// Scrub multi-line text, masking PEM blocks and multi-line YAML values. Line endings
    /// (`\n`, `\r\n`) are kept; lines inside a PEM block are removed and the block becomes one
    /// `********`.
    pub fn scrub_text(&self, text: &str) -> String {
        let d = self.dyn_snapshot();
        let mut out = String::with_capacity(text.len());
        let mut state = Block::None;
        self.scrub_lines(&d, &mut state, text, &mut out);
        out
    }

    /// Scrub `text` line by line into `out`, carrying `state`. A final line without `\n` is
    /// processed too.
    pub(crate) fn scrub_lines_shared(&self, state: &mut Block, text: &str, out: &mut String) {
        let d = self.dyn_snapshot();
        self.scrub_lines(&d, state, text, out);
    }

    fn scrub_lines(&self, d: &Dynamic, state: &mut Block, text: &str, out: &mut String) {
        let mut rest = text;
        while !rest.is_empty() {
            let (line, nl, next) = match rest.find('\n') {
                Some(i) => (&rest[..i], "\n", &rest[i + 1..]),
                None => (rest, "", ""),
            };
            let (body, cr) = match line.strip_suffix('\r') {
                Some(b) => (b, "\r"),
                None => (line, ""),
            };
            if let Some(scrubbed) = self.scrub_stateful(d, state, body) {
                out.push_str(&scrubbed);
                out.push_str(cr);
                out.push_str(nl);
            }
            rest = next;
        }
    }

    /// One line through the state machine; `None` drops the line (inside a PEM block).
    fn scrub_stateful<'a>(
        &self,
        d: &Dynamic,
        state: &mut Block,
        line: &'a str,
    ) -> Option<Cow<'a, str>> {
        match *state {
            Block::Pem => {
                if let Some(m) = self.rules.pem_end.find(line) {
                    *state = Block::None;
                    let tail = &line[m.end()..];
                    if tail.trim().is_empty() {
                        return None;
                    }
                    return Some(Cow::Owned(
                        self.scrub_stateful(d, state, tail)?.into_owned(),
                    ));
                }
                if is_pem_body(line) {
                    return None;
                }
                // Truncated block: the key material (body lines) is gone; resume normal work.
                *state = Block::None;
            }
            Block::Yaml(b) => {
                if let Some(masked) = mask_block_line(line, b) {
                    return Some(masked);
                }
                *state = Block::None;
            }
            Block::None => {}
        }
        let (out, effect) = self.scrub_one(d, line);
        match effect {
            Effect::None => {}
            Effect::PemOpen => *state = Block::Pem,
            Effect::YamlOpen(b) => *state = Block::Yaml(b),
        }
        Some(out)
    }

    /// The single-line pipeline. The rule pass is repeated (at most `MAX_PASSES` times) while it
    /// still changes the line: masking one value can expose a pattern that an earlier rule
    /// skipped (`password://Basic Bearer x`), and scrubbing must be idempotent.
    fn scrub_one<'a>(&self, d: &Dynamic, line: &'a str) -> (Cow<'a, str>, Effect) {
        const MAX_PASSES: usize = 4;
        let mut cur: Cow<'a, str> = Cow::Borrowed(line);
        let mut effect = Effect::None;
        for _ in 0..MAX_PASSES {
            let (next, e) = self.rule_pass(d, cur.as_ref());
            if matches!(effect, Effect::None) {
                effect = e;
            }
            match next {
                Some(s) => cur = Cow::Owned(s),
                None => break,
            }
        }
        (cur, effect)
    }

    /// One pass of every rule; `None` when nothing changed.
    fn rule_pass(&self, d: &Dynamic, line: &str) -> (Option<String>, Effect) {
        let mut cur: Cow<'_, str> = Cow::Borrowed(line);
        let mut effect = Effect::None;

        // 1. Exact secret values first, so no rule can keep a fragment of them.
        if let Some(ac) = &d.secret_ac {
            if ac.is_match(cur.as_ref()) {
                cur = Cow::Owned(ac.replace_all(cur.as_ref(), &vec![MASK; ac.patterns_len()]));
            }
        }

        // 2. Hints select the rules.
        let mut bits = 0u32;
        if self.hint_any.is_match(cur.as_ref()) {
            for m in self.hint_all.find_overlapping_iter(cur.as_ref()) {
                bits |= self.hint_bits[m.pattern().as_usize()];
            }
        }
        if let Some(ac) = &d.extra_hints {
            if ac.is_match(cur.as_ref()) {
                bits |= R_KV;
            }
        }

        if bits != 0 {
            let r = &self.rules;
            if bits & R_PEM != 0 {
                if let Some((s, open)) = self.scrub_pem_inline(cur.as_ref()) {
                    cur = Cow::Owned(s);
                    if open {
                        effect = Effect::PemOpen;
                    }
                }
            }
            if bits & R_WDN != 0 {
                apply(&mut cur, &r.wdn, |c| {
                    let rand = &c["r"];
                    format!("{}{}", &c["p"], kv::keep_last(rand, 4, 8))
                });
            }
            if bits & R_DDAPP != 0 {
                apply(&mut cur, &r.ddapp, |c| {
                    format!("ddapp_{}", kv::keep_last(&c[0], 4, 8))
                });
            }
            if bits & R_DDRCM != 0 {
                apply(&mut cur, &r.ddrcm, |c| {
                    format!("DDRCM_{}", kv::keep_last(&c[0], 5, 10))
                });
            }
            if bits & R_AUTH != 0 {
                if let Some(s) = scrub_auth(&r.auth, cur.as_ref()) {
                    cur = Cow::Owned(s);
                }
            }
            if bits & R_URI != 0 {
                if let Some(s) = scrub_uri(&r.uri, cur.as_ref()) {
                    cur = Cow::Owned(s);
                }
            }
            if bits & R_FLAG != 0 {
                apply(&mut cur, &r.flag, |c| {
                    let whole = c.get(0).expect("group 0");
                    let v = c.name("v").expect("v group always matches");
                    let head = &whole.as_str()[..v.start() - whole.start()];
                    let inner = v.as_str().trim_matches(['"', '\'']);
                    if kv::already_masked(inner) {
                        whole.as_str().to_string()
                    } else if v.as_str().starts_with(['"', '\'']) {
                        let q = &v.as_str()[..1];
                        format!("{head}{q}{MASK}{q}")
                    } else {
                        format!("{head}{MASK}")
                    }
                });
            }
            if bits & R_KV != 0 {
                // A sensitive key contains a hint: start at the token holding the first one,
                // skipping the timestamp/logger prefix full of `a:b` pairs.
                let text = cur.as_ref();
                let first = [
                    self.key_hints.find(text).map(|m| m.start()),
                    d.extra_hints
                        .as_ref()
                        .and_then(|ac| ac.find(text))
                        .map(|m| m.start()),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(0);
                let from = kv::token_start(text, first);
                let (out, block) = self.kv.scrub(text, from, &d.extra_keys);
                if let Some(o) = out {
                    cur = Cow::Owned(o);
                }
                if let Some(b) = block {
                    if matches!(effect, Effect::None) {
                        effect = Effect::YamlOpen(b);
                    }
                }
            }
        }

        // 3. Bare hex keys: no hint possible, checked on every line.
        if let Some(s) = hex::scrub(cur.as_ref()) {
            cur = Cow::Owned(s);
        }
        match cur {
            Cow::Owned(s) if s != line => (Some(s), effect),
            _ => (None, effect),
        }
    }

    /// PEM blocks within one line; `open` when a `BEGIN` has no `END` on this line.
    fn scrub_pem_inline(&self, line: &str) -> Option<(String, bool)> {
        let first = self.rules.pem_begin.find(line)?;
        let mut out = String::with_capacity(line.len());
        let mut pos = 0;
        let mut begin = Some(first);
        while let Some(b) = begin {
            out.push_str(&line[pos..b.start()]);
            out.push_str(MASK);
            match self.rules.pem_end.find_at(line, b.end()) {
                Some(e) => {
                    pos = e.end();
                    begin = self.rules.pem_begin.find_at(line, pos);
                }
                None => return Some((out, true)),
            }
        }
        out.push_str(&line[pos..]);
        Some((out, false))
    }
}

/// Replace all matches of `re` in `cur` through `f`, keeping `cur` borrowed when nothing
/// actually changes.
fn apply(cur: &mut Cow<'_, str>, re: &Regex, f: impl Fn(&Captures<'_>) -> String) {
    let replaced = match re.replace_all(cur.as_ref(), |c: &Captures<'_>| f(c)) {
        Cow::Borrowed(_) => None,
        Cow::Owned(s) => Some(s),
    };
    if let Some(s) = replaced {
        if s != cur.as_ref() {
            *cur = Cow::Owned(s);
        }
    }
}

/// `Bearer <token>` / `Basic <base64>`. When a match is not a credential ("Basic Bearer"), the
/// search resumes at its token, which may itself start a credential ("Bearer x").
fn scrub_auth(re: &Regex, text: &str) -> Option<String> {
    let mut out = String::new();
    let mut last = 0;
    let mut pos = 0;
    while let Some(c) = re.captures_at(text, pos) {
        let scheme = c.name("s").expect("s group always matches");
        let tok = c.name("t").expect("t group always matches");
        if !auth_token_is_secret(scheme.as_str(), tok.as_str()) {
            pos = tok.start();
            continue;
        }
        let t = tok.as_str();
        out.push_str(&text[last..scheme.end()]);
        out.push(' ');
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push_str(&kv::keep_last(t, 5, 64));
        } else {
            out.push_str(MASK);
        }
        last = tok.end();
        pos = tok.end();
    }
    if last == 0 {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// `scheme://user:PASS@` and `user:PASS@host` (Go MySQL DSNs). Not container image digests
/// (`redis:7.2@sha256:…`) nor `mailto:user@host`.
fn scrub_uri(re: &Regex, text: &str) -> Option<String> {
    let mut out = String::new();
    let mut last = 0;
    for c in re.captures_iter(text) {
        let whole = c.get(0).expect("group 0");
        let pass = c.name("pass").expect("pass group always matches");
        let user = &text[whole.start()..pass.start() - 1];
        let after = &text[whole.end()..];
        if after.starts_with("sha256:")
            || after.starts_with("sha512:")
            || user
                .trim_start_matches(|ch: char| !ch.is_ascii_alphanumeric())
                .eq_ignore_ascii_case("mailto")
            || pass.as_str() == MASK
        {
            continue;
        }
        out.push_str(&text[last..pass.start()]);
        out.push_str(MASK);
        last = pass.end();
    }
    if last == 0 {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// `Bearer <token>` with canonical capitalisation is always a credential; other spellings
/// ("bearer token", "basic auth" in prose) only when the token does not read like a word.
fn auth_token_is_secret(scheme: &str, tok: &str) -> bool {
    if tok.starts_with(MASK) {
        return false;
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let b = tok.as_bytes();
        return b.len() >= 8
            && b.len() % 4 == 0
            && b.iter().enumerate().any(|(i, c)| {
                c.is_ascii_digit()
                    || matches!(c, b'+' | b'/' | b'=')
                    || (i > 0 && c.is_ascii_uppercase())
            });
    }
    if scheme == "Bearer" {
        return true;
    }
    !tok.bytes().all(|b| b.is_ascii_lowercase())
}

/// A line that can be part of a PEM body: base64, blank, or an RFC 1421 header
/// (`Proc-Type: 4,ENCRYPTED`), possibly quoted or with a trailing `\n` escape in YAML/JSON.
fn is_pem_body(line: &str) -> bool {
    let t = line.trim().trim_matches(['"', '\'', ',', '\\']);
    if t.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return true;
    }
    if let Some((name, _)) = t.split_once(": ") {
        return !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-');
    }
    false
}

/// Mask one line inside a sensitive YAML block, or `None` when the block has ended.
fn mask_block_line(line: &str, b: kv::BlockStart) -> Option<Cow<'_, str>> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() {
        return Some(Cow::Borrowed(line));
    }
    let indent = line.len() - trimmed.len();
    let is_item = trimmed == "-" || trimmed.starts_with("- ");
    if indent < b.indent || (indent == b.indent && !(b.same_indent_list && is_item)) {
        return None;
    }
    let prefix = &line[..indent];
    let masked = if is_item {
        format!("{prefix}- {}", kv::QUOTED_MASK)
    } else if trimmed.ends_with(':') && b.same_indent_list {
        // A nested key with its own nested value (additional_endpoints URL keys): keep.
        return Some(Cow::Borrowed(line));
    } else if let (true, Some(i)) = (b.same_indent_list, trimmed.find(": ")) {
        format!("{prefix}{}{}", &trimmed[..i + 2], kv::QUOTED_MASK)
    } else {
        format!("{prefix}{MASK}")
    };
    if masked == line {
        Some(Cow::Borrowed(line))
    } else {
        Some(Cow::Owned(masked))
    }
}

fn build_exact<'a>(
    pats: impl Iterator<Item = &'a str>,
    case_insensitive: bool,
) -> Result<Option<AhoCorasick>, ScrubError> {
    let pats: Vec<&str> = pats.collect();
    if pats.is_empty() {
        return Ok(None);
    }
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(case_insensitive)
        .match_kind(MatchKind::LeftmostLongest)
        .build(&pats)
        .map(Some)
        .map_err(|e| ScrubError::Matcher(e.to_string()))
}
