//! Guardian's configuration: the TOML schema, the embedded default, parsing and validation.
//! Owns every error message about the config file. `Config::parse` is pure (text in, config or
//! error out); `Config::load` also reads the file with limits (`read.rs`) and looks at the
//! configured paths on disk, read-only (`ondisk.rs`). Nothing here writes.

mod artifacts;
mod forecast;
mod git;
mod locate;
mod ondisk;
mod paths;
pub mod ranges;
mod read;
pub mod retention;
mod rules;
mod serve;
mod tasks;
mod units;

pub use paths::{KERNEL_TREES, SYSTEM_DIRS};
pub use read::MAX_CONFIG_BYTES;

pub use artifacts::{builtin_names, ArtifactEntry, ArtifactType, Markers};
pub use forecast::{ForecastConfig, LeadTime};
pub use git::GitConfig;
pub use retention::{Order, RetentionRule};
use rules::check_glob;
pub use rules::{CompiledRule, Rule};
pub use serve::{ServeConfig, Severity, Target, Webhook, MAX_WEBHOOKS};

pub use tasks::{
    named_params, AreaKind, GhostConfig, NaiveTimes, TasksConfig, UsageLimit, QUERY_PARAMS,
    UPDATE_PARAMS,
};

pub use units::{
    human_bytes, ByteSize, CpuShare, FreeAmount, FreeBytes, FreeInodes, HumanDuration,
};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The embedded default configuration, printed by `guardian config default`.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Preemptive cleanup from the growth forecast (`[forecast]`).
    #[serde(default)]
    pub forecast: ForecastConfig,
    #[serde(default)]
    pub workspaces: Vec<Workspace>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Changes to the built-in project-type artifact table (`[[artifacts]]`, by name).
    #[serde(default)]
    pub artifacts: Vec<ArtifactEntry>,
    /// The task DB, task/scratch areas and their policies, the ghost reaper (`[tasks]`).
    #[serde(default)]
    pub tasks: TasksConfig,
    /// Retention rules: keep-latest-N series of versions, backups, logs (`[[retention]]`).
    #[serde(default)]
    pub retention: Vec<RetentionRule>,
    /// Git maintenance in phase 1 (`[git]`).
    #[serde(default)]
    pub git: GitConfig,
    /// The HTTP endpoints: metrics, status, event stream (`[serve]`).
    #[serde(default)]
    pub serve: ServeConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    #[serde(default = "default_audit_log")]
    pub audit_log: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where `state.json` lives (see [`DaemonConfig::runtime_dir`]); unset: `/run/guardian` on
    /// Linux with the default `state_dir`, else `state_dir`.
    #[serde(default)]
    pub runtime_dir: Option<PathBuf>,
    #[serde(default)]
    pub dry_run: bool,
    /// Command (argv, no shell) run once per phase-1 cycle, e.g. `journalctl --vacuum-size=200M`.
    #[serde(default)]
    pub journal_vacuum: Vec<String>,
    /// Which write source to use; `auto` tries ebpf, fanotify, inotify, poll in that order.
    #[serde(default)]
    pub source: SourceKind,
    /// How often the daemon drains the write source and re-reads free space (≤ 250 ms reacts
    /// within a second).
    #[serde(default = "default_sample_interval")]
    pub sample_interval: HumanDuration,
    /// A project changed (mtime or ctime) or written (as the write source saw it) more
    /// recently than this is active: never deleted whole, even under critical pressure.
    #[serde(default = "default_active_within")]
    pub active_within: HumanDuration,
    /// Where the journal lives: `journal_vacuum` runs only in cycles on the filesystem that
    /// holds this directory.
    #[serde(default = "default_journal_dir")]
    pub journal_dir: PathBuf,
    /// With `source = "poll"`: the share of one core the per-project size sampling may use
    /// (its walks' own CPU time over the interval between them), `"2%"` by default.
    #[serde(default)]
    pub poll_cpu_budget: CpuShare,
}

/// The `daemon.source` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    #[default]
    Auto,
    Ebpf,
    Fanotify,
    Inotify,
    Poll,
}

fn default_sample_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(250))
}

fn default_active_within() -> HumanDuration {
    HumanDuration(Duration::from_secs(15 * 60))
}

fn default_journal_dir() -> PathBuf {
    PathBuf::from("/var/log/journal")
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_audit_log() -> PathBuf {
    PathBuf::from("/var/log/guardian/audit.jsonl")
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/guardian")
}

/// The runtime dir a default config uses on Linux: a tmpfs, so an idle node writes nothing to
/// its disks.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/guardian";

impl DaemonConfig {
    /// Where the daemon keeps `state.json`: `runtime_dir` when set; unset, `/run/guardian` on
    /// Linux while `state_dir` is the default one (a tmpfs: an idle node writes nothing to its
    /// disks), else `state_dir` (a config that moves its state elsewhere keeps `state.json`
    /// next to it unless it names a runtime dir too). The same for every user, so `guardian
    /// status` run by anyone finds the file the root daemon wrote.
    pub fn runtime_dir(&self) -> PathBuf {
        if let Some(dir) = &self.runtime_dir {
            return dir.clone();
        }
        if cfg!(target_os = "linux") && self.state_dir == default_state_dir() {
            return PathBuf::from(DEFAULT_RUNTIME_DIR);
        }
        self.state_dir.clone()
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            poll_interval: default_poll_interval(),
            audit_log: default_audit_log(),
            state_dir: default_state_dir(),
            runtime_dir: None,
            dry_run: false,
            journal_vacuum: Vec::new(),
            source: SourceKind::Auto,
            sample_interval: default_sample_interval(),
            active_within: default_active_within(),
            journal_dir: default_journal_dir(),
            poll_cpu_budget: CpuShare::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    #[serde(default = "default_cleanup_free")]
    pub cleanup_free: FreeBytes,
    #[serde(default = "default_critical_free")]
    pub critical_free: FreeBytes,
    #[serde(default = "default_target_free")]
    pub target_free: FreeBytes,
    #[serde(default = "default_min_free")]
    pub min_free: ByteSize,
    #[serde(default = "default_inodes_cleanup")]
    pub inodes_cleanup_free: FreeInodes,
    #[serde(default = "default_inodes_critical")]
    pub inodes_critical_free: FreeInodes,
    #[serde(default = "default_inodes_target")]
    pub inodes_target_free: FreeInodes,
}

fn default_cleanup_free() -> FreeBytes {
    FreeBytes(FreeAmount::Percent(20.0))
}
fn default_critical_free() -> FreeBytes {
    FreeBytes(FreeAmount::Percent(10.0))
}
fn default_target_free() -> FreeBytes {
    FreeBytes(FreeAmount::Percent(30.0))
}
fn default_min_free() -> ByteSize {
    ByteSize(0)
}
fn default_inodes_cleanup() -> FreeInodes {
    FreeInodes(FreeAmount::Percent(10.0))
}
fn default_inodes_critical() -> FreeInodes {
    FreeInodes(FreeAmount::Percent(5.0))
}
fn default_inodes_target() -> FreeInodes {
    FreeInodes(FreeAmount::Percent(15.0))
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            cleanup_free: default_cleanup_free(),
            critical_free: default_critical_free(),
            target_free: default_target_free(),
            min_free: default_min_free(),
            inodes_cleanup_free: default_inodes_cleanup(),
            inodes_critical_free: default_inodes_critical(),
            inodes_target_free: default_inodes_target(),
        }
    }
}

/// A directory whose children are projects (task work dirs).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    pub path: PathBuf,
    /// Child names that are never touched, neither by phase 1 nor by phase 2.
    #[serde(default)]
    pub protect: Vec<String>,
}

/// A config error: what is wrong, where (file, line, key) and nothing else happened.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error in {}", self.source_name)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, " at key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A validation failure: the key path of the offending value and the message.
pub(crate) type KeyError = (Vec<String>, String);

impl Config {
    /// Reads a config file (a regular file of at most [`MAX_CONFIG_BYTES`], UTF-8; a FIFO or a
    /// device is refused without blocking), validates it and checks its paths on disk
    /// (read-only). Nothing on disk is changed.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = crate::textpath::escape(path);
        let text = read::read_config_file(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            line: e.line,
            key: None,
            message: e.message,
        })?;
        Config::load_text(&text, &name)
    }

    /// [`Config::parse`] plus the checks of the configured paths on disk (symlinks, overlap by
    /// identity); what `load` and the daemon's start use.
    pub fn load_text(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(text, source_name)?;
        config
            .check_on_disk()
            .map_err(|e| key_error(text, source_name, e))?;
        Ok(config)
    }

    /// The embedded default configuration, checked on disk like a loaded file.
    pub fn load_embedded_default() -> Result<Config, ConfigError> {
        Config::load_text(DEFAULT_CONFIG, "<embedded default>")
    }

    /// The embedded default configuration (text checks only).
    pub fn embedded_default() -> Config {
        Config::parse(DEFAULT_CONFIG, "<embedded default>")
            .expect("the embedded default config is valid")
    }

    /// Parses and validates config text; `source_name` names it in error messages. Pure: no IO.
    /// Path keys come back normalized (no repeated or trailing `/`).
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            let (line, key) = locate::locate_error(text, e.span().map(|s| s.start), &message);
            ConfigError {
                source_name: source_name.to_string(),
                line,
                key,
                message,
            }
        })?;
        let at = |e| key_error(text, source_name, e);
        config.normalize_paths().map_err(at)?;
        retention::normalize_dirs(&mut config.retention).map_err(at)?;
        config.validate().map_err(at)?;
        if config.tasks.db.is_none() && locate::is_present(text, &["tasks", "ghosts"]) {
            return Err(at((
                vec!["tasks".into(), "ghosts".into()],
                "the ghost reaper needs the task DB: set tasks.db, or remove [tasks.ghosts]".into(),
            )));
        }
        Ok(config)
    }

    /// Checks what TOML types cannot: ranges, relations between thresholds, paths, rule
    /// contents. Returns the key path of the offending value.
    fn validate(&self) -> Result<(), KeyError> {
        let key = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let d = &self.daemon;
        for (name, value, range) in [
            ("poll_interval", d.poll_interval, ranges::POLL_INTERVAL),
            (
                "sample_interval",
                d.sample_interval,
                ranges::SAMPLE_INTERVAL,
            ),
            ("active_within", d.active_within, ranges::ACTIVE_WITHIN),
        ] {
            range
                .check(value.0)
                .map_err(|m| (key(&["daemon", name]), m))?;
        }
        if let Some(command) = d.journal_vacuum.first() {
            if command.trim().is_empty() {
                return Err((
                    key(&["daemon", "journal_vacuum"]),
                    "the command name must not be empty (use [] to disable)".into(),
                ));
            }
        }
        if d.journal_vacuum.iter().any(|a| a.contains('\0')) {
            return Err((
                key(&["daemon", "journal_vacuum"]),
                "an argument contains a NUL byte".into(),
            ));
        }
        self.validate_paths()?;
        self.validate_thresholds()?;
        self.forecast.validate(&self.thresholds)?;
        for (i, ws) in self.workspaces.iter().enumerate() {
            let at = |field: &str| vec!["workspaces".to_string(), i.to_string(), field.to_string()];
            for name in &ws.protect {
                if !is_plain_name(name) {
                    return Err((
                        at("protect"),
                        format!(
                            "`{name}` must be a plain entry name (no `/`, not `.` or `..`, at \
                             most 255 bytes)"
                        ),
                    ));
                }
            }
        }
        self.validate_rules()?;
        let rule_names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        artifacts::validate(&self.artifacts, &rule_names)?;
        self.tasks.validate(&self.workspaces)?;
        retention::validate(&self.retention, &self.workspaces)?;
        self.git.validate()?;
        self.serve.validate()?;
        Ok(())
    }

    fn validate_thresholds(&self) -> Result<(), KeyError> {
        let t = &self.thresholds;
        let key = |k: &str| vec!["thresholds".to_string(), k.to_string()];
        ranges::check_bytes(t.min_free.0).map_err(|m| (key("min_free"), m))?;
        for (name, amount) in [
            ("cleanup_free", t.cleanup_free.0),
            ("critical_free", t.critical_free.0),
            ("target_free", t.target_free.0),
        ] {
            if let FreeAmount::Absolute(bytes) = amount {
                ranges::check_bytes(bytes).map_err(|m| (key(name), m))?;
            }
        }
        for (name, amount) in [
            ("inodes_cleanup_free", t.inodes_cleanup_free.0),
            ("inodes_critical_free", t.inodes_critical_free.0),
            ("inodes_target_free", t.inodes_target_free.0),
        ] {
            if let FreeAmount::Absolute(count) = amount {
                ranges::check_inodes(count).map_err(|m| (key(name), m))?;
            }
        }
        let ordered = |low: FreeAmount, high: FreeAmount| match (low, high) {
            (FreeAmount::Percent(a), FreeAmount::Percent(b)) => a <= b,
            (FreeAmount::Absolute(a), FreeAmount::Absolute(b)) => a <= b,
            _ => true,
        };
        if !ordered(t.critical_free.0, t.cleanup_free.0) {
            return Err((
                key("critical_free"),
                format!(
                    "{} must not be above cleanup_free ({})",
                    t.critical_free.0, t.cleanup_free.0
                ),
            ));
        }
        if !ordered(t.cleanup_free.0, t.target_free.0) {
            return Err((
                key("target_free"),
                format!(
                    "{} must not be below cleanup_free ({})",
                    t.target_free.0, t.cleanup_free.0
                ),
            ));
        }
        if !ordered(t.inodes_critical_free.0, t.inodes_cleanup_free.0) {
            return Err((
                key("inodes_critical_free"),
                "must not be above inodes_cleanup_free".into(),
            ));
        }
        if !ordered(t.inodes_cleanup_free.0, t.inodes_target_free.0) {
            return Err((
                key("inodes_target_free"),
                "must not be below inodes_cleanup_free".into(),
            ));
        }
        Ok(())
    }
}

/// A validation error turned into a [`ConfigError`] located in `text`.
fn key_error(text: &str, source_name: &str, (key_path, message): KeyError) -> ConfigError {
    ConfigError {
        source_name: source_name.to_string(),
        line: locate::locate_key(text, &key_path),
        key: Some(key_path.join(".")),
        message,
    }
}

/// The longest entry name Linux allows (`NAME_MAX`).
const NAME_MAX: usize = 255;

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains('/')
        && !name.contains('\0')
}

#[cfg(test)]
mod tests;
