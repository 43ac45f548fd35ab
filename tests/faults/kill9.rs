//! `kill -9` at random points of cleanup cycles on a ~200k-entry tree, restarted 20 times.

use super::*;

/// Entries in the tree of the kill -9 test (node_modules-like dirs in about 100 projects,
/// protected and outside trees), as the issue asks.
const KILL_TREE_ENTRIES: usize = 200_000;
/// Times the kill -9 test kills and restarts the daemon.
const KILL_RESTARTS: usize = 20;

/// Packages per `node_modules`: with 29 files each, about 1,800 entries per tree.
const KILL_PACKAGES: usize = 60;
const KILL_FILES_PER_PACKAGE: usize = 29;

/// One `node_modules` of the kill tree: `KILL_PACKAGES` dirs of `KILL_FILES_PER_PACKAGE` files,
/// a quarter of them 1 KiB (the rest empty, so 200k entries fit a small tmpfs). Returns entries.
fn kill_modules(dir: &Path, rng: &mut Rng) -> usize {
    let mut entries = 1;
    std::fs::create_dir_all(dir).unwrap();
    for p in 0..KILL_PACKAGES {
        let pkg = dir.join(format!("pkg{p}"));
        std::fs::create_dir(&pkg).unwrap();
        entries += 1;
        for f in 0..KILL_FILES_PER_PACKAGE {
            let body: &[u8] = if rng.chance(0.25) { &[b'm'; 1024] } else { b"" };
            std::fs::write(pkg.join(format!("f{f}.js")), body).unwrap();
            entries += 1;
        }
    }
    entries
}

/// Counts intent lines appended to the audit log since it was last asked.
struct IntentWatch {
    path: PathBuf,
    offset: u64,
}

impl IntentWatch {
    fn new(path: &Path) -> IntentWatch {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        IntentWatch {
            path: path.to_path_buf(),
            offset,
        }
    }

    /// Intent lines written since `new`.
    fn count(&self) -> usize {
        use std::io::{Read, Seek};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return 0;
        };
        let mut text = Vec::new();
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err()
            || f.read_to_end(&mut text).is_err()
        {
            return 0;
        }
        text.windows(18)
            .filter(|w| w == b"\"outcome\":\"intent\"")
            .count()
    }
}

#[test]
fn kill9_at_random_points_of_cycles_on_a_200k_entry_tree_restarted_20_times() {
    if !require_root("kill9_at_random_points_of_cycles_on_a_200k_entry_tree_restarted_20_times") {
        return;
    }
    let seed = Rng::seed_from_env("GUARDIAN_FAULTS_SEED");
    eprintln!("kill -9 test: seed {seed} (replay with GUARDIAN_FAULTS_SEED={seed})");
    let mut rng = Rng::new(seed);
    let tmp = scratch();
    let data = TestMount::tmpfs(384 * MIB);
    let ws = data.path("ws");
    let started = Instant::now();

    // Protected and outside trees (what the rule matches, where it must not act), then the
    // projects, up to KILL_TREE_ENTRIES entries in all.
    let mut entries = 0;
    entries += kill_modules(&ws.join("output/node_modules"), &mut rng);
    std::fs::create_dir_all(ws.join("kept")).unwrap();
    std::fs::write(ws.join("kept").join(guardian::scan::KEEP_MARKER), b"").unwrap();
    entries += kill_modules(&ws.join("kept/node_modules"), &mut rng);
    entries += kill_modules(&data.path("outside/node_modules"), &mut rng);
    let protected = [ws.join("output"), ws.join("kept"), data.path("outside")];
    let project = |p: usize| ws.join(format!("p{p:03}"));
    let per_project = 2 + 1 + KILL_PACKAGES * (1 + KILL_FILES_PER_PACKAGE);
    let projects = (KILL_TREE_ENTRIES - entries) / per_project;
    for p in 0..projects {
        write_file(&project(p).join("src/main.rs"), 100);
        entries += 3 + kill_modules(&project(p).join("node_modules"), &mut rng);
    }
    let mut kept: Vec<(PathBuf, BTreeMap<Vec<u8>, String>)> = protected
        .iter()
        .chain(
            (0..projects)
                .map(|p| project(p).join("src"))
                .collect::<Vec<_>>()
                .iter(),
        )
        .map(|d| (d.clone(), fsx::digest(d)))
        .collect();
    kept.sort();
    eprintln!(
        "kill -9 test: {entries} entries in {projects} projects, built in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut spec = Spec::new(&ws, &data.path("guardian"));
    spec.critical_free = "1%".into();
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    let log = tmp.path().join("daemon.log");
    let filler = data.path("filler");
    let mut dangling: Vec<String> = Vec::new();
    let mut kills_mid_deletion = 0;
    for round in 0..KILL_RESTARTS {
        // Deleted trees come back (tasks reinstall them) and the filler restores the pressure.
        for p in 0..projects {
            let m = project(p).join("node_modules");
            if !m.exists() {
                kill_modules(&m, &mut rng);
            }
        }
        if free_percent(&data.dir) > 15.0 {
            fsx::fill_to_used(&data.dir, &filler, 85.0).unwrap();
        }
        let watch = IntentWatch::new(&spec.audit_log);
        let mut daemon = start(&config, &log);
        // The next start finishes or records every action the last kill interrupted.
        wait_for(
            &mut daemon,
            Duration::from_secs(60),
            "recovery of the interrupted actions",
            || {
                let Ok(audit) = AuditCheck::read(&spec.audit_log) else {
                    return false;
                };
                let open: Vec<_> = audit.dangling().iter().map(|r| r.id.clone()).collect();
                dangling.iter().all(|id| !open.contains(id))
            },
        );
        let audit = AuditCheck::read(&spec.audit_log).unwrap_or_else(|e| panic!("{e:#}"));
        for id in &dangling {
            let outcome = audit
                .outcomes()
                .filter(|r| &r.id == id)
                .last()
                .unwrap_or_else(|| panic!("no outcome for the interrupted intent {id}"));
            if outcome.outcome == "deleted" {
                assert!(
                    !outcome.path.exists(),
                    "{} recorded deleted but exists",
                    outcome.path.display()
                );
            }
        }
        // Kill at a random point: right after the n-th intent of this run (mid-deletion), or
        // at a random time after the start (start-up, survey, deletion or idle).
        let after_intent = rng.chance(0.7);
        if after_intent {
            let n = usize::try_from(rng.between(1, 3)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while watch.count() < n && Instant::now() < deadline && daemon.alive() {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(rng.below(20)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.below(2500)));
        }
        assert!(
            daemon.alive(),
            "the daemon exited on its own:\n{}",
            daemon.log_tail(20)
        );
        daemon.kill9();
        let audit = AuditCheck::read(&spec.audit_log)
            .unwrap_or_else(|e| panic!("round {round}: the audit log after kill -9: {e:#}"));
        dangling = audit.dangling().iter().map(|r| r.id.clone()).collect();
        kills_mid_deletion += usize::from(!dangling.is_empty());
        for (dir, before) in &kept {
            let diff = fsx::digest_diff(before, &fsx::digest(dir), 10);
            assert!(
                diff.is_empty(),
                "round {round}: {} changed:\n{}",
                dir.display(),
                diff.join("\n")
            );
        }
        eprintln!(
            "round {round}: killed {} ({} intents this run), {} left dangling, free {:.1} %",
            if after_intent {
                "after an intent"
            } else {
                "at a random time"
            },
            watch.count(),
            dangling.len(),
            free_percent(&data.dir)
        );
    }
    assert!(kills_mid_deletion > 0, "no kill landed mid-deletion");
    // A last `run --once` finishes whatever the last kill left.
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = assert_audit_complete(&spec.audit_log, &ws);
    eprintln!(
        "kill -9 test: {} kills mid-deletion, audit outcomes {:?}, {:.0} s",
        kills_mid_deletion,
        audit.outcome_counts(),
        started.elapsed().as_secs_f64()
    );
    for (dir, before) in &kept {
        let diff = fsx::digest_diff(before, &fsx::digest(dir), 10);
        assert!(
            diff.is_empty(),
            "{} changed:\n{}",
            dir.display(),
            diff.join("\n")
        );
    }
}
