//! SQL tokenizer with dialect differences (MySQL, PostgreSQL, SQLite, generic).
//!
//! Only as precise as the injection heuristics need: token kinds and byte offsets. Differences
//! by dialect: `#` comments and `"strings"` (MySQL), `$tag$` strings and `"identifiers"`
//! (PostgreSQL), backquoted/bracketed identifiers (MySQL, SQLite).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Generic,
    Mysql,
    Pgsql,
    Sqlite,
}

impl Dialect {
    pub(crate) fn from_db_type(s: Option<&str>) -> Dialect {
        match s.map(str::to_ascii_lowercase).as_deref() {
            Some("mysql" | "mariadb") => Dialect::Mysql,
            Some("postgresql" | "pgsql" | "postgres") => Dialect::Pgsql,
            Some("sqlite") => Dialect::Sqlite,
            _ => Dialect::Generic,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Keyword,
    Identifier,
    Number,
    SqString,
    DqString,
    DollarString,
    BqString,
    BinaryOp,
    BitwiseOp,
    EolComment,
    InlineComment,
    Comma,
    Dot,
    QueryEnd,
    Question,
    Other,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Token {
    pub(crate) fn text<'a>(&self, s: &'a str) -> &'a str {
        s.get(self.start..self.end).unwrap_or("")
    }
}

const KEYWORDS: &[&str] = &[
    "ADD",
    "ALL",
    "ALTER",
    "AND",
    "ANY",
    "AS",
    "ASC",
    "BEGIN",
    "BETWEEN",
    "BY",
    "CASE",
    "CAST",
    "CREATE",
    "CROSS",
    "DELETE",
    "DESC",
    "DISTINCT",
    "DIV",
    "DROP",
    "ELSE",
    "END",
    "ESCAPE",
    "EXCEPT",
    "EXEC",
    "EXECUTE",
    "EXISTS",
    "FALSE",
    "FETCH",
    "FOR",
    "FROM",
    "FULL",
    "GLOB",
    "GROUP",
    "HAVING",
    "ILIKE",
    "IN",
    "INNER",
    "INSERT",
    "INTERSECT",
    "INTO",
    "IS",
    "JOIN",
    "LEFT",
    "LIKE",
    "LIMIT",
    "MATCH",
    "MOD",
    "NATURAL",
    "NOT",
    "NULL",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "REGEXP",
    "REPLACE",
    "RETURNING",
    "RIGHT",
    "RLIKE",
    "SELECT",
    "SET",
    "SIMILAR",
    "SOME",
    "TABLE",
    "THEN",
    "TOP",
    "TRUE",
    "TRUNCATE",
    "UNION",
    "UPDATE",
    "USING",
    "VALUES",
    "WHEN",
    "WHERE",
    "WITH",
    "XOR",
];

fn is_keyword(w: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w))
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Tokenize; parentheses are dropped (the heuristics ignore them; they would only help
/// evasion). Never fails: unknown bytes become `Other` tokens.
pub(crate) fn tokenize(s: &str, d: Dialect) -> Vec<Token> {
    let b = s.as_bytes();
    let mut out: Vec<Token> = Vec::new();
    let mut i = 0;
    let push = |out: &mut Vec<Token>, kind, start, end| out.push(Token { kind, start, end });
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied();
        // comments
        if c == b'-' && next == Some(b'-') {
            let end = b[i..]
                .iter()
                .position(|x| *x == b'\n')
                .map_or(b.len(), |p| i + p);
            push(&mut out, Kind::EolComment, start, end);
            i = end;
            continue;
        }
        if c == b'#' && d == Dialect::Mysql {
            let end = b[i..]
                .iter()
                .position(|x| *x == b'\n')
                .map_or(b.len(), |p| i + p);
            push(&mut out, Kind::EolComment, start, end);
            i = end;
            continue;
        }
        if c == b'/' && next == Some(b'*') {
            let end = s[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
            push(&mut out, Kind::InlineComment, start, end);
            i = end;
            continue;
        }
        match c {
            b'(' | b')' => {
                i += 1;
            }
            b',' => {
                push(&mut out, Kind::Comma, start, i + 1);
                i += 1;
            }
            b';' => {
                push(&mut out, Kind::QueryEnd, start, i + 1);
                i += 1;
            }
            b'?' => {
                push(&mut out, Kind::Question, start, i + 1);
                i += 1;
            }
            b'\'' => {
                i = quoted(b, i, b'\'', d == Dialect::Mysql);
                push(&mut out, Kind::SqString, start, i);
            }
            b'"' => {
                i = quoted(b, i, b'"', d == Dialect::Mysql);
                let k = if d == Dialect::Mysql {
                    Kind::DqString
                } else {
                    Kind::Identifier
                };
                push(&mut out, k, start, i);
            }
            b'`' => {
                i = quoted(b, i, b'`', false);
                let k = if d == Dialect::Mysql {
                    Kind::BqString
                } else {
                    Kind::Identifier
                };
                push(&mut out, k, start, i);
            }
            b'[' if d == Dialect::Sqlite => {
                i = b[i..]
                    .iter()
                    .position(|x| *x == b']')
                    .map_or(b.len(), |p| i + p + 1);
                push(&mut out, Kind::Identifier, start, i);
            }
            b'$' if d == Dialect::Pgsql || d == Dialect::Generic => {
                // $tag$ ... $tag$ or $$ ... $$; otherwise a positional parameter.
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|x| !(x.is_ascii_alphanumeric() || *x == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(te)
                        if b[te] == b'$'
                            && !b[i + 1..te].first().is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &s[i..=te];
                        let body = te + 1;
                        let end = s[body..]
                            .find(tag)
                            .map_or(b.len(), |p| body + p + tag.len());
                        push(&mut out, Kind::DollarString, start, end);
                        i = end;
                    }
                    _ => {
                        i += 1;
                        while i < b.len() && b[i].is_ascii_alphanumeric() {
                            i += 1;
                        }
                        push(&mut out, Kind::Identifier, start, i);
                    }
                }
            }
            b'0'..=b'9' => {
                i = number(b, i);
                push(&mut out, Kind::Number, start, i);
            }
            b'.' if next.is_some_and(|x| x.is_ascii_digit())
                && !out
                    .last()
                    .is_some_and(|t| matches!(t.kind, Kind::Identifier)) =>
            {
                i = number(b, i);
                push(&mut out, Kind::Number, start, i);
            }
            b'.' => {
                push(&mut out, Kind::Dot, start, i + 1);
                i += 1;
            }
            b'+' | b'-'
                if next.is_some_and(|x| x.is_ascii_digit())
                    && !out.last().is_some_and(|t| {
                        matches!(
                            t.kind,
                            Kind::Number
                                | Kind::Identifier
                                | Kind::SqString
                                | Kind::DqString
                                | Kind::BqString
                                | Kind::DollarString
                        ) && prev_not_paren(b, t.end, i)
                    }) =>
            {
                // signed literal in an operand position
                i = number(b, i + 1);
                push(&mut out, Kind::Number, start, i);
            }
            b'@' => {
                i += 1;
                while i < b.len() && (is_word(b[i]) || b[i] == b'@') {
                    i += 1;
                }
                push(&mut out, Kind::Identifier, start, i);
            }
            _ if is_word_start(c) => {
                while i < b.len()
                    && is_word(b[i])
                    && !(b[i] == b'$' && matches!(d, Dialect::Pgsql | Dialect::Generic))
                {
                    i += 1;
                }
                // x'..' / b'..' / n'..' / e'..' prefixed strings
                let w = &s[start..i];
                if i < b.len()
                    && b[i] == b'\''
                    && w.len() == 1
                    && matches!(
                        w.as_bytes()[0].to_ascii_lowercase(),
                        b'x' | b'b' | b'n' | b'e'
                    )
                {
                    i = quoted(b, i, b'\'', true);
                    push(&mut out, Kind::SqString, start, i);
                    continue;
                }
                let k = if is_keyword(w) {
                    Kind::Keyword
                } else {
                    Kind::Identifier
                };
                push(&mut out, k, start, i);
            }
            _ => {
                // operators
                let ops3: &[&[u8]] = &[b"<=>", b"->>", b"!~*"];
                let ops2: &[&[u8]] = &[
                    b"<=", b">=", b"<>", b"!=", b"||", b"&&", b"::", b"->", b"<<", b">>", b"==",
                    b"!~", b"~*", b":=",
                ];
                let rest = &b[i..];
                let len = if ops3.iter().any(|o| rest.starts_with(o)) {
                    3
                } else if ops2.iter().any(|o| rest.starts_with(o)) {
                    2
                } else {
                    1
                };
                let op = &rest[..len];
                let kind = match op {
                    b"&" | b"|" | b"^" | b"~" | b"<<" | b">>" => Kind::BitwiseOp,
                    b"=" | b"<" | b">" | b"!" | b"+" | b"-" | b"*" | b"/" | b"%" => Kind::BinaryOp,
                    _ if len > 1 => Kind::BinaryOp,
                    _ => Kind::Other,
                };
                let end = (i + len..=b.len())
                    .find(|&j| s.is_char_boundary(j))
                    .unwrap_or(b.len());
                push(&mut out, kind, start, end);
                i = end;
            }
        }
    }
    out
}

/// True when no `(`/`)` sits between the previous token and a sign: `f(x) -1` is binary,
/// `(x, -1)` is a signed literal only after a comma or an open parenthesis.
fn prev_not_paren(b: &[u8], prev_end: usize, i: usize) -> bool {
    !b[prev_end..i].contains(&b'(')
}

fn quoted(b: &[u8], mut i: usize, q: u8, backslash: bool) -> usize {
    i += 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn number(b: &[u8], mut i: usize) -> usize {
    if b.get(i) == Some(&b'0') && matches!(b.get(i + 1), Some(b'x' | b'X' | b'b' | b'B')) {
        i += 2;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i < b.len() && b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            i = j;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}
