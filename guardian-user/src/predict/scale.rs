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
    /// Decayed bytes of the upward events (bursts) not cancelled by a later drop.
    jumps: f64,
    /// The largest of them, decayed the same way.
    jump_max: f64,
    /// Decayed sum of their squares (the spread of the burst rate), and their decayed count.
    jump_sq: f64,
    jump_n: f64,
    /// The burst under way (written over several samples), decayed.
    jump_last: f64,
    /// Decayed observed time (∫ e^(-age/tau)), the normaliser of `jumps`.
    time: f64,
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
    /// Average rate of the recent burst events but the largest, bytes per second (one burst
    /// alone makes no rate).
    pub burst_rate: f64,
    /// Mean size of the recent bursts but the largest, bytes (0 with fewer than two).
    pub burst_typical: f64,
    /// Standard error of `burst_rate` (compound Poisson: √Σ size² over the decayed time, the
    /// largest burst left out as in the rate).
    pub burst_se: f64,
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
            jumps: 0.0,
            jump_max: 0.0,
            jump_sq: 0.0,
            jump_n: 0.0,
            jump_last: 0.0,
            time: 0.0,
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
        self.jumps *= decay;
        self.jump_max *= decay;
        self.jump_sq *= decay * decay;
        self.jump_n *= decay;
        self.jump_last *= decay;
        self.time = self.time * decay + self.tau * (1.0 - decay);
        // The new point sits at (0, 0) with weight 1.
        self.s0 += 1.0;
        self.q0 += 1.0;
    }

    /// An upward event of `bytes` (burst) just happened; `continued`: it goes on the burst of
    /// the previous sample (one burst written over several samples).
    pub fn burst(&mut self, bytes: f64, continued: bool) {
        let before = if continued { self.jump_last } else { 0.0 };
        if !continued {
            self.jump_n += 1.0;
        }
        self.jump_last = before + bytes;
        self.jumps += bytes;
        self.jump_max = self.jump_max.max(self.jump_last);
        self.jump_sq += self.jump_last * self.jump_last - before * before;
    }

    /// A drop of `bytes` (deletion) just happened: it first takes back recent bursts (a temp
    /// file written then removed, a log copied then truncated); the rest is a cleanup, which
    /// resets the level and is never counted as negative growth.
    pub fn drop_bytes(&mut self, bytes: f64) {
        let left = (self.jumps - bytes).max(0.0);
        if self.jumps > 0.0 {
            self.jump_sq *= (left / self.jumps).powi(2);
            self.jump_n *= left / self.jumps;
        }
        self.jumps = left;
        self.jump_max = self.jump_max.min(self.jumps);
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
        let time = self.time.max(f64::MIN_POSITIVE);
        Some(Fit {
            slope,
            slope_se,
            dof: n_eff - 2.0,
            sigma: sigma2.sqrt(),
            above: slope * xm - ym,
            window,
            burst_rate: (self.jumps - self.jump_max).max(0.0) / time,
            burst_typical: if self.jump_n > 1.5 {
                (self.jumps - self.jump_max).max(0.0) / (self.jump_n - 1.0)
            } else {
                0.0
            },
            burst_se: (self.jump_sq - self.jump_max * self.jump_max)
                .max(0.0)
                .sqrt()
                / time,
        })
    }
}
