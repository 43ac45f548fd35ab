//! Guarantee 3: the mount boundary without `STATX_MNT_ID`, and no way to tell mounts apart.

use super::*;

#[test]
fn bind_mount_inside_project_without_statx_mnt_id_is_not_crossed() {
    if !require_root("bind_mount_inside_project_without_statx_mnt_id_is_not_crossed") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let outside = mount.path("outside");
    write_files(&outside, 5, 64 * 1024);
    let before = digest(&outside);
    let ws = mount.path("ws");
    for method in [MountIds::Handle, MountIds::Mountinfo] {
        let proj = ws.join(format!("proj-{method:?}"));
        write_files(&proj.join("data"), 3, 4096);
        let inside = proj.join("data/cache");
        std::fs::create_dir_all(&inside).unwrap();
        // A bind mount of the same filesystem: same st_dev, only the mount differs.
        support::run(
            Command::new("mount")
                .arg("--bind")
                .arg(&outside)
                .arg(&inside),
        );
        let exec = executor(&[(&ws, &[])], &mount.path("state/audit.jsonl"));
        // As on a kernel before 5.8: statx reports no mount id.
        force_mount_ids(Some(method));
        let report = run(&exec, &planned(&proj, &proj, None));
        force_mount_ids(None);
        let _ = Command::new("umount").arg(&inside).status();
        assert_eq!(
            report.outcome,
            Outcome::Partial,
            "{method:?}: {:?}",
            report.record
        );
        assert!(
            report
                .record
                .error
                .as_deref()
                .unwrap_or("")
                .contains("mount point"),
            "{method:?}: {:?}",
            report.record
        );
        assert_eq!(
            digest(&outside),
            before,
            "{method:?}: crossed into the bind mount"
        );
    }
}

#[test]
fn no_way_to_tell_mounts_apart_refuses_to_delete() {
    if !require_root("no_way_to_tell_mounts_apart_refuses_to_delete") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("ws");
    let proj = ws.join("proj");
    write_files(&proj.join("data"), 3, 4096);
    let before = digest(&proj);
    let exec = executor(&[(&ws, &[])], &mount.path("state/audit.jsonl"));
    force_mount_ids(Some(MountIds::Unavailable));
    let report = run(&exec, &planned(&proj, &proj, None));
    force_mount_ids(None);
    assert_eq!(report.outcome, Outcome::Refused, "{:?}", report.record);
    assert!(
        report
            .record
            .error
            .as_deref()
            .unwrap_or("")
            .contains("cannot tell mount points apart"),
        "{:?}",
        report.record
    );
    assert_eq!(digest(&proj), before);
}
