//! Safe recursive removal relative to directory fds: every child is opened with `O_NOFOLLOW`,
//! checked to be on the same filesystem and mount as the root of the removal
//! ([`fsys::Boundary`]), and re-identified by (dev, ino) after opening, so a directory swapped
//! for a symlink is unlinked as a symlink and never followed. Mount points, kept dirs
//! (`.guardian-keep`) and entries changed after the plan's cut-off are left in place. Sibling
//! subdirectories are removed in parallel on the walk pool, each under the same checks.

use super::own;
use crate::fsys::{self, Boundary, EntryKind, EntryStat, MAX_DEPTH};
use crate::scan::KEEP_MARKER;
use rayon::prelude::*;
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::AtFlags;
use std::ffi::CStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a removal did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveStats {
    pub entries_removed: u64,
    /// Allocated bytes of inodes whose last link was removed.
    pub bytes_unlinked: u64,
    /// Things left in place on purpose: mount points, kept dirs, swapped or fresh entries.
    pub left_in_place: Vec<(PathBuf, String)>,
    /// Things that could not be removed.
    pub errors: Vec<(PathBuf, String)>,
}

impl RemoveStats {
    fn merge(&mut self, other: RemoveStats) {
        self.entries_removed += other.entries_removed;
        self.bytes_unlinked += other.bytes_unlinked;
        self.left_in_place.extend(other.left_in_place);
        self.errors.extend(other.errors);
    }
}

/// An entry stated for removal.
enum Stated {
    /// Already gone: nothing to do.
    Gone,
    /// Left in place (recorded as such or as an error).
    Kept,
    /// On the removal's filesystem: to be removed.
    Entry(EntryStat),
}

/// The removal was stopped by a shutdown request.
#[derive(Debug)]
pub struct Interrupted;

/// What every removal is bound by.
#[derive(Clone, Copy)]
pub struct Limits<'a> {
    pub boundary: &'a Boundary,
    pub cancel: &'a AtomicBool,
    /// Entries changed (mtime or ctime, seconds since the epoch) after this are left in place:
    /// the rule that planned the removal (`older_than`, `active_within`) no longer holds for
    /// them. Directories whose last change was Guardian's own deletion do not count.
    pub unchanged_since: Option<i64>,
}

pub struct Remover<'a> {
    pub limits: Limits<'a>,
    pub stats: RemoveStats,
}

impl<'a> Remover<'a> {
    pub fn new(limits: Limits<'a>) -> Remover<'a> {
        Remover {
            limits,
            stats: RemoveStats::default(),
        }
    }

    /// Removes the entry `name` of `parent` (shown as `path`), stated before as `st`: a file
    /// or symlink is unlinked; a directory is emptied and removed. Returns whether the entry is
    /// gone. `parent` is recorded as changed by Guardian afterwards.
    pub fn remove_entry(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
        depth: usize,
    ) -> Result<bool, Interrupted> {
        let result = fsys::on_walk_pool(|parallel| {
            self.remove_entry_on(parent, name, path, depth, parallel)
        });
        own::record(parent);
        result
    }

    /// `remove_entry` on the current thread; `parallel` only on the walk pool.
    fn remove_entry_on(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
        depth: usize,
        parallel: bool,
    ) -> Result<bool, Interrupted> {
        if self.limits.cancel.load(Ordering::Relaxed) {
            return Err(Interrupted);
        }
        match self.stat_within(parent, name, path) {
            Stated::Gone => Ok(true),
            Stated::Kept => Ok(false),
            Stated::Entry(st) if st.kind == EntryKind::Dir => {
                self.remove_dir(parent, name, path, &st, depth, parallel)
            }
            Stated::Entry(st) => Ok(self.unlink(parent, name, path, &st, AtFlags::empty())),
        }
    }

    /// Stats `name` of `parent` without following symlinks and checks it is on the removal's
    /// filesystem and mount and unchanged since the plan's cut-off.
    fn stat_within(&mut self, parent: BorrowedFd<'_>, name: &CStr, path: &Path) -> Stated {
        let st = match fsys::stat_entry(parent, name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Stated::Gone,
            Err(e) => {
                self.error(path, "cannot stat", e);
                return Stated::Kept;
            }
        };
        if !self.limits.boundary.admits(parent, name, &st) {
            self.leave(path, "mount point or other filesystem: not crossed");
            return Stated::Kept;
        }
        // A directory's own times are checked once it is open, after its keep marker (the
        // more telling reason to leave it).
        if st.kind != EntryKind::Dir && self.too_fresh(&st) {
            self.leave(path, "changed after the plan's cut-off: left in place");
            return Stated::Kept;
        }
        Stated::Entry(st)
    }

    /// Whether `st` changed after the plan's cut-off (not by Guardian's own deletions).
    fn too_fresh(&self, st: &EntryStat) -> bool {
        self.limits
            .unchanged_since
            .is_some_and(|cutoff| st.changed() > cutoff && !own::is_own(st))
    }

    /// Removes the directory `name` of `parent`, stated as `st`: opens it with `O_NOFOLLOW`,
    /// re-identifies it by (dev, ino) and boundary, empties it and removes it.
    fn remove_dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
        st: &EntryStat,
        depth: usize,
        parallel: bool,
    ) -> Result<bool, Interrupted> {
        if self.limits.cancel.load(Ordering::Relaxed) {
            return Err(Interrupted);
        }
        if depth >= MAX_DEPTH {
            self.leave(path, "deeper than the removal limit");
            return Ok(false);
        }
        let fd = match fsys::open_child_dir(parent, name) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) if is_not_a_dir(&e) => {
                // Swapped for a symlink or file after the stat: remove the new entry itself,
                // never what it points to.
                return self.remove_swapped(parent, name, path);
            }
            Err(e) => return Ok(self.error(path, "cannot open directory", e)),
        };
        match fsys::stat_fd(fd.as_fd()) {
            Ok(opened)
                if opened.dev == st.dev
                    && opened.ino == st.ino
                    && self.limits.boundary.admits_open(fd.as_fd(), &opened) => {}
            Ok(_) => {
                self.leave(path, "changed between stat and open: left in place");
                return Ok(false);
            }
            Err(e) => return Ok(self.error(path, "cannot stat opened directory", e)),
        }
        let emptied = self.remove_contents(fd.as_fd(), st, path, depth, parallel)?;
        if !emptied {
            // It stays: what Guardian deleted in it is not activity.
            own::record(fd.as_fd());
            return Ok(false);
        }
        drop(fd);
        Ok(self.unlink(parent, name, path, st, AtFlags::REMOVEDIR))
    }

    /// Removes everything inside the open directory `dir`. Returns whether it is now empty.
    ///
    /// Non-directories are unlinked here, in listing order; the subdirectories are then removed
    /// (in parallel when `parallel`), each with its own `Remover` under the same limits, their
    /// stats merged back in listing order. Nothing is removed from a directory holding a keep
    /// marker.
    fn remove_contents(
        &mut self,
        dir: BorrowedFd<'_>,
        st: &EntryStat,
        path: &Path,
        depth: usize,
        parallel: bool,
    ) -> Result<bool, Interrupted> {
        let listed = match fsys::list_dir(dir) {
            Ok(l) => l,
            Err(e) => return Ok(self.error(path, "cannot read directory", e)),
        };
        if listed.iter().any(|l| l.os_name() == KEEP_MARKER) {
            self.leave(path, "contains .guardian-keep");
            return Ok(false);
        }
        if self.too_fresh(st) {
            self.leave(path, "changed after the plan's cut-off: left in place");
            return Ok(false);
        }
        let mut emptied = true;
        let mut subdirs = Vec::new();
        for entry in &listed {
            if self.limits.cancel.load(Ordering::Relaxed) {
                return Err(Interrupted);
            }
            let child = path.join(entry.os_name());
            match self.stat_within(dir, &entry.name, &child) {
                Stated::Gone => {}
                Stated::Kept => emptied = false,
                Stated::Entry(st) if st.kind == EntryKind::Dir => subdirs.push((entry, child, st)),
                Stated::Entry(st) => {
                    emptied &= self.unlink(dir, &entry.name, &child, &st, AtFlags::empty());
                }
            }
        }
        let limits = self.limits;
        let remove_subdir = |(entry, child, st): (&fsys::Listed, PathBuf, EntryStat)| {
            let mut sub = Remover::new(limits);
            let gone = sub.remove_dir(dir, &entry.name, &child, &st, depth + 1, parallel);
            (gone, sub.stats)
        };
        let removed: Vec<_> = if parallel {
            subdirs.into_par_iter().map(remove_subdir).collect()
        } else {
            subdirs.into_iter().map(remove_subdir).collect()
        };
        let mut interrupted = false;
        for (gone, stats) in removed {
            self.stats.merge(stats);
            match gone {
                Ok(gone) => emptied &= gone,
                Err(Interrupted) => interrupted = true,
            }
        }
        if interrupted {
            return Err(Interrupted);
        }
        Ok(emptied)
    }

    fn remove_swapped(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
    ) -> Result<bool, Interrupted> {
        match fsys::stat_entry(parent, name) {
            Ok(st)
                if st.kind != EntryKind::Dir && self.limits.boundary.admits(parent, name, &st) =>
            {
                Ok(self.unlink(parent, name, path, &st, AtFlags::empty()))
            }
            Ok(_) => {
                self.leave(path, "changed during removal: left in place");
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Ok(self.error(path, "cannot stat", e)),
        }
    }

    fn unlink(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
        st: &EntryStat,
        flags: AtFlags,
    ) -> bool {
        match rustix::fs::unlinkat(parent, name, flags) {
            Ok(()) => {
                self.stats.entries_removed += 1;
                if st.nlink <= 1 || st.kind == EntryKind::Dir {
                    self.stats.bytes_unlinked += st.allocated;
                }
                true
            }
            Err(e) if e == rustix::io::Errno::NOENT => true,
            Err(e) => self.error(path, "cannot remove", e.into()),
        }
    }

    fn leave(&mut self, path: &Path, why: &str) {
        self.stats
            .left_in_place
            .push((path.to_path_buf(), why.to_string()));
    }

    fn error(&mut self, path: &Path, what: &str, e: io::Error) -> bool {
        self.stats
            .errors
            .push((path.to_path_buf(), format!("{what}: {e}")));
        false
    }
}

fn is_not_a_dir(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::OwnedFd;
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::symlink;

    /// The open parent dir and the boundary of its filesystem.
    fn open_parent(dir: &Path) -> (OwnedFd, Boundary) {
        let fd = fsys::open_dir_path(dir).unwrap();
        let boundary = Boundary::of(fd.as_fd(), dir).unwrap();
        (fd, boundary)
    }

    fn remover<'a>(boundary: &'a Boundary, cancel: &'a AtomicBool) -> Remover<'a> {
        Remover::new(Limits {
            boundary,
            cancel,
            unchanged_since: None,
        })
    }

    /// `root/d/d/d…` `levels` deep (made relative to fds: the path gets too long for paths).
    fn chain(root: &Path, levels: usize) {
        std::fs::create_dir(root).unwrap();
        let mut fd = fsys::open_dir_path(root).unwrap();
        for _ in 0..levels {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                .unwrap();
        }
    }

    #[test]
    fn removes_a_wide_tree_in_parallel_but_keeps_marked_dirs_and_never_follows_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), b"x").unwrap();
        let tree = tmp.path().join("tree");
        let mut entries = 0;
        for i in 0..24 {
            let sub = tree.join(format!("pkg{i}/lib/deeper"));
            std::fs::create_dir_all(&sub).unwrap();
            entries += 3;
            for j in 0..5 {
                std::fs::write(sub.join(format!("f{j}")), vec![1u8; 5000]).unwrap();
                std::fs::write(tree.join(format!("pkg{i}/g{j}")), b"y").unwrap();
                entries += 2;
            }
            symlink(&outside, tree.join(format!("pkg{i}/lib/out"))).unwrap();
            entries += 1;
        }
        std::fs::hard_link(tree.join("pkg0/g0"), tree.join("pkg1/hard")).unwrap();
        entries += 1;
        std::fs::write(tree.join("pkg7/lib/.guardian-keep"), b"").unwrap();
        entries += 1;
        let (parent, boundary) = open_parent(tmp.path());
        let cancel = AtomicBool::new(false);
        let mut r = remover(&boundary, &cancel);
        let gone = r.remove_entry(parent.as_fd(), c"tree", &tree, 1).unwrap();
        assert!(!gone, "pkg7/lib is kept, so the tree stays");
        assert!(tree.join("pkg7/lib/deeper/f0").exists());
        assert!(tree.join("pkg7/lib/.guardian-keep").exists());
        assert!(!tree.join("pkg7/g0").exists(), "siblings of a kept dir go");
        for i in (0..24).filter(|i| *i != 7) {
            assert!(!tree.join(format!("pkg{i}")).exists(), "pkg{i} removed");
        }
        assert!(outside.join("precious").exists());
        assert_eq!(
            r.stats.left_in_place,
            vec![(tree.join("pkg7/lib"), "contains .guardian-keep".to_string())]
        );
        assert!(r.stats.errors.is_empty(), "{:?}", r.stats.errors);
        // Kept: pkg7/lib, `deeper` and its 5 files, the link and the marker, and pkg7 above
        // them (the tree's root, also kept, is not in `entries`).
        assert_eq!(r.stats.entries_removed, entries - 9 - 1);
    }

    #[test]
    fn cancelled_removal_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        let (parent, boundary) = open_parent(tmp.path());
        let cancel = AtomicBool::new(true);
        let mut r = remover(&boundary, &cancel);
        assert!(r.remove_entry(parent.as_fd(), c"tree", &tree, 1).is_err());
        assert!(tree.join("a/b").exists());
    }

    #[test]
    fn deep_trees_are_removed_to_the_limit_without_overflowing_a_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let (parent, boundary) = open_parent(tmp.path());
        let cancel = AtomicBool::new(false);

        let within = tmp.path().join("within");
        chain(&within, MAX_DEPTH - 8);
        let mut r = remover(&boundary, &cancel);
        assert!(r
            .remove_entry(parent.as_fd(), c"within", &within, 1)
            .unwrap());
        assert!(!within.exists());
        assert_eq!(r.stats.entries_removed, (MAX_DEPTH - 8 + 1) as u64);

        let beyond = tmp.path().join("beyond");
        chain(&beyond, MAX_DEPTH + 8);
        let mut r = remover(&boundary, &cancel);
        assert!(!r
            .remove_entry(parent.as_fd(), c"beyond", &beyond, 1)
            .unwrap());
        assert_eq!(r.stats.left_in_place.len(), 1);
        assert_eq!(r.stats.left_in_place[0].1, "deeper than the removal limit");
        assert!(beyond.exists());
        // What the limit left, removed from 16 levels down (where it is within the limit), so
        // the tempdir's own removal does not need that depth.
        let mut fd = fsys::open_dir_path(&beyond).unwrap();
        for _ in 0..16 {
            fd = fsys::open_child_dir(&fd, c"d").unwrap();
        }
        let mut r = remover(&boundary, &cancel);
        assert!(r.remove_entry(fd.as_fd(), c"d", &beyond, 1).unwrap());
    }
}
