//! Byte and entry counts of a tree, with hard-linked inodes tracked so they are counted once
//! (`du` semantics) and counted as freeable only when every link lies inside the tree.

use crate::fsys::{EntryKind, EntryStat};
use serde::Serialize;
use std::collections::HashMap;

/// Sizes of a tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Allocated bytes (`st_blocks * 512`), each inode once.
    pub allocated: u64,
    /// Apparent bytes (`st_size`), each inode once.
    pub apparent: u64,
    /// Inodes (files, dirs, symlinks, others), each once.
    pub inodes: u64,
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    /// Newest change in the tree that cannot be back-dated: the newest mtime or ctime of any
    /// file, symlink, other non-directory or directory (seconds since the epoch). A walk leaves
    /// out the times of directories Guardian itself changed by deleting in them
    /// (`cleanup::own_changes`), so its own cleanup does not make a project look active.
    pub newest_change: i64,
}

/// A hard-linked inode a tree holds only some links of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedInode {
    /// (dev, ino).
    pub identity: (u64, u64),
    /// Its link count when the tree was walked.
    pub nlink: u64,
    /// How many of its links the tree holds.
    pub seen: u64,
}

/// An inode with more than one link: how many links exist and how many this tally has seen.
#[derive(Clone, Copy, Debug)]
struct Linked {
    nlink: u64,
    seen: u64,
    allocated: u64,
    apparent: u64,
    kind: EntryKind,
}

/// Running counts of a tree walk; merge tallies of subtrees to get the tree's.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    single: Usage,
    linked: HashMap<(u64, u64), Linked>,
}

impl Tally {
    /// Counts one entry, its change times included.
    pub fn add_entry(&mut self, st: &EntryStat) {
        self.add_entry_times(st, true);
    }

    /// Counts one entry; its change times only when `times` (false for a directory whose last
    /// change was Guardian's own deletion inside it).
    pub fn add_entry_times(&mut self, st: &EntryStat, times: bool) {
        if times {
            self.single.newest_change = self.single.newest_change.max(st.changed());
        }
        if st.nlink > 1 && st.kind != EntryKind::Dir {
            let linked = self.linked.entry((st.dev, st.ino)).or_insert(Linked {
                nlink: st.nlink,
                seen: 0,
                allocated: st.allocated,
                apparent: st.size,
                kind: st.kind,
            });
            linked.seen += 1;
            return;
        }
        add_one(&mut self.single, st.kind, st.allocated, st.size);
    }

    /// Adds another tally (of a disjoint subtree) into this one.
    pub fn merge(&mut self, mut other: Tally) {
        if other.linked.len() > self.linked.len() {
            std::mem::swap(&mut self.linked, &mut other.linked);
        }
        for (key, theirs) in other.linked {
            self.linked
                .entry(key)
                .and_modify(|ours| ours.seen += theirs.seen)
                .or_insert(theirs);
        }
        let s = &mut self.single;
        let o = other.single;
        s.allocated += o.allocated;
        s.apparent += o.apparent;
        s.inodes += o.inodes;
        s.dirs += o.dirs;
        s.files += o.files;
        s.symlinks += o.symlinks;
        s.newest_change = s.newest_change.max(o.newest_change);
    }

    /// What the tree occupies, each hard-linked inode counted once (what `du` reports).
    pub fn usage(&self) -> Usage {
        self.sum(|_| true)
    }

    /// What deleting the whole tree would free: a hard-linked inode counts only when all of its
    /// links were seen inside the tree.
    pub fn freeable(&self) -> Usage {
        self.sum(|l| l.seen >= l.nlink)
    }

    /// The hard-linked inodes whose links the tree does not hold exactly (some lie outside it,
    /// or the count changed while it was walked): what it shares with the rest of the
    /// filesystem. Sorted by identity.
    pub fn shared(&self) -> Vec<SharedInode> {
        let mut out: Vec<SharedInode> = self
            .linked
            .iter()
            .filter(|(_, l)| l.seen != l.nlink)
            .map(|(&identity, l)| SharedInode {
                identity,
                nlink: l.nlink,
                seen: l.seen,
            })
            .collect();
        out.sort_unstable_by_key(|s| s.identity);
        out
    }

    fn sum(&self, include: impl Fn(&Linked) -> bool) -> Usage {
        let mut usage = self.single;
        for linked in self.linked.values().filter(|l| include(l)) {
            add_one(&mut usage, linked.kind, linked.allocated, linked.apparent);
        }
        usage
    }
}

fn add_one(usage: &mut Usage, kind: EntryKind, allocated: u64, apparent: u64) {
    usage.allocated += allocated;
    usage.apparent += apparent;
    usage.inodes += 1;
    match kind {
        EntryKind::Dir => usage.dirs += 1,
        EntryKind::File => usage.files += 1,
        EntryKind::Symlink => usage.symlinks += 1,
        EntryKind::Other => {}
    }
}
