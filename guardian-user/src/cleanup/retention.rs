//! The executor's entry point for retention: delete one entry of a retention dir because rule R
//! decided so. Same machinery and audit as every deletion (workspace located, every dir opened
//! without following symlinks or crossing a mount, the target re-identified by (dev, ino),
//! fsync'd intent first), with the retention-specific checks right before deleting: the entry
//! unchanged since it was decided on, not pinned (`.guardian-keep` inside it, `NAME.guardian-keep`
//! beside it, a keep marker on the way down), not the target of a pointer (`current`, `latest`:
//! resolved again now), and not held by a process or lock.
//!
//! Unlike a phase-1 rule, a process working elsewhere in the project (the training job that
//! writes the versions) or a running task of the project does not block retention: the rule
//! names the series explicitly and the entry itself is checked. Never a workspace root or a
//! project dir itself, never a protected name.

use super::{
    audit, summarize_problems, ActionReport, AuditFailed, AuditRecord, Executor, Intent, Outcome,
    Prepared, Stop,
};
use crate::fsys::{self, EntryKind};
use crate::protect;
use rustix::fd::{AsFd, BorrowedFd};
use std::io;
use std::path::{Path, PathBuf};

/// One entry a retention rule decided to remove.
#[derive(Clone, Debug)]
pub struct RetentionAction {
    /// The entry: `<retention dir>/<name>`.
    pub path: PathBuf,
    /// The rule's name; audited as `retention:NAME`.
    pub rule: String,
    /// The decision's reason (`deleted: beyond keep_last 3`).
    pub reason: String,
    /// (dev, ino) when decided on.
    pub identity: (u64, u64),
    /// Its newest change (mtime or ctime of the entry itself) when decided on.
    pub changed: i64,
    pub bytes_estimated: u64,
    /// The rule's pointer names, re-resolved now.
    pub pointers: Vec<String>,
}

impl RetentionAction {
    /// The audit rule name.
    pub fn audit_rule(&self) -> String {
        format!("retention:{}", self.rule)
    }
}

impl Executor {
    /// Removes one retention entry under every check, and records it (intent, then outcome).
    pub fn execute_retention(&self, action: &RetentionAction) -> Result<ActionReport, AuditFailed> {
        self.retention_step(action, "delete", |_| Ok(None), None)
    }

    /// Compresses one retention entry (zstd, next to it, verified; see
    /// `retention::compress`) and then removes the original under every check, recorded with
    /// `action: "compress"`: `bytes_freed` is what `statvfs` shows was saved (the original's
    /// space less the archive's). When the archive cannot be made or verified, nothing is
    /// removed (`failed`).
    #[cfg(target_os = "linux")]
    pub fn compress_retention(
        &self,
        action: &RetentionAction,
    ) -> Result<ActionReport, AuditFailed> {
        let started = super::now_secs();
        self.retention_step(
            action,
            "compress",
            |p| {
                let done = crate::retention::compress::archive(
                    p.parent.as_fd(),
                    &p.name,
                    &p.st,
                    &action.path,
                    &self.cancel,
                )?;
                Ok(Some(format!(
                    "compressed to {} ({} allocated, from a {}-byte stream)",
                    crate::textpath::shown(Path::new(&done.name)),
                    crate::config::human_bytes(done.allocated),
                    done.stream_bytes
                )))
            },
            // What changed since the archive began is not in it: left in place.
            Some(started.saturating_sub(1)),
        )
    }

    /// The shared frame of a retention step: prepare (all checks), run `before_intent` on the
    /// prepared entry (compression; an `Err` fails the step with nothing removed, an `Ok` note
    /// is added to the reason), write the intent, remove the entry (leaving in place what
    /// changed after `unchanged_since`), measure with `statvfs`, write the outcome.
    fn retention_step(
        &self,
        action: &RetentionAction,
        kind: &str,
        before_intent: impl FnOnce(&Prepared) -> Result<Option<String>, String>,
        unchanged_since: Option<i64>,
    ) -> Result<ActionReport, AuditFailed> {
        let id = audit::new_id();
        let probe = match self.locate(&action.path) {
            Ok((ws, _)) => ws.path.clone(),
            Err(_) => fsys::nearest_existing(&action.path).to_path_buf(),
        };
        let before = fsys::fs_space(&probe);
        let mut record = AuditRecord {
            id: id.clone(),
            bytes_estimated: action.bytes_estimated,
            ..AuditRecord::event(
                kind,
                action.path.clone(),
                &action.audit_rule(),
                1,
                action.reason.clone(),
                self.dry_run,
                "",
            )
        };
        let (outcome, stats, error) = match self.prepare_retention(action) {
            Err(Stop(outcome, why)) => (outcome, super::RemoveStats::default(), Some(why)),
            Ok(_) if self.dry_run => (Outcome::WouldDelete, super::RemoveStats::default(), None),
            // An archive made while the log cannot take the intent would be left beside the
            // original (and refuse the next try): look before compressing.
            Ok(_) if kind == "compress" && self.audit.health().is_err() => (
                Outcome::Refused,
                super::RemoveStats::default(),
                self.audit.health().err(),
            ),
            Ok((p, project)) => match before_intent(&p) {
                Err(why) => (Outcome::Failed, super::RemoveStats::default(), Some(why)),
                Ok(note) => {
                    if let Some(note) = note {
                        record.reason = format!("{}; {note}", record.reason);
                    }
                    let mut intent = record.clone();
                    intent.outcome = audit::INTENT.into();
                    intent.intent = Some(Intent {
                        dev: p.st.dev,
                        ino: p.st.ino,
                        project,
                        min_idle_secs: None,
                        pid: std::process::id(),
                        pid_start: audit::process_start(std::process::id()).unwrap_or(0),
                    });
                    self.record_intent(&intent, &mut record)?;
                    let (outcome, stats) = self.remove_prepared(&action.path, p, unchanged_since);
                    let error = summarize_problems(&stats);
                    (outcome, stats, error)
                }
            },
        };
        self.record_outcome(record, outcome, &stats, error, &probe, before)
    }

    /// Every check of a retention deletion; the prepared entry and its project dir.
    fn prepare_retention(&self, action: &RetentionAction) -> Result<(Prepared, PathBuf), Stop> {
        let refuse = |why: String| Stop(Outcome::Refused, why);
        let skip = |why: String| Stop(Outcome::Skipped, why);
        let (workspace, rel) = self.locate(&action.path).map_err(refuse)?;
        let names: Vec<_> = rel.components().map(|c| c.as_os_str().to_owned()).collect();
        let (last, dirs) = names
            .split_last()
            .ok_or_else(|| refuse("empty path".into()))?;
        let Some(project_name) = dirs.first() else {
            return Err(refuse(
                "a retention entry must lie inside a project, not be one".into(),
            ));
        };
        if workspace
            .protect
            .iter()
            .any(|p| std::ffi::OsStr::new(p) == project_name)
        {
            return Err(refuse(format!(
                "`{}` is on the protect list",
                crate::textpath::escape(Path::new(project_name))
            )));
        }
        let project = workspace.path.join(project_name);
        let (root, boundary, procs) = self.open_root(workspace)?;
        let (current, shown) =
            super::prepare::descend(root, &workspace.path, dirs, &boundary, |fd, _, shown| {
                match has_keep_marker(fd) {
                    true => Err(refuse(format!(
                        "kept: {} exists",
                        crate::textpath::shown(&shown.join(crate::scan::KEEP_MARKER))
                    ))),
                    false => Ok(()),
                }
            })?;
        let name = fsys::c_name(last).map_err(|_| refuse("a NUL byte in the path".into()))?;
        let st = match fsys::stat_entry(current.as_fd(), &name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(skip("already gone".into()))
            }
            Err(e) => return Err(refuse(format!("cannot stat: {e}"))),
        };
        if (st.dev, st.ino) != action.identity {
            return Err(skip(format!(
                "another entry is in its place (dev {} ino {}, planned dev {} ino {})",
                st.dev, st.ino, action.identity.0, action.identity.1
            )));
        }
        if !boundary.admits(current.as_fd(), &name, &st) {
            return Err(refuse("is a mount point or on another filesystem".into()));
        }
        let mut pin = last.to_owned();
        pin.push(crate::retention::PIN_SUFFIX);
        if let Ok(pin_c) = fsys::c_name(&pin) {
            if fsys::stat_entry(current.as_fd(), &pin_c).is_ok() {
                return Err(refuse(format!(
                    "kept: pinned by {}",
                    crate::textpath::shown(Path::new(&pin))
                )));
            }
        }
        if let Some(pointer) =
            crate::retention::pointer_to(current.as_fd(), &shown, &action.pointers, last, &st)
        {
            return Err(refuse(format!("kept: target of `{pointer}`")));
        }
        let protection = if st.kind == EntryKind::Dir {
            let fd = fsys::open_child_dir(current.as_fd(), &name)
                .map_err(|e| refuse(format!("cannot open without following symlinks: {e}")))?;
            let opened = fsys::stat_fd(fd.as_fd()).map_err(|e| refuse(e.to_string()))?;
            if (opened.dev, opened.ino) != (st.dev, st.ino) {
                return Err(refuse("changed while it was opened".into()));
            }
            protect::check_open_dir(fd.as_fd(), &opened, &action.path, &procs)
        } else {
            protect::check_identity(st.dev, st.ino, &action.path, &procs)
        };
        if let Some(p) = protection {
            return Err(refuse(p.to_string()));
        }
        // After the protections: a keep marker put inside the entry since the decision changes
        // it too, and is the lasting reason (refused), not a passing one (skipped).
        if st.changed() > action.changed && st.kind != EntryKind::Symlink {
            return Err(skip(format!(
                "changed since it was decided on ({} > {})",
                st.changed(),
                action.changed
            )));
        }
        Ok((
            Prepared {
                parent: current,
                name,
                boundary,
                depth: names.len(),
                st,
            },
            project,
        ))
    }
}

fn has_keep_marker(dir: BorrowedFd<'_>) -> bool {
    fsys::c_name(std::ffi::OsStr::new(crate::scan::KEEP_MARKER))
        .map(|m| fsys::stat_entry(dir, &m).is_ok())
        .unwrap_or(true)
}
