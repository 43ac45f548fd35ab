//! Regressions of the safety issue (issue 11): each test is named after an edge that once let
//! Guardian delete what it must not, or let a task on the node turn it off or use it. Real
//! tmpfs, real bind mounts and mount namespaces, real processes, the real binary.

mod support;

use guardian::cleanup::{ActionReport, AuditLog, Executor, Outcome};
use guardian::config::Workspace;
use guardian::fsys::{force_mount_ids, MountIds};
use guardian::policy::PlannedAction;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn executor(workspaces: &[(&Path, &[&str])], audit: &Path) -> Executor {
    Executor::new(
        workspaces
            .iter()
            .map(|(p, protect)| Workspace {
                path: p.to_path_buf(),
                protect: protect.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
        AuditLog::open(audit).unwrap(),
        false,
        Arc::new(AtomicBool::new(false)),
        Arc::new(|_: &Path| None),
    )
}

/// A planned deletion of the entry at `path` now, as a survey would have measured it.
fn planned(path: &Path, project: &Path, min_idle_secs: Option<u64>) -> PlannedAction {
    PlannedAction {
        path: path.to_path_buf(),
        project: project.to_path_buf(),
        rule: "test".into(),
        phase: 1,
        reason: "safety test".into(),
        bytes_estimated: 0,
        inodes_estimated: 0,
        identity: guardian::fsys::identity_of(path).unwrap_or((0, 0)),
        min_idle_secs,
        rebuild: None,
    }
}

fn run(exec: &Executor, action: &PlannedAction) -> ActionReport {
    exec.execute(action)
        .unwrap_or_else(|e| panic!("audit failed: {e}"))
}

fn bytes_path(base: &Path, name: &[u8]) -> PathBuf {
    base.join(OsString::from_vec(name.to_vec()))
}

fn status_json(config: &Path) -> serde_json::Value {
    let out = guardian(&["status", "--json", "--config", config.to_str().unwrap()]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// 1. Nested workspaces ------------------------------------------------------------------------

#[test]
fn nested_workspaces_the_executor_picks_the_most_specific_one() {
    if !require_root("nested_workspaces_the_executor_picks_the_most_specific_one") {
        return;
    }
    // Config validation refuses overlapping workspaces (tests/config.rs); the executor must be
    // right even if handed them: `W/tasks` protects `output`, `W` does not. The first prefix
    // (`W`) would see project `tasks` and delete `W/tasks/output`.
    let mount = TestMount::tmpfs(64 * MIB);
    let outer = mount.path("w");
    let inner = outer.join("tasks");
    write_file(&inner.join("output/results.json"), 4096);
    let before = digest(&inner.join("output"));
    let outer_ws: (&Path, &[&str]) = (&outer, &[]);
    let inner_ws: (&Path, &[&str]) = (&inner, &["output"]);
    for order in [[outer_ws, inner_ws], [inner_ws, outer_ws]] {
        let exec = executor(&order, &mount.path("state/audit.jsonl"));
        let target = inner.join("output");
        let report = run(&exec, &planned(&target, &target, None));
        assert_eq!(report.outcome, Outcome::Refused, "{:?}", report.record);
        assert!(
            report
                .record
                .error
                .as_deref()
                .unwrap_or("")
                .contains("protect list"),
            "{:?}",
            report.record
        );
        // Planned as the outer workspace would see it: refused too, it names the wrong project.
        let report = run(&exec, &planned(&target, &inner, None));
        assert_eq!(report.outcome, Outcome::Refused, "{:?}", report.record);
    }
    assert_eq!(digest(&inner.join("output")), before);
}

// 2. Fresh dirs with back-dated files are not idle --------------------------------------------

#[test]
fn fresh_project_with_back_dated_files_is_not_deleted_by_phase_2() {
    if !require_root("fresh_project_with_back_dated_files_is_not_deleted_by_phase_2") {
        return;
    }
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    // What `tar x` / `cp -a` / `git checkout` of old files leave: a dir made now, files with
    // 2020 mtimes. ctime is now, and cannot be back-dated.
    let fresh = ws.join("fresh-clone");
    write_files(&fresh.join("src"), 4, 5 * MIB);
    age_tree(&fresh, Duration::from_secs(6 * 365 * 86400));
    write_config(&config, &ws, &state, "1s", "");
    // The default active_within (15m): the test config's 1s is for tests that want phase 2.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("active_within = \"1s\"", "active_within = \"15m\"");
    std::fs::write(&config, text).unwrap();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 97.0);
    let before = digest(&fresh);

    let out = guardian(&["plan", "--json", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions = plan[0]["plan"]["actions"].as_array().unwrap();
    assert!(
        actions.iter().all(|a| a["path"] != fresh.to_str().unwrap()),
        "a project changed seconds ago was planned for deletion: {plan:#}"
    );
    let skipped = plan[0]["plan"]["skipped"].as_array().unwrap();
    let why = skipped
        .iter()
        .find(|s| s["path"] == fresh.to_str().unwrap())
        .unwrap_or_else(|| panic!("not listed as skipped: {plan:#}"));
    assert!(why["reason"].as_str().unwrap().contains("active"), "{why}");

    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(digest(&fresh), before, "the fresh project changed");
}

// 3. Mount boundary without STATX_MNT_ID ------------------------------------------------------

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

// 4. In use, by identity: a process in its own mount namespace --------------------------------

#[test]
fn process_in_its_own_mount_namespace_protects_its_work_dir() {
    if !require_root("process_in_its_own_mount_namespace_protects_its_work_dir") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("ws");
    let proj = ws.join("proj");
    write_files(&proj.join("node_modules/pkg"), 3, 4096);
    std::fs::create_dir_all(proj.join("src")).unwrap();
    // The container's view: the work dir bind-mounted at /…/view in a mount namespace of its
    // own, the task's cwd inside. Its /proc cwd link reads `…/view/src`, a path that means
    // nothing on the host.
    let view = mount.path("view");
    std::fs::create_dir_all(&view).unwrap();
    let task = Reaped::spawn(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind '{}' '{}' && cd '{}/src' && exec sleep 300",
                proj.display(),
                view.display(),
                view.display()
            ))
            .stdout(Stdio::null()),
    );
    // The shell execs sleep: wait until the task's cwd shows the namespace's path.
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_link(format!("/proc/{}/cwd", task.pid())).ok() == Some(view.join("src"))
        }),
        "the namespaced task never set up"
    );
    let before = digest(&proj);
    let exec = executor(&[(&ws, &[])], &mount.path("state/audit.jsonl"));
    let nm = proj.join("node_modules");
    let report = run(&exec, &planned(&nm, &proj, None));
    assert_eq!(report.outcome, Outcome::Refused, "{:?}", report.record);
    assert!(
        report
            .record
            .error
            .as_deref()
            .unwrap_or("")
            .contains("in use"),
        "{:?}",
        report.record
    );
    assert_eq!(digest(&proj), before, "the task's work dir changed");
    drop(task);
    // Control: with the task gone, the same action goes ahead.
    assert!(wait_until(Duration::from_secs(10), || {
        run(&exec, &planned(&nm, &proj, None)).outcome == Outcome::Deleted
    }));
}

// 5. Plan-to-delete drift ---------------------------------------------------------------------

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

// 6. File names are bytes ---------------------------------------------------------------------

#[test]
fn non_utf8_project_name_neither_stops_the_daemon_nor_loses_its_audit_line() {
    if !require_root("non_utf8_project_name_neither_stops_the_daemon_nor_loses_its_audit_line") {
        return;
    }
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    let bad = bytes_path(&ws, b"bad\xff\nname");
    write_files(&bad.join("node_modules/pkg"), 5, 2 * MIB);
    write_files(&ws.join("plain/data"), 2, 4096);
    write_config(&config, &ws, &state, "200ms", "[tasks]\ntask_areas = []\n");
    let mut daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .stderr(Stdio::piped()),
    );
    // The daemon lists the project, writes its state, and keeps running.
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "the daemon stopped over a file name"
    );
    // Under pressure, the non-UTF-8 project's node_modules goes, with its audit line.
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 85.0);
    let audit = state.join("audit.jsonl");
    let nm = bad.join("node_modules");
    assert!(
        wait_until(Duration::from_secs(20), || !nm.exists()),
        "node_modules of the non-UTF-8 project was not cleaned"
    );
    assert!(wait_until(Duration::from_secs(5), || {
        audit_lines(&audit)
            .iter()
            .any(|l| l["outcome"] == "deleted")
    }));
    let line = audit_lines(&audit)
        .into_iter()
        .find(|l| l["outcome"] == "deleted")
        .unwrap();
    let text = line["path"].as_str().unwrap();
    assert!(!text.contains('\n'), "a name forged a line: {text:?}");
    assert_eq!(
        guardian::textpath::unescape(text).unwrap(),
        nm,
        "the audit line does not name the path exactly"
    );
    // The state file names it losslessly too, and the daemon is still running.
    assert!(
        wait_until(Duration::from_secs(10), || {
            status_json(&config)["recent_actions"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["path"] == line["path"]))
        }),
        "the state file never listed the action"
    );
    assert!(daemon.0.try_wait().unwrap().is_none());
    // `task done` on such a dir deletes it and audits it.
    let _ = Command::new("kill").arg(daemon.pid().to_string()).status();
    let _ = daemon.0.wait();
    let area_config = mount.path("area.toml");
    let ws_text = ws.display().to_string();
    write_config(
        &area_config,
        &ws,
        &state,
        "1s",
        &format!("[tasks]\ntask_areas = [\"{ws_text}\"]\n"),
    );
    let out = Command::new(guardian_bin())
        .args(["task", "done", "--status", "done", "--config"])
        .arg(&area_config)
        .arg("--dir")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!bad.exists());
    let done = audit_lines(&audit)
        .into_iter()
        .rev()
        .find(|l| l["outcome"] == "deleted")
        .unwrap();
    assert_eq!(
        guardian::textpath::unescape(done["path"].as_str().unwrap()).unwrap(),
        bad
    );
}

#[test]
fn scan_and_plan_json_carry_non_utf8_paths_losslessly() {
    if !require_root("scan_and_plan_json_carry_non_utf8_paths_losslessly") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("ws");
    let bad = bytes_path(&ws, b"caf\xe9");
    write_files(&bad.join("node_modules"), 4, MIB);
    let out = Command::new(guardian_bin())
        .args(["scan", "--json"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let scan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        guardian::textpath::unescape(scan["path"].as_str().unwrap()).unwrap(),
        bad
    );
    let config = mount.path("guardian.toml");
    write_config(&config, &ws, &mount.path("state"), "1s", "");
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 85.0);
    let out = guardian(&["plan", "--json", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let action = &plan[0]["plan"]["actions"][0];
    assert_eq!(
        guardian::textpath::unescape(action["path"].as_str().unwrap()).unwrap(),
        bad.join("node_modules")
    );
}

// 7. Write-ahead audit ------------------------------------------------------------------------

#[test]
fn killed_mid_deletion_the_next_start_finishes_the_deletion_and_records_it() {
    if !require_root("killed_mid_deletion_the_next_start_finishes_the_deletion_and_records_it") {
        return;
    }
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    let nm = ws.join("proj/node_modules");
    write_files(&nm, 40, 64 * 1024);
    write_files(&ws.join("proj/src"), 2, 4096);
    let src_before = digest(&ws.join("proj/src"));
    write_config(&config, &ws, &state, "1s", "");
    // What a daemon killed with SIGKILL in the middle of removing node_modules leaves: its
    // fsync'd intent line (written before anything was unlinked), no outcome line, and the
    // tree half gone. The actor is a process that has exited.
    let dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let _ = { dead }.wait();
    let (dev, ino) = guardian::fsys::identity_of(&nm).unwrap();
    let intent = serde_json::json!({
        "ts": "2026-12-06T00:00:00.000Z", "id": "killed-1", "action": "delete",
        "path": nm.to_str().unwrap(), "rule": "regenerable", "phase": 1,
        "reason": "phase 1: rule `regenerable` matches", "bytes_estimated": 2621440,
        "bytes_freed": 0, "bytes_unlinked": 0, "entries_removed": 0, "dry_run": false,
        "outcome": "intent", "error": null,
        "intent": {"dev": dev, "ino": ino, "project": ws.join("proj").to_str().unwrap(),
                   "min_idle_secs": null, "pid": dead_pid, "pid_start": 1}
    });
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(state.join("audit.jsonl"), format!("{intent}\n")).unwrap();
    for d in 0..3 {
        std::fs::remove_dir_all(nm.join(format!("d{d}"))).unwrap();
    }
    // No pressure now: the next start still finishes what the intent began.
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!nm.exists(), "the half-deleted tree was not finished");
    assert_eq!(digest(&ws.join("proj/src")), src_before);
    let lines = all_audit_lines(&state.join("audit.jsonl"));
    let closing: Vec<_> = lines
        .iter()
        .filter(|l| l["id"] == "killed-1" && l["outcome"] != "intent")
        .collect();
    assert_eq!(closing.len(), 1, "{lines:#?}");
    assert_eq!(closing[0]["outcome"], "deleted");
    assert!(closing[0]["reason"]
        .as_str()
        .unwrap()
        .contains("finishing an interrupted deletion"));
    // A second start finds nothing left to finish.
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        all_audit_lines(&state.join("audit.jsonl")).len(),
        lines.len()
    );
}

#[test]
fn dangling_intent_whose_target_was_replaced_is_recorded_not_finished() {
    if !require_root("dangling_intent_whose_target_was_replaced_is_recorded_not_finished") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    let nm = ws.join("proj/node_modules");
    write_files(&nm, 3, 4096);
    let (dev, ino) = guardian::fsys::identity_of(&nm).unwrap();
    // Since the crash, a task reinstalled node_modules: another dir in its place.
    std::fs::rename(&nm, ws.join("proj/old")).unwrap();
    write_files(&nm, 3, 4096);
    let before = digest(&nm);
    write_config(&config, &ws, &state, "1s", "");
    let intent = serde_json::json!({
        "ts": "2026-12-06T00:00:00.000Z", "id": "killed-2", "action": "delete",
        "path": nm.to_str().unwrap(), "rule": "regenerable", "phase": 1, "reason": "r",
        "bytes_estimated": 0, "bytes_freed": 0, "bytes_unlinked": 0, "entries_removed": 0,
        "dry_run": false, "outcome": "intent", "error": null,
        "intent": {"dev": dev, "ino": ino, "project": ws.join("proj").to_str().unwrap(),
                   "min_idle_secs": null, "pid": 1, "pid_start": 1}
    });
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(state.join("audit.jsonl"), format!("{intent}\n")).unwrap();
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(digest(&nm), before, "the new node_modules was touched");
    let closing: Vec<_> = all_audit_lines(&state.join("audit.jsonl"))
        .into_iter()
        .filter(|l| l["id"] == "killed-2" && l["outcome"] != "intent")
        .collect();
    assert_eq!(closing.len(), 1);
    assert_eq!(closing[0]["outcome"], "skipped");
}

#[test]
fn unwritable_audit_log_deletes_nothing_and_status_says_why() {
    if !require_root("unwritable_audit_log_deletes_nothing_and_status_says_why") {
        return;
    }
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    let nm = ws.join("proj/node_modules");
    write_files(&nm, 10, 2 * MIB);
    write_config(&config, &ws, &state, "300ms", "");
    // The audit log's directory is writable by anyone: Guardian will not write there, so it
    // will not delete.
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir_all(state.join("state")).unwrap();
    std::fs::set_permissions(state.join("state"), std::fs::Permissions::from_mode(0o750)).unwrap();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 85.0);
    let before = digest(&nm);
    let mut daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .stderr(Stdio::null()),
    );
    let why = |s: &serde_json::Value| s["refusing"].as_str().map(str::to_string);
    // The state dir's parent is the unsafe one too; status falls back to a live reading, so
    // read the daemon's state only once it can write it: first, it stays alive and deletes
    // nothing.
    std::thread::sleep(Duration::from_secs(2));
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon exited");
    assert_eq!(
        digest(&nm),
        before,
        "deleted while the audit log was unwritable"
    );
    // Fixed: the daemon writes its audit lines and cleans, without a restart.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || !nm.exists()),
        "no cleaning once the audit log could be written"
    );
    let status = status_json(&config);
    assert_eq!(why(&status), None, "{status:#}");
    assert!(daemon.0.try_wait().unwrap().is_none());
}

#[test]
fn audit_log_replaced_by_a_symlink_is_not_written_through_and_nothing_is_deleted() {
    if !require_root(
        "audit_log_replaced_by_a_symlink_is_not_written_through_and_nothing_is_deleted",
    ) {
        return;
    }
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    let nm = ws.join("proj/node_modules");
    write_files(&nm, 10, 2 * MIB);
    write_config(&config, &ws, &state, "300ms", "");
    let victim = mount.path("etc-shadow-stand-in");
    std::fs::write(&victim, b"root:x:precious\n").unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink(&victim, state.join("audit.jsonl")).unwrap();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 85.0);
    let before = digest(&nm);
    // Refused where it is read: the daemon does not start on it, naming the key.
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("daemon.audit_log"),
        "{}",
        stderr(&out)
    );
    // And where it is written, should it appear later: the executor refuses to delete.
    let exec = Executor::new(
        vec![Workspace {
            path: ws.clone(),
            protect: Vec::new(),
        }],
        AuditLog::new(&state.join("audit.jsonl")),
        false,
        Arc::new(AtomicBool::new(false)),
        Arc::new(|_: &Path| None),
    );
    let err = exec
        .execute(&planned(&nm, &ws.join("proj"), None))
        .expect_err("the audit log is a symlink");
    assert!(err.to_string().contains("nothing is deleted"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"root:x:precious\n");
    assert_eq!(digest(&nm), before);
}

// 9. Root writes only where nobody else can redirect them -------------------------------------

#[test]
fn state_file_replaced_by_a_symlink_is_not_written_through() {
    if !require_root("state_file_replaced_by_a_symlink_is_not_written_through") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    std::fs::create_dir_all(&ws).unwrap();
    write_config(&config, &ws, &state, "1s", "");
    let victim = mount.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::create_dir_all(state.join("state")).unwrap();
    std::os::unix::fs::symlink(&victim, state.join("state/state.json")).unwrap();
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let meta = std::fs::symlink_metadata(state.join("state/state.json")).unwrap();
    assert!(meta.is_file(), "the state file is a new regular file");
    // No temp file left behind, none with a predictable name.
    let names: Vec<_> = std::fs::read_dir(state.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn state_dir_writable_by_others_is_refused_and_nothing_is_written_there() {
    if !require_root("state_dir_writable_by_others_is_refused_and_nothing_is_written_there") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    std::fs::create_dir_all(&ws).unwrap();
    write_config(&config, &ws, &state, "1s", "");
    std::fs::create_dir_all(state.join("state")).unwrap();
    std::fs::set_permissions(state.join("state"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(state.join("state")).unwrap().count(), 0);
}
