//! Forecasting: how fast a filesystem (or a project) grows and when free space will cross each
//! threshold, with a median (P50) and a pessimistic (P90) time. **Pure**: no IO, no clock; the
//! caller passes timestamps (seconds, any origin, increasing) and byte counts.
//!
//! The model (docs/forecast.md has the method and the measurements behind each choice):
//!
//! 1. **Events are not growth.** Each increment is compared with the growth the trend expects
//!    (the fastest scale with ten samples' worth); one departing by more than `jump_k` robust
//!    spreads (an EWMA of the absolute departures) plus `jump_min_bytes` is an *event*, and its
//!    interval adds nothing to the growth series the scales are fed. A drop (cleanup, deletion,
//!    log truncation, or an explicit [`Forecaster::reset`]) is a level reset, never negative
//!    growth. A rise (burst) goes into a ledger (`bursts.rs`; a burst written over consecutive
//!    samples is one burst), and a later drop takes back the burst it removes (a temporary
//!    file): what stays is growth that comes in jumps. A rise over `fill_samples` consecutive samples at a
//!    steady rate is a new writer, not a burst: growth from its first sample on, and P90 is
//!    never later than its crossing at its own rate (`fill.rs`). Bursts are rare, so their rate is
//!    measured over a window matched to the forecast's horizon `h` (the last `burst_window × h`,
//!    at least the longest window of the bank), the largest burst of the window counted only
//!    as much as the second largest: one burst alone moves no rate.
//! 2. **A bank of scales.** The growth series feeds exponentially weighted least-squares lines
//!    (Brown's double exponential smoothing: Holt's level + trend with one time constant, exact
//!    for irregular sampling) with time constants from seconds to hours (`scales_s`). Each gives
//!    a trend, its standard error, and how far back it looks (its *window*); each trend plus the
//!    horizon's burst rate is a rate the forecast can use.
//! 3. **Each horizon uses the scale that has forecast it best.** A scale may only speak for a
//!    time its window can vouch for: `horizon_ratio × window ≥` the time it claims (or, when it
//!    claims slower growth than the slowest scale, the time it contradicts); predict_linear's
//!    rule of thumb, a 6 h range for a 24 h horizon, is 4. Among the eligible scales, P50 takes
//!    the one with the smallest recent error at the horizon nearest the ETA (backtesting,
//!    `skill.rs`): slow scales when growth is steady (least noise), faster ones when it changes.
//!    A change of regime reaches the backtest only after the horizon has passed, so a faster
//!    eligible scale whose forecast departs from the chosen one's by more than `change_k` times
//!    the chosen one's recent error takes over at once.
//! 4. **First passage.** Noise crosses a threshold before the trend does: the P50 margin is
//!    taken `noise_p50` noise deviations short of the threshold, the P90 margin `noise_p90`.
//!    And a burst (kept or temporary) that lands while the margin left is smaller than itself
//!    crosses at once: bursts of each size seen in the horizon's window land at the rate they
//!    did, the margin shrinking at the chosen rate, and the crossing is the first of the
//!    trend's and a burst's (`burst_passage`). P50 is when that has happened with probability
//!    ½; none while the growth is not told apart from none and no burst can cross, and beyond
//!    what has been watched.
//! 5. **P90** is when it has happened with probability 0.1, the trend's growth by then taken
//!    as normal around the chosen rate with that scale's recent error (at that horizon) as its
//!    spread, so noise and rate changes widen it as much as they have lately; it is never later
//!    than the earliest crossing any eligible scale makes at trend + `z90` standard errors
//!    (with the burst rate's), which catches a change of regime the backtest has not seen yet,
//!    and never later than P50.
//! 6. **Cycles.** Drops that come at regular intervals (a cron wipe, daily log rotation; three
//!    or more) are expected again: a forecast that reaches past the next one continues from the
//!    level it leaves (`cycle.rs`); P90 allows the drop to be late, and the copy of a
//!    copytruncate rotation to come early.
//!
//! [`TriggerRule`] is the preemptive rule: act when the P90 time to a threshold is shorter than
//! the lead time *and* free space is already under a floor (node_exporter's `avail < 40%`), so
//! growth far from every threshold triggers nothing.

mod accel;
mod bursts;
mod cycle;
mod fill;
mod params;
mod passage;
mod scale;
mod select;
mod skill;
mod stats;
#[cfg(test)]
mod tests;
mod transient;
mod trigger;

use bursts::{Ledger, Passage, Window};
use cycle::{Cycle, Cycles};
use fill::{Fill, Run};
pub use params::Params;
use passage::{eta, first_of, t_quantile, Trend};
use scale::{Fit, Scale};
use serde::{Deserialize, Serialize};
use skill::Skill;
pub use transient::Pattern;
use transient::Teeth;
pub use trigger::{Trigger, TriggerRule};

/// Scales in the bank, at most.
const MAX_SCALES: usize = 16;

/// The time until free space crosses one threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Eta {
    /// The free-bytes level.
    pub threshold: u64,
    /// Median time until free space is under `threshold`, seconds; `Some(0.0)` when it already
    /// is; `None` when no crossing is in sight (no growth told apart from noise, or beyond
    /// what has been watched: `horizon_ratio` × the longest window, at most `max_eta_s`).
    pub p50_s: Option<f64>,
    /// Pessimistic time (the earlier crossing), seconds; never later than `p50_s`.
    pub p90_s: Option<f64>,
    /// Growth rate behind `p50_s`, bytes per second.
    pub rate_bps: f64,
    /// How far back the scale behind `p50_s` looks, seconds.
    pub window_s: f64,
}

/// A forecast at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The instant (the caller's clock, seconds).
    pub at: f64,
    /// Free bytes at `at`, as the caller measured them.
    pub free_bytes: u64,
    /// Growth rate, bytes per second, at the scale chosen for the nearest threshold not yet
    /// crossed (for the time to full when there is none). Negative growth is reported as is;
    /// it never produces an ETA.
    pub rate_bps: f64,
    /// One entry per threshold, in the order given.
    pub eta: Vec<Eta>,
    /// Samples observed so far.
    pub samples: u64,
    /// Period of the regular external drops the forecast expects, seconds.
    pub cycle_s: Option<f64>,
    /// The learned pattern of writes that undo themselves, when locked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Pattern>,
    /// The pattern of the outer teeth when teeth nest (rises that carry teeth of their own
    /// and are taken back whole later), when locked on and other than `pattern`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outer_pattern: Option<Pattern>,
}

impl Forecast {
    /// The entry for `threshold`, if it was asked for.
    pub fn eta_for(&self, threshold: u64) -> Option<&Eta> {
        self.eta.iter().find(|e| e.threshold == threshold)
    }
}

/// One scale of the bank, as [`Forecaster::scales`] reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleView {
    /// Time constant, seconds.
    pub tau_s: f64,
    /// How far back it looks, seconds.
    pub window_s: f64,
    /// Trend of the growth (events excluded), bytes per second, and its standard error.
    pub trend_bps: f64,
    pub trend_se_bps: f64,
    /// Rate of the bursts kept over the same window (the largest counted as the second
    /// largest), bytes per second.
    pub burst_bps: f64,
}

/// Counters of what the event detector saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Events {
    /// Drops taken as level resets (including explicit [`Forecaster::reset`] calls).
    pub resets: u64,
    /// Rises taken as bursts.
    pub bursts: u64,
    /// When the last reset happened.
    pub last_reset_at: Option<f64>,
    /// Bytes of the last reset (positive).
    pub last_reset_bytes: f64,
}

/// The growth model of one quantity (a filesystem's used bytes, or a project's bytes).
#[derive(Clone, Debug)]
pub struct Forecaster {
    params: Params,
    /// Fastest first.
    scales: Vec<Scale>,
    /// Their fits after the last sample.
    fits: Vec<Option<Fit>>,
    skill: Skill,
    /// First and previous sample.
    first: (f64, f64),
    last: Option<(f64, f64)>,
    samples: u64,
    /// Robust scale of the increments' departures from the expected growth (bytes).
    spread: f64,
    /// Typical sampling interval (EWMA), seconds.
    dt_typical: f64,
    /// The growth series (events excluded), cumulative: what the backtest compares with.
    growth: f64,
    /// The next sample follows a cleanup of ours: its drop is a reset.
    reset_pending: bool,
    /// The previous sample was a burst.
    in_burst: bool,
    /// Consecutive burst samples so far, and the bank before them: a run that proves steady
    /// is a new writer (`fill_samples`).
    run: Option<Run>,
    /// The new writer a sustained rise revealed, while it goes on at its rate.
    fill: Option<Fill>,
    /// The bursts, and what later drops have left of each.
    ledger: Ledger,
    events: Events,
    cycles: Cycles,
    teeth: Teeth,
    /// The same level's outer teeth (`Teeth::outer`).
    outer_teeth: Teeth,
}

impl Default for Forecaster {
    fn default() -> Forecaster {
        Forecaster::new(Params::default())
    }
}

impl Forecaster {
    pub fn new(mut params: Params) -> Forecaster {
        params.scales_s.retain(|tau| tau.is_finite() && *tau > 0.0);
        params.scales_s.sort_by(f64::total_cmp);
        params.scales_s.truncate(MAX_SCALES);
        if params.scales_s.is_empty() {
            params.scales_s = Params::default().scales_s;
        }
        let horizons: Vec<f64> = params.scales_s.iter().map(|tau| 4.0 * tau).collect();
        Forecaster {
            skill: Skill::new(&horizons, params.scales_s.len()),
            params,
            scales: Vec::new(),
            fits: Vec::new(),
            first: (0.0, 0.0),
            last: None,
            samples: 0,
            spread: 0.0,
            dt_typical: 0.0,
            growth: 0.0,
            reset_pending: false,
            in_burst: false,
            run: None,
            fill: None,
            ledger: Ledger::default(),
            events: Events::default(),
            cycles: Cycles::default(),
            teeth: Teeth::default(),
            outer_teeth: Teeth::outer(),
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Feeds one sample: `used` bytes at time `t` (for a filesystem, size − free; for a
    /// project, its bytes). Samples not later than the previous one are ignored.
    pub fn observe(&mut self, t: f64, used: u64) {
        self.observe_f64(t, used as f64);
    }

    /// Tells the model that the drop since the last sample (up to `used` at `t`) is a cleanup
    /// Guardian made: a level reset whatever its size, and never part of a cycle. Calls
    /// `observe(t, used)`; if `t` is not after the previous sample, the next sample carries
    /// the reset.
    pub fn reset(&mut self, t: f64, used: u64) {
        self.reset_pending = true;
        self.observe(t, used);
    }

    fn observe_f64(&mut self, t: f64, y: f64) {
        if !t.is_finite() || !y.is_finite() {
            return;
        }
        if self.params.transients {
            let min_step = self.params.jump_min_bytes + 2.0 * self.spread;
            self.teeth.push(t, y, min_step, self.reset_pending);
            self.outer_teeth.push(t, y, min_step, self.reset_pending);
        }
        let Some((t0, y0)) = self.last else {
            self.first = (t, y);
            self.last = Some((t, y));
            self.samples = 1;
            self.reset_pending = false;
            self.ledger.start(t);
            self.scales = self
                .params
                .scales_s
                .iter()
                .map(|&tau| Scale::new(tau))
                .collect();
            self.fits = vec![None; self.scales.len()];
            return;
        };
        let dt = t - t0;
        if dt <= 0.0 {
            return;
        }
        let p = &self.params;
        let dy = y - y0;
        let expected = self.reference_rate() * dt;
        let departure = dy - expected;
        self.dt_typical = if self.dt_typical > 0.0 {
            0.9 * self.dt_typical + 0.1 * dt
        } else {
            dt
        };
        // A long gap allows a larger departure (noise grows like a random walk).
        let gap = (dt / self.dt_typical).max(1.0).sqrt();
        let limit = p.jump_k * self.spread * gap + p.jump_min_bytes;
        let detecting = self.samples >= p.warmup_samples;
        let explicit = self.reset_pending && dy < 0.0;
        let is_reset = explicit || (detecting && departure < -limit);
        // A burst written over several samples stays one: after a burst, half the limit.
        let continued = self.in_burst;
        let burst_limit = if continued { 0.5 * limit } else { limit };
        let mut is_burst = !is_reset && detecting && departure > burst_limit;
        if is_burst && self.sustained_rise(t, continued, dt, dy, departure) {
            // A new writer, not a burst: its rise so far is growth (the bank learns it now,
            // not once the spread has widened over tens of samples).
            is_burst = false;
        }
        self.in_burst = is_burst;
        self.follow_fill(t, dy, explicit);
        let p = &self.params;
        if p.cycles {
            // Our own cleanups are no cycle: counting on them would forecast them away.
            let gap = 3.0 * self.dt_typical;
            if (is_reset && !explicit) || is_burst {
                self.cycles.event(t, y0, y, gap);
            } else {
                self.cycles.tick(t, gap);
            }
        }
        // An event's interval carries no growth: injecting the expected growth instead would
        // let a wrong trend confirm itself through every event.
        let dg = if is_reset || is_burst { 0.0 } else { dy };
        self.growth += dg;
        if is_reset {
            let bytes = -departure.min(0.0);
            self.events.resets += 1;
            self.events.last_reset_at = Some(t);
            self.events.last_reset_bytes = bytes;
        } else {
            // Drops never widen the spread: a sustained decline stays a series of resets,
            // while a sustained rise widens it until the rise is taken as growth. Until
            // detection starts, the spread is the plain mean.
            let w = if detecting {
                p.jump_scale_weight
            } else {
                1.0 / self.samples as f64
            };
            let d = if detecting {
                departure.abs().min(limit)
            } else {
                departure.abs()
            };
            self.spread = (1.0 - w) * self.spread + w * d;
            if is_burst {
                self.events.bursts += 1;
            }
        }
        if is_burst {
            self.ledger.burst(t, departure, continued);
        } else if is_reset {
            self.ledger.drop_bytes(-departure);
        }
        for s in &mut self.scales {
            s.push(dt, dg);
        }
        self.reset_pending = false;
        self.last = Some((t, y));
        self.samples += 1;
        for (f, s) in self.fits.iter_mut().zip(&self.scales) {
            *f = s.fit();
        }
        if p.backtest {
            let mut rates = [f64::NAN; MAX_SCALES];
            let n = self.fits.len().min(rates.len());
            for (r, f) in rates.iter_mut().zip(&self.fits) {
                *r = f.map_or(f64::NAN, |f| f.slope);
            }
            self.skill.push(t, self.growth, &rates[..n]);
        }
    }

    /// What each scale of the bank sees now (fastest first; scales without enough samples are
    /// left out): for diagnostics and detailed status output.
    pub fn scales(&self) -> Vec<ScaleView> {
        let now = self.last.map_or(0.0, |(t, _)| t);
        self.scales
            .iter()
            .zip(&self.fits)
            .filter_map(|(s, f)| {
                f.map(|f| ScaleView {
                    tau_s: s.tau,
                    window_s: f.window,
                    trend_bps: f.slope,
                    trend_se_bps: f.slope_se,
                    burst_bps: self.ledger.window(now, f.window).rate,
                })
            })
            .collect()
    }

    /// What the next increment should be: the trend of the fastest scale that has seen at
    /// least ten samples' worth (a faster one chases the noise it is judged against; bursts
    /// are what departs from it), else the mean rate since the first sample.
    fn reference_rate(&self) -> f64 {
        match self.fits.iter().flatten().find(|f| f.dof >= 8.0) {
            Some(f) => f.slope,
            None => match self.last {
                Some((t, y)) if t > self.first.0 => (y - self.first.1) / (t - self.first.0),
                _ => 0.0,
            },
        }
    }

    /// The growth rate (bytes per second) at the scale chosen for the time to full when
    /// `free_bytes` are left.
    pub fn rate_bps(&self, free_bytes: u64) -> f64 {
        let rates = self.rates_for(free_bytes as f64);
        self.choose(&rates, free_bytes as f64)
            .and_then(|i| rates[i].map(|r| r.r50))
            .unwrap_or(0.0)
    }

    /// Rate and time until free space is under each of `thresholds` (free-bytes levels), at
    /// `now` with `free_bytes` free (the caller's fresh measurement: the model gives the rate,
    /// the measurement where we are).
    pub fn forecast(&self, now: f64, free_bytes: u64, thresholds: &[u64]) -> Forecast {
        let free = free_bytes as f64;
        let cycle = if self.params.cycles {
            self.cycles.at(now)
        } else {
            None
        };
        let used_now = self.last.map(|(_, y)| y).unwrap_or(0.0);
        let (pattern, outer_pattern) = if self.params.transients {
            let pattern = self.teeth.pattern(now);
            let outer = self
                .outer_teeth
                .pattern(now)
                .filter(|o| Some(o) != pattern.as_ref());
            (pattern, outer)
        } else {
            (None, None)
        };
        // A rise one of the learned teeth would make is the pattern's business, not a new
        // writer's.
        let fill = self
            .fill
            .filter(|_| !pattern.as_ref().is_some_and(Pattern::within));
        let eta: Vec<Eta> = thresholds
            .iter()
            .map(|&threshold| {
                let margin = free - threshold as f64;
                let rates = self.rates_for(margin.max(0.0));
                let cycle = cycle.map(|c| (c, now, used_now));
                self.eta(&rates, threshold, margin, cycle, fill, pattern.is_some())
            })
            .collect();
        let nearest = thresholds
            .iter()
            .map(|&th| free - th as f64)
            .filter(|m| *m > 0.0)
            .fold(free, f64::min);
        // The rate of the nearest threshold's ETA (the same choice), else for the time to full.
        let rate_bps = match thresholds
            .iter()
            .position(|&th| free - th as f64 == nearest)
        {
            Some(i) => eta[i].rate_bps,
            None => self.rate_bps(free_bytes),
        };
        Forecast {
            at: now,
            free_bytes,
            rate_bps,
            eta,
            samples: self.samples,
            cycle_s: cycle.map(|c| c.period),
            pattern,
            outer_pattern,
        }
    }
}
