//! Verdicts for the children of task and scratch areas: keep, or delete because `guardian task
//! done` said the task is over, it outlived `keep_failed_for`, `max_age` (with a task DB that
//! says no task of it runs) or `inactive_after` — and usage limits as warning/critical levels.
//! Pure: facts in, verdict out. Idle time comes only from what cannot be back-dated: the newest
//! mtime or ctime in the tree, writes the write source saw, and the DB's activity.
//!
//! Invariant: without a task DB, a task work dir is deleted without pressure only when
//! `guardian task done` recorded its task as over.

use super::clock::{human_secs, rfc3339};
use crate::config::{human_bytes, AreaKind, Config};
use serde::Serialize;

/// The ages that matter, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct SweepPolicy {
    pub max_age: i64,
    pub inactive_after: i64,
    pub keep_failed_for: i64,
}

impl SweepPolicy {
    pub fn of(config: &Config) -> SweepPolicy {
        let t = &config.tasks;
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        SweepPolicy {
            max_age: secs(t.max_age.0),
            inactive_after: secs(t.inactive_after.0),
            keep_failed_for: secs(t.keep_failed_for.0),
        }
    }
}

/// What is known about one child of a workspace.
#[derive(Clone, Debug)]
pub struct Facts {
    pub kind: AreaKind,
    pub is_dir: bool,
    pub protected_name: bool,
    pub contains_keep: bool,
    /// A running task (or unknown task state) protects it.
    pub running: Option<String>,
    /// A process or lock uses it.
    pub in_use: Option<String>,
    /// Kept for debugging since (seconds since the epoch).
    pub kept_at: Option<i64>,
    /// `guardian task done` recorded its task as over (done or discarded) but its deletion
    /// did not complete then: the status.
    pub finished: Option<String>,
    /// Whether a task DB answered for this look: only then does a task work dir's idle time
    /// alone make it deletable.
    pub task_db: bool,
    /// Newest change in the tree that cannot be back-dated (mtime or ctime of any entry).
    pub newest_change: i64,
    /// Last write the write source saw in it.
    pub last_write: Option<i64>,
    /// Last activity from the task DB (`activity_sql`).
    pub db_activity: Option<i64>,
    /// Set when `activity_sql` is configured but could not be read (for this session or all).
    pub activity_unknown: Option<String>,
}

/// Where a dir's last activity was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivitySource {
    /// The newest mtime or ctime in the tree.
    Tree,
    /// A write the write source saw.
    Writes,
    /// The task DB's `activity_sql`.
    Db,
}

impl Facts {
    /// Last activity: the newest of the tree's newest change, the last write seen and the DB's
    /// activity.
    pub fn last_active(&self) -> i64 {
        self.newest_change
            .max(self.last_write.unwrap_or(i64::MIN))
            .max(self.db_activity.unwrap_or(i64::MIN))
    }

    /// Which of them it was.
    pub fn activity_source(&self) -> ActivitySource {
        let last = self.last_active();
        if self.db_activity == Some(last) {
            ActivitySource::Db
        } else if self.last_write == Some(last) {
            ActivitySource::Writes
        } else {
            ActivitySource::Tree
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Keep,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// The policy that decided (`max_age`, `inactive_after`, `keep_failed_for`, `running_task`, …).
    pub rule: &'static str,
    pub reason: String,
}

fn keep(rule: &'static str, reason: String) -> Decision {
    Decision {
        verdict: Verdict::Keep,
        rule,
        reason,
    }
}

fn delete(rule: &'static str, reason: String) -> Decision {
    Decision {
        verdict: Verdict::Delete,
        rule,
        reason,
    }
}

/// Pure: the verdict for one child of a workspace at time `now`.
pub fn decide(f: &Facts, p: &SweepPolicy, now: i64) -> Decision {
    if f.protected_name {
        return keep("protected", "on the workspace's protect list".into());
    }
    if !f.is_dir {
        return keep("not_a_dir", "not a directory".into());
    }
    if let Some(r) = &f.running {
        return keep("running_task", r.clone());
    }
    if let Some(r) = &f.in_use {
        return keep("in_use", r.clone());
    }
    if f.contains_keep {
        return keep("keep_marker", "a .guardian-keep marker is inside".into());
    }
    if let Some(at) = f.kept_at {
        let age = now.saturating_sub(at);
        return if expired_secs(at, p.keep_failed_for, now) {
            delete(
                "keep_failed_for",
                format!(
                    "kept for debugging {} ago > keep_failed_for {}",
                    human_secs(age),
                    human_secs(p.keep_failed_for)
                ),
            )
        } else {
            keep(
                "keep_failed_for",
                format!(
                    "failed task kept for debugging until {}",
                    rfc3339(at.saturating_add(p.keep_failed_for))
                ),
            )
        };
    }
    if let Some(status) = &f.finished {
        return delete(
            if status == "discarded" {
                "task_discarded"
            } else {
                "task_done"
            },
            format!(
                "`guardian task done` recorded the task as {status}; its deletion did not complete then and is retried now"
            ),
        );
    }
    let idle = now.saturating_sub(f.last_active());
    match f.kind {
        AreaKind::Projects => keep(
            "pressure_only",
            "plain project: deleted only under disk pressure".into(),
        ),
        AreaKind::Tasks if !f.task_db => keep(
            "task_done_only",
            format!(
                "idle for {}; without a task DB only a dir `guardian task done` recorded as over is swept",
                human_secs(idle)
            ),
        ),
        AreaKind::Tasks if idle > p.max_age => delete(
            "max_age",
            format!(
                "no running task and idle for {} > max_age {}",
                human_secs(idle),
                human_secs(p.max_age)
            ),
        ),
        AreaKind::Tasks => keep(
            "max_age",
            format!(
                "idle for {} ≤ max_age {}",
                human_secs(idle),
                human_secs(p.max_age)
            ),
        ),
        AreaKind::Scratch => {
            if let Some(why) = &f.activity_unknown {
                return keep("inactive_after", format!("activity unknown: {why}"));
            }
            if idle > p.inactive_after {
                delete(
                    "inactive_after",
                    format!(
                        "scratch session inactive for {} > inactive_after {}",
                        human_secs(idle),
                        human_secs(p.inactive_after)
                    ),
                )
            } else {
                keep(
                    "inactive_after",
                    format!(
                        "active {} ago ≤ inactive_after {}",
                        human_secs(idle),
                        human_secs(p.inactive_after)
                    ),
                )
            }
        }
    }
}

fn expired_secs(at: i64, ttl: i64, now: i64) -> bool {
    now.saturating_sub(at) > ttl
}

/// A usage pressure level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

/// Pure: the level of `bytes` against optional warning and critical limits (a limit is
/// reached at or above it).
pub fn level(bytes: u64, warning: Option<u64>, critical: Option<u64>) -> Level {
    if critical.is_some_and(|c| bytes >= c) {
        Level::Critical
    } else if warning.is_some_and(|w| bytes >= w) {
        Level::Warning
    } else {
        Level::Ok
    }
}

/// Usage of one workspace, or of all (`scope = "total"`).
#[derive(Clone, Debug, Serialize)]
pub struct UsageView {
    pub scope: String,
    pub bytes: u64,
    pub warning: Option<u64>,
    pub critical: Option<u64>,
    pub level: Level,
}

impl UsageView {
    /// The event text for this level.
    pub fn message(&self) -> String {
        let limit = match self.level {
            Level::Critical => self.critical.map(|c| ("critical", c)),
            Level::Warning => self.warning.map(|w| ("warning", w)),
            Level::Ok => None,
        };
        let what = if self.scope == "total" {
            "all workspaces together".to_string()
        } else {
            format!("workspace {}", self.scope)
        };
        match limit {
            Some((name, l)) => format!(
                "usage {}: {what} use {} ≥ {name} limit {}",
                self.level.as_str(),
                human_bytes(self.bytes),
                human_bytes(l)
            ),
            None => format!(
                "usage ok: {what} use {}, below every limit",
                human_bytes(self.bytes)
            ),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86400;
    const NOW: i64 = 100 * DAY;

    fn policy() -> SweepPolicy {
        SweepPolicy {
            max_age: DAY,
            inactive_after: 7 * DAY,
            keep_failed_for: 3 * DAY,
        }
    }

    fn facts(kind: AreaKind, idle: i64) -> Facts {
        Facts {
            kind,
            is_dir: true,
            protected_name: false,
            contains_keep: false,
            running: None,
            in_use: None,
            kept_at: None,
            finished: None,
            task_db: true,
            newest_change: NOW - idle,
            last_write: None,
            db_activity: None,
            activity_unknown: None,
        }
    }

    fn verdict(f: &Facts) -> (Verdict, &'static str) {
        let d = decide(f, &policy(), NOW);
        (d.verdict, d.rule)
    }

    #[test]
    fn finished_task_dirs_go_after_max_age() {
        assert_eq!(
            verdict(&facts(AreaKind::Tasks, DAY + 1)),
            (Verdict::Delete, "max_age")
        );
        assert_eq!(
            verdict(&facts(AreaKind::Tasks, DAY)),
            (Verdict::Keep, "max_age")
        );
        // Plain projects are never swept, however old.
        assert_eq!(
            verdict(&facts(AreaKind::Projects, 300 * DAY)),
            (Verdict::Keep, "pressure_only")
        );
    }

    #[test]
    fn protection_beats_every_age() {
        let old = |f: fn(&mut Facts)| {
            let mut x = facts(AreaKind::Tasks, 30 * DAY);
            f(&mut x);
            verdict(&x)
        };
        assert_eq!(
            old(|f| f.running = Some("task 7".into())),
            (Verdict::Keep, "running_task")
        );
        assert_eq!(
            old(|f| f.in_use = Some("pid 1".into())),
            (Verdict::Keep, "in_use")
        );
        assert_eq!(
            old(|f| f.contains_keep = true),
            (Verdict::Keep, "keep_marker")
        );
        assert_eq!(
            old(|f| f.protected_name = true),
            (Verdict::Keep, "protected")
        );
        assert_eq!(old(|f| f.is_dir = false), (Verdict::Keep, "not_a_dir"));
    }

    #[test]
    fn kept_failed_dirs_follow_their_ttl_not_max_age() {
        let mut f = facts(AreaKind::Tasks, 10 * DAY);
        f.kept_at = Some(NOW - 2 * DAY);
        assert_eq!(verdict(&f), (Verdict::Keep, "keep_failed_for"));
        f.kept_at = Some(NOW - 3 * DAY - 1);
        assert_eq!(verdict(&f), (Verdict::Delete, "keep_failed_for"));
    }

    #[test]
    fn sessions_go_after_inactivity_counting_db_activity() {
        assert_eq!(
            verdict(&facts(AreaKind::Scratch, 8 * DAY)),
            (Verdict::Delete, "inactive_after")
        );
        assert_eq!(
            verdict(&facts(AreaKind::Scratch, 6 * DAY)),
            (Verdict::Keep, "inactive_after")
        );
        // Old files, but a chat turn an hour ago: active.
        let mut f = facts(AreaKind::Scratch, 30 * DAY);
        f.db_activity = Some(NOW - 3600);
        assert_eq!(f.last_active(), NOW - 3600);
        assert_eq!(verdict(&f), (Verdict::Keep, "inactive_after"));
        // An old DB row never makes recent files look inactive.
        let mut f = facts(AreaKind::Scratch, DAY);
        f.db_activity = Some(NOW - 30 * DAY);
        assert_eq!(verdict(&f), (Verdict::Keep, "inactive_after"));
        // Activity unknown: kept.
        let mut f = facts(AreaKind::Scratch, 30 * DAY);
        f.activity_unknown = Some("task DB locked".into());
        assert_eq!(verdict(&f), (Verdict::Keep, "inactive_after"));
    }

    #[test]
    fn without_a_task_db_only_dirs_task_done_recorded_as_over_are_swept() {
        let mut f = facts(AreaKind::Tasks, 30 * DAY);
        f.task_db = false;
        assert_eq!(verdict(&f), (Verdict::Keep, "task_done_only"));
        f.finished = Some("done".into());
        assert_eq!(verdict(&f), (Verdict::Delete, "task_done"));
        f.finished = Some("discarded".into());
        assert_eq!(verdict(&f), (Verdict::Delete, "task_discarded"));
        // Recorded as over, but something protects it now: kept until it does not.
        f.in_use = Some("pid 7 has its cwd inside".into());
        assert_eq!(verdict(&f), (Verdict::Keep, "in_use"));
    }

    #[test]
    fn writes_seen_by_the_source_keep_a_dir_active_whatever_its_files_say() {
        let mut f = facts(AreaKind::Tasks, 30 * DAY);
        f.last_write = Some(NOW - 60);
        assert_eq!(f.last_active(), NOW - 60);
        assert_eq!(f.activity_source(), ActivitySource::Writes);
        assert_eq!(verdict(&f), (Verdict::Keep, "max_age"));
        let mut f = facts(AreaKind::Scratch, 30 * DAY);
        f.last_write = Some(NOW - 60);
        assert_eq!(verdict(&f), (Verdict::Keep, "inactive_after"));
        // Times far outside the calendar do not wrap the idle time.
        let mut f = facts(AreaKind::Tasks, 0);
        f.newest_change = i64::MIN;
        f.last_write = None;
        assert_eq!(verdict(&f), (Verdict::Delete, "max_age"));
        f.newest_change = i64::MAX;
        assert_eq!(verdict(&f), (Verdict::Keep, "max_age"));
    }

    #[test]
    fn usage_levels_are_reached_at_the_limit() {
        assert_eq!(level(99, Some(100), Some(200)), Level::Ok);
        assert_eq!(level(100, Some(100), Some(200)), Level::Warning);
        assert_eq!(level(200, Some(100), Some(200)), Level::Critical);
        assert_eq!(level(500, None, Some(200)), Level::Critical);
        assert_eq!(level(500, Some(100), None), Level::Warning);
        assert_eq!(level(u64::MAX, None, None), Level::Ok);
    }
}
