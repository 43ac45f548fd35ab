//! Symlinks pointing outside the workspace.

use super::*;

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
