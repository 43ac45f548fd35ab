//! The daemon: the main loop. Every `poll_interval` (and every `sample_interval` with a
//! reactive source) it reads free space of each guarded filesystem with `statvfs`, feeds the
//! forecasts, and hands a cleanup cycle to the cleanup thread ([`cycle`]) when a threshold is
//! crossed or the growth forecast says one will be within the lead time (a preemptive phase 1).
//! The state file is written by its own thread ([`state`]), only when it changed. Every trigger
//! — a poll, a sample, a report of the cleanup thread, shutdown — arrives as an [`Event`].
//!
//! Invariants: the loop itself never walks a tree, runs a child process or waits on the task
//! DB — those run on the cleanup, state and task threads, so sampling keeps its period; a
//! survey runs only when a filesystem is under pressure or a forecast fired; a forecast never
//! starts phase 2; one cycle runs at a time and ends at its goal, when nothing is left, or after
//! a bounded number of rounds; every deletion of Guardian's own is a level reset for the
//! forecasts; nothing a node can throw at it (a full disk, an unwritable audit log or state
//! dir, odd file names) stops the loop: it is reported and waited out; shutdown is honoured
//! between and during deletions.

mod cadence;
pub mod cycle;
pub mod forecast;
mod guard;
mod memory;
pub mod notify;
mod plan;
mod projects;
mod publish;
pub mod reload;
pub mod state;

pub use cycle::{plan_now, CycleKind, FsPlan};
pub use projects::guarded_filesystems;
pub use reload::{ReloadFrom, ReloadRequests, SHUTDOWN_BOUND};

use crate::aggregate::Aggregator;
use crate::cleanup::{AuditLog, AuditRecord, Executor, ExtraProtection, Outcome};
use crate::config::{Config, Workspace};
use crate::fsys::{self, FsSpace};
use crate::policy::Limits;
use crate::sources::{self, ProjectDir, Source};
use crossbeam_channel::{select, Receiver};
use cycle::{Cleaner, Job, Report};
use forecast::Forecasts;
use projects::Listing;
use state::{CycleSummary, DaemonState, ForecastState, StateWriter};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Audit records kept for the state file.
const RECENT_ACTIONS: usize = 20;
/// After a cycle found nothing left to delete, the next full cycle on that filesystem waits this
/// long, unless free space drops further: walking trees every poll would only load the node.
const RETRY_AFTER_NOTHING_LEFT: Duration = Duration::from_secs(60);
/// How far free space must fall (in bytes, as a share of the size) to retry a stalled filesystem
/// before `RETRY_AFTER_NOTHING_LEFT`.
const STALL_DROP_FRACTION: f64 = 0.01;

/// Everything that can wake the main loop.
#[derive(Debug)]
pub enum Event {
    /// Time to check free space, run the task side, refresh the projects (also `Tick` from
    /// outside).
    Poll,
    /// Time to drain the write source and re-read free space.
    Sample,
    /// The write countdown ran out: sample now (`sources::countdown`).
    Woken(sources::countdown::Wake),
    /// What the cleanup thread did.
    Cleanup(Report),
    /// SIGHUP: re-read the config ([`reload`]).
    Reload,
    /// SIGINT/SIGTERM: stop.
    Shutdown,
}

/// What stops the daemon from starting. Nothing stops it once it runs.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configured write source cannot run here (an explicit choice is never replaced at
    /// start; only `auto` falls back).
    #[error("daemon.source: {0}")]
    Source(sources::SourceError),
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
}

/// Filesystems holding at least one workspace, grouped by device.
#[derive(Clone, Debug)]
pub struct GuardedFs {
    pub dev: u64,
    pub mount: PathBuf,
    /// A path on the filesystem to `statvfs`.
    pub probe: PathBuf,
    pub workspaces: Vec<Workspace>,
}

pub struct Guardian {
    config: Arc<Config>,
    executor: Arc<Executor>,
    cleaner: Cleaner,
    /// When each `[[retention]]` rule last ran (its own schedule, on the cleanup thread).
    retention: crate::retention::Schedule,
    /// The filesystem the running cycle works on.
    cycle_fs: Option<GuardedFs>,
    state: StateWriter,
    cancel: Arc<AtomicBool>,
    recent: VecDeque<AuditRecord>,
    last_cycle: Option<CycleSummary>,
    problems: Vec<String>,
    /// Why nothing is deleted now (the audit log cannot be written), while so.
    refusing: Option<String>,
    /// Filesystems (by device) whose last cycle stopped short: free bytes then, and when.
    stalled: HashMap<u64, (u64, Instant)>,
    source: Box<dyn Source>,
    /// Why each better source was skipped.
    source_skipped: Vec<String>,
    aggregator: Aggregator,
    /// The project dirs the source currently watches.
    watched: Arc<[ProjectDir]>,
    /// The workspace dirs as of the last listing of their project dirs.
    listing: Listing,
    /// When polls end by giving freed heap and touched code pages back to the OS (after
    /// start-up and a new project set — the source's baseline walk and the probe's BTF parsing
    /// free what they needed — then once a minute).
    give_back: memory::Schedule,
    /// The last write the source saw into each watched project (seconds since the epoch).
    last_write: HashMap<PathBuf, i64>,
    last_sample: Instant,
    cgroup_names: sources::CgroupNames,
    /// The guarded filesystems as of the last poll (workspaces grouped by device, mount points
    /// from mountinfo); the sampler reuses it instead of re-reading mountinfo.
    filesystems: Vec<GuardedFs>,
    /// Whether the cleanup thread was busy at the last [`guard`](Guardian::guard).
    guarded_busy: Option<bool>,
    /// Task DB side: running-task protection, task/scratch sweeps, usage limits, ghost reaper.
    tasks: crate::tasks::TaskService,
    /// Growth models per filesystem and project, the lead time, the preemptive trigger.
    forecasts: Forecasts,
    /// The forecasts' clock: seconds since this instant.
    started: Instant,
    /// Each guarded filesystem's last `statvfs` and limits, by device (project forecasts).
    spaces: HashMap<u64, (FsSpace, Limits)>,
    /// Where events and the status go for `serve` (and the server thread, when it runs).
    hub: crate::publish::Hub,
    server: Option<crate::serve::Server>,
    /// What the outside was last told: each filesystem's pressure, the source, the state's
    /// `updated` stamp, the running cycle's start and kind.
    told: publish::Told,
    /// Where reloads come from, and how the last one went.
    reload: reload::ReloadState,
    /// The executor's protection (the caller's and the task DB's), for the executor a reload
    /// builds.
    protection: ExtraProtection,
    /// The config `/plan` plans with (a reload replaces it).
    planner_config: Arc<std::sync::Mutex<Arc<Config>>>,
    /// systemd's end (`Type=notify`): ready, watchdog pings from the loop, stopping.
    notify: notify::Notifier,
    /// The countdown wake-up that started the sample under way, if one did.
    woken: Option<sources::countdown::Wake>,
    /// The sampler's pace: resting while nothing happens.
    cadence: cadence::Cadence,
    /// The countdown budgets of the last `statvfs` readings, as the thresholds ask for them
    /// (armed smaller while the sampler rests).
    budgets: Vec<sources::countdown::Budget>,
}

impl Guardian {
    /// Prepares the daemon: the executor (the audit log is opened now if it can be; if not,
    /// Guardian waits in a refusing state), the cleanup and state threads, the write source.
    /// `cancel` is set on shutdown.
    pub fn new(
        config: Config,
        cancel: Arc<AtomicBool>,
        extra_protection: ExtraProtection,
    ) -> Result<Guardian, DaemonError> {
        let audit = AuditLog::new(&config.daemon.audit_log);
        let tasks = crate::tasks::TaskService::new(&config);
        // Right before each delete: the caller's check, then a fresh answer from the task DB.
        let running = tasks.protection();
        let extra = extra_protection.clone();
        let protection: ExtraProtection = Arc::new(move |p: &Path| extra(p).or_else(|| running(p)));
        let executor = Arc::new(
            Executor::new(
                config.workspaces.clone(),
                audit,
                config.daemon.dry_run,
                cancel.clone(),
                protection.clone(),
            )
            .with_rules(&config.compiled_rules()),
        );
        crate::sources::poll::set_cpu_budget(config.daemon.poll_cpu_budget.fraction());
        let recent = crate::cleanup::audit::read_tail(&config.daemon.audit_log, 1 << 20)
            .map(|records| {
                let skip = records.len().saturating_sub(RECENT_ACTIONS);
                records
                    .into_iter()
                    .skip(skip)
                    .filter(|r| r.outcome != crate::cleanup::audit::INTENT)
                    .collect()
            })
            .unwrap_or_default();
        let workspace_paths: Vec<PathBuf> =
            config.workspaces.iter().map(|w| w.path.clone()).collect();
        let source =
            sources::open(config.daemon.source, &workspace_paths).map_err(DaemonError::Source)?;
        let source_skipped = source.skipped().to_vec();
        let forecasts = Forecasts::new(&config.forecast, config.daemon.sample_interval.0);
        let config = Arc::new(config);
        let planner_config = Arc::new(std::sync::Mutex::new(config.clone()));
        let cleaner = Cleaner::spawn(cycle::Context {
            config: config.clone(),
            rules: Arc::new(config.compiled_rules()),
            executor: executor.clone(),
            extra: extra_protection,
            tasks: tasks.snapshot_source(),
            cancel: cancel.clone(),
        })
        .map_err(|source| DaemonError::Thread {
            what: "cleanup",
            source,
        })?;
        let state = StateWriter::spawn(&config.daemon.runtime_dir()).map_err(|source| {
            DaemonError::Thread {
                what: "state writer",
                source,
            }
        })?;
        let cadence = cadence::Cadence::new(
            config.daemon.sample_interval.0,
            config.daemon.poll_interval.0,
        );
        Ok(Guardian {
            forecasts,
            started: Instant::now(),
            spaces: HashMap::new(),
            source: Box::new(source),
            source_skipped,
            aggregator: Aggregator::new(),
            watched: Arc::from(Vec::new()),
            listing: Listing::default(),
            give_back: memory::Schedule::new(),
            last_write: HashMap::new(),
            last_sample: Instant::now(),
            cgroup_names: sources::CgroupNames::new(),
            filesystems: Vec::new(),
            guarded_busy: None,
            tasks,
            config,
            executor,
            cleaner,
            retention: crate::retention::Schedule::default(),
            cycle_fs: None,
            state,
            cancel,
            recent,
            last_cycle: None,
            problems: Vec::new(),
            refusing: None,
            stalled: HashMap::new(),
            hub: crate::publish::Hub::new(),
            server: None,
            told: publish::Told::default(),
            reload: reload::ReloadState::default(),
            protection,
            planner_config,
            notify: notify::Notifier::from_env(),
            woken: None,
            cadence,
            budgets: Vec::new(),
        })
    }

    /// Runs until shutdown (or one check with `once`: the recovery of interrupted deletions,
    /// one poll and the cycle it starts, the state file written).
    pub fn run(mut self, events: Receiver<Event>, once: bool) -> Result<(), DaemonError> {
        let interval = self.config.daemon.poll_interval.0;
        tracing::info!(
            poll_interval = ?interval,
            sample_interval = ?self.config.daemon.sample_interval.0,
            dry_run = self.config.daemon.dry_run,
            workspaces = self.config.workspaces.len(),
            source = self.source.name(),
            "guardian started"
        );
        self.cleaner.submit(Job::Recover);
        let reports = self.cleaner.reports().clone();
        if !once {
            self.start_server();
        }
        if once {
            self.run_once(&reports);
            return Ok(());
        }
        let mut poll = crossbeam_channel::tick(interval);
        let (waker, wakeups) = crossbeam_channel::bounded(1);
        self.source.set_waker(waker);
        self.poll();
        self.notify.ready();
        loop {
            // The next sample is due one interval (the resting one while nothing happens)
            // after the last one began.
            let sample = crossbeam_channel::at(self.last_sample + self.cadence.interval());
            let event = select! {
                recv(poll) -> _ => Event::Poll,
                recv(sample) -> _ => Event::Sample,
                recv(wakeups) -> w => w.map_or(Event::Shutdown, Event::Woken),
                recv(reports) -> r => r.map(Event::Cleanup).unwrap_or(Event::Shutdown),
                recv(events) -> e => e.unwrap_or(Event::Shutdown),
            };
            let progress = matches!(event, Event::Poll | Event::Sample);
            match event {
                Event::Poll => self.poll(),
                Event::Sample => self.sample(),
                Event::Woken(wake) => {
                    tracing::debug!(resting = self.cadence.resting(), "sampling: {wake}");
                    self.cadence.stir();
                    self.woken = Some(wake);
                    self.sample();
                    self.woken = None;
                }
                Event::Cleanup(report) => {
                    self.cadence.stir();
                    self.on_cleanup(report);
                }
                Event::Reload => {
                    let intervals = (
                        self.config.daemon.poll_interval.0,
                        self.config.daemon.sample_interval.0,
                    );
                    // systemd's `reload` waits for READY=1 after RELOADING=1 (either outcome).
                    self.notify.reloading();
                    let reloaded = self.reload();
                    self.notify.ready();
                    if reloaded {
                        let daemon = &self.config.daemon;
                        if intervals != (daemon.poll_interval.0, daemon.sample_interval.0) {
                            poll = crossbeam_channel::tick(daemon.poll_interval.0);
                            self.cadence
                                .set_intervals(daemon.sample_interval.0, daemon.poll_interval.0);
                        }
                        // The new thresholds and workspaces are checked now, not a poll later.
                        self.poll();
                    }
                }
                Event::Shutdown => break,
            }
            if progress {
                self.notify.progress();
            }
            if self.cancel.load(Ordering::Relaxed) {
                break;
            }
        }
        self.notify.stopping();
        tracing::info!("stopping");
        self.stop(&reports);
        tracing::info!("guardian stopped");
        self.state.flush(Self::state_flush_limit());
        Ok(())
    }

    /// `run --once`: recovery, one poll (the task side's work waited for), the cycle it
    /// started, then the state file.
    fn run_once(mut self, reports: &Receiver<Report>) {
        self.tasks.wait_for_work(true);
        self.wait_for_cleaner(reports);
        self.poll();
        self.wait_for_cleaner(reports);
        self.publish_state();
        self.state.flush(Duration::from_secs(10));
    }

    fn wait_for_cleaner(&mut self, reports: &Receiver<Report>) {
        while self.cleaner.busy() {
            match reports.recv() {
                Ok(report) => self.on_cleanup(report),
                Err(_) => break,
            }
        }
    }

    /// One poll: the task side, the watched projects, every guarded filesystem (a cycle where
    /// a threshold is crossed), the state file.
    fn poll(&mut self) {
        self.problems.clear();
        // Task side on its own schedules: age/inactivity sweep, usage events, ghost reaping.
        match self.tasks.periodic(&self.executor, &self.cancel) {
            Ok(tick) => {
                for record in tick.records {
                    self.after_own_deletion(&record);
                    self.note(record);
                }
                self.problems.extend(tick.problems);
            }
            Err(e) => {
                crate::warn_quiet!("tasks.audit", error = %e, "task side: cannot write the audit log");
                self.refusing = Some(e.to_string());
            }
        }
        self.refresh_projects();
        let source = self.source.status();
        if source.degraded.is_some() {
            self.problems.push(format!("write source: {source}"));
        }
        self.tell_source(&source);
        self.problems.extend(source.problems);
        let known = if self.listing.table.changed() {
            &[][..]
        } else {
            &self.filesystems[..]
        };
        self.filesystems = projects::guarded_filesystems_knowing(&self.config.workspaces, known);
        if !self.guard(true) {
            self.cadence.stir();
        }
        if !self.cleaner.busy() {
            let due = self.retention.due(Instant::now(), &self.config.retention);
            if !due.is_empty() {
                self.cleaner.submit(Job::Retention(due));
            }
        }
        for ws in &self.config.workspaces {
            if !ws.path.is_dir() {
                self.problems.push(format!(
                    "workspace {} does not exist (yet)",
                    crate::textpath::escape(&ws.path)
                ));
            }
        }
        self.publish_state();
        if self.give_back.due(Instant::now()) {
            memory::give_back();
        }
    }

    /// One sample: drain the write source into the rates; with a reactive source, re-read free
    /// space now, so a crossing starts a cycle within one sample interval, not at the next poll.
    /// A sample that finds nothing new counts towards the sampler's rest ([`cadence`]).
    fn sample(&mut self) {
        let seconds = self.last_sample.elapsed().as_secs_f64();
        self.last_sample = Instant::now();
        let mut wrote = true;
        match self.source.drain() {
            // The supervising source logs its own notes (once a minute per cause).
            Ok(sample) => {
                self.aggregator.absorb(&sample, seconds);
                self.tell_writes(&sample);
                self.feed_project_forecasts(&sample);
                self.note_writes(&sample);
                let written = self.watched.iter().filter(|p| {
                    sample.growth.get(&p.id).is_some_and(|g| *g != 0)
                        || sample.freed.contains_key(&p.id)
                });
                wrote = sample.growth.values().any(|g| *g != 0)
                    || !sample.freed.is_empty()
                    || !sample.rescan.is_empty();
                let rescanned = sample.rescan.iter().map(PathBuf::as_path);
                self.cleaner.note_writes(
                    self.source.name(),
                    written.map(|p| &*p.path).chain(rescanned),
                );
            }
            Err(e) => crate::warn_quiet!("source.drain", error = %e, "write source"),
        }
        if self.source.name() == "poll" {
            // No countdown to wake it: the poll source's sampler never rests.
            return;
        }
        let was_busy = self.cleaner.busy();
        let unchanged = self.guard(false);
        if self.cleaner.busy() != was_busy {
            self.publish_state();
        }
        let resting = self.cadence.resting();
        self.cadence
            .sampled(!wrote && unchanged && !self.cleaner.busy() && self.woken.is_none());
        if self.cadence.resting() != resting {
            self.arm_countdown();
        }
    }

    /// Arms the source's write countdown with the last readings' budgets (smaller while the
    /// sampler rests, so a new writer wakes it).
    fn arm_countdown(&mut self) {
        let budgets: Vec<_> = (self.budgets.iter())
            .map(|b| sources::countdown::Budget {
                bytes: self.cadence.budget(b.bytes),
                ..*b
            })
            .collect();
        self.source.arm(&budgets);
    }

    /// A report of the cleanup thread.
    fn on_cleanup(&mut self, report: Report) {
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

    /// Feeds each project's net growth from the source (written less freed by others) into its
    /// forecast.
    fn feed_project_forecasts(&mut self, sample: &sources::Sample) {
        let growth: HashMap<PathBuf, i64> = sample
            .projects()
            .filter_map(|id| Some((self.aggregator.path_of(id)?.to_path_buf(), sample.net(id))))
            .collect();
        let now = self.clock();
        self.forecasts.absorb_growth(now, &growth);
    }

    /// Remembers when the source last saw bytes written into each project: a project written
    /// within `active_within` is active (never deleted whole).
    fn note_writes(&mut self, sample: &sources::Sample) {
        let now = crate::tasks::clock::now_secs();
        for (id, growth) in &sample.growth {
            if *growth <= 0 {
                continue;
            }
            if let Some(path) = self.aggregator.path_of(*id) {
                self.last_write.insert(path.to_path_buf(), now);
                self.tasks.note_write(path, now);
            }
        }
    }

    /// Seconds since the daemon started: the forecasts' clock.
    fn clock(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
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
    fn after_own_deletion(&mut self, record: &AuditRecord) {
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

    fn note(&mut self, record: AuditRecord) {
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

    /// Builds the state (bounded) and hands it to the writer, which writes it when it changed.
    fn publish_state(&mut self) {
        let names = &mut self.cgroup_names;
        let (projects, omitted, omitted_rate) = self
            .aggregator
            .report_summary(state::MAX_PROJECTS, &mut |id| names.name(id));
        let forecast_projects =
            self.forecasts
                .project_views(self.clock(), &self.spaces, state::MAX_PROJECTS);
        let mut problems = self.problems.clone();
        if let Some(why) = self.state.failure() {
            problems.push(why);
        }
        if let Some(why) = &self.refusing {
            problems.push(format!("refusing to delete: {why}"));
        }
        problems.extend(self.hub.problems());
        problems.extend(self.reload.problems());
        let mut state = DaemonState {
            forecast: Some(ForecastState {
                enabled: self.config.forecast.enabled,
                lead_time: self.config.forecast.lead_time.to_string(),
                projects: forecast_projects,
            }),
            source_skipped: self.source_skipped.clone(),
            source_status: Some(self.source.status()),
            projects_omitted: omitted,
            projects_omitted_rate_bps: omitted_rate,
            projects,
            updated: String::new(),
            pid: std::process::id(),
            source: self.source.name().into(),
            dry_run: self.config.daemon.dry_run,
            poll_interval_ms: u64::try_from(self.config.daemon.poll_interval.0.as_millis())
                .unwrap_or(u64::MAX),
            filesystems: self.fs_states(),
            last_cycle: self.last_cycle.clone(),
            recent_actions: self.recent.iter().cloned().collect(),
            refusing: self.refusing.clone(),
            problems,
        };
        let now = crate::cleanup::audit::timestamp(SystemTime::now());
        if self.state.submit(&mut state, &now) {
            self.tell_status(&mut state);
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
