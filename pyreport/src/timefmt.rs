//! Event times: RFC 3339 text in the stored payload, microseconds since the Unix epoch (UTC) in
//! Arrow. The gateway writes `YYYY-MM-DDTHH:MM:SS.ffffffZ`; that form is parsed by hand (it is
//! on the hot path of every scan), anything else RFC 3339 allows goes through the `time` crate.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Microseconds since the Unix epoch of an RFC 3339 timestamp, or None when it is not one.
pub fn parse_rfc3339_us(s: &str) -> Option<i64> {
    fast(s).or_else(|| slow(s))
}

fn slow(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1000)).ok()
}

fn fast(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[from..to] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        i += 1;
        let mut digits = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if digits < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            digits += 1;
            i += 1;
        }
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    if i + 1 != b.len() || !matches!(b[i], b'Z' | b'z') {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000_000 + micros)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 text (UTC, microseconds) of a microsecond timestamp, for messages.
pub fn format_us(us: i64) -> String {
    let nanos = i128::from(us) * 1000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
            format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z", t.hour(), t.minute(), t.second(), t.microsecond())
        }
        Err(_) => format!("{us} µs after the epoch"),
    }
}

/// Microseconds since the epoch of a `time` value (NATS metadata timestamps).
pub fn to_us(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1000)).unwrap_or(i64::MAX)
}

pub fn from_us(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_agrees_with_the_time_crate() {
        for s in [
            "2026-11-27T03:04:05.123456Z",
            "1970-01-01T00:00:00.000000Z",
            "2000-02-29T23:59:59.999999Z",
            "2024-12-31T12:00:00Z",
            "2026-01-01T00:00:00.5Z",
            "1969-12-31T23:59:59.000001Z",
            "2026-06-15T10:20:30.123456789Z",
        ] {
            assert_eq!(fast(s), slow(s), "{s}");
            assert!(fast(s).is_some(), "{s}");
        }
    }

    #[test]
    fn other_rfc3339_forms_fall_back() {
        assert_eq!(parse_rfc3339_us("2026-01-01T01:00:00+01:00"), parse_rfc3339_us("2026-01-01T00:00:00Z"));
        assert_eq!(parse_rfc3339_us("not a time"), None);
        assert_eq!(parse_rfc3339_us("2026-02-30T00:00:00Z"), None);
    }

    #[test]
    fn formats_back() {
        let us = parse_rfc3339_us("2026-11-27T03:04:05.123456Z").unwrap();
        assert_eq!(format_us(us), "2026-11-27T03:04:05.123456Z");
    }
}
