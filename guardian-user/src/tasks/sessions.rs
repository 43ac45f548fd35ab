//! Task and scratch areas over time: each work dir or session gets a verdict (keep, or delete
//! because it outlived `max_age`, `inactive_after` or `keep_failed_for`), the periodic sweep
//! carries out the deletions through the executor, and usage limits turn into warning/critical
//! pressure levels. The verdict and level functions are pure; `gather` reads, `sweep` deletes
//! only through the executor.

use super::clock::{human_secs, rfc3339};
use super::completion::{self, Locked, Registry};
use super::db::TaskDb;
use super::RunningProtection;
use crate::cleanup::{AuditRecord, Executor, Outcome};
use crate::config::{human_bytes, AreaKind, Config, Workspace};
use crate::protect::{self, ProcSnapshot};
use crate::survey;
use serde::Serialize;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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
        SweepPolicy {
            max_age: t.max_age.0.as_secs() as i64,
            inactive_after: t.inactive_after.0.as_secs() as i64,
            keep_failed_for: t.keep_failed_for.0.as_secs() as i64,
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
    /// Newest modification in the tree.
    pub newest_change: i64,
    /// Last activity from the task DB (`activity_sql`).
    pub db_activity: Option<i64>,
    /// Set when `activity_sql` is configured but could not be read.
    pub activity_unknown: Option<String>,
}

impl Facts {
    /// Last activity: the newer of the tree's newest mtime and the DB's activity.
    pub fn last_active(&self) -> i64 {
        self.db_activity
            .map_or(self.newest_change, |d| d.max(self.newest_change))
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
        let age = now - at;
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
                    rfc3339(at + p.keep_failed_for)
                ),
            )
        };
    }
    let idle = now - f.last_active();
    match f.kind {
        AreaKind::Projects => keep(
            "pressure_only",
            "plain project: deleted only under disk pressure".into(),
        ),
        AreaKind::Tasks if idle > p.max_age => delete(
            "max_age",
            format!(
                "finished task work dir idle for {} > max_age {}",
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
    now - at > ttl
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

/// One child of a workspace with its verdict, as `guardian sessions` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    pub workspace: PathBuf,
    pub kind: AreaKind,
    pub path: PathBuf,
    /// Allocated bytes (`du` semantics).
    pub bytes: u64,
    pub last_active: String,
    /// Seconds since the last activity.
    pub idle_secs: i64,
    /// `mtime` or `db`.
    pub activity_source: &'static str,
    pub verdict: Verdict,
    pub rule: &'static str,
    pub reason: String,
    #[serde(skip)]
    pub facts: Facts,
}

/// Everything a look at the workspaces found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overview {
    pub node: String,
    /// Why task state is unknown, when it is.
    pub task_state_unknown: Option<String>,
    pub sessions: Vec<SessionView>,
    pub usage: Vec<UsageView>,
    pub errors: Vec<String>,
}

/// Which workspaces to walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every workspace (for `guardian sessions`).
    All,
    /// Only what the sweep and the usage limits need.
    Sweep,
}

/// Whether the periodic sweep has anything to do with this configuration.
pub fn sweep_needed(config: &Config) -> bool {
    let t = &config.tasks;
    !t.task_areas.is_empty()
        || !t.scratch_areas.is_empty()
        || !t.usage_limits.is_empty()
        || t.total_usage_warning.is_some()
        || t.total_usage_critical.is_some()
}

/// Walks the workspaces and decides a verdict for each child. Reads only.
pub fn gather(
    config: &Config,
    protection: &RunningProtection,
    db: Option<&TaskDb>,
    registry: &Registry,
    now: i64,
    scope: Scope,
) -> Overview {
    let t = &config.tasks;
    let totals = t.total_usage_warning.is_some() || t.total_usage_critical.is_some();
    let walk: Vec<&Workspace> = config
        .workspaces
        .iter()
        .filter(|w| {
            scope == Scope::All
                || totals
                || t.area_kind(&w.path) != AreaKind::Projects
                || t.usage_limits.iter().any(|l| l.workspace == w.path)
        })
        .collect();
    let mut overview = Overview {
        node: protection.node().to_string(),
        ..Default::default()
    };
    if walk.is_empty() {
        return overview;
    }
    // One snapshot of the running tasks for every verdict of this look.
    let running = protection.running();
    if let Err(e) = &running {
        overview.task_state_unknown = Some(e.clone());
    }
    let (activity, activity_error) = match db.filter(|d| d.has_activity_sql()) {
        Some(db) if !t.scratch_areas.is_empty() => match db.activity(protection.node(), now) {
            Ok(a) => (a, None),
            Err(e) => (HashMap::new(), Some(e.to_string())),
        },
        _ => (HashMap::new(), None),
    };
    if let Some(e) = &activity_error {
        overview.errors.push(e.clone());
    }
    let procs = ProcSnapshot::capture();
    let kept: HashMap<&Path, i64> = registry
        .kept
        .iter()
        .map(|k| (k.path.as_path(), k.kept_at))
        .collect();
    let policy = SweepPolicy::of(config);
    let mut total = 0u64;
    for ws in walk {
        let kind = t.area_kind(&ws.path);
        let surveyed = survey::survey_workspace(ws, &[]);
        overview.errors.extend(
            surveyed
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.path.display(), e.error)),
        );
        let mut ws_bytes = 0u64;
        for p in &surveyed.projects {
            ws_bytes += p.usage.allocated;
            let name = p.path.file_name().map(|n| n.to_string_lossy().into_owned());
            let db_activity = match kind {
                AreaKind::Scratch => name.as_ref().and_then(|n| activity.get(n).copied()),
                _ => None,
            };
            let facts = Facts {
                kind,
                is_dir: p.is_dir,
                protected_name: p.protected_name,
                contains_keep: p.contains_keep,
                running: protection.check_with(&p.path, &running),
                in_use: if procs.complete {
                    protect::check_dir(&p.path, &procs).map(|x| x.to_string())
                } else {
                    Some("process table unreadable: counts as in use".into())
                },
                kept_at: kept.get(p.path.as_path()).copied(),
                newest_change: p.last_active(),
                db_activity,
                activity_unknown: (kind == AreaKind::Scratch)
                    .then(|| activity_error.clone())
                    .flatten(),
            };
            let d = decide(&facts, &policy, now);
            let last = facts.last_active();
            overview.sessions.push(SessionView {
                workspace: ws.path.clone(),
                kind,
                path: p.path.clone(),
                bytes: p.usage.allocated,
                last_active: rfc3339(last),
                idle_secs: now - last,
                activity_source: if db_activity.is_some_and(|d| d >= facts.newest_change) {
                    "db"
                } else {
                    "mtime"
                },
                verdict: d.verdict,
                rule: d.rule,
                reason: d.reason,
                facts,
            });
        }
        total += ws_bytes;
        if let Some(limit) = t.usage_limits.iter().find(|l| l.workspace == ws.path) {
            let (w, c) = (limit.warning.map(|b| b.0), limit.critical.map(|b| b.0));
            overview.usage.push(UsageView {
                scope: ws.path.display().to_string(),
                bytes: ws_bytes,
                warning: w,
                critical: c,
                level: level(ws_bytes, w, c),
            });
        }
    }
    if totals {
        let (w, c) = (
            t.total_usage_warning.map(|b| b.0),
            t.total_usage_critical.map(|b| b.0),
        );
        overview.usage.push(UsageView {
            scope: "total".into(),
            bytes: total,
            warning: w,
            critical: c,
            level: level(total, w, c),
        });
    }
    overview
}

/// What one sweep did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SweepResult {
    pub deleted: Vec<PathBuf>,
    pub refused: Vec<(PathBuf, String)>,
    #[serde(skip)]
    pub records: Vec<AuditRecord>,
    pub overview: Overview,
}

/// The periodic sweep: deletes what `gather` marked, then keeps the kept-dir registry in step
/// (entries gone or deleted removed, sizes refreshed, the cap enforced).
pub fn sweep(
    config: &Config,
    executor: &Executor,
    protection: &RunningProtection,
    db: Option<&TaskDb>,
    now: i64,
    cancel: &AtomicBool,
) -> io::Result<SweepResult> {
    let registry = completion::read_registry(&config.daemon.state_dir)?;
    let overview = gather(config, protection, db, &registry, now, Scope::Sweep);
    let mut result = SweepResult::default();
    for s in &overview.sessions {
        if s.verdict != Verdict::Delete {
            continue;
        }
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let (outcome, record) = completion::execute(executor, &s.path, s.rule, &s.reason, s.bytes)
            .map_err(|e| io::Error::other(e.to_string()))?;
        match outcome {
            Outcome::Deleted => result.deleted.push(s.path.clone()),
            Outcome::WouldDelete => {}
            _ => result.refused.push((
                s.path.clone(),
                record
                    .error
                    .clone()
                    .unwrap_or_else(|| outcome.as_str().into()),
            )),
        }
        result.records.push(record);
    }
    if !registry.kept.is_empty() {
        let mut locked = Locked::open(&config.daemon.state_dir)?;
        let sizes: HashMap<&Path, u64> = overview
            .sessions
            .iter()
            .map(|s| (s.path.as_path(), s.bytes))
            .collect();
        locked.registry.kept.retain(|k| {
            !result.deleted.contains(&k.path) && std::fs::symlink_metadata(&k.path).is_ok()
        });
        for k in &mut locked.registry.kept {
            if let Some(b) = sizes.get(k.path.as_path()) {
                k.bytes = *b;
            }
        }
        let dropped =
            completion::enforce_cap(executor, &mut locked, config.tasks.keep_failed_max.0, now)
                .map_err(|e| io::Error::other(e.to_string()))?;
        result.deleted.extend(dropped);
        locked.save()?;
    }
    result.overview = overview;
    Ok(result)
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
            newest_change: NOW - idle,
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
    fn usage_levels_are_reached_at_the_limit() {
        assert_eq!(level(99, Some(100), Some(200)), Level::Ok);
        assert_eq!(level(100, Some(100), Some(200)), Level::Warning);
        assert_eq!(level(200, Some(100), Some(200)), Level::Critical);
        assert_eq!(level(500, None, Some(200)), Level::Critical);
        assert_eq!(level(500, Some(100), None), Level::Warning);
        assert_eq!(level(u64::MAX, None, None), Level::Ok);
    }
}
