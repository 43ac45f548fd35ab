//! Write sources: what tells Guardian, per project directory, how many bytes are being written.
//! Best first: the eBPF probe (bytes counted in the kernel), fanotify (whole filesystem, changed
//! files → size deltas), inotify (recursive watches → size deltas), polling (`statvfs` only; the
//! macOS path). Each source is a [`Source`]; the daemon drains it on a short cadence. Sources
//! only observe: none of them deletes or changes anything on disk.

#[cfg(target_os = "linux")]
pub mod fanotify;
#[cfg(target_os = "linux")]
pub mod inotify;
pub mod poll;
#[cfg(target_os = "linux")]
mod track;

#[cfg(target_os = "linux")]
pub mod btf;
#[cfg(target_os = "linux")]
pub mod ebpf;
#[cfg(target_os = "linux")]
mod kfunc;

use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;

/// A project directory a source attributes writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectDir {
    /// Stable id for this run of the daemon (index into the daemon's project table).
    pub id: u32,
    pub path: PathBuf,
    /// `st_dev` of the directory as userspace sees it.
    pub dev: u64,
    pub ino: u64,
}

/// Bytes written into one project by one cgroup since the last drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CgroupBytes {
    pub project: u32,
    pub cgroup: u64,
    pub bytes: u64,
}

/// What a source saw since the last drain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Growth per project id in bytes: bytes written (eBPF) or the change of tracked file sizes
    /// (fanotify, inotify; may be negative when files shrink or vanish).
    pub growth: HashMap<u32, i64>,
    /// Who wrote (eBPF only).
    pub by_cgroup: Vec<CgroupBytes>,
    /// Paths whose events may have been lost (queue overflow, watch limits): the caller rescans.
    pub rescan: Vec<PathBuf>,
    /// Conditions worth telling the operator (degraded to polling for a subtree, …).
    pub notes: Vec<String>,
}

impl Sample {
    /// Adds another sample into this one.
    pub fn absorb(&mut self, other: Sample) {
        for (id, bytes) in other.growth {
            *self.growth.entry(id).or_default() += bytes;
        }
        self.by_cgroup.extend(other.by_cgroup);
        self.rescan.extend(other.rescan);
        self.notes.extend(other.notes);
    }
}

/// Why a source cannot run (the selection logs it and tries the next one).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{source_name} is not available: {reason}")]
    Unavailable {
        source_name: &'static str,
        reason: String,
    },
    #[error("{source_name} failed: {reason}")]
    Failed {
        source_name: &'static str,
        reason: String,
    },
}

/// A write source.
pub trait Source: Send {
    /// `ebpf`, `fanotify`, `inotify` or `poll`.
    fn name(&self) -> &'static str;
    /// Sets the project dirs to attribute writes to, replacing the previous set. Called at start
    /// and whenever projects appear or vanish.
    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError>;
    /// Returns what was seen since the last call, without blocking.
    fn drain(&mut self) -> Result<Sample, SourceError>;
}

/// Opens the configured source. `auto` tries eBPF, fanotify, inotify and polling in that order,
/// logging why each one it skipped failed; an explicit choice that fails falls back to polling
/// the same way, so the daemon always guards. Returns the source and the skip reasons.
pub fn open(kind: crate::config::SourceKind) -> (Box<dyn Source>, Vec<String>) {
    use crate::config::SourceKind;
    let order: &[SourceKind] = match kind {
        SourceKind::Auto => &[
            SourceKind::Ebpf,
            SourceKind::Fanotify,
            SourceKind::Inotify,
            SourceKind::Poll,
        ],
        SourceKind::Ebpf => &[SourceKind::Ebpf, SourceKind::Poll],
        SourceKind::Fanotify => &[SourceKind::Fanotify, SourceKind::Poll],
        SourceKind::Inotify => &[SourceKind::Inotify, SourceKind::Poll],
        SourceKind::Poll => &[SourceKind::Poll],
    };
    let mut skipped = Vec::new();
    for candidate in order {
        match open_one(*candidate) {
            Ok(source) => {
                tracing::info!(source = source.name(), "write source selected");
                return (source, skipped);
            }
            Err(e) => {
                tracing::warn!("skipping write source: {e}");
                skipped.push(e.to_string());
            }
        }
    }
    (Box::new(poll::PollSource), skipped)
}

#[cfg(target_os = "linux")]
fn open_one(kind: crate::config::SourceKind) -> Result<Box<dyn Source>, SourceError> {
    use crate::config::SourceKind;
    Ok(match kind {
        SourceKind::Ebpf => Box::new(ebpf::EbpfSource::load()?),
        SourceKind::Fanotify => Box::new(fanotify::open()?),
        SourceKind::Inotify => Box::new(inotify::open()?),
        SourceKind::Poll | SourceKind::Auto => Box::new(poll::PollSource),
    })
}

#[cfg(not(target_os = "linux"))]
fn open_one(kind: crate::config::SourceKind) -> Result<Box<dyn Source>, SourceError> {
    use crate::config::SourceKind;
    match kind {
        SourceKind::Poll | SourceKind::Auto => Ok(Box::new(poll::PollSource)),
        other => Err(SourceError::Unavailable {
            source_name: match other {
                SourceKind::Ebpf => "ebpf",
                SourceKind::Fanotify => "fanotify",
                _ => "inotify",
            },
            reason: "Linux only".into(),
        }),
    }
}

/// The cgroup v2 path (relative to `/sys/fs/cgroup`) whose directory inode is `id`, found by a
/// bounded walk of the cgroup filesystem.
pub fn cgroup_path(id: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut visited = 0;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > 20_000 {
            return None;
        }
        let meta = std::fs::metadata(&dir).ok()?;
        if meta.ino() == id {
            let rel = dir.strip_prefix(root).ok()?;
            return Some(format!("/{}", rel.display()));
        }
        if depth >= 16 {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
    }
    None
}
