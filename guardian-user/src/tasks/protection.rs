//! Running-task protection: which project dirs a running task on this node names. The survey
//! takes ONE [`TaskSnapshot`] for all its projects (no waiting on the DB); the executor's check
//! right before a delete asks for a fresh answer and waits at most a bounded time.
//!
//! Invariant: no answer, an old failure, or a running task whose project cannot be read means
//! "task state unknown": every project counts as possibly running, never the reverse.

use super::clock;
use super::db::{RunningTask, TaskDb};
use super::watch::{DbWatch, Reading};
use super::Cancel;
use crate::cleanup::ExtraProtection;
use crate::config::Config;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The longest the executor's check right before a delete waits for a fresh answer.
pub const FRESH_WAIT: Duration = Duration::from_secs(2);
/// The longest the first snapshot after start is waited for.
pub const FIRST_WAIT: Duration = Duration::from_secs(2);

/// Running-task protection: which projects have a running task on this node.
pub struct RunningProtection {
    watch: Option<DbWatch>,
    db: Option<TaskDb>,
    node: String,
    workspaces: Arc<Vec<PathBuf>>,
    /// A task id whose own row does not protect (`task done --task ID`).
    exclude: Option<String>,
}

impl RunningProtection {
    /// Starts the background DB reader when a task DB is configured; `cancel` stops it.
    pub fn new(config: &Config, exclude: Option<String>, cancel: &Cancel) -> RunningProtection {
        let db = TaskDb::from_config(&config.tasks);
        let node = config.tasks.node_name();
        RunningProtection {
            watch: db
                .clone()
                .map(|db| DbWatch::start(db, node.clone(), cancel)),
            db,
            node,
            workspaces: Arc::new(config.workspaces.iter().map(|w| w.path.clone()).collect()),
            exclude,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The task DB, when one is configured.
    pub fn db(&self) -> Option<&TaskDb> {
        self.db.as_ref()
    }

    /// The latest answer, without waiting on the DB (only the very first answer after start is
    /// waited for, at most [`FIRST_WAIT`]).
    pub fn snapshot(&self) -> TaskSnapshot {
        let reading = self.watch.as_ref().map(|w| w.latest(FIRST_WAIT));
        self.wrap(reading, "the task DB has not answered yet")
    }

    /// The latest answer without any wait; `None` while the first answer is pending and the
    /// watch started less than [`FIRST_WAIT`] ago (not known yet, not yet a problem).
    pub fn peek(&self) -> Option<TaskSnapshot> {
        let reading = match &self.watch {
            None => None,
            Some(w) => {
                let r = w.latest(Duration::ZERO);
                if r.is_none() && w.started().elapsed() < FIRST_WAIT {
                    return None;
                }
                Some(r)
            }
        };
        Some(self.wrap(
            reading,
            "the task DB has not answered since Guardian started",
        ))
    }

    /// An answer from a read started now, waiting at most `wait`; none in time means task
    /// state is unknown.
    pub fn fresh(&self, wait: Duration) -> TaskSnapshot {
        let reading = self.watch.as_ref().map(|w| w.fresh(wait));
        self.wrap(
            reading,
            &format!(
                "no fresh answer from the task DB within {}",
                clock::human_secs(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX))
            ),
        )
    }

    /// A fresh answer for a one-shot command: waits as long as the DB's own retries may take.
    pub fn fresh_for_command(&self) -> TaskSnapshot {
        let wait = self
            .db
            .as_ref()
            .map_or(Duration::ZERO, |db| db.budget() + Duration::from_secs(2));
        self.fresh(wait)
    }

    fn wrap(&self, reading: Option<Option<Reading>>, none: &str) -> TaskSnapshot {
        let state = match reading {
            None => State::NoDb,
            Some(None) => State::Unknown(none.to_string()),
            Some(Some(r)) => match r.result {
                Ok(tasks) => State::Known(tasks),
                Err(why) => State::Unknown(why),
            },
        };
        TaskSnapshot {
            state,
            node: self.node.clone(),
            workspaces: self.workspaces.clone(),
            exclude: self.exclude.clone(),
        }
    }

    /// Why the project dir at `project` must not be deleted, asking the DB now (at most
    /// [`FRESH_WAIT`]): the executor's check right before a delete.
    pub fn check(&self, project: &Path) -> Option<String> {
        self.db.as_ref()?;
        self.fresh(FRESH_WAIT).check(project)
    }
}

#[derive(Clone, Debug)]
enum State {
    /// No task DB is configured: no task protects anything.
    NoDb,
    Known(Arc<Vec<RunningTask>>),
    Unknown(String),
}

/// The running tasks of this node at one moment, checked against many projects.
#[derive(Clone, Debug)]
pub struct TaskSnapshot {
    state: State,
    node: String,
    workspaces: Arc<Vec<PathBuf>>,
    exclude: Option<String>,
}

impl TaskSnapshot {
    /// Whether a task DB is configured.
    pub fn has_db(&self) -> bool {
        !matches!(self.state, State::NoDb)
    }

    /// Why task state is unknown, when it is: the DB did not answer, or a running task's
    /// project cannot be read (then no dir can be told apart from its).
    pub fn unknown(&self) -> Option<String> {
        match &self.state {
            State::Unknown(why) => Some(why.clone()),
            State::Known(tasks) => tasks
                .iter()
                .filter(|t| !self.excluded(t))
                .find(|t| t.dir_name().is_none())
                .map(|t| {
                    let why = match &t.dir {
                        super::row::Project::Unreadable(w) => w.clone(),
                        super::row::Project::Dir(_) => String::new(),
                    };
                    format!(
                        "running task {} names no project dir ({why}): Guardian cannot tell which dir it uses",
                        t.id
                    )
                }),
            State::NoDb => None,
        }
    }

    /// The running tasks read (empty without a DB or when unknown).
    pub fn tasks(&self) -> &[RunningTask] {
        match &self.state {
            State::Known(t) => t,
            _ => &[],
        }
    }

    fn excluded(&self, t: &RunningTask) -> bool {
        self.exclude.as_deref() == Some(t.id.as_str())
    }

    /// Why the project dir at `project` must not be deleted: a running task on this node names
    /// it, or task state is unknown. `None` for paths that are not a child of a workspace.
    pub fn check(&self, project: &Path) -> Option<String> {
        if !self.has_db() {
            return None;
        }
        let parent = project.parent()?;
        if !self.workspaces.iter().any(|w| w == parent) {
            return None;
        }
        let name = project.file_name()?;
        if let Some(why) = self.unknown() {
            return Some(format!(
                "running task: task state unknown ({why}); every project counts as possibly running"
            ));
        }
        self.tasks()
            .iter()
            .filter(|t| !self.excluded(t))
            .find(|t| t.dir_name().is_some_and(|d| d.as_os_str() == name))
            .map(|t| {
                format!(
                    "running task: task {} (project {}) is running on node {} since {}",
                    t.id,
                    t.project,
                    self.node,
                    t.started_at.map_or(t.started_raw.clone(), clock::rfc3339)
                )
            })
    }
}

/// The running-task protection of a one-shot command (`plan`, `task done`): the first check
/// asks the DB (waiting as long as its retries may take), every later one reuses that answer.
pub fn running_protection(config: &Config, exclude: Option<String>) -> ExtraProtection {
    let p = RunningProtection::new(config, exclude, &Cancel::never());
    let once: OnceLock<TaskSnapshot> = OnceLock::new();
    Arc::new(move |path: &Path| once.get_or_init(|| p.fresh_for_command()).check(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NaiveTimes;
    use crate::tasks::db::decode_running;
    use crate::tasks::row::Cell;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    fn task(id: &str, project: Cell) -> RunningTask {
        decode_running(
            Cell::Text(id.as_bytes().to_vec()),
            project,
            Cell::Integer(1_000_000_000_000_000),
            Cell::Null,
            None,
            NaiveTimes::Utc,
        )
    }

    fn snapshot(tasks: Vec<RunningTask>, exclude: Option<&str>) -> TaskSnapshot {
        TaskSnapshot {
            state: State::Known(Arc::new(tasks)),
            node: "n1".into(),
            workspaces: Arc::new(vec![PathBuf::from("/ws")]),
            exclude: exclude.map(str::to_string),
        }
    }

    #[test]
    fn projects_match_byte_for_byte_and_the_excluded_task_does_not_protect() {
        let s = snapshot(
            vec![
                task("t1", Cell::Text(b"bad\xff".to_vec())),
                task("t2", Cell::Text(b"org/repo".to_vec())),
            ],
            Some("t2"),
        );
        let bad = Path::new("/ws").join(OsStr::from_bytes(b"bad\xff"));
        let why = s.check(&bad).expect("protected");
        // The unreadable start (1e15) is shown as written, not turned into a panic.
        assert!(
            why.contains("task t1") && why.contains("1000000000000000"),
            "{why}"
        );
        assert_eq!(s.check(Path::new("/ws/bad")), None);
        assert_eq!(s.check(Path::new("/ws/org")), None, "t2 is excluded");
        assert_eq!(s.check(Path::new("/elsewhere/bad")), None);
        assert!(s.unknown().is_none());
    }

    #[test]
    fn a_running_task_whose_project_names_no_dir_makes_task_state_unknown() {
        for project in [
            Cell::Null,
            Cell::Text(b"/etc".to_vec()),
            Cell::Text(b"..".to_vec()),
        ] {
            let s = snapshot(vec![task("t9", project.clone())], None);
            let why = s.check(Path::new("/ws/anything")).expect("protected");
            assert!(why.contains("task state unknown"), "{project:?}: {why}");
            assert!(s.unknown().unwrap().contains("t9"));
            // The task's own `task done` does not count it.
            let own = snapshot(vec![task("t9", project)], Some("t9"));
            assert_eq!(own.check(Path::new("/ws/anything")), None);
        }
        let none = TaskSnapshot {
            state: State::NoDb,
            node: "n1".into(),
            workspaces: Arc::new(vec![PathBuf::from("/ws")]),
            exclude: None,
        };
        assert_eq!(none.check(Path::new("/ws/a")), None);
        assert!(!none.has_db());
    }
}
