//! Timestamps as the signals API speaks them: ISO-8601 (`2024-01-02T09:00:00+00:00` from the
//! Python client, `...Z`, fractions), UNIX milliseconds, and relative `now-15m`. `now` is passed
//! in: no clock here.

/// Why a time value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid time {value:?}: {reason} (use ISO-8601 like 2024-01-02T09:00:00Z, UNIX milliseconds, or now-15m / now-1h / now-2d)"
)]
pub struct TimeError {
    pub value: String,
    pub reason: &'static str,
}

fn bad(value: &str, reason: &'static str) -> TimeError {
    TimeError {
        value: value.to_string(),
        reason,
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// UNIX ms → `2022-04-12T13:54:02.099Z`.
pub fn format_iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn num(s: &str, value: &str) -> Result<i64, TimeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(value, "expected digits"));
    }
    s.parse().map_err(|_| bad(value, "number out of range"))
}

/// Parses an ISO-8601 date-time (or a plain date) into UNIX ms.
pub fn parse_iso(value: &str) -> Result<i64, TimeError> {
    let s = value.trim();
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let mut dp = date.splitn(3, '-');
    let (Some(y), Some(mo), Some(d)) = (dp.next(), dp.next(), dp.next()) else {
        return Err(bad(value, "expected YYYY-MM-DD"));
    };
    let (y, mo, d) = (num(y, value)?, num(mo, value)?, num(d, value)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || !(1..=9999).contains(&y) {
        return Err(bad(value, "date out of range"));
    }
    // Split off the zone: Z, +HH:MM, -HH:MM, +HHMM (none = UTC).
    let (clock, offset_s) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, z) = (&rest[..i], &rest[i..]);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 && digits.len() != 2 {
            return Err(bad(value, "bad UTC offset"));
        }
        let hh = num(&digits[..2], value)?;
        let mm = if digits.len() == 4 {
            num(&digits[2..], value)?
        } else {
            0
        };
        if hh > 23 || mm > 59 {
            return Err(bad(value, "bad UTC offset"));
        }
        (c, sign * (hh * 3600 + mm * 60))
    } else {
        (rest, 0)
    };
    let (mut h, mut mi, mut sec, mut ms) = (0, 0, 0, 0);
    if !clock.is_empty() {
        let (hms, frac) = match clock.split_once(['.', ',']) {
            Some((a, b)) => (a, Some(b)),
            None => (clock, None),
        };
        let mut p = hms.split(':');
        h = num(p.next().unwrap_or(""), value)?;
        mi = num(p.next().unwrap_or(""), value)?;
        sec = match p.next() {
            Some(x) => num(x, value)?,
            None => 0,
        };
        if p.next().is_some() || h > 23 || mi > 59 || sec > 60 {
            return Err(bad(value, "bad time of day"));
        }
        if let Some(f) = frac {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(value, "bad fraction of a second"));
            }
            let f3 = format!("{f:0<3}");
            ms = num(&f3[..3], value)?;
        }
    }
    let days = days_from_civil(y, mo, d);
    Ok((days * 86_400 + h * 3600 + mi * 60 + sec - offset_s) * 1000 + ms)
}

/// Parses `filter[from]`/`filter[to]`: `now`, `now-15m` (units s, m, h, d, w), UNIX ms (or
/// seconds when below 10^11), or ISO-8601.
pub fn parse_time(value: &str, now_ms: i64) -> Result<i64, TimeError> {
    let s = value.trim();
    if s.is_empty() {
        return Err(bad(value, "empty"));
    }
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(rel) = s.strip_prefix("now") {
        let (sign, rel) = match rel.as_bytes().first() {
            Some(b'-') => (-1, &rel[1..]),
            Some(b'+') => (1, &rel[1..]),
            _ => return Err(bad(value, "expected now-N<unit>")),
        };
        let split = rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len());
        let n = num(&rel[..split], value)?;
        let unit = match &rel[split..] {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad(value, "unit must be s, m, h, d or w")),
        };
        return n
            .checked_mul(unit)
            .and_then(|d| now_ms.checked_add(sign * d))
            .ok_or_else(|| bad(value, "out of range"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let n = num(s, value)?;
        return Ok(if n < 100_000_000_000 { n * 1000 } else { n });
    }
    parse_iso(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip_and_forms() {
        let t = parse_iso("2022-04-12T13:54:02.099Z").unwrap();
        assert_eq!(format_iso(t), "2022-04-12T13:54:02.099Z");
        assert_eq!(
            parse_iso("2024-01-02T09:00:00+00:00").unwrap(),
            1_704_186_000_000
        );
        assert_eq!(
            parse_iso("2024-01-02T10:00:00+01:00").unwrap(),
            1_704_186_000_000
        );
        assert_eq!(
            parse_iso("2024-01-02T04:00:00-05:00").unwrap(),
            1_704_186_000_000
        );
        assert_eq!(parse_iso("2024-01-02").unwrap(), 1_704_153_600_000);
        assert_eq!(parse_iso("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(format_iso(0), "1970-01-01T00:00:00.000Z");
        assert!(parse_iso("2024-13-02T00:00:00Z").is_err());
        assert!(parse_iso("garbage").is_err());
        assert!(parse_iso("2024-01-02T25:00:00Z").is_err());
    }

    #[test]
    fn relative_and_epoch() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(parse_time("now-1h", now).unwrap(), now - 3_600_000);
        assert_eq!(parse_time("now-15m", now).unwrap(), now - 900_000);
        assert_eq!(parse_time("1700000000000", now).unwrap(), now);
        assert_eq!(parse_time("1700000000", now).unwrap(), now);
        assert!(parse_time("now-1y", now).is_err());
        assert!(parse_time("now-", now).is_err());
        assert!(parse_time("", now).is_err());
        let e = parse_time("yesterday", now).unwrap_err();
        assert!(e.to_string().contains("yesterday"));
    }

    /// Found by `fuzz/` (detection_search): an offset that fits i64 but moves `now` past it
    /// overflowed (a panic in debug builds, a wrapped time in release).
    #[test]
    fn relative_time_past_the_i64_range_is_an_error() {
        let now = 1_700_000_000_000;
        let e = parse_time("now+9223372036854775s", now).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        assert!(parse_time("now-1h", i64::MIN).is_err());
        assert!(parse_time("now+1s", i64::MAX).is_err());
        assert_eq!(parse_time("now-1s", i64::MAX).unwrap(), i64::MAX - 1000);
    }
}
