//! When the sampler looks next: every `sample_interval` while anything happens, and, once a
//! few samples in a row found nothing (no byte written or freed, free space as it was, no cycle
//! running; every source but `poll`, which never rests, has a write countdown), at a *resting*
//! interval — with the write countdown armed small, so the first bytes of a new writer wake
//! the daemon at once and sampling is back at its pace from that sample on. An idle node then
//! costs a sample a second instead of four, and a writer is seen as early as before. Pure: the
//! loop reports each sample and asks for the next interval.

use std::time::Duration;

/// Quiet samples in a row after which the sampler rests.
pub const QUIET_SAMPLES: u32 = 4;
/// The resting interval (never longer than the poll interval, never shorter than the sample
/// interval): what the countdown cannot see — stores through `mmap`, writers outside what the
/// source watches, inotify's directories past its watch limit (only polled) — waits at most
/// this long for a sample. (The inotify worker reading those filesystems' free space itself
/// every 250 ms instead was tried: each turn of its thread costs ~130 µs on the 2-vCPU VM of
/// docs/benchmarks.md, as much as the samples it saved.)
pub const RESTING: Duration = Duration::from_secs(1);
/// The countdown budget while resting, per filesystem: a writer wakes the daemon once it has
/// written this much (the budget a threshold's headroom asks for, if smaller, still holds).
pub const RESTING_BUDGET: u64 = 1 << 20;

/// The sampler's pace.
#[derive(Clone, Debug)]
pub struct Cadence {
    sample: Duration,
    poll: Duration,
    quiet: u32,
}

impl Cadence {
    pub fn new(sample: Duration, poll: Duration) -> Cadence {
        Cadence {
            sample,
            poll,
            quiet: 0,
        }
    }

    /// New intervals (a reload); the pace starts over.
    pub fn set_intervals(&mut self, sample: Duration, poll: Duration) {
        *self = Cadence::new(sample, poll);
    }

    /// A sample happened; `quiet` when it found nothing new (see the module doc).
    pub fn sampled(&mut self, quiet: bool) {
        self.quiet = if quiet {
            self.quiet.saturating_add(1)
        } else {
            0
        };
    }

    /// Something happened outside a sample (a countdown wake-up, a cycle): full pace.
    pub fn stir(&mut self) {
        self.quiet = 0;
    }

    pub fn resting(&self) -> bool {
        self.quiet >= QUIET_SAMPLES && self.resting_interval() > self.sample
    }

    /// How long until the next sample.
    pub fn interval(&self) -> Duration {
        if self.resting() {
            self.resting_interval()
        } else {
            self.sample
        }
    }

    /// The countdown budget to arm, given the one a filesystem's thresholds ask for.
    pub fn budget(&self, asked: u64) -> u64 {
        if self.resting() {
            asked.min(RESTING_BUDGET)
        } else {
            asked
        }
    }

    fn resting_interval(&self) -> Duration {
        RESTING.min(self.poll).max(self.sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_few_quiet_samples_rest_the_sampler_and_one_busy_sample_wakes_it() {
        let mut c = Cadence::new(250 * MS, 5000 * MS);
        for _ in 0..QUIET_SAMPLES - 1 {
            c.sampled(true);
            assert_eq!(c.interval(), 250 * MS);
            assert_eq!(c.budget(1 << 30), 1 << 30);
        }
        c.sampled(true);
        assert!(c.resting());
        assert_eq!(c.interval(), RESTING);
        assert_eq!(c.budget(1 << 30), RESTING_BUDGET);
        // A smaller budget (a threshold close by) is kept.
        assert_eq!(c.budget(4096), 4096);
        c.sampled(false);
        assert_eq!(c.interval(), 250 * MS);
        assert_eq!(c.budget(1 << 30), 1 << 30);
        for _ in 0..QUIET_SAMPLES {
            c.sampled(true);
        }
        c.stir();
        assert!(!c.resting());
    }

    #[test]
    fn resting_never_waits_past_the_poll_nor_below_the_sample_interval() {
        let mut c = Cadence::new(100 * MS, 500 * MS);
        for _ in 0..QUIET_SAMPLES {
            c.sampled(true);
        }
        assert_eq!(c.interval(), 500 * MS);
        // A sample interval at or above the resting one: nothing to slow down, the budget stays.
        let mut c = Cadence::new(5000 * MS, 3_600_000 * MS);
        for _ in 0..QUIET_SAMPLES {
            c.sampled(true);
        }
        assert!(!c.resting());
        assert_eq!(c.interval(), 5000 * MS);
        assert_eq!(c.budget(1 << 30), 1 << 30);
    }
}
