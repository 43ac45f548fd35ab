//! The ghost reaper: tasks `running` on this node for longer than `ghost_after` get their
//! processes killed (process group and descendants: SIGTERM, grace, SIGKILL), the kill is
//! confirmed, and then, in one DB transaction, the task is marked failed with an error text
//! saying what really happened, and its slot is released.
//!
//! Invariants: only rows the running-tasks query returns for this node are considered; a
//! process is signalled only after it was identified by PID *and* start time (see `members`);
//! a task is marked only when nothing of it runs any more — a task with a process Guardian may
//! not signal (PID 1, a kernel thread, Guardian or its ancestors) or whose processes survive is
//! left as it is and says why; no row is ever deleted; completed tasks are never touched (the
//! UPDATE requires `status = 'running'` and must change exactly one row).

mod report;

pub use report::{render, Ghost, GhostReport, Skip};

use super::clock::{human_secs, rfc3339};
use super::db::{params_of, MarkOutcome, RunningTask, TaskDb};
use super::members::{self, Leader, TaskProcs};
use super::procs::{self, BootClock, Pinned, ProcStat};
use super::row::Cell;
use super::{Cancel, Recorder};
use crate::cleanup::{audit, AuditRecord};
use crate::config::TasksConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// After SIGKILL, how long to wait for the processes to disappear.
const CONFIRM_AFTER_KILL: Duration = Duration::from_secs(5);
/// Most processes a report names one by one.
const SHOWN_PROCS: usize = 10;

/// Pure: why a running task is not a ghost to handle, if it is not.
pub fn exclusion(task: &RunningTask, node: &str, cfg: &TasksConfig, now: i64) -> Exclusion {
    let Some(started) = task.started_at else {
        return Exclusion::Skip(format!(
            "started_at `{}` is not a timestamp Guardian can read (unix seconds or milliseconds, RFC 3339 or SQLite text, years 1970 to 9999)",
            task.started_raw
        ));
    };
    let running = now.saturating_sub(started);
    let limit = i64::try_from(cfg.ghosts.ghost_after.0.as_secs()).unwrap_or(i64::MAX);
    if running <= limit {
        return Exclusion::WithinLimit;
    }
    if let Some(n) = &task.node {
        if !task.node_is(node) {
            return Exclusion::Skip(format!("runs on node `{n}`, not on this node `{node}`"));
        }
    }
    if !cfg.ghosts.projects.is_empty() && !cfg.ghosts.projects.contains(&task.project) {
        return Exclusion::Skip(format!(
            "project `{}` is not in tasks.ghosts.projects",
            task.project
        ));
    }
    Exclusion::Ghost {
        running_secs: running,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exclusion {
    WithinLimit,
    Skip(String),
    Ghost { running_secs: i64 },
}

/// What one reaper run works with.
struct Run<'a> {
    db: &'a TaskDb,
    cfg: &'a TasksConfig,
    node: &'a str,
    now: i64,
    dry_run: bool,
    clock: BootClock,
    table: BTreeMap<i32, ProcStat>,
    own: BTreeSet<i32>,
    audit_log: Option<&'a Recorder<'a>>,
    cancel: &'a Cancel,
}

/// Finds and handles the ghosts of `node`. Each handled ghost is written to `audit_log` when
/// given. `dry_run` signals nothing and changes no row (with `audit_log`, each ghost is still
/// logged, as `would_mark`). `cancel` cuts grace waits and DB waits short (nothing is marked
/// then).
pub fn reap(
    db: &TaskDb,
    cfg: &TasksConfig,
    node: &str,
    now: i64,
    dry_run: bool,
    audit_log: Option<&Recorder<'_>>,
    cancel: &Cancel,
) -> std::io::Result<GhostReport> {
    let mut report = GhostReport {
        ts: audit::timestamp(SystemTime::now()),
        node: node.to_string(),
        dry_run,
        ghost_after_secs: cfg.ghosts.ghost_after.0.as_secs(),
        ..Default::default()
    };
    let running = match db.running(node, now, cancel) {
        Ok(r) => r,
        Err(e) => {
            report.error = Some(e.to_string());
            return Ok(report);
        }
    };
    report.running = running.len();
    let (clock, table) = match (BootClock::read(), procs::all_processes()) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(e), _) | (_, Err(e)) => {
            report.error = Some(format!(
                "cannot read /proc ({e}): no process can be confirmed gone, nothing done"
            ));
            return Ok(report);
        }
    };
    let own = procs::own_lineage(&table);
    let run = Run {
        db,
        cfg,
        node,
        now,
        dry_run,
        clock,
        table,
        own,
        audit_log,
        cancel,
    };
    for task in &running {
        if cancel.is_set() {
            break;
        }
        let running_secs = match exclusion(task, node, cfg, now) {
            Exclusion::WithinLimit => {
                report.within_limit += 1;
                continue;
            }
            Exclusion::Skip(reason) => {
                skip(&mut report, task, reason);
                continue;
            }
            Exclusion::Ghost { running_secs } => running_secs,
        };
        run.handle(&mut report, task, running_secs)?;
    }
    Ok(report)
}

impl Run<'_> {
    fn handle(
        &self,
        report: &mut GhostReport,
        task: &RunningTask,
        running_secs: i64,
    ) -> std::io::Result<()> {
        let g = &self.cfg.ghosts;
        let started = task.started_at.unwrap_or(self.now);
        let why = format!(
            "ghost task: `running` for {} on node {} (tasks.ghosts.ghost_after {})",
            human_secs(running_secs),
            self.node,
            g.ghost_after
        );
        let mut ghost = Ghost {
            id: task.id.clone(),
            project: task.project.clone(),
            pid: task.pid,
            started_at: task.started_raw.clone(),
            running_secs,
            process: "no_pid",
            signalled: Vec::new(),
            sigkilled: Vec::new(),
            untouchable: Vec::new(),
            strangers: Vec::new(),
            marked: false,
            error_text: String::new(),
        };
        let pid = match (task.pid, &task.pid_problem) {
            (Some(p), _) if p > 1 => p,
            (Some(p), _) => {
                report.found.push(ghost);
                let reason = format!(
                    "pid {p} is init, never a task's process: Guardian cannot tell whether the task still runs, so it does not mark it"
                );
                skip(report, task, reason);
                return Ok(());
            }
            (None, problem) => {
                report.found.push(ghost);
                let reason = match problem {
                    Some(p) => format!("{p}: Guardian cannot confirm its processes are gone, so it does not mark it"),
                    None => "no pid recorded: Guardian cannot confirm its processes are gone, so it does not mark it".to_string(),
                };
                skip(report, task, reason);
                return Ok(());
            }
        };
        let found = members::find(
            pid,
            started,
            g.start_tolerance.0,
            &self.clock,
            &self.table,
            &self.own,
        );
        ghost.process = match found.leader {
            Leader::Alive => "alive",
            Leader::Reused { .. } => "pid_reused",
            Leader::Gone => "gone",
        };
        ghost.strangers = found
            .strangers
            .iter()
            .take(SHOWN_PROCS)
            .map(|s| s.pid)
            .collect();
        if !found.untouchable.is_empty() {
            let n = found.untouchable.len();
            ghost.untouchable = found
                .untouchable
                .iter()
                .take(SHOWN_PROCS)
                .map(|(s, w)| format!("pid {} ({w})", s.pid))
                .collect();
            let reason = format!(
                "{}{} {} the task's and Guardian never signals {}: the task still runs, so nothing of it was signalled and it is not marked",
                ghost.untouchable.join(", "),
                if n > SHOWN_PROCS {
                    format!(" and {} more", n - SHOWN_PROCS)
                } else {
                    String::new()
                },
                if n == 1 { "is" } else { "are" },
                if n == 1 { "it" } else { "them" },
            );
            crate::warn_quiet!(
                format!("ghost-untouchable:{}", task.id),
                task = %task.id,
                project = %task.project,
                "{reason}"
            );
            report.found.push(ghost);
            skip(report, task, reason);
            return Ok(());
        }
        let strangers = match found.strangers.len() {
            0 => String::new(),
            n => format!(
                "; {n} process{} of its group started before the task and {} not its (left alone: {:?})",
                if n == 1 { "" } else { "es" },
                if n == 1 { "is" } else { "are" },
                ghost.strangers
            ),
        };
        let text = |what: &str| {
            format!(
                "{why}; {what}{strangers}; marked failed by guardian at {}",
                rfc3339(self.now)
            )
        };
        let targets: Vec<i32> = found.targets.iter().map(|s| s.pid).collect();
        let target_what = match found.leader {
            Leader::Alive if found.leads_group => format!("its process group {pid}"),
            Leader::Alive => format!("its process {pid} and descendants"),
            Leader::Gone => format!(
                "{} orphaned process{} of its group (its process {pid} had exited)",
                targets.len(),
                if targets.len() == 1 { "" } else { "es" }
            ),
            Leader::Reused { .. } => String::new(),
        };
        let nothing_ran = match found.leader {
            Leader::Reused { delta } => format!(
                "its process had exited: pid {pid} now belongs to an unrelated process started {} {} the task (left alone)",
                human_secs(delta.saturating_abs()),
                if delta > 0 { "after" } else { "before" }
            ),
            _ => format!("its process {pid} had already exited and nothing of the task runs"),
        };
        if self.dry_run {
            ghost.signalled = targets.clone();
            ghost.error_text = if targets.is_empty() {
                text(&nothing_ran)
            } else {
                text(&format!("would kill {target_what}"))
            };
            if let Some(log) = self.audit_log {
                let mut r = record(self.db, task, &ghost.error_text, "would_mark", None);
                r.dry_run = true;
                log.record(r)?;
            }
            report.found.push(ghost);
            return Ok(());
        }
        let what = if targets.is_empty() {
            nothing_ran
        } else {
            match self.kill(&found, pid, &mut ghost) {
                Ok(what) => {
                    report.killed.push(task.id.clone());
                    format!("killed {target_what} ({what})")
                }
                Err(KillFailed::Exited) => {
                    format!("{target_what}: all exited before Guardian signalled them")
                }
                Err(KillFailed::Left(reason)) => {
                    if let Some(log) = self.audit_log {
                        log.record(record(self.db, task, &why, "failed", Some(reason.clone())))?;
                    }
                    report.found.push(ghost);
                    skip(report, task, reason);
                    return Ok(());
                }
            }
        };
        // Marked only once nothing of it runs: look again.
        let again = procs::all_processes()
            .map(|t| {
                members::find(
                    pid,
                    started,
                    g.start_tolerance.0,
                    &self.clock,
                    &t,
                    &procs::own_lineage(&t),
                )
            })
            .map_err(|e| format!("cannot read /proc to confirm ({e})"));
        let still = match again {
            Ok(a) if a.is_empty() => None,
            Ok(a) => Some(format!(
                "processes {:?} of the task still run after the kill (they joined meanwhile?): not marked, retried next time",
                a.targets
                    .iter()
                    .chain(a.untouchable.iter().map(|(s, _)| s))
                    .map(|s| s.pid)
                    .collect::<Vec<_>>()
            )),
            Err(e) => Some(format!("{e}: not marked, retried next time")),
        };
        if let Some(reason) = still {
            if let Some(log) = self.audit_log {
                log.record(record(self.db, task, &why, "failed", Some(reason.clone())))?;
            }
            report.found.push(ghost);
            skip(report, task, reason);
            return Ok(());
        }
        self.mark(report, task, pid, ghost, text(&what))
    }

    /// Signals the task's processes; the words for what happened, or why it did not.
    fn kill(&self, found: &TaskProcs, pid: i32, ghost: &mut Ghost) -> Result<String, KillFailed> {
        let g = &self.cfg.ghosts;
        let pins: Vec<Pinned> = found.targets.iter().filter_map(procs::pin).collect();
        let leads = found.leads_group || found.leader == Leader::Gone;
        let result = procs::terminate(
            pins,
            |live| rescan(pid, leads, live),
            g.grace.0,
            CONFIRM_AFTER_KILL,
            self.cancel,
        );
        ghost.signalled = result.signalled.clone();
        ghost.sigkilled = result.killed_hard.clone();
        if result.cancelled {
            return Err(KillFailed::Left(format!(
                "Guardian stopped during the grace period after SIGTERM to {:?}: not marked, retried next time",
                result.signalled
            )));
        }
        if !result.survivors.is_empty() {
            let denied = if result.denied.is_empty() {
                String::new()
            } else {
                format!(
                    " (signals refused: {})",
                    result
                        .denied
                        .iter()
                        .map(|(p, e)| format!("pid {p}: {e}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(KillFailed::Left(format!(
                "processes {:?} still alive after SIGTERM and SIGKILL{denied}: not marked failed, retried next time",
                result.survivors
            )));
        }
        if result.signalled.is_empty() {
            return Err(KillFailed::Exited);
        }
        Ok(format!(
            "{} process{}: SIGTERM{}",
            result.signalled.len(),
            if result.signalled.len() == 1 {
                ""
            } else {
                "es"
            },
            if result.killed_hard.is_empty() {
                String::new()
            } else {
                format!(
                    ", SIGKILL after {} grace for {}",
                    g.grace,
                    result.killed_hard.len()
                )
            }
        ))
    }

    /// Marks the task failed with `text` and releases its slot, in one transaction.
    fn mark(
        &self,
        report: &mut GhostReport,
        task: &RunningTask,
        pid: i32,
        mut ghost: Ghost,
        text: String,
    ) -> std::io::Result<()> {
        ghost.error_text = text.clone();
        let params = params_of(&[
            ("id", task.id_value.clone()),
            ("node", Cell::Text(self.node.as_bytes().to_vec())),
            ("project", task.project_value.clone()),
            ("pid", Cell::Integer(i64::from(pid))),
            ("started_at", task.started_value.clone()),
            ("error", Cell::Text(text.clone().into_bytes())),
            ("status", Cell::Text(b"failed".to_vec())),
            ("now", Cell::Integer(self.now)),
        ]);
        let outcome = self.db.mark_failed(&params, self.cancel);
        let (audit_outcome, error) = match &outcome {
            Ok(MarkOutcome::Marked { .. }) => {
                ghost.marked = true;
                report.marked.push(task.id.clone());
                ("ok", None)
            }
            Ok(MarkOutcome::NotRunning { rows }) => {
                let reason = if *rows == 0 {
                    "the row is no longer a running task of this node (finished meanwhile?): nothing changed".to_string()
                } else {
                    format!("tasks.mark_failed_sql would change {rows} rows, not 1: rolled back, nothing changed")
                };
                skip(report, task, reason.clone());
                ("refused", Some(reason))
            }
            Err(e) => {
                let reason = format!("marking failed did not happen: {e}");
                skip(report, task, reason.clone());
                ("failed", Some(reason))
            }
        };
        if let Ok(MarkOutcome::Marked { slot_rows }) = outcome {
            tracing::warn!(task = %task.id, project = %task.project, slot_rows, "{text}");
        }
        report.found.push(ghost);
        if let Some(log) = self.audit_log {
            log.record(record(self.db, task, &text, audit_outcome, error))?;
        }
        Ok(())
    }
}

/// Why a kill did not end the task's processes.
enum KillFailed {
    /// Every target exited before a signal reached it (nothing was signalled).
    Exited,
    /// Something of the task is left; the text says what.
    Left(String),
}

/// Processes that joined the task while it was being killed: new members of its group (when it
/// led one) and children of processes still alive — never PID 1, a kernel thread, Guardian or
/// its ancestors.
fn rescan(pid: i32, led_group: bool, live: &[i32]) -> Vec<Pinned> {
    let Ok(table) = procs::all_processes() else {
        return Vec::new();
    };
    let own = procs::own_lineage(&table);
    let mut found: Vec<ProcStat> = if led_group {
        procs::group_members(pid, &table)
    } else {
        Vec::new()
    };
    found.extend(
        table
            .values()
            .filter(|p| live.contains(&p.ppid) && !p.is_gone())
            .copied(),
    );
    found.retain(|p| {
        !live.contains(&p.pid) && p.pid > 1 && !p.is_kernel_thread() && !own.contains(&p.pid)
    });
    found.iter().filter_map(procs::pin).collect()
}

/// Notes a ghost that is left as it is.
fn skip(report: &mut GhostReport, task: &RunningTask, reason: String) {
    report.skipped.push(Skip {
        id: task.id.clone(),
        project: task.project.clone(),
        reason,
    });
}

fn record(
    db: &TaskDb,
    task: &RunningTask,
    reason: &str,
    outcome: &str,
    error: Option<String>,
) -> AuditRecord {
    let mut path = db.path().as_os_str().to_owned().into_vec();
    path.extend_from_slice(format!("#task={} project={}", task.id, task.project).as_bytes());
    AuditRecord {
        error,
        ..AuditRecord::event(
            "ghost",
            PathBuf::from(OsString::from_vec(path)),
            "ghost_reaper",
            0,
            reason.to_string(),
            false,
            outcome,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NaiveTimes;
    use crate::tasks::db::decode_running;

    fn task(started: Option<i64>, node: Option<&str>, project: &str) -> RunningTask {
        decode_running(
            Cell::Text(b"t1".to_vec()),
            Cell::Text(project.as_bytes().to_vec()),
            started.map_or(Cell::Text(b"soon".to_vec()), Cell::Integer),
            Cell::Integer(1234),
            node.map(|n| Cell::Text(n.as_bytes().to_vec())),
            NaiveTimes::Utc,
        )
    }

    #[test]
    fn only_tasks_past_the_limit_on_this_node_and_project_are_ghosts() {
        let mut cfg = TasksConfig::default();
        let now = 100_000;
        let limit = cfg.ghosts.ghost_after.0.as_secs() as i64;
        assert_eq!(
            exclusion(&task(Some(now - limit), Some("n1"), "a"), "n1", &cfg, now),
            Exclusion::WithinLimit
        );
        assert_eq!(
            exclusion(
                &task(Some(now - limit - 1), Some("n1"), "a"),
                "n1",
                &cfg,
                now
            ),
            Exclusion::Ghost {
                running_secs: limit + 1
            }
        );
        assert!(matches!(
            exclusion(&task(Some(now - limit - 1), Some("n2"), "a"), "n1", &cfg, now),
            Exclusion::Skip(r) if r.contains("n2")
        ));
        assert!(matches!(
            exclusion(&task(None, None, "a"), "n1", &cfg, now),
            Exclusion::Skip(r) if r.contains("soon")
        ));
        cfg.ghosts.projects = vec!["b".into()];
        assert!(matches!(
            exclusion(&task(Some(0), None, "a"), "n1", &cfg, now),
            Exclusion::Skip(r) if r.contains("tasks.ghosts.projects")
        ));
        assert!(matches!(
            exclusion(&task(Some(0), None, "b"), "n1", &cfg, now),
            Exclusion::Ghost { .. }
        ));
    }
}
