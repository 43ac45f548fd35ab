//! Bind mounts and other filesystems inside projects.

use super::*;

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
