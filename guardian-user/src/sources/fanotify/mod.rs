//! The fanotify source: one `FAN_MARK_FILESYSTEM` mark per filesystem that holds a project,
//! events reported as (parent directory file handle, name) with `FAN_REPORT_DFID_NAME`. fanotify
//! says *which* entries changed, not by how many bytes, so each changed name is re-`stat`ed and
//! compared with a table of tracked sizes: growth of a project is the change of the sum of the
//! tracked sizes of its files.
//!
//! Size semantics (shared with the inotify source): **apparent size** (`st_size`) of regular
//! files. It matches the bytes written by appending writers exactly and does not lag behind
//! delayed allocation; it over-counts sparse files and under-counts what metadata and partial
//! blocks cost. `statvfs` stays the ground truth for free space; the scanner (`du` semantics,
//! allocated bytes) says what deleting a tree frees. Directories, symlinks and special files are
//! not counted; hard links are counted once (files are keyed by `(st_dev, st_ino)`).
//!
//! Threading (shared with the inotify source): a private worker thread owns the kernel queue and
//! the size table (`track/`). `drain()` never waits for event processing; `watch()` waits for the
//! worker to take the new baseline.
//!
//! Lost events (a queue overflow, a directory that cannot be opened for a reason other than being
//! gone) make the size table re-walk the projects concerned at a CPU budget, coalesced; every
//! project is also re-walked periodically, so a count cannot drift for long (`track/rewalk.rs`).
//!
//! Requires `CAP_SYS_ADMIN` and Linux ≥ 5.9 (`FAN_REPORT_DFID_NAME`); filesystems must support
//! file handles and report an fsid (ext4, xfs, btrfs, tmpfs ≥ 6.7, …).

mod events;

use super::track::{key_of, At, Backend, Key, NoHooks, Tree, Worker};
use super::{ProjectDir, Sample, SourceError};
use crate::fsys;
use events::{parse_events, Item};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

const NAME: &str = "fanotify";

/// What every filesystem mark asks for. (`FAN_Q_OVERFLOW` is not a mark bit: the kernel always
/// queues it, and rejects it in a mark mask with `EINVAL`.)
const MARK_MASK: u64 = libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_ONDIR;

/// Read buffer for the event queue.
const READ_BUFFER: usize = 256 * 1024;

/// Directory handles remembered (handle → `(dev, ino)`); the cache is emptied when it is full.
const HANDLE_CACHE: usize = 1 << 16;

/// Opens the whole-filesystem write source through fanotify: creates the fanotify group and
/// checks that it may place filesystem marks.
/// `Unavailable` with the kernel's reason when not: `EPERM` without `CAP_SYS_ADMIN` (since
/// Linux 5.13 `fanotify_init` itself succeeds unprivileged; the mark is what is refused),
/// `EINVAL` on kernels without `FAN_REPORT_DFID_NAME` or `FAN_MARK_FILESYSTEM`. The marks
/// are placed by [`super::Source::watch`], which reports a filesystem that refuses one (no file
/// handles, no fsid) the same way.
pub fn open() -> Result<Worker, SourceError> {
    open_for(&[])
}

/// [`open`], then checks that the filesystem of each of `paths` (or of its nearest existing
/// ancestor) takes a filesystem mark: `Unavailable` naming the path and the kernel's reason when
/// one does not (no fsid, no file handles, too many marks), so an explicit `source = "fanotify"`
/// that cannot watch the workspaces is refused at start.
pub fn open_for(paths: &[PathBuf]) -> Result<Worker, SourceError> {
    let flags =
        libc::FAN_CLASS_NOTIF | libc::FAN_REPORT_DFID_NAME | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
    let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE) as libc::c_uint;
    // SAFETY: plain syscall; the result is checked and owned below.
    let fd = unsafe { libc::fanotify_init(flags, event_flags) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return Err(unavailable(format!(
            "fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME): {err}{}",
            init_hint(&err)
        )));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    probe_filesystem_marks(fd.as_fd())?;
    for path in paths {
        probe_mark_on(fd.as_fd(), fsys::nearest_existing(path))?;
    }
    let backend = Fan {
        fd,
        marks: Vec::new(),
        tree: Tree::default(),
        handles: HashMap::new(),
        buf: vec![0; READ_BUFFER],
    };
    Worker::spawn(NAME, backend)
}

fn unavailable(reason: String) -> SourceError {
    SourceError::Unavailable {
        source_name: NAME,
        reason,
    }
}

/// Since Linux 5.13 an unprivileged `fanotify_init` with FID reporting succeeds, and only the
/// filesystem mark is refused. Asks now, without side effects: removing a filesystem mark that
/// does not exist fails with `ENOENT` after the privilege and flag checks (`EPERM`, `EINVAL`).
/// Errors about the root filesystem itself (no fsid, no file handles) are left to `watch`,
/// which marks the filesystems the projects are on.
fn probe_filesystem_marks(group: BorrowedFd<'_>) -> Result<(), SourceError> {
    // SAFETY: plain syscall with a NUL-terminated path.
    let rc = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_REMOVE | libc::FAN_MARK_FILESYSTEM,
            MARK_MASK,
            libc::AT_FDCWD,
            c"/".as_ptr(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EINVAL) | Some(libc::ENOSYS) => Err(unavailable(format!(
            "fanotify_mark(FAN_MARK_FILESYSTEM): {err}{}",
            mark_hint(&err)
        ))),
        _ => Ok(()),
    }
}

/// Places and removes a filesystem mark for the filesystem holding `path`.
fn probe_mark_on(group: BorrowedFd<'_>, path: &std::path::Path) -> Result<(), SourceError> {
    let dir = fsys::open_dir_path(path).map_err(|e| {
        unavailable(format!(
            "cannot open {} to mark its filesystem: {e}",
            crate::textpath::shown(path)
        ))
    })?;
    for op in [libc::FAN_MARK_ADD, libc::FAN_MARK_REMOVE] {
        // SAFETY: a NULL pathname marks the object `dir` refers to.
        let rc = unsafe {
            libc::fanotify_mark(
                group.as_raw_fd(),
                op | libc::FAN_MARK_FILESYSTEM,
                MARK_MASK,
                dir.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if rc < 0 && op == libc::FAN_MARK_ADD {
            let err = io::Error::last_os_error();
            return Err(unavailable(format!(
                "fanotify_mark(FAN_MARK_FILESYSTEM) on {}: {err}{}",
                crate::textpath::shown(path),
                mark_hint(&err)
            )));
        }
    }
    Ok(())
}

fn init_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM) => " (needs CAP_SYS_ADMIN)",
        Some(libc::EINVAL) => " (kernel older than 5.9 or without FAN_REPORT_DFID_NAME)",
        Some(libc::ENOSYS) => " (kernel built without fanotify)",
        Some(libc::EMFILE) => " (too many fanotify groups: fs.fanotify.max_user_groups)",
        _ => "",
    }
}

fn mark_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM) => " (needs CAP_SYS_ADMIN)",
        Some(libc::EINVAL) => " (kernel without FAN_MARK_FILESYSTEM or these event types)",
        Some(libc::ENODEV) => " (filesystem reports no fsid)",
        Some(libc::EOPNOTSUPP) => " (filesystem does not support file handles)",
        Some(libc::EXDEV) => " (subvolume or idmapped mount: fsid differs from the filesystem's)",
        Some(libc::ENOSPC) => " (too many marks: fs.fanotify.max_user_marks)",
        _ => "",
    }
}

/// One marked filesystem.
struct Mark {
    dev: u64,
    fsid: [u8; 8],
    /// A directory on the filesystem (the first project seen on it): the mark's object and the
    /// mount fd for `open_by_handle_at`.
    mount_fd: OwnedFd,
    /// Mount id of `mount_fd`, the mount every decoded directory is opened through.
    mnt_id: Option<u64>,
    path: PathBuf,
}

/// The worker's state.
struct Fan {
    fd: OwnedFd,
    marks: Vec<Mark>,
    tree: Tree,
    /// fsid + handle type + handle bytes → `(dev, ino)` of the directory.
    handles: HashMap<Vec<u8>, Key>,
    buf: Vec<u8>,
}

impl Fan {
    fn mark(&self, op: libc::c_uint, dir: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: a NULL pathname marks the object `dir` refers to.
        let rc = unsafe {
            libc::fanotify_mark(
                self.fd.as_raw_fd(),
                op | libc::FAN_MARK_FILESYSTEM,
                MARK_MASK,
                dir.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Marks every filesystem holding a project that is not marked yet and unmarks those no
    /// project lives on any more.
    fn update_marks(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        for project in projects {
            if self.marks.iter().any(|m| m.dev == project.dev) {
                continue;
            }
            let fd = match fsys::open_dir_path(&project.path) {
                Ok(fd) => fd,
                // Reported by the baseline; nothing to mark for it now.
                Err(_) => continue,
            };
            let (dev, mnt_id) = match fsys::stat_fd(&fd) {
                Ok(st) => (st.dev, st.mnt_id),
                Err(_) => continue,
            };
            if self.marks.iter().any(|m| m.dev == dev) {
                continue;
            }
            let st = rustix::fs::fstatfs(&fd).map_err(|e| {
                unavailable(format!(
                    "fstatfs {}: {e}",
                    crate::textpath::shown(&project.path)
                ))
            })?;
            // SAFETY: `fsid_t` is two C ints, eight plain bytes.
            let fsid: [u8; 8] = unsafe { std::mem::transmute(st.f_fsid) };
            if let Err(err) = self.mark(libc::FAN_MARK_ADD, fd.as_fd()) {
                return Err(unavailable(format!(
                    "fanotify_mark(FAN_MARK_FILESYSTEM) on {}: {err}{}",
                    crate::textpath::shown(&project.path),
                    mark_hint(&err)
                )));
            }
            tracing::debug!(path = %crate::textpath::shown(&project.path), dev, "fanotify: filesystem marked");
            self.marks.push(Mark {
                dev,
                fsid,
                mnt_id,
                mount_fd: fd,
                path: project.path.to_path_buf(),
            });
        }
        let wanted: HashSet<u64> = projects.iter().map(|p| p.dev).collect();
        let (keep, gone): (Vec<Mark>, Vec<Mark>) = std::mem::take(&mut self.marks)
            .into_iter()
            .partition(|m| wanted.contains(&m.dev));
        self.marks = keep;
        for mark in gone {
            if let Err(err) = self.mark(libc::FAN_MARK_REMOVE, mark.mount_fd.as_fd()) {
                tracing::debug!(path = %crate::textpath::shown(&mark.path), %err, "fanotify: unmark failed");
            }
        }
        Ok(())
    }

    /// Applies one batch of (directory handle, name) changes, in queue order. A directory that
    /// cannot be opened for a reason other than being gone (out of descriptors, …) means lost
    /// events: its project, or every project when the directory is not known, is re-walked.
    fn apply(&mut self, items: Vec<Item>) {
        // A listing kept from before this batch may be older than its events.
        self.tree.end_batch();
        let mut last: Option<(Key, OwnedFd)> = None;
        for item in items {
            let Some(mark) = self.marks.iter().find(|m| m.fsid == item.fsid) else {
                continue;
            };
            let cache_key = item.cache_key();
            let mut opened = None;
            let key = match self.handles.get(&cache_key) {
                Some(key) => *key,
                None => {
                    let fd =
                        match open_handle(mark.mount_fd.as_fd(), item.handle_type, &item.handle) {
                            Ok(fd) => fd,
                            Err(e) if gone(&e) => continue,
                            Err(_) => {
                                self.tree.overflowed();
                                continue;
                            }
                        };
                    let Ok(st) = fsys::stat_fd(&fd) else {
                        continue;
                    };
                    if self.handles.len() >= HANDLE_CACHE {
                        self.handles.clear();
                    }
                    self.handles.insert(cache_key, key_of(&st));
                    opened = Some(fd);
                    key_of(&st)
                }
            };
            if !self.tree.has_dir(key) {
                continue;
            }
            let fd = match (opened, last.take()) {
                (Some(fd), _) => fd,
                (None, Some((k, fd))) if k == key => fd,
                (None, _) => {
                    match open_handle(mark.mount_fd.as_fd(), item.handle_type, &item.handle) {
                        Ok(fd) => fd,
                        Err(e) if gone(&e) => continue,
                        Err(_) => {
                            self.tree.lost(key);
                            continue;
                        }
                    }
                }
            };
            let at = At {
                fd: fd.as_fd(),
                mnt: mark.mnt_id,
            };
            if !self
                .tree
                .reconcile(key, at, &item.name, item.change(), &mut NoHooks)
            {
                self.tree.lost(key);
            }
            last = Some((key, fd));
        }
        self.tree.end_batch();
    }
}

/// Whether opening a handle failed because the directory no longer exists.
fn gone(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ESTALE) | Some(libc::ENOENT) | Some(libc::ENOTDIR)
    )
}

impl Backend for Fan {
    fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        self.update_marks(projects)?;
        self.tree.set_projects(projects, &mut NoHooks);
        Ok(())
    }

    fn pump(&mut self) -> io::Result<()> {
        let mut overflow = false;
        loop {
            let n = match rustix::io::read(&self.fd, &mut self.buf[..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let parsed = parse_events(&self.buf[..n]).map_err(io::Error::other)?;
            overflow |= parsed.overflow;
            self.apply(parsed.items);
        }
        if overflow {
            self.tree.overflowed();
        }
        Ok(())
    }

    fn busy(&self) -> bool {
        self.tree.walks_pending()
    }

    /// Re-walks only, which keep their own slice (`Tree::rewalk_due`).
    fn tick(&mut self, _slice: Duration) {
        self.tree.rewalk_due(NAME, &mut NoHooks);
    }

    fn take(&mut self) -> Sample {
        self.tree.finalize(&mut NoHooks);
        self.tree.take_sample()
    }
}

/// Opens the directory a file handle names, as an `O_PATH` descriptor (enough for `*at` calls).
fn open_handle(mount_fd: BorrowedFd<'_>, handle_type: i32, handle: &[u8]) -> io::Result<OwnedFd> {
    // `struct file_handle`: u32 handle_bytes, i32 handle_type, then the bytes; u32-aligned.
    let mut raw = vec![0u32; 2 + handle.len().div_ceil(4)];
    raw[0] = handle.len() as u32;
    raw[1] = handle_type as u32;
    // SAFETY: `raw` has room for `handle.len()` bytes after the two header words.
    unsafe {
        std::ptr::copy_nonoverlapping(
            handle.as_ptr(),
            raw.as_mut_ptr().add(2).cast::<u8>(),
            handle.len(),
        );
    }
    // SAFETY: `raw` is a valid, aligned `struct file_handle`; the result is checked.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            raw.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests;
