//! Just enough DER to read a certificate's `notAfter`.
//!
//! Why not `x509-parser`: the HTTP check needs one field, and a ~100-line bounds-checked TLV
//! walk is far less code to trust than a full ASN.1 stack (rustls/webpki verify the chain but
//! expose no validity accessor). The walk follows RFC 5280 §4.1:
//! `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
//! signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }`.

/// Why a certificate could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum X509Error {
    #[error("truncated DER at byte {0}")]
    Truncated(usize),
    #[error("unexpected DER tag 0x{found:02x} at byte {at} (expected {expected})")]
    Tag {
        at: usize,
        found: u8,
        expected: &'static str,
    },
    #[error("invalid certificate time {0:?}")]
    Time(String),
}

/// One TLV: tag, content range.
struct Tlv {
    tag: u8,
    start: usize,
    end: usize,
}

/// Reads the TLV beginning at `pos` within `buf[..limit]`.
fn tlv(buf: &[u8], pos: usize, limit: usize) -> Result<Tlv, X509Error> {
    let tag = *buf
        .get(pos)
        .filter(|_| pos < limit)
        .ok_or(X509Error::Truncated(pos))?;
    let first = *buf
        .get(pos + 1)
        .filter(|_| pos + 1 < limit)
        .ok_or(X509Error::Truncated(pos + 1))?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(X509Error::Truncated(pos + 1));
        }
        let mut len = 0usize;
        for i in 0..n {
            let b = *buf
                .get(pos + 2 + i)
                .filter(|_| pos + 2 + i < limit)
                .ok_or(X509Error::Truncated(pos + 2 + i))?;
            len = (len << 8) | usize::from(b);
        }
        (len, 2 + n)
    };
    let start = pos + hdr;
    let end = start.checked_add(len).ok_or(X509Error::Truncated(pos))?;
    if end > limit {
        return Err(X509Error::Truncated(limit));
    }
    Ok(Tlv { tag, start, end })
}

fn expect(t: &Tlv, tag: u8, at: usize, expected: &'static str) -> Result<(), X509Error> {
    if t.tag == tag {
        Ok(())
    } else {
        Err(X509Error::Tag {
            at,
            found: t.tag,
            expected,
        })
    }
}

/// `notAfter` of a DER certificate, as UNIX seconds.
pub(crate) fn not_after(der: &[u8]) -> Result<i64, X509Error> {
    let cert = tlv(der, 0, der.len())?;
    expect(&cert, 0x30, 0, "Certificate SEQUENCE")?;
    let tbs = tlv(der, cert.start, cert.end)?;
    expect(&tbs, 0x30, cert.start, "tbsCertificate SEQUENCE")?;
    let mut pos = tbs.start;
    let mut field = tlv(der, pos, tbs.end)?;
    if field.tag == 0xa0 {
        pos = field.end; // explicit version
        field = tlv(der, pos, tbs.end)?;
    }
    expect(&field, 0x02, pos, "serialNumber INTEGER")?;
    // signature AlgorithmIdentifier, issuer Name
    for what in ["signature SEQUENCE", "issuer SEQUENCE"] {
        pos = field.end;
        field = tlv(der, pos, tbs.end)?;
        expect(&field, 0x30, pos, what)?;
    }
    pos = field.end;
    let validity = tlv(der, pos, tbs.end)?;
    expect(&validity, 0x30, pos, "validity SEQUENCE")?;
    let not_before = tlv(der, validity.start, validity.end)?;
    let na = tlv(der, not_before.end, validity.end)?;
    let text = std::str::from_utf8(&der[na.start..na.end])
        .map_err(|_| X509Error::Time(String::from_utf8_lossy(&der[na.start..na.end]).into()))?;
    match na.tag {
        0x17 => parse_time(text, false),
        0x18 => parse_time(text, true),
        found => Err(X509Error::Tag {
            at: not_before.end,
            found,
            expected: "UTCTime or GeneralizedTime",
        }),
    }
}

/// `YYMMDDHHMMSSZ` (UTCTime, years 1950-2049) or `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn parse_time(s: &str, generalized: bool) -> Result<i64, X509Error> {
    let bad = || X509Error::Time(s.to_owned());
    let digits = s.strip_suffix('Z').ok_or_else(bad)?;
    let ylen = if generalized { 4 } else { 2 };
    if digits.len() != ylen + 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |a: usize, b: usize| digits[a..b].parse::<i64>().map_err(|_| bad());
    let mut year = num(0, ylen)?;
    if !generalized {
        year += if year < 50 { 2000 } else { 1900 };
    }
    let o = ylen;
    let (mon, day) = (num(o, o + 2)?, num(o + 2, o + 4)?);
    let (h, m, sec) = (num(o + 4, o + 6)?, num(o + 6, o + 8)?, num(o + 8, o + 10)?);
    if !(1..=12).contains(&mon) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(year, mon, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2038, 1, 19), 24_855);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("700101000000Z", false), Ok(0));
        assert_eq!(parse_time("491231235959Z", false), Ok(2_524_607_999));
        assert_eq!(parse_time("20380119031407Z", true), Ok(2_147_483_647));
        assert!(parse_time("2038011903140Z", true).is_err());
        assert!(parse_time("700101000000", false).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x02, 0x01, 0x00],
        ] {
            assert!(not_after(bad).is_err());
        }
    }
}
