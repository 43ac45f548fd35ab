//! A snapshot of what every process holds open, read from `/proc`: cwd, root, executable, open
//! files, and BSD/POSIX/OFD locks from `/proc/locks`.

use serde::Serialize;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
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
    pub path: PathBuf,
}

/// A lock listed in `/proc/locks`.
#[derive(Clone, Debug)]
struct Lock {
    /// Holder pid; `None` for OFD locks, which have no owning pid.
    pid: Option<u32>,
    major: u32,
    minor: u32,
    ino: u64,
}

/// What all visible processes hold, captured at one moment.
#[derive(Clone, Debug, Default)]
pub struct ProcSnapshot {
    holders: Vec<Holder>,
    locks: Vec<Lock>,
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
        snapshot.locks = read_locks();
        snapshot.resolve_lock_paths();
        snapshot
    }

    fn read_process(&mut self, pid: u32) {
        let base = PathBuf::from(format!("/proc/{pid}"));
        let comm = fs::read_to_string(base.join("comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        let mut push = |how, link: &Path| {
            if let Ok(target) = fs::read_link(link) {
                if target.is_absolute() {
                    self.holders.push(Holder {
                        pid,
                        comm: comm.clone(),
                        how,
                        path: strip_deleted(target),
                    });
                }
            }
        };
        push(HoldKind::Cwd, &base.join("cwd"));
        push(HoldKind::Root, &base.join("root"));
        push(HoldKind::Exe, &base.join("exe"));
        if let Ok(fds) = fs::read_dir(base.join("fd")) {
            for fd in fds.flatten() {
                push(HoldKind::OpenFile, &fd.path());
            }
        }
    }

    /// Turns each lock whose holder pid is known into a path, through the holder's open fds.
    fn resolve_lock_paths(&mut self) {
        let mut resolved = Vec::new();
        for lock in self.locks.iter() {
            let Some(pid) = lock.pid else { continue };
            let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(meta) = fs::metadata(fd.path()) else {
                    continue;
                };
                if meta.ino() == lock.ino && dev_major_minor(meta.dev()) == (lock.major, lock.minor)
                {
                    if let Ok(target) = fs::read_link(fd.path()) {
                        let comm = self
                            .holders
                            .iter()
                            .find(|h| h.pid == pid)
                            .map(|h| h.comm.clone())
                            .unwrap_or_default();
                        resolved.push(Holder {
                            pid,
                            comm,
                            how: HoldKind::Lock,
                            path: strip_deleted(target),
                        });
                    }
                    break;
                }
            }
        }
        self.holders.extend(resolved);
    }

    /// The first hold on `dir` itself or anything below it. Locks come first in the answer, then
    /// cwd/root/exe, then open files.
    pub fn holder_inside(&self, dir: &Path) -> Option<&Holder> {
        let rank = |h: &Holder| match h.how {
            HoldKind::Lock => 0,
            HoldKind::Cwd | HoldKind::Root | HoldKind::Exe => 1,
            HoldKind::OpenFile => 2,
        };
        self.holders
            .iter()
            .filter(|h| h.path.starts_with(dir))
            .min_by_key(|h| rank(h))
    }

    /// A lock held on the inode (`dev`, `ino`), for locks that could not be resolved to a path.
    pub fn lock_on_inode(&self, dev: u64, ino: u64) -> Option<Holder> {
        let (major, minor) = dev_major_minor(dev);
        self.locks
            .iter()
            .find(|l| l.ino == ino && l.major == major && l.minor == minor)
            .map(|l| Holder {
                pid: l.pid.unwrap_or(0),
                comm: String::new(),
                how: HoldKind::Lock,
                path: PathBuf::new(),
            })
    }

    /// Number of holds seen (for status and tests).
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    /// Per-directory lookups for many candidates at once: the holders grouped by path prefix.
    pub fn holders(&self) -> &[Holder] {
        &self.holders
    }
}

/// Major and minor of a Linux `st_dev` (glibc's `makedev` encoding), on every host OS: the
/// values come from `/proc`, which only Linux has.
fn dev_major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// `/proc/PID/fd` links to unlinked files end in " (deleted)".
fn strip_deleted(path: PathBuf) -> PathBuf {
    match path.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(stripped) => PathBuf::from(stripped),
        None => path,
    }
}

/// Parses `/proc/locks`: `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`.
fn read_locks() -> Vec<Lock> {
    fs::read_to_string("/proc/locks")
        .map(|text| text.lines().filter_map(parse_lock_line).collect())
        .unwrap_or_default()
}

fn parse_lock_line(line: &str) -> Option<Lock> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // Blocked waiters are shown as "1: -> FLOCK ..."; they hold nothing yet.
    if fields.get(1) == Some(&"->") {
        return None;
    }
    let pid_field = fields.get(4)?;
    let pid = pid_field.parse::<i64>().ok()?;
    let mut dev = fields.get(5)?.split(':');
    let major = u32::from_str_radix(dev.next()?, 16).ok()?;
    let minor = u32::from_str_radix(dev.next()?, 16).ok()?;
    let ino = dev.next()?.parse::<u64>().ok()?;
    Some(Lock {
        pid: (pid > 0).then_some(pid as u32),
        major,
        minor,
        ino,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flock_posix_and_ofd_lines() {
        let l = parse_lock_line("1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF").unwrap();
        assert_eq!(
            (l.pid, l.major, l.minor, l.ino),
            (Some(1234), 0xfd, 1, 5678)
        );
        let l = parse_lock_line("2: OFDLCK ADVISORY  READ  -1 00:2e:99 0 EOF").unwrap();
        assert_eq!(l.pid, None);
        assert!(parse_lock_line("3: -> FLOCK  ADVISORY  WRITE 99 fd:01:5678 0 EOF").is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn dev_split_matches_the_libc_encoding() {
        for (major, minor) in [(8, 1), (259, 70000), (0, 46), (4095, 1 << 19)] {
            let dev = rustix::fs::makedev(major, minor);
            assert_eq!(dev_major_minor(dev), (major, minor));
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
