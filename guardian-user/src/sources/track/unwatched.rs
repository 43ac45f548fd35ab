//! How the directories a source could not watch (inotify over `fs.inotify.max_user_watches`)
//! are polled: in key order from a cursor, each tick as many as a CPU budget allows — a token
//! bucket of worker-thread time, like the re-walks' (`rewalk.rs`). A few such directories are
//! polled every tick; hundreds of thousands (a 5M-entry node over a 192k watch limit) take
//! longer per round instead of the worker's whole core. A round runs only while the
//! filesystems holding them change: once a whole round has run that began when their free
//! blocks and free inodes were what they are now (a [`Stamp`]), nothing in them can have grown,
//! shrunk, appeared or gone since it read them, and an idle node polls nothing. Pure: the caller
//! passes the time, the stamp, and reports what a tick's polling took.

use super::tree::Key;
use std::time::{Duration, Instant};

/// Share of one core that polling unwatched directories may use on average.
pub(crate) const UNWATCHED_BUDGET: f64 = 0.05;
/// Most polling time saved up (a tick polls at most this long). Ticks come every 100 ms while
/// a round is under way ([`Tree::unwatched_busy`](super::tree::Tree)), so the 5% is spent in
/// slices this short and the kernel queue's events (a writer's, which the countdown waits for)
/// never wait long behind polling; with 100 ms bursts once a second, a crossing on the 5M tree
/// waited up to ~180 ms for its event to be read.
pub(crate) const UNWATCHED_BURST: Duration = Duration::from_millis(10);

/// What `statvfs` says of one filesystem: `(st_dev, free bytes, free inodes)` (`FsSpace`'s
/// `free_bytes` and `avail_inodes`). A write that
/// allocates or frees a block, and a file made or removed, moves it; a rename, a new hard link,
/// and a write inside a file's last allocated block do not (in an unwatched directory those
/// are seen by the first round after anything else on the filesystem moves it).
pub(crate) type FsStamp = (u64, u64, u64);

/// The [`FsStamp`] of each filesystem holding unwatched directories, in device order.
pub(crate) type Stamp = Vec<FsStamp>;

/// The polling round of the unwatched directories.
#[derive(Debug)]
pub(crate) struct Pace {
    /// Polling time available, seconds (negative: owed).
    tokens: f64,
    refilled: Instant,
    /// The record number (`Dirs::next_unwatched`) of the last directory polled in the current
    /// round; `None`: the next round starts.
    pub(crate) cursor: Option<u32>,
    /// Rounds finished (status and tests).
    pub(crate) rounds: u64,
    /// The filesystems' stamp when the current (or the last) round began; `None` when it could
    /// not be read or a directory lost its watch since (the next round runs whatever the
    /// stamp).
    began: Option<Stamp>,
}

impl Pace {
    pub(crate) fn new(now: Instant) -> Pace {
        Pace {
            tokens: UNWATCHED_BURST.as_secs_f64(),
            refilled: now,
            cursor: None,
            rounds: 0,
            began: None,
        }
    }

    /// Whether a round is under way (the caller reads the stamp only between rounds).
    pub(crate) fn between_rounds(&self) -> bool {
        self.cursor.is_none()
    }

    /// Whether the next round can wait: between rounds, a whole round has run, and it began
    /// when the filesystems were as `now` says they are (`None`: unknown, never settled).
    pub(crate) fn settled(&self, now: Option<&Stamp>) -> bool {
        self.between_rounds() && self.rounds > 0 && now.is_some() && self.began.as_ref() == now
    }

    /// A round begins with the filesystems as `stamp` says.
    pub(crate) fn begin(&mut self, stamp: Option<Stamp>) {
        self.began = stamp;
    }

    /// Every unwatched directory was just read by a walk that began with the filesystems as
    /// `stamp` says (a baseline walk that met the watch limit): that counts as a whole round.
    pub(crate) fn read_by_walk(&mut self, stamp: Option<Stamp>) {
        self.cursor = None;
        self.began = stamp;
        self.rounds += 1;
    }

    /// A directory lost its watch: what happened in it before it was polled is unknown, so the
    /// next round runs whatever the stamp.
    pub(crate) fn unsettle(&mut self) {
        self.began = None;
    }

    /// Whether the next round runs whatever the filesystems' stamp says (tests).
    #[cfg(test)]
    pub(crate) fn unsettled(&self) -> bool {
        self.began.is_none()
    }

    /// How long this tick may poll: nothing while time is owed.
    pub(crate) fn allowance(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * UNWATCHED_BUDGET).min(UNWATCHED_BURST.as_secs_f64());
        self.refilled = now;
        if self.tokens > 0.0 {
            Duration::from_secs_f64(self.tokens)
        } else {
            Duration::ZERO
        }
    }

    /// A tick polled for `took` (it may overrun its allowance by one directory: owed).
    pub(crate) fn spent(&mut self, took: Duration) {
        self.tokens -= took.as_secs_f64();
    }

    /// A fresh burst to spend (tests: ticks without waiting for the refill).
    #[cfg(test)]
    pub(crate) fn refill_for_tests(&mut self) {
        self.tokens = UNWATCHED_BURST.as_secs_f64();
        self.refilled = Instant::now();
    }

    /// The round reached the last directory: the next tick starts from the first.
    pub(crate) fn round_done(&mut self) {
        self.cursor = None;
        self.rounds += 1;
    }
}

/// Directories this close to their project root (a root is 0; `proj/target/debug` is 2) take
/// the watch of a deeper one (never of one this shallow), at the next tick, when the source had
/// none left to give them: where tasks write (their
/// logs, outputs and build directories, and every new project's root) stays watched, and what
/// goes unwatched past the limit is the deep trees that are written once (`node_modules`'
/// packages, `.git/objects`). Before, the watches went in walk order, and every project added
/// after the limit was reached had none.
pub(crate) const SHALLOW: usize = 2;

/// Most shallow directories waiting for a deeper one's watch (16 bytes each); past it, the rest
/// are polled like the deep ones.
const WANTING_MAX: usize = 65_536;

/// Most watches taken per tick ([`Tree::share_watches`](super::tree::Tree)), which also
/// stops after [`UNWATCHED_BURST`] (each taken watch reads two directories again): each dropped watch
/// queues an `IN_IGNORED` event, and the kernel queue (`fs.inotify.max_queued_events`, 16,384
/// by default) is read between ticks, so they never overflow it. Taking them while a walk
/// met the limit did: the 5M-entry tree's baseline queued tens of thousands at once, and the
/// overflow's re-walk of every project kept the worker at 10% of a core for minutes.
pub(crate) const SHARE_PER_TICK: usize = 1024;

/// The shallow directories the source refused a watch for want of one, and where the last
/// watch taken for one came from.
#[derive(Debug, Default)]
pub(crate) struct Share {
    /// Refused shallow directories, the most recent last (taken first).
    pub(crate) wanting: Vec<Key>,
    /// The record (`Dirs::watched_deeper_than`) the next search starts below.
    pub(crate) cursor: Option<u32>,
    /// A search found no watched directory deeper than [`SHALLOW`] since the source last gave
    /// a watch: none is searched for again until it gives one.
    pub(crate) exhausted: bool,
    /// Watches taken from deeper directories (tests).
    pub(crate) taken: u64,
}

impl Share {
    /// Shallow directory `key` was refused a watch for want of one.
    pub(crate) fn want(&mut self, key: Key) {
        if !self.exhausted && self.wanting.len() < WANTING_MAX {
            self.wanting.push(key);
        }
    }

    /// The source gave a watch: a deep directory may hold one again.
    pub(crate) fn given(&mut self) {
        self.exhausted = false;
    }

    /// No deeper directory holds a watch: the shallow ones waiting are polled.
    pub(crate) fn none_left(&mut self) {
        self.exhausted = true;
        self.wanting = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_polls_at_most_the_burst_and_the_budget_refills_it() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        assert_eq!(pace.allowance(t0), UNWATCHED_BURST);
        // Saving up never passes the burst.
        assert_eq!(
            pace.allowance(t0 + Duration::from_secs(3600)),
            UNWATCHED_BURST
        );
        let t1 = t0 + Duration::from_secs(3600);
        pace.spent(UNWATCHED_BURST);
        assert_eq!(pace.allowance(t1), Duration::ZERO);
        // A tick (100 ms while a round is under way) later: 5% of it.
        let one = pace.allowance(t1 + Duration::from_millis(100));
        assert!(
            (one.as_secs_f64() - UNWATCHED_BUDGET / 10.0).abs() < 1e-9,
            "{one:?}"
        );
    }

    #[test]
    fn an_overrun_is_owed_and_paid_back_before_the_next_poll() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        // One directory took a whole second: 0.99 s owed beyond the 10 ms allowance.
        pace.spent(Duration::from_secs(1));
        // 0.99 s owed at 5% of a core: 19.8 s of no polling.
        assert_eq!(pace.allowance(t0 + Duration::from_secs(19)), Duration::ZERO);
        assert!(pace.allowance(t0 + Duration::from_secs(20)) > Duration::ZERO);
    }

    #[test]
    fn over_a_long_run_polling_stays_within_the_budget() {
        // Every tick spends all it is allowed (a round too large to finish): over an hour of
        // the ticks of a round under way (every 100 ms) the time spent is the budget's share
        // plus the first burst.
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        let mut spent = Duration::ZERO;
        for s in 0..36_000 {
            let allowed = pace.allowance(t0 + Duration::from_millis(s * 100));
            pace.spent(allowed);
            spent += allowed;
        }
        let most = 3600.0 * UNWATCHED_BUDGET + UNWATCHED_BURST.as_secs_f64();
        assert!(spent.as_secs_f64() <= most + 1e-6, "{spent:?}");
        assert!(spent.as_secs_f64() >= most - 0.1, "{spent:?}");
    }

    fn stamp(blocks: u64, inodes: u64) -> Option<Stamp> {
        Some(vec![(7, blocks, inodes)])
    }

    #[test]
    fn rounds_stop_while_the_filesystems_stay_as_the_last_round_found_them() {
        let mut pace = Pace::new(Instant::now());
        // Nothing has run yet: the first round always runs.
        assert!(!pace.settled(stamp(10, 5).as_ref()));
        pace.begin(stamp(10, 5));
        pace.cursor = Some(7);
        // Under way: never settled, whatever the stamp.
        assert!(!pace.settled(stamp(10, 5).as_ref()));
        pace.round_done();
        assert!(pace.settled(stamp(10, 5).as_ref()));
        // A block allocated or freed, a file made or removed: the next round runs.
        assert!(!pace.settled(stamp(9, 5).as_ref()));
        assert!(!pace.settled(stamp(10, 4).as_ref()));
        // Another filesystem, or one more of them, is a change too.
        assert!(!pace.settled(Some(vec![(8, 10, 5)]).as_ref()));
        assert!(!pace.settled(Some(vec![(7, 10, 5), (8, 1, 1)]).as_ref()));
        // A stamp that cannot be read never settles.
        assert!(!pace.settled(None));
    }

    #[test]
    fn a_change_during_a_round_runs_one_more_and_a_lost_watch_unsettles() {
        let mut pace = Pace::new(Instant::now());
        pace.begin(stamp(10, 5));
        pace.cursor = Some(7);
        // Written while the round ran (perhaps behind its cursor): the round that began at
        // (10, 5) does not settle (9, 5); the next begins there and then settles it.
        pace.round_done();
        assert!(!pace.settled(stamp(9, 5).as_ref()));
        pace.begin(stamp(9, 5));
        pace.round_done();
        assert!(pace.settled(stamp(9, 5).as_ref()));
        // A directory lost its watch: one more round, though nothing else moved.
        pace.unsettle();
        assert!(!pace.settled(stamp(9, 5).as_ref()));
        // A round that began with no stamp settles nothing either.
        pace.begin(None);
        pace.round_done();
        assert!(!pace.settled(stamp(9, 5).as_ref()));
    }

    #[test]
    fn a_finished_round_starts_again_from_the_first_directory() {
        let mut pace = Pace::new(Instant::now());
        pace.cursor = Some(1);
        pace.round_done();
        assert_eq!((pace.cursor, pace.rounds), (None, 1));
    }
}
