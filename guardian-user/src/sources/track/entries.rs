//! The packed entry list of one tracked directory: 16 bytes per entry (inode number, size or a
//! marker, 32-bit name hash), no names. Sorted by (name hash, inode) with a short unsorted tail
//! for recent additions; removals leave tombstones that are swept once they are a quarter of the
//! list. What the entries mean (sizes per project, hard links, collisions) is `tree.rs`'s.

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

/// The entries of one directory (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Entries {
    list: Vec<Entry>,
    /// `list[..sorted]` is sorted by [`Entry::order`]; the rest is in insertion order.
    sorted: u32,
    /// Tombstones in `list`.
    dead: u32,
}

/// Index of an entry in its directory's list, valid until the list is next changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot(usize);

impl Entries {
    fn sorted_len(&self) -> usize {
        usize::try_from(self.sorted)
            .unwrap_or(usize::MAX)
            .min(self.list.len())
    }

    /// Live entries.
    pub(super) fn len(&self) -> usize {
        self.list
            .len()
            .saturating_sub(usize::try_from(self.dead).unwrap_or(0))
    }

    /// Live entries, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.list.iter().filter(|e| !e.is_dead())
    }

    /// Slots of the live entries whose name hashes to `hash`.
    pub(super) fn with_hash(&self, hash: u32) -> Vec<Slot> {
        let sorted = self.sorted_len();
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

    /// Takes every file entry out, keeping the subdirectories.
    pub(super) fn take_files(&mut self) -> Vec<Entry> {
        let files = self.iter().filter(|e| !e.is_dir()).copied().collect();
        self.list.retain(|e| e.is_dir());
        self.dead = 0;
        self.sort();
        files
    }

    pub(super) fn get(&self, slot: Slot) -> Option<Entry> {
        self.list.get(slot.0).copied().filter(|e| !e.is_dead())
    }

    /// Sets the size (or marker) of a live entry.
    pub(super) fn set_size(&mut self, slot: Slot, size: u32) {
        if let Some(e) = self.list.get_mut(slot.0).filter(|e| !e.is_dead()) {
            e.size = size;
        }
    }

    /// Removes an entry (a tombstone until the next sweep).
    pub(super) fn remove(&mut self, slot: Slot) -> Option<Entry> {
        let e = self.list.get_mut(slot.0).filter(|e| !e.is_dead())?;
        let old = *e;
        e.size = DEAD;
        self.dead = self.dead.saturating_add(1);
        let dead = usize::try_from(self.dead).unwrap_or(usize::MAX);
        if dead.saturating_mul(4) > self.list.len() {
            self.sweep();
        }
        Some(old)
    }

    /// The slot of the directory entry for inode `ino` named with `hash`.
    pub(super) fn find_dir(&self, hash: u32, ino: u64) -> Option<Slot> {
        self.with_hash(hash)
            .into_iter()
            .find(|s| self.get(*s).is_some_and(|e| e.is_dir() && e.ino == ino))
    }

    /// Adds an entry. Capacity grows by an eighth at a time (the list is usually filled by one
    /// walk and changes slowly after), and the unsorted tail is sorted in once it is longer
    /// than a sixteenth of the list.
    pub(super) fn push(&mut self, entry: Entry) {
        if self.list.len() == self.list.capacity() {
            self.list.reserve_exact((self.list.len() / 8).max(4));
        }
        self.list.push(entry);
        let tail = self.list.len() - self.sorted_len();
        if tail > (self.list.len() / 16).max(32) {
            self.sort();
        }
    }

    /// Drops tombstones, keeping the order (the sorted head stays sorted).
    fn sweep(&mut self) {
        let sorted = self.sorted_len();
        let dead_in_head = self.list[..sorted].iter().filter(|e| e.is_dead()).count();
        self.list.retain(|e| !e.is_dead());
        self.sorted = u32::try_from(sorted - dead_in_head).unwrap_or(u32::MAX);
        self.dead = 0;
        if self.list.capacity() > self.list.len() + self.list.len() / 4 + 4 {
            self.list.shrink_to(self.list.len() + self.list.len() / 8);
        }
    }

    /// Sorts the whole list (a sorted head and a short tail cost about one pass).
    pub(super) fn sort(&mut self) {
        if self.dead > 0 {
            self.list.retain(|e| !e.is_dead());
            self.dead = 0;
        }
        self.list.sort_by_key(Entry::order);
        self.sorted = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
    }

    /// After [`Entries::sort`]: name hashes that more than one file entry has (two names of the
    /// directory hashing alike, or one name read twice).
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

    /// Gives back spare capacity (after a walk filled the list).
    pub(super) fn shrink(&mut self) {
        self.list.shrink_to_fit();
    }

    /// Heap bytes held (from the capacity).
    pub(super) fn heap_bytes(&self) -> usize {
        self.list.capacity() * std::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(hash: u32, ino: u64, size: u32) -> Entry {
        Entry { ino, size, hash }
    }

    #[test]
    fn an_entry_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn lookups_see_the_sorted_head_and_the_tail_and_skip_removed_entries() {
        let mut e = Entries::default();
        for i in 0..1000u64 {
            e.push(file((i % 97) as u32, i, 1));
        }
        for h in 0..97u32 {
            let slots = e.with_hash(h);
            assert!(slots.iter().all(|s| e.get(*s).unwrap().hash == h));
            assert_eq!(
                slots.len(),
                (0..1000u64).filter(|i| i % 97 == h as u64).count()
            );
        }
        // Remove most of them: sweeps keep the rest findable.
        for i in 0..900u64 {
            let h = (i % 97) as u32;
            let slot = e
                .with_hash(h)
                .into_iter()
                .find(|s| e.get(*s).unwrap().ino == i)
                .unwrap();
            assert_eq!(e.remove(slot).unwrap().ino, i);
        }
        assert_eq!(e.iter().count(), 100);
        for i in 900..1000u64 {
            let h = (i % 97) as u32;
            assert!(e.with_hash(h).iter().any(|s| e.get(*s).unwrap().ino == i));
        }
        assert!(
            e.heap_bytes() < 1000 * 16 / 2,
            "swept lists give memory back"
        );
        e.sort();
        assert!(e.shared_file_hashes().len() < 97);
        let mut d = Entries::default();
        d.push(file(5, 1, DIR));
        d.push(file(5, 2, 3));
        assert!(
            d.shared_file_hashes().is_empty(),
            "a dir and a file may share"
        );
        d.push(file(5, 3, 3));
        d.sort();
        assert_eq!(d.shared_file_hashes(), vec![5]);
        assert_eq!(
            d.find_dir(5, 1).and_then(|s| d.get(s)).map(|e| e.ino),
            Some(1)
        );
    }
}
