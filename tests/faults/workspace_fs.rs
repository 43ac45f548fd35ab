//! The workspace's filesystem: remounted read-only and back (the whole filesystem, and the
//! workspace's own bind mount), the workspace root deleted, replaced by a symlink and recreated.

use super::*;

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
