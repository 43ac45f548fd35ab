//! How well each scale has forecast lately, per horizon (backtesting): every so often the
//! trends of all scales are noted; once a horizon `h` has passed, the growth each one predicted
//! (`trend × elapsed`) is compared with the growth of the series they are fed (events
//! excluded: bursts have their own rate and spread), and the squared error goes into a running
//! mean per (horizon, scale). The forecast then takes, for the horizon at
//! hand, the scale with the smallest error, and its error as the spread of the P90.
//!
//! Nothing is assumed about the noise (correlated or not) or changes of rate: they show in the
//! errors. The price is that a change of regime is seen in the errors only once the
//! horizon has passed; the bank's reach rule covers that time (see `mod.rs`).

use std::collections::VecDeque;

/// Snapshots per horizon (spacing h / SNAPS).
const SNAPS: f64 = 8.0;
/// Weight of each new error in the running means.
const WEIGHT: f64 = 1.0 / 16.0;
/// Evaluations before a horizon's errors are used.
pub const MIN_EVALS: u32 = 8;
/// A horizon's errors choose the scale for forecasts up to this factor longer or shorter.
const NEAR: f64 = 16.0;

#[derive(Clone, Debug)]
struct Snap {
    t: f64,
    total: f64,
    rates: Vec<f64>,
}

#[derive(Clone, Debug)]
struct Lag {
    h: f64,
    ring: VecDeque<Snap>,
    /// Running mean squared error of the predicted growth, per scale, bytes².
    err2: Vec<f64>,
    evals: u32,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Skill {
    lags: Vec<Lag>,
}

impl Skill {
    pub fn new(horizons: &[f64], scales: usize) -> Skill {
        Skill {
            lags: horizons
                .iter()
                .map(|&h| Lag {
                    h,
                    ring: VecDeque::new(),
                    err2: vec![0.0; scales],
                    evals: 0,
                })
                .collect(),
        }
    }

    /// One sample: the cumulative growth series `total` at `t`, and the trend each scale
    /// forecasts from now (NaN for a scale without a fit).
    pub fn push(&mut self, t: f64, total: f64, rates: &[f64]) {
        for lag in &mut self.lags {
            while lag.ring.front().is_some_and(|s| t - s.t >= lag.h) {
                let s = lag.ring.pop_front().expect("front exists");
                let actual = total - s.total;
                let elapsed = t - s.t;
                let first = lag.evals == 0;
                for (e, r) in lag.err2.iter_mut().zip(&s.rates) {
                    // A scale that had no fit scores as if it predicted no growth.
                    let predicted = if r.is_finite() { r * elapsed } else { 0.0 };
                    let sq = (actual - predicted).powi(2);
                    *e = if first {
                        sq
                    } else {
                        (1.0 - WEIGHT) * *e + WEIGHT * sq
                    };
                }
                lag.evals = lag.evals.saturating_add(1);
            }
            if lag.ring.back().is_none_or(|s| t - s.t >= lag.h / SNAPS) {
                lag.ring.push_back(Snap {
                    t,
                    total,
                    rates: rates.to_vec(),
                });
            }
        }
    }

    /// The horizons with enough evaluations: (h, errors per scale).
    pub fn ready(&self) -> impl Iterator<Item = (f64, &[f64])> {
        self.lags
            .iter()
            .filter(|l| l.evals >= MIN_EVALS)
            .map(|l| (l.h, l.err2.as_slice()))
    }

    /// The root mean squared error of scale `i` at every ready horizon: (h, rmse), by h;
    /// empty until two horizons are ready (one cannot tell how the error grows).
    pub fn curve(&self, i: usize) -> Vec<(f64, f64)> {
        let curve: Vec<(f64, f64)> = self
            .ready()
            .map(|(h, err)| (h, err[i].max(0.0).sqrt()))
            .collect();
        if curve.len() < 2 {
            return Vec::new();
        }
        curve
    }

    /// The ready horizon nearest to `e` (log scale), if within a factor of `NEAR`: its errors
    /// per scale.
    pub fn nearest(&self, e: f64) -> Option<&[f64]> {
        self.ready()
            .map(|(h, err)| ((h / e).ln().abs(), err))
            .filter(|(d, _)| *d <= NEAR.ln())
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, err)| err)
    }
}

/// The error of a `curve` at horizon `e`: interpolated log–log between its points, held below
/// the first, extrapolated beyond the last with the last segment's log–log slope (kept
/// between 0 and 1).
pub fn rmse_at(curve: &[(f64, f64)], e: f64) -> Option<f64> {
    let (first, last) = (curve.first()?, curve.last()?);
    if e <= first.0 {
        return Some(first.1);
    }
    if e >= last.0 {
        // Beyond the longest horizon, with the log–log slope of the last two, between 0
        // (noise: the error stays) and 1 (a rate error grows with the horizon).
        let slope = match curve.len() {
            n if n >= 2 && curve[n - 2].1 > 0.0 && last.1 > 0.0 => {
                ((last.1 / curve[n - 2].1).ln() / (last.0 / curve[n - 2].0).ln()).clamp(0.0, 1.0)
            }
            _ => 1.0,
        };
        return Some(last.1 * (e / last.0).powf(slope));
    }
    let k = curve.iter().position(|p| p.0 >= e)?;
    let (a, b) = (curve[k - 1], curve[k]);
    if a.1 <= 0.0 || b.1 <= 0.0 {
        return Some(a.1 + (b.1 - a.1) * (e - a.0) / (b.0 - a.0));
    }
    let w = (e / a.0).ln() / (b.0 / a.0).ln();
    Some(a.1 * (b.1 / a.1).powf(w))
}
