//! The survey: walks each workspace's projects once, measuring each project and finding the
//! entries the cleanup rules name, then turns that into policy candidates with their protection
//! status. Reads only; it never deletes. `index.rs`: the per-project survey cache a cycle plans
//! from without walking the projects nothing was written into; `links.rs`: its table of the
//! inodes projects share (hard links), which decides when such a project may be served.

pub mod index;
mod links;

use crate::config::{CompiledRule, Workspace};
use crate::fsys::{self, EntryKind, EntryStat};
use crate::policy::{Candidate, CandidateKind, RebuildCost};
use crate::protect::{self, ProcSnapshot};
use crate::scan::{self, Around, Classify, RuleMatch, SharedInode, Usage, WalkError};
use rayon::prelude::*;
use rustix::fd::AsFd;
use serde::Serialize;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Rules as a scanner classifier: the first rule (in order: `[[rules]]`, then the artifact
/// table) whose names or globs match an entry's name and, for an artifact type, whose markers
/// prove the dir; so no entry is matched twice.
struct RuleClassifier<'a> {
    rules: &'a [CompiledRule],
}

impl Classify for RuleClassifier<'_> {
    fn rule_for(
        &self,
        name: &OsStr,
        stat: &EntryStat,
        _depth: usize,
        around: &Around<'_>,
    ) -> Option<usize> {
        let name = name.to_str()?;
        let is_dir = stat.kind == EntryKind::Dir;
        self.rules
            .iter()
            .position(|r| r.matches(name, is_dir, around.siblings, around.children))
    }

    fn counts_times(&self, stat: &EntryStat) -> bool {
        !crate::cleanup::own::is_own(stat)
    }
}

/// One project (a child of a workspace) as surveyed.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectSurvey {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    /// The project entry's (dev, ino).
    #[serde(skip)]
    pub identity: (u64, u64),
    /// What the project occupies (`du` semantics).
    pub usage: Usage,
    /// What deleting the whole project would free.
    pub freeable: Usage,
    pub is_dir: bool,
    pub protected_name: bool,
    pub contains_keep: bool,
    #[serde(skip)]
    pub matches: Vec<RuleMatch>,
    /// The hard-linked inodes it holds only some links of (the others lie elsewhere); empty in
    /// a survey served from the index, which keeps them itself (a survey is stored only when
    /// walked).
    #[serde(skip)]
    pub shared: Vec<SharedInode>,
    /// The project entry as stat'ed right before it was walked (`None` when it was not).
    #[serde(skip)]
    pub root: Option<EntryStat>,
    /// Walked without errors and without skipping a mount: what the index may keep.
    #[serde(skip)]
    pub complete: bool,
    /// Taken from the index instead of walked in this survey.
    #[serde(skip)]
    pub cached: bool,
}

impl ProjectSurvey {
    /// Last activity: the newest change (mtime or ctime) anywhere in the project.
    pub fn last_active(&self) -> i64 {
        self.usage.newest_change
    }
}

/// A workspace as surveyed.
#[derive(Debug, Serialize)]
pub struct WorkspaceSurvey {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    pub projects: Vec<ProjectSurvey>,
    pub errors: Vec<WalkError>,
    #[serde(with = "crate::textpath::list")]
    pub mounts_skipped: Vec<PathBuf>,
}

/// What a survey may take instead of walking a project: given the project's path and its entry
/// as stat'ed now, a survey still true of it (the index's fresh entry), or `None` to walk it.
pub type Reuse<'a> = &'a (dyn Fn(&Path, &EntryStat) -> Option<ProjectSurvey> + Sync);

/// Surveys one workspace: its projects are walked in parallel on the walk pool (one pool, no
/// nested `install`: see [`fsys::on_walk_pool`]). A missing or unreadable workspace is reported
/// in `errors`.
pub fn survey_workspace(ws: &Workspace, rules: &[CompiledRule]) -> WorkspaceSurvey {
    survey_workspace_with(ws, rules, &|_, _| None)
}

/// [`survey_workspace`], taking from `reuse` each project it has a survey for (marked
/// `cached`) and walking only the others.
pub fn survey_workspace_with(
    ws: &Workspace,
    rules: &[CompiledRule],
    reuse: Reuse<'_>,
) -> WorkspaceSurvey {
    let mut survey = WorkspaceSurvey {
        path: ws.path.clone(),
        projects: Vec::new(),
        errors: Vec::new(),
        mounts_skipped: Vec::new(),
    };
    let root = match fsys::open_dir_nofollow(&ws.path) {
        Ok(fd) => fd,
        Err(e) => {
            let hint = if e.raw_os_error() == Some(libc::ELOOP) {
                " (the workspace path or one of its parents is a symlink: configure the real path)"
            } else {
                ""
            };
            survey.errors.push(WalkError {
                path: ws.path.clone(),
                error: format!("cannot open workspace: {e}{hint}"),
            });
            return survey;
        }
    };
    let listed = match fsys::list_dir(root.as_fd()) {
        Ok(l) => l,
        Err(e) => {
            survey.errors.push(WalkError {
                path: ws.path.clone(),
                error: format!("cannot read workspace: {e}"),
            });
            return survey;
        }
    };
    let classifier = RuleClassifier { rules };
    let boundary = match fsys::Boundary::lenient(root.as_fd(), &ws.path) {
        Ok((b, _)) => b,
        Err(e) => {
            survey.errors.push(WalkError {
                path: ws.path.clone(),
                error: format!("cannot stat workspace: {e}"),
            });
            return survey;
        }
    };
    let one = |entry: &fsys::Listed| {
        survey_project(root.as_fd(), entry, ws, &classifier, &boundary, reuse)
    };
    let results: Vec<_> = fsys::on_walk_pool(|parallel| {
        if parallel {
            listed.par_iter().map(one).collect()
        } else {
            listed.iter().map(one).collect()
        }
    });
    for result in results.into_iter().flatten() {
        let (project, walked) = result;
        survey.errors.extend(walked.errors);
        survey.mounts_skipped.extend(walked.mounts_skipped);
        survey.projects.push(project);
    }
    survey.projects.sort_by(|a, b| a.path.cmp(&b.path));
    survey
}

/// Walks the one project `name` of workspace `ws` (the index's background refresh). `None` when
/// the workspace cannot be opened or the project vanished.
pub fn survey_one(ws: &Workspace, rules: &[CompiledRule], name: &OsStr) -> Option<ProjectSurvey> {
    use std::os::unix::ffi::OsStrExt;
    let root = fsys::open_dir_nofollow(&ws.path).ok()?;
    let boundary = fsys::Boundary::lenient(root.as_fd(), &ws.path).ok()?.0;
    let entry = fsys::Listed {
        name: std::ffi::CString::new(name.as_bytes()).ok()?,
        kind_hint: None,
    };
    let classifier = RuleClassifier { rules };
    survey_project(root.as_fd(), &entry, ws, &classifier, &boundary, &|_, _| {
        None
    })
    .map(|p| p.0)
}

fn survey_project(
    root: rustix::fd::BorrowedFd<'_>,
    entry: &fsys::Listed,
    ws: &Workspace,
    classifier: &RuleClassifier<'_>,
    boundary: &fsys::Boundary,
    reuse: Reuse<'_>,
) -> Option<(ProjectSurvey, scan::Walked)> {
    let name = entry.os_name();
    let path = ws.path.join(name);
    let protected_name = ws.protect.iter().any(|p| OsStr::new(p) == name);
    let st = match fsys::stat_entry(root, &entry.name) {
        Ok(st) => st,
        Err(_) => return None, // vanished
    };
    let mut walked = scan::Walked::default();
    if !boundary.admits(root, &entry.name, &st) {
        walked.mounts_skipped.push(path.clone());
        let mut p = empty_project(path, false, protected_name);
        p.identity = (st.dev, st.ino);
        return Some((p, walked));
    }
    if let Some(mut cached) = reuse(&path, &st) {
        cached.protected_name = protected_name;
        cached.cached = true;
        return Some((cached, walked));
    }
    if st.kind == EntryKind::Dir {
        walked = match fsys::open_child_dir(root, &entry.name) {
            Ok(fd)
                if fsys::stat_fd(fd.as_fd()).is_ok_and(|o| (o.dev, o.ino) == (st.dev, st.ino)) =>
            {
                scan::walk_tree(fd.as_fd(), &path, classifier).unwrap_or_else(|e| {
                    let mut w = scan::Walked::default();
                    w.errors.push(WalkError {
                        path: path.clone(),
                        error: format!("cannot stat: {e}"),
                    });
                    w
                })
            }
            Ok(_) => return None, // swapped between stat and open
            Err(e) => {
                let mut w = scan::Walked::default();
                w.errors.push(WalkError {
                    path: path.clone(),
                    error: format!("cannot open: {e}"),
                });
                w
            }
        };
    } else {
        walked.tally.add_entry(&st);
        let around = Around {
            siblings: &scan::Nothing,
            children: None,
        };
        if let Some(rule) = classifier.rule_for(name, &st, 0, &around) {
            walked.matches.push(RuleMatch {
                rel_path: PathBuf::new(),
                identity: (st.dev, st.ino),
                rule,
                kind: st.kind,
                freeable: walked.tally.freeable(),
            });
        }
    }
    let project = ProjectSurvey {
        path,
        identity: (st.dev, st.ino),
        usage: walked.tally.usage(),
        freeable: walked.tally.freeable(),
        is_dir: st.kind == EntryKind::Dir,
        protected_name,
        contains_keep: walked.contains_keep,
        matches: std::mem::take(&mut walked.matches),
        shared: walked.tally.shared(),
        root: Some(st),
        complete: walked.errors.is_empty() && walked.mounts_skipped.is_empty(),
        cached: false,
    };
    Some((project, walked))
}

fn empty_project(path: PathBuf, is_dir: bool, protected_name: bool) -> ProjectSurvey {
    ProjectSurvey {
        path,
        identity: (0, 0),
        usage: Usage::default(),
        freeable: Usage::default(),
        is_dir,
        protected_name,
        contains_keep: false,
        matches: Vec::new(),
        shared: Vec::new(),
        root: None,
        complete: false,
        cached: false,
    }
}

/// What decides whether a project counts as active (and is not a phase-2 candidate).
#[derive(Clone, Copy)]
pub struct Activity<'a> {
    /// Now, in seconds since the epoch.
    pub now: i64,
    /// A project changed or written less than this many seconds ago is active.
    pub active_within: u64,
    /// The last write the write source saw into a project (seconds since the epoch), if any.
    pub last_write: &'a dyn Fn(&Path) -> Option<i64>,
}

/// Turns surveys into policy candidates: every rule match old enough, and every project dir as
/// a phase-2 candidate, each marked blocked when protection forbids deleting it. A project
/// changed (mtime or ctime, which cannot be back-dated) or written (as the source saw it) within
/// `active_within` is active: it is not a phase-2 candidate.
pub fn candidates(
    surveys: &[WorkspaceSurvey],
    rules: &[CompiledRule],
    procs: &ProcSnapshot,
    extra_protection: &dyn Fn(&Path) -> Option<String>,
    activity: &Activity<'_>,
) -> Vec<Candidate> {
    let now = activity.now;
    let mut out = Vec::new();
    let git_checks = crate::git::Budget::new(crate::git::SURVEY_BUDGET);
    for project in surveys.iter().flat_map(|s| &s.projects) {
        if project.protected_name {
            continue;
        }
        let in_use = project_in_use(project, procs, extra_protection);
        let written = (activity.last_write)(&project.path);
        let last_active = written.map_or(project.last_active(), |w| w.max(project.last_active()));
        for m in &project.matches {
            let rule = &rules[m.rule];
            if let Some(min_age) = rule.older_than {
                let min_age = i64::try_from(min_age.as_secs()).unwrap_or(i64::MAX);
                if now.saturating_sub(m.freeable.newest_change) < min_age {
                    continue;
                }
            }
            let path = if m.rel_path.as_os_str().is_empty() {
                project.path.clone()
            } else {
                project.path.join(&m.rel_path)
            };
            // A `.git` with work found nowhere else is kept in phase 1 (read only when nothing
            // else blocks it).
            let blocked = in_use
                .clone()
                .or_else(|| git_checks.keep_reason(&path, m.kind, rule.phase));
            out.push(Candidate {
                path,
                project: project.path.clone(),
                kind: CandidateKind::Rule {
                    rule: rule.name.clone(),
                    phase: rule.phase,
                },
                bytes: m.freeable.allocated,
                inodes: m.freeable.inodes,
                project_active: last_active,
                newest_change: m.freeable.newest_change,
                blocked,
                identity: m.identity,
                min_idle_secs: rule.older_than.map(|d| d.as_secs()),
                rebuild: rule.cost,
            });
        }
        if project.is_dir {
            let idle = now.saturating_sub(last_active);
            let active =
                (idle < i64::try_from(activity.active_within).unwrap_or(i64::MAX)).then(|| {
                    format!(
                        "active: {} {idle}s ago, within active_within ({}s)",
                        if written.is_some_and(|w| w >= project.last_active()) {
                            "written (as the write source saw it)"
                        } else {
                            "changed"
                        },
                        activity.active_within
                    )
                });
            out.push(Candidate {
                path: project.path.clone(),
                project: project.path.clone(),
                kind: CandidateKind::Project,
                bytes: project.freeable.allocated,
                inodes: project.freeable.inodes,
                project_active: last_active,
                newest_change: last_active,
                blocked: in_use.clone().or(active).or_else(|| {
                    project
                        .contains_keep
                        .then(|| format!("kept: a {} marker is inside", scan::KEEP_MARKER))
                }),
                identity: project.identity,
                min_idle_secs: Some(activity.active_within),
                rebuild: RebuildCost::default(),
            });
        }
    }
    out
}

/// Why nothing in this project may be deleted now (a process, lock, keep marker at its top or
/// a running task), if anything forbids it. Keep markers deeper down only exempt their own
/// subtree; the scanner already leaves those out of the rule matches.
fn project_in_use(
    project: &ProjectSurvey,
    procs: &ProcSnapshot,
    extra_protection: &dyn Fn(&Path) -> Option<String>,
) -> Option<String> {
    if !procs.complete {
        return Some("process table unreadable: every project counts as in use".into());
    }
    if let Some(p) = protect::check_dir(&project.path, procs) {
        return Some(p.to_string());
    }
    extra_protection(&project.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn project(path: &str, changed: i64) -> ProjectSurvey {
        ProjectSurvey {
            path: PathBuf::from(path),
            identity: (1, changed as u64),
            usage: Usage {
                newest_change: changed,
                allocated: 1 << 20,
                ..Usage::default()
            },
            freeable: Usage {
                allocated: 1 << 20,
                ..Usage::default()
            },
            is_dir: true,
            protected_name: false,
            contains_keep: false,
            matches: Vec::new(),
            shared: Vec::new(),
            root: None,
            complete: false,
            cached: false,
        }
    }

    #[test]
    fn a_project_changed_or_written_within_active_within_is_not_a_phase2_candidate() {
        const NOW: i64 = 1_000_000;
        let survey = WorkspaceSurvey {
            path: PathBuf::from("/nonexistent-ws"),
            projects: vec![
                project("/nonexistent-ws/idle", NOW - 3600),
                project("/nonexistent-ws/changed", NOW - 3),
                project("/nonexistent-ws/written", NOW - 3600),
            ],
            errors: Vec::new(),
            mounts_skipped: Vec::new(),
        };
        let written = |p: &Path| (p == Path::new("/nonexistent-ws/written")).then_some(NOW - 5);
        let activity = Activity {
            now: NOW,
            active_within: 900,
            last_write: &written,
        };
        let procs = ProcSnapshot::capture();
        let out = candidates(&[survey], &[], &procs, &|_| None, &activity);
        let blocked: Vec<_> = out
            .iter()
            .map(|c| (c.path.to_str().unwrap().to_string(), c.blocked.clone()))
            .collect();
        assert_eq!(blocked[0].1, None, "{blocked:?}");
        let changed = blocked[1].1.as_deref().unwrap();
        assert!(changed.starts_with("active: changed 3s ago"), "{changed}");
        let written = blocked[2].1.as_deref().unwrap();
        assert!(written.contains("written"), "{written}");
        // Every phase-2 candidate carries the idle time the executor re-checks.
        assert!(out.iter().all(|c| c.min_idle_secs == Some(900)));
    }

    #[test]
    fn artifacts_count_only_where_their_marker_proves_them() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        let file = |rel: &str| {
            let p = ws.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        };
        file("rust/Cargo.toml");
        file("rust/target/debug/app");
        file("data/target/results.csv");
        // A marker that is a directory, not a file, proves nothing.
        file("fake/.venv/pyvenv.cfg/x");
        file("py/.venv/pyvenv.cfg");
        file("py/.venv/lib/site.py");
        // Inside a matched node_modules nothing else is matched.
        file("web/package.json");
        file("web/node_modules/pkg/__pycache__/m.cpython-312.pyc");
        let rules = Config::embedded_default().compiled_rules();
        let workspace = Workspace {
            path: ws.clone(),
            protect: Vec::new(),
        };
        let survey = survey_workspace(&workspace, &rules);
        assert!(survey.errors.is_empty(), "{:?}", survey.errors);
        let mut found: Vec<(PathBuf, &str)> = survey
            .projects
            .iter()
            .flat_map(|p| {
                p.matches
                    .iter()
                    .map(|m| (p.path.join(&m.rel_path), rules[m.rule].name.as_str()))
            })
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                (ws.join("py/.venv"), "python-venv"),
                (ws.join("rust/target"), "cargo-target"),
                (ws.join("web/node_modules"), "node-modules"),
            ]
        );
    }
}
