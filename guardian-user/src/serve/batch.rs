//! When the relay hands events on to the clients: the first event after a quiet spell at once
//! (a crossing reaches every client without delay), whatever follows it within [`HOLD`]
//! together when the hold ends (then a new hold starts), and an event that ends a burst (a
//! cycle's `cleanup_finished`) at once with everything held before it, ending the hold. Each
//! hand-on costs every client one write — a loopback TCP send is most of what the server spends
//! per client — so while a cleanup cycle runs its clients are written to once, at its start
//! (and once per [`HOLD`] in a long cycle), and once more when it has ended.
//! Pure: the caller passes the clock.
//!
//! Invariants: order is kept; an item waits at most [`HOLD`] (the caller wakes at
//! [`Batch::deadline`]); at most `limit` items are held (a full hold is handed on at once).

use std::time::{Duration, Instant};

/// How long events that follow a sent one are held to go out together.
pub(super) const HOLD: Duration = Duration::from_millis(250);

/// Items held back, and until when.
pub(super) struct Batch<T> {
    hold: Duration,
    limit: usize,
    /// The end of the current hold (a hold starts when something is handed on).
    until: Option<Instant>,
    held: Vec<T>,
}

impl<T> Batch<T> {
    pub(super) fn new(hold: Duration, limit: usize) -> Batch<T> {
        Batch {
            hold,
            limit: limit.max(1),
            until: None,
            held: Vec::new(),
        }
    }

    /// `item` arrived at `now`: what to hand on now, in order (nothing while a hold runs,
    /// unless the item `ends` a burst: then everything, and the hold is over).
    pub(super) fn arrived(&mut self, item: T, ends: bool, now: Instant) -> Vec<T> {
        match self.until {
            _ if ends => {
                let mut out = std::mem::take(&mut self.held);
                out.push(item);
                self.until = None;
                out
            }
            Some(until) if now < until => {
                self.held.push(item);
                if self.held.len() >= self.limit {
                    return std::mem::take(&mut self.held);
                }
                Vec::new()
            }
            _ => {
                // A quiet spell, or a hold that ended before its wake-up came: what was held
                // goes first.
                let mut out = std::mem::take(&mut self.held);
                out.push(item);
                self.until = Some(now + self.hold);
                out
            }
        }
    }

    /// When the caller must call [`Batch::due`]: the end of a hold that holds something.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.held.is_empty() {
            None
        } else {
            self.until
        }
    }

    /// The clock reached `now`: what a hold that ended held (and a new hold starts if it held
    /// anything, so a steady stream goes out once per hold).
    pub(super) fn due(&mut self, now: Instant) -> Vec<T> {
        match self.until {
            Some(until) if now >= until => {}
            _ => return Vec::new(),
        }
        let out = std::mem::take(&mut self.held);
        self.until = if out.is_empty() {
            None
        } else {
            Some(now + self.hold)
        };
        out
    }

    /// Everything held, at once (the relay is stopping).
    pub(super) fn drain(&mut self) -> Vec<T> {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_event_after_a_quiet_spell_goes_at_once_and_the_rest_of_the_hold_together() {
        let t0 = Instant::now();
        let mut b = Batch::new(50 * MS, 100);
        assert_eq!(b.deadline(), None);
        assert_eq!(b.arrived("crossed", false, t0), vec!["crossed"]);
        assert_eq!(b.deadline(), None, "nothing held yet");
        assert!(b.arrived("started", false, t0 + MS).is_empty());
        assert!(b.arrived("action", false, t0 + 20 * MS).is_empty());
        assert_eq!(b.deadline(), Some(t0 + 50 * MS));
        assert!(b.due(t0 + 49 * MS).is_empty(), "the hold has not ended");
        assert_eq!(b.due(t0 + 50 * MS), vec!["started", "action"]);
        // A new hold started at 50 ms: the next event within it waits for its end.
        assert!(b.arrived("finished", false, t0 + 60 * MS).is_empty());
        assert_eq!(b.deadline(), Some(t0 + 100 * MS));
        assert_eq!(b.due(t0 + 100 * MS), vec!["finished"]);
        // A hold that ends holding nothing ends the spell: the next event goes at once.
        assert!(b.due(t0 + 150 * MS).is_empty());
        assert_eq!(b.deadline(), None);
        assert_eq!(b.arrived("next", false, t0 + 151 * MS), vec!["next"]);
    }

    #[test]
    fn the_end_of_a_burst_goes_at_once_with_what_was_held_and_ends_the_hold() {
        let t0 = Instant::now();
        let mut b = Batch::new(250 * MS, 100);
        assert_eq!(b.arrived("crossed", false, t0), vec!["crossed"]);
        assert!(b.arrived("started", false, t0 + MS).is_empty());
        assert!(b.arrived("action", false, t0 + 20 * MS).is_empty());
        assert_eq!(
            b.arrived("finished", true, t0 + 45 * MS),
            vec!["started", "action", "finished"]
        );
        assert_eq!(b.deadline(), None);
        assert_eq!(b.arrived("ok", false, t0 + 46 * MS), vec!["ok"]);
    }

    #[test]
    fn what_a_hold_held_goes_first_when_its_wake_up_comes_late() {
        let t0 = Instant::now();
        let mut b = Batch::new(50 * MS, 100);
        assert_eq!(b.arrived(1, false, t0), vec![1]);
        assert!(b.arrived(2, false, t0 + 10 * MS).is_empty());
        assert_eq!(b.arrived(3, false, t0 + 70 * MS), vec![2, 3]);
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn a_full_hold_is_handed_on_at_once_in_order() {
        let t0 = Instant::now();
        let mut b = Batch::new(50 * MS, 3);
        assert_eq!(b.arrived(0, false, t0), vec![0]);
        assert!(b.arrived(1, false, t0).is_empty());
        assert!(b.arrived(2, false, t0).is_empty());
        assert_eq!(b.arrived(3, false, t0), vec![1, 2, 3]);
        assert_eq!(b.deadline(), None);
        assert!(
            b.arrived(4, false, t0 + MS).is_empty(),
            "still within the hold"
        );
        assert_eq!(b.drain(), vec![4]);
    }
}
