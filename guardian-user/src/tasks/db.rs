//! The task DB: the dispatcher's SQLite file, read and updated through configurable SQL with
//! named parameters. Guardian never creates the file, never changes its schema and never deletes
//! a row: every path that only reads opens it read-only; only marking a ghost opens it
//! read-write. A SQLite authorizer enforces at prepare time what each statement may do (the
//! read queries only read, the write statements only `UPDATE`), whatever the config says.
//! Lock waits are bounded (`busy_timeout` × (1 + `retries`)), cut into short slices so a
//! cancelled caller stops within a fraction of a second.

mod authorize;

use super::row::Cell;
pub use super::row::{decode_activity, decode_running, Activity, RunningTask};
use super::Cancel;
use crate::config::{NaiveTimes, TasksConfig};
use crate::textpath;
use authorize::{authorize, refusal, refused, Allowed};
use rusqlite::hooks::{AuthContext, Authorization};
use rusqlite::{Connection, OpenFlags, Statement};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest single wait SQLite does for a lock before Guardian looks at its deadline and cancel
/// flag again.
const LOCK_SLICE: Duration = Duration::from_millis(200);
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A statement still running this long after the lock deadline is interrupted.
const QUERY_GRACE: Duration = Duration::from_secs(10);
/// Longest total lock wait of one call, whatever the config multiplies to.
const MAX_BUDGET: Duration = Duration::from_secs(600);

/// Why the task DB could not answer. While it cannot, task state is unknown.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    #[error("task DB {} does not exist (check tasks.db)", textpath::shown(path))]
    Missing { path: PathBuf },
    #[error(
        "task DB {} stayed locked by another connection for {waited_ms} ms over {attempts} attempts",
        textpath::shown(path)
    )]
    Busy {
        path: PathBuf,
        waited_ms: u128,
        attempts: u32,
    },
    #[error(
        "task DB {} is not a readable SQLite database ({detail})",
        textpath::shown(path)
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("task DB {}: {what} was refused: {detail}", textpath::shown(path))]
    Refused {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error(
        "task DB {}: {what} was cancelled (Guardian is stopping)",
        textpath::shown(path)
    )]
    Cancelled { path: PathBuf, what: String },
    #[error("task DB {}: {what} failed: {detail}", textpath::shown(path))]
    Query {
        path: PathBuf,
        what: String,
        detail: String,
    },
}

/// What marking one ghost did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkOutcome {
    /// Marked failed; `slot_rows` rows changed by `release_slot_sql`.
    Marked { slot_rows: usize },
    /// The row was no longer a running task of this node (finished meanwhile): nothing changed.
    NotRunning { rows: usize },
}

/// Parameter values for one statement.
pub type Params = HashMap<&'static str, Cell>;

/// How a connection is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `SQLITE_OPEN_READ_ONLY`: every path that only reads.
    ReadOnly,
    /// Read-write: only marking a ghost.
    ReadWrite,
}

/// One open connection with its authorizer.
struct Conn {
    conn: Connection,
    allowed: Arc<AtomicU8>,
    denied: Arc<Mutex<Option<String>>>,
}

impl Conn {
    /// Prepares `sql` allowing only `allowed`; a refusal names what the statement tried.
    fn prepare(&self, sql: &str, allowed: Allowed) -> rusqlite::Result<Statement<'_>> {
        self.allowed.store(allowed as u8, Ordering::SeqCst);
        *self.denied.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let result = self.conn.prepare(sql);
        self.allowed
            .store(Allowed::Transaction as u8, Ordering::SeqCst);
        result.map_err(|e| match self.take_denied() {
            Some(what) => refused(what),
            None => e,
        })
    }

    fn take_denied(&self) -> Option<String> {
        self.denied.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Access to the task DB as configured.
#[derive(Clone, Debug)]
pub struct TaskDb {
    path: PathBuf,
    busy_timeout: Duration,
    retries: u32,
    naive: NaiveTimes,
    running_sql: String,
    mark_failed_sql: String,
    release_slot_sql: String,
    activity_sql: String,
}

impl TaskDb {
    /// The configured DB, or `None` when `tasks.db` is not set.
    pub fn from_config(cfg: &TasksConfig) -> Option<TaskDb> {
        Some(TaskDb {
            path: cfg.db.clone()?,
            busy_timeout: cfg.busy_timeout.0,
            retries: cfg.retries,
            naive: cfg.naive_times,
            running_sql: cfg.running_sql.clone(),
            mark_failed_sql: cfg.mark_failed_sql.clone(),
            release_slot_sql: cfg.release_slot_sql.clone(),
            activity_sql: cfg.activity_sql.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether scratch activity comes from the DB.
    pub fn has_activity_sql(&self) -> bool {
        !self.activity_sql.trim().is_empty()
    }

    /// The longest one call waits for locks: `busy_timeout` × (1 + `retries`).
    pub fn budget(&self) -> Duration {
        self.busy_timeout
            .saturating_mul(self.retries.saturating_add(1))
            .min(MAX_BUDGET)
    }

    /// Opens the existing file without creating it, with the authorizer installed.
    fn open(&self, access: Access, lock_wait: Duration, stop: Stop<'_>) -> Result<Conn, DbError> {
        if !self.path.exists() {
            return Err(DbError::Missing {
                path: self.path.clone(),
            });
        }
        let mode = match access {
            Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
            Access::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE,
        };
        let conn = Connection::open_with_flags(&self.path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| self.classify(e, "opening"))?;
        conn.busy_timeout(lock_wait)
            .map_err(|e| self.classify(e, "setting the busy timeout"))?;
        let allowed = Arc::new(AtomicU8::new(Allowed::Transaction as u8));
        let denied = Arc::new(Mutex::new(None));
        let (a, d) = (allowed.clone(), denied.clone());
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let mode = match a.load(Ordering::SeqCst) {
                1 => Allowed::Read,
                2 => Allowed::Update,
                _ => Allowed::Transaction,
            };
            match authorize(mode, &ctx) {
                Ok(()) => Authorization::Allow,
                Err(what) => {
                    let mut slot = d.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(what);
                    Authorization::Deny
                }
            }
        }));
        // A statement that runs on past the deadline (or while Guardian stops) is interrupted.
        let cancel = stop.flag.clone();
        let hard = stop.deadline + QUERY_GRACE;
        conn.progress_handler(
            10_000,
            Some(move || cancel.is_set() || Instant::now() > hard),
        );
        Ok(Conn {
            conn,
            allowed,
            denied,
        })
    }

    /// Runs `op` on a fresh connection, again while the DB is busy or locked, until the budget
    /// is spent or `cancel` is set; pauses grow between attempts.
    fn with_retry<T>(
        &self,
        what: &str,
        access: Access,
        cancel: &Cancel,
        mut op: impl FnMut(&mut Conn) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let started = Instant::now();
        let deadline = started + self.budget();
        let stop = Stop {
            flag: cancel,
            deadline,
        };
        let mut attempt: u32 = 0;
        let mut pause = Duration::from_millis(50);
        loop {
            attempt = attempt.saturating_add(1);
            if stop.cancelled() {
                return Err(DbError::Cancelled {
                    path: self.path.clone(),
                    what: what.to_string(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let result = self
                .open(access, left.min(LOCK_SLICE), stop)
                .and_then(|mut conn| op(&mut conn).map_err(|e| self.classify(e, what)));
            match result {
                Err(DbError::Busy { .. }) if Instant::now() < deadline && !stop.cancelled() => {
                    crate::warn_quiet!(
                        format!("task-db-busy:{}", textpath::escape(&self.path)),
                        db = %textpath::shown(&self.path),
                        attempt,
                        "task DB busy; retrying"
                    );
                    let left = deadline.saturating_duration_since(Instant::now());
                    std::thread::sleep(pause.min(left));
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                Err(DbError::Busy { .. }) => {
                    return Err(DbError::Busy {
                        path: self.path.clone(),
                        waited_ms: started.elapsed().as_millis(),
                        attempts: attempt,
                    })
                }
                Err(DbError::Query { .. }) if stop.cancelled() => {
                    return Err(DbError::Cancelled {
                        path: self.path.clone(),
                        what: what.to_string(),
                    })
                }
                other => return other,
            }
        }
    }

    fn classify(&self, e: rusqlite::Error, what: &str) -> DbError {
        use rusqlite::ErrorCode;
        let path = self.path.clone();
        if let Some(r) = refusal(&e) {
            return DbError::Refused {
                path,
                what: what.to_string(),
                detail: format!("the statement {}", r.0),
            };
        }
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DbError::Busy {
                path,
                waited_ms: 0,
                attempts: 0,
            },
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => DbError::Corrupt {
                path,
                detail: e.to_string(),
            },
            _ => DbError::Query {
                path,
                what: what.to_string(),
                detail: e.to_string(),
            },
        }
    }

    /// The running tasks on `node` (`running_sql`), read-only.
    pub fn running(
        &self,
        node: &str,
        now: i64,
        cancel: &Cancel,
    ) -> Result<Vec<RunningTask>, DbError> {
        let params = params_of(&[
            ("node", Cell::Text(node.as_bytes().to_vec())),
            ("now", Cell::Integer(now)),
        ]);
        let naive = self.naive;
        self.with_retry(
            "the running-tasks query (tasks.running_sql)",
            Access::ReadOnly,
            cancel,
            |conn| {
                let mut stmt = prepare_read(conn, &self.running_sql)?;
                bind(&mut stmt, &params)?;
                let [id_i, project_i, started_i, pid_i] = columns(
                    &stmt,
                    ["id", "project", "started_at", "pid"],
                    "tasks.running_sql",
                )?;
                let node_i = stmt.column_index("node").ok();
                let mut rows = stmt.raw_query();
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let cell = |i: usize| row.get_ref(i).map(Cell::from);
                    out.push(decode_running(
                        cell(id_i)?,
                        cell(project_i)?,
                        cell(started_i)?,
                        cell(pid_i)?,
                        node_i.map(cell).transpose()?,
                        naive,
                    ));
                }
                Ok(out)
            },
        )
    }

    /// Last activity per scratch session name (`activity_sql`: columns `name`, `last_active`),
    /// read-only.
    pub fn activity(&self, node: &str, now: i64, cancel: &Cancel) -> Result<Activity, DbError> {
        let params = params_of(&[
            ("node", Cell::Text(node.as_bytes().to_vec())),
            ("now", Cell::Integer(now)),
        ]);
        let naive = self.naive;
        self.with_retry(
            "the activity query (tasks.activity_sql)",
            Access::ReadOnly,
            cancel,
            |conn| {
                let mut stmt = prepare_read(conn, &self.activity_sql)?;
                bind(&mut stmt, &params)?;
                let [name_i, active_i] =
                    columns(&stmt, ["name", "last_active"], "tasks.activity_sql")?;
                let mut rows = stmt.raw_query();
                let mut out = Activity::default();
                while let Some(row) = rows.next()? {
                    let name = Cell::from(row.get_ref(name_i)?);
                    let active = Cell::from(row.get_ref(active_i)?);
                    decode_activity(&name, &active, naive, &mut out);
                }
                Ok(out)
            },
        )
    }

    /// In one `IMMEDIATE` transaction on a read-write connection: `mark_failed_sql` (which must
    /// change exactly one row, else everything is rolled back) and `release_slot_sql`.
    pub fn mark_failed(&self, params: &Params, cancel: &Cancel) -> Result<MarkOutcome, DbError> {
        self.with_retry(
            "marking a ghost failed (tasks.mark_failed_sql)",
            Access::ReadWrite,
            cancel,
            |conn| {
                // The write lock is taken now, not at the first write.
                conn.conn.execute_batch("BEGIN IMMEDIATE")?;
                let result = (|| {
                    let rows = {
                        let mut stmt = conn.prepare(&self.mark_failed_sql, Allowed::Update)?;
                        bind(&mut stmt, params)?;
                        stmt.raw_execute()?
                    };
                    if rows != 1 {
                        return Ok(MarkOutcome::NotRunning { rows });
                    }
                    let slot_rows = if self.release_slot_sql.trim().is_empty() {
                        0
                    } else {
                        let mut stmt = conn.prepare(&self.release_slot_sql, Allowed::Update)?;
                        bind(&mut stmt, params)?;
                        stmt.raw_execute()?
                    };
                    Ok(MarkOutcome::Marked { slot_rows })
                })();
                match result {
                    Ok(MarkOutcome::Marked { slot_rows }) => {
                        conn.conn.execute_batch("COMMIT")?;
                        Ok(MarkOutcome::Marked { slot_rows })
                    }
                    other => {
                        let _ = conn.conn.execute_batch("ROLLBACK");
                        other
                    }
                }
            },
        )
    }

    /// Prepares every configured statement against the DB with the authorizer, as
    /// `guardian config check` does: `Ok(false)` when the DB file does not exist (nothing to
    /// check against), an error naming the key otherwise.
    pub fn check_statements(&self) -> Result<bool, StatementError> {
        if !self.path.exists() {
            return Ok(false);
        }
        let fail = |key: &str, message: String| StatementError {
            key: format!("tasks.{key}"),
            message,
        };
        let never = Cancel::never();
        let stop = Stop {
            flag: &never,
            deadline: Instant::now() + self.budget(),
        };
        let conn = self
            .open(Access::ReadOnly, self.budget().min(LOCK_SLICE * 10), stop)
            .map_err(|e| fail("db", e.to_string()))?;
        let reads: [(&str, &str, &[&str]); 2] = [
            (
                "running_sql",
                &self.running_sql,
                &["id", "project", "started_at", "pid"],
            ),
            ("activity_sql", &self.activity_sql, &["name", "last_active"]),
        ];
        for (key, sql, needed) in reads {
            if sql.trim().is_empty() {
                continue;
            }
            let stmt = prepare_read(&conn, sql).map_err(|e| fail(key, prepare_message(e)))?;
            for col in needed {
                if stmt.column_index(col).is_err() {
                    return Err(fail(
                        key,
                        format!(
                            "returns no column `{col}` (it must return {})",
                            needed.join(", ")
                        ),
                    ));
                }
            }
        }
        for (key, sql) in [
            ("mark_failed_sql", &self.mark_failed_sql),
            ("release_slot_sql", &self.release_slot_sql),
        ] {
            if sql.trim().is_empty() {
                continue;
            }
            conn.prepare(sql, Allowed::Update)
                .map_err(|e| fail(key, prepare_message(e)))?;
        }
        Ok(true)
    }
}

/// A configured statement that does not prepare against the DB.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {message}")]
pub struct StatementError {
    /// The config key, e.g. `tasks.running_sql`.
    pub key: String,
    pub message: String,
}

fn prepare_message(e: rusqlite::Error) -> String {
    match refusal(&e) {
        Some(r) => r.to_string(),
        None => format!("does not prepare against the task DB: {e}"),
    }
}

/// When a call gives up: its cancel flag and its lock deadline.
#[derive(Clone, Copy)]
struct Stop<'a> {
    flag: &'a Cancel,
    deadline: Instant,
}

impl Stop<'_> {
    fn cancelled(&self) -> bool {
        self.flag.is_set()
    }
}

/// Prepares a read query: the authorizer allows only reading, and SQLite must call the
/// statement read-only (`sqlite3_stmt_readonly`).
fn prepare_read<'c>(conn: &'c Conn, sql: &str) -> rusqlite::Result<Statement<'c>> {
    let stmt = conn.prepare(sql, Allowed::Read)?;
    if !stmt.readonly() {
        return Err(refused("writes (SQLite does not call it read-only)".into()));
    }
    Ok(stmt)
}

/// The indices of the named columns (case-insensitive, as SQLite names them).
fn columns<const N: usize>(
    stmt: &Statement<'_>,
    names: [&str; N],
    key: &str,
) -> rusqlite::Result<[usize; N]> {
    let mut out = [0; N];
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = stmt.column_index(name).map_err(|_| {
            rusqlite::Error::InvalidColumnName(format!(
                "{name} ({key} must return columns {})",
                names.join(", ")
            ))
        })?;
    }
    Ok(out)
}

/// A parameter map from pairs.
pub fn params_of(pairs: &[(&'static str, Cell)]) -> Params {
    pairs.iter().cloned().collect()
}

/// Binds every named parameter the statement uses from `params` (names without the prefix).
fn bind(stmt: &mut Statement<'_>, params: &Params) -> rusqlite::Result<()> {
    for i in 1..=stmt.parameter_count() {
        let Some(full) = stmt.parameter_name(i) else {
            return Err(rusqlite::Error::InvalidParameterName(
                "positional `?` parameter: use named parameters".into(),
            ));
        };
        let name = full.trim_start_matches([':', '@', '$']);
        let value = params
            .get(name)
            .ok_or_else(|| rusqlite::Error::InvalidParameterName(full.to_string()))?;
        stmt.raw_bind_parameter(i, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
