//! The ghost reaper's report: what it found and did, for `guardian ghosts`, `tasks.json` and
//! the daemon's log.

use crate::tasks::clock::human_secs;
use serde::Serialize;

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
    pub pid: Option<i32>,
    pub started_at: String,
    pub running_secs: i64,
    /// `alive`, `gone`, `pid_reused`, `no_pid`.
    pub process: &'static str,
    /// PIDs signalled (the process group and descendants).
    pub signalled: Vec<i32>,
    /// PIDs that needed SIGKILL after the grace period.
    pub sigkilled: Vec<i32>,
    /// The task's processes Guardian never signals (PID 1, kernel threads, Guardian and its
    /// ancestors), with why: while one lives the task is not marked.
    pub untouchable: Vec<String>,
    /// Processes of its group that started before the task: not its, left alone.
    pub strangers: Vec<i32>,
    pub marked: bool,
    /// The error text written to the DB (or that would be, in a dry run); empty when nothing
    /// is written.
    pub error_text: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skip {
    pub id: String,
    pub project: String,
    pub reason: String,
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
        human_secs(i64::try_from(report.ghost_after_secs).unwrap_or(i64::MAX)),
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
        for u in &g.untouchable {
            line(format!("    never signalled: {u}"));
        }
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
