//! The task DB reader thread: reads the running tasks of this node in the background (every
//! few seconds, and when asked), with the DB's bounded retries, and keeps the latest answer.
//! Callers never wait on the DB: they take the latest snapshot with its age, or ask for a fresh
//! one and wait at most as long as they say.
//!
//! Invariants: no caller blocks longer than the wait it passes; the thread stops within a
//! bounded time once the watch is dropped (DB calls check the stop flag between lock slices
//! and inside statements).

use super::clock::now_secs;
use super::db::{RunningTask, TaskDb};
use super::Cancel;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The snapshot is re-read this often without being asked.
pub const REFRESH: Duration = Duration::from_secs(5);
/// How long dropping the watch waits for the thread to end before leaving it behind.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// One answer of the task DB: the running tasks, or why task state is unknown.
#[derive(Clone, Debug)]
pub struct Reading {
    /// When the read that produced it started.
    pub started: Instant,
    pub result: Result<Arc<Vec<RunningTask>>, String>,
}

struct State {
    latest: Option<Reading>,
    /// Requests made (a read must start after request N to answer it).
    wanted: u64,
    /// The newest request answered.
    served: u64,
    finished: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The background reader of one task DB.
pub struct DbWatch {
    started: Instant,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DbWatch {
    /// Starts the reader thread; it reads at once. `cancel` (e.g. the daemon's shutdown flag)
    /// stops it too.
    pub fn start(db: TaskDb, node: String, cancel: &Cancel) -> DbWatch {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                latest: None,
                wanted: 0,
                served: 0,
                finished: false,
            }),
            changed: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let cancel = cancel.with(stop.clone());
        let inner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("task-db".into())
            .spawn(move || run(&db, &node, &inner, &cancel))
            .map_err(|e| tracing::warn!(error = %e, "cannot start the task DB reader"))
            .ok();
        if thread.is_none() {
            let mut st = shared.lock();
            st.latest = Some(Reading {
                started: Instant::now(),
                result: Err("the task DB reader thread could not be started".into()),
            });
            st.finished = true;
        }
        DbWatch {
            started: Instant::now(),
            shared,
            stop,
            thread,
        }
    }

    /// The latest answer without waiting (asking for a newer one when it is older than
    /// [`REFRESH`]); before the first answer, waits up to `first_wait` for it.
    pub fn latest(&self, first_wait: Duration) -> Option<Reading> {
        let mut st = self.shared.lock();
        if st.latest.is_none() {
            let deadline = Instant::now() + first_wait;
            while st.latest.is_none() && !st.finished {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                st = self
                    .shared
                    .changed
                    .wait_timeout(st, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
        if st
            .latest
            .as_ref()
            .is_some_and(|r| r.started.elapsed() >= REFRESH)
        {
            st.wanted += 1;
            self.shared.changed.notify_all();
        }
        st.latest.clone()
    }

    /// When the watch started (how long a first answer has been pending).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// An answer from a read that starts after this call, waiting at most `wait`; `None` when
    /// none came in time.
    pub fn fresh(&self, wait: Duration) -> Option<Reading> {
        let deadline = Instant::now() + wait;
        let mut st = self.shared.lock();
        st.wanted += 1;
        let want = st.wanted;
        self.shared.changed.notify_all();
        while st.served < want && !st.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        (st.served >= want).then(|| st.latest.clone()).flatten()
    }
}

impl Drop for DbWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.changed.notify_all();
        let deadline = Instant::now() + STOP_WAIT;
        let mut st = self.shared.lock();
        while !st.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("the task DB reader did not stop in time; left behind");
                return;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        drop(st);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reader thread: waits for a request or for the snapshot to age, reads, publishes.
fn run(db: &TaskDb, node: &str, shared: &Shared, cancel: &Cancel) {
    loop {
        let want = {
            let mut st = shared.lock();
            loop {
                if cancel.is_set() {
                    st.finished = true;
                    shared.changed.notify_all();
                    return;
                }
                let age = st.latest.as_ref().map(|r| r.started.elapsed());
                if st.wanted > st.served || age.is_none_or(|a| a >= REFRESH) {
                    break;
                }
                let left = REFRESH.saturating_sub(age.unwrap_or_default());
                st = shared
                    .changed
                    .wait_timeout(st, left.max(Duration::from_millis(10)))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            st.wanted
        };
        let started = Instant::now();
        let result = db
            .running(node, now_secs(), cancel)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        let mut st = shared.lock();
        st.latest = Some(Reading { started, result });
        st.served = st.served.max(want);
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HumanDuration, TasksConfig};
    use rusqlite::Connection;

    fn locked_db(dir: &std::path::Path) -> (TaskDb, Connection) {
        let path = dir.join("dispatch.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE tasks (id, project, status, started_at, node, pid);
             INSERT INTO tasks VALUES ('t1', 'alpha', 'running', 1771581600, 'n1', NULL);",
        )
        .unwrap();
        let cfg = TasksConfig {
            db: Some(path),
            busy_timeout: HumanDuration(Duration::from_secs(2)),
            retries: 2,
            ..TasksConfig::default()
        };
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        (TaskDb::from_config(&cfg).unwrap(), conn)
    }

    #[test]
    fn a_locked_db_never_holds_a_caller_longer_than_its_wait_nor_a_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let (db, locker) = locked_db(tmp.path());
        let watch = DbWatch::start(db, "n1".into(), &Cancel::never());
        // The reader waits out the lock (6 s budget); callers do not.
        let asked = Instant::now();
        assert!(watch.fresh(Duration::from_millis(300)).is_none());
        let waited = asked.elapsed();
        assert!(waited < Duration::from_secs(2), "fresh waited {waited:?}");
        let asked = Instant::now();
        assert!(watch.latest(Duration::ZERO).is_none());
        assert!(asked.elapsed() < Duration::from_secs(1));
        // Dropped while the reader is inside its lock wait: it stops, it is not left behind.
        let dropping = Instant::now();
        drop(watch);
        let took = dropping.elapsed();
        assert!(took < STOP_WAIT, "the reader took {took:?} to stop");
        drop(locker);
    }

    #[test]
    fn the_lock_gone_a_fresh_answer_comes_and_latest_keeps_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (db, locker) = locked_db(tmp.path());
        let watch = DbWatch::start(db, "n1".into(), &Cancel::never());
        locker.execute_batch("COMMIT").unwrap();
        let fresh = watch.fresh(Duration::from_secs(30)).expect("an answer");
        assert_eq!(fresh.result.unwrap().len(), 1);
        let latest = watch.latest(Duration::ZERO).expect("kept");
        assert_eq!(latest.result.unwrap().len(), 1);
    }
}
