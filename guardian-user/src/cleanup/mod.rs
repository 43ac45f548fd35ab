//! The cleanup executor: the only code in Guardian that deletes. For each planned deletion it
//! picks the most specific configured workspace holding the path, opens every directory from
//! `/` down to the target's parent without following a symlink and without crossing a device or
//! mount ([`fsys::Boundary`]), re-identifies the target by the (dev, ino) the survey measured,
//! re-checks the rule's age cut-off and protection (processes by identity, locks, keep markers,
//! the task DB), writes an fsync'd *intent* audit line, removes the tree, measures what was
//! really freed with `statvfs`, and writes the outcome line.
//!
//! Invariants: nothing outside a configured workspace is ever deleted; a workspace itself and
//! names on its protect list are never deleted; nothing is unlinked before its intent line is on
//! disk, and when that line cannot be written nothing is deleted; an interrupted deletion is
//! finished by the next start ([`Executor::recover`]) under the same checks; dry run deletes
//! nothing and logs the same outcome lines.

pub mod audit;
pub mod own;
mod remove;
pub mod retention;

pub use audit::{AuditLog, AuditRecord, Intent};
pub use remove::RemoveStats;
pub use retention::RetentionAction;

use crate::config::{CompiledRule, Workspace};
use crate::fsys::{self, Boundary, EntryKind, EntryStat};
use crate::policy::PlannedAction;
use crate::protect::{self, ProcSnapshot};
use remove::{Limits, Remover};
use rustix::fd::{AsFd, OwnedFd};
use std::ffi::CString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How an action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Deleted,
    Partial,
    WouldDelete,
    /// Protection, configuration or safety forbade it; nothing was touched.
    Refused,
    /// The target is no longer what was planned (another entry in its place, changed since the
    /// cut-off, already gone); nothing was touched.
    Skipped,
    Failed,
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::Partial => "partial",
            Outcome::WouldDelete => "would_delete",
            Outcome::Refused => "refused",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// What one executed action did; the same facts as its audit line.
#[derive(Clone, Debug)]
pub struct ActionReport {
    pub outcome: Outcome,
    pub record: AuditRecord,
}

/// The audit log could not be written: when it was the intent, nothing was deleted.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the audit log {path}: {source}; nothing is deleted until it can be written")]
pub struct AuditFailed {
    pub path: String,
    pub source: io::Error,
    /// The action as far as it went (`Refused` when the intent failed).
    pub report: Box<ActionReport>,
}

/// A check run right before deleting, on top of the process/lock/keep checks (e.g. the task DB).
/// Takes the project dir.
pub type ExtraProtection = Arc<dyn Fn(&Path) -> Option<String> + Send + Sync>;

pub struct Executor {
    /// Most specific (longest path) first.
    workspaces: Vec<Workspace>,
    audit: AuditLog,
    dry_run: bool,
    cancel: Arc<AtomicBool>,
    extra_protection: ExtraProtection,
    /// The last reading of the process table, reused for [`PROCS_FRESH`].
    procs: Mutex<Option<(Instant, Arc<ProcSnapshot>)>>,
    /// Rules whose entries only count when markers prove them (artifact types): a target they
    /// planned is deleted only if its markers still prove it.
    marked_rules: Vec<CompiledRule>,
}

/// How long one reading of the process table serves the protection checks of consecutive
/// actions. Reading `/proc` costs milliseconds per hundred processes; a cycle of thousands of
/// small actions would spend most of its time there. A process that starts using a dir within
/// this window of a check is no different from one that starts right after it.
const PROCS_FRESH: Duration = Duration::from_millis(100);

/// Why an action stopped before anything was touched.
struct Stop(Outcome, String);

/// Everything opened and checked for one deletion.
struct Prepared {
    parent: OwnedFd,
    name: CString,
    boundary: Boundary,
    depth: usize,
    st: EntryStat,
}

impl Executor {
    pub fn new(
        workspaces: Vec<Workspace>,
        audit: AuditLog,
        dry_run: bool,
        cancel: Arc<AtomicBool>,
        extra_protection: ExtraProtection,
    ) -> Executor {
        let mut workspaces = workspaces;
        workspaces.sort_by_key(|w| std::cmp::Reverse(w.path.as_os_str().len()));
        Executor {
            workspaces,
            audit,
            dry_run,
            cancel,
            extra_protection,
            procs: Mutex::new(None),
            marked_rules: Vec::new(),
        }
    }

    /// The rules the plans come from: an action of a rule with markers (an artifact type) is
    /// carried out only while its markers still prove the target, checked right before deleting.
    pub fn with_rules(mut self, rules: &[CompiledRule]) -> Executor {
        self.marked_rules = rules
            .iter()
            .filter(|r| r.markers.is_some())
            .cloned()
            .collect();
        self
    }

    /// Why a target an artifact rule planned no longer counts as that artifact (its marker is
    /// gone or no longer a regular file); `None` when it still does, or the rule has no markers.
    /// `parent` and `dir` are the open parent and target.
    fn marker_gone(
        &self,
        action: &PlannedAction,
        parent: rustix::fd::BorrowedFd<'_>,
        dir: rustix::fd::BorrowedFd<'_>,
    ) -> Option<String> {
        let rule = self.marked_rules.iter().find(|r| r.name == action.rule)?;
        let name = action.path.file_name()?.to_str()?;
        let beside = fsys::list_dir(parent).unwrap_or_default();
        let inside = fsys::list_dir(dir).unwrap_or_default();
        let siblings = crate::scan::Listing {
            dir: parent,
            listed: &beside,
        };
        let children = crate::scan::Listing {
            dir,
            listed: &inside,
        };
        (!rule.matches(name, true, &siblings, Some(&children))).then(|| {
            format!(
                "no longer proven a `{}` artifact: its marker is gone",
                rule.name
            )
        })
    }

    /// The process table, read now unless a reading younger than [`PROCS_FRESH`] exists.
    fn process_table(&self) -> Arc<ProcSnapshot> {
        let mut cached = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, procs)) = cached.as_ref() {
            if at.elapsed() < PROCS_FRESH {
                return procs.clone();
            }
        }
        let procs = Arc::new(ProcSnapshot::capture());
        *cached = Some((Instant::now(), procs.clone()));
        procs
    }

    pub fn audit_path(&self) -> &Path {
        self.audit.path()
    }

    /// Why nothing can be deleted now because the audit log cannot be written, if so.
    pub fn audit_health(&self) -> Result<(), String> {
        self.audit.health()
    }

    /// Why the audit log cannot be written with room to spare now (see
    /// [`AuditLog::writable`]): after a failed write, when trying again is worth it.
    pub fn audit_writable(&self) -> Result<(), String> {
        self.audit.writable()
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Executes one planned deletion and records it. Refusals and skips are reports, not errors;
    /// the error is an audit log that cannot be written (then nothing was deleted when it was
    /// the intent that failed).
    pub fn execute(&self, action: &PlannedAction) -> Result<ActionReport, AuditFailed> {
        self.execute_as(action, audit::new_id())
    }

    fn execute_as(&self, action: &PlannedAction, id: String) -> Result<ActionReport, AuditFailed> {
        // Measured on the workspace's filesystem, the only one an action may change.
        let probe = self.space_probe(action);
        let before = fsys::fs_space(&probe);
        let mut record = self.record_for(action, &id);
        let prepared = self.prepare(action);
        let (outcome, stats, error) = match prepared {
            Err(Stop(outcome, why)) => (outcome, RemoveStats::default(), Some(why)),
            Ok(_) if self.dry_run => (Outcome::WouldDelete, RemoveStats::default(), None),
            Ok(p) => {
                // Write-ahead: the intent is on disk before anything is unlinked.
                let mut intent = record.clone();
                intent.outcome = audit::INTENT.into();
                intent.intent = Some(Intent {
                    dev: p.st.dev,
                    ino: p.st.ino,
                    project: action.project.clone(),
                    min_idle_secs: action.min_idle_secs,
                    pid: std::process::id(),
                    pid_start: audit::process_start(std::process::id()).unwrap_or(0),
                });
                if let Err(source) = self.audit.record(&intent) {
                    record.outcome = Outcome::Refused.as_str().into();
                    record.error = Some(format!("audit log unwritable, nothing deleted: {source}"));
                    return Err(self.audit_failed(source, Outcome::Refused, record));
                }
                let (outcome, stats) = self.remove(action, p);
                let error = summarize_problems(&stats);
                (outcome, stats, error)
            }
        };
        let after = fsys::fs_space(&probe);
        record.ts = audit::timestamp(SystemTime::now());
        record.bytes_freed = match (before, after) {
            (Ok(b), Ok(a)) => a.avail_bytes.saturating_sub(b.avail_bytes),
            _ => 0,
        };
        record.bytes_unlinked = stats.bytes_unlinked;
        record.entries_removed = stats.entries_removed;
        record.outcome = outcome.as_str().into();
        record.error = error;
        if let Err(source) = self.audit.record(&record) {
            return Err(self.audit_failed(source, outcome, record));
        }
        Ok(ActionReport { outcome, record })
    }

    fn audit_failed(
        &self,
        source: io::Error,
        outcome: Outcome,
        record: AuditRecord,
    ) -> AuditFailed {
        AuditFailed {
            path: crate::textpath::escape(self.audit.path()),
            source,
            report: Box::new(ActionReport { outcome, record }),
        }
    }

    fn record_for(&self, action: &PlannedAction, id: &str) -> AuditRecord {
        AuditRecord {
            id: id.to_string(),
            bytes_estimated: action.bytes_estimated,
            ..AuditRecord::event(
                "delete",
                action.path.clone(),
                &action.rule,
                action.phase,
                action.reason.clone(),
                self.dry_run,
                "",
            )
        }
    }

    /// Finishes the deletions a killed process left half done: every intent near the end of the
    /// audit log without an outcome line whose process is gone is executed again, under every
    /// check (the target must still be the entry it named, unprotected, and idle as its rule
    /// requires), and its outcome recorded under the same id.
    pub fn recover(&self) -> Result<Vec<ActionReport>, AuditFailed> {
        let dangling = match audit::dangling_intents(self.audit.path()) {
            Ok(d) => d,
            Err(e) => {
                crate::warn_quiet!(
                    "audit.recover",
                    error = %e,
                    "cannot read the audit log for interrupted deletions"
                );
                return Ok(Vec::new());
            }
        };
        let mut reports = Vec::new();
        for r in dangling {
            let Some(intent) = &r.intent else { continue };
            tracing::warn!(
                path = %crate::textpath::shown(&r.path),
                id = %r.id,
                "finishing a deletion interrupted by the end of process {}",
                intent.pid
            );
            let action = PlannedAction {
                path: r.path.clone(),
                project: intent.project.clone(),
                rule: r.rule.clone(),
                phase: r.phase,
                reason: format!(
                    "finishing an interrupted deletion (intent {} of pid {}): {}",
                    r.id, intent.pid, r.reason
                ),
                bytes_estimated: r.bytes_estimated,
                inodes_estimated: 0,
                identity: (intent.dev, intent.ino),
                min_idle_secs: intent.min_idle_secs,
                rebuild: None,
            };
            reports.push(self.execute_as(&action, r.id.clone())?);
        }
        Ok(reports)
    }

    /// Where to measure free space around an action: its workspace root (the nearest existing
    /// ancestor of its project when no workspace holds it; such an action is refused anyway).
    fn space_probe(&self, action: &PlannedAction) -> PathBuf {
        match self.locate(&action.path) {
            Ok((ws, _)) => ws.path.clone(),
            Err(_) => fsys::nearest_existing(&action.project).to_path_buf(),
        }
    }

    /// Runs a configured command (the journal vacuum) with a time limit and records it.
    pub fn run_command(
        &self,
        action: &str,
        argv: &[String],
        reason: &str,
        fs_path: &Path,
        limit: Duration,
    ) -> Result<ActionReport, AuditFailed> {
        let before = fsys::fs_space(fs_path).ok();
        let (outcome, error) = if self.dry_run {
            (Outcome::WouldDelete, None)
        } else {
            match crate::child::run_with_limit(argv, limit) {
                Ok(()) => (Outcome::Deleted, None),
                Err(e) => (Outcome::Failed, Some(e)),
            }
        };
        let after = fsys::fs_space(fs_path).ok();
        let record = AuditRecord {
            bytes_freed: match (before, after) {
                (Some(b), Some(a)) => a.avail_bytes.saturating_sub(b.avail_bytes),
                _ => 0,
            },
            error,
            ..AuditRecord::event(
                action,
                PathBuf::from(argv.join(" ")),
                action,
                1,
                reason.into(),
                self.dry_run,
                if outcome == Outcome::Deleted {
                    "ok"
                } else {
                    outcome.as_str()
                },
            )
        };
        if let Err(source) = self.audit.record(&record) {
            return Err(self.audit_failed(source, outcome, record));
        }
        Ok(ActionReport { outcome, record })
    }

    /// Records an action that deletes nothing itself (git maintenance, whose child frees what
    /// it frees): the line as the caller measured it. The error is an unwritable audit log.
    pub fn record_event(
        &self,
        outcome: Outcome,
        record: AuditRecord,
    ) -> Result<ActionReport, AuditFailed> {
        if let Err(source) = self.audit.record(&record) {
            return Err(self.audit_failed(source, outcome, record));
        }
        Ok(ActionReport { outcome, record })
    }

    /// Everything checked before the intent is written: the path against the configuration,
    /// every directory down to the target opened without following symlinks or crossing a
    /// mount, the target still the entry the survey measured and idle as its rule requires, and
    /// protection read again now.
    fn prepare(&self, action: &PlannedAction) -> Result<Prepared, Stop> {
        let refuse = |why: String| Stop(Outcome::Refused, why);
        let (workspace, rel) = self.locate(&action.path).map_err(refuse)?;
        let mut parts = rel.components();
        let project_name = parts
            .next()
            .map(|c| c.as_os_str().to_owned())
            .ok_or_else(|| refuse("refusing to delete a workspace root".into()))?;
        if workspace
            .protect
            .iter()
            .any(|p| std::ffi::OsStr::new(p) == project_name)
        {
            return Err(refuse(format!(
                "`{}` is on the protect list",
                crate::textpath::escape(Path::new(&project_name))
            )));
        }
        let project_path = workspace.path.join(&project_name);
        if action.project != project_path {
            return Err(refuse(format!(
                "planned for project {} but lies in {}",
                crate::textpath::escape(&action.project),
                crate::textpath::escape(&project_path)
            )));
        }
        let root = fsys::open_dir_nofollow(&workspace.path).map_err(|e| {
            refuse(format!(
                "cannot open workspace {} without following symlinks: {e}",
                crate::textpath::escape(&workspace.path)
            ))
        })?;
        let boundary = Boundary::of(root.as_fd(), &workspace.path)
            .map_err(|e| refuse(format!("{e}: refusing to delete")))?;
        let procs = self.process_table();
        if !procs.complete {
            return Err(refuse(
                "process table unreadable: cannot prove the dir is unused".into(),
            ));
        }
        // Down from the workspace root, each directory opened, checked against the boundary,
        // and — from the project on — against protection.
        let names: Vec<_> = rel.components().map(|c| c.as_os_str().to_owned()).collect();
        let (last, dirs) = names
            .split_last()
            .ok_or_else(|| refuse("empty path".into()))?;
        let mut current = root;
        let mut shown = workspace.path.clone();
        for part in dirs {
            shown.push(part);
            let name = fsys::c_name(part).map_err(|_| refuse("a NUL byte in the path".into()))?;
            let st = fsys::stat_entry(current.as_fd(), &name).map_err(|e| {
                Stop(
                    Outcome::Skipped,
                    format!("{} is gone: {e}", crate::textpath::escape(&shown)),
                )
            })?;
            if !boundary.admits(current.as_fd(), &name, &st) {
                return Err(refuse(format!(
                    "{} is a mount point or on another filesystem",
                    crate::textpath::escape(&shown)
                )));
            }
            let next = fsys::open_child_dir(current.as_fd(), &name).map_err(|e| {
                refuse(format!(
                    "cannot open {} without following symlinks: {e}",
                    crate::textpath::escape(&shown)
                ))
            })?;
            let opened = fsys::stat_fd(next.as_fd()).map_err(|e| refuse(e.to_string()))?;
            if (opened.dev, opened.ino) != (st.dev, st.ino) {
                return Err(refuse(format!(
                    "{} changed while it was opened",
                    crate::textpath::escape(&shown)
                )));
            }
            if let Some(p) = protect::check_open_dir(next.as_fd(), &opened, &shown, &procs) {
                return Err(refuse(p.to_string()));
            }
            current = next;
        }
        let name = fsys::c_name(last).map_err(|_| refuse("a NUL byte in the path".into()))?;
        let st = match fsys::stat_entry(current.as_fd(), &name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Stop(Outcome::Skipped, "already gone".into()))
            }
            Err(e) => return Err(refuse(format!("cannot stat: {e}"))),
        };
        if (st.dev, st.ino) != action.identity {
            return Err(Stop(
                Outcome::Skipped,
                format!(
                    "another entry is in its place (dev {} ino {}, planned dev {} ino {})",
                    st.dev, st.ino, action.identity.0, action.identity.1
                ),
            ));
        }
        if !boundary.admits(current.as_fd(), &name, &st) {
            return Err(refuse("is a mount point or on another filesystem".into()));
        }
        let protection = if st.kind == EntryKind::Dir {
            let fd = fsys::open_child_dir(current.as_fd(), &name)
                .map_err(|e| refuse(format!("cannot open without following symlinks: {e}")))?;
            let opened = fsys::stat_fd(fd.as_fd()).map_err(|e| refuse(e.to_string()))?;
            if (opened.dev, opened.ino) != (st.dev, st.ino) {
                return Err(refuse("changed while it was opened".into()));
            }
            if let Some(why) = self.marker_gone(action, current.as_fd(), fd.as_fd()) {
                return Err(Stop(Outcome::Skipped, why));
            }
            protect::check_open_dir(fd.as_fd(), &opened, &action.path, &procs)
        } else {
            protect::check_identity(st.dev, st.ino, &action.path, &procs)
        };
        if let Some(p) = protection {
            return Err(refuse(p.to_string()));
        }
        if let Some(why) = (self.extra_protection)(&project_path) {
            return Err(refuse(why));
        }
        // The re-check a kind of target names for itself (a `.git` with unpushed work).
        if let Some(why) = crate::git::keep_reason(&action.path, st.kind, action.phase) {
            return Err(Stop(Outcome::Skipped, why));
        }
        if let Some(cutoff) = cutoff(action) {
            if st.changed() > cutoff && !own::is_own(&st) {
                return Err(Stop(
                    Outcome::Skipped,
                    format!(
                        "changed {}s ago, under the {}s its rule requires",
                        now_secs().saturating_sub(st.changed()),
                        action.min_idle_secs.unwrap_or(0)
                    ),
                ));
            }
        }
        Ok(Prepared {
            parent: current,
            name,
            boundary,
            depth: names.len(),
            st,
        })
    }

    fn remove(&self, action: &PlannedAction, p: Prepared) -> (Outcome, RemoveStats) {
        self.remove_prepared(&action.path, p, cutoff(action))
    }

    /// Removes a prepared entry; entries changed after `unchanged_since` are left in place.
    fn remove_prepared(
        &self,
        path: &Path,
        p: Prepared,
        unchanged_since: Option<i64>,
    ) -> (Outcome, RemoveStats) {
        let mut remover = Remover::new(Limits {
            boundary: &p.boundary,
            cancel: &self.cancel,
            unchanged_since,
        });
        match remover.remove_entry(p.parent.as_fd(), &p.name, path, p.depth) {
            Ok(true) => (Outcome::Deleted, remover.stats),
            Ok(false) => (Outcome::Partial, remover.stats),
            Err(remove::Interrupted) => (Outcome::Interrupted, remover.stats),
        }
    }

    /// The most specific workspace holding `path` and the path relative to it. Only plain
    /// components are accepted: no `..`, no `.`, nothing outside a configured workspace.
    fn locate(&self, path: &Path) -> Result<(&Workspace, PathBuf), String> {
        let raw = path.as_os_str().as_encoded_bytes();
        if !path.is_absolute()
            || raw
                .split(|b| *b == b'/')
                .skip(1)
                .any(|seg| seg.is_empty() || seg == b"." || seg == b"..")
            || path
                .components()
                .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
        {
            return Err(format!(
                "{} is not a plain absolute path",
                crate::textpath::escape(path)
            ));
        }
        self.workspaces
            .iter()
            .find_map(|ws| {
                let rel = path.strip_prefix(&ws.path).ok()?;
                (!rel.as_os_str().is_empty()).then(|| (ws, rel.to_path_buf()))
            })
            .ok_or_else(|| {
                format!(
                    "{} is not inside a configured workspace",
                    crate::textpath::escape(path)
                )
            })
    }
}

/// The newest change an entry of `action` may have: now minus the rule's idle time.
fn cutoff(action: &PlannedAction) -> Option<i64> {
    action
        .min_idle_secs
        .map(|s| now_secs().saturating_sub(i64::try_from(s).unwrap_or(i64::MAX)))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One line about what was left in place or failed, for the audit record.
fn summarize_problems(stats: &RemoveStats) -> Option<String> {
    let mut parts = Vec::new();
    if let Some((path, why)) = stats.left_in_place.first() {
        parts.push(format!(
            "left {} in place ({why}){}",
            crate::textpath::escape(path),
            more(stats.left_in_place.len())
        ));
    }
    if let Some((path, why)) = stats.errors.first() {
        parts.push(format!(
            "{}: {why}{}",
            crate::textpath::escape(path),
            more(stats.errors.len())
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn more(n: usize) -> String {
    if n > 1 {
        format!(" and {} more", n - 1)
    } else {
        String::new()
    }
}
