//! The `[tasks]` section: the task DB (`dispatch.db`) and its SQL, which workspaces hold task
//! work dirs or scratch sessions, the completion / age / inactivity policy, usage limits and the
//! ghost reaper. Validation here names the offending key; nothing here touches the disk.

mod sql;

use super::ranges;
use super::units::{ByteSize, HumanDuration};
use super::Workspace;
use crate::textpath::shown;
use serde::{Deserialize, Serialize};
pub use sql::named_params;
use sql::{check_sql, StatementKind};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// Named parameters Guardian binds in the running-tasks and activity queries.
pub const QUERY_PARAMS: &[&str] = &["node", "now"];
/// Named parameters Guardian binds in `mark_failed_sql` and `release_slot_sql`.
pub const UPDATE_PARAMS: &[&str] = &[
    "id",
    "node",
    "project",
    "pid",
    "started_at",
    "error",
    "status",
    "now",
];

/// The default query for the running tasks of this node. Columns are read by name: `id`,
/// `project`, `started_at`, `pid` (and `node`, `status` when present).
pub const DEFAULT_RUNNING_SQL: &str =
    "SELECT id, project, status, started_at, node, pid FROM tasks WHERE status = 'running' AND node = :node";
/// The default statement marking one ghost failed. Guardian requires it to change exactly one row.
pub const DEFAULT_MARK_FAILED_SQL: &str = "UPDATE tasks SET status = 'failed', error = :error WHERE id = :id AND status = 'running' AND node = :node AND project = :project";

/// `[tasks]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    /// The dispatcher's SQLite task DB. Unset: no task DB (no running-task protection, no ghost
    /// reaper; the completion, age and inactivity policies still work).
    #[serde(default)]
    pub db: Option<PathBuf>,
    /// This node's name as the task DB spells it (`:node`). Default: the host name.
    #[serde(default)]
    pub node: Option<String>,
    /// How long one DB call waits for a lock held by another connection.
    #[serde(default = "default_busy_timeout")]
    pub busy_timeout: HumanDuration,
    /// Further attempts after a call still found the DB busy or locked.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// How `started_at` text without a UTC offset is read: `utc` (SQLite's `datetime('now')`)
    /// or `local` (Python's naive `datetime.now()`).
    #[serde(default)]
    pub naive_times: NaiveTimes,
    /// Running tasks on this node: columns `id`, `project`, `started_at`, `pid`.
    #[serde(default = "default_running_sql")]
    pub running_sql: String,
    /// Marks one ghost failed (must change exactly one row).
    #[serde(default = "default_mark_failed_sql")]
    pub mark_failed_sql: String,
    /// Releases the ghost's slot, in the same transaction. Empty: the slot is the `running` row
    /// itself, released by `mark_failed_sql`.
    #[serde(default)]
    pub release_slot_sql: String,
    /// Optional: last activity of scratch sessions, columns `name` and `last_active`.
    #[serde(default)]
    pub activity_sql: String,
    /// Workspaces whose children are task work dirs (`guardian task done`, `max_age`).
    #[serde(default)]
    pub task_areas: Vec<PathBuf>,
    /// Workspaces whose children are scratch sessions (`inactive_after`).
    #[serde(default)]
    pub scratch_areas: Vec<PathBuf>,
    /// Finished-task work dirs idle longer than this are deleted by the periodic sweep.
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
    /// Scratch sessions without activity for this long are deleted by the periodic sweep.
    #[serde(default = "default_inactive_after")]
    pub inactive_after: HumanDuration,
    /// Work dirs of failed/errored tasks are kept for debugging this long.
    #[serde(default = "default_keep_failed_for")]
    pub keep_failed_for: HumanDuration,
    /// Cap on the bytes of kept work dirs; the oldest kept dir goes first when over it.
    #[serde(default = "default_keep_failed_max")]
    pub keep_failed_max: ByteSize,
    /// How often the daemon sweeps task and scratch areas and checks usage limits.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval: HumanDuration,
    /// Usage of all workspaces together that raises a warning event.
    #[serde(default)]
    pub total_usage_warning: Option<ByteSize>,
    /// Usage of all workspaces together that raises a critical event.
    #[serde(default)]
    pub total_usage_critical: Option<ByteSize>,
    /// Per-workspace usage limits.
    #[serde(default)]
    pub usage_limits: Vec<UsageLimit>,
    #[serde(default)]
    pub ghosts: GhostConfig,
}

/// `[[tasks.usage_limits]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsageLimit {
    /// A configured `[[workspaces]]` path.
    pub workspace: PathBuf,
    #[serde(default)]
    pub warning: Option<ByteSize>,
    #[serde(default)]
    pub critical: Option<ByteSize>,
}

/// `[tasks.ghosts]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GhostConfig {
    /// Reap ghosts on the daemon's schedule (needs `tasks.db`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A task `running` longer than this is a ghost.
    #[serde(default = "default_ghost_after")]
    pub ghost_after: HumanDuration,
    /// How often the daemon looks for ghosts.
    #[serde(default = "default_ghost_interval")]
    pub interval: HumanDuration,
    /// Between SIGTERM and SIGKILL.
    #[serde(default = "default_grace")]
    pub grace: HumanDuration,
    /// A process whose start time differs from the task's `started_at` by more than this is
    /// not the task's (its PID was reused).
    #[serde(default = "default_start_tolerance")]
    pub start_tolerance: HumanDuration,
    /// Only tasks of these projects; empty: every project on this node.
    #[serde(default)]
    pub projects: Vec<String>,
}

/// How to read timestamps written without a UTC offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NaiveTimes {
    #[default]
    Utc,
    Local,
}

/// What a workspace's children are, as the `[tasks]` section says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AreaKind {
    /// Plain projects: cleaned only under disk pressure.
    Projects,
    /// Task work dirs: completion policy, `max_age`, kept failed dirs.
    Tasks,
    /// Scratch sessions: `inactive_after`.
    Scratch,
}

fn default_busy_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_retries() -> u32 {
    3
}
fn default_running_sql() -> String {
    DEFAULT_RUNNING_SQL.to_string()
}
fn default_mark_failed_sql() -> String {
    DEFAULT_MARK_FAILED_SQL.to_string()
}
fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}
fn default_inactive_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 86400))
}
fn default_keep_failed_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(72 * 3600))
}
fn default_keep_failed_max() -> ByteSize {
    ByteSize(5 << 30)
}
fn default_sweep_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_true() -> bool {
    true
}
fn default_ghost_after() -> HumanDuration {
    HumanDuration(Duration::from_secs(2 * 3600))
}
fn default_ghost_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_start_tolerance() -> HumanDuration {
    HumanDuration(Duration::from_secs(120))
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            db: None,
            node: None,
            busy_timeout: default_busy_timeout(),
            retries: default_retries(),
            naive_times: NaiveTimes::Utc,
            running_sql: default_running_sql(),
            mark_failed_sql: default_mark_failed_sql(),
            release_slot_sql: String::new(),
            activity_sql: String::new(),
            task_areas: Vec::new(),
            scratch_areas: Vec::new(),
            max_age: default_max_age(),
            inactive_after: default_inactive_after(),
            keep_failed_for: default_keep_failed_for(),
            keep_failed_max: default_keep_failed_max(),
            sweep_interval: default_sweep_interval(),
            total_usage_warning: None,
            total_usage_critical: None,
            usage_limits: Vec::new(),
            ghosts: GhostConfig::default(),
        }
    }
}

impl Default for GhostConfig {
    fn default() -> Self {
        GhostConfig {
            enabled: true,
            ghost_after: default_ghost_after(),
            interval: default_ghost_interval(),
            grace: default_grace(),
            start_tolerance: default_start_tolerance(),
            projects: Vec::new(),
        }
    }
}

impl TasksConfig {
    /// The node name: `tasks.node`, or the host name.
    pub fn node_name(&self) -> String {
        match &self.node {
            Some(n) => n.clone(),
            None => rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        }
    }

    /// What the children of the workspace at `path` are.
    pub fn area_kind(&self, path: &std::path::Path) -> AreaKind {
        if self.task_areas.iter().any(|p| p == path) {
            AreaKind::Tasks
        } else if self.scratch_areas.iter().any(|p| p == path) {
            AreaKind::Scratch
        } else {
            AreaKind::Projects
        }
    }

    /// Checks what the types cannot; returns the key path (below `tasks`) and the message.
    pub(super) fn validate(&self, workspaces: &[Workspace]) -> Result<(), (Vec<String>, String)> {
        let key = |parts: &[&str]| {
            std::iter::once("tasks")
                .chain(parts.iter().copied())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let configured: HashSet<&std::path::Path> =
            workspaces.iter().map(|w| w.path.as_path()).collect();
        if let Some(db) = &self.db {
            if !db.is_absolute() {
                return Err((key(&["db"]), "must be an absolute path".into()));
            }
        }
        if let Some(node) = &self.node {
            if node.trim().is_empty() {
                return Err((
                    key(&["node"]),
                    "must not be empty (leave it out to use the host name)".into(),
                ));
            }
            if node.len() > 255 || node.chars().any(char::is_control) {
                return Err((
                    key(&["node"]),
                    "must be at most 255 bytes without control characters".into(),
                ));
            }
        }
        ranges::BUSY_TIMEOUT
            .check(self.busy_timeout.0)
            .map_err(|m| (key(&["busy_timeout"]), m))?;
        if self.retries > ranges::MAX_RETRIES {
            return Err((
                key(&["retries"]),
                format!(
                    "{} is outside the allowed range 0 to {}",
                    self.retries,
                    ranges::MAX_RETRIES
                ),
            ));
        }
        check_sql(&self.running_sql, QUERY_PARAMS, true, StatementKind::Read)
            .map_err(|m| (key(&["running_sql"]), m))?;
        check_sql(
            &self.mark_failed_sql,
            UPDATE_PARAMS,
            true,
            StatementKind::Update,
        )
        .map_err(|m| (key(&["mark_failed_sql"]), m))?;
        if !named_params(&self.mark_failed_sql)
            .unwrap_or_default()
            .iter()
            .any(|p| p == "id")
        {
            return Err((
                key(&["mark_failed_sql"]),
                "must select the task with `:id` (it may change exactly one row)".into(),
            ));
        }
        check_sql(
            &self.release_slot_sql,
            UPDATE_PARAMS,
            false,
            StatementKind::Update,
        )
        .map_err(|m| (key(&["release_slot_sql"]), m))?;
        check_sql(&self.activity_sql, QUERY_PARAMS, false, StatementKind::Read)
            .map_err(|m| (key(&["activity_sql"]), m))?;
        let mut seen = HashSet::new();
        for (field, list) in [
            ("task_areas", &self.task_areas),
            ("scratch_areas", &self.scratch_areas),
        ] {
            for path in list {
                if !configured.contains(path.as_path()) {
                    return Err((
                        key(&[field]),
                        format!(
                            "`{}` is not the path of a configured [[workspaces]] entry",
                            shown(path)
                        ),
                    ));
                }
                if !seen.insert(path.clone()) {
                    return Err((
                        key(&[field]),
                        format!(
                            "`{}` is listed twice in task_areas/scratch_areas",
                            shown(path)
                        ),
                    ));
                }
            }
        }
        for (name, d, range) in [
            ("max_age", self.max_age, ranges::MAX_AGE),
            (
                "inactive_after",
                self.inactive_after,
                ranges::INACTIVE_AFTER,
            ),
            (
                "keep_failed_for",
                self.keep_failed_for,
                ranges::KEEP_FAILED_FOR,
            ),
            (
                "sweep_interval",
                self.sweep_interval,
                ranges::SWEEP_INTERVAL,
            ),
        ] {
            range.check(d.0).map_err(|m| (key(&[name]), m))?;
        }
        for (name, size) in [
            ("keep_failed_max", Some(self.keep_failed_max)),
            ("total_usage_warning", self.total_usage_warning),
            ("total_usage_critical", self.total_usage_critical),
        ] {
            if let Some(size) = size {
                ranges::check_bytes(size.0).map_err(|m| (key(&[name]), m))?;
            }
        }
        if let (Some(w), Some(c)) = (self.total_usage_warning, self.total_usage_critical) {
            if w > c {
                return Err((
                    key(&["total_usage_warning"]),
                    format!("{w} must not be above total_usage_critical ({c})"),
                ));
            }
        }
        let mut limited = HashSet::new();
        for (i, limit) in self.usage_limits.iter().enumerate() {
            let at = |f: &str| key(&["usage_limits", &i.to_string(), f]);
            if !configured.contains(limit.workspace.as_path()) {
                return Err((
                    at("workspace"),
                    format!(
                        "`{}` is not the path of a configured [[workspaces]] entry",
                        shown(&limit.workspace)
                    ),
                ));
            }
            if !limited.insert(limit.workspace.clone()) {
                return Err((
                    at("workspace"),
                    format!("`{}` has two usage limits", shown(&limit.workspace)),
                ));
            }
            for (name, size) in [("warning", limit.warning), ("critical", limit.critical)] {
                if let Some(size) = size {
                    ranges::check_bytes(size.0).map_err(|m| (at(name), m))?;
                }
            }
            if limit.warning.is_none() && limit.critical.is_none() {
                return Err((
                    at("warning"),
                    "a usage limit needs `warning`, `critical` or both".into(),
                ));
            }
            if let (Some(w), Some(c)) = (limit.warning, limit.critical) {
                if w > c {
                    return Err((
                        at("warning"),
                        format!("{w} must not be above critical ({c})"),
                    ));
                }
            }
        }
        let g = &self.ghosts;
        for (name, d, range) in [
            ("ghost_after", g.ghost_after, ranges::GHOST_AFTER),
            ("interval", g.interval, ranges::GHOST_INTERVAL),
            ("grace", g.grace, ranges::GRACE),
            (
                "start_tolerance",
                g.start_tolerance,
                ranges::START_TOLERANCE,
            ),
        ] {
            range.check(d.0).map_err(|m| (key(&["ghosts", name]), m))?;
        }
        for p in &g.projects {
            if p.trim().is_empty() || p.contains('\0') {
                return Err((
                    key(&["ghosts", "projects"]),
                    "project names must not be empty or contain a NUL byte".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tasks: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        let text = format!(
            "[[workspaces]]\npath = \"/srv/dispatch\"\n\n[[workspaces]]\npath = \"/srv/scratch\"\n\n{tasks}"
        );
        crate::config::Config::parse(&text, "t.toml")
    }

    #[test]
    fn defaults_follow_the_seeds() {
        let c = parse("").unwrap().tasks;
        assert_eq!(c.max_age.0, Duration::from_secs(24 * 3600));
        assert_eq!(c.inactive_after.0, Duration::from_secs(7 * 86400));
        assert_eq!(c.keep_failed_for.0, Duration::from_secs(72 * 3600));
        assert_eq!(c.ghosts.ghost_after.0, Duration::from_secs(2 * 3600));
        assert!(c.ghosts.enabled && c.db.is_none());
        assert_eq!(c.running_sql, DEFAULT_RUNNING_SQL);
    }

    #[test]
    fn task_errors_name_the_key_and_line() {
        for (tasks, key, line) in [
            (
                "[tasks]\ntask_areas = [\"/srv/other\"]\n",
                "tasks.task_areas",
                8,
            ),
            (
                "[tasks]\nscratch_areas = [\"/srv/dispatch\"]\ntask_areas = [\"/srv/dispatch\"]\n",
                "tasks.scratch_areas",
                8,
            ),
            (
                "[tasks]\nmark_failed_sql = \"UPDATE tasks SET status = 'failed'\"\n",
                "tasks.mark_failed_sql",
                8,
            ),
            (
                "[tasks]\nrelease_slot_sql = \"UPDATE slots SET n = n - 1 WHERE node = ?\"\n",
                "tasks.release_slot_sql",
                8,
            ),
            (
                "[tasks]\nrunning_sql = \"DELETE FROM tasks RETURNING id, project, started_at, pid\"\n",
                "tasks.running_sql",
                8,
            ),
            (
                "[tasks]\nmark_failed_sql = \"UPDATE tasks SET status = 'failed' WHERE id = :id; DROP TABLE tasks\"\n",
                "tasks.mark_failed_sql",
                8,
            ),
            ("[tasks]\ndb = \"dispatch.db\"\n", "tasks.db", 8),
            (
                "[tasks]\ntotal_usage_warning = \"2GiB\"\ntotal_usage_critical = \"1GiB\"\n",
                "tasks.total_usage_warning",
                8,
            ),
            (
                "[[tasks.usage_limits]]\nworkspace = \"/srv/dispatch\"\n",
                "tasks.usage_limits.0.warning",
                7,
            ),
            (
                "[tasks.ghosts]\nghost_after = \"0s\"\n",
                "tasks.ghosts.ghost_after",
                8,
            ),
            ("[tasks.ghosts]\nnodes = []\n", "tasks.ghosts.nodes", 8),
        ] {
            let err = parse(tasks).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{tasks}: {err}");
            assert_eq!(err.line, Some(line), "{tasks}: {err}");
        }
    }
}
