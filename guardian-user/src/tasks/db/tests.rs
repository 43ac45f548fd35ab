//! The task DB on real SQLite files: configured statements that would write are refused at
//! prepare time whatever the config check said, read paths open the file read-only, and
//! hostile rows (any value in any column) decode without a panic.

use super::*;
use crate::tasks::row::tests::any_cell;
use proptest::prelude::*;
use rusqlite::params;
use std::path::Path;

const SCHEMA: &str = "CREATE TABLE tasks (
     id, project, status, started_at, node, pid, error TEXT, priority INTEGER DEFAULT 0);
 CREATE TABLE slots (node TEXT NOT NULL, slot INTEGER NOT NULL, task_id TEXT,
     PRIMARY KEY (node, slot));
 CREATE TABLE turns (session, at);";

fn create(dir: &Path) -> PathBuf {
    let path = dir.join("dispatch.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    conn.execute(
        "INSERT INTO tasks (id, project, status, started_at, node, pid) VALUES
         ('t1', 'alpha', 'running', 1771581600, 'n1', 4242)",
        [],
    )
    .unwrap();
    conn.execute("INSERT INTO slots VALUES ('n1', 0, 't1')", [])
        .unwrap();
    path
}

fn db_with(path: &Path, edit: impl FnOnce(&mut TasksConfig)) -> TaskDb {
    let mut cfg = TasksConfig {
        db: Some(path.to_path_buf()),
        busy_timeout: crate::config::HumanDuration(Duration::from_millis(300)),
        retries: 0,
        ..TasksConfig::default()
    };
    edit(&mut cfg);
    TaskDb::from_config(&cfg).unwrap()
}

#[test]
fn delete_returning_as_running_sql_is_refused_at_prepare_and_the_table_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let path = create(tmp.path());
    let before = std::fs::read(&path).unwrap();
    // What `config check` refuses, built directly: only the authorizer stands in the way.
    let db = db_with(&path, |c| {
        c.running_sql = "DELETE FROM tasks RETURNING id, project, started_at, pid".into()
    });
    let err = db.running("n1", 0, &Cancel::never()).unwrap_err();
    assert!(
        matches!(&err, DbError::Refused { detail, .. } if detail.contains("DELETE from table tasks")),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "the DB file changed");
    let e = db_with(&path, |c| {
        c.running_sql = "DELETE FROM tasks RETURNING id, project, started_at, pid".into()
    })
    .check_statements()
    .unwrap_err();
    assert_eq!(e.key, "tasks.running_sql");
}

#[test]
fn every_kind_of_write_in_a_configured_statement_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = create(tmp.path());
    let before = std::fs::read(&path).unwrap();
    let reads = [
        "UPDATE tasks SET status = 'x' RETURNING id, project, started_at, pid",
        "INSERT INTO tasks (id) VALUES ('evil') RETURNING id, project, started_at, pid",
        "WITH x AS (SELECT 1) DELETE FROM tasks RETURNING id, project, started_at, pid",
        "PRAGMA writable_schema = 1",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "CREATE TABLE evil (id, project, started_at, pid)",
        "DROP TABLE slots",
        "SELECT load_extension('/tmp/evil.so') AS id, 1 AS project, 1 AS started_at, 1 AS pid",
        "SELECT * FROM pragma_table_info('tasks')",
        "BEGIN",
    ];
    for sql in reads {
        let db = db_with(&path, |c| c.running_sql = sql.into());
        let err = db.running("n1", 0, &Cancel::never()).unwrap_err();
        assert!(
            matches!(err, DbError::Refused { .. } | DbError::Query { .. }),
            "{sql}: {err}"
        );
        assert!(db.check_statements().is_err(), "{sql}");
        let db = db_with(&path, |c| {
            c.scratch_areas = vec!["/x".into()];
            c.activity_sql = sql.into()
        });
        assert!(db.activity("n1", 0, &Cancel::never()).is_err(), "{sql}");
    }
    let writes = [
        "DELETE FROM tasks WHERE id = :id",
        "INSERT INTO slots VALUES (:node, 9, :id)",
        "UPDATE tasks SET status = 'failed' WHERE id = :id; DROP TABLE slots",
        "DROP TABLE tasks",
        "REPLACE INTO slots VALUES (:node, 0, :id)",
    ];
    for sql in writes {
        let db = db_with(&path, |c| c.mark_failed_sql = sql.into());
        let params = params_of(&[
            ("id", Cell::Text(b"t1".to_vec())),
            ("node", Cell::Text(b"n1".to_vec())),
        ]);
        let out = db.mark_failed(&params, &Cancel::never());
        assert!(out.is_err(), "{sql}: {out:?}");
        assert!(db.check_statements().is_err(), "{sql}");
        let db = db_with(&path, |c| c.release_slot_sql = sql.into());
        assert!(db.check_statements().is_err(), "{sql}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "the DB file changed");
}

#[test]
fn marking_is_one_update_in_one_transaction_and_the_default_statements_prepare() {
    let tmp = tempfile::tempdir().unwrap();
    let path = create(tmp.path());
    let db = db_with(&path, |c| {
        c.release_slot_sql =
            "UPDATE slots SET task_id = NULL WHERE node = :node AND task_id = :id".into()
    });
    assert!(db.check_statements().unwrap());
    let params = params_of(&[
        ("id", Cell::Text(b"t1".to_vec())),
        ("node", Cell::Text(b"n1".to_vec())),
        ("project", Cell::Text(b"alpha".to_vec())),
        ("error", Cell::Text(b"ghost".to_vec())),
    ]);
    assert_eq!(
        db.mark_failed(&params, &Cancel::never()).unwrap(),
        MarkOutcome::Marked { slot_rows: 1 }
    );
    let conn = Connection::open(&path).unwrap();
    let (status, slot): (String, Option<String>) = conn
        .query_row(
            "SELECT status, (SELECT task_id FROM slots) FROM tasks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((status.as_str(), slot), ("failed", None));
    // Marked already: the UPDATE changes no row and everything is rolled back.
    assert_eq!(
        db.mark_failed(&params, &Cancel::never()).unwrap(),
        MarkOutcome::NotRunning { rows: 0 }
    );
}

#[test]
fn read_paths_open_the_file_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let path = create(tmp.path());
    let db = db_with(&path, |_| {});
    let never = Cancel::never();
    let stop = Stop {
        flag: &never,
        deadline: Instant::now() + Duration::from_secs(1),
    };
    let conn = db
        .open(Access::ReadOnly, Duration::from_millis(100), stop)
        .unwrap();
    assert!(conn.conn.is_readonly(rusqlite::MAIN_DB).unwrap());
    // Even a statement the authorizer let through could not write on it.
    conn.allowed.store(Allowed::Update as u8, Ordering::SeqCst);
    assert!(conn
        .conn
        .execute("UPDATE tasks SET status = 'x'", [])
        .is_err());
    let rw = db
        .open(Access::ReadWrite, Duration::from_millis(100), stop)
        .unwrap();
    assert!(!rw.conn.is_readonly(rusqlite::MAIN_DB).unwrap());
    // Reading never creates a missing file.
    let missing = db_with(&tmp.path().join("nope.db"), |_| {});
    assert!(matches!(
        missing.running("n1", 0, &never),
        Err(DbError::Missing { .. })
    ));
    assert!(!tmp.path().join("nope.db").exists());
}

#[test]
fn a_locked_db_gives_up_within_its_budget_and_at_once_when_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let path = create(tmp.path());
    let locker = Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let db = db_with(&path, |c| {
        c.busy_timeout = crate::config::HumanDuration(Duration::from_millis(400));
        c.retries = 1;
    });
    let err = db.running("n1", 0, &Cancel::never()).unwrap_err();
    assert!(
        matches!(err, DbError::Busy { attempts, .. } if attempts >= 2),
        "{err}"
    );
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let err = db.running("n1", 0, &Cancel::on(flag)).unwrap_err();
    assert!(matches!(err, DbError::Cancelled { .. }), "{err}");
    locker.execute_batch("COMMIT").unwrap();
    assert_eq!(db.running("n1", 0, &Cancel::never()).unwrap().len(), 1);
}

/// Inserts hostile rows (every column any value) into a fresh real DB file.
fn hostile_db(dir: &Path, rows: &[[Cell; 5]], turns: &[[Cell; 2]]) -> PathBuf {
    let path = dir.join("hostile.db");
    let _ = std::fs::remove_file(&path);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    for [id, project, started, node, pid] in rows {
        conn.execute(
            "INSERT INTO tasks (id, project, status, started_at, node, pid) VALUES (?1, ?2, 'running', ?3, ?4, ?5)",
            params![id, project, started, node, pid],
        )
        .unwrap();
    }
    for [name, at] in turns {
        conn.execute("INSERT INTO turns VALUES (?1, ?2)", params![name, at])
            .unwrap();
    }
    path
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any value in any column the decoders read, through a real SQLite file: the queries
    /// answer (nothing panics, nothing is refused), and every decoded field holds its promise.
    #[test]
    fn hostile_rows_in_a_real_db_decode_without_panic(
        rows in proptest::collection::vec(
            [any_cell(), any_cell(), any_cell(), any_cell(), any_cell()], 0..12),
        turns in proptest::collection::vec([any_cell(), any_cell()], 0..12),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let path = hostile_db(tmp.path(), &rows, &turns);
        let db = db_with(&path, |c| {
            c.running_sql = "SELECT id, project, started_at, node, pid FROM tasks WHERE status = 'running'".into();
            c.activity_sql = "SELECT session AS name, at AS last_active FROM turns".into();
            c.naive_times = NaiveTimes::Local;
        });
        let before = std::fs::read(&path).unwrap();
        let tasks = db.running("n1", 0, &Cancel::never()).unwrap();
        prop_assert_eq!(tasks.len(), rows.len());
        for t in &tasks {
            prop_assert!(t.pid.is_none_or(|p| p > 0));
            prop_assert!(t.started_at.is_none_or(|s| (0..=jiff::Timestamp::MAX.as_second()).contains(&s)));
            prop_assert!(t.id.chars().count() < 200 && t.project.chars().count() < 200);
        }
        let activity = db.activity("n1", 0, &Cancel::never()).unwrap();
        prop_assert!(activity.last.len() + activity.unreadable.len() + activity.nameless_rows <= turns.len() + activity.last.len());
        prop_assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}

#[test]
fn a_wal_mode_db_reads_read_only_with_and_without_its_wal_files() {
    let tmp = tempfile::tempdir().unwrap();
    let path = create(tmp.path());
    {
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
    // Last connection closed: no -wal/-shm files left.
    let db = db_with(&path, |_| {});
    assert_eq!(db.running("n1", 0, &Cancel::never()).unwrap().len(), 1);
    // A writer holds the DB open (its -wal and -shm exist) and writes.
    let writer = Connection::open(&path).unwrap();
    writer
        .execute(
            "INSERT INTO tasks (id, project, status, started_at, node, pid) VALUES ('t2', 'beta', 'running', 1, 'n1', NULL)",
            [],
        )
        .unwrap();
    assert_eq!(db.running("n1", 0, &Cancel::never()).unwrap().len(), 2);
}
