//! Tasks end to end with the real `guardian` binary, a real SQLite task DB and real child
//! processes: running-task protection under phase 2, `task done` for every status and every
//! kind of bad PATH, the age/inactivity sweep with usage limits, the ghost reaper (dead, live
//! and reused PIDs), and a locked, missing or corrupt DB.

mod support;

use rusqlite::types::Value;
use rusqlite::{params, Connection};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};
use support::*;

const NODE: &str = "node-a";

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// RFC 3339 text `ago` seconds in the past (`2026-02-20T10:00:00Z`).
fn iso_ago(ago: i64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(ago as u64))
        .to_string()
}

/// SQLite `datetime()` text `ago` seconds in the past (`2026-02-20 10:00:00`, UTC).
fn sqlite_ago(ago: i64) -> String {
    iso_ago(ago)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// A config for `workspaces` (the first is the task area unless `tasks` says otherwise), state
/// under `state`. `pressure`: the foundation's thresholds (20/10/30 %); otherwise thresholds no
/// filesystem can cross, so only the task policies act.
fn write_cfg(path: &Path, state: &Path, workspaces: &[&Path], pressure: bool, tasks: &str) {
    let thresholds = if pressure {
        "cleanup_free = \"20%\"\ncritical_free = \"10%\"\ntarget_free = \"30%\"\n"
    } else {
        "cleanup_free = \"0%\"\ncritical_free = \"0%\"\ntarget_free = \"0%\"\ninodes_cleanup_free = \"0%\"\ninodes_critical_free = \"0%\"\ninodes_target_free = \"0%\"\n"
    };
    let mut text = format!(
        "[daemon]\npoll_interval = \"1s\"\naudit_log = \"{s}/audit.jsonl\"\nstate_dir = \"{s}/state\"\nactive_within = \"1s\"\n\n[thresholds]\n{thresholds}\n",
        s = state.display()
    );
    for ws in workspaces {
        text.push_str(&format!(
            "[[workspaces]]\npath = \"{}\"\nprotect = [\"dispatch-worker\", \"output\", \"task-wrapper.sh\"]\n\n",
            ws.display()
        ));
    }
    text.push_str(
        "[[rules]]\nname = \"regenerable\"\nphase = 1\nnames = [\"node_modules\", \".git\", \"__pycache__\"]\n\n",
    );
    text.push_str(tasks);
    std::fs::write(path, text).unwrap();
}

/// The seeds' `dispatch.db`: a `tasks` table and a `slots` table.
fn create_db(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE tasks (
             id TEXT PRIMARY KEY, project TEXT NOT NULL, status TEXT NOT NULL,
             started_at, node TEXT, pid INTEGER, error TEXT, priority INTEGER DEFAULT 0);
         CREATE TABLE slots (node TEXT NOT NULL, slot INTEGER NOT NULL, task_id TEXT,
             PRIMARY KEY (node, slot));
         CREATE TABLE turns (session TEXT, at TEXT);",
    )
    .unwrap();
    conn
}

fn insert_task(
    conn: &Connection,
    id: &str,
    project: &str,
    status: &str,
    started_at: Value,
    node: &str,
    pid: Option<i64>,
) {
    conn.execute(
        "INSERT INTO tasks (id, project, status, started_at, node, pid, error, priority)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, 3)",
        params![id, project, status, started_at, node, pid],
    )
    .unwrap();
}

/// Every row of every table, by table and rowid, with SQLite's own types.
fn dump(conn: &Connection) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for table in ["tasks", "slots", "turns"] {
        let mut stmt = conn
            .prepare(&format!("SELECT rowid, * FROM {table} ORDER BY rowid"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                (0..n)
                    .map(|i| row.get::<_, Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        for row in rows {
            let row = row.unwrap();
            out.insert(format!("{table}#{:?}", row[0]), row);
        }
    }
    out
}

fn task_row(conn: &Connection, id: &str) -> (String, Option<String>) {
    conn.query_row("SELECT status, error FROM tasks WHERE id = ?1", [id], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

/// A `sleep 300` whose cwd is `/` (so it protects no workspace by itself).
fn sleeper() -> Reaped {
    Reaped::spawn(Command::new("sleep").arg("300").current_dir("/"))
}

fn delete_lines(audit: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    audit
        .iter()
        .filter(|l| l["action"] == "delete" && l["outcome"] == "deleted")
        .collect()
}

fn deleted_names(audit: &[serde_json::Value]) -> Vec<String> {
    delete_lines(audit)
        .iter()
        .map(|l| {
            l["path"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A tmpfs with a dispatch workspace of old projects, a task DB and a config (pressure on).
struct PressureSetup {
    mount: TestMount,
    ws: PathBuf,
    state: PathBuf,
    db: PathBuf,
    config: PathBuf,
}

impl PressureSetup {
    /// Projects of 30 MiB each, least recently active first: each is written a little over a
    /// second after the one before (ctime cannot be back-dated, so creation order is activity
    /// order); the DB file exists with the schema.
    fn new(projects: &[&str], tasks_extra: &str) -> PressureSetup {
        let mount = TestMount::tmpfs(256 * MIB);
        let ws = mount.path("dispatch");
        let state = mount.path("guardian-state");
        let db = mount.path("dispatch.db");
        let config = mount.path("guardian.toml");
        for (i, name) in projects.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(1100));
            }
            write_files(&ws.join(name).join("data"), 6, 5 * MIB);
        }
        drop(create_db(&db));
        // Phase 2 deletes only projects idle longer than active_within (1 s here).
        wait_out_activity();
        write_cfg(
            &config,
            &state,
            &[&ws],
            true,
            &format!(
                "[tasks]\ndb = \"{}\"\nnode = \"{NODE}\"\n{tasks_extra}",
                db.display()
            ),
        );
        PressureSetup {
            mount,
            ws,
            state,
            db,
            config,
        }
    }

    fn cfg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.state.join("audit.jsonl"))
    }
}

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

/// A task area, a plain workspace and a place outside both, no pressure.
struct TaskArea {
    tmp: tempfile::TempDir,
    ws: PathBuf,
    plain: PathBuf,
    outside: PathBuf,
    state: PathBuf,
    db: PathBuf,
    config: PathBuf,
}

impl TaskArea {
    fn new(tasks_extra: &str) -> TaskArea {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let ws = root.join("dispatch");
        let plain = root.join("projects");
        let outside = root.join("outside");
        for d in [&ws, &plain, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        let state = root.join("guardian-state");
        let db = root.join("dispatch.db");
        drop(create_db(&db));
        let config = root.join("guardian.toml");
        let t = TaskArea {
            tmp,
            ws,
            plain,
            outside,
            state,
            db,
            config,
        };
        t.write_config(tasks_extra);
        t
    }

    fn write_config(&self, tasks_extra: &str) {
        write_cfg(
            &self.config,
            &self.state,
            &[&self.ws, &self.plain],
            false,
            &format!(
                "[tasks]\ndb = \"{}\"\nnode = \"{NODE}\"\ntask_areas = [\"{}\"]\n{tasks_extra}",
                self.db.display(),
                self.ws.display()
            ),
        );
    }

    fn cfg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.state.join("audit.jsonl"))
    }

    fn done(&self, dir: &Path, status: &str, task: Option<&str>) -> Output {
        let mut args = vec![
            "task",
            "done",
            "--config",
            self.cfg(),
            "--dir",
            dir.to_str().unwrap(),
            "--status",
            status,
        ];
        if let Some(t) = task {
            args.extend(["--task", t]);
        }
        guardian(&args)
    }

    fn kept(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.state.join("state/kept.json")).unwrap_or_default();
        if text.is_empty() {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["kept"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                Path::new(k["path"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
}

#[test]
fn task_done_applies_the_policy_for_each_status() {
    let t = TaskArea::new("keep_failed_max = \"5MiB\"\n");
    for name in ["alpha", "shared", "beta", "gamma", "delta", "eps"] {
        write_files(&t.ws.join(name), 4, MIB / 2); // 2 MiB each
    }
    {
        let conn = Connection::open(&t.db).unwrap();
        // The wrapper's own task is still `running` when it calls `task done`.
        let now = Value::Integer(now_secs());
        insert_task(
            &conn,
            "t-alpha",
            "alpha",
            "running",
            now.clone(),
            NODE,
            None,
        );
        // `shared` is also used by another running task of the same project.
        insert_task(
            &conn,
            "t-shared-1",
            "shared",
            "running",
            now.clone(),
            NODE,
            None,
        );
        insert_task(&conn, "t-shared-2", "shared", "running", now, NODE, None);
    }

    // done → deleted now, although its own row still says running.
    let out = t.done(&t.ws.join("alpha"), "done", Some("t-alpha"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!t.ws.join("alpha").exists());
    assert!(stdout(&out).contains("deleted"), "{}", stdout(&out));

    // Another running task uses the dir: refused, kept, exit 1 (not a usage error).
    let before = digest(&t.ws.join("shared"));
    let out = t.done(&t.ws.join("shared"), "done", Some("t-shared-1"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(digest(&t.ws.join("shared")), before);
    assert!(stdout(&out).contains("t-shared-2"), "{}", stdout(&out));

    // discarded → deleted now.
    let out = t.done(&t.ws.join("beta"), "discarded", None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!t.ws.join("beta").exists());

    // failed and error → kept for debugging, recorded in Guardian's own registry.
    let out = t.done(&t.ws.join("gamma"), "failed", Some("t-gamma"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("kept"), "{}", stdout(&out));
    let out = t.done(&t.ws.join("delta"), "error", None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(t.ws.join("gamma").exists() && t.ws.join("delta").exists());
    assert_eq!(t.kept(), ["gamma", "delta"]);

    // A third kept dir goes over keep_failed_max (5 MiB): the oldest kept one is dropped.
    let out = t.done(&t.ws.join("eps"), "failed", None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !t.ws.join("gamma").exists(),
        "the oldest kept dir stays over the cap"
    );
    assert!(t.ws.join("delta").exists() && t.ws.join("eps").exists());
    assert_eq!(t.kept(), ["delta", "eps"]);

    // Nothing left to do for a dir that is already gone.
    let out = t.done(&t.ws.join("alpha"), "done", None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("nothing to do"));

    let audit = t.audit();
    let by_rule = |rule: &str| -> Vec<String> {
        audit
            .iter()
            .filter(|l| l["rule"] == rule)
            .map(|l| {
                format!(
                    "{} {}",
                    l["path"].as_str().unwrap().rsplit('/').next().unwrap(),
                    l["outcome"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(by_rule("task_done"), ["alpha deleted", "shared refused"]);
    assert_eq!(by_rule("task_discarded"), ["beta deleted"]);
    assert_eq!(
        by_rule("keep_failed_for"),
        ["gamma kept", "delta kept", "eps kept"]
    );
    assert_eq!(by_rule("keep_failed_max"), ["gamma deleted"]);
    assert!(audit.iter().all(|l| l["phase"] == 0));

    // The daemon's sweep drops kept dirs once keep_failed_for has passed; the task DB was only
    // read (its rows are as they were).
    let db_before = dump(&Connection::open(&t.db).unwrap());
    t.write_config("keep_failed_max = \"5MiB\"\nkeep_failed_for = \"1s\"\n");
    std::thread::sleep(Duration::from_millis(2100));
    let out = guardian(&["run", "--once", "--config", t.cfg()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!t.ws.join("delta").exists() && !t.ws.join("eps").exists());
    assert!(
        t.ws.join("shared").exists(),
        "a running task's dir was swept"
    );
    assert!(t.kept().is_empty());
    let audit = t.audit();
    let expired: Vec<_> = audit
        .iter()
        .filter(|l| l["rule"] == "keep_failed_for" && l["outcome"] == "deleted")
        .collect();
    assert_eq!(expired.len(), 2, "{audit:?}");
    assert_eq!(dump(&Connection::open(&t.db).unwrap()), db_before);
}

#[test]
fn task_done_refuses_paths_outside_the_task_area_dotdot_and_symlinks_deleting_nothing() {
    let t = TaskArea::new("");
    write_files(&t.ws.join("alpha/sub"), 2, 4096);
    write_files(&t.outside.join("victim"), 2, 4096);
    write_files(&t.plain.join("proj"), 2, 4096);
    write_files(&t.ws.join("output"), 1, 4096);
    std::os::unix::fs::symlink(t.outside.join("victim"), t.ws.join("link-out")).unwrap();
    std::os::unix::fs::symlink(t.ws.join("alpha"), t.ws.join("link-in")).unwrap();
    std::os::unix::fs::symlink("../outside", t.ws.join("link-rel")).unwrap();
    let root = t.tmp.path().to_path_buf();
    let keep_out = |p: &Path| !p.starts_with(&t.state);
    let snapshot = || -> BTreeMap<PathBuf, String> {
        digest(&root)
            .into_iter()
            .filter(|(p, _)| keep_out(&root.join(p)))
            .collect()
    };
    let before = snapshot();
    let ws = t.ws.display().to_string();
    let bad: Vec<(String, &str)> = vec![
        (
            t.outside.join("victim").display().to_string(),
            "outside every task area",
        ),
        (
            t.plain.join("proj").display().to_string(),
            "outside every task area",
        ),
        (format!("{ws}/../outside/victim"), "`..`"),
        (format!("{ws}/alpha/.."), "`..`"),
        (format!("{ws}/alpha/../../outside"), "`..`"),
        (format!("{ws}/./alpha"), "`..`"),
        (format!("{ws}/link-out"), "symlink"),
        (format!("{ws}/link-in"), "symlink"),
        (format!("{ws}/link-rel"), "symlink"),
        (format!("{ws}/link-out/victim"), "direct child"),
        (format!("{ws}/alpha/sub"), "direct child"),
        (ws.clone(), "task area itself"),
        (format!("{ws}/output"), "protect list"),
        ("dispatch/alpha".to_string(), "absolute"),
        ("/".to_string(), "outside every task area"),
    ];
    for (path, why) in &bad {
        for status in ["done", "discarded"] {
            let out = t.done(Path::new(path), status, None);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{path} {status}: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            assert!(err.contains(why), "{path}: expected `{why}` in: {err}");
            assert!(err.contains("nothing was deleted"), "{err}");
        }
    }
    assert_eq!(snapshot(), before, "a refused PATH changed something");
    assert!(
        t.audit().iter().all(|l| l["action"] != "delete"),
        "a refused PATH reached the executor"
    );
    // An unknown status is a usage error too.
    let out = t.done(&t.ws.join("alpha"), "finished", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(t.ws.join("alpha/sub").exists());
}

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

/// A process started for a ghost test, killed and reaped on drop.
fn spawn_group_leader(script: &str) -> Reaped {
    Reaped::spawn(
        Command::new("sh")
            .args(["-c", script])
            .current_dir("/")
            .stdout(Stdio::null())
            .process_group(0),
    )
}

fn group_of(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s[s.rfind(')')? + 2..]
                        .split_whitespace()
                        .nth(2)?
                        .parse::<i32>()
                        .ok()
                })
                == Some(pgid)
        })
        .collect()
}

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

#[test]
fn bad_tasks_config_names_the_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let state = tmp.path().join("state");
    let config = tmp.path().join("bad.toml");
    for (tasks, key) in [
        (
            "[tasks]\ntask_areas = [\"/not/a/workspace\"]\n",
            "tasks.task_areas",
        ),
        (
            "[tasks]\nmark_failed_sql = \"UPDATE tasks SET status = 'failed'\"\n",
            "tasks.mark_failed_sql",
        ),
        (
            "[tasks]\nrunning_sql = \"SELECT * FROM tasks WHERE node = :hostname\"\n",
            "tasks.running_sql",
        ),
        ("[tasks.ghosts]\nghost_afterr = \"2h\"\n", "ghost_afterr"),
        ("[tasks]\nmax_age = \"soon\"\n", "tasks.max_age"),
    ] {
        write_cfg(&config, &state, &[&ws], false, tasks);
        let out = guardian(&["config", "check", config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{tasks}");
        let err = stderr(&out);
        assert!(err.contains(key), "{tasks}: {err}");
        assert!(err.contains(" line "), "{tasks}: {err}");
    }
    assert!(!state.exists());
}

#[path = "tasks/hostile.rs"]
mod hostile;
#[path = "tasks/reaper.rs"]
mod reaper;
#[path = "tasks/statements.rs"]
mod statements;
#[path = "tasks/task_done_only.rs"]
mod task_done_only;
