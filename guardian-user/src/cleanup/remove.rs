//! Safe recursive removal relative to directory fds: every child is opened with `O_NOFOLLOW`,
//! checked to be on the same device and mount as the root of the removal, and re-identified by
//! (dev, ino) after opening, so a directory swapped for a symlink is unlinked as a symlink and
//! never followed. Mount points and kept dirs (`.guardian-keep`) are left in place.

use crate::fsys::{self, EntryKind, EntryStat};
use crate::scan::KEEP_MARKER;
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::AtFlags;
use std::ffi::CStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Deepest level removed; deeper trees are left and reported.
const MAX_DEPTH: usize = 4096;

/// The filesystem a removal must stay on.
#[derive(Clone, Copy, Debug)]
pub struct Boundary {
    pub dev: u64,
    pub mnt_id: Option<u64>,
}

impl Boundary {
    pub fn of(st: &EntryStat) -> Boundary {
        Boundary {
            dev: st.dev,
            mnt_id: st.mnt_id,
        }
    }

    pub fn contains(&self, st: &EntryStat) -> bool {
        st.dev == self.dev && (self.mnt_id.is_none() || st.mnt_id == self.mnt_id)
    }
}

/// What a removal did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveStats {
    pub entries_removed: u64,
    /// Allocated bytes of inodes whose last link was removed.
    pub bytes_unlinked: u64,
    /// Things left in place on purpose: mount points, kept dirs, swapped entries.
    pub left_in_place: Vec<(PathBuf, String)>,
    /// Things that could not be removed.
    pub errors: Vec<(PathBuf, String)>,
}

/// The removal was stopped by a shutdown request.
#[derive(Debug)]
pub struct Interrupted;

pub struct Remover<'a> {
    pub boundary: Boundary,
    pub cancel: &'a AtomicBool,
    pub stats: RemoveStats,
}

impl Remover<'_> {
    /// Removes the entry `name` of `parent` (shown as `path`): a file or symlink is unlinked; a
    /// directory is emptied and removed. Returns whether the entry is gone.
    pub fn remove_entry(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
        depth: usize,
    ) -> Result<bool, Interrupted> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Interrupted);
        }
        let st = match fsys::stat_entry(parent, name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Ok(self.error(path, "cannot stat", e)),
        };
        if !self.boundary.contains(&st) {
            self.leave(path, "mount point or other filesystem: not crossed");
            return Ok(false);
        }
        if st.kind != EntryKind::Dir {
            return Ok(self.unlink(parent, name, path, &st, AtFlags::empty()));
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
                    && self.boundary.contains(&opened) => {}
            Ok(_) => {
                self.leave(path, "changed between stat and open: left in place");
                return Ok(false);
            }
            Err(e) => return Ok(self.error(path, "cannot stat opened directory", e)),
        }
        if !self.remove_contents(fd.as_fd(), path, depth)? {
            return Ok(false);
        }
        drop(fd);
        Ok(self.unlink(parent, name, path, &st, AtFlags::REMOVEDIR))
    }

    /// Removes everything inside the open directory `dir`. Returns whether it is now empty.
    pub fn remove_contents(
        &mut self,
        dir: BorrowedFd<'_>,
        path: &Path,
        depth: usize,
    ) -> Result<bool, Interrupted> {
        let listed = match fsys::list_dir(dir) {
            Ok(l) => l,
            Err(e) => return Ok(self.error(path, "cannot read directory", e)),
        };
        if listed.iter().any(|l| l.os_name() == KEEP_MARKER) {
            self.leave(path, "contains .guardian-keep");
            return Ok(false);
        }
        let mut emptied = true;
        for entry in &listed {
            let child = path.join(entry.os_name());
            emptied &= self.remove_entry(dir, &entry.name, &child, depth + 1)?;
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
            Ok(st) if st.kind != EntryKind::Dir && self.boundary.contains(&st) => {
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
