//! The `[[retention]]` tables: which entries of which directory form series, how a series is
//! ordered, and what of it is kept (keep_last, keep_within, keep_daily/weekly/monthly, pins,
//! `current`/`latest` pointers). Parsing and validation only: every value in a sane range, every
//! error naming its key. A retention dir must lie inside a configured workspace (below its
//! root), so the executor's workspace rules cover every entry a retention rule can delete.

use super::paths::normalize;
use super::ranges::DurationRange;
use super::units::HumanDuration;
use super::{KeyError, Workspace};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// One `[[retention]]` table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Named in every decision and audit line (`retention:NAME`).
    pub name: String,
    /// One absolute directory (inside a configured workspace, below its root).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// A relative path looked up in every project of every workspace, e.g. `models/versions`.
    #[serde(default)]
    pub project_dir: Option<PathBuf>,
    /// Entries whose name matches this glob are the rule's (one series).
    #[serde(default)]
    pub glob: Option<String>,
    /// Entries whose name matches this regex are the rule's; a named group `series` groups them
    /// into series, a named group `ts` is the timestamp for `order = "timestamp"`.
    #[serde(default)]
    pub regex: Option<String>,
    /// How a series is ordered, oldest to newest.
    #[serde(default)]
    pub order: Order,
    /// The `strftime` format of the `ts` group (jiff), e.g. `%Y%m%d_%H%M%S`; read as UTC.
    #[serde(default)]
    pub timestamp_format: Option<String>,
    #[serde(default)]
    pub keep_last: u32,
    /// Entries within this time of the newest entry of their series (not of now).
    #[serde(default)]
    pub keep_within: Option<HumanDuration>,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
    /// Names of symlinks whose target is never deleted; entries with these names are never
    /// touched whatever they are.
    #[serde(default = "default_pointers")]
    pub pointers: Vec<String>,
    /// Compress (zstd) what goes instead of deleting it.
    #[serde(default)]
    pub compress: bool,
    /// How often the daemon applies the rule (it also runs in every phase-1 cycle).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
}

/// How a series is ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// By name, digit runs compared as numbers (`v9` before `v10`).
    #[default]
    Name,
    /// By the `ts` capture of `regex`, parsed with `timestamp_format`.
    Timestamp,
    /// By modification time.
    Mtime,
}

fn default_pointers() -> Vec<String> {
    vec!["current".into(), "latest".into()]
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(86_400))
}

/// The most entries any count keeps.
pub const MAX_KEEP: u32 = 100_000;
/// The most bytes a regex may compile to.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
const MAX_PATTERN: usize = 1024;
const MAX_POINTERS: usize = 16;
const MAX_PROJECT_DIR_DEPTH: usize = 16;

const DAY: u64 = 86_400;
/// `retention.*.keep_within`.
pub const KEEP_WITHIN: DurationRange = DurationRange {
    key: "retention.*.keep_within",
    min: Duration::from_secs(0),
    max: Duration::from_secs(10 * 31_557_600),
    text: "0s to 10years",
};
/// `retention.*.interval`.
pub const INTERVAL: DurationRange = DurationRange {
    key: "retention.*.interval",
    min: Duration::from_secs(60),
    max: Duration::from_secs(30 * DAY),
    text: "1m to 30days",
};

impl RetentionRule {
    /// The compiled name regex (validated at load), if the rule has one.
    pub fn compiled_regex(&self) -> Option<regex::bytes::Regex> {
        self.regex.as_deref().and_then(|r| compile_regex(r).ok())
    }

    /// The compiled glob (validated at load), if the rule has one.
    pub fn compiled_glob(&self) -> Option<globset::GlobMatcher> {
        self.glob
            .as_deref()
            .and_then(|g| globset::Glob::new(g).ok())
            .map(|g| g.compile_matcher())
    }
}

fn compile_regex(text: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::RegexBuilder::new(text)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("`{text}` is not a valid regex: {e}"))
}

/// Normalizes each rule's `dir` (absolute, no `.`/`..`, no repeated `/`).
pub(super) fn normalize_dirs(rules: &mut [RetentionRule]) -> Result<(), KeyError> {
    for (i, rule) in rules.iter_mut().enumerate() {
        if let Some(dir) = &rule.dir {
            let normalized = normalize(dir).map_err(|m| (key(i, "dir"), m))?;
            rule.dir = Some(normalized);
        }
    }
    Ok(())
}

fn key(i: usize, field: &str) -> Vec<String> {
    vec!["retention".into(), i.to_string(), field.into()]
}

/// Checks every `[[retention]]` table against itself and the workspaces.
pub(super) fn validate(rules: &[RetentionRule], workspaces: &[Workspace]) -> Result<(), KeyError> {
    let mut names = HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = |field: &str| key(i, field);
        if rule.name.trim().is_empty() {
            return Err((at("name"), "must not be empty".into()));
        }
        if rule.name.chars().any(char::is_control) || rule.name.len() > 100 {
            return Err((
                at("name"),
                "must be at most 100 bytes without control characters".into(),
            ));
        }
        if !names.insert(rule.name.as_str()) {
            return Err((
                at("name"),
                format!("retention rule name `{}` is used twice", rule.name),
            ));
        }
        validate_where(rule, workspaces, &at)?;
        validate_selection(rule, &at)?;
        validate_keep(rule, &at)?;
        for pointer in &rule.pointers {
            if !super::is_plain_name(pointer) {
                return Err((
                    at("pointers"),
                    format!("`{pointer}` must be a plain entry name"),
                ));
            }
        }
        if rule.pointers.len() > MAX_POINTERS {
            return Err((
                at("pointers"),
                format!("at most {MAX_POINTERS} pointer names"),
            ));
        }
        INTERVAL
            .check(rule.interval.0)
            .map_err(|m| (at("interval"), m))?;
        if rule.compress && !cfg!(target_os = "linux") {
            return Err((at("compress"), "compressing needs Linux".into()));
        }
    }
    Ok(())
}

fn validate_where(
    rule: &RetentionRule,
    workspaces: &[Workspace],
    at: &dyn Fn(&str) -> Vec<String>,
) -> Result<(), KeyError> {
    match (&rule.dir, &rule.project_dir) {
        (Some(_), Some(_)) => Err((
            at("project_dir"),
            "set either `dir` or `project_dir`, not both".into(),
        )),
        (None, None) => Err((
            at("dir"),
            "a retention rule needs `dir` (absolute) or `project_dir` (relative to each project)"
                .into(),
        )),
        (Some(dir), None) => {
            let inside = workspaces.iter().any(|ws| {
                dir.strip_prefix(&ws.path)
                    .is_ok_and(|rel| rel.components().next().is_some())
            });
            if !inside {
                return Err((
                    at("dir"),
                    format!(
                        "`{}` is not inside a configured workspace: retention deletes only \
                         below a workspace root (add the workspace, or use `project_dir`)",
                        crate::textpath::shown(dir)
                    ),
                ));
            }
            if let Some(ws) = workspaces.iter().find(|ws| {
                dir.strip_prefix(&ws.path)
                    .ok()
                    .and_then(|rel| rel.components().next())
                    .is_some_and(|first| {
                        ws.protect
                            .iter()
                            .any(|p| std::ffi::OsStr::new(p) == first.as_os_str())
                    })
            }) {
                return Err((
                    at("dir"),
                    format!(
                        "`{}` lies in a protected entry of workspace {}",
                        crate::textpath::shown(dir),
                        crate::textpath::shown(&ws.path)
                    ),
                ));
            }
            Ok(())
        }
        (None, Some(rel)) => check_project_dir(rel).map_err(|m| (at("project_dir"), m)),
    }
}

fn check_project_dir(rel: &Path) -> Result<(), String> {
    let raw = rel.as_os_str().as_encoded_bytes();
    let quoted = crate::textpath::shown(rel);
    if raw.is_empty() || raw.starts_with(b"/") {
        return Err(format!(
            "`{quoted}` must be a relative path inside each project, e.g. `models/versions`"
        ));
    }
    let parts: Vec<&[u8]> = raw.split(|b| *b == b'/').collect();
    if parts.len() > MAX_PROJECT_DIR_DEPTH
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == b"." || *p == b".." || p.len() > 255 || p.contains(&0))
        || rel.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "`{quoted}` must be plain names joined by `/` (no `.`, `..`, empty parts), at most \
             {MAX_PROJECT_DIR_DEPTH} deep"
        ));
    }
    Ok(())
}

fn validate_selection(
    rule: &RetentionRule,
    at: &dyn Fn(&str) -> Vec<String>,
) -> Result<(), KeyError> {
    let regex = match (&rule.glob, &rule.regex) {
        (Some(_), Some(_)) => {
            return Err((at("regex"), "set either `glob` or `regex`, not both".into()))
        }
        (None, None) => {
            return Err((
                at("glob"),
                "a retention rule selects entries by `glob` or `regex`".into(),
            ))
        }
        (Some(glob), None) => {
            if glob.trim().is_empty() || glob.len() > MAX_PATTERN {
                return Err((at("glob"), format!("must be 1 to {MAX_PATTERN} bytes")));
            }
            if glob.contains('/') || glob.contains('\0') {
                return Err((
                    at("glob"),
                    format!("`{glob}` matches entry names: no `/` or NUL byte"),
                ));
            }
            globset::Glob::new(glob)
                .map_err(|e| (at("glob"), format!("`{glob}` is not a valid glob: {e}")))?;
            None
        }
        (None, Some(text)) => {
            if text.is_empty() || text.len() > MAX_PATTERN {
                return Err((at("regex"), format!("must be 1 to {MAX_PATTERN} bytes")));
            }
            Some(compile_regex(text).map_err(|m| (at("regex"), m))?)
        }
    };
    let has_group = |name: &str| {
        regex
            .as_ref()
            .is_some_and(|r| r.capture_names().flatten().any(|n| n == name))
    };
    match rule.order {
        Order::Timestamp => {
            if !has_group("ts") {
                return Err((
                    at("order"),
                    "`order = \"timestamp\"` needs a `regex` with a named group `ts`, e.g. \
                     `_(?P<ts>\\d{8}_\\d{6})$`"
                        .into(),
                ));
            }
            let Some(format) = &rule.timestamp_format else {
                return Err((
                    at("timestamp_format"),
                    "`order = \"timestamp\"` needs `timestamp_format`, e.g. `%Y%m%d_%H%M%S`".into(),
                ));
            };
            check_timestamp_format(format).map_err(|m| (at("timestamp_format"), m))?;
        }
        Order::Name | Order::Mtime => {
            if rule.timestamp_format.is_some() {
                return Err((
                    at("timestamp_format"),
                    "only used with `order = \"timestamp\"`".into(),
                ));
            }
        }
    }
    Ok(())
}

/// A format is usable when a known instant formats with it and parses back to itself.
fn check_timestamp_format(format: &str) -> Result<(), String> {
    if format.is_empty() || format.len() > 200 {
        return Err("must be 1 to 200 bytes".into());
    }
    let probe = jiff::civil::date(2026, 11, 28).at(13, 45, 56, 0);
    let text = jiff::fmt::strtime::format(format, probe)
        .map_err(|e| format!("`{format}` is not a valid strftime format: {e}"))?;
    let parsed = crate::retention::parse_timestamp(format, text.as_bytes()).ok_or_else(|| {
        format!(
            "`{format}` cannot be read back (it must name at least the date: %Y, %m, %d; \
             {text:?} did not parse)"
        )
    })?;
    if jiff::tz::Offset::UTC.to_datetime(parsed).date() != probe.date() {
        return Err(format!(
            "`{format}` loses the date ({text:?} read back as {parsed})"
        ));
    }
    Ok(())
}

fn validate_keep(rule: &RetentionRule, at: &dyn Fn(&str) -> Vec<String>) -> Result<(), KeyError> {
    for (field, value) in [
        ("keep_last", rule.keep_last),
        ("keep_daily", rule.keep_daily),
        ("keep_weekly", rule.keep_weekly),
        ("keep_monthly", rule.keep_monthly),
    ] {
        if value > MAX_KEEP {
            return Err((
                at(field),
                format!("{value} is outside the allowed range 0 to {MAX_KEEP}"),
            ));
        }
    }
    if let Some(within) = rule.keep_within {
        KEEP_WITHIN
            .check(within.0)
            .map_err(|m| (at("keep_within"), m))?;
    }
    if rule.keep_last == 0
        && rule.keep_within.is_none()
        && rule.keep_daily == 0
        && rule.keep_weekly == 0
        && rule.keep_monthly == 0
    {
        return Err((
            at("keep_last"),
            "a retention rule must say what it keeps: keep_last, keep_within, keep_daily, \
             keep_weekly or keep_monthly"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
