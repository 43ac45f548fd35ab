//! Policy: filesystem state + thresholds + candidates → an ordered cleanup plan. Pure: no IO,
//! no clock; everything it needs comes in as plain data, so every decision is testable.
//!
//! Invariants: a blocked (protected, in-use) candidate never becomes an action; phase 2 (whole
//! project dirs) is planned only when phase 1 cannot bring free space back above `critical_free`,
//! and never for a forecast (a preemptive plan is phase 1 only); phase 1 is ordered by what a
//! deletion costs to undo (most bytes per second of estimated rebuild first, `cost.rs`), then
//! least recently active first — after the fastest growing projects when growth rates are
//! given; phase 2 least recently active first; the plan stops once the estimates reach the
//! target.

mod cost;

pub use cost::{RebuildCost, RebuildEstimate};

use crate::config::{human_bytes, FreeAmount, Thresholds};
use crate::fsys::FsSpace;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

/// How much pressure a filesystem is under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pressure {
    /// Above `cleanup_free` and `min_free`: nothing to do.
    Ok,
    /// Below `cleanup_free` or `min_free`: phase 1.
    Pressure,
    /// Below `critical_free`: phase 2 may be needed.
    Critical,
}

/// Thresholds resolved against one filesystem's size, in bytes and inodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub cleanup_bytes: u64,
    pub critical_bytes: u64,
    pub target_bytes: u64,
    pub min_free_bytes: u64,
    pub cleanup_inodes: u64,
    pub critical_inodes: u64,
    pub target_inodes: u64,
}

impl Limits {
    pub fn resolve(t: &Thresholds, space: &FsSpace) -> Limits {
        let bytes = |a: FreeAmount| a.resolve(space.total_bytes);
        let inodes = |a: FreeAmount| a.resolve(space.total_inodes);
        Limits {
            cleanup_bytes: bytes(t.cleanup_free.0),
            critical_bytes: bytes(t.critical_free.0),
            target_bytes: bytes(t.target_free.0).max(t.min_free.0),
            min_free_bytes: t.min_free.0,
            cleanup_inodes: inodes(t.inodes_cleanup_free.0),
            critical_inodes: inodes(t.inodes_critical_free.0),
            target_inodes: inodes(t.inodes_target_free.0),
        }
    }
}

/// A filesystem's state against its limits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assessment {
    pub pressure: Pressure,
    pub limits: Limits,
    /// Bytes to free to reach the target (0 when not under pressure).
    pub bytes_needed: u64,
    /// Inodes to free to reach the inode target (0 when not under pressure).
    pub inodes_needed: u64,
    /// Why, in words: which thresholds are crossed.
    pub reason: String,
}

/// Compares free space and inodes with the limits. `continuing` is true inside a cleanup cycle
/// that already started: then being below the target (not only below `cleanup_free`) is still
/// pressure, which gives the hysteresis between `cleanup_free` and `target_free`.
pub fn assess(space: &FsSpace, thresholds: &Thresholds, continuing: bool) -> Assessment {
    let limits = Limits::resolve(thresholds, space);
    let mut crossed = Vec::new();
    let pct = space.avail_percent();
    if space.avail_bytes < limits.cleanup_bytes {
        crossed.push(format!(
            "free {pct:.1}% < cleanup_free {}",
            thresholds.cleanup_free.0
        ));
    }
    if space.avail_bytes < limits.min_free_bytes {
        crossed.push(format!(
            "free {} < min_free {}",
            human_bytes(space.avail_bytes),
            human_bytes(limits.min_free_bytes)
        ));
    }
    let inode_pressure = space.total_inodes > 0 && space.avail_inodes < limits.cleanup_inodes;
    if inode_pressure {
        crossed.push(format!(
            "free inodes {:.1}% < inodes_cleanup_free {}",
            space.avail_inodes_percent(),
            thresholds.inodes_cleanup_free.0
        ));
    }
    if continuing && crossed.is_empty() {
        if space.avail_bytes < limits.target_bytes {
            crossed.push(format!(
                "cycle continues: free {pct:.1}% < target_free {}",
                thresholds.target_free.0
            ));
        }
        if space.total_inodes > 0 && space.avail_inodes < limits.target_inodes {
            crossed.push(format!(
                "cycle continues: free inodes {:.1}% < inodes_target_free {}",
                space.avail_inodes_percent(),
                thresholds.inodes_target_free.0
            ));
        }
    }
    let inode_pressure = inode_pressure
        || (continuing && space.total_inodes > 0 && space.avail_inodes < limits.target_inodes);
    let critical = space.avail_bytes < limits.critical_bytes
        || (space.total_inodes > 0 && space.avail_inodes < limits.critical_inodes);
    let pressure = match (crossed.is_empty(), critical) {
        (true, _) => Pressure::Ok,
        (false, false) => Pressure::Pressure,
        (false, true) => Pressure::Critical,
    };
    let (bytes_needed, inodes_needed) = if pressure == Pressure::Ok {
        (0, 0)
    } else {
        let inodes_needed = if inode_pressure {
            limits.target_inodes.saturating_sub(space.avail_inodes)
        } else {
            0
        };
        (
            limits.target_bytes.saturating_sub(space.avail_bytes),
            inodes_needed,
        )
    };
    let reason = if crossed.is_empty() {
        format!("free {pct:.1}%, above every threshold")
    } else {
        crossed.join(", ")
    };
    Assessment {
        pressure,
        limits,
        bytes_needed,
        inodes_needed,
        reason,
    }
}

/// What a candidate would delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CandidateKind {
    /// An entry a rule names (phase 1 or 2, from the rule).
    Rule { rule: String, phase: u8 },
    /// A whole project dir under a workspace (phase 2).
    Project,
}

/// Something that could be deleted, as the survey found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    /// The project dir it belongs to (itself for a whole project).
    #[serde(with = "crate::textpath")]
    pub project: PathBuf,
    pub kind: CandidateKind,
    /// Bytes deleting it would free (hard links only when all links are inside).
    pub bytes: u64,
    pub inodes: u64,
    /// Last activity of its project (seconds since the epoch); older goes first.
    pub project_active: i64,
    /// Newest change (mtime or ctime) inside the candidate itself.
    pub newest_change: i64,
    /// Why it must not be deleted, if it must not.
    pub blocked: Option<String>,
    /// The candidate's (dev, ino) when surveyed: the executor deletes only that entry.
    pub identity: (u64, u64),
    /// What the rule requires of every entry it deletes: no change for this many seconds
    /// (`older_than` of a rule, `active_within` of a whole project). Checked again right
    /// before and during the deletion.
    pub min_idle_secs: Option<u64>,
    /// The rebuild-time model of its rule or artifact type (zero: nothing to rebuild).
    pub rebuild: RebuildCost,
}

impl Candidate {
    pub fn phase(&self) -> u8 {
        match &self.kind {
            CandidateKind::Rule { phase, .. } => *phase,
            CandidateKind::Project => 2,
        }
    }

    fn rule_name(&self) -> &str {
        match &self.kind {
            CandidateKind::Rule { rule, .. } => rule,
            CandidateKind::Project => "project",
        }
    }
}

/// One planned deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedAction {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    #[serde(with = "crate::textpath")]
    pub project: PathBuf,
    pub rule: String,
    pub phase: u8,
    pub reason: String,
    pub bytes_estimated: u64,
    pub inodes_estimated: u64,
    /// The target's (dev, ino) when surveyed.
    pub identity: (u64, u64),
    /// See [`Candidate::min_idle_secs`].
    pub min_idle_secs: Option<u64>,
    /// What undoing it would cost, by the estimate model of its rule or artifact type (none:
    /// nothing to rebuild).
    pub rebuild: Option<RebuildEstimate>,
}

/// A candidate left out of the plan, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    pub reason: String,
}

/// The ordered plan for one filesystem.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub assessment: Assessment,
    pub actions: Vec<PlannedAction>,
    pub skipped: Vec<Skipped>,
    /// True when phase 2 was allowed (phase 1 alone cannot get back above `critical_free`).
    pub phase2_allowed: bool,
    /// Bytes still missing to the target after every planned action (by estimate).
    pub shortfall_bytes: u64,
}

/// A phase 1 started by a forecast before any threshold is crossed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preemptive {
    /// Clean until this many bytes are free.
    pub goal_free: u64,
    /// Which forecast triggered it, in words (it becomes every action's reason).
    pub trigger: String,
}

/// What a plan needs beyond the filesystem, the thresholds and the candidates.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlanInput<'a> {
    /// Inside a cycle that already started (hysteresis up to the target).
    pub continuing: bool,
    /// Growth rate of each project, bytes per second: phase 1 takes the reclaimable bytes of the
    /// fastest growing projects first (projects not growing keep the usual order after them).
    pub growth: Option<&'a HashMap<PathBuf, f64>>,
    /// A forecast-triggered phase 1; ignored once a threshold is really crossed (then the plan
    /// is the usual one).
    pub preemptive: Option<&'a Preemptive>,
}

/// Builds the plan: phase 1 candidates least recently active first until the target is reached;
/// then, only if phase 1 cannot get free space back above `critical_free`, phase 2 rules and
/// whole idle projects, least recently active first.
pub fn plan(
    space: &FsSpace,
    thresholds: &Thresholds,
    candidates: &[Candidate],
    continuing: bool,
) -> Plan {
    plan_with(
        space,
        thresholds,
        candidates,
        &PlanInput {
            continuing,
            ..PlanInput::default()
        },
    )
}

/// The state of a filesystem for a preemptive phase 1: under pressure (phase 1) until
/// `goal_free` bytes are free, whatever the thresholds say; the reason is the forecast.
pub fn assess_preemptive(space: &FsSpace, thresholds: &Thresholds, p: &Preemptive) -> Assessment {
    let limits = Limits::resolve(thresholds, space);
    let bytes_needed = p.goal_free.saturating_sub(space.avail_bytes);
    Assessment {
        pressure: if bytes_needed > 0 {
            Pressure::Pressure
        } else {
            Pressure::Ok
        },
        limits,
        bytes_needed,
        inodes_needed: 0,
        reason: format!(
            "preemptive: {}; cleaning to {} free",
            p.trigger,
            human_bytes(p.goal_free)
        ),
    }
}

/// The assessment a plan with `input` works from: the preemptive goal while no threshold is
/// crossed, the usual assessment otherwise.
pub fn assess_with(space: &FsSpace, thresholds: &Thresholds, input: &PlanInput<'_>) -> Assessment {
    match preemptive_in_force(space, thresholds, input) {
        Some(p) => assess_preemptive(space, thresholds, p),
        None => assess(space, thresholds, input.continuing),
    }
}

/// The preemptive request of `input`, unless a threshold is really crossed.
fn preemptive_in_force<'a>(
    space: &FsSpace,
    thresholds: &Thresholds,
    input: &PlanInput<'a>,
) -> Option<&'a Preemptive> {
    let crossed = assess(space, thresholds, false).pressure != Pressure::Ok;
    input.preemptive.filter(|_| !crossed)
}

/// [`plan`] with growth ordering and forecast-triggered (preemptive) phase 1: a preemptive plan
/// cleans phase 1 up to its goal and never plans phase 2; once a threshold is really crossed,
/// the usual assessment (and phase 2 when due) takes over.
pub fn plan_with(
    space: &FsSpace,
    thresholds: &Thresholds,
    candidates: &[Candidate],
    input: &PlanInput<'_>,
) -> Plan {
    let preemptive = preemptive_in_force(space, thresholds, input);
    let assessment = assess_with(space, thresholds, input);
    let mut plan = Plan {
        assessment: assessment.clone(),
        actions: Vec::new(),
        skipped: Vec::new(),
        phase2_allowed: false,
        shortfall_bytes: assessment.bytes_needed,
    };
    if assessment.pressure == Pressure::Ok {
        return plan;
    }
    let (usable, blocked): (Vec<&Candidate>, Vec<&Candidate>) =
        candidates.iter().partition(|c| c.blocked.is_none());
    plan.skipped = blocked
        .iter()
        .map(|c| Skipped {
            path: c.path.clone(),
            reason: c.blocked.clone().unwrap_or_default(),
        })
        .collect();

    let mut phase1: Vec<&Candidate> = usable.iter().copied().filter(|c| c.phase() == 1).collect();
    match input.growth {
        Some(growth) => sort_fastest_growing_first(&mut phase1, growth),
        None => sort_cheapest_to_undo(&mut phase1),
    }
    let mut budget = Budget::new(&assessment);
    let phase1_total: u64 = phase1.iter().map(|c| c.bytes).sum();
    let phase1_total_inodes: u64 = phase1.iter().map(|c| c.inodes).sum();
    for c in phase1 {
        if budget.met() {
            break;
        }
        if push_once(&mut plan, c, c.bytes, c.inodes) {
            budget.take(c.bytes, c.inodes);
        }
    }

    let limits = &assessment.limits;
    let bytes_after_phase1 = space.avail_bytes.saturating_add(phase1_total);
    let inodes_after_phase1 = space.avail_inodes.saturating_add(phase1_total_inodes);
    plan.phase2_allowed = preemptive.is_none()
        && (bytes_after_phase1 < limits.critical_bytes
            || (space.total_inodes > 0 && inodes_after_phase1 < limits.critical_inodes));
    if plan.phase2_allowed && !budget.met() {
        plan_phase2(&mut plan, &usable, &mut budget);
    }
    plan.shortfall_bytes = budget.bytes_left;
    plan
}

/// Adds phase-2 rule matches, then whole projects, discounting what phase 1 already takes from
/// each project.
fn plan_phase2(plan: &mut Plan, usable: &[&Candidate], budget: &mut Budget) {
    let assessment = plan.assessment.clone();
    let mut planned_in_project: HashMap<PathBuf, (u64, u64)> = HashMap::new();
    for a in &plan.actions {
        let e = planned_in_project.entry(a.project.clone()).or_default();
        e.0 += a.bytes_estimated;
        e.1 += a.inodes_estimated;
    }
    let mut rules: Vec<&Candidate> = usable
        .iter()
        .copied()
        .filter(|c| matches!(c.kind, CandidateKind::Rule { phase: 2, .. }))
        .collect();
    sort_least_recently_active(&mut rules);
    let mut projects: Vec<&Candidate> = usable
        .iter()
        .copied()
        .filter(|c| c.kind == CandidateKind::Project)
        .collect();
    sort_least_recently_active(&mut projects);
    for c in rules.into_iter().chain(projects) {
        if budget.met() {
            break;
        }
        let (already_b, already_i) = planned_in_project
            .get(&c.project)
            .copied()
            .unwrap_or_default();
        let is_project = c.kind == CandidateKind::Project;
        if plan
            .actions
            .iter()
            .any(|a| a.path == c.path || (!is_project && c.path.starts_with(&a.path)))
        {
            continue;
        }
        let bytes = if is_project {
            c.bytes.saturating_sub(already_b)
        } else {
            c.bytes
        };
        let inodes = if is_project {
            c.inodes.saturating_sub(already_i)
        } else {
            c.inodes
        };
        if !is_project {
            let e = planned_in_project.entry(c.project.clone()).or_default();
            e.0 += bytes;
            e.1 += inodes;
        }
        plan.actions.push(action(c, bytes, inodes, &assessment));
        budget.take(bytes, inodes);
    }
}

/// Oldest project activity first; within a project, oldest entry first, then biggest.
fn sort_least_recently_active(candidates: &mut [&Candidate]) {
    candidates.sort_by(|a, b| least_recently_active(a, b));
}

fn least_recently_active(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    a.project_active
        .cmp(&b.project_active)
        .then(a.newest_change.cmp(&b.newest_change))
        .then(b.bytes.cmp(&a.bytes))
        .then(a.path.cmp(&b.path))
}

/// Phase 1's order: most bytes freed per second of estimated rebuild first (in factor-of-two
/// bands, nothing to rebuild on top), then least recently active.
fn sort_cheapest_to_undo(candidates: &mut [&Candidate]) {
    candidates.sort_by(|a, b| cheapest_to_undo(a, b));
}

fn cheapest_to_undo(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.rebuild
        .rank(b.bytes)
        .cmp(&a.rebuild.rank(a.bytes))
        .then_with(|| least_recently_active(a, b))
}

/// Projects growing fastest first (positive finite rates only); the rest, and ties, cheapest to
/// undo, then least recently active first.
fn sort_fastest_growing_first(candidates: &mut [&Candidate], growth: &HashMap<PathBuf, f64>) {
    let rate = |c: &Candidate| {
        growth
            .get(&c.project)
            .copied()
            .filter(|r| r.is_finite() && *r > 0.0)
            .unwrap_or(0.0)
    };
    candidates.sort_by(|a, b| {
        rate(b)
            .total_cmp(&rate(a))
            .then_with(|| cheapest_to_undo(a, b))
    });
}

fn action(c: &Candidate, bytes: u64, inodes: u64, assessment: &Assessment) -> PlannedAction {
    let what = match &c.kind {
        CandidateKind::Rule { rule, phase } => format!("phase {phase}: rule `{rule}` matches"),
        CandidateKind::Project => {
            "phase 2: idle project dir, phase 1 cannot get back above critical_free".to_string()
        }
    };
    PlannedAction {
        path: c.path.clone(),
        project: c.project.clone(),
        rule: c.rule_name().to_string(),
        phase: c.phase(),
        reason: format!("{what}; {}", assessment.reason),
        bytes_estimated: bytes,
        inodes_estimated: inodes,
        identity: c.identity,
        min_idle_secs: c.min_idle_secs,
        rebuild: c.rebuild.estimate(bytes),
    }
}

/// Adds `c` unless the plan already holds its path or a dir containing it (two workspaces or
/// two rules naming one entry): no action is planned twice.
fn push_once(plan: &mut Plan, c: &Candidate, bytes: u64, inodes: u64) -> bool {
    if plan
        .actions
        .iter()
        .any(|a| c.path.starts_with(&a.path) || a.identity == c.identity)
    {
        return false;
    }
    let a = action(c, bytes, inodes, &plan.assessment);
    plan.actions.push(a);
    true
}

/// What is still needed to reach the target.
struct Budget {
    bytes_left: u64,
    inodes_left: u64,
}

impl Budget {
    fn new(a: &Assessment) -> Self {
        Budget {
            bytes_left: a.bytes_needed,
            inodes_left: a.inodes_needed,
        }
    }

    fn met(&self) -> bool {
        self.bytes_left == 0 && self.inodes_left == 0
    }

    fn take(&mut self, bytes: u64, inodes: u64) {
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
        self.inodes_left = self.inodes_left.saturating_sub(inodes);
    }
}

#[cfg(test)]
mod tests;
