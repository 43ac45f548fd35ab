//! Periodic cleanups done by someone else (a cron job wiping a scratch area, daily log
//! rotation): once the drops come at regular intervals, a forecast that reaches past the next
//! expected drop continues from the level the drop leaves, instead of extrapolating the fill
//! through it.
//!
//! An *episode* is a cluster of events (bursts and drops less than a few samples apart, e.g.
//! copytruncate's copy, truncate and gzip) whose net effect is a drop. Three or more episodes
//! whose intervals agree within `REGULAR` of their median make a cycle.

use super::stats;
use std::collections::VecDeque;

/// Episodes kept, and the last big ones the cycle is judged on (the intervals between them).
const KEPT: usize = 16;
const USED: usize = 6;
/// Standard errors the drift must exceed to be believed.
const DRIFT_T: f64 = 1.6;
/// An episode is big when it drops at least this share of the largest kept one.
const BIG: f64 = 1.0 / 3.0;
/// Largest relative deviation of an interval from the median interval in a regular cycle.
const REGULAR: f64 = 0.25;
/// Lateness of the next drop P90 allows for, at least (share of the period)…
const MIN_SLACK: f64 = 0.02;
/// …or this many standard deviations of the intervals.
const LATE_Z: f64 = 1.2816;

#[derive(Clone, Copy, Debug)]
struct Episode {
    start: f64,
    end: f64,
    /// Used bytes before the first event, at the highest point, after the last event.
    before: f64,
    peak: f64,
    after: f64,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Cycles {
    done: VecDeque<Episode>,
    open: Option<Episode>,
}

/// An established cycle, as seen at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Cycle {
    pub period: f64,
    /// When the next drop is due, and the latest it is still expected (P90).
    pub next: f64,
    pub next_late: f64,
    /// Level the last drop left, and how that level moves from one cycle to the next.
    pub base: f64,
    pub drift: f64,
    /// How far above the fill the highest point of an episode goes (copytruncate's copy).
    pub overshoot: f64,
    /// A drop is under way: its highest point is already in the level.
    pub in_progress: bool,
}

impl Cycles {
    /// An event at `t` took used bytes from `before` to `after`; `gap` is the largest time
    /// between two events of one episode.
    pub fn event(&mut self, t: f64, before: f64, after: f64, gap: f64) {
        match &mut self.open {
            Some(e) if t - e.end <= gap => {
                e.end = t;
                e.peak = e.peak.max(after);
                e.after = after;
            }
            _ => {
                self.close();
                self.open = Some(Episode {
                    start: t,
                    end: t,
                    before,
                    peak: before.max(after),
                    after,
                });
            }
        }
    }

    /// Called on every sample: closes the open episode once `gap` has passed without events.
    pub fn tick(&mut self, t: f64, gap: f64) {
        if self.open.is_some_and(|e| t - e.end > gap) {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Some(e) = self.open.take() {
            if e.after < e.before {
                self.done.push_back(e);
                if self.done.len() > KEPT {
                    self.done.pop_front();
                }
            }
        }
    }

    /// The cycle, if the last episodes are regular and the next drop is not overdue at `now`.
    pub fn at(&self, now: f64) -> Option<Cycle> {
        // The episode under way counts as soon as it is a drop.
        let all = self
            .done
            .iter()
            .chain(self.open.iter().filter(|e| e.drop() > 0.0));
        // Small drops (noise, a temporary file removed) are no part of a cycle: only the
        // episodes that drop at least a third as much as the largest kept one.
        let largest = all.clone().map(Episode::drop).fold(0.0, f64::max);
        let big: Vec<&Episode> = all.filter(|e| e.drop() >= BIG * largest).collect();
        let eps = &big[big.len().saturating_sub(USED)..];
        if eps.len() < 3 {
            return None;
        }
        let intervals: Vec<f64> = eps.windows(2).map(|w| w[1].start - w[0].start).collect();
        let period = stats::median(&mut intervals.clone());
        if !stats::regular(&intervals, period, REGULAR) {
            return None;
        }
        let deviation = stats::max_deviation(&intervals, period);
        let jitter = stats::rms_deviation(&intervals, period);
        let last = eps[eps.len() - 1];
        // Episodes after the last big one (small drops since) do not move the schedule.
        let next = last.start + period;
        // P90 allows the next drop to be this late (its P90 lateness, at least a small share of
        // the period); past that, or past the largest deviation seen, the drop is overdue and
        // there is no cycle until it is re-established.
        let next_late = next + (MIN_SLACK * period).max(LATE_Z * jitter);
        if now > next_late.max(next + deviation) {
            return None;
        }
        // Drift per period: the least-squares slope of the levels the drops left (one level
        // is as noisy as the disk; a line through several is not), kept only when it stands
        // out of its standard error (`DRIFT_T` of them: about 90 % one-sided with 4–6 drops).
        let n = eps.len() as f64;
        let xm = eps.iter().map(|e| e.start).sum::<f64>() / n;
        let ym = eps.iter().map(|e| e.after).sum::<f64>() / n;
        let sxx: f64 = eps.iter().map(|e| (e.start - xm).powi(2)).sum();
        let sxy: f64 = eps.iter().map(|e| (e.start - xm) * (e.after - ym)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let ssr: f64 = eps
            .iter()
            .map(|e| (e.after - ym - slope * (e.start - xm)).powi(2))
            .sum();
        let se = if n > 2.0 && sxx > 0.0 {
            (ssr / (n - 2.0) / sxx).sqrt()
        } else {
            f64::INFINITY
        };
        let drift = if slope > DRIFT_T * se {
            slope * period
        } else {
            0.0
        };
        // The level the last drop left, on that line.
        let base = ym + slope * (last.start - xm);
        let mut over: Vec<f64> = eps.iter().map(|e| e.peak - e.before).collect();
        let overshoot = stats::median(&mut over).max(0.0);
        Some(Cycle {
            period,
            next,
            next_late,
            base,
            drift,
            overshoot,
            in_progress: self.open.is_some(),
        })
    }
}

impl Episode {
    fn drop(&self) -> f64 {
        self.before - self.after
    }
}

impl Cycle {
    /// Time from `now` until used bytes reach `used_now + margin`, growing at `rate` between
    /// drops, the next drop coming at `next` (or `next_late`), later ones one period apart.
    pub fn eta(&self, now: f64, used_now: f64, margin: f64, rate: f64, late: bool) -> Option<f64> {
        if margin <= 0.0 {
            return Some(0.0);
        }
        let until_drop = ((if late { self.next_late } else { self.next }) - now).max(0.0);
        if rate > 0.0 && margin / rate <= until_drop {
            return Some(margin / rate);
        }
        let target = used_now + margin;
        // The episode's highest point (the copy of copytruncate) can cross by itself.
        let overshoot = if self.in_progress {
            0.0
        } else {
            self.overshoot
        };
        if used_now + rate.max(0.0) * until_drop + overshoot >= target {
            // Crossed at the drop itself: pessimistic is the drop coming early.
            let early = self.next - (self.next_late - self.next);
            return Some((if late { early } else { self.next } - now).max(0.0));
        }
        if rate <= 0.0 {
            return None;
        }
        // Cycle j ≥ 1 starts at base + j·drift and fills for one period.
        let fill = rate * self.period + self.overshoot;
        let j = if self.base + self.drift + fill >= target {
            1.0
        } else if self.drift > 0.0 {
            ((target - fill - self.base) / self.drift).ceil().max(1.0)
        } else {
            return None;
        };
        let base_j = self.base + j * self.drift;
        let within = ((target - base_j) / rate).clamp(0.0, self.period);
        Some(until_drop + (j - 1.0) * self.period + within)
    }
}
