//! Bursts: growth that comes in jumps (an image pull, a build's artifacts, a core dump, a big
//! temporary file). Each burst is kept in a ledger with the bytes of it still on disk: a later
//! drop takes back the burst it removes (a file written then deleted, a log copied then
//! truncated), the most recent burst of about the drop's size if there is one, else the most
//! recent bursts first, up to the drop's size. What is left is growth that came in bursts.
//!
//! Bursts are rare next to samples, so their rate is measured over a window matched to the
//! horizon of the forecast ([`Ledger::window`]): a forecast a day ahead counts the bursts of at
//! least the last day, not those of the last few time constants of a trend, which may hold one
//! burst or none. One burst alone makes no rate: the largest of a window counts only as much as
//! the second largest.
//!
//! A burst also crosses a threshold by itself when it lands while the margin left is smaller
//! than it is: [`Passage`] gives the chance that this has happened by a given time, from the
//! sizes and the rate of the bursts of the window (kept or taken back since: a temporary file
//! crosses as well as a kept one).

use std::collections::VecDeque;

/// Bursts kept in the ledger, at most; older ones are forgotten (the windows then start at the
/// oldest one kept).
const KEPT: usize = 256;
/// A drop matches a burst when their sizes differ by at most this share of the drop.
const MATCH: f64 = 0.25;

#[derive(Clone, Copy, Debug)]
struct Burst {
    /// When it started, and its bytes as written (over one or more samples).
    t: f64,
    bytes: f64,
    /// Bytes not taken back by a later drop.
    kept: f64,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Ledger {
    bursts: VecDeque<Burst>,
    /// Since when every burst is in the ledger (the first sample, then the last one forgotten).
    since: Option<f64>,
}

/// The bursts of one window, as a rate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Window {
    /// Length of the window, seconds (0 before anything was observed).
    pub span: f64,
    /// Bytes kept per second, the largest burst counted at the size of the second largest.
    pub rate: f64,
    /// Its standard error (compound Poisson: √Σ size² over the span, sizes as in the rate).
    pub se: f64,
    /// Mean size of the kept bursts but the largest, bytes (0 with fewer than two).
    pub typical: f64,
}

impl Ledger {
    /// Observation starts (or goes on) at `t`.
    pub fn start(&mut self, t: f64) {
        self.since.get_or_insert(t);
    }

    /// A burst of `bytes` at `t`; `continued`: it goes on the burst of the previous sample
    /// (one burst written over several samples).
    pub fn burst(&mut self, t: f64, bytes: f64, continued: bool) {
        self.since.get_or_insert(t);
        match self.bursts.back_mut() {
            Some(b) if continued => {
                b.bytes += bytes;
                b.kept += bytes;
            }
            _ => self.bursts.push_back(Burst {
                t,
                bytes,
                kept: bytes,
            }),
        }
        while self.bursts.len() > KEPT {
            if let Some(old) = self.bursts.pop_front() {
                self.since = Some(old.t);
            }
        }
    }

    /// `bytes` of the latest burst were growth after all (a new writer's first samples): they
    /// leave the ledger, and the burst with them once nothing is left of it.
    pub fn retract(&mut self, bytes: f64) {
        let Some(b) = self.bursts.back_mut() else {
            return;
        };
        b.bytes -= bytes;
        b.kept = b.kept.min(b.bytes);
        if b.bytes <= 0.0 {
            self.bursts.pop_back();
        }
    }

    /// A drop of `bytes`: takes back the bursts it removes, at most its size; returns the
    /// bytes taken back.
    pub fn drop_bytes(&mut self, bytes: f64) -> f64 {
        if bytes <= 0.0 {
            return 0.0;
        }
        let mut left = bytes;
        // The file written and removed: the most recent burst of about this size first…
        let matched = self
            .bursts
            .iter_mut()
            .rev()
            .find(|b| b.kept > 0.0 && (b.kept - bytes).abs() <= MATCH * bytes);
        if let Some(b) = matched {
            let take = b.kept.min(left);
            b.kept -= take;
            left -= take;
        }
        // …then the most recent first.
        for b in self.bursts.iter_mut().rev() {
            if left <= 0.0 {
                break;
            }
            let take = b.kept.min(left);
            b.kept -= take;
            left -= take;
        }
        bytes - left
    }

    /// No burst seen yet.
    pub fn is_empty(&self) -> bool {
        self.bursts.is_empty()
    }

    /// The window of (at most) `span` seconds ending at `now`, shortened to what the ledger
    /// covers.
    fn range(&self, now: f64, span: f64) -> (f64, impl Iterator<Item = &Burst> + '_) {
        let span = self.since.map_or(0.0, |s| span.min(now - s).max(0.0));
        let from = now - span;
        let bursts = self.bursts.iter().rev().take_while(move |b| b.t > from);
        (span, bursts)
    }

    /// The kept bursts of the last `span` seconds before `now` as a rate.
    pub fn window(&self, now: f64, span: f64) -> Window {
        let (span, bursts) = self.range(now, span);
        if span <= 0.0 {
            return Window::default();
        }
        let (mut sum, mut sq, mut n, mut top1, mut top2) = (0.0, 0.0, 0.0, 0.0f64, 0.0f64);
        for b in bursts.filter(|b| b.kept > 0.0) {
            sum += b.kept;
            sq += b.kept * b.kept;
            n += b.kept / b.bytes;
            if b.kept > top1 {
                top2 = top1;
                top1 = b.kept;
            } else {
                top2 = top2.max(b.kept);
            }
        }
        Window {
            span,
            rate: (sum - top1 + top2).max(0.0) / span,
            se: (sq - top1 * top1 + top2 * top2).max(0.0).sqrt() / span,
            typical: if n > 1.5 {
                (sum - top1).max(0.0) / (n - 1.0)
            } else {
                0.0
            },
        }
    }

    /// The sizes of the bursts of the last `span` seconds before `now`, as written (kept or
    /// taken back since), and the length of the window.
    pub fn sizes(&self, now: f64, span: f64) -> (f64, Vec<f64>) {
        let (span, bursts) = self.range(now, span);
        (span, bursts.map(|b| b.bytes).collect())
    }
}

/// First passage by a burst: a burst that lands while the margin left is smaller than itself
/// crosses at once. Bursts of the sizes of a window each land at the rate of one per window,
/// the margin shrinking at the growth rate; one burst alone is no rate, so the largest counts
/// at the size of the second largest.
#[derive(Clone, Debug)]
pub(super) struct Passage {
    /// When each burst size can cross (the margin has shrunk to it), seconds from now, sorted.
    starts: Vec<f64>,
    span: f64,
}

impl Passage {
    /// `sizes` of the bursts of a window of `span` seconds; `margin` bytes left, shrinking at
    /// `rate`. `None` when no burst can ever cross.
    pub fn new(sizes: &[f64], span: f64, margin: f64, rate: f64) -> Option<Passage> {
        let mut starts: Vec<f64> = sizes
            .iter()
            .filter(|s| **s > 0.0)
            .filter_map(|&s| {
                if s >= margin {
                    Some(0.0)
                } else if rate > 0.0 {
                    Some((margin - s) / rate)
                } else {
                    None
                }
            })
            .collect();
        if span <= 0.0 || starts.len() < 2 {
            return None;
        }
        starts.sort_by(f64::total_cmp);
        starts[0] = starts[1];
        Some(Passage { starts, span })
    }

    /// Cumulative hazard by `t` (the probability that no burst has crossed is `exp(-H)`).
    pub fn hazard(&self, t: f64) -> f64 {
        self.starts.iter().map(|a| (t - a).max(0.0)).sum::<f64>() / self.span
    }

    /// The time by which a burst has crossed with probability `p`.
    pub fn time(&self, p: f64) -> f64 {
        let q = -(1.0 - p.clamp(0.0, 1.0 - 1e-12)).ln() * self.span;
        // Σ (t − a_i)⁺ = q, piecewise linear: walk the starts.
        let (mut h, mut at) = (0.0, self.starts[0]);
        for (k, &a) in self.starts.iter().enumerate().skip(1) {
            let active = k as f64;
            if h + active * (a - at) >= q {
                return at + (q - h) / active;
            }
            h += active * (a - at);
            at = a;
        }
        at + (q - h) / self.starts.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_takes_back_the_burst_of_its_size_first() {
        let mut l = Ledger::default();
        l.start(0.0);
        l.burst(100.0, 30.0, false); // a temporary file
        l.burst(200.0, 5.0, false); // kept
        assert_eq!(l.drop_bytes(29.0), 29.0);
        assert_eq!(l.drop_bytes(1.0), 1.0);
        let w = l.window(300.0, 1e9);
        // Two bursts as written, one kept: one alone makes no rate.
        assert_eq!((w.span, w.rate), (300.0, 0.0));
        l.burst(250.0, 7.0, false);
        let w = l.window(300.0, 1e9);
        assert!((w.rate - 10.0 / 300.0).abs() < 1e-12, "{w:?}");
        // A drop of no burst's size takes back the most recent first.
        assert_eq!(l.drop_bytes(100.0), 12.0);
        assert_eq!(l.window(300.0, 1e9).rate, 0.0);
    }

    #[test]
    fn a_burst_over_several_samples_is_one() {
        let mut l = Ledger::default();
        l.start(0.0);
        l.burst(10.0, 4.0, false);
        l.burst(11.0, 4.0, true);
        l.burst(20.0, 2.0, false);
        let w = l.window(40.0, 100.0);
        // 8 and 2: the largest counted as 2.
        assert!((w.rate - 4.0 / 40.0).abs() < 1e-12, "{w:?}");
        assert_eq!(w.typical, 2.0);
        // A window that starts after the first burst.
        assert_eq!(l.window(40.0, 25.0).rate, 0.0);
    }

    #[test]
    fn first_passage_of_bursts() {
        let ln2 = std::f64::consts::LN_2;
        // Two bursts of 10 in 100 s, margin 5: both can cross at once; H = 2t/100 (the
        // largest counted as the second): P(t) = 1 − e^(−t/50).
        let p = Passage::new(&[10.0, 10.0], 100.0, 5.0, 0.0).expect("can cross");
        assert!((p.time(0.5) - 50.0 * ln2).abs() < 1e-9);
        assert!((p.hazard(50.0 * ln2) - ln2).abs() < 1e-9);
        // One burst alone: none; bursts smaller than a margin that does not shrink: none.
        assert!(Passage::new(&[10.0], 100.0, 5.0, 0.0).is_none());
        assert!(Passage::new(&[1.0, 1.0], 100.0, 5.0, 0.0).is_none());
        // A shrinking margin brings them in: from (5 − 1) / 0.1 = 40 s on.
        let p = Passage::new(&[1.0, 1.0], 100.0, 5.0, 0.1).expect("can cross");
        assert!((p.time(0.5) - 40.0 - 50.0 * ln2).abs() < 1e-9);
        // The largest counts as the second: 30 and 9 cross from 10 s on (not 30 from now),
        // 3 from 70 s on.
        let p = Passage::new(&[30.0, 3.0, 9.0], 100.0, 10.0, 0.1).expect("can cross");
        assert_eq!(p.hazard(10.0), 0.0);
        assert!((p.hazard(80.0) - (70.0 + 70.0 + 10.0) / 100.0).abs() < 1e-9);
        let t = p.time(0.5);
        assert!((p.hazard(t) - ln2).abs() < 1e-9, "{t}");
    }
}
