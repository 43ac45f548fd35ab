//! Value types of the config file: byte sizes, durations and free-space amounts, each parsed from
//! the human spelling an operator writes ("50GiB", "1h", "20%") with an error that says what was
//! expected.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A byte count written as `"50GiB"`, `"512MB"`, `"4096"` (or a bare TOML integer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

const BYTE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("k", 1000),
    ("kb", 1000),
    ("kib", 1 << 10),
    ("m", 1000 * 1000),
    ("mb", 1000 * 1000),
    ("mib", 1 << 20),
    ("g", 1000 * 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("gib", 1 << 30),
    ("t", 1000 * 1000 * 1000 * 1000),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("tib", 1 << 40),
    ("p", 1000 * 1000 * 1000 * 1000 * 1000),
    ("pb", 1000 * 1000 * 1000 * 1000 * 1000),
    ("pib", 1 << 50),
    ("e", 1000 * 1000 * 1000 * 1000 * 1000 * 1000),
    ("eb", 1000 * 1000 * 1000 * 1000 * 1000 * 1000),
    ("eib", 1 << 60),
];

/// Digits after the decimal point a size may have: enough to place any unit's fraction on a
/// byte, few enough that the exact arithmetic below fits in a `u128`.
const MAX_FRACTION_DIGITS: usize = 18;

impl ByteSize {
    /// Parses a size exactly (integer arithmetic, a fraction rounded to the nearest byte);
    /// anything that does not fit in a `u64` is refused, never wrapped or saturated.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let not_a_size = || {
            format!(
                "`{text}` is not a size: expected a number and a unit such as 50GiB, 512MB or 4096"
            )
        };
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(not_a_size());
        }
        if fraction.len() > MAX_FRACTION_DIGITS {
            return Err(format!(
                "`{text}` has more than {MAX_FRACTION_DIGITS} digits after the point"
            ));
        }
        let unit = unit.trim().to_ascii_lowercase();
        let multiplier = if unit.is_empty() {
            1
        } else {
            BYTE_UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, m)| *m)
                .ok_or_else(|| {
                    format!("`{text}` has an unknown size unit `{unit}`: use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB, PB or PiB")
                })?
        };
        let too_big = || format!("`{text}` is too large: a size must fit in 64 bits (16 EiB)");
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_big())?
        };
        let mut bytes = whole
            .checked_mul(u128::from(multiplier))
            .ok_or_else(too_big)?;
        if !fraction.is_empty() {
            // fraction < 10^18 and multiplier < 2^64: the product fits in a u128.
            let digits: u128 = fraction.parse().map_err(|_| not_a_size())?;
            let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| not_a_size())?);
            let part = (digits * u128::from(multiplier) + scale / 2) / scale;
            bytes = bytes.checked_add(part).ok_or_else(too_big)?;
        }
        u64::try_from(bytes).map(ByteSize).map_err(|_| too_big())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_bytes(self.0))
    }
}

/// Formats a byte count with a binary unit, e.g. `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a size such as \"50GiB\" or a byte count")
        })? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A duration written as `"1s"`, `"250ms"`, `"1h"`, `"7days"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| format!("`{text}` is not a duration ({e}): expected e.g. \"1s\", \"30m\", \"72h\", \"7days\""))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a duration string such as \"1h\""))?;
        HumanDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// An amount of free space (or free inodes): a percentage of the filesystem's size, as `df`
/// shows it (available-to-users / size), or an absolute count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FreeAmount {
    Percent(f64),
    Absolute(u64),
}

impl FreeAmount {
    /// Parses `"20%"` or a byte size (`"50GiB"`); `absolute_is_count` parses a plain count
    /// (for inodes) instead of a byte size.
    pub fn parse(text: &str, absolute_is_count: bool) -> Result<Self, String> {
        let text = text.trim();
        if let Some(pct) = text.strip_suffix('%') {
            let value: f64 = pct
                .trim()
                .parse()
                .map_err(|_| format!("`{text}` is not a percentage such as \"20%\""))?;
            if !value.is_finite() {
                return Err(format!("`{text}` is not a finite percentage"));
            }
            if !(0.0..=100.0).contains(&value) {
                return Err(format!("`{text}` must be between 0% and 100%"));
            }
            return Ok(FreeAmount::Percent(value));
        }
        if absolute_is_count {
            text.parse::<u64>().map(FreeAmount::Absolute).map_err(|_| {
                format!("`{text}` is neither a percentage (\"10%\") nor an inode count")
            })
        } else {
            ByteSize::parse(text)
                .map(|b| FreeAmount::Absolute(b.0))
                .map_err(|e| format!("{e}; or give a percentage such as \"20%\""))
        }
    }

    /// Resolves the amount against a filesystem of `total` units (bytes or inodes).
    pub fn resolve(self, total: u64) -> u64 {
        match self {
            FreeAmount::Percent(p) => ((total as f64) * p / 100.0).round() as u64,
            FreeAmount::Absolute(n) => n,
        }
    }
}

impl fmt::Display for FreeAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeAmount::Percent(p) => write!(f, "{p}%"),
            FreeAmount::Absolute(n) => write!(f, "{}", human_bytes(*n)),
        }
    }
}

/// Byte amounts: `"20%"` or `"50GiB"`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FreeBytes(pub FreeAmount);

/// Inode amounts: `"10%"` or `50000`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FreeInodes(pub FreeAmount);

impl<'de> Deserialize<'de> for FreeBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a string such as \"20%\" or \"50GiB\"")
        })?;
        FreeAmount::parse(&text, false)
            .map(FreeBytes)
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for FreeInodes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a percentage such as \"10%\" or an inode count")
        })? {
            Raw::Int(n) => Ok(FreeInodes(FreeAmount::Absolute(n))),
            Raw::Text(t) => FreeAmount::parse(&t, true)
                .map(FreeInodes)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for FreeBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl Serialize for FreeInodes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("50GiB").unwrap().0, 50 << 30);
        assert_eq!(ByteSize::parse("2 MB").unwrap().0, 2_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert_eq!(ByteSize::parse("1.5KiB").unwrap().0, 1536);
        assert!(ByteSize::parse("50GX").is_err());
        assert!(ByteSize::parse("lots").is_err());
    }

    #[test]
    fn free_amounts_parse_and_resolve() {
        assert_eq!(
            FreeAmount::parse("20%", false).unwrap(),
            FreeAmount::Percent(20.0)
        );
        assert_eq!(FreeAmount::parse("20%", false).unwrap().resolve(1000), 200);
        assert_eq!(
            FreeAmount::parse("1KiB", false).unwrap(),
            FreeAmount::Absolute(1024)
        );
        assert!(FreeAmount::parse("120%", false).is_err());
        assert!(FreeAmount::parse("-1%", false).is_err());
        assert_eq!(
            FreeAmount::parse("5000", true).unwrap(),
            FreeAmount::Absolute(5000)
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            HumanDuration::parse("1h").unwrap().0,
            Duration::from_secs(3600)
        );
        assert_eq!(
            HumanDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert!(HumanDuration::parse("soon").is_err());
    }
}

/// A share of one CPU core, written `"2%"` (`daemon.poll_cpu_budget`): from 0.1% to 50%.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuShare(f64);

impl CpuShare {
    /// Smallest and largest share allowed, in percent.
    pub const MIN_PERCENT: f64 = 0.1;
    pub const MAX_PERCENT: f64 = 50.0;

    pub fn parse(text: &str) -> Result<Self, String> {
        let percent: f64 = text
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| {
                format!("`{text}` is not a share of a CPU core: expected e.g. \"2%\"")
            })?;
        if !(Self::MIN_PERCENT..=Self::MAX_PERCENT).contains(&percent) {
            return Err(format!(
                "`{text}` is outside the allowed range {}%..{}% of one core",
                Self::MIN_PERCENT,
                Self::MAX_PERCENT
            ));
        }
        Ok(CpuShare(percent / 100.0))
    }

    /// The share as a fraction of one core (0.02 for 2%).
    pub fn fraction(self) -> f64 {
        self.0
    }
}

impl Default for CpuShare {
    fn default() -> Self {
        CpuShare(0.02)
    }
}

impl fmt::Display for CpuShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0 * 100.0)
    }
}

impl<'de> Deserialize<'de> for CpuShare {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a share of a core such as \"2%\""))?;
        CpuShare::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for CpuShare {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod cpu_share_tests {
    use super::CpuShare;

    #[test]
    fn cpu_share_parses_percent_within_range() {
        assert_eq!(CpuShare::parse("2%").unwrap().fraction(), 0.02);
        assert_eq!(CpuShare::parse(" 0.5 %").unwrap().fraction(), 0.005);
        for bad in ["2", "0%", "0.01%", "51%", "-1%", "NaN%", "inf%", "x%"] {
            assert!(CpuShare::parse(bad).is_err(), "{bad}");
        }
    }
}
