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
mod tests {
    use super::super::Config;

    /// Parses a config with one workspace and `table` as its retention rule(s).
    fn parse(table: &str) -> Result<Config, String> {
        let text = format!(
            "[[workspaces]]\npath = \"/w\"\nprotect = [\"output\"]\n\n[[retention]]\n{table}\n"
        );
        Config::parse(&text, "test").map_err(|e| e.to_string())
    }

    fn refused(table: &str, key: &str, words: &str) {
        let e = parse(table).expect_err(table);
        assert!(e.contains(&format!("at key `{key}`")), "{table}: {e}");
        assert!(e.contains(words), "{table}: {e}");
    }

    const OK: &str = "name = \"r\"\ndir = \"/w/p/versions\"\nglob = \"v*\"\nkeep_last = 2";

    #[test]
    fn a_valid_rule_parses_with_its_defaults() {
        let c = parse(OK).unwrap();
        let r = &c.retention[0];
        assert_eq!(r.pointers, ["current", "latest"]);
        assert_eq!(r.interval.0.as_secs(), 86_400);
        assert!(!r.compress);
        let c =
            parse("name = \"r\"\ndir = \"/w//p/versions/\"\nglob = \"v*\"\nkeep_last = 2").unwrap();
        assert_eq!(
            c.retention[0].dir.as_deref(),
            Some(std::path::Path::new("/w/p/versions"))
        );
    }

    #[test]
    fn where_a_rule_applies_is_checked() {
        refused(
            "name = \"r\"\ndir = \"/srv/versions\"\nglob = \"v*\"\nkeep_last = 2",
            "retention.0.dir",
            "not inside a configured workspace",
        );
        refused(
            "name = \"r\"\ndir = \"/w\"\nglob = \"v*\"\nkeep_last = 2",
            "retention.0.dir",
            "not inside a configured workspace",
        );
        refused(
            "name = \"r\"\ndir = \"/w/output/v\"\nglob = \"v*\"\nkeep_last = 2",
            "retention.0.dir",
            "protected entry",
        );
        refused(
            "name = \"r\"\ndir = \"/w/p/../etc\"\nglob = \"v*\"\nkeep_last = 2",
            "retention.0.dir",
            "`..`",
        );
        refused(
            "name = \"r\"\nglob = \"v*\"\nkeep_last = 2",
            "retention.0.dir",
            "needs `dir`",
        );
        refused(
            "name = \"r\"\ndir = \"/w/p/v\"\nproject_dir = \"v\"\nglob = \"v*\"\nkeep_last = 2",
            "retention.0.project_dir",
            "not both",
        );
        for bad in ["/abs", "a/../b", "./a", "a//b", ""] {
            refused(
                &format!("name = \"r\"\nproject_dir = \"{bad}\"\nglob = \"v*\"\nkeep_last = 2"),
                "retention.0.project_dir",
                "`",
            );
        }
    }

    #[test]
    fn selection_and_order_are_checked() {
        let base = "name = \"r\"\ndir = \"/w/p/v\"\nkeep_last = 1\n";
        refused(base, "retention.0.glob", "by `glob` or `regex`");
        refused(
            &format!("{base}glob = \"v*\"\nregex = \"v\""),
            "retention.0.regex",
            "not both",
        );
        refused(
            &format!("{base}regex = \"v(\""),
            "retention.0.regex",
            "not a valid regex",
        );
        refused(
            &format!("{base}glob = \"a/b\""),
            "retention.0.glob",
            "no `/`",
        );
        refused(
            &format!("{base}glob = \"[\""),
            "retention.0.glob",
            "not a valid glob",
        );
        refused(
            &format!("{base}glob = \"v*\"\norder = \"timestamp\""),
            "retention.0.order",
            "named group `ts`",
        );
        refused(
            &format!("{base}regex = '(?P<ts>\\d+)'\norder = \"timestamp\""),
            "retention.0.timestamp_format",
            "needs `timestamp_format`",
        );
        refused(
            &format!(
                "{base}regex = '(?P<ts>\\d+)'\norder = \"timestamp\"\ntimestamp_format = \"%H%M\""
            ),
            "retention.0.timestamp_format",
            "",
        );
        refused(
            &format!("{base}glob = \"v*\"\ntimestamp_format = \"%Y\""),
            "retention.0.timestamp_format",
            "only used with",
        );
        refused(
            &format!("{base}glob = \"v*\"\norder = \"size\""),
            "retention.0.order",
            "",
        );
        // A huge regex is refused, not compiled without bound.
        refused(
            &format!("{base}regex = '(\\w{{50}}){{50}}'"),
            "retention.0.regex",
            "not a valid regex",
        );
    }

    #[test]
    fn keep_counts_and_durations_have_ranges() {
        let base = "name = \"r\"\ndir = \"/w/p/v\"\nglob = \"v*\"\n";
        refused(base, "retention.0.keep_last", "must say what it keeps");
        refused(
            &format!("{base}keep_last = 100001"),
            "retention.0.keep_last",
            "outside the allowed range",
        );
        refused(
            &format!("{base}keep_daily = 200000"),
            "retention.0.keep_daily",
            "outside the allowed range",
        );
        refused(
            &format!("{base}keep_last = -1"),
            "retention.0.keep_last",
            "",
        );
        refused(
            &format!("{base}keep_within = \"11years\""),
            "retention.0.keep_within",
            "0s to 10years",
        );
        refused(
            &format!("{base}keep_last = 1\ninterval = \"1s\""),
            "retention.0.interval",
            "1m to 30days",
        );
        refused(
            &format!("{base}keep_last = 1\npointers = [\"a/b\"]"),
            "retention.0.pointers",
            "plain entry name",
        );
        refused(
            &format!("{base}keep_last = 1\nkeep = 3"),
            "retention.0.keep",
            "unknown field",
        );
        parse(&format!("{base}keep_within = \"0s\"")).unwrap();
    }

    #[test]
    fn names_are_checked_and_unique() {
        let text = "[[workspaces]]\npath = \"/w\"\n[[retention]]\nname = \"r\"\ndir = \"/w/p/a\"\nglob = \"v*\"\nkeep_last = 1\n[[retention]]\nname = \"r\"\ndir = \"/w/p/b\"\nglob = \"v*\"\nkeep_last = 1\n";
        let e = Config::parse(text, "test").unwrap_err().to_string();
        assert!(
            e.contains("retention.1.name") && e.contains("used twice"),
            "{e}"
        );
        refused(
            "name = \"\"\ndir = \"/w/p/v\"\nglob = \"v*\"\nkeep_last = 1",
            "retention.0.name",
            "must not be empty",
        );
    }

    #[test]
    fn docs_list_every_range_in_the_row_of_its_key() {
        let docs = include_str!("../../../docs/config.md");
        let row = |field: &str| {
            docs.lines()
                .filter(|l| l.starts_with(&format!("| `{field}` |")))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for r in [super::KEEP_WITHIN, super::INTERVAL] {
            let field = r.key.rsplit('.').next().unwrap();
            assert!(row(field).contains(r.text), "docs: {} {}", r.key, r.text);
            let (lo, hi) = r.text.split_once(" to ").unwrap();
            assert_eq!(humantime::parse_duration(lo).unwrap(), r.min);
            assert_eq!(humantime::parse_duration(hi).unwrap(), r.max);
        }
        for field in ["keep_last", "keep_daily", "keep_weekly", "keep_monthly"] {
            assert!(
                row(field).contains(&format!("0 to {}", super::MAX_KEEP)),
                "docs: {field}"
            );
        }
    }

    #[test]
    fn the_embedded_default_has_the_seed_004_rules() {
        let c = Config::embedded_default();
        let names: Vec<_> = c.retention.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["model-versions", "model-backups", "logs"]);
        assert!(c
            .retention
            .iter()
            .all(|r| r.project_dir.is_some() && !r.compress));
    }
}
