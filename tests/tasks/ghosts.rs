//! The ghost reaper with dead, live and reused PIDs: ghosts are killed and marked exactly, and
//! nothing else changes.

use super::*;

#[test]
fn ghosts_are_killed_and_marked_exactly_and_nothing_else_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("dispatch");
    std::fs::create_dir_all(&ws).unwrap();
    let state = tmp.path().join("state");
    let db = tmp.path().join("dispatch.db");
    let config = tmp.path().join("guardian.toml");
    write_cfg(
        &config,
        &state,
        &[&ws],
        false,
        &format!(
            "[tasks]\ndb = \"{}\"\nnode = \"{NODE}\"\nrelease_slot_sql = \"UPDATE slots SET task_id = NULL WHERE node = :node AND task_id = :id\"\n\n[tasks.ghosts]\nghost_after = \"5s\"\ngrace = \"1s\"\nprojects = [\"proj-a\", \"proj-b\", \"proj-c\", \"proj-d\", \"proj-e\", \"proj-f\", \"proj-g\"]\n",
            db.display()
        ),
    );
    let cfg = config.to_str().unwrap();

    // A: a live ghost whose group ignores SIGTERM (so it takes SIGKILL), with two children.
    let started_a = now_secs();
    let a = spawn_group_leader("trap '' TERM; sleep 300 & sleep 300 & wait");
    assert!(wait_until(Duration::from_secs(5), || group_of(a.pid())
        .len()
        == 3));
    let a_group = group_of(a.pid());
    // B: its process already died.
    let mut b = Command::new("true").spawn().unwrap();
    let b_pid = b.id() as i64;
    b.wait().unwrap();
    // C: recorded pid now belongs to an unrelated process started hours after the task.
    let unrelated = sleeper();
    // D, E: within the limit. F: completed long ago. G: another node. H: another project.
    let (d, e, f, g, h) = (sleeper(), sleeper(), sleeper(), sleeper(), sleeper());
    let conn = create_db(&db);
    let old = Value::Integer(now_secs() - 3 * 3600);
    insert_task(
        &conn,
        "A",
        "proj-a",
        "running",
        Value::Integer(started_a),
        NODE,
        Some(a.pid() as i64),
    );
    insert_task(
        &conn,
        "B",
        "proj-b",
        "running",
        Value::Text(iso_ago(3 * 3600)),
        NODE,
        Some(b_pid),
    );
    insert_task(
        &conn,
        "C",
        "proj-c",
        "running",
        Value::Text(sqlite_ago(3 * 3600)),
        NODE,
        Some(unrelated.pid() as i64),
    );
    insert_task(
        &conn,
        "F",
        "proj-f",
        "done",
        old.clone(),
        NODE,
        Some(f.pid() as i64),
    );
    insert_task(
        &conn,
        "G",
        "proj-g",
        "running",
        old.clone(),
        "node-b",
        Some(g.pid() as i64),
    );
    insert_task(
        &conn,
        "H",
        "other-team",
        "running",
        old,
        NODE,
        Some(h.pid() as i64),
    );
    for (slot, task) in ["A", "B", "C", "D", "E", "H"].iter().enumerate() {
        conn.execute(
            "INSERT INTO slots VALUES (?1, ?2, ?3)",
            params![NODE, slot as i64, task],
        )
        .unwrap();
    }
    conn.execute("INSERT INTO slots VALUES ('node-b', 0, 'G')", [])
        .unwrap();
    // Past ghost_after for A; D and E start now.
    std::thread::sleep(Duration::from_millis(6200)); // whole seconds: > 5 s for sure
    insert_task(
        &conn,
        "D",
        "proj-d",
        "running",
        Value::Integer(now_secs()),
        NODE,
        Some(d.pid() as i64),
    );
    insert_task(
        &conn,
        "E",
        "proj-e",
        "running",
        Value::Text(iso_ago(0)),
        NODE,
        Some(e.pid() as i64),
    );
    let before = dump(&conn);
    let everyone_else = [&unrelated, &d, &e, &f, &g, &h];

    // Dry run: the report, nothing signalled, nothing written.
    let out = guardian(&["ghosts", "--dry-run", "--json", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = |report: &serde_json::Value, key: &str| -> Vec<String> {
        let mut v: Vec<String> = report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.get("id").unwrap_or(x).as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&report, "found"), ["A", "B", "C"]);
    assert!(ids(&report, "killed").is_empty() && ids(&report, "marked").is_empty());
    assert_eq!(ids(&report, "skipped"), ["H"]);
    assert_eq!(report["within_limit"], 2);
    assert_eq!(dump(&conn), before, "a dry run changed the DB");
    assert!(alive(a.pid()) && a_group.iter().all(|p| alive(*p)));

    let started = Instant::now();
    let out = guardian(&["ghosts", "--json", "--config", cfg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&report, "found"), ["A", "B", "C"], "{report:#}");
    assert_eq!(ids(&report, "killed"), ["A"], "{report:#}");
    assert_eq!(ids(&report, "marked"), ["A", "B", "C"], "{report:#}");
    assert_eq!(ids(&report, "skipped"), ["H"], "{report:#}");
    let ghost_a = report["found"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "A")
        .unwrap();
    assert_eq!(ghost_a["process"], "alive");
    assert_eq!(
        ghost_a["sigkilled"].as_array().unwrap().len(),
        3,
        "the group ignores SIGTERM: all three need SIGKILL"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "no grace before SIGKILL"
    );
    // A's whole group is gone; everything else lives.
    for pid in &a_group {
        assert!(!alive(*pid), "ghost process {pid} survived");
    }
    for p in everyone_else {
        assert!(alive(p.pid()), "pid {} was killed", p.pid());
    }

    // The DB: A, B, C failed with a reason; their slots released; all else byte-identical.
    let after = dump(&conn);
    for (id, says) in [
        ("A", "killed its process group"),
        ("B", "already exited"),
        ("C", "unrelated process"),
    ] {
        let (status, error) = task_row(&conn, id);
        assert_eq!(status, "failed", "{id}");
        let error = error.unwrap_or_default();
        assert!(error.contains("ghost task"), "{id}: {error}");
        assert!(error.contains(says), "{id}: {error}");
    }
    let changed: Vec<&String> = before
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    let ghost_rows: Vec<String> = ["A", "B", "C"]
        .iter()
        .map(|id| {
            let rowid: i64 = conn
                .query_row("SELECT rowid FROM tasks WHERE id = ?1", [id], |r| r.get(0))
                .unwrap();
            format!("tasks#{:?}", Value::Integer(rowid))
        })
        .chain((1..=3).map(|r| format!("slots#{:?}", Value::Integer(r))))
        .collect();
    let mut changed_sorted: Vec<String> = changed.into_iter().cloned().collect();
    changed_sorted.sort();
    let mut want = ghost_rows.clone();
    want.sort();
    assert_eq!(changed_sorted, want, "rows other than the ghosts' changed");
    assert_eq!(after.len(), before.len(), "a row was added or deleted");
    for key in ghost_rows.iter().filter(|k| k.starts_with("tasks")) {
        let (b, a) = (&before[key], &after[key]);
        // rowid, id, project, status, started_at, node, pid, error, priority
        for i in [0, 1, 2, 4, 5, 6, 8] {
            assert_eq!(b[i], a[i], "{key} column {i} changed");
        }
    }
    let released: Vec<Option<String>> = conn
        .prepare("SELECT task_id FROM slots WHERE node = ?1 ORDER BY slot")
        .unwrap()
        .query_map([NODE], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        released,
        [
            None,
            None,
            None,
            Some("D".into()),
            Some("E".into()),
            Some("H".into())
        ]
    );

    // Audited, and a second run finds nothing more to do.
    let audit = audit_lines(&state.join("audit.jsonl"));
    let ghosts: Vec<_> = audit.iter().filter(|l| l["action"] == "ghost").collect();
    assert_eq!(ghosts.len(), 3, "{audit:?}");
    assert!(ghosts.iter().all(|l| l["outcome"] == "ok"));
    let out = guardian(&["ghosts", "--config", cfg]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("0 ghosts found"), "{}", stdout(&out));
    assert_eq!(dump(&conn), after);
}
