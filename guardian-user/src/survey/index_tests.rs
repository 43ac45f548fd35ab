//! Tests of the survey index on a real tmpfs: what a warm index saves, what it never lets
//! through, and that it agrees with a fresh walk after random churn.

use super::*;
use crate::cleanup::{AuditLog, Executor, Outcome};
use crate::config::Config;
use crate::daemon::cycle::{plan_filesystem, IndexUse};
use crate::policy::PlanInput;
use crate::survey::{survey_workspace, survey_workspace_with};
use std::process::Command;
use std::sync::atomic::AtomicBool;

/// A small tmpfs, filled under `cleanup_free` (20%) by a ballast outside the workspace so every
/// plan surveys, with a workspace and Guardian's own dir outside it.
struct Fixture {
    _holder: tempfile::TempDir,
    mnt: PathBuf,
    ws: PathBuf,
    config: Config,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

fn fixture(rules: &str) -> Fixture {
    let holder = tempfile::tempdir().unwrap();
    let mnt = holder.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m,mode=0755", "guardian-test"])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount tmpfs");
    let ws = mnt.join("ws");
    let own = mnt.join("guardian");
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(&own).unwrap();
    let text = format!(
        "[daemon]\naudit_log = \"{o}/audit.jsonl\"\nstate_dir = \"{o}/state\"\nactive_within = \"1s\"\n\n\
         [[workspaces]]\npath = \"{w}\"\n\n{rules}",
        o = own.display(),
        w = ws.display(),
    );
    let config = Config::parse(&text, "test").unwrap();
    write(&mnt.join("ballast"), 54 << 20);
    Fixture {
        _holder: holder,
        mnt,
        ws,
        config,
    }
}

fn write(path: &Path, bytes: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![7u8; bytes]).unwrap();
}

fn trusted_index() -> (Arc<Pending>, Index) {
    let pending = Pending::new();
    pending.trust("inotify");
    let index = Index::new(pending.clone());
    (pending, index)
}

/// Runs the background refresh until it has nothing left to walk.
fn warm(index: &mut Index, f: &Fixture) {
    let rules = f.config.compiled_rules();
    for _ in 0..10_000 {
        if index.refresh_one(&f.config.workspaces, &rules).is_none() {
            return;
        }
    }
    panic!("the refresh never settled");
}

fn plan(f: &Fixture, index: &mut Index, reuse: bool) -> crate::daemon::FsPlan {
    let fs = &crate::daemon::guarded_filesystems(&f.config.workspaces)[0];
    plan_filesystem(
        fs,
        &f.config,
        &f.config.compiled_rules(),
        &PlanInput::default(),
        &HashSet::new(),
        &|_| None,
        &|_| None,
        Some(IndexUse { index, reuse }),
    )
}

const NODE_MODULES: &str =
    "[[rules]]\nname = \"regenerable\"\nphase = 1\nnames = [\"node_modules\"]\n";

#[test]
fn a_crossing_with_a_warm_index_walks_only_the_projects_written_since() {
    if !crate::testkit::require_root(
        "a_crossing_with_a_warm_index_walks_only_the_projects_written_since",
    ) {
        return;
    }
    let f = fixture(NODE_MODULES);
    for i in 0..6 {
        write(&f.ws.join(format!("p{i}/node_modules/m.js")), 8192);
    }
    let (pending, mut index) = trusted_index();
    warm(&mut index, &f);
    assert_eq!(index.len(), 6);
    write(&f.ws.join("p3/node_modules/m.js"), 65536);
    pending.written([f.ws.join("p3").as_path()]);

    let planned = plan(&f, &mut index, true);
    assert_eq!(
        (planned.projects_walked, planned.projects_cached),
        (1, 5),
        "only the written project is walked"
    );
    let planned_paths: Vec<_> = planned
        .plan
        .actions
        .iter()
        .map(|a| a.path.clone())
        .collect();
    assert!(
        planned_paths.contains(&f.ws.join("p0/node_modules")),
        "{planned_paths:?}"
    );
    let p3 = planned
        .plan
        .actions
        .iter()
        .find(|a| a.path == f.ws.join("p3/node_modules"))
        .expect("p3 planned");
    assert!(
        p3.bytes_estimated >= 65536,
        "p3 measured after its write: {p3:?}"
    );
    // The walk just now refreshed p3: the next crossing walks nothing.
    assert_eq!(plan(&f, &mut index, true).projects_walked, 0);
    // A later round of a cycle walks everything.
    assert_eq!(plan(&f, &mut index, false).projects_walked, 6);
    // A project that appeared since is walked, a vanished one pruned.
    write(&f.ws.join("new/node_modules/m.js"), 4096);
    std::fs::remove_dir_all(f.ws.join("p5")).unwrap();
    let planned = plan(&f, &mut index, true);
    assert_eq!((planned.projects_walked, planned.projects_cached), (1, 5));
    assert_eq!(index.len(), 6);
    // The poll source reports no writes: nothing is taken from the index.
    pending.trust("poll");
    assert_eq!(plan(&f, &mut index, true).projects_walked, 6);
    // Back to a reporting source: writes made meanwhile were not seen, so all is walked once.
    pending.trust("inotify");
    assert_eq!(plan(&f, &mut index, true).projects_walked, 6);
    assert_eq!(plan(&f, &mut index, true).projects_walked, 0);
}

#[test]
fn a_write_reported_while_a_project_is_walked_leaves_its_entry_stale() {
    if !crate::testkit::require_root(
        "a_write_reported_while_a_project_is_walked_leaves_its_entry_stale",
    ) {
        return;
    }
    let f = fixture(NODE_MODULES);
    write(&f.ws.join("p/node_modules/m.js"), 4096);
    let (pending, mut index) = trusted_index();
    let ticket = index.sync();
    let survey = survey_workspace(&f.config.workspaces[0], &f.config.compiled_rules());
    pending.written([f.ws.join("p").as_path()]);
    index.sync();
    for p in &survey.projects {
        index.store(ticket, p);
    }
    assert_eq!(plan(&f, &mut index, true).projects_walked, 1);
}

#[test]
fn a_stale_cached_candidate_is_skipped_by_the_executors_on_disk_checks() {
    if !crate::testkit::require_root(
        "a_stale_cached_candidate_is_skipped_by_the_executors_on_disk_checks",
    ) {
        return;
    }
    let f = fixture(
        "[[rules]]\nname = \"old-cache\"\nphase = 1\nnames = [\".cache\"]\nolder_than = \"1h\"\n\n\
         [[rules]]\nname = \"regenerable\"\nphase = 1\nnames = [\"node_modules\"]\n",
    );
    write(&f.ws.join("active/.cache/c"), 8192);
    for p in ["replaced", "in-use", "control"] {
        write(&f.ws.join(format!("{p}/node_modules/m.js")), 8192);
    }
    let (_pending, mut index) = trusted_index();
    // The index measured `active/.cache` while it was idle (its age is forged to 2 h ago, as a
    // walk then would have seen it); since then it was used, and no write was reported.
    let ticket = index.sync();
    let rules = f.config.compiled_rules();
    let survey = survey_workspace(&f.config.workspaces[0], &rules);
    let two_hours_ago = crate::tasks::clock::now_secs() - 7200;
    for mut p in survey.projects {
        for m in &mut p.matches {
            m.freeable.newest_change = two_hours_ago;
        }
        index.store(ticket, &p);
    }
    let planned = plan(&f, &mut index, true);
    assert_eq!(planned.projects_walked, 0, "all four served by the index");
    let planned_paths: Vec<_> = planned
        .plan
        .actions
        .iter()
        .map(|a| a.path.clone())
        .collect();
    assert!(
        planned_paths.contains(&f.ws.join("active/.cache")),
        "{planned_paths:?}"
    );
    // Between the plan and the deletion: one target replaced by another dir of the same name,
    // one taken into use by a process.
    std::fs::rename(
        f.ws.join("replaced/node_modules"),
        f.ws.join("replaced/old"),
    )
    .unwrap();
    write(&f.ws.join("replaced/node_modules/new.js"), 4096);
    let mut holder = Command::new("sleep")
        .arg("30")
        .current_dir(f.ws.join("in-use/node_modules"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let executor = Executor::new(
        f.config.workspaces.clone(),
        AuditLog::open(&f.config.daemon.audit_log).unwrap(),
        false,
        Arc::new(AtomicBool::new(false)),
        Arc::new(|_: &Path| None),
    );
    let mut outcomes = HashMap::new();
    for action in &planned.plan.actions {
        let report = executor.execute(action).unwrap();
        outcomes.insert(action.path.clone(), report.outcome);
    }
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        outcomes.get(&f.ws.join("in-use/node_modules")),
        Some(&Outcome::Refused),
        "{outcomes:?}"
    );
    for skipped in ["active/.cache", "replaced/node_modules"] {
        assert_eq!(
            outcomes.get(&f.ws.join(skipped)),
            Some(&Outcome::Skipped),
            "{skipped}: {outcomes:?}"
        );
    }
    assert_eq!(
        outcomes.get(&f.ws.join("control/node_modules")),
        Some(&Outcome::Deleted)
    );
    for kept in [
        "active/.cache/c",
        "replaced/old/m.js",
        "replaced/node_modules/new.js",
        "in-use/node_modules/m.js",
    ] {
        assert!(f.ws.join(kept).exists(), "{kept} was deleted");
    }
    let audit = std::fs::read_to_string(&f.config.daemon.audit_log).unwrap();
    let count = |outcome: &str| audit.lines().filter(|l| l.contains(outcome)).count();
    assert_eq!(
        (
            count("\"skipped\""),
            count("\"refused\""),
            count("\"deleted\"")
        ),
        (2, 1, 1),
        "{audit}"
    );
}

/// A planned deletion as the executor is handed it: path, bytes, inodes, identity, rule.
type Deletion = (PathBuf, u64, u64, (u64, u64), String);

/// What a plan deletes.
fn deletions(p: &crate::daemon::FsPlan) -> Vec<Deletion> {
    p.plan
        .actions
        .iter()
        .map(|a| {
            let rule = a.rule.clone();
            (
                a.path.clone(),
                a.bytes_estimated,
                a.inodes_estimated,
                a.identity,
                rule,
            )
        })
        .collect()
}

/// A plan from the index (after the refresh settled) and one from a fresh walk agree on every
/// project's size and every planned deletion; returns the first's (walked, cached).
fn served_plan_agrees(f: &Fixture, index: &mut Index) -> (usize, usize) {
    warm(index, f);
    let served = plan(f, index, true);
    let fresh = plan(f, index, false);
    assert_eq!(fresh.projects_cached, 0);
    let sorted = |p: &crate::daemon::FsPlan| {
        let mut b = p.project_bytes.clone();
        b.sort();
        b
    };
    assert_eq!(sorted(&served), sorted(&fresh), "project sizes");
    assert_eq!(deletions(&served), deletions(&fresh), "planned deletions");
    (served.projects_walked, served.projects_cached)
}

#[test]
fn projects_sharing_hard_links_are_served_while_every_partner_is_kept_and_fresh() {
    if !crate::testkit::require_root(
        "projects_sharing_hard_links_are_served_while_every_partner_is_kept_and_fresh",
    ) {
        return;
    }
    let f = fixture(NODE_MODULES);
    // pnpm-style: `app` links its packages from `store`'s; `loner` shares a file with one
    // outside the workspace; `plain` shares nothing.
    for i in 0..4 {
        let from = f.ws.join(format!("store/node_modules/pkg/f{i}.js"));
        write(&from, 8192 * (i + 1));
        let to = f.ws.join(format!("app/node_modules/pkg/f{i}.js"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::hard_link(&from, &to).unwrap();
    }
    write(&f.ws.join("app/node_modules/own.js"), 4096);
    write(&f.ws.join("loner/node_modules/l.js"), 8192);
    std::fs::hard_link(
        f.ws.join("loner/node_modules/l.js"),
        f.mnt.join("elsewhere"),
    )
    .unwrap();
    write(&f.ws.join("plain/node_modules/p.js"), 4096);
    let (pending, mut index) = trusted_index();
    // Every project but `loner` is served, and what they plan is what a walk plans: the shared
    // files are freeable in neither project (a file linked from two frees bytes only when
    // both go).
    assert_eq!(served_plan_agrees(&f, &mut index), (1, 3));
    let planned = plan(&f, &mut index, true);
    let bytes = |p: &str| {
        planned
            .plan
            .actions
            .iter()
            .find(|a| a.path == f.ws.join(p))
            .map(|a| a.bytes_estimated)
    };
    assert!(
        bytes("app/node_modules").is_some_and(|b| b < 8192),
        "{planned:?}"
    );

    // A write through app's link changes store's size too: reported in app only, both walked.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(f.ws.join("app/node_modules/pkg/f0.js"))
            .unwrap();
        file.write_all(&[1u8; 65536]).unwrap();
    }
    pending.written([f.ws.join("app").as_path()]);
    let planned = plan(&f, &mut index, true);
    assert_eq!((planned.projects_walked, planned.projects_cached), (3, 1));
    assert_eq!(served_plan_agrees(&f, &mut index), (1, 3));

    // One of store's files gets a third link, in `loner` (reported there): store and app
    // now hold two of its three links and wait for loner, which is never served.
    std::fs::hard_link(
        f.ws.join("store/node_modules/pkg/f1.js"),
        f.ws.join("loner/node_modules/f1.js"),
    )
    .unwrap();
    pending.written([f.ws.join("loner").as_path()]);
    assert_eq!(served_plan_agrees(&f, &mut index), (1, 3));
    std::fs::remove_file(f.mnt.join("elsewhere")).unwrap();
    pending.written([f.ws.join("loner").as_path()]);
    assert_eq!(
        served_plan_agrees(&f, &mut index),
        (0, 4),
        "loner shares within now"
    );

    // `app` vanishes unreported: store's files are its own again, walked once and served.
    std::fs::remove_dir_all(f.ws.join("app")).unwrap();
    std::fs::remove_file(f.ws.join("loner/node_modules/f1.js")).unwrap();
    pending.written([f.ws.join("loner").as_path()]);
    assert_eq!(served_plan_agrees(&f, &mut index), (0, 3));
    let planned = plan(&f, &mut index, true);
    assert!(
        planned
            .plan
            .actions
            .iter()
            .any(|a| a.path == f.ws.join("store/node_modules") && a.bytes_estimated >= 8192 * 10),
        "store's files are freeable now: {planned:?}"
    );
}

/// A small deterministic generator (xorshift64*), so a failing churn run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

/// What a walk and the index must agree on for a project: its usage in bytes and inodes, its
/// candidates (path, identity, rule, bytes) and the inodes it shares with others. Left out: the
/// newest change and what a hard link made from another project takes off the freeable bytes
/// (no source reports the linked project; the executor re-checks idle time on disk and the
/// audit line measures what it frees).
type Agreeing = (
    u64,
    u64,
    Vec<(PathBuf, (u64, u64), usize, u64)>,
    Vec<crate::scan::SharedInode>,
);

/// What a walked survey says, with its own shared inodes.
fn walked_agreeing(p: &ProjectSurvey) -> Agreeing {
    agreeing(p, p.shared.clone())
}

/// What a survey served from `index` says, with the shared inodes the index keeps for it (a
/// served survey carries none).
fn served_agreeing(index: &Index, p: &ProjectSurvey) -> Agreeing {
    let shared = index.shared_of(&p.path).expect("a served project is kept");
    agreeing(p, shared)
}

fn agreeing(p: &ProjectSurvey, shared: Vec<crate::scan::SharedInode>) -> Agreeing {
    let mut m: Vec<_> = p
        .matches
        .iter()
        .map(|m| (m.rel_path.clone(), m.identity, m.rule, m.freeable.allocated))
        .collect();
    m.sort();
    (p.usage.allocated, p.usage.inodes, m, shared)
}

/// Random churn across projects (create, grow, truncate, rename across projects, delete, hard
/// links), each change reported for the projects a watching source sees it in, with the
/// background refresh running; at every check each project the index serves must agree with a
/// fresh walk, and once the churn stops the refresh brings every project back. Returns the
/// number of checks, of projects served and compared, and of those sharing inodes with others.
pub fn churn_agrees(seconds: u64, seed: u64) -> (usize, usize, usize) {
    let f = fixture(NODE_MODULES);
    let rules = f.config.compiled_rules();
    let ws = &f.config.workspaces[0];
    let (pending, mut index) = trusted_index();
    let mut rng = Rng(seed | 1);
    let projects: Vec<PathBuf> = (0..8).map(|i| f.ws.join(format!("p{i}"))).collect();
    let dirs = ["", "node_modules", "node_modules/pkg", "src"];
    for p in &projects {
        write(&p.join("node_modules/pkg/a.js"), 4096);
    }
    let began = std::time::Instant::now();
    let mut checks = 0;
    let mut served = 0;
    let mut sharing = 0;
    let pick = |rng: &mut Rng| {
        let p = &projects[rng.below(projects.len())];
        let d = dirs[rng.below(dirs.len())];
        let name = format!("f{}", rng.below(12));
        (p.clone(), p.join(d).join(name))
    };
    while began.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..1 + rng.below(3) {
            let (project, path) = pick(&mut rng);
            let (other, target) = pick(&mut rng);
            let touched: Vec<&Path> = match rng.below(7) {
                0 => {
                    write(&path, rng.below(3) * 4096);
                    vec![&project]
                }
                1 => {
                    use std::io::Write;
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .unwrap();
                    file.write_all(&[1u8; 8192]).unwrap();
                    vec![&project]
                }
                2 => {
                    if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) {
                        file.set_len(0).unwrap();
                    }
                    vec![&project]
                }
                3 => {
                    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                    let _ = std::fs::rename(&path, &target);
                    vec![&project, &other]
                }
                4 => {
                    let _ = std::fs::remove_file(&path);
                    vec![&project]
                }
                5 => {
                    // The linked file's link count changes in `project` too (an attribute
                    // change a watching source sees there).
                    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                    let _ = std::fs::hard_link(&path, &target);
                    vec![&project, &other]
                }
                _ => {
                    // A whole artifact dir moves to another project.
                    let from = project.join("node_modules");
                    let to = other.join("node_modules");
                    if from != to && !to.exists() {
                        let _ = std::fs::rename(&from, &to);
                    }
                    vec![&project, &other]
                }
            };
            pending.written(touched);
        }
        // The background refresh, a step at a time.
        for _ in 0..rng.below(4) {
            index.refresh_one(&f.config.workspaces, &rules);
        }
        index.sync();
        let fresh = survey_workspace(ws, &rules);
        let via = survey_workspace_with(ws, &rules, &|p, st| index.lookup(p, st));
        for p in via.projects.iter().filter(|p| p.cached) {
            served += 1;
            let from_index = served_agreeing(&index, p);
            sharing += usize::from(!from_index.3.is_empty());
            let walked = fresh
                .projects
                .iter()
                .find(|w| w.path == p.path)
                .expect("a served project exists");
            assert_eq!(
                from_index,
                walked_agreeing(walked),
                "seed {seed}: index and walk disagree on {}",
                p.path.display()
            );
        }
        checks += 1;
    }
    warm(&mut index, &f);
    index.sync();
    let fresh = survey_workspace(ws, &rules);
    let via = survey_workspace_with(ws, &rules, &|p, st| index.lookup(p, st));
    // Once settled, every project is served, those sharing inodes with others too (every
    // link lies in a project of the workspace).
    for (p, w) in via.projects.iter().zip(&fresh.projects) {
        assert!(p.cached, "seed {seed}: settled on {}", w.path.display());
        assert_eq!(
            served_agreeing(&index, p),
            walked_agreeing(w),
            "seed {seed}: after settling"
        );
    }
    assert!(
        served > 0,
        "the index served nothing: the test tested nothing"
    );
    (checks, served, sharing)
}

#[test]
fn index_and_a_fresh_walk_agree_after_random_churn() {
    if !crate::testkit::require_root("index_and_a_fresh_walk_agree_after_random_churn") {
        return;
    }
    let seconds = std::env::var("GUARDIAN_INDEX_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("GUARDIAN_INDEX_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1dec);
    let (checks, served, sharing) = churn_agrees(seconds, seed);
    eprintln!(
        "{checks} checks, {served} served projects compared ({sharing} sharing inodes with \
         others), seed {seed}"
    );
}

#[test]
fn pending_writes_are_bounded_and_overflow_makes_everything_stale() {
    let pending = Pending::new();
    pending.trust("ebpf");
    let mut index = Index::new(pending.clone());
    index.sync();
    let before = index.stale_before;
    let many: Vec<PathBuf> = (0..=MAX_PENDING)
        .map(|i| PathBuf::from(format!("/w/p{i}")))
        .collect();
    pending.written(many.iter().map(PathBuf::as_path));
    assert!(pending.inner.lock().unwrap().written.len() <= MAX_PENDING);
    index.sync();
    assert!(index.stale_before > before);
    assert!(pause_after(Duration::from_millis(10)) >= Duration::from_millis(500));
}

/// Not a test: the time from a crossing to a ready plan (survey + candidates + policy; the
/// executor's first action follows it the same way in both) with a warm index and with a full
/// walk, on ~100k entries on tmpfs. Run in release:
/// `cargo test --release -p guardian-user --lib survey::index::tests::measure_plan_time -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_plan_time() {
    if !crate::testkit::require_root("measure_plan_time") {
        return;
    }
    let f = fixture(NODE_MODULES);
    let projects = 100;
    for p in 0..projects {
        let base = f.ws.join(format!("p{p}/node_modules"));
        for d in 0..10 {
            let dir = base.join(format!("pkg{d}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..99 {
                std::fs::File::create(dir.join(format!("f{i}.js"))).unwrap();
            }
        }
        write(&base.join("big.bin"), 4096);
    }
    // The upper half shares files pairwise, as pnpm stores make them (none is written below).
    for p in (projects / 2..projects).step_by(2) {
        for i in 0..30 {
            let from = f.ws.join(format!("p{p}/node_modules/pkg0/f{i}.js"));
            let to = f.ws.join(format!("p{}/node_modules/shared{i}.js", p + 1));
            std::fs::hard_link(from, to).unwrap();
        }
    }
    let (pending, mut index) = trusted_index();
    let warming = std::time::Instant::now();
    warm(&mut index, &f);
    let cpu = {
        let began = cpu_time();
        plan(&f, &mut index, false);
        cpu_time().saturating_sub(began)
    };
    eprintln!(
        "{projects} projects, ~{} entries; refresh of all (unpaced) {:?}, one full walk {:?} CPU",
        projects * 1001,
        warming.elapsed(),
        cpu
    );
    let mut with_index = Vec::new();
    let mut full = Vec::new();
    let (mut surveys, mut procs) = (Vec::new(), Vec::new());
    let rules = f.config.compiled_rules();
    for round in 0..9 {
        // The plan's parts on their own: the survey from the index, the process scan.
        pending.written([f.ws.join(format!("p{round}")).as_path()]);
        index.sync();
        let began = std::time::Instant::now();
        let via = survey_workspace_with(&f.config.workspaces[0], &rules, &|p, st| {
            index.lookup(p, st)
        });
        surveys.push(began.elapsed().as_secs_f64() * 1e3);
        assert_eq!(via.projects.iter().filter(|p| !p.cached).count(), 1);
        let began = std::time::Instant::now();
        let snapshot = crate::protect::ProcSnapshot::capture();
        procs.push(began.elapsed().as_secs_f64() * 1e3);
        drop(snapshot);
        // As at a real crossing: the writer's project was written since it was measured.
        let began = std::time::Instant::now();
        let planned = plan(&f, &mut index, true);
        with_index.push(began.elapsed().as_secs_f64() * 1e3);
        assert_eq!(planned.projects_walked, 1, "the linked projects are served");
        assert!(!planned.plan.actions.is_empty());
        let began = std::time::Instant::now();
        let planned = plan(&f, &mut index, false);
        full.push(began.elapsed().as_secs_f64() * 1e3);
        assert_eq!(planned.projects_walked, projects);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "crossing → plan ready, median of 9: warm index {:.1} ms, full walk {:.1} ms (all: {with_index:.1?} / {full:.1?})",
        median(&mut with_index),
        median(&mut full)
    );
    eprintln!(
        "of a warm plan: survey from the index {:.1} ms, process scan {:.1} ms (medians of 9)",
        median(&mut surveys),
        median(&mut procs)
    );
}
