//! Walking directories into the size table: the baseline of a new directory or project, the
//! re-walks `rewalk.rs` schedules (after lost events, and periodically at a CPU budget so a
//! count that drifted cannot stay wrong), and polling directories that have no watch. Reads
//! only.

use super::dirs::Full;
use super::rewalk::{Reason, PERIODIC_BUDGET, REPAIR_BUDGET};
use super::tree::{At, Hooks, Key, Place, Refused, Tree, Watch, UNWATCHED};
use super::unwatched::{FsStamp, Stamp, SHALLOW, SHARE_PER_TICK, UNWATCHED_BURST};
use crate::fsys::{self, EntryKind};
use crate::scan::MAX_DEPTH;
use crate::textpath;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most time one call of [`Tree::rewalk_due`] spends walking before it yields to events.
const SLICE: Duration = Duration::from_millis(200);

/// What `statvfs` says of device `dev`, read through the directory `path` on it: `(st_dev,
/// free bytes, free inodes)`, which a write that allocates or frees a block, and a file made
/// or removed, moves (`unwatched::Stamp`). `None` when it cannot be read, when `path` is not on
/// `dev` (any more), or when the filesystem keeps no block or inode count for a write to move
/// (btrfs has no inode count, an unbounded tmpfs neither).
pub(super) fn fs_stamp(path: &Path, dev: u64) -> Option<FsStamp> {
    let fd = fsys::open_dir_path(path).ok()?;
    let space = fsys::fs_space_fd(&fd).ok()?;
    (fsys::stat_fd(&fd).ok()?.dev == dev && space.total_bytes != 0 && space.total_inodes != 0)
        .then_some((dev, space.free_bytes, space.avail_inodes))
}

/// The stamp of the filesystems `devs` (in order: those holding unwatched directories),
/// `of_dev` giving each device's; `None` when one is `None`.
pub(super) fn stamp_of(devs: &[u64], of_dev: impl FnMut(u64) -> Option<FsStamp>) -> Option<Stamp> {
    devs.iter().copied().map(of_dev).collect()
}

struct Frame {
    fd: OwnedFd,
    key: Key,
    entries: Vec<fsys::Listed>,
}

impl Tree {
    /// Adds a new directory (open as `fd`, through mount `mnt`) and everything below it. A
    /// directory below it that the tree knows elsewhere is taken from there and walked afresh:
    /// a listing cannot tell a move from a new directory under a reused inode number.
    pub(super) fn scan_new(
        &mut self,
        fd: OwnedFd,
        mnt: Option<u64>,
        place: Place,
        hooks: &mut dyn Hooks,
    ) {
        let project = place.project;
        let mut stack = Vec::new();
        self.enter(&mut stack, fd, place, hooks);
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else {
                break;
            };
            let Some(entry) = top.entries.pop() else {
                if let Some(done) = stack.pop() {
                    let at = At {
                        fd: done.fd.as_fd(),
                        mnt,
                    };
                    self.settle_dir(done.key, at);
                }
                continue;
            };
            let dir = top.key;
            let st = match fsys::stat_entry(top.fd.as_fd(), &entry.name) {
                Ok(st) if self.accepts(project, &st, mnt) => st,
                _ => continue,
            };
            let key = super::tree::key_of(&st);
            if st.kind == EntryKind::File {
                let hash = self.name_hash(&entry.name);
                self.link_file(dir, hash, &st);
                continue;
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            if self.dirs.contains(key) {
                if stack.iter().any(|f| f.key == key) {
                    continue; // stale state naming an ancestor: never loop
                }
                self.forget_dir(key, hooks);
            }
            let Some(top) = stack.last() else {
                break;
            };
            let Ok(child) = fsys::open_child_dir(top.fd.as_fd(), &entry.name) else {
                continue;
            };
            if !matches!(fsys::stat_fd(&child), Ok(s) if super::tree::key_of(&s) == key) {
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
        if let Err(full) = self.dirs.insert(key, parent, &name, project) {
            self.note(
                "table-full",
                format!(
                    "a directory of project {project} is not tracked: {}",
                    match full {
                        Full::Name => "its name is longer than 255 bytes",
                        Full::Table => "the size table is full",
                    }
                ),
            );
            return;
        }
        if let Some(p) = parent {
            self.list_dir_entry(p, &name, key);
        }
        // Watch first, then list: whatever appears in between is in the listing or in an
        // event (notify#124: files written into brand-new subdirectories).
        let watch = self.watch_dir(key, fd.as_fd(), hooks);
        self.dirs.set_watch(key, watch);
        let entries = fsys::list_dir(&fd).unwrap_or_default();
        if let Some(mut list) = self.dirs.entries_mut(key) {
            list.reserve(entries.len());
        }
        stack.push(Frame { fd, key, entries });
    }

    /// Path of a tracked directory, from its project root; `None` for orphans.
    pub(crate) fn path_of(&self, key: Key) -> Option<PathBuf> {
        let mut names: Vec<CString> = Vec::new();
        let mut k = key;
        for _ in 0..MAX_DEPTH {
            if let Some(root) = self.root_keys.get(&k).and_then(|id| self.roots.get(id)) {
                let mut path = root.project.path.to_path_buf();
                for name in names.iter().rev() {
                    path.push(fsys::name_to_os(name));
                }
                return Some(path);
            }
            names.push(CString::new(self.dirs.name(k)?).ok()?);
            k = self.dirs.parent(k)?;
        }
        None
    }

    /// Opens a tracked directory by its path and checks it is still that directory; with
    /// the mount id it was reached through.
    pub(crate) fn open_dir(&self, key: Key) -> Option<(OwnedFd, Option<u64>)> {
        let path = self.path_of(key)?;
        let fd = fsys::open_dir_path(&path).ok()?;
        let st = fsys::stat_fd(&fd).ok()?;
        (super::tree::key_of(&st) == key).then_some((fd, st.mnt_id))
    }

    /// Asks the source to watch tracked directory `key` (open as `dir`); [`UNWATCHED`] when it
    /// cannot. A directory near its project root ([`SHALLOW`]) refused for want of watches
    /// waits for [`Tree::share_watches`] to take it one of a deeper directory's.
    fn watch_dir(&mut self, key: Key, dir: BorrowedFd<'_>, hooks: &mut dyn Hooks) -> Watch {
        match hooks.dir_added(key, dir) {
            Ok(watch) => {
                if watch >= 0 {
                    self.watch_share.given();
                }
                watch
            }
            Err(Refused::OutOfWatches) => {
                if self.dirs.depth(key).is_some_and(|d| d <= SHALLOW) {
                    self.watch_share.want(key);
                }
                UNWATCHED
            }
            Err(Refused::Other) => UNWATCHED,
        }
    }

    /// Gives the shallow directories refused a watch for want of one (the most recent first, at
    /// most [`SHARE_PER_TICK`] and for at most [`UNWATCHED_BURST`] a tick, or `slice` if
    /// shorter (`Backend::tick`): while they wait the worker ticks every 100 ms, so this costs
    /// up to 10% of a core for as long — on the 5M tree ~3 s of CPU in the first two minutes)
    /// the watch of a directory deeper than [`SHALLOW`], which is polled from then on; both are
    /// read again (what happened in the one while it was only polled, and in the other since its
    /// last batch of events). Between batches of events only: every watch dropped queues an
    /// event.
    pub(crate) fn share_watches(&mut self, hooks: &mut dyn Hooks, slice: Duration) {
        let began = Instant::now();
        let slice = slice.min(UNWATCHED_BURST);
        for _ in 0..SHARE_PER_TICK {
            if began.elapsed() >= slice {
                return;
            }
            let Some(key) = self.watch_share.wanting.pop() else {
                return;
            };
            // Since watched, gone, or (its inode number reused) another directory deeper down.
            if self.dirs.watch(key) != Some(UNWATCHED)
                || self.dirs.depth(key).is_none_or(|d| d > SHALLOW)
            {
                continue;
            }
            let Some((fd, mnt)) = self.open_dir(key) else {
                continue;
            };
            let Some((deeper, watch)) = self
                .dirs
                .watched_deeper_than(SHALLOW, &mut self.watch_share.cursor)
            else {
                self.watch_share.none_left();
                return;
            };
            hooks.dir_dropped(deeper, watch);
            self.dirs.set_watch(deeper, UNWATCHED);
            self.watch_share.taken += 1;
            // The shallow one first: reading the deep one again may meet a new directory,
            // which would take the freed watch.
            let given = hooks.dir_added(key, fd.as_fd());
            if let Ok(watch) = given {
                self.dirs.set_watch(key, watch);
                let at = At {
                    fd: fd.as_fd(),
                    mnt,
                };
                self.reconcile_all(key, at, hooks);
            }
            // Its events not read yet went with its watch: read it again now, so that the
            // polling rounds need not start over (on the 5M tree a round takes ~16 min).
            if let Some((fd, mnt)) = self.open_dir(deeper) {
                let at = At {
                    fd: fd.as_fd(),
                    mnt,
                };
                self.reconcile_all(deeper, at, hooks);
            }
            if given.is_err() {
                // Refused again (another inotify user took the watch first): it stays polled,
                // and no more deep directories give theirs away this tick.
                return;
            }
        }
        if self.watch_share.wanting.is_empty() {
            self.watch_share.wanting = Vec::new();
        }
    }

    /// Whether a polling round is under way or shallow directories wait for a watch: then the
    /// worker ticks every batch, not every second, so that the work is done in short slices.
    pub(crate) fn unwatched_busy(&self) -> bool {
        self.unwatched_pace.cursor.is_some() || !self.watch_share.wanting.is_empty()
    }

    /// Marks a tracked directory as unwatched (its watch went away: what happened in it since
    /// is unknown, so the next polling round runs even on a filesystem that looks unchanged).
    pub(crate) fn mark_unwatched(&mut self, key: Key) {
        if self.dirs.contains(key) {
            self.dirs.set_watch(key, UNWATCHED);
            self.unwatched_pace.unsettle();
        }
    }

    /// Polls unwatched directories in turn, as many as the budget allows this tick
    /// (`unwatched.rs`): retries each one's watch, then re-reads all its entries. Between
    /// rounds, none starts while their filesystems are as the last whole round found them.
    pub(crate) fn poll_unwatched(&mut self, hooks: &mut dyn Hooks, slice: Duration) {
        if self.dirs.unwatched() == 0 {
            self.unwatched_pace.cursor = None;
            return;
        }
        let stamp = if self.unwatched_pace.between_rounds() {
            let stamp = self.unwatched_stamp();
            if self.unwatched_pace.settled(stamp.as_ref()) {
                return;
            }
            Some(stamp)
        } else {
            None
        };
        let allowance = self.unwatched_pace.allowance(Instant::now()).min(slice);
        if allowance.is_zero() {
            return;
        }
        if let Some(stamp) = stamp {
            self.unwatched_pace.begin(stamp);
        }
        let began = Instant::now();
        loop {
            let Some((at, key)) = self.dirs.next_unwatched(self.unwatched_pace.cursor) else {
                self.unwatched_pace.round_done();
                break;
            };
            self.unwatched_pace.cursor = Some(at);
            self.poll_one_unwatched(key, hooks);
            if began.elapsed() >= allowance {
                break;
            }
        }
        self.unwatched_pace.spent(began.elapsed());
    }

    /// The stamps of the filesystems holding unwatched directories (`unwatched::Stamp`), read
    /// through a project root on each; `None` when one cannot be read, so that rounds never
    /// stop there.
    fn unwatched_stamp(&self) -> Option<Stamp> {
        stamp_of(&self.dirs.unwatched_devs(), |dev| {
            let root = self.roots.values().find(|r| r.key.0 == dev)?;
            fs_stamp(&root.project.path, dev)
        })
    }

    fn poll_one_unwatched(&mut self, key: Key, hooks: &mut dyn Hooks) {
        let Some((fd, mnt)) = self.open_dir(key) else {
            return;
        };
        let watch = self.watch_dir(key, fd.as_fd(), hooks);
        if watch != UNWATCHED {
            self.dirs.set_watch(key, watch);
        }
        let at = At {
            fd: fd.as_fd(),
            mnt,
        };
        self.reconcile_all(key, at, hooks);
    }

    /// The kernel queue overflowed: every project is re-walked (coalesced, at a budget).
    pub(crate) fn overflowed(&mut self) {
        self.walks.overflowed();
    }

    /// Events of the tracked directory `key` may be lost (it could not be opened or read):
    /// its project is re-walked.
    pub(crate) fn lost(&mut self, key: Key) {
        if let Some(project) = self.project_of(key) {
            self.walks.repair(project);
        }
    }

    /// Events of project `id` may be lost: it is re-walked.
    pub(crate) fn repair(&mut self, id: u32) {
        self.walks.repair(id);
    }

    /// Whether re-walks wait (the worker then ticks without events).
    pub(crate) fn walks_pending(&self) -> bool {
        self.walks.busy()
    }

    /// Re-walks what the schedule says is due, within its CPU budget and at most [`SLICE`] per
    /// call. What a re-walk corrects shows up as growth; a correction found by a periodic walk
    /// (a count that had drifted) is noted.
    pub(crate) fn rewalk_due(&mut self, source: &'static str, hooks: &mut dyn Hooks) {
        let began = Instant::now();
        while began.elapsed() < SLICE {
            let Some((id, reason, pass)) = self.walks.next(Instant::now()) else {
                break;
            };
            if pass > 0 {
                self.note(
                    "overflow",
                    format!(
                        "{source}: the kernel event queue overflowed ({pass} time(s)); re-walking \
                         {} project(s) at up to {:.0}% of a core",
                        self.roots.len(),
                        REPAIR_BUDGET * 100.0
                    ),
                );
            }
            // A periodic walk finds drift only where something changed: while the project's
            // filesystem is as it was when its last walk began, its turn passes unwalked.
            let stamp = (self.roots.get(&id)).and_then(|r| fs_stamp(&r.project.path, r.key.0));
            if reason == Reason::Periodic && self.walks.unchanged(id, stamp) {
                self.walks.passed(id, Instant::now());
                continue;
            }
            let before = self.totals.get(&id).copied().unwrap_or(0);
            let start = Instant::now();
            let path = self.rebuild(id, hooks);
            let took = start.elapsed();
            self.walks.walked(id, took, Instant::now());
            self.walks.stamped(id, stamp);
            let corrected = self.totals.get(&id).copied().unwrap_or(0) - before;
            match (reason, path) {
                (Reason::Repair, Some(path)) => self.request_rescan(vec![path]),
                (Reason::Periodic, Some(path)) if corrected != 0 => self.note(
                    "drift",
                    format!(
                        "{source}: the periodic re-walk of {} (at up to {:.0}% of a core) \
                         corrected its count by {corrected} bytes",
                        textpath::shown(&path),
                        PERIODIC_BUDGET * 100.0
                    ),
                ),
                _ => {}
            }
        }
    }

    /// Forgets the tree of project `id` and walks it afresh; returns its path, or `None` when
    /// the project dir is gone or replaced. Directories still there keep their watches
    /// (`Hooks::dir_added` sees them again); the others are dropped afterwards. Nothing is
    /// adopted from the old tree: after lost events it may be stale.
    fn rebuild(&mut self, id: u32, hooks: &mut dyn Hooks) -> Option<PathBuf> {
        self.finalize(hooks);
        let root = self.roots.get(&id)?;
        let (root_key, path) = (root.key, root.project.path.to_path_buf());
        let mut old_dirs = Vec::new();
        let mut stack = vec![root_key];
        while let Some(k) = stack.pop() {
            let Some(node) = self.dirs.remove(k) else {
                continue;
            };
            self.collisions.remove(&k);
            old_dirs.push((k, node.watch));
            for e in node.entries {
                if !e.is_dir() {
                    self.unlink(node.project, k.0, e);
                } else if !self.root_keys.contains_key(&(k.0, e.ino)) {
                    stack.push((k.0, e.ino));
                }
            }
        }
        let opened = fsys::open_dir_path(&path)
            .ok()
            .and_then(|fd| Some((fsys::stat_fd(&fd).ok()?, fd)));
        let found = match opened {
            Some((st, fd)) if super::tree::key_of(&st) == root_key => {
                let place = Place {
                    key: root_key,
                    parent: None,
                    name: CString::default(),
                    project: id,
                };
                self.scan_new(fd, st.mnt_id, place, hooks);
                true
            }
            _ => {
                self.note(
                    "project-gone",
                    format!(
                        "project {} is gone or was replaced; not tracked until watched again",
                        textpath::shown(&path)
                    ),
                );
                false
            }
        };
        for (k, watch) in old_dirs {
            if !self.dirs.contains(k) {
                hooks.dir_dropped(k, watch);
            }
        }
        self.resolve_twins();
        found.then_some(path)
    }
}
