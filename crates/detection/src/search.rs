//! The Datadog search-syntax subset shared by rule queries (over events) and the signals API
//! filter (over signals).
//!
//! Why one parser for both: a rule query (`@appsec.security_activity:attack_attempt.*`) and a
//! CI gate's filter (`env:staging service:x status:high`) are the same language in Datadog, and
//! users copy queries between the two. What a field *means* is the document's business
//! ([`Fields`]); the parser only builds the boolean structure.
//!
//! Supported: `field:value`, `@attr.path:value`, free text, implicit AND, `AND`, `OR`, `NOT`,
//! `-`/`!` negation, parentheses, `field:(a OR b)`, quoted values, `*`/`?` wildcards,
//! `field:*` (exists), numeric comparisons `field:>=400`, `\` escapes. Matching ignores case.
//! Errors carry the byte offset of the problem.

use std::fmt;

/// A parse error with the byte offset in the query where it was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct SearchError {
    pub position: usize,
    pub message: String,
}

/// Longest query accepted.
pub const MAX_QUERY_LEN: usize = 8192;
/// Deepest nesting of parentheses / negations.
const MAX_DEPTH: usize = 64;

/// What a query is evaluated against.
pub trait Fields {
    /// True when `f` returns true for some value of `field` (as written in the query,
    /// including a leading `@` for attributes).
    fn any_value(&self, field: &str, f: &mut dyn FnMut(&str) -> bool) -> bool;
    /// True when `f` returns true for some free-text field (message, title...).
    fn any_text(&self, f: &mut dyn FnMut(&str) -> bool) -> bool;
}

/// A value pattern, lower-cased.
#[derive(Clone, Debug, PartialEq)]
pub enum Pattern {
    /// Exact (case-insensitive) equality.
    Exact(String),
    /// `*` and `?` wildcards (chars: `None` = `*`, `Some(None)` = `?`, `Some(Some(c))` = c).
    Wildcard(Vec<WildTok>),
    /// `field:*`: the field exists.
    Any,
    /// `field:>N`, `>=`, `<`, `<=`.
    Cmp(CmpOp, f64),
}

/// One token of a wildcard pattern.
#[derive(Clone, Debug, PartialEq)]
pub enum WildTok {
    Star,
    One,
    Char(char),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Matches everything (empty query or `*`).
    All,
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `field:pattern`; `field` keeps its leading `@`.
    Field(String, Pattern),
    /// Free text.
    Text(Pattern),
}

/// A compiled query: parse once, evaluate many times.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    source: String,
    expr: Expr,
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Query {
    /// Parses `q`. Never panics; errors name the byte offset.
    pub fn parse(q: &str) -> Result<Query, SearchError> {
        if q.len() > MAX_QUERY_LEN {
            return Err(SearchError {
                position: MAX_QUERY_LEN,
                message: format!("query longer than {MAX_QUERY_LEN} bytes"),
            });
        }
        let toks = lex(q)?;
        let mut p = Parser {
            toks: &toks,
            i: 0,
            depth: 0,
            end: q.len(),
        };
        let expr = if toks.is_empty() {
            Expr::All
        } else {
            let e = p.or()?;
            if let Some(t) = p.peek() {
                let what = match t.kind {
                    TokKind::RParen => "unbalanced ')'".to_string(),
                    _ => "unexpected token".to_string(),
                };
                return Err(SearchError {
                    position: t.pos,
                    message: what,
                });
            }
            e
        };
        Ok(Query {
            source: q.to_string(),
            expr,
        })
    }

    /// The parsed tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The query text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when `doc` matches.
    pub fn matches(&self, doc: &dyn Fields) -> bool {
        eval(&self.expr, doc)
    }

    /// Values an AND-ed top-level `field:exact` term requires (e.g. `service` in
    /// `service:x env:y`), for index pre-filtering by callers. Empty when none.
    pub fn required_exact(&self, field: &str) -> Vec<String> {
        let mut out = Vec::new();
        let terms: &[Expr] = match &self.expr {
            Expr::And(v) => v,
            e => std::slice::from_ref(e),
        };
        for t in terms {
            if let Expr::Field(f, Pattern::Exact(v)) = t {
                if f == field {
                    out.push(v.clone());
                }
            }
        }
        out
    }
}

fn eval(e: &Expr, doc: &dyn Fields) -> bool {
    match e {
        Expr::All => true,
        Expr::And(v) => v.iter().all(|x| eval(x, doc)),
        Expr::Or(v) => v.iter().any(|x| eval(x, doc)),
        Expr::Not(x) => !eval(x, doc),
        Expr::Field(f, p) => doc.any_value(f, &mut |v| p.matches(v)),
        Expr::Text(p) => doc.any_text(&mut |v| p.matches_text(v)),
    }
}

impl Pattern {
    fn from_raw(raw: &str, quoted: bool) -> Pattern {
        if !quoted {
            if raw == "*" {
                return Pattern::Any;
            }
            for (op, pre) in [
                (CmpOp::Ge, ">="),
                (CmpOp::Le, "<="),
                (CmpOp::Gt, ">"),
                (CmpOp::Lt, "<"),
            ] {
                if let Some(n) = raw.strip_prefix(pre).and_then(|n| n.parse::<f64>().ok()) {
                    if n.is_finite() {
                        return Pattern::Cmp(op, n);
                    }
                }
            }
        }
        Pattern::Exact(raw.to_lowercase())
    }

    /// Matches one whole value.
    pub fn matches(&self, v: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(s) => eq_ignore_case(v, s),
            Pattern::Wildcard(toks) => {
                let lower: Vec<char> = v.chars().flat_map(char::to_lowercase).collect();
                wild_match(toks, &lower)
            }
            Pattern::Cmp(op, n) => match v.trim().parse::<f64>() {
                Ok(x) => match op {
                    CmpOp::Gt => x > *n,
                    CmpOp::Ge => x >= *n,
                    CmpOp::Lt => x < *n,
                    CmpOp::Le => x <= *n,
                },
                Err(_) => false,
            },
        }
    }

    /// Free text: a word anywhere in the text (wildcards anchored to the whole text).
    fn matches_text(&self, v: &str) -> bool {
        match self {
            Pattern::Exact(s) => v.to_lowercase().contains(s.as_str()),
            other => other.matches(v),
        }
    }
}

fn eq_ignore_case(v: &str, lower: &str) -> bool {
    if v.is_ascii() && lower.is_ascii() {
        return v.eq_ignore_ascii_case(lower);
    }
    v.to_lowercase() == lower
}

/// Iterative wildcard match with backtracking to the last `*` (linear-ish, no recursion).
fn wild_match(p: &[WildTok], s: &[char]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(WildTok::Star) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(WildTok::One) => {
                pi += 1;
                si += 1;
            }
            Some(WildTok::Char(c)) if *c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|t| *t == WildTok::Star)
}

// ---------------------------------------------------------------- lexer

#[derive(Clone, Debug, PartialEq)]
enum TokKind {
    LParen,
    RParen,
    And,
    Or,
    Not,
    /// `-` or `!` directly before a term or `(`.
    Neg,
    /// A term: optional field, then either a value or (when the value is `(`) a group.
    Term {
        field: Option<String>,
        value: Option<(Pattern, usize)>,
    },
    /// Free-standing value (no field).
    Value(Pattern),
}

#[derive(Clone, Debug)]
struct Tok {
    kind: TokKind,
    pos: usize,
}

fn is_break(c: char) -> bool {
    c.is_whitespace() || c == '(' || c == ')'
}

/// Reads a bare word from `chars[i..]` (escapes resolved, wildcards noted). Stops at
/// whitespace or parentheses, and at the first unescaped `:` when `stop_colon`.
fn read_word(
    q: &str,
    start: usize,
    stop_colon: bool,
) -> Result<(String, Vec<WildTok>, bool, usize), SearchError> {
    let mut out = String::new();
    let mut wild = Vec::new();
    let mut has_wild = false;
    let mut it = q[start..].char_indices().peekable();
    let mut end = q.len();
    while let Some((off, c)) = it.next() {
        let pos = start + off;
        if is_break(c) || (stop_colon && c == ':') {
            end = pos;
            break;
        }
        match c {
            '\\' => match it.next() {
                Some((_, e)) => {
                    out.push(e);
                    wild.extend(e.to_lowercase().map(WildTok::Char));
                }
                None => {
                    return Err(SearchError {
                        position: pos,
                        message: "dangling escape '\\'".into(),
                    });
                }
            },
            '"' => {
                return Err(SearchError {
                    position: pos,
                    message: "unexpected '\"' inside a word (quote the whole value)".into(),
                });
            }
            '*' => {
                out.push('*');
                wild.push(WildTok::Star);
                has_wild = true;
            }
            '?' => {
                out.push('?');
                wild.push(WildTok::One);
                has_wild = true;
            }
            c => {
                out.push(c);
                wild.extend(c.to_lowercase().map(WildTok::Char));
            }
        }
    }
    Ok((out, wild, has_wild, end))
}

/// Reads a quoted string starting at the `"` at `start`; returns (value, end after quote).
fn read_quoted(q: &str, start: usize) -> Result<(String, usize), SearchError> {
    let mut out = String::new();
    let mut it = q[start + 1..].char_indices();
    while let Some((off, c)) = it.next() {
        match c {
            '"' => return Ok((out, start + 1 + off + 1)),
            '\\' => match it.next() {
                Some((_, e)) => out.push(e),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(SearchError {
        position: start,
        message: "unterminated quoted string".into(),
    })
}

fn word_pattern(raw: String, wild: Vec<WildTok>, has_wild: bool) -> Pattern {
    if has_wild && raw != "*" {
        Pattern::Wildcard(wild)
    } else {
        Pattern::from_raw(&raw, false)
    }
}

fn lex(q: &str) -> Result<Vec<Tok>, SearchError> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < q.len() {
        let Some(c) = q[i..].chars().next() else {
            break;
        };
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        match c {
            '(' => {
                toks.push(Tok {
                    kind: TokKind::LParen,
                    pos: i,
                });
                i += 1;
            }
            ')' => {
                toks.push(Tok {
                    kind: TokKind::RParen,
                    pos: i,
                });
                i += 1;
            }
            '-' | '!'
                if q[i + 1..]
                    .chars()
                    .next()
                    .is_some_and(|n| !n.is_whitespace()) =>
            {
                toks.push(Tok {
                    kind: TokKind::Neg,
                    pos: i,
                });
                i += 1;
            }
            '"' => {
                let (v, end) = read_quoted(q, i)?;
                toks.push(Tok {
                    kind: TokKind::Value(Pattern::from_raw(&v, true)),
                    pos: i,
                });
                i = end;
            }
            _ => {
                let (word, wild, has_wild, end) = read_word(q, i, true)?;
                let after_colon = q[end..].starts_with(':');
                if after_colon && !word.is_empty() && !has_wild {
                    // field:value
                    let vstart = end + 1;
                    let next = q[vstart..].chars().next();
                    let (value, vend) = match next {
                        None => {
                            return Err(SearchError {
                                position: vstart,
                                message: format!("missing value after '{word}:'"),
                            });
                        }
                        Some(ch) if ch.is_whitespace() || ch == ')' => {
                            return Err(SearchError {
                                position: vstart,
                                message: format!("missing value after '{word}:'"),
                            });
                        }
                        Some('(') => (None, vstart),
                        Some('"') => {
                            let (v, e) = read_quoted(q, vstart)?;
                            (Some((Pattern::from_raw(&v, true), vstart)), e)
                        }
                        Some(_) => {
                            let (v, w, hw, e) = read_word(q, vstart, false)?;
                            (Some((word_pattern(v, w, hw), vstart)), e)
                        }
                    };
                    toks.push(Tok {
                        kind: TokKind::Term {
                            field: Some(word),
                            value,
                        },
                        pos: i,
                    });
                    i = vend;
                } else {
                    // A bare word (a ':' inside a wildcard word is kept as text).
                    let (word, wild, has_wild, end) = if after_colon {
                        read_word(q, i, false)?
                    } else {
                        (word, wild, has_wild, end)
                    };
                    let kind = match word.as_str() {
                        "AND" if !has_wild => TokKind::And,
                        "OR" if !has_wild => TokKind::Or,
                        "NOT" if !has_wild => TokKind::Not,
                        "&&" => TokKind::And,
                        "||" => TokKind::Or,
                        _ => TokKind::Value(word_pattern(word, wild, has_wild)),
                    };
                    toks.push(Tok { kind, pos: i });
                    i = end;
                }
            }
        }
    }
    Ok(toks)
}

// ---------------------------------------------------------------- parser

struct Parser<'a> {
    toks: &'a [Tok],
    i: usize,
    depth: usize,
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn err<T>(&self, pos: usize, message: impl Into<String>) -> Result<T, SearchError> {
        Err(SearchError {
            position: pos,
            message: message.into(),
        })
    }

    fn pos(&self) -> usize {
        self.peek().map(|t| t.pos).unwrap_or(self.end)
    }

    fn enter(&mut self) -> Result<(), SearchError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(self.pos(), format!("nesting deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, SearchError> {
        let mut v = vec![self.and()?];
        while matches!(self.peek().map(|t| &t.kind), Some(TokKind::Or)) {
            self.i += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap_or(Expr::All)
        } else {
            Expr::Or(v)
        })
    }

    fn and(&mut self) -> Result<Expr, SearchError> {
        let mut v = vec![self.unary()?];
        loop {
            match self.peek().map(|t| &t.kind) {
                Some(TokKind::And) => {
                    self.i += 1;
                    v.push(self.unary()?);
                }
                Some(TokKind::Or) | Some(TokKind::RParen) | None => break,
                Some(_) => v.push(self.unary()?),
            }
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap_or(Expr::All)
        } else {
            Expr::And(v)
        })
    }

    fn unary(&mut self) -> Result<Expr, SearchError> {
        let Some(t) = self.peek().cloned() else {
            return self.err(self.end, "expected a term");
        };
        match t.kind {
            TokKind::Not | TokKind::Neg => {
                self.i += 1;
                self.enter()?;
                let e = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(e)))
            }
            TokKind::LParen => {
                self.i += 1;
                self.enter()?;
                let e = self.or()?;
                self.depth -= 1;
                self.close(t.pos)?;
                Ok(e)
            }
            TokKind::Term { field, value } => {
                self.i += 1;
                let Some(field) = field else {
                    return self.err(t.pos, "term without a field");
                };
                match value {
                    Some((p, _)) => Ok(Expr::Field(field, p)),
                    None => {
                        // field:( ... ): a group of values for one field.
                        let open = match self.peek() {
                            Some(Tok {
                                kind: TokKind::LParen,
                                pos,
                            }) => *pos,
                            _ => return self.err(self.pos(), "expected '('"),
                        };
                        self.i += 1;
                        self.enter()?;
                        let e = self.value_or(&field)?;
                        self.depth -= 1;
                        self.close(open)?;
                        Ok(e)
                    }
                }
            }
            TokKind::Value(p) => {
                self.i += 1;
                Ok(match p {
                    Pattern::Any => Expr::All,
                    p => Expr::Text(p),
                })
            }
            TokKind::And | TokKind::Or => self.err(t.pos, "expected a term before the operator"),
            TokKind::RParen => self.err(t.pos, "unexpected ')'"),
        }
    }

    fn close(&mut self, open: usize) -> Result<(), SearchError> {
        match self.peek() {
            Some(Tok {
                kind: TokKind::RParen,
                ..
            }) => {
                self.i += 1;
                Ok(())
            }
            _ => self.err(open, "unbalanced '(': no matching ')'"),
        }
    }

    /// Inside `field:( ... )`: values joined by OR / AND (implicit AND), NOT, groups.
    fn value_or(&mut self, field: &str) -> Result<Expr, SearchError> {
        let mut v = vec![self.value_and(field)?];
        while matches!(self.peek().map(|t| &t.kind), Some(TokKind::Or)) {
            self.i += 1;
            v.push(self.value_and(field)?);
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap_or(Expr::All)
        } else {
            Expr::Or(v)
        })
    }

    fn value_and(&mut self, field: &str) -> Result<Expr, SearchError> {
        let mut v = vec![self.value_unary(field)?];
        loop {
            match self.peek().map(|t| &t.kind) {
                Some(TokKind::And) => {
                    self.i += 1;
                    v.push(self.value_unary(field)?);
                }
                Some(TokKind::Or) | Some(TokKind::RParen) | None => break,
                Some(_) => v.push(self.value_unary(field)?),
            }
        }
        Ok(if v.len() == 1 {
            v.pop().unwrap_or(Expr::All)
        } else {
            Expr::And(v)
        })
    }

    fn value_unary(&mut self, field: &str) -> Result<Expr, SearchError> {
        let Some(t) = self.peek().cloned() else {
            return self.err(self.end, "expected a value");
        };
        match t.kind {
            TokKind::Not | TokKind::Neg => {
                self.i += 1;
                self.enter()?;
                let e = self.value_unary(field)?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(e)))
            }
            TokKind::LParen => {
                self.i += 1;
                self.enter()?;
                let e = self.value_or(field)?;
                self.depth -= 1;
                self.close(t.pos)?;
                Ok(e)
            }
            TokKind::Value(p) => {
                self.i += 1;
                Ok(Expr::Field(field.to_string(), p))
            }
            TokKind::Term { .. } => self.err(t.pos, "a field inside a field's value group"),
            _ => self.err(t.pos, "expected a value"),
        }
    }
}

// ---------------------------------------------------------------- documents

/// Rule queries over security events. Field names are the Datadog facets: `service`, `env`,
/// `host`, `@http.client_ip`, `@usr.id`, `@appsec.security_activity` (any of the event's
/// activities), `@appsec.blocked`, `@http.*`, then the span's tags. Free text searches the
/// resource and URL.
impl Fields for warden_model::SecurityEvent {
    fn any_value(&self, field: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        let name = field.strip_prefix('@').unwrap_or(field);
        match name {
            "appsec.security_activity" | "security_activity" => self.activity.iter().any(|a| f(a)),
            "appsec.blocked" | "blocked" => f(if self.blocked { "true" } else { "false" }),
            "appsec.event" => f("true"),
            "source" => f("appsec"),
            _ => self.attribute(name).is_some_and(|v| f(&v)),
        }
    }

    fn any_text(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        f(&self.resource) || self.http_url.as_deref().is_some_and(f)
    }
}

/// A JSON document searched the way Datadog searches signals: `@a.b` walks the attribute
/// object by dotted path (arrays match on any element); a field without `@` is a reserved
/// top-level attribute (`status`, `service`, `env`, `host`...) or a `key:value` tag.
pub struct JsonDoc<'a> {
    /// Top-level reserved attributes (e.g. `status`, `service`, `host`).
    pub top: &'a serde_json::Value,
    /// The nested attribute object `@` paths walk.
    pub attrs: &'a serde_json::Value,
    /// `key:value` tags.
    pub tags: &'a [String],
    /// Free-text fields.
    pub text: &'a [&'a str],
}

fn json_any(v: &serde_json::Value, f: &mut dyn FnMut(&str) -> bool) -> bool {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Number(n) => f(&n.to_string()),
        serde_json::Value::Bool(b) => f(if *b { "true" } else { "false" }),
        serde_json::Value::Array(a) => a.iter().any(|x| json_any(x, f)),
        _ => false,
    }
}

fn json_path<'v>(
    v: &'v serde_json::Value,
    path: &str,
    f: &mut dyn FnMut(&'v serde_json::Value) -> bool,
) -> bool {
    if path.is_empty() {
        return f(v);
    }
    match v {
        serde_json::Value::Object(m) => {
            // Longest key first: a key may itself hold dots (`http.client_ip` flat).
            if let Some(x) = m.get(path) {
                if f(x) {
                    return true;
                }
            }
            let mut found = false;
            for (i, _) in path.match_indices('.') {
                if let Some(x) = m.get(&path[..i]) {
                    if json_path(x, &path[i + 1..], f) {
                        found = true;
                        break;
                    }
                }
            }
            found
        }
        serde_json::Value::Array(a) => a.iter().any(|x| json_path(x, path, f)),
        _ => false,
    }
}

impl Fields for JsonDoc<'_> {
    fn any_value(&self, field: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        if let Some(path) = field.strip_prefix('@') {
            return json_path(self.attrs, path, &mut |v| json_any(v, f));
        }
        if let Some(v) = self.top.get(field) {
            if json_any(v, f) {
                return true;
            }
        }
        let lower = field.to_ascii_lowercase();
        self.tags.iter().any(|t| match t.split_once(':') {
            Some((k, v)) => k.eq_ignore_ascii_case(&lower) && f(v),
            None => false,
        })
    }

    fn any_text(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.text.iter().any(|t| f(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_model::SecurityEvent;

    fn ev() -> SecurityEvent {
        let mut e = SecurityEvent {
            service: "my-service".into(),
            env: "staging".into(),
            client_ip: Some("1.2.3.4".into()),
            usr_id: Some("alice".into()),
            http_status: Some(403),
            activity: vec!["business_logic.users.login.failure".into()],
            resource: "POST /login".into(),
            ..Default::default()
        };
        e.attributes.insert("custom.k".into(), "Value One".into());
        e
    }

    fn m(q: &str) -> bool {
        Query::parse(q).unwrap().matches(&ev())
    }

    #[test]
    fn field_terms_and_implicit_and() {
        assert!(m("env:staging service:my-service"));
        assert!(!m("env:staging service:other"));
        assert!(m("@http.client_ip:1.2.3.4"));
        assert!(m(
            "@appsec.security_activity:business_logic.users.login.failure"
        ));
        assert!(m("@usr.id:ALICE"), "case-insensitive");
        assert!(m(""));
        assert!(m("*"));
    }

    #[test]
    fn boolean_operators_and_negation() {
        assert!(m("env:prod OR env:staging"));
        assert!(m("env:staging AND NOT service:x"));
        assert!(m("-service:x"));
        assert!(!m("-env:staging"));
        assert!(m("!env:prod"));
        assert!(m("(env:prod OR service:my-service) @usr.id:alice"));
        assert!(!m("(env:prod OR service:x) @usr.id:alice"));
        assert!(m("env:(prod OR staging)"));
        assert!(!m("env:(prod OR qa)"));
        assert!(m("a:b OR env:staging"), "OR binds looser than AND");
        assert!(!m("env:staging -(service:my-service)"));
    }

    #[test]
    fn wildcards_quotes_and_comparisons() {
        assert!(m("@appsec.security_activity:business_logic.*"));
        assert!(m("@appsec.security_activity:*login*"));
        assert!(!m("@appsec.security_activity:attack_attempt.*"));
        assert!(m("service:my-serv?ce"));
        assert!(m("@custom.k:\"value one\""));
        assert!(m("@custom.k:value*"));
        assert!(m("@http.client_ip:*"));
        assert!(!m("@missing:*"));
        assert!(m("@http.status_code:>=400"));
        assert!(!m("@http.status_code:<400"));
        assert!(m("login"), "free text in the resource");
        assert!(m("service:my\\-service"));
    }

    #[test]
    fn errors_name_the_position() {
        let e = Query::parse("env:staging (service:x").unwrap_err();
        assert_eq!(e.position, 12, "{e}");
        let e = Query::parse("env:staging service:x)").unwrap_err();
        assert_eq!(e.position, 21, "{e}");
        let e = Query::parse("env: x").unwrap_err();
        assert_eq!(e.position, 4, "{e}");
        let e = Query::parse("@a:\"open").unwrap_err();
        assert_eq!(e.position, 3, "{e}");
        let e = Query::parse("env:x AND").unwrap_err();
        assert_eq!(e.position, 9, "{e}");
        assert!(e.to_string().contains("position 9"));
        let e = Query::parse("OR env:x").unwrap_err();
        assert_eq!(e.position, 0);
        let deep = "(".repeat(100) + "a:b" + &")".repeat(100);
        assert!(Query::parse(&deep).is_err());
    }

    #[test]
    fn json_doc_paths_tags_and_top_level() {
        let attrs = serde_json::json!({
            "workflow": {"triage": {"state": "open"}},
            "http": {"client_ip": "9.9.9.9"},
            "usr.id": "bob",
            "entities": ["a", "b"],
        });
        let top = serde_json::json!({"status": "high", "service": ["svc"]});
        let tags = vec!["env:staging".to_string(), "security:attack".to_string()];
        let doc = JsonDoc {
            top: &top,
            attrs: &attrs,
            tags: &tags,
            text: &["Attack from one IP"],
        };
        let t = |q: &str| Query::parse(q).unwrap().matches(&doc);
        assert!(t("status:high env:staging service:svc"));
        assert!(t("@workflow.triage.state:open"));
        assert!(t("@http.client_ip:9.9.9.9 @usr.id:bob"));
        assert!(t("security:attack @entities:b"));
        assert!(!t("status:low"));
        assert!(t("attack"));
    }

    #[test]
    fn wildcard_matcher_edge_cases() {
        let p = |s: &str| match Query::parse(&format!("a:{s}")).unwrap().expr {
            Expr::Field(_, p) => p,
            e => panic!("{e:?}"),
        };
        assert!(p("a*b*c").matches("aXXbYYc"));
        assert!(!p("a*b*c").matches("aXXbYY"));
        assert!(p("*").matches(""));
        assert!(p("**x").matches("x"));
        assert!(p("?").matches("é"));
        assert!(!p("?").matches(""));
    }
}
