//! The `[forecast]` table: whether the growth forecast may start a phase-1 cleanup before a
//! threshold is crossed, how much lead time that cleanup needs, and the free-space floor above
//! which growth alone never triggers anything. Parsing and validation only.

use super::units::{FreeAmount, FreeBytes, HumanDuration};
use super::{ranges, Thresholds};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// The `[forecast]` settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastConfig {
    /// Forecasts may start a preemptive phase 1 (they are computed and shown either way).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// How long before the forecast crossing phase 1 must start: `auto` or a fixed duration.
    #[serde(default)]
    pub lead_time: LeadTime,
    /// Added to the automatic lead time.
    #[serde(default = "default_lead_margin")]
    pub lead_margin: HumanDuration,
    /// Forecasts trigger only while free space is below this.
    #[serde(default = "default_floor_free")]
    pub floor_free: FreeBytes,
}

fn default_enabled() -> bool {
    true
}

fn default_lead_margin() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_floor_free() -> FreeBytes {
    FreeBytes(FreeAmount::Percent(40.0))
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            enabled: default_enabled(),
            lead_time: LeadTime::Auto,
            lead_margin: default_lead_margin(),
            floor_free: default_floor_free(),
        }
    }
}

impl ForecastConfig {
    /// Checks what the types cannot; returns the key path of the offending value.
    pub(super) fn validate(&self, thresholds: &Thresholds) -> Result<(), (Vec<String>, String)> {
        let key = |k: &str| vec!["forecast".to_string(), k.to_string()];
        if let LeadTime::Fixed(d) = self.lead_time {
            ranges::LEAD_TIME.check(d.0).map_err(|m| {
                (
                    key("lead_time"),
                    format!("{m} (use `enabled = false` to switch preemptive cleanup off)"),
                )
            })?;
        }
        ranges::LEAD_MARGIN
            .check(self.lead_margin.0)
            .map_err(|m| (key("lead_margin"), m))?;
        if let FreeAmount::Absolute(bytes) = self.floor_free.0 {
            ranges::check_bytes(bytes).map_err(|m| (key("floor_free"), m))?;
        }
        if !floor_above_cleanup(self.floor_free.0, thresholds.cleanup_free.0) {
            return Err((
                key("floor_free"),
                format!(
                    "{} must be above thresholds.cleanup_free ({}): below it no forecast could ever trigger",
                    self.floor_free.0, thresholds.cleanup_free.0
                ),
            ));
        }
        Ok(())
    }
}

/// True when `floor` is above `cleanup`, or when they use different units (then only the
/// filesystem's size can tell).
fn floor_above_cleanup(floor: FreeAmount, cleanup: FreeAmount) -> bool {
    match (floor, cleanup) {
        (FreeAmount::Percent(f), FreeAmount::Percent(c)) => f > c,
        (FreeAmount::Absolute(f), FreeAmount::Absolute(c)) => f > c,
        _ => true,
    }
}

/// `lead_time`: `"auto"` (measured) or a fixed duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LeadTime {
    /// Sample interval + scan and plan time + deletion time of phase 1 + `lead_margin`.
    #[default]
    Auto,
    Fixed(HumanDuration),
}

impl fmt::Display for LeadTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeadTime::Auto => f.write_str("auto"),
            LeadTime::Fixed(d) => d.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for LeadTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected \"auto\" or a duration string such as \"30s\"")
        })?;
        if text.trim() == "auto" {
            return Ok(LeadTime::Auto);
        }
        HumanDuration::parse(&text)
            .map(LeadTime::Fixed)
            .map_err(|e| serde::de::Error::custom(format!("{e}; or \"auto\"")))
    }
}

impl Serialize for LeadTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
