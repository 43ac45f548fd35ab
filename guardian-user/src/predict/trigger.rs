//! The preemptive trigger rule: a forecast starts phase 1 when its P90 time to a threshold is
//! shorter than the lead time and free space is already under a floor.

use super::Forecast;
use serde::{Deserialize, Serialize};

/// The preemptive rule: a forecast triggers a cleanup when the P90 time to a threshold not yet
/// crossed is shorter than `lead_time_s` **and** free space is under `floor_free` (growth far
/// from every threshold triggers nothing; node_exporter's rule uses 40 % of the size).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerRule {
    /// Time Guardian needs to free space before the threshold, seconds.
    pub lead_time_s: f64,
    /// Free bytes under which forecasts may trigger.
    pub floor_free: u64,
}

/// Why a forecast triggered (for the audit log and `guardian status`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub threshold: u64,
    pub p50_s: Option<f64>,
    pub p90_s: f64,
    pub rate_bps: f64,
    pub free_bytes: u64,
    pub floor_free: u64,
    pub lead_time_s: f64,
    pub at: f64,
    /// The learned transient pattern, when one is locked (it did not hold for this crossing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<super::Pattern>,
}

impl TriggerRule {
    /// The threshold the forecast says will be crossed soonest (P90) within the lead time,
    /// when free space is under the floor; `None` otherwise, and for thresholds already
    /// crossed (the reactive path's business).
    pub fn check(&self, forecast: &Forecast) -> Option<Trigger> {
        if forecast.free_bytes >= self.floor_free {
            return None;
        }
        forecast
            .eta
            .iter()
            .filter(|e| e.threshold < forecast.free_bytes)
            // A crossing the learned transient pattern undoes (its teeth's peaks stay above
            // the threshold) is no reason to clean.
            .filter(|e| {
                ![&forecast.pattern, &forecast.outer_pattern]
                    .into_iter()
                    .flatten()
                    .any(|p| {
                        p.holds(
                            forecast.free_bytes as f64,
                            e.threshold as f64,
                            self.lead_time_s,
                        )
                    })
            })
            .filter_map(|e| e.p90_s.map(|p90| (e, p90)))
            .filter(|(_, p90)| *p90 < self.lead_time_s)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(e, p90)| Trigger {
                threshold: e.threshold,
                p50_s: e.p50_s,
                p90_s: p90,
                rate_bps: e.rate_bps,
                free_bytes: forecast.free_bytes,
                floor_free: self.floor_free,
                lead_time_s: self.lead_time_s,
                at: forecast.at,
                pattern: forecast
                    .pattern
                    .clone()
                    .or_else(|| forecast.outer_pattern.clone()),
            })
    }
}

impl Trigger {
    /// One line for the audit log: which forecast triggered.
    pub fn describe(&self) -> String {
        let p50 = self
            .p50_s
            .map(|s| format!("{s:.0}s"))
            .unwrap_or_else(|| "none".into());
        let pattern = self.pattern.as_ref().map_or(String::new(), |p| {
            format!(
                " (beyond the transient pattern: {} teeth every {:.0}s, P90 {:.0} B, largest \
                 {:.0} B rising {:.0}s, drift {:.0} B/s; now {:.0} B over {:.0}s)",
                p.teeth,
                p.period_s,
                p.amplitude_p90,
                p.amplitude_max,
                p.rise_max_s,
                p.drift_bps,
                p.excursion,
                p.excursion_s
            )
        });
        format!(
            "forecast: free {} B under floor {} B, P90 {:.0}s (P50 {p50}) to {} B at {:.0} B/s, \
             lead time {:.0}s{pattern}",
            self.free_bytes,
            self.floor_free,
            self.p90_s,
            self.threshold,
            self.rate_bps,
            self.lead_time_s
        )
    }
}
