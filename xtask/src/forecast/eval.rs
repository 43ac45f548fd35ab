//! Scoring one method on one trace, and summing per family.

use super::methods::{Method, Setup};
use super::traces::{Trace, HOUR};

/// ETA error is measured at the samples whose true time to the crossing is at most this
/// (traces sampled every minute; `Setup::eta_window`).
pub const ETA_WINDOW: f64 = 12.0 * HOUR;
/// An alarm is false when no crossing follows within this (node_exporter's horizon; traces
/// sampled every minute, `Setup::false_alarm_horizon`).
pub const FALSE_ALARM_HORIZON: f64 = 24.0 * HOUR;

/// The score of one method on one trace.
#[derive(Clone, Debug, Default)]
pub struct Score {
    /// Sum of the absolute percentage errors (each capped at 1) and their count.
    pub ape_sum: f64,
    pub ape_n: u64,
    /// Points where P50 ≤ truth (should be about half) and P90 ≤ truth (about 90 %).
    pub p50_early: u64,
    pub p90_early: u64,
    /// Alarm episodes (rising edges) not followed by a crossing within the horizon.
    pub false_alarms: u64,
    /// When they were raised, seconds from the start.
    pub false_alarm_at: Vec<f64>,
    pub crossed: bool,
    /// A crossing without an alarm raised at least the lead time before it.
    pub missed: bool,
    /// Crossing time − first alarm within the horizon before it.
    pub warning: Option<f64>,
}

/// Runs `method` over `trace` up to its first crossing of `setup.threshold`.
pub fn score(trace: &Trace, setup: Setup, method: &mut dyn Method) -> Score {
    let crossing = trace
        .free
        .iter()
        .position(|&f| f < setup.threshold)
        .map(|k| trace.t[k]);
    let end = crossing.unwrap_or(f64::INFINITY);
    let mut s = Score {
        crossed: crossing.is_some(),
        ..Score::default()
    };
    let mut raised = false;
    let mut warned_in_time = false;
    for (k, &t) in trace.t.iter().enumerate() {
        if t >= end {
            break;
        }
        let out = method.step(t, trace.free[k]);
        let truth = end - t;
        if truth <= setup.eta_window {
            let ape = out
                .eta50
                .map(|e| ((e - truth).abs() / truth).min(1.0))
                .unwrap_or(1.0);
            s.ape_sum += ape;
            s.ape_n += 1;
            s.p50_early += out.eta50.is_some_and(|e| e <= truth) as u64;
            s.p90_early += out.eta90.is_some_and(|e| e <= truth) as u64;
        }
        if out.alarm && !raised && truth > setup.false_alarm_horizon {
            s.false_alarms += 1;
            s.false_alarm_at.push(t);
        }
        if out.alarm && truth <= setup.false_alarm_horizon {
            s.warning.get_or_insert(truth);
            if truth >= setup.lead_time {
                warned_in_time = true;
            }
        }
        raised = out.alarm;
    }
    s.missed = s.crossed && !warned_in_time;
    s
}

/// Scores of one method summed over a family.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub instances: u64,
    pub crossings: u64,
    pub ape_sum: f64,
    pub ape_n: u64,
    pub p50_early: u64,
    pub p90_early: u64,
    pub false_alarms: u64,
    /// Instances with at least one false alarm.
    pub falsely_alarmed: u64,
    pub missed: u64,
    pub warnings: Vec<f64>,
}

impl Summary {
    pub fn add(&mut self, s: &Score) {
        self.instances += 1;
        self.crossings += s.crossed as u64;
        self.ape_sum += s.ape_sum;
        self.ape_n += s.ape_n;
        self.p50_early += s.p50_early;
        self.p90_early += s.p90_early;
        self.false_alarms += s.false_alarms;
        self.falsely_alarmed += (s.false_alarms > 0) as u64;
        self.missed += s.missed as u64;
        self.warnings.extend(s.warning);
    }

    pub fn merge(&mut self, o: &Summary) {
        self.instances += o.instances;
        self.crossings += o.crossings;
        self.ape_sum += o.ape_sum;
        self.ape_n += o.ape_n;
        self.p50_early += o.p50_early;
        self.p90_early += o.p90_early;
        self.false_alarms += o.false_alarms;
        self.falsely_alarmed += o.falsely_alarmed;
        self.missed += o.missed;
        self.warnings.extend(&o.warnings);
    }

    /// Mean absolute percentage error, percent.
    pub fn mape(&self) -> Option<f64> {
        (self.ape_n > 0).then(|| 100.0 * self.ape_sum / self.ape_n as f64)
    }

    pub fn share(&self, n: u64) -> Option<f64> {
        (self.ape_n > 0).then(|| 100.0 * n as f64 / self.ape_n as f64)
    }

    pub fn median_warning(&self) -> Option<f64> {
        let mut w = self.warnings.clone();
        if w.is_empty() {
            return None;
        }
        w.sort_by(f64::total_cmp);
        Some(w[w.len() / 2])
    }
}
