use super::*;
use crate::config::{ByteSize, FreeBytes};

const MIB: u64 = 1 << 20;

fn fs(total_mib: u64, avail_mib: u64) -> FsSpace {
    FsSpace {
        total_bytes: total_mib * MIB,
        avail_bytes: avail_mib * MIB,
        free_bytes: avail_mib * MIB,
        total_inodes: 1_000_000,
        avail_inodes: 900_000,
    }
}

fn thresholds() -> Thresholds {
    Thresholds::default() // 20% / 10% / 30%, min_free 0, inodes 10/5/15%
}

/// A made-up (dev, ino) that differs per path.
fn identity_of(path: &str) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    (1, h.finish())
}

fn rule(path: &str, project: &str, mib: u64, active: i64) -> Candidate {
    Candidate {
        path: PathBuf::from(path),
        project: PathBuf::from(project),
        kind: CandidateKind::Rule {
            rule: "regenerable".into(),
            phase: 1,
        },
        bytes: mib * MIB,
        inodes: 10,
        project_active: active,
        newest_change: active,
        blocked: None,
        identity: identity_of(path),
        min_idle_secs: None,
        rebuild: RebuildCost::default(),
    }
}

fn project(path: &str, mib: u64, active: i64) -> Candidate {
    Candidate {
        path: PathBuf::from(path),
        project: PathBuf::from(path),
        kind: CandidateKind::Project,
        bytes: mib * MIB,
        inodes: 100,
        project_active: active,
        newest_change: active,
        blocked: None,
        identity: identity_of(path),
        min_idle_secs: None,
        rebuild: RebuildCost::default(),
    }
}

#[test]
fn nothing_planned_above_cleanup_free() {
    let p = plan(
        &fs(1000, 250),
        &thresholds(),
        &[rule("/w/a/node_modules", "/w/a", 100, 1)],
        false,
    );
    assert_eq!(p.assessment.pressure, Pressure::Ok);
    assert!(p.actions.is_empty());
}

#[test]
fn phase1_takes_least_recently_active_first_until_target() {
    // 18% free: need 120 MiB to reach 30%.
    let candidates = [
        rule("/w/new/node_modules", "/w/new", 100, 300),
        rule("/w/old/node_modules", "/w/old", 100, 100),
        rule("/w/mid/node_modules", "/w/mid", 100, 200),
    ];
    let p = plan(&fs(1000, 180), &thresholds(), &candidates, false);
    assert_eq!(p.assessment.pressure, Pressure::Pressure);
    assert_eq!(p.assessment.bytes_needed, 120 * MIB);
    let paths: Vec<_> = p.actions.iter().map(|a| a.path.to_str().unwrap()).collect();
    assert_eq!(paths, ["/w/old/node_modules", "/w/mid/node_modules"]);
    assert!(!p.phase2_allowed);
    assert_eq!(p.shortfall_bytes, 0);
    assert!(p
        .actions
        .iter()
        .all(|a| a.phase == 1 && a.rule == "regenerable"));
    assert!(
        p.actions[0].reason.contains("cleanup_free"),
        "{}",
        p.actions[0].reason
    );
}

#[test]
fn phase2_only_when_phase1_cannot_reach_critical() {
    // 7% free, critical at 10%: phase 1 can give 50 MiB → 12%, above critical: no phase 2.
    let candidates = [
        rule("/w/a/node_modules", "/w/a", 50, 1),
        project("/w/b", 300, 1),
    ];
    let p = plan(&fs(1000, 70), &thresholds(), &candidates, false);
    assert_eq!(p.assessment.pressure, Pressure::Critical);
    assert!(!p.phase2_allowed);
    assert_eq!(p.actions.len(), 1);
    assert!(p.shortfall_bytes > 0);

    // Phase 1 gives only 10 MiB → 8%: phase 2 deletes idle projects, oldest first.
    let candidates = [
        rule("/w/a/node_modules", "/w/a", 10, 5),
        project("/w/young", 300, 50),
        project("/w/old", 100, 10),
        project("/w/a", 60, 5),
    ];
    let p = plan(&fs(1000, 70), &thresholds(), &candidates, false);
    assert!(p.phase2_allowed);
    let paths: Vec<_> = p.actions.iter().map(|a| a.path.to_str().unwrap()).collect();
    assert_eq!(paths, ["/w/a/node_modules", "/w/a", "/w/old", "/w/young"]);
    // The project's estimate excludes what phase 1 already deletes inside it.
    assert_eq!(p.actions[1].bytes_estimated, 50 * MIB);
    assert_eq!(p.actions[1].phase, 2);
}

#[test]
fn blocked_candidates_are_skipped_with_reason() {
    let mut busy = project("/w/busy", 500, 1);
    busy.blocked = Some("in use: pid 42".into());
    let candidates = [busy, project("/w/idle", 100, 2)];
    let p = plan(&fs(1000, 50), &thresholds(), &candidates, false);
    assert_eq!(p.actions.len(), 1);
    assert_eq!(p.actions[0].path, PathBuf::from("/w/idle"));
    assert_eq!(p.skipped[0].reason, "in use: pid 42");
}

#[test]
fn min_free_triggers_and_raises_the_target() {
    let mut t = thresholds();
    t.min_free = ByteSize(400 * MIB);
    let p = plan(&fs(1000, 350), &t, &[rule("/w/a/x", "/w/a", 10, 1)], false);
    assert_eq!(p.assessment.pressure, Pressure::Pressure);
    assert_eq!(p.assessment.bytes_needed, 50 * MIB);
    assert!(p.assessment.reason.contains("min_free"));
}

#[test]
fn absolute_thresholds_work() {
    let mut t = thresholds();
    t.cleanup_free = FreeBytes(FreeAmount::Absolute(100 * MIB));
    t.critical_free = FreeBytes(FreeAmount::Absolute(50 * MIB));
    t.target_free = FreeBytes(FreeAmount::Absolute(200 * MIB));
    let a = assess(&fs(1000, 90), &t, false);
    assert_eq!(a.pressure, Pressure::Pressure);
    assert_eq!(a.bytes_needed, 110 * MIB);
}

#[test]
fn inode_pressure_plans_by_inodes() {
    let mut space = fs(1000, 900);
    space.avail_inodes = 40_000; // 4% < 5% critical
    let mut small_many = rule("/w/a/node_modules", "/w/a", 1, 1);
    small_many.inodes = 200_000;
    let p = plan(&space, &thresholds(), &[small_many], false);
    assert_eq!(p.assessment.pressure, Pressure::Critical);
    assert_eq!(p.assessment.inodes_needed, 110_000);
    assert!(!p.phase2_allowed, "phase 1 frees enough inodes");
    assert_eq!(p.actions.len(), 1);
}

#[test]
fn continuing_cycle_cleans_to_target_between_thresholds() {
    // 25% free: above cleanup_free (20%), below target_free (30%).
    let candidates = [rule("/w/a/node_modules", "/w/a", 100, 1)];
    assert!(plan(&fs(1000, 250), &thresholds(), &candidates, false)
        .actions
        .is_empty());
    let p = plan(&fs(1000, 250), &thresholds(), &candidates, true);
    assert_eq!(p.assessment.pressure, Pressure::Pressure);
    assert_eq!(p.assessment.bytes_needed, 50 * MIB);
    assert_eq!(p.actions.len(), 1);
}

fn preemptive(goal_mib: u64) -> Preemptive {
    Preemptive {
        goal_free: goal_mib * MIB,
        trigger: "forecast: P90 5s to cleanup_free".into(),
    }
}

#[test]
fn growth_orders_phase1_fastest_growing_project_first() {
    // 18% free: 120 MiB to reach 30%. Without growth: least recently active first.
    let mut git = rule("/w/fast/.git", "/w/fast", 10, 300);
    git.newest_change = 250;
    let candidates = [
        rule("/w/idle/node_modules", "/w/idle", 100, 100),
        rule("/w/slow/node_modules", "/w/slow", 100, 200),
        rule("/w/fast/node_modules", "/w/fast", 100, 300),
        git,
    ];
    let growth: HashMap<PathBuf, f64> = [
        (PathBuf::from("/w/slow"), 1e6),
        (PathBuf::from("/w/fast"), 2e7),
        (PathBuf::from("/w/idle"), 0.0),
    ]
    .into_iter()
    .collect();
    let input = PlanInput {
        growth: Some(&growth),
        ..PlanInput::default()
    };
    let p = plan_with(&fs(1000, 180), &thresholds(), &candidates, &input);
    let paths: Vec<_> = p.actions.iter().map(|a| a.path.to_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/w/fast/.git",
            "/w/fast/node_modules",
            "/w/slow/node_modules"
        ]
    );
    // Absent growth: the usual order, as `plan` gives it.
    let usual = plan_with(
        &fs(1000, 180),
        &thresholds(),
        &candidates,
        &PlanInput::default(),
    );
    assert_eq!(
        usual,
        plan(&fs(1000, 180), &thresholds(), &candidates, false)
    );
    let paths: Vec<_> = usual
        .actions
        .iter()
        .map(|a| a.path.to_str().unwrap())
        .collect();
    assert_eq!(paths, ["/w/idle/node_modules", "/w/slow/node_modules"]);
}

#[test]
fn preemptive_plans_phase1_to_its_goal_above_every_threshold() {
    // 35% free: no threshold crossed, so the usual plan does nothing.
    let candidates = [
        rule("/w/a/node_modules", "/w/a", 60, 1),
        rule("/w/b/node_modules", "/w/b", 60, 2),
        rule("/w/c/node_modules", "/w/c", 60, 3),
    ];
    assert!(plan(&fs(1000, 350), &thresholds(), &candidates, false)
        .actions
        .is_empty());
    let goal = preemptive(450);
    let input = PlanInput {
        preemptive: Some(&goal),
        ..PlanInput::default()
    };
    let p = plan_with(&fs(1000, 350), &thresholds(), &candidates, &input);
    assert_eq!(p.assessment.pressure, Pressure::Pressure);
    assert_eq!(p.assessment.bytes_needed, 100 * MIB);
    let paths: Vec<_> = p.actions.iter().map(|a| a.path.to_str().unwrap()).collect();
    assert_eq!(paths, ["/w/a/node_modules", "/w/b/node_modules"]);
    for a in &p.actions {
        assert_eq!(a.phase, 1);
        assert!(
            a.reason.contains("preemptive") && a.reason.contains("forecast: P90 5s"),
            "the reason names the forecast: {}",
            a.reason
        );
    }
    // At the goal: nothing to do.
    let p = plan_with(&fs(1000, 450), &thresholds(), &candidates, &input);
    assert_eq!(p.assessment.pressure, Pressure::Ok);
    assert!(p.actions.is_empty());
}

#[test]
fn preemptive_never_plans_phase2() {
    // Only idle projects, no phase-1 candidate: a forecast deletes nothing.
    let candidates = [project("/w/old", 300, 1), project("/w/older", 300, 0)];
    let goal = preemptive(600);
    let input = PlanInput {
        preemptive: Some(&goal),
        ..PlanInput::default()
    };
    let p = plan_with(&fs(1000, 250), &thresholds(), &candidates, &input);
    assert_eq!(p.assessment.pressure, Pressure::Pressure);
    assert!(!p.phase2_allowed);
    assert!(p.actions.is_empty());
    assert_eq!(p.shortfall_bytes, 350 * MIB);
}

#[test]
fn a_real_crossing_turns_a_preemptive_plan_into_the_usual_one() {
    // 7% free, below critical: the usual assessment, phase 2 included, and its reason.
    let candidates = [
        rule("/w/a/node_modules", "/w/a", 10, 5),
        project("/w/old", 300, 1),
    ];
    let goal = preemptive(900);
    let input = PlanInput {
        continuing: true,
        preemptive: Some(&goal),
        ..PlanInput::default()
    };
    let p = plan_with(&fs(1000, 70), &thresholds(), &candidates, &input);
    assert_eq!(p, plan(&fs(1000, 70), &thresholds(), &candidates, true));
    assert_eq!(p.assessment.pressure, Pressure::Critical);
    assert!(p.phase2_allowed);
    assert!(!p.assessment.reason.contains("preemptive"));
}

#[test]
fn an_entry_named_twice_is_planned_once() {
    // Two workspaces (or two rules) naming one entry, or an entry inside another that is
    // already planned: one action each, never two.
    let mut twin = rule("/w/a/node_modules", "/w/a", 50, 1);
    twin.kind = CandidateKind::Rule {
        rule: "other".into(),
        phase: 1,
    };
    let mut alias = rule("/w2/a/node_modules", "/w2/a", 50, 1);
    alias.identity = twin.identity;
    let inside = rule("/w/a/node_modules/pkg/node_modules", "/w/a", 5, 1);
    let candidates = [
        rule("/w/a/node_modules", "/w/a", 50, 1),
        twin,
        alias,
        inside,
    ];
    let p = plan(&fs(1000, 50), &thresholds(), &candidates, false);
    let paths: Vec<_> = p.actions.iter().map(|a| a.path.clone()).collect();
    assert_eq!(paths, [PathBuf::from("/w/a/node_modules")], "{paths:?}");
}

/// A phase-1 artifact candidate with the rebuild model of its type.
fn artifact(
    path: &str,
    project: &str,
    mib: u64,
    active: i64,
    base: u64,
    per_gib: u64,
) -> Candidate {
    let mut c = rule(path, project, mib, active);
    c.rebuild = RebuildCost {
        base_secs: base,
        per_gib_secs: per_gib,
    };
    c
}

const NODE_MODULES: (u64, u64) = (15, 30);
const CARGO_TARGET: (u64, u64) = (120, 300);

#[test]
fn phase1_takes_the_most_bytes_per_second_of_rebuild_first() {
    // 18% free: 120 MiB to reach 30%. The target is older (idler) and as big, but takes far
    // longer to rebuild: the node_modules goes first, and is enough.
    let (nb, ng) = NODE_MODULES;
    let (tb, tg) = CARGO_TARGET;
    let candidates = [
        artifact("/w/rust/target", "/w/rust", 150, 100, tb, tg),
        artifact("/w/web/node_modules", "/w/web", 150, 300, nb, ng),
    ];
    let p = plan(&fs(1000, 180), &thresholds(), &candidates, false);
    let paths: Vec<_> = p.actions.iter().map(|a| a.path.clone()).collect();
    assert_eq!(paths, [PathBuf::from("/w/web/node_modules")]);
    let estimate = p.actions[0].rebuild.unwrap();
    assert_eq!(estimate.secs, 15 + 5); // 150 MiB × 30 s/GiB = 4.4 s, rounded up
    assert_eq!(estimate.bytes_per_sec, 150 * MIB / 20);
}

#[test]
fn within_a_band_of_rebuild_rate_the_least_recently_active_goes_first() {
    let (nb, ng) = NODE_MODULES;
    // 100 and 120 MiB node_modules share a factor-of-two band: idleness decides.
    let candidates = [
        artifact("/w/new/node_modules", "/w/new", 120, 300, nb, ng),
        artifact("/w/old/node_modules", "/w/old", 100, 100, nb, ng),
    ];
    let p = plan(&fs(1000, 180), &thresholds(), &candidates, false);
    let paths: Vec<_> = p.actions.iter().map(|a| a.path.clone()).collect();
    assert_eq!(
        paths,
        [
            PathBuf::from("/w/old/node_modules"),
            PathBuf::from("/w/new/node_modules")
        ]
    );
}

#[test]
fn nothing_to_rebuild_goes_before_any_artifact() {
    // An old log (no estimate) before a bigger, idler node_modules; the plan says which
    // actions have an estimate.
    let (nb, ng) = NODE_MODULES;
    let candidates = [
        artifact("/w/a/node_modules", "/w/a", 100, 1, nb, ng),
        rule("/w/b/build.log", "/w/b", 10, 500),
    ];
    let p = plan(&fs(1000, 180), &thresholds(), &candidates, false);
    let order: Vec<_> = p
        .actions
        .iter()
        .map(|a| (a.path.clone(), a.rebuild.is_some()))
        .collect();
    assert_eq!(
        order,
        [
            (PathBuf::from("/w/b/build.log"), false),
            (PathBuf::from("/w/a/node_modules"), true)
        ]
    );
}

#[test]
fn growth_still_comes_first_then_the_cost_to_undo() {
    let (nb, ng) = NODE_MODULES;
    let (tb, tg) = CARGO_TARGET;
    let candidates = [
        artifact("/w/quiet/node_modules", "/w/quiet", 100, 1, nb, ng),
        artifact("/w/busy/target", "/w/busy", 100, 50, tb, tg),
        artifact("/w/busy/node_modules", "/w/busy", 100, 50, nb, ng),
    ];
    let growth: HashMap<PathBuf, f64> = [(PathBuf::from("/w/busy"), 1e6)].into();
    let input = PlanInput {
        growth: Some(&growth),
        ..PlanInput::default()
    };
    let p = plan_with(&fs(1000, 50), &thresholds(), &candidates, &input);
    let paths: Vec<_> = p.actions.iter().map(|a| a.path.clone()).collect();
    assert_eq!(
        paths,
        [
            PathBuf::from("/w/busy/node_modules"),
            PathBuf::from("/w/busy/target"),
            PathBuf::from("/w/quiet/node_modules")
        ]
    );
}
