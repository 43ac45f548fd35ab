//! What the size table costs: files tracked and heap bytes held, added up from the capacities
//! of its maps and lists (see the layout in `tree.rs`'s module doc).

use super::links::Twin;
use super::tree::{Key, Tree};
use std::collections::{HashMap, HashSet};

impl Tree {
    /// Files tracked (names of the same file once).
    pub(crate) fn tracked_files(&self) -> usize {
        let names: usize = self
            .dirs
            .iter()
            .map(|(_, _, entries)| entries.iter().filter(|e| !e.is_dir()).count())
            .sum();
        let extra: usize = self
            .wide
            .values()
            .map(|w| usize::try_from(w.links.saturating_sub(1)).unwrap_or(0))
            .sum();
        names.saturating_sub(extra)
    }

    /// Heap bytes the table holds, from the capacities of its maps and lists (allocator
    /// overhead not included).
    pub(crate) fn heap_bytes(&self) -> usize {
        fn map<K, V, S>(m: &HashMap<K, V, S>) -> usize {
            table_bytes(m.capacity(), std::mem::size_of::<(K, V)>())
        }
        fn set<K, S>(s: &HashSet<K, S>) -> usize {
            table_bytes(s.capacity(), std::mem::size_of::<K>())
        }
        let collisions: usize = self.collisions.values().map(|v| v.capacity() * 4).sum();
        let roots: usize = self
            .roots
            .values()
            .map(|r| r.project.path.as_os_str().len())
            .sum();
        map(&self.roots)
            + roots
            + map(&self.root_keys)
            + self.dirs.heap_bytes()
            + self.wide.heap_bytes()
            + self.bloom.heap_bytes()
            + self.twins.capacity() * std::mem::size_of::<Twin>()
            + map(&self.collisions)
            + collisions
            + self.orphan_dirs.capacity() * std::mem::size_of::<Key>()
            + map(&self.totals)
            + map(&self.reported)
            + set(&self.dirty)
            + self.watch_share.wanting.capacity() * std::mem::size_of::<Key>()
    }
}

/// Bytes of a hashbrown table holding `capacity` items of `item` bytes: buckets are the next
/// power of two above capacity × 8/7, each with one control byte.
fn table_bytes(capacity: usize, item: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (item + 1) + 16
}
