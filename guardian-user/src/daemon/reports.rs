//! What the daemon does with the cleanup thread's reports: each action is audited in the
//! status and the events, its speed feeds the lead time and, when it deleted, it is a level
//! reset of the forecasts of its filesystem and project; a survey's time feeds the lead time
//! too; a cycle's end is remembered, and one that found nothing left makes its filesystem back
//! off.

use super::cycle::Report;
use super::state::CycleSummary;
use super::{GuardedFs, Guardian, RECENT_ACTIONS, RETRY_AFTER_NOTHING_LEFT};
use crate::cleanup::{AuditRecord, Outcome};
use crate::fsys;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Guardian {
    /// A report of the cleanup thread.
    pub(super) fn on_cleanup(&mut self, report: Report) {
        self.cleaner.taken(&report);
        match report {
            Report::Action { report, seconds } => {
                self.measure_deletion(&report, seconds);
                self.after_own_deletion(&report.record);
                self.note(report.record);
            }
            Report::Surveyed {
                seconds,
                project_bytes,
                ..
            } => {
                self.forecasts.lead.observe_scan(seconds);
                if self.source.name() == "poll" {
                    let now = self.clock();
                    for (project, bytes) in &project_bytes {
                        self.forecasts.observe_project_size(project, now, *bytes);
                    }
                }
            }
            Report::AuditFailed(why) => {
                crate::warn_quiet!("audit.unwritable", error = %why, "refusing to delete: the audit log cannot be written");
                self.refusing = Some(why);
            }
            Report::Done(summary) => {
                let fs = self.cycle_fs.take();
                if let (Some(summary), Some(fs)) = (summary, fs) {
                    self.tell_cycle_finished(&summary);
                    self.cycle_finished(&fs, summary);
                }
                self.publish_state();
            }
        }
    }

    /// Remembers how a cycle ended (a filesystem where it stopped short backs off).
    fn cycle_finished(&mut self, fs: &GuardedFs, summary: CycleSummary) {
        if summary.reached_target {
            self.stalled.remove(&fs.dev);
            crate::quiet::clear(&format!("cycle.short.{}", fs.dev));
        } else if backs_off(
            &summary,
            self.refusing.is_some(),
            self.cancel.load(Ordering::Relaxed),
        ) {
            let avail = fsys::fs_space(&fs.probe)
                .map(|s| s.avail_bytes)
                .unwrap_or(0);
            self.stalled.insert(fs.dev, (avail, Instant::now()));
            crate::warn_quiet!(
                format!("cycle.short.{}", fs.dev),
                mount = %crate::textpath::shown(&fs.mount),
                shortfall = summary.shortfall.as_deref().unwrap_or(""),
                "cleanup stopped short of the target; next full cycle in {:?} unless free space drops further",
                RETRY_AFTER_NOTHING_LEFT
            );
        }
        self.last_cycle = Some(summary);
    }

    /// Feeds a real deletion's speed into the lead-time estimate.
    fn measure_deletion(&mut self, report: &crate::cleanup::ActionReport, seconds: f64) {
        if matches!(report.outcome, Outcome::Deleted | Outcome::Partial) && seconds > 0.0 {
            self.forecasts.lead.observe_deletion(
                report.record.bytes_unlinked,
                report.record.entries_removed,
                seconds,
            );
        }
    }

    /// A deletion of Guardian's own (cleanup, sweep) is a level reset for the forecasts of its
    /// filesystem and project, not growth going backwards nor a cycle to expect again.
    pub(super) fn after_own_deletion(&mut self, record: &AuditRecord) {
        if record.dry_run || !matches!(record.outcome.as_str(), "deleted" | "partial" | "ok") {
            return;
        }
        let now = self.clock();
        if record.action == "journal_vacuum" {
            for fs in &self.filesystems {
                if let Ok(space) = fsys::fs_space(&fs.probe) {
                    self.forecasts.fs_cleaned(fs.dev, now, &space);
                }
            }
            return;
        }
        let Some((fs, project)) = self.owner_of(&record.path) else {
            return;
        };
        if let Ok(space) = fsys::fs_space(&fs.probe) {
            self.forecasts.fs_cleaned(fs.dev, now, &space);
        }
        // The probe leaves the daemon's own frees out; the size-tracking sources see them.
        let reported = self.source.name() != "ebpf";
        self.forecasts
            .project_cleaned(&project, now, record.bytes_unlinked, reported);
    }

    /// The guarded filesystem and the project dir (a workspace's child) holding `path`: the
    /// most specific workspace.
    fn owner_of(&self, path: &Path) -> Option<(GuardedFs, PathBuf)> {
        let (fs, ws) = self
            .filesystems
            .iter()
            .flat_map(|fs| fs.workspaces.iter().map(move |w| (fs, w)))
            .filter(|(_, w)| path.starts_with(&w.path))
            .max_by_key(|(_, w)| w.path.as_os_str().len())?;
        let project = path
            .ancestors()
            .find(|a| a.parent() == Some(ws.path.as_path()))?;
        Some((fs.clone(), project.to_path_buf()))
    }

    pub(super) fn note(&mut self, record: AuditRecord) {
        tracing::info!(
            action = %record.action,
            path = %crate::textpath::shown(&record.path),
            rule = %record.rule,
            outcome = %record.outcome,
            estimated = record.bytes_estimated,
            freed = record.bytes_freed,
            error = record.error.as_deref().unwrap_or(""),
            "action"
        );
        self.tell_action(&record);
        self.recent.push_back(record);
        while self.recent.len() > RECENT_ACTIONS {
            self.recent.pop_front();
        }
    }
}

/// Whether a cycle that ended short of its target makes its filesystem wait
/// `RETRY_AFTER_NOTHING_LEFT` for the next one: only when it found nothing left to delete (or
/// was a dry run's single round) — walking the trees again at once would find nothing new. One
/// stopped by the audit log is retried as soon as the log can be written (`start_cycle`); one
/// ended by the round limit while it was still deleting goes on at the next check: under writers
/// that refill the disk as fast as it is cleaned, a minute of waiting is a minute of a full disk.
fn backs_off(summary: &CycleSummary, refusing: bool, cancelled: bool) -> bool {
    !summary.reached_target && !refusing && !cancelled && summary.shortfall.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(reached_target: bool, shortfall: Option<&str>) -> CycleSummary {
        CycleSummary {
            mount: PathBuf::from("/m"),
            started: String::new(),
            finished: String::new(),
            trigger: String::new(),
            rounds: 6,
            actions: 140,
            bytes_freed: 1 << 20,
            reached_target,
            shortfall: shortfall.map(String::from),
        }
    }

    #[test]
    fn a_cycle_ended_by_its_round_limit_while_deleting_does_not_back_off() {
        // MAX_ROUNDS passed with candidates still coming: the next check starts another cycle.
        assert!(!backs_off(&summary(false, None), false, false));
        // Nothing left to delete: walking again at once would find nothing new.
        assert!(backs_off(
            &summary(false, Some("nothing left to delete: 3 MiB short")),
            false,
            false
        ));
        // Stopped by the audit log: retried when it can be written, not after a minute.
        assert!(!backs_off(&summary(false, Some("stopped: …")), true, false));
        assert!(!backs_off(&summary(true, None), false, false));
        assert!(!backs_off(&summary(false, Some("x")), false, true));
    }
}
