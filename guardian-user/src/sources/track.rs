//! The size table and the worker thread, shared by the fanotify and inotify sources.

use super::{ProjectDir, Sample, SourceError};
use crate::fsys::{self, EntryKind, EntryStat};
use crate::scan::MAX_DEPTH;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
struct Child {
    key: Key,
    dir: bool,
}

struct DirNode {
    project: u32,
    /// `None` for a project root, or for a directory moved away whose new place is not known
    /// yet (an orphan, dropped by [`Tree::finalize`] unless adopted before).
    parent: Option<Key>,
    name: CString,
    children: HashMap<CString, Child>,
}

struct FileNode {
    size: u64,
    project: u32,
    /// Names of it the tree knows; 0 = orphan until adopted or finalized.
    links: u32,
}

struct Root {
    project: ProjectDir,
    key: Key,
}

/// Mirror of the project trees: directories (with their entries) and regular files with
/// their last seen apparent size. Growth of a project = change of the sum of its tracked
/// file sizes since the last [`Tree::take_sample`]. Every update re-reads the current state
/// of one name, so repeated, reordered or stale events converge on the right sizes.
#[derive(Default)]
pub(crate) struct Tree {
    roots: HashMap<u32, Root>,
    root_keys: HashMap<Key, u32>,
    dirs: HashMap<Key, DirNode>,
    files: HashMap<Key, FileNode>,
    orphan_dirs: Vec<Key>,
    orphan_files: Vec<Key>,
    /// Sum of tracked sizes per project.
    totals: HashMap<u32, i64>,
    /// `totals` as of the last sample (the baseline right after `watch`).
    reported: HashMap<u32, i64>,
    /// Directories without a watch (inotify over its limit): polled.
    unwatched: HashSet<Key>,
    notes: Vec<String>,
    rescan: Vec<PathBuf>,
    /// Queue overflows not rescanned yet.
    overflows: u32,
    last_rescan: Option<Instant>,
}

struct Frame {
    fd: OwnedFd,
    key: Key,
    entries: Vec<fsys::Listed>,
}

/// Where a directory goes in the tree.
struct Place {
    key: Key,
    parent: Option<Key>,
    name: CString,
    project: u32,
}

/// An open tracked directory and the mount it was opened through: an entry on another
/// mount is a mount point, never entered.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) mnt: Option<u64>,
}

impl Tree {
    pub(crate) fn has_dir(&self, key: Key) -> bool {
        self.dirs.contains_key(&key)
    }

    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub(crate) fn request_rescan(&mut self, paths: Vec<PathBuf>) {
        self.rescan.extend(paths);
    }

    pub(crate) fn project_paths(&self) -> Vec<PathBuf> {
        let mut roots: Vec<&Root> = self.roots.values().collect();
        roots.sort_by_key(|r| r.project.id);
        roots.iter().map(|r| r.project.path.clone()).collect()
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

    fn add(&mut self, project: u32, delta: i64) {
        *self.totals.entry(project).or_default() += delta;
    }

    /// Replaces the project set: unchanged projects keep their state, removed ones are
    /// forgotten, new ones get a baseline (no growth for what they already hold).
    pub(crate) fn set_projects(&mut self, projects: &[ProjectDir], hooks: &mut dyn Hooks) {
        let mut old: Vec<u32> = self.roots.keys().copied().collect();
        old.sort_unstable();
        for id in old {
            if !projects.iter().any(|p| p == &self.roots[&id].project) {
                self.drop_project(id, hooks);
            }
        }
        for project in projects {
            if self.roots.contains_key(&project.id) {
                continue;
            }
            match self.add_project(project, hooks) {
                Ok(()) => {
                    let total = self.totals.get(&project.id).copied().unwrap_or(0);
                    self.reported.insert(project.id, total);
                }
                Err(e) => self.note(format!(
                    "cannot watch project {}: {e}",
                    project.path.display()
                )),
            }
        }
    }

    fn add_project(&mut self, project: &ProjectDir, hooks: &mut dyn Hooks) -> io::Result<()> {
        let fd = fsys::open_dir_path(&project.path)?;
        let st = fsys::stat_fd(&fd)?;
        let key = key_of(&st);
        if key != (project.dev, project.ino) {
            tracing::debug!(
                path = %project.path.display(),
                "project dir is not the (dev, ino) it was announced with; watching what is there"
            );
        }
        if let Some(other) = self.root_keys.get(&key) {
            return Err(io::Error::other(format!(
                "same directory as project {other}"
            )));
        }
        if self.dirs.contains_key(&key) {
            // Nested inside another project's tree: it becomes its own project.
            self.forget_subtree(key, hooks);
        }
        self.roots.insert(
            project.id,
            Root {
                project: project.clone(),
                key,
            },
        );
        self.root_keys.insert(key, project.id);
        self.totals.entry(project.id).or_default();
        let place = Place {
            key,
            parent: None,
            name: CString::default(),
            project: project.id,
        };
        self.scan_new(fd, st.mnt_id, place, hooks);
        Ok(())
    }

    /// Removes a subtree that belongs elsewhere without reporting it as shrinkage.
    fn forget_subtree(&mut self, key: Key, hooks: &mut dyn Hooks) {
        let Some(node) = self.dirs.get(&key) else {
            return;
        };
        if let Some(parent) = node.parent {
            let name = node.name.clone();
            if let Some(p) = self.dirs.get_mut(&parent) {
                p.children.remove(&name);
            }
        }
        let before = self.totals.clone();
        self.drop_subtree(key, hooks);
        self.finalize_files();
        for (id, total) in &self.totals {
            let change = total - before.get(id).copied().unwrap_or(0);
            *self.reported.entry(*id).or_default() += change;
        }
    }

    fn drop_project(&mut self, id: u32, hooks: &mut dyn Hooks) {
        let Some(root) = self.roots.remove(&id) else {
            return;
        };
        self.root_keys.remove(&root.key);
        self.drop_subtree(root.key, hooks);
        self.finalize_files();
        self.totals.remove(&id);
        self.reported.remove(&id);
    }

    /// Removes a directory subtree from the tree; its files become orphans.
    fn drop_subtree(&mut self, key: Key, hooks: &mut dyn Hooks) {
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

    fn unlink_file(&mut self, key: Key) {
        if let Some(file) = self.files.get_mut(&key) {
            file.links = file.links.saturating_sub(1);
            if file.links == 0 {
                self.orphan_files.push(key);
            }
        }
    }

    fn finalize_files(&mut self) {
        for key in std::mem::take(&mut self.orphan_files) {
            if self.files.get(&key).is_some_and(|f| f.links == 0) {
                let file = self.files.remove(&key).expect("checked");
                self.add(file.project, -(file.size as i64));
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
    fn accepts(&self, project: u32, st: &EntryStat, mnt: Option<u64>) -> bool {
        let Some(root) = self.roots.get(&project) else {
            return false;
        };
        matches!(st.kind, EntryKind::File | EntryKind::Dir)
            && st.dev == root.key.0
            && (mnt.is_none() || st.mnt_id.is_none() || st.mnt_id == mnt)
            && !self.root_keys.contains_key(&key_of(st))
    }

    /// Re-reads the entry `name` of the tracked directory `dir` (open as `at`) and brings
    /// the tree in line with what is there now.
    pub(crate) fn reconcile(&mut self, dir: Key, at: At<'_>, name: &CStr, hooks: &mut dyn Hooks) {
        let Some(node) = self.dirs.get(&dir) else {
            return;
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
            // Cannot tell what is there: keep what we know.
            Err(_) => return,
        };
        match (old, now) {
            (Some(child), Some(st)) if child.key == key_of(&st) => {
                if !child.dir {
                    self.set_size(child.key, st.size);
                }
            }
            (old, now) => {
                if let Some(child) = old {
                    self.detach(dir, name, child);
                }
                if let Some(st) = now {
                    self.attach(dir, at, name, &st, hooks);
                }
            }
        }
    }

    /// Reconciles every entry of `dir`: what is listed now and what the tree remembers.
    pub(crate) fn reconcile_all(&mut self, dir: Key, at: At<'_>, hooks: &mut dyn Hooks) {
        let Some(node) = self.dirs.get(&dir) else {
            return;
        };
        let mut names: Vec<CString> = node.children.keys().cloned().collect();
        let known: HashSet<CString> = names.iter().cloned().collect();
        if let Ok(listed) = fsys::list_dir(at.fd) {
            names.extend(
                listed
                    .into_iter()
                    .map(|l| l.name)
                    .filter(|n| !known.contains(n)),
            );
        }
        for name in names {
            self.reconcile(dir, at, &name, hooks);
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

    fn detach(&mut self, parent: Key, name: &CStr, child: Child) {
        if let Some(p) = self.dirs.get_mut(&parent) {
            p.children.remove(name);
        }
        if child.dir {
            if let Some(node) = self.dirs.get_mut(&child.key) {
                if node.parent == Some(parent) && node.name.as_c_str() == name {
                    node.parent = None;
                    self.orphan_dirs.push(child.key);
                }
            }
        } else {
            self.unlink_file(child.key);
        }
    }

    fn attach(
        &mut self,
        parent: Key,
        at: At<'_>,
        name: &CStr,
        st: &EntryStat,
        hooks: &mut dyn Hooks,
    ) {
        let key = key_of(st);
        if st.kind == EntryKind::File {
            self.link_file(parent, name.to_owned(), st);
            return;
        }
        if self.dirs.contains_key(&key) {
            self.adopt_dir(parent, name.to_owned(), key);
            return;
        }
        let Ok(fd) = fsys::open_child_dir(at.fd, name) else {
            return;
        };
        // Swapped between stat and open: the events of the swap will say what is there.
        if !matches!(fsys::stat_fd(&fd), Ok(s) if key_of(&s) == key) {
            return;
        }
        let project = self.dirs[&parent].project;
        let place = Place {
            key,
            parent: Some(parent),
            name: name.to_owned(),
            project,
        };
        self.scan_new(fd, at.mnt, place, hooks);
    }

    fn link_file(&mut self, parent: Key, name: CString, st: &EntryStat) {
        let key = key_of(st);
        let Some(dir) = self.dirs.get_mut(&parent) else {
            return;
        };
        let project = dir.project;
        dir.children.insert(name, Child { key, dir: false });
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
    fn adopt_dir(&mut self, parent: Key, name: CString, key: Key) {
        if key == parent || self.is_ancestor(key, parent) {
            return;
        }
        let Some(project) = self.dirs.get(&parent).map(|d| d.project) else {
            return;
        };
        let node = self.dirs.get_mut(&key).expect("known dir");
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
            p.children.insert(name, Child { key, dir: true });
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

    /// Adds a new directory (open as `fd`, through mount `mnt`) and everything below it.
    fn scan_new(&mut self, fd: OwnedFd, mnt: Option<u64>, place: Place, hooks: &mut dyn Hooks) {
        let project = place.project;
        let mut stack = Vec::new();
        self.enter(&mut stack, fd, place, hooks);
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else {
                break;
            };
            let Some(entry) = top.entries.pop() else {
                stack.pop();
                continue;
            };
            let dir = top.key;
            let st = match fsys::stat_entry(top.fd.as_fd(), &entry.name) {
                Ok(st) if self.accepts(project, &st, mnt) => st,
                _ => continue,
            };
            let key = key_of(&st);
            if st.kind == EntryKind::File {
                self.link_file(dir, entry.name, &st);
                continue;
            }
            if self.dirs.contains_key(&key) {
                self.adopt_dir(dir, entry.name, key);
                continue;
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(child) = fsys::open_child_dir(top.fd.as_fd(), &entry.name) else {
                continue;
            };
            if !matches!(fsys::stat_fd(&child), Ok(s) if key_of(&s) == key) {
                continue;
            }
            let place = Place {
                key,
                parent: Some(dir),
                name: entry.name,
                project,
            };
            self.enter(&mut stack, child, place, hooks);
        }
    }

    fn enter(&mut self, stack: &mut Vec<Frame>, fd: OwnedFd, place: Place, hooks: &mut dyn Hooks) {
        let Place {
            key,
            parent,
            name,
            project,
        } = place;
        if let Some(p) = parent.and_then(|p| self.dirs.get_mut(&p)) {
            p.children.insert(name.clone(), Child { key, dir: true });
        }
        self.dirs.insert(
            key,
            DirNode {
                project,
                parent,
                name,
                children: HashMap::new(),
            },
        );
        // Watch first, then list: whatever appears in between is in the listing or in an
        // event (notify#124: files written into brand-new subdirectories).
        if !hooks.dir_added(key, fd.as_fd()) {
            self.unwatched.insert(key);
        }
        let entries = fsys::list_dir(&fd).unwrap_or_default();
        stack.push(Frame { fd, key, entries });
    }

    /// Path of a tracked directory, from its project root; `None` for orphans.
    pub(crate) fn path_of(&self, key: Key) -> Option<PathBuf> {
        let mut names: Vec<CString> = Vec::new();
        let mut k = key;
        for _ in 0..MAX_DEPTH {
            if let Some(id) = self.root_keys.get(&k) {
                let mut path = self.roots[id].project.path.clone();
                for name in names.iter().rev() {
                    path.push(fsys::name_to_os(name));
                }
                return Some(path);
            }
            let node = self.dirs.get(&k)?;
            names.push(node.name.clone());
            k = node.parent?;
        }
        None
    }

    /// Opens a tracked directory by its path and checks it is still that directory; with
    /// the mount id it was reached through.
    pub(crate) fn open_dir(&self, key: Key) -> Option<(OwnedFd, Option<u64>)> {
        let path = self.path_of(key)?;
        let fd = fsys::open_dir_path(&path).ok()?;
        let st = fsys::stat_fd(&fd).ok()?;
        (key_of(&st) == key).then_some((fd, st.mnt_id))
    }

    /// The project a tracked directory belongs to.
    pub(crate) fn project_of(&self, key: Key) -> Option<u32> {
        self.dirs.get(&key).map(|d| d.project)
    }

    /// Marks a tracked directory as unwatched (its watch went away).
    pub(crate) fn mark_unwatched(&mut self, key: Key) {
        if self.dirs.contains_key(&key) {
            self.unwatched.insert(key);
        }
    }

    /// Polls every unwatched directory: retries its watch, then re-reads all its entries.
    pub(crate) fn poll_unwatched(&mut self, hooks: &mut dyn Hooks) {
        let keys: Vec<Key> = self.unwatched.iter().copied().collect();
        for key in keys {
            if !self.dirs.contains_key(&key) {
                self.unwatched.remove(&key);
                continue;
            }
            let Some((fd, mnt)) = self.open_dir(key) else {
                continue;
            };
            if hooks.dir_added(key, fd.as_fd()) {
                self.unwatched.remove(&key);
            }
            let at = At {
                fd: fd.as_fd(),
                mnt,
            };
            self.reconcile_all(key, at, hooks);
        }
    }

    /// Records a queue overflow; the rescan follows from [`Tree::rescan_if_due`].
    pub(crate) fn overflowed(&mut self) {
        self.overflows += 1;
    }

    /// Whether an overflow still waits for its rescan.
    pub(crate) fn rescan_due(&self) -> bool {
        self.overflows > 0
    }

    /// After overflows, rebuilds every project from a fresh scan (the difference shows up as
    /// growth) and asks the caller to rescan too. At most once per [`TICK`]: a writer that
    /// keeps overflowing the queue gets one rescan a second, not one per read.
    pub(crate) fn rescan_if_due(&mut self, source: &str, hooks: &mut dyn Hooks) {
        if self.overflows == 0 || self.last_rescan.is_some_and(|t| t.elapsed() < TICK) {
            return;
        }
        tracing::warn!(
            source,
            overflows = self.overflows,
            "event queue overflowed; rescanning"
        );
        let mut ids: Vec<u32> = self.roots.keys().copied().collect();
        ids.sort_unstable();
        self.rebuild(&ids, hooks);
        let paths = self.project_paths();
        self.note(format!(
            "{source}: event queue overflowed ({} time(s)); rescanned {} project(s)",
            self.overflows,
            paths.len()
        ));
        self.request_rescan(paths);
        self.overflows = 0;
        self.last_rescan = Some(Instant::now());
    }

    /// Rebuilds one project from a fresh scan; the difference shows up as growth.
    pub(crate) fn rescan_project(&mut self, id: u32, hooks: &mut dyn Hooks) {
        self.rebuild(&[id], hooks);
    }

    /// Forgets the trees of `ids` and scans them afresh. Directories that are still there
    /// keep their watches (`Hooks::dir_added` sees them again); the others are dropped
    /// afterwards. Nothing is adopted from the old trees: after lost events they may be
    /// stale.
    fn rebuild(&mut self, ids: &[u32], hooks: &mut dyn Hooks) {
        self.finalize(hooks);
        let mut old_dirs = Vec::new();
        for id in ids {
            let Some(root) = self.roots.get(id) else {
                continue;
            };
            let mut stack = vec![root.key];
            while let Some(k) = stack.pop() {
                let Some(node) = self.dirs.remove(&k) else {
                    continue;
                };
                self.unwatched.remove(&k);
                old_dirs.push(k);
                for child in node.children.values() {
                    if !child.dir {
                        self.unlink_file(child.key);
                    } else if !self.root_keys.contains_key(&child.key) {
                        stack.push(child.key);
                    }
                }
            }
        }
        self.finalize_files();
        for id in ids {
            let Some(root) = self.roots.get(id) else {
                continue;
            };
            let (root_key, path) = (root.key, root.project.path.clone());
            let opened = fsys::open_dir_path(&path)
                .ok()
                .and_then(|fd| Some((fsys::stat_fd(&fd).ok()?, fd)));
            match opened {
                Some((st, fd)) if key_of(&st) == root_key => {
                    let place = Place {
                        key: root_key,
                        parent: None,
                        name: CString::default(),
                        project: *id,
                    };
                    self.scan_new(fd, st.mnt_id, place, hooks);
                }
                _ => self.note(format!(
                    "project {} is gone or was replaced; not tracked until watched again",
                    path.display()
                )),
            }
        }
        for k in old_dirs {
            if !self.dirs.contains_key(&k) {
                hooks.dir_dropped(k);
            }
        }
    }

    /// Growth since the last sample, with pending notes and rescan requests.
    pub(crate) fn take_sample(&mut self) -> Sample {
        let mut sample = Sample::default();
        for (id, total) in &self.totals {
            let reported = self.reported.entry(*id).or_default();
            if *total != *reported {
                sample.growth.insert(*id, total - *reported);
                *reported = *total;
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

/// What a worker thread owns: the kernel queue and what it knows.
pub(crate) trait Backend: Send + 'static {
    /// The queue descriptor to poll.
    fn raw_fd(&self) -> i32;
    /// Sets the projects (marks, watches, baseline).
    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError>;
    /// Reads and applies every queued event without blocking.
    fn pump(&mut self) -> io::Result<()>;
    /// Whether [`Backend::tick`] has work (polled dirs, retries).
    fn wants_tick(&self) -> bool {
        false
    }
    /// Periodic work, about once per [`TICK`].
    fn tick(&mut self) {}
    /// What changed since the last call.
    fn take(&mut self) -> Sample;
}

/// Shortest time between two reads of the kernel queue (well under the daemon's sample interval;
/// see `run`).
pub(crate) const BATCH: Duration = Duration::from_millis(100);

/// Period of [`Backend::tick`] while it has work.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// Messages to the worker thread.
pub(crate) enum Command {
    Watch(Vec<ProjectDir>, Sender<Result<(), SourceError>>),
    Shutdown,
}

#[derive(Default)]
struct Shared {
    sample: Sample,
    failure: Option<String>,
}

/// A worker thread running a [`Backend`], stopped and joined on drop.
pub struct Worker {
    name: &'static str,
    commands: Sender<Command>,
    wake: Arc<OwnedFd>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub(crate) fn spawn<B: Backend>(name: &'static str, backend: B) -> Result<Worker, SourceError> {
        let failed = |reason: String| SourceError::Failed {
            source_name: name,
            reason,
        };
        // SAFETY: plain syscall, result checked and owned.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(failed(format!("eventfd: {}", io::Error::last_os_error())));
        }
        // SAFETY: fresh descriptor.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(wake) });
        let (commands, inbox) = crossbeam_channel::unbounded();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let thread = std::thread::Builder::new()
            .name(format!("guardian-{name}"))
            .spawn({
                let wake = wake.clone();
                let shared = shared.clone();
                move || run(backend, inbox, wake, shared)
            })
            .map_err(|e| failed(format!("cannot start the worker thread: {e}")))?;
        Ok(Worker {
            name,
            commands,
            wake,
            shared,
            thread: Some(thread),
        })
    }

    fn failed(&self, reason: String) -> SourceError {
        SourceError::Failed {
            source_name: self.name,
            reason,
        }
    }

    fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes eight bytes from a local buffer to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Hands the projects to the worker and waits for its baseline.
    pub(crate) fn watch(&self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Watch(projects.to_vec(), reply))
            .map_err(|_| self.failed(self.failure_reason()))?;
        self.wake();
        answer
            .recv()
            .map_err(|_| self.failed(self.failure_reason()))?
    }

    fn failure_reason(&self) -> String {
        self.shared
            .lock()
            .map(|s| s.failure.clone())
            .unwrap_or_default()
            .unwrap_or_else(|| "the worker thread stopped".into())
    }

    /// Takes what the worker accumulated; never waits for event processing.
    pub(crate) fn drain(&self) -> Result<Sample, SourceError> {
        let mut shared = self
            .shared
            .lock()
            .map_err(|_| self.failed("the worker thread panicked".into()))?;
        let sample = std::mem::take(&mut shared.sample);
        match &shared.failure {
            Some(reason) if sample == Sample::default() => Err(self.failed(reason.clone())),
            _ => Ok(sample),
        }
    }
}

/// fanotify and inotify are both a [`Worker`] running their backend.
impl super::Source for Worker {
    fn name(&self) -> &'static str {
        self.name
    }

    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        Worker::watch(self, projects)
    }

    fn drain(&mut self) -> Result<Sample, SourceError> {
        Worker::drain(self)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Records why the worker stopped, also when it panics.
struct ExitGuard {
    shared: Arc<Mutex<Shared>>,
    clean: bool,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if !self.clean {
            let mut shared = match self.shared.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            shared
                .failure
                .get_or_insert_with(|| "the worker thread panicked".into());
        }
    }
}

fn run<B: Backend>(
    mut backend: B,
    inbox: Receiver<Command>,
    wake: Arc<OwnedFd>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut guard = ExitGuard {
        shared: shared.clone(),
        clean: false,
    };
    let mut last_tick = Instant::now();
    let mut last_pump = Instant::now() - BATCH;
    loop {
        // Between two reads of the queue the kernel merges repeated events on the same file, so
        // a writer making many small writes costs one event per batch instead of one per write.
        let batch_left = BATCH.saturating_sub(last_pump.elapsed());
        let queue_fd = if batch_left.is_zero() {
            backend.raw_fd()
        } else {
            -1 // poll(2) skips negative descriptors
        };
        let tick_left = backend
            .wants_tick()
            .then(|| TICK.saturating_sub(last_tick.elapsed()));
        let batch_wait = (!batch_left.is_zero()).then_some(batch_left);
        let timeout = match (tick_left, batch_wait) {
            (Some(a), Some(b)) => a.min(b).as_millis() as libc::c_int,
            (Some(a), None) | (None, Some(a)) => a.as_millis() as libc::c_int,
            (None, None) => -1,
        };
        let mut fds = [
            libc::pollfd {
                fd: queue_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                fail(&shared, format!("poll: {err}"));
                return;
            }
            continue;
        }
        if fds[1].revents != 0 {
            let mut buf = [0u8; 8];
            // SAFETY: reads at most eight bytes into a local buffer.
            unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        }
        loop {
            match inbox.try_recv() {
                Ok(Command::Watch(projects, reply)) => {
                    let _ = reply.send(backend.watch(&projects));
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    guard.clean = true;
                    return;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if fds[0].revents != 0 {
            last_pump = Instant::now();
            if let Err(err) = backend.pump() {
                fail(&shared, format!("reading events: {err}"));
                return;
            }
        }
        if backend.wants_tick() && last_tick.elapsed() >= TICK {
            backend.tick();
            last_tick = Instant::now();
        } else if !backend.wants_tick() {
            last_tick = Instant::now();
        }
        let sample = backend.take();
        if sample != Sample::default() {
            match shared.lock() {
                Ok(mut s) => s.sample.absorb(sample),
                Err(_) => return,
            }
        }
    }
}

fn fail(shared: &Mutex<Shared>, reason: String) {
    tracing::error!(%reason, "write source worker stopped");
    if let Ok(mut s) = shared.lock() {
        s.failure = Some(reason);
    }
}
