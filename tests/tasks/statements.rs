//! The task DB is read, not rewritten: configured statements that would write are refused by
//! `config check` (lexically, and by preparing them against the DB with the authorizer), and no
//! read-only command changes the DB.

use super::*;

#[test]
fn delete_returning_running_sql_is_refused_by_config_check_and_changes_nothing() {
    let t = TaskArea::new(
        "running_sql = \"DELETE FROM tasks RETURNING id, project, started_at, pid, node\"\n",
    );
    write_files(&t.ws.join("alpha"), 1, 4096);
    {
        let conn = Connection::open(&t.db).unwrap();
        insert_task(
            &conn,
            "t1",
            "alpha",
            "running",
            Value::Integer(now_secs()),
            NODE,
            None,
        );
    }
    let before = std::fs::read(&t.db).unwrap();
    let out = guardian(&["config", "check", t.cfg()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("tasks.running_sql"), "{err}");
    assert!(err.contains(" line "), "{err}");
    assert!(err.contains("DELETE"), "{err}");
    // `guardian sessions`, documented as deleting nothing, refuses the config instead of
    // emptying the table.
    for args in [
        &["sessions", "--config", t.cfg()][..],
        &["run", "--once", "--config", t.cfg()],
        &["plan", "--config", t.cfg()],
    ] {
        let out = guardian(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(std::fs::read(&t.db).unwrap(), before, "the task DB changed");
}

#[test]
fn config_check_prepares_every_statement_against_the_db() {
    let t = TaskArea::new("");
    let out = guardian(&["config", "check", t.cfg()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("prepare against"), "{}", stdout(&out));
    let before = std::fs::read(&t.db).unwrap();
    for (extra, key, says) in [
        (
            "running_sql = \"SELECT id, project, started_at, pid FROM no_such_table\"\n",
            "tasks.running_sql",
            "no_such_table",
        ),
        (
            "running_sql = \"SELECT id, project, started_at FROM tasks\"\n",
            "tasks.running_sql",
            "`pid`",
        ),
        (
            "release_slot_sql = \"UPDATE no_slots SET n = 0 WHERE node = :node\"\n",
            "tasks.release_slot_sql",
            "no_slots",
        ),
    ] {
        t.write_config(extra);
        let out = guardian(&["config", "check", t.cfg()]);
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(key) && err.contains(says), "{extra}: {err}");
    }
    assert_eq!(std::fs::read(&t.db).unwrap(), before, "the task DB changed");
    // Without the DB file the statements are checked as text only, and nothing is created.
    std::fs::remove_file(&t.db).unwrap();
    t.write_config("");
    let out = guardian(&["config", "check", t.cfg()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("does not exist"), "{}", stdout(&out));
    assert!(!t.db.exists());
}
