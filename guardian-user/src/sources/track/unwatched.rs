//! How the directories a source could not watch (inotify over `fs.inotify.max_user_watches`)
//! are polled: in key order from a cursor, each tick as many as a CPU budget allows — a token
//! bucket of worker-thread time, like the re-walks' (`rewalk.rs`). A few such directories are
//! polled every tick; hundreds of thousands (a 5M-entry node over a 192k watch limit) take
//! longer per round instead of the worker's whole core. Pure: the caller passes the time and
//! reports what a tick's polling took.

use super::tree::Key;
use std::time::{Duration, Instant};

/// Share of one core that polling unwatched directories may use on average.
pub(crate) const UNWATCHED_BUDGET: f64 = 0.05;
/// Most polling time saved up (a tick polls at most this long).
pub(crate) const UNWATCHED_BURST: Duration = Duration::from_millis(100);

/// The polling round of the unwatched directories.
#[derive(Debug)]
pub(crate) struct Pace {
    /// Polling time available, seconds (negative: owed).
    tokens: f64,
    refilled: Instant,
    /// The last directory polled in the current round; `None`: the next round starts.
    pub(crate) cursor: Option<Key>,
    /// Rounds finished (status and tests).
    pub(crate) rounds: u64,
}

impl Pace {
    pub(crate) fn new(now: Instant) -> Pace {
        Pace {
            tokens: UNWATCHED_BURST.as_secs_f64(),
            refilled: now,
            cursor: None,
            rounds: 0,
        }
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

    /// The round reached the last directory: the next tick starts from the first.
    pub(crate) fn round_done(&mut self) {
        self.cursor = None;
        self.rounds += 1;
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
        // One second later: 5% of it.
        let one = pace.allowance(t1 + Duration::from_secs(1));
        assert!(
            (one.as_secs_f64() - UNWATCHED_BUDGET).abs() < 1e-9,
            "{one:?}"
        );
    }

    #[test]
    fn an_overrun_is_owed_and_paid_back_before_the_next_poll() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        // One directory took a whole second: 0.9 s owed beyond the 100 ms allowance.
        pace.spent(Duration::from_secs(1));
        // 0.9 s owed at 5% of a core: 18 s of no polling.
        assert_eq!(pace.allowance(t0 + Duration::from_secs(17)), Duration::ZERO);
        assert!(pace.allowance(t0 + Duration::from_secs(19)) > Duration::ZERO);
    }

    #[test]
    fn over_a_long_run_polling_stays_within_the_budget() {
        // Every tick spends all it is allowed (a round too large to finish): over an hour of
        // one-second ticks the time spent is the budget's share plus the first burst.
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        let mut spent = Duration::ZERO;
        for s in 0..3600 {
            let allowed = pace.allowance(t0 + Duration::from_secs(s));
            pace.spent(allowed);
            spent += allowed;
        }
        let most = 3600.0 * UNWATCHED_BUDGET + UNWATCHED_BURST.as_secs_f64();
        assert!(spent.as_secs_f64() <= most + 1e-6, "{spent:?}");
        assert!(spent.as_secs_f64() >= most - 0.1, "{spent:?}");
    }

    #[test]
    fn a_finished_round_starts_again_from_the_first_directory() {
        let mut pace = Pace::new(Instant::now());
        pace.cursor = Some((1, 2));
        pace.round_done();
        assert_eq!((pace.cursor, pace.rounds), (None, 1));
    }
}
