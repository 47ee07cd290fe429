//! Transformers (value normalisation before matching).
//!
//! Every transformer works on bytes and returns `None` when it did not change its input, so the
//! common no-change path allocates nothing; a chain keeps a `Cow` and libddwaf's rule applies:
//! when any transformer changed the value, only the transformed value is matched.

use std::borrow::Cow;

/// One transformer of a chain (canonical names; legacy aliases map onto these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transformer {
    Lowercase,
    RemoveNulls,
    CompressWhitespace,
    NormalizePath,
    NormalizePathWin,
    UrlDecode,
    UrlDecodeIis,
    CssDecode,
    JsDecode,
    HtmlEntityDecode,
    Base64Decode,
    Base64UrlDecode,
    Base64Encode,
    ShellUnescape,
    UrlBasename,
    UrlPath,
    UrlQuerystring,
    RemoveComments,
    UnicodeNormalize,
}

/// Pseudo transformers that select what is iterated rather than changing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Source {
    #[default]
    Values,
    Keys,
    /// Keys and values (detectors inspect both).
    Both,
}

pub(crate) enum Parsed {
    T(Transformer),
    S(Source),
}

pub(crate) fn parse(name: &str) -> Option<Parsed> {
    use Transformer as T;
    let t = match name {
        "lowercase" => T::Lowercase,
        "remove_nulls" | "removeNulls" => T::RemoveNulls,
        "compress_whitespace" | "compressWhiteSpace" => T::CompressWhitespace,
        "normalize_path" | "normalizePath" => T::NormalizePath,
        "normalize_path_win" | "normalizePathWin" => T::NormalizePathWin,
        "url_decode" | "urlDecode" => T::UrlDecode,
        "url_decode_iis" | "urlDecodeUni" => T::UrlDecodeIis,
        "css_decode" | "cssDecode" => T::CssDecode,
        "js_decode" | "jsDecode" => T::JsDecode,
        "html_entity_decode" | "htmlEntityDecode" => T::HtmlEntityDecode,
        "base64_decode" | "base64Decode" => T::Base64Decode,
        "base64url_decode" => T::Base64UrlDecode,
        "base64_encode" | "base64Encode" => T::Base64Encode,
        "shell_unescape" | "cmdLine" => T::ShellUnescape,
        "url_basename" | "_sqr_basename" => T::UrlBasename,
        "url_path" | "_sqr_filename" => T::UrlPath,
        "url_querystring" | "_sqr_querystring" => T::UrlQuerystring,
        "remove_comments" | "removeComments" => T::RemoveComments,
        "unicode_normalize" => T::UnicodeNormalize,
        "keys_only" => return Some(Parsed::S(Source::Keys)),
        "values_only" => return Some(Parsed::S(Source::Values)),
        _ => return None,
    };
    Some(Parsed::T(t))
}

/// Apply a chain; `Cow::Borrowed` when nothing changed.
pub(crate) fn apply_chain<'a>(chain: &[Transformer], input: &'a [u8]) -> Cow<'a, [u8]> {
    let mut cur: Cow<'a, [u8]> = Cow::Borrowed(input);
    for t in chain {
        if let Some(v) = apply(*t, &cur) {
            cur = Cow::Owned(v);
        }
    }
    cur
}

/// Whether any byte of `s` satisfies `f`. The "is there anything to do?" test that most
/// transformers start with, and almost always false on benign values: 32-byte blocks without
/// an early exit inside a block, which the compiler turns into vector compares (a plain
/// `iter().any` stays one byte per iteration).
#[inline]
fn any_byte(s: &[u8], f: impl Fn(u8) -> bool) -> bool {
    let mut blocks = s.chunks_exact(32);
    for b in &mut blocks {
        if b.iter().fold(false, |acc, &x| acc | f(x)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&x| f(x))
}

pub(crate) fn apply(t: Transformer, s: &[u8]) -> Option<Vec<u8>> {
    use Transformer as T;
    match t {
        T::Lowercase => {
            if any_byte(s, |b| b.is_ascii_uppercase()) {
                Some(s.to_ascii_lowercase())
            } else {
                None
            }
        }
        T::RemoveNulls => {
            if s.contains(&0) {
                Some(s.iter().copied().filter(|b| *b != 0).collect())
            } else {
                None
            }
        }
        T::CompressWhitespace => compress_whitespace(s),
        T::NormalizePath => normalize_path(s, false),
        T::NormalizePathWin => normalize_path(s, true),
        T::UrlDecode => url_decode(s, false),
        T::UrlDecodeIis => url_decode(s, true),
        T::CssDecode => css_decode(s),
        T::JsDecode => js_decode(s),
        T::HtmlEntityDecode => html_entity_decode(s),
        T::Base64Decode => base64_decode(s, false),
        T::Base64UrlDecode => base64_decode(s, true),
        T::Base64Encode => base64_encode(s),
        T::ShellUnescape => shell_unescape(s),
        T::UrlBasename => url_basename(s),
        T::UrlPath => url_path(s),
        T::UrlQuerystring => url_querystring(s),
        T::RemoveComments => remove_comments(s),
        T::UnicodeNormalize => unicode_normalize(s),
    }
}

fn changed(orig: &[u8], out: Vec<u8>) -> Option<Vec<u8>> {
    if out == orig { None } else { Some(out) }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn compress_whitespace(s: &[u8]) -> Option<Vec<u8>> {
    if !s.windows(2).any(|w| is_ws(w[0]) && is_ws(w[1]))
        && !s.iter().any(|b| is_ws(*b) && *b != b' ')
    {
        return None;
    }
    let mut out = Vec::with_capacity(s.len());
    let mut prev_ws = false;
    for &b in s {
        if is_ws(b) {
            if !prev_ws {
                out.push(b' ');
            }
            prev_ws = true;
        } else {
            out.push(b);
            prev_ws = false;
        }
    }
    changed(s, out)
}

fn normalize_path(s: &[u8], win: bool) -> Option<Vec<u8>> {
    let src: Cow<'_, [u8]> = if win && s.contains(&b'\\') {
        Cow::Owned(
            s.iter()
                .map(|b| if *b == b'\\' { b'/' } else { *b })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    };
    let absolute = src.first() == Some(&b'/');
    let trailing = src.len() > 1 && src.last() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in src.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|p| *p != b"..") {
                    parts.pop();
                } else if !absolute {
                    parts.push(seg);
                }
            }
            _ => parts.push(seg),
        }
    }
    let mut out = Vec::with_capacity(src.len());
    if absolute {
        out.push(b'/');
    }
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    if trailing && !parts.is_empty() {
        out.push(b'/');
    }
    changed(s, out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_utf8(out: &mut Vec<u8>, cp: u32) {
    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

fn url_decode(s: &[u8], iis: bool) -> Option<Vec<u8>> {
    if !any_byte(s, |b| b == b'%' || b == b'+') {
        return None;
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'+' {
            out.push(b' ');
            i += 1;
        } else if b == b'%' {
            if iis
                && i + 5 < s.len()
                && (s[i + 1] == b'u' || s[i + 1] == b'U')
                && s[i + 2..i + 6].iter().all(|c| hex(*c).is_some())
            {
                let cp = s[i + 2..i + 6]
                    .iter()
                    .fold(0u32, |a, c| a * 16 + u32::from(hex(*c).unwrap_or(0)));
                // Encoded as UTF-8; libddwaf does not fold full-width forms onto ASCII.
                push_utf8(&mut out, cp);
                i += 6;
            } else if i + 2 < s.len() {
                match (hex(s[i + 1]), hex(s[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                    }
                    _ => {
                        out.push(b);
                        i += 1;
                    }
                }
            } else {
                out.push(b);
                i += 1;
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    changed(s, out)
}

fn css_decode(s: &[u8]) -> Option<Vec<u8>> {
    if !s.contains(&b'\\') {
        return None;
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        i += 1;
        if i >= s.len() {
            break;
        }
        // Up to 6 hex digits.
        let start = i;
        while i < s.len() && i - start < 6 && hex(s[i]).is_some() {
            i += 1;
        }
        if i > start {
            let cp = s[start..i]
                .iter()
                .fold(0u32, |a, c| a * 16 + u32::from(hex(*c).unwrap_or(0)));
            if cp == 0 {
                // ignore
            } else if cp < 0x80 {
                out.push(cp as u8);
            } else {
                push_utf8(&mut out, cp);
            }
            // A single whitespace after a hex escape is consumed.
            if i < s.len() && is_ws(s[i]) {
                i += 1;
            }
        } else if s[i] == b'\n' {
            // Escaped newline: line continuation, removed.
            i += 1;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    changed(s, out)
}

fn js_decode(s: &[u8]) -> Option<Vec<u8>> {
    if !s.contains(&b'\\') {
        return None;
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' || i + 1 >= s.len() {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let c = s[i + 1];
        match c {
            b'x' | b'X' if i + 3 < s.len() => {
                if let (Some(h), Some(l)) = (hex(s[i + 2]), hex(s[i + 3])) {
                    out.push(h * 16 + l);
                    i += 4;
                } else {
                    out.push(c);
                    i += 2;
                }
            }
            b'u' | b'U' if i + 5 < s.len() && s[i + 2..i + 6].iter().all(|c| hex(*c).is_some()) => {
                let cp = s[i + 2..i + 6]
                    .iter()
                    .fold(0u32, |a, c| a * 16 + u32::from(hex(*c).unwrap_or(0)));
                let cp = if (0xFF01..=0xFF5E).contains(&cp) {
                    cp - 0xFEE0
                } else {
                    cp
                };
                push_utf8(&mut out, cp);
                i += 6;
            }
            b'a' => {
                out.push(7);
                i += 2;
            }
            b'b' => {
                out.push(8);
                i += 2;
            }
            b'f' => {
                out.push(0x0c);
                i += 2;
            }
            b'n' => {
                out.push(b'\n');
                i += 2;
            }
            b'r' => {
                out.push(b'\r');
                i += 2;
            }
            b't' => {
                out.push(b'\t');
                i += 2;
            }
            b'v' => {
                out.push(0x0b);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut j = i + 1;
                let mut v: u32 = 0;
                while j < s.len() && j - (i + 1) < 3 && (b'0'..=b'7').contains(&s[j]) {
                    let nv = v * 8 + u32::from(s[j] - b'0');
                    if nv > 0xFF {
                        break;
                    }
                    v = nv;
                    j += 1;
                }
                out.push(v as u8);
                i = j;
            }
            _ => {
                out.push(c);
                i += 2;
            }
        }
    }
    changed(s, out)
}

fn html_entity_decode(s: &[u8]) -> Option<Vec<u8>> {
    if !s.contains(&b'&') {
        return None;
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'&' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let rest = &s[i + 1..];
        if rest.first() == Some(&b'#') {
            let (is_hex, start) = match rest.get(1) {
                Some(b'x') | Some(b'X') => (true, 2),
                _ => (false, 1),
            };
            let mut j = start;
            let mut v: u64 = 0;
            while j < rest.len() {
                let d = if is_hex {
                    hex(rest[j]).map(u64::from)
                } else if rest[j].is_ascii_digit() {
                    Some(u64::from(rest[j] - b'0'))
                } else {
                    None
                };
                let Some(d) = d else { break };
                v = (v.saturating_mul(if is_hex { 16 } else { 10 })).saturating_add(d);
                j += 1;
            }
            if j > start {
                let cp = u32::try_from(v).unwrap_or(0xFFFD);
                if cp < 0x80 {
                    out.push(cp as u8);
                } else {
                    push_utf8(&mut out, cp);
                }
                i += 1 + j;
                if s.get(i) == Some(&b';') {
                    i += 1;
                }
                continue;
            }
            out.push(b'&');
            i += 1;
            continue;
        }
        let named: &[(&[u8], &[u8])] = &[
            (b"quot", b"\""),
            (b"amp", b"&"),
            (b"lt", b"<"),
            (b"gt", b">"),
            (b"nbsp", b"\xc2\xa0"),
            (b"apos", b"'"),
        ];
        let mut done = false;
        for (name, val) in named {
            if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name) {
                out.extend_from_slice(val);
                i += 1 + name.len();
                if s.get(i) == Some(&b';') {
                    i += 1;
                }
                done = true;
                break;
            }
        }
        if !done {
            out.push(b'&');
            i += 1;
        }
    }
    changed(s, out)
}

fn b64val(b: u8, url: bool) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' if !url => Some(62),
        b'/' if !url => Some(63),
        b'-' if url => Some(62),
        b'_' if url => Some(63),
        _ => None,
    }
}

pub(crate) fn base64_decode_bytes(s: &[u8], url: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4 + 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in s {
        if b == b'=' {
            break;
        }
        let Some(v) = b64val(b, url) else { break };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn base64_decode(s: &[u8], url: bool) -> Option<Vec<u8>> {
    if s.is_empty() {
        return None;
    }
    changed(s, base64_decode_bytes(s, url))
}

fn base64_encode(s: &[u8]) -> Option<Vec<u8>> {
    if s.is_empty() {
        return None;
    }
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len().div_ceil(3) * 4);
    for c in s.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63]);
        out.push(T[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63]
        } else {
            b'='
        });
    }
    Some(out)
}

fn shell_unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    for &b in s {
        match b {
            b'\\' | b'"' | b'\'' | b'^' => {}
            b',' | b';' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                if out.last() != Some(&b' ') {
                    out.push(b' ');
                }
            }
            b'/' | b'(' => {
                if out.last() == Some(&b' ') {
                    out.pop();
                }
                out.push(b);
            }
            _ => out.push(b.to_ascii_lowercase()),
        }
    }
    changed(s, out)
}

fn strip_fragment_query(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    let no_frag = match s.iter().position(|b| *b == b'#') {
        Some(p) => &s[..p],
        None => s,
    };
    match no_frag.iter().position(|b| *b == b'?') {
        Some(p) => (&no_frag[..p], Some(&no_frag[p + 1..])),
        None => (no_frag, None),
    }
}

fn url_path(s: &[u8]) -> Option<Vec<u8>> {
    let (p, _) = strip_fragment_query(s);
    if p.len() == s.len() {
        None
    } else {
        Some(p.to_vec())
    }
}

fn url_basename(s: &[u8]) -> Option<Vec<u8>> {
    let (p, _) = strip_fragment_query(s);
    let base = match p.iter().rposition(|b| *b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    };
    if base.len() == s.len() {
        None
    } else {
        Some(base.to_vec())
    }
}

fn url_querystring(s: &[u8]) -> Option<Vec<u8>> {
    let (_, q) = strip_fragment_query(s);
    let q = q.unwrap_or(b"");
    if q.len() == s.len() {
        None
    } else {
        Some(q.to_vec())
    }
}

fn remove_comments(s: &[u8]) -> Option<Vec<u8>> {
    if !any_byte(s, |b| matches!(b, b'/' | b'-' | b'#' | b'<')) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if rest.starts_with(b"/*") {
            match find(&rest[2..], b"*/") {
                Some(p) => i += 2 + p + 2,
                None => break,
            }
        } else if rest.starts_with(b"<!--") {
            match find(&rest[4..], b"-->") {
                Some(p) => i += 4 + p + 3,
                None => break,
            }
        } else if rest.starts_with(b"--") || rest[0] == b'#' {
            // Comment until end of line.
            match rest.iter().position(|b| *b == b'\n') {
                Some(p) => i += p,
                None => break,
            }
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    changed(s, out)
}

pub(crate) fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    if n.is_empty() {
        return Some(0);
    }
    h.windows(n.len()).position(|w| w == n)
}

/// NFKD-style normalisation with combining marks removed, for the scripts that matter for
/// evasion (Latin with diacritics, mathematical alphanumerics, full-width forms, ligatures).
/// Not a full Unicode implementation: characters outside these tables are kept as they are.
fn unicode_normalize(s: &[u8]) -> Option<Vec<u8>> {
    if s.is_ascii() {
        return None;
    }
    let text = String::from_utf8_lossy(s);
    let mut out = String::with_capacity(s.len());
    for c in text.chars() {
        let cp = c as u32;
        if cp < 0x80 {
            out.push(c);
            continue;
        }
        if (0x300..=0x36F).contains(&cp) {
            continue; // combining diacritical marks
        }
        if let Some(r) = latin_fold(c) {
            out.push_str(r);
            continue;
        }
        if (0xFF01..=0xFF5E).contains(&cp) {
            out.push(char::from_u32(cp - 0xFEE0).unwrap_or(c));
            continue;
        }
        if let Some(m) = math_alnum(cp) {
            out.push(m);
            continue;
        }
        out.push(c);
    }
    changed(s, out.into_bytes())
}

fn latin_fold(c: char) -> Option<&'static str> {
    Some(match c {
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'Ā' | 'Ă' | 'Ą' => "A",
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'Ç' | 'Ć' | 'Ĉ' | 'Ċ' | 'Č' => "C",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'Ď' => "D",
        'ď' => "d",
        'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ĕ' | 'Ė' | 'Ę' | 'Ě' => "E",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'Ĝ' | 'Ğ' | 'Ġ' | 'Ģ' => "G",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'Ĥ' => "H",
        'ĥ' => "h",
        'Ì' | 'Í' | 'Î' | 'Ï' | 'Ĩ' | 'Ī' | 'Ĭ' | 'Į' | 'İ' => "I",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' => "i",
        'Ĵ' => "J",
        'ĵ' => "j",
        'Ķ' => "K",
        'ķ' => "k",
        'Ĺ' | 'Ļ' | 'Ľ' => "L",
        'ĺ' | 'ļ' | 'ľ' => "l",
        'Ñ' | 'Ń' | 'Ņ' | 'Ň' => "N",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ō' | 'Ŏ' | 'Ő' => "O",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ō' | 'ŏ' | 'ő' => "o",
        'Ŕ' | 'Ŗ' | 'Ř' => "R",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'Ś' | 'Ŝ' | 'Ş' | 'Š' => "S",
        'ś' | 'ŝ' | 'ş' | 'š' => "s",
        'Ţ' | 'Ť' => "T",
        'ţ' | 'ť' => "t",
        'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ũ' | 'Ū' | 'Ŭ' | 'Ů' | 'Ű' | 'Ų' => "U",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'Ŵ' => "W",
        'ŵ' => "w",
        'Ý' | 'Ŷ' | 'Ÿ' => "Y",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'Ź' | 'Ż' | 'Ž' => "Z",
        'ź' | 'ż' | 'ž' => "z",
        'ß' => "ss",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' | 'ﬆ' => "st",
        '\u{2024}' => ".",
        '\u{2025}' => "..",
        '\u{2026}' => "...",
        '\u{FE52}' => ".",
        '\u{2044}' | '\u{2215}' => "/",
        _ => return None,
    })
}

/// Mathematical Alphanumeric Symbols (U+1D400..U+1D7FF) fold to ASCII letters/digits.
fn math_alnum(cp: u32) -> Option<char> {
    if (0x1D400..=0x1D6A3).contains(&cp) {
        let off = (cp - 0x1D400) % 52;
        let c = if off < 26 {
            b'A' + off as u8
        } else {
            b'a' + (off - 26) as u8
        };
        return Some(c as char);
    }
    if (0x1D7CE..=0x1D7FF).contains(&cp) {
        let off = (cp - 0x1D7CE) % 10;
        return Some((b'0' + off as u8) as char);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tr: Transformer, s: &str) -> String {
        String::from_utf8_lossy(&apply(tr, s.as_bytes()).unwrap_or_else(|| s.as_bytes().to_vec()))
            .into_owned()
    }

    #[test]
    fn samples() {
        assert_eq!(t(Transformer::Base64Decode, "J09SIDE9MS8q"), "'OR 1=1/*");
        assert_eq!(t(Transformer::Base64Encode, "'OR 1=1/*"), "J09SIDE9MS8q");
        assert_eq!(
            t(Transformer::CompressWhitespace, "attack   value"),
            "attack value"
        );
        assert_eq!(
            t(Transformer::CssDecode, "CSS\\\n tran\\sformations"),
            "CSS transformations"
        );
        assert_eq!(
            t(
                Transformer::HtmlEntityDecode,
                "HTML &#x0000000000000000000000000000041 &#x41; x"
            ),
            "HTML A A x"
        );
        assert_eq!(t(Transformer::JsDecode, "\\x41\\x20\\x4aS"), "A JS");
        assert_eq!(
            t(Transformer::NormalizePath, "/etc/dir1/dir2/../../passwd"),
            "/etc/passwd"
        );
        assert_eq!(
            t(Transformer::NormalizePathWin, "\\etc\\a\\..\\passwd"),
            "/etc/passwd"
        );
        assert_eq!(t(Transformer::RemoveComments, "passwd#asdsd"), "passwd");
        assert_eq!(
            t(Transformer::ShellUnescape, "/\\etc/\"pass^wd"),
            "/etc/passwd"
        );
        assert_eq!(
            t(Transformer::UnicodeNormalize, "/étc/p𝑎ßwd"),
            "/etc/passwd"
        );
        assert_eq!(
            t(Transformer::UrlBasename, "/path/to/index.php?a=b#frag"),
            "index.php"
        );
        assert_eq!(
            t(Transformer::UrlDecode, "%61n+%61ttack%20valu%65"),
            "an attack value"
        );
        assert_eq!(
            t(Transformer::UrlPath, "/p/index.php?a=b#frag"),
            "/p/index.php"
        );
        assert_eq!(
            t(Transformer::UrlQuerystring, "/p/index.php?a=b#frag"),
            "a=b"
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Transformer; 19] = [
        Transformer::Lowercase,
        Transformer::RemoveNulls,
        Transformer::CompressWhitespace,
        Transformer::NormalizePath,
        Transformer::NormalizePathWin,
        Transformer::UrlDecode,
        Transformer::UrlDecodeIis,
        Transformer::CssDecode,
        Transformer::JsDecode,
        Transformer::HtmlEntityDecode,
        Transformer::Base64Decode,
        Transformer::Base64UrlDecode,
        Transformer::Base64Encode,
        Transformer::ShellUnescape,
        Transformer::UrlBasename,
        Transformer::UrlPath,
        Transformer::UrlQuerystring,
        Transformer::RemoveComments,
        Transformer::UnicodeNormalize,
    ];

    proptest! {
        #[test]
        fn transformers_never_panic_and_report_changes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for t in ALL {
                if let Some(out) = apply(t, &bytes) {
                    prop_assert_ne!(out, bytes.clone(), "{:?} reported a change without one", t);
                }
            }
        }

        #[test]
        fn normalize_path_is_idempotent(s in "[a-z./\\\\]{0,24}") {
            for t in [Transformer::NormalizePath, Transformer::NormalizePathWin] {
                let once = apply(t, s.as_bytes()).unwrap_or_else(|| s.as_bytes().to_vec());
                prop_assert!(apply(t, &once).is_none(), "{:?} not idempotent on {:?}", t, s);
            }
        }

        #[test]
        fn base64_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..48)) {
            let enc = apply(Transformer::Base64Encode, &bytes).expect("non-empty input encodes");
            prop_assert_eq!(base64_decode_bytes(&enc, false), bytes);
        }
    }
}
