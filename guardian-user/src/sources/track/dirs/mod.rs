//! The tracked directories of the size table, packed: one 40-byte record per directory (inode
//! number, an index into the few device numbers seen, its parent's and its name's place, its
//! project, the source's watch, and where its entries lie in the shared pool of `entries.rs`)
//! in one list, found by `(st_dev, st_ino)` through an open-addressing table of 4-byte record
//! numbers (linear probing, at most 80% full). Names live in one byte arena, each after its length. Nothing is
//! allocated per directory; what removals and moves leave behind (records, name bytes, pool
//! room) is reused or compacted away ([`Dirs::compact`] after a walk, [`Dirs::tidy`] after every
//! batch once it is half of a list). Before, a directory cost ~150 bytes: a hash map slot of its 80-byte node with the key,
//! a name allocation, and an allocation (header and slack) for its entry list.

use super::entries::{Entries, EntriesMut, Entry, Pool, Seg};
use super::links::home_bucket;
use super::tree::{Key, Watch, NO_WATCH, UNWATCHED};
use super::us;
use std::ffi::CStr;

mod watches;

/// No record (a root or an orphan's parent; an empty bucket of the index).
const NONE: u32 = u32::MAX;
/// Device index of a free record.
const FREE: u16 = u16::MAX;

/// One directory (see the module doc).
#[derive(Clone, Copy, Debug)]
struct Rec {
    /// The inode number, in two halves (the record is then 4-byte aligned: 40 bytes, not 48).
    ino: [u32; 2],
    seg: Seg,
    /// Record number of the parent, or [`NONE`].
    parent: u32,
    project: u32,
    /// Its name: `names[name_off]` is its length (a name is at most 255 bytes), its bytes follow.
    name_off: u32,
    /// The source's watch.
    watch: Watch,
}

impl Rec {
    /// Index into [`Dirs::devs`], or [`FREE`] (kept in its segment's tag).
    fn dev(&self) -> u16 {
        self.seg.tag
    }
}

/// What a removed directory held.
pub(super) struct Removed {
    pub(super) project: u32,
    pub(super) watch: Watch,
    /// Its live entries.
    pub(super) entries: Vec<Entry>,
}

/// Why a directory could not be added.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Full {
    /// More than 65,535 device numbers, or 2^32 directories, entries or name bytes.
    Table,
    /// A name longer than 255 bytes (Linux allows none).
    Name,
}

/// The directories (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Dirs {
    recs: Vec<Rec>,
    /// Numbers of free records.
    free: Vec<u32>,
    /// Record numbers by home bucket of their key; [`NONE`] is empty.
    index: Vec<u32>,
    live: usize,
    /// Device numbers seen (a handful: the filesystems and subvolumes the projects are on).
    devs: Vec<u64>,
    names: Vec<u8>,
    /// Bytes of `names` no record points at.
    name_holes: usize,
    pool: Pool,
    /// Directories whose watch is [`UNWATCHED`], per index into `devs`.
    unwatched: Vec<usize>,
}

fn halves(ino: u64) -> [u32; 2] {
    let [a, b, c, d, e, f, g, h] = ino.to_le_bytes();
    [
        u32::from_le_bytes([a, b, c, d]),
        u32::from_le_bytes([e, f, g, h]),
    ]
}

fn ino_of(halves: [u32; 2]) -> u64 {
    u64::from(halves[1]) << 32 | u64::from(halves[0])
}

impl Dirs {
    pub(super) fn len(&self) -> usize {
        self.live
    }

    fn rec(&self, id: u32) -> Option<&Rec> {
        self.recs.get(us(id)).filter(|r| r.dev() != FREE)
    }

    fn key_at(&self, id: u32) -> Option<Key> {
        let rec = self.rec(id)?;
        Some((*self.devs.get(usize::from(rec.dev()))?, ino_of(rec.ino)))
    }

    /// The bucket a key is first looked for in.
    fn home(&self, key: Key) -> usize {
        home_bucket(key, self.index.len())
    }

    /// The bucket holding `key`.
    fn bucket(&self, key: Key) -> Option<usize> {
        let n = self.index.len();
        if n == 0 {
            return None;
        }
        let mut i = self.home(key);
        for _ in 0..n {
            let id = *self.index.get(i)?;
            if id == NONE {
                return None;
            }
            if self.key_at(id) == Some(key) {
                return Some(i);
            }
            i = (i + 1) % n;
        }
        None
    }

    fn find(&self, key: Key) -> Option<u32> {
        self.index.get(self.bucket(key)?).copied()
    }

    pub(super) fn contains(&self, key: Key) -> bool {
        self.bucket(key).is_some()
    }

    /// Puts record `id` (whose key is `key`, already in `recs` and counted in `live`) in the
    /// index, growing it to stay 80% full at most: a grown index is rebuilt from `recs`, so it
    /// holds the record already (putting it in again would leave a bucket behind on removal).
    fn index_insert(&mut self, key: Key, id: u32) {
        if self.live * 5 > self.index.len() * 4 {
            self.rebuild_index(self.live * 2);
            return;
        }
        self.place(key, id);
    }

    /// Puts `id` in the first empty bucket from `key`'s home on (linear probing).
    fn place(&mut self, key: Key, id: u32) {
        let n = self.index.len();
        let mut i = self.home(key);
        for _ in 0..n {
            match self.index.get_mut(i) {
                Some(b) if *b == NONE => {
                    *b = id;
                    return;
                }
                _ => i = (i + 1) % n,
            }
        }
    }

    /// Empties bucket `at`, shifting back the entries after it that would no longer be found.
    fn index_remove(&mut self, at: usize) {
        let n = self.index.len();
        let mut hole = at;
        let mut j = at;
        for _ in 0..n {
            j = (j + 1) % n;
            let Some(id) = self.index.get(j).copied().filter(|id| *id != NONE) else {
                break;
            };
            let Some(home) = self.key_at(id).map(|k| self.home(k)) else {
                break;
            };
            // Stays when its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                if let Some(b) = self.index.get_mut(hole) {
                    *b = id;
                }
                hole = j;
            }
        }
        if let Some(b) = self.index.get_mut(hole) {
            *b = NONE;
        }
    }

    fn rebuild_index(&mut self, buckets: usize) {
        self.index = vec![NONE; buckets.max(16)];
        for id in 0..self.recs.len() {
            let Ok(id) = u32::try_from(id) else { break };
            if let Some(key) = self.key_at(id) {
                self.place(key, id);
            }
        }
    }

    fn dev_index(&mut self, dev: u64) -> Option<u16> {
        if let Some(i) = self.devs.iter().position(|d| *d == dev) {
            return u16::try_from(i).ok();
        }
        let i = u16::try_from(self.devs.len()).ok().filter(|i| *i != FREE)?;
        self.devs.push(dev);
        Some(i)
    }

    /// Appends a name (its length, then its bytes) to the arena; where it starts.
    fn store_name(&mut self, name: &CStr) -> Result<u32, Full> {
        let bytes = name.to_bytes();
        let len = u8::try_from(bytes.len()).map_err(|_| Full::Name)?;
        let off = u32::try_from(self.names.len()).map_err(|_| Full::Table)?;
        self.names.push(len);
        self.names.extend_from_slice(bytes);
        Ok(off)
    }

    /// The name starting at `off` of the arena (its length byte first).
    fn name_at(&self, off: u32) -> Option<&[u8]> {
        let off = us(off);
        let len = usize::from(*self.names.get(off)?);
        self.names.get(off + 1..off + 1 + len)
    }

    /// Adds directory `key` (replacing what the table had under it) with no entries.
    pub(super) fn insert(
        &mut self,
        key: Key,
        parent: Option<Key>,
        name: &CStr,
        project: u32,
    ) -> Result<(), Full> {
        self.remove(key);
        let dev = self.dev_index(key.0).ok_or(Full::Table)?;
        let id = match self.free.last() {
            Some(id) => *id,
            None => u32::try_from(self.recs.len())
                .ok()
                .filter(|id| *id != NONE)
                .ok_or(Full::Table)?,
        };
        let name_off = self.store_name(name)?;
        let rec = Rec {
            ino: halves(key.1),
            seg: Seg::tagged(dev),
            parent: parent.and_then(|p| self.find(p)).unwrap_or(NONE),
            project,
            name_off,
            watch: NO_WATCH,
        };
        match self.recs.get_mut(us(id)) {
            Some(slot) => {
                self.free.pop();
                *slot = rec;
            }
            None => self.recs.push(rec),
        }
        self.live += 1;
        self.index_insert(key, id);
        Ok(())
    }

    /// Removes directory `key`; its subdirectories that named it as their parent are orphans
    /// after (they are found by its directory entries: a subdirectory is on its parent's
    /// device and listed in it while it names it as its parent).
    pub(super) fn remove(&mut self, key: Key) -> Option<Removed> {
        let at = self.bucket(key)?;
        let id = *self.index.get(at)?;
        self.index_remove(at);
        let mut rec = *self.rec(id)?;
        let entries: Vec<Entry> = Entries::of(&rec.seg, &self.pool).iter().collect();
        for e in entries.iter().filter(|e| e.is_dir()) {
            if let Some(child) = self.find((key.0, e.ino)) {
                if let Some(c) = self.recs.get_mut(us(child)).filter(|c| c.parent == id) {
                    c.parent = NONE;
                }
            }
        }
        if rec.watch == UNWATCHED {
            self.count_unwatched(rec.dev(), false);
        }
        self.pool.free(&mut rec.seg);
        self.name_holes += 1 + self.name_at(rec.name_off).map_or(0, <[u8]>::len);
        if let Some(r) = self.recs.get_mut(us(id)) {
            r.seg = Seg::tagged(FREE);
        }
        self.free.push(id);
        self.live -= 1;
        if self.live == 0 {
            *self = Dirs {
                devs: std::mem::take(&mut self.devs),
                ..Dirs::default()
            };
        }
        Some(Removed {
            project: rec.project,
            watch: rec.watch,
            entries,
        })
    }

    pub(super) fn project(&self, key: Key) -> Option<u32> {
        self.rec(self.find(key)?).map(|r| r.project)
    }

    pub(super) fn set_project(&mut self, key: Key, project: u32) {
        if let Some(r) = self.find(key).and_then(|id| self.recs.get_mut(us(id))) {
            r.project = project;
        }
    }

    /// The parent of a tracked directory: `None` for a project root, an orphan, or a
    /// directory not tracked.
    pub(super) fn parent(&self, key: Key) -> Option<Key> {
        let rec = self.rec(self.find(key)?)?;
        self.key_at(rec.parent)
    }

    pub(super) fn set_parent(&mut self, key: Key, parent: Option<Key>) {
        let parent = parent.and_then(|p| self.find(p)).unwrap_or(NONE);
        if let Some(r) = self.find(key).and_then(|id| self.recs.get_mut(us(id))) {
            r.parent = parent;
        }
    }

    /// The name of a tracked directory in its parent (empty for a project root).
    pub(super) fn name(&self, key: Key) -> Option<&[u8]> {
        let rec = self.rec(self.find(key)?)?;
        self.name_at(rec.name_off)
    }

    pub(super) fn set_name(&mut self, key: Key, name: &CStr) -> Result<(), Full> {
        let id = self.find(key).ok_or(Full::Table)?;
        let old = self.rec(id).map(|r| r.name_off);
        let off = self.store_name(name)?;
        self.name_holes += 1 + old.and_then(|o| self.name_at(o)).map_or(0, <[u8]>::len);
        if let Some(r) = self.recs.get_mut(us(id)) {
            r.name_off = off;
        }
        Ok(())
    }

    pub(super) fn entries(&self, key: Key) -> Option<Entries<'_>> {
        let rec = self.rec(self.find(key)?)?;
        Some(Entries::of(&rec.seg, &self.pool))
    }

    pub(super) fn entries_mut(&mut self, key: Key) -> Option<EntriesMut<'_>> {
        let id = self.find(key)?;
        let rec = self.recs.get_mut(us(id)).filter(|r| r.dev() != FREE)?;
        Some(EntriesMut::of(&mut rec.seg, &mut self.pool))
    }

    /// Every directory with its project and entries.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Key, u32, Entries<'_>)> + '_ {
        self.recs
            .iter()
            .filter(|r| r.dev() != FREE)
            .filter_map(|r| {
                let dev = *self.devs.get(usize::from(r.dev()))?;
                Some((
                    (dev, ino_of(r.ino)),
                    r.project,
                    Entries::of(&r.seg, &self.pool),
                ))
            })
    }

    /// Compacts what is mostly holes. Between batches only: compacting sweeps tombstones, so
    /// no [`super::entries::Slot`] may be held across it.
    pub(super) fn tidy(&mut self) {
        if self.pool.wasteful() {
            self.compact_pool();
        }
        if self.name_holes > 4096 && self.name_holes * 2 > self.names.len() {
            self.compact_names();
        }
    }

    fn compact_pool(&mut self) {
        let segs = self
            .recs
            .iter_mut()
            .filter(|r| r.dev() != FREE)
            .map(|r| &mut r.seg);
        self.pool.compact(segs);
    }

    fn compact_names(&mut self) {
        let mut names = Vec::with_capacity(self.names.len().saturating_sub(self.name_holes));
        for r in self.recs.iter_mut().filter(|r| r.dev() != FREE) {
            let off = us(r.name_off);
            let len = self.names.get(off).map_or(0, |l| usize::from(*l));
            let bytes = self.names.get(off..off + 1 + len).unwrap_or(&[0]);
            r.name_off = u32::try_from(names.len()).unwrap_or(u32::MAX);
            names.extend_from_slice(bytes);
        }
        self.names = names;
        self.name_holes = 0;
    }

    /// After a walk filled the table: every list packed with no spare room, and the index
    /// sized to be 75% full.
    pub(super) fn compact(&mut self) {
        self.compact_pool();
        self.compact_names();
        while self.recs.last().is_some_and(|r| r.dev() == FREE) {
            self.recs.pop();
        }
        let end = self.recs.len();
        self.free.retain(|id| us(*id) < end);
        self.recs.shrink_to_fit();
        self.free.shrink_to_fit();
        self.rebuild_index(self.live * 4 / 3 + 1);
    }

    /// Heap bytes held (from the capacities).
    pub(super) fn heap_bytes(&self) -> usize {
        self.recs.capacity() * std::mem::size_of::<Rec>()
            + self.free.capacity() * 4
            + self.index.capacity() * 4
            + self.devs.capacity() * 8
            + self.unwatched.capacity() * 8
            + self.names.capacity()
            + self.pool.heap_bytes()
    }

    /// Of [`Dirs::heap_bytes`], what the directories cost without their entries.
    pub(super) fn dir_heap_bytes(&self) -> usize {
        self.heap_bytes() - self.pool.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::track::entries::DIR;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_directory_record_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Rec>(), 40);
        assert_eq!(ino_of(halves(0x1234_5678_9abc_def0)), 0x1234_5678_9abc_def0);
    }

    fn name(i: u64) -> std::ffi::CString {
        std::ffi::CString::new(format!("d{i}")).unwrap()
    }

    proptest! {
        /// Inserts and removals on a few devices (btrfs subvolumes share inode numbers) agree
        /// with a map, through compactions.
        #[test]
        fn the_table_agrees_with_a_map(ops in proptest::collection::vec((0u8..4, 0u64..3, 0u64..300), 1..800)) {
            let mut dirs = Dirs::default();
            let mut want: HashMap<Key, (u32, Option<Key>, Vec<u8>)> = HashMap::new();
            for (op, dev, ino) in ops {
                let key = (dev + 10, ino);
                match op {
                    0 | 1 => {
                        // A subdirectory is on its parent's device (the tree enters no other).
                        let parent = want.keys().find(|p| p.0 == key.0 && **p != key).copied();
                        let project = u32::try_from(ino % 7).unwrap();
                        dirs.insert(key, parent, &name(ino), project).unwrap();
                        if let Some(p) = parent {
                            dirs.entries_mut(p).unwrap().push(Entry { ino: key.1, size: DIR, hash: 1 });
                            want.get_mut(&p).unwrap();
                        }
                        // What named `key` as parent is an orphan now.
                        for v in want.values_mut() {
                            if v.1 == Some(key) {
                                v.1 = None;
                            }
                        }
                        want.insert(key, (project, parent, name(ino).into_bytes()));
                        dirs.entries_mut(key).unwrap().push(Entry { ino: 1, size: 5, hash: 2 });
                    }
                    2 => {
                        let had = dirs.remove(key);
                        prop_assert_eq!(had.is_some(), want.remove(&key).is_some());
                        for v in want.values_mut() {
                            if v.1 == Some(key) {
                                v.1 = None;
                            }
                        }
                    }
                    _ => dirs.compact(),
                }
                prop_assert_eq!(dirs.len(), want.len());
                // One bucket per directory: a bucket left behind would break probe chains
                // once its record is reused.
                prop_assert_eq!(dirs.index.iter().filter(|b| **b != NONE).count(), dirs.len());
            }
            for (key, (project, parent, n)) in &want {
                prop_assert_eq!(dirs.project(*key), Some(*project));
                prop_assert_eq!(dirs.parent(*key), *parent);
                prop_assert_eq!(dirs.name(*key), Some(n.as_slice()));
                let files = dirs.entries(*key).unwrap().iter().filter(|e| !e.is_dir()).count();
                prop_assert_eq!(files, 1);
            }
            prop_assert_eq!(dirs.iter().count(), want.len());
        }
    }
}
