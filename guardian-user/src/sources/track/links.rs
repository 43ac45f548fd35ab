//! Hard links in the size table: a file is counted once however many tracked names it has.
//! Entries hold no link count; a file known under several names (or too large for an entry's 32
//! bits) moves to the wide table, keyed by `(st_dev, st_ino)`, with its size, the project it is
//! counted in and its number of tracked names. To find the other names of a file that gains
//! one, every inline entry's inode number is in a Bloom filter (~0.9 bytes per file): a new name
//! of a file with `st_nlink > 1` that the filter may already hold is a *twin candidate*, counted
//! as a new file until the end of the batch, when one pass over the table finds its other names
//! and moves them all to the wide table. Links to files outside every project (a package store)
//! pass the filter and cost nothing more.

use super::entries::{Entry, WIDE};
use super::tree::{signed, Key, Tree};
use std::collections::{HashMap, HashSet};

/// A file in the wide table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Wide {
    pub(super) size: u64,
    /// The project its size is counted in (that of the name first known).
    pub(super) project: u32,
    /// Tracked names.
    pub(super) links: u32,
}

/// Key of an empty slot of the [`WideTable`] (no device is numbered `u64::MAX`).
const NO_KEY: Key = (u64::MAX, u64::MAX);

/// The wide table: `(st_dev, st_ino)` → [`Wide`], open addressing with linear probing in one
/// list of 32-byte slots, at most 80% full (75% after a walk); a hash map cost 33 bytes per
/// bucket of a power of two above 8/7 of its capacity.
#[derive(Debug, Default)]
pub(super) struct WideTable {
    slots: Vec<(Key, Wide)>,
    len: usize,
}

impl WideTable {
    fn home(&self, key: Key) -> usize {
        home_bucket(key, self.slots.len())
    }

    fn position(&self, key: Key) -> Option<usize> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let mut i = self.home(key);
        for _ in 0..n {
            let k = self.slots.get(i)?.0;
            if k == key {
                return Some(i);
            }
            if k == NO_KEY {
                return None;
            }
            i = (i + 1) % n;
        }
        None
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn contains_key(&self, key: &Key) -> bool {
        self.position(*key).is_some()
    }

    pub(super) fn get_mut(&mut self, key: &Key) -> Option<&mut Wide> {
        let at = self.position(*key)?;
        self.slots.get_mut(at).map(|s| &mut s.1)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Wide> + '_ {
        self.slots.iter().filter(|s| s.0 != NO_KEY).map(|s| &s.1)
    }

    /// Sets the file `key`'s entry.
    pub(super) fn insert(&mut self, key: Key, wide: Wide) {
        if key == NO_KEY {
            return;
        }
        if let Some(slot) = self.get_mut(&key) {
            *slot = wide;
            return;
        }
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.resize((self.len + 1) * 2);
        }
        self.place(key, wide);
        self.len += 1;
    }

    fn place(&mut self, key: Key, wide: Wide) {
        let n = self.slots.len();
        let mut i = self.home(key);
        for _ in 0..n {
            match self.slots.get_mut(i) {
                Some(s) if s.0 == NO_KEY => {
                    *s = (key, wide);
                    return;
                }
                _ => i = (i + 1) % n,
            }
        }
    }

    /// Forgets the file `key`, shifting back what would no longer be found.
    pub(super) fn remove(&mut self, key: &Key) -> Option<Wide> {
        let at = self.position(*key)?;
        let old = self.slots.get(at)?.1;
        let n = self.slots.len();
        let (mut hole, mut j) = (at, at);
        for _ in 0..n {
            j = (j + 1) % n;
            let Some(s) = self.slots.get(j).copied().filter(|s| s.0 != NO_KEY) else {
                break;
            };
            let home = self.home(s.0);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = s;
                }
                hole = j;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            h.0 = NO_KEY;
        }
        self.len -= 1;
        Some(old)
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(
            &mut self.slots,
            vec![(NO_KEY, Wide::default()); slots.max(16)],
        );
        for (key, wide) in old.into_iter().filter(|s| s.0 != NO_KEY) {
            self.place(key, wide);
        }
    }

    /// After a walk: 75% full.
    pub(super) fn compact(&mut self) {
        if self.len == 0 {
            self.slots = Vec::new();
        } else {
            self.resize(self.len * 4 / 3 + 1);
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<(Key, Wide)>()
    }
}

/// A new name of a file with other names somewhere, that may be tracked already.
#[derive(Clone, Copy, Debug)]
pub(super) struct Twin {
    pub(super) key: Key,
    pub(super) dir: Key,
    pub(super) size: u64,
}

/// Bits per expected entry; with [`HASHES`] hash functions, about 6% false positives when full
/// (3% at the fill a rebuild leaves): a false positive costs one pass over the table at the end
/// of a batch, and only for a new name of a file with several links.
const BITS_PER_ENTRY: usize = 6;
const HASHES: u64 = 4;
/// Smallest filter, in entries.
const MIN_ROOM: usize = 1024;

/// Membership filter of the inodes of inline entries (see the module doc). Never forgets:
/// rebuilt from the table once more inodes were added than it was sized for.
#[derive(Debug, Default)]
pub(super) struct Bloom {
    bits: Vec<u64>,
    /// Inserts it was sized for, and inserts since it was built.
    room: usize,
    added: usize,
}

/// A key's hash for the open-addressing tables and the Bloom filter.
pub(super) fn key_hash(key: Key) -> u64 {
    mix(key.1 ^ mix(key.0))
}

/// The bucket of `buckets` a key is first looked for in (Lemire's reduction: the high half of
/// hash × buckets is below buckets).
pub(super) fn home_bucket(key: Key, buckets: usize) -> usize {
    let n = u64::try_from(buckets).unwrap_or(u64::MAX);
    usize::try_from((u128::from(key_hash(key)) * u128::from(n)) >> 64).unwrap_or(0)
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finalizer.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Bloom {
    fn positions(&self, key: Key) -> impl Iterator<Item = usize> + '_ {
        let h1 = key_hash(key);
        let h2 = mix(h1) | 1;
        let nbits = u64::try_from(self.bits.len())
            .unwrap_or(u64::MAX)
            .saturating_mul(64);
        (0..HASHES).map(move |i| {
            let h = h1.wrapping_add(i.wrapping_mul(h2));
            // Lemire's reduction: the high half of h * nbits is below nbits.
            let pos = (u128::from(h) * u128::from(nbits)) >> 64;
            usize::try_from(pos).unwrap_or(0)
        })
    }

    /// Whether `key` may have been inserted (always true before the first build).
    pub(super) fn may_hold(&self, key: Key) -> bool {
        if self.bits.is_empty() {
            return true;
        }
        self.positions(key).all(|p| {
            self.bits
                .get(p / 64)
                .is_some_and(|w| w & (1 << (p % 64)) != 0)
        })
    }

    pub(super) fn insert(&mut self, key: Key) {
        self.added += 1;
        if self.bits.is_empty() {
            return;
        }
        let positions: Vec<usize> = self.positions(key).collect();
        for p in positions {
            if let Some(w) = self.bits.get_mut(p / 64) {
                *w |= 1 << (p % 64);
            }
        }
    }

    /// Whether it is full and should be rebuilt.
    pub(super) fn due(&self) -> bool {
        self.added >= self.room
    }

    /// A fresh filter sized for `live` inodes and a quarter more.
    fn sized(live: usize) -> Bloom {
        let room = (live + live / 4).max(MIN_ROOM);
        Bloom {
            bits: vec![0; (room * BITS_PER_ENTRY).div_ceil(64)],
            room,
            added: 0,
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.bits.capacity() * 8
    }
}

impl Tree {
    /// Rebuilds the filter from every inline entry.
    pub(super) fn rebuild_bloom(&mut self) {
        let inline = |e: &Entry| !e.is_dir() && e.size != WIDE;
        let live: usize = self
            .dirs
            .iter()
            .map(|(_, _, entries)| entries.iter().filter(inline).count())
            .sum();
        let mut bloom = Bloom::sized(live);
        for (key, _, entries) in self.dirs.iter() {
            for e in entries.iter().filter(inline) {
                bloom.insert((key.0, e.ino));
            }
        }
        self.bloom = bloom;
    }

    /// Finds the other tracked names of this batch's twin candidates: a file tracked under two
    /// or more names moves to the wide table, counted once, in the project of a name known
    /// before the batch (else the first new one).
    pub(super) fn resolve_twins(&mut self) {
        if self.twins.is_empty() {
            return;
        }
        let twins = std::mem::take(&mut self.twins);
        let wanted: HashSet<Key> = twins.iter().map(|t| t.key).collect();
        let mut found: HashMap<Key, Vec<(Key, Entry)>> = HashMap::new();
        for (dir, _, entries) in self.dirs.iter() {
            for e in entries.iter() {
                if !e.is_dir() && e.size != WIDE && wanted.contains(&(dir.0, e.ino)) {
                    found.entry((dir.0, e.ino)).or_default().push((dir, e));
                }
            }
        }
        for (key, names) in found {
            if names.len() < 2 || self.wide.contains_key(&key) {
                continue;
            }
            let new_dirs: Vec<Key> = twins
                .iter()
                .filter(|t| t.key == key)
                .map(|t| t.dir)
                .collect();
            let owner_dir = names
                .iter()
                .find(|(d, _)| !new_dirs.contains(d))
                .or(names.first())
                .map(|(d, _)| *d);
            let Some(owner) = owner_dir.and_then(|d| self.dirs.project(d)) else {
                continue;
            };
            let size = twins
                .iter()
                .rev()
                .find(|t| t.key == key)
                .map_or(0, |t| t.size);
            let mut links = 0u32;
            for (dir, e) in &names {
                let Some(project) = self.dirs.project(*dir) else {
                    continue;
                };
                let Some(mut entries) = self.dirs.entries_mut(*dir) else {
                    continue;
                };
                let read = entries.read();
                let slot = read.with_hash(e.hash).into_iter().find(|s| {
                    read.get(*s)
                        .is_some_and(|x| x.ino == e.ino && !x.is_dir() && x.size != WIDE)
                });
                if let Some(slot) = slot {
                    entries.set_size(slot, WIDE);
                    self.add(project, -i64::from(e.size));
                    links += 1;
                }
            }
            self.wide.insert(
                key,
                Wide {
                    size,
                    project: owner,
                    links,
                },
            );
            self.add(owner, signed(size));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_holds_what_was_inserted_and_little_else() {
        let mut b = Bloom::sized(10_000);
        for ino in 0..10_000u64 {
            b.insert((7, ino));
        }
        assert!((0..10_000u64).all(|ino| b.may_hold((7, ino))));
        let false_positives = (10_000..110_000u64)
            .filter(|ino| b.may_hold((7, *ino)))
            .count();
        assert!(false_positives < 4_000, "{false_positives} of 100,000");
        assert!(!b.due());
        assert!(
            Bloom::default().may_hold((1, 1)),
            "unbuilt: may hold anything"
        );
    }

    proptest::proptest! {
        /// Inserts, updates and removals agree with a map, through growth and compaction.
        #[test]
        fn the_wide_table_agrees_with_a_map(ops in proptest::collection::vec((0u8..5, 0u64..3, 0u64..200), 1..1500)) {
            let mut t = WideTable::default();
            let mut m: HashMap<Key, Wide> = HashMap::new();
            for (op, dev, ino) in ops {
                let key = (dev, ino);
                let w = Wide { size: ino * 3, project: 1, links: u32::from(op) };
                match op {
                    0..=2 => {
                        t.insert(key, w);
                        m.insert(key, w);
                    }
                    3 => proptest::prop_assert_eq!(t.remove(&key), m.remove(&key)),
                    _ => t.compact(),
                }
                proptest::prop_assert_eq!(t.len(), m.len());
            }
            for (k, w) in &m {
                proptest::prop_assert_eq!(t.get_mut(k).copied(), Some(*w));
            }
            proptest::prop_assert_eq!(t.values().count(), m.len());
        }
    }
}
