//! The task DB: the dispatcher's SQLite file, read and updated through configurable SQL with
//! named parameters. Guardian never creates the file, never changes its schema and never deletes
//! a row; every call waits for locks (`busy_timeout`) and is retried while the DB stays busy.

use crate::config::{NaiveTimes, TasksConfig};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, Statement};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the task DB could not answer. While it cannot, task state is unknown.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    #[error("task DB {path} does not exist (check tasks.db)")]
    Missing { path: PathBuf },
    #[error(
        "task DB {path} stayed locked by another connection for {waited_ms} ms over {attempts} attempts"
    )]
    Busy {
        path: PathBuf,
        waited_ms: u128,
        attempts: u32,
    },
    #[error("task DB {path} is not a readable SQLite database ({detail})")]
    Corrupt { path: PathBuf, detail: String },
    #[error("task DB {path}: {what} failed: {detail}")]
    Query {
        path: PathBuf,
        what: String,
        detail: String,
    },
}

/// One running task, as the running-tasks query returned it.
#[derive(Clone, Debug, Serialize)]
pub struct RunningTask {
    /// The `id` column as text.
    pub id: String,
    /// The `id` value exactly as stored, bound back as `:id`.
    #[serde(skip)]
    pub id_value: Value,
    pub project: String,
    /// The `node` column when the query returns one.
    pub node: Option<String>,
    /// `started_at` as written in the DB.
    pub started_raw: String,
    /// `started_at` in seconds since the epoch, when it could be read.
    pub started_at: Option<i64>,
    pub pid: Option<i64>,
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
pub type Params = HashMap<&'static str, Value>;

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

    /// Opens the existing file read-write without creating it; waits `busy_timeout` on locks.
    fn open(&self) -> Result<Connection, DbError> {
        if !self.path.exists() {
            return Err(DbError::Missing {
                path: self.path.clone(),
            });
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.classify(e, "opening"))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| self.classify(e, "setting the busy timeout"))?;
        Ok(conn)
    }

    /// Runs `op` on a fresh connection, again while the DB is busy or locked.
    fn with_retry<T>(
        &self,
        what: &str,
        mut op: impl FnMut(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .open()
                .and_then(|mut conn| op(&mut conn).map_err(|e| self.classify(e, what)));
            match result {
                Err(DbError::Busy { .. }) if attempt <= self.retries => {
                    tracing::warn!(db = %self.path.display(), attempt, "task DB busy; retrying");
                    std::thread::sleep(Duration::from_millis(100 * attempt as u64));
                }
                Err(DbError::Busy { .. }) => {
                    return Err(DbError::Busy {
                        path: self.path.clone(),
                        waited_ms: started.elapsed().as_millis(),
                        attempts: attempt,
                    })
                }
                other => return other,
            }
        }
    }

    fn classify(&self, e: rusqlite::Error, what: &str) -> DbError {
        use rusqlite::ErrorCode;
        let path = self.path.clone();
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

    /// The running tasks on `node` (`running_sql`).
    pub fn running(&self, node: &str, now: i64) -> Result<Vec<RunningTask>, DbError> {
        let params = params_of(&[
            ("node", Value::Text(node.into())),
            ("now", Value::Integer(now)),
        ]);
        let naive = self.naive;
        self.with_retry("the running-tasks query (tasks.running_sql)", |conn| {
            let mut stmt = conn.prepare(&self.running_sql)?;
            bind(&mut stmt, &params)?;
            let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
            for needed in ["id", "project", "started_at", "pid"] {
                if !names.iter().any(|n| n == needed) {
                    return Err(rusqlite::Error::InvalidColumnName(format!(
                        "{needed} (tasks.running_sql must return columns id, project, started_at, pid; it returns {})",
                        names.join(", ")
                    )));
                }
            }
            let col = |name: &str| names.iter().position(|n| n == name);
            let (id_i, project_i, started_i, pid_i) = (
                col("id").unwrap_or(0),
                col("project").unwrap_or(0),
                col("started_at").unwrap_or(0),
                col("pid").unwrap_or(0),
            );
            let node_i = col("node");
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let id_value: Value = row.get(id_i)?;
                let started: Value = row.get(started_i)?;
                let pid: Value = row.get(pid_i)?;
                let node: Option<Value> = node_i.map(|i| row.get(i)).transpose()?;
                out.push(RunningTask {
                    id: value_text(&id_value),
                    id_value,
                    project: value_text(&row.get::<_, Value>(project_i)?),
                    node: node.filter(|v| *v != Value::Null).map(|v| value_text(&v)),
                    started_raw: value_text(&started),
                    started_at: value_time(&started, naive),
                    pid: match pid {
                        Value::Integer(n) => Some(n),
                        Value::Real(f) if f.fract() == 0.0 => Some(f as i64),
                        Value::Text(t) => t.trim().parse().ok(),
                        _ => None,
                    },
                });
            }
            Ok(out)
        })
    }

    /// Last activity per scratch session name (`activity_sql`: columns `name`, `last_active`).
    pub fn activity(&self, node: &str, now: i64) -> Result<HashMap<String, i64>, DbError> {
        let params = params_of(&[
            ("node", Value::Text(node.into())),
            ("now", Value::Integer(now)),
        ]);
        let naive = self.naive;
        self.with_retry("the activity query (tasks.activity_sql)", |conn| {
            let mut stmt = conn.prepare(&self.activity_sql)?;
            bind(&mut stmt, &params)?;
            let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
            let name_i = names.iter().position(|n| n == "name");
            let active_i = names.iter().position(|n| n == "last_active");
            let (Some(name_i), Some(active_i)) = (name_i, active_i) else {
                return Err(rusqlite::Error::InvalidColumnName(format!(
                    "name/last_active (tasks.activity_sql returns {})",
                    names.join(", ")
                )));
            };
            let mut rows = stmt.raw_query();
            let mut out = HashMap::new();
            while let Some(row) = rows.next()? {
                let name = value_text(&row.get::<_, Value>(name_i)?);
                if let Some(t) = value_time(&row.get::<_, Value>(active_i)?, naive) {
                    let e = out.entry(name).or_insert(t);
                    *e = (*e).max(t);
                }
            }
            Ok(out)
        })
    }

    /// In one `IMMEDIATE` transaction: `mark_failed_sql` (which must change exactly one row,
    /// else everything is rolled back) and `release_slot_sql`.
    pub fn mark_failed(&self, params: &Params) -> Result<MarkOutcome, DbError> {
        self.with_retry("marking a ghost failed (tasks.mark_failed_sql)", |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let rows = {
                let mut stmt = tx.prepare(&self.mark_failed_sql)?;
                bind(&mut stmt, params)?;
                stmt.raw_execute()?
            };
            if rows != 1 {
                tx.rollback()?;
                return Ok(MarkOutcome::NotRunning { rows });
            }
            let slot_rows = if self.release_slot_sql.trim().is_empty() {
                0
            } else {
                let mut stmt = tx.prepare(&self.release_slot_sql)?;
                bind(&mut stmt, params)?;
                stmt.raw_execute()?
            };
            tx.commit()?;
            Ok(MarkOutcome::Marked { slot_rows })
        })
    }
}

/// A parameter map from pairs.
pub fn params_of(pairs: &[(&'static str, Value)]) -> Params {
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

/// A value as text (integers and reals as written, NULL as empty).
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Integer(n) => n.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// A timestamp column: unix seconds (or milliseconds) as a number, or ISO-8601 / SQLite text.
pub fn value_time(v: &Value, naive: NaiveTimes) -> Option<i64> {
    match v {
        Value::Integer(n) => super::clock::from_number(*n as f64),
        Value::Real(f) => super::clock::from_number(*f),
        Value::Text(t) => super::clock::parse_timestamp(t, naive),
        _ => None,
    }
}
