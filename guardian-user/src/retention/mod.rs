//! Retention: `[[retention]]` rules applied to series of entries (model versions, backups per
//! type, logs). `keep.rs` is the pure core (entries in, series and verdicts with reasons out),
//! `list.rs` the thin IO layer that lists a dir without following symlinks, and this file ties
//! them to the executor: every deletion goes through [`Executor::execute_retention`] (and
//! compression through `compress.rs`), which re-checks pins, pointers, identity and protection
//! right before it acts.
//!
//! Invariants: this module never unlinks anything itself; an entry the rule's pattern does not
//! match is never touched; what a run decides is reported with a reason for every entry.

#[cfg(target_os = "linux")]
pub mod compress;
mod keep;
mod list;
#[cfg(test)]
mod tests;

pub use keep::{
    decide, natural_cmp, Decision, DirDecisions, Entry, KeepPolicy, Selector, Series, Untouched,
    Verdict, PIN_SUFFIX,
};
pub use list::{dirs_of, list, pointer_to, size_of, Listed, MAX_ENTRIES};

use crate::cleanup::{ActionReport, AuditFailed, Executor, Outcome, RetentionAction};
use crate::config::{Config, RetentionRule};
use crate::protect::ProcSnapshot;
use serde::Serialize;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Reads `text` with the strftime `format` as an instant: with an offset in the format as
/// written, without one as UTC. `None` when it does not parse.
pub fn parse_timestamp(format: &str, text: &[u8]) -> Option<jiff::Timestamp> {
    let tm = jiff::fmt::strtime::parse(format, text).ok()?;
    if let Ok(ts) = tm.to_timestamp() {
        return Some(ts);
    }
    let dt = tm.to_datetime().ok()?;
    jiff::tz::Offset::UTC.to_timestamp(dt).ok()
}

/// One rule's decisions (and, after [`apply`], what was done).
#[derive(Clone, Debug, Serialize)]
pub struct RuleReport {
    pub rule: String,
    pub compress: bool,
    pub dirs: Vec<DirReport>,
}

/// One retention dir: every series with a verdict and reasons per entry.
#[derive(Clone, Debug, Serialize)]
pub struct DirReport {
    #[serde(with = "crate::textpath")]
    pub dir: PathBuf,
    /// Why the dir was left alone, if it was.
    pub error: Option<String>,
    pub series: Vec<Series>,
    pub untouched: Vec<Untouched>,
    /// Entries decided to go, and their allocated bytes.
    pub entries_to_delete: usize,
    pub bytes_to_delete: u64,
    /// What the executor did with each entry decided to go (empty for a dry run).
    pub actions: Vec<ActionDone>,
    #[serde(skip)]
    stats: HashMap<OsString, crate::fsys::EntryStat>,
}

/// One executed retention step.
#[derive(Clone, Debug, Serialize)]
pub struct ActionDone {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    pub action: String,
    pub outcome: String,
    pub bytes_freed: u64,
    pub error: Option<String>,
}

/// Decides one rule over all its dirs. Read-only.
pub fn plan_rule(config: &Config, rule: &RetentionRule, procs: &ProcSnapshot) -> RuleReport {
    let sel = Selector::from_rule(rule);
    let dirs = dirs_of(rule, &config.workspaces)
        .into_iter()
        .map(|dir| plan_dir(dir, &sel, procs))
        .collect();
    RuleReport {
        rule: rule.name.clone(),
        compress: rule.compress,
        dirs,
    }
}

fn plan_dir(dir: PathBuf, sel: &Selector, procs: &ProcSnapshot) -> DirReport {
    let mut report = DirReport {
        dir,
        error: None,
        series: Vec::new(),
        untouched: Vec::new(),
        entries_to_delete: 0,
        bytes_to_delete: 0,
        actions: Vec::new(),
        stats: HashMap::new(),
    };
    let listed = match list(&report.dir, sel, procs) {
        Ok(l) => l,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let entries: Vec<Entry> = listed.iter().map(|l| l.entry.clone()).collect();
    let mut decided = decide(&entries, sel);
    for d in decided.series.iter_mut().flat_map(|s| &mut s.entries) {
        if d.verdict == Verdict::Delete {
            // Only what goes is walked (a kept version of 100 GB is not).
            if d.bytes.is_none() {
                d.bytes = size_of(&report.dir, d.name.as_os_str());
            }
            report.entries_to_delete += 1;
            report.bytes_to_delete = report.bytes_to_delete.saturating_add(d.bytes.unwrap_or(0));
        }
    }
    report.series = decided.series;
    report.untouched = decided.untouched;
    report.stats = listed.into_iter().map(|l| (l.entry.name, l.st)).collect();
    report
}

/// Carries out what `report` decided, entry by entry, through the executor (which re-checks
/// everything); `on_action` sees each executed step. Stops at an audit log that cannot be
/// written, and after an interrupted step.
pub fn apply(
    executor: &Executor,
    rule: &RetentionRule,
    report: &mut RuleReport,
    on_action: &mut dyn FnMut(&ActionReport),
) -> Result<(), AuditFailed> {
    for dir in &mut report.dirs {
        let todo: Vec<(PathBuf, String, Option<u64>)> = dir
            .series
            .iter()
            .flat_map(|s| &s.entries)
            .filter(|d| d.verdict == Verdict::Delete)
            .map(|d| (d.name.clone(), d.reasons.join("; "), d.bytes))
            .collect();
        for (name, reason, bytes) in todo {
            let Some(st) = dir.stats.get(name.as_os_str()) else {
                continue;
            };
            let action = RetentionAction {
                path: dir.dir.join(&name),
                rule: rule.name.clone(),
                reason,
                identity: (st.dev, st.ino),
                changed: st.changed(),
                bytes_estimated: bytes.unwrap_or(0),
                pointers: rule.pointers.clone(),
            };
            let result = step(executor, rule, &action);
            let (report, failed) = match result {
                Ok(r) => (r, None),
                Err(e) => ((*e.report).clone(), Some(e)),
            };
            dir.actions.push(done(&report));
            on_action(&report);
            if let Some(e) = failed {
                return Err(e);
            }
            if report.outcome == Outcome::Interrupted {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn step(
    executor: &Executor,
    rule: &RetentionRule,
    action: &RetentionAction,
) -> Result<ActionReport, AuditFailed> {
    if rule.compress {
        #[cfg(target_os = "linux")]
        return executor.compress_retention(action);
    }
    executor.execute_retention(action)
}

fn done(r: &ActionReport) -> ActionDone {
    ActionDone {
        path: r.record.path.clone(),
        action: r.record.action.clone(),
        outcome: r.record.outcome.clone(),
        bytes_freed: r.record.bytes_freed,
        error: r.record.error.clone(),
    }
}

/// Plans the rules `due` picks, over the dirs on the filesystem `dev` when given, and applies
/// them through `executor` when one is given (none: a dry run that touches nothing). The
/// daemon's and the CLI's one entry point.
pub fn run(
    config: &Config,
    executor: Option<&Executor>,
    due: &dyn Fn(&RetentionRule) -> bool,
    dev: Option<u64>,
    on_action: &mut dyn FnMut(&ActionReport),
) -> (Vec<RuleReport>, Option<AuditFailed>) {
    let procs = ProcSnapshot::capture();
    let mut reports = Vec::new();
    for rule in config.retention.iter().filter(|r| due(r)) {
        let mut report = plan_rule(config, rule, &procs);
        if let Some(dev) = dev {
            report.dirs.retain(|d| on_device(&d.dir, dev));
        }
        if let Some(executor) = executor {
            if let Err(e) = apply(executor, rule, &mut report, on_action) {
                reports.push(report);
                return (reports, Some(e));
            }
        }
        reports.push(report);
    }
    (reports, None)
}

fn on_device(dir: &Path, dev: u64) -> bool {
    crate::fsys::identity_of(dir).is_ok_and(|(d, _)| d == dev)
}

/// When each rule last ran: a rule is due at the daemon's first check and then every
/// `interval`. Bounded by the number of configured rules.
#[derive(Debug, Default)]
pub struct Schedule {
    last: HashMap<String, std::time::Instant>,
}

impl Schedule {
    /// The names of the rules due at `now`, marked as run.
    pub fn due(&mut self, now: std::time::Instant, rules: &[RetentionRule]) -> Vec<String> {
        self.last
            .retain(|name, _| rules.iter().any(|r| &r.name == name));
        let mut due = Vec::new();
        for rule in rules {
            let is_due = self
                .last
                .get(&rule.name)
                .is_none_or(|at| now.saturating_duration_since(*at) >= rule.interval.0);
            if is_due {
                self.last.insert(rule.name.clone(), now);
                due.push(rule.name.clone());
            }
        }
        due
    }
}
