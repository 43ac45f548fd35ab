//! Which directory each inotify watch descriptor stands for, packed: 4 bytes per watched
//! directory (the low 32 bits of its inode number) in one list per device and upper half of the
//! inode number (a handful: the filesystems the projects are on), in descriptor order, the
//! descriptors themselves kept as runs of consecutive ones (8 bytes per run). The kernel hands
//! out descriptors in increasing order (`idr_alloc_cyclic`), so the watches of a walk are one
//! run and a new watch extends the last; a descriptor is found by binary search over the runs.
//! A removed watch becomes a tombstone until they are two thirds of its list, then the list is
//! compacted (a gap of one tombstone is kept, cheaper than a new run). The rare directory that
//! fits no list (more than [`MAX_PARTS`] of them, or a low half equal to the tombstone's) is
//! kept whole in a small map beside them. The way back (a directory's descriptor) is kept by the
//! size table (`track::Watch`), not here. Two hash maps (descriptor → directory, directory →
//! descriptor) cost ~66 bytes per directory before, rows of descriptor and low half 8.

use crate::sources::track::{u32_of, us, Key};
use std::collections::HashMap;

/// Low half of a tombstone's inode number.
const DEAD: u32 = u32::MAX;

/// Most lists; directories of further devices (or upper halves) are kept whole.
const MAX_PARTS: usize = 64;

/// Tombstones below this many are never compacted away (a small table is not worth it).
const COMPACT_MIN: usize = 64;

/// Longest gap of tombstones a compaction keeps inside a run (a tombstone costs 4 bytes, a new
/// run 8).
const MAX_GAP: i64 = 1;

/// Consecutive descriptors: row `at` of its list stands for `wd`, the next row for `wd + 1`,
/// and so on up to the next run's first row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    wd: i32,
    at: u32,
}

/// The watches of the directories on one device whose inode numbers share their upper half.
#[derive(Debug)]
struct Part {
    dev: u64,
    hi: u32,
    /// Sorted by `wd` and by `at`; the first at row 0, each covering at least one row, none
    /// reaching the next one's descriptor.
    runs: Vec<Run>,
    /// Low halves of the inode numbers (or [`DEAD`]), in descriptor order.
    lo: Vec<u32>,
    dead: usize,
}

impl Part {
    fn new(dev: u64, hi: u32) -> Part {
        Part {
            dev,
            hi,
            runs: Vec::new(),
            lo: Vec::new(),
            dead: 0,
        }
    }

    /// The row after the last of run `i`.
    fn end(&self, i: usize) -> usize {
        self.runs.get(i + 1).map_or(self.lo.len(), |r| us(r.at))
    }

    /// The row of `wd`, or the index of the first run above it.
    fn find(&self, wd: i32) -> Result<usize, usize> {
        let i = self.runs.partition_point(|r| r.wd <= wd);
        let Some(run) = i.checked_sub(1).and_then(|j| self.runs.get(j)) else {
            return Err(0);
        };
        let off = usize::try_from(i64::from(wd) - i64::from(run.wd)).unwrap_or(usize::MAX);
        match us(run.at).checked_add(off) {
            Some(row) if row < self.end(i - 1) => Ok(row),
            _ => Err(i),
        }
    }

    fn key(&self, lo: u32) -> Option<Key> {
        (lo != DEAD).then_some((self.dev, u64::from(self.hi) << 32 | u64::from(lo)))
    }

    fn live(&self) -> usize {
        self.lo.len() - self.dead
    }

    /// Adds `wd`, which no run covers, below run `i` (`find`'s `Err`): the run before it grows
    /// when `wd` follows it (after at most [`MAX_GAP`] tombstones), else a run begins.
    fn add(&mut self, i: usize, wd: i32, lo: u32) {
        let (row, fill, new_run) =
            match i.checked_sub(1).and_then(|j| Some((j, *self.runs.get(j)?))) {
                Some((j, run)) => {
                    let end = self.end(j);
                    let next =
                        i64::from(run.wd) + i64::try_from(end - us(run.at)).unwrap_or(i64::MAX);
                    let gap = i64::from(wd) - next;
                    if (0..=MAX_GAP).contains(&gap) {
                        (end, usize::try_from(gap).unwrap_or(0), false)
                    } else {
                        (end, 0, true)
                    }
                }
                None => (0, 0, true),
            };
        self.lo.splice(
            row..row,
            std::iter::repeat_n(DEAD, fill).chain(std::iter::once(lo)),
        );
        self.dead += fill;
        let moved = u32_of(fill + 1);
        let from = if new_run {
            self.runs.insert(
                i,
                Run {
                    wd,
                    at: u32_of(row),
                },
            );
            i + 1
        } else {
            i
        };
        for r in self.runs.iter_mut().skip(from) {
            r.at += moved;
        }
    }

    /// Drops the tombstones (but a gap of [`MAX_GAP`] inside a run).
    fn compact(&mut self) {
        let mut runs = Vec::new();
        let mut lo = Vec::with_capacity(self.live() + self.live() / 4);
        let mut dead = 0;
        let mut last: Option<i64> = None;
        for (i, run) in self.runs.iter().enumerate() {
            let rows = self.lo.get(us(run.at)..self.end(i)).unwrap_or_default();
            for (k, &v) in rows.iter().enumerate() {
                if v == DEAD {
                    continue;
                }
                let wd = i64::from(run.wd) + i64::try_from(k).unwrap_or(i64::MAX);
                match last.map(|prev| wd - prev - 1) {
                    Some(gap) if (0..=MAX_GAP).contains(&gap) => {
                        let gap = usize::try_from(gap).unwrap_or(0);
                        lo.extend(std::iter::repeat_n(DEAD, gap));
                        dead += gap;
                    }
                    _ => runs.push(Run {
                        wd: i32::try_from(wd).unwrap_or(i32::MAX),
                        at: u32_of(lo.len()),
                    }),
                }
                lo.push(v);
                last = Some(wd);
            }
        }
        runs.shrink_to_fit();
        self.runs = runs;
        self.lo = lo;
        self.dead = dead;
    }

    fn shrink(&mut self) {
        if self.lo.capacity() > self.lo.len() + self.lo.len() / 4 + 16 {
            self.lo.shrink_to(self.lo.len() + self.lo.len() / 8);
        }
        self.runs.shrink_to_fit();
    }
}

/// Watch descriptor → directory `(st_dev, st_ino)` (see the module doc).
#[derive(Debug, Default)]
pub(super) struct WatchTable {
    parts: Vec<Part>,
    /// Descriptors of directories no list holds.
    whole: HashMap<i32, Key>,
}

fn halves(ino: u64) -> (u32, u32) {
    let [a, b, c, d, e, f, g, h] = ino.to_le_bytes();
    (
        u32::from_le_bytes([e, f, g, h]),
        u32::from_le_bytes([a, b, c, d]),
    )
}

impl WatchTable {
    /// Live watches.
    pub(super) fn len(&self) -> usize {
        self.parts.iter().map(Part::live).sum::<usize>() + self.whole.len()
    }

    /// The directory of `wd`.
    pub(super) fn get(&self, wd: i32) -> Option<Key> {
        self.parts
            .iter()
            .find_map(|p| {
                p.find(wd)
                    .ok()
                    .and_then(|row| p.lo.get(row))
                    .and_then(|lo| p.key(*lo))
            })
            .or_else(|| self.whole.get(&wd).copied())
    }

    /// Whether some descriptor stands for `key` (a scan: for the tests' watch limit only).
    pub(super) fn holds(&self, key: Key) -> bool {
        self.parts
            .iter()
            .any(|p| p.lo.iter().any(|lo| p.key(*lo) == Some(key)))
            || self.whole.values().any(|k| *k == key)
    }

    /// Sets the directory of `wd`; the directory it stood for before, if another.
    pub(super) fn insert(&mut self, wd: i32, key: Key) -> Option<Key> {
        let old = self.remove(wd).filter(|old| *old != key);
        let (hi, lo) = halves(key.1);
        let part = match self.parts.iter().position(|p| p.dev == key.0 && p.hi == hi) {
            Some(i) => self.parts.get_mut(i),
            None if self.parts.len() < MAX_PARTS => {
                self.parts.push(Part::new(key.0, hi));
                self.parts.last_mut()
            }
            None => None,
        };
        let Some(part) = part.filter(|_| lo != DEAD) else {
            self.whole.insert(wd, key);
            return old;
        };
        match part.find(wd) {
            Ok(row) => {
                if let Some(r) = part.lo.get_mut(row) {
                    if *r == DEAD {
                        part.dead -= 1;
                    }
                    *r = lo;
                }
            }
            // Usually a new descriptor right above every other: the last run grows. Below
            // others after the kernel's counter wrapped: rare, so the shift is fine.
            Err(i) => part.add(i, wd, lo),
        }
        old
    }

    /// Forgets `wd`; the directory it stood for.
    pub(super) fn remove(&mut self, wd: i32) -> Option<Key> {
        if let Some(key) = self.whole.remove(&wd) {
            return Some(key);
        }
        for part in &mut self.parts {
            let Ok(row) = part.find(wd) else {
                continue;
            };
            let Some(key) = part.lo.get(row).and_then(|lo| part.key(*lo)) else {
                continue;
            };
            if let Some(r) = part.lo.get_mut(row) {
                *r = DEAD;
                part.dead += 1;
            }
            // Two thirds: a compaction keeps up to one tombstone per live row, and the next
            // must wait for a third of the rows to go.
            if part.dead >= COMPACT_MIN && part.dead * 3 >= part.lo.len() * 2 {
                part.compact();
            }
            return Some(key);
        }
        None
    }

    /// Gives back the lists' spare capacity (after a baseline walk added many watches).
    pub(super) fn shrink(&mut self) {
        self.parts.iter_mut().for_each(Part::shrink);
    }

    /// Heap bytes held.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| {
                p.lo.capacity() * std::mem::size_of::<u32>()
                    + p.runs.capacity() * std::mem::size_of::<Run>()
            })
            .sum::<usize>()
            + self.parts.capacity() * std::mem::size_of::<Part>()
    }

    /// Rows kept, tombstones included.
    #[cfg(test)]
    fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.lo.len()).sum()
    }

    /// Runs kept.
    #[cfg(test)]
    fn runs(&self) -> usize {
        self.parts.iter().map(|p| p.runs.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_run_is_8_bytes() {
        assert_eq!(std::mem::size_of::<Run>(), 8);
        assert_eq!(halves(0x1234_5678_9abc_def0), (0x1234_5678, 0x9abc_def0));
    }

    #[test]
    fn descriptors_map_to_their_directories_and_go_away() {
        let mut t = WatchTable::default();
        assert_eq!(t.insert(1, (7, 100)), None);
        assert_eq!(t.insert(2, (7, 200)), None);
        assert_eq!(t.insert(5, (9, 100)), None);
        assert_eq!(t.get(2), Some((7, 200)));
        assert_eq!(t.get(5), Some((9, 100)));
        assert_eq!(t.get(3), None);
        // The kernel handing the same descriptor back for the same directory.
        assert_eq!(t.insert(2, (7, 200)), None);
        // A descriptor now standing for another directory says which it replaced.
        assert_eq!(t.insert(2, (7, 300)), Some((7, 200)));
        assert_eq!(t.remove(2), Some((7, 300)));
        assert_eq!(t.remove(2), None);
        assert_eq!(t.get(2), None);
        assert_eq!(t.len(), 2);
        // Revived after removal; and a descriptor below the others (a wrapped counter).
        assert_eq!(t.insert(2, (7, 400)), None);
        assert_eq!(t.insert(-3, (7, 500)), None);
        assert_eq!(t.get(-3), Some((7, 500)));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn tombstones_are_compacted_and_the_list_shrinks() {
        let mut t = WatchTable::default();
        for wd in 1..=10_000 {
            t.insert(wd, (1, u64::try_from(wd).unwrap()));
        }
        t.shrink();
        let full = t.heap_bytes();
        assert!(full <= 10_000 * 4 * 9 / 8 + 512, "{full}");
        assert_eq!(t.runs(), 1);
        for wd in 1..=9_900 {
            assert!(t.remove(wd).is_some());
        }
        assert_eq!(t.len(), 100);
        assert!(t.rows() < 200, "{} rows kept", t.rows());
        assert!(t.heap_bytes() < full / 10, "{}", t.heap_bytes());
        for wd in 9_901..=10_000 {
            assert_eq!(t.get(wd), Some((1, u64::try_from(wd).unwrap())));
        }
    }

    #[test]
    fn directories_past_the_last_list_are_kept_whole() {
        let mut t = WatchTable::default();
        for wd in 0..200 {
            assert_eq!(t.insert(wd, (u64::try_from(wd).unwrap(), 5)), None);
        }
        assert_eq!(t.parts.len(), MAX_PARTS);
        assert_eq!(t.whole.len(), 200 - MAX_PARTS);
        for wd in 0..200 {
            assert_eq!(t.get(wd), Some((u64::try_from(wd).unwrap(), 5)));
        }
        assert_eq!(t.len(), 200);
    }

    proptest! {
        /// Any sequence of inserts and removes agrees with a plain map.
        #[test]
        fn agrees_with_a_map(ops in prop::collection::vec((any::<bool>(), 0i32..300, 0u64..3, 0u64..50, 0usize..4), 0..600)) {
            let mut t = WatchTable::default();
            let mut m: HashMap<i32, Key> = HashMap::new();
            // Inode numbers of 32 and 64 bits, and one whose low half is the tombstone's
            // (kept whole).
            let high = [0, 1 << 32, 0xffff << 40, u64::from(u32::MAX)];
            for (add, wd, dev, ino, bits) in ops {
                let ino = ino | high[bits];
                if add {
                    let before = m.insert(wd, (dev, ino)).filter(|k| *k != (dev, ino));
                    prop_assert_eq!(t.insert(wd, (dev, ino)), before);
                } else {
                    prop_assert_eq!(t.remove(wd), m.remove(&wd));
                }
                prop_assert_eq!(t.len(), m.len());
            }
            for wd in 0..300 {
                prop_assert_eq!(t.get(wd), m.get(&wd).copied());
            }
        }

        /// As the kernel hands them out (each descriptor above the last, on two devices in
        /// stretches, watches removed at random), the table agrees with a plain map, and what
        /// it keeps stays within three rows per live watch plus the tombstones never compacted.
        #[test]
        fn kernel_order_agrees_with_a_map_and_stays_small(
            ops in prop::collection::vec((0u8..10, 1i32..4, any::<prop::sample::Index>()), 0..4000)
        ) {
            let mut t = WatchTable::default();
            let mut m: HashMap<i32, Key> = HashMap::new();
            let mut live: Vec<i32> = Vec::new();
            let mut next = 1i32;
            let mut dev = 1u64;
            for (op, step, pick) in ops {
                if op < 6 {
                    // A new watch; sometimes on the other device, sometimes after descriptors
                    // other inotify users' directories took.
                    if op == 0 {
                        dev = 3 - dev;
                    }
                    let wd = next + if op == 1 { step } else { 0 };
                    next = wd + 1;
                    let key = (dev, u64::try_from(wd).unwrap() * 7);
                    prop_assert_eq!(t.insert(wd, key), None);
                    m.insert(wd, key);
                    live.push(wd);
                } else if !live.is_empty() {
                    let wd = live.swap_remove(pick.index(live.len()));
                    prop_assert_eq!(t.remove(wd), m.remove(&wd));
                }
                prop_assert_eq!(t.len(), m.len());
                prop_assert!(t.rows() <= 3 * t.len() + 2 * COMPACT_MIN, "{} rows, {} live", t.rows(), t.len());
            }
            for wd in 0..next + 4 {
                prop_assert_eq!(t.get(wd), m.get(&wd).copied());
            }
        }
    }

    #[test]
    fn a_compaction_keeps_single_tombstones_and_splits_at_wider_gaps() {
        let key = |wd: i32| (1, u64::try_from(wd).unwrap() + 5);
        // Every third descriptor stays: two tombstones between survivors, a run each.
        let mut t = WatchTable::default();
        for wd in 1..=3_000 {
            t.insert(wd, key(wd));
        }
        for wd in (1..=3_000).filter(|wd| wd % 3 != 0) {
            assert_eq!(t.remove(wd), Some(key(wd)));
        }
        assert_eq!((t.len(), t.rows(), t.runs()), (1_000, 1_000, 1_000));
        // Every other one stays: a tombstone between survivors, one run.
        let mut t = WatchTable::default();
        for wd in 1..=3_000 {
            t.insert(wd, key(wd));
        }
        for wd in (1..=3_000).filter(|wd| wd % 2 == 0) {
            t.remove(wd);
        }
        // Half are tombstones: not compacted yet; a third more goes, and it is.
        assert_eq!((t.rows(), t.runs()), (3_000, 1));
        for wd in (1..=3_000).filter(|wd| wd % 6 == 1) {
            t.remove(wd);
        }
        assert_eq!(t.len(), 1_000);
        assert!(t.rows() < 3_000, "{} rows", t.rows());
        for wd in 1..=3_000 {
            let want = (wd % 2 == 1 && wd % 6 != 1).then(|| key(wd));
            assert_eq!(t.get(wd), want, "{wd}");
        }
    }

    #[test]
    fn a_walk_costs_4_bytes_a_watch_and_churn_keeps_it_bounded() {
        let mut t = WatchTable::default();
        // A baseline walk: 100,000 directories, their descriptors consecutive.
        for wd in 1..=100_000 {
            t.insert(wd, (1, u64::try_from(wd).unwrap() + 11));
        }
        t.shrink();
        assert_eq!(t.runs(), 1);
        assert!(
            t.heap_bytes() <= 100_000 * 4 * 9 / 8 + 512,
            "{}",
            t.heap_bytes()
        );
        // Churn: every other directory goes, and as many new ones come (higher descriptors).
        for wd in (2..=100_000).step_by(2) {
            assert_eq!(t.remove(wd), Some((1, u64::try_from(wd).unwrap() + 11)));
        }
        for wd in 100_001..=150_000 {
            t.insert(wd, (1, u64::try_from(wd).unwrap() + 11));
        }
        assert_eq!(t.len(), 100_000);
        t.shrink();
        assert_eq!(t.runs(), 1);
        assert!(
            t.heap_bytes() <= 150_000 * 4 * 9 / 8 + 512,
            "{}",
            t.heap_bytes()
        );
        for wd in 1..=150_000 {
            let want = (wd % 2 == 1 || wd > 100_000).then(|| (1, u64::try_from(wd).unwrap() + 11));
            assert_eq!(t.get(wd), want, "{wd}");
        }
    }
}
