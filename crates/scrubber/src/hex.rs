//! Bare Datadog keys: a run of exactly 32 (API key) or 40 (application key) hex digits between
//! non-word characters, masked to `********` + the last 4 digits.
//!
//! These keys have no prefix, so no hint can pre-select lines: every line must be checked. A
//! regex (`\b[a-fA-F0-9]{32}\b`) would work, but this loop skips ahead: if the byte 31 positions
//! further is not a hex digit, no 32-digit run can start anywhere before it, so benign text is
//! crossed in strides of up to 32 bytes.
//!
//! Known false positives, accepted as in Datadog's agent: 128-bit trace ids written as 32 hex
//! digits, MD5 sums and 40-digit git SHA-1s are masked too (SHA-256 sums, 64 digits, are not).

use crate::MASK;

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Spans (start, end) of bare 32- or 40-digit hex runs.
fn find_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let n = b.len();
    let mut i = 0;
    while i + 32 <= n {
        // Any run of >= 32 hex digits starting in [i, i+31] covers position i+31.
        if !is_hex(b[i + 31]) {
            i += 32;
            continue;
        }
        // Walk back to the start of the hex run containing i+31 (not before i).
        let mut start = i + 31;
        while start > i && is_hex(b[start - 1]) {
            start -= 1;
        }
        let mut end = i + 32;
        while end < n && is_hex(b[end]) {
            end += 1;
        }
        // The run may extend before `i` only if we skipped into it, which cannot happen: `i` is
        // always 0, just after a non-hex byte, or just after a processed run.
        let len = end - start;
        if len >= 32 {
            let bounded = (start == 0 || !is_word(b[start - 1])) && (end == n || !is_word(b[end]));
            if bounded && (len == 32 || len == 40) {
                spans.push((start, end));
            }
            i = end;
        } else {
            // Run too short: the next candidate run starts after it.
            i = end;
        }
    }
    spans
}

/// Masked copy of `line`, or `None` when it holds no bare key.
pub(crate) fn scrub(line: &str) -> Option<String> {
    if line.len() < 32 {
        return None;
    }
    let spans = find_runs(line.as_bytes());
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(line.len());
    let mut last = 0;
    for (s, e) in spans {
        out.push_str(&line[last..s]);
        out.push_str(MASK);
        out.push_str(&line[e - 4..e]);
        last = e;
    }
    out.push_str(&line[last..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_exact_lengths_only() {
        let k32 = "0123456789abcdef0123456789abcdef";
        let k40 = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            scrub(&format!("key {k32} end")).as_deref(),
            Some("key ********cdef end")
        );
        assert_eq!(scrub(k40).as_deref(), Some("********4567"));
        assert_eq!(scrub(&format!("x{k32}")), None, "glued to a word");
        assert_eq!(scrub(&format!("{k32}{k32}")), None, "64 digits (sha256)");
        assert_eq!(scrub(&k32[..31]), None);
        assert_eq!(
            scrub(&format!("a:{k32},b:{k40}")).as_deref(),
            Some("a:********cdef,b:********4567")
        );
        assert_eq!(
            scrub("4bf92f35-77b3-4da6-a3ce-929d0e0e4736 uuid stays"),
            None
        );
    }

    #[test]
    fn agrees_with_naive_scan() {
        // Deterministic pseudo-random strings over a small alphabet that makes runs likely.
        let alphabet = b"0123456789abcdef-_ g";
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..2000 {
            let len = (x % 120) as usize;
            let mut s = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let r = (x % 100) as usize;
                s.push(if r < 90 {
                    alphabet[r % 16]
                } else {
                    alphabet[16 + r % 4]
                });
            }
            let naive = naive_runs(&s);
            assert_eq!(find_runs(&s), naive, "{}", String::from_utf8_lossy(&s));
        }
    }

    fn naive_runs(b: &[u8]) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if is_hex(b[i]) {
                let mut j = i;
                while j < b.len() && is_hex(b[j]) {
                    j += 1;
                }
                let len = j - i;
                if (len == 32 || len == 40)
                    && (i == 0 || !is_word(b[i - 1]))
                    && (j == b.len() || !is_word(b[j]))
                {
                    v.push((i, j));
                }
                i = j;
            } else {
                i += 1;
            }
        }
        v
    }
}
