//! Cleanup cycles, on a thread of their own: rounds of survey → candidates → plan → execute on
//! one filesystem, each round starting from the free space `statvfs` really shows, until the
//! goal is reached, nothing is left, or `MAX_ROUNDS` passed; phase 2 once phase 1 is exhausted
//! below `critical_free`; the journal vacuum once per cycle on the filesystem that holds the
//! journal; git maintenance once per cycle, before the first deletion, on the `.git` dirs the
//! first plan meets (`git::maintenance`); one round's plan is `plan.rs`. The main loop keeps
//! sampling while a cycle walks trees: it hands the worker a
//! [`Job`] and hears back through [`Report`]s. Between jobs the thread keeps the survey index
//! (`survey::index`) fresh at a CPU budget; a cycle's first round walks only the projects the
//! index has no fresh entry for, later rounds walk everything (and refresh the index).
//!
//! Invariants: the worker deletes only through the executor; a cycle never plans a path it
//! already attempted; an audit log that cannot be written ends the cycle (nothing more is tried)
//! and is reported, never a reason for the daemon to exit.

pub use super::plan::{plan_filesystem, plan_now, FsPlan, IndexUse};
use super::state::CycleSummary;
use super::GuardedFs;
use crate::cleanup::{ActionReport, Executor, ExtraProtection, Outcome};
use crate::config::{human_bytes, CompiledRule, Config};
use crate::fsys;
use crate::policy::{self, Plan, PlanInput, Preemptive, Pressure};
use crate::survey::{self, index::Index, index::Pending};
use crate::tasks::TaskSnapshot;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Most survey → plan → execute rounds in one cycle.
const MAX_ROUNDS: u32 = 6;
/// The journal vacuum is killed after this long.
const VACUUM_LIMIT: Duration = Duration::from_secs(120);
/// How often an idle cleanup thread looks whether the index needs a refresh.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Why a cleanup cycle runs.
#[derive(Clone, Debug)]
pub enum CycleKind {
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
    pub fn input(&self) -> PlanInput<'_> {
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
    pub fn describe(&self) -> String {
        match self {
            CycleKind::Reactive { reason } => reason.clone(),
            CycleKind::Preemptive { plan, .. } => format!("preemptive: {}", plan.trigger),
        }
    }
}

/// Work for the cleanup thread.
pub enum Job {
    /// Finish the deletions a killed process left half done (at start).
    Recover,
    /// One cleanup cycle.
    Cycle(Box<CycleJob>),
    /// The named `[[retention]]` rules, due on their schedule.
    Retention(Vec<String>),
    /// A reloaded config: taken between jobs, so a cycle runs on one config from its start to
    /// its end. Answered with no report (the thread is not busy with it).
    Reconfigure(Box<Reconfigured>),
}

/// What a reload hands the cleanup thread.
pub struct Reconfigured {
    pub config: Arc<Config>,
    pub rules: Arc<Vec<CompiledRule>>,
    pub executor: Arc<Executor>,
}

/// One cleanup cycle to run.
pub struct CycleJob {
    pub fs: GuardedFs,
    pub kind: CycleKind,
    /// The last write the source saw into each project (seconds since the epoch).
    pub last_write: HashMap<PathBuf, i64>,
}

/// What the cleanup thread tells the main loop.
#[derive(Debug)]
pub enum Report {
    /// One action executed (and audited), and how long it took.
    Action {
        report: Box<ActionReport>,
        seconds: f64,
    },
    /// A survey walked the workspaces of a filesystem: how long it took, each project's bytes,
    /// how many projects it walked and how many it took from the index.
    Surveyed {
        seconds: f64,
        project_bytes: Vec<(PathBuf, u64)>,
        walked: usize,
        cached: usize,
    },
    /// The audit log cannot be written: nothing is deleted until it can.
    AuditFailed(String),
    /// A cycle ended (or the recovery, with `None`).
    Done(Option<CycleSummary>),
}

/// What the cleanup thread works with.
pub struct Context {
    pub config: Arc<Config>,
    pub rules: Arc<Vec<CompiledRule>>,
    pub executor: Arc<Executor>,
    /// The caller's extra protection (the task DB's is in `tasks`).
    pub extra: ExtraProtection,
    /// One running-task snapshot per survey, taken without waiting on the DB.
    pub tasks: Arc<dyn Fn() -> TaskSnapshot + Send + Sync>,
    pub cancel: Arc<AtomicBool>,
}

/// The cleanup thread: one job at a time, in order.
pub struct Cleaner {
    jobs: Sender<Job>,
    reports: Receiver<Report>,
    busy: bool,
    pending: Arc<Pending>,
}

impl Cleaner {
    /// Starts the thread. It ends when the `Cleaner` is dropped (after its current job).
    pub fn spawn(ctx: Context) -> std::io::Result<Cleaner> {
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (report_tx, reports) = crossbeam_channel::unbounded();
        let pending = Pending::new();
        let mut index = Index::new(pending.clone());
        std::thread::Builder::new()
            .name("guardian-cleanup".into())
            .spawn(move || {
                let mut ctx = ctx;
                let mut wait = IDLE_TICK;
                let mut refreshing = false;
                loop {
                    let job = match job_rx.recv_timeout(wait) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout) => {
                            let walked;
                            (wait, walked) = refresh_index(&ctx, &mut index);
                            if refreshing && !walked {
                                // The index filled: its walks' garbage goes back.
                                super::memory::give_back();
                            }
                            refreshing = walked;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    let done = match job {
                        Job::Reconfigure(new) => {
                            ctx.config = new.config;
                            ctx.rules = new.rules;
                            ctx.executor = new.executor;
                            // Cached matches were made with the old rules and workspaces.
                            index.clear();
                            continue;
                        }
                        Job::Recover => {
                            recover(&ctx, &report_tx);
                            None
                        }
                        Job::Cycle(job) => Some(cycle(
                            &ctx,
                            &mut index,
                            &job.fs,
                            &job.kind,
                            &job.last_write,
                            &report_tx,
                        )),
                        Job::Retention(names) => {
                            // An audit failure was reported as `AuditFailed`.
                            let _ = retention(&ctx, &|r| names.contains(&r.name), None, &report_tx);
                            None
                        }
                    };
                    let cycled = done.is_some();
                    if report_tx.send(Report::Done(done)).is_err() {
                        break;
                    }
                    if cycled {
                        // A cycle's surveys and plans are garbage now.
                        super::memory::give_back();
                    }
                }
            })?;
        Ok(Cleaner {
            jobs,
            reports,
            busy: false,
            pending,
        })
    }

    /// Tells the index which write source runs (`poll` reports no writes: nothing is served)
    /// and the projects it saw written, shrinking or re-walked since the last call.
    pub fn note_writes<'a>(&self, source: &str, projects: impl IntoIterator<Item = &'a Path>) {
        self.pending.trust(source);
        self.pending.written(projects);
    }

    /// Hands over a job; the thread is busy until its `Done` report is taken.
    pub fn submit(&mut self, job: Job) {
        if self.jobs.send(job).is_ok() {
            self.busy = true;
        }
    }

    /// Hands the thread a reloaded config for its next job (the running one finishes on the
    /// config it started with).
    pub fn reconfigure(&self, new: Reconfigured) {
        let _ = self.jobs.send(Job::Reconfigure(Box::new(new)));
    }

    /// True between a submitted job and its `Done`.
    pub fn busy(&self) -> bool {
        self.busy
    }

    pub fn reports(&self) -> &Receiver<Report> {
        &self.reports
    }

    /// Notes a report taken from [`reports`](Cleaner::reports).
    pub fn taken(&mut self, report: &Report) {
        if matches!(report, Report::Done(_)) {
            self.busy = false;
        }
    }
}

/// Applies the retention rules `due` picks (over the dirs on filesystem `dev` when given); each
/// action is reported like a cycle's. Returns how many actions ran, or the audit failure that
/// stopped it.
/// One step of the index's background refresh; returns how long to wait before the next, and
/// whether it walked anything.
fn refresh_index(ctx: &Context, index: &mut Index) -> (Duration, bool) {
    if ctx.cancel.load(Ordering::Relaxed) {
        return (IDLE_TICK, false);
    }
    match index.refresh_one(&ctx.config.workspaces, &ctx.rules) {
        Some(cpu) => (survey::index::pause_after(cpu), true),
        None => (IDLE_TICK, false),
    }
}

fn retention(
    ctx: &Context,
    due: &dyn Fn(&crate::config::RetentionRule) -> bool,
    dev: Option<u64>,
    out: &Sender<Report>,
) -> Result<u32, String> {
    let mut actions = 0;
    let (reports, failed) =
        crate::retention::run(&ctx.config, Some(&ctx.executor), due, dev, &mut |report| {
            actions += 1;
            let _ = out.send(Report::Action {
                report: Box::new(report.clone()),
                seconds: 0.0,
            });
        });
    for (rule, dir) in reports
        .iter()
        .flat_map(|r| r.dirs.iter().map(move |d| (&r.rule, d)))
    {
        if let Some(e) = &dir.error {
            crate::warn_quiet!(
                &format!("retention.{rule}"),
                dir = %crate::textpath::shown(&dir.dir),
                "retention rule {rule}: {e}"
            );
        }
    }
    match failed {
        Some(e) => {
            let _ = out.send(Report::AuditFailed(e.to_string()));
            Err(e.to_string())
        }
        None => Ok(actions),
    }
}

fn recover(ctx: &Context, out: &Sender<Report>) {
    match ctx.executor.recover() {
        Ok(reports) => {
            for report in reports {
                let _ = out.send(Report::Action {
                    report: Box::new(report),
                    seconds: 0.0,
                });
            }
        }
        Err(e) => {
            let _ = out.send(Report::Action {
                report: e.report.clone(),
                seconds: 0.0,
            });
            let _ = out.send(Report::AuditFailed(e.to_string()));
        }
    }
}

/// One cleanup cycle on one filesystem: rounds of survey → plan → execute, each starting from
/// the free space `statvfs` really shows, until the target is reached or nothing is left. A
/// round that frees less than planned is followed by one that plans the next candidates, and
/// phase 2 once phase 1 is exhausted below `critical_free`.
fn cycle(
    ctx: &Context,
    index: &mut Index,
    fs: &GuardedFs,
    kind: &CycleKind,
    last_write: &HashMap<PathBuf, i64>,
    out: &Sender<Report>,
) -> CycleSummary {
    let started = SystemTime::now();
    let start_space = fsys::fs_space(&fs.probe).ok();
    let config = &ctx.config;
    let mut attempted: HashSet<PathBuf> = HashSet::new();
    let mut rounds = 0;
    let mut actions = 0;
    let mut vacuumed = !vacuum_due(config, fs);
    let mut maintained = !config.git.maintenance;
    let mut shortfall = None;
    let mut reached_target = false;
    let lookup = |p: &Path| last_write.get(p).copied();
    // Phase 1 starts with the retention rules of this filesystem (old versions, backups, logs).
    if !config.retention.is_empty() {
        match retention(ctx, &|_| true, Some(fs.dev), out) {
            Ok(n) => actions += n,
            Err(e) => shortfall = Some(format!("stopped: {e}")),
        }
    }
    'rounds: while shortfall.is_none() && rounds < MAX_ROUNDS && !ctx.cancel.load(Ordering::Relaxed)
    {
        let began = Instant::now();
        let tasks = (ctx.tasks)();
        let protection = |p: &Path| (ctx.extra)(p).or_else(|| tasks.check(p));
        // The first round plans from the index; later ones walk everything, so what the index
        // did not see (a rename no write source reports) is found by the second round.
        let planned = plan_filesystem(
            fs,
            config,
            &ctx.rules,
            &kind.input(),
            &attempted,
            &protection,
            &lookup,
            Some(IndexUse {
                index: &mut *index,
                reuse: rounds == 0,
            }),
        );
        if let Some(procs) = planned.procs.clone() {
            // Read while this round's survey ran: the first deletions need no reading of their own.
            ctx.executor.offer_process_table(procs);
        }
        if planned.surveyed {
            tracing::info!(
                mount = %crate::textpath::shown(&fs.mount),
                walked = planned.projects_walked,
                cached = planned.projects_cached,
                seconds = began.elapsed().as_secs_f64(),
                "surveyed"
            );
            let _ = out.send(Report::Surveyed {
                seconds: began.elapsed().as_secs_f64(),
                project_bytes: planned.project_bytes,
                walked: planned.projects_walked,
                cached: planned.projects_cached,
            });
        }
        let plan = planned.plan;
        if plan.assessment.pressure == Pressure::Ok {
            reached_target = true;
            break;
        }
        rounds += 1;
        if !maintained {
            // Git maintenance before any `.git` goes: a repo that gives back enough space by
            // packing needs no re-clone, and a repo kept for unpushed work can give back space
            // in no other phase-1 way. The next round re-plans from what it freed.
            maintained = true;
            match maintain_repos(ctx, fs, kind, &plan, &protection, out) {
                Ok(freed) if freed > 0 => {
                    if target_reached(config, fs, kind) {
                        reached_target = true;
                        break;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = out.send(Report::AuditFailed(e.to_string()));
                    shortfall = Some(format!("stopped: {e}"));
                    break;
                }
            }
        }
        let todo: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| !attempted.contains(&a.path))
            .cloned()
            .collect();
        if todo.is_empty() && vacuumed {
            shortfall = Some(format!(
                "nothing left to delete: {} short of the target ({} candidates blocked)",
                human_bytes(plan.assessment.bytes_needed),
                plan.skipped.len()
            ));
            break;
        }
        for action in &todo {
            attempted.insert(action.path.clone());
            let began = Instant::now();
            match ctx.executor.execute(action) {
                Ok(report) => {
                    actions += 1;
                    let stop = report.outcome == Outcome::Interrupted;
                    let _ = out.send(Report::Action {
                        report: Box::new(report),
                        seconds: began.elapsed().as_secs_f64(),
                    });
                    if stop || target_reached(config, fs, kind) {
                        break;
                    }
                }
                Err(e) => {
                    let _ = out.send(Report::Action {
                        report: e.report.clone(),
                        seconds: began.elapsed().as_secs_f64(),
                    });
                    let _ = out.send(Report::AuditFailed(e.to_string()));
                    shortfall = Some(format!("stopped: {e}"));
                    break 'rounds;
                }
            }
        }
        if !vacuumed {
            vacuumed = true;
            let report = ctx.executor.run_command(
                "journal_vacuum",
                &config.daemon.journal_vacuum,
                "phase 1: journal vacuum",
                &fs.probe,
                VACUUM_LIMIT,
            );
            match report {
                Ok(report) => {
                    let _ = out.send(Report::Action {
                        report: Box::new(report),
                        seconds: 0.0,
                    });
                }
                Err(e) => {
                    let _ = out.send(Report::AuditFailed(e.to_string()));
                    shortfall = Some(format!("stopped: {e}"));
                    break;
                }
            }
        }
        if config.daemon.dry_run {
            shortfall = Some("dry run: one round planned and logged, nothing deleted".into());
            break;
        }
    }
    let end_space = fsys::fs_space(&fs.probe).ok();
    let bytes_freed = match (start_space, end_space) {
        (Some(s), Some(e)) => e.avail_bytes.saturating_sub(s.avail_bytes),
        _ => 0,
    };
    reached_target |= target_reached(config, fs, kind);
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
        mount = %crate::textpath::shown(&fs.mount),
        actions,
        rounds,
        freed = %human_bytes(bytes_freed),
        reached_target,
        "cleanup cycle finished"
    );
    summary
}

/// Git maintenance (once per cycle) on the `.git` dirs `plan` deletes or keeps in phase 1, at
/// most [`MAX_REPOS_PER_CYCLE`](crate::git::maintenance::MAX_REPOS_PER_CYCLE), until the goal
/// is met. Returns the bytes it freed (measured); the error is an unwritable audit log.
fn maintain_repos(
    ctx: &Context,
    fs: &GuardedFs,
    kind: &CycleKind,
    plan: &Plan,
    protection: &dyn Fn(&Path) -> Option<String>,
    out: &Sender<Report>,
) -> Result<u64, crate::cleanup::AuditFailed> {
    use crate::git::maintenance;
    let mut freed = 0u64;
    let targets = maintenance::targets(plan, &fs.workspaces);
    for target in targets.iter().take(maintenance::MAX_REPOS_PER_CYCLE) {
        if ctx.cancel.load(Ordering::Relaxed) {
            break;
        }
        let reports = maintenance::maintain(&ctx.executor, target, &ctx.config.git, protection)
            .inspect_err(|e| {
                let _ = out.send(Report::Action {
                    report: e.report.clone(),
                    seconds: 0.0,
                });
            })?;
        for report in reports {
            freed = freed.saturating_add(report.record.bytes_freed);
            // No duration: what git packs says nothing about the deletion throughput.
            let _ = out.send(Report::Action {
                report: Box::new(report),
                seconds: 0.0,
            });
        }
        if freed > 0 && target_reached(&ctx.config, fs, kind) {
            break;
        }
    }
    Ok(freed)
}

/// Whether the journal vacuum should run in a cycle on `fs`: a command is configured and the
/// journal directory lies on this filesystem (vacuuming frees nothing anywhere else).
fn vacuum_due(config: &Config, fs: &GuardedFs) -> bool {
    use std::os::unix::fs::MetadataExt;
    if config.daemon.journal_vacuum.is_empty() {
        return false;
    }
    std::fs::metadata(&config.daemon.journal_dir).is_ok_and(|m| m.dev() == fs.dev)
}

/// True once the cycle's goal is met: the target, or a preemptive cycle's goal (unless a
/// threshold got crossed meanwhile, which makes it a usual cycle).
fn target_reached(config: &Config, fs: &GuardedFs, kind: &CycleKind) -> bool {
    fsys::fs_space(&fs.probe)
        .map(|s| {
            policy::assess_with(&s, &config.thresholds, &kind.input()).pressure == Pressure::Ok
        })
        .unwrap_or(false)
}
