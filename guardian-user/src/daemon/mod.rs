//! The daemon: the main loop that checks each guarded filesystem with `statvfs` every
//! `poll_interval` (and every `sample_interval` with a reactive source), runs a cleanup cycle
//! (survey → plan → execute → verify → escalate) when a threshold is crossed or when the growth
//! forecast says one will be within the lead time (a preemptive phase 1), and rewrites the
//! state file. Every trigger arrives as an [`Event`].
//!
//! Invariants: the survey (a tree walk) runs only when a filesystem is under pressure or a
//! forecast fired; a forecast never starts phase 2; a cycle ends at the target, when nothing is
//! left to delete, or after a bounded number of rounds; every deletion of Guardian's own is a
//! level reset for the forecasts; shutdown is honoured between and during deletions.

pub mod forecast;
pub mod state;

use crate::aggregate::Aggregator;
use crate::cleanup::{AuditLog, AuditRecord, Executor, ExtraProtection, Outcome};
use crate::config::{CompiledRule, Config, Workspace};
use crate::fsys::{self, FsSpace};
use crate::policy::{self, Limits, Plan, PlanInput, Preemptive, Pressure};
use crate::protect::ProcSnapshot;
use crate::sources::{self, ProjectDir, Source};
use crate::survey;
use crossbeam_channel::{select, Receiver};
use forecast::{Forecasts, Named};
use state::{CycleSummary, DaemonState, ForecastState, FsState};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most survey → plan → execute rounds in one cycle.
const MAX_ROUNDS: u32 = 6;
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
    /// Time to check free space.
    Tick,
    /// SIGINT/SIGTERM: stop.
    Shutdown,
}

/// Failures that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the audit log {path}: {source} (check daemon.audit_log and permissions)")]
    AuditLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot write to the audit log {path}: {source}; stopping rather than deleting unrecorded"
    )]
    AuditWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The configured write source cannot run here (an explicit choice is never replaced at
    /// start; only `auto` falls back).
    #[error("daemon.source: {0}")]
    Source(sources::SourceError),
    #[error(
        "cannot write the state file in {path}: {source} (check daemon.state_dir and permissions)"
    )]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why a cleanup cycle runs.
enum CycleKind {
    /// A threshold is crossed; the reason says which.
    Reactive { reason: String },
    /// A forecast fired before any threshold: phase 1 only, fastest growing projects first.
    Preemptive {
        plan: Preemptive,
        growth: HashMap<PathBuf, f64>,
    },
}

impl CycleKind {
    /// What each round's plan is asked for.
    fn input(&self) -> PlanInput<'_> {
        match self {
            CycleKind::Reactive { .. } => PlanInput {
                continuing: true,
                ..PlanInput::default()
            },
            CycleKind::Preemptive { plan, growth } => PlanInput {
                continuing: true,
                growth: Some(growth),
                preemptive: Some(plan),
            },
        }
    }

    /// The cycle's trigger, in words.
    fn describe(&self) -> String {
        match self {
            CycleKind::Reactive { reason } => reason.clone(),
            CycleKind::Preemptive { plan, .. } => format!("preemptive: {}", plan.trigger),
        }
    }
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

/// One filesystem's plan, for `guardian plan`.
#[derive(Debug, serde::Serialize)]
pub struct FsPlan {
    pub mount: PathBuf,
    pub space: FsSpace,
    pub plan: Plan,
    pub survey_errors: Vec<crate::scan::WalkError>,
    /// Whether the workspaces were walked (only under pressure or for a forecast).
    #[serde(skip)]
    pub surveyed: bool,
    /// Each surveyed project's allocated bytes.
    #[serde(skip)]
    pub project_bytes: Vec<(PathBuf, u64)>,
}

pub struct Guardian {
    config: Config,
    rules: Vec<CompiledRule>,
    executor: Executor,
    cancel: Arc<AtomicBool>,
    recent: VecDeque<AuditRecord>,
    last_cycle: Option<CycleSummary>,
    problems: Vec<String>,
    /// Filesystems (by device) whose last cycle stopped short: free bytes then, and when.
    stalled: HashMap<u64, (u64, Instant)>,
    source: Box<dyn Source>,
    /// Why each better source was skipped.
    source_skipped: Vec<String>,
    aggregator: Aggregator,
    /// The project dirs the source currently watches.
    watched: Vec<ProjectDir>,
    last_sample: Instant,
    cgroup_names: sources::CgroupNames,
    /// Cycles run since start (the sampler rewrites the state file after one).
    cycles_run: u64,
    /// The guarded filesystems as of the last poll (workspaces grouped by device, mount points
    /// from mountinfo); the 250 ms sampler reuses it instead of re-reading mountinfo.
    filesystems: Vec<GuardedFs>,
    /// Task DB side: running-task protection, task/scratch sweeps, usage limits, ghost reaper.
    tasks: crate::tasks::TaskService,
    /// The caller's extra protection combined with running-task protection (survey + executor).
    protection: ExtraProtection,
    /// Growth models per filesystem and project, the lead time, the preemptive trigger.
    forecasts: Forecasts,
    /// The forecasts' clock: seconds since this instant.
    started: Instant,
    /// Each guarded filesystem's last `statvfs` and limits, by device (project forecasts).
    spaces: HashMap<u64, (FsSpace, Limits)>,
}

impl Guardian {
    /// Opens the audit log and prepares the executor. `cancel` is set on shutdown.
    pub fn new(
        config: Config,
        cancel: Arc<AtomicBool>,
        extra_protection: ExtraProtection,
    ) -> Result<Guardian, DaemonError> {
        let audit =
            AuditLog::open(&config.daemon.audit_log).map_err(|source| DaemonError::AuditLog {
                path: config.daemon.audit_log.clone(),
                source,
            })?;
        let tasks =
            crate::tasks::TaskService::new(&config).map_err(|source| DaemonError::AuditLog {
                path: config.daemon.audit_log.clone(),
                source,
            })?;
        let running = tasks.protection();
        let protection: ExtraProtection =
            Arc::new(move |p: &Path| extra_protection(p).or_else(|| running(p)));
        let executor = Executor::new(
            config.workspaces.clone(),
            audit,
            config.daemon.dry_run,
            cancel.clone(),
            protection.clone(),
        );
        let recent = crate::cleanup::audit::read_records(&config.daemon.audit_log)
            .map(|records| {
                records
                    .into_iter()
                    .rev()
                    .take(RECENT_ACTIONS)
                    .rev()
                    .collect()
            })
            .unwrap_or_default();
        let workspace_paths: Vec<PathBuf> =
            config.workspaces.iter().map(|w| w.path.clone()).collect();
        let source =
            sources::open(config.daemon.source, &workspace_paths).map_err(DaemonError::Source)?;
        let source_skipped = source.skipped().to_vec();
        let forecasts = Forecasts::new(&config.forecast, config.daemon.sample_interval.0);
        Ok(Guardian {
            forecasts,
            started: Instant::now(),
            spaces: HashMap::new(),
            source: Box::new(source),
            source_skipped,
            aggregator: Aggregator::new(),
            watched: Vec::new(),
            last_sample: Instant::now(),
            cgroup_names: sources::CgroupNames::new(),
            cycles_run: 0,
            filesystems: Vec::new(),
            tasks,
            protection,
            rules: config.compiled_rules(),
            config,
            executor,
            cancel,
            recent,
            last_cycle: None,
            problems: Vec::new(),
            stalled: HashMap::new(),
        })
    }

    /// Runs until shutdown (or one check with `once`).
    pub fn run(&mut self, events: Receiver<Event>, once: bool) -> Result<(), DaemonError> {
        let interval = self.config.daemon.poll_interval.0;
        tracing::info!(
            poll_interval = ?interval,
            sample_interval = ?self.config.daemon.sample_interval.0,
            dry_run = self.config.daemon.dry_run,
            workspaces = self.config.workspaces.len(),
            source = self.source.name(),
            "guardian started"
        );
        let ticker = crossbeam_channel::tick(interval);
        let sampler = crossbeam_channel::tick(self.config.daemon.sample_interval.0);
        self.check()?;
        if once {
            return Ok(());
        }
        loop {
            select! {
                recv(ticker) -> _ => self.check()?,
                recv(sampler) -> _ => self.sample()?,
                recv(events) -> event => match event {
                    Ok(Event::Tick) => self.check()?,
                    Ok(Event::Shutdown) | Err(_) => break,
                },
            }
            if self.cancel.load(Ordering::Relaxed) {
                break;
            }
        }
        tracing::info!("guardian stopped");
        Ok(())
    }

    /// One poll: refresh the watched projects, check every guarded filesystem (a cycle where a
    /// threshold is crossed), rewrite the state file.
    pub fn check(&mut self) -> Result<(), DaemonError> {
        self.problems.clear();
        // Task side on its own schedules: age/inactivity sweep, usage events, ghost reaping.
        let tick = self
            .tasks
            .periodic(&self.executor, &self.cancel)
            .map_err(|source| DaemonError::AuditWrite {
                path: self.executor.audit_path().to_path_buf(),
                source,
            })?;
        for record in tick.records {
            self.after_own_deletion(&record);
            self.note(record);
        }
        self.problems.extend(tick.problems);
        self.refresh_projects();
        let source = self.source.status();
        if source.degraded.is_some() {
            self.problems.push(format!("write source: {source}"));
        }
        self.problems.extend(source.problems);
        self.filesystems = guarded_filesystems(&self.config.workspaces);
        let states = self.guard()?;
        for ws in &self.config.workspaces {
            if !ws.path.is_dir() {
                self.problems.push(format!(
                    "workspace {} does not exist (yet)",
                    ws.path.display()
                ));
            }
        }
        self.write_state(states)
    }

    /// One sample: drain the write source into the rates; with a reactive source, re-read free
    /// space now, so a crossing starts a cycle within one sample interval, not at the next poll.
    pub fn sample(&mut self) -> Result<(), DaemonError> {
        let seconds = self.last_sample.elapsed().as_secs_f64();
        self.last_sample = Instant::now();
        match self.source.drain() {
            Ok(sample) => {
                for note in &sample.notes {
                    tracing::warn!(source = self.source.name(), "{note}");
                }
                self.aggregator.absorb(&sample, seconds);
                self.feed_project_forecasts(&sample);
            }
            Err(e) => tracing::warn!("write source: {e}"),
        }
        if self.source.name() == "poll" {
            return Ok(());
        }
        let cycles_before = self.cycles_run;
        let states = self.guard()?;
        if self.cycles_run != cycles_before {
            self.write_state(states)?;
        }
        Ok(())
    }

    /// Lists the project dirs of every workspace and re-registers them with the source when
    /// the set changed.
    fn refresh_projects(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let mut dirs = Vec::new();
        for ws in &self.config.workspaces {
            let Ok(entries) = std::fs::read_dir(&ws.path) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.path().symlink_metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    dirs.push((entry.path(), meta.dev(), meta.ino()));
                }
            }
        }
        dirs.sort();
        let projects = self.aggregator.project_dirs(&dirs);
        if projects != self.watched {
            let alive: std::collections::HashSet<PathBuf> =
                dirs.iter().map(|d| d.0.clone()).collect();
            self.aggregator.retain_paths(&|p| alive.contains(p));
            if let Err(e) = self.source.watch(&projects) {
                tracing::warn!("write source cannot watch the projects: {e}");
                self.problems.push(e.to_string());
            }
            self.forecasts.retain_projects(&projects);
            self.watched = projects;
        }
    }

    /// Feeds each project's growth from a counting source into its forecast (the poll source
    /// counts nothing: its projects are fed scan sizes).
    fn feed_project_forecasts(&mut self, sample: &sources::Sample) {
        if self.source.name() == "poll" {
            return;
        }
        let growth: HashMap<PathBuf, i64> = self
            .watched
            .iter()
            .filter_map(|p| sample.growth.get(&p.id).map(|g| (p.path.clone(), *g)))
            .collect();
        let now = self.clock();
        self.forecasts.absorb_growth(now, &growth);
    }

    /// Seconds since the daemon started: the forecasts' clock.
    fn clock(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Checks every guarded filesystem: a cycle where a threshold is crossed, a preemptive one
    /// where the forecast fires; every `statvfs` sample feeds the filesystem's forecast.
    fn guard(&mut self) -> Result<Vec<FsState>, DaemonError> {
        let mut states = Vec::new();
        for fs in self.filesystems.clone() {
            if self.cancel.load(Ordering::Relaxed) {
                break;
            }
            let Ok(space) = fsys::fs_space(&fs.probe) else {
                self.problems
                    .push(format!("cannot statvfs {}", fs.probe.display()));
                continue;
            };
            let now = self.clock();
            self.forecasts.observe_fs(fs.dev, now, &space);
            match self.cycle_due(&fs, now, &space) {
                Some(kind) if !self.recently_stalled(fs.dev, &space) => {
                    self.run_cycle(&fs, kind)?
                }
                Some(_) => {}
                None => {
                    self.stalled.remove(&fs.dev);
                }
            }
            let space = fsys::fs_space(&fs.probe).unwrap_or(space);
            let assessment = policy::assess(&space, &self.config.thresholds, false);
            self.spaces.insert(fs.dev, (space, assessment.limits));
            let forecast = self
                .forecasts
                .fs_view(fs.dev, self.clock(), &space, &assessment.limits);
            states.push(FsState {
                mount: fs.mount.clone(),
                workspaces: fs.workspaces.iter().map(|w| w.path.clone()).collect(),
                space,
                limits: assessment.limits,
                pressure: assessment.pressure,
                reason: assessment.reason,
                forecast: Some(forecast),
            });
        }
        Ok(states)
    }

    /// The cycle a filesystem needs now: reactive under a threshold, preemptive when its
    /// forecast fires above them, none otherwise.
    fn cycle_due(&self, fs: &GuardedFs, now: f64, space: &FsSpace) -> Option<CycleKind> {
        let assessment = policy::assess(space, &self.config.thresholds, false);
        if assessment.pressure != Pressure::Ok {
            return Some(CycleKind::Reactive {
                reason: assessment.reason,
            });
        }
        let trigger = self
            .forecasts
            .check(fs.dev, now, space, &assessment.limits)?;
        self.preemptive_kind(fs, &trigger, space, &assessment.limits)
    }

    /// The preemptive cycle a fired trigger asks for; none when its goal is already met (a
    /// config whose `target_free` equals `cleanup_free` leaves a forecast nothing to do).
    fn preemptive_kind(
        &self,
        fs: &GuardedFs,
        trigger: &Named,
        space: &FsSpace,
        limits: &Limits,
    ) -> Option<CycleKind> {
        let plan = self.forecasts.preemptive(trigger, limits);
        (plan.goal_free > space.avail_bytes).then(|| CycleKind::Preemptive {
            plan,
            growth: self.forecasts.growth_rates(fs.dev, space.avail_bytes),
        })
    }

    /// Runs one cycle and remembers how it ended (a filesystem where it stopped short backs
    /// off).
    fn run_cycle(&mut self, fs: &GuardedFs, kind: CycleKind) -> Result<(), DaemonError> {
        match &kind {
            CycleKind::Reactive { reason } => {
                tracing::warn!(mount = %fs.mount.display(), reason = %reason, "pressure: starting a cleanup cycle")
            }
            CycleKind::Preemptive { plan, .. } => {
                tracing::warn!(mount = %fs.mount.display(), trigger = %plan.trigger, "forecast: starting a preemptive phase 1")
            }
        }
        let summary = self.cycle(fs, &kind)?;
        if summary.reached_target {
            self.stalled.remove(&fs.dev);
        } else if !self.cancel.load(Ordering::Relaxed) {
            let avail = fsys::fs_space(&fs.probe)
                .map(|s| s.avail_bytes)
                .unwrap_or(0);
            self.stalled.insert(fs.dev, (avail, Instant::now()));
            tracing::warn!(
                mount = %fs.mount.display(),
                shortfall = summary.shortfall.as_deref().unwrap_or(""),
                "cleanup stopped short of the target; next full cycle in {:?} unless free space drops further",
                RETRY_AFTER_NOTHING_LEFT
            );
        }
        self.last_cycle = Some(summary);
        self.cycles_run += 1;
        Ok(())
    }

    /// One cleanup cycle on one filesystem: rounds of survey → plan → execute, each starting
    /// from the free space `statvfs` really shows, until the target is reached or nothing is
    /// left. A round that frees less than planned is followed by one that plans the next
    /// candidates, and phase 2 once phase 1 is exhausted below `critical_free`.
    fn cycle(&mut self, fs: &GuardedFs, kind: &CycleKind) -> Result<CycleSummary, DaemonError> {
        let started = SystemTime::now();
        let start_space = fsys::fs_space(&fs.probe).ok();
        let mut attempted: HashSet<PathBuf> = HashSet::new();
        let mut rounds = 0;
        let mut actions = 0;
        let mut vacuumed = self.config.daemon.journal_vacuum.is_empty();
        let mut shortfall = None;
        let mut reached_target = false;
        while rounds < MAX_ROUNDS && !self.cancel.load(Ordering::Relaxed) {
            let plan = self.plan_fs(fs, kind, &attempted);
            if plan.assessment.pressure == Pressure::Ok {
                reached_target = true;
                break;
            }
            rounds += 1;
            let todo: Vec<_> = plan
                .actions
                .iter()
                .filter(|a| !attempted.contains(&a.path))
                .cloned()
                .collect();
            if todo.is_empty() && vacuumed {
                shortfall = Some(format!(
                    "nothing left to delete: {} short of the target ({} candidates blocked)",
                    crate::config::human_bytes(plan.assessment.bytes_needed),
                    plan.skipped.len()
                ));
                break;
            }
            for action in &todo {
                attempted.insert(action.path.clone());
                let began = Instant::now();
                let report =
                    self.executor
                        .execute(action)
                        .map_err(|source| DaemonError::AuditWrite {
                            path: self.executor.audit_path().to_path_buf(),
                            source,
                        })?;
                let seconds = began.elapsed().as_secs_f64();
                actions += 1;
                self.measure_deletion(&report, seconds);
                self.after_own_deletion(&report.record);
                self.note(report.record);
                if report.outcome == Outcome::Interrupted || self.target_reached(fs, kind) {
                    break;
                }
            }
            if !vacuumed {
                vacuumed = true;
                self.vacuum_journal(fs)?;
            }
            if self.config.daemon.dry_run {
                shortfall = Some("dry run: one round planned and logged, nothing deleted".into());
                break;
            }
        }
        let end_space = fsys::fs_space(&fs.probe).ok();
        let bytes_freed = match (start_space, end_space) {
            (Some(s), Some(e)) => e.avail_bytes.saturating_sub(s.avail_bytes),
            _ => 0,
        };
        reached_target |= self.target_reached(fs, kind);
        let summary = CycleSummary {
            mount: fs.mount.clone(),
            started: crate::cleanup::audit::timestamp(started),
            finished: crate::cleanup::audit::timestamp(SystemTime::now()),
            trigger: kind.describe(),
            rounds,
            actions,
            bytes_freed,
            reached_target,
            shortfall: if reached_target { None } else { shortfall },
        };
        tracing::info!(
            mount = %fs.mount.display(),
            actions,
            rounds,
            freed = %crate::config::human_bytes(bytes_freed),
            reached_target,
            "cleanup cycle finished"
        );
        Ok(summary)
    }

    /// True while a filesystem whose last cycle found nothing left is within its back-off and
    /// its free space has not dropped noticeably since.
    fn recently_stalled(&self, dev: u64, space: &FsSpace) -> bool {
        let Some(&(avail_then, when)) = self.stalled.get(&dev) else {
            return false;
        };
        let drop_allowed = (space.total_bytes as f64 * STALL_DROP_FRACTION) as u64;
        when.elapsed() < RETRY_AFTER_NOTHING_LEFT && space.avail_bytes + drop_allowed >= avail_then
    }

    /// True once the cycle's goal is met: the target, or a preemptive cycle's goal (unless a
    /// threshold got crossed meanwhile, which makes it a usual cycle).
    fn target_reached(&self, fs: &GuardedFs, kind: &CycleKind) -> bool {
        fsys::fs_space(&fs.probe)
            .map(|s| {
                policy::assess_with(&s, &self.config.thresholds, &kind.input()).pressure
                    == Pressure::Ok
            })
            .unwrap_or(false)
    }

    /// Feeds a real deletion's speed into the lead-time estimate.
    fn measure_deletion(&mut self, report: &crate::cleanup::ActionReport, seconds: f64) {
        if matches!(report.outcome, Outcome::Deleted | Outcome::Partial) {
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
        if record.dry_run || !matches!(record.outcome.as_str(), "deleted" | "partial") {
            return;
        }
        let Some((fs, project)) = self.owner_of(&record.path) else {
            return;
        };
        let now = self.clock();
        if let Ok(space) = fsys::fs_space(&fs.probe) {
            self.forecasts.fs_cleaned(fs.dev, now, &space);
        }
        self.forecasts
            .project_cleaned(&project, now, record.bytes_unlinked);
    }

    /// The guarded filesystem and the project dir (a workspace's child) holding `path`.
    fn owner_of(&self, path: &Path) -> Option<(GuardedFs, PathBuf)> {
        self.filesystems.iter().find_map(|fs| {
            let ws = fs.workspaces.iter().find(|w| path.starts_with(&w.path))?;
            let project = path
                .ancestors()
                .find(|a| a.parent() == Some(ws.path.as_path()))?;
            Some((fs.clone(), project.to_path_buf()))
        })
    }

    fn vacuum_journal(&mut self, fs: &GuardedFs) -> Result<(), DaemonError> {
        let argv = self.config.daemon.journal_vacuum.clone();
        let report = self
            .executor
            .run_command(
                "journal_vacuum",
                &argv,
                "phase 1: journal vacuum",
                &fs.probe,
            )
            .map_err(|source| DaemonError::AuditWrite {
                path: self.executor.audit_path().to_path_buf(),
                source,
            })?;
        if report.outcome == Outcome::Deleted {
            if let Ok(space) = fsys::fs_space(&fs.probe) {
                let now = self.clock();
                self.forecasts.fs_cleaned(fs.dev, now, &space);
            }
        }
        self.note(report.record);
        Ok(())
    }

    /// Surveys the filesystem's workspaces and plans, leaving out paths already attempted. A
    /// survey's duration feeds the lead time; with the poll source, its project sizes feed the
    /// project forecasts.
    fn plan_fs(&mut self, fs: &GuardedFs, kind: &CycleKind, attempted: &HashSet<PathBuf>) -> Plan {
        let began = Instant::now();
        let planned = plan_filesystem(
            fs,
            &self.config,
            &self.rules,
            &kind.input(),
            attempted,
            &*self.protection,
        );
        if planned.surveyed {
            self.forecasts
                .lead
                .observe_scan(began.elapsed().as_secs_f64());
            if self.source.name() == "poll" {
                let now = self.clock();
                for (project, bytes) in &planned.project_bytes {
                    self.forecasts.observe_project_size(project, now, *bytes);
                }
            }
        }
        planned.plan
    }

    fn note(&mut self, record: AuditRecord) {
        tracing::info!(
            action = %record.action,
            path = %record.path.display(),
            rule = %record.rule,
            outcome = %record.outcome,
            estimated = record.bytes_estimated,
            freed = record.bytes_freed,
            error = record.error.as_deref().unwrap_or(""),
            "action"
        );
        self.recent.push_back(record);
        while self.recent.len() > RECENT_ACTIONS {
            self.recent.pop_front();
        }
    }

    fn write_state(&mut self, filesystems: Vec<FsState>) -> Result<(), DaemonError> {
        let names = &mut self.cgroup_names;
        let projects = self.aggregator.report(&mut |id| names.name(id));
        let forecast = ForecastState {
            enabled: self.config.forecast.enabled,
            lead_time: self.config.forecast.lead_time.to_string(),
            projects: self.forecasts.project_views(self.clock(), &self.spaces),
        };
        let state = DaemonState {
            forecast: Some(forecast),
            source_skipped: self.source_skipped.clone(),
            source_status: Some(self.source.status()),
            projects,
            updated: crate::cleanup::audit::timestamp(SystemTime::now()),
            pid: std::process::id(),
            source: self.source.name().into(),
            dry_run: self.config.daemon.dry_run,
            poll_interval_ms: self.config.daemon.poll_interval.0.as_millis() as u64,
            filesystems,
            last_cycle: self.last_cycle.clone(),
            recent_actions: self.recent.iter().cloned().collect(),
            problems: self.problems.clone(),
        };
        state::write_state(&self.config.daemon.state_dir, &state).map_err(|source| {
            DaemonError::State {
                path: self.config.daemon.state_dir.clone(),
                source,
            }
        })
    }
}

/// What a cycle would do on each guarded filesystem right now (nothing is deleted).
pub fn plan_now(config: &Config) -> Vec<FsPlan> {
    let rules = config.compiled_rules();
    let running = crate::tasks::running_protection(config, None);
    guarded_filesystems(&config.workspaces)
        .iter()
        .map(|fs| {
            plan_filesystem(
                fs,
                config,
                &rules,
                &PlanInput::default(),
                &HashSet::new(),
                &*running,
            )
        })
        .collect()
}

/// Survey + candidates + policy for one filesystem.
fn plan_filesystem(
    fs: &GuardedFs,
    config: &Config,
    rules: &[CompiledRule],
    input: &PlanInput<'_>,
    attempted: &HashSet<PathBuf>,
    extra_protection: &dyn Fn(&Path) -> Option<String>,
) -> FsPlan {
    let space = fsys::fs_space(&fs.probe).unwrap_or(FsSpace {
        total_bytes: 0,
        avail_bytes: 0,
        free_bytes: 0,
        total_inodes: 0,
        avail_inodes: 0,
    });
    let assessment = policy::assess_with(&space, &config.thresholds, input);
    if assessment.pressure == Pressure::Ok {
        return FsPlan {
            mount: fs.mount.clone(),
            space,
            plan: policy::plan_with(&space, &config.thresholds, &[], input),
            survey_errors: Vec::new(),
            surveyed: false,
            project_bytes: Vec::new(),
        };
    }
    let surveys: Vec<_> = fs
        .workspaces
        .iter()
        .map(|ws| survey::survey_workspace(ws, rules))
        .collect();
    let procs = ProcSnapshot::capture();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let mut candidates = survey::candidates(&surveys, rules, &procs, extra_protection, now);
    candidates.retain(|c| !attempted.contains(&c.path));
    let project_bytes = surveys
        .iter()
        .flat_map(|s| &s.projects)
        .map(|p| (p.path.clone(), p.usage.allocated))
        .collect();
    FsPlan {
        mount: fs.mount.clone(),
        space,
        plan: policy::plan_with(&space, &config.thresholds, &candidates, input),
        survey_errors: surveys.into_iter().flat_map(|s| s.errors).collect(),
        surveyed: true,
        project_bytes,
    }
}

/// Groups the workspaces by the filesystem they are on (a missing workspace by its nearest
/// existing ancestor's).
pub fn guarded_filesystems(workspaces: &[Workspace]) -> Vec<GuardedFs> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<GuardedFs> = Vec::new();
    for ws in workspaces {
        let probe = fsys::nearest_existing(&ws.path).to_path_buf();
        let Ok(meta) = std::fs::metadata(&probe) else {
            continue;
        };
        match out.iter_mut().find(|fs| fs.dev == meta.dev()) {
            Some(fs) => fs.workspaces.push(ws.clone()),
            None => out.push(GuardedFs {
                dev: meta.dev(),
                mount: fsys::mount_point_of(&probe).unwrap_or_else(|| probe.clone()),
                probe,
                workspaces: vec![ws.clone()],
            }),
        }
    }
    out
}
