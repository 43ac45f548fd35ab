//! A snapshot of what every process holds, read from `/proc`: its cwd, root, executable, open
//! files, and BSD/POSIX/OFD locks from `/proc/locks` — as *identities* (dev, ino), not paths.
//!
//! A process in another mount namespace (a containerised task with its work dir bind-mounted at
//! `/work`) shows paths that never match the host's. So "inside" is decided by identity: from
//! each held directory (the `/proc/PID/cwd` handle itself, or the parent of an open file resolved
//! through `/proc/PID/root`), the walk goes up through `..` and records the (dev, ino) of every
//! ancestor. A directory is in use when its (dev, ino) is among them. Chains merge: a directory
//! already recorded ends the walk, so the cost is the number of distinct directories held.

use serde::Serialize;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How a process holds a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    Cwd,
    Root,
    Exe,
    OpenFile,
    Lock,
}

impl fmt::Display for HoldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HoldKind::Cwd => "has its cwd in",
            HoldKind::Root => "has its root in",
            HoldKind::Exe => "runs an executable from",
            HoldKind::OpenFile => "has open",
            HoldKind::Lock => "holds a lock on",
        })
    }
}

/// One thing a process holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    pub how: HoldKind,
    /// The path as the process sees it (in its own mount namespace).
    pub path: PathBuf,
}

/// Longest `..` walk from one held directory.
const MAX_WALK: usize = 4096;

/// What all visible processes hold, captured at one moment.
#[derive(Clone, Debug, Default)]
pub struct ProcSnapshot {
    holders: Vec<Holder>,
    /// (dev, ino) of every directory that holds a hold somewhere below (or at) it → the holder.
    dirs: HashMap<(u64, u64), usize>,
    /// (dev, ino) of every held non-directory (open file, executable) → the holder.
    files: HashMap<(u64, u64), usize>,
    /// (dev, ino) of locked inodes → the lock holder pid (0 for OFD locks).
    locks: HashMap<(u64, u64), u32>,
    /// While capturing: each held inode's holder, labelled `Lock` once `/proc/locks` is in.
    held: Vec<(usize, (u64, u64))>,
    /// Holds whose directory could not be opened: matched by path as a last resort.
    unresolved: Vec<usize>,
    /// False where processes could not be read (no `/proc`): callers must then treat every
    /// directory as possibly in use.
    pub complete: bool,
}

impl ProcSnapshot {
    /// Reads `/proc`, skipping Guardian's own process. Processes that exit meanwhile are skipped.
    pub fn capture() -> ProcSnapshot {
        let Ok(entries) = fs::read_dir("/proc") else {
            return ProcSnapshot::default();
        };
        let own = std::process::id();
        let mut snapshot = ProcSnapshot {
            complete: true,
            ..Default::default()
        };
        // Reading `/proc/locks` takes the kernel's file-lock rwsem for writing, which waits out
        // an RCU grace period (5–20 ms measured here, sleeping): it is read on its own thread
        // while the processes are read, and the holds on locked inodes are labelled after.
        let locks = std::thread::scope(|scope| {
            let locks = std::thread::Builder::new()
                .name("guardian-locks".into())
                .spawn_scoped(scope, read_locks)
                .ok();
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                if pid != own {
                    snapshot.read_process(pid);
                }
            }
            locks.and_then(|h| h.join().ok()).unwrap_or_else(read_locks)
        });
        for (idx, key) in std::mem::take(&mut snapshot.held) {
            if let (true, Some(holder)) = (locks.contains_key(&key), snapshot.holders.get_mut(idx))
            {
                holder.how = HoldKind::Lock;
            }
        }
        snapshot.locks = locks;
        snapshot
    }

    fn read_process(&mut self, pid: u32) {
        let base = PathBuf::from(format!("/proc/{pid}"));
        let comm = fs::read(base.join("comm"))
            .map(|b| crate::textpath::escape_bytes(b.strip_suffix(b"\n").unwrap_or(&b)))
            .unwrap_or_default();
        let root = open_path_dir(&base.join("root"));
        let dirs = self.hold_dirs(pid, &comm, &base);
        self.hold_file(pid, &comm, HoldKind::Exe, &base.join("exe"), root.as_ref());
        self.hold_fds(pid, &comm, &base, root.as_ref());
        // A thread may have its own cwd and root (`unshare(CLONE_FS)`) or its own file table
        // (`unshare(CLONE_FILES)`): they show only under /proc/PID/task/TID.
        let Ok(tasks) = fs::read_dir(base.join("task")) else {
            return;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if tid == pid {
                continue;
            }
            let tbase = task.path();
            let own_dirs = ["cwd", "root"]
                .iter()
                .any(|l| fs::read_link(tbase.join(l)).ok() != dirs_link(&dirs, l));
            if own_dirs {
                self.hold_dirs(tid, &comm, &tbase);
            }
            if !shares_files(pid, tid) {
                let troot = open_path_dir(&tbase.join("root"));
                self.hold_fds(tid, &comm, &tbase, troot.as_ref().or(root.as_ref()));
            }
        }
    }

    /// The cwd and root under `base` (a process's or a thread's /proc dir); returns their link
    /// targets.
    fn hold_dirs(&mut self, pid: u32, comm: &str, base: &Path) -> [Option<PathBuf>; 2] {
        let mut links = [None, None];
        for (i, (how, link)) in [(HoldKind::Cwd, "cwd"), (HoldKind::Root, "root")]
            .into_iter()
            .enumerate()
        {
            let link = base.join(link);
            if let Ok(target) = fs::read_link(&link) {
                links[i] = Some(target.clone());
                let idx = self.push(pid, comm, how, strip_deleted(target));
                match open_path_dir(&link) {
                    Some(fd) => self.walk_up(fd, idx),
                    None => self.unresolved.push(idx),
                }
            }
        }
        links
    }

    /// Every open file under `base/fd`. The directory is opened once and its links read
    /// relative to it into one buffer; only links to paths (not `socket:[…]`, `pipe:[…]`,
    /// `anon_inode:…`) go further. A process whose fds cannot be read (`EACCES`: not
    /// ptrace-readable, e.g. another user namespace's init) is given up before its fd table is
    /// listed: its `cwd` link fails with `EACCES` under the same per-task check as every fd link.
    fn hold_fds(&mut self, pid: u32, comm: &str, base: &Path, root: Option<&rustix::fd::OwnedFd>) {
        use rustix::fs::{Mode, OFlags};
        if let Err(e) = fs::read_link(base.join("cwd")) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return;
            }
        }
        let fd_dir = base.join("fd");
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let Ok(dir) = rustix::fs::open(&fd_dir, flags, Mode::empty()) else {
            return;
        };
        let Ok(entries) = crate::fsys::list_dir(&dir) else {
            return;
        };
        let mut buf = Vec::with_capacity(256);
        for entry in entries {
            let target = match rustix::fs::readlinkat(&dir, entry.name.as_c_str(), buf) {
                Ok(target) => target.into_bytes(),
                Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => return,
                // Closed meanwhile.
                Err(_) => {
                    buf = Vec::with_capacity(256);
                    continue;
                }
            };
            if target.first() == Some(&b'/') {
                let link = fd_dir.join(entry.os_name());
                let target = PathBuf::from(OsStr::from_bytes(&target));
                self.hold_target(pid, comm, HoldKind::OpenFile, &link, target, root);
            }
            buf = target;
            buf.clear();
        }
    }
    fn push(&mut self, pid: u32, comm: &str, how: HoldKind, path: PathBuf) -> usize {
        self.holders.push(Holder {
            pid,
            comm: comm.to_string(),
            how,
            path,
        });
        self.holders.len() - 1
    }

    /// An open file or the executable, through its `/proc` link: its own identity, and its
    /// directory (itself for a directory fd; the parent, found through the process's root, for
    /// a file) walked up.
    fn hold_file(
        &mut self,
        pid: u32,
        comm: &str,
        how: HoldKind,
        link: &Path,
        root: Option<&rustix::fd::OwnedFd>,
    ) {
        let Ok(target) = fs::read_link(link) else {
            return;
        };
        // Sockets, pipes, anon inodes: `socket:[123]`, not a path.
        if target.is_absolute() {
            self.hold_target(pid, comm, how, link, target, root);
        }
    }

    /// What [`Self::hold_file`] does once the link's `target` (a path) is read.
    fn hold_target(
        &mut self,
        pid: u32,
        comm: &str,
        how: HoldKind,
        link: &Path,
        target: PathBuf,
        root: Option<&rustix::fd::OwnedFd>,
    ) {
        let Ok(st) = rustix::fs::stat(link) else {
            return;
        };
        let key = crate::fsys::stat_identity(&st);
        let idx = self.push(pid, comm, how, strip_deleted(target.clone()));
        self.held.push((idx, key));
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
            match open_path_dir(link) {
                Some(fd) => self.walk_up(fd, idx),
                None => self.unresolved.push(idx),
            }
            return;
        }
        self.files.entry(key).or_insert(idx);
        // The file's directory, as the process sees it.
        let parent = strip_deleted(target)
            .parent()
            .map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf());
        let dir = match (root, parent) {
            (Some(root), Some(rel)) if rel.as_os_str().is_empty() => {
                rustix::fs::openat(root, ".", path_dir_flags(), rustix::fs::Mode::empty()).ok()
            }
            (Some(root), Some(rel)) => {
                rustix::fs::openat(root, &rel, path_dir_flags(), rustix::fs::Mode::empty()).ok()
            }
            _ => None,
        };
        match dir {
            Some(fd) => self.walk_up(fd, idx),
            None => self.unresolved.push(idx),
        }
    }

    /// Records the open directory `fd` and every ancestor reached through `..` as holding
    /// `holder`, until a directory already recorded or the top.
    fn walk_up(&mut self, mut fd: rustix::fd::OwnedFd, holder: usize) {
        for _ in 0..MAX_WALK {
            let Ok(st) = rustix::fs::fstat(&fd) else {
                return;
            };
            let key = crate::fsys::stat_identity(&st);
            if self.dirs.contains_key(&key) {
                return;
            }
            self.dirs.insert(key, holder);
            let Ok(parent) =
                rustix::fs::openat(&fd, "..", path_dir_flags(), rustix::fs::Mode::empty())
            else {
                return;
            };
            match rustix::fs::fstat(&parent) {
                Ok(p) if crate::fsys::stat_identity(&p) == key => return,
                Ok(_) => fd = parent,
                Err(_) => return,
            }
        }
    }

    /// A hold inside the directory with identity (`dev`, `ino`) — on it or anywhere below —,
    /// or on that inode itself when it is a file. `shown` (the path as Guardian sees it) is
    /// matched by prefix against the holds whose directory could not be resolved.
    pub fn holder_of(&self, dev: u64, ino: u64, shown: &Path) -> Option<&Holder> {
        let idx = self
            .dirs
            .get(&(dev, ino))
            .or_else(|| self.files.get(&(dev, ino)))
            .copied()
            .or_else(|| {
                self.unresolved
                    .iter()
                    .copied()
                    .find(|&i| self.holders[i].path.starts_with(shown))
            })?;
        self.holders.get(idx)
    }

    /// A lock held on the inode (`dev`, `ino`) itself: the holder pid (0 for an OFD lock).
    pub fn lock_on(&self, dev: u64, ino: u64) -> Option<u32> {
        self.locks.get(&(dev, ino)).copied()
    }

    /// Number of holds seen (for status and tests).
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }
}

/// The link target `hold_dirs` found for `which` (`cwd` or `root`).
fn dirs_link(dirs: &[Option<PathBuf>; 2], which: &str) -> Option<PathBuf> {
    match which {
        "cwd" => dirs[0].clone(),
        _ => dirs[1].clone(),
    }
}

/// Whether thread `tid` shares the file table of process `pid` (`kcmp`). Where the kernel
/// cannot tell (no `kcmp`), it is taken as not shared: the thread's fds are read too.
#[cfg(target_os = "linux")]
fn shares_files(pid: u32, tid: u32) -> bool {
    const KCMP_FILES: libc::c_long = 2;
    let (pid, tid) = (libc::c_long::from(pid), libc::c_long::from(tid));
    // SAFETY: kcmp takes plain integers and dereferences nothing for KCMP_FILES.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            tid,
            KCMP_FILES,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    rc == 0
}

/// Without `kcmp`, a thread's file table is taken as its own: its fds are read too.
#[cfg(not(target_os = "linux"))]
fn shares_files(_pid: u32, _tid: u32) -> bool {
    false
}

fn path_dir_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    crate::fsys::handle_flags() | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// Opens a `/proc/PID/{cwd,root,fd/N}` link's target as an `O_PATH` directory handle: the
/// kernel resolves the link to the process's own directory, whatever its mount namespace.
fn open_path_dir(link: &Path) -> Option<rustix::fd::OwnedFd> {
    rustix::fs::open(link, path_dir_flags(), rustix::fs::Mode::empty()).ok()
}

/// `/proc/PID/fd` links to unlinked files end in " (deleted)".
fn strip_deleted(path: PathBuf) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    match bytes.strip_suffix(b" (deleted)") {
        Some(stripped) => PathBuf::from(OsStr::from_bytes(stripped)),
        None => path,
    }
}

/// Parses `/proc/locks` into locked (dev, ino) → holder pid (0 for OFD locks).
fn read_locks() -> HashMap<(u64, u64), u32> {
    fs::read_to_string("/proc/locks")
        .map(|text| text.lines().filter_map(parse_lock_line).collect())
        .unwrap_or_default()
}

/// One `/proc/locks` line: `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`.
fn parse_lock_line(line: &str) -> Option<((u64, u64), u32)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // Blocked waiters are shown as "1: -> FLOCK ..."; they hold nothing yet.
    if fields.get(1) == Some(&"->") {
        return None;
    }
    let pid = fields.get(4)?.parse::<i64>().ok()?;
    let mut dev = fields.get(5)?.split(':');
    let major = u32::from_str_radix(dev.next()?, 16).ok()?;
    let minor = u32::from_str_radix(dev.next()?, 16).ok()?;
    let ino = dev.next()?.parse::<u64>().ok()?;
    let pid = u32::try_from(pid).unwrap_or(0);
    Some(((makedev(major, minor), ino), pid))
}

/// `st_dev` of (major, minor) in the Linux (glibc `makedev`) encoding, on every host OS: the
/// values come from `/proc`, which only Linux has.
fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flock_posix_and_ofd_lines() {
        let (key, pid) =
            parse_lock_line("1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF").unwrap();
        assert_eq!((key, pid), ((makedev(0xfd, 1), 5678), 1234));
        let (_, pid) = parse_lock_line("2: OFDLCK ADVISORY  READ  -1 00:2e:99 0 EOF").unwrap();
        assert_eq!(pid, 0);
        assert!(parse_lock_line("3: -> FLOCK  ADVISORY  WRITE 99 fd:01:5678 0 EOF").is_none());
        assert!(parse_lock_line("garbage").is_none());
        assert!(
            parse_lock_line("4: FLOCK ADVISORY WRITE 99999999999999999999 zz:01:1 0 EOF").is_none()
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn makedev_matches_the_kernel_encoding() {
        for (major, minor) in [(8, 1), (259, 70000), (0, 46), (4095, 1 << 19)] {
            assert_eq!(makedev(major, minor), rustix::fs::makedev(major, minor));
        }
    }

    #[test]
    fn deleted_suffix_is_stripped() {
        assert_eq!(
            strip_deleted(PathBuf::from("/a/b (deleted)")),
            PathBuf::from("/a/b")
        );
    }
}
