//! SQL injection: a user parameter found in the executed statement whose tokens change the
//! statement's structure: 4+ tokens of which one is not a plain literal/comma (unless it is a
//! well-formed `ORDER BY` list), or a 3-token tautology in a `WHERE` clause, or an injected
//! end-of-line comment. The reported resource is the statement with literals replaced by `?`.

use super::Found;
use super::sql::{self, Dialect, Kind, Token};

const MIN_TOKENS: usize = 4;
const MIN_PARAM_LEN: usize = 3;

pub(crate) struct Prepared<'a> {
    stmt: &'a str,
    tokens: Vec<Token>,
}

pub(crate) fn prepare<'a>(stmt: &'a str, db: Option<&str>) -> Prepared<'a> {
    let tokens = sql::tokenize(stmt, Dialect::from_db_type(db));
    Prepared { stmt, tokens }
}

fn is_literal(k: Kind) -> bool {
    matches!(
        k,
        Kind::Number | Kind::SqString | Kind::DqString | Kind::DollarString | Kind::BqString
    )
}

pub(crate) fn strip_literals(stmt: &str, tokens: &[Token]) -> String {
    let mut out = String::with_capacity(stmt.len());
    let mut i = 0;
    for t in tokens.iter().filter(|t| is_literal(t.kind)) {
        if i < t.start {
            out.push_str(&stmt[i..t.start]);
        }
        out.push('?');
        i = t.end;
    }
    if i < stmt.len() {
        out.push_str(&stmt[i..]);
    }
    out
}

/// Tokens overlapping `[begin, end)`: (slice start index, count).
fn overlapping(tokens: &[Token], begin: usize, end: usize) -> Option<(usize, usize)> {
    let first = tokens.iter().position(|t| t.end > begin)?;
    if tokens[first].start >= end {
        return None;
    }
    let count = tokens[first..].iter().take_while(|t| t.start < end).count();
    Some((first, count))
}

fn harmful(ts: &[Token]) -> bool {
    ts.len() >= MIN_TOKENS
        && ts.iter().any(|t| {
            !matches!(
                t.kind,
                Kind::Comma | Kind::Number | Kind::SqString | Kind::DqString | Kind::DollarString
            )
        })
}

fn ieq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn where_tautology(s: &str, all: &[Token], first: usize, ts: &[Token]) -> bool {
    if ts.len() != 3 || first == 0 {
        return false;
    }
    if !all[..first]
        .iter()
        .any(|t| t.kind == Kind::Keyword && ieq(t.text(s), "where"))
    {
        return false;
    }
    let mid = ts[1];
    let m = mid.text(s);
    if mid.kind != Kind::BinaryOp {
        return ieq(m, "OR") || ieq(m, "XOR") || m == "||";
    }
    if ts[0].kind != ts[2].kind && m.contains('=') {
        let named = |k: Kind| matches!(k, Kind::Keyword | Kind::Identifier);
        return !named(ts[0].kind) && !named(ts[2].kind);
    }
    true
}

fn query_comment(all: &[Token], ts: &[Token], param_index: usize, first: usize) -> bool {
    let not_last = first + 1 < all.len();
    for (i, t) in ts.iter().enumerate() {
        if t.kind == Kind::EolComment {
            if i == 0 && ts.len() == 1 && not_last {
                return param_index <= all[first].start;
            }
            return i > 0 || not_last;
        }
    }
    false
}

/// `ORDER BY` list grammar: (number | name[.name]) [ASC|DESC] {, ...} [LIMIT|OFFSET n ...].
fn order_by_structure(s: &str, ts: &[Token]) -> bool {
    #[derive(PartialEq)]
    enum St {
        Begin,
        Name,
        Column,
        Index,
        LimVal,
        Lim,
        Dir,
        Dot,
    }
    let is_dir =
        |t: &Token| t.kind == Kind::Keyword && (ieq(t.text(s), "ASC") || ieq(t.text(s), "DESC"));
    let is_lim = |t: &Token| {
        t.kind == Kind::Keyword && (ieq(t.text(s), "LIMIT") || ieq(t.text(s), "OFFSET"))
    };
    let mut st = St::Begin;
    let mut it = ts.iter();
    loop {
        let t = it.next();
        st = match (st, t) {
            (St::Begin, Some(t)) => match t.kind {
                Kind::Number => St::Index,
                Kind::Identifier => St::Name,
                _ => return false,
            },
            (St::Begin | St::Lim | St::Dot, None) => return false,
            (St::Name | St::Column | St::Index | St::LimVal | St::Dir, None) => return true,
            (St::Name, Some(t)) if t.kind == Kind::Dot => St::Dot,
            (St::Name | St::Column | St::Index | St::Dir, Some(t)) if t.kind == Kind::Comma => {
                St::Begin
            }
            (St::Name | St::Column | St::Index, Some(t)) if is_dir(t) => St::Dir,
            (St::Name | St::Column | St::Index | St::Dir | St::LimVal, Some(t)) if is_lim(t) => {
                St::Lim
            }
            (St::Lim, Some(t)) if t.kind == Kind::Number => St::LimVal,
            (St::Dot, Some(t)) if t.kind == Kind::Identifier => St::Column,
            _ => return false,
        };
    }
}

fn benign_order_by(s: &str, all: &[Token], first: usize, ts: &[Token]) -> bool {
    first >= 2
        && ieq(all[first - 2].text(s), "order")
        && ieq(all[first - 1].text(s), "by")
        && order_by_structure(s, ts)
}

pub(crate) fn check(p: &Prepared<'_>, param: &str) -> Option<Found> {
    if param.len() < MIN_PARAM_LEN {
        return None;
    }
    if p.tokens.is_empty() {
        return None;
    }
    // Every occurrence of the parameter in the statement is considered.
    let mut from = 0;
    let mut hit = false;
    while let Some(off) = p.stmt.get(from..).and_then(|s| s.find(param)) {
        let idx = from + off;
        if let Some((first, n)) = overlapping(&p.tokens, idx, idx + param.len()) {
            let ts = &p.tokens[first..first + n];
            if (harmful(ts) && !benign_order_by(p.stmt, &p.tokens, first, ts))
                || (ts.len() < MIN_TOKENS
                    && (where_tautology(p.stmt, &p.tokens, first, ts)
                        || query_comment(&p.tokens, ts, idx, first)))
            {
                hit = true;
                break;
            }
        }
        from = idx + p.stmt[idx..].chars().next().map_or(1, char::len_utf8);
    }
    hit.then(|| Found {
        highlight: param.to_string(),
        resource_value: Some(strip_literals(p.stmt, &p.tokens)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(stmt: &str, param: &str, db: &str) -> bool {
        check(&prepare(stmt, Some(db)), param).is_some()
    }

    #[test]
    fn samples() {
        assert!(m("SELECT x FROM t WHERE id = 1 OR 1", "1 OR 1", "mysql"));
        assert!(m(
            "SELECT x FROM t WHERE id='admin'--",
            "admin'--",
            "sqlite"
        ));
        assert!(!m(
            "SELECT values FROM table WHERE column IN (1, 2, 3, 4, 5);",
            "(1, 2, 3, 4, 5)",
            "pgsql"
        ));
        assert!(!m(
            "SELECT values FROM table WHERE value IN (-1,-2,+3,+4);",
            "-1,-2,+3,+4",
            "mysql"
        ));
        assert!(m(
            "SELECT x FROM t WHERE id = $$$$OR$$$$",
            "$$OR$$",
            "postgresql"
        ));
        let p = prepare(
            "SELECT * FROM users WHERE id ='' OR 1=1; -- ';",
            Some("mysql"),
        );
        let f = check(&p, "' OR 1=1; --").expect("match");
        assert_eq!(
            f.resource_value.as_deref(),
            Some("SELECT * FROM users WHERE id =? OR ?=?; -- ';")
        );
    }
}
