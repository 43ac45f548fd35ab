//! From the bank to a forecast: each scale's rate with the bursts of a window matched to the
//! horizon, which scale speaks for a horizon (eligibility by window, backtested skill, a faster
//! scale taking over on a change of regime), acceleration read off three scales, and the P50/P90
//! time to a threshold with first passage, cycles, a new writer's fill and bursts (steps 3–6 of
//! the module doc of `predict`).

use super::*;

impl Forecaster {
    /// Every scale with a usable fit, fastest first (index = scale), its trend plus the rate
    /// of the `bursts` window; none before `min_samples`.
    pub(super) fn rates(&self, bursts: Window) -> Vec<Option<Rate>> {
        if self.samples < self.params.min_samples {
            return Vec::new();
        }
        let z = self.params.z90;
        self.fits
            .iter()
            .map(|f| {
                f.map(|fit| {
                    let r50 = fit.slope + bursts.rate;
                    let se = fit.slope_se.hypot(bursts.se);
                    Rate {
                        fit,
                        bursts,
                        r50,
                        se,
                        r90: r50 + t_quantile(z, fit.dof) * se,
                    }
                })
            })
            .collect()
    }

    /// The bursts of the window matched to a forecast `horizon` seconds ahead: the last
    /// `burst_window × horizon`, at least the longest window of the bank.
    pub(super) fn bursts_for(&self, horizon: f64) -> Window {
        let now = self.last.map_or(0.0, |(t, _)| t);
        let longest = self
            .fits
            .iter()
            .flatten()
            .map(|f| f.window)
            .fold(0.0, f64::max);
        let span = (self.params.burst_window * horizon).max(longest);
        self.ledger.window(now, span)
    }

    /// The rates for forecasting `margin` bytes ahead: every scale's trend plus the burst rate
    /// of the window matched to the horizon (two passes: the horizon moves with the rate,
    /// first guessed with the slowest scale's trend and the longest window's bursts).
    pub(super) fn rates_for(&self, margin: f64) -> Vec<Option<Rate>> {
        let max = self.params.max_eta_s;
        let mut rates = self.rates(self.bursts_for(0.0));
        if self.ledger.is_empty() {
            return rates;
        }
        let Some(slowest) = rates.iter().rposition(Option::is_some) else {
            return rates;
        };
        let mut horizon = rates[slowest].map_or(max, |r| eta(margin, r.r50).min(max));
        for _ in 0..2 {
            rates = self.rates(self.bursts_for(horizon));
            let Some(r) = self.choose(&rates, margin).and_then(|c| rates[c]) else {
                break;
            };
            let next = eta(margin, r.r50).min(max);
            if (next - horizon).abs() <= 0.01 * horizon {
                break;
            }
            horizon = next;
        }
        rates
    }

    /// The scale behind P50 for `margin` bytes.
    pub(super) fn choose(&self, rates: &[Option<Rate>], margin: f64) -> Option<usize> {
        let p = &self.params;
        let slowest = rates.iter().rposition(Option::is_some)?;
        let reference = eta(margin, rates[slowest]?.r50);
        let eligible = |i: usize| {
            rates[i].is_some_and(|r| {
                i == slowest || p.horizon_ratio * r.fit.window >= eta(margin, r.r50).min(reference)
            })
        };
        // Reach rule alone: from the slowest, step to each faster scale while it is eligible
        // and predicts a crossing.
        let mut chosen = slowest;
        for i in (0..slowest).rev() {
            match rates[i] {
                Some(r) if r.r50 > 0.0 && eligible(i) => chosen = i,
                _ => break,
            }
        }
        if !p.backtest {
            return Some(chosen);
        }
        // Backtesting: the eligible scale with the smallest recent error at the horizon of
        // the current guess, twice (the guess moves with the choice).
        for _ in 0..2 {
            let guess = eta(margin, rates[chosen]?.r50).min(p.max_eta_s);
            let Some(errors) = self.skill.nearest(guess) else {
                break;
            };
            chosen = (0..rates.len())
                .filter(|&i| eligible(i))
                .min_by(|&a, &b| errors[a].total_cmp(&errors[b]))
                .unwrap_or(chosen);
        }
        // A change of regime shows in the backtest only once the horizon has passed; until
        // then, a faster eligible scale whose forecast over the horizon departs from the chosen
        // one's by more than `change_k` times the chosen one's recent error takes over.
        let mut i = chosen;
        while i > 0 {
            i -= 1;
            let (Some(c), Some(f)) = (rates[chosen], rates[i]) else {
                continue;
            };
            let e = eta(margin, c.r50).min(eta(margin, f.r50)).min(p.max_eta_s);
            let curve = self.skill.curve(chosen);
            let Some(width) = skill::rmse_at(&curve, e) else {
                break;
            };
            if eligible(i) && ((f.r50 - c.r50) * e).abs() > p.change_k * width {
                chosen = i;
            }
        }
        Some(chosen)
    }

    /// Significant acceleration seen by scale `chosen` and the next slower one (which looks
    /// back four times as far), confirmed by the next faster one (`accel.rs`).
    pub(super) fn acceleration(&self, chosen: usize) -> Option<accel::Accel> {
        let i = chosen.checked_sub(1)?;
        let taus = self.params.scales_s.get(i..i.checked_add(3)?)?;
        let fits = self.fits.get(i..i + 3)?;
        let scale = |k: usize| Some((*taus.get(k)?, fits.get(k)?.as_ref()?));
        accel::accel([scale(0)?, scale(1)?, scale(2)?], self.params.z90)
    }

    pub(super) fn eta(
        &self,
        rates: &[Option<Rate>],
        threshold: u64,
        margin: f64,
        cycle: Option<(Cycle, f64, f64)>,
        fill: Option<Fill>,
        teeth: bool,
    ) -> Eta {
        let p = &self.params;
        let crossed = (margin <= 0.0).then_some(0.0);
        let Some(chosen) = self.choose(rates, margin.max(0.0)) else {
            return Eta {
                threshold,
                p50_s: crossed,
                p90_s: crossed,
                rate_bps: 0.0,
                window_s: 0.0,
            };
        };
        let r = rates[chosen].expect("chosen scales have a fit");
        let mut out = Eta {
            threshold,
            p50_s: crossed,
            p90_s: crossed,
            rate_bps: r.r50,
            window_s: r.fit.window,
        };
        if crossed.is_some() {
            return out;
        }
        // Margins from the trend (the newest sample's own noise taken out) less the noise the
        // crossing may come with; never beyond the measurement.
        // The noise is the smallest spread around any line with ten samples' worth: a line
        // that misses a change of rate only looks noisier.
        let sigma = rates
            .iter()
            .flatten()
            .filter(|s| s.fit.dof >= 8.0)
            .map(|s| s.fit.sigma)
            .fold(r.fit.sigma, f64::min);
        let trend_margin = margin + r.fit.above;
        // Bursts are noise too: a crossing tends to come with one, of typical size (by default
        // left to the first passage by a burst below).
        let m50 = margin
            .min(trend_margin - p.noise_p50 * sigma)
            .min(margin - p.burst_p50 * r.bursts.typical)
            .max(0.0);
        let m90 = margin.min(trend_margin - p.noise_p90 * sigma).max(0.0);
        // A burst that lands while the margin left is smaller than itself crosses at once (a
        // regular cycle's copy is the cycle's business): the crossing is the first of the
        // trend's and a burst's.
        let passage = |m: f64| {
            if !p.burst_passage || cycle.is_some() {
                return None;
            }
            let now = self.last.map_or(0.0, |(t, _)| t);
            let (span, sizes) = self.ledger.sizes(now, r.bursts.span);
            Passage::new(&sizes, span, m, r.r50)
        };
        let curve = if p.backtest {
            self.skill.curve(chosen)
        } else {
            Vec::new()
        };
        // No crossing in sight while the growth is not told apart from none (at the P90
        // level).
        let significant = r.r50 > t_quantile(p.z90, r.fit.dof) * r.se;
        // Growth that accelerates (the chosen scale and the next slower one tell it apart
        // from noise): the trend goes on from the rate now, lag corrected, growing as it has.
        // Not under a learned transient pattern: its teeth's rises part the slopes without
        // a ramp.
        let (rate, accel) = (p.accelerate && !teeth)
            .then(|| self.acceleration(chosen))
            .flatten()
            .map_or((r.r50, 0.0), |a| (a.rate + r.bursts.rate, a.accel));
        let p50 = if m50 <= 0.0 {
            Some(0.0)
        } else {
            let trend = significant.then(|| Trend {
                margin: m50,
                rate,
                accel,
                curve: &curve,
            });
            first_of(trend, passage(m50).as_ref(), 0.5, p.max_eta_s)
        };
        // P90 from the chosen scale's recent errors: the first e with r·e + z·rmse(e) ≥ m90
        // (with bursts: the first of that and a burst at 10 %)…
        let mut p90 = if m90 <= 0.0 {
            Some(0.0)
        } else {
            let trend = (!curve.is_empty()).then(|| Trend {
                margin: m90,
                rate,
                accel,
                curve: &curve,
            });
            first_of(trend, passage(m90).as_ref(), 0.1, p.max_eta_s)
        };
        // …and no later than the earliest crossing an eligible scale makes at trend + z se.
        let reference = rates
            .iter()
            .rev()
            .flatten()
            .next()
            .map_or(f64::INFINITY, |s| eta(m90, s.r50));
        for s in rates.iter().flatten() {
            let e = eta(m90, s.r90);
            if p.horizon_ratio * s.fit.window >= e.min(reference) && e.is_finite() {
                p90 = Some(p90.map_or(e, |x| x.min(e)));
            }
        }
        // …nor than the new writer's crossing at its own rate, once it has written for long
        // enough to vouch for that far (the reach rule of the scales).
        if let Some(fill) = fill {
            let e = eta(m90, fill.rate());
            if e.is_finite() && p.horizon_ratio * (fill.until - fill.start) >= e {
                p90 = Some(p90.map_or(e, |x| x.min(e)));
            }
        }
        let (p50, p90) = match cycle {
            // With a cycle, the linear times become equivalent rates for the cycle's own
            // forecast (which continues past the expected drops).
            Some((c, now, used)) => {
                let rate = |m: f64, e: f64| if e > 0.0 { m / e } else { f64::INFINITY };
                (
                    p50.and_then(|e| c.eta(now, used, m50, rate(m50, e), false)),
                    p90.and_then(|e| c.eta(now, used, m90, rate(m90, e), true)),
                )
            }
            None => (p50, p90),
        };
        // Nothing beyond what the longest window can vouch for (a young forecaster does not
        // forecast days ahead), nor beyond `max_eta_s`.
        let reach = rates
            .iter()
            .flatten()
            .map(|s| p.horizon_ratio * s.fit.window)
            .fold(0.0, f64::max)
            .min(p.max_eta_s);
        let within = |s: f64| (s <= reach).then_some(s);
        out.p50_s = p50.and_then(within);
        out.p90_s = match (p90.and_then(within), out.p50_s) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        out
    }
}

/// One scale's growth rate, as the selection sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rate {
    pub(super) fit: Fit,
    /// The bursts of the window matched to the horizon.
    pub(super) bursts: Window,
    /// Trend + burst rate.
    pub(super) r50: f64,
    /// Its standard error (trend and bursts).
    pub(super) se: f64,
    /// `r50` + t quantile × `se`.
    pub(super) r90: f64,
}
