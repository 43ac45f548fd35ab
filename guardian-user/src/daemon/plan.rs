//! One filesystem's plan: survey (from the index where it has fresh entries) → candidates with
//! their protection → the pure policy. What a cycle's round deletes from, and what `guardian
//! plan` and `/plan` print.
//!
//! Invariants: read-only (nothing here deletes); a filesystem not under pressure is not walked
//! (unless a forecast asks, through `input`); the index serves only entries measured after the
//! last write reported into their project.

use super::GuardedFs;
use crate::config::{CompiledRule, Config};
use crate::fsys::{self, FsSpace};
use crate::policy::{self, Plan, PlanInput, Pressure};
use crate::protect::ProcSnapshot;
use crate::survey::{self, index::Index};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// One filesystem's plan, for `guardian plan`.
#[derive(Debug, serde::Serialize)]
pub struct FsPlan {
    #[serde(with = "crate::textpath")]
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
    /// Projects the survey walked.
    #[serde(skip)]
    pub projects_walked: usize,
    /// Projects the survey took from the index instead.
    #[serde(skip)]
    pub projects_cached: usize,
    /// The process table the candidates were checked against, and when its reading began: the
    /// executor's first protection checks may reuse it ([`crate::cleanup::Executor::offer_process_table`]).
    #[serde(skip)]
    pub procs: Option<(Instant, Arc<ProcSnapshot>)>,
}

/// The index a survey keeps up to date, and whether it may take fresh entries from it.
pub struct IndexUse<'a> {
    pub index: &'a mut Index,
    pub reuse: bool,
}

/// What a cycle would do on each guarded filesystem right now (nothing is deleted).
pub fn plan_now(config: &Config) -> Vec<FsPlan> {
    let rules = config.compiled_rules();
    let running = crate::tasks::running_protection(config, None);
    super::guarded_filesystems(&config.workspaces)
        .iter()
        .map(|fs| {
            plan_filesystem(
                fs,
                config,
                &rules,
                &PlanInput::default(),
                &HashSet::new(),
                &*running,
                &|_| None,
                None,
            )
        })
        .collect()
}

/// Survey + candidates + policy for one filesystem; with `index`, the survey takes the projects
/// it has fresh entries for from it (when `reuse`) and keeps what it walked there.
#[allow(clippy::too_many_arguments)] // each is one of the plan's independent inputs
pub fn plan_filesystem(
    fs: &GuardedFs,
    config: &Config,
    rules: &[CompiledRule],
    input: &PlanInput<'_>,
    attempted: &HashSet<PathBuf>,
    extra_protection: &dyn Fn(&Path) -> Option<String>,
    last_write: &dyn Fn(&Path) -> Option<i64>,
    index: Option<IndexUse<'_>>,
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
            projects_walked: 0,
            projects_cached: 0,
            procs: None,
        };
    }
    // The process table is read while the survey runs (it costs as much as a survey from the
    // index: milliseconds per hundred processes), and handed to the executor with the plan.
    let (surveys, procs) = std::thread::scope(|scope| {
        let reading = std::thread::Builder::new()
            .name("guardian-procs".into())
            .spawn_scoped(scope, || {
                (Instant::now(), Arc::new(ProcSnapshot::capture()))
            })
            .ok();
        let surveys: Vec<_> = match index {
            Some(IndexUse { index, reuse }) => {
                let ticket = index.sync();
                let reuse = reuse && index.trusted();
                let shared: &Index = index;
                let lookup = |p: &Path, st: &crate::fsys::EntryStat| {
                    reuse.then(|| shared.lookup(p, st)).flatten()
                };
                let surveys: Vec<_> = fs
                    .workspaces
                    .iter()
                    .map(|ws| survey::survey_workspace_with(ws, rules, &lookup))
                    .collect();
                if index.trusted() {
                    for s in &surveys {
                        let alive = s.projects.iter().map(|p| p.path.clone()).collect();
                        if s.errors.iter().all(|e| e.path != s.path) {
                            index.prune(&s.path, &alive);
                        }
                        for p in &s.projects {
                            index.store(ticket, p);
                        }
                    }
                }
                surveys
            }
            None => fs
                .workspaces
                .iter()
                .map(|ws| survey::survey_workspace(ws, rules))
                .collect(),
        };
        let procs = reading
            .and_then(|h| h.join().ok())
            .unwrap_or_else(|| (Instant::now(), Arc::new(ProcSnapshot::capture())));
        (surveys, procs)
    });
    let projects_cached = surveys
        .iter()
        .flat_map(|s| &s.projects)
        .filter(|p| p.cached)
        .count();
    let projects_walked = surveys.iter().map(|s| s.projects.len()).sum::<usize>() - projects_cached;
    let activity = survey::Activity {
        now: crate::tasks::clock::now_secs(),
        active_within: config.daemon.active_within.0.as_secs(),
        last_write,
    };
    let mut candidates = survey::candidates(&surveys, rules, &procs.1, extra_protection, &activity);
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
        projects_walked,
        projects_cached,
        procs: Some(procs),
    }
}
