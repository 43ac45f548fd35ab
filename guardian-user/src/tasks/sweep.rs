//! The look at task and scratch areas (`gather`: every child with its facts and verdict, and
//! the usage levels) and the periodic sweep that carries out the deletions through the
//! executor and keeps Guardian's registry of kept and finished dirs in step.
//!
//! Invariants: `gather` reads only; `sweep` deletes only through the executor; every path
//! written out goes through `textpath`.

use super::clock::rfc3339;
use super::completion::{self, Locked, Registry};
use super::db::Activity;
use super::protection::{RunningProtection, TaskSnapshot};
use super::sessions::{self, ActivitySource, Facts, Level, SweepPolicy, UsageView, Verdict};
use super::Cancel;
use crate::cleanup::{AuditRecord, Executor, Outcome};
use crate::config::{AreaKind, Config, Workspace};
use crate::protect::{self, ProcSnapshot};
use crate::survey;
use crate::textpath;
use serde::Serialize;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// One child of a workspace with its verdict, as `guardian sessions` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    #[serde(with = "crate::textpath")]
    pub workspace: PathBuf,
    pub kind: AreaKind,
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    /// Allocated bytes (`du` semantics).
    pub bytes: u64,
    pub last_active: String,
    /// Seconds since the last activity.
    pub idle_secs: i64,
    pub activity_source: ActivitySource,
    pub verdict: Verdict,
    pub rule: &'static str,
    pub reason: String,
    #[serde(skip)]
    pub facts: Facts,
    /// The dir's (dev, ino) as surveyed: the executor deletes only that dir.
    #[serde(skip)]
    pub identity: (u64, u64),
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

/// Last write seen by the write source for a project dir (seconds since the epoch).
pub type Writes<'a> = &'a dyn Fn(&Path) -> Option<i64>;

/// What a look at the workspaces is based on, besides the trees themselves.
pub struct Inputs<'a> {
    /// The running tasks of this node (one snapshot for every verdict of this look).
    pub tasks: &'a TaskSnapshot,
    /// Scratch activity from the DB, or why it could not be read; `None` when not configured.
    pub activity: Option<Result<Activity, String>>,
    pub registry: &'a Registry,
    pub writes: Writes<'a>,
}

/// Reads the scratch activity from the DB when the config asks for it.
pub fn read_activity(
    config: &Config,
    protection: &RunningProtection,
    now: i64,
    cancel: &Cancel,
) -> Option<Result<Activity, String>> {
    let db = protection.db().filter(|d| d.has_activity_sql())?;
    if config.tasks.scratch_areas.is_empty() {
        return None;
    }
    Some(
        db.activity(protection.node(), now, cancel)
            .map_err(|e| e.to_string()),
    )
}

/// Walks the workspaces and decides a verdict for each child. Reads only.
pub fn gather(config: &Config, inputs: &Inputs<'_>, now: i64, scope: Scope) -> Overview {
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
        node: t.node_name(),
        task_state_unknown: inputs.tasks.unknown(),
        ..Default::default()
    };
    if walk.is_empty() {
        return overview;
    }
    let task_db = inputs.tasks.has_db() && overview.task_state_unknown.is_none();
    let activity_error = match &inputs.activity {
        Some(Err(e)) => Some(e.clone()),
        _ => None,
    };
    let activity = match &inputs.activity {
        Some(Ok(a)) => Some(a),
        _ => None,
    };
    if let Some(e) = &activity_error {
        overview.errors.push(e.clone());
    }
    if let Some(a) = activity.filter(|a| a.nameless_rows > 0) {
        overview.errors.push(format!(
            "tasks.activity_sql returned {} rows whose name names no dir",
            a.nameless_rows
        ));
    }
    let procs = ProcSnapshot::capture();
    let kept: HashMap<&Path, i64> = inputs
        .registry
        .kept
        .iter()
        .map(|k| (k.path.as_path(), k.kept_at))
        .collect();
    let finished: HashMap<&Path, &str> = inputs
        .registry
        .finished
        .iter()
        .map(|f| (f.path.as_path(), f.status.as_str()))
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
                .map(|e| format!("{}: {}", textpath::shown(&e.path), e.error)),
        );
        let mut ws_bytes = 0u64;
        for p in &surveyed.projects {
            ws_bytes = ws_bytes.saturating_add(p.usage.allocated);
            let name = p.path.file_name();
            let scratch = kind == AreaKind::Scratch;
            let db_activity = name
                .filter(|_| scratch)
                .and_then(|n| activity.and_then(|a| a.last.get(n).copied()));
            let activity_unknown = if scratch {
                activity_error.clone().or_else(|| {
                    let raw = name.and_then(|n| activity.and_then(|a| a.unreadable.get(n)))?;
                    Some(format!("its last_active `{raw}` is no timestamp"))
                })
            } else {
                None
            };
            let facts = Facts {
                kind,
                is_dir: p.is_dir,
                protected_name: p.protected_name,
                contains_keep: p.contains_keep,
                running: inputs.tasks.check(&p.path),
                in_use: if procs.complete {
                    protect::check_dir(&p.path, &procs).map(|x| x.to_string())
                } else {
                    Some("process table unreadable: counts as in use".into())
                },
                kept_at: kept.get(p.path.as_path()).copied(),
                finished: finished.get(p.path.as_path()).map(|s| s.to_string()),
                task_db,
                newest_change: p.last_active(),
                last_write: (inputs.writes)(&p.path),
                db_activity,
                activity_unknown,
            };
            let d = sessions::decide(&facts, &policy, now);
            let last = facts.last_active();
            overview.sessions.push(SessionView {
                identity: p.identity,
                workspace: ws.path.clone(),
                kind,
                path: p.path.clone(),
                bytes: p.usage.allocated,
                last_active: rfc3339(last),
                idle_secs: now.saturating_sub(last),
                activity_source: facts.activity_source(),
                verdict: d.verdict,
                rule: d.rule,
                reason: d.reason,
                facts,
            });
        }
        total = total.saturating_add(ws_bytes);
        if let Some(limit) = t.usage_limits.iter().find(|l| l.workspace == ws.path) {
            let (w, c) = (limit.warning.map(|b| b.0), limit.critical.map(|b| b.0));
            overview.usage.push(UsageView {
                scope: textpath::escape(&ws.path),
                bytes: ws_bytes,
                warning: w,
                critical: c,
                level: sessions::level(ws_bytes, w, c),
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
            level: sessions::level(total, w, c),
        });
    }
    overview
}

/// What one sweep did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SweepResult {
    #[serde(with = "crate::textpath::list")]
    pub deleted: Vec<PathBuf>,
    pub refused: Vec<(crate::textpath::TextPath, String)>,
    #[serde(skip)]
    pub records: Vec<AuditRecord>,
    pub overview: Overview,
}

/// The periodic sweep: deletes what `gather` marked, then keeps the registry in step (entries
/// gone or deleted removed, kept sizes refreshed, the cap enforced).
pub fn sweep(
    config: &Config,
    executor: &Executor,
    inputs: &Inputs<'_>,
    now: i64,
    cancel: &Cancel,
) -> io::Result<SweepResult> {
    let overview = gather(config, inputs, now, Scope::Sweep);
    let mut result = SweepResult::default();
    for s in &overview.sessions {
        if s.verdict != Verdict::Delete {
            continue;
        }
        if cancel.is_set() {
            break;
        }
        // An idleness verdict holds only while nothing changes: the executor leaves anything
        // changed within the idle time it required.
        let min_idle = match s.rule {
            "max_age" => Some(config.tasks.max_age.0.as_secs()),
            "inactive_after" => Some(config.tasks.inactive_after.0.as_secs()),
            _ => None,
        };
        let planned = completion::Planned {
            identity: Some(s.identity),
            min_idle_secs: min_idle,
        };
        let (outcome, record) =
            completion::execute(executor, &s.path, s.rule, &s.reason, s.bytes, planned)
                .map_err(|e| io::Error::other(e.to_string()))?;
        match outcome {
            Outcome::Deleted => result.deleted.push(s.path.clone()),
            Outcome::WouldDelete => {}
            _ => result.refused.push((
                s.path.as_path().into(),
                record
                    .error
                    .clone()
                    .unwrap_or_else(|| outcome.as_str().into()),
            )),
        }
        result.records.push(record);
    }
    let registry = inputs.registry;
    if !registry.kept.is_empty() || !registry.finished.is_empty() {
        let mut locked = Locked::open(&config.daemon.state_dir)?;
        let sizes: HashMap<&Path, u64> = overview
            .sessions
            .iter()
            .map(|s| (s.path.as_path(), s.bytes))
            .collect();
        let gone = |p: &Path| {
            result.deleted.iter().any(|d| d == p) || std::fs::symlink_metadata(p).is_err()
        };
        locked.registry.kept.retain(|k| !gone(&k.path));
        locked.registry.finished.retain(|f| !gone(&f.path));
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

/// The usage levels of a look whose level changed since `before`, for events.
pub fn changed_levels<'a>(
    overview: &'a Overview,
    before: &'a HashMap<String, Level>,
) -> impl Iterator<Item = (&'a UsageView, Level)> + 'a {
    overview.usage.iter().filter_map(move |u| {
        let was = before.get(&u.scope).copied().unwrap_or(Level::Ok);
        (was != u.level).then_some((u, was))
    })
}
