//! Deciding, at every poll and sample, whether a guarded filesystem needs a cleanup cycle — a
//! threshold crossed (reactive) or a forecast that fired (preemptive) — and handing it to the
//! cleanup thread; re-arming the source's write countdown after each `statvfs`.
//!
//! Invariants: one cycle at a time; a filesystem whose last cycle found nothing left waits
//! `RETRY_AFTER_NOTHING_LEFT` unless free space drops further; while the audit log cannot be
//! written nothing starts (a refusing state, retried at each check).

use super::cycle::{self, CycleKind, Job};
use super::forecast::Named;
use super::state::FsState;
use super::{GuardedFs, Guardian, RETRY_AFTER_NOTHING_LEFT, STALL_DROP_FRACTION};
use crate::fsys::{self, FsSpace};
use crate::policy::{self, Limits, Pressure};
use crate::sources;
use std::sync::atomic::Ordering;

impl Guardian {
    /// Checks every guarded filesystem: a cycle where a threshold is crossed, a preemptive one
    /// where the forecast fires; the `statvfs` reading feeds the filesystem's forecast. With
    /// `every` false (a sample) a filesystem whose reading is exactly the last one, with the
    /// cleanup thread as busy as then and a forecast that has its first samples, costs its
    /// `statvfs` only: nothing it decides could differ but with the clock, and the next poll
    /// (`every`) looks again in full. Returns whether every reading was the last one, with the
    /// cleanup thread as busy as then.
    pub(super) fn guard(&mut self, every: bool) -> bool {
        let busy = self.cleaner.busy();
        let mut unchanged = self.guarded_busy == Some(busy);
        let mut budgets = Vec::new();
        for fs in self.filesystems.clone() {
            if self.cancel.load(Ordering::Relaxed) {
                break;
            }
            let space = match fsys::fs_space(&fs.probe) {
                Ok(space) => space,
                Err(e) => {
                    self.problems.push(format!(
                        "cannot statvfs {}: {e}",
                        crate::textpath::escape(&fs.probe)
                    ));
                    self.spaces.remove(&fs.dev);
                    unchanged = false;
                    continue;
                }
            };
            let same = self
                .spaces
                .get(&fs.dev)
                .is_some_and(|(last, _)| *last == space);
            unchanged &= same;
            if !every && same && self.guarded_busy == Some(busy) && self.forecasts.fs_warm(fs.dev) {
                // Nothing to decide, but the countdown is armed again (a share spent on
                // overwrites in place starts over).
                if let Some((space, limits)) = self.spaces.get(&fs.dev) {
                    budgets.push(sources::countdown::Budget::after_statvfs(
                        fs.dev,
                        space,
                        limits,
                        &[],
                    ));
                }
                continue;
            }
            let now = self.clock();
            self.forecasts.observe_fs(fs.dev, now, &space);
            self.tell_pressure(&fs, &space);
            match self.cycle_due(&fs, now, &space) {
                Some(kind) if !self.recently_stalled(fs.dev, &space) => self.start_cycle(&fs, kind),
                Some(_) => {}
                None => {
                    self.stalled.remove(&fs.dev);
                }
            }
            let assessment = policy::assess(&space, &self.config.thresholds, false);
            budgets.push(sources::countdown::Budget::after_statvfs(
                fs.dev,
                &space,
                &assessment.limits,
                &[],
            ));
            self.spaces.insert(fs.dev, (space, assessment.limits));
        }
        self.budgets = budgets;
        self.arm_countdown();
        self.guarded_busy = Some(self.cleaner.busy());
        if every {
            let devs: std::collections::HashSet<u64> =
                self.filesystems.iter().map(|f| f.dev).collect();
            self.spaces.retain(|dev, _| devs.contains(dev));
        }
        unchanged
    }

    /// Each guarded filesystem as last read, with its forecast, for the state file.
    pub(super) fn fs_states(&self) -> Vec<FsState> {
        let now = self.clock();
        self.filesystems
            .iter()
            .filter_map(|fs| {
                let (space, _) = self.spaces.get(&fs.dev)?;
                let assessment = policy::assess(space, &self.config.thresholds, false);
                let forecast = self
                    .forecasts
                    .fs_view(fs.dev, now, space, &assessment.limits);
                Some(FsState {
                    mount: fs.mount.clone(),
                    workspaces: fs.workspaces.iter().map(|w| w.path.clone()).collect(),
                    space: *space,
                    limits: assessment.limits,
                    pressure: assessment.pressure,
                    reason: assessment.reason,
                    forecast: Some(forecast),
                })
            })
            .collect()
    }

    /// Hands a cycle to the cleanup thread, unless one runs or the audit log cannot be written
    /// (then Guardian refuses to delete, says why, and tries again at the next check).
    pub(super) fn start_cycle(&mut self, fs: &GuardedFs, kind: CycleKind) {
        if self.cleaner.busy() {
            return;
        }
        // While refusing, a write failed (or the log could not be opened): try again once the
        // log can be opened and has room to spare, not on every poll into the same failure.
        let audit = if self.refusing.is_some() {
            self.executor.audit_writable()
        } else {
            self.executor.audit_health()
        };
        if let Err(why) = audit {
            crate::warn_quiet!("audit.unwritable", error = %why, "refusing to delete: the audit log cannot be written");
            self.refusing = Some(why);
            return;
        }
        if self.refusing.take().is_some() {
            crate::quiet::clear("audit.unwritable");
            tracing::info!("the audit log can be written again: cleaning resumes");
        }
        let kind = match (kind, &self.woken) {
            (CycleKind::Reactive { reason }, Some(wake)) => CycleKind::Reactive {
                reason: format!("{reason}; {wake}"),
            },
            (CycleKind::Preemptive { mut plan, growth }, Some(wake)) => {
                plan.trigger = format!("{}; {wake}", plan.trigger);
                CycleKind::Preemptive { plan, growth }
            }
            (kind, _) => kind,
        };
        match &kind {
            CycleKind::Reactive { reason } => {
                tracing::warn!(mount = %crate::textpath::shown(&fs.mount), reason = %reason, "pressure: starting a cleanup cycle")
            }
            CycleKind::Preemptive { plan, .. } => {
                tracing::warn!(mount = %crate::textpath::shown(&fs.mount), trigger = %plan.trigger, "forecast: starting a preemptive phase 1")
            }
        }
        self.cycle_fs = Some(fs.clone());
        self.tell_cycle_started(fs, &kind);
        self.cleaner.submit(Job::Cycle(Box::new(cycle::CycleJob {
            fs: fs.clone(),
            kind,
            last_write: self.last_write.clone(),
        })));
    }

    /// The cycle a filesystem needs now: reactive under a threshold, preemptive when its
    /// forecast fires above them, none otherwise.
    pub(super) fn cycle_due(&self, fs: &GuardedFs, now: f64, space: &FsSpace) -> Option<CycleKind> {
        let assessment = policy::assess(space, &self.config.thresholds, false);
        if assessment.pressure != Pressure::Ok {
            return Some(CycleKind::Reactive {
                reason: assessment.reason,
            });
        }
        let trigger = self
            .forecasts
            .check(fs.dev, now, space, &assessment.limits)?;
        self.preemptive_kind(fs, &trigger, space, &assessment.limits)
    }

    /// The preemptive cycle a fired trigger asks for; none when its goal is already met (a
    /// config whose `target_free` equals `cleanup_free` leaves a forecast nothing to do).
    pub(super) fn preemptive_kind(
        &self,
        fs: &GuardedFs,
        trigger: &Named,
        space: &FsSpace,
        limits: &Limits,
    ) -> Option<CycleKind> {
        let plan = self.forecasts.preemptive(trigger, limits);
        (plan.goal_free > space.avail_bytes).then(|| CycleKind::Preemptive {
            plan,
            growth: self.forecasts.growth_rates(fs.dev, space.avail_bytes),
        })
    }

    /// True while a filesystem whose last cycle found nothing left is within its back-off and
    /// its free space has not dropped noticeably since.
    pub(super) fn recently_stalled(&self, dev: u64, space: &FsSpace) -> bool {
        let Some(&(avail_then, when)) = self.stalled.get(&dev) else {
            return false;
        };
        let drop_allowed = (space.total_bytes as f64 * STALL_DROP_FRACTION) as u64;
        when.elapsed() < RETRY_AFTER_NOTHING_LEFT && space.avail_bytes + drop_allowed >= avail_then
    }
}
