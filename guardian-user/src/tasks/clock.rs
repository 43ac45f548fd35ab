//! Timestamps as task DBs write them: unix seconds (or milliseconds), ISO-8601 and SQLite
//! `datetime()` text, with or without a UTC offset. Pure except for the local-time conversion,
//! which asks libc for the zone's offset.

use crate::config::NaiveTimes;
use std::time::{Duration, SystemTime};

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}

/// Numbers above this are milliseconds (in seconds it would be the year 5138).
const MILLIS_FROM: f64 = 1e11;

/// A numeric timestamp: unix seconds, or milliseconds when it is too large for seconds.
pub fn from_number(value: f64) -> Option<i64> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let secs = if value >= MILLIS_FROM {
        value / 1000.0
    } else {
        value
    };
    Some(secs.floor() as i64)
}

/// Parses `1771581600`, `2026-02-20 10:00:00`, `2026-02-20T10:00:00.123Z`,
/// `2026-02-20T18:00:00+08:00` or `2026-02-20`. Text without an offset is read as `naive` says.
pub fn parse_timestamp(text: &str, naive: NaiveTimes) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return from_number(text.parse().ok()?);
    }
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (mut hour, mut minute, mut second) = (0, 0, 0);
    let mut rest = &text[10..];
    if let Some(time) = rest.strip_prefix(['T', 't', ' ']) {
        let tb = time.as_bytes();
        if tb.len() < 5 || tb[2] != b':' {
            return None;
        }
        let tn = |r: std::ops::Range<usize>| -> Option<i64> {
            let s = time.get(r)?;
            s.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| s.parse().ok())
                .flatten()
        };
        hour = tn(0..2)?;
        minute = tn(3..5)?;
        rest = &time[5..];
        if let Some(sec) = rest.strip_prefix(':') {
            second = sec.get(0..2).and_then(|s| s.parse().ok())?;
            rest = &sec[2..];
            if let Some(frac) = rest.strip_prefix(['.', ',']) {
                let digits = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
                rest = &frac[digits..];
            }
        }
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
    }
    let civil = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    let rest = rest.trim();
    let offset = match rest {
        "" => None,
        "Z" | "z" | "UTC" | "utc" => Some(0),
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 && digits.len() != 2 {
                return None;
            }
            let h: i64 = digits.get(0..2)?.parse().ok()?;
            let m: i64 = digits
                .get(2..)
                .filter(|s| !s.is_empty())
                .map_or(Some(0), |s| s.parse().ok())?;
            Some(sign * (h * 3600 + m * 60))
        }
    };
    match (offset, naive) {
        (Some(off), _) => Some(civil - off),
        (None, NaiveTimes::Utc) => Some(civil),
        (None, NaiveTimes::Local) => local_to_utc(year, month, day, hour, minute, second),
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
    era * 146097 + doe - 719468
}

/// Local wall-clock time → seconds since the epoch, through the C library's zone rules.
fn local_to_utc(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    // SAFETY: `tm` is a plain C struct for which all-zero is a valid value; `mktime` reads and
    // normalises it and has no other preconditions.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = (y - 1900) as i32;
    tm.tm_mon = (mo - 1) as i32;
    tm.tm_mday = d as i32;
    tm.tm_hour = h as i32;
    tm.tm_min = mi as i32;
    tm.tm_sec = s as i32;
    tm.tm_isdst = -1;
    // SAFETY: `tm` is a valid, initialised struct owned by this frame.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t)
}

/// `3h 12m`-style rendering of a number of seconds, for messages.
pub fn human_secs(secs: i64) -> String {
    let secs = secs.max(0) as u64;
    let d = secs / 86400;
    let h = secs % 86400 / 3600;
    let m = secs % 3600 / 60;
    let s = secs % 60;
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// RFC 3339 text of seconds since the epoch.
pub fn rfc3339(secs: i64) -> String {
    humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_format_agree() {
        let want = 1_771_581_600; // 2026-02-20T10:00:00Z
        for text in [
            "1771581600",
            "1771581600.75",
            "1771581600000",
            "2026-02-20 10:00:00",
            "2026-02-20T10:00:00",
            "2026-02-20T10:00:00Z",
            "2026-02-20T10:00:00.123456",
            "2026-02-20T18:00:00+08:00",
            "2026-02-20T05:00:00-0500",
            "2026-02-20 10:00",
        ] {
            assert_eq!(parse_timestamp(text, NaiveTimes::Utc), Some(want), "{text}");
        }
        assert_eq!(
            parse_timestamp("2026-02-20", NaiveTimes::Utc),
            Some(want - 36000)
        );
        assert_eq!(from_number(1_771_581_600_000.0), Some(want));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-20X10:00",
            "2026-02-20T25:00:00",
            "20260220",
        ] {
            if bad == "20260220" {
                // All digits: read as seconds, a valid if odd timestamp.
                assert!(parse_timestamp(bad, NaiveTimes::Utc).is_some());
                continue;
            }
            assert_eq!(parse_timestamp(bad, NaiveTimes::Utc), None, "{bad}");
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(human_secs(2 * 86400 + 3600), "2d 1h");
    }
}
