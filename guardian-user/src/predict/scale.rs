//! One time scale of the model bank: Brown's double exponential smoothing (the one-parameter
//! Holt: level + trend) in its exact form for irregular sampling, the exponentially weighted
//! least-squares line through the growth series. Each sample's weight decays as
//! `exp(-age / tau)`; the fit gives the level, the trend (growth rate), the residual spread and
//! the standard error of the trend.

/// Sums are kept relative to the newest sample (x = t - t_now ≤ 0, y = g - g_now), so they stay
/// small whatever the clock and the byte counts.
#[derive(Clone, Debug)]
pub(super) struct Scale {
    pub tau: f64,
    s0: f64,
    s1: f64,
    s2: f64,
    sy: f64,
    sxy: f64,
    syy: f64,
    // The same sums with squared weights (effective sample size, standard error).
    q0: f64,
    q1: f64,
    q2: f64,
    /// The last interval and its decay (sampling is usually regular: one `exp` saved).
    last_dt: f64,
    last_decay: f64,
}

/// What a scale says about the growth at its newest sample.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fit {
    /// Trend of the growth series, bytes per second.
    pub slope: f64,
    /// Standard error of `slope`.
    pub slope_se: f64,
    /// Degrees of freedom of the residuals (effective sample size − 2).
    pub dof: f64,
    /// Standard deviation of the residuals around the line, bytes.
    pub sigma: f64,
    /// How far the newest sample is above the line, bytes (the noise now).
    pub above: f64,
    /// Length of the uniform window with the same spread of sample times: how far back this
    /// scale really looks (≈ 3.46 tau once it has seen more than a few tau).
    pub window: f64,
}

impl Scale {
    pub fn new(tau: f64) -> Scale {
        Scale {
            tau,
            s0: 1.0,
            s1: 0.0,
            s2: 0.0,
            sy: 0.0,
            sxy: 0.0,
            syy: 0.0,
            q0: 1.0,
            q1: 0.0,
            q2: 0.0,
            last_dt: f64::NAN,
            last_decay: 1.0,
        }
    }

    /// Adds the sample `dt` seconds after the previous one, the growth series having moved by
    /// `dg` bytes.
    pub fn push(&mut self, dt: f64, dg: f64) {
        // Re-reference the old points to the new sample: x -= dt, y -= dg.
        let (d, e) = (dt, dg);
        self.s2 += -2.0 * d * self.s1 + d * d * self.s0;
        self.sxy += -d * self.sy;
        self.s1 -= d * self.s0;
        self.syy += -2.0 * e * self.sy + e * e * self.s0;
        self.sxy -= e * self.s1;
        self.sy -= e * self.s0;
        self.q2 += -2.0 * d * self.q1 + d * d * self.q0;
        self.q1 -= d * self.q0;
        // Age them.
        if dt != self.last_dt {
            self.last_dt = dt;
            self.last_decay = (-dt / self.tau).exp();
        }
        let decay = self.last_decay;
        let decay2 = decay * decay;
        for s in [
            &mut self.s0,
            &mut self.s1,
            &mut self.s2,
            &mut self.sy,
            &mut self.sxy,
            &mut self.syy,
        ] {
            *s *= decay;
        }
        for q in [&mut self.q0, &mut self.q1, &mut self.q2] {
            *q *= decay2;
        }
        // The new point sits at (0, 0) with weight 1.
        self.s0 += 1.0;
        self.q0 += 1.0;
    }

    /// The weighted least-squares line, or `None` while there are too few samples.
    pub fn fit(&self) -> Option<Fit> {
        let n_eff = self.s0 * self.s0 / self.q0;
        if n_eff < 3.0 {
            return None;
        }
        let xm = self.s1 / self.s0;
        let ym = self.sy / self.s0;
        let sxx = self.s2 - self.s1 * xm;
        if sxx <= 0.0 || !sxx.is_finite() {
            return None;
        }
        let sxy = self.sxy - self.s1 * ym;
        let syy = self.syy - self.sy * ym;
        let slope = sxy / sxx;
        let ssr = (syy - slope * sxy).max(0.0);
        let sigma2 = ssr / self.s0 * n_eff / (n_eff - 2.0);
        let spread = (self.q2 - 2.0 * xm * self.q1 + xm * xm * self.q0).max(0.0);
        let slope_se = (sigma2 * spread).sqrt() / sxx;
        let window = (12.0 * sxx / self.s0).sqrt();
        Some(Fit {
            slope,
            slope_se,
            dof: n_eff - 2.0,
            sigma: sigma2.sqrt(),
            above: slope * xm - ym,
            window,
        })
    }
}
