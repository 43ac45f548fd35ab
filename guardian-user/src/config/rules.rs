//! `[[rules]]`: the schema of a cleanup rule, its validation, and the compiled matchers the
//! survey uses — the rules, then the enabled artifact types of the table, in matching order.

use super::{
    artifacts, is_plain_name, ranges, ArtifactType, Config, HumanDuration, KeyError, Markers,
};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::Duration;

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
    /// Estimated time to rebuild what the rule deletes (fixed part); none: nothing to rebuild.
    #[serde(default)]
    pub rebuild: Option<HumanDuration>,
    /// Estimated rebuild time per GiB, added to `rebuild`.
    #[serde(default)]
    pub rebuild_per_gib: Option<HumanDuration>,
}

fn default_phase() -> u8 {
    1
}

/// A rule, or an artifact type of the table, compiled for matching.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub name: String,
    pub phase: u8,
    names: HashSet<String>,
    globs: GlobSet,
    pub older_than: Option<Duration>,
    /// An artifact type's markers: the entry counts only when they prove it (and it is a dir).
    pub markers: Option<Markers>,
    /// What deleting a match costs to undo (the estimate model, `policy::RebuildCost`).
    pub cost: crate::policy::RebuildCost,
}

impl CompiledRule {
    /// True when an entry called `name` is matched by this rule's names or globs (age and
    /// markers are checked separately).
    pub fn matches_name(&self, name: &str) -> bool {
        self.names.contains(name) || self.globs.is_match(name)
    }

    /// True when this rule takes the entry: its name matches, and for an artifact type it is a
    /// directory its markers prove (`siblings`: the entries beside it; `children`: its own,
    /// when listed).
    pub fn matches(
        &self,
        name: &str,
        is_dir: bool,
        siblings: &dyn crate::scan::Neighbours,
        children: Option<&dyn crate::scan::Neighbours>,
    ) -> bool {
        if !self.matches_name(name) {
            return false;
        }
        match &self.markers {
            None => true,
            Some(m) => is_dir && m.prove(siblings, children),
        }
    }
}

impl Config {
    pub(super) fn validate_rules(&self) -> Result<(), KeyError> {
        let mut seen_rules = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |field: &str| vec!["rules".to_string(), i.to_string(), field.to_string()];
            if rule.name.trim().is_empty() {
                return Err((at("name"), "must not be empty".into()));
            }
            if rule.name.chars().any(char::is_control) || rule.name.len() > 100 {
                return Err((
                    at("name"),
                    "must be at most 100 bytes without control characters".into(),
                ));
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
            for (field, value, range) in [
                ("older_than", rule.older_than, ranges::OLDER_THAN),
                ("rebuild", rule.rebuild, ranges::REBUILD),
                (
                    "rebuild_per_gib",
                    rule.rebuild_per_gib,
                    ranges::REBUILD_PER_GIB,
                ),
            ] {
                if let Some(d) = value {
                    range.check(d.0).map_err(|m| (at(field), m))?;
                }
            }
            if artifacts::builtin_names().any(|n| n == rule.name) {
                return Err((
                    at("name"),
                    format!(
                        "`{}` names a built-in artifact type: give the rule a name of its own",
                        rule.name
                    ),
                ));
            }
            for name in &rule.names {
                if !is_plain_name(name) {
                    return Err((
                        at("names"),
                        format!(
                            "`{name}` must be a plain entry name (no `/`, not `.` or `..`, at \
                             most 255 bytes)"
                        ),
                    ));
                }
                if name == crate::scan::KEEP_MARKER {
                    return Err((
                        at("names"),
                        format!("`{name}` is Guardian's keep marker: a rule must not delete it"),
                    ));
                }
            }
            for glob in &rule.globs {
                check_glob(glob).map_err(|m| (at("globs"), m))?;
            }
        }
        Ok(())
    }

    /// The project-type artifact table after the `[[artifacts]]` entries (disabled types
    /// included, marked so).
    pub fn artifact_types(&self) -> Vec<ArtifactType> {
        artifacts::resolve(&self.artifacts)
    }

    /// What the survey matches, in matching order (the first that takes an entry wins, so
    /// nothing is matched twice): the `[[rules]]` in config order, then the enabled artifact
    /// types of the table (phase 1, each only where its marker proves it).
    pub fn compiled_rules(&self) -> Vec<CompiledRule> {
        let globset = |globs: &[String]| {
            let mut builder = GlobSetBuilder::new();
            for glob in globs {
                builder.add(Glob::new(glob).expect("globs are validated at load"));
            }
            builder.build().expect("globs are validated at load")
        };
        let rules = self.rules.iter().map(|rule| CompiledRule {
            name: rule.name.clone(),
            phase: rule.phase,
            names: rule.names.iter().cloned().collect(),
            globs: globset(&rule.globs),
            older_than: rule.older_than.map(|d| d.0),
            markers: None,
            cost: crate::policy::RebuildCost {
                base_secs: rule.rebuild.map_or(0, |d| d.0.as_secs()),
                per_gib_secs: rule.rebuild_per_gib.map_or(0, |d| d.0.as_secs()),
            },
        });
        let artifacts = self
            .artifact_types()
            .into_iter()
            .filter(|t| t.enabled)
            .map(|t| CompiledRule {
                name: t.name.clone(),
                phase: 1,
                names: HashSet::new(),
                globs: globset(&t.dirs),
                older_than: t.older_than,
                markers: Some(Markers::compile(&t)),
                cost: t.cost(),
            });
        rules.chain(artifacts).collect()
    }
}

/// Names unlike each other: a glob matching all of them matches every entry name.
const PROBE_NAMES: &[&str] = &[
    "a",
    "Z9",
    "node_modules",
    ".hidden",
    "build.log",
    "x y-z_0.tar.gz",
    "\u{e9}t\u{e9}",
    "0123456789abcdefghijklmnopqrstuvwxyz",
];

/// Checks one `rules.N.globs` entry: a valid glob on entry names that names something.
pub(super) fn check_glob(glob: &str) -> Result<(), String> {
    if glob.trim().is_empty() {
        return Err("a glob must not be empty".into());
    }
    if glob.contains('/') || glob.contains('\0') {
        return Err(format!(
            "`{glob}` matches entry names, so it must not contain `/` or a NUL byte"
        ));
    }
    if glob.len() > 1024 {
        return Err("a glob must be at most 1024 bytes".into());
    }
    let matcher = Glob::new(glob)
        .map_err(|e| format!("`{glob}` is not a valid glob: {e}"))?
        .compile_matcher();
    if PROBE_NAMES.iter().all(|n| matcher.is_match(n)) {
        return Err(format!(
            "`{glob}` matches every entry name: a rule must say what it deletes (e.g. `*.log`)"
        ));
    }
    if matcher.is_match(crate::scan::KEEP_MARKER) {
        return Err(format!(
            "`{glob}` matches `{}`, Guardian's keep marker: a rule must not delete it",
            crate::scan::KEEP_MARKER
        ));
    }
    Ok(())
}
