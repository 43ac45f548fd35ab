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
mod prepare;
mod remove;
pub mod retention;

pub use audit::{AuditLog, AuditRecord, Intent};
pub use remove::RemoveStats;
pub use retention::RetentionAction;

use crate::config::{CompiledRule, Workspace};
use crate::fsys::{self, Boundary, EntryStat};
use crate::policy::PlannedAction;
use crate::protect::ProcSnapshot;
use prepare::cutoff;
use remove::{Limits, Remover};
use rustix::fd::{AsFd, OwnedFd};
use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
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

    /// A reading of the process table taken elsewhere (the plan's, begun at `at`): the next
    /// checks use it while it is younger than [`PROCS_FRESH`], as they would their own.
    pub fn offer_process_table(&self, (at, procs): (Instant, Arc<ProcSnapshot>)) {
        let mut cached = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_ref().is_none_or(|(mine, _)| *mine < at) {
            *cached = Some((at, procs));
        }
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
                self.record_intent(&intent, &mut record)?;
                let (outcome, stats) = self.remove(action, p);
                let error = summarize_problems(&stats);
                (outcome, stats, error)
            }
        };
        self.record_outcome(record, outcome, &stats, error, &probe, before)
    }

    /// Writes an intent line (fsync'd) before anything is unlinked; when it cannot be written,
    /// `record` becomes the refusal and nothing may be deleted.
    fn record_intent(
        &self,
        intent: &AuditRecord,
        record: &mut AuditRecord,
    ) -> Result<(), AuditFailed> {
        if let Err(source) = self.audit.record(intent) {
            record.outcome = Outcome::Refused.as_str().into();
            record.error = Some(format!("audit log unwritable, nothing deleted: {source}"));
            return Err(self.audit_failed(source, Outcome::Refused, record.clone()));
        }
        Ok(())
    }

    /// Completes `record` with what the removal did and what `statvfs` of `probe` shows was
    /// freed since `before`, and writes it: the action's outcome line.
    fn record_outcome(
        &self,
        mut record: AuditRecord,
        outcome: Outcome,
        stats: &RemoveStats,
        error: Option<String>,
        probe: &Path,
        before: io::Result<fsys::FsSpace>,
    ) -> Result<ActionReport, AuditFailed> {
        let after = fsys::fs_space(probe);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn executor(dir: &Path) -> Executor {
        Executor::new(
            Vec::new(),
            AuditLog::new(&dir.join("audit.log")),
            true,
            Arc::new(AtomicBool::new(false)),
            Arc::new(|_: &Path| None),
        )
    }

    /// The plan's reading of the process table serves the first checks while it is fresh, never
    /// replaces a newer reading, and one too old to serve is read again.
    #[test]
    fn an_offered_process_table_serves_while_fresh_and_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let ex = executor(dir.path());
        let plan = Arc::new(ProcSnapshot::default());
        ex.offer_process_table((Instant::now(), plan.clone()));
        assert!(Arc::ptr_eq(&ex.process_table(), &plan));
        let older = Arc::new(ProcSnapshot::default());
        ex.offer_process_table((Instant::now() - Duration::from_secs(1), older.clone()));
        assert!(
            Arc::ptr_eq(&ex.process_table(), &plan),
            "an older reading was taken"
        );

        let ex = executor(dir.path());
        let stale = Arc::new(ProcSnapshot::default());
        ex.offer_process_table((Instant::now() - 2 * PROCS_FRESH, stale.clone()));
        assert!(
            !Arc::ptr_eq(&ex.process_table(), &stale),
            "a reading older than PROCS_FRESH served a check"
        );
    }
}
