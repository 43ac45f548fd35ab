//! The completion policy (`guardian task done`): a task's work dir is deleted now through the
//! safe executor when the task is done or discarded, and kept for debugging when it failed or
//! errored — for `keep_failed_for`, within `keep_failed_max` bytes (oldest kept dir dropped
//! first). Kept dirs are recorded in Guardian's own `kept.json` in `state_dir`, never in the
//! task DB.
//!
//! Invariants: a PATH that is not a plain, direct, non-symlink child of a configured task area
//! is refused before anything is touched; every deletion goes through the executor (protection
//! re-checked, audited).

use super::clock::{human_secs, now_secs, rfc3339};
use super::running_protection;
use crate::cleanup::{AuditLog, AuditRecord, Executor, Outcome};
use crate::config::{human_bytes, Config, Workspace};
use crate::fsys::{self, EntryKind};
use crate::policy::PlannedAction;
use crate::textpath::shown;
use rustix::fd::AsFd;
use serde::Serialize;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use super::registry::{
    expired, over_cap, read_registry, FinishedDir, KeptDir, Locked, Registry, KEPT_FILE,
};

/// How a task ended, as the wrapper reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DoneStatus {
    Done,
    Failed,
    Error,
    Discarded,
}

impl DoneStatus {
    pub fn parse(s: &str) -> Option<DoneStatus> {
        Some(match s {
            "done" => DoneStatus::Done,
            "failed" => DoneStatus::Failed,
            "error" => DoneStatus::Error,
            "discarded" => DoneStatus::Discarded,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DoneStatus::Done => "done",
            DoneStatus::Failed => "failed",
            DoneStatus::Error => "error",
            DoneStatus::Discarded => "discarded",
        }
    }

    /// Failed and errored tasks are kept for debugging; the rest are cleaned now.
    pub fn keeps(self) -> bool {
        matches!(self, DoneStatus::Failed | DoneStatus::Error)
    }
}

/// Why `task done` did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DoneError {
    /// PATH or arguments are wrong: exit 2, nothing touched.
    #[error("{0}")]
    Usage(String),
    /// Something failed at run time (refused by protection, IO): exit 1.
    #[error("{0}")]
    Runtime(String),
}

/// What `task done` did.
#[derive(Clone, Debug, Serialize)]
pub struct DoneReport {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    pub status: DoneStatus,
    pub task: Option<String>,
    /// `deleted`, `would_delete`, `kept`, `already_gone`, `refused`, `partial`, `failed`.
    pub result: String,
    pub message: String,
    /// Kept dirs dropped to stay under `keep_failed_max`.
    #[serde(with = "crate::textpath::list")]
    pub dropped: Vec<PathBuf>,
}

/// Pure checks of PATH against the configuration: absolute, no `.`/`..`, a direct child of a
/// task area, not a protected name. Returns the task area and the child's name.
pub fn check_task_path<'a>(
    config: &'a Config,
    dir: &Path,
) -> Result<(&'a Workspace, OsString), String> {
    let shown_dir = shown(dir);
    if !dir.is_absolute() {
        return Err(format!("{shown_dir} must be an absolute path"));
    }
    let raw = dir.as_os_str().as_encoded_bytes();
    if raw
        .split(|b| *b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
        || dir
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!(
            "{shown_dir} must not contain `.` or `..` components"
        ));
    }
    let areas: Vec<&Workspace> = config
        .workspaces
        .iter()
        .filter(|w| config.tasks.task_areas.contains(&w.path))
        .collect();
    if areas.is_empty() {
        return Err(
            "no task area is configured (tasks.task_areas): `task done` has nothing it may clean"
                .into(),
        );
    }
    let Some(area) = areas.iter().find(|w| dir.starts_with(&w.path)) else {
        return Err(format!(
            "{shown_dir} is outside every task area ({})",
            areas
                .iter()
                .map(|w| shown(&w.path).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let rel = dir.strip_prefix(&area.path).unwrap_or(dir);
    let mut parts = rel.components();
    let name = match (parts.next(), parts.next()) {
        (Some(Component::Normal(n)), None) => n.to_os_string(),
        (None, _) => {
            return Err(format!(
                "{shown_dir} is the task area itself, not a work dir in it"
            ))
        }
        _ => {
            return Err(format!(
            "{shown_dir} is not a direct child of the task area {} (a task's work dir is {}/<name>)",
            shown(&area.path),
            shown(&area.path)
        ))
        }
    };
    if area.protect.iter().any(|p| std::ffi::OsStr::new(p) == name) {
        return Err(format!(
            "{shown_dir} is on the task area's protect list and is never deleted"
        ));
    }
    Ok((area, name))
}

/// Runs the completion policy for one work dir. `task` is the task's id in the DB: its own
/// `running` row does not protect the dir.
pub fn task_done(
    config: &Config,
    dir: &Path,
    status: DoneStatus,
    task: Option<&str>,
) -> Result<DoneReport, DoneError> {
    let (area, name) = check_task_path(config, dir).map_err(DoneError::Usage)?;
    let path = area.path.join(&name);
    let mut report = DoneReport {
        path: path.clone(),
        status,
        task: task.map(str::to_string),
        result: String::new(),
        message: String::new(),
        dropped: Vec::new(),
    };
    // Look at the entry itself, through the area's fd, without following a symlink.
    let root = fsys::open_dir_path(&area.path).map_err(|e| {
        DoneError::Runtime(format!("cannot open task area {}: {e}", shown(&area.path)))
    })?;
    let cname =
        fsys::c_name(&name).map_err(|_| DoneError::Usage("name contains a NUL byte".into()))?;
    let exists = match fsys::stat_entry(root.as_fd(), &cname) {
        Ok(st) if st.kind == EntryKind::Symlink => {
            return Err(DoneError::Usage(format!(
                "{} is a symlink: Guardian never follows or deletes through one",
                shown(&path)
            )))
        }
        Ok(st) if st.kind != EntryKind::Dir => {
            return Err(DoneError::Usage(format!(
                "{} is not a directory",
                shown(&path)
            )))
        }
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(DoneError::Runtime(format!(
                "cannot stat {}: {e}",
                shown(&path)
            )))
        }
    };
    let open_audit = || {
        AuditLog::open(&config.daemon.audit_log).map_err(|e| {
            DoneError::Runtime(format!(
                "cannot open the audit log {}: {e}",
                shown(&config.daemon.audit_log)
            ))
        })
    };
    let notes = open_audit()?;
    let executor = Executor::new(
        config.workspaces.clone(),
        open_audit()?,
        config.daemon.dry_run,
        Arc::new(AtomicBool::new(false)),
        running_protection(config, task.map(str::to_string)),
    );
    let mut locked = Locked::open(&config.daemon.state_dir).map_err(|e| {
        DoneError::Runtime(format!(
            "cannot lock the kept-dir registry in {}: {e}",
            shown(&config.daemon.state_dir)
        ))
    })?;
    let now = now_secs();
    let who = match task {
        Some(t) => format!("task {t}"),
        None => "the task".to_string(),
    };
    if !exists {
        locked.registry.forget(&path);
        save(&locked)?;
        report.result = "already_gone".into();
        report.message = format!("{} does not exist: nothing to do", shown(&path));
        return Ok(report);
    }
    if !status.keeps() {
        let reason = format!(
            "{who} ended with status {}: its work dir is cleaned now (completion policy)",
            status.as_str()
        );
        let rule = if status == DoneStatus::Done {
            "task_done"
        } else {
            "task_discarded"
        };
        let bytes = crate::scan::scan_path(&path)
            .map(|w| w.tally.usage().allocated)
            .unwrap_or(0);
        let r = execute(&executor, &path, rule, &reason, bytes, Planned::default())?;
        match r.0 {
            Outcome::Deleted => {
                locked.registry.forget(&path);
                save(&locked)?;
            }
            Outcome::WouldDelete => {}
            _ => {
                locked.registry.finish(FinishedDir {
                    path: path.clone(),
                    task: task.map(str::to_string),
                    status: status.as_str().into(),
                    at: now,
                    why: r.1.error.clone().unwrap_or_else(|| r.0.as_str().into()),
                });
                save(&locked)?;
            }
        }
        report.result = r.0.as_str().into();
        report.message = match r.0 {
            Outcome::Deleted => format!(
                "deleted {} ({} freed)",
                shown(&path),
                human_bytes(r.1.bytes_freed)
            ),
            Outcome::WouldDelete => format!("dry run: would delete {}", shown(&path)),
            _ => format!(
                "{} not deleted: {}; recorded as finished: the sweep deletes it once nothing protects it",
                shown(&path),
                r.1.error.clone().unwrap_or_default()
            ),
        };
        return Ok(report);
    }
    // Failed or errored: keep it, then enforce the cap on kept bytes.
    let bytes = crate::scan::scan_path(&path)
        .map(|w| w.tally.usage().allocated)
        .unwrap_or(0);
    locked.registry.forget(&path);
    locked.registry.kept.push(KeptDir {
        path: path.clone(),
        task: task.map(str::to_string),
        status: status.as_str().into(),
        kept_at: now,
        bytes,
    });
    let ttl = config.tasks.keep_failed_for;
    notes
        .record(&AuditRecord {
            bytes_estimated: bytes,
            ..AuditRecord::event(
                "task_keep",
                path.clone(),
                "keep_failed_for",
                0,
                format!(
                    "{who} ended with status {}: work dir kept for debugging until {} (keep_failed_for {ttl})",
                    status.as_str(),
                    rfc3339(now + ttl.0.as_secs() as i64)
                ),
                config.daemon.dry_run,
                "kept",
            )
        })
        .map_err(audit_failed)?;
    report.dropped = enforce_cap(&executor, &mut locked, config.tasks.keep_failed_max.0, now)?;
    save(&locked)?;
    report.result = "kept".into();
    report.message = format!(
        "kept {} ({}) for debugging until {}{}",
        shown(&path),
        human_bytes(bytes),
        rfc3339(now + ttl.0.as_secs() as i64),
        if report.dropped.is_empty() {
            String::new()
        } else {
            format!(
                "; dropped {} older kept dirs to stay under keep_failed_max {}",
                report.dropped.len(),
                config.tasks.keep_failed_max
            )
        }
    );
    if report.dropped.contains(&path) {
        report.result = "deleted".into();
        report.message = format!(
            "{} ({}) alone exceeds keep_failed_max {}: deleted instead of kept",
            shown(&path),
            human_bytes(bytes),
            config.tasks.keep_failed_max
        );
    }
    Ok(report)
}

/// Drops kept dirs, oldest first, until the kept bytes fit `cap`. Returns the dropped paths.
pub fn enforce_cap(
    executor: &Executor,
    locked: &mut Locked,
    cap: u64,
    now: i64,
) -> Result<Vec<PathBuf>, DoneError> {
    let total: u64 = locked.registry.kept.iter().map(|k| k.bytes).sum();
    let drop = over_cap(&locked.registry.kept, cap);
    let mut dropped = Vec::new();
    for i in drop {
        let k = locked.registry.kept[i].clone();
        let reason = format!(
            "kept {} dirs use {} > keep_failed_max {}: the oldest kept dir goes first (kept {} ago)",
            locked.registry.kept.len(),
            human_bytes(total),
            human_bytes(cap),
            human_secs(now - k.kept_at)
        );
        let (outcome, _) = execute(
            executor,
            &k.path,
            "keep_failed_max",
            &reason,
            k.bytes,
            Planned::default(),
        )?;
        if outcome == Outcome::Deleted {
            dropped.push(k.path.clone());
        }
    }
    locked.registry.kept.retain(|k| !dropped.contains(&k.path));
    Ok(dropped)
}

/// One deletion through the executor, phase 0 (task policy, not disk pressure).
/// What a deletion was decided on: the dir's identity then (`None`: the dir there now) and the
/// idle time its rule requires.
#[derive(Clone, Copy, Debug, Default)]
pub struct Planned {
    pub identity: Option<(u64, u64)>,
    pub min_idle_secs: Option<u64>,
}

pub fn execute(
    executor: &Executor,
    path: &Path,
    rule: &str,
    reason: &str,
    bytes: u64,
    planned: Planned,
) -> Result<(Outcome, AuditRecord), DoneError> {
    let identity = match planned.identity {
        Some(id) => id,
        None => crate::fsys::identity_of(path).unwrap_or((0, 0)),
    };
    let action = PlannedAction {
        path: path.to_path_buf(),
        project: path.to_path_buf(),
        rule: rule.into(),
        phase: 0,
        reason: reason.into(),
        bytes_estimated: bytes,
        inodes_estimated: 0,
        identity,
        min_idle_secs: planned.min_idle_secs,
        rebuild: None,
    };
    let report = executor
        .execute(&action)
        .map_err(|e| DoneError::Runtime(e.to_string()))?;
    Ok((report.outcome, report.record))
}

fn audit_failed(e: io::Error) -> DoneError {
    DoneError::Runtime(format!(
        "cannot write the audit log: {e}; stopping rather than acting unrecorded"
    ))
}

fn save(locked: &Locked) -> Result<(), DoneError> {
    locked.save().map_err(|e| {
        DoneError::Runtime(format!(
            "cannot write the kept-dir registry in {}: {e}",
            shown(locked.dir())
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(name: &str, at: i64, bytes: u64) -> KeptDir {
        KeptDir {
            path: PathBuf::from(format!("/ws/{name}")),
            task: None,
            status: "failed".into(),
            kept_at: at,
            bytes,
        }
    }

    #[test]
    fn over_the_cap_the_oldest_kept_dirs_go_first() {
        let list = vec![kept("c", 300, 40), kept("a", 100, 30), kept("b", 200, 50)];
        assert!(over_cap(&list, 120).is_empty());
        assert_eq!(over_cap(&list, 119), [1]); // a, the oldest
        assert_eq!(over_cap(&list, 60), [1, 2]); // a then b; c (40) fits
        assert_eq!(over_cap(&list, 0), [1, 2, 0]);
        // The newest alone over the cap: everything goes, the newest last.
        assert_eq!(
            over_cap(&[kept("x", 1, 10), kept("y", 2, 500)], 100),
            [0, 1]
        );
        // Kept in the same second: the one kept first goes first, whatever the names.
        assert_eq!(over_cap(&[kept("z", 5, 10), kept("a", 5, 10)], 15), [0]);
    }

    #[test]
    fn kept_dirs_expire_after_the_ttl() {
        let k = kept("a", 1000, 1);
        assert!(!expired(&k, 72 * 3600, 1000 + 72 * 3600));
        assert!(expired(&k, 72 * 3600, 1001 + 72 * 3600));
    }

    #[test]
    fn task_paths_must_be_plain_direct_children_of_a_task_area() {
        let text = r#"
[[workspaces]]
path = "/srv/tasks"
protect = ["output"]
[[workspaces]]
path = "/srv/projects"
[tasks]
task_areas = ["/srv/tasks"]
"#;
        let config = Config::parse(text, "test").unwrap();
        let ok = |p: &str| check_task_path(&config, Path::new(p)).map(|(_, n)| n);
        assert_eq!(ok("/srv/tasks/alpha").unwrap(), "alpha");
        assert_eq!(ok("/srv/tasks/alpha/").unwrap(), "alpha");
        for (bad, why) in [
            ("srv/tasks/alpha", "absolute"),
            ("/srv/tasks/../projects/beta", "`..`"),
            ("/srv/tasks/alpha/..", "`..`"),
            ("/srv/tasks/./alpha", "`..`"),
            ("/srv/tasks", "task area itself"),
            ("/srv/tasks/alpha/sub", "direct child"),
            ("/srv/projects/beta", "outside every task area"),
            ("/etc", "outside every task area"),
            ("/srv/tasks/output", "protect list"),
        ] {
            let err = ok(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
