//! Tasks: what the dispatcher's task DB says about this node, and the policies built on it —
//! running-task protection, the completion policy (`guardian task done`), age and inactivity
//! sweeps of task and scratch areas with usage limits, and the ghost reaper.
//!
//! Invariants: the task DB's schema is never changed and no row is ever deleted; while task
//! state is unknown (DB missing, corrupt or locked past its timeout) every project counts as
//! possibly running, never the reverse; every deletion goes through the cleanup executor.

pub mod clock;
pub mod completion;
pub mod db;
pub mod ghosts;
pub mod procs;
pub mod sessions;

use crate::cleanup::{AuditLog, AuditRecord, Executor, ExtraProtection};
use crate::config::{Config, TasksConfig};
use clock::now_secs;
use db::{RunningTask, TaskDb};
use ghosts::GhostReport;
use serde::Serialize;
use sessions::{Level, UsageView};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Guardian's task status file in `state_dir`.
pub const TASKS_STATE_FILE: &str = "tasks.json";

/// After the DB failed to answer, later checks reuse that answer for this long instead of
/// waiting out the busy timeout once per project.
const HOLD_FAILURE: Duration = Duration::from_secs(15);

/// The child of a workspace a task's `project` value names: its first path component
/// (`alpha` → `<workspace>/alpha`, `org/repo` → `<workspace>/org`).
pub fn project_dir_name(project: &str) -> Option<&OsStr> {
    match Path::new(project.trim()).components().next()? {
        Component::Normal(n) => Some(n),
        _ => None,
    }
}

/// Running-task protection: which projects have a running task on this node.
pub struct RunningProtection {
    db: Option<TaskDb>,
    node: String,
    workspaces: Vec<PathBuf>,
    /// A task id whose own row does not protect (`task done --task ID`).
    exclude: Option<String>,
    failure: Mutex<Option<(Instant, String)>>,
}

impl RunningProtection {
    pub fn new(config: &Config, exclude: Option<String>) -> RunningProtection {
        RunningProtection {
            db: TaskDb::from_config(&config.tasks),
            node: config.tasks.node_name(),
            workspaces: config.workspaces.iter().map(|w| w.path.clone()).collect(),
            exclude,
            failure: Mutex::new(None),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The running tasks of this node, or why task state is unknown. Without a task DB there
    /// are none.
    pub fn running(&self) -> Result<Vec<RunningTask>, String> {
        let Some(db) = &self.db else {
            return Ok(Vec::new());
        };
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((when, why)) = failure.as_ref() {
            if when.elapsed() < HOLD_FAILURE {
                return Err(why.clone());
            }
        }
        match db.running(&self.node, now_secs()) {
            Ok(tasks) => {
                *failure = None;
                Ok(tasks)
            }
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(error = %why, "task state unknown: every project counts as possibly running");
                *failure = Some((Instant::now(), why.clone()));
                Err(why)
            }
        }
    }

    /// Why the project dir at `project` must not be deleted: a running task on this node names
    /// it, or task state is unknown. `None` for paths that are not a child of a workspace.
    /// Reads the task DB now.
    pub fn check(&self, project: &Path) -> Option<String> {
        self.db.as_ref()?;
        self.check_with(project, &self.running())
    }

    /// As [`check`](Self::check), against running tasks read before (one snapshot for many
    /// projects).
    pub fn check_with(
        &self,
        project: &Path,
        running: &Result<Vec<RunningTask>, String>,
    ) -> Option<String> {
        self.db.as_ref()?;
        let parent = project.parent()?;
        if !self.workspaces.iter().any(|w| w == parent) {
            return None;
        }
        let name = project.file_name()?;
        match running {
            Err(why) => Some(format!(
                "running task: task state unknown ({why}); every project counts as possibly running"
            )),
            Ok(tasks) => tasks
                .iter()
                .filter(|t| self.exclude.as_deref() != Some(t.id.as_str()))
                .find(|t| project_dir_name(&t.project) == Some(name))
                .map(|t| {
                    format!(
                        "running task: task {} (project {}) is running on node {} since {}",
                        t.id,
                        t.project,
                        self.node,
                        t.started_at.map_or(t.started_raw.clone(), clock::rfc3339)
                    )
                }),
        }
    }
}

/// The running-task protection as the executor and the survey take it.
pub fn running_protection(config: &Config, exclude: Option<String>) -> ExtraProtection {
    let p = Arc::new(RunningProtection::new(config, exclude));
    Arc::new(move |path: &Path| p.check(path))
}

/// Writes audit records and remembers them for the daemon's recent-actions list.
pub struct Recorder<'a> {
    log: &'a AuditLog,
    seen: RefCell<Vec<AuditRecord>>,
}

impl<'a> Recorder<'a> {
    pub fn new(log: &'a AuditLog) -> Recorder<'a> {
        Recorder {
            log,
            seen: RefCell::new(Vec::new()),
        }
    }

    pub fn record(&self, record: AuditRecord) -> io::Result<()> {
        self.log.record(&record)?;
        self.seen.borrow_mut().push(record);
        Ok(())
    }

    pub fn into_records(self) -> Vec<AuditRecord> {
        self.seen.into_inner()
    }
}

/// What one periodic call did, for the daemon's state.
#[derive(Debug, Default)]
pub struct TaskTick {
    /// Audit records written (sweep deletions, pressure events, ghosts).
    pub records: Vec<AuditRecord>,
    /// Current problems: usage pressure, unknown task state, ghosts that could not be handled.
    pub problems: Vec<String>,
}

/// `tasks.json` in `state_dir`.
#[derive(Debug, Default, Serialize)]
struct TasksState {
    updated: String,
    node: String,
    task_state_unknown: Option<String>,
    usage: Vec<UsageView>,
    last_sweep: Option<String>,
    last_sweep_deleted: Vec<PathBuf>,
    last_ghosts: Option<GhostReport>,
}

/// The task side of the daemon: runs the sweep and the ghost reaper on their schedules.
pub struct TaskService {
    config: Config,
    db: Option<TaskDb>,
    protection: Arc<RunningProtection>,
    audit: Arc<AuditLog>,
    next_sweep: Option<Instant>,
    next_ghosts: Option<Instant>,
    levels: BTreeMap<String, Level>,
    sweep_problems: Vec<String>,
    ghost_problems: Vec<String>,
    state: TasksState,
}

impl TaskService {
    /// Prepares the service; its own handle on the audit log is opened when first needed.
    pub fn new(config: &Config) -> TaskService {
        TaskService {
            db: TaskDb::from_config(&config.tasks),
            protection: Arc::new(RunningProtection::new(config, None)),
            audit: Arc::new(AuditLog::new(&config.daemon.audit_log)),
            config: config.clone(),
            next_sweep: None,
            next_ghosts: None,
            levels: BTreeMap::new(),
            sweep_problems: Vec::new(),
            ghost_problems: Vec::new(),
            state: TasksState {
                node: config.tasks.node_name(),
                ..Default::default()
            },
        }
    }

    /// The running-task protection for the executor and the survey.
    pub fn protection(&self) -> ExtraProtection {
        let p = self.protection.clone();
        Arc::new(move |path: &Path| p.check(path))
    }

    fn tasks(&self) -> &TasksConfig {
        &self.config.tasks
    }

    /// Called on every daemon check: sweeps task and scratch areas every `sweep_interval`
    /// (deleting through `executor`, raising usage events) and reaps ghosts every
    /// `ghosts.interval`. An audit write failure is returned.
    pub fn periodic(&mut self, executor: &Executor, cancel: &AtomicBool) -> io::Result<TaskTick> {
        let log = self.audit.clone();
        let recorder = Recorder::new(&log);
        let now = now_secs();
        let due = |next: Option<Instant>| next.is_none_or(|t| Instant::now() >= t);
        let mut ran = false;
        if sessions::sweep_needed(&self.config) && due(self.next_sweep) {
            self.next_sweep = Some(Instant::now() + self.tasks().sweep_interval.0);
            self.run_sweep(executor, &recorder, now, cancel)?;
            ran = true;
        }
        let ghosts_on = self.db.is_some() && self.tasks().ghosts.enabled;
        if ghosts_on && due(self.next_ghosts) {
            self.next_ghosts = Some(Instant::now() + self.tasks().ghosts.interval.0);
            self.run_ghosts(&recorder, now)?;
            ran = true;
        }
        let mut records = recorder.into_records();
        let mut problems = self.sweep_problems.clone();
        problems.extend(self.ghost_problems.iter().cloned());
        if ran {
            self.write_state();
        }
        records.sort_by(|a, b| a.ts.cmp(&b.ts));
        Ok(TaskTick { records, problems })
    }

    fn run_sweep(
        &mut self,
        executor: &Executor,
        recorder: &Recorder<'_>,
        now: i64,
        cancel: &AtomicBool,
    ) -> io::Result<()> {
        let result = sessions::sweep(
            &self.config,
            executor,
            &self.protection,
            self.db.as_ref(),
            now,
            cancel,
        )?;
        self.sweep_problems.clear();
        for r in result.records {
            recorder.seen.borrow_mut().push(r);
        }
        if let Some(why) = &result.overview.task_state_unknown {
            self.sweep_problems.push(format!(
                "task state unknown ({why}): no project in any workspace is deleted until the task DB answers"
            ));
        }
        for u in &result.overview.usage {
            let before = self.levels.get(&u.scope).copied().unwrap_or(Level::Ok);
            if u.level != before {
                recorder.record(pressure_record(u, before, self.config.daemon.dry_run))?;
                match u.level {
                    Level::Ok => tracing::info!(scope = %u.scope, "{}", u.message()),
                    _ => tracing::warn!(scope = %u.scope, "{}", u.message()),
                }
                self.levels.insert(u.scope.clone(), u.level);
            }
            if u.level != Level::Ok {
                self.sweep_problems.push(u.message());
            }
        }
        self.state.task_state_unknown = result.overview.task_state_unknown.clone();
        self.state.usage = result.overview.usage.clone();
        self.state.last_sweep = Some(crate::cleanup::audit::timestamp(SystemTime::now()));
        self.state.last_sweep_deleted = result.deleted.clone();
        Ok(())
    }

    fn run_ghosts(&mut self, recorder: &Recorder<'_>, now: i64) -> io::Result<()> {
        let Some(db) = &self.db else { return Ok(()) };
        let report = ghosts::reap(
            db,
            &self.config.tasks,
            self.protection.node(),
            now,
            self.config.daemon.dry_run,
            Some(recorder),
        )?;
        self.ghost_problems.clear();
        if let Some(e) = &report.error {
            self.ghost_problems.push(format!("ghost reaper: {e}"));
        }
        for s in &report.skipped {
            if s.reason.contains("still alive") || s.reason.contains("did not happen") {
                self.ghost_problems
                    .push(format!("ghost task {} ({}): {}", s.id, s.project, s.reason));
            }
        }
        if !report.found.is_empty() || report.error.is_some() {
            tracing::warn!("{}", ghosts::render(&report).trim_end());
        }
        self.state.last_ghosts = Some(report);
        Ok(())
    }

    fn write_state(&mut self) {
        self.state.updated = crate::cleanup::audit::timestamp(SystemTime::now());
        let dir = &self.config.daemon.state_dir;
        let write = || -> io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".{TASKS_STATE_FILE}.{}.tmp", std::process::id()));
            let text = serde_json::to_vec_pretty(&self.state).map_err(io::Error::other)?;
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, dir.join(TASKS_STATE_FILE))
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write tasks.json");
        }
    }
}

/// The audit line of a usage level change.
fn pressure_record(u: &UsageView, before: Level, dry_run: bool) -> AuditRecord {
    AuditRecord {
        ts: crate::cleanup::audit::timestamp(SystemTime::now()),
        id: String::new(),
        action: "usage_pressure".into(),
        path: PathBuf::from(&u.scope),
        rule: "usage_limit".into(),
        phase: 0,
        reason: format!("{} (was {})", u.message(), before.as_str()),
        bytes_estimated: u.bytes,
        bytes_freed: 0,
        bytes_unlinked: 0,
        entries_removed: 0,
        dry_run,
        outcome: if u.level == Level::Ok {
            "cleared".into()
        } else {
            u.level.as_str().into()
        },
        error: None,
        intent: None,
    }
}
