//! Recursive-descent parser for the classic Datadog metrics query string.
//!
//! Why hand-written and scanner-based (no separate lexer): the language is context-sensitive —
//! `-` is subtraction between queries but an ordinary character inside `{web-*}`, `.` separates
//! metric-name segments but also starts a modifier, `,` is AND inside a filter but separates
//! arguments and top-level queries. Reading characters directly with the context in hand keeps
//! every case explicit and lets every error carry the exact byte offset of the problem.
//!
//! The parser never panics: all indexing goes through `peek`/`get`, and recursion depth is
//! bounded ([`MAX_DEPTH`]) so hostile input cannot overflow the stack.

use crate::ast::{
    BinOp, Expr, ExprKind, Fill, FillMethod, Filter, Function, MetricQuery, RankMethod, Rollup,
    SpaceAgg, TimeAgg, TypeModifier,
};
use crate::error::QueryError;

/// Deepest nesting of parentheses/functions/filters accepted.
pub const MAX_DEPTH: usize = 64;

/// Most binary operators in one expression (operator chains build deep trees, and evaluation
/// recurses over them).
pub const MAX_OPERATORS: usize = 256;

/// Parses one query expression (`avg:m{*} by {host}`, `a{*} / b{*} * 100`, `top(...)`).
pub fn parse(s: &str) -> Result<Expr, QueryError> {
    let mut p = Parser::new(s, false);
    let e = p.expr()?;
    p.end()?;
    Ok(e)
}

/// Parses a comma-separated list of expressions, as `/api/v1/query` accepts
/// (`avg:a{*},avg:b{*}`); each becomes one `query_index`.
pub fn parse_list(s: &str) -> Result<Vec<Expr>, QueryError> {
    let mut p = Parser::new(s, false);
    let mut out = vec![p.expr()?];
    loop {
        p.ws();
        if p.eat(b',') {
            out.push(p.expr()?);
        } else {
            break;
        }
    }
    p.end()?;
    Ok(out)
}

/// Parses a v2 formula, where bare identifiers are references to named queries (`a / b * 100`).
/// Full queries are allowed as well.
pub fn parse_formula(s: &str) -> Result<Expr, QueryError> {
    let mut p = Parser::new(s, true);
    let e = p.expr()?;
    p.end()?;
    Ok(e)
}

/// Parses the longest expression starting at byte `start` of `s` and returns it with the byte
/// offset where it stopped (after trailing whitespace). For embedding the query language in a
/// larger grammar (monitors: `avg(last_5m):<expr> > 90`). Positions are relative to `s`.
pub fn parse_prefix(s: &str, start: usize, allow_refs: bool) -> Result<(Expr, usize), QueryError> {
    if !s.is_char_boundary(start.min(s.len())) {
        return Err(QueryError::new(
            "start is not on a character boundary",
            start,
        ));
    }
    let mut p = Parser::new(s, allow_refs);
    p.pos = start.min(s.len());
    let e = p.expr()?;
    p.ws();
    Ok((e, p.pos))
}

/// Comparison operator of a monitor query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparator {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// `time_aggr(last_<n><m|h|d|w>):<expr> <op> <threshold>` (Monitors API v1 metric alert).
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorQuery {
    /// `avg`, `sum`, `min`, `max`, `last`, `change` or `pct_change` as written.
    pub time_agg: String,
    /// Evaluation window in seconds (`last_5m` = 300).
    pub window_secs: i64,
    pub expr: Expr,
    pub comparator: Comparator,
    pub threshold: f64,
}

/// Parses a monitor metric query such as `avg(last_5m):avg:system.cpu.user{*} by {host} > 90`.
pub fn parse_monitor(s: &str) -> Result<MonitorQuery, QueryError> {
    let mut p = Parser::new(s, false);
    p.ws();
    let at = p.pos;
    let agg = p.word();
    if !matches!(
        agg.as_str(),
        "avg" | "sum" | "min" | "max" | "last" | "change" | "pct_change"
    ) {
        return Err(p.unexpected_at(at, "a time aggregator (avg, sum, min, max, last)"));
    }
    p.expect(b'(', "'(' after the time aggregator")?;
    p.ws();
    let wat = p.pos;
    let w = p.word();
    let window_secs = w
        .strip_prefix("last_")
        .and_then(duration_secs)
        .ok_or_else(|| {
            QueryError::expected(format!("bad time window '{w}'"), wat, "last_<n>m|h|d|w")
        })?;
    p.expect(b')', "')' after the time window")?;
    p.expect(b':', "':' before the query")?;
    let expr = p.expr()?;
    p.ws();
    let cat = p.pos;
    let comparator = if p.eat_str("<=") {
        Comparator::Le
    } else if p.eat_str(">=") {
        Comparator::Ge
    } else if p.eat_str("==") {
        Comparator::Eq
    } else if p.eat_str("!=") {
        Comparator::Ne
    } else if p.eat(b'<') {
        Comparator::Lt
    } else if p.eat(b'>') {
        Comparator::Gt
    } else {
        return Err(p.unexpected_at(cat, "a comparator (< <= > >= == !=)"));
    };
    p.ws();
    let nat = p.pos;
    let neg = p.eat(b'-');
    let threshold = p
        .number()
        .ok_or_else(|| p.unexpected_at(nat, "a numeric threshold"))?;
    p.end()?;
    Ok(MonitorQuery {
        time_agg: agg,
        window_secs,
        expr,
        comparator,
        threshold: if neg { -threshold } else { threshold },
    })
}

fn duration_secs(s: &str) -> Option<i64> {
    let unit = *s.as_bytes().last()?;
    let n: i64 = s.get(..s.len() - 1)?.parse().ok()?;
    let mult = match unit {
        b's' => 1,
        b'm' => 60,
        b'h' => 3600,
        b'd' => 86_400,
        b'w' => 604_800,
        _ => return None,
    };
    (n > 0).then(|| n.checked_mul(mult)).flatten()
}

/// Which filter operator family has been used (they must not be mixed).
#[derive(Default)]
struct FilterStyle {
    symbolic: Option<usize>,
    word: Option<usize>,
}

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    refs: bool,
    depth: usize,
    operators: usize,
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.'
}

fn is_term_char(c: u8) -> bool {
    !(c.is_ascii_whitespace() || matches!(c, b',' | b'{' | b'}' | b'(' | b')' | b'\'' | b'"'))
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, refs: bool) -> Self {
        Self {
            src,
            b: src.as_bytes(),
            pos: 0,
            refs,
            depth: 0,
            operators: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, s: &str) -> bool {
        if self.b.get(self.pos..self.pos + s.len()) == Some(s.as_bytes()) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// Skips whitespace, then requires `c`.
    fn expect(&mut self, c: u8, what: &str) -> Result<(), QueryError> {
        self.ws();
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unexpected_at(self.pos, what))
        }
    }

    /// Describes the character at `at` (`')'`, `end of query`).
    fn found(&self, at: usize) -> String {
        match self.src.get(at..).and_then(|r| r.chars().next()) {
            Some(c) => format!("unexpected '{c}'"),
            None => "unexpected end of query".to_string(),
        }
    }

    fn unexpected_at(&self, at: usize, expected: &str) -> QueryError {
        QueryError::expected(self.found(at), at, expected)
    }

    fn end(&mut self) -> Result<(), QueryError> {
        self.ws();
        if self.pos < self.b.len() {
            Err(self.unexpected_at(self.pos, "an operator or the end of the query"))
        } else {
            Ok(())
        }
    }

    fn operator(&mut self) -> Result<(), QueryError> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            Err(QueryError::new(
                format!("more than {MAX_OPERATORS} operators in one expression"),
                self.pos,
            ))
        } else {
            Ok(())
        }
    }

    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(QueryError::new(
                format!("query nested deeper than {MAX_DEPTH} levels"),
                self.pos,
            ))
        } else {
            Ok(())
        }
    }

    /// `[A-Za-z_][A-Za-z0-9_.]*` at the cursor (empty if none).
    fn word(&mut self) -> String {
        let start = self.pos;
        if self.peek().is_some_and(is_word_start) {
            while self.peek().is_some_and(is_word_char) {
                self.pos += 1;
            }
        }
        self.src[start..self.pos].to_string()
    }

    /// An unsigned decimal number at the cursor.
    fn number(&mut self) -> Option<f64> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return None;
        }
        if self.peek() == Some(b'.') && self.b.get(self.pos + 1).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let save = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
            } else {
                self.pos = save;
            }
        }
        self.src[start..self.pos].parse().ok()
    }

    // ---- expressions -------------------------------------------------------------------

    fn expr(&mut self) -> Result<Expr, QueryError> {
        self.enter()?;
        let mut lhs = self.mul()?;
        loop {
            self.ws();
            let op = match self.peek() {
                Some(b'+') => BinOp::Add,
                Some(b'-') => BinOp::Sub,
                _ => break,
            };
            self.operator()?;
            self.pos += 1;
            let rhs = self.mul()?;
            let span = (lhs.span.0, rhs.span.1);
            lhs = Expr {
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            };
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn mul(&mut self) -> Result<Expr, QueryError> {
        let mut lhs = self.unary()?;
        loop {
            self.ws();
            let op = match self.peek() {
                Some(b'*') => BinOp::Mul,
                Some(b'/') => BinOp::Div,
                _ => break,
            };
            self.operator()?;
            self.pos += 1;
            let rhs = self.unary()?;
            let span = (lhs.span.0, rhs.span.1);
            lhs = Expr {
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            };
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        self.ws();
        let start = self.pos;
        if self.eat(b'-') {
            self.enter()?;
            let e = self.unary()?;
            self.depth -= 1;
            let span = (start, e.span.1);
            return Ok(Expr {
                kind: ExprKind::Neg(Box::new(e)),
                span,
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        self.ws();
        let start = self.pos;
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let mut e = self.expr()?;
                self.expect(b')', "')' to close the parenthesis")?;
                e.span = (start, self.pos);
                Ok(e)
            }
            Some(c) if c.is_ascii_digit() => {
                let v = self
                    .number()
                    .ok_or_else(|| self.unexpected_at(start, "a number"))?;
                Ok(Expr {
                    kind: ExprKind::Number(v),
                    span: (start, self.pos),
                })
            }
            Some(c) if is_word_start(c) => self.word_primary(),
            _ => Err(self.unexpected_at(
                start,
                "a query like avg:metric{*}, a number, a function or '('",
            )),
        }
    }

    fn word_primary(&mut self) -> Result<Expr, QueryError> {
        let start = self.pos;
        let w = self.word();
        let after = self.pos;
        self.ws();
        match self.peek() {
            Some(b'(') => self.call(start, &w),
            Some(b':') => {
                self.pos += 1;
                let agg = space_agg(&w).ok_or_else(|| {
                    QueryError::expected(
                        format!("unknown aggregator '{w}'"),
                        start,
                        "avg, sum, min, max, count or p50/p75/p90/p95/p99",
                    )
                })?;
                self.ws();
                let mat = self.pos;
                let metric = self.word();
                if metric.is_empty() {
                    return Err(self.unexpected_at(mat, "a metric name"));
                }
                if metric.ends_with('.') || metric.contains("..") {
                    return Err(QueryError::new(
                        format!("invalid metric name '{metric}'"),
                        mat,
                    ));
                }
                self.metric_query(start, agg, metric)
            }
            Some(b'{') if !w.is_empty() => self.metric_query(start, SpaceAgg::Avg, w),
            _ if self.refs && !w.contains('.') => {
                self.pos = after;
                Ok(Expr {
                    kind: ExprKind::Ref(w),
                    span: (start, after),
                })
            }
            _ if space_agg(&w).is_some() => {
                Err(self.unexpected_at(self.pos, "':' after the aggregator"))
            }
            _ => Err(QueryError::expected(
                format!("unexpected '{w}'"),
                start,
                "a query like avg:metric{*}, a number, a function or '('",
            )),
        }
    }

    fn metric_query(
        &mut self,
        start: usize,
        space_agg: SpaceAgg,
        metric: String,
    ) -> Result<Expr, QueryError> {
        self.ws();
        if !self.eat(b'{') {
            return Err(self.unexpected_at(self.pos, "'{' to start the tag filter"));
        }
        let fstart = self.pos;
        let filter = self.filter_body()?;
        let filter_text = self.src[fstart..self.pos].trim().to_string();
        if !self.eat(b'}') {
            return Err(self.unexpected_at(self.pos, "'}' to close the tag filter"));
        }
        let mut q = MetricQuery {
            space_agg,
            metric,
            filter,
            filter_text,
            group_by: Vec::new(),
            rollup: None,
            modifier: None,
            fill: None,
        };
        // `by {..}` and `.modifier()`s, in any order (Datadog writes `by` first, but people
        // also write `.rollup(avg, 60) by {host}`).
        let mut end = self.pos;
        let mut seen_by = false;
        loop {
            self.ws();
            let at = self.pos;
            if self.eat_str("by") && !self.peek().is_some_and(is_word_char) {
                if seen_by {
                    return Err(QueryError::new("duplicate 'by' clause", at));
                }
                seen_by = true;
                q.group_by = self.group_by()?;
            } else if self.eat(b'.') {
                self.modifier(&mut q)?;
            } else {
                self.pos = end;
                break;
            }
            end = self.pos;
        }
        Ok(Expr {
            kind: ExprKind::Query(Box::new(q)),
            span: (start, end),
        })
    }

    fn group_by(&mut self) -> Result<Vec<String>, QueryError> {
        self.expect(b'{', "'{' after 'by'")?;
        let mut out: Vec<String> = Vec::new();
        self.ws();
        if self.eat(b'}') {
            return Ok(out);
        }
        loop {
            self.ws();
            let at = self.pos;
            while self.peek().is_some_and(is_term_char) {
                self.pos += 1;
            }
            let tag = &self.src[at..self.pos];
            if tag.is_empty() {
                return Err(self.unexpected_at(at, "a tag key to group by"));
            }
            if tag.contains(':') || tag.contains('*') {
                return Err(QueryError::expected(
                    format!("invalid group-by key '{tag}'"),
                    at,
                    "a tag key without ':' or '*'",
                ));
            }
            if out.iter().any(|t| t == tag) {
                return Err(QueryError::new(
                    format!("duplicate group-by key '{tag}'"),
                    at,
                ));
            }
            out.push(tag.to_string());
            self.ws();
            if self.eat(b',') {
                continue;
            }
            if self.eat(b'}') {
                return Ok(out);
            }
            return Err(self.unexpected_at(self.pos, "',' or '}' in the group-by list"));
        }
    }

    fn modifier(&mut self, q: &mut MetricQuery) -> Result<(), QueryError> {
        let at = self.pos;
        let name = self.word();
        match name.as_str() {
            "rollup" => {
                if q.rollup.is_some() {
                    return Err(QueryError::new("duplicate .rollup()", at));
                }
                self.expect(b'(', "'(' after .rollup")?;
                self.ws();
                let mat = self.pos;
                let m = self.word();
                let method = time_agg(&m).ok_or_else(|| {
                    QueryError::expected(
                        if m.is_empty() {
                            self.found(mat)
                        } else {
                            format!("unknown rollup method '{m}'")
                        },
                        mat,
                        "avg, sum, min, max or count",
                    )
                })?;
                self.ws();
                let seconds = if self.eat(b',') {
                    Some(self.positive_int("a rollup interval in seconds")?)
                } else {
                    None
                };
                self.expect(b')', "')' to close .rollup(")?;
                q.rollup = Some(Rollup { method, seconds });
            }
            "as_count" | "as_rate" => {
                if q.modifier.is_some() {
                    return Err(QueryError::new(
                        format!("conflicting type modifier .{name}()"),
                        at,
                    ));
                }
                self.expect(b'(', "'()'")?;
                self.expect(b')', "')'")?;
                q.modifier = Some(if name == "as_count" {
                    TypeModifier::AsCount
                } else {
                    TypeModifier::AsRate
                });
            }
            "weighted" => {
                self.expect(b'(', "'()'")?;
                self.expect(b')', "')'")?;
            }
            "fill" => {
                if q.fill.is_some() {
                    return Err(QueryError::new("duplicate .fill()", at));
                }
                self.expect(b'(', "'(' after .fill")?;
                self.ws();
                let mat = self.pos;
                let m = self.word();
                let method = match m.as_str() {
                    "null" => FillMethod::Null,
                    "zero" => FillMethod::Zero,
                    "last" => FillMethod::Last,
                    "linear" => FillMethod::Linear,
                    _ => {
                        return Err(QueryError::expected(
                            if m.is_empty() {
                                self.found(mat)
                            } else {
                                format!("unknown fill method '{m}'")
                            },
                            mat,
                            "null, zero, last or linear",
                        ));
                    }
                };
                self.ws();
                let limit = if self.eat(b',') {
                    Some(self.positive_int("a fill limit in seconds")?)
                } else {
                    None
                };
                self.expect(b')', "')' to close .fill(")?;
                q.fill = Some(Fill { method, limit });
            }
            _ => {
                return Err(QueryError::expected(
                    if name.is_empty() {
                        self.found(at)
                    } else {
                        format!("unknown modifier '.{name}'")
                    },
                    at,
                    "rollup, as_count, as_rate, fill or weighted",
                ));
            }
        }
        Ok(())
    }

    fn positive_int(&mut self, what: &str) -> Result<i64, QueryError> {
        self.ws();
        let at = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        match self.src[at..self.pos].parse::<i64>() {
            Ok(v) if v > 0 => Ok(v),
            Ok(_) => Err(QueryError::expected("zero is not allowed", at, what)),
            Err(_) if self.pos == at => Err(self.unexpected_at(at, what)),
            Err(_) => Err(QueryError::new("number too large", at)),
        }
    }

    // ---- tag filter ---------------------------------------------------------------------

    fn filter_body(&mut self) -> Result<Filter, QueryError> {
        self.ws();
        if self.peek() == Some(b'}') {
            return Err(QueryError::expected(
                "empty tag filter",
                self.pos,
                "a tag filter or '*'",
            ));
        }
        let mut style = FilterStyle::default();
        let f = self.f_or(&mut style)?;
        self.ws();
        if self.peek() != Some(b'}') {
            return Err(self.unexpected_at(self.pos, "',', AND, OR or '}' in the tag filter"));
        }
        if let (Some(s), Some(w)) = (style.symbolic, style.word) {
            return Err(QueryError::new(
                "cannot mix ',' or '!' with AND/OR/NOT/IN in one filter",
                s.max(w),
            ));
        }
        Ok(simplify(f))
    }

    /// Peeks the next filter token as a keyword (`AND`, `OR`, `NOT`, `IN`) without consuming.
    fn keyword(&self) -> Option<&'static str> {
        let mut end = self.pos;
        while self.b.get(end).copied().is_some_and(is_term_char) {
            end += 1;
        }
        match &self.src[self.pos..end] {
            "AND" => Some("AND"),
            "OR" => Some("OR"),
            "NOT" => Some("NOT"),
            "IN" => Some("IN"),
            _ => None,
        }
    }

    fn f_or(&mut self, st: &mut FilterStyle) -> Result<Filter, QueryError> {
        self.enter()?;
        let mut parts = vec![self.f_and(st)?];
        loop {
            self.ws();
            if self.keyword() == Some("OR") {
                st.word.get_or_insert(self.pos);
                self.pos += 2;
                parts.push(self.f_and(st)?);
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }

    fn f_and(&mut self, st: &mut FilterStyle) -> Result<Filter, QueryError> {
        let mut parts = vec![self.f_not(st)?];
        loop {
            self.ws();
            if self.peek() == Some(b',') {
                st.symbolic.get_or_insert(self.pos);
                self.pos += 1;
            } else if self.keyword() == Some("AND") {
                st.word.get_or_insert(self.pos);
                self.pos += 3;
            } else {
                break;
            }
            parts.push(self.f_not(st)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn f_not(&mut self, st: &mut FilterStyle) -> Result<Filter, QueryError> {
        self.ws();
        let at = self.pos;
        if self.eat(b'!') {
            st.symbolic.get_or_insert(at);
            self.enter()?;
            let f = self.f_not(st)?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(f)));
        }
        if self.keyword() == Some("NOT") {
            st.word.get_or_insert(at);
            self.pos += 3;
            self.enter()?;
            let f = self.f_not(st)?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(f)));
        }
        if self.eat(b'(') {
            let f = self.f_or(st)?;
            self.ws();
            if !self.eat(b')') {
                return Err(self.unexpected_at(self.pos, "')' to close the filter group"));
            }
            return Ok(f);
        }
        let term = self.term()?;
        // `key IN (a,b)` / `key NOT IN (a,b)`
        let save = self.pos;
        self.ws();
        let kw_at = self.pos;
        let negated = if self.keyword() == Some("NOT") {
            self.pos += 3;
            self.ws();
            if self.keyword() == Some("IN") {
                true
            } else {
                self.pos = save;
                return Ok(Filter::term(&term.0));
            }
        } else {
            false
        };
        if self.keyword() != Some("IN") {
            self.pos = save;
            return Ok(Filter::term(&term.0));
        }
        st.word.get_or_insert(kw_at);
        self.pos += 2;
        if term.0.contains(':') || term.0.contains('*') {
            return Err(QueryError::expected(
                format!("invalid key '{}' before IN", term.0),
                term.1,
                "a tag key without ':' or '*'",
            ));
        }
        self.expect(b'(', "'(' after IN")?;
        let mut alts = Vec::new();
        loop {
            let (v, vat) = self.term()?;
            if v.contains(':') {
                return Err(QueryError::expected(
                    format!("invalid value '{v}' in IN list"),
                    vat,
                    "a tag value",
                ));
            }
            alts.push(Filter::term(&format!("{}:{v}", term.0)));
            self.ws();
            if self.eat(b',') {
                continue;
            }
            if self.eat(b')') {
                break;
            }
            return Err(self.unexpected_at(self.pos, "',' or ')' in the IN list"));
        }
        let f = Filter::Or(alts);
        Ok(if negated { Filter::Not(Box::new(f)) } else { f })
    }

    /// One tag term; returns it with its byte offset.
    fn term(&mut self) -> Result<(String, usize), QueryError> {
        self.ws();
        let at = self.pos;
        while self.peek().is_some_and(is_term_char) {
            self.pos += 1;
        }
        let t = &self.src[at..self.pos];
        if t.is_empty() {
            return Err(self.unexpected_at(at, "a tag filter"));
        }
        if matches!(t, "AND" | "OR" | "NOT" | "IN") {
            return Err(QueryError::expected(
                format!("unexpected '{t}'"),
                at,
                "a tag filter",
            ));
        }
        if t.starts_with(':') {
            return Err(QueryError::expected(
                format!("missing tag key in '{t}'"),
                at,
                "key:value",
            ));
        }
        if t.ends_with(':') {
            return Err(QueryError::expected(
                format!("missing tag value in '{t}'"),
                self.pos,
                "a value after ':'",
            ));
        }
        if t.contains('!') {
            let bang = at + t.find('!').unwrap_or(0);
            return Err(QueryError::expected(
                "unexpected '!'",
                bang,
                "'!' only before a tag",
            ));
        }
        Ok((t.to_string(), at))
    }

    // ---- functions ----------------------------------------------------------------------

    fn call(&mut self, start: usize, name: &str) -> Result<Expr, QueryError> {
        let Some(kind) = function_kind(name) else {
            return Err(if UNSUPPORTED.contains(&name) {
                QueryError::new(format!("function '{name}' is not supported"), start)
            } else {
                QueryError::new(format!("unknown function '{name}'"), start)
            });
        };
        self.enter()?;
        self.expect(b'(', "'('")?;
        let arg = self.expr()?;
        let mut lits: Vec<(Lit, usize)> = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                break;
            }
            if !self.eat(b',') {
                return Err(self.unexpected_at(self.pos, "',' or ')' in the argument list"));
            }
            self.ws();
            let at = self.pos;
            lits.push((self.literal()?, at));
        }
        let end = self.pos;
        self.depth -= 1;
        let function = build_function(kind, name, start, &lits, end)?;
        Ok(Expr {
            kind: ExprKind::Call {
                name: name.to_string(),
                function,
                arg: Box::new(arg),
            },
            span: (start, end),
        })
    }

    fn literal(&mut self) -> Result<Lit, QueryError> {
        let at = self.pos;
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let s = self.pos;
                while self.peek().is_some_and(|c| c != q) {
                    self.pos += 1;
                }
                if self.peek().is_none() {
                    return Err(QueryError::expected(
                        "unterminated string",
                        at,
                        "a closing quote",
                    ));
                }
                let v = self.src[s..self.pos].to_string();
                self.pos += 1;
                Ok(Lit::Str(v))
            }
            Some(b'-') => {
                self.pos += 1;
                self.number()
                    .map(|v| Lit::Num(-v))
                    .ok_or_else(|| self.unexpected_at(at + 1, "a number"))
            }
            Some(c) if c.is_ascii_digit() => self
                .number()
                .map(Lit::Num)
                .ok_or_else(|| self.unexpected_at(at, "a number")),
            Some(c) if is_word_start(c) => Ok(Lit::Str(self.word())),
            _ => Err(self.unexpected_at(at, "a number or a quoted string")),
        }
    }
}

/// Removes `*` from conjunctions and flattens single-element groups.
fn simplify(f: Filter) -> Filter {
    match f {
        Filter::And(v) => {
            let v: Vec<Filter> = v
                .into_iter()
                .map(simplify)
                .filter(|f| *f != Filter::All)
                .collect();
            match v.len() {
                0 => Filter::All,
                1 => v.into_iter().next().unwrap_or(Filter::All),
                _ => Filter::And(v),
            }
        }
        Filter::Or(v) => {
            let v: Vec<Filter> = v.into_iter().map(simplify).collect();
            if v.contains(&Filter::All) {
                Filter::All
            } else {
                Filter::Or(v)
            }
        }
        Filter::Not(f) => Filter::Not(Box::new(simplify(*f))),
        f => f,
    }
}

enum Lit {
    Num(f64),
    Str(String),
}

fn space_agg(w: &str) -> Option<SpaceAgg> {
    Some(match w {
        "avg" => SpaceAgg::Avg,
        "sum" => SpaceAgg::Sum,
        "min" => SpaceAgg::Min,
        "max" => SpaceAgg::Max,
        "count" => SpaceAgg::Count,
        _ => {
            let n: u32 = w.strip_prefix('p')?.parse().ok()?;
            if !(1..=99).contains(&n) || w.len() > 3 || w.starts_with("p0") {
                return None;
            }
            SpaceAgg::Percentile(f64::from(n) / 100.0)
        }
    })
}

fn time_agg(w: &str) -> Option<TimeAgg> {
    Some(match w {
        "avg" => TimeAgg::Avg,
        "sum" => TimeAgg::Sum,
        "min" => TimeAgg::Min,
        "max" => TimeAgg::Max,
        "count" => TimeAgg::Count,
        _ => return None,
    })
}

fn rank_method(w: &str) -> Option<RankMethod> {
    Some(match w {
        "mean" | "avg" => RankMethod::Mean,
        "max" => RankMethod::Max,
        "min" => RankMethod::Min,
        "last" => RankMethod::Last,
        "area" | "sum" => RankMethod::Area,
        "l2norm" => RankMethod::L2Norm,
        "norm" => RankMethod::Norm,
        _ => return None,
    })
}

/// Known Datadog functions this engine does not implement (a distinct error from "unknown").
const UNSUPPORTED: &[&str] = &[
    "anomalies",
    "outliers",
    "forecast",
    "trend_line",
    "robust_trend",
    "piecewise_constant",
    "autosmooth",
    "top_offset",
    "throughput",
];

#[derive(Clone, Copy)]
enum Kind {
    /// No extra arguments.
    Plain(fn() -> Function),
    /// One numeric argument.
    Num(fn(f64) -> Function, &'static str),
    Timeshift,
    Top,
    /// `topN[_method]` / `bottomN[_method]`.
    LegacyTop(usize, RankMethod, bool),
    MovingRollup,
}

fn function_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "abs" => Kind::Plain(|| Function::Abs),
        "log2" => Kind::Plain(|| Function::Log2),
        "log10" => Kind::Plain(|| Function::Log10),
        "cumsum" => Kind::Plain(|| Function::Cumsum),
        "integral" => Kind::Plain(|| Function::Integral),
        "per_second" => Kind::Plain(|| Function::PerSecond),
        "per_minute" => Kind::Plain(|| Function::PerMinute),
        "per_hour" => Kind::Plain(|| Function::PerHour),
        "dt" => Kind::Plain(|| Function::Dt),
        "diff" => Kind::Plain(|| Function::Diff),
        "monotonic_diff" => Kind::Plain(|| Function::MonotonicDiff),
        "derivative" => Kind::Plain(|| Function::Derivative),
        "hour_before" => Kind::Plain(|| Function::Timeshift(-3600)),
        "day_before" => Kind::Plain(|| Function::Timeshift(-86_400)),
        "week_before" => Kind::Plain(|| Function::Timeshift(-604_800)),
        "month_before" => Kind::Plain(|| Function::Timeshift(-2_419_200)),
        "default_zero" => Kind::Plain(|| Function::DefaultZero),
        "count_nonzero" => Kind::Plain(|| Function::CountNonzero),
        "count_not_null" => Kind::Plain(|| Function::CountNotNull),
        "exclude_null" => Kind::Plain(|| Function::ExcludeNull),
        "ewma_3" => Kind::Plain(|| Function::Ewma(3)),
        "ewma_5" => Kind::Plain(|| Function::Ewma(5)),
        "ewma_10" => Kind::Plain(|| Function::Ewma(10)),
        "ewma_20" => Kind::Plain(|| Function::Ewma(20)),
        "median_3" => Kind::Plain(|| Function::Median(3)),
        "median_5" => Kind::Plain(|| Function::Median(5)),
        "median_7" => Kind::Plain(|| Function::Median(7)),
        "median_9" => Kind::Plain(|| Function::Median(9)),
        "clamp_min" => Kind::Num(Function::ClampMin, "a minimum value"),
        "clamp_max" => Kind::Num(Function::ClampMax, "a maximum value"),
        "cutoff_min" => Kind::Num(Function::CutoffMin, "a minimum value"),
        "cutoff_max" => Kind::Num(Function::CutoffMax, "a maximum value"),
        "timeshift" => Kind::Timeshift,
        "top" => Kind::Top,
        "moving_rollup" => Kind::MovingRollup,
        _ => return legacy_top(name),
    })
}

/// `top5`, `top10_max`, `bottom20_mean`, ...
fn legacy_top(name: &str) -> Option<Kind> {
    let (rest, desc) = if let Some(r) = name.strip_prefix("top") {
        (r, true)
    } else {
        (name.strip_prefix("bottom")?, false)
    };
    let (n, method) = match rest.split_once('_') {
        Some((n, m)) => (n, rank_method(m)?),
        None => (rest, RankMethod::Mean),
    };
    let n: usize = match n {
        "5" => 5,
        "10" => 10,
        "15" => 15,
        "20" => 20,
        _ => return None,
    };
    Some(Kind::LegacyTop(n, method, desc))
}

fn build_function(
    kind: Kind,
    name: &str,
    start: usize,
    lits: &[(Lit, usize)],
    end: usize,
) -> Result<Function, QueryError> {
    let too_many = |max: usize| -> Result<(), QueryError> {
        match lits.get(max) {
            Some((_, at)) => Err(QueryError::new(
                format!("too many arguments to {name}()"),
                *at,
            )),
            None => Ok(()),
        }
    };
    let num = |i: usize, what: &str| -> Result<f64, QueryError> {
        match lits.get(i) {
            Some((Lit::Num(v), _)) => Ok(*v),
            Some((Lit::Str(s), at)) => Err(QueryError::expected(
                format!("unexpected '{s}'"),
                *at,
                what.to_string(),
            )),
            None => Err(QueryError::expected(
                format!("missing argument to {name}()"),
                end.saturating_sub(1),
                what.to_string(),
            )),
        }
    };
    let _ = start;
    Ok(match kind {
        Kind::Plain(f) => {
            too_many(0)?;
            f()
        }
        Kind::Num(f, what) => {
            too_many(1)?;
            f(num(0, what)?)
        }
        Kind::Timeshift => {
            too_many(1)?;
            let v = num(0, "a shift in seconds")?;
            if v.fract() != 0.0 || v.abs() > 1e10 {
                return Err(QueryError::expected(
                    "bad shift",
                    lits.first().map_or(end, |l| l.1),
                    "an integer number of seconds",
                ));
            }
            Function::Timeshift(v as i64)
        }
        Kind::Top => {
            too_many(3)?;
            let n = if lits.is_empty() {
                10.0
            } else {
                num(0, "the number of series to keep")?
            };
            if n < 1.0 || n.fract() != 0.0 || n > 1e6 {
                return Err(QueryError::expected(
                    "bad series count",
                    lits.first().map_or(end, |l| l.1),
                    "a positive integer",
                ));
            }
            let method = match lits.get(1) {
                None => RankMethod::Mean,
                Some((Lit::Str(s), at)) => rank_method(s).ok_or_else(|| {
                    QueryError::expected(
                        format!("unknown ranking '{s}'"),
                        *at,
                        "mean, max, min, last, area, l2norm or norm",
                    )
                })?,
                Some((Lit::Num(_), at)) => {
                    return Err(QueryError::expected(
                        "unexpected number",
                        *at,
                        "a ranking method",
                    ));
                }
            };
            let descending = match lits.get(2) {
                None => true,
                Some((Lit::Str(s), _)) if s == "desc" => true,
                Some((Lit::Str(s), _)) if s == "asc" => false,
                Some((_, at)) => {
                    return Err(QueryError::expected("bad order", *at, "'asc' or 'desc'"));
                }
            };
            Function::Top {
                n: n as usize,
                method,
                descending,
            }
        }
        Kind::LegacyTop(n, method, descending) => {
            too_many(0)?;
            Function::Top {
                n,
                method,
                descending,
            }
        }
        Kind::MovingRollup => {
            too_many(2)?;
            let v = num(0, "a window in seconds")?;
            if v < 1.0 || v.fract() != 0.0 || v > 1e9 {
                return Err(QueryError::expected(
                    "bad window",
                    lits.first().map_or(end, |l| l.1),
                    "a positive integer number of seconds",
                ));
            }
            let method = match lits.get(1) {
                None => TimeAgg::Avg,
                Some((Lit::Str(s), at)) => time_agg(s).ok_or_else(|| {
                    QueryError::expected(
                        format!("unknown rollup method '{s}'"),
                        *at,
                        "avg, sum, min, max or count",
                    )
                })?,
                Some((_, at)) => {
                    return Err(QueryError::expected(
                        "unexpected number",
                        *at,
                        "a rollup method",
                    ));
                }
            };
            Function::MovingRollup {
                seconds: v as i64,
                method,
            }
        }
    })
}
