//! The task side of the daemon: running-task protection for the survey and the executor, and a
//! worker thread that runs the sweep and the ghost reaper (with its grace waits) on their
//! schedules. [`TaskService::periodic`] never waits: it starts due work and collects what
//! finished (audit records, problems).
//!
//! Invariants: the worker deletes only through the executor it is given; dropping the service
//! stops its threads within a bounded time (the stop flag cuts DB waits, grace waits and the
//! sweep between deletions).

use super::completion;
use super::ghosts;
use super::protection::{RunningProtection, TaskSnapshot, FRESH_WAIT};
use super::sessions::{Level, UsageView};
use super::state_file::{TasksState, TasksStateFile};
use super::sweep::{self, Inputs, SweepResult};
use super::{clock, Cancel, Recorder};
use crate::cleanup::{AuditLog, AuditRecord, Executor, ExtraProtection};
use crate::config::Config;
use crate::textpath;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How long dropping the service waits for the worker to end before leaving it behind.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// After the reaper could not read the DB, it tries again this soon (or at its interval).
const GHOSTS_RETRY: Duration = Duration::from_secs(30);
/// Most projects whose last write is remembered.
const MAX_WRITES: usize = 65_536;

/// What the daemon gets from one periodic call.
#[derive(Debug, Default)]
pub struct TaskTick {
    /// Audit records written since the last call (sweep deletions, pressure events, ghosts).
    pub records: Vec<AuditRecord>,
    /// Current problems: usage pressure, unknown task state, ghosts that could not be handled.
    pub problems: Vec<String>,
}

/// The last write the write source saw per project dir (bounded).
#[derive(Debug, Default)]
pub struct WriteLog {
    last: Mutex<HashMap<PathBuf, i64>>,
}

impl WriteLog {
    /// Notes a write into `project` at `at` (seconds since the epoch).
    pub fn note(&self, project: &Path, at: i64) {
        let mut map = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get_mut(project) {
            *t = (*t).max(at);
            return;
        }
        if map.len() >= MAX_WRITES {
            // Forget the older half: they are the least useful idle-time evidence.
            let mut times: Vec<i64> = map.values().copied().collect();
            times.sort_unstable();
            let cut = times.get(times.len() / 2).copied().unwrap_or(i64::MAX);
            map.retain(|_, t| *t > cut);
        }
        map.insert(project.to_path_buf(), at);
    }

    /// Forgets the projects that no longer exist (called when the project set changes: the
    /// log holds the projects that exist, not every one the node ever had).
    pub fn retain(&self, alive: &dyn Fn(&Path) -> bool) {
        let mut map = self.last.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|path, _| alive(path));
        map.shrink_to_fit();
    }

    /// Projects remembered.
    pub fn len(&self) -> usize {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last write seen into `project`.
    pub fn last(&self, project: &Path) -> Option<i64> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(project)
            .copied()
    }
}

enum Job {
    Run { sweep: bool, ghosts: bool },
    Stop,
}

struct Done {
    records: Vec<AuditRecord>,
    problems: Vec<String>,
    /// The reaper could not read the DB: try again soon.
    ghosts_retry: bool,
    error: Option<io::Error>,
}

struct WorkerHandle {
    jobs: Sender<Job>,
    done: Receiver<Done>,
    exited: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// The task side of the daemon.
pub struct TaskService {
    config: Arc<Config>,
    protection: Arc<RunningProtection>,
    writes: Arc<WriteLog>,
    audit: Arc<AuditLog>,
    stop: Arc<AtomicBool>,
    worker: Option<WorkerHandle>,
    next_sweep: Option<Instant>,
    next_ghosts: Option<Instant>,
    busy: bool,
    problems: Vec<String>,
    wait: Option<Duration>,
}

impl TaskService {
    /// Prepares the service (starting the task DB reader); its own handle on the audit log is
    /// opened when first written (an audit log that cannot be opened is reported by the
    /// writes, never a reason not to start).
    pub fn new(config: &Config) -> TaskService {
        let stop = Arc::new(AtomicBool::new(false));
        TaskService {
            protection: Arc::new(RunningProtection::new(
                config,
                None,
                &Cancel::on(stop.clone()),
            )),
            audit: Arc::new(AuditLog::new(&config.daemon.audit_log)),
            config: Arc::new(config.clone()),
            writes: Arc::new(WriteLog::default()),
            stop,
            worker: None,
            next_sweep: None,
            next_ghosts: None,
            busy: false,
            problems: Vec::new(),
            wait: None,
        }
    }

    /// The running-task protection for the executor: asks the DB for a fresh answer right
    /// before each delete, waiting at most [`FRESH_WAIT`] (no answer: protected).
    pub fn protection(&self) -> ExtraProtection {
        let p = self.protection.clone();
        Arc::new(move |path: &Path| p.check(path))
    }

    /// The latest running-task snapshot, without waiting on the DB: the survey takes one per
    /// look and checks every project against it.
    pub fn snapshot(&self) -> TaskSnapshot {
        self.protection.snapshot()
    }

    /// Where other threads (the cleanup thread's surveys) take their snapshots from.
    pub fn snapshot_source(&self) -> Arc<dyn Fn() -> TaskSnapshot + Send + Sync> {
        let p = self.protection.clone();
        Arc::new(move || p.snapshot())
    }

    /// Notes writes the write source saw into a project dir (seconds since the epoch): a dir
    /// written to is not idle, whatever its files' times say.
    pub fn note_write(&self, project: &Path, at: i64) {
        self.writes.note(project, at);
    }

    /// Forgets the writes into projects that no longer exist.
    pub fn retain_writes(&self, alive: &dyn Fn(&Path) -> bool) {
        self.writes.retain(alive);
    }

    /// With `on` (for `run --once`), each periodic call waits for the work it started, at most
    /// a bounded time.
    pub fn wait_for_work(&mut self, on: bool) {
        self.wait = on.then(|| {
            let db = self.protection.db().map_or(Duration::ZERO, |d| d.budget());
            db * 3 + self.config.tasks.ghosts.grace.0 + Duration::from_secs(60)
        });
    }

    /// Called on every daemon poll, never waiting (unless [`wait_for_work`](Self::wait_for_work)):
    /// collects the results of finished work and starts the sweep (every `sweep_interval`) and
    /// the ghost reaper (every `ghosts.interval`) on the worker when due. An audit write
    /// failure of the worker is returned.
    pub fn periodic(
        &mut self,
        executor: &Arc<Executor>,
        cancel: &Arc<AtomicBool>,
    ) -> io::Result<TaskTick> {
        let mut tick = TaskTick::default();
        if self.worker.is_none() {
            self.worker = self.start_worker(executor.clone(), cancel.clone());
        }
        self.collect(&mut tick, None)?;
        let now = Instant::now();
        let due = |next: Option<Instant>| next.is_none_or(|t| now >= t);
        if !self.busy {
            let t = &self.config.tasks;
            let sweep = sweep::sweep_needed(&self.config) && due(self.next_sweep);
            let ghosts =
                self.protection.db().is_some() && t.ghosts.enabled && due(self.next_ghosts);
            if sweep || ghosts {
                if let Some(w) = &self.worker {
                    if w.jobs.send(Job::Run { sweep, ghosts }).is_ok() {
                        self.busy = true;
                        if sweep {
                            self.next_sweep = Some(now + t.sweep_interval.0);
                        }
                        if ghosts {
                            self.next_ghosts = Some(now + t.ghosts.interval.0);
                        }
                    }
                }
            }
        }
        if let Some(wait) = self.wait.filter(|_| self.busy) {
            self.collect(&mut tick, Some(wait))?;
        }
        tick.problems = self.problems.clone();
        if self.worker.is_none() {
            tick.problems.push(
                "the task worker thread could not be started: no sweep, no ghost reaper".into(),
            );
        }
        if let Some(why) = self.protection.peek().and_then(|s| s.unknown()) {
            tick.problems.push(format!(
                "task state unknown ({why}): no project in any workspace is deleted until the task DB answers"
            ));
        }
        Ok(tick)
    }

    /// Takes the worker's finished results; with `wait`, waits up to that long for the first.
    fn collect(&mut self, tick: &mut TaskTick, wait: Option<Duration>) -> io::Result<()> {
        let Some(w) = &self.worker else {
            return Ok(());
        };
        let mut first = wait.map(|d| w.done.recv_timeout(d));
        loop {
            let got = match first.take() {
                Some(Ok(d)) => Some(d),
                Some(Err(RecvTimeoutError::Timeout)) => {
                    tracing::warn!("task work still running after the wait; results come later");
                    None
                }
                Some(Err(RecvTimeoutError::Disconnected)) => None,
                None => w.done.try_recv().ok(),
            };
            let Some(done) = got else { break };
            self.busy = false;
            tick.records.extend(done.records);
            self.problems = done.problems;
            if done.ghosts_retry {
                let soon = Instant::now() + GHOSTS_RETRY;
                self.next_ghosts = Some(self.next_ghosts.map_or(soon, |t| t.min(soon)));
            }
            if let Some(e) = done.error {
                return Err(e);
            }
        }
        tick.records.sort_by(|a, b| a.ts.cmp(&b.ts));
        Ok(())
    }

    fn start_worker(
        &self,
        executor: Arc<Executor>,
        cancel: Arc<AtomicBool>,
    ) -> Option<WorkerHandle> {
        let (jobs, job_rx) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::unbounded();
        let (exit_tx, exited) = crossbeam_channel::bounded::<()>(0);
        let mut worker = Worker {
            config: self.config.clone(),
            executor,
            protection: self.protection.clone(),
            writes: self.writes.clone(),
            audit: self.audit.clone(),
            cancel: Cancel::on(cancel).with(self.stop.clone()),
            levels: BTreeMap::new(),
            sweep_problems: Vec::new(),
            ghost_problems: Vec::new(),
            state: TasksState {
                node: self.config.tasks.node_name(),
                ..Default::default()
            },
            file: TasksStateFile::new(&self.config.daemon.runtime_dir()),
        };
        let thread = std::thread::Builder::new()
            .name("task-worker".into())
            .spawn(move || {
                let _exit = exit_tx;
                while let Ok(Job::Run { sweep, ghosts }) = job_rx.recv() {
                    if done_tx.send(worker.run(sweep, ghosts)).is_err() {
                        break;
                    }
                }
            });
        match thread {
            Ok(t) => Some(WorkerHandle {
                jobs,
                done,
                exited,
                thread: Some(t),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the task worker thread");
                None
            }
        }
    }
}

impl Drop for TaskService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut w) = self.worker.take() {
            let _ = w.jobs.send(Job::Stop);
            match w.exited.recv_timeout(STOP_WAIT) {
                Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                    if let Some(t) = w.thread.take() {
                        let _ = t.join();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!("the task worker did not stop in time; left behind");
                }
            }
        }
    }
}

/// The worker thread's side: runs jobs, keeps the usage levels and `tasks.json`.
struct Worker {
    config: Arc<Config>,
    executor: Arc<Executor>,
    protection: Arc<RunningProtection>,
    writes: Arc<WriteLog>,
    audit: Arc<AuditLog>,
    cancel: Cancel,
    levels: BTreeMap<String, Level>,
    sweep_problems: Vec<String>,
    ghost_problems: Vec<String>,
    state: TasksState,
    /// `tasks.json` in the runtime dir.
    file: TasksStateFile,
}

impl Worker {
    fn run(&mut self, sweep: bool, ghosts: bool) -> Done {
        let log = self.audit.clone();
        let recorder = Recorder::new(&log);
        let mut ghosts_retry = false;
        let mut result = Ok(());
        if ghosts {
            result = self.run_ghosts(&recorder).map(|retry| ghosts_retry = retry);
        }
        if sweep && result.is_ok() && !self.cancel.is_set() {
            result = self.run_sweep(&recorder);
        }
        if ghosts || sweep {
            self.write_state();
        }
        let mut problems = self.sweep_problems.clone();
        problems.extend(self.ghost_problems.iter().cloned());
        Done {
            records: recorder.into_records(),
            problems,
            ghosts_retry,
            error: result.err(),
        }
    }

    fn run_sweep(&mut self, recorder: &Recorder<'_>) -> io::Result<()> {
        let now = clock::now_secs();
        let registry = completion::read_registry(&self.config.daemon.state_dir)?;
        let snapshot = self.protection.fresh(
            self.protection
                .db()
                .map_or(FRESH_WAIT, |d| d.budget() + FRESH_WAIT),
        );
        let activity = sweep::read_activity(&self.config, &self.protection, now, &self.cancel);
        let writes = self.writes.clone();
        let last_write = move |p: &Path| writes.last(p);
        let inputs = Inputs {
            tasks: &snapshot,
            activity,
            registry: &registry,
            writes: &last_write,
        };
        let result: SweepResult =
            sweep::sweep(&self.config, &self.executor, &inputs, now, &self.cancel)?;
        self.sweep_problems.clear();
        for r in result.records {
            recorder.seen(r);
        }
        let before: HashMap<String, Level> = self.levels.clone().into_iter().collect();
        for (u, was) in sweep::changed_levels(&result.overview, &before) {
            recorder.record(pressure_record(u, was, self.config.daemon.dry_run))?;
            match u.level {
                Level::Ok => tracing::info!(scope = %u.scope, "{}", u.message()),
                _ => tracing::warn!(scope = %u.scope, "{}", u.message()),
            }
            self.levels.insert(u.scope.clone(), u.level);
        }
        for u in &result.overview.usage {
            if u.level != Level::Ok {
                self.sweep_problems.push(u.message());
            }
        }
        for (path, why) in &result.refused {
            crate::warn_quiet!(
                format!("sweep-refused:{}", textpath::escape(&path.0)),
                path = %textpath::shown(&path.0),
                "sweep: not deleted: {why}"
            );
        }
        self.state.task_state_unknown = result.overview.task_state_unknown.clone();
        self.state.usage = result.overview.usage.clone();
        self.state.last_sweep = Some(crate::cleanup::audit::timestamp(SystemTime::now()));
        self.state.last_sweep_deleted = result.deleted.clone();
        Ok(())
    }

    /// Runs the reaper; `Ok(true)` when it could not read the DB (retry soon).
    fn run_ghosts(&mut self, recorder: &Recorder<'_>) -> io::Result<bool> {
        let Some(db) = self.protection.db() else {
            return Ok(false);
        };
        let report = ghosts::reap(
            db,
            &self.config.tasks,
            self.protection.node(),
            clock::now_secs(),
            self.config.daemon.dry_run,
            Some(recorder),
            &self.cancel,
        )?;
        self.ghost_problems.clear();
        if let Some(e) = &report.error {
            self.ghost_problems.push(format!("ghost reaper: {e}"));
        }
        for s in &report.skipped {
            if s.reason.contains("still alive")
                || s.reason.contains("did not happen")
                || s.reason.contains("never signals")
                || s.reason.contains("still run")
            {
                self.ghost_problems
                    .push(format!("ghost task {} ({}): {}", s.id, s.project, s.reason));
            }
        }
        if !report.found.is_empty() || report.error.is_some() {
            crate::warn_quiet!("ghost-report", "{}", ghosts::render(&report).trim_end());
        }
        let retry = report.error.is_some();
        self.state.last_ghosts = Some(report);
        Ok(retry)
    }

    /// Writes `tasks.json` when its content changed (see [`super::state_file`]).
    fn write_state(&mut self) {
        let now = crate::cleanup::audit::timestamp(SystemTime::now());
        if let Err(e) = self.file.write(&mut self.state, &now) {
            crate::warn_quiet!(
                "tasks-json",
                dir = %textpath::shown(self.file.dir()),
                error = %e,
                "cannot write tasks.json"
            );
        }
    }
}

/// The audit line of a usage level change.
fn pressure_record(u: &UsageView, before: Level, dry_run: bool) -> AuditRecord {
    let outcome = if u.level == Level::Ok {
        "cleared"
    } else {
        u.level.as_str()
    };
    AuditRecord {
        bytes_estimated: u.bytes,
        ..AuditRecord::event(
            "usage_pressure",
            textpath::unescape(&u.scope).unwrap_or_else(|_| PathBuf::from(&u.scope)),
            "usage_limit",
            0,
            format!("{} (was {})", u.message(), before.as_str()),
            dry_run,
            outcome,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// Issue 16 (caches that grow with the node's history): the log of last writes holds at
    /// most `MAX_WRITES` projects, keeping the newest, and forgets vanished projects when the
    /// project set changes (it used to keep every project ever written, up to the bound).
    #[test]
    fn the_write_log_is_bounded_and_forgets_vanished_projects() {
        let log = WriteLog::default();
        let count = i64::try_from(MAX_WRITES).unwrap() + 10;
        for i in 0..count {
            log.note(&PathBuf::from(format!("/w/p{i}")), i);
        }
        assert!(log.len() <= MAX_WRITES, "{}", log.len());
        assert_eq!(
            log.last(Path::new(&format!("/w/p{}", count - 1))),
            Some(count - 1)
        );
        assert_eq!(log.last(Path::new("/w/p0")), None, "the oldest go first");
        log.retain(&|p| p == Path::new("/w/p65540"));
        assert_eq!(log.len(), 1);
        assert_eq!(log.last(Path::new("/w/p65540")), Some(65_540));
    }

    #[test]
    fn periodic_never_waits_on_a_locked_db_and_dropping_the_service_stops_its_threads() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let ws = root.join("dispatch");
        std::fs::create_dir_all(ws.join("old")).unwrap();
        let db = root.join("dispatch.db");
        let locker = Connection::open(&db).unwrap();
        locker
            .execute_batch(
                "CREATE TABLE tasks (id, project, status, started_at, node, pid); BEGIN EXCLUSIVE;",
            )
            .unwrap();
        let text = format!(
            "[daemon]\naudit_log = \"{r}/audit.jsonl\"\nstate_dir = \"{r}/state\"\n\n[[workspaces]]\npath = \"{w}\"\n\n[tasks]\ndb = \"{d}\"\nnode = \"n1\"\ntask_areas = [\"{w}\"]\nmax_age = \"1s\"\nbusy_timeout = \"2s\"\nretries = 2\n",
            r = root.display(),
            w = ws.display(),
            d = db.display()
        );
        let config = Config::parse(&text, "test").unwrap();
        let mut service = TaskService::new(&config);
        let cancel = Arc::new(AtomicBool::new(false));
        let executor = Arc::new(Executor::new(
            config.workspaces.clone(),
            AuditLog::open(&config.daemon.audit_log).unwrap(),
            false,
            cancel.clone(),
            service.protection(),
        ));
        let mut slowest = Duration::ZERO;
        let mut problems = Vec::new();
        let watching = Instant::now();
        while watching.elapsed() < Duration::from_secs(8) {
            let began = Instant::now();
            let tick = service.periodic(&executor, &cancel).unwrap();
            slowest = slowest.max(began.elapsed());
            problems = tick.problems;
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            slowest < Duration::from_millis(500),
            "periodic took {slowest:?}"
        );
        let problems = problems.join("\n");
        assert!(problems.contains("task state unknown"), "{problems}");
        assert!(
            ws.join("old").exists(),
            "deleted while task state was unknown"
        );
        let dropping = Instant::now();
        drop(service);
        assert!(
            dropping.elapsed() < STOP_WAIT,
            "the service took {:?} to stop",
            dropping.elapsed()
        );
        drop(locker);
    }
}
