//! Guarantee 7: the write-ahead audit.

use super::*;

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
