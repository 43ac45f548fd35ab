//! Tasks end to end with the real `guardian` binary, a real SQLite task DB and real child
//! processes: running-task protection under phase 2, `task done` for every status and every
//! kind of bad PATH, the age/inactivity sweep with usage limits, the ghost reaper (dead, live
//! and reused PIDs), and a locked, missing or corrupt DB.
//! This file holds the shared helpers and the config check; each theme is a file under `tasks/`.

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

#[path = "tasks/done.rs"]
mod done;
#[path = "tasks/ghosts.rs"]
mod ghosts;
#[path = "tasks/hostile.rs"]
mod hostile;
#[path = "tasks/protection.rs"]
mod protection;
#[path = "tasks/reaper.rs"]
mod reaper;
#[path = "tasks/statements.rs"]
mod statements;
#[path = "tasks/sweep.rs"]
mod sweep;
#[path = "tasks/task_done_only.rs"]
mod task_done_only;
