//! Fault injection (issue 12's acceptance), on real tmpfs and loop-mounted ext4 with the real
//! `guardian` binary: a disk 100% full (the audit log and state dir on it, or on another
//! filesystem; full before the daemon starts, before the audit dir exists), an audit log made
//! unusable mid-run (its path replaced, its filesystem shut down and replaced), the workspace's
//! filesystem remounted read-only and back (the whole filesystem while the daemon is stopped
//! with SIGSTOP, and the workspace's own bind mount while it runs), the workspace root deleted,
//! replaced by a symlink and recreated, and `kill -9` at random points of cleanup cycles on a ~200k-entry tree, restarted
//! 20 times. Throughout: the daemon never exits, says what is wrong (`guardian status --json`:
//! `problems`, `refusing`), deletes nothing it cannot audit, resumes as soon as it can, every
//! audit line parses, every intent gets its outcome line, and nothing outside policy changes
//! (digests of protected and outside trees, byte for byte).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::stress::auditlog::AuditCheck;
use support::stress::daemon::{status_json, Daemon, Spec};
use support::stress::fsx;
use support::stress::rng::Rng;
use support::*;

/// Entries in the tree of the kill -9 test (node_modules-like dirs in about 100 projects,
/// protected and outside trees), as the issue asks.
const KILL_TREE_ENTRIES: usize = 200_000;
/// Times the kill -9 test kills and restarts the daemon.
const KILL_RESTARTS: usize = 20;
/// How long any condition the daemon should reach within a few polls may take (generous: the
/// machine is shared; each wait ends as soon as its condition holds).
const SOON: Duration = Duration::from_secs(20);

/// Old projects with `node_modules` (and sources that no rule matches), a protected `output`
/// dir and a tree outside the workspace, both holding what the rule matches.
struct Scene {
    ws: PathBuf,
    /// Trees that must stay byte-identical, with their digests now.
    kept: Vec<(PathBuf, BTreeMap<Vec<u8>, String>)>,
}

impl Scene {
    fn new(ws: &Path, outside: &Path, projects: usize, modules_mib: u64) -> Scene {
        for p in 0..projects {
            let dir = ws.join(format!("p{p}"));
            write_files(&dir.join("node_modules"), 8, modules_mib * MIB / 8);
            write_file(&dir.join("src/main.rs"), 4096);
        }
        write_files(&ws.join("output/node_modules"), 4, MIB / 4);
        write_files(&outside.join("node_modules"), 4, MIB / 4);
        let mut kept = vec![ws.join("output"), outside.to_path_buf()];
        kept.extend((0..projects).map(|p| ws.join(format!("p{p}/src"))));
        Scene {
            ws: ws.to_path_buf(),
            kept: kept
                .into_iter()
                .map(|d| {
                    let digest = fsx::digest(&d);
                    (d, digest)
                })
                .collect(),
        }
    }

    fn modules(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.ws)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().join("node_modules"))
                    .filter(|p| p.exists() && !p.starts_with(self.ws.join("output")))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn assert_kept(&self) {
        for (dir, before) in &self.kept {
            let diff = fsx::digest_diff(before, &fsx::digest(dir), 10);
            assert!(
                diff.is_empty(),
                "{} changed:\n{}",
                dir.display(),
                diff.join("\n")
            );
        }
    }
}

/// Waits until `cond` holds, or fails naming `what` with the daemon's last log lines.
fn wait_for(daemon: &mut Daemon, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        if let Some(status) = daemon.exited() {
            panic!(
                "the daemon exited ({status}) while waiting for {what}:\n{}",
                daemon.log_tail(20)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; daemon log:\n{}",
            daemon.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that the daemon stays alive and deletes nothing of `modules` for `how_long`.
fn assert_nothing_deleted_for(daemon: &mut Daemon, modules: &[PathBuf], how_long: Duration) {
    let deadline = Instant::now() + how_long;
    while Instant::now() < deadline {
        assert!(
            daemon.alive(),
            "the daemon exited:\n{}",
            daemon.log_tail(20)
        );
        for m in modules {
            assert!(
                m.exists(),
                "{} was deleted while Guardian could not audit it",
                m.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit log parses line by line, every intent has its outcome, no action is recorded
/// twice, and every deletion is a `node_modules` inside the workspace.
fn assert_audit_complete(audit_log: &Path, ws: &Path) -> AuditCheck {
    let audit = AuditCheck::read(audit_log).unwrap_or_else(|e| panic!("{e:#}"));
    let dangling: Vec<_> = audit.dangling().iter().map(|r| r.id.clone()).collect();
    assert!(dangling.is_empty(), "intents without outcome: {dangling:?}");
    assert!(audit.duplicate_outcomes().is_empty());
    for r in audit.deletions() {
        assert!(
            r.path.starts_with(ws) && r.path.ends_with("node_modules"),
            "deleted outside policy: {}",
            r.path.display()
        );
    }
    audit
}

fn status(config: &Path) -> (Option<i32>, serde_json::Value) {
    status_json(&guardian_bin(), config).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The `refusing` reason `guardian status --json` shows, if any (and that `problems` says it).
fn refusing(config: &Path) -> Option<String> {
    let (_, state) = status(config);
    refusing_in(&state)
}

/// The `refusing` reason in the daemon's state file, read directly: `guardian status` itself
/// refuses to run while the configured audit log or workspace is a symlink (a config error that
/// names it), which is the point of those tests.
fn refusing_in_state_file(spec: &Spec) -> Option<String> {
    let state = guardian::daemon::state::read_state(&spec.state_dir).ok()?;
    refusing_in(&serde_json::to_value(state).unwrap())
}

fn refusing_in(state: &serde_json::Value) -> Option<String> {
    let why = state["refusing"].as_str()?.to_string();
    let problems = state["problems"].to_string();
    assert!(
        problems.contains("refusing to delete"),
        "refusing without a problem line: {state}"
    );
    Some(why)
}

fn start(config: &Path, log: &Path) -> Daemon {
    let mut d = Daemon::start(&guardian_bin(), config, log).unwrap_or_else(|e| panic!("{e:#}"));
    d.wait_started(SOON).unwrap_or_else(|e| panic!("{e:#}"));
    d
}

fn stop_clean(daemon: &mut Daemon) {
    let status = daemon
        .stop(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        status.success(),
        "daemon exit status {status}:\n{}",
        daemon.log_tail(20)
    );
}

/// A directory for the config and the daemon's log, on the root filesystem (never filled).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Disk 100% full.

/// Audit log and state dir on the filesystem that fills up completely while the daemon runs.
fn full_disk_with_audit_and_state_on_it(mount: TestMount, name: &str) {
    let tmp = scratch();
    let scene = Scene::new(&mount.path("ws"), &mount.path("outside"), 6, 8);
    let spec = Spec::new(&scene.ws, &mount.path("guardian"));
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    let mut daemon = start(&config, &tmp.path().join("daemon.log"));
    let reserve = spec.audit_log.with_file_name(".audit-reserve");
    wait_for(&mut daemon, SOON, "the audit log's reserve", || {
        reserve.exists()
    });
    let modules = scene.modules();

    fsx::fill_completely(&mount.dir, &mount.path("filler")).unwrap();
    eprintln!(
        "{name}: filled, {} bytes free",
        fsx::space(&mount.dir).unwrap().free
    );
    wait_for(
        &mut daemon,
        SOON,
        "free space back at the 30% target",
        || free_percent(&mount.dir) >= 30.0,
    );
    assert!(modules.iter().any(|m| !m.exists()));
    // tmpfs has no root reserve: the audit log's own reserve is what lets the first line in
    // (ext4 may still fit a line in the last block of the log).
    if name == "tmpfs" {
        assert!(
            daemon
                .log_text()
                .contains("gave up the audit log's reserve"),
            "the reserve was not used:\n{}",
            daemon.log_tail(20)
        );
    }
    stop_clean(&mut daemon);
    let audit = assert_audit_complete(&spec.audit_log, &scene.ws);
    assert!(audit.deletions().count() > 0);
    scene.assert_kept();
}

#[test]
fn full_tmpfs_with_audit_and_state_on_it_gives_up_the_reserve_and_cleans() {
    if !require_root("full_tmpfs_with_audit_and_state_on_it_gives_up_the_reserve_and_cleans") {
        return;
    }
    full_disk_with_audit_and_state_on_it(TestMount::tmpfs(128 * MIB), "tmpfs");
}

#[test]
fn full_ext4_with_audit_and_state_on_it_cleans() {
    if !require_root("full_ext4_with_audit_and_state_on_it_cleans") {
        return;
    }
    full_disk_with_audit_and_state_on_it(TestMount::ext4(128 * MIB), "ext4");
}

#[test]
fn full_workspace_fs_with_audit_and_state_on_another_fs_cleans_and_reports() {
    if !require_root("full_workspace_fs_with_audit_and_state_on_another_fs_cleans_and_reports") {
        return;
    }
    let tmp = scratch();
    let data = TestMount::tmpfs(128 * MIB);
    let own = TestMount::tmpfs(16 * MIB);
    let scene = Scene::new(&data.path("ws"), &data.path("outside"), 6, 8);
    let spec = Spec::new(&scene.ws, &own.path("guardian"));
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    let mut daemon = start(&config, &tmp.path().join("daemon.log"));
    fsx::fill_completely(&data.dir, &data.path("filler")).unwrap();
    wait_for(
        &mut daemon,
        SOON,
        "free space back at the 30% target",
        || free_percent(&data.dir) >= 30.0,
    );
    wait_for(
        &mut daemon,
        SOON,
        "status showing the finished cycle",
        || {
            let (code, state) = status(&config);
            code == Some(0)
                && state["last_cycle"]["reached_target"] == true
                && !state["recent_actions"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
        },
    );
    let (_, state) = status(&config);
    assert!(state["refusing"].is_null(), "{state}");
    stop_clean(&mut daemon);
    assert_audit_complete(&spec.audit_log, &scene.ws);
    scene.assert_kept();
}

#[test]
fn full_at_start_audit_dir_missing_state_elsewhere_reports_refusing_then_cleans_when_room_appears()
{
    if !require_root(
        "full_at_start_audit_dir_missing_state_elsewhere_reports_refusing_then_cleans_when_room_appears",
    ) {
        return;
    }
    let tmp = scratch();
    // ext4: with no free block even the audit dir cannot be created.
    let data = TestMount::ext4(128 * MIB);
    let own = TestMount::tmpfs(16 * MIB);
    let scene = Scene::new(&data.path("ws"), &data.path("outside"), 6, 8);
    let mut spec = Spec::new(&scene.ws, &own.path("guardian"));
    spec.audit_log = data.path("guardian-audit/log/audit.jsonl");
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    fsx::fill_completely(&data.dir, &data.path("filler")).unwrap();
    let modules = scene.modules();

    let mut daemon = start(&config, &tmp.path().join("daemon.log"));
    wait_for(
        &mut daemon,
        SOON,
        "status saying why nothing is deleted",
        || refusing(&config).is_some(),
    );
    let why = refusing(&config).unwrap();
    assert!(why.contains("audit"), "{why}");
    assert_nothing_deleted_for(&mut daemon, &modules, Duration::from_secs(3));

    // Another task ends and frees a little space: Guardian can write its audit lines again.
    fsx::shrink(&data.dir, &data.path("filler"), 2 * MIB).unwrap();
    wait_for(
        &mut daemon,
        SOON,
        "free space back at the 30% target",
        || free_percent(&data.dir) >= 30.0,
    );
    wait_for(&mut daemon, SOON, "status no longer refusing", || {
        refusing(&config).is_none()
    });
    stop_clean(&mut daemon);
    assert_audit_complete(&spec.audit_log, &scene.ws);
    scene.assert_kept();
}

#[test]
fn full_at_start_everything_on_one_tmpfs_waits_then_cleans_when_room_appears() {
    if !require_root("full_at_start_everything_on_one_tmpfs_waits_then_cleans_when_room_appears") {
        return;
    }
    let tmp = scratch();
    let data = TestMount::tmpfs(128 * MIB);
    let scene = Scene::new(&data.path("ws"), &data.path("outside"), 6, 8);
    let spec = Spec::new(&scene.ws, &data.path("guardian"));
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    fsx::fill_completely(&data.dir, &data.path("filler")).unwrap();
    let modules = scene.modules();

    let log = tmp.path().join("daemon.log");
    let mut daemon = start(&config, &log);
    wait_for(
        &mut daemon,
        SOON,
        "a log line saying why nothing is deleted",
        || log_has(&log, "refusing to delete"),
    );
    assert_nothing_deleted_for(&mut daemon, &modules, Duration::from_secs(3));
    // Nothing can be written, not even the state file: status says there is no state.
    let (code, state) = status(&config);
    assert_ne!(code, Some(0), "{state}");
    assert!(state["error"].is_string(), "{state}");

    fsx::shrink(&data.dir, &data.path("filler"), 2 * MIB).unwrap();
    wait_for(
        &mut daemon,
        SOON,
        "free space back at the 30% target",
        || free_percent(&data.dir) >= 30.0,
    );
    wait_for(&mut daemon, SOON, "a state file without a refusal", || {
        let (code, state) = status(&config);
        code == Some(0) && state["refusing"].is_null()
    });
    stop_clean(&mut daemon);
    assert_audit_complete(&spec.audit_log, &scene.ws);
    scene.assert_kept();
}

/// Whether the daemon's log at `log` holds `needle`.
fn log_has(log: &Path, needle: &str) -> bool {
    String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).contains(needle)
}

// ---------------------------------------------------------------------------------------------
// The audit log made unusable mid-run.

#[test]
fn audit_log_path_replaced_by_a_symlink_mid_run_deletes_nothing_until_restored() {
    if !require_root("audit_log_path_replaced_by_a_symlink_mid_run_deletes_nothing_until_restored")
    {
        return;
    }
    let tmp = scratch();
    let data = TestMount::tmpfs(128 * MIB);
    let own = TestMount::tmpfs(16 * MIB);
    let scene = Scene::new(&data.path("ws"), &data.path("outside"), 6, 8);
    let spec = Spec::new(&scene.ws, &own.path("guardian"));
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    let mut daemon = start(&config, &tmp.path().join("daemon.log"));
    wait_for(&mut daemon, SOON, "the audit log", || {
        spec.audit_log.exists()
    });
    let modules = scene.modules();

    // The log is moved aside and a symlink to a file Guardian must never write takes its place.
    let victim = own.path("victim.txt");
    std::fs::write(&victim, b"not an audit log\n").unwrap();
    std::fs::rename(&spec.audit_log, own.path("guardian/audit.jsonl.moved")).unwrap();
    std::os::unix::fs::symlink(&victim, &spec.audit_log).unwrap();
    fill_to_used(&data.dir, &data.path("filler"), 85.0);
    wait_for(
        &mut daemon,
        SOON,
        "the state saying why nothing is deleted",
        || refusing_in_state_file(&spec).is_some(),
    );
    let why = refusing_in_state_file(&spec).unwrap();
    assert!(why.contains("audit"), "{why}");
    assert_nothing_deleted_for(&mut daemon, &modules, Duration::from_secs(3));
    assert_eq!(std::fs::read(&victim).unwrap(), b"not an audit log\n");

    std::fs::remove_file(&spec.audit_log).unwrap();
    wait_for(
        &mut daemon,
        SOON,
        "free space back at the 30% target",
        || free_percent(&data.dir) >= 30.0,
    );
    wait_for(&mut daemon, SOON, "status no longer refusing", || {
        refusing(&config).is_none()
    });
    stop_clean(&mut daemon);
    // Every deletion is recorded in the log at the configured path.
    let audit = assert_audit_complete(&spec.audit_log, &scene.ws);
    let gone = modules.iter().filter(|m| !m.exists()).count();
    assert!(gone > 0);
    assert_eq!(
        audit.deletions().count(),
        gone,
        "deletions missing from the audit log"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"not an audit log\n");
    scene.assert_kept();
}

/// `EXT4_IOC_SHUTDOWN` with `EXT4_GOING_FLAGS_NOLOGFLUSH`: every later write to the filesystem
/// fails with EIO, as on a dying disk.
fn shut_down_ext4(dir: &Path) {
    const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
    let flags: u32 = 2;
    let fd = std::fs::File::open(dir).unwrap();
    // SAFETY: the ioctl reads one u32 through the pointer, which outlives the call.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            EXT4_IOC_SHUTDOWN as _,
            &flags as *const u32,
        )
    };
    assert_eq!(rc, 0, "shutdown ioctl: {}", std::io::Error::last_os_error());
}

/// A fresh ext4 image mounted on `dir` (over whatever was detached from it); unmounted on drop.
struct Replacement {
    dir: PathBuf,
    _image_dir: tempfile::TempDir,
}

impl Replacement {
    fn mount_on(dir: &Path, bytes: u64) -> Replacement {
        let image_dir = tempfile::tempdir().unwrap();
        let image = image_dir.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(dir));
        Replacement {
            dir: dir.to_path_buf(),
            _image_dir: image_dir,
        }
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn audit_fs_shut_down_mid_run_refuses_then_resumes_on_a_replacement_fs() {
    if !require_root("audit_fs_shut_down_mid_run_refuses_then_resumes_on_a_replacement_fs") {
        return;
    }
    let tmp = scratch();
    let data = TestMount::tmpfs(128 * MIB);
    let logs = TestMount::ext4(32 * MIB);
    let scene = Scene::new(&data.path("ws"), &data.path("outside"), 6, 8);
    let mut spec = Spec::new(&scene.ws, &data.path("guardian"));
    spec.audit_log = logs.path("guardian/audit.jsonl");
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    let mut daemon = start(&config, &tmp.path().join("daemon.log"));
    wait_for(&mut daemon, SOON, "the audit log", || {
        spec.audit_log.exists()
    });
    let modules = scene.modules();

    shut_down_ext4(&logs.dir);
    fill_to_used(&data.dir, &data.path("filler"), 85.0);
    wait_for(
        &mut daemon,
        SOON,
        "status saying why nothing is deleted",
        || refusing(&config).is_some(),
    );
    assert_nothing_deleted_for(&mut daemon, &modules, Duration::from_secs(3));

    // The dead filesystem is detached and a new one mounted in its place.
    run(Command::new("umount").arg("-l").arg(&logs.dir));
    let _fresh = Replacement::mount_on(&logs.dir, 32 * MIB);
    wait_for(
        &mut daemon,
        SOON,
        "free space back at the 30% target",
        || free_percent(&data.dir) >= 30.0,
    );
    wait_for(&mut daemon, SOON, "status no longer refusing", || {
        refusing(&config).is_none()
    });
    stop_clean(&mut daemon);
    let audit = assert_audit_complete(&spec.audit_log, &scene.ws);
    let gone = modules.iter().filter(|m| !m.exists()).count();
    assert_eq!(
        audit.deletions().count(),
        gone,
        "deletions missing from the audit log"
    );
    scene.assert_kept();
}

// ---------------------------------------------------------------------------------------------
// The workspace's filesystem.

#[test]
fn workspace_mount_made_read_only_and_back_mid_run() {
    if !require_root("workspace_mount_made_read_only_and_back_mid_run") {
        return;
    }
    let tmp = scratch();
    let base = TestMount::ext4(128 * MIB);
    let own = TestMount::tmpfs(16 * MIB);
    // The workspace is reached through a bind mount whose read-only flag the test flips, while
    // the filesystem stays writable through `base` (other writers go on filling it).
    let view = tmp.path().join("view");
    std::fs::create_dir(&view).unwrap();
    std::fs::create_dir(base.path("area")).unwrap();
    run(Command::new("mount")
        .arg("--bind")
        .arg(base.path("area"))
        .arg(&view));
    let _unbind = Unmount(view.clone());
    let scene = Scene::new(&view.join("ws"), &base.path("outside"), 6, 8);
    let spec = Spec::new(&scene.ws, &own.path("guardian"));
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    let mut daemon = start(&config, &tmp.path().join("daemon.log"));
    let modules = scene.modules();

    run(Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&view));
    fill_to_used(&base.dir, &base.path("filler"), 85.0);
    wait_for(&mut daemon, SOON, "a cycle that could not delete", || {
        let (_, state) = status(&config);
        state["last_cycle"]["reached_target"] == false
    });
    assert_nothing_deleted_for(&mut daemon, &modules, Duration::from_secs(2));
    let audit = AuditCheck::read(&spec.audit_log).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(audit.dangling().is_empty());
    assert!(
        audit
            .outcomes()
            .any(|r| r.error.as_deref().is_some_and(|e| e.contains("Read-only"))),
        "no audit line says why: {:?}",
        audit.outcome_counts()
    );

    run(Command::new("mount")
        .args(["-o", "remount,bind,rw"])
        .arg(&view));
    // Writers carry on: free space drops further, and Guardian tries again.
    write_file(&base.path("filler2"), 3 * MIB);
    wait_for(
        &mut daemon,
        SOON,
        "free space back at the 30% target",
        || free_percent(&base.dir) >= 30.0,
    );
    stop_clean(&mut daemon);
    assert_audit_complete(&spec.audit_log, &scene.ws);
    scene.assert_kept();
}

#[test]
fn workspace_fs_remounted_read_only_and_back_mid_run() {
    if !require_root("workspace_fs_remounted_read_only_and_back_mid_run") {
        return;
    }
    let tmp = scratch();
    let data = TestMount::ext4(128 * MIB);
    let own = TestMount::tmpfs(16 * MIB);
    let scene = Scene::new(&data.path("ws"), &data.path("outside"), 6, 8);
    let spec = Spec::new(&scene.ws, &own.path("guardian"));
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    let mut daemon = start(&config, &tmp.path().join("daemon.log"));
    wait_for(&mut daemon, SOON, "the state file", || {
        status(&config).0 == Some(0)
    });
    let modules = scene.modules();

    // The daemon is stopped (SIGSTOP) while the disk fills and the filesystem goes read-only
    // (as ext4 does on an error with errors=remount-ro); it wakes up to both.
    let pid = rustix::process::Pid::from_raw(i32::try_from(daemon.pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    fill_to_used(&data.dir, &data.path("filler"), 85.0);
    run(Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&data.dir));
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    wait_for(&mut daemon, SOON, "a cycle that could not delete", || {
        status(&config).1["last_cycle"]["reached_target"] == false
    });
    assert_nothing_deleted_for(&mut daemon, &modules, Duration::from_secs(2));
    let audit = AuditCheck::read(&spec.audit_log).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(audit.dangling().is_empty());
    assert!(
        audit
            .outcomes()
            .any(|r| r.error.as_deref().is_some_and(|e| e.contains("Read-only"))),
        "no audit line says why: {:?}",
        audit.outcome_counts()
    );

    run(Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&data.dir));
    write_file(&data.path("filler2"), 3 * MIB);
    wait_for(
        &mut daemon,
        SOON,
        "free space back at the 30% target",
        || free_percent(&data.dir) >= 30.0,
    );
    stop_clean(&mut daemon);
    assert_audit_complete(&spec.audit_log, &scene.ws);
    scene.assert_kept();
}

/// Lazily unmounts its path on drop.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn workspace_root_deleted_replaced_by_a_symlink_and_recreated_mid_run() {
    if !require_root("workspace_root_deleted_replaced_by_a_symlink_and_recreated_mid_run") {
        return;
    }
    let tmp = scratch();
    let data = TestMount::tmpfs(128 * MIB);
    let scene = Scene::new(&data.path("ws"), &data.path("outside"), 2, 4);
    let spec = Spec::new(&scene.ws, &data.path("guardian"));
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    let mut daemon = start(&config, &tmp.path().join("daemon.log"));
    wait_for(&mut daemon, SOON, "the state file", || {
        status(&config).0 == Some(0)
    });

    std::fs::remove_dir_all(&scene.ws).unwrap();
    wait_for(
        &mut daemon,
        SOON,
        "status naming the missing workspace",
        || {
            status(&config).1["problems"]
                .to_string()
                .contains("does not exist")
        },
    );

    // A symlink in the workspace's place, to a tree that holds what the rule matches.
    let elsewhere = data.path("elsewhere");
    for p in 0..4 {
        write_files(&elsewhere.join(format!("q{p}/node_modules")), 4, MIB);
    }
    let elsewhere_digest = fsx::digest(&elsewhere);
    std::os::unix::fs::symlink(&elsewhere, &scene.ws).unwrap();
    fill_to_used(&data.dir, &data.path("filler"), 85.0);
    wait_for(
        &mut daemon,
        SOON,
        "a cycle that found nothing it may delete",
        || {
            guardian::daemon::state::read_state(&spec.state_dir)
                .is_ok_and(|s| s.last_cycle.is_some_and(|c| !c.reached_target))
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemon.alive());
    assert!(
        fsx::digest_diff(&elsewhere_digest, &fsx::digest(&elsewhere), 10).is_empty(),
        "deleted through a symlinked workspace root"
    );

    // The workspace comes back with fresh projects (tasks write into it again).
    std::fs::remove_file(&scene.ws).unwrap();
    let fresh: Vec<PathBuf> = (0..6)
        .map(|p| scene.ws.join(format!("new{p}/node_modules")))
        .collect();
    for m in &fresh {
        write_files(m, 4, MIB / 2);
    }
    // The filler outside keeps the filesystem under pressure: Guardian deletes all it may.
    wait_for(&mut daemon, SOON, "the recreated workspace cleaned", || {
        fresh.iter().all(|m| !m.exists())
    });
    stop_clean(&mut daemon);
    assert_audit_complete(&spec.audit_log, &scene.ws);
    assert!(fsx::digest_diff(&elsewhere_digest, &fsx::digest(&elsewhere), 10).is_empty());
    // `output` and the project sources went with the deleted workspace; the outside tree stays.
    let outside = &scene.kept[1];
    assert!(fsx::digest_diff(&outside.1, &fsx::digest(&outside.0), 10).is_empty());
}

// ---------------------------------------------------------------------------------------------
// kill -9 at random points of cleanup cycles.

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
