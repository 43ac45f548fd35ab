//! The size table shared by the fanotify and inotify sources: a mirror of the project trees
//! (directories with their entries, regular files with their last seen apparent size), brought
//! in line with the disk one changed name at a time. Growth of a project is the change of the sum
//! of its tracked sizes. Walking directories into the table (baselines, re-walks, polling) is in
//! `walk.rs`; when to re-walk is `rewalk.rs`. The table only reads the disk.
//!
//! Exactness rests on two rules. Every update re-reads the current state of one name, so
//! repeated, reordered or stale events converge. And a directory is only taken for one already
//! known when an event says it was moved there: filesystems reuse inode numbers (ext4 hands a
//! deleted directory's number to the next `mkdir` in the same group), and a `rm -rf out; mkdir out`
//! must not keep the deleted `out`'s files, whose own deletions could no longer be resolved.

use super::change::Change;
use super::rewalk::Rewalks;
use crate::fsys::{self, EntryKind, EntryStat};
use crate::scan::MAX_DEPTH;
use crate::sources::{Note, ProjectDir, Sample};
use rustix::fd::BorrowedFd;
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::io;
use std::path::PathBuf;
use std::time::Instant;

/// `(st_dev, st_ino)`.
pub(crate) type Key = (u64, u64);

pub(crate) fn key_of(st: &EntryStat) -> Key {
    (st.dev, st.ino)
}

/// How a source learns which directories joined or left the tracked trees.
pub(crate) trait Hooks {
    /// `dir` (open) joined a project tree: start watching it. Called before the directory
    /// is listed, so nothing created in it afterwards goes unseen. `false` when it cannot be
    /// watched; the tree then polls it.
    fn dir_added(&mut self, key: Key, dir: BorrowedFd<'_>) -> bool;
    /// The directory left every project tree.
    fn dir_dropped(&mut self, key: Key);
}

/// For sources that see whole filesystems (fanotify): nothing to add or remove.
pub(crate) struct NoHooks;

impl Hooks for NoHooks {
    fn dir_added(&mut self, _: Key, _: BorrowedFd<'_>) -> bool {
        true
    }

    fn dir_dropped(&mut self, _: Key) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Child {
    pub(super) key: Key,
    pub(super) dir: bool,
}

pub(super) struct DirNode {
    pub(super) project: u32,
    /// `None` for a project root, or for a directory moved away whose new place is not known
    /// yet (an orphan, dropped by [`Tree::finalize`] unless adopted before).
    pub(super) parent: Option<Key>,
    pub(super) name: CString,
    pub(super) children: HashMap<CString, Child>,
}

pub(super) struct FileNode {
    pub(super) size: u64,
    pub(super) project: u32,
    /// Names of it the tree knows; 0 = orphan until adopted or finalized.
    pub(super) links: u32,
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
    pub(super) dirs: HashMap<Key, DirNode>,
    pub(super) files: HashMap<Key, FileNode>,
    pub(super) orphan_dirs: Vec<Key>,
    pub(super) orphan_files: Vec<Key>,
    /// Sum of tracked sizes per project.
    pub(super) totals: HashMap<u32, i64>,
    /// `totals` as of the last sample (the baseline right after `watch`).
    pub(super) reported: HashMap<u32, i64>,
    /// Projects whose total changed since the last sample.
    pub(super) dirty: HashSet<u32>,
    /// Directories without a watch (inotify over its limit): polled.
    pub(super) unwatched: HashSet<Key>,
    pub(super) notes: Vec<Note>,
    pub(super) rescan: Vec<PathBuf>,
    /// When projects are walked again.
    pub(super) walks: Rewalks,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree {
            roots: HashMap::new(),
            root_keys: HashMap::new(),
            dirs: HashMap::new(),
            files: HashMap::new(),
            orphan_dirs: Vec::new(),
            orphan_files: Vec::new(),
            totals: HashMap::new(),
            reported: HashMap::new(),
            dirty: HashSet::new(),
            unwatched: HashSet::new(),
            notes: Vec::new(),
            rescan: Vec::new(),
            walks: Rewalks::new(Instant::now()),
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
    pub(crate) fn has_dir(&self, key: Key) -> bool {
        self.dirs.contains_key(&key)
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
        self.unwatched.len()
    }

    /// Paths of the topmost unwatched directories (their parent is watched).
    pub(crate) fn unwatched_tops(&self) -> Vec<PathBuf> {
        let mut tops: Vec<PathBuf> = self
            .unwatched
            .iter()
            .filter(|k| {
                let parent = self.dirs.get(k).and_then(|d| d.parent);
                !parent.is_some_and(|p| self.unwatched.contains(&p))
            })
            .filter_map(|k| self.path_of(*k))
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

    /// Removes a directory subtree from the tree; its files become orphans.
    pub(super) fn drop_subtree(&mut self, key: Key, hooks: &mut dyn Hooks) {
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            let Some(node) = self.dirs.remove(&k) else {
                continue;
            };
            hooks.dir_dropped(k);
            self.unwatched.remove(&k);
            for child in node.children.values() {
                if child.dir {
                    if !self.root_keys.contains_key(&child.key) {
                        stack.push(child.key);
                    }
                } else {
                    self.unlink_file(child.key);
                }
            }
        }
    }

    pub(super) fn unlink_file(&mut self, key: Key) {
        if let Some(file) = self.files.get_mut(&key) {
            file.links = file.links.saturating_sub(1);
            if file.links == 0 {
                self.orphan_files.push(key);
            }
        }
    }

    pub(super) fn finalize_files(&mut self) {
        for key in std::mem::take(&mut self.orphan_files) {
            if self.files.get(&key).is_some_and(|f| f.links == 0) {
                if let Some(file) = self.files.remove(&key) {
                    self.add(file.project, -(file.size as i64));
                }
            }
        }
    }

    /// Drops what was moved away and not moved back in: orphaned directories (with their
    /// subtrees) and files with no known name. Call after every batch of events.
    pub(crate) fn finalize(&mut self, hooks: &mut dyn Hooks) {
        for key in std::mem::take(&mut self.orphan_dirs) {
            let orphan = self.dirs.get(&key).is_some_and(|d| d.parent.is_none())
                && !self.root_keys.contains_key(&key);
            if orphan {
                self.drop_subtree(key, hooks);
            }
        }
        self.finalize_files();
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

    /// Re-reads the entry `name` of the tracked directory `dir` (open as `at`) and brings
    /// the tree in line with what is there now; `change` is what the events for the name said.
    /// Returns false when the entry could not be read (the caller may ask for a re-walk).
    pub(crate) fn reconcile(
        &mut self,
        dir: Key,
        at: At<'_>,
        name: &CStr,
        change: Change,
        hooks: &mut dyn Hooks,
    ) -> bool {
        let Some(node) = self.dirs.get(&dir) else {
            return true;
        };
        let project = node.project;
        let old = node.children.get(name).copied();
        let now = match fsys::stat_entry(at.fd, name) {
            Ok(st) => self.accepts(project, &st, at.mnt).then_some(st),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                None
            }
            // Cannot tell what is there: keep what we know, and say so.
            Err(_) => return false,
        };
        match (old, now) {
            (Some(child), Some(st)) if child.key == key_of(&st) && !child.dir => {
                self.set_size(child.key, st.size);
            }
            (Some(child), Some(st)) if child.key == key_of(&st) && !change.replaced() => {
                // The same directory.
            }
            (old, now) => {
                if let Some(child) = old {
                    self.detach(dir, name, child, change, hooks);
                }
                if let Some(st) = now {
                    self.attach(dir, at, name, &st, change, hooks);
                }
            }
        }
        true
    }

    /// Reconciles every entry of `dir`: what is listed now and what the tree remembers.
    pub(crate) fn reconcile_all(&mut self, dir: Key, at: At<'_>, hooks: &mut dyn Hooks) {
        let Some(node) = self.dirs.get(&dir) else {
            return;
        };
        let mut names: Vec<CString> = node.children.keys().cloned().collect();
        let mut known: HashSet<CString> = names.iter().cloned().collect();
        if let Ok(listed) = fsys::list_dir(at.fd) {
            for l in listed {
                if known.insert(l.name.clone()) {
                    names.push(l.name);
                }
            }
        }
        for name in names {
            self.reconcile(dir, at, &name, Change::LISTED, hooks);
        }
    }

    fn set_size(&mut self, key: Key, size: u64) {
        if let Some(file) = self.files.get_mut(&key) {
            let delta = size as i64 - file.size as i64;
            file.size = size;
            let project = file.project;
            self.add(project, delta);
        }
    }

    /// `name` of `parent` no longer names `child`. A directory deleted there is dropped at
    /// once; one that may have been moved waits, orphaned, for its new place.
    fn detach(
        &mut self,
        parent: Key,
        name: &CStr,
        child: Child,
        change: Change,
        hooks: &mut dyn Hooks,
    ) {
        if let Some(p) = self.dirs.get_mut(&parent) {
            p.children.remove(name);
        }
        if !child.dir {
            self.unlink_file(child.key);
            return;
        }
        let attached_here = self
            .dirs
            .get(&child.key)
            .is_some_and(|node| node.parent == Some(parent) && node.name.as_c_str() == name);
        if !attached_here {
            return;
        }
        if change.known && change.deleted && !change.moved_away {
            self.drop_subtree(child.key, hooks);
            return;
        }
        if let Some(node) = self.dirs.get_mut(&child.key) {
            node.parent = None;
            self.orphan_dirs.push(child.key);
        }
    }

    fn attach(
        &mut self,
        parent: Key,
        at: At<'_>,
        name: &CStr,
        st: &EntryStat,
        change: Change,
        hooks: &mut dyn Hooks,
    ) {
        let key = key_of(st);
        if st.kind == EntryKind::File {
            self.link_file(parent, name.to_owned(), st, hooks);
            return;
        }
        if self.dirs.contains_key(&key) {
            if change.may_adopt() {
                self.adopt_dir(parent, name.to_owned(), key);
                return;
            }
            // A new directory under an inode number the tree still knows from a deleted one.
            self.forget_dir(key, hooks);
        }
        let Ok(fd) = fsys::open_child_dir(at.fd, name) else {
            return;
        };
        // Swapped between stat and open: the events of the swap will say what is there.
        if !matches!(fsys::stat_fd(&fd), Ok(s) if key_of(&s) == key) {
            return;
        }
        let Some(project) = self.dirs.get(&parent).map(|d| d.project) else {
            return;
        };
        let place = Place {
            key,
            parent: Some(parent),
            name: name.to_owned(),
            project,
        };
        self.scan_new(fd, at.mnt, place, hooks);
    }

    /// Drops a directory node the disk no longer has (its number now names another one).
    pub(super) fn forget_dir(&mut self, key: Key, hooks: &mut dyn Hooks) {
        if self.root_keys.contains_key(&key) {
            return;
        }
        if let Some((parent, name)) = self
            .dirs
            .get(&key)
            .and_then(|n| Some((n.parent?, n.name.clone())))
        {
            if let Some(p) = self.dirs.get_mut(&parent) {
                if p.children.get(&name).map(|c| c.key) == Some(key) {
                    p.children.remove(&name);
                }
            }
        }
        self.drop_subtree(key, hooks);
    }

    pub(super) fn link_file(
        &mut self,
        parent: Key,
        name: CString,
        st: &EntryStat,
        hooks: &mut dyn Hooks,
    ) {
        let key = key_of(st);
        let Some(dir) = self.dirs.get(&parent) else {
            return;
        };
        let project = dir.project;
        match dir.children.get(&name).copied() {
            // Listed twice (a name deleted and made again while its directory was read).
            Some(child) if child.key == key && !child.dir => {
                self.set_size(key, st.size);
                return;
            }
            Some(child) if child.dir => self.forget_dir(child.key, hooks),
            Some(child) => self.unlink_file(child.key),
            None => {}
        }
        if let Some(dir) = self.dirs.get_mut(&parent) {
            dir.children.insert(name, Child { key, dir: false });
        }
        match self.files.get_mut(&key) {
            Some(file) => {
                let moved = (file.links == 0 && file.project != project)
                    .then_some((file.project, file.size as i64));
                if moved.is_some() {
                    file.project = project;
                }
                file.links += 1;
                if let Some((from, size)) = moved {
                    self.add(from, -size);
                    self.add(project, size);
                }
                self.set_size(key, st.size);
            }
            None => {
                self.files.insert(
                    key,
                    FileNode {
                        size: st.size,
                        project,
                        links: 1,
                    },
                );
                self.add(project, st.size as i64);
            }
        }
    }

    /// A known directory (moved within or between projects) gets its new place.
    pub(super) fn adopt_dir(&mut self, parent: Key, name: CString, key: Key) {
        if key == parent || self.is_ancestor(key, parent) {
            return;
        }
        let Some(project) = self.dirs.get(&parent).map(|d| d.project) else {
            return;
        };
        let Some(node) = self.dirs.get_mut(&key) else {
            return;
        };
        let old_parent = node.parent.replace(parent);
        let old_name = std::mem::replace(&mut node.name, name.clone());
        let old_project = node.project;
        if let Some(op) = old_parent {
            if let Some(p) = self.dirs.get_mut(&op) {
                if p.children.get(&old_name).map(|c| c.key) == Some(key) {
                    p.children.remove(&old_name);
                }
            }
        }
        if let Some(p) = self.dirs.get_mut(&parent) {
            if let Some(replaced) = p.children.insert(name, Child { key, dir: true }) {
                if replaced.key != key && !replaced.dir {
                    self.unlink_file(replaced.key);
                }
            }
        }
        if old_project != project {
            self.set_subtree_project(key, project);
        }
    }

    fn is_ancestor(&self, candidate: Key, mut of: Key) -> bool {
        for _ in 0..MAX_DEPTH {
            match self.dirs.get(&of).and_then(|d| d.parent) {
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
            let Some(node) = self.dirs.get_mut(&k) else {
                continue;
            };
            if node.project == project {
                continue;
            }
            node.project = project;
            let children: Vec<Child> = node.children.values().copied().collect();
            for child in children {
                if child.dir {
                    stack.push(child.key);
                } else if let Some(file) = self.files.get_mut(&child.key) {
                    if file.project != project {
                        let (from, size) = (file.project, file.size as i64);
                        file.project = project;
                        self.add(from, -size);
                        self.add(project, size);
                    }
                }
            }
        }
    }

    /// The project a tracked directory belongs to.
    pub(crate) fn project_of(&self, key: Key) -> Option<u32> {
        self.dirs.get(&key).map(|d| d.project)
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
