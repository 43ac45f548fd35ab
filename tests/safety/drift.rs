//! Guarantee 5: plan-to-delete drift.

use super::*;

#[test]
fn target_replaced_after_planning_is_skipped() {
    if !require_root("target_replaced_after_planning_is_skipped") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("ws");
    let proj = ws.join("proj");
    let nm = proj.join("node_modules");
    write_files(&nm, 3, 4096);
    let action = planned(&nm, &proj, None);
    // After planning, the measured dir is moved away and another one put in its place.
    std::fs::rename(&nm, proj.join("moved")).unwrap();
    write_files(&nm, 2, 4096);
    let before = digest(&proj);
    let exec = executor(&[(&ws, &[])], &mount.path("state/audit.jsonl"));
    let report = run(&exec, &action);
    assert_eq!(report.outcome, Outcome::Skipped, "{:?}", report.record);
    assert!(
        report
            .record
            .error
            .as_deref()
            .unwrap_or("")
            .contains("another entry"),
        "{:?}",
        report.record
    );
    assert_eq!(digest(&proj), before);
    let lines = audit_lines(&mount.path("state/audit.jsonl"));
    assert_eq!(lines.last().unwrap()["outcome"], "skipped");
    assert!(audit_intents(&mount.path("state/audit.jsonl")).is_empty());
}

#[test]
fn target_changed_after_planning_no_longer_older_than_its_rule_is_skipped() {
    if !require_root("target_changed_after_planning_no_longer_older_than_its_rule_is_skipped") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("ws");
    let proj = ws.join("proj");
    let log = proj.join("build.log");
    write_file(&log, 8192);
    let logs_dir = proj.join("logs");
    write_files(&logs_dir, 4, 4096);
    std::thread::sleep(Duration::from_millis(2100));
    // Both old enough (2 s) when planned…
    let file_action = planned(&log, &proj, Some(2));
    let dir_action = planned(&logs_dir, &proj, Some(2));
    // …then written to again before the executor gets to them.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .set_len(16384)
        .unwrap();
    let fresh = logs_dir.join("d1/f1");
    std::fs::write(&fresh, b"new line\n").unwrap();
    let exec = executor(&[(&ws, &[])], &mount.path("state/audit.jsonl"));
    let report = run(&exec, &file_action);
    assert_eq!(report.outcome, Outcome::Skipped, "{:?}", report.record);
    assert!(log.exists());
    // A dir: what changed since stays (and so do its parents); the rest goes.
    let report = run(&exec, &dir_action);
    assert!(
        matches!(report.outcome, Outcome::Skipped | Outcome::Partial),
        "{:?}",
        report.record
    );
    assert_eq!(std::fs::read(&fresh).unwrap(), b"new line\n");
}

/// An artifact counts only while its marker proves it: a `target/` planned beside a
/// `Cargo.toml` whose `Cargo.toml` is removed — or replaced by a symlink — before the executor
/// gets to it is user data again, and is skipped.
#[test]
fn artifact_whose_marker_went_away_after_planning_is_skipped() {
    if !require_root("artifact_whose_marker_went_away_after_planning_is_skipped") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("ws");
    let text = format!("[[workspaces]]\npath = \"{}\"\n", ws.display());
    let config = guardian::config::Config::parse(&text, "test config").unwrap();
    let exec = executor(&[(&ws, &[])], &mount.path("state/audit.jsonl"))
        .with_rules(&config.compiled_rules());
    let mut actions = Vec::new();
    for proj in ["removed", "linked", "kept"] {
        let proj = ws.join(proj);
        write_file(&proj.join("Cargo.toml"), 100);
        write_files(&proj.join("target/debug"), 4, 4096);
        let mut action = planned(&proj.join("target"), &proj, None);
        action.rule = "cargo-target".into();
        actions.push((proj, action));
    }
    // After planning: one marker deleted, one replaced by a symlink to a real Cargo.toml.
    std::fs::remove_file(ws.join("removed/Cargo.toml")).unwrap();
    std::fs::remove_file(ws.join("linked/Cargo.toml")).unwrap();
    std::os::unix::fs::symlink(ws.join("kept/Cargo.toml"), ws.join("linked/Cargo.toml")).unwrap();
    for (proj, action) in &actions[..2] {
        let report = run(&exec, action);
        assert_eq!(report.outcome, Outcome::Skipped, "{:?}", report.record);
        assert!(
            format!("{:?}", report.record).contains("marker is gone"),
            "{:?}",
            report.record
        );
        assert!(
            proj.join("target/debug/d3/f3").exists(),
            "{}",
            proj.display()
        );
    }
    // The one whose marker stayed goes.
    let report = run(&exec, &actions[2].1);
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.record);
    assert!(!ws.join("kept/target").exists());
}
