//! Number parsing with Go's `strconv` semantics.
//!
//! The Datadog agent parses values and sample rates with `strconv.ParseFloat(s, 64)` and
//! timestamps with `strconv.ParseInt(s, 10, 64)`; clients rely on what that accepts (`1e3`, `+5`,
//! `NaN`, `Inf`, hex floats) and on what it rejects (`1_000`, `+NaN`, overflow to ±Inf). Rust's
//! `f64::from_str` differs on several of those, so this module pre-validates the grammar and
//! delegates the decimal conversion (correctly rounded) to the standard library.

/// Parses like Go's `strconv.ParseFloat(s, 64)`; `None` where Go returns an error.
///
/// Accepted: `[+-]digits[.digits][(e|E)[+-]digits]` (either side of `.` may be empty, not both),
/// `[+-]inf`/`infinity` and unsigned `nan` (ASCII case-insensitive), and hex floats
/// `[+-]0x<hex mantissa>p[+-]<decimal exponent>` with `_` allowed between digits. A finite
/// literal whose magnitude overflows `f64` is an error (Go reports `ErrRange`).
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    if let Some(v) = fast_decimal(b) {
        return Some(v);
    }
    if let Some(v) = special(b) {
        return Some(v);
    }
    let (neg, body) = match b[0] {
        b'+' => (false, &b[1..]),
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    if body.len() >= 2 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
        let v = parse_hex(b)?;
        return Some(if neg { -v } else { v });
    }
    if !decimal_grammar(body) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    if v.is_infinite() { None } else { Some(v) }
}

/// Powers of ten that are exact in an `f64`.
const EXACT_POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The common case, `[-]digits[.digits]` with at most 15 digits and no exponent, without the
/// general grammar check and decimal conversion: `None` means "take the general path".
///
/// Why this is exact: a mantissa of at most 15 digits is below 2^53, so it and `10^k` for
/// `k <= 15` are exact `f64`s, and one IEEE division of two exact values is correctly rounded
/// (Clinger's fast path), the same result as the standard library's conversion.
#[inline]
fn fast_decimal(b: &[u8]) -> Option<f64> {
    let (neg, body) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    if body.is_empty() || body.len() > 16 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    let mut frac: Option<usize> = None;
    for (i, &c) in body.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                digits += 1;
            }
            b'.' if frac.is_none() => frac = Some(i),
            _ => return None,
        }
    }
    if digits == 0 || digits > 15 {
        return None;
    }
    let scale = frac.map_or(0, |i| body.len() - i - 1);
    let v = mantissa as f64 / *EXACT_POW10.get(scale)?;
    Some(if neg { -v } else { v })
}

/// Go's `special`: infinities (optionally signed) and NaN (unsigned only), whole string.
fn special(b: &[u8]) -> Option<f64> {
    let (sign, rest, signed) = match b[0] {
        b'+' => (1.0, &b[1..], true),
        b'-' => (-1.0, &b[1..], true),
        _ => (1.0, b, false),
    };
    if rest.eq_ignore_ascii_case(b"inf") || rest.eq_ignore_ascii_case(b"infinity") {
        return Some(sign * f64::INFINITY);
    }
    if !signed && rest.eq_ignore_ascii_case(b"nan") {
        return Some(f64::NAN);
    }
    None
}

/// `digits[.digits][e[+-]digits]` with at least one mantissa digit, no sign (already removed).
fn decimal_grammar(b: &[u8]) -> bool {
    let mut i = 0;
    let mut digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] | 0x20) == b'e' {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
}

/// Go's `underscoreOK`: `_` only between digits or right after the base prefix.
fn underscore_ok(b: &[u8]) -> bool {
    let mut s = b;
    if let Some(&c) = s.first()
        && (c == b'+' || c == b'-')
    {
        s = &s[1..];
    }
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1] | 0x20, b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = (s[1] | 0x20) == b'x';
    }
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_digit() || (hex && (b'a'..=b'f').contains(&(c | 0x20))) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// Hex float: `[+-]0x` mantissa (hex digits, optional `.`) then mandatory `p[+-]digits`.
/// Returns the magnitude; the caller applies the sign.
fn parse_hex(full: &[u8]) -> Option<f64> {
    if full.contains(&b'_') && !underscore_ok(full) {
        return None;
    }
    let start = if full[0] == b'+' || full[0] == b'-' {
        3
    } else {
        2
    };
    let b = &full[start..];
    let mut mant: u64 = 0;
    let mut exp: i64 = 0;
    let mut digits = 0;
    let mut seen_dot = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let d = match c {
            b'_' => {
                i += 1;
                continue;
            }
            b'.' if !seen_dot => {
                seen_dot = true;
                i += 1;
                continue;
            }
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' | b'A'..=b'F' => (c | 0x20) - b'a' + 10,
            _ => break,
        };
        digits += 1;
        if mant >> 59 == 0 {
            mant = (mant << 4) | u64::from(d);
            if seen_dot {
                exp -= 4;
            }
        } else {
            // Mantissa full: drop the digit (precision beyond 60 bits), keep the magnitude.
            if d != 0 {
                mant |= 1; // sticky bit
            }
            if !seen_dot {
                exp += 4;
            }
        }
        i += 1;
    }
    if digits == 0 || i >= b.len() || (b[i] | 0x20) != b'p' {
        return None;
    }
    i += 1;
    let mut eneg = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        eneg = b[i] == b'-';
        i += 1;
    }
    let estart = i;
    let mut e: i64 = 0;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        if b[i] != b'_' {
            e = (e * 10 + i64::from(b[i] - b'0')).min(1 << 20);
        }
        i += 1;
    }
    if i == estart || i != b.len() {
        return None;
    }
    exp += if eneg { -e } else { e };
    let v = ldexp(mant as f64, exp);
    if v.is_infinite() { None } else { Some(v) }
}

/// `v * 2^e` without intermediate overflow/underflow surprises.
fn ldexp(mut v: f64, mut e: i64) -> f64 {
    if v == 0.0 {
        return 0.0;
    }
    while e > 1000 {
        v *= 2f64.powi(1000);
        e -= 1000;
        if v.is_infinite() {
            return v;
        }
    }
    while e < -1000 {
        v *= 2f64.powi(-1000);
        e += 1000;
        if v == 0.0 {
            return 0.0;
        }
    }
    // |e| <= 1000 fits i32.
    v * 2f64.powi(e as i32)
}

/// Parses like Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits, i64 range.
pub(crate) fn parse_go_int(s: &str) -> Option<i64> {
    // Rust's i64 grammar for radix 10 is the same: [+-]?[0-9]+, overflow is an error.
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_accepts() {
        let ok = [
            ("1", 1.0),
            ("+5", 5.0),
            ("-5", -5.0),
            ("1e3", 1000.0),
            ("1E+3", 1000.0),
            ("2.5e-1", 0.25),
            (".5", 0.5),
            ("5.", 5.0),
            ("0x1p-2", 0.25),
            ("0X1.8P1", 3.0),
            ("-0x_1p4", -16.0),
            ("0x1_0p0", 16.0),
            ("1e-400", 0.0),
            ("007", 7.0),
        ];
        for (s, v) in ok {
            assert_eq!(parse_go_float(s), Some(v), "{s}");
        }
        assert_eq!(parse_go_float("Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_float("-infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_go_float("+INF"), Some(f64::INFINITY));
        assert!(parse_go_float("NaN").is_some_and(f64::is_nan));
        assert!(parse_go_float("nan").is_some_and(f64::is_nan));
    }

    #[test]
    fn go_float_rejects() {
        for s in [
            "", "+", "-", ".", "e3", "1e", "1e+", "abc", "1_000", "+NaN", "-nan", "infinit",
            "1e400", "-1e400", "0x1", "0x", "0xp1", "0x1p", "1.2.3", " 1", "1 ", "0x_p1",
            "0x1__0p0", "0x1_p0", "1f", "0b101",
        ] {
            assert_eq!(parse_go_float(s), None, "{s:?}");
        }
    }

    #[test]
    fn fast_path_matches_the_general_conversion() {
        // Every shape the fast path takes, against the standard library's correctly rounded
        // conversion (bit for bit, so -0 and rounding are covered).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = 1 + (x % 16) as usize;
            let mut s = String::new();
            if x & (1 << 20) != 0 {
                s.push('-');
            }
            let dot = (x >> 24) as usize % (digits + 2);
            let mut y = x;
            for i in 0..digits {
                if i == dot {
                    s.push('.');
                }
                s.push(char::from(b'0' + (y % 10) as u8));
                y /= 10;
                if y == 0 {
                    y = x.rotate_left(i as u32 + 1);
                }
            }
            let want: Option<f64> = s.parse().ok();
            let got = parse_go_float(&s);
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{s:?}");
            if let Some(v) = fast_decimal(s.as_bytes()) {
                assert_eq!(Some(v.to_bits()), want.map(f64::to_bits), "{s:?}");
            }
        }
        for s in [
            "0",
            "-0",
            "0.1",
            "-.5",
            "5.",
            "999999999999999",
            "0.00000000000001",
        ] {
            let want: f64 = s.parse().unwrap();
            assert_eq!(
                fast_decimal(s.as_bytes()).map(f64::to_bits),
                Some(want.to_bits())
            );
        }
        for s in [
            "",
            "-",
            ".",
            "+1",
            "1e3",
            "1.2.3",
            "1234567890123456",
            "--1",
        ] {
            assert_eq!(fast_decimal(s.as_bytes()), None, "{s:?}");
        }
    }

    #[test]
    fn go_int() {
        assert_eq!(parse_go_int("+12"), Some(12));
        assert_eq!(parse_go_int("-12"), Some(-12));
        assert_eq!(parse_go_int("9223372036854775808"), None);
        assert_eq!(parse_go_int(""), None);
        assert_eq!(parse_go_int("1_0"), None);
        assert_eq!(parse_go_int("12a"), None);
    }
}
