//! Write sources: what tells Guardian, per project directory, how many bytes are being written.
//! Best first: the eBPF probe (bytes counted in the kernel), fanotify (whole filesystem, changed
//! files → size deltas), inotify (recursive watches → size deltas), polling (`statvfs`, and
//! per-project sizes sampled within a CPU budget; the macOS path). Each source is a [`Source`]; [`open`] returns a [`Supervisor`] that runs the
//! configured one, falls back to the next when it fails and retries the better one with
//! back-off (`supervise.rs`). The daemon drains it on a short cadence. Sources only observe: none
//! of them deletes or changes anything on disk.

#[cfg(target_os = "linux")]
pub mod fanotify;
#[cfg(target_os = "linux")]
pub mod inotify;
pub mod poll;
#[cfg(all(test, target_os = "linux"))]
mod testutil;
#[cfg(target_os = "linux")]
mod track;

#[cfg(target_os = "linux")]
pub mod btf;
#[cfg(target_os = "linux")]
pub mod ebpf;
#[cfg(target_os = "linux")]
mod fold;
#[cfg(target_os = "linux")]
mod kfunc;

mod cgroups;
pub mod countdown;
mod supervise;

pub use cgroups::CgroupNames;
pub use supervise::{Degradation, SourceStatus, Supervisor};
#[cfg(target_os = "linux")]
pub use track::FORCE_WORKER_FAILURE_ENV;

/// Whether this binary embeds the eBPF probe, as its build script found out: `embedded (N
/// bytes)` or `not embedded: why`.
pub const PROBE_STATUS: &str = env!("GUARDIAN_PROBE_STATUS");

/// `guardian --version`: the version and whether the probe is embedded.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (eBPF probe: ",
    env!("GUARDIAN_PROBE_STATUS"),
    ")"
);

use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A project directory a source attributes writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectDir {
    /// Stable id for this run of the daemon (index into the daemon's project table).
    pub id: u32,
    /// One allocation per project, shared by every holder of the project list (the
    /// aggregator, the watched set, the source, the forecasts): cloning it copies a pointer.
    pub path: Arc<Path>,
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
    /// Bytes others (not Guardian) freed per project id, where `growth` counts writes and leaves
    /// frees out (eBPF: files deleted or truncated). Sources whose `growth` is already a change
    /// of sizes (fanotify, inotify, polling) leave it empty. [`Sample::net`] is growth − freed.
    pub freed: HashMap<u32, u64>,
    /// Who wrote (eBPF only).
    pub by_cgroup: Vec<CgroupBytes>,
    /// Project paths whose events may have been lost (queue overflow, watch limits) and that
    /// the source re-walked (at most [`MAX_RESCAN_PATHS`]).
    pub rescan: Vec<PathBuf>,
    /// Events worth telling the operator (a queue overflow, a corrected count, …); at most one
    /// per cause. The [`Supervisor`] logs them, rate-limited, and hands none to its caller.
    pub notes: Vec<Note>,
}

/// Most paths a [`Sample`] lists in `rescan`.
pub const MAX_RESCAN_PATHS: usize = 64;

/// Something a source wants the operator to know. `cause` groups repeats of one kind (the log
/// shows one line per cause per minute, with a count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub cause: &'static str,
    pub text: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Sample {
    /// Net growth of project `id`: what was written (or grew) less what others freed.
    pub fn net(&self, id: u32) -> i64 {
        let grown = self.growth.get(&id).copied().unwrap_or(0);
        let freed = self.freed.get(&id).copied().unwrap_or(0);
        grown.saturating_sub(i64::try_from(freed).unwrap_or(i64::MAX))
    }

    /// Every project the sample says something about (grown or freed), once each.
    pub fn projects(&self) -> impl Iterator<Item = u32> + '_ {
        let freed_only = self.freed.keys().filter(|id| !self.growth.contains_key(id));
        self.growth.keys().chain(freed_only).copied()
    }

    /// Adds another sample into this one. What it holds stays bounded: growth per project,
    /// `rescan` up to [`MAX_RESCAN_PATHS`], one note per cause (the latest).
    pub fn absorb(&mut self, other: Sample) {
        for (id, bytes) in other.growth {
            let sum = self.growth.entry(id).or_default();
            *sum = sum.saturating_add(bytes);
        }
        for (id, bytes) in other.freed {
            let sum = self.freed.entry(id).or_default();
            *sum = sum.saturating_add(bytes);
        }
        self.by_cgroup.extend(other.by_cgroup);
        for path in other.rescan {
            if self.rescan.len() >= MAX_RESCAN_PATHS {
                break;
            }
            if !self.rescan.contains(&path) {
                self.rescan.push(path);
            }
        }
        for note in other.notes {
            match self.notes.iter_mut().find(|n| n.cause == note.cause) {
                Some(known) => *known = note,
                None => self.notes.push(note),
            }
        }
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
    /// and whenever projects appear or vanish. Never waits for work that grows with the size of
    /// the trees (a source that walks them does so on its own thread and reports a failure
    /// through `drain`).
    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError>;
    /// [`watch`](Source::watch) with the caller's shared list: a source that keeps the list
    /// keeps this one rather than a copy of its own.
    fn watch_shared(&mut self, projects: &Arc<[ProjectDir]>) -> Result<(), SourceError> {
        self.watch(projects)
    }
    /// As [`watch`](Source::watch), but returns only once the new projects are fully watched
    /// (their baseline taken): for threads that may wait (bringing a source up in the
    /// background) and for tests that write right after.
    fn watch_and_wait(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        self.watch(projects)
    }
    /// Returns what was seen since the last call, without blocking.
    fn drain(&mut self) -> Result<Sample, SourceError>;
    /// Conditions of the running source the operator should see now, though it keeps working
    /// (a full kernel map, projects beyond the probe's capacity, directories polled).
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
    /// The polling source's sampling accounting (none for the others).
    fn sampling(&self) -> Option<poll::Sampling> {
        None
    }
    /// Where to send wake-ups of the write countdown. Sources that cannot count ignore it.
    fn set_waker(&mut self, _waker: countdown::Waker) {}
    /// Arms the write countdown anew (after a `statvfs`): one budget per guarded filesystem;
    /// the bytes counted so far start over. Sources that cannot count ignore it.
    fn arm(&mut self, _budgets: &[countdown::Budget]) {}
    /// Which source runs and why (the [`Supervisor`] says more: fallbacks and retries).
    fn status(&self) -> SourceStatus {
        SourceStatus::running(self.name(), self.problems())
    }
}

/// The name of a source kind as the config spells it.
pub fn kind_name(kind: crate::config::SourceKind) -> &'static str {
    use crate::config::SourceKind;
    match kind {
        SourceKind::Auto => "auto",
        SourceKind::Ebpf => "ebpf",
        SourceKind::Fanotify => "fanotify",
        SourceKind::Inotify => "inotify",
        SourceKind::Poll => "poll",
    }
}

/// Opens the configured source under a [`Supervisor`]. `auto` tries eBPF, fanotify, inotify and
/// polling in that order, recording why each one it skipped failed. An explicit choice that
/// cannot be honoured here is an error (the daemon exits 2 with the reason); once running, any
/// source that fails falls back (`auto`: to the next in that order; an explicit choice: to
/// polling) and is retried with back-off. `workspaces` are the guarded paths: fanotify checks it
/// may mark their filesystems.
pub fn open(
    kind: crate::config::SourceKind,
    workspaces: &[PathBuf],
) -> Result<Supervisor, SourceError> {
    Supervisor::start(kind, workspaces.to_vec(), std::sync::Arc::new(open_one))
}

/// Opens one source kind (not `auto`), checking it can serve `workspaces`.
#[cfg(target_os = "linux")]
pub(crate) fn open_one(
    kind: crate::config::SourceKind,
    workspaces: &[PathBuf],
) -> Result<Box<dyn Source>, SourceError> {
    use crate::config::SourceKind;
    Ok(match kind {
        SourceKind::Ebpf => Box::new(ebpf::EbpfSource::load()?),
        SourceKind::Fanotify => Box::new(fanotify::open_for(workspaces)?),
        SourceKind::Inotify => Box::new(inotify::open()?),
        SourceKind::Poll | SourceKind::Auto => Box::new(poll::PollSource::new()),
    })
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn open_one(
    kind: crate::config::SourceKind,
    _workspaces: &[PathBuf],
) -> Result<Box<dyn Source>, SourceError> {
    use crate::config::SourceKind;
    match kind {
        SourceKind::Poll | SourceKind::Auto => Ok(Box::new(poll::PollSource::new())),
        other => Err(SourceError::Unavailable {
            source_name: kind_name(other),
            reason: "Linux only".into(),
        }),
    }
}
