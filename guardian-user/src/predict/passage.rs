//! First-passage arithmetic: when a trend (normal around its rate, with the backtest's error)
//! and bursts first carry growth past a margin, with probability `p`; normal and Student-t
//! helpers.

use super::bursts::Passage;
use super::skill;

/// The trend's crossing of a margin: growth by `t` is normal, mean `rate · t`, standard
/// deviation the backtest's error at `t` (`curve`; none: the trend crosses at `margin / rate`).
pub(super) struct Trend<'a> {
    pub(super) margin: f64,
    pub(super) rate: f64,
    /// Growth of the rate, bytes per second² (0: a straight line; `accel.rs`).
    pub(super) accel: f64,
    pub(super) curve: &'a [(f64, f64)],
}

impl Trend<'_> {
    /// Where the mean reaches the margin (infinite when it never does).
    fn median(&self) -> f64 {
        super::accel::eta(self.margin, self.rate, self.accel)
    }

    /// Probability that the trend has crossed by `t`.
    fn crossed(&self, t: f64) -> f64 {
        let mean = self.rate * t + 0.5 * self.accel * t * t;
        match skill::rmse_at(self.curve, t) {
            Some(sd) if sd > 0.0 => normal_cdf((mean - self.margin) / sd),
            _ => f64::from(mean >= self.margin),
        }
    }
}

/// The time by which the first of the trend's crossing and a burst's has happened with
/// probability `p` (independent: P = 1 − (1 − P_trend)·e^(−H)); `None` when neither happens
/// within `max`.
pub(super) fn first_of(
    trend: Option<Trend>,
    passage: Option<&Passage>,
    p: f64,
    max: f64,
) -> Option<f64> {
    let alone = passage.map(|b| b.time(p)).filter(|t| *t <= max);
    let Some(trend) = trend else {
        return alone;
    };
    if passage.is_none() && p == 0.5 {
        // The trend alone: its median is where it reaches the margin.
        return Some(trend.median()).filter(|t| *t <= max);
    }
    let crossed = |t: f64| {
        let burst = passage.map_or(0.0, |b| b.hazard(t));
        1.0 - (1.0 - trend.crossed(t)) * (-burst).exp()
    };
    // Bracket: the first crossing is no later than the burst's alone, nor (for p ≤ ½) than
    // the trend's median; else from 1 s, doubling.
    let median = Some(trend.median()).filter(|t| t.is_finite() && p <= 0.5);
    let mut hi = match (alone, median) {
        (Some(a), Some(m)) => a.min(m),
        (a, m) => a.or(m).unwrap_or(1.0),
    }
    .max(1e-3);
    while crossed(hi) < p {
        hi *= 2.0;
        if hi > max {
            return alone;
        }
    }
    // Regula falsi (Illinois) on [0, hi] to 10⁻⁴: the probability is smooth in t.
    let (mut lo, mut f_lo) = (0.0, crossed(0.0) - p);
    if f_lo >= 0.0 {
        return Some(0.0);
    }
    let mut f_hi = crossed(hi) - p;
    let mut side = 0;
    for _ in 0..100 {
        if hi - lo <= 1e-4 * hi {
            break;
        }
        let mut t = (lo * f_hi - hi * f_lo) / (f_hi - f_lo);
        if !(t > lo && t < hi) {
            t = 0.5 * (lo + hi);
        }
        let f = crossed(t) - p;
        if f >= 0.0 {
            (hi, f_hi) = (t, f);
            if side == 1 {
                f_lo *= 0.5;
            }
            side = 1;
        } else {
            (lo, f_lo) = (t, f);
            if side == -1 {
                f_hi *= 0.5;
            }
            side = -1;
        }
    }
    Some(hi)
}

/// Standard normal distribution function (Abramowitz & Stegun 7.1.26, error < 1.5e-7).
pub(super) fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-z * z).exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// Time to cover `margin` at `rate` (infinite when not growing).
pub(super) fn eta(margin: f64, rate: f64) -> f64 {
    if rate > 0.0 {
        margin / rate
    } else {
        f64::INFINITY
    }
}

/// Student's t quantile for `dof` degrees of freedom at the normal quantile `z`
/// (Cornish–Fisher expansion; within 2 % of the table from 2 dof on, 12 % at 1).
pub(super) fn t_quantile(z: f64, dof: f64) -> f64 {
    let dof = dof.max(1.0);
    let (z3, z5) = (z.powi(3), z.powi(5));
    z + (z3 + z) / (4.0 * dof) + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * dof * dof)
}
