//! Protection: decides whether a directory is in use or exempt and must not be deleted — a
//! process has its cwd, root, executable or an open file inside it, a BSD `flock`/POSIX lock is
//! held on something inside it, or it carries a `.guardian-keep` marker. It reads `/proc` and
//! never modifies anything.

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
        path: PathBuf,
    },
    /// It (or something inside it) carries the `.guardian-keep` marker.
    KeepMarker { path: PathBuf },
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
            } => write!(f, "in use: pid {pid} ({comm}) {how} {}", path.display()),
            Protection::KeepMarker { path } => {
                write!(f, "kept: {} exists", path.join(KEEP_MARKER).display())
            }
            Protection::RunningTask { detail } => write!(f, "running task: {detail}"),
        }
    }
}

/// Checks whether the directory at `dir` may be deleted right now, using a fresh or given
/// snapshot of the processes. `dir` is checked by path prefix against every process hold and
/// for a keep marker directly inside it (markers deeper down are found by the scanner and by the
/// executor's walk).
pub fn check_dir(dir: &Path, procs: &ProcSnapshot) -> Option<Protection> {
    if let Some(holder) = procs.holder_inside(dir) {
        return Some(Protection::InUse {
            pid: holder.pid,
            comm: holder.comm.clone(),
            how: holder.how,
            path: holder.path.clone(),
        });
    }
    if let Ok(meta) = std::fs::symlink_metadata(dir) {
        use std::os::unix::fs::MetadataExt;
        if meta.is_dir() {
            if let Some(holder) = procs.lock_on_inode(meta.dev(), meta.ino()) {
                return Some(Protection::InUse {
                    pid: holder.pid,
                    comm: holder.comm.clone(),
                    how: HoldKind::Lock,
                    path: dir.to_path_buf(),
                });
            }
            if dir.join(KEEP_MARKER).symlink_metadata().is_ok() {
                return Some(Protection::KeepMarker {
                    path: dir.to_path_buf(),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
