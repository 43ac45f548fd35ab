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
            let paused = y0 < current.low - min_step;
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
            } else if y0 < self.low {
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
mod tests {
    use super::*;

    const MB: f64 = 1e6;
    /// Issue 17's tooth.
    const TOOTH: Shape = Shape {
        amp: 120.0 * MB,
        rise: 3.0,
        rest: 5.0,
    };

    /// A sawtooth sampled every `dt`: from `base`, `amp` written over `rise` seconds, deleted
    /// at once, then `rest` seconds flat; `teeth` of them from `t0`. Returns the end time.
    /// Shape of a sawtooth: `amp` written over `rise` seconds, deleted at once, then `rest`
    /// seconds flat.
    #[derive(Clone, Copy)]
    struct Shape {
        amp: f64,
        rise: f64,
        rest: f64,
    }

    fn sawtooth(d: &mut Teeth, t0: f64, dt: f64, base: f64, shape: &Shape, teeth: usize) -> f64 {
        let Shape { amp, rise, rest } = *shape;
        let period = rise + dt + rest;
        let mut t = t0;
        while t < t0 + period * teeth as f64 {
            let phase = (t - t0) % period;
            let y = if phase < rise {
                base + amp * phase / rise
            } else if phase < rise + dt {
                base + amp
            } else {
                base
            };
            d.push(t, y, MB, false);
            t += dt;
        }
        t
    }

    #[test]
    fn locks_on_within_three_periods_at_any_period() {
        // 0.25 s samples with 8 s teeth, up to a minute's samples with daily teeth.
        for (dt, rise, rest) in [
            (0.25, 3.0, 5.0),
            (1.0, 20.0, 40.0),
            (10.0, 600.0, 3000.0),
            (60.0, 6.0 * 3600.0, 18.0 * 3600.0),
        ] {
            let mut d = Teeth::default();
            let end = sawtooth(
                &mut d,
                0.0,
                dt,
                500.0 * MB,
                &Shape {
                    amp: 120.0 * MB,
                    rise,
                    rest,
                },
                2,
            );
            assert!(
                d.pattern(end).is_none(),
                "two teeth are no pattern yet ({dt})"
            );
            let end = sawtooth(
                &mut d,
                end,
                dt,
                500.0 * MB,
                &Shape {
                    amp: 120.0 * MB,
                    rise,
                    rest,
                },
                1,
            );
            let p = d
                .pattern(end)
                .unwrap_or_else(|| panic!("locked after three ({dt}, {rise})"));
            assert_eq!(p.teeth, 3);
            let period = rise + dt + rest;
            assert!((p.period_s - period).abs() <= 2.0 * dt, "{p:?}");
            assert!(
                (p.amplitude_p90 - 120.0 * MB).abs() <= 120.0 * MB * dt / rise + 1.0,
                "{p:?}"
            );
            assert!(
                (p.rise_max_s - rise).abs() <= 2.0 * dt + 0.02 * rise,
                "{p:?}"
            );
            assert_eq!(p.drift_bps, 0.0);
            // Stale after a few periods without a tooth.
            assert!(d.pattern(end + 5.0 * period).is_none());
        }
    }

    #[test]
    fn the_pattern_holds_while_a_peak_stays_above_the_threshold() {
        let mut d = Teeth::default();
        let end = sawtooth(&mut d, 0.0, 0.25, 500.0 * MB, &TOOTH, 4);
        // Mid-tooth: 60 MB up after 1.5 s.
        let mut t = end;
        for k in 0..=6 {
            d.push(t, 500.0 * MB + 10.0 * MB * k as f64, MB, false);
            t += 0.25;
        }
        let p = d.pattern(t).expect("locked");
        assert!((p.excursion - 60.0 * MB).abs() < 1.0, "{p:?}");
        // 365 MB free at the base, 305 now: a peak as large as the largest seen (5 % more for
        // sampling) leaves 239 MB; threshold 215 MB holds, 240 MB does not.
        assert!(p.holds(305.0 * MB, 215.0 * MB, 8.0));
        assert!(p.holds(305.0 * MB, 238.0 * MB, 8.0));
        assert!(!p.holds(305.0 * MB, 240.0 * MB, 8.0));
        // A rise larger than any tooth: danger.
        let mut big = p.clone();
        big.excursion = 130.0 * MB;
        assert!(!big.holds(235.0 * MB, 100.0 * MB, 8.0));
        // A rise longer than any tooth's (a steady fill): danger.
        let mut long = p.clone();
        long.excursion_s = 6.0;
        assert!(!long.holds(305.0 * MB, 100.0 * MB, 8.0));
        // Teeth rising for longer than the lead time are trusted only with room for a drop
        // that does not come: 42 MB/s × (2 s + half the 3 s rise) = 147 MB above the peak.
        assert!(!p.holds(305.0 * MB, 215.0 * MB, 2.0));
        assert!(p.holds(305.0 * MB, 90.0 * MB, 2.0));
        // Drift over the lead time counts.
        let mut drifting = p;
        drifting.drift_bps = 5.0 * MB;
        assert!(!drifting.holds(305.0 * MB, 215.0 * MB, 8.0));
    }

    #[test]
    fn a_tooth_larger_than_the_p90_tooth_is_danger() {
        // One tooth of 120 MB among fifteen of 100 MB: the nearest-rank P90 is 100 MB, but the
        // next may be as large as the largest.
        let mut d = Teeth::default();
        let mut t = sawtooth(&mut d, 0.0, 0.25, 500.0 * MB, &TOOTH, 1);
        let small = Shape {
            amp: 100.0 * MB,
            ..TOOTH
        };
        t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &small, 15);
        let p = d.pattern(t).expect("locked");
        assert!((p.amplitude_p90 - 100.0 * MB).abs() < 1.0, "{p:?}");
        // At rest, 400 MB free: a 120 MB peak leaves 280 MB.
        assert!(!p.holds(400.0 * MB, 285.0 * MB, 8.0));
        assert!(p.holds(400.0 * MB, 270.0 * MB, 8.0));
    }

    #[test]
    fn teeth_that_grow_each_time_are_danger_before_they_pass_the_largest() {
        // Teeth of 60, 70 … 120 MB every 8.25 s: the next is ~130 MB, and the one after
        // ~140 MB, though none larger than 120 MB has been seen.
        let mut d = Teeth::default();
        let mut t = 0.0;
        for k in 0..7 {
            let shape = Shape {
                amp: (60.0 + 10.0 * f64::from(k)) * MB,
                ..TOOTH
            };
            t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &shape, 1);
        }
        let p = d.pattern(t).expect("locked");
        assert!(p.height_growth_bps > 1.0 * MB, "{p:?}");
        // 400 MB free at rest: the largest seen (plus 5 %) leaves 274 MB, the grown tooth
        // ~260 MB.
        assert!(!p.holds(400.0 * MB, 272.0 * MB, 8.0));
        assert!(p.holds(400.0 * MB, 250.0 * MB, 8.0));
        // Equal teeth do not grow.
        let mut d = Teeth::default();
        let t = sawtooth(&mut d, 0.0, 0.25, 500.0 * MB, &TOOTH, 7);
        let p = d.pattern(t).expect("locked");
        assert!(p.height_growth_bps < 0.01 * MB, "{p:?}");
    }

    /// npm ci-like: from `base`, 64 MB written in four steps of 16 MB, each followed by a
    /// 5 s pause, then deleted; one tooth every 30 s from `t`.
    fn paused_tooth(d: &mut Teeth, mut t: f64, base: f64) -> f64 {
        for step in 1..=4 {
            for _ in 0..20 {
                d.push(t, base + 16.0 * MB * f64::from(step), MB, false);
                t += 0.25;
            }
        }
        for _ in 0..40 {
            d.push(t, base, MB, false);
            t += 0.25;
        }
        t
    }

    #[test]
    fn a_rise_that_pauses_on_its_way_up_is_one_tooth() {
        let mut d = Teeth::default();
        let mut t = 0.0;
        for _ in 0..4 {
            t = paused_tooth(&mut d, t, 500.0 * MB);
        }
        let p = d.pattern(t).expect("locked");
        assert!((p.height_max - 64.0 * MB).abs() < 1.0, "{p:?}");
        // Halfway up the next one, after a pause: within the pattern, measured from its base.
        for _ in 0..40 {
            d.push(t, 532.0 * MB, MB, false);
            t += 0.25;
        }
        let p = d.pattern(t).expect("locked");
        assert!((p.excursion - 32.0 * MB).abs() < 1.0, "{p:?}");
        assert!(p.within(), "{p:?}");
    }

    #[test]
    fn runs_of_teeth_keep_their_pattern_over_pauses_like_those_seen() {
        // Runs of three teeth 8.25 s apart, 100 s of quiet between runs.
        let mut d = Teeth::default();
        let mut t = 0.0;
        for _ in 0..3 {
            t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &TOOTH, 3);
            for _ in 0..400 {
                d.push(t, 500.0 * MB, MB, false);
                t += 0.25;
            }
        }
        // The first tooth of the fourth run: the pause before it was as long as those seen.
        t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &TOOTH, 1);
        assert!(d.pattern(t).is_some(), "forgotten over a familiar pause");
        // Three teeth with nothing seen before them are no pattern when irregular.
        let mut d = Teeth::default();
        let mut t = sawtooth(&mut d, 0.0, 0.25, 500.0 * MB, &TOOTH, 2);
        for _ in 0..400 {
            d.push(t, 500.0 * MB, MB, false);
            t += 0.25;
        }
        t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &TOOTH, 1);
        assert!(d.pattern(t).is_none());
    }

    #[test]
    fn growth_with_drops_is_not_transient_and_a_steady_fill_makes_no_tooth() {
        // Each drop takes back only a third: growth, not a pattern.
        let mut d = Teeth::default();
        let mut t = 0.0;
        let mut base = 0.0;
        for _ in 0..6 {
            for k in 0..12 {
                d.push(t, base + 10.0 * MB * k as f64, MB, false);
                t += 1.0;
            }
            base += 80.0 * MB;
            d.push(t, base, MB, false);
            t += 1.0;
        }
        assert!(d.pattern(t).is_none());
        let mut d = Teeth::default();
        for k in 0..1000 {
            d.push(k as f64, 20.0 * MB * k as f64, MB, false);
        }
        assert!(d.pattern(1000.0).is_none());
    }

    #[test]
    fn irregular_teeth_are_no_pattern() {
        let mut d = Teeth::default();
        let mut t = 0.0;
        for rest in [5.0, 60.0, 2.0, 30.0] {
            t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &Shape { rest, ..TOOTH }, 1);
        }
        assert!(d.pattern(t).is_none());
    }

    #[test]
    fn our_own_cleanups_are_no_teeth() {
        // A fill, then Guardian's cleanup, five times: no pattern.
        let mut d = Teeth::default();
        let mut t = 0.0;
        for _ in 0..5 {
            for k in 0..12 {
                d.push(t, 500.0 * MB + 10.0 * MB * k as f64, MB, false);
                t += 0.25;
            }
            d.push(t, 500.0 * MB, MB, true);
            t += 0.25;
            for _ in 0..20 {
                d.push(t, 500.0 * MB, MB, false);
                t += 0.25;
            }
        }
        assert!(d.pattern(t).is_none());
    }

    #[test]
    fn a_file_kept_between_teeth_moves_the_base() {
        let mut d = Teeth::default();
        let end = sawtooth(&mut d, 0.0, 0.25, 500.0 * MB, &TOOTH, 4);
        // 19 MB kept, then the level rests: the next tooth starts from there.
        let mut t = end;
        for _ in 0..14 {
            d.push(t, 519.0 * MB, MB, false);
            t += 0.25;
        }
        let end = sawtooth(&mut d, t, 0.25, 519.0 * MB, &TOOTH, 2);
        let p = d.pattern(end).expect("still locked");
        assert!((p.amplitude_max - 120.0 * MB).abs() < 1.0, "{p:?}");
        assert!((p.base - 519.0 * MB).abs() < 1.0, "{p:?}");
        // The kept file is in the base, not a rate: the next peak is judged from the base
        // alone (1 pp of a 1 GiB disk above the threshold holds).
        assert_eq!(p.drift_bps, 0.0, "{p:?}");
        let threshold = 215.0 * MB;
        let free_at_peak = threshold + 10.7 * MB;
        let free = free_at_peak + 120.0 * MB - p.excursion;
        assert!(p.holds(free, threshold, 7.0), "{p:?}");
    }

    #[test]
    fn a_rise_whose_first_step_is_within_the_noise_starts_from_the_rest_level() {
        // Steps of 10 MB per sample, under half of a 25 MB noise step: the tooth's first file
        // is no plateau's level, however long the rest before it was.
        let mut d = Teeth::default();
        let mut t = 0.0;
        let rest = 500.0 * MB;
        for _ in 0..5 {
            for k in 0..=12 {
                d.push(t, rest + 10.0 * MB * k as f64, 25.0 * MB, false);
                t += 0.25;
            }
            for _ in 0..20 {
                d.push(t, rest, 25.0 * MB, false);
                t += 0.25;
            }
        }
        for k in 0..=5 {
            d.push(t, rest + 10.0 * MB * k as f64, 25.0 * MB, false);
            t += 0.25;
        }
        let p = d.pattern(t).expect("locked");
        assert!((p.base - rest).abs() < 1.0, "{p:?}");
        assert!((p.excursion - 50.0 * MB).abs() < 1.0, "{p:?}");
        assert!((p.height_max - 120.0 * MB).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn a_fill_under_the_teeth_is_a_drift_also_with_a_kept_file_among_its_steps() {
        // 2 MB kept after every tooth (a fill underneath), and 19 MB once.
        let mut d = Teeth::default();
        let mut t = 0.0;
        let mut base = 500.0 * MB;
        for k in 0..8 {
            t = sawtooth(&mut d, t, 0.25, base, &TOOTH, 1);
            base += if k == 4 { 21.0 * MB } else { 2.0 * MB };
            for _ in 0..4 {
                d.push(t, base, MB, false);
                t += 0.25;
            }
        }
        let p = d.pattern(t).expect("locked");
        // Each tooth: its shape, one sample at the peak, and the second at the kept level.
        let period = TOOTH.rise + 0.25 + TOOTH.rest + 1.0;
        let fill = 2.0 * MB / period;
        assert!((p.drift_bps - fill).abs() < 0.2 * fill, "{p:?} vs {fill}");
    }
}
