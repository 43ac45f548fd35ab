//! A running task protects its project: under phase 2 at 95 % used, the project of a task
//! running on this node survives while idle ones (and one whose task runs on another node) go;
//! a locked task DB delays a cycle but does not break it; a missing or corrupt DB makes every
//! project count as running.

use super::*;

#[test]
fn running_task_project_survives_phase2_at_95_percent_while_idle_projects_go() {
    if !require_root("running_task_project_survives_phase2_at_95_percent_while_idle_projects_go") {
        return;
    }
    // `busy` is the oldest, so without the task DB it would be the first to go. `elsewhere`
    // has a running task too, but on another node: on this disk it is idle.
    let s = PressureSetup::new(
        &[
            "busy",
            "elsewhere",
            "idle-oldest",
            "idle-middle",
            "idle-newest",
        ],
        "",
    );
    let task_proc = sleeper(); // the task's process runs with its cwd elsewhere
    {
        let conn = Connection::open(&s.db).unwrap();
        insert_task(
            &conn,
            "t-busy",
            "busy",
            "running",
            Value::Integer(now_secs() - 600),
            NODE,
            Some(task_proc.pid() as i64),
        );
        insert_task(
            &conn,
            "t-else",
            "elsewhere",
            "running",
            Value::Integer(now_secs() - 600),
            "node-b",
            Some(1),
        );
        insert_task(
            &conn,
            "t-old",
            "idle-oldest",
            "done",
            Value::Integer(now_secs() - 86400),
            NODE,
            None,
        );
    }
    let busy_before = digest(&s.ws.join("busy"));
    fill_to_used(&s.mount.dir, &s.mount.path("filler.bin"), 95.0);
    assert!(free_percent(&s.mount.dir) < 10.0);

    let plan = guardian(&["plan", "--config", s.cfg(), "--json"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let skipped = plan[0]["plan"]["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|k| k["path"].as_str().unwrap().ends_with("/busy")
                && k["reason"].as_str().unwrap().contains("task t-busy")),
        "plan does not show busy as protected by its running task: {skipped:?}"
    );

    let out = guardian(&["run", "--once", "--config", s.cfg()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let free = free_percent(&s.mount.dir);
    assert!(free >= 30.0, "free {free:.1}% after the cycle");
    assert_eq!(
        digest(&s.ws.join("busy")),
        busy_before,
        "the running task's project changed"
    );
    let audit = s.audit();
    assert!(
        audit
            .iter()
            .all(|l| !l["path"].as_str().unwrap().contains("/busy")),
        "an action touched the running task's project: {audit:?}"
    );
    // Idle projects went, least recently active first, and only as many as needed.
    assert_eq!(
        deleted_names(&audit),
        ["elsewhere", "idle-oldest", "idle-middle"]
    );
    assert!(s.ws.join("idle-newest").exists());
    assert!(delete_lines(&audit)
        .iter()
        .all(|l| l["phase"] == 2 && l["rule"] == "project"));
}

#[test]
fn locked_db_delays_but_does_not_break_a_cycle() {
    if !require_root("locked_db_delays_but_does_not_break_a_cycle") {
        return;
    }
    // A lock wait budget of 3 s × 2: long enough that a loop waiting on it misses polls.
    let s = PressureSetup::new(
        &["busy", "idle-oldest", "idle-middle", "idle-newest"],
        "busy_timeout = \"3s\"\nretries = 1\n",
    );
    let task_proc = sleeper();
    {
        let conn = Connection::open(&s.db).unwrap();
        insert_task(
            &conn,
            "t-busy",
            "busy",
            "running",
            Value::Integer(now_secs() - 60),
            NODE,
            Some(task_proc.pid() as i64),
        );
    }
    fill_to_used(&s.mount.dir, &s.mount.path("filler.bin"), 95.0);
    let ws_before = digest(&s.ws);
    let state_file = s.state.join("state/state.json");
    let read_state = || -> serde_json::Value {
        std::fs::read_to_string(&state_file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };

    // 1. Held locked by another connection: `run --once` returns within a bounded time,
    //    deletes nothing in the workspace and says why.
    let locker = Connection::open(&s.db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let started = Instant::now();
    let mut once = Command::new(guardian_bin())
        .args(["run", "--once", "--config", s.cfg()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || once
            .try_wait()
            .unwrap()
            .is_some()),
        "run --once did not return while the DB was locked"
    );
    assert!(once.wait().unwrap().success());
    eprintln!(
        "locked DB: run --once returned after {:?}",
        started.elapsed()
    );
    assert_eq!(
        digest(&s.ws),
        ws_before,
        "deleted while task state was unknown"
    );
    let problems = read_state()["problems"].to_string();
    assert!(problems.contains("locked"), "{problems}");

    // 2. The daemon keeps its loop while the DB stays locked: the state file is rewritten every
    //    poll (1 s), cycles protect every project.
    let mut daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", s.cfg()])
            .env("GUARDIAN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let mut updates = std::collections::BTreeSet::new();
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(8) {
        if let Some(u) = read_state()["updated"].as_str() {
            updates.insert(u.to_string());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        updates.len() >= 4,
        "the state file was rewritten {} times in 8 s at a 1 s poll while the DB was locked",
        updates.len()
    );
    assert_eq!(
        digest(&s.ws),
        ws_before,
        "deleted while task state was unknown"
    );
    let problems = read_state()["problems"].to_string();
    assert!(problems.contains("task state unknown"), "{problems}");

    // 3. Shutdown is prompt although the DB reader is waiting for the lock.
    let stopping = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon.pid()).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || daemon
            .0
            .try_wait()
            .unwrap()
            .is_some()),
        "the daemon did not stop"
    );
    eprintln!(
        "locked DB: the daemon stopped {:?} after SIGTERM",
        stopping.elapsed()
    );

    // 4. Once the lock is gone, a cycle does everything, and the running task's project stays.
    locker.execute_batch("COMMIT;").unwrap();
    let out = guardian(&["run", "--once", "--config", s.cfg()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(free_percent(&s.mount.dir) >= 30.0);
    assert!(
        s.ws.join("busy").exists(),
        "the running task's project went"
    );
    assert_eq!(
        deleted_names(&s.audit()),
        ["idle-oldest", "idle-middle", "idle-newest"]
    );
    assert_eq!(task_row(&locker, "t-busy").0, "running");
}

#[test]
fn missing_or_corrupt_db_means_every_project_counts_as_running() {
    if !require_root("missing_or_corrupt_db_means_every_project_counts_as_running") {
        return;
    }
    let s = PressureSetup::new(&["idle-oldest", "idle-middle", "idle-newest"], "");
    fill_to_used(&s.mount.dir, &s.mount.path("filler.bin"), 95.0);
    let ws_before = digest(&s.ws);
    std::fs::remove_file(&s.db).unwrap();
    for (case, expect) in [
        ("missing", "does not exist"),
        ("corrupt", "not a readable SQLite"),
    ] {
        if case == "corrupt" {
            std::fs::write(&s.db, b"this is not a database, just bytes\n".repeat(200)).unwrap();
        }
        let db_before = std::fs::read(&s.db).ok();
        let plan = guardian(&["plan", "--config", s.cfg(), "--json"]);
        let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        assert!(plan[0]["plan"]["actions"].as_array().unwrap().is_empty());
        let reasons = plan[0]["plan"]["skipped"].to_string();
        assert!(
            reasons.contains("task state unknown") && reasons.contains(expect),
            "{reasons}"
        );
        let out = guardian(&["run", "--once", "--config", s.cfg()]);
        assert!(out.status.success(), "{case}: {}", stderr(&out));
        assert_eq!(
            digest(&s.ws),
            ws_before,
            "{case}: deleted with task state unknown"
        );
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(s.state.join("state/state.json")).unwrap(),
        )
        .unwrap();
        assert!(
            state["problems"].to_string().contains(expect),
            "{case}: {}",
            state["problems"]
        );
        let ghosts = guardian(&["ghosts", "--config", s.cfg()]);
        assert_eq!(ghosts.status.code(), Some(1), "{case}");
        assert!(stdout(&ghosts).contains(expect), "{}", stdout(&ghosts));
        assert_eq!(
            std::fs::read(&s.db).ok(),
            db_before,
            "{case}: the DB file was created or changed"
        );
    }
    // Once the DB answers again, the idle projects go.
    std::fs::remove_file(&s.db).unwrap();
    drop(create_db(&s.db));
    let out = guardian(&["run", "--once", "--config", s.cfg()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(free_percent(&s.mount.dir) >= 30.0);
    assert!(!deleted_names(&s.audit()).is_empty());
}
