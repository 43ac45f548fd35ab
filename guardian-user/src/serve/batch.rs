//! When the relay hands events on to the clients: an event after a quiet spell starts a hold of
//! [`HOLD`], and everything that arrives within it goes out together when it ends (then a new
//! hold starts); an event that ends a burst (a cycle's `cleanup_finished`) goes at once with
//! everything held before it, ending the hold. Each hand-on costs every client one write — a
//! loopback TCP send is most of what the server spends per client — so a cleanup cycle shorter
//! than [`HOLD`] costs its clients one write, after it has ended, and never competes with it for
//! a CPU (a longer one: one write per [`HOLD`]). An event reaches the clients at most [`HOLD`]
//! after it happened (the goal is 1 s). Pure: the caller passes the clock.
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
                // A quiet spell (or a hold that ended before its wake-up came: what it held goes
                // now): the item starts a hold.
                let mut out = std::mem::take(&mut self.held);
                self.held.push(item);
                self.until = Some(now + self.hold);
                if self.held.len() >= self.limit {
                    out.append(&mut self.held);
                }
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
    fn an_event_after_a_quiet_spell_starts_a_hold_and_the_hold_goes_out_together() {
        let t0 = Instant::now();
        let mut b = Batch::new(50 * MS, 100);
        assert_eq!(b.deadline(), None);
        assert!(b.arrived("crossed", false, t0).is_empty());
        assert_eq!(b.deadline(), Some(t0 + 50 * MS));
        assert!(b.arrived("started", false, t0 + MS).is_empty());
        assert!(b.arrived("action", false, t0 + 20 * MS).is_empty());
        assert!(b.due(t0 + 49 * MS).is_empty(), "the hold has not ended");
        assert_eq!(b.due(t0 + 50 * MS), vec!["crossed", "started", "action"]);
        // A new hold started at 50 ms: the next event within it waits for its end.
        assert!(b.arrived("more", false, t0 + 60 * MS).is_empty());
        assert_eq!(b.deadline(), Some(t0 + 100 * MS));
        assert_eq!(b.due(t0 + 100 * MS), vec!["more"]);
        // A hold that ends holding nothing ends the spell: the next event starts a hold.
        assert!(b.due(t0 + 150 * MS).is_empty());
        assert_eq!(b.deadline(), None);
        assert!(b.arrived("next", false, t0 + 151 * MS).is_empty());
        assert_eq!(b.due(t0 + 201 * MS), vec!["next"]);
    }

    /// A cycle shorter than the hold costs its clients one write, when it has ended.
    #[test]
    fn the_end_of_a_burst_goes_at_once_with_what_was_held_and_ends_the_hold() {
        let t0 = Instant::now();
        let mut b = Batch::new(250 * MS, 100);
        assert!(b.arrived("crossed", false, t0).is_empty());
        assert!(b.arrived("started", false, t0 + MS).is_empty());
        assert!(b.arrived("action", false, t0 + 20 * MS).is_empty());
        assert_eq!(
            b.arrived("finished", true, t0 + 45 * MS),
            vec!["crossed", "started", "action", "finished"]
        );
        assert_eq!(b.deadline(), None);
        assert!(b.due(t0 + 300 * MS).is_empty());
    }

    #[test]
    fn what_a_hold_held_goes_first_when_its_wake_up_comes_late() {
        let t0 = Instant::now();
        let mut b = Batch::new(50 * MS, 100);
        assert!(b.arrived(1, false, t0).is_empty());
        assert!(b.arrived(2, false, t0 + 10 * MS).is_empty());
        assert_eq!(b.arrived(3, false, t0 + 70 * MS), vec![1, 2]);
        assert_eq!(b.deadline(), Some(t0 + 120 * MS));
        assert_eq!(b.due(t0 + 120 * MS), vec![3]);
    }

    #[test]
    fn a_full_hold_is_handed_on_at_once_in_order() {
        let t0 = Instant::now();
        let mut b = Batch::new(50 * MS, 3);
        assert!(b.arrived(0, false, t0).is_empty());
        assert!(b.arrived(1, false, t0).is_empty());
        assert_eq!(b.arrived(2, false, t0), vec![0, 1, 2]);
        assert_eq!(b.deadline(), None);
        assert!(
            b.arrived(3, false, t0 + MS).is_empty(),
            "still within the hold"
        );
        assert_eq!(b.drain(), vec![3]);
        let mut one = Batch::new(50 * MS, 1);
        assert_eq!(
            one.arrived(7, false, t0),
            vec![7],
            "a hold of one is never held"
        );
    }
}
