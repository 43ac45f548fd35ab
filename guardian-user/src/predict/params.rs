//! The tuning of a [`Forecaster`](super::Forecaster) and its measured defaults.

use serde::{Deserialize, Serialize};

/// Tuning of a [`Forecaster`](super::Forecaster); the defaults are the ones measured in docs/forecast.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Params {
    /// Time constants of the bank of scales, seconds (any order, at most 16). The backtest
    /// horizons are four times each.
    pub scales_s: Vec<f64>,
    /// A scale forecasts at most this many times its window ahead.
    pub horizon_ratio: f64,
    /// Normal quantile of the P90 bound (1.2816: one-sided 90 %).
    pub z90: f64,
    /// A faster scale takes over when its forecast departs from the chosen one's by more than
    /// this many times the chosen one's recent error (a change of regime).
    pub change_k: f64,
    /// An increment departing from the expected growth by more than `jump_k` robust scales…
    pub jump_k: f64,
    /// …plus this many bytes is an event (burst or drop).
    pub jump_min_bytes: f64,
    /// Weight of each sample in the robust scale of the increments.
    pub jump_scale_weight: f64,
    /// Samples before events are detected at all.
    pub warmup_samples: u64,
    /// Samples before any time to a threshold is given.
    pub min_samples: u64,
    /// Use backtesting to pick the scale and the P90 spread (else: reach rule and standard
    /// errors only).
    pub backtest: bool,
    /// Take regular external drops (cron wipes, log rotation) into account.
    pub cycles: bool,
    /// First passage: the threshold is taken as crossed when the trend comes within this many
    /// standard deviations of the noise around it (temporary files cross before the trend
    /// does), for P50 and for P90.
    pub noise_p50: f64,
    pub noise_p90: f64,
    /// Typical bursts (the mean of the kept ones of the window but the largest) the threshold
    /// is assumed to be crossed by, for P50. 0 by default: `burst_passage` accounts for the
    /// burst a crossing comes with.
    pub burst_p50: f64,
    /// Times to a threshold beyond this are reported as none (no crossing in sight), seconds.
    pub max_eta_s: f64,
    /// The burst rate of a forecast `h` ahead is measured over the last `burst_window × h`
    /// (at least the longest window of the bank, at most everything watched).
    pub burst_window: f64,
    /// First passage by a burst: a burst as large as the margin left crosses at once, bursts
    /// of each size of that window landing at the rate they did (not with a regular cycle,
    /// whose copies the cycle foresees).
    pub burst_passage: bool,
    /// Learn writes that undo themselves (teeth: a rise a later drop takes back) and let the
    /// trigger leave alone a crossing the learned pattern undoes (`transient.rs`).
    pub transients: bool,
    /// Growth whose rate grows: when three consecutive scales of the bank show the same
    /// significant acceleration, the trend goes on from the lag-corrected rate now, growing as
    /// it has (`accel.rs`), except under a learned transient pattern.
    pub accelerate: bool,
    /// A rise over this many consecutive samples whose rates are within a factor of two of
    /// their median is a new writer, not a burst: taken as growth from its first sample on
    /// (0: off; the spread then widens over tens of samples until the rise is growth).
    pub fill_samples: u64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            // 8 s … 9.1 h by factors of 4: windows of ~28 s … ~31 h, reach up to ~5 days.
            scales_s: (0..7).map(|k| 8.0 * 4f64.powi(k)).collect(),
            horizon_ratio: 4.0,
            z90: 1.2816,
            change_k: 3.0,
            jump_k: 6.0,
            jump_min_bytes: (1u64 << 20) as f64,
            jump_scale_weight: 0.05,
            warmup_samples: 8,
            min_samples: 10,
            backtest: true,
            cycles: true,
            noise_p50: 1.0,
            noise_p90: 2.0,
            burst_p50: 0.0,
            max_eta_s: 30.0 * 86_400.0,
            burst_window: 2.0,
            burst_passage: true,
            transients: true,
            accelerate: true,
            fill_samples: 4,
        }
    }
}
