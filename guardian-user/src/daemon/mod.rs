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
mod lead;
mod memory;
pub mod notify;
mod plan;
mod projects;
mod publish;
pub mod reload;
mod reports;
pub mod state;

pub use cycle::{plan_now, CycleKind, FsPlan};
pub use projects::guarded_filesystems;
pub use reload::{ReloadFrom, ReloadRequests, SHUTDOWN_BOUND};

use crate::aggregate::Aggregator;
use crate::cleanup::{AuditLog, AuditRecord, Executor, ExtraProtection};
use crate::config::{Config, Workspace};
use crate::fsys::FsSpace;
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
        memory::fix_thresholds();
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
            // Not a reactive source: its samples only feed the project sizes, free space is
            // read at each poll, and with no countdown to wake it the sampler never rests.
            return;
        }
        let was_busy = self.cleaner.busy();
        let unchanged = self.guard(false);
        if self.cleaner.busy() != was_busy {
            self.publish_state();
        }
        let resting = self.cadence.resting();
        // Every source past this point counts down; what it misses (stores through `mmap`,
        // inotify's directories past its watch limit, only polled) moves free space, which the
        // next resting sample reads.
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
