//! The packed entry lists of the tracked directories: 12 bytes per entry (inode number, size or
//! a marker, 32-bit name hash) while every inode number seen fits in 32 bits (ext4's always do;
//! tmpfs's unless mounted `inode64`), 16 from the first that does not on (XFS `inode64`, btrfs
//! after 2^32 creations, overlayfs `xino`: the whole pool is widened once), no names. Every
//! directory's list is a segment of one shared pool (no allocation, header or allocator slack
//! per directory), sorted by (name hash, inode) with a short unsorted tail for recent additions;
//! removals leave tombstones that are swept once they are a quarter of it. A segment that
//! outgrows its room moves to the end of the pool; the room it left is a hole until the pool is
//! compacted (`dirs/`). What the entries mean (sizes per project, hard links, collisions) is
//! `tree.rs`'s.

use super::{u32_of, us};

/// `size` of an entry that is a subdirectory (`ino` is the directory's).
pub(super) const DIR: u32 = u32::MAX;
/// `size` of a file whose size lives in the tree's wide table (several tracked names, or too
/// large for 32 bits).
pub(super) const WIDE: u32 = u32::MAX - 1;
/// `size` of a removed entry, swept later (and of room no entry holds yet).
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
}

/// An [`Entry`] whose inode number fits in 32 bits, as the pool keeps it then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Narrow {
    ino: u32,
    size: u32,
    hash: u32,
}

/// What the pool keeps an entry as.
trait Item: Copy {
    const PAD: Self;
    fn entry(&self) -> Entry;
    fn size(&self) -> u32;
    fn hash(&self) -> u32;
    fn set_size(&mut self, size: u32);
    fn is_dead(&self) -> bool {
        self.size() == DEAD
    }
    fn order(&self) -> (u32, u64) {
        (self.hash(), self.entry().ino)
    }
}

impl Item for Entry {
    const PAD: Entry = Entry {
        ino: 0,
        size: DEAD,
        hash: 0,
    };
    fn entry(&self) -> Entry {
        *self
    }
    fn size(&self) -> u32 {
        self.size
    }
    fn hash(&self) -> u32 {
        self.hash
    }
    fn set_size(&mut self, size: u32) {
        self.size = size;
    }
}

impl Item for Narrow {
    const PAD: Narrow = Narrow {
        ino: 0,
        size: DEAD,
        hash: 0,
    };
    fn entry(&self) -> Entry {
        Entry {
            ino: u64::from(self.ino),
            size: self.size,
            hash: self.hash,
        }
    }
    fn size(&self) -> u32 {
        self.size
    }
    fn hash(&self) -> u32 {
        self.hash
    }
    fn set_size(&mut self, size: u32) {
        self.size = size;
    }
}

/// Where one directory's list lies in the [`Pool`]: `pool[off..off + len]`, with room up to
/// `off + cap`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Seg {
    off: u32,
    len: u32,
    cap: u32,
    /// `[..len - tail]` is sorted by (hash, inode); the tail is in insertion order (sorted in
    /// before it passes `u8::MAX`).
    tail: u8,
    /// Tombstones in `[..len]` (swept before they pass `u8::MAX`).
    dead: u8,
    /// 16 bits the segment's owner keeps in what would be padding (`dirs/`: the directory's
    /// device index); kept through every move.
    pub(super) tag: u16,
}

impl Seg {
    /// An empty segment carrying `tag`.
    pub(super) fn tagged(tag: u16) -> Seg {
        Seg {
            tag,
            ..Seg::default()
        }
    }

    fn sorted(&self) -> usize {
        us(self.len).saturating_sub(usize::from(self.tail))
    }
}

fn u8_of(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// The pool's entries, narrow until an inode number needs 64 bits.
#[derive(Debug)]
enum Store {
    Narrow(Vec<Narrow>),
    Wide(Vec<Entry>),
}

/// Runs `$body` with `$v` bound to the store's vector, whichever its width.
macro_rules! each {
    ($store:expr, $v:ident => $body:expr) => {
        match $store {
            Store::Narrow($v) => $body,
            Store::Wide($v) => $body,
        }
    };
}

/// The entries of every directory, one segment each (see the module doc).
#[derive(Debug)]
pub(super) struct Pool {
    store: Store,
    /// Entries of the store in no segment's room (left behind by moves and trims).
    holes: usize,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            store: Store::Narrow(Vec::new()),
            holes: 0,
        }
    }
}

/// Packs `segs` (read from `old`) into a new list, each with room for its live entries only.
fn packed<'a, T: Item>(old: &[T], holes: usize, segs: impl Iterator<Item = &'a mut Seg>) -> Vec<T> {
    let mut list = Vec::with_capacity(old.len().saturating_sub(holes));
    for seg in segs {
        let s = *seg;
        let (off, len) = (us(s.off), us(s.len));
        let Some(items) = old.get(off..off + len) else {
            *seg = Seg::default();
            continue;
        };
        let sorted = s.sorted().min(len);
        let head_dead = items[..sorted].iter().filter(|e| e.is_dead()).count();
        let start = list.len();
        list.extend(items.iter().filter(|e| !e.is_dead()).copied());
        let kept = list.len() - start;
        *seg = Seg {
            off: u32_of(start),
            len: u32_of(kept),
            cap: u32_of(kept),
            tail: u8_of(kept - (sorted - head_dead)),
            dead: 0,
            tag: s.tag,
        };
    }
    list.shrink_to_fit();
    list
}

impl Pool {
    fn len(&self) -> usize {
        each!(&self.store, v => v.len())
    }

    fn resize(&mut self, len: usize) {
        each!(&mut self.store, v => v.resize(len, Item::PAD))
    }

    /// Room for `cap` entries at the end of the pool, `None` past 2^32 entries.
    pub(super) fn alloc(&mut self, cap: usize) -> Option<Seg> {
        let off = u32::try_from(self.len()).ok()?;
        let end = self.len().checked_add(cap)?;
        u32::try_from(end).ok()?;
        self.resize(end);
        Some(Seg {
            off,
            len: 0,
            cap: u32_of(cap),
            tail: 0,
            dead: 0,
            tag: 0,
        })
    }

    /// Gives a segment's room back.
    pub(super) fn free(&mut self, seg: &mut Seg) {
        self.release_tail(seg, 0);
        *seg = Seg {
            tag: seg.tag,
            ..Seg::default()
        };
    }

    /// Shrinks the room of `seg` to `keep` entries (`keep >= len`): at the end of the pool
    /// the pool shrinks, elsewhere the rest is a hole.
    fn release_tail(&mut self, seg: &mut Seg, keep: usize) {
        let (off, cap) = (us(seg.off), us(seg.cap));
        if keep >= cap {
            return;
        }
        if off + cap == self.len() {
            each!(&mut self.store, v => v.truncate(off + keep));
        } else {
            self.holes += cap - keep;
        }
        seg.cap = u32_of(keep);
    }

    /// Whether compacting is worth it (holes are half of the pool).
    pub(super) fn wasteful(&self) -> bool {
        self.holes > 4096 && self.holes * 2 > self.len()
    }

    /// Rewrites the pool with the segments in `segs` packed in that order, each with room for
    /// its entries only (tombstones swept); gives the rest back.
    pub(super) fn compact<'a>(&mut self, segs: impl Iterator<Item = &'a mut Seg>) {
        let holes = self.holes;
        self.store = match &self.store {
            Store::Narrow(v) => Store::Narrow(packed(v, holes, segs)),
            Store::Wide(v) => Store::Wide(packed(v, holes, segs)),
        };
        self.holes = 0;
    }

    /// From now on 16 bytes per entry: an inode number needs 64 bits.
    fn widen(&mut self) {
        if let Store::Narrow(v) = &self.store {
            let wide: Vec<Entry> = v.iter().map(Item::entry).collect();
            self.store = Store::Wide(wide);
        }
    }

    /// Heap bytes held (from the capacity).
    pub(super) fn heap_bytes(&self) -> usize {
        each!(&self.store, v => v.capacity() * std::mem::size_of_val(v.first().unwrap_or(&Item::PAD)))
    }

    /// Entries in the pool (live, tombstones, room and holes).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.len()
    }

    #[cfg(test)]
    pub(super) fn is_narrow(&self) -> bool {
        matches!(self.store, Store::Narrow(_))
    }
}

/// A segment's entries, whichever their width.
#[derive(Clone, Copy)]
enum List<'a> {
    Narrow(&'a [Narrow]),
    Wide(&'a [Entry]),
}

/// The entries of one directory, to read.
#[derive(Clone, Copy)]
pub(super) struct Entries<'a> {
    list: List<'a>,
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

fn with_hash_in<T: Item>(list: &[T], sorted: usize, hash: u32) -> Vec<Slot> {
    let head = &list[..sorted];
    let from = head.partition_point(|e| e.hash() < hash);
    let mut out: Vec<Slot> = head[from..]
        .iter()
        .take_while(|e| e.hash() == hash)
        .enumerate()
        .filter(|(_, e)| !e.is_dead())
        .map(|(i, _)| Slot(from + i))
        .collect();
    out.extend(
        list[sorted..]
            .iter()
            .enumerate()
            .filter(|(_, e)| e.hash() == hash && !e.is_dead())
            .map(|(i, _)| Slot(sorted + i)),
    );
    out
}

/// Drops tombstones keeping the order: how many entries are left, and how many of them are in
/// the sorted head (the first `sorted` before).
fn sweep_in<T: Item>(items: &mut [T], sorted: usize) -> (usize, usize) {
    let sorted = sorted.min(items.len());
    let head_dead = items[..sorted].iter().filter(|e| e.is_dead()).count();
    let mut kept = 0;
    for i in 0..items.len() {
        if !items[i].is_dead() {
            items[kept] = items[i];
            kept += 1;
        }
    }
    (kept, sorted - head_dead)
}

impl<'a> Entries<'a> {
    pub(super) fn of(seg: &Seg, pool: &'a Pool) -> Entries<'a> {
        let off = us(seg.off);
        let range = off..off + us(seg.len);
        let list = match &pool.store {
            Store::Narrow(v) => List::Narrow(v.get(range).unwrap_or(&[])),
            Store::Wide(v) => List::Wide(v.get(range).unwrap_or(&[])),
        };
        let n = match list {
            List::Narrow(l) => l.len(),
            List::Wide(l) => l.len(),
        };
        Entries {
            list,
            sorted: seg.sorted().min(n),
            dead: usize::from(seg.dead),
        }
    }

    fn slots(&self) -> usize {
        match self.list {
            List::Narrow(l) => l.len(),
            List::Wide(l) => l.len(),
        }
    }

    /// Live entries.
    pub(super) fn len(&self) -> usize {
        self.slots().saturating_sub(self.dead)
    }

    /// Live entries, in list order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Entry> + 'a {
        let this = *self;
        (0..self.slots()).filter_map(move |i| this.get(Slot(i)))
    }

    /// Slots of the live entries whose name hashes to `hash`.
    pub(super) fn with_hash(&self, hash: u32) -> Vec<Slot> {
        match self.list {
            List::Narrow(l) => with_hash_in(l, self.sorted, hash),
            List::Wide(l) => with_hash_in(l, self.sorted, hash),
        }
    }

    pub(super) fn get(&self, slot: Slot) -> Option<Entry> {
        let e = match self.list {
            List::Narrow(l) => l.get(slot.0).map(Item::entry),
            List::Wide(l) => l.get(slot.0).copied(),
        };
        e.filter(|e| !e.is_dead())
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
        let mut files = self.iter().filter(|e| !e.is_dir());
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

    fn range(&self) -> std::ops::Range<usize> {
        let off = us(self.seg.off);
        off..off + us(self.seg.len)
    }

    /// Takes every file entry out, keeping the subdirectories.
    pub(super) fn take_files(&mut self) -> Vec<Entry> {
        let range = self.range();
        let files: Vec<Entry> = self.read().iter().filter(|e| !e.is_dir()).collect();
        each!(&mut self.pool.store, v => {
            let items = v.get_mut(range).unwrap_or(&mut []);
            for e in items.iter_mut().filter(|e| e.size() != DIR) {
                e.set_size(DEAD);
            }
        });
        self.sweep();
        self.sort();
        files
    }

    /// Sets the size (or marker) of a live entry.
    pub(super) fn set_size(&mut self, slot: Slot, size: u32) {
        let at = us(self.seg.off) + slot.0;
        if slot.0 >= us(self.seg.len) {
            return;
        }
        each!(&mut self.pool.store, v => {
            if let Some(e) = v.get_mut(at).filter(|e| !e.is_dead()) {
                e.set_size(size);
            }
        })
    }

    /// Removes an entry (a tombstone until the next sweep).
    pub(super) fn remove(&mut self, slot: Slot) -> Option<Entry> {
        let old = self.read().get(slot)?;
        self.set_size(slot, DEAD);
        self.seg.dead = self.seg.dead.saturating_add(1);
        if usize::from(self.seg.dead) * 4 > us(self.seg.len) || self.seg.dead == u8::MAX {
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
        let narrow = u32::try_from(entry.ino).ok().map(|ino| Narrow {
            ino,
            size: entry.size,
            hash: entry.hash,
        });
        if narrow.is_none() {
            self.pool.widen();
        }
        let at = us(self.seg.off) + us(self.seg.len);
        let written = match (&mut self.pool.store, narrow) {
            (Store::Narrow(v), Some(n)) => v.get_mut(at).map(|slot| *slot = n).is_some(),
            (Store::Wide(v), _) => v.get_mut(at).map(|slot| *slot = entry).is_some(),
            (Store::Narrow(_), None) => false,
        };
        if !written {
            return false;
        }
        self.seg.len += 1;
        self.seg.tail = self.seg.tail.saturating_add(1);
        let len = us(self.seg.len);
        let tail = usize::from(self.seg.tail);
        if tail > (len / 16).max(32) || self.seg.tail == u8::MAX {
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
        if off + cap == self.pool.len() {
            let Some(end) = (off + cap)
                .checked_add(more)
                .filter(|e| u32::try_from(*e).is_ok())
            else {
                return false;
            };
            self.pool.resize(end);
            self.seg.cap = u32_of(cap + more);
            return true;
        }
        let Some(mut moved) = self.pool.alloc(cap + more) else {
            return false;
        };
        let to = us(moved.off);
        each!(&mut self.pool.store, v => v.copy_within(off..off + len, to));
        self.pool.holes += cap;
        moved.len = self.seg.len;
        moved.tail = self.seg.tail;
        moved.tag = self.seg.tag;
        moved.dead = self.seg.dead;
        *self.seg = moved;
        true
    }

    /// Drops tombstones, keeping the order (the sorted head stays sorted).
    fn sweep(&mut self) {
        let sorted = self.seg.sorted();
        let range = self.range();
        let (kept, head) = each!(&mut self.pool.store, v => {
            sweep_in(v.get_mut(range).unwrap_or(&mut []), sorted)
        });
        self.seg.len = u32_of(kept);
        self.seg.tail = u8_of(kept - head);
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
        let range = self.range();
        each!(&mut self.pool.store, v => {
            v.get_mut(range).unwrap_or(&mut []).sort_by_key(Item::order)
        });
        self.seg.tail = 0;
    }

    /// Gives back spare room (after a walk filled the list).
    pub(super) fn shrink(&mut self) {
        let len = us(self.seg.len);
        self.pool.release_tail(self.seg, len);
    }
}

#[cfg(test)]
#[path = "entries_tests.rs"]
mod tests;
