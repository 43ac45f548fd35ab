//! Acceleration: growth whose rate itself grows (a cache warming up, a download fanning out),
//! read off the bank of scales. An exponentially weighted least-squares line with time
//! constant τ through growth accelerating at `a` (bytes/s²) has the slope `r − 2aτ`, `r` the
//! rate now (the weights' mean age is τ; the regression of the quadratic term on the age
//! gives 4τ, halved by the ½ of `a t²/2`): every scale lags the rate now by twice its time
//! constant times the acceleration. Two scales give both: `a = (s_fast − s_slow) / 2(τ_slow −
//! τ_fast)` and `r = s + 2aτ` (the same from either). The P90 time is then never later than
//! the crossing of `r t + a t²/2`, once the acceleration is told apart from the noise of the
//! two slopes at the P90 level; a rate that only wobbles (noise, a mean-reverting churn)
//! moves the two slopes apart by less than their errors and adds nothing.

use super::passage::t_quantile;
use super::scale::Fit;

/// What two scales of the bank say about acceleration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Accel {
    /// The trend now, lag corrected, bytes per second.
    pub rate: f64,
    /// Its growth, bytes per second².
    pub accel: f64,
}

/// The acceleration two scales (the faster with `tau_fast`) say there is, and its standard
/// error (the two slopes' errors taken as independent, which overstates it: the slower scale's
/// samples are the faster one's too).
fn pair(tau_fast: f64, fast: &Fit, tau_slow: f64, slow: &Fit) -> Option<(f64, f64)> {
    let lag = 2.0 * (tau_slow - tau_fast);
    if lag <= 0.0 || fast.dof < 8.0 || slow.dof < 8.0 {
        return None;
    }
    let a = (fast.slope - slow.slope) / lag;
    let se = fast.slope_se.hypot(slow.slope_se) / lag;
    (a.is_finite() && se.is_finite()).then_some((a, se))
}

/// Acceleration from three consecutive scales of the bank (fastest first, `(tau, fit)`): the
/// slower pair's estimate, taken at its lower bound at the normal quantile `z` (Student's t at
/// the middle scale's degrees of freedom), when that is positive **and** the faster pair shows
/// no less acceleration (within the same bound). Growth whose rate stepped (a writer that
/// started or stopped within the slower scale's window) also parts a pair of slopes, but the
/// faster pair then sees less: the new rate flat (or, once the writer stopped, falling) where a
/// ramp shows the same acceleration at every scale. More is no objection (the faster pair is
/// the noisier, and a rate that grows faster lately is acceleration too).
pub(super) fn accel(scales: [(f64, &Fit); 3], z: f64) -> Option<Accel> {
    let [(t0, f0), (t1, f1), (t2, f2)] = scales;
    let (a_fast, se_fast) = pair(t0, f0, t1, f1)?;
    let (a, se) = pair(t1, f1, t2, f2)?;
    let t = t_quantile(z, f1.dof);
    let lower = a - t * se;
    let agree = a - a_fast <= t * se_fast.hypot(se);
    if lower.is_nan() || lower <= 0.0 || !agree {
        return None;
    }
    Some(Accel {
        rate: f1.slope + 2.0 * lower * t1,
        accel: lower,
    })
}

/// Time for growth `rate · t + accel · t² / 2` to cover `margin` (infinite when it never
/// does).
pub(super) fn eta(margin: f64, rate: f64, accel: f64) -> f64 {
    if margin <= 0.0 {
        return 0.0;
    }
    if accel <= 0.0 {
        return super::passage::eta(margin, rate);
    }
    // The positive root, in the form that stays exact when accel · margin ≪ rate².
    let disc = rate * rate + 2.0 * accel * margin;
    let root = disc.sqrt();
    if rate >= 0.0 {
        2.0 * margin / (rate + root)
    } else {
        (root - rate) / accel
    }
}

#[cfg(test)]
mod tests {
    use super::super::scale::Scale;
    use super::*;

    /// The bank's fits after `n` samples every `dt` of growth `g(t)`.
    fn fits(taus: &[f64], dt: f64, n: usize, g: impl Fn(f64) -> f64) -> Vec<Fit> {
        let mut scales: Vec<Scale> = taus.iter().map(|&t| Scale::new(t)).collect();
        for k in 1..n {
            let t = k as f64 * dt;
            let dg = g(t) - g(t - dt);
            for s in &mut scales {
                s.push(dt, dg);
            }
        }
        scales.iter().map(|s| s.fit().expect("fit")).collect()
    }

    fn three<'a>(taus: &[f64; 3], f: &'a [Fit]) -> [(f64, &'a Fit); 3] {
        [(taus[0], &f[0]), (taus[1], &f[1]), (taus[2], &f[2])]
    }

    #[test]
    fn two_scales_give_the_rate_now_and_its_growth() {
        // Rate 1000 B/s growing by 0.5 B/s²: after a day the rate is 44,200 B/s; the scales
        // of 2048 s and 8192 s lag it by 2 · 0.5 · τ.
        let g = |t: f64| 1000.0 * t + 0.25 * t * t;
        let taus = [512.0, 2048.0, 8192.0];
        let f = fits(&taus, 60.0, 1441, g);
        let day = 86_400.0;
        assert!(
            (f[1].slope - (1000.0 + 0.5 * day - 2048.0)).abs() < 50.0,
            "{f:?}"
        );
        let a = accel(three(&taus, &f), 1.2816).expect("significant");
        // At the lower bound of its confidence interval: a little under 0.5.
        assert!(a.accel > 0.45 && a.accel <= 0.5, "{a:?}");
        assert!((a.rate - (1000.0 + 0.5 * day)).abs() < 500.0, "{a:?}");
    }

    #[test]
    fn a_steady_rate_or_a_slowing_one_is_no_acceleration() {
        let z = 1.2816;
        let taus = [512.0, 2048.0, 8192.0];
        let f = fits(&taus, 60.0, 1441, |t| 1000.0 * t);
        assert_eq!(accel(three(&taus, &f), z), None);
        let f = fits(&taus, 60.0, 1441, |t| 1000.0 * t - 0.002 * t * t);
        assert_eq!(accel(three(&taus, &f), z), None);
    }

    #[test]
    fn a_writer_that_started_or_stopped_is_no_acceleration() {
        // One pair of scales sees a rate step as acceleration: the 2048 s scale has the new
        // rate, the 8192 s one half of it. The faster pair sees less (512 s and 2048 s see
        // the same rate once it has run for a few of their τ; both fall once it has stopped).
        let z = 1.2816;
        let taus = [512.0, 2048.0, 8192.0];
        let noise = |t: f64| 2e5 * (t / 700.0).sin();
        let started = |t: f64| 1000.0 * (t - 43_200.0).max(0.0) + noise(t);
        let f = fits(&taus, 60.0, 12 * 60 + 2 * 60, started);
        let (a, se) = pair(taus[1], &f[1], taus[2], &f[2]).expect("fits");
        assert!(a > 3.0 * se, "one pair alone: {a} ± {se}");
        assert_eq!(accel(three(&taus, &f), z), None);
        let stopped = |t: f64| 1000.0 * t.min(6.0 * 3600.0) + noise(t);
        let f = fits(&taus, 60.0, 6 * 60 + 60, stopped);
        assert_eq!(accel(three(&taus, &f), z), None);
    }

    /// How long before the crossing of 20 % free the preemptive rule (1 h lead, 40 % floor)
    /// first fires on the recorded trace `testdata/accelerating-14.txt` (free MiB every
    /// minute of a 1 TiB disk, up to the crossing): the harness's accelerating instance the
    /// rule warned 59 min ahead.
    fn warning_on_the_recorded_trace(accelerate: bool) -> Option<f64> {
        use super::super::{Forecaster, Params, TriggerRule};
        const MIB: u64 = 1 << 20;
        let size = 1024 * 1024 * MIB;
        let free: Vec<u64> = include_str!("testdata/accelerating-14.txt")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.parse::<u64>().expect("MiB") * MIB)
            .collect();
        let threshold = size / 5;
        let crossing = free.iter().position(|&f| f < threshold).expect("crosses");
        let rule = TriggerRule {
            lead_time_s: 3600.0,
            floor_free: size / 5 * 2,
        };
        let mut f = Forecaster::new(Params {
            accelerate,
            ..Params::default()
        });
        for (k, &free) in free.iter().enumerate().take(crossing) {
            let t = 60.0 * k as f64;
            f.observe(t, size - free);
            if rule.check(&f.forecast(t, free, &[threshold])).is_some() {
                return Some(60.0 * (crossing - k) as f64);
            }
        }
        None
    }

    #[test]
    fn accelerating_growth_triggers_a_lead_time_before_the_crossing() {
        // Before: every scale's trend lags the rate by 2aτ and the rule fired 59 min before
        // the crossing, inside the 1 h lead.
        let old = warning_on_the_recorded_trace(false).expect("fires");
        assert!(old < 3600.0, "{old}");
        let warned = warning_on_the_recorded_trace(true).expect("fires");
        assert!(warned >= 3600.0, "fired {:.0} min ahead", warned / 60.0);
    }

    #[test]
    fn the_crossing_of_an_accelerating_rate() {
        // 100 B/s growing by 1 B/s²: 1000 B are covered at t with 100 t + t²/2 = 1000.
        let e = eta(1000.0, 100.0, 1.0);
        assert!((100.0 * e + 0.5 * e * e - 1000.0).abs() < 1e-6, "{e}");
        assert_eq!(eta(1000.0, 100.0, 0.0), 10.0);
        assert_eq!(eta(0.0, 100.0, 1.0), 0.0);
        assert!(eta(1000.0, 0.0, 0.0).is_infinite());
        // A shrinking growth that accelerates still gets there.
        let e = eta(1000.0, -10.0, 1.0);
        assert!((-10.0 * e + 0.5 * e * e - 1000.0).abs() < 1e-6, "{e}");
    }
}
