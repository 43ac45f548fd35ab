//! Attacks on the cleanup executor: symlinks, swaps, bind mounts, hard links, path escapes.

mod support;

use guardian::cleanup::audit::read_records;
use guardian::cleanup::{ActionReport, AuditLog, Executor, ExtraProtection, Outcome};
use guardian::config::{Config, Workspace};
use guardian::daemon::plan_now;
use guardian::policy::PlannedAction;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An executor (not dry run) over `workspaces`, each protecting `protect`, logging to `audit`.
fn executor(workspaces: &[&Path], protect: &[&str], audit: &Path) -> Executor {
    executor_with(workspaces, protect, audit, Arc::new(|_: &Path| None))
}

fn executor_with(
    workspaces: &[&Path],
    protect: &[&str],
    audit: &Path,
    extra: ExtraProtection,
) -> Executor {
    let workspaces = workspaces
        .iter()
        .map(|p| Workspace {
            path: p.to_path_buf(),
            protect: protect.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    Executor::new(
        workspaces,
        AuditLog::open(audit).unwrap(),
        false,
        Arc::new(AtomicBool::new(false)),
        extra,
    )
}

/// An executor for a loaded config, as the daemon builds it.
fn executor_for(config: &Config) -> Executor {
    Executor::new(
        config.workspaces.clone(),
        AuditLog::open(&config.daemon.audit_log).unwrap(),
        false,
        Arc::new(AtomicBool::new(false)),
        Arc::new(|_: &Path| None),
    )
}

/// A hand-made planned deletion of `path` in `project`, of the entry there now (as a survey
/// would have measured it).
fn planned(path: &Path, project: &Path, rule: &str, phase: u8) -> PlannedAction {
    PlannedAction {
        path: path.to_path_buf(),
        project: project.to_path_buf(),
        rule: rule.into(),
        phase,
        reason: "attack test".into(),
        bytes_estimated: 0,
        inodes_estimated: 0,
        identity: guardian::fsys::identity_of(path).unwrap_or((0, 0)),
        min_idle_secs: None,
        rebuild: None,
    }
}

fn run_action(exec: &Executor, action: &PlannedAction) -> ActionReport {
    exec.execute(action)
        .unwrap_or_else(|e| panic!("audit write failed for {}: {e}", action.path.display()))
}

/// Executes `action`, again while it is refused only because a process has something inside
/// it open. A process that a concurrently running test forks holds copies of this process's
/// descriptors (files this test just wrote) until it execs, which the executor rightly counts
/// as use. Used where the action is expected to go ahead; gives up after 100 tries.
fn run_settled(exec: &Executor, action: &PlannedAction) -> ActionReport {
    for _ in 0..100 {
        let report = run_action(exec, action);
        let in_use = report.outcome == Outcome::Refused
            && report
                .record
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("in use:"));
        if !in_use {
            return report;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    run_action(exec, action)
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", link.display(), target.display()));
}

/// Whether anything (a symlink included) exists at `path`, without following it.
fn present(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// Writes a config for `ws` (state under `state`) and loads it the way the daemon does.
fn load_config(path: &Path, ws: &Path, state: &Path) -> Config {
    write_config(path, ws, state, "1s", "");
    let text = std::fs::read_to_string(path).unwrap();
    Config::parse(&text, &path.display().to_string()).expect("test config parses")
}

/// The `guardian` binary's run, asserted to succeed.
fn guardian_ok(args: &[&str]) -> std::process::Output {
    let out = guardian(args);
    assert!(
        out.status.success(),
        "guardian {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Mount points below `dir` (not `dir` itself), from `/proc/self/mountinfo`.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect()
}

/// A mount made by one test; unmounted on drop, so a failing test leaves nothing mounted.
struct MountGuard(PathBuf);

impl MountGuard {
    /// `mount --bind SRC DST`: same filesystem and `st_dev`, only the mount id differs.
    fn bind(src: &Path, dst: &Path) -> MountGuard {
        run(Command::new("mount").arg("--bind").arg(src).arg(dst));
        MountGuard(dst.to_path_buf())
    }

    fn tmpfs(dst: &Path, bytes: u64) -> MountGuard {
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes}"))
            .arg("guardian-attack")
            .arg(dst));
        MountGuard(dst.to_path_buf())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(&self.0).status();
        if !plain.map(|s| s.success()).unwrap_or(false) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Symlinks pointing outside the workspace
// ---------------------------------------------------------------------------------------------

/// A project holding symlinks out of the workspace: a plain one to a directory, one to a file,
/// and symlinks *named* like regenerable dirs (`node_modules`, `src/.git`) pointing outside.
fn make_symlink_project(proj: &Path, outside_same: &Path, outside_other: &Path) {
    write_files(&proj.join("data"), 4, 256 * 1024);
    std::fs::create_dir_all(proj.join("src")).unwrap();
    symlink(outside_same, &proj.join("escape"));
    symlink(&outside_same.join("d0/f0"), &proj.join("escape-file"));
    symlink(outside_other, &proj.join("node_modules"));
    symlink(outside_same, &proj.join("src/.git"));
    age_tree(proj, Duration::from_secs(10 * 86400));
}

#[test]
fn symlink_pointing_outside_root_is_unlinked_not_followed() {
    if !require_root("symlink_pointing_outside_root_is_unlinked_not_followed") {
        return;
    }
    let mount = TestMount::tmpfs(128 * MIB);
    // A second, small and fuller filesystem outside every workspace: a symlink to it must not
    // make the executor measure (or touch) the wrong filesystem.
    let other = TestMount::tmpfs(16 * MIB);
    let outside_same = mount.path("outside");
    write_files(&outside_same, 10, 64 * 1024);
    write_file(&outside_same.join("node_modules/pkg/index.js"), 4096);
    std::fs::create_dir_all(outside_same.join(".git/objects")).unwrap();
    let outside_other = other.path("victim");
    write_files(&outside_other, 6, 2 * MIB);
    let snapshot = || (digest(&outside_same), digest(&outside_other));
    let before = snapshot();

    // Through the executor, phase 1 then phase 2.
    let ws = mount.path("ws");
    let proj = ws.join("direct");
    make_symlink_project(&proj, &outside_same, &outside_other);
    let linked_proj = ws.join("linked-proj");
    symlink(&outside_same, &linked_proj);
    let audit = mount.path("state/direct-audit.jsonl");
    let exec = executor(&[&ws], &["output"], &audit);

    for (path, rule, phase) in [
        (proj.join("node_modules"), "regenerable", 1),
        (proj.join("src/.git"), "regenerable", 1),
        (proj.clone(), "project", 2),
        (linked_proj.clone(), "project", 2),
    ] {
        let project = if path == linked_proj {
            &linked_proj
        } else {
            &proj
        };
        let report = run_settled(&exec, &planned(&path, project, rule, phase));
        assert_eq!(
            report.outcome,
            Outcome::Deleted,
            "{}: {:?}",
            path.display(),
            report.record
        );
        assert!(!present(&path), "{} still exists", path.display());
        assert_eq!(
            snapshot(),
            before,
            "deleting {} changed an outside tree",
            path.display()
        );
        // At most the project's 1 MiB of data; a symlink to another filesystem must not make
        // the executor compare free space across two filesystems.
        assert!(
            report.record.bytes_freed <= 2 * MIB,
            "{}: bytes_freed {} for unlinking symlinks and 1 MiB of files: measured on the \
             wrong filesystem? {:?}",
            path.display(),
            report.record.bytes_freed,
            report.record
        );
    }
    assert!(
        outside_same.join("d0/f0").is_file(),
        "the symlinked file is gone"
    );

    // Through the daemon on a nearly full filesystem: phase 1 finds the symlinks named
    // node_modules and .git, phase 2 deletes the projects holding the other symlinks.
    let ws2 = mount.path("dispatch");
    let state = mount.path("guardian-state");
    for name in ["alpha", "beta"] {
        make_symlink_project(&ws2.join(name), &outside_same, &outside_other);
    }
    let config = mount.path("guardian.toml");
    write_config(&config, &ws2, &state, "1s", "");
    wait_out_activity();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 93.0);
    guardian_ok(&["run", "--once", "--config", config.to_str().unwrap()]);

    assert_eq!(
        snapshot(),
        before,
        "guardian run changed a tree outside the workspace"
    );
    let lines = audit_lines(&state.join("audit.jsonl"));
    let lines_ending = |suffix: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["path"].as_str().unwrap().ends_with(suffix))
            .collect()
    };
    for name in ["alpha", "beta"] {
        let nm = lines_ending(&format!("/{name}/node_modules"));
        assert_eq!(
            nm.len(),
            1,
            "one phase-1 action on {name}/node_modules: {lines:#?}"
        );
        assert_eq!(nm[0]["outcome"], "deleted", "{}", nm[0]);
        assert_eq!(nm[0]["phase"], 1, "{}", nm[0]);
        assert!(
            nm[0]["bytes_freed"].as_u64().unwrap() < MIB,
            "unlinking a symlink freed {} bytes by the audit: measured on the symlink's target \
             filesystem? {}",
            nm[0]["bytes_freed"],
            nm[0]
        );
        let whole = lines_ending(&format!("/{name}"));
        assert_eq!(whole.len(), 1, "one phase-2 action on {name}: {lines:#?}");
        assert_eq!(whole[0]["outcome"], "deleted", "{}", whole[0]);
        assert_eq!(whole[0]["phase"], 2, "{}", whole[0]);
        assert!(!present(&ws2.join(name)), "{name} was not deleted");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A directory swapped for a symlink while the deletion runs
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// 3. Bind mounts and other filesystems inside projects
// ---------------------------------------------------------------------------------------------

#[test]
fn bind_mount_inside_project_is_not_crossed() {
    if !require_root("bind_mount_inside_project_is_not_crossed") {
        return;
    }
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("guardian-state");
    let outside = mount.path("outside-data");
    write_files(&outside, 8, 256 * 1024);
    let outside_whole = mount.path("outside-whole");
    write_files(&outside_whole, 3, 128 * 1024);

    let bind_proj = ws.join("bind-proj");
    write_files(&bind_proj.join("data"), 4, 512 * 1024);
    let bind_point = bind_proj.join("mnt");
    std::fs::create_dir_all(&bind_point).unwrap();
    let tmpfs_proj = ws.join("tmpfs-proj");
    write_files(&tmpfs_proj.join("data"), 4, 512 * 1024);
    let tmpfs_point = tmpfs_proj.join("cache/mnt");
    std::fs::create_dir_all(&tmpfs_point).unwrap();
    let whole = ws.join("whole-proj");
    std::fs::create_dir_all(&whole).unwrap();
    age_tree(&ws, Duration::from_secs(10 * 86400));

    let bind = MountGuard::bind(&outside, &bind_point);
    let inner = MountGuard::tmpfs(&tmpfs_point, 8 * MIB);
    let whole_bind = MountGuard::bind(&outside_whole, &whole);
    write_files(&tmpfs_point, 4, 256 * 1024);
    // The bind mount is the hard case: same device number, only the mount id tells it apart.
    assert_eq!(
        std::fs::metadata(&bind_point).unwrap().dev(),
        std::fs::metadata(&ws).unwrap().dev(),
        "setup: a bind mount from the same filesystem keeps st_dev"
    );
    assert_ne!(
        std::fs::metadata(&tmpfs_point).unwrap().dev(),
        std::fs::metadata(&ws).unwrap().dev()
    );
    let outside_before = digest(&outside);
    let whole_before = digest(&outside_whole);
    let inner_before = digest(&tmpfs_point);

    // The executor, aimed at a mount point or below one, refuses outright.
    let exec = executor(&[&ws], &[], &mount.path("state/direct-audit.jsonl"));
    for (path, project) in [
        (bind_point.clone(), &bind_proj),
        (bind_point.join("d0"), &bind_proj),
        (tmpfs_point.clone(), &tmpfs_proj),
        (tmpfs_point.join("d1/f1"), &tmpfs_proj),
        (whole.clone(), &whole),
        (whole.join("d0"), &whole),
    ] {
        let report = run_action(&exec, &planned(&path, project, "regenerable", 1));
        assert_eq!(
            report.outcome,
            Outcome::Refused,
            "{}: {:?}",
            path.display(),
            report.record
        );
        let error = report.record.error.clone().unwrap_or_default();
        assert!(error.contains("mount"), "{}: {error}", path.display());
        assert_eq!(report.record.entries_removed, 0);
    }

    // Phase 2 by the daemon deletes the projects around the mounts, never inside them.
    let config = mount.path("guardian.toml");
    write_config(&config, &ws, &state, "1s", "");
    wait_out_activity();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 93.0);
    guardian_ok(&["run", "--once", "--config", config.to_str().unwrap()]);

    assert_eq!(
        digest(&outside),
        outside_before,
        "bind-mounted data changed"
    );
    assert_eq!(
        digest(&bind_point),
        outside_before,
        "the bind mount's view changed"
    );
    assert_eq!(
        digest(&tmpfs_point),
        inner_before,
        "the tmpfs inside a project changed"
    );
    assert_eq!(
        digest(&outside_whole),
        whole_before,
        "a project that is a mount changed"
    );
    assert_eq!(digest(&whole), whole_before);
    let lines = audit_lines(&state.join("audit.jsonl"));
    for (proj, point) in [(&bind_proj, &bind_point), (&tmpfs_proj, &tmpfs_point)] {
        let line = lines
            .iter()
            .find(|l| l["path"] == proj.to_str().unwrap())
            .unwrap_or_else(|| panic!("no action on {}: {lines:#?}", proj.display()));
        assert_eq!(line["phase"], 2, "{line}");
        assert_eq!(line["outcome"], "partial", "{line}");
        let error = line["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("mount"),
            "error does not name the mount: {line}"
        );
        assert!(
            error.contains(point.to_str().unwrap()),
            "error does not name {point:?}: {line}"
        );
        // Everything around the mount point is gone: the deletion did run.
        assert!(
            !present(&proj.join("data")),
            "{} data survived",
            proj.display()
        );
    }
    assert!(
        !lines.iter().any(|l| l["path"] == whole.to_str().unwrap()),
        "a project that is itself a mount point was planned: {lines:#?}"
    );

    drop(whole_bind);
    drop(inner);
    drop(bind);
    assert_eq!(
        mounts_below(&mount.dir),
        Vec::<PathBuf>::new(),
        "mounts left behind"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Hard links shared between projects
// ---------------------------------------------------------------------------------------------

/// `du -sB1 -x PATH`.
fn du_bytes(path: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sB1", "-x"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn hard_links_shared_between_projects_counted_once() {
    if !require_root("hard_links_shared_between_projects_counted_once") {
        return;
    }
    const BIG: u64 = 20 * MIB;
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("guardian-state");
    let proj_a = ws.join("proj-a");
    let proj_b = ws.join("proj-b");
    write_files(&proj_a.join("data"), 4, MIB);
    write_files(&proj_b.join("data"), 2, MIB);
    write_file(&proj_a.join("big"), BIG);
    std::fs::hard_link(proj_a.join("big"), proj_b.join("big")).unwrap();
    age_tree(&proj_a, Duration::from_secs(9 * 86400));
    age_tree(&proj_b, Duration::from_secs(8 * 86400));
    let config_path = mount.path("guardian.toml");
    let config = load_config(&config_path, &ws, &state);
    wait_out_activity();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 93.0);

    // `guardian scan` counts the shared inode once, as du does.
    let out = guardian_ok(&["scan", ws.to_str().unwrap(), "--json"]);
    let scan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scanned = scan["allocated_bytes"].as_u64().unwrap();
    assert_eq!(
        scanned,
        du_bytes(&ws),
        "guardian scan and du -sB1 -x disagree"
    );
    assert!(
        (BIG + 6 * MIB..2 * BIG).contains(&scanned),
        "workspace scanned as {scanned} bytes: the 20 MiB inode must count exactly once"
    );

    // Neither project's estimate counts the shared inode: deleting one project frees none of it.
    let estimates = |plan: &serde_json::Value| -> BTreeMap<String, u64> {
        plan[0]["plan"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["path"].as_str().unwrap().to_string(),
                    a["bytes_estimated"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let out = guardian_ok(&["plan", "--config", config_path.to_str().unwrap(), "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan[0]["plan"]["phase2_allowed"], true,
        "setup: phase 2 must be planned"
    );
    let cli_estimates = estimates(&plan);
    let (a_key, b_key) = (
        proj_a.to_str().unwrap().to_string(),
        proj_b.to_str().unwrap().to_string(),
    );
    for (key, own) in [(&a_key, 4 * MIB), (&b_key, 2 * MIB)] {
        let est = *cli_estimates
            .get(key)
            .unwrap_or_else(|| panic!("{key} not planned: {cli_estimates:?}"));
        assert!(
            (own..own + MIB).contains(&est),
            "{key}: estimate {est} should be its own {own} bytes, without the shared 20 MiB"
        );
    }

    // The library plans the same; execute its action on proj-a.
    let plans = plan_now(&config);
    let action = plans[0]
        .plan
        .actions
        .iter()
        .find(|a| a.path == proj_a)
        .expect("proj-a planned")
        .clone();
    assert_eq!(action.bytes_estimated, cli_estimates[&a_key]);
    let b_big_before = digest(&proj_b);
    let report = run_settled(&executor_for(&config), &action);
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.record);
    assert!(!present(&proj_a));
    assert_eq!(
        digest(&proj_b),
        b_big_before,
        "proj-b changed when proj-a was deleted"
    );
    assert_eq!(std::fs::metadata(proj_b.join("big")).unwrap().nlink(), 1);

    // The audit line agrees: statvfs saw the estimate freed, not 20 MiB more.
    let records = read_records(&config.daemon.audit_log).unwrap();
    let record = records.last().unwrap();
    assert_eq!(record.path, proj_a);
    assert_eq!(record, &report.record);
    let est = record.bytes_estimated;
    assert!(
        record.bytes_freed + MIB / 2 >= est && record.bytes_freed <= est + MIB / 2,
        "bytes_freed {} vs estimate {est}: {record:?}",
        record.bytes_freed
    );
    assert!(
        record.bytes_unlinked <= est + MIB / 2,
        "bytes_unlinked {} counts the still-linked inode: {record:?}",
        record.bytes_unlinked
    );

    // Now proj-b holds the only link: its estimate includes the inode. (Refill first, so that
    // phase 2 is planned again.)
    wait_out_activity();
    fill_to_used(&mount.dir, &mount.path("filler2.bin"), 93.0);
    let plans = plan_now(&config);
    let b_est = plans[0]
        .plan
        .actions
        .iter()
        .find(|a| a.path == proj_b)
        .map(|a| a.bytes_estimated)
        .expect("proj-b planned");
    assert!(
        b_est >= BIG + 2 * MIB,
        "proj-b estimate {b_est} after its link became the last"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Paths that escape the workspace
// ---------------------------------------------------------------------------------------------

#[test]
fn path_escapes_are_refused() {
    if !require_root("path_escapes_are_refused") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let outside = mount.path("outside");
    write_files(&outside.join("data"), 5, 64 * 1024);
    let ws = mount.path("ws");
    let proj = ws.join("proj");
    write_files(&proj.join("data"), 5, 64 * 1024);
    write_files(&proj.join("a/b"), 2, 4096);
    write_files(&ws.join("output/node_modules"), 2, 4096);
    write_files(&ws.join("output/data"), 2, 4096);
    // Symlinks as parent components: inside a project, as a whole project, and mid-path.
    symlink(&outside, &proj.join("link"));
    symlink(&outside, &ws.join("evil"));
    std::fs::create_dir_all(outside.join("b")).unwrap();
    write_file(&outside.join("b/f"), 4096);
    symlink(&outside, &proj.join("a/x"));
    // A sibling whose name extends the workspace's: a string-prefix check would accept it.
    let ws_sibling = mount.path("ws-sibling");
    write_files(&ws_sibling.join("proj"), 2, 4096);
    let ws_link = mount.path("ws-link");
    symlink(&ws, &ws_link);

    let snapshot = || {
        [&outside, &ws, &ws_sibling]
            .iter()
            .map(|p| digest(p))
            .collect::<Vec<_>>()
    };
    let before = snapshot();
    let audit = mount.path("state/audit.jsonl");
    let exec = executor(&[&ws], &["output", "dispatch-worker"], &audit);

    let cases: Vec<(&str, PathBuf, PathBuf)> = vec![
        (
            "outside every workspace",
            outside.join("data"),
            outside.clone(),
        ),
        (
            "outside, the data itself",
            outside.join("data/d0/f0"),
            outside.clone(),
        ),
        (
            "prefix sibling",
            ws_sibling.join("proj"),
            ws_sibling.join("proj"),
        ),
        ("filesystem root", PathBuf::from("/"), PathBuf::from("/")),
        ("dot-dot", proj.join("../../outside/data"), proj.clone()),
        ("dot-dot at the end", proj.join("data/.."), proj.clone()),
        ("dot-dot to the root", ws.join("proj/.."), ws.clone()),
        (
            "relative path",
            PathBuf::from("ws/proj/data"),
            PathBuf::from("ws/proj"),
        ),
        ("workspace root", ws.clone(), ws.clone()),
        (
            "workspace root, trailing slash",
            PathBuf::from(format!("{}/", ws.display())),
            ws.clone(),
        ),
        (
            "parent of the workspace",
            mount.dir.clone(),
            mount.dir.clone(),
        ),
        ("protected name", ws.join("output"), ws.join("output")),
        (
            "inside a protected name",
            ws.join("output/node_modules"),
            ws.join("output"),
        ),
        (
            "symlinked parent in a project",
            proj.join("link/data"),
            proj.clone(),
        ),
        (
            "symlinked parent, deeper",
            proj.join("link/data/d0"),
            proj.clone(),
        ),
        ("symlinked project", ws.join("evil/data"), ws.join("evil")),
        ("symlinked mid-path dir", proj.join("a/x/b"), proj.clone()),
        (
            "workspace through a symlink",
            ws_link.join("proj/data"),
            ws_link.join("proj"),
        ),
    ];
    for (what, path, project) in &cases {
        let report = run_action(&exec, &planned(path, project, "regenerable", 1));
        assert_eq!(
            report.outcome,
            Outcome::Refused,
            "{what}: {} was not refused: {:?}",
            path.display(),
            report.record
        );
        assert_eq!(report.record.entries_removed, 0, "{what}");
        assert!(report.record.error.is_some(), "{what}: a refusal says why");
        assert_eq!(
            snapshot(),
            before,
            "{what}: {} changed something",
            path.display()
        );
    }
    // An executor configured with the workspace through a symlink refuses too.
    let via_link = executor(&[&ws_link], &[], &audit);
    let report = run_action(
        &via_link,
        &planned(&ws_link.join("proj/data"), &ws_link.join("proj"), "r", 1),
    );
    assert_eq!(report.outcome, Outcome::Refused, "{:?}", report.record);
    assert_eq!(snapshot(), before);

    let records = read_records(&audit).unwrap();
    assert_eq!(
        records.len(),
        cases.len() + 1,
        "one audit line per refused action"
    );
    assert!(records
        .iter()
        .all(|r| r.outcome == "refused" && r.entries_removed == 0));

    // Control: the same executor does delete a plain path inside the workspace.
    let report = run_settled(&exec, &planned(&proj.join("data"), &proj, "regenerable", 1));
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.record);
    assert!(!present(&proj.join("data")));
    assert!(present(&proj.join("link")) && present(&proj.join("a/b/d0/f0")));
    assert_eq!(digest(&outside), before[0]);
}

// ---------------------------------------------------------------------------------------------
// 6. Protection re-checked between planning and deleting
// ---------------------------------------------------------------------------------------------

/// A project with a small node_modules (phase 1) and bigger data (phase 2), and a nested
/// package with its own node_modules.
fn make_planned_project(proj: &Path, days: u64) {
    write_files(&proj.join("node_modules"), 4, 64 * 1024);
    write_files(&proj.join("packages/web/node_modules"), 2, 32 * 1024);
    write_files(&proj.join("data"), 3, MIB);
    write_file(&proj.join("src/main.rs"), 4096);
    age_tree(proj, Duration::from_secs(days * 86400));
}

#[test]
fn keep_marker_and_in_use_are_rechecked_before_delete() {
    if !require_root("keep_marker_and_in_use_are_rechecked_before_delete") {
        return;
    }
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("guardian-state");
    let names = [
        "kept-top",
        "kept-mid",
        "kept-inside",
        "busy-cwd",
        "busy-deep",
        "task",
        "control",
    ];
    for (i, name) in names.iter().enumerate() {
        make_planned_project(&ws.join(name), 20 - i as u64);
    }
    let config = load_config(&mount.path("guardian.toml"), &ws, &state);
    wait_out_activity();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 93.0);

    // Plan while nothing is protected: every project is planned, phase 1 and phase 2.
    let plans = plan_now(&config);
    let plan = &plans[0].plan;
    assert!(
        plan.phase2_allowed,
        "setup: phase 2 must be planned: {plan:#?}"
    );
    let actions_of = |name: &str| -> Vec<PlannedAction> {
        let proj = ws.join(name);
        let found: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| a.project == proj)
            .cloned()
            .collect();
        let paths: Vec<_> = found.iter().map(|a| a.path.clone()).collect();
        for want in [
            proj.join("node_modules"),
            proj.join("packages/web/node_modules"),
            proj.clone(),
        ] {
            assert!(
                paths.contains(&want),
                "setup: {} not planned: {paths:?}",
                want.display()
            );
        }
        found
    };

    // Protection appears after planning, before executing.
    write_file(&ws.join("kept-top/.guardian-keep"), 0);
    write_file(&ws.join("kept-mid/packages/.guardian-keep"), 0);
    write_file(&ws.join("kept-inside/data/d1/.guardian-keep"), 0);
    let cwd_dir = ws.join("busy-cwd/src");
    let _cwd = Reaped::spawn(Command::new("sleep").arg("300").current_dir(&cwd_dir));
    wait_for_cwd(_cwd.pid(), &cwd_dir);
    let deep_dir = ws.join("busy-deep/node_modules/d0");
    let _deep = Reaped::spawn(Command::new("sleep").arg("300").current_dir(&deep_dir));
    wait_for_cwd(_deep.pid(), &deep_dir);
    let digests: BTreeMap<&str, _> = names.iter().map(|n| (*n, digest(&ws.join(n)))).collect();

    let task_proj = ws.join("task");
    let extra: ExtraProtection = Arc::new(move |project: &Path| {
        (project == task_proj).then(|| "task db: a task is running here".to_string())
    });
    let exec = Executor::new(
        config.workspaces.clone(),
        AuditLog::open(&config.daemon.audit_log).unwrap(),
        false,
        Arc::new(AtomicBool::new(false)),
        extra,
    );

    // Every action of a project kept at its top, busy, or held by a task is refused.
    for (name, why) in [
        ("kept-top", ".guardian-keep"),
        ("busy-cwd", "in use"),
        ("busy-deep", "in use"),
        ("task", "task db"),
    ] {
        for action in actions_of(name) {
            let report = run_action(&exec, &action);
            assert_eq!(
                report.outcome,
                Outcome::Refused,
                "{name}: {} was not refused: {:?}",
                action.path.display(),
                report.record
            );
            let error = report.record.error.clone().unwrap_or_default();
            assert!(
                error.contains(why),
                "{name}: refusal does not say {why:?}: {error}"
            );
        }
        assert_eq!(digest(&ws.join(name)), digests[name], "{name} changed");
    }

    // A marker above the target (below the project top) protects the target beneath it.
    let below_marker = ws.join("kept-mid/packages/web/node_modules");
    let action = actions_of("kept-mid")
        .into_iter()
        .find(|a| a.path == below_marker)
        .unwrap();
    let report = run_action(&exec, &action);
    assert_eq!(
        report.outcome,
        Outcome::Refused,
        "a target below a new .guardian-keep was not refused: {:?}",
        report.record
    );
    assert_eq!(
        digest(&ws.join("kept-mid")),
        digests["kept-mid"],
        "kept-mid changed"
    );

    // A marker inside the target: the kept dir (and so its ancestors) stays, byte for byte.
    let kept_dir = ws.join("kept-inside/data/d1");
    let kept_before = digest(&kept_dir);
    let whole = actions_of("kept-inside")
        .into_iter()
        .find(|a| a.path == ws.join("kept-inside"))
        .unwrap();
    let report = run_settled(&exec, &whole);
    assert_eq!(report.outcome, Outcome::Partial, "{:?}", report.record);
    assert_eq!(digest(&kept_dir), kept_before, "the kept dir changed");
    let error = report.record.error.clone().unwrap_or_default();
    assert!(error.contains(".guardian-keep"), "{error}");

    // Control: the unprotected project's planned actions all delete.
    for action in actions_of("control") {
        let report = run_settled(&exec, &action);
        assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.record);
        assert!(
            !present(&action.path),
            "{} still exists",
            action.path.display()
        );
    }
}
