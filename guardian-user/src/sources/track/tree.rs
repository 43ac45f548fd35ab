//! The size table shared by the fanotify and inotify sources: a mirror of the project trees
//! (directories with their names and packed entry lists, regular files with their last seen
//! apparent size), brought in line with the disk one changed name at a time. Growth of a project
//! is the change of the sum of its tracked sizes. Walking directories into the table (baselines,
//! re-walks, polling) is in `walk.rs`; when to re-walk is `rewalk.rs`; hard links are
//! `links.rs`. The table only reads the disk.
//!
//! Layout (what a tracked file costs): a file is one 12-byte [`Entry`] in its directory's
//! list, a segment of one shared pool (`entries.rs`: inode number, size in 32 bits, a 32-bit
//! hash of its name keyed per process; 16 bytes once an inode number needs 64 bits), plus its
//! bit share of the hard-link filter (`links.rs`, ~0.9 bytes): no name, no map entry and no
//! allocation of its own. Directories are 40-byte records in one list (`dirs/`: name in a
//! byte arena, parent by record number, project, watch, entries' place in the pool) found by
//! `(st_dev, st_ino)` through an open-addressing table (~52 bytes each with their names), and
//! are entries of their parent's list too. A file with several tracked names or 4 GiB or more
//! moves to the wide table (`links.rs`). [`Tree::heap_bytes`] adds it all up from the
//! capacities.
//!
//! Exactness rests on three rules. Every update re-reads the current state of one name, so
//! repeated, reordered or stale events converge. A directory is only taken for one already
//! known when an event says it was moved there: filesystems reuse inode numbers (ext4 hands a
//! deleted directory's number to the next `mkdir` in the same group), and a `rm -rf out; mkdir
//! out` must not keep the deleted `out`'s files, whose own deletions could no longer be
//! resolved. And a file entry is found by its name's hash, checked against the inode the name
//! has now: when that does not settle it (two names of a directory hashing alike, found when it
//! is listed; a name holding another inode with no event saying the old one left), the names of
//! the directory with that hash are listed and re-read ([`Tree::resync_hash`]). Subdirectories
//! are found by hash and checked by name, exactly.

use super::dirs::Dirs;
use super::entries::{Entry, Slot, DIR, INLINE_MAX, WIDE};
use super::links::{Bloom, Twin, Wide, WideTable};
use super::rewalk::Rewalks;
use super::unwatched::{Pace, Share};
use crate::fsys::{EntryKind, EntryStat};
use crate::scan::MAX_DEPTH;
use crate::sources::{Note, ProjectDir, Sample};
use rustix::fd::BorrowedFd;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::time::Instant;

/// `(st_dev, st_ino)`.
pub(crate) type Key = (u64, u64);

pub(crate) fn key_of(st: &EntryStat) -> Key {
    (st.dev, st.ino)
}

/// A size as a signed delta (sizes above `i64::MAX` do not exist on Linux).
pub(super) fn signed(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// A source's handle on the watch of one directory, kept in the directory's record (inotify's
/// watch descriptor; [`NO_WATCH`] for none, and for sources that see whole filesystems).
pub(crate) type Watch = i32;

/// No watch of its own.
pub(crate) const NO_WATCH: Watch = -1;

/// The source wanted a watch and could not have one (inotify over its limit): the tree polls
/// the directory (`unwatched.rs`).
pub(crate) const UNWATCHED: Watch = -2;

/// Why a source gave a directory no watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// It has none left (inotify's `ENOSPC`: `fs.inotify.max_user_watches`): dropping one
    /// would let it succeed.
    OutOfWatches,
    /// Anything else.
    Other,
}

/// How a source learns which directories joined or left the tracked trees.
pub(crate) trait Hooks {
    /// `dir` (open) joined a project tree: start watching it. Called before the directory
    /// is listed, so nothing created in it afterwards goes unseen. An error when it cannot be
    /// watched; the tree then polls it.
    fn dir_added(&mut self, key: Key, dir: BorrowedFd<'_>) -> Result<Watch, Refused>;
    /// The directory left every project tree; `watch` is what [`Hooks::dir_added`] gave it
    /// last.
    fn dir_dropped(&mut self, key: Key, watch: Watch);
}

/// For sources that see whole filesystems (fanotify): nothing to add or remove.
pub(crate) struct NoHooks;

impl Hooks for NoHooks {
    fn dir_added(&mut self, _: Key, _: BorrowedFd<'_>) -> Result<Watch, Refused> {
        Ok(NO_WATCH)
    }

    fn dir_dropped(&mut self, _: Key, _: Watch) {}
}

pub(super) struct Root {
    pub(super) project: ProjectDir,
    pub(super) key: Key,
}

/// Mirror of the project trees (see the module doc). Growth of a project = change of the sum of
/// its tracked file sizes since the last [`Tree::take_sample`].
pub(crate) struct Tree {
    pub(super) roots: HashMap<u32, Root>,
    pub(super) root_keys: HashMap<Key, u32>,
    /// The tracked directories (`dirs/`). A directory's parent is `None` for a project
    /// root, or for a directory moved away whose new place is not known yet (an orphan,
    /// dropped by [`Tree::finalize`] unless adopted before).
    pub(super) dirs: Dirs,
    /// Files with several tracked names or too large for an entry (`links.rs`).
    pub(super) wide: WideTable,
    /// Inodes of the inline entries (`links.rs`).
    pub(super) bloom: Bloom,
    /// New names of multi-link files to match with their other names at the end of the batch.
    pub(super) twins: Vec<Twin>,
    /// Name hashes that two file names of a directory share: its entries with such a hash are
    /// re-read by listing ([`Tree::resync_hash`]).
    pub(super) collisions: HashMap<Key, Vec<u32>>,
    /// The last directory listed to re-read a hash, kept until the end of the batch of events
    /// (`Tree::end_batch`): every event of a batch happened before it was read, so one listing
    /// serves every departed name of an `rm -rf`, instead of one listing per name.
    /// Its names with their hashes, sorted by hash.
    pub(super) listing: Option<(Key, Vec<(u32, crate::fsys::Listed)>)>,
    pub(super) orphan_dirs: Vec<Key>,
    /// Sum of tracked sizes per project.
    pub(super) totals: HashMap<u32, i64>,
    /// `totals` as of the last sample (the baseline right after `watch`).
    pub(super) reported: HashMap<u32, i64>,
    /// Projects whose total changed since the last sample.
    pub(super) dirty: HashSet<u32>,
    /// How the directories without a watch (inotify over its limit; their record's watch is
    /// [`UNWATCHED`]) are polled.
    pub(super) unwatched_pace: Pace,
    /// Watches taken from deep directories for shallow ones (`unwatched::SHALLOW`).
    pub(super) watch_share: Share,
    pub(super) notes: Vec<Note>,
    pub(super) rescan: Vec<PathBuf>,
    /// When projects are walked again.
    pub(super) walks: Rewalks,
    /// Keys the name hash (per process: names cannot be chosen to collide).
    hasher: RandomState,
    /// Bits of the name hash kept (all but in tests that force collisions).
    hash_mask: u32,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree {
            roots: HashMap::new(),
            root_keys: HashMap::new(),
            dirs: Dirs::default(),
            wide: WideTable::default(),
            bloom: Bloom::default(),
            twins: Vec::new(),
            collisions: HashMap::new(),
            listing: None,
            orphan_dirs: Vec::new(),
            totals: HashMap::new(),
            reported: HashMap::new(),
            dirty: HashSet::new(),
            unwatched_pace: Pace::new(Instant::now()),
            watch_share: Share::default(),
            notes: Vec::new(),
            rescan: Vec::new(),
            walks: Rewalks::new(Instant::now()),
            hasher: RandomState::new(),
            hash_mask: u32::MAX,
        }
    }
}

/// Most project paths a sample lists as rescanned.
const MAX_RESCAN_PATHS: usize = 64;

/// An open tracked directory and the mount it was opened through: an entry on another
/// mount is a mount point, never entered.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) mnt: Option<u64>,
}

/// Where a directory goes in the tree.
pub(super) struct Place {
    pub(super) key: Key,
    pub(super) parent: Option<Key>,
    pub(super) name: CString,
    pub(super) project: u32,
}

impl Tree {
    /// A tree whose name hashes keep only the bits of `mask`, so names collide as often as a
    /// test wants.
    #[cfg(test)]
    pub(crate) fn with_hash_mask(mask: u32) -> Tree {
        Tree {
            hash_mask: mask,
            ..Tree::default()
        }
    }

    pub(super) fn name_hash(&self, name: &CStr) -> u32 {
        self.bytes_hash(name.to_bytes())
    }

    /// [`Tree::name_hash`] of a name's bytes.
    pub(super) fn bytes_hash(&self, name: &[u8]) -> u32 {
        let [a, b, c, d, ..] = self.hasher.hash_one(name).to_le_bytes();
        u32::from_le_bytes([a, b, c, d]) & self.hash_mask
    }

    /// The watch the source gave the tracked directory `key`.
    pub(crate) fn watch_of(&self, key: Key) -> Option<Watch> {
        self.dirs.watch(key)
    }

    pub(crate) fn has_dir(&self, key: Key) -> bool {
        self.dirs.contains(key)
    }

    /// Something worth telling the operator; `cause` groups repeats (see [`Note`]).
    pub(crate) fn note(&mut self, cause: &'static str, text: String) {
        self.notes.push(Note { cause, text });
    }

    pub(crate) fn request_rescan(&mut self, paths: Vec<PathBuf>) {
        let room = MAX_RESCAN_PATHS.saturating_sub(self.rescan.len());
        self.rescan.extend(paths.into_iter().take(room));
    }

    pub(crate) fn unwatched(&self) -> usize {
        self.dirs.unwatched()
    }

    /// Paths of the topmost unwatched directories (their parent is watched).
    pub(crate) fn unwatched_tops(&self) -> Vec<PathBuf> {
        let mut tops: Vec<PathBuf> = self
            .dirs
            .unwatched_keys()
            .filter(|k| {
                let parent = self.dirs.parent(*k);
                parent.is_none_or(|p| self.dirs.watch(p) != Some(UNWATCHED))
            })
            .filter_map(|k| self.path_of(k))
            .collect();
        tops.sort();
        tops
    }

    pub(super) fn add(&mut self, project: u32, delta: i64) {
        if delta != 0 {
            *self.totals.entry(project).or_default() += delta;
            self.dirty.insert(project);
        }
    }

    /// Removes a directory subtree from the tree with its files.
    pub(super) fn drop_subtree(&mut self, key: Key, hooks: &mut dyn Hooks) {
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            let Some(node) = self.dirs.remove(k) else {
                continue;
            };
            hooks.dir_dropped(k, node.watch);
            self.collisions.remove(&k);
            for e in node.entries {
                if e.is_dir() {
                    if !self.root_keys.contains_key(&(k.0, e.ino)) {
                        stack.push((k.0, e.ino));
                    }
                } else {
                    self.unlink(node.project, k.0, e);
                }
            }
        }
    }

    /// Uncounts a file entry taken out of a directory of `project` on device `dev`.
    pub(super) fn unlink(&mut self, project: u32, dev: u64, e: Entry) {
        if e.is_dir() {
            return;
        }
        if e.size != WIDE {
            self.add(project, -i64::from(e.size));
            return;
        }
        let key = (dev, e.ino);
        let Some(w) = self.wide.get_mut(&key) else {
            return;
        };
        w.links = w.links.saturating_sub(1);
        if w.links == 0 {
            let (project, size) = (w.project, w.size);
            self.wide.remove(&key);
            self.add(project, -signed(size));
        }
    }

    /// Removes the file entry at `slot` of `dir` and uncounts it.
    pub(super) fn remove_file(&mut self, dir: Key, slot: Slot) {
        let Some(project) = self.dirs.project(dir) else {
            return;
        };
        let Some(mut entries) = self.dirs.entries_mut(dir) else {
            return;
        };
        if let Some(e) = entries.read().get(slot).filter(|e| !e.is_dir()) {
            entries.remove(slot);
            self.unlink(project, dir.0, e);
        }
    }

    /// Removes every file entry of `dir` whose name hashes to `hash` (`None`: all of them).
    pub(super) fn remove_files(&mut self, dir: Key, hash: Option<u32>) {
        let Some(project) = self.dirs.project(dir) else {
            return;
        };
        let Some(mut entries) = self.dirs.entries_mut(dir) else {
            return;
        };
        let gone = match hash {
            None => entries.take_files(),
            Some(h) => {
                let mut gone = Vec::new();
                loop {
                    let read = entries.read();
                    let Some(slot) = read
                        .with_hash(h)
                        .into_iter()
                        .find(|s| read.get(*s).is_some_and(|e| !e.is_dir()))
                    else {
                        break;
                    };
                    gone.extend(entries.remove(slot));
                }
                gone
            }
        };
        for e in gone {
            self.unlink(project, dir.0, e);
        }
    }

    /// Drops what was moved away and not moved back in (orphaned directories with their
    /// subtrees), and counts new names of multi-link files once. Call after every batch.
    pub(crate) fn finalize(&mut self, hooks: &mut dyn Hooks) {
        for key in std::mem::take(&mut self.orphan_dirs) {
            let orphan = self.dirs.contains(key)
                && self.dirs.parent(key).is_none()
                && !self.root_keys.contains_key(&key);
            if orphan {
                self.drop_subtree(key, hooks);
            }
        }
        self.resolve_twins();
        // Holes left by lists that moved or went, once they are half of the pool.
        self.dirs.tidy();
    }

    /// Whether `st` is something this project's tree tracks: a regular file or directory on
    /// the project's filesystem and on the mount its directory was opened through (`mnt`;
    /// anything else is a mount point), and not another project's root.
    pub(super) fn accepts(&self, project: u32, st: &EntryStat, mnt: Option<u64>) -> bool {
        let Some(root) = self.roots.get(&project) else {
            return false;
        };
        matches!(st.kind, EntryKind::File | EntryKind::Dir)
            && st.dev == root.key.0
            && (mnt.is_none() || st.mnt_id.is_none() || st.mnt_id == mnt)
            && !self.root_keys.contains_key(&key_of(st))
    }

    /// The file entries of `dir` whose name hashes to `hash`.
    pub(super) fn file_slots(&self, dir: Key, hash: u32) -> Vec<(Slot, Entry)> {
        let Some(entries) = self.dirs.entries(dir) else {
            return Vec::new();
        };
        entries
            .with_hash(hash)
            .into_iter()
            .filter_map(|s| Some((s, entries.get(s)?)))
            .filter(|(_, e)| !e.is_dir())
            .collect()
    }

    /// The subdirectory `name` (hashing to `hash`) of `dir`, checked by name.
    pub(super) fn subdir_named(&self, dir: Key, hash: u32, name: &CStr) -> Option<Key> {
        let entries = self.dirs.entries(dir)?;
        entries
            .with_hash(hash)
            .into_iter()
            .filter_map(|s| entries.get(s))
            .filter(|e| e.is_dir())
            .map(|e| (dir.0, e.ino))
            .find(|k| {
                self.dirs.parent(*k) == Some(dir) && self.dirs.name(*k) == Some(name.to_bytes())
            })
    }

    /// Takes the entry of subdirectory `child` (named with `hash`) out of `parent`'s list.
    pub(super) fn unlist_dir(&mut self, parent: Key, hash: u32, child: Key) {
        if let Some(mut p) = self.dirs.entries_mut(parent) {
            if let Some(slot) = p.read().find_dir(hash, child.1) {
                p.remove(slot);
            }
        }
    }

    /// Sets the size of the file entry at `slot` of `dir`.
    pub(super) fn set_size(&mut self, dir: Key, slot: Slot, size: u64) {
        let Some(project) = self.dirs.project(dir) else {
            return;
        };
        let Some(mut entries) = self.dirs.entries_mut(dir) else {
            return;
        };
        let Some(e) = entries.read().get(slot).filter(|e| !e.is_dir()) else {
            return;
        };
        let key = (dir.0, e.ino);
        if e.size == WIDE {
            if let Some(w) = self.wide.get_mut(&key) {
                let delta = signed(size) - signed(w.size);
                w.size = size;
                let owner = w.project;
                self.add(owner, delta);
            }
            return;
        }
        let delta = signed(size) - i64::from(e.size);
        match u32::try_from(size)
            .ok()
            .filter(|s| u64::from(*s) <= INLINE_MAX)
        {
            Some(small) => entries.set_size(slot, small),
            None => {
                entries.set_size(slot, WIDE);
                self.wide.insert(
                    key,
                    Wide {
                        size,
                        project,
                        links: 1,
                    },
                );
            }
        }
        self.add(project, delta);
    }

    /// Adds the name (hashing to `hash`) of file `st` to `dir` and counts it: once per file,
    /// however many tracked names it has (`links.rs`).
    pub(super) fn link_file(&mut self, dir: Key, hash: u32, st: &EntryStat) {
        let key = key_of(st);
        let Some(project) = self.dirs.project(dir) else {
            return;
        };
        let size = if let Some(w) = self.wide.get_mut(&key) {
            w.links = w.links.saturating_add(1);
            let delta = signed(st.size) - signed(w.size);
            w.size = st.size;
            let owner = w.project;
            self.add(owner, delta);
            WIDE
        } else if let Some(small) = u32::try_from(st.size)
            .ok()
            .filter(|s| u64::from(*s) <= INLINE_MAX)
        {
            if st.nlink > 1 && self.bloom.may_hold(key) {
                self.twins.push(Twin {
                    key,
                    dir,
                    size: st.size,
                });
            }
            self.bloom.insert(key);
            self.add(project, i64::from(small));
            small
        } else {
            self.wide.insert(
                key,
                Wide {
                    size: st.size,
                    project,
                    links: 1,
                },
            );
            self.add(project, signed(st.size));
            WIDE
        };
        let pushed = self.dirs.entries_mut(dir).is_some_and(|mut e| {
            e.push(Entry {
                ino: st.ino,
                size,
                hash,
            })
        });
        if !pushed {
            // The pool is full (2^32 entries): the count stays right, the name is not tracked.
            self.unlink(
                project,
                dir.0,
                Entry {
                    ino: st.ino,
                    size,
                    hash,
                },
            );
        }
        if self.bloom.due() {
            self.rebuild_bloom();
        }
    }

    /// Drops a directory node the disk no longer has (its number now names another one).
    pub(super) fn forget_dir(&mut self, key: Key, hooks: &mut dyn Hooks) {
        if self.root_keys.contains_key(&key) {
            return;
        }
        if let Some((parent, hash)) = self
            .dirs
            .parent(key)
            .zip(self.dirs.name(key).map(|n| self.bytes_hash(n)))
        {
            self.unlist_dir(parent, hash, key);
        }
        self.drop_subtree(key, hooks);
    }

    /// A known directory (moved within or between projects) gets its new place.
    pub(super) fn adopt_dir(&mut self, parent: Key, name: CString, key: Key) {
        if key == parent || self.is_ancestor(key, parent) {
            return;
        }
        let Some(project) = self.dirs.project(parent) else {
            return;
        };
        let hash = self.name_hash(&name);
        let Some(old_project) = self.dirs.project(key) else {
            return;
        };
        let old_parent = self.dirs.parent(key);
        let old_hash = self.dirs.name(key).map(|n| self.bytes_hash(n));
        if self.dirs.set_name(key, &name).is_err() {
            return;
        }
        self.dirs.set_parent(key, Some(parent));
        if let Some((op, old_hash)) = old_parent.zip(old_hash) {
            self.unlist_dir(op, old_hash, key);
        }
        if let Some(mut p) = self.dirs.entries_mut(parent) {
            p.push(Entry {
                ino: key.1,
                size: DIR,
                hash,
            });
        }
        if old_project != project {
            self.set_subtree_project(key, project);
        }
    }

    fn is_ancestor(&self, candidate: Key, mut of: Key) -> bool {
        for _ in 0..MAX_DEPTH {
            match self.dirs.parent(of) {
                Some(p) if p == candidate => return true,
                Some(p) => of = p,
                None => return false,
            }
        }
        true
    }

    fn set_subtree_project(&mut self, key: Key, project: u32) {
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            let Some(from) = self.dirs.project(k) else {
                continue;
            };
            if from == project {
                continue;
            }
            self.dirs.set_project(k, project);
            let mut moved = 0i64;
            let mut wide = Vec::new();
            for e in self.dirs.entries(k).iter().flat_map(|e| e.iter()) {
                if e.is_dir() {
                    stack.push((k.0, e.ino));
                } else if e.size == WIDE {
                    wide.push((k.0, e.ino));
                } else {
                    moved += i64::from(e.size);
                }
            }
            self.add(from, -moved);
            self.add(project, moved);
            for key in wide {
                if let Some(w) = self.wide.get_mut(&key).filter(|w| w.project != project) {
                    let (owner, size) = (w.project, signed(w.size));
                    w.project = project;
                    self.add(owner, -size);
                    self.add(project, size);
                }
            }
        }
    }

    /// The project a tracked directory belongs to.
    pub(crate) fn project_of(&self, key: Key) -> Option<u32> {
        self.dirs.project(key)
    }

    /// Growth since the last sample, with pending notes and rescan requests.
    pub(crate) fn take_sample(&mut self) -> Sample {
        let mut sample = Sample::default();
        for id in std::mem::take(&mut self.dirty) {
            let Some(total) = self.totals.get(&id).copied() else {
                continue;
            };
            let reported = self.reported.entry(id).or_default();
            if total != *reported {
                sample.growth.insert(id, total - *reported);
                *reported = total;
            }
        }
        sample.notes = std::mem::take(&mut self.notes);
        sample.rescan = std::mem::take(&mut self.rescan);
        sample
    }

    #[cfg(test)]
    pub(crate) fn total(&self, id: u32) -> i64 {
        self.totals.get(&id).copied().unwrap_or(0)
    }
}
