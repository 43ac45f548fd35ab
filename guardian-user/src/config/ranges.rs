//! The sane range of every duration, size and count in the config file, in one table that
//! validation checks and docs/config.md lists. A value outside its range is refused naming the
//! key: `sample_interval = "1ns"` would spin a core, `start_tolerance = "1y"` would defeat the
//! PID-reuse guard, a size past what any node holds is a typo.

use std::time::Duration;

/// The allowed span of one duration key, inclusive, with its spelling in docs/config.md.
#[derive(Clone, Copy, Debug)]
pub struct DurationRange {
    /// The dotted key (`*` for an array index).
    pub key: &'static str,
    pub min: Duration,
    pub max: Duration,
    /// How docs/config.md writes the range; both ends parse back to `min` and `max`.
    pub text: &'static str,
}

impl DurationRange {
    /// `Err` with the message when `d` is outside the range.
    pub fn check(&self, d: Duration) -> Result<(), String> {
        if d < self.min || d > self.max {
            return Err(format!(
                "{} is outside the allowed range {}",
                humantime::format_duration(d),
                self.text
            ));
        }
        Ok(())
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86400;
/// humantime's year: 365.25 days.
const YEAR: u64 = 31_557_600;

macro_rules! range {
    ($name:ident, $key:literal, $min:expr, $max:expr, $text:literal) => {
        pub const $name: DurationRange = DurationRange {
            key: $key,
            min: $min,
            max: $max,
            text: $text,
        };
    };
}

range!(
    POLL_INTERVAL,
    "daemon.poll_interval",
    ms(100),
    secs(HOUR),
    "100ms to 1h"
);
range!(
    SAMPLE_INTERVAL,
    "daemon.sample_interval",
    ms(10),
    secs(MINUTE),
    "10ms to 1m"
);
range!(
    ACTIVE_WITHIN,
    "daemon.active_within",
    secs(1),
    secs(7 * DAY),
    "1s to 7days"
);
range!(
    LEAD_TIME,
    "forecast.lead_time",
    secs(1),
    secs(DAY),
    "1s to 24h"
);
range!(
    LEAD_MARGIN,
    "forecast.lead_margin",
    secs(0),
    secs(HOUR),
    "0s to 1h"
);
range!(
    OLDER_THAN,
    "rules.*.older_than",
    secs(0),
    secs(10 * YEAR),
    "0s to 10years"
);
range!(
    REBUILD,
    "artifacts.*.rebuild",
    secs(0),
    secs(7 * DAY),
    "0s to 7days"
);
range!(
    REBUILD_PER_GIB,
    "artifacts.*.rebuild_per_gib",
    secs(0),
    secs(DAY),
    "0s to 24h"
);
range!(
    BUSY_TIMEOUT,
    "tasks.busy_timeout",
    ms(10),
    secs(MINUTE),
    "10ms to 1m"
);
// Seconds are allowed: idleness comes from ctime, which cannot be back-dated, so only time
// makes a dir idle — and tests of the sweep cannot wait hours.
range!(MAX_AGE, "tasks.max_age", secs(1), secs(YEAR), "1s to 1year");
range!(
    INACTIVE_AFTER,
    "tasks.inactive_after",
    secs(1),
    secs(YEAR),
    "1s to 1year"
);
range!(
    KEEP_FAILED_FOR,
    "tasks.keep_failed_for",
    secs(0),
    secs(YEAR),
    "0s to 1year"
);
range!(
    SWEEP_INTERVAL,
    "tasks.sweep_interval",
    secs(10),
    secs(DAY),
    "10s to 24h"
);
range!(
    GHOST_AFTER,
    "tasks.ghosts.ghost_after",
    secs(1),
    secs(30 * DAY),
    "1s to 30days"
);
range!(
    GHOST_INTERVAL,
    "tasks.ghosts.interval",
    secs(10),
    secs(DAY),
    "10s to 24h"
);
range!(
    GRACE,
    "tasks.ghosts.grace",
    ms(100),
    secs(5 * MINUTE),
    "100ms to 5m"
);
range!(
    START_TOLERANCE,
    "tasks.ghosts.start_tolerance",
    secs(1),
    secs(10 * MINUTE),
    "1s to 10m"
);

range!(
    GIT_MAINTENANCE_TIMEOUT,
    "git.maintenance_timeout",
    secs(10),
    secs(HOUR),
    "10s to 1h"
);
// Temp packs a running git writes are protected by its open files and cwd; the age is a
// second guard, short enough for tests.
range!(
    GIT_STALE_AFTER,
    "git.stale_after",
    secs(1),
    secs(30 * DAY),
    "1s to 30days"
);

/// Every duration range, for docs/config.md and its test.
pub const DURATIONS: &[DurationRange] = &[
    POLL_INTERVAL,
    SAMPLE_INTERVAL,
    ACTIVE_WITHIN,
    LEAD_TIME,
    LEAD_MARGIN,
    OLDER_THAN,
    REBUILD,
    REBUILD_PER_GIB,
    BUSY_TIMEOUT,
    MAX_AGE,
    INACTIVE_AFTER,
    KEEP_FAILED_FOR,
    SWEEP_INTERVAL,
    GHOST_AFTER,
    GHOST_INTERVAL,
    GRACE,
    START_TOLERANCE,
    GIT_MAINTENANCE_TIMEOUT,
    GIT_STALE_AFTER,
];

/// The largest byte size any key accepts: 1 PiB, far above any node's disk, far below where
/// sums of sizes could overflow.
pub const MAX_BYTES: u64 = 1 << 50;
/// How docs/config.md writes the size range.
pub const BYTES_TEXT: &str = "0 B to 1 PiB";
/// The largest inode count a threshold accepts.
pub const MAX_INODES: u64 = 1_000_000_000_000;
/// How docs/config.md writes the inode-count range.
pub const INODES_TEXT: &str = "0 to 10¹²";
/// The most further attempts `tasks.retries` allows.
pub const MAX_RETRIES: u32 = 10;

/// `Err` with the message when `bytes` is above [`MAX_BYTES`].
pub fn check_bytes(bytes: u64) -> Result<(), String> {
    if bytes > MAX_BYTES {
        return Err(format!(
            "{bytes} bytes is outside the allowed range {BYTES_TEXT}"
        ));
    }
    Ok(())
}

/// `Err` with the message when `count` is above [`MAX_INODES`].
pub fn check_inodes(count: u64) -> Result<(), String> {
    if count > MAX_INODES {
        return Err(format!(
            "{count} inodes is outside the allowed range {INODES_TEXT}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_range_text_spells_its_bounds() {
        for r in DURATIONS {
            let (lo, hi) = r.text.split_once(" to ").unwrap();
            assert_eq!(humantime::parse_duration(lo).unwrap(), r.min, "{}", r.key);
            assert_eq!(humantime::parse_duration(hi).unwrap(), r.max, "{}", r.key);
            assert!(r.min <= r.max, "{}", r.key);
        }
    }

    #[test]
    fn docs_list_every_range_in_the_row_of_its_key() {
        let docs = include_str!("../../../docs/config.md");
        // The table row(s) documenting the key's last part.
        let row = |key: &str| {
            let field = key.rsplit('.').next().unwrap();
            docs.lines()
                .filter(|l| l.starts_with(&format!("| `{field}` |")))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for r in DURATIONS {
            assert!(
                row(r.key).contains(r.text),
                "docs/config.md does not list {} for {}",
                r.text,
                r.key
            );
        }
        for key in [
            "min_free",
            "keep_failed_max",
            "total_usage_warning",
            "floor_free",
        ] {
            assert!(row(key).contains(BYTES_TEXT), "docs: {key}");
        }
        assert!(row("inodes_cleanup_free").contains(INODES_TEXT));
    }
}
