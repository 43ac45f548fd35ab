//! The ghost reaper: tasks `running` on this node for longer than `ghost_after` get their
//! processes killed (process group and descendants: SIGTERM, grace, SIGKILL), the kill is
//! confirmed, and then, in one DB transaction, the task is marked failed with an error text
//! saying why and its slot is released.
//!
//! Invariants: only rows the running-tasks query returns for this node are considered; a
//! process is signalled only after it was identified by PID *and* start time (a PID reused by a
//! process that started away from the task's `started_at` is left alone); a task whose processes
//! survive is not marked; no row is ever deleted; completed tasks are never touched (the UPDATE
//! requires `status = 'running'` and must change exactly one row).

use super::clock::{human_secs, rfc3339};
use super::db::{params_of, MarkOutcome, RunningTask, TaskDb};
use super::procs::{self, BootClock, Pinned, ProcStat};
use super::Recorder;
use crate::cleanup::{audit, AuditRecord};
use crate::config::TasksConfig;
use rusqlite::types::Value;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// After SIGKILL, how long to wait for the processes to disappear.
const CONFIRM_AFTER_KILL: Duration = Duration::from_secs(5);

/// What the reaper found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GhostReport {
    pub ts: String,
    pub node: String,
    pub dry_run: bool,
    pub ghost_after_secs: u64,
    /// Running tasks of this node the DB returned.
    pub running: usize,
    /// Running tasks still within `ghost_after`.
    pub within_limit: usize,
    /// Every task past `ghost_after`, with what happened to it.
    pub found: Vec<Ghost>,
    /// Ids of tasks whose processes were killed.
    pub killed: Vec<String>,
    /// Ids of tasks marked failed.
    pub marked: Vec<String>,
    /// Tasks past the limit that were not marked, and why.
    pub skipped: Vec<Skip>,
    /// Set when the DB or `/proc` could not be read: nothing was done.
    pub error: Option<String>,
}

/// One task past `ghost_after`.
#[derive(Clone, Debug, Serialize)]
pub struct Ghost {
    pub id: String,
    pub project: String,
    pub pid: Option<i64>,
    pub started_at: String,
    pub running_secs: i64,
    /// `alive`, `gone`, `pid_reused`, `no_pid`.
    pub process: &'static str,
    /// PIDs signalled (the process group and descendants).
    pub signalled: Vec<i32>,
    /// PIDs that needed SIGKILL after the grace period.
    pub sigkilled: Vec<i32>,
    pub marked: bool,
    /// The error text written to the DB (or that would be, in a dry run).
    pub error_text: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skip {
    pub id: String,
    pub project: String,
    pub reason: String,
}

/// Whether the process behind a PID is the task's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Started within `tolerance` of the task: the task's process.
    Task,
    /// Started `delta` seconds away from the task (positive: after): an unrelated process that
    /// reused the PID.
    Reused { delta: i64 },
}

/// Pure: is a process that started at `proc_start` the one recorded for a task started at
/// `task_start`? A process that started well after the task cannot be its process (the PID was
/// reused); one that started well before it cannot be either (the PID was taken then).
pub fn identify(task_start: i64, proc_start: i64, tolerance: Duration) -> Identity {
    let delta = proc_start - task_start;
    if delta.unsigned_abs() <= tolerance.as_secs() {
        Identity::Task
    } else {
        Identity::Reused { delta }
    }
}

/// Pure: why a running task is not a ghost to handle, if it is not.
pub fn exclusion(task: &RunningTask, node: &str, cfg: &TasksConfig, now: i64) -> Exclusion {
    let Some(started) = task.started_at else {
        return Exclusion::Skip(format!(
            "started_at `{}` is not a timestamp Guardian can read (unix seconds or ISO-8601)",
            task.started_raw
        ));
    };
    if now - started <= cfg.ghosts.ghost_after.0.as_secs() as i64 {
        return Exclusion::WithinLimit;
    }
    if let Some(n) = &task.node {
        if n != node {
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
        running_secs: now - started,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exclusion {
    WithinLimit,
    Skip(String),
    Ghost { running_secs: i64 },
}

/// Finds and handles the ghosts of `node`. Each handled ghost is written to `audit_log` when
/// given. `dry_run` signals nothing and changes no row (with `audit_log`, each ghost is still
/// logged, as `would_mark`).
pub fn reap(
    db: &TaskDb,
    cfg: &TasksConfig,
    node: &str,
    now: i64,
    dry_run: bool,
    audit_log: Option<&Recorder<'_>>,
) -> std::io::Result<GhostReport> {
    let mut report = GhostReport {
        ts: audit::timestamp(SystemTime::now()),
        node: node.to_string(),
        dry_run,
        ghost_after_secs: cfg.ghosts.ghost_after.0.as_secs(),
        ..Default::default()
    };
    let running = match db.running(node, now) {
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
    for task in &running {
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
        handle(
            &mut report,
            task,
            running_secs,
            cfg,
            node,
            now,
            dry_run,
            &clock,
            &table,
            db,
            audit_log,
        )?;
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn handle(
    report: &mut GhostReport,
    task: &RunningTask,
    running_secs: i64,
    cfg: &TasksConfig,
    node: &str,
    now: i64,
    dry_run: bool,
    clock: &BootClock,
    table: &BTreeMap<i32, ProcStat>,
    db: &TaskDb,
    audit_log: Option<&Recorder<'_>>,
) -> std::io::Result<()> {
    let g = &cfg.ghosts;
    let started = task.started_at.unwrap_or(now);
    let why = format!(
        "ghost task: `running` for {} on node {node} (tasks.ghosts.ghost_after {})",
        human_secs(running_secs),
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
        marked: false,
        error_text: String::new(),
    };
    let Some(pid) = task.pid.filter(|p| *p > 1 && *p <= i32::MAX as i64) else {
        ghost.error_text = why.clone();
        report.found.push(ghost);
        let reason = match task.pid {
            None => "no pid recorded: Guardian cannot confirm its processes are gone, so it does not mark it failed".to_string(),
            Some(p) => format!("pid {p} is not a process Guardian may signal; not marked"),
        };
        skip(report, task, reason);
        return Ok(());
    };
    let pid = pid as i32;
    // Whom to signal, and what to write.
    let (targets, mut what): (Vec<ProcStat>, String) = match table
        .get(&pid)
        .filter(|s| !s.is_gone())
    {
        Some(st) => match identify(started, clock.start_secs(st), g.start_tolerance.0) {
            Identity::Task => {
                ghost.process = "alive";
                let targets = procs::task_processes(st, table);
                let what = if st.pgrp == st.pid {
                    format!("killed its process group {pid}")
                } else {
                    format!("killed its process {pid} and descendants")
                };
                (targets, what)
            }
            Identity::Reused { delta } => {
                ghost.process = "pid_reused";
                (
                    Vec::new(),
                    format!(
                        "its process had exited: pid {pid} now belongs to an unrelated process started {} {} the task (left alone)",
                        human_secs(delta.abs()),
                        if delta > 0 { "after" } else { "before" }
                    ),
                )
            }
        },
        None => {
            ghost.process = "gone";
            // A group id is not reused while any member lives: members are the task's orphans.
            let orphans = procs::group_members(pid, table);
            let what = if orphans.is_empty() {
                format!("its process {pid} had already exited")
            } else {
                format!(
                    "its process {pid} had exited; killed {} orphaned processes of its group",
                    orphans.len()
                )
            };
            (orphans, what)
        }
    };
    let text = |what: &str| {
        format!(
            "{why}; {what}; marked failed by guardian at {}",
            rfc3339(now)
        )
    };
    if dry_run {
        ghost.signalled = targets.iter().map(|s| s.pid).collect();
        ghost.error_text = text(&what);
        if let Some(log) = audit_log {
            let mut r = record(db, task, &ghost.error_text, "would_mark", None);
            r.dry_run = true;
            log.record(r)?;
        }
        report.found.push(ghost);
        return Ok(());
    }
    if !targets.is_empty() {
        let led_group = ghost.process == "gone" || table.get(&pid).is_some_and(|s| s.pgrp == pid);
        let pins: Vec<Pinned> = targets.iter().filter_map(procs::pin).collect();
        let result = procs::terminate(
            pins,
            |live| rescan(pid, led_group, live),
            g.grace.0,
            CONFIRM_AFTER_KILL,
        );
        ghost.signalled = result.signalled.clone();
        ghost.sigkilled = result.killed_hard.clone();
        what.push_str(&format!(
            " ({} processes: SIGTERM{})",
            result.signalled.len(),
            if result.killed_hard.is_empty() {
                String::new()
            } else {
                format!(
                    ", SIGKILL after {} grace for {}",
                    g.grace,
                    result.killed_hard.len()
                )
            }
        ));
        if !result.survivors.is_empty() {
            ghost.error_text = text(&what);
            report.found.push(ghost);
            let reason = format!(
                "processes {:?} still alive after SIGTERM and SIGKILL (stuck in the kernel?): not marked failed, retried next time",
                result.survivors
            );
            if let Some(log) = audit_log {
                log.record(record(db, task, &why, "failed", Some(reason.clone())))?;
            }
            skip(report, task, reason);
            return Ok(());
        }
        if !ghost.signalled.is_empty() {
            report.killed.push(task.id.clone());
        }
    }
    let text = text(&what);
    ghost.error_text = text.clone();
    let params = params_of(&[
        ("id", task.id_value.clone()),
        ("node", Value::Text(node.into())),
        ("project", Value::Text(task.project.clone())),
        ("pid", Value::Integer(pid as i64)),
        ("started_at", Value::Text(task.started_raw.clone())),
        ("error", Value::Text(text.clone())),
        ("status", Value::Text("failed".into())),
        ("now", Value::Integer(now)),
    ]);
    let outcome = db.mark_failed(&params);
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
            report.skipped.push(Skip {
                id: task.id.clone(),
                project: task.project.clone(),
                reason: reason.clone(),
            });
            ("refused", Some(reason))
        }
        Err(e) => {
            let reason = format!("marking failed did not happen: {e}");
            report.skipped.push(Skip {
                id: task.id.clone(),
                project: task.project.clone(),
                reason: reason.clone(),
            });
            ("failed", Some(reason))
        }
    };
    if let Ok(MarkOutcome::Marked { slot_rows }) = outcome {
        tracing::warn!(task = %task.id, project = %task.project, slot_rows, "{text}");
    }
    report.found.push(ghost);
    if let Some(log) = audit_log {
        log.record(record(db, task, &text, audit_outcome, error))?;
    }
    Ok(())
}

/// Processes that joined the task while it was being killed: new members of its group (when it
/// led one) and children of processes still alive.
fn rescan(pid: i32, led_group: bool, live: &[i32]) -> Vec<Pinned> {
    let Ok(table) = procs::all_processes() else {
        return Vec::new();
    };
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
    found.retain(|p| !live.contains(&p.pid) && p.pid as u32 != std::process::id());
    found.iter().filter_map(procs::pin).collect()
}

/// Notes a ghost that is left as it is. Nothing was done to it, so nothing is audited.
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
    AuditRecord {
        ts: audit::timestamp(SystemTime::now()),
        id: String::new(),
        action: "ghost".into(),
        path: PathBuf::from(format!(
            "{}#task={} project={}",
            db.path().display(),
            task.id,
            task.project
        )),
        rule: "ghost_reaper".into(),
        phase: 0,
        reason: reason.to_string(),
        bytes_estimated: 0,
        bytes_freed: 0,
        bytes_unlinked: 0,
        entries_removed: 0,
        dry_run: false,
        outcome: outcome.into(),
        error,
        intent: None,
    }
}

/// Human report of one reaper run.
pub fn render(report: &GhostReport) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    if let Some(e) = &report.error {
        line(format!("ghost reaper on node {}: {e}", report.node));
        return out;
    }
    line(format!(
        "ghost reaper on node {}{}: {} running, {} within ghost_after {}, {} ghosts found, {} killed, {} marked failed, {} skipped",
        report.node,
        if report.dry_run { " (dry run)" } else { "" },
        report.running,
        report.within_limit,
        human_secs(report.ghost_after_secs as i64),
        report.found.len(),
        report.killed.len(),
        report.marked.len(),
        report.skipped.len()
    ));
    for g in &report.found {
        line(format!(
            "  task {} ({}) pid {} running {}: process {}{}{}",
            g.id,
            g.project,
            g.pid.map_or("-".to_string(), |p| p.to_string()),
            human_secs(g.running_secs),
            g.process,
            if g.signalled.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} {:?}",
                    if report.dry_run {
                        "would signal"
                    } else {
                        "signalled"
                    },
                    g.signalled
                )
            },
            if g.marked { ", marked failed" } else { "" }
        ));
        if report.dry_run {
            line(format!("    would write error: {}", g.error_text));
        }
    }
    for s in &report.skipped {
        line(format!(
            "  skipped task {} ({}): {}",
            s.id, s.project, s.reason
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(started: Option<i64>, node: Option<&str>, project: &str) -> RunningTask {
        RunningTask {
            id: "t1".into(),
            id_value: Value::Integer(1),
            project: project.into(),
            node: node.map(str::to_string),
            started_raw: started.map_or("soon".into(), |s| s.to_string()),
            started_at: started,
            pid: Some(1234),
        }
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

    #[test]
    fn a_process_started_away_from_the_task_is_not_the_tasks() {
        let tol = Duration::from_secs(120);
        assert_eq!(identify(1000, 1000, tol), Identity::Task);
        assert_eq!(identify(1000, 1090, tol), Identity::Task);
        assert_eq!(identify(1000, 950, tol), Identity::Task);
        assert_eq!(identify(1000, 5000, tol), Identity::Reused { delta: 4000 });
        assert_eq!(identify(5000, 1000, tol), Identity::Reused { delta: -4000 });
    }
}
