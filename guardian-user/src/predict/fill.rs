//! A new writer: a rise over a few consecutive samples at a steady rate is growth, not a
//! burst. The event detector takes every increment far above the expected growth for a burst,
//! and before this a writer starting on a quiet disk stayed "bursts" until the spread of the
//! increments had widened over tens of samples (a 20 MB/s writer sampled every 250 ms was
//! learnt over ~6 s, half its way to the threshold). Once `fill_samples` consecutive burst
//! samples rise at rates within a factor of two of their median, the bank is rewound to before
//! them and fed them as growth, and the writer is followed as a *fill* at its own rate while
//! it goes on: P90 is never later than the fill's crossing at that rate, within the reach of
//! its length (`horizon_ratio` × how long it has written). A rise like the teeth seen lately
//! (writes a drop took back, `transient.rs`) is not hurried.

use super::scale::Scale;
use super::{stats, Forecaster};

/// A rise over consecutive burst samples, until it proves a steady writer or ends.
#[derive(Clone, Debug)]
pub(super) struct Run {
    /// The bank and the growth series before its first sample.
    pub(super) scales: Vec<Scale>,
    pub(super) growth: f64,
    /// Its samples: (interval, bytes up, departure from the expected growth).
    pub(super) steps: Vec<(f64, f64, f64)>,
}

/// A new writer: a sustained rise from `start`, `bytes` up by `until`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fill {
    pub(super) start: f64,
    pub(super) bytes: f64,
    pub(super) until: f64,
}

impl Fill {
    pub(super) fn rate(&self) -> f64 {
        let span = self.until - self.start;
        if span > 0.0 {
            self.bytes / span
        } else {
            0.0
        }
    }
}

impl Forecaster {
    /// Whether the burst sample `dt` s after the previous one, `dy` bytes up, completes a
    /// sustained rise (see `fill_samples`); if so, the bank is rewound to before the rise and
    /// fed its earlier samples as growth, the rise leaves the burst ledger, and the spread
    /// admits increments of its size (the caller feeds this sample as growth).
    pub(super) fn sustained_rise(
        &mut self,
        t: f64,
        continued: bool,
        dt: f64,
        dy: f64,
        departure: f64,
    ) -> bool {
        let n = usize::try_from(self.params.fill_samples).unwrap_or(usize::MAX);
        if n == 0 || dy <= 0.0 {
            self.run = None;
            return false;
        }
        if !continued || self.run.is_none() {
            self.run = Some(Run {
                scales: self.scales.clone(),
                growth: self.growth,
                steps: Vec::new(),
            });
        }
        let Some(run) = self.run.as_mut() else {
            return false;
        };
        run.steps.push((dt, dy, departure));
        if run.steps.len() < n {
            return false;
        }
        let mut rates: Vec<f64> = run.steps.iter().map(|(dt, dy, _)| dy / dt).collect();
        let median = stats::median(&mut rates);
        let steady = median > 0.0
            && rates
                .iter()
                .all(|r| *r >= 0.5 * median && *r <= 2.0 * median);
        let Some(run) = self.run.take() else {
            return false;
        };
        // A rise like the teeth seen lately (a drop took them back) is not hurried as a new
        // writer: the spread widens over it as before.
        let tooth = self.params.transients && self.teeth.resembles(t);
        if !steady || tooth {
            // The next burst sample starts a new run.
            return false;
        }
        self.scales = run.scales;
        self.growth = run.growth;
        let (earlier, _) = run.steps.split_at(run.steps.len() - 1);
        for &(dt, dy, departure) in earlier {
            for s in &mut self.scales {
                s.push(dt, dy);
            }
            self.growth += dy;
            self.ledger.retract(departure);
        }
        let counted = u64::try_from(earlier.len()).unwrap_or(u64::MAX);
        self.events.bursts = self.events.bursts.saturating_sub(counted);
        let step = median * dt;
        self.spread = self.spread.max(step / self.params.jump_k);
        let span: f64 = run.steps.iter().map(|(dt, _, _)| dt).sum();
        let bytes: f64 = earlier.iter().map(|(_, dy, _)| dy).sum();
        self.fill = Some(Fill {
            start: t - span,
            bytes,
            until: t - dt,
        });
        true
    }

    /// The fill under way goes on while each sample rises at half to twice its rate (our own
    /// cleanups aside); the sample at `t`, `dy` bytes up, extends it or ends it.
    pub(super) fn follow_fill(&mut self, t: f64, dy: f64, own: bool) {
        let Some(fill) = self.fill.as_mut() else {
            return;
        };
        let dt = t - fill.until;
        if own {
            fill.start += dt;
            fill.until = t;
            return;
        }
        let rate = fill.rate();
        if dt > 0.0 && rate > 0.0 && dy / dt >= 0.5 * rate && dy / dt <= 2.0 * rate {
            fill.bytes += dy;
            fill.until = t;
        } else {
            self.fill = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Forecaster, Params, TriggerRule};

    const GIB: f64 = (1u64 << 30) as f64;

    /// A 1 GiB disk at 34 % free sampled every 250 ms, idle for 10 s, then `bps` written
    /// for `steps` samples (each step's bytes from `step`); returns the forecaster and when
    /// (seconds after the writer started) the preemptive rule with an 8.25 s lead first fired,
    /// with the free bytes then.
    fn writer(
        params: Params,
        steps: usize,
        step: impl Fn(usize) -> f64,
    ) -> (Forecaster, Option<(f64, f64)>) {
        let mut f = Forecaster::new(params);
        let rule = TriggerRule {
            lead_time_s: 8.25,
            floor_free: (0.4 * GIB) as u64,
        };
        let threshold = (0.2 * GIB) as u64;
        let mut avail = 0.34 * GIB;
        let mut fired = None;
        for k in 0..40 + steps {
            let t = 0.25 * k as f64;
            if k >= 40 {
                avail -= step(k - 40);
            }
            f.observe(t, (GIB - avail) as u64);
            let forecast = f.forecast(t, avail as u64, &[threshold]);
            if fired.is_none() && rule.check(&forecast).is_some() {
                fired = Some((t - 10.0 + 0.25, avail));
            }
        }
        (f, fired)
    }

    #[test]
    fn a_new_20mb_per_s_writer_triggers_within_two_seconds() {
        // Before: the rise stayed "bursts" until the spread had widened, and the rule fired
        // 5.75 s after the writer started, 1.5 s before the crossing.
        let (_, fired) = writer(Params::default(), 40, |_| 5e6);
        let (after, free) = fired.expect("fires");
        let ahead = (free - 0.2 * GIB) / 20e6;
        assert!(after <= 2.0, "fired {after} s after the start");
        assert!(ahead >= 5.0, "fired {ahead} s before the crossing");
        // Without it (`fill_samples = 0`) the writer is learnt late.
        let old = Params {
            fill_samples: 0,
            ..Params::default()
        };
        let (_, fired) = writer(old, 40, |_| 5e6);
        assert!(fired.expect("fires").0 > 4.0);
    }

    #[test]
    fn a_short_or_uneven_rise_stays_a_burst() {
        // Three samples (a file written over 750 ms), then quiet: a burst, no growth.
        let (f, _) = writer(Params::default(), 20, |k| if k < 3 { 40e6 } else { 0.0 });
        assert!(f.events().bursts > 0);
        assert!(f.fill.is_none());
        assert!(
            f.rate_bps(GIB as u64 / 3) < 1e6,
            "{}",
            f.rate_bps(GIB as u64 / 3)
        );
        // Rates that vary by more than a factor of two are no steady writer either.
        let (f, _) = writer(
            Params::default(),
            8,
            |k| if k % 2 == 0 { 40e6 } else { 8e6 },
        );
        assert!(f.fill.is_none());
        assert!(f.events().bursts > 0);
    }

    #[test]
    fn the_fill_ends_when_the_writer_stops() {
        let (f, _) = writer(Params::default(), 12, |_| 5e6);
        assert!(f.fill.is_some_and(|x| (x.rate() - 20e6).abs() < 1e6));
        let (f, _) = writer(Params::default(), 16, |k| if k < 12 { 5e6 } else { 0.0 });
        assert!(f.fill.is_none());
    }
}
