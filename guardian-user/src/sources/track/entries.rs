//! The packed entry lists of the tracked directories: 16 bytes per entry (inode number, size or
//! a marker, 32-bit name hash), no names, every directory's list a segment of one shared pool
//! (no allocation, header or allocator slack per directory). A segment is sorted by (name hash,
//! inode) with a short unsorted tail for recent additions; removals leave tombstones that are
//! swept once they are a quarter of it. A segment that outgrows its room moves to the end of
//! the pool; the room it left is a hole until the pool is compacted (`dirs.rs`). What the
//! entries mean (sizes per project, hard links, collisions) is `tree.rs`'s.

/// `size` of an entry that is a subdirectory (`ino` is the directory's).
pub(super) const DIR: u32 = u32::MAX;
/// `size` of a file whose size lives in the tree's wide table (several tracked names, or too
/// large for 32 bits).
pub(super) const WIDE: u32 = u32::MAX - 1;
/// `size` of a removed entry, swept later.
const DEAD: u32 = u32::MAX - 2;
/// Largest apparent size kept in an entry.
pub(super) const INLINE_MAX: u64 = (u32::MAX - 3) as u64;

/// One name of a directory: a file with its size (or [`WIDE`]) or a subdirectory ([`DIR`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) ino: u64,
    pub(super) size: u32,
    pub(super) hash: u32,
}

impl Entry {
    pub(super) fn is_dir(&self) -> bool {
        self.size == DIR
    }

    fn is_dead(&self) -> bool {
        self.size == DEAD
    }

    fn order(&self) -> (u32, u64) {
        (self.hash, self.ino)
    }
}

const PAD: Entry = Entry {
    ino: 0,
    size: DEAD,
    hash: 0,
};

/// Where one directory's list lies in the [`Pool`]: `pool[off..off + len]`, with room up to
/// `off + cap`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Seg {
    off: u32,
    len: u32,
    cap: u32,
    /// `[..sorted]` is sorted by [`Entry::order`]; the rest is in insertion order.
    sorted: u32,
    /// Tombstones in `[..len]`.
    dead: u32,
}

fn us(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn u(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The entries of every directory, one segment each (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Pool {
    list: Vec<Entry>,
    /// Entries of `list` in no segment's room (left behind by moves and trims).
    holes: usize,
}

impl Pool {
    /// Room for `cap` entries at the end of the pool, `None` past 2^32 entries.
    pub(super) fn alloc(&mut self, cap: usize) -> Option<Seg> {
        let off = u32::try_from(self.list.len()).ok()?;
        let end = self.list.len().checked_add(cap)?;
        u32::try_from(end).ok()?;
        self.list.resize(end, PAD);
        Some(Seg {
            off,
            len: 0,
            cap: u(cap),
            sorted: 0,
            dead: 0,
        })
    }

    /// Gives a segment's room back.
    pub(super) fn free(&mut self, seg: &mut Seg) {
        self.release_tail(seg, 0);
        *seg = Seg::default();
    }

    /// Shrinks the room of `seg` to `keep` entries (`keep >= len`): at the end of the pool
    /// the pool shrinks, elsewhere the rest is a hole.
    fn release_tail(&mut self, seg: &mut Seg, keep: usize) {
        let (off, cap) = (us(seg.off), us(seg.cap));
        if keep >= cap {
            return;
        }
        if off + cap == self.list.len() {
            self.list.truncate(off + keep);
        } else {
            self.holes += cap - keep;
        }
        seg.cap = u(keep);
    }

    /// Live entries plus holes: whether compacting is worth it.
    pub(super) fn wasteful(&self) -> bool {
        self.holes > 4096 && self.holes * 2 > self.list.len()
    }

    /// Rewrites the pool with the segments in `segs` packed in that order, each with room for
    /// its entries only (tombstones swept); gives the rest back.
    pub(super) fn compact<'a>(&mut self, segs: impl Iterator<Item = &'a mut Seg>) {
        let mut list = Vec::with_capacity(self.list.len().saturating_sub(self.holes));
        for seg in segs {
            let old = *seg;
            let (off, len) = (us(old.off), us(old.len));
            let Some(items) = self.list.get(off..off + len) else {
                *seg = Seg::default();
                continue;
            };
            let head_dead = items
                .get(..us(old.sorted).min(len))
                .map_or(0, |h| h.iter().filter(|e| e.is_dead()).count());
            let start = list.len();
            list.extend(items.iter().filter(|e| !e.is_dead()).copied());
            *seg = Seg {
                off: u(start),
                len: u(list.len() - start),
                cap: u(list.len() - start),
                sorted: u(us(old.sorted).min(len) - head_dead),
                dead: 0,
            };
        }
        list.shrink_to_fit();
        self.list = list;
        self.holes = 0;
    }

    /// Heap bytes held (from the capacity).
    pub(super) fn heap_bytes(&self) -> usize {
        self.list.capacity() * std::mem::size_of::<Entry>()
    }

    /// Entries in the pool (live, tombstones, room and holes).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.list.len()
    }

    fn items(&self, seg: &Seg) -> &[Entry] {
        let off = us(seg.off);
        self.list.get(off..off + us(seg.len)).unwrap_or(&[])
    }

    fn items_mut(&mut self, seg: &Seg) -> &mut [Entry] {
        let off = us(seg.off);
        self.list.get_mut(off..off + us(seg.len)).unwrap_or(&mut [])
    }
}

/// The entries of one directory, to read.
#[derive(Clone, Copy)]
pub(super) struct Entries<'a> {
    list: &'a [Entry],
    sorted: usize,
    dead: usize,
}

/// The entries of one directory, to change.
pub(super) struct EntriesMut<'a> {
    seg: &'a mut Seg,
    pool: &'a mut Pool,
}

/// Index of an entry in its directory's list, valid until the list is next changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot(usize);

impl<'a> Entries<'a> {
    pub(super) fn of(seg: &Seg, pool: &'a Pool) -> Entries<'a> {
        let list = pool.items(seg);
        Entries {
            list,
            sorted: us(seg.sorted).min(list.len()),
            dead: us(seg.dead),
        }
    }

    /// Live entries.
    pub(super) fn len(&self) -> usize {
        self.list.len().saturating_sub(self.dead)
    }

    /// Live entries, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &'a Entry> + 'a {
        self.list.iter().filter(|e| !e.is_dead())
    }

    /// Slots of the live entries whose name hashes to `hash`.
    pub(super) fn with_hash(&self, hash: u32) -> Vec<Slot> {
        let sorted = self.sorted;
        let head = &self.list[..sorted];
        let from = head.partition_point(|e| e.hash < hash);
        let mut out: Vec<Slot> = head[from..]
            .iter()
            .take_while(|e| e.hash == hash)
            .enumerate()
            .filter(|(_, e)| !e.is_dead())
            .map(|(i, _)| Slot(from + i))
            .collect();
        out.extend(
            self.list[sorted..]
                .iter()
                .enumerate()
                .filter(|(_, e)| e.hash == hash && !e.is_dead())
                .map(|(i, _)| Slot(sorted + i)),
        );
        out
    }

    pub(super) fn get(&self, slot: Slot) -> Option<Entry> {
        self.list.get(slot.0).copied().filter(|e| !e.is_dead())
    }

    /// The slot of the directory entry for inode `ino` named with `hash`.
    pub(super) fn find_dir(&self, hash: u32, ino: u64) -> Option<Slot> {
        self.with_hash(hash)
            .into_iter()
            .find(|s| self.get(*s).is_some_and(|e| e.is_dir() && e.ino == ino))
    }

    /// After [`EntriesMut::sort`]: name hashes that more than one file entry has (two names
    /// of the directory hashing alike, or one name read twice).
    pub(super) fn shared_file_hashes(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        let mut files = self.list.iter().filter(|e| !e.is_dead() && !e.is_dir());
        let Some(mut prev) = files.next() else {
            return out;
        };
        for e in files {
            if e.hash == prev.hash && out.last() != Some(&e.hash) {
                out.push(e.hash);
            }
            prev = e;
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl<'a> EntriesMut<'a> {
    pub(super) fn of(seg: &'a mut Seg, pool: &'a mut Pool) -> EntriesMut<'a> {
        EntriesMut { seg, pool }
    }

    /// The same entries, to read.
    pub(super) fn read(&self) -> Entries<'_> {
        Entries::of(self.seg, self.pool)
    }

    /// Takes every file entry out, keeping the subdirectories.
    pub(super) fn take_files(&mut self) -> Vec<Entry> {
        let items = self.pool.items_mut(self.seg);
        let files = items
            .iter()
            .filter(|e| !e.is_dead() && !e.is_dir())
            .copied()
            .collect();
        for e in items.iter_mut().filter(|e| !e.is_dir()) {
            e.size = DEAD;
        }
        self.seg.dead = u(items.iter().filter(|e| e.is_dead()).count());
        self.sort();
        files
    }

    /// Sets the size (or marker) of a live entry.
    pub(super) fn set_size(&mut self, slot: Slot, size: u32) {
        let items = self.pool.items_mut(self.seg);
        if let Some(e) = items.get_mut(slot.0).filter(|e| !e.is_dead()) {
            e.size = size;
        }
    }

    /// Removes an entry (a tombstone until the next sweep).
    pub(super) fn remove(&mut self, slot: Slot) -> Option<Entry> {
        let items = self.pool.items_mut(self.seg);
        let e = items.get_mut(slot.0).filter(|e| !e.is_dead())?;
        let old = *e;
        e.size = DEAD;
        self.seg.dead = self.seg.dead.saturating_add(1);
        if us(self.seg.dead).saturating_mul(4) > us(self.seg.len) {
            self.sweep();
        }
        Some(old)
    }

    /// Adds an entry. Room grows by an eighth at a time (the list is usually filled by one
    /// walk and changes slowly after) and, unless the segment ends the pool, by moving it
    /// there; the unsorted tail is sorted in once it is longer than a sixteenth of the list.
    /// `false` when the pool is full (2^32 entries).
    pub(super) fn push(&mut self, entry: Entry) -> bool {
        let more = (us(self.seg.len) / 8).max(4);
        if self.seg.len >= self.seg.cap && !self.grow(more) {
            return false;
        }
        let at = us(self.seg.off) + us(self.seg.len);
        let Some(slot) = self.pool.list.get_mut(at) else {
            return false;
        };
        *slot = entry;
        self.seg.len += 1;
        let len = us(self.seg.len);
        let tail = len - us(self.seg.sorted).min(len);
        if tail > (len / 16).max(32) {
            self.sort();
        }
        true
    }

    /// Room for `n` more entries (a walk knows how many names it is about to add).
    pub(super) fn reserve(&mut self, n: usize) -> bool {
        let free = us(self.seg.cap) - us(self.seg.len);
        n <= free || self.grow(n - free)
    }

    /// `more` entries of room beyond what the segment has.
    fn grow(&mut self, more: usize) -> bool {
        let (off, cap, len) = (us(self.seg.off), us(self.seg.cap), us(self.seg.len));
        if off + cap == self.pool.list.len() {
            let Some(end) = (off + cap)
                .checked_add(more)
                .filter(|e| u32::try_from(*e).is_ok())
            else {
                return false;
            };
            self.pool.list.resize(end, PAD);
            self.seg.cap = u(cap + more);
            return true;
        }
        let Some(mut moved) = self.pool.alloc(cap + more) else {
            return false;
        };
        self.pool.list.copy_within(off..off + len, us(moved.off));
        self.pool.holes += cap;
        moved.len = self.seg.len;
        moved.sorted = self.seg.sorted;
        moved.dead = self.seg.dead;
        *self.seg = moved;
        true
    }

    /// Drops tombstones, keeping the order (the sorted head stays sorted).
    fn sweep(&mut self) {
        let sorted = us(self.seg.sorted).min(us(self.seg.len));
        let items = self.pool.items_mut(self.seg);
        let dead_in_head = items[..sorted].iter().filter(|e| e.is_dead()).count();
        let mut kept = 0;
        for i in 0..items.len() {
            if !items[i].is_dead() {
                items[kept] = items[i];
                kept += 1;
            }
        }
        self.seg.len = u(kept);
        self.seg.sorted = u(sorted - dead_in_head);
        self.seg.dead = 0;
        if us(self.seg.cap) > kept + kept / 4 + 4 {
            self.pool.release_tail(self.seg, kept + kept / 8);
        }
    }

    /// Sorts the whole list (a sorted head and a short tail cost about one pass).
    pub(super) fn sort(&mut self) {
        if self.seg.dead > 0 {
            self.sweep();
        }
        self.pool.items_mut(self.seg).sort_by_key(Entry::order);
        self.seg.sorted = self.seg.len;
    }

    /// Gives back spare room (after a walk filled the list).
    pub(super) fn shrink(&mut self) {
        let len = us(self.seg.len);
        self.pool.release_tail(self.seg, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(hash: u32, ino: u64, size: u32) -> Entry {
        Entry { ino, size, hash }
    }

    #[test]
    fn an_entry_is_sixteen_bytes_and_a_segment_twenty() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        assert_eq!(std::mem::size_of::<Seg>(), 20);
    }

    #[test]
    fn lookups_see_the_sorted_head_and_the_tail_and_skip_removed_entries() {
        let mut pool = Pool::default();
        let mut seg = pool.alloc(0).unwrap();
        // Another segment after it: growing moves this one to the end of the pool.
        let mut other = pool.alloc(3).unwrap();
        let mut e = EntriesMut::of(&mut seg, &mut pool);
        for i in 0..1000u64 {
            assert!(e.push(file((i % 97) as u32, i, 1)));
        }
        for h in 0..97u32 {
            let slots = e.read().with_hash(h);
            assert!(slots.iter().all(|s| e.read().get(*s).unwrap().hash == h));
            assert_eq!(
                slots.len(),
                (0..1000u64).filter(|i| i % 97 == h as u64).count()
            );
        }
        // Remove most of them: sweeps keep the rest findable.
        for i in 0..900u64 {
            let h = (i % 97) as u32;
            let slot = e
                .read()
                .with_hash(h)
                .into_iter()
                .find(|s| e.read().get(*s).unwrap().ino == i)
                .unwrap();
            assert_eq!(e.remove(slot).unwrap().ino, i);
        }
        assert_eq!(e.read().iter().count(), 100);
        for i in 900..1000u64 {
            let h = (i % 97) as u32;
            assert!(e
                .read()
                .with_hash(h)
                .iter()
                .any(|s| e.read().get(*s).unwrap().ino == i));
        }
        e.sort();
        assert!(e.read().shared_file_hashes().len() < 97);
        e.shrink();
        assert_eq!(e.read().len(), 100);
        // The other segment was untouched; compacting packs both, in order.
        let mut o = EntriesMut::of(&mut other, &mut pool);
        o.push(file(5, 1, DIR));
        o.push(file(5, 2, 3));
        assert!(
            o.read().shared_file_hashes().is_empty(),
            "a dir and a file may share"
        );
        o.push(file(5, 3, 3));
        // Past its room: it moves to the end of the pool, leaving a hole.
        o.push(file(6, 4, 1));
        o.sort();
        assert_eq!(o.read().shared_file_hashes(), vec![5]);
        assert_eq!(
            o.read()
                .find_dir(5, 1)
                .and_then(|s| o.read().get(s))
                .map(|e| e.ino),
            Some(1)
        );
        assert!(pool.slots() > 107, "a hole left by the move");
        pool.compact([&mut seg, &mut other].into_iter());
        assert_eq!(pool.slots(), 104, "packed: {}", pool.slots());
        assert_eq!(Entries::of(&seg, &pool).len(), 100);
        assert_eq!(Entries::of(&other, &pool).len(), 4);
        for i in 900..1000u64 {
            let h = (i % 97) as u32;
            let read = Entries::of(&seg, &pool);
            assert!(read
                .with_hash(h)
                .iter()
                .any(|s| read.get(*s).unwrap().ino == i));
        }
        assert_eq!(
            Entries::of(&other, &pool).shared_file_hashes(),
            vec![5],
            "the order survives compaction"
        );
        pool.free(&mut other);
        assert_eq!(pool.slots(), 100, "the last segment's room is given back");
        pool.free(&mut seg);
        assert_eq!(pool.slots(), 0);
    }
}
