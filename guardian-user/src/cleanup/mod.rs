//! The cleanup executor: the only code in Guardian that deletes. It resolves each planned path
//! below a configured workspace root with directory fds (never following a symlink, never
//! crossing a device or mount), re-checks protection immediately before deleting, removes the
//! tree safely, measures what was really freed with `statvfs`, and appends one fsync'd audit
//! line per action before reporting it.
//!
//! Invariants: nothing outside a configured workspace is ever deleted; a workspace itself and
//! names on its protect list are never deleted; dry run deletes nothing and logs the same lines.

pub mod audit;
mod remove;

pub use audit::{AuditLog, AuditRecord};
pub use remove::{Boundary, RemoveStats};

use crate::config::Workspace;
use crate::fsys;
use crate::policy::PlannedAction;
use crate::protect::{self, ProcSnapshot};
use remove::Remover;
use rustix::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

/// How an action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Deleted,
    Partial,
    WouldDelete,
    Refused,
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

/// A check run right before deleting, on top of the process/lock/keep checks (e.g. the task DB).
pub type ExtraProtection = Arc<dyn Fn(&Path) -> Option<String> + Send + Sync>;

pub struct Executor {
    workspaces: Vec<Workspace>,
    audit: AuditLog,
    dry_run: bool,
    cancel: Arc<AtomicBool>,
    extra_protection: ExtraProtection,
}

/// Why an action was refused before anything was touched.
struct Refusal(String);

impl Executor {
    pub fn new(
        workspaces: Vec<Workspace>,
        audit: AuditLog,
        dry_run: bool,
        cancel: Arc<AtomicBool>,
        extra_protection: ExtraProtection,
    ) -> Executor {
        Executor {
            workspaces,
            audit,
            dry_run,
            cancel,
            extra_protection,
        }
    }

    pub fn audit_path(&self) -> &Path {
        self.audit.path()
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Executes one planned deletion and records it. An audit write failure is returned as an
    /// error: an action that cannot be recorded is not reported as done.
    pub fn execute(&self, action: &PlannedAction) -> std::io::Result<ActionReport> {
        // Measured on the workspace's filesystem, the only one an action may change: statvfs
        // follows symlinks, and the action's path (or project) may be a symlink to another one.
        let probe = self.space_probe(action);
        let before = fsys::fs_space(&probe);
        let (outcome, stats, error) = match self.resolve_and_remove(action) {
            Ok((outcome, stats)) => {
                let error = summarize_problems(&stats);
                (outcome, stats, error)
            }
            Err(Refusal(why)) => (Outcome::Refused, RemoveStats::default(), Some(why)),
        };
        let after = fsys::fs_space(&probe);
        let bytes_freed = match (before, after) {
            (Ok(b), Ok(a)) => a.avail_bytes.saturating_sub(b.avail_bytes),
            _ => 0,
        };
        let record = AuditRecord {
            ts: audit::timestamp(SystemTime::now()),
            action: "delete".into(),
            path: action.path.clone(),
            rule: action.rule.clone(),
            phase: action.phase,
            reason: action.reason.clone(),
            bytes_estimated: action.bytes_estimated,
            bytes_freed,
            bytes_unlinked: stats.bytes_unlinked,
            entries_removed: stats.entries_removed,
            dry_run: self.dry_run,
            outcome: outcome.as_str().into(),
            error,
        };
        self.audit.record(&record)?;
        Ok(ActionReport { outcome, record })
    }

    /// Where to measure free space around an action: its workspace root (the nearest existing
    /// ancestor of its project when no workspace holds it; such an action is refused anyway).
    fn space_probe(&self, action: &PlannedAction) -> PathBuf {
        self.workspaces
            .iter()
            .map(|ws| ws.path.as_path())
            .find(|ws| action.path.starts_with(ws))
            .unwrap_or_else(|| fsys::nearest_existing(&action.project))
            .to_path_buf()
    }

    /// Runs a configured command (the journal vacuum) and records it.
    pub fn run_command(
        &self,
        action: &str,
        argv: &[String],
        reason: &str,
        fs_path: &Path,
    ) -> std::io::Result<ActionReport> {
        let before = fsys::fs_space(fs_path).ok();
        let (outcome, error) = if self.dry_run {
            (Outcome::WouldDelete, None)
        } else {
            match std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .output()
            {
                Ok(out) if out.status.success() => (Outcome::Deleted, None),
                Ok(out) => (
                    Outcome::Failed,
                    Some(format!(
                        "{} exited with {}: {}",
                        argv[0],
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                ),
                Err(e) => (
                    Outcome::Failed,
                    Some(format!("cannot run {}: {e}", argv[0])),
                ),
            }
        };
        let after = fsys::fs_space(fs_path).ok();
        let record = AuditRecord {
            ts: audit::timestamp(SystemTime::now()),
            action: action.into(),
            path: PathBuf::from(argv.join(" ")),
            rule: action.into(),
            phase: 1,
            reason: reason.into(),
            bytes_estimated: 0,
            bytes_freed: match (before, after) {
                (Some(b), Some(a)) => a.avail_bytes.saturating_sub(b.avail_bytes),
                _ => 0,
            },
            bytes_unlinked: 0,
            entries_removed: 0,
            dry_run: self.dry_run,
            outcome: if outcome == Outcome::Deleted {
                "ok".into()
            } else {
                outcome.as_str().into()
            },
            error,
        };
        self.audit.record(&record)?;
        Ok(ActionReport { outcome, record })
    }

    /// Checks the action against the configuration, opens the path below its workspace root
    /// without following symlinks, re-checks protection, and removes it.
    fn resolve_and_remove(
        &self,
        action: &PlannedAction,
    ) -> Result<(Outcome, RemoveStats), Refusal> {
        let (workspace, rel) = self.locate(&action.path)?;
        let project_name = rel.components().next().map(|c| c.as_os_str().to_owned());
        let project_name =
            project_name.ok_or_else(|| Refusal("refusing to delete a workspace root".into()))?;
        if workspace
            .protect
            .iter()
            .any(|p| std::ffi::OsStr::new(p) == project_name)
        {
            return Err(Refusal(format!(
                "`{}` is on the protect list",
                project_name.to_string_lossy()
            )));
        }
        let root = fsys::open_dir_path(&workspace.path).map_err(|e| {
            Refusal(format!(
                "cannot open workspace {}: {e}",
                workspace.path.display()
            ))
        })?;
        let root_stat = fsys::stat_fd(root.as_fd())
            .map_err(|e| Refusal(format!("cannot stat workspace: {e}")))?;
        let boundary = Boundary::of(&root_stat);
        let (parent, name) = open_parent(root, &rel, &boundary, &workspace.path)?;

        let project_path = workspace.path.join(&project_name);
        self.recheck_protection(&project_path, &action.path)?;

        let st = match fsys::stat_entry(parent.as_fd(), &name) {
            Ok(st) => st,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Outcome::Deleted, RemoveStats::default()));
            }
            Err(e) => return Err(Refusal(format!("cannot stat: {e}"))),
        };
        if !boundary.contains(&st) {
            return Err(Refusal("is a mount point or on another filesystem".into()));
        }
        if self.dry_run {
            return Ok((Outcome::WouldDelete, RemoveStats::default()));
        }
        let mut remover = Remover {
            boundary,
            cancel: &self.cancel,
            stats: RemoveStats::default(),
        };
        match remover.remove_entry(
            parent.as_fd(),
            &name,
            &action.path,
            rel.components().count(),
        ) {
            Ok(true) => Ok((Outcome::Deleted, remover.stats)),
            Ok(false) => Ok((Outcome::Partial, remover.stats)),
            Err(remove::Interrupted) => Ok((Outcome::Interrupted, remover.stats)),
        }
    }

    /// The workspace holding `path` and the path relative to it. Only plain components are
    /// accepted: no `..`, no `.`, nothing outside a configured workspace.
    fn locate(&self, path: &Path) -> Result<(&Workspace, PathBuf), Refusal> {
        if path
            .components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
        {
            return Err(Refusal(format!(
                "{} is not a plain absolute path",
                path.display()
            )));
        }
        self.workspaces
            .iter()
            .find_map(|ws| {
                let rel = path.strip_prefix(&ws.path).ok()?;
                (!rel.as_os_str().is_empty()).then(|| (ws, rel.to_path_buf()))
            })
            .ok_or_else(|| {
                Refusal(format!(
                    "{} is not inside a configured workspace",
                    path.display()
                ))
            })
    }

    /// Protection, read again now: processes, locks, keep markers, and the extra check. The
    /// target and every directory above it up to the project are checked: a keep marker
    /// protects its whole subtree, also when it appeared after planning.
    fn recheck_protection(&self, project: &Path, target: &Path) -> Result<(), Refusal> {
        let procs = ProcSnapshot::capture();
        if !procs.complete {
            return Err(Refusal(
                "process table unreadable: cannot prove the dir is unused".into(),
            ));
        }
        // `project` is the first component of `target` below its workspace: this walks from the
        // target up to and including the project.
        for dir in target.ancestors().take_while(|d| d.starts_with(project)) {
            if let Some(p) = protect::check_dir(dir, &procs) {
                return Err(Refusal(p.to_string()));
            }
        }
        if let Some(why) = (self.extra_protection)(project) {
            return Err(Refusal(why));
        }
        Ok(())
    }
}

/// Opens every directory from the workspace root down to the parent of the target, each with
/// `O_NOFOLLOW` and checked to be on the root's filesystem and mount. Returns the parent fd and
/// the target's name.
fn open_parent(
    root: OwnedFd,
    rel: &Path,
    boundary: &Boundary,
    root_path: &Path,
) -> Result<(OwnedFd, std::ffi::CString), Refusal> {
    let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_owned()).collect();
    let (last, dirs) = parts
        .split_last()
        .ok_or_else(|| Refusal("empty path".into()))?;
    let mut current = root;
    let mut shown = root_path.to_path_buf();
    for part in dirs {
        shown.push(part);
        let name = fsys::c_name(part).map_err(|_| Refusal("name contains a NUL byte".into()))?;
        let next = fsys::open_child_dir(current.as_fd(), &name).map_err(|e| {
            Refusal(format!(
                "cannot open {} without following symlinks: {e}",
                shown.display()
            ))
        })?;
        let st = fsys::stat_fd(next.as_fd())
            .map_err(|e| Refusal(format!("cannot stat {}: {e}", shown.display())))?;
        if !boundary.contains(&st) {
            return Err(Refusal(format!(
                "{} is a mount point or on another filesystem",
                shown.display()
            )));
        }
        current = next;
    }
    let name = fsys::c_name(last).map_err(|_| Refusal("name contains a NUL byte".into()))?;
    Ok((current, name))
}

/// One line about what was left in place or failed, for the audit record.
fn summarize_problems(stats: &RemoveStats) -> Option<String> {
    let mut parts = Vec::new();
    if let Some((path, why)) = stats.left_in_place.first() {
        parts.push(format!(
            "left {} in place ({why}){}",
            path.display(),
            more(stats.left_in_place.len())
        ));
    }
    if let Some((path, why)) = stats.errors.first() {
        parts.push(format!(
            "{}: {why}{}",
            path.display(),
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
