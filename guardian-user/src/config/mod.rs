//! Guardian's configuration: the TOML schema, the embedded default, parsing and validation.
//! Owns every error message about the config file; it never touches the disk beyond reading the
//! file it is given.

mod forecast;
mod tasks;
mod units;

pub use forecast::{ForecastConfig, LeadTime};

pub use tasks::{
    named_params, AreaKind, GhostConfig, NaiveTimes, TasksConfig, UsageLimit, QUERY_PARAMS,
    UPDATE_PARAMS,
};

pub use units::{human_bytes, ByteSize, FreeAmount, FreeBytes, FreeInodes, HumanDuration};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};
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
    /// The task DB, task/scratch areas and their policies, the ghost reaper (`[tasks]`).
    #[serde(default)]
    pub tasks: TasksConfig,
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

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            poll_interval: default_poll_interval(),
            audit_log: default_audit_log(),
            state_dir: default_state_dir(),
            dry_run: false,
            journal_vacuum: Vec::new(),
            source: SourceKind::Auto,
            sample_interval: default_sample_interval(),
            active_within: default_active_within(),
            journal_dir: default_journal_dir(),
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

/// A cleanup rule: what to delete inside projects, and in which phase.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default = "default_phase")]
    pub phase: u8,
    /// Exact entry names (directories or files), e.g. `node_modules`; matched dirs are removed
    /// whole.
    #[serde(default)]
    pub names: Vec<String>,
    /// Shell globs on the entry name, e.g. `*.log`.
    #[serde(default)]
    pub globs: Vec<String>,
    /// Only entries whose newest modification is older than this.
    #[serde(default)]
    pub older_than: Option<HumanDuration>,
}

fn default_phase() -> u8 {
    1
}

/// A rule compiled for matching.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub name: String,
    pub phase: u8,
    names: HashSet<String>,
    globs: GlobSet,
    pub older_than: Option<Duration>,
}

impl CompiledRule {
    /// True when an entry called `name` is matched by this rule (age is checked separately).
    pub fn matches_name(&self, name: &str) -> bool {
        self.names.contains(name) || self.globs.is_match(name)
    }
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

impl Config {
    /// Reads and validates a config file. Nothing on disk is changed.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            line: None,
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Config::parse(&text, &name)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Config {
        Config::parse(DEFAULT_CONFIG, "<embedded default>")
            .expect("the embedded default config is valid")
    }

    /// Parses and validates config text; `source_name` names it in error messages.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let message = e.message().trim().to_string();
            let key = line
                .and_then(|l| key_at_line(text, l))
                .or_else(|| unknown_field_key(&message));
            ConfigError {
                source_name: source_name.to_string(),
                line,
                key,
                message,
            }
        })?;
        config
            .validate()
            .map_err(|(key_path, message)| ConfigError {
                source_name: source_name.to_string(),
                line: locate_key(text, &key_path),
                key: Some(key_path.join(".")),
                message,
            })?;
        Ok(config)
    }

    /// Checks what TOML types cannot: relations between thresholds, paths, rule contents.
    /// Returns the key path of the offending value.
    fn validate(&self) -> Result<(), (Vec<String>, String)> {
        let key = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        if self.daemon.poll_interval.0.is_zero() {
            return Err((
                key(&["daemon", "poll_interval"]),
                "must be longer than 0s".into(),
            ));
        }
        if self.daemon.sample_interval.0.is_zero() {
            return Err((
                key(&["daemon", "sample_interval"]),
                "must be longer than 0s".into(),
            ));
        }
        if self
            .daemon
            .journal_vacuum
            .first()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err((
                key(&["daemon", "journal_vacuum"]),
                "the command name must not be empty (use [] to disable)".into(),
            ));
        }
        if !self.daemon.audit_log.is_absolute() {
            return Err((
                key(&["daemon", "audit_log"]),
                "must be an absolute path".into(),
            ));
        }
        if !self.daemon.state_dir.is_absolute() {
            return Err((
                key(&["daemon", "state_dir"]),
                "must be an absolute path".into(),
            ));
        }
        self.validate_thresholds()?;
        self.forecast.validate(&self.thresholds)?;
        let mut seen_paths = HashSet::new();
        for (i, ws) in self.workspaces.iter().enumerate() {
            let at = |field: &str| vec!["workspaces".to_string(), i.to_string(), field.to_string()];
            if !ws.path.is_absolute() {
                return Err((
                    at("path"),
                    format!("`{}` must be an absolute path", ws.path.display()),
                ));
            }
            if ws
                .path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            {
                return Err((
                    at("path"),
                    format!("`{}` must not contain `.` or `..`", ws.path.display()),
                ));
            }
            if ws.path.parent().is_none() {
                return Err((
                    at("path"),
                    "the filesystem root `/` cannot be a workspace".into(),
                ));
            }
            if !seen_paths.insert(ws.path.clone()) {
                return Err((
                    at("path"),
                    format!("`{}` is listed twice", ws.path.display()),
                ));
            }
            for name in &ws.protect {
                if !is_plain_name(name) {
                    return Err((
                        at("protect"),
                        format!("`{name}` must be a plain entry name (no `/`, not `.` or `..`)"),
                    ));
                }
            }
        }
        let mut seen_rules = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| vec!["rules".to_string(), i.to_string(), field.to_string()];
            if rule.name.trim().is_empty() {
                return Err((at("name"), "must not be empty".into()));
            }
            if !seen_rules.insert(rule.name.clone()) {
                return Err((
                    at("name"),
                    format!("rule name `{}` is used twice", rule.name),
                ));
            }
            if !(1..=2).contains(&rule.phase) {
                return Err((at("phase"), format!("must be 1 or 2, not {}", rule.phase)));
            }
            if rule.names.is_empty() && rule.globs.is_empty() {
                return Err((
                    at("names"),
                    "a rule needs at least one entry in `names` or `globs`".into(),
                ));
            }
            for name in &rule.names {
                if !is_plain_name(name) {
                    return Err((
                        at("names"),
                        format!("`{name}` must be a plain entry name (no `/`, not `.` or `..`)"),
                    ));
                }
            }
            for glob in &rule.globs {
                if glob.contains('/') {
                    return Err((
                        at("globs"),
                        format!("`{glob}` matches entry names, so it must not contain `/`"),
                    ));
                }
                Glob::new(glob)
                    .map_err(|e| (at("globs"), format!("`{glob}` is not a valid glob: {e}")))?;
            }
        }
        self.tasks.validate(&self.workspaces)?;
        Ok(())
    }

    fn validate_thresholds(&self) -> Result<(), (Vec<String>, String)> {
        let t = &self.thresholds;
        let key = |k: &str| vec!["thresholds".to_string(), k.to_string()];
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

    /// The rules compiled for matching, in config order.
    pub fn compiled_rules(&self) -> Vec<CompiledRule> {
        self.rules
            .iter()
            .map(|rule| {
                let mut builder = GlobSetBuilder::new();
                for glob in &rule.globs {
                    builder.add(Glob::new(glob).expect("globs are validated at load"));
                }
                CompiledRule {
                    name: rule.name.clone(),
                    phase: rule.phase,
                    names: rule.names.iter().cloned().collect(),
                    globs: builder.build().expect("globs are validated at load"),
                    older_than: rule.older_than.map(|d| d.0),
                }
            })
            .collect()
    }
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// 1-based line number of byte offset `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted key defined on `line` (1-based), with the table header it sits under.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?;
    let (key, _) = this.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let before = &lines[..line - 1];
    let header = before
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['));
    let table = header.map(|h| {
        let name = h.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        if h.starts_with("[[") {
            // An array of tables: name the element by its index.
            let index = before.iter().filter(|l| l.trim() == h).count() - 1;
            format!("{name}.{index}")
        } else {
            name
        }
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// The field name in serde's "unknown field `x`" message.
fn unknown_field_key(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// Line of the value at `path` (table keys and array-of-tables indices) in the TOML text.
fn locate_key(text: &str, path: &[String]) -> Option<usize> {
    let doc = toml_edit::Document::parse(text.to_string()).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut span = None;
    let mut parts = path.iter();
    while let Some(part) = parts.next() {
        let Some((key, value)) = table.get_key_value(part) else {
            break;
        };
        span = key.span().or(value.span()).or(span);
        match value {
            toml_edit::Item::ArrayOfTables(array) => {
                let Some(element) = parts
                    .next()
                    .and_then(|p| p.parse::<usize>().ok())
                    .and_then(|i| array.get(i))
                else {
                    break;
                };
                span = element.span().or(span);
                table = element;
            }
            other => match other.as_table_like() {
                Some(inner) => table = inner,
                None => break,
            },
        }
    }
    span.map(|s| line_of(text, s.start))
}

#[cfg(test)]
mod tests;
