//! Bringing the size table in line with one changed name of a tracked directory, or with all of
//! them: re-read the name, find what the table had under it (file entries by name hash, checked
//! against the inode; subdirectories by hash, checked by name) and count the difference. Where
//! the hash does not say which file a name held, the directory's names with that hash are
//! listed and re-read.

use super::change::Change;
use super::entries::{Entry, DIR};
use super::tree::{key_of, At, Hooks, Key, Place, Tree};
use crate::fsys::{self, EntryKind, EntryStat};
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io;

/// The names in the directory open as `at`; an `O_PATH` handle (what fanotify's file handles
/// open) cannot be read, so the directory itself is opened through it then.
fn listing(at: At<'_>) -> io::Result<Vec<fsys::Listed>> {
    match fsys::list_dir(at.fd) {
        Ok(listed) => Ok(listed),
        Err(_) => fsys::list_dir(fsys::open_child_dir(at.fd, c".")?),
    }
}

/// Directories of at most this many entries are listed when a name's hash does not say for
/// sure which file it held; larger ones trust a single match (see `reconcile_file`).
const LISTED_TO_BE_SURE: usize = 1024;

impl Tree {
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
        self.reconcile_name(dir, at, name, change, hooks, true)
    }

    /// [`Tree::reconcile`]; with `files` false only what concerns directories (the caller
    /// re-reads the files itself).
    fn reconcile_name(
        &mut self,
        dir: Key,
        at: At<'_>,
        name: &CStr,
        change: Change,
        hooks: &mut dyn Hooks,
        files: bool,
    ) -> bool {
        let Some(project) = self.project_of(dir) else {
            return true;
        };
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
        let hash = self.name_hash(name);
        let old_dir = self.subdir_named(dir, hash, name);
        if files {
            let now_file = now.as_ref().filter(|st| st.kind == EntryKind::File);
            self.reconcile_file(dir, at, hash, now_file, old_dir.is_some(), change);
        }
        let now_dir = now.filter(|st| st.kind == EntryKind::Dir);
        match (old_dir, now_dir) {
            (Some(key), Some(st)) if key == key_of(&st) && !change.replaced() => {
                // The same directory.
            }
            (old, now) => {
                if let Some(key) = old {
                    self.detach_dir(dir, hash, key, change, hooks);
                }
                if let Some(st) = now {
                    self.attach_dir(dir, at, name, &st, change, hooks);
                }
            }
        }
        true
    }

    /// The file part of [`Tree::reconcile_name`]: `now` is the file the name holds (if any).
    fn reconcile_file(
        &mut self,
        dir: Key,
        at: At<'_>,
        hash: u32,
        now: Option<&EntryStat>,
        also_dir: bool,
        change: Change,
    ) {
        let collided = self.collisions.get(&dir).is_some_and(|h| h.contains(&hash));
        let old = self.file_slots(dir, hash);
        if let (Some(st), [(slot, e)]) = (now, old.as_slice()) {
            if e.ino == st.ino {
                let slot = *slot;
                return self.set_size(dir, slot, st.size);
            }
        }
        // Something left the name (deleted, moved away, or replaced by a rename onto it): in
        // a large directory a single entry with its hash is taken for the name's file (another
        // name hashing alike, not known to collide yet, is about entries / 2^32 likely); a
        // small one is listed to be sure.
        let large = self
            .dirs
            .entries(dir)
            .is_some_and(|e| e.len() > LISTED_TO_BE_SURE);
        let left = change.known && (change.deleted || change.moved_away || change.moved_in);
        match old.as_slice() {
            [] if !collided => {}
            [(slot, _)] if !collided && !also_dir && left && large => self.remove_file(dir, *slot),
            _ => return self.resync_hash(dir, at, hash),
        }
        if let Some(st) = now {
            self.link_file(dir, hash, st);
        }
    }

    /// Ends a batch of events: the listing kept for it is dropped (the next batch's events may
    /// be newer than it).
    pub(crate) fn end_batch(&mut self) {
        self.listing = None;
    }

    /// Re-reads the file names of `dir` whose hash is `hash` from a listing: their entries are
    /// dropped and made again, and whether two names share the hash is remembered.
    pub(crate) fn resync_hash(&mut self, dir: Key, at: At<'_>, hash: u32) {
        let Some(project) = self.project_of(dir) else {
            return;
        };
        let listed = match self.listing.take() {
            Some((listed_dir, listed)) if listed_dir == dir => listed,
            _ => match listing(at) {
                Ok(listed) => {
                    let mut hashed: Vec<(u32, fsys::Listed)> = listed
                        .into_iter()
                        .map(|l| (self.name_hash(&l.name), l))
                        .collect();
                    hashed.sort_unstable_by_key(|(h, _)| *h);
                    hashed
                }
                Err(_) => {
                    self.lost(dir);
                    return;
                }
            },
        };
        self.remove_files(dir, Some(hash));
        let mut files = 0;
        let first = listed.partition_point(|(h, _)| *h < hash);
        for (_, l) in listed[first..].iter().take_while(|(h, _)| *h == hash) {
            let Ok(st) = fsys::stat_entry(at.fd, &l.name) else {
                continue;
            };
            if st.kind == EntryKind::File && self.accepts(project, &st, at.mnt) {
                self.link_file(dir, hash, &st);
                files += 1;
            }
        }
        self.listing = Some((dir, listed));
        let known = self.collisions.entry(dir).or_default();
        known.retain(|h| *h != hash);
        if files > 1 {
            known.push(hash);
        }
        if known.is_empty() {
            self.collisions.remove(&dir);
        }
    }

    /// Reconciles every entry of `dir`: what is listed now and what the tree remembers. Its
    /// files are read afresh.
    pub(crate) fn reconcile_all(&mut self, dir: Key, at: At<'_>, hooks: &mut dyn Hooks) {
        // What it lists below is newer than any listing kept.
        self.end_batch();
        let Some(entries) = self.dirs.entries(dir) else {
            return;
        };
        let Some(project) = self.project_of(dir) else {
            return;
        };
        let mut names: Vec<CString> = entries
            .iter()
            .filter(|e| e.is_dir())
            .map(|e| (dir.0, e.ino))
            .filter(|k| self.dirs.parent(*k) == Some(dir))
            .filter_map(|k| CString::new(self.dirs.name(k)?).ok())
            .collect();
        let Ok(listed) = listing(at) else {
            self.lost(dir);
            return;
        };
        self.remove_files(dir, None);
        self.collisions.remove(&dir);
        let mut known: HashSet<CString> = names.iter().cloned().collect();
        for l in listed {
            match fsys::stat_entry(at.fd, &l.name) {
                Ok(st) if st.kind == EntryKind::File && self.accepts(project, &st, at.mnt) => {
                    let hash = self.name_hash(&l.name);
                    self.link_file(dir, hash, &st);
                }
                _ => {
                    if known.insert(l.name.clone()) {
                        names.push(l.name);
                    }
                }
            }
        }
        for name in names {
            self.reconcile_name(dir, at, &name, Change::LISTED, hooks, false);
        }
        self.settle_dir(dir, at);
    }

    /// After `dir` was listed whole: sorts its entries, and re-reads the names of any hash two
    /// file entries share (two names hashing alike, or one name listed twice).
    pub(super) fn settle_dir(&mut self, dir: Key, at: At<'_>) {
        let Some(mut entries) = self.dirs.entries_mut(dir) else {
            return;
        };
        entries.sort();
        let shared = entries.read().shared_file_hashes();
        for hash in shared {
            self.resync_hash(dir, at, hash);
        }
        if let Some(mut entries) = self.dirs.entries_mut(dir) {
            entries.shrink();
        }
    }

    /// The subdirectory `child` no longer has its name (hashing to `hash`) in `parent`. One
    /// deleted there is dropped at once; one that may have been moved waits, orphaned, for
    /// its new place.
    fn detach_dir(
        &mut self,
        parent: Key,
        hash: u32,
        child: Key,
        change: Change,
        hooks: &mut dyn Hooks,
    ) {
        self.unlist_dir(parent, hash, child);
        if change.known && change.deleted && !change.moved_away {
            self.drop_subtree(child, hooks);
            return;
        }
        if self.dirs.contains(child) {
            self.dirs.set_parent(child, None);
            self.orphan_dirs.push(child);
        }
    }

    fn attach_dir(
        &mut self,
        parent: Key,
        at: At<'_>,
        name: &CStr,
        st: &EntryStat,
        change: Change,
        hooks: &mut dyn Hooks,
    ) {
        let key = key_of(st);
        if self.dirs.contains(key) {
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
        let Some(project) = self.project_of(parent) else {
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

    /// The entry of a new subdirectory in its parent's list.
    pub(super) fn list_dir_entry(&mut self, parent: Key, name: &CStr, key: Key) {
        let hash = self.name_hash(name);
        if let Some(mut p) = self.dirs.entries_mut(parent) {
            p.push(Entry {
                ino: key.1,
                size: DIR,
                hash,
            });
        }
    }
}
