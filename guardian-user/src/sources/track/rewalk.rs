//! When the size table re-walks a project: after lost events (a queue overflow, a directory that
//! could not be opened), and periodically, so a count that drifted cannot stay wrong. Every
//! re-walk is paid from a CPU budget (a token bucket of worker-thread time), overflows are
//! coalesced into at most one pass over every project per [`FULL_PASS_EVERY`], and the periodic
//! rotation walks each project about once per [`PERIOD`] when the budget allows — unless its
//! filesystem's free blocks and inodes are what they were when its last walk began (nothing
//! there was written, made or removed since: an idle node walks nothing). Pure: the caller
//! passes the time and the filesystem's stamp, and reports how long each walk took.

use super::unwatched::FsStamp;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Share of one core that re-walks may use on average while lost events are being repaired.
pub(crate) const REPAIR_BUDGET: f64 = 0.10;
/// Share of one core the periodic re-walks may use on average.
pub(crate) const PERIODIC_BUDGET: f64 = 0.01;
/// Most walk time saved up while idle (a burst allowance).
pub(crate) const BURST: Duration = Duration::from_millis(100);
/// A project is re-walked about this often (later when the budget does not allow it).
pub(crate) const PERIOD: Duration = Duration::from_secs(30 * 60);
/// Overflows start at most one pass over every project per this period; overflows during or
/// soon after a pass are coalesced into the next one.
pub(crate) const FULL_PASS_EVERY: Duration = Duration::from_secs(30);

/// Why a project is walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Events were lost (overflow, a directory that could not be opened).
    Repair,
    /// Its turn in the periodic rotation.
    Periodic,
}

/// The re-walk schedule of one size table.
#[derive(Debug)]
pub(crate) struct Rewalks {
    /// Projects waiting for a repair walk, oldest request first; `queued` mirrors it.
    queue: VecDeque<u32>,
    queued: HashSet<u32>,
    /// Every project in periodic order (front: next); entries of removed projects are skipped.
    rotation: VecDeque<u32>,
    /// When each current project was last walked (its baseline counts as a walk).
    walked: HashMap<u32, Instant>,
    /// Walk time available, in seconds (negative: owed).
    tokens: f64,
    refilled: Instant,
    /// Overflows not covered by a pass yet.
    overflows: u64,
    /// When the last pass over every project started.
    pass_started: Option<Instant>,
    /// How often each project's periodic turn comes ([`PERIOD`]; tests shorten it).
    period: Duration,
    /// Each project's filesystem stamp (`walk.rs`, `fs_stamp`) when its last walk began.
    stamps: HashMap<u32, FsStamp>,
    /// Walks done (for status and tests).
    pub(crate) done: u64,
    /// Periodic turns passed without a walk, the filesystem unchanged (status and tests).
    pub(crate) passed: u64,
}

impl Rewalks {
    pub(crate) fn new(now: Instant) -> Rewalks {
        Rewalks {
            queue: VecDeque::new(),
            queued: HashSet::new(),
            rotation: VecDeque::new(),
            walked: HashMap::new(),
            tokens: BURST.as_secs_f64(),
            refilled: now,
            overflows: 0,
            pass_started: None,
            period: PERIOD,
            stamps: HashMap::new(),
            done: 0,
            passed: 0,
        }
    }

    /// A project joined (its baseline walk just happened).
    pub(crate) fn added(&mut self, id: u32, now: Instant) {
        if self.walked.insert(id, now).is_none() {
            self.rotation.push_back(id);
        }
    }

    /// A project left: nothing of it is walked any more.
    pub(crate) fn removed(&mut self, id: u32) {
        self.walked.remove(&id);
        self.stamps.remove(&id);
        if self.queued.remove(&id) {
            self.queue.retain(|q| *q != id);
        }
        // `rotation` is cleaned lazily.
    }

    /// Events of `id` were lost: walk it soon.
    pub(crate) fn repair(&mut self, id: u32) {
        if self.walked.contains_key(&id) && self.queued.insert(id) {
            self.queue.push_back(id);
        }
    }

    /// The kernel queue overflowed: events of any project may be lost.
    pub(crate) fn overflowed(&mut self) {
        self.overflows += 1;
    }

    fn refill(&mut self, now: Instant) {
        let rate = if self.queue.is_empty() && self.overflows == 0 {
            PERIODIC_BUDGET
        } else {
            REPAIR_BUDGET
        };
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(BURST.as_secs_f64());
        self.refilled = now;
    }

    /// The next project to walk now, if the budget allows one: repairs first (an overflow
    /// queues every project, at most once per [`FULL_PASS_EVERY`]), then the periodic rotation.
    /// Returns `Some((id, reason, started_pass))`: `started_pass` is the number of overflows a
    /// new pass covers (0 when none started).
    pub(crate) fn next(&mut self, now: Instant) -> Option<(u32, Reason, u64)> {
        self.refill(now);
        if self.tokens <= 0.0 {
            return None;
        }
        let mut started = 0;
        if self.overflows > 0
            && self.queue.len() < self.walked.len()
            && self
                .pass_started
                .is_none_or(|t| now.saturating_duration_since(t) >= FULL_PASS_EVERY)
        {
            started = self.overflows;
            self.overflows = 0;
            self.pass_started = Some(now);
            let mut ids: Vec<u32> = self.walked.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                if self.queued.insert(id) {
                    self.queue.push_back(id);
                }
            }
        }
        if let Some(id) = self.queue.pop_front() {
            self.queued.remove(&id);
            return Some((id, Reason::Repair, started));
        }
        for _ in 0..self.rotation.len() {
            let id = self.rotation.pop_front()?;
            let Some(last) = self.walked.get(&id) else {
                continue; // removed
            };
            let due = now.saturating_duration_since(*last) >= self.period;
            self.rotation.push_back(id);
            if due {
                return Some((id, Reason::Periodic, started));
            }
            // The rotation is in walk order: if the front is not due, nothing is.
            break;
        }
        None
    }

    /// A walk of `id` that started at `now - took` finished at `now`.
    pub(crate) fn walked(&mut self, id: u32, took: Duration, now: Instant) {
        self.refill(now);
        self.tokens -= took.as_secs_f64();
        self.done += 1;
        self.turned(id, now);
    }

    /// The walk of `id` that just finished began with its filesystem as `stamp` says (`None`:
    /// unknown; its next periodic turn walks).
    pub(crate) fn stamped(&mut self, id: u32, stamp: Option<FsStamp>) {
        match stamp {
            Some(s) if self.walked.contains_key(&id) => {
                self.stamps.insert(id, s);
            }
            _ => {
                self.stamps.remove(&id);
            }
        }
    }

    /// Whether `id`'s filesystem is as it was when its last walk began.
    pub(crate) fn unchanged(&self, id: u32, stamp: Option<FsStamp>) -> bool {
        stamp.is_some() && self.stamps.get(&id) == stamp.as_ref()
    }

    /// `id`'s periodic turn passed without a walk (its filesystem unchanged): its next turn is
    /// a period from now; no walk time spent.
    pub(crate) fn passed(&mut self, id: u32, now: Instant) {
        self.passed += 1;
        self.turned(id, now);
    }

    /// Every turn comes `period` after the last (tests: turns without waiting half an hour).
    #[cfg(test)]
    pub(crate) fn set_period_for_tests(&mut self, period: Duration) {
        self.period = period;
    }

    /// `id` had its turn at `now`: to the back of the rotation.
    fn turned(&mut self, id: u32, now: Instant) {
        if let Some(last) = self.walked.get_mut(&id) {
            *last = now;
            // Keep the rotation in walk order: a repaired project moves to the back.
            if let Some(pos) = self.rotation.iter().position(|r| *r == id) {
                self.rotation.remove(pos);
            }
            self.rotation.push_back(id);
        }
    }

    /// Whether work is waiting (the worker then ticks even without events).
    pub(crate) fn busy(&self) -> bool {
        !self.queue.is_empty() || self.overflows > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Walks whatever is due at each `step` for `total`, each walk taking `took`; returns the
    /// walk count per reason and the walk time spent.
    fn simulate(
        w: &mut Rewalks,
        t0: Instant,
        total: Duration,
        step: Duration,
        took: Duration,
    ) -> (u64, u64, Duration) {
        let (mut repairs, mut periodic, mut spent) = (0, 0, Duration::ZERO);
        let mut now = t0;
        while now < t0 + total {
            while let Some((id, reason, _)) = w.next(now) {
                match reason {
                    Reason::Repair => repairs += 1,
                    Reason::Periodic => periodic += 1,
                }
                now += took;
                spent += took;
                w.walked(id, took, now);
            }
            now += step;
        }
        (repairs, periodic, spent)
    }

    #[test]
    fn an_overflow_storm_walks_every_project_once_per_pass_within_the_budget() {
        let t0 = Instant::now();
        let mut w = Rewalks::new(t0);
        for id in 1..=10 {
            w.added(id, t0);
        }
        // Overflows every second for ten minutes; each walk takes 50 ms.
        let mut now = t0;
        let (mut walks, mut spent, mut passes) = (0u64, Duration::ZERO, 0);
        while now < t0 + secs(600.0) {
            w.overflowed();
            while let Some((id, reason, started)) = w.next(now) {
                assert_eq!(reason, Reason::Repair);
                if started > 0 {
                    passes += 1;
                }
                now += secs(0.05);
                spent += secs(0.05);
                walks += 1;
                w.walked(id, secs(0.05), now);
            }
            now += secs(1.0);
        }
        let elapsed = now - t0;
        let most = (600.0 / FULL_PASS_EVERY.as_secs_f64()) as u64 + 1;
        assert!(passes <= most, "{passes} passes in 10 min");
        assert!(walks <= passes * 10, "{walks} walks, {passes} passes");
        assert!(
            spent.as_secs_f64() <= elapsed.as_secs_f64() * REPAIR_BUDGET + BURST.as_secs_f64(),
            "{spent:?} of walking in {elapsed:?}"
        );
    }

    #[test]
    fn periodic_walks_visit_every_project_and_stay_within_their_budget() {
        let t0 = Instant::now();
        let mut w = Rewalks::new(t0);
        for id in 1..=20 {
            w.added(id, t0);
        }
        // Nothing due before the period.
        assert_eq!(w.next(t0 + secs(60.0)), None);
        let total = PERIOD * 3;
        let (repairs, periodic, spent) =
            simulate(&mut w, t0, total, secs(1.0), Duration::from_millis(10));
        assert_eq!(repairs, 0);
        assert!(
            periodic >= 20 * 2,
            "every project walked each period: {periodic}"
        );
        assert!(spent.as_secs_f64() <= total.as_secs_f64() * PERIODIC_BUDGET + BURST.as_secs_f64());
    }

    #[test]
    fn a_huge_project_is_walked_less_often_than_the_period_not_more_than_the_budget() {
        let t0 = Instant::now();
        let mut w = Rewalks::new(t0);
        w.added(1, t0);
        let total = PERIOD * 4;
        // Each walk takes 60 s: 1% of 2 h is 72 s, so at most two walks fit.
        let (_, periodic, spent) = simulate(&mut w, t0, total, secs(1.0), secs(60.0));
        assert!(periodic <= 2, "{periodic}");
        assert!(spent.as_secs_f64() <= total.as_secs_f64() * PERIODIC_BUDGET + 60.0);
    }

    #[test]
    fn removed_projects_are_never_walked_and_repairs_come_first() {
        let t0 = Instant::now();
        let mut w = Rewalks::new(t0);
        for id in 1..=3 {
            w.added(id, t0);
        }
        w.repair(2);
        w.repair(2);
        w.repair(9); // unknown: ignored
        w.removed(3);
        let later = t0 + PERIOD + secs(1.0);
        assert_eq!(w.next(later), Some((2, Reason::Repair, 0)));
        w.walked(2, Duration::ZERO, later);
        assert_eq!(w.next(later), Some((1, Reason::Periodic, 0)));
        w.walked(1, Duration::ZERO, later);
        // 3 is gone; 2 was just walked.
        assert_eq!(w.next(later), None);
    }

    #[test]
    fn a_periodic_turn_passes_unwalked_while_the_filesystem_is_as_the_last_walk_found_it() {
        let t0 = Instant::now();
        let mut w = Rewalks::new(t0);
        w.added(1, t0);
        w.added(2, t0);
        let fs = Some((7, 1_000, 50));
        // No walk has stamped them yet (the baseline does not): the first turn walks.
        assert!(!w.unchanged(1, fs));
        let t1 = t0 + PERIOD + secs(1.0);
        assert_eq!(w.next(t1), Some((1, Reason::Periodic, 0)));
        w.walked(1, Duration::ZERO, t1);
        w.stamped(1, fs);
        assert!(w.unchanged(1, fs));
        // A block or an inode taken or given back, another device, or no stamp: a change.
        for other in [
            Some((7, 999, 50)),
            Some((7, 1_000, 51)),
            Some((8, 1_000, 50)),
            None,
        ] {
            assert!(!w.unchanged(1, other), "{other:?}");
        }
        // A passed turn costs no walk time and puts the project at the back of the rotation.
        let t2 = t1 + PERIOD + secs(1.0);
        assert_eq!(w.next(t2), Some((2, Reason::Periodic, 0)));
        w.walked(2, Duration::ZERO, t2);
        assert_eq!(w.next(t2), Some((1, Reason::Periodic, 0)));
        let (tokens, done) = (w.tokens, w.done);
        w.passed(1, t2);
        assert_eq!((w.tokens, w.done, w.passed), (tokens, done, 1));
        assert_eq!(w.next(t2), None, "both had their turn");
        // A walk that could not read the stamp forgets the old one; so does removal.
        w.stamped(1, None);
        assert!(!w.unchanged(1, fs));
        w.stamped(1, fs);
        w.removed(1);
        assert!(!w.unchanged(1, fs));
        w.stamped(1, fs);
        assert!(!w.unchanged(1, fs), "a removed project is not stamped");
    }
}
