//! Which directory each inotify watch descriptor stands for, packed: 12 bytes per watched
//! directory (the descriptor, an index into the few device numbers seen, the inode number in 48
//! bits) in one list sorted by descriptor, found by binary search; the rare directory whose
//! inode number needs more than 48 bits (overlayfs `xino`) or whose device is past the 65,535th
//! is kept whole in a small map beside it. The kernel hands out descriptors in increasing order
//! (`idr_alloc_cyclic`), so a new watch is appended; a removed one becomes a tombstone until they
//! are half of the list, then the list is compacted. The way back (a directory's descriptor) is
//! kept in the size table's directory record (`track::Watch`), not here. Two hash maps
//! (descriptor → directory, directory → descriptor) cost ~66 bytes per directory before, 16-byte
//! rows 16.

use crate::sources::track::Key;
use std::collections::HashMap;

/// Device index of a tombstone.
const DEAD: u16 = u16::MAX;

/// Tombstones below this many are never compacted away (a small table is not worth it).
const COMPACT_MIN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    wd: i32,
    /// The low 32 bits of the inode number.
    lo: u32,
    /// Index into [`WatchTable::devs`], or [`DEAD`].
    dev: u16,
    /// Bits 32 to 47 of the inode number.
    hi: u16,
}

/// Watch descriptor → directory `(st_dev, st_ino)` (see the module doc).
#[derive(Debug, Default)]
pub(super) struct WatchTable {
    /// Sorted by `wd`, each `wd` at most once, and never one of `whole`'s.
    rows: Vec<Row>,
    /// Descriptors of directories a row cannot hold.
    whole: HashMap<i32, Key>,
    /// Device numbers seen (a handful: the filesystems the projects are on).
    devs: Vec<u64>,
    dead: usize,
}

impl WatchTable {
    /// Live watches.
    pub(super) fn len(&self) -> usize {
        self.rows.len() - self.dead + self.whole.len()
    }

    fn find(&self, wd: i32) -> Result<usize, usize> {
        self.rows.binary_search_by_key(&wd, |r| r.wd)
    }

    fn key_of(&self, row: &Row) -> Option<Key> {
        let dev = self.devs.get(usize::from(row.dev))?;
        Some((*dev, u64::from(row.hi) << 32 | u64::from(row.lo)))
    }

    /// The directory of `wd`.
    pub(super) fn get(&self, wd: i32) -> Option<Key> {
        let row = self.find(wd).ok().and_then(|at| self.rows.get(at));
        match row.filter(|r| r.dev != DEAD) {
            Some(r) => self.key_of(r),
            None => self.whole.get(&wd).copied(),
        }
    }

    /// Whether some descriptor stands for `key` (a scan: for the tests' watch limit only).
    pub(super) fn holds(&self, key: Key) -> bool {
        self.rows.iter().any(|r| self.key_of(r) == Some(key))
            || self.whole.values().any(|k| *k == key)
    }

    /// The row for `key`, `None` when it does not fit one.
    fn row(&mut self, wd: i32, key: Key) -> Option<Row> {
        let hi = u16::try_from(key.1 >> 32).ok()?;
        let lo = u32::try_from(key.1 & u64::from(u32::MAX)).ok()?;
        let dev = self.dev_index(key.0)?;
        Some(Row { wd, lo, dev, hi })
    }

    /// Sets the directory of `wd`; the directory it stood for before, if another.
    pub(super) fn insert(&mut self, wd: i32, key: Key) -> Option<Key> {
        let old = self.get(wd).filter(|old| *old != key);
        let Some(row) = self.row(wd, key) else {
            self.remove(wd);
            self.whole.insert(wd, key);
            return old;
        };
        self.whole.remove(&wd);
        match self.find(wd) {
            Ok(at) => {
                if let Some(r) = self.rows.get_mut(at) {
                    if r.dev == DEAD {
                        self.dead -= 1;
                    }
                    *r = row;
                }
            }
            // The usual case: a new descriptor, above every other.
            Err(at) if at == self.rows.len() => self.rows.push(row),
            // After the kernel's counter wrapped: rare, so the shift is fine.
            Err(at) => self.rows.insert(at, row),
        }
        old
    }

    /// Forgets `wd`; the directory it stood for.
    pub(super) fn remove(&mut self, wd: i32) -> Option<Key> {
        if let Some(key) = self.whole.remove(&wd) {
            return Some(key);
        }
        let at = self.find(wd).ok()?;
        let key = self.rows.get(at).and_then(|r| self.key_of(r))?;
        if let Some(r) = self.rows.get_mut(at) {
            r.dev = DEAD;
            self.dead += 1;
        }
        if self.dead >= COMPACT_MIN && self.dead * 2 >= self.rows.len() {
            self.rows.retain(|r| r.dev != DEAD);
            self.dead = 0;
            if self.rows.capacity() > self.rows.len() * 2 {
                self.rows.shrink_to(self.rows.len() + self.rows.len() / 4);
            }
        }
        Some(key)
    }

    /// Gives back the list's spare capacity (after a baseline walk added many watches).
    pub(super) fn shrink(&mut self) {
        if self.rows.capacity() > self.rows.len() + self.rows.len() / 4 + 16 {
            self.rows.shrink_to(self.rows.len() + self.rows.len() / 8);
        }
    }

    /// Heap bytes held.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<Row>() + self.devs.capacity() * 8
    }

    /// Device numbers are only ever added: a node's filesystems are few. Past 65,535 of them
    /// the directory is kept whole.
    fn dev_index(&mut self, dev: u64) -> Option<u16> {
        if let Some(i) = self.devs.iter().position(|d| *d == dev) {
            return u16::try_from(i).ok();
        }
        let i = u16::try_from(self.devs.len()).ok().filter(|i| *i != DEAD)?;
        self.devs.push(dev);
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_row_is_12_bytes() {
        assert_eq!(std::mem::size_of::<Row>(), 12);
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
        assert!(full <= 10_000 * 12 * 9 / 8 + 64, "{full}");
        for wd in 1..=9_900 {
            assert!(t.remove(wd).is_some());
        }
        assert_eq!(t.len(), 100);
        assert!(t.rows.len() < 200, "{} rows kept", t.rows.len());
        assert!(t.heap_bytes() < full / 10, "{}", t.heap_bytes());
        for wd in 9_901..=10_000 {
            assert_eq!(t.get(wd), Some((1, u64::try_from(wd).unwrap())));
        }
    }

    proptest! {
        /// Any sequence of inserts and removes agrees with a plain map.
        #[test]
        fn agrees_with_a_map(ops in prop::collection::vec((any::<bool>(), 0i32..300, 0u64..3, 0u64..50, 0usize..4), 0..600)) {
            let mut t = WatchTable::default();
            let mut m: HashMap<i32, Key> = HashMap::new();
            // Inode numbers of 32, 48 and 64 bits (the last kept whole).
            let high = [0, 1 << 32, 0xffff << 32, 1 << 60];
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
    }
}
