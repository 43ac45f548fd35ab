//! Guarantee 6: file names are bytes.

use super::*;

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
