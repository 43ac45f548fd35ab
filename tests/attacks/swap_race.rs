//! A directory swapped for a symlink while the deletion runs.

use super::*;

const RACE_ITERATIONS: usize = 600;
const RACE_FILES_PER_DIR: usize = 25;

/// node_modules with four packages, three directory levels each, files at every level.
fn build_modules(nm: &Path) {
    for p in 0..4 {
        let pkg = nm.join(format!("pkg{p}"));
        for dir in [pkg.clone(), pkg.join("lib"), pkg.join("lib/deep")] {
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..RACE_FILES_PER_DIR {
                std::fs::write(dir.join(format!("f{f}.js")), b"module.exports = 1;\n").unwrap();
            }
        }
    }
}

#[derive(Default, Debug)]
struct AttackCounts {
    /// Directories renamed away and replaced by a symlink to the victim.
    swaps: u64,
    /// Symlinks the attacker placed that were gone when it came back: the executor met the
    /// symlink where it had seen (or would have seen) a directory, and unlinked it.
    unlinked_by_executor: u64,
}

/// Until `stop`: for each target, rename the directory away, put a symlink to `victim` in its
/// place, then remove the symlink and rename the directory back. Every failure (the executor
/// deleted something first) is ignored; each round ends with no symlink of its own left behind.
fn attack(targets: &[PathBuf], victim: &Path, stop: &AtomicBool) -> AttackCounts {
    let mut counts = AttackCounts::default();
    while !stop.load(Ordering::Relaxed) {
        for target in targets {
            let mut away = target.as_os_str().to_owned();
            away.push(".away");
            let away = PathBuf::from(away);
            if std::fs::rename(target, &away).is_err() {
                continue;
            }
            if std::os::unix::fs::symlink(victim, target).is_ok() {
                counts.swaps += 1;
                std::thread::yield_now();
                if let Err(e) = std::fs::remove_file(target) {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        counts.unlinked_by_executor += 1;
                    }
                }
            }
            let _ = std::fs::rename(&away, target);
        }
    }
    counts
}

#[test]
fn dir_swapped_for_symlink_during_deletion_never_escapes() {
    if !require_root("dir_swapped_for_symlink_during_deletion_never_escapes") {
        return;
    }
    let started = Instant::now();
    let mount = TestMount::tmpfs(256 * MIB);
    // The victim is on the same filesystem (and mount) as the workspace: only refusing to follow
    // symlinks protects it, not the device or mount checks.
    let victim = mount.path("victim");
    build_modules(&victim);
    write_file(&victim.join("precious.db"), 64 * 1024);
    let victim_before = digest(&victim);
    let ws = mount.path("ws");
    let proj = ws.join("proj");
    write_file(&proj.join("src/main.rs"), 4096);
    let src_before = digest(&proj.join("src"));
    let nm = proj.join("node_modules");
    let targets = [
        nm.join("pkg0/lib"),
        nm.join("pkg1/lib/deep"),
        nm.join("pkg2"),
        nm.join("pkg3/lib"),
    ];
    let exec = executor(&[&ws], &[], &mount.path("state/audit.jsonl"));

    let mut totals = AttackCounts::default();
    let (mut met_symlink, mut not_clean) = (0usize, 0usize);
    for i in 0..RACE_ITERATIONS {
        build_modules(&nm);
        // Planned as a survey would: the node_modules there now.
        let action = planned(&nm, &proj, "regenerable", 1);
        let stop = AtomicBool::new(false);
        let (report, counts) = std::thread::scope(|s| {
            let attacker = s.spawn(|| attack(&targets, &victim, &stop));
            let report = run_settled(&exec, &action);
            stop.store(true, Ordering::Relaxed);
            (report, attacker.join().unwrap())
        });
        assert_eq!(
            digest(&victim),
            victim_before,
            "iteration {i}: the victim behind the swapped-in symlink changed: {:?}",
            report.record
        );
        assert_eq!(
            digest(&proj.join("src")),
            src_before,
            "iteration {i}: src changed"
        );
        assert!(
            matches!(report.outcome, Outcome::Deleted | Outcome::Partial),
            "iteration {i}: {:?}",
            report.record
        );
        // With the attacker gone, whatever it put back is plain files and dirs: all deletable.
        if present(&nm) {
            let again = run_settled(&exec, &action);
            assert_eq!(
                again.outcome,
                Outcome::Deleted,
                "iteration {i}: {:?}",
                again.record
            );
        }
        assert!(
            !present(&nm),
            "iteration {i}: node_modules survived a quiet deletion"
        );
        assert_eq!(
            digest(&victim),
            victim_before,
            "iteration {i}: victim changed"
        );
        met_symlink += usize::from(counts.unlinked_by_executor > 0);
        not_clean += usize::from(report.outcome != Outcome::Deleted);
        totals.swaps += counts.swaps;
        totals.unlinked_by_executor += counts.unlinked_by_executor;
    }
    assert!(
        totals.swaps > 0,
        "the attacker never swapped anything: the test tests nothing"
    );
    println!(
        "dir-swap race: {RACE_ITERATIONS} iterations in {:.1?}; {} swaps; the executor met a \
         swapped-in symlink (and unlinked it) in {met_symlink} iterations ({} symlinks); {not_clean} \
         first passes were partial; the victim never changed",
        started.elapsed(),
        totals.swaps,
        totals.unlinked_by_executor
    );
}
