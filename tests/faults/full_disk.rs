//! Disk 100% full: the audit log and state dir on the filesystem that fills up, or on another
//! one; full before the daemon starts, before the audit dir exists.

use super::*;

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
