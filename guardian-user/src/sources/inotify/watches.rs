//! Which directory each inotify watch descriptor stands for, packed: 8 bytes per watched
//! directory (the descriptor and the low 32 bits of the inode number), in one list per device
//! and upper half of the inode number (a handful: the filesystems the projects are on), each
//! sorted by descriptor and found by binary search; the rare directory that fits none (more than
//! [`MAX_PARTS`] such lists, or a low half equal to the tombstone's) is kept whole in a small map
//! beside them. The kernel hands out descriptors in increasing order (`idr_alloc_cyclic`), so a
//! new watch is appended; a removed one becomes a tombstone until they are half of its list, then
//! the list is compacted. The way back (a directory's descriptor) is kept by the size table
//! (`track::Watch`), not here. Two hash maps (descriptor → directory, directory → descriptor)
//! cost ~66 bytes per directory before, 16-byte rows 16.

use crate::sources::track::Key;
use std::collections::HashMap;

/// Low half of a tombstone's inode number.
const DEAD: u32 = u32::MAX;

/// Most lists; directories of further devices (or upper halves) are kept whole.
const MAX_PARTS: usize = 64;

/// Tombstones below this many are never compacted away (a small table is not worth it).
const COMPACT_MIN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    wd: i32,
    /// The low 32 bits of the inode number, or [`DEAD`].
    lo: u32,
}

/// The watches of the directories on one device whose inode numbers share their upper half.
#[derive(Debug)]
struct Part {
    dev: u64,
    hi: u32,
    /// Sorted by `wd`, each `wd` at most once.
    rows: Vec<Row>,
    dead: usize,
}

impl Part {
    fn find(&self, wd: i32) -> Result<usize, usize> {
        self.rows.binary_search_by_key(&wd, |r| r.wd)
    }

    fn key(&self, row: &Row) -> Option<Key> {
        (row.lo != DEAD).then_some((self.dev, u64::from(self.hi) << 32 | u64::from(row.lo)))
    }

    fn live(&self) -> usize {
        self.rows.len() - self.dead
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
                    .and_then(|at| p.rows.get(at))
                    .and_then(|r| p.key(r))
            })
            .or_else(|| self.whole.get(&wd).copied())
    }

    /// Whether some descriptor stands for `key` (a scan: for the tests' watch limit only).
    pub(super) fn holds(&self, key: Key) -> bool {
        self.parts
            .iter()
            .any(|p| p.rows.iter().any(|r| p.key(r) == Some(key)))
            || self.whole.values().any(|k| *k == key)
    }

    /// Sets the directory of `wd`; the directory it stood for before, if another.
    pub(super) fn insert(&mut self, wd: i32, key: Key) -> Option<Key> {
        let old = self.remove(wd).filter(|old| *old != key);
        let (hi, lo) = halves(key.1);
        let part = match self.parts.iter().position(|p| p.dev == key.0 && p.hi == hi) {
            Some(i) => self.parts.get_mut(i),
            None if self.parts.len() < MAX_PARTS => {
                self.parts.push(Part {
                    dev: key.0,
                    hi,
                    rows: Vec::new(),
                    dead: 0,
                });
                self.parts.last_mut()
            }
            None => None,
        };
        let Some(part) = part.filter(|_| lo != DEAD) else {
            self.whole.insert(wd, key);
            return old;
        };
        let row = Row { wd, lo };
        match part.find(wd) {
            Ok(at) => {
                if let Some(r) = part.rows.get_mut(at) {
                    if r.lo == DEAD {
                        part.dead -= 1;
                    }
                    *r = row;
                }
            }
            // The usual case: a new descriptor, above every other.
            Err(at) if at == part.rows.len() => part.rows.push(row),
            // After the kernel's counter wrapped: rare, so the shift is fine.
            Err(at) => part.rows.insert(at, row),
        }
        old
    }

    /// Forgets `wd`; the directory it stood for.
    pub(super) fn remove(&mut self, wd: i32) -> Option<Key> {
        if let Some(key) = self.whole.remove(&wd) {
            return Some(key);
        }
        for part in &mut self.parts {
            let Ok(at) = part.find(wd) else {
                continue;
            };
            let Some(key) = part.rows.get(at).and_then(|r| part.key(r)) else {
                continue;
            };
            if let Some(r) = part.rows.get_mut(at) {
                r.lo = DEAD;
                part.dead += 1;
            }
            if part.dead >= COMPACT_MIN && part.dead * 2 >= part.rows.len() {
                part.rows.retain(|r| r.lo != DEAD);
                part.dead = 0;
                if part.rows.capacity() > part.rows.len() * 2 {
                    part.rows.shrink_to(part.rows.len() + part.rows.len() / 4);
                }
            }
            return Some(key);
        }
        None
    }

    /// Gives back the lists' spare capacity (after a baseline walk added many watches).
    pub(super) fn shrink(&mut self) {
        for part in &mut self.parts {
            if part.rows.capacity() > part.rows.len() + part.rows.len() / 4 + 16 {
                part.rows.shrink_to(part.rows.len() + part.rows.len() / 8);
            }
        }
    }

    /// Heap bytes held.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.rows.capacity() * std::mem::size_of::<Row>())
            .sum::<usize>()
            + self.parts.capacity() * std::mem::size_of::<Part>()
    }

    /// Rows kept, tombstones included.
    #[cfg(test)]
    fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.rows.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_row_is_8_bytes() {
        assert_eq!(std::mem::size_of::<Row>(), 8);
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
        assert!(full <= 10_000 * 8 * 9 / 8 + 256, "{full}");
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
    }
}
