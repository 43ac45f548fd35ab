//! The age/inactivity sweep: old task dirs and inactive sessions cleaned, usage limits raising
//! events.

use super::*;

#[test]
fn sweep_cleans_old_task_dirs_and_inactive_sessions_and_raises_usage_events() {
    let t = TaskArea::new("");
    let scratch = t.tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    // Idle times are real: the old dirs are written first, the young ones AGE seconds later,
    // and max_age and inactive_after (LIMIT) lie between (ctime cannot be back-dated); the
    // young ones stay younger than LIMIT for the seconds the checks below take.
    const AGE: u64 = 12;
    const LIMIT: u64 = AGE - 3;
    let mk = |dir: &Path| write_files(dir, 4, MIB / 4);
    for dir in [
        t.ws.join("old-done"),
        t.ws.join("old-running"),
        t.ws.join("old-in-use"),
        t.ws.join("old-kept"),
        scratch.join("sess-stale"),
        scratch.join("sess-chatting"),
        t.plain.join("old-plain"),
    ] {
        mk(&dir);
    }
    let _user = Reaped::spawn(
        Command::new("sleep")
            .arg("300")
            .current_dir(t.ws.join("old-in-use/d0")),
    );
    wait_for_cwd(_user.pid(), &t.ws.join("old-in-use/d0"));
    std::thread::sleep(Duration::from_secs(AGE));
    mk(&t.ws.join("young"));
    mk(&scratch.join("sess-fresh"));
    {
        let conn = Connection::open(&t.db).unwrap();
        insert_task(
            &conn,
            "t-run",
            "old-running",
            "running",
            Value::Text(sqlite_ago(600)),
            NODE,
            None,
        );
        // The session's files are old, but its last chat turn is now.
        conn.execute(
            "INSERT INTO turns VALUES ('sess-chatting', ?1), ('sess-stale', ?2)",
            params![sqlite_ago(0), sqlite_ago(9 * 86400)],
        )
        .unwrap();
    }
    let tasks_extra = format!(
        "max_age = \"{LIMIT}s\"\ninactive_after = \"{LIMIT}s\"\nscratch_areas = [\"{}\"]\nactivity_sql = \"SELECT session AS name, MAX(at) AS last_active FROM turns GROUP BY session\"\ntotal_usage_critical = \"1MiB\"\n\n[[tasks.usage_limits]]\nworkspace = \"{}\"\nwarning = \"1MiB\"\ncritical = \"1TiB\"\n",
        scratch.display(),
        t.ws.display()
    );
    // The scratch area must be a workspace too.
    let add_scratch = |extra: &str| {
        t.write_config(extra);
        let text = std::fs::read_to_string(&t.config).unwrap();
        let text = text.replacen(
            "[[rules]]",
            &format!(
                "[[workspaces]]\npath = \"{}\"\n\n[[rules]]",
                scratch.display()
            ),
            1,
        );
        std::fs::write(&t.config, text).unwrap();
    };
    add_scratch(&tasks_extra);
    // old-kept failed recently (kept for 72 h), although its files are old.
    let out = t.done(&t.ws.join("old-kept"), "failed", Some("t-kept"));
    assert!(out.status.success(), "{}", stderr(&out));

    let list = guardian(&["sessions", "--config", t.cfg(), "--json"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let verdicts: BTreeMap<String, String> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                format!(
                    "{} {}",
                    s["verdict"].as_str().unwrap(),
                    s["rule"].as_str().unwrap()
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("old-done", "delete max_age"),
        ("young", "keep max_age"),
        ("old-running", "keep running_task"),
        ("old-in-use", "keep in_use"),
        ("old-kept", "keep keep_failed_for"),
        ("sess-stale", "delete inactive_after"),
        ("sess-fresh", "keep inactive_after"),
        ("sess-chatting", "keep inactive_after"),
        ("old-plain", "keep pressure_only"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(verdicts, want);
    for s in list["sessions"].as_array().unwrap() {
        assert!(s["bytes"].as_u64().unwrap() >= MIB, "{s}");
        assert!(s["idle_secs"].as_i64().unwrap() >= 0, "{s}");
    }
    let chatting = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"].as_str().unwrap().ends_with("sess-chatting"))
        .unwrap();
    assert_eq!(chatting["activity_source"], "db");
    let human = guardian(&["sessions", "--config", t.cfg()]);
    assert!(human.status.success());
    assert!(stdout(&human).contains("VERDICT"), "{}", stdout(&human));

    let out = guardian(&["run", "--once", "--config", t.cfg()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!t.ws.join("old-done").exists(), "old-done was not swept");
    assert!(!scratch.join("sess-stale").exists());
    for kept in ["young", "old-running", "old-in-use", "old-kept"] {
        assert!(t.ws.join(kept).exists(), "{kept} was swept");
    }
    for kept in ["sess-fresh", "sess-chatting"] {
        assert!(scratch.join(kept).exists(), "{kept} was swept");
    }
    assert!(t.plain.join("old-plain").exists());
    let audit = t.audit();
    let swept: Vec<String> = delete_lines(&audit)
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["rule"].as_str().unwrap(),
                l["path"].as_str().unwrap().rsplit('/').next().unwrap()
            )
        })
        .collect();
    assert_eq!(swept, ["max_age old-done", "inactive_after sess-stale"]);
    // Usage limits: a warning for the task area, critical for the total, in the audit log and
    // in the daemon's state.
    let events: Vec<String> = audit
        .iter()
        .filter(|l| l["action"] == "usage_pressure")
        .map(|l| {
            format!(
                "{} {}",
                l["outcome"].as_str().unwrap(),
                l["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            format!("warning {}", t.ws.display()),
            "critical total".to_string()
        ]
    );
    let status = guardian(&["status", "--config", t.cfg(), "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let problems = status["problems"].to_string();
    assert!(problems.contains("usage warning"), "{problems}");
    assert!(problems.contains("usage critical"), "{problems}");
    let tasks_state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.state.join("state/tasks.json")).unwrap())
            .unwrap();
    assert_eq!(tasks_state["usage"].as_array().unwrap().len(), 2);
}
