//! The write countdown: after each `statvfs` the daemon arms, per guarded filesystem, a budget of
//! bytes — its headroom to the next threshold less a safety margin — and a source that sees
//! writes as they happen (the eBPF probe in the kernel; fanotify and inotify in their worker
//! thread, with [`Tally`]) spends it and wakes the daemon through a [`Waker`] the moment the
//! bytes written since reach it, instead of the crossing waiting for the next sample (the
//! workers, which read their queue in batches, cut a batch short when a budget is close:
//! [`batch_for`]). Waking
//! early is harmless (the daemon re-reads `statvfs` and re-arms), so every rounding here errs
//! towards a smaller budget. `statvfs` stays the only ground truth: the countdown only decides
//! *when* to look.

use crate::fsys::FsSpace;
use crate::policy::Limits;
use std::collections::HashMap;
use std::time::Duration;

/// The safety margin, as a share of the headroom: a budget is `headroom − headroom /
/// MARGIN_DIVISOR`. Bytes written are not blocks allocated — block rounding of small files,
/// inodes, directories, extent trees and the journal take space no write returns as a byte
/// count, and stores through `mmap`, io_uring and kernel threads (loop devices, NFS) are not seen
/// at all — so free space can fall faster than the count. An eighth covers metadata overhead
/// of small-file trees (a 4 KiB block per file of a few hundred bytes is the worst of it, and
/// falls under [`MIN_MARGIN`] for few files); what the count never sees is left to the
/// sampler's `sample_interval`, which keeps running.
pub const MARGIN_DIVISOR: u64 = 8;

/// The smallest margin: a few hundred small files' worth of block rounding and metadata.
pub const MIN_MARGIN: u64 = 4 << 20;

/// The smallest budget armed, also when the headroom is smaller than the margin or no threshold
/// is left below free space: under a threshold the daemon keeps sampling anyway, and a budget
/// this size bounds the wake-ups near a threshold to one per MiB written (per CPU for the probe).
pub const MIN_BUDGET: u64 = 1 << 20;

/// The fastest a writer is taken to fill a filesystem, in bytes per second, by the sources that
/// read their events in batches (fanotify, inotify; [`batch_for`]). One process writing 1 MiB
/// chunks to the page cache ran at 2.5 GB/s on the bench's 2-vCPU VM (loop ext4); with 2 GiB/s
/// in this constant, the read after arming a 52 MiB budget came 25 ms later, ~10 ms after the
/// crossing (`cargo xtask bench --only scale`, cycle start). Several writers or a faster host go
/// further. A faster one is seen late by at most the ratio, and never later than a whole batch.
pub const FAST_WRITE: u64 = 8 << 30;

/// The shortest batch [`batch_for`] cuts to: a budget about to run out is read for about every
/// this often while events keep coming (never when none do), so the read that spends it comes
/// within a few ms of the write.
pub const SHORTEST_BATCH: Duration = Duration::from_millis(2);

/// How long a source that reads its events in batches (the kernel merging repeated events on
/// one file meanwhile) may wait before its next read, when `left` bytes remain of the closest
/// budget: the time a [`FAST_WRITE`] writer needs to spend them, between [`SHORTEST_BATCH`] and
/// `longest`. Far from every threshold (or nothing armed: `None`) it is `longest`, so ordinary
/// bookkeeping keeps its batches; close to one, each read shortens the next until the read
/// that sees the budget run out follows the write that spent it by about [`SHORTEST_BATCH`].
pub fn batch_for(left: Option<u64>, longest: Duration) -> Duration {
    let Some(left) = left else {
        return longest;
    };
    let nanos = u128::from(left) * 1_000_000_000 / u128::from(FAST_WRITE);
    let wait = u64::try_from(nanos).map_or(longest, Duration::from_nanos);
    wait.clamp(SHORTEST_BATCH.min(longest), longest)
}

/// The budget of one filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// `st_dev` of the filesystem as userspace sees it.
    pub dev: u64,
    /// Bytes that may be written before the source wakes the daemon.
    pub bytes: u64,
    /// The budget the thresholds ask for (`bytes` may be smaller: cut to 1 MiB while the
    /// sampler rests, `daemon/cadence.rs`): how close the next threshold is, which is what
    /// cuts a worker's periodic work into short slices ([`Tally::slice`]).
    pub asked: u64,
}

impl Budget {
    /// A budget of `bytes`, as the thresholds ask for it.
    pub fn new(dev: u64, bytes: u64) -> Budget {
        Budget {
            dev,
            bytes,
            asked: bytes,
        }
    }

    /// The budget after a `statvfs`: the headroom of available bytes above the next byte
    /// threshold below them (`cleanup_free`, `min_free`, `critical_free`, and any `floors` such
    /// as a forecast's), less the margin, at least [`MIN_BUDGET`].
    pub fn after_statvfs(dev: u64, space: &FsSpace, limits: &Limits, floors: &[u64]) -> Budget {
        let levels = [
            limits.cleanup_bytes,
            limits.min_free_bytes,
            limits.critical_bytes,
        ];
        let headroom = headroom(space.avail_bytes, levels.iter().chain(floors).copied());
        Budget::new(dev, budget_for(headroom))
    }
}

/// Bytes that can go before available space drops below the highest level at or under it
/// (`None`: it is below every level already). A crossing is `avail < level`.
pub fn headroom(avail: u64, levels: impl IntoIterator<Item = u64>) -> Option<u64> {
    levels
        .into_iter()
        .filter(|level| *level <= avail)
        .max()
        .map(|level| avail - level)
}

/// The budget armed for a headroom: less the margin, at least [`MIN_BUDGET`].
pub fn budget_for(headroom: Option<u64>) -> u64 {
    let Some(headroom) = headroom else {
        return MIN_BUDGET;
    };
    let margin = (headroom / MARGIN_DIVISOR).max(MIN_MARGIN);
    headroom.saturating_sub(margin).max(MIN_BUDGET)
}

/// A budget ran out: the source saw at least `bytes` written on filesystem `dev` since it was
/// armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wake {
    /// The source that counted (`ebpf`, `fanotify`, `inotify`).
    pub source: &'static str,
    /// `st_dev` of the filesystem (for the probe: as the kernel reported it, converted).
    pub dev: u64,
    /// Bytes counted against the budget (by the CPU that sent it, for the probe).
    pub bytes: u64,
}

impl std::fmt::Display for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "woken by the {} write countdown ({} written on device {}:{} since the last statvfs)",
            self.source,
            crate::config::human_bytes(self.bytes),
            dev_major(self.dev),
            dev_minor(self.dev)
        )
    }
}

fn dev_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn dev_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// Where a source sends its wake-ups: a channel of one, so wake-ups that pile up while the
/// daemon is busy are one wake-up (the daemon re-reads every filesystem anyway). Sending never
/// blocks.
pub type Waker = crossbeam_channel::Sender<Wake>;

/// Sends a wake-up unless one is already waiting.
pub fn wake(waker: Option<&Waker>, wake: Wake) -> bool {
    waker.is_some_and(|w| w.try_send(wake).is_ok())
}

/// The countdown kept in userspace by the fanotify and inotify workers: growth they see is spent
/// from the budget of the project's filesystem; the first spend that reaches it returns the
/// wake-up, once per arming.
#[derive(Debug, Default)]
pub struct Tally {
    /// By `st_dev`.
    armed: HashMap<u64, Armed>,
}

#[derive(Debug)]
struct Armed {
    budget: u64,
    /// [`Budget::asked`].
    asked: u64,
    /// Bytes counted since the arming.
    spent: u64,
    /// The budget woke the daemon; nothing more until armed again.
    fired: bool,
}

impl Tally {
    /// Arms the budgets anew (spending starts over; filesystems not listed are disarmed).
    pub fn arm(&mut self, budgets: &[Budget]) {
        self.armed = budgets
            .iter()
            .map(|b| {
                let armed = Armed {
                    budget: b.bytes,
                    asked: b.asked.max(b.bytes),
                    spent: 0,
                    fired: false,
                };
                (b.dev, armed)
            })
            .collect();
    }

    /// Bytes left of the closest budget not yet spent (`None`: none armed, or each has woken
    /// the daemon already and waits to be armed again).
    pub fn left(&self) -> Option<u64> {
        self.closest(|a| a.budget)
    }

    /// The least of `of(budget) − spent` over the budgets that have not fired.
    fn closest(&self, of: impl Fn(&Armed) -> u64) -> Option<u64> {
        (self.armed.values())
            .filter(|a| !a.fired)
            .map(|a| of(a).saturating_sub(a.spent))
            .min()
    }

    /// The batch a source reading its events in batches may wait now ([`batch_for`]).
    pub fn batch(&self, longest: Duration) -> Duration {
        batch_for(self.left(), longest)
    }

    /// The longest slice of periodic work (polling, sharing watches) a worker may run now:
    /// [`batch_for`] of what is left of the closest budget as the thresholds ask for it, so
    /// the slices are short only near a threshold, not while a resting sampler's small budget
    /// waits for a new writer (then a slice delays that wake-up by at most `longest`).
    pub fn slice(&self, longest: Duration) -> Duration {
        batch_for(self.closest(|a| a.asked), longest)
    }

    /// Spends `bytes` written on `dev`; the wake-up when this spend exhausts its budget.
    pub fn spend(&mut self, source: &'static str, dev: u64, bytes: u64) -> Option<Wake> {
        let a = self.armed.get_mut(&dev)?;
        a.spent = a.spent.saturating_add(bytes);
        if a.fired || a.spent < a.budget {
            return None;
        }
        a.fired = true;
        Some(Wake {
            source,
            dev,
            bytes: a.spent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn headroom_is_to_the_highest_level_at_or_under_free_space() {
        assert_eq!(headroom(100, [20, 10, 0]), Some(80));
        // Under cleanup_free: the next one is critical_free.
        assert_eq!(headroom(15, [20, 10, 0]), Some(5));
        assert_eq!(headroom(20, [20, 10]), Some(0));
        assert_eq!(headroom(5, [20, 10]), None);
    }

    #[test]
    fn budget_keeps_a_margin_and_a_floor() {
        // 1 GiB of headroom: an eighth held back.
        assert_eq!(budget_for(Some(1024 * MIB)), 896 * MIB);
        // 10 MiB: the 4 MiB minimum margin.
        assert_eq!(budget_for(Some(10 * MIB)), 6 * MIB);
        // Less than the margin, or no threshold left: the smallest budget.
        assert_eq!(budget_for(Some(2 * MIB)), MIN_BUDGET);
        assert_eq!(budget_for(None), MIN_BUDGET);
        // Never more than the headroom once it exceeds the smallest budget.
        for h in [MIN_BUDGET, 5 * MIB, 77 * MIB, u64::MAX] {
            assert!(budget_for(Some(h)) <= h);
        }
    }

    #[test]
    fn a_budget_after_statvfs_counts_down_to_cleanup_free() {
        let space = FsSpace {
            total_bytes: 1000 * MIB,
            avail_bytes: 300 * MIB,
            free_bytes: 300 * MIB,
            total_inodes: 0,
            avail_inodes: 0,
        };
        let limits = Limits {
            cleanup_bytes: 200 * MIB,
            critical_bytes: 100 * MIB,
            target_bytes: 300 * MIB,
            min_free_bytes: 0,
            cleanup_inodes: 0,
            critical_inodes: 0,
            target_inodes: 0,
        };
        let b = Budget::after_statvfs(7, &space, &limits, &[]);
        assert_eq!(b, Budget::new(7, 100 * MIB - 100 * MIB / 8));
        // A forecast floor above cleanup_free comes first.
        let b = Budget::after_statvfs(7, &space, &limits, &[260 * MIB]);
        assert_eq!(b.bytes, 35 * MIB);
    }

    #[test]
    fn a_tally_wakes_once_per_arming() {
        let mut t = Tally::default();
        assert_eq!(t.spend("inotify", 1, 10), None, "nothing armed");
        t.arm(&[Budget::new(1, 100)]);
        assert_eq!(t.spend("inotify", 1, 60), None);
        assert_eq!(t.spend("inotify", 2, 1000), None, "another filesystem");
        let w = t.spend("inotify", 1, 60).expect("budget reached");
        assert_eq!(w.bytes, 120);
        assert_eq!(t.spend("inotify", 1, 1000), None, "once per arming");
        t.arm(&[Budget::new(1, 100)]);
        assert!(t.spend("inotify", 1, 100).is_some(), "re-armed");
    }

    #[test]
    fn a_batch_is_cut_to_what_a_fast_writer_needs_to_spend_the_budget() {
        let batch = Duration::from_millis(100);
        assert_eq!(batch_for(None, batch), batch, "nothing armed");
        // Far from the budget: the whole batch.
        assert_eq!(batch_for(Some(10 << 30), batch), batch);
        assert_eq!(batch_for(Some(u64::MAX), batch), batch);
        // 64 MiB at 8 GiB/s: 7.8125 ms.
        assert_eq!(
            batch_for(Some(64 * MIB), batch),
            Duration::from_nanos(7_812_500)
        );
        // Nearly spent, or spent: the shortest batch, never zero.
        assert_eq!(batch_for(Some(MIB), batch), SHORTEST_BATCH);
        assert_eq!(batch_for(Some(0), batch), SHORTEST_BATCH);
        // Never longer than asked.
        assert_eq!(
            batch_for(Some(0), Duration::from_millis(1)),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn a_tally_says_what_is_left_of_the_closest_unspent_budget() {
        let mut t = Tally::default();
        assert_eq!(t.left(), None);
        t.arm(&[Budget::new(1, 100), Budget::new(2, 500)]);
        assert_eq!(t.left(), Some(100));
        t.spend("fanotify", 2, 450);
        assert_eq!(t.left(), Some(50));
        // A budget that woke the daemon no longer counts until armed again.
        assert!(t.spend("fanotify", 2, 50).is_some());
        assert_eq!(t.left(), Some(100));
        assert!(t.spend("fanotify", 1, 100).is_some());
        assert_eq!(t.left(), None);
        assert_eq!(
            t.batch(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn slices_are_cut_near_a_threshold_not_by_a_resting_budget() {
        let ms = Duration::from_millis;
        let mut t = Tally::default();
        // Resting: 1 MiB to wake on, 10 GiB to the threshold. Batches are short (the first
        // MiB wakes the daemon at once), slices are not.
        let resting = Budget {
            dev: 1,
            bytes: MIB,
            asked: 10 << 30,
        };
        t.arm(&[resting]);
        assert_eq!(t.batch(ms(100)), SHORTEST_BATCH);
        assert_eq!(t.slice(ms(10)), ms(10));
        // Near a threshold: both short.
        t.arm(&[Budget::new(1, MIB)]);
        assert_eq!(t.slice(ms(10)), SHORTEST_BATCH);
        // Spent (the daemon was woken): whole slices until armed again.
        t.spend("inotify", 1, MIB);
        assert_eq!(t.slice(ms(10)), ms(10));
    }

    #[test]
    fn a_waker_holds_one_wake_up() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let w = Wake {
            source: "ebpf",
            dev: 0x2d,
            bytes: 3 * MIB,
        };
        assert!(wake(Some(&tx), w));
        assert!(!wake(Some(&tx), w), "coalesced");
        assert!(!wake(None, w));
        let got = rx.try_recv().unwrap();
        assert!(got.to_string().contains("ebpf write countdown"), "{got}");
        assert!(got.to_string().contains("device 0:45"), "{got}");
    }
}
