//! Reaper honesty with real processes (process groups, setsid) and a real SQLite file: a task is
//! marked only when nothing of it runs any more, processes Guardian must not signal are left
//! alone (and the task with them), group members older than the task are not its, and the error
//! text says what really happened.

use super::*;

/// A task DB, a workspace and a config whose ghosts are tasks running longer than 5 s.
struct Reaper {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    state: PathBuf,
    db: PathBuf,
    config: PathBuf,
}

impl Reaper {
    fn new() -> Reaper {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let ws = dir.join("dispatch");
        std::fs::create_dir_all(&ws).unwrap();
        let state = dir.join("state");
        let db = dir.join("dispatch.db");
        let config = dir.join("guardian.toml");
        drop(create_db(&db));
        write_cfg(
            &config,
            &state,
            &[&ws],
            false,
            &format!(
                "[tasks]\ndb = \"{}\"\nnode = \"{NODE}\"\n\n[tasks.ghosts]\nghost_after = \"5s\"\ngrace = \"1s\"\nstart_tolerance = \"1s\"\n",
                db.display()
            ),
        );
        Reaper {
            _tmp: tmp,
            dir,
            state,
            db,
            config,
        }
    }

    fn cfg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn insert(&self, id: &str, started_at: i64, pid: i32) {
        insert_task(
            &Connection::open(&self.db).unwrap(),
            id,
            "proj",
            "running",
            Value::Integer(started_at),
            NODE,
            Some(pid as i64),
        );
    }

    fn report(&self) -> serde_json::Value {
        let out = guardian(&["ghosts", "--json", "--config", self.cfg()]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn ghost_lines(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.state.join("audit.jsonl"))
            .into_iter()
            .filter(|l| l["action"] == "ghost")
            .collect()
    }
}

#[test]
fn ghost_whose_process_is_an_ancestor_of_guardian_is_neither_signalled_nor_marked() {
    let r = Reaper::new();
    let go = r.dir.join("go");
    let out = r.dir.join("report.json");
    let rc = r.dir.join("rc");
    // The task's shell leads its group and is the one that runs `guardian ghosts`: the task's
    // process is Guardian's parent.
    let shell = Reaped::spawn(
        Command::new("sh")
            .args([
                "-c",
                r#"while [ ! -e "$GO" ]; do sleep 0.05; done
                   "$GUARDIAN" ghosts --json --config "$CFG" > "$OUT" 2>&1; echo $? > "$RC"
                   exec sleep 300"#,
            ])
            .env("GO", &go)
            .env("GUARDIAN", guardian_bin())
            .env("CFG", r.cfg())
            .env("OUT", &out)
            .env("RC", &rc)
            .current_dir("/")
            .process_group(0),
    );
    r.insert("anc", now_secs(), shell.pid());
    std::thread::sleep(Duration::from_millis(6200)); // past ghost_after
    let before = dump(&Connection::open(&r.db).unwrap());
    std::fs::write(&go, b"").unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || rc.exists()),
        "guardian ghosts never finished"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let json_start = text.find('{').unwrap_or(0);
    let report: serde_json::Value = serde_json::from_str(&text[json_start..])
        .unwrap_or_else(|e| panic!("not a report ({e}): {text}"));
    assert!(
        report["marked"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert!(
        report["killed"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    let ghost = &report["found"][0];
    assert_eq!(ghost["id"], "anc", "{report:#}");
    assert!(
        ghost["signalled"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert!(
        ghost["untouchable"]
            .to_string()
            .contains(&format!("pid {} (an ancestor of Guardian)", shell.pid())),
        "{report:#}"
    );
    let reason = report["skipped"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("never signals") && reason.contains("not marked"),
        "{reason}"
    );
    assert!(alive(shell.pid()), "the task's shell was killed");
    let conn = Connection::open(&r.db).unwrap();
    assert_eq!(task_row(&conn, "anc"), ("running".to_string(), None));
    assert_eq!(dump(&conn), before, "the DB changed");
    assert!(r.ghost_lines().is_empty(), "{:?}", r.ghost_lines());
}

#[test]
fn ghost_with_its_leader_gone_leaves_group_members_older_than_the_task_alone() {
    let r = Reaper::new();
    // An old process group: its leader exits at once, its member sleeps on (orphaned).
    let t0 = now_secs();
    let mut leader = Command::new("sh")
        .args(["-c", "sleep 300 & exit 0"])
        .current_dir("/")
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = leader.id() as i32;
    leader.wait().unwrap();
    assert!(wait_until(Duration::from_secs(5), || group_of(pgid).len() == 1));
    let member = group_of(pgid)[0];
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(self.0.to_string())
                .status();
        }
    }
    let _cleanup = Kill(member);
    // The task started 3 s after the member (beyond start_tolerance = 1 s): the member cannot
    // be its, although it is in the group of the task's recorded pid.
    std::thread::sleep(Duration::from_secs(9));
    r.insert("old-member", t0 + 3, pgid);
    let report = r.report();
    assert!(alive(member), "a process older than the task was killed");
    let ghost = &report["found"][0];
    assert_eq!(ghost["process"], "gone", "{report:#}");
    assert!(
        ghost["signalled"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert_eq!(
        ghost["strangers"],
        serde_json::json!([member]),
        "{report:#}"
    );
    // Nothing of the task runs: it is marked, and the text says what really happened.
    assert_eq!(
        report["marked"],
        serde_json::json!(["old-member"]),
        "{report:#}"
    );
    let (status, error) = task_row(&Connection::open(&r.db).unwrap(), "old-member");
    assert_eq!(status, "failed");
    let error = error.unwrap();
    assert!(error.contains("already exited"), "{error}");
    assert!(
        error.contains("started before the task") && error.contains("left alone"),
        "{error}"
    );
    assert!(!error.contains("killed"), "{error}");
    let lines = r.ghost_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["reason"].as_str().unwrap(), error);
}

#[test]
fn ghost_with_a_setsid_child_is_killed_whole_and_marked_with_what_happened() {
    let r = Reaper::new();
    let started = now_secs();
    let leader = spawn_group_leader("setsid sleep 300 & sleep 300 & wait");
    let procs = || {
        let mut set = std::collections::BTreeSet::from([leader.pid()]);
        for _ in 0..3 {
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                let ppid: i32 = stat[stat.rfind(')').unwrap() + 2..]
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap();
                if set.contains(&ppid) {
                    set.insert(pid);
                }
            }
        }
        set
    };
    assert!(wait_until(Duration::from_secs(5), || procs().len() == 3));
    let all = procs();
    r.insert("whole", started, leader.pid());
    std::thread::sleep(Duration::from_millis(6200));
    let report = r.report();
    assert_eq!(report["marked"], serde_json::json!(["whole"]), "{report:#}");
    assert_eq!(report["killed"], serde_json::json!(["whole"]), "{report:#}");
    for pid in &all {
        assert!(!alive(*pid), "process {pid} of the task survived");
    }
    let (status, error) = task_row(&Connection::open(&r.db).unwrap(), "whole");
    assert_eq!(status, "failed");
    let error = error.unwrap();
    assert!(
        error.contains(&format!(
            "killed its process group {} (3 processes: SIGTERM",
            leader.pid()
        )),
        "{error}"
    );
}
