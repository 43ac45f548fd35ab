//! The age sweep must not delete fresh dirs: idle time comes from what cannot be back-dated
//! (ctime), and a task area without a task DB sweeps only dirs `guardian task done` recorded as
//! over — including those whose deletion was refused then (retried by the sweep).

use super::*;

/// The embedded default config with its paths moved under `root` (and no journal vacuum).
fn default_like(root: &Path, ws: &Path) -> PathBuf {
    let out = guardian(&["config", "default"]);
    assert!(out.status.success());
    let text = stdout(&out)
        .replace("/home/worker/dispatch", ws.to_str().unwrap())
        .replace(
            "/var/log/guardian/audit.jsonl",
            root.join("state/audit.jsonl").to_str().unwrap(),
        )
        .replace(
            "\"/var/lib/guardian\"",
            &format!("\"{}\"", root.join("state").display()),
        )
        .replace(
            "journal_vacuum = [\"journalctl\", \"--vacuum-size=200M\"]",
            "journal_vacuum = []",
        )
        .replace(
            "\"/var/log/journal\"",
            &format!("\"{}\"", root.join("journal").display()),
        );
    assert!(!text.contains("/var/"), "{text}");
    let path = root.join("guardian.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn session<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"].as_str().unwrap().ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("no {name}: {list:#}"))
}

#[test]
fn default_config_keeps_a_fresh_dir_holding_a_2020_mtime_file() {
    if !require_root("default_config_keeps_a_fresh_dir_holding_a_2020_mtime_file") {
        return;
    }
    // No pressure on an 8 GiB tmpfs (the default's min_free is 5 GiB); the task area is the
    // default's, and there is no task DB.
    let mount = TestMount::tmpfs(8 << 30);
    let ws = mount.path("dispatch");
    let config = default_like(&mount.dir, &ws);
    let cfg = config.to_str().unwrap();
    // What `tar x`, `cp -a`, `rsync -a` produce: a new dir holding a file from 2020.
    let fresh = ws.join("fresh");
    write_file(&fresh.join("src/old.c"), 4096);
    let in_2020 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800);
    std::fs::File::options()
        .write(true)
        .open(fresh.join("src/old.c"))
        .unwrap()
        .set_modified(in_2020)
        .unwrap();
    let list = guardian(&["sessions", "--json", "--config", cfg]);
    assert!(list.status.success(), "{}", stderr(&list));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let row = session(&list, "fresh");
    assert_eq!(row["verdict"], "keep", "{row}");
    assert!(row["idle_secs"].as_i64().unwrap() < 120, "{row}");
    assert_eq!(row["rule"], "task_done_only", "{row}");
    let out = guardian(&["run", "--once", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fresh.join("src/old.c").exists(), "a fresh dir was swept");
    assert!(
        audit_lines(&mount.path("state/audit.jsonl"))
            .iter()
            .all(|l| l["action"] != "delete"),
        "something was deleted"
    );
}

#[test]
fn without_a_task_db_only_dirs_task_done_recorded_as_over_are_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("dispatch");
    let state = tmp.path().join("state");
    let config = tmp.path().join("guardian.toml");
    write_cfg(
        &config,
        &state,
        &[&ws],
        false,
        &format!(
            "[tasks]\ntask_areas = [\"{}\"]\nmax_age = \"2s\"\n",
            ws.display()
        ),
    );
    let cfg = config.to_str().unwrap();
    write_files(&ws.join("idle"), 2, 4096);
    write_files(&ws.join("finished-busy"), 2, 4096);
    // Idle far beyond max_age, but nothing says its task is over.
    std::thread::sleep(Duration::from_secs(4));
    // The wrapper says the task is done while a process still works inside: refused now,
    // recorded, retried by the sweep.
    let user = Reaped::spawn(
        Command::new("sleep")
            .arg("300")
            .current_dir(ws.join("finished-busy/d0")),
    );
    wait_for_cwd(user.pid(), &ws.join("finished-busy/d0"));
    let out = guardian(&[
        "task",
        "done",
        "--config",
        cfg,
        "--dir",
        ws.join("finished-busy").to_str().unwrap(),
        "--status",
        "done",
        "--task",
        "t-9",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("state/kept.json")).unwrap())
            .unwrap();
    assert_eq!(kept["finished"][0]["status"], "done", "{kept:#}");
    assert!(
        kept["finished"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("/finished-busy"),
        "{kept:#}"
    );

    let out = guardian(&["run", "--once", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        ws.join("idle").exists(),
        "swept without a task DB or task done"
    );
    assert!(ws.join("finished-busy").exists(), "swept while in use");
    let list = guardian(&["sessions", "--json", "--config", cfg]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(session(&list, "idle")["rule"], "task_done_only");
    assert_eq!(session(&list, "finished-busy")["rule"], "in_use");

    drop(user);
    let out = guardian(&["run", "--once", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !ws.join("finished-busy").exists(),
        "the finished dir was not swept"
    );
    assert!(ws.join("idle").exists());
    let swept: Vec<_> = audit_lines(&state.join("audit.jsonl"))
        .into_iter()
        .filter(|l| l["action"] == "delete" && l["outcome"] == "deleted")
        .collect();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(swept[0]["rule"], "task_done");
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("state/kept.json")).unwrap())
            .unwrap();
    assert!(kept["finished"].as_array().unwrap().is_empty(), "{kept:#}");
}
