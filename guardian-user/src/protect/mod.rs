//! Protection: decides whether a directory is in use or exempt and must not be deleted — a
//! process has its cwd, root, executable or an open file inside it (by identity, whatever mount
//! namespace the process is in), a BSD `flock`/POSIX/OFD lock is held on it or something inside
//! it, or it carries a `.guardian-keep` marker. It reads `/proc` and never modifies anything.

mod procfs;

pub use procfs::{HoldKind, Holder, ProcSnapshot};

use crate::scan::KEEP_MARKER;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a directory must not be deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protection {
    /// Its name is on the workspace's protect list.
    ProtectedName { name: String },
    /// A process uses something inside it.
    InUse {
        pid: u32,
        comm: String,
        how: HoldKind,
        #[serde(with = "crate::textpath")]
        path: PathBuf,
    },
    /// It (or something inside it) carries the `.guardian-keep` marker.
    KeepMarker {
        #[serde(with = "crate::textpath")]
        path: PathBuf,
    },
    /// The task DB says a task is running in it (or task state is unknown).
    RunningTask { detail: String },
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protection::ProtectedName { name } => write!(f, "`{name}` is on the protect list"),
            Protection::InUse {
                pid,
                comm,
                how,
                path,
            } => write!(
                f,
                "in use: pid {pid} ({comm}) {how} {}",
                crate::textpath::shown(path)
            ),
            Protection::KeepMarker { path } => {
                write!(
                    f,
                    "kept: {} exists",
                    crate::textpath::shown(&path.join(KEEP_MARKER))
                )
            }
            Protection::RunningTask { detail } => write!(f, "running task: {detail}"),
        }
    }
}

/// Checks whether the entry at `dir` (a directory, or a file) may be deleted right now: no
/// process holds it or anything below it — decided by identity, so processes in other mount
/// namespaces count —, no lock is held on it, and a directory carries no keep marker directly
/// inside (markers deeper down are found by the scanner and by the executor's walk). The path is
/// not followed if it is a symlink.
pub fn check_dir(dir: &Path, procs: &ProcSnapshot) -> Option<Protection> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).ok()?;
    if let Some(p) = check_identity(meta.dev(), meta.ino(), dir, procs) {
        return Some(p);
    }
    if meta.is_dir() && dir.join(KEEP_MARKER).symlink_metadata().is_ok() {
        return Some(Protection::KeepMarker {
            path: dir.to_path_buf(),
        });
    }
    None
}

/// As [`check_dir`], for a directory Guardian holds open (`dir`, stated as `st`, shown as
/// `shown`): nothing is resolved by path again.
pub fn check_open_dir(
    dir: rustix::fd::BorrowedFd<'_>,
    st: &crate::fsys::EntryStat,
    shown: &Path,
    procs: &ProcSnapshot,
) -> Option<Protection> {
    if let Some(p) = check_identity(st.dev, st.ino, shown, procs) {
        return Some(p);
    }
    let marker = crate::fsys::c_name(std::ffi::OsStr::new(KEEP_MARKER)).ok()?;
    match crate::fsys::stat_entry(dir, &marker) {
        Ok(_) => Some(Protection::KeepMarker {
            path: shown.to_path_buf(),
        }),
        Err(_) => None,
    }
}

/// A hold on or below the entry with identity (`dev`, `ino`), or a lock on it.
pub fn check_identity(
    dev: u64,
    ino: u64,
    shown: &Path,
    procs: &ProcSnapshot,
) -> Option<Protection> {
    if let Some(holder) = procs.holder_of(dev, ino, shown) {
        return Some(Protection::InUse {
            pid: holder.pid,
            comm: holder.comm.clone(),
            how: holder.how,
            path: holder.path.clone(),
        });
    }
    procs.lock_on(dev, ino).map(|pid| Protection::InUse {
        pid,
        comm: String::new(),
        how: HoldKind::Lock,
        path: shown.to_path_buf(),
    })
}

#[cfg(test)]
mod tests;
