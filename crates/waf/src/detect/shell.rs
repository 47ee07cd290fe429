//! Shell tokenizer and shell injection (`shi_detector`): a user parameter found in a shell
//! command that spans more than one token and brings an executable or a redirection with it.
//! Array commands (argv) are joined with spaces; a parameter must then lie within one argument.

use serde_json::Value;

use super::Found;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Executable,
    Field,
    Redirection,
    Control,
    SubOpen,
    SubClose,
    Keyword,
    VarDef,
    Comment,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

const RESERVED: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "case", "esac",
    "in", "select", "function", "!", "{", "}", "[[", "]]", "coproc",
];

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Paren,
    Backtick,
    DQuote,
}

fn is_meta(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')' | b'`'
    )
}

fn is_assignment(w: &str) -> bool {
    let Some(eq) = w.find('=') else { return false };
    let name = &w[..eq];
    !name.is_empty()
        && name.as_bytes()[0].is_ascii_alphabetic() | (name.as_bytes()[0] == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'+')
}

struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    out: Vec<Token>,
    stack: Vec<Ctx>,
    expect_cmd: bool,
    redir_target: bool,
    keyword_name_next: bool,
}

impl Lexer<'_> {
    fn push(&mut self, kind: Kind, start: usize, end: usize) {
        self.out.push(Token { kind, start, end });
    }

    fn word(&mut self, start: usize, end: usize) {
        if end <= start {
            return;
        }
        let w = &self.s[start..end];
        let unterminated_quote = (w.starts_with('"') && (w.len() == 1 || !w.ends_with('"')))
            || (w.starts_with('\'') && (w.len() == 1 || !w.ends_with('\'')));
        let kind = if unterminated_quote {
            Kind::Field
        } else if self.redir_target {
            self.redir_target = false;
            Kind::Field
        } else if self.keyword_name_next {
            self.keyword_name_next = false;
            Kind::Field
        } else if self.expect_cmd {
            if is_assignment(w) {
                Kind::VarDef
            } else if RESERVED.contains(&w) {
                if matches!(w, "for" | "case" | "select" | "function") {
                    self.keyword_name_next = true;
                    self.expect_cmd = false;
                }
                if matches!(w, "}" | "fi" | "done" | "esac" | "]]") {
                    self.expect_cmd = false;
                }
                Kind::Keyword
            } else {
                self.expect_cmd = false;
                Kind::Executable
            }
        } else {
            if matches!(w, "do" | "then" | "in")
                && self.out.last().is_some_and(|t| t.kind == Kind::Control)
            {
                self.expect_cmd = true;
                return self.push(Kind::Keyword, start, end);
            }
            Kind::Field
        };
        self.push(kind, start, end);
    }

    /// Scan a word starting at `i` (quotes, escapes, `${..}` kept inside); stops at a
    /// metacharacter or at a `$(` that opens a substitution. Returns the end offset.
    fn scan_word(&mut self, mut i: usize, in_dq: bool) -> (usize, bool) {
        let b = self.b;
        let mut dq = in_dq;
        while i < b.len() {
            let c = b[i];
            if c == b'\\' {
                i += 2;
                continue;
            }
            if dq {
                if c == b'"' {
                    dq = false;
                    i += 1;
                    continue;
                }
                if c == b'$' && b.get(i + 1) == Some(&b'(') {
                    return (i, true);
                }
                if c == b'`' {
                    return (i, true);
                }
                i += 1;
                continue;
            }
            match c {
                b'\'' => {
                    i = b[i + 1..]
                        .iter()
                        .position(|x| *x == b'\'')
                        .map_or(b.len(), |p| i + 1 + p + 1);
                }
                b'"' => {
                    dq = true;
                    i += 1;
                }
                b'$' if b.get(i + 1) == Some(&b'{') => {
                    i = b[i..]
                        .iter()
                        .position(|x| *x == b'}')
                        .map_or(b.len(), |p| i + p + 1);
                }
                b'$' if b.get(i + 1) == Some(&b'(') => return (i, dq),
                _ if is_meta(c) => return (i, dq),
                _ => i += 1,
            }
        }
        (i.min(b.len()), dq)
    }

    fn run(mut self) -> Vec<Token> {
        let b = self.b;
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            // Continue a double-quoted string interrupted by a substitution.
            if self.stack.last() == Some(&Ctx::DQuote) {
                let (end, still_dq) = self.scan_word(i, true);
                if end > i {
                    self.push(Kind::Field, i, end);
                }
                i = end;
                if !still_dq {
                    self.stack.pop();
                    continue;
                }
                if i >= b.len() {
                    break;
                }
                // at `$(` or backtick inside the string
                if b[i] == b'`' {
                    self.push(Kind::SubOpen, i, i + 1);
                    self.stack.push(Ctx::Backtick);
                    i += 1;
                } else {
                    self.push(Kind::SubOpen, i, i + 2);
                    self.stack.push(Ctx::Paren);
                    i += 2;
                }
                self.expect_cmd = true;
                continue;
            }
            match c {
                b' ' | b'\t' | b'\r' => i += 1,
                b'\n' => {
                    self.push(Kind::Control, i, i + 1);
                    self.expect_cmd = true;
                    i += 1;
                }
                b'#' if i == 0
                    || matches!(b[i - 1], b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(') =>
                {
                    let end = b[i..]
                        .iter()
                        .position(|x| *x == b'\n')
                        .map_or(b.len(), |p| i + p);
                    self.push(Kind::Comment, i, end);
                    i = end;
                }
                b';' | b'|' | b'&' => {
                    if c == b'&' && b.get(i + 1) == Some(&b'>') {
                        let len = if b.get(i + 2) == Some(&b'>') { 3 } else { 2 };
                        self.push(Kind::Redirection, i, i + len);
                        self.redir_target = true;
                        i += len;
                        continue;
                    }
                    let len = match (c, b.get(i + 1)) {
                        (b';', Some(b';'))
                        | (b'|', Some(b'|'))
                        | (b'&', Some(b'&'))
                        | (b'|', Some(b'&')) => 2,
                        _ => 1,
                    };
                    self.push(Kind::Control, i, i + len);
                    self.expect_cmd = true;
                    self.redir_target = false;
                    i += len;
                }
                b'<' | b'>' if b.get(i + 1) == Some(&b'(') => {
                    self.push(Kind::SubOpen, i, i + 2);
                    self.stack.push(Ctx::Paren);
                    self.expect_cmd = true;
                    i += 2;
                }
                b'<' | b'>' | b'0'..=b'9'
                    if {
                        let d = b[i..].iter().take_while(|x| x.is_ascii_digit()).count();
                        matches!(b.get(i + d), Some(b'<' | b'>'))
                            && (d == 0 || i == 0 || is_meta(b[i - 1]))
                            && b.get(i + d + 1) != Some(&b'(')
                    } =>
                {
                    let d = b[i..].iter().take_while(|x| x.is_ascii_digit()).count();
                    let mut j = i + d + 1;
                    while j < b.len()
                        && matches!(b[j], b'<' | b'>' | b'&' | b'|' | b'-')
                        && j - (i + d) < 3
                    {
                        j += 1;
                    }
                    self.push(Kind::Redirection, i, j);
                    self.redir_target = true;
                    i = j;
                }
                b'(' => {
                    self.push(Kind::SubOpen, i, i + 1);
                    self.stack.push(Ctx::Paren);
                    self.expect_cmd = true;
                    i += 1;
                }
                b')' => {
                    self.push(Kind::SubClose, i, i + 1);
                    if self.stack.last() == Some(&Ctx::Paren) {
                        self.stack.pop();
                    }
                    self.expect_cmd = false;
                    i += 1;
                }
                b'`' => {
                    if self.stack.last() == Some(&Ctx::Backtick) {
                        self.push(Kind::SubClose, i, i + 1);
                        self.stack.pop();
                        self.expect_cmd = false;
                    } else {
                        self.push(Kind::SubOpen, i, i + 1);
                        self.stack.push(Ctx::Backtick);
                        self.expect_cmd = true;
                    }
                    i += 1;
                }
                b'$' if b.get(i + 1) == Some(&b'(') => {
                    self.push(Kind::SubOpen, i, i + 2);
                    self.stack.push(Ctx::Paren);
                    self.expect_cmd = true;
                    i += 2;
                }
                _ => {
                    let (end, dq) = self.scan_word(i, false);
                    let end = if end == i { i + 1 } else { end };
                    self.word(i, end);
                    i = end;
                    if dq && i < b.len() {
                        // a `$(` or backtick inside a double-quoted string
                        self.stack.push(Ctx::DQuote);
                        if b[i] == b'`' {
                            self.push(Kind::SubOpen, i, i + 1);
                            self.stack.push(Ctx::Backtick);
                            i += 1;
                        } else {
                            self.push(Kind::SubOpen, i, i + 2);
                            self.stack.push(Ctx::Paren);
                            i += 2;
                        }
                        self.expect_cmd = true;
                    }
                }
            }
        }
        self.out
    }
}

pub(crate) fn tokenize(s: &str) -> Vec<Token> {
    Lexer {
        s,
        b: s.as_bytes(),
        out: Vec::new(),
        stack: Vec::new(),
        expect_cmd: true,
        redir_target: false,
        keyword_name_next: false,
    }
    .run()
}

/// The resource as one string plus, for argv arrays, each argument's byte range.
pub(crate) struct Prepared {
    pub(crate) cmd: String,
    pub(crate) args: Option<Vec<(usize, usize)>>,
    pub(crate) tokens: Vec<Token>,
}

pub(crate) fn prepare(v: &Value) -> Option<Prepared> {
    match v {
        Value::String(s) if !s.is_empty() => Some(Prepared {
            cmd: s.clone(),
            args: None,
            tokens: tokenize(s),
        }),
        Value::Array(a) => {
            let mut cmd = String::new();
            let mut ranges = Vec::new();
            for x in a {
                let Some(s) = x.as_str().filter(|s| !s.is_empty()) else {
                    continue;
                };
                if !cmd.is_empty() {
                    cmd.push(' ');
                }
                ranges.push((cmd.len(), cmd.len() + s.len()));
                cmd.push_str(s);
            }
            if cmd.is_empty() {
                return None;
            }
            let tokens = tokenize(&cmd);
            Some(Prepared {
                cmd,
                args: Some(ranges),
                tokens,
            })
        }
        _ => None,
    }
}

/// Does an occurrence of `param` at `idx` bring an executable or a redirection?
fn injects(tokens: &[Token], idx: usize, end: usize) -> bool {
    let Some(first) = tokens.iter().position(|t| end >= t.start && idx < t.end) else {
        return false;
    };
    if first + 1 < tokens.len() && tokens[first + 1].start >= end {
        return false; // within a single token
    }
    tokens[first..]
        .iter()
        .take_while(|t| t.start < end)
        .any(|t| matches!(t.kind, Kind::Executable | Kind::Redirection))
}

pub(crate) fn find_injection(
    cmd: &str,
    tokens: &[Token],
    args: Option<&[(usize, usize)]>,
    param: &str,
) -> bool {
    if param.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(p) = cmd.get(from..).and_then(|s| s.find(param)) {
        let idx = from + p;
        let end = idx + param.len();
        let within_one_arg = args.is_none_or(|r| r.iter().any(|(s, e)| *s <= idx && end <= *e));
        if within_one_arg && injects(tokens, idx, end) {
            return true;
        }
        from = idx + cmd[idx..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

pub(crate) fn check(p: &Prepared, param: &str) -> Option<Found> {
    find_injection(&p.cmd, &p.tokens, p.args.as_deref(), param).then(|| Found {
        highlight: param.to_string(),
        resource_value: Some(p.cmd.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(cmd: &str, param: &str) -> bool {
        check(&prepare(&Value::from(cmd)).expect("prepared"), param).is_some()
    }

    #[test]
    fn samples() {
        assert!(m("ls; echo hello", "echo hello"));
        assert!(m("ls 2> file; echo hello", "2> file"));
        assert!(m("echo \"$(cat /etc/passwd)\"", "cat /etc/passwd"));
        assert!(m("diff <(file) <(rm -rf /etc/systemd/)", "rm -"));
        assert!(!m("cat hello", "hello"));
        assert!(!m("time ls -l", "ls -l"));
        assert!(!m("ls -l file && cat /etc/passwd", "-l file"));
        assert!(!m("{ ( $(echo ls) ) }", "ls)"));
    }
}
