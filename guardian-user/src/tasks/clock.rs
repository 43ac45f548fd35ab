//! Timestamps as task DBs write them — unix seconds (or milliseconds), RFC 3339 / ISO-8601 and
//! SQLite `datetime()` text, with or without a UTC offset — read with `jiff`. Every function is
//! total: a value that is not a timestamp Guardian can place between the years 1970 and 9999
//! reads as `None`, never as a panic or a wrapped number.

use crate::config::NaiveTimes;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    Timestamp::now().as_second()
}

/// Numbers at or above this are milliseconds (in seconds it would be the year 5138).
const MILLIS_FROM: i64 = 100_000_000_000;

/// Longest timestamp text looked at; longer text is not a timestamp.
const MAX_TEXT: usize = 64;

/// Seconds since the epoch when they name an instant Guardian can show (1970 to 9999).
fn in_range(secs: i64) -> Option<i64> {
    (secs >= 0 && Timestamp::from_second(secs).is_ok()).then_some(secs)
}

/// An integer timestamp: unix seconds, or milliseconds when it is too large for seconds.
pub fn from_integer(value: i64) -> Option<i64> {
    let secs = if value >= MILLIS_FROM {
        value.div_euclid(1000)
    } else {
        value
    };
    in_range(secs)
}

/// A real timestamp: unix seconds, or milliseconds when it is too large for seconds. NaN,
/// infinities and values outside the representable range read as `None`.
pub fn from_number(value: f64) -> Option<i64> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let secs = if value >= MILLIS_FROM as f64 {
        value / 1000.0
    } else {
        value
    }
    .floor();
    // Compared as floats first: only a value well inside i64 is converted.
    if secs > Timestamp::MAX.as_second() as f64 {
        return None;
    }
    in_range(secs as i64)
}

/// Parses `1771581600`, `1771581600000`, `2026-02-20 10:00:00`, `2026-02-20T10:00:00.123Z`,
/// `2026-02-20T18:00:00+08:00`, `2026-02-20 10:00:00 UTC` or `2026-02-20`. Text without an
/// offset is read as `naive` says.
pub fn parse_timestamp(text: &str, naive: NaiveTimes) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_TEXT {
        return None;
    }
    if text.bytes().all(|c| c.is_ascii_digit()) {
        return from_integer(text.parse().ok()?);
    }
    if text.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return from_number(text.parse().ok()?);
    }
    // `… UTC` (as some tools print it) is an offset of zero.
    let upper_utc = text.len() >= 3
        && text
            .get(text.len() - 3..)
            .is_some_and(|t| t.eq_ignore_ascii_case("utc"));
    if upper_utc {
        let base = text.get(..text.len() - 3)?.trim_end();
        return parse_timestamp(&format!("{base}Z"), naive);
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return in_range(ts.as_second());
    }
    let civil = match text.parse::<DateTime>() {
        Ok(dt) => dt,
        Err(_) => text
            .parse::<Date>()
            .ok()?
            .to_datetime(jiff::civil::Time::midnight()),
    };
    let zone = match naive {
        NaiveTimes::Utc => TimeZone::UTC,
        NaiveTimes::Local => TimeZone::try_system().unwrap_or(TimeZone::UTC),
    };
    in_range(zone.to_timestamp(civil).ok()?.as_second())
}

/// `3h 12m`-style rendering of a number of seconds, for messages (negative as `0s`).
pub fn human_secs(secs: i64) -> String {
    let secs = secs.max(0).unsigned_abs();
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

/// RFC 3339 text of seconds since the epoch (`2026-02-20T10:00:00Z`); a value no calendar
/// shows (beyond the year 9999) is written as a plain count of seconds.
pub fn rfc3339(secs: i64) -> String {
    match Timestamp::from_second(secs) {
        Ok(ts) => ts.to_string(),
        Err(_) => format!("{secs} s after the epoch (beyond the calendar)"),
    }
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
            " 1771581600999 ",
            "2026-02-20 10:00:00",
            "2026-02-20T10:00:00",
            "2026-02-20t10:00:00",
            "2026-02-20T10:00:00Z",
            "2026-02-20 10:00:00Z",
            "2026-02-20 10:00:00 UTC",
            "2026-02-20T10:00:00.123456",
            "2026-02-20T18:00:00+08:00",
            "2026-02-20T05:00:00-0500",
            "2026-02-20T05:00:00-05",
            "2026-02-20 10:00",
        ] {
            assert_eq!(parse_timestamp(text, NaiveTimes::Utc), Some(want), "{text}");
        }
        assert_eq!(
            parse_timestamp("2026-02-20", NaiveTimes::Utc),
            Some(want - 36000)
        );
        assert_eq!(from_number(1_771_581_600_000.0), Some(want));
        assert_eq!(from_integer(1_771_581_600_000), Some(want));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-20X10:00",
            "2026-02-20T25:00:00",
            "-5",
            "1.2.3",
            "10000-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_timestamp(bad, NaiveTimes::Utc), None, "{bad}");
        }
    }

    #[test]
    fn huge_and_odd_numbers_read_as_unreadable_not_as_a_panic() {
        // The case that crashed `run`, `run --once` and `sessions`: started_at ≥ ~1e15.
        for n in [
            1e15,
            1e16,
            1e300,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
            -1.0,
            -0.0,
        ] {
            let got = from_number(n);
            assert!(got.is_none() || got == Some(0), "{n}: {got:?}");
        }
        for n in [
            1_000_000_000_000_000,
            i64::MAX,
            i64::MIN,
            -1,
            253_402_300_800_000,
        ] {
            assert_eq!(from_integer(n), None, "{n}");
        }
        assert_eq!(
            parse_timestamp("1000000000000000", NaiveTimes::Utc),
            None,
            "1e15 as text"
        );
        assert_eq!(
            parse_timestamp(&"9".repeat(400), NaiveTimes::Utc),
            None,
            "a long run of digits"
        );
        // The largest value still read: jiff's last instant (late on 9999-12-30), in ms.
        let max = Timestamp::MAX.as_second();
        assert_eq!(from_integer(max * 1000), Some(max));
        assert_eq!(from_integer((max + 1) * 1000), None);
    }

    #[test]
    fn naive_text_reads_in_the_configured_zone() {
        // Whatever the machine's zone, local and UTC readings differ by its offset then.
        let utc = parse_timestamp("2026-02-20 10:00:00", NaiveTimes::Utc).unwrap();
        let local = parse_timestamp("2026-02-20 10:00:00", NaiveTimes::Local).unwrap();
        let zone = TimeZone::try_system().unwrap_or(TimeZone::UTC);
        let offset = zone
            .to_offset(Timestamp::from_second(utc).unwrap())
            .seconds();
        assert_eq!(local, utc - i64::from(offset));
        // An explicit offset wins over `naive`.
        assert_eq!(
            parse_timestamp("2026-02-20T10:00:00Z", NaiveTimes::Local),
            Some(utc)
        );
    }

    #[test]
    fn every_i64_renders() {
        for secs in [i64::MIN, -1, 0, 1_771_581_600, 253_402_300_800, i64::MAX] {
            assert!(!rfc3339(secs).is_empty());
            assert!(!human_secs(secs).is_empty());
        }
        assert_eq!(rfc3339(1_771_581_600), "2026-02-20T10:00:00Z");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(human_secs(2 * 86400 + 3600), "2d 1h");
    }
}
