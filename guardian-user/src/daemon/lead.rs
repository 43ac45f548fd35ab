//! The lead time a preemptive phase 1 needs: the sample interval, the survey and plan, the
//! deletions at the executor's measured speed, and a margin — or a fixed `lead_time`. Pure:
//! the daemon passes the measurements in.

use crate::config::{ForecastConfig, LeadTime};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Scan and plan time assumed until a survey has been timed, seconds.
const DEFAULT_SCAN_S: f64 = 1.0;
/// Deletion throughput assumed until the executor has deleted something, bytes per second
/// (a slow disk; the executor measured ~400 MB/s on the benchmark tree).
const DEFAULT_DELETE_BPS: f64 = 50.0 * 1024.0 * 1024.0;
/// Weight of the newest survey in the scan time.
const SCAN_WEIGHT: f64 = 0.3;
/// Each new deletion keeps this much of the past measurements.
const DELETE_MEMORY: f64 = 0.9;
/// Running estimates of how long a preemptive phase 1 takes: the survey and plan, and the
/// deletions (bytes and entries per second of the executor's real removals).
#[derive(Clone, Debug)]
pub struct LeadEstimator {
    fixed_s: Option<f64>,
    margin_s: f64,
    sample_s: f64,
    scan_s: Option<f64>,
    /// Decayed sums of what the executor removed and how long it took.
    deleted_bytes: f64,
    deleted_entries: f64,
    deleting_s: f64,
}

impl LeadEstimator {
    pub fn new(config: &ForecastConfig, sample_interval: Duration) -> LeadEstimator {
        LeadEstimator {
            fixed_s: match config.lead_time {
                LeadTime::Auto => None,
                LeadTime::Fixed(d) => Some(d.0.as_secs_f64()),
            },
            margin_s: config.lead_margin.0.as_secs_f64(),
            sample_s: sample_interval.as_secs_f64(),
            scan_s: None,
            deleted_bytes: 0.0,
            deleted_entries: 0.0,
            deleting_s: 0.0,
        }
    }

    /// A survey and plan took `seconds`.
    pub fn observe_scan(&mut self, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        self.scan_s = Some(match self.scan_s {
            Some(s) => (1.0 - SCAN_WEIGHT) * s + SCAN_WEIGHT * seconds,
            None => seconds,
        });
    }

    /// The executor removed `bytes` in `entries` entries in `seconds`.
    pub fn observe_deletion(&mut self, bytes: u64, entries: u64, seconds: f64) {
        if !seconds.is_finite() || seconds <= 0.0 || (bytes == 0 && entries == 0) {
            return;
        }
        self.deleted_bytes = DELETE_MEMORY * self.deleted_bytes + bytes as f64;
        self.deleted_entries = DELETE_MEMORY * self.deleted_entries + entries as f64;
        self.deleting_s = DELETE_MEMORY * self.deleting_s + seconds;
    }

    /// Measured deletion throughput, bytes per second.
    fn delete_bps(&self) -> Option<f64> {
        (self.deleting_s > 0.0 && self.deleted_bytes > 0.0)
            .then(|| self.deleted_bytes / self.deleting_s)
    }

    fn delete_entries_ps(&self) -> Option<f64> {
        (self.deleting_s > 0.0).then(|| self.deleted_entries / self.deleting_s)
    }

    /// The lead time for a phase 1 that deletes `delete_bytes`, part by part.
    pub fn lead(&self, delete_bytes: u64) -> Lead {
        let bps = self.delete_bps().unwrap_or(DEFAULT_DELETE_BPS);
        let scan_s = self.scan_s.unwrap_or(DEFAULT_SCAN_S);
        let delete_s = delete_bytes as f64 / bps;
        let auto_s = self.sample_s + scan_s + delete_s + self.margin_s;
        Lead {
            lead_time_s: self.fixed_s.unwrap_or(auto_s),
            auto: self.fixed_s.is_none(),
            sample_s: self.sample_s,
            scan_s,
            scan_measured: self.scan_s.is_some(),
            delete_bytes,
            delete_s,
            delete_bps: bps,
            delete_entries_ps: self.delete_entries_ps(),
            delete_measured: self.delete_bps().is_some(),
            margin_s: self.margin_s,
        }
    }
}

/// A lead time and what it is made of (`guardian status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    /// The lead time in use, seconds.
    pub lead_time_s: f64,
    /// False when `lead_time` is a fixed duration (the parts below are then for information).
    pub auto: bool,
    pub sample_s: f64,
    pub scan_s: f64,
    pub scan_measured: bool,
    /// What phase 1 would delete (`target_free` − `cleanup_free`), and how long that takes.
    pub delete_bytes: u64,
    pub delete_s: f64,
    pub delete_bps: f64,
    pub delete_entries_ps: Option<f64>,
    pub delete_measured: bool,
    pub margin_s: f64,
}
