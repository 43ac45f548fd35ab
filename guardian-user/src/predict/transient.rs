//! Writes that undo themselves: a *tooth* is a rise of the level that a later drop takes back
//! (a build's temporary files, a test run's scratch data, a package cache unpacked and
//! removed, a checkpoint writer keeping the last N). Teeth are found on the level itself, at any
//! sampling interval and any period (seconds to a day): a tooth opens when the level leaves its
//! low point, peaks, and closes when a drop takes back at least half of the rise. Once three
//! teeth have been seen recently ([`LOCK_TEETH`]), the pattern is *locked*: its P90 amplitude,
//! its longest rise, and the drift of the levels the teeth leave behind (net growth per second)
//! let the trigger ask whether a projected crossing survives the pattern ([`Pattern::holds`]):
//! when the tooth under way is no larger and no longer than the teeth seen, and a tooth's peak
//! plus the P90 amplitude (drift added over the lead time) stays above the threshold, the
//! crossing the trend projects is the tooth's, which its drop will undo. A rise larger or longer
//! than any tooth seen is danger again.
//!
//! Teeth may nest (an install rising in steps with test runs on top, all removed at the end):
//! [`Teeth::outer`] is the detector of the outer teeth, whose own pattern the trigger also asks.

use super::stats;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Teeth kept (their amplitudes, rises and the levels they left).
const KEPT: usize = 16;
/// Teeth that lock the pattern on.
pub const LOCK_TEETH: usize = 3;
/// A drop closes a tooth when it takes back at least this share of the rise.
const TAKEN_BACK: f64 = 0.5;
/// A tooth's net growth may be at most this share of its amplitude (else it is growth that
/// came with some cleanup, not a transient).
const NET_MAX: f64 = 0.5;
/// The pattern is forgotten when no tooth has closed for this many of its periods (or of its
/// longest rise, whichever is longer).
const STALE_PERIODS: f64 = 4.0;
/// A tooth under way is within the pattern while its rise lasts at most this many times the
/// longest rise seen (plus two sampling intervals).
const RISE_SLACK: f64 = 1.5;

/// Largest relative deviation from the median interval of the intervals between the teeth
/// that lock the pattern.
const REGULAR: f64 = 0.5;
/// A tooth under way may exceed the largest seen by this share (sampling) and stay within.
const SIZE_SLACK: f64 = 0.05;
/// The drift of the levels the teeth leave and the trend of their heights are also measured
/// (robustly: one kept file is no trend) over this many of the last teeth (a fill that joined lately shows
/// there first).
const RECENT: usize = 6;

/// One closed tooth.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tooth {
    /// When the rise began, when the drop ended.
    start: f64,
    end: f64,
    /// What the drop took back of the rise (peak − level after, at most peak − low before),
    /// bytes.
    amplitude: f64,
    /// How far the peak rose above the level the tooth started from, bytes (what the next
    /// peak is measured against: with growth underneath, more than the drop takes back).
    height: f64,
    /// Level after the drop.
    after: f64,
    /// Rise duration, seconds.
    rise_s: f64,
    /// It rose with pauses (closed from its origin, not from its last plateau).
    paused: bool,
}

/// The detector: fed every sample of a level.
#[derive(Clone, Debug, Default)]
pub(super) struct Teeth {
    done: VecDeque<Tooth>,
    /// The tooth under way: the level it started from (and when), when the level left it,
    /// its highest point (and when).
    low: f64,
    low_at: f64,
    left_at: Option<f64>,
    peak: f64,
    peak_at: f64,
    /// The tooth as it started after the last one closed (or the level's last low), before
    /// any plateau moved the base: a rise that pauses on its way up (an install writing
    /// package after package) is one tooth when its drop takes it all back.
    origin: Start,
    /// Where the level has stayed (within half a step) since when, and whether it has moved the
    /// base yet (once: a rise whose first steps are within half a step is no plateau's level).
    plateau: (f64, f64),
    plateau_based: bool,
    /// Previous sample, and the level a drop under way started from.
    last: Option<(f64, f64)>,
    falling_from: Option<f64>,
    dt_typical: f64,
    /// Teeth close only from their origin (see [`Teeth::outer`]).
    outer: bool,
}

/// Where a tooth started: its low (and when), when the level left it, its peak (and when).
#[derive(Clone, Copy, Debug, Default)]
struct Start {
    low: f64,
    low_at: f64,
    left_at: Option<f64>,
    peak: f64,
    peak_at: f64,
}

/// A locked pattern, as the trigger sees it (part of a [`super::Forecast`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    /// Teeth seen recently (at least [`LOCK_TEETH`]).
    pub teeth: usize,
    /// Median time between teeth, seconds.
    pub period_s: f64,
    /// P90 of the teeth's rises (nearest rank: the largest with fewer than ten), and the
    /// largest, bytes.
    pub amplitude_p90: f64,
    pub amplitude_max: f64,
    /// The longest rise, seconds.
    pub rise_max_s: f64,
    /// Net growth of the levels the teeth leave behind, bytes per second (0 unless it rises):
    /// over all the teeth kept, or the median step of the last few, whichever is faster.
    pub drift_bps: f64,
    /// The largest height of a peak above the level its tooth started from, bytes (with growth
    /// underneath, more than the drop takes back), and how fast the heights of the last teeth
    /// grow, bytes per second (0 unless they do).
    #[serde(default)]
    pub height_max: f64,
    #[serde(default)]
    pub height_growth_bps: f64,
    /// Height of the last tooth, bytes.
    #[serde(default)]
    pub height_last: f64,
    /// The level the tooth under way started from (used bytes), how far above it the level is
    /// now, and for how long it has been rising.
    pub base: f64,
    pub excursion: f64,
    pub excursion_s: f64,
    /// Typical sampling interval, seconds.
    pub sample_s: f64,
}

impl Teeth {
    /// A detector of the outer teeth of nested ones (an install that writes packages and runs
    /// test teeth on its way up, all removed at the end): a tooth closes only when a drop takes
    /// back half of the rise from its origin, the level the last outer tooth left, so the
    /// inner teeth (their drops take back less) are steps of the outer rise. On plain teeth it
    /// finds the same teeth as the default detector.
    pub fn outer() -> Teeth {
        Teeth {
            outer: true,
            ..Teeth::default()
        }
    }

    /// A sample: level `y` at `t`; `min_step` is the smallest change told apart from noise;
    /// `own`: a drop since the last sample is Guardian's own cleanup (never a tooth's end: a
    /// pattern learnt from our cleanups would forecast them away).
    pub fn push(&mut self, t: f64, y: f64, min_step: f64, own: bool) {
        let Some((t0, y0)) = self.last else {
            self.last = Some((t, y));
            self.restart(t, y);
            self.plateau = (t, y);
            return;
        };
        let dt = t - t0;
        if dt <= 0.0 || !y.is_finite() {
            return;
        }
        self.dt_typical = if self.dt_typical > 0.0 {
            0.9 * self.dt_typical + 0.1 * dt
        } else {
            dt
        };
        self.last = Some((t, y));
        if own && y < y0 {
            self.falling_from = None;
            self.restart(t, y);
            self.plateau = (t, y);
            return;
        }
        if y < y0 {
            // A drop (over one sample or several): judged when it ends.
            self.falling_from.get_or_insert(y0);
            return;
        }
        if let Some(from) = self.falling_from.take() {
            // The drop ended at `y0`: a tooth when it takes back at least half the rise —
            // since the last plateau, or since the origin when the drop went below that
            // plateau (the rise paused on its way up).
            let current = Start {
                low: self.low,
                low_at: self.low_at,
                left_at: self.left_at,
                peak: self.peak,
                peak_at: self.peak_at,
            };
            let closes = |s: &Start| {
                let rise = s.peak - s.low;
                rise > min_step && from - y0 > min_step && s.peak - y0 >= TAKEN_BACK * rise
            };
            let paused = self.outer || y0 < current.low - min_step;
            let start = if paused { self.origin } else { current };
            if let Some(s) = Some(start).filter(closes) {
                let rise = s.peak - s.low;
                let start = s.left_at.unwrap_or(s.low_at);
                self.done.push_back(Tooth {
                    start,
                    end: t0,
                    // What the drop took back: a file kept with the tooth is net growth.
                    amplitude: (s.peak - y0).min(rise),
                    height: rise,
                    after: y0,
                    rise_s: (s.peak_at - start).max(0.0),
                    paused,
                });
                if self.done.len() > KEPT {
                    self.done.pop_front();
                }
                self.restart(t0, y0);
            } else if y0
                < if self.outer {
                    self.origin.low
                } else {
                    self.low
                }
            {
                self.restart(t0, y0);
            }
        }
        // A level that stays put for as long as the longest plain rise seen (at least a few
        // samples) is the base the next tooth starts from (a file kept between teeth).
        if (y - self.plateau.1).abs() > 0.5 * min_step {
            self.plateau = (t, y);
            self.plateau_based = false;
        }
        let quiet = (3.0 * self.dt_typical).max(self.rise_plain());
        if t - self.plateau.0 >= quiet && !self.plateau_based {
            self.plateau_based = true;
            if y > self.low {
                self.rebase(t, y);
            }
        }
        if y > self.low + min_step && self.left_at.is_none() {
            self.left_at = Some(t0);
        }
        if y > self.origin.low + min_step && self.origin.left_at.is_none() {
            self.origin.left_at = Some(t0);
        }
        if y > self.peak {
            self.peak = y;
            self.peak_at = t;
        }
        if y > self.origin.peak {
            self.origin.peak = y;
            self.origin.peak_at = t;
        }
    }

    /// The next tooth starts from `y` at `t`.
    fn restart(&mut self, t: f64, y: f64) {
        self.rebase(t, y);
        self.origin = Start {
            low: y,
            low_at: t,
            left_at: None,
            peak: y,
            peak_at: t,
        };
    }

    /// A plateau at `y` since `t`: the base of the tooth under way (the origin stays).
    fn rebase(&mut self, t: f64, y: f64) {
        self.low = y;
        self.low_at = t;
        self.peak = y;
        self.peak_at = t;
        self.left_at = None;
    }

    /// The longest rise of the teeth that rose without a pause (closed from their plateau): a
    /// long rise with pauses (a build and its `clean`, an install) does not stretch the plateau
    /// that moves the base of the short ones.
    fn rise_plain(&self) -> f64 {
        self.done
            .iter()
            .filter(|t| !t.paused)
            .map(|t| t.rise_s)
            .fold(0.0, f64::max)
    }

    fn rise_max(&self) -> f64 {
        self.done.iter().map(|t| t.rise_s).fold(0.0, f64::max)
    }

    /// Whether the rise under way at `now` may be a tooth like those seen lately, locked
    /// pattern or not: one closed within [`STALE_PERIODS`] of its own length (rise to drop,
    /// at least a few samples), and the rise so far no larger than the teeth seen (however
    /// long it takes: a writer slowed down is still the same writer).
    pub fn resembles(&self, now: f64) -> bool {
        let Some(last) = self.done.back() else {
            return false;
        };
        let length = (last.end - last.start).max(3.0 * self.dt_typical);
        if now - last.end > STALE_PERIODS * length {
            return false;
        }
        let largest = self.done.iter().map(|t| t.amplitude).fold(0.0, f64::max);
        self.excursion().0 <= largest * (1.0 + SIZE_SLACK)
    }

    /// How far above the base the level is now, and for how long it has been rising.
    /// Measured from the base of the tooth under way: its origin when the last tooth rose with
    /// pauses (its plateaus are no base), else its last plateau.
    fn excursion(&self) -> (f64, f64) {
        let (low, left_at) = self.base();
        match self.last {
            Some((t, y)) => (
                (y - low).max(0.0),
                left_at.map_or(0.0, |l| (t - l).max(0.0)),
            ),
            None => (0.0, 0.0),
        }
    }

    /// The level the tooth under way started from, and when it left it.
    fn base(&self) -> (f64, Option<f64>) {
        if self.done.back().is_some_and(|t| t.paused) {
            (self.origin.low, self.origin.left_at)
        } else {
            (self.low, self.left_at)
        }
    }

    /// The locked pattern at `now`, if any.
    pub fn pattern(&self, now: f64) -> Option<Pattern> {
        let recent: Vec<&Tooth> = self.done.iter().collect();
        if recent.len() < LOCK_TEETH {
            return None;
        }
        let last = recent[recent.len() - 1];
        let mut intervals: Vec<f64> = recent.windows(2).map(|w| w[1].start - w[0].start).collect();
        // The pattern decays by its own gaps, not by the clock: forgotten once no tooth has
        // closed for `STALE_PERIODS` of the longest gap seen between teeth (a tool whose runs
        // are teeth and whose pauses between runs are minutes keeps its pattern over them).
        let longest = intervals.iter().copied().fold(0.0, f64::max);
        let period = stats::median(&mut intervals);
        let rise_max_s = self.rise_max();
        if now - last.end > STALE_PERIODS * longest.max(rise_max_s).max(self.dt_typical) {
            return None;
        }
        // Transient only while the last teeth each took back (nearly) all they wrote: the
        // level each left, less the one the previous left, is a small share of its rise.
        let lock = &recent[recent.len() - LOCK_TEETH..];
        if lock
            .windows(2)
            .any(|w| w[1].after - w[0].after > NET_MAX * w[1].amplitude)
        {
            return None;
        }
        // A cycle: the last teeth come at regular intervals (irregular temporary files are
        // the burst ledger's business, and no reason to hold back a trigger) — or, once twice
        // as many teeth have been seen, no further apart than the gaps seen before them (a
        // pattern of runs and pauses: a tool's teeth, then a pause as long as a pause before).
        let lock_intervals: Vec<f64> = lock.windows(2).map(|w| w[1].start - w[0].start).collect();
        let earlier = &recent[..recent.len() - LOCK_TEETH + 1];
        let seen_gap = earlier
            .windows(2)
            .map(|w| w[1].start - w[0].start)
            .fold(0.0, f64::max);
        let familiar = recent.len() >= 2 * LOCK_TEETH
            && lock_intervals
                .iter()
                .all(|i| *i <= (1.0 + REGULAR) * seen_gap);
        if !stats::regular(&lock_intervals, period, REGULAR) && !familiar {
            return None;
        }
        let mut amps: Vec<f64> = recent.iter().map(|t| t.amplitude).collect();
        let amplitude_max = amps.iter().copied().fold(0.0, f64::max);
        // Nearest rank: the largest with fewer than ten teeth.
        let amplitude_p90 = stats::nearest_rank(&mut amps, 0.9);
        let tail = &recent[recent.len().saturating_sub(RECENT)..];
        // A fill underneath raises every tooth's level a little, a file kept once raises one:
        // the rate over the teeth kept without their largest step, or the median of the last
        // teeth's steps, is the fill's rate, not the kept file's (which `base` already holds).
        let drift_bps =
            slope_but_largest_step(&recent, |t| t.after).max(robust_slope(tail, |t| t.after));
        let height_max = recent.iter().map(|t| t.height).fold(0.0, f64::max);
        let height_growth_bps = robust_slope(tail, |t| t.height);
        let (excursion, excursion_s) = self.excursion();
        Some(Pattern {
            teeth: recent.len(),
            period_s: period,
            amplitude_p90,
            amplitude_max,
            rise_max_s,
            drift_bps,
            height_max,
            height_growth_bps,
            height_last: last.height,
            base: self.base().0,
            excursion,
            excursion_s,
            sample_s: self.dt_typical,
        })
    }
}

/// How fast `value` moved over `teeth` (by their ends), per second, leaving out the one step
/// from a tooth to the next that rose most (a file kept once moves the level, it is no rate);
/// 0 unless it rose.
fn slope_but_largest_step(teeth: &[&Tooth], value: impl Fn(&Tooth) -> f64) -> f64 {
    let (mut rise, mut span, mut largest) = (0.0, 0.0, (0.0, 0.0));
    for w in teeth.windows(2) {
        let step = (value(w[1]) - value(w[0]), w[1].end - w[0].end);
        rise += step.0;
        span += step.1;
        if step.0 > largest.0 {
            largest = step;
        }
    }
    let (rise, span) = (rise - largest.0, span - largest.1);
    if span > 0.0 {
        (rise / span).max(0.0)
    } else {
        0.0
    }
}

/// The median of the slopes of `value` from each of `teeth` to the next (by their ends): a
/// trend every step shares (a fill underneath), not one step (a file kept once); 0 unless
/// positive, or with fewer than three teeth.
fn robust_slope(teeth: &[&Tooth], value: impl Fn(&Tooth) -> f64) -> f64 {
    if teeth.len() < 3 {
        return 0.0;
    }
    let mut slopes: Vec<f64> = teeth
        .windows(2)
        .map(|w| {
            let span = w[1].end - w[0].end;
            if span > 0.0 {
                (value(w[1]) - value(w[0])) / span
            } else {
                0.0
            }
        })
        .collect();
    stats::median(&mut slopes).max(0.0)
}

impl Pattern {
    /// Whether the rise under way is no larger (`SIZE_SLACK`) and no longer (`RISE_SLACK`
    /// times the longest rise, plus two samples) than the teeth seen: one of them so far.
    pub fn within(&self) -> bool {
        self.excursion <= self.largest() * (1.0 + SIZE_SLACK)
            && self.excursion_s <= RISE_SLACK * self.rise_max_s + 2.0 * self.sample_s
    }

    /// The largest tooth seen: its peak's height above its base.
    fn largest(&self) -> f64 {
        self.height_max.max(self.amplitude_max)
    }

    /// How high above its base a peak within the next `lead_s` may rise: the largest seen (a
    /// tooth larger than any seen is danger, `SIZE_SLACK` aside for sampling), or the last one
    /// grown at the trend of the heights (teeth that grow each time: a fill underneath).
    fn next_height(&self, lead_s: f64) -> f64 {
        let largest = self.largest() * (1.0 + SIZE_SLACK);
        let grown = self.height_last + self.height_growth_bps * (lead_s + self.period_s);
        largest.max(grown).max(self.excursion)
    }

    /// Whether a projected crossing of `threshold` (free bytes), with `free` bytes free now on
    /// a filesystem, is the pattern's own: the tooth under way is no larger and no longer than
    /// the teeth seen, and the next peaks stay above the threshold over `lead_s` — the base
    /// moved by the drift of the levels the teeth leave, the peak as high above it as the
    /// largest tooth seen or the last one grown at the heights' trend.
    pub fn holds(&self, free: f64, threshold: f64, lead_s: f64) -> bool {
        let within = self.within();
        let lead = lead_s.max(0.0);
        let free_at_base = free + self.excursion;
        let height = self.next_height(lead);
        let peak_free = free_at_base - self.drift_bps * lead - height;
        // A tooth whose drop does not come (a writer that goes on) is seen once it is larger
        // than that peak; it must not cross before a cleanup can run after that: teeth that
        // rise within the lead time (a writer that goes on at a tooth's speed is the reactive
        // path's case), or a peak far enough above the threshold for the lead time at the
        // teeth's rising speed.
        let rate = height / self.rise_max_s.max(self.sample_s).max(1e-9);
        let safe = self.rise_max_s <= lead || peak_free - threshold >= rate * lead;
        within && safe && peak_free > threshold
    }
}

#[cfg(test)]
#[path = "transient_tests.rs"]
mod tests;
