//! The sources' watches in the directory records: each record's watch, the directories the
//! source could not watch ([`UNWATCHED`], counted per device and found in record order by the
//! polling round's cursor), and the watched directory a shallower one may take a watch from
//! when the source has none left (`walk.rs`, "watches go to the shallow directories first").

use super::{us, Dirs, FREE, NONE};
use crate::scan::MAX_DEPTH;
use crate::sources::track::tree::{Key, Watch, UNWATCHED};

impl Dirs {
    pub(in crate::sources::track) fn watch(&self, key: Key) -> Option<Watch> {
        self.rec(self.find(key)?).map(|r| r.watch)
    }

    pub(in crate::sources::track) fn set_watch(&mut self, key: Key, watch: Watch) {
        let Some(r) = self.find(key).and_then(|id| self.recs.get_mut(us(id))) else {
            return;
        };
        let (was, dev) = (r.watch, r.dev());
        r.watch = watch;
        if (was == UNWATCHED) != (watch == UNWATCHED) {
            self.count_unwatched(dev, watch == UNWATCHED);
        }
    }

    /// One more (`more`) or one fewer directory of device index `dev` is [`UNWATCHED`].
    pub(super) fn count_unwatched(&mut self, dev: u16, more: bool) {
        let i = usize::from(dev);
        if self.unwatched.len() <= i {
            self.unwatched.resize(i + 1, 0);
        }
        if let Some(n) = self.unwatched.get_mut(i) {
            *n = if more { *n + 1 } else { n.saturating_sub(1) };
        }
    }

    /// Directories whose watch is [`UNWATCHED`].
    pub(in crate::sources::track) fn unwatched(&self) -> usize {
        self.unwatched.iter().sum()
    }

    /// The devices holding directories whose watch is [`UNWATCHED`], in order.
    pub(in crate::sources::track) fn unwatched_devs(&self) -> Vec<u64> {
        let mut devs: Vec<u64> = self
            .unwatched
            .iter()
            .zip(&self.devs)
            .filter(|(n, _)| **n > 0)
            .map(|(_, dev)| *dev)
            .collect();
        devs.sort_unstable();
        devs
    }

    /// The first directory after record `after` (from the first, for `None`) whose watch is
    /// [`UNWATCHED`], with its record number: a cursor that records keep while they live
    /// (a removal frees a record, [`Dirs::compact`] only drops free ones from the end).
    pub(in crate::sources::track) fn next_unwatched(
        &self,
        after: Option<u32>,
    ) -> Option<(u32, Key)> {
        if self.unwatched() == 0 {
            return None;
        }
        let from = after.map_or(0, |a| us(a).saturating_add(1));
        self.recs
            .get(from..)?
            .iter()
            .zip(from..)
            .find_map(|(r, id)| {
                if r.dev() == FREE || r.watch != UNWATCHED {
                    return None;
                }
                let id = u32::try_from(id).ok()?;
                Some((id, self.key_at(id)?))
            })
    }

    /// Every directory whose watch is [`UNWATCHED`], in record order.
    pub(in crate::sources::track) fn unwatched_keys(&self) -> impl Iterator<Item = Key> + '_ {
        let mut after = None;
        std::iter::from_fn(move || {
            let (id, key) = self.next_unwatched(after)?;
            after = Some(id);
            Some(key)
        })
    }

    /// How many parents up record `id` is from its project root (0 for a root; an orphan
    /// counts from where its chain of parents ends), counted up to `MAX_DEPTH + 1`.
    fn depth_at(&self, id: u32) -> usize {
        let mut depth = 0;
        let mut at = id;
        while let Some(rec) = self.rec(at) {
            if rec.parent == NONE || depth > MAX_DEPTH {
                break;
            }
            at = rec.parent;
            depth += 1;
        }
        depth
    }

    /// How deep a tracked directory is below its project root (see [`Dirs::depth_at`]).
    pub(in crate::sources::track) fn depth(&self, key: Key) -> Option<usize> {
        self.find(key).map(|id| self.depth_at(id))
    }

    /// A directory with a watch of its own (not `NO_WATCH` nor [`UNWATCHED`]) deeper than
    /// `depth`, looked for from the record below `*cursor` (the last, for `None`) down, and
    /// round from the top once: the most recently added first, which a walk leaves deepest.
    /// `*cursor` is left at the one found, so a run of calls looks at each record about once.
    pub(in crate::sources::track) fn watched_deeper_than(
        &self,
        depth: usize,
        cursor: &mut Option<u32>,
    ) -> Option<(Key, Watch)> {
        let n = self.recs.len();
        let start = cursor.map_or(n, us).min(n);
        let found = (0..start).rev().chain((start..n).rev()).find(|&i| {
            self.recs
                .get(i)
                .is_some_and(|r| r.dev() != FREE && r.watch >= 0)
                && u32::try_from(i).is_ok_and(|id| self.depth_at(id) > depth)
        })?;
        let id = u32::try_from(found).ok()?;
        *cursor = Some(id);
        let watch = self.rec(id)?.watch;
        Some((self.key_at(id)?, watch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn name(i: u64) -> CString {
        CString::new(format!("d{i}")).unwrap()
    }

    /// The count of unwatched directories follows every way a record's watch changes (set,
    /// given back, the record removed or replaced), per device; the cursor meets each
    /// unwatched directory once, in record order.
    #[test]
    fn unwatched_directories_are_counted_and_found_in_record_order() {
        let mut dirs = Dirs::default();
        dirs.insert((7, 1), None, &name(1), 1).unwrap();
        for i in 2..=6 {
            dirs.insert((7, i), Some((7, 1)), &name(i), 1).unwrap();
        }
        dirs.insert((3, 9), None, &name(9), 2).unwrap();
        assert_eq!(dirs.unwatched(), 0);
        assert_eq!(dirs.next_unwatched(None), None);
        for key in [(7, 5), (7, 3), (3, 9)] {
            dirs.set_watch(key, UNWATCHED);
        }
        dirs.set_watch((7, 3), UNWATCHED); // again: counted once
        assert_eq!(dirs.unwatched(), 3);
        assert_eq!(dirs.unwatched_devs(), vec![3, 7]);
        let keys: Vec<Key> = dirs.unwatched_keys().collect();
        assert_eq!(keys, vec![(7, 3), (7, 5), (3, 9)]);
        let (first, _) = dirs.next_unwatched(None).unwrap();
        assert_eq!(
            dirs.next_unwatched(Some(first)).map(|(_, k)| k),
            Some((7, 5))
        );

        dirs.set_watch((7, 3), 12); // a watch given at last
        dirs.remove((3, 9));
        assert_eq!(dirs.unwatched(), 1);
        assert_eq!(dirs.unwatched_devs(), vec![7]);
        dirs.insert((7, 5), Some((7, 1)), &name(5), 1).unwrap(); // replaced: no watch yet
        assert_eq!(dirs.unwatched(), 0);
        assert_eq!(dirs.unwatched_keys().count(), 0);
    }

    /// The watched directory a shallow one takes a watch from is deeper than asked, has a
    /// watch of its own, and is looked for from the most recent record down.
    #[test]
    fn a_watch_is_taken_from_the_most_recent_directory_deeper_than_asked() {
        let mut dirs = Dirs::default();
        // root(0) / a(1) / b(2) / c(3) / d(4), then root / e(1)
        let chain = [
            (1, None),
            (2, Some(1)),
            (3, Some(2)),
            (4, Some(3)),
            (5, Some(4)),
        ];
        for (ino, parent) in chain {
            dirs.insert((9, ino), parent.map(|p| (9, p)), &name(ino), 1)
                .unwrap();
            dirs.set_watch((9, ino), i32::try_from(ino).unwrap() * 10);
        }
        dirs.insert((9, 6), Some((9, 1)), &name(6), 1).unwrap();
        dirs.set_watch((9, 6), 60);
        assert_eq!(dirs.depth((9, 5)), Some(4));
        assert_eq!(dirs.depth((9, 1)), Some(0));
        let mut cursor = None;
        // The most recent deep one first (e is too shallow), then on down from there.
        assert_eq!(dirs.watched_deeper_than(2, &mut cursor), Some(((9, 5), 50)));
        dirs.set_watch((9, 5), UNWATCHED);
        assert_eq!(dirs.watched_deeper_than(2, &mut cursor), Some(((9, 4), 40)));
        dirs.set_watch((9, 4), UNWATCHED);
        assert_eq!(dirs.watched_deeper_than(2, &mut cursor), None);
        // Round from the top: a directory added after the cursor passed is found.
        dirs.insert((9, 7), Some((9, 4)), &name(7), 1).unwrap();
        dirs.set_watch((9, 7), 70);
        assert_eq!(dirs.watched_deeper_than(2, &mut cursor), Some(((9, 7), 70)));
        dirs.set_watch((9, 7), crate::sources::track::tree::NO_WATCH);
        assert_eq!(dirs.watched_deeper_than(0, &mut cursor), Some(((9, 6), 60)));
    }
}
