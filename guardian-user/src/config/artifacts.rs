//! The project-type artifact table (`[[artifacts]]`): the built-in types (a `target/` proven by
//! a `Cargo.toml` beside it, a `.venv` by the `pyvenv.cfg` inside it, …), how config entries
//! replace, add or disable them by name, their validation, and the compiled marker check the
//! survey asks. A directory counts as an artifact only when its marker proves what it is.

use super::{check_glob, is_plain_name, ranges, HumanDuration, KeyError};
use crate::policy::RebuildCost;
use crate::scan::Neighbours;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

/// One `[[artifacts]]` entry: with a built-in type's `name` it replaces the keys it sets (and
/// `enabled = false` disables the type); with a new name it adds a type (then `dirs` and a
/// marker are required).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Directory names (or globs on the name) this type can have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirs: Option<Vec<String>>,
    /// Globs: a regular file one of them names must sit beside the dir (in its parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beside: Option<Vec<String>>,
    /// Globs: when set, a regular file one of them names must also sit beside the dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also_beside: Option<Vec<String>>,
    /// Globs: a regular file one of them names must sit inside the dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inside: Option<Vec<String>>,
    /// The fixed part of the estimated time to rebuild (or restore) the dir once deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<HumanDuration>,
    /// The estimated rebuild time per GiB the dir holds, added to `rebuild`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_per_gib: Option<HumanDuration>,
    /// Only dirs whose newest change is older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<HumanDuration>,
}

/// One artifact type after the config's entries were applied to the built-in table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArtifactType {
    pub name: String,
    pub enabled: bool,
    pub dirs: Vec<String>,
    pub beside: Vec<String>,
    pub also_beside: Vec<String>,
    pub inside: Vec<String>,
    pub rebuild: Duration,
    pub rebuild_per_gib: Duration,
    pub older_than: Option<Duration>,
}

/// A built-in type, as code.
struct Builtin {
    name: &'static str,
    enabled: bool,
    dirs: &'static [&'static str],
    beside: &'static [&'static str],
    also_beside: &'static [&'static str],
    inside: &'static [&'static str],
    /// Seconds: fixed part, then per GiB.
    rebuild: (u64, u64),
}

const GRADLE: &[&str] = &[
    "build.gradle",
    "build.gradle.kts",
    "settings.gradle",
    "settings.gradle.kts",
];

/// The built-in table, in matching order (the first type whose name and marker match wins).
/// The estimates are documented in docs/artifacts.md.
const BUILTIN: &[Builtin] = &[
    Builtin {
        name: "node-modules",
        enabled: true,
        dirs: &["node_modules"],
        beside: &["package.json"],
        also_beside: &[],
        inside: &[],
        rebuild: (15, 30),
    },
    Builtin {
        name: "cargo-target",
        enabled: true,
        dirs: &["target"],
        beside: &["Cargo.toml"],
        also_beside: &[],
        inside: &[],
        rebuild: (120, 300),
    },
    Builtin {
        name: "python-venv",
        enabled: true,
        dirs: &[".venv", "venv"],
        beside: &[],
        also_beside: &[],
        inside: &["pyvenv.cfg"],
        rebuild: (30, 60),
    },
    Builtin {
        name: "python-bytecode",
        enabled: true,
        dirs: &["__pycache__"],
        beside: &[],
        also_beside: &[],
        inside: &["*.pyc"],
        rebuild: (1, 10),
    },
    Builtin {
        name: "pytest-cache",
        enabled: true,
        dirs: &[".pytest_cache"],
        beside: &[],
        also_beside: &[],
        inside: &["CACHEDIR.TAG"],
        rebuild: (1, 0),
    },
    Builtin {
        name: "mypy-cache",
        enabled: true,
        dirs: &[".mypy_cache"],
        beside: &[],
        also_beside: &[],
        inside: &["CACHEDIR.TAG"],
        rebuild: (30, 120),
    },
    Builtin {
        name: "tox",
        enabled: true,
        dirs: &[".tox"],
        beside: &["tox.ini", "pyproject.toml", "setup.cfg"],
        also_beside: &[],
        inside: &[],
        rebuild: (60, 60),
    },
    Builtin {
        name: "gradle-build",
        enabled: true,
        dirs: &["build"],
        beside: GRADLE,
        also_beside: &[],
        inside: &[],
        rebuild: (90, 180),
    },
    Builtin {
        name: "gradle-cache",
        enabled: true,
        dirs: &[".gradle"],
        beside: GRADLE,
        also_beside: &[],
        inside: &[],
        rebuild: (30, 60),
    },
    Builtin {
        name: "cmake-build",
        enabled: true,
        dirs: &["build", "cmake-build-*"],
        beside: &[],
        also_beside: &[],
        inside: &["CMakeCache.txt"],
        rebuild: (120, 300),
    },
    Builtin {
        name: "next-build",
        enabled: true,
        dirs: &[".next"],
        beside: &["next.config.*", "package.json"],
        also_beside: &[],
        inside: &[],
        rebuild: (60, 120),
    },
    Builtin {
        name: "js-dist",
        enabled: true,
        dirs: &["dist"],
        beside: &["package.json"],
        also_beside: &[
            "tsconfig.json",
            "webpack.config.*",
            "vite.config.*",
            "rollup.config.*",
        ],
        inside: &[],
        rebuild: (30, 60),
    },
    Builtin {
        name: "terraform",
        enabled: true,
        dirs: &[".terraform"],
        beside: &["*.tf"],
        also_beside: &[],
        inside: &[],
        rebuild: (30, 60),
    },
    // Off unless configured: a Go build cache lives where GOCACHE points, usually outside any
    // workspace; enable it (and set `dirs`) when a workspace holds one.
    Builtin {
        name: "go-build-cache",
        enabled: false,
        dirs: &["go-build", ".gocache"],
        beside: &[],
        also_beside: &[],
        inside: &["trim.txt"],
        rebuild: (60, 120),
    },
];

/// The names of the built-in types, in matching order.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|b| b.name)
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Builtin {
    fn resolve(&self) -> ArtifactType {
        ArtifactType {
            name: self.name.to_string(),
            enabled: self.enabled,
            dirs: strings(self.dirs),
            beside: strings(self.beside),
            also_beside: strings(self.also_beside),
            inside: strings(self.inside),
            rebuild: Duration::from_secs(self.rebuild.0),
            rebuild_per_gib: Duration::from_secs(self.rebuild.1),
            older_than: None,
        }
    }
}

impl ArtifactEntry {
    /// Applies the keys this entry sets to `t`.
    fn apply(&self, t: &mut ArtifactType) {
        let set = |field: &mut Vec<String>, value: &Option<Vec<String>>| {
            if let Some(v) = value {
                field.clone_from(v);
            }
        };
        if let Some(enabled) = self.enabled {
            t.enabled = enabled;
        }
        set(&mut t.dirs, &self.dirs);
        set(&mut t.beside, &self.beside);
        set(&mut t.also_beside, &self.also_beside);
        set(&mut t.inside, &self.inside);
        if let Some(d) = self.rebuild {
            t.rebuild = d.0;
        }
        if let Some(d) = self.rebuild_per_gib {
            t.rebuild_per_gib = d.0;
        }
        if let Some(d) = self.older_than {
            t.older_than = Some(d.0);
        }
    }
}

/// The table after `entries`: built-in types in table order (replaced where an entry names
/// them), then added types in config order. Disabled types are included (`enabled = false`).
pub fn resolve(entries: &[ArtifactEntry]) -> Vec<ArtifactType> {
    let mut table: Vec<ArtifactType> = BUILTIN.iter().map(Builtin::resolve).collect();
    for entry in entries {
        match table.iter_mut().find(|t| t.name == entry.name) {
            Some(t) => entry.apply(t),
            None => {
                let mut t = ArtifactType {
                    name: entry.name.clone(),
                    enabled: true,
                    dirs: Vec::new(),
                    beside: Vec::new(),
                    also_beside: Vec::new(),
                    inside: Vec::new(),
                    rebuild: Duration::ZERO,
                    rebuild_per_gib: Duration::ZERO,
                    older_than: None,
                };
                entry.apply(&mut t);
                table.push(t);
            }
        }
    }
    table
}

/// Checks the `[[artifacts]]` entries and the table they make; `rule_names` are the
/// `[[rules]]` names (an artifact type must not share one: the audit names either).
pub(super) fn validate(entries: &[ArtifactEntry], rule_names: &[&str]) -> Result<(), KeyError> {
    let mut seen = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        let at = |field: &str| vec!["artifacts".to_string(), i.to_string(), field.to_string()];
        if e.name.trim().is_empty() {
            return Err((at("name"), "must not be empty".into()));
        }
        if e.name.chars().any(char::is_control) || e.name.len() > 100 {
            return Err((
                at("name"),
                "must be at most 100 bytes without control characters".into(),
            ));
        }
        if !seen.insert(e.name.as_str()) {
            return Err((
                at("name"),
                format!("artifact type `{}` is named twice", e.name),
            ));
        }
        if rule_names.contains(&e.name.as_str()) {
            return Err((
                at("name"),
                format!(
                    "`{}` is also a [[rules]] name: an artifact type needs a name of its own",
                    e.name
                ),
            ));
        }
        let builtin = BUILTIN.iter().any(|b| b.name == e.name);
        if !builtin && e.dirs.is_none() {
            return Err((
                at("dirs"),
                format!(
                    "`{}` is not a built-in type (those are {}), so it needs `dirs` and a marker \
                     (`beside` or `inside`)",
                    e.name,
                    builtin_names().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        for (field, list) in [
            ("dirs", &e.dirs),
            ("beside", &e.beside),
            ("also_beside", &e.also_beside),
            ("inside", &e.inside),
        ] {
            for glob in list.iter().flatten() {
                check_name_or_glob(glob).map_err(|m| (at(field), m))?;
            }
        }
        if e.dirs.as_ref().is_some_and(Vec::is_empty) {
            return Err((
                at("dirs"),
                "needs at least one name (use `enabled = false` to turn the type off)".into(),
            ));
        }
        for (field, value, range) in [
            ("rebuild", e.rebuild, ranges::REBUILD),
            (
                "rebuild_per_gib",
                e.rebuild_per_gib,
                ranges::REBUILD_PER_GIB,
            ),
            ("older_than", e.older_than, ranges::OLDER_THAN),
        ] {
            if let Some(d) = value {
                range.check(d.0).map_err(|m| (at(field), m))?;
            }
        }
    }
    // The table as it will be used: every type proves what it deletes.
    for t in resolve(entries) {
        let Some(i) = entries.iter().position(|e| e.name == t.name) else {
            continue; // a built-in untouched
        };
        let at = |field: &str| vec!["artifacts".to_string(), i.to_string(), field.to_string()];
        if t.beside.is_empty() && t.inside.is_empty() {
            return Err((
                at(if entries[i].inside.is_some() {
                    "inside"
                } else {
                    "beside"
                }),
                format!(
                    "artifact type `{}` needs a marker: a file `beside` the dir or `inside` it \
                     proves what the dir is",
                    t.name
                ),
            ));
        }
        if !t.also_beside.is_empty() && t.beside.is_empty() {
            return Err((
                at("also_beside"),
                "`also_beside` is a second proof: it needs `beside` as well".into(),
            ));
        }
    }
    Ok(())
}

/// A name or a glob on names (a marker or an artifact dir): never everything, never the keep
/// marker, never a path.
fn check_name_or_glob(glob: &str) -> Result<(), String> {
    if !is_plain_name(glob) {
        return Err(format!(
            "`{glob}` must be a plain entry name or a glob on one (no `/`, not `.` or `..`, at \
             most 255 bytes)"
        ));
    }
    check_glob(glob)
}

/// The compiled marker check of one artifact type.
#[derive(Clone, Debug)]
pub struct Markers {
    beside: Option<GlobSet>,
    also_beside: Option<GlobSet>,
    inside: Option<GlobSet>,
}

fn globset(list: &[String]) -> Option<GlobSet> {
    if list.is_empty() {
        return None;
    }
    let mut b = GlobSetBuilder::new();
    for g in list {
        b.add(Glob::new(g).expect("artifact globs are validated at load"));
    }
    Some(b.build().expect("artifact globs are validated at load"))
}

impl Markers {
    pub fn compile(t: &ArtifactType) -> Markers {
        Markers {
            beside: globset(&t.beside),
            also_beside: globset(&t.also_beside),
            inside: globset(&t.inside),
        }
    }

    /// True when the markers prove the dir: every marker set the type has is met by a regular
    /// file `beside` it (its siblings) or `inside` it (its children; `None` when the dir's
    /// entries were not listed, which proves nothing inside).
    pub fn prove(&self, siblings: &dyn Neighbours, children: Option<&dyn Neighbours>) -> bool {
        let has = |set: &Option<GlobSet>, around: Option<&dyn Neighbours>| match set {
            None => true,
            Some(set) => {
                around.is_some_and(|n| n.has_file(&|name: &OsStr| set.is_match(Path::new(name))))
            }
        };
        (self.beside.is_some() || self.inside.is_some())
            && has(&self.beside, Some(siblings))
            && has(&self.also_beside, Some(siblings))
            && has(&self.inside, children)
    }
}

impl ArtifactType {
    /// The estimate model of this type.
    pub fn cost(&self) -> RebuildCost {
        RebuildCost {
            base_secs: self.rebuild.as_secs(),
            per_gib_secs: self.rebuild_per_gib.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names(&'static [&'static str]);

    impl Neighbours for Names {
        fn has_file(&self, is_marker: &dyn Fn(&OsStr) -> bool) -> bool {
            self.0.iter().any(|n| is_marker(OsStr::new(n)))
        }
    }

    fn table() -> Vec<ArtifactType> {
        resolve(&[])
    }

    fn markers(name: &str) -> Markers {
        Markers::compile(table().iter().find(|t| t.name == name).unwrap())
    }

    #[test]
    fn every_builtin_type_has_a_marker_and_a_name_of_its_own() {
        let t = table();
        let names: HashSet<_> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), t.len());
        for t in &t {
            assert!(!t.beside.is_empty() || !t.inside.is_empty(), "{}", t.name);
            for g in t.dirs.iter().chain(&t.beside).chain(&t.inside) {
                check_name_or_glob(g).unwrap();
            }
        }
        validate(&[], &[]).unwrap();
    }

    #[test]
    fn a_target_without_cargo_toml_beside_is_not_proven() {
        let m = markers("cargo-target");
        assert!(m.prove(&Names(&["Cargo.toml", "src"]), None));
        assert!(!m.prove(&Names(&["data.csv", "src"]), None));
        assert!(!m.prove(&Names(&["Cargo.lock"]), None));
    }

    #[test]
    fn inside_markers_need_the_listing_of_the_dir() {
        let m = markers("python-venv");
        assert!(m.prove(&Names(&[]), Some(&Names(&["pyvenv.cfg", "lib"]))));
        assert!(!m.prove(&Names(&["pyvenv.cfg"]), Some(&Names(&["lib"]))));
        assert!(!m.prove(&Names(&[]), None));
    }

    #[test]
    fn dist_needs_package_json_and_a_build_config() {
        let m = markers("js-dist");
        assert!(m.prove(&Names(&["package.json", "vite.config.ts"]), None));
        assert!(m.prove(&Names(&["package.json", "tsconfig.json"]), None));
        assert!(!m.prove(&Names(&["package.json"]), None));
        assert!(!m.prove(&Names(&["tsconfig.json"]), None));
    }

    #[test]
    fn entries_replace_disable_and_add_types_by_name() {
        let entries = [
            ArtifactEntry {
                name: "cargo-target".into(),
                rebuild: Some(HumanDuration(Duration::from_secs(600))),
                ..ArtifactEntry::default()
            },
            ArtifactEntry {
                name: "js-dist".into(),
                enabled: Some(false),
                ..ArtifactEntry::default()
            },
            ArtifactEntry {
                name: "bazel-out".into(),
                dirs: Some(vec!["bazel-out".into()]),
                beside: Some(vec!["WORKSPACE".into(), "MODULE.bazel".into()]),
                ..ArtifactEntry::default()
            },
        ];
        validate(&entries, &["regenerable"]).unwrap();
        let t = resolve(&entries);
        let get = |n: &str| t.iter().find(|t| t.name == n).unwrap();
        assert_eq!(get("cargo-target").rebuild, Duration::from_secs(600));
        assert_eq!(get("cargo-target").beside, ["Cargo.toml"]);
        assert!(!get("js-dist").enabled);
        assert!(get("bazel-out").enabled);
        assert_eq!(t.last().unwrap().name, "bazel-out");
    }

    #[test]
    fn bad_entries_name_the_key() {
        let e = |f: fn(&mut ArtifactEntry)| {
            let mut entry = ArtifactEntry {
                name: "x".into(),
                dirs: Some(vec!["out".into()]),
                beside: Some(vec!["x.json".into()]),
                ..ArtifactEntry::default()
            };
            f(&mut entry);
            validate(&[entry], &["regenerable"]).unwrap_err()
        };
        assert_eq!(e(|e| e.name = "regenerable".into()).0[2], "name");
        assert_eq!(e(|e| e.beside = None).0[2], "beside");
        assert_eq!(e(|e| e.dirs = None).0[2], "dirs");
        assert_eq!(e(|e| e.dirs = Some(vec!["a/b".into()])).0[2], "dirs");
        assert_eq!(e(|e| e.inside = Some(vec!["*".into()])).0[2], "inside");
        assert_eq!(
            e(|e| e.dirs = Some(vec![".guardian-keep".into()])).0[2],
            "dirs"
        );
        let (key, msg) = e(|e| e.rebuild = Some(HumanDuration(Duration::from_secs(400 * 86400))));
        assert_eq!(key[2], "rebuild", "{msg}");
        assert!(msg.contains("allowed range"), "{msg}");
        // A built-in whose markers are all taken away proves nothing.
        let stripped = ArtifactEntry {
            name: "cargo-target".into(),
            beside: Some(vec![]),
            ..ArtifactEntry::default()
        };
        let (key, _) = validate(&[stripped], &[]).unwrap_err();
        assert_eq!(key, ["artifacts", "0", "beside"]);
    }
}
