//! The survey: walks each workspace's projects once, measuring each project and finding the
//! entries the cleanup rules name, then turns that into policy candidates with their protection
//! status. Reads only; it never deletes.

use crate::config::{CompiledRule, Workspace};
use crate::fsys::{self, EntryKind, EntryStat};
use crate::policy::{Candidate, CandidateKind};
use crate::protect::{self, ProcSnapshot};
use crate::scan::{self, Classify, RuleMatch, Usage, WalkError};
use rayon::prelude::*;
use rustix::fd::AsFd;
use serde::Serialize;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Rules as a scanner classifier: the first rule whose names or globs match an entry's name.
struct RuleClassifier<'a> {
    rules: &'a [CompiledRule],
}

impl Classify for RuleClassifier<'_> {
    fn rule_for(&self, name: &OsStr, _stat: &EntryStat, _depth: usize) -> Option<usize> {
        let name = name.to_str()?;
        self.rules.iter().position(|r| r.matches_name(name))
    }
}

/// One project (a child of a workspace) as surveyed.
#[derive(Debug, Serialize)]
pub struct ProjectSurvey {
    pub path: PathBuf,
    /// What the project occupies (`du` semantics).
    pub usage: Usage,
    /// What deleting the whole project would free.
    pub freeable: Usage,
    pub is_dir: bool,
    pub protected_name: bool,
    pub contains_keep: bool,
    #[serde(skip)]
    pub matches: Vec<RuleMatch>,
}

impl ProjectSurvey {
    /// Last activity: the newest modification anywhere in the project.
    pub fn last_active(&self) -> i64 {
        self.usage.newest_change
    }
}

/// A workspace as surveyed.
#[derive(Debug, Serialize)]
pub struct WorkspaceSurvey {
    pub path: PathBuf,
    pub projects: Vec<ProjectSurvey>,
    pub errors: Vec<WalkError>,
    pub mounts_skipped: Vec<PathBuf>,
}

/// Surveys one workspace. A missing or unreadable workspace is reported in `errors`.
pub fn survey_workspace(ws: &Workspace, rules: &[CompiledRule]) -> WorkspaceSurvey {
    let mut survey = WorkspaceSurvey {
        path: ws.path.clone(),
        projects: Vec::new(),
        errors: Vec::new(),
        mounts_skipped: Vec::new(),
    };
    let root = match fsys::open_dir_path(&ws.path) {
        Ok(fd) => fd,
        Err(e) => {
            let hint = if e.raw_os_error() == Some(libc::ELOOP) {
                " (the workspace path is a symlink: configure the real path)"
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
    let root_stat = fsys::stat_fd(root.as_fd());
    let results: Vec<_> = listed
        .par_iter()
        .map(|entry| {
            survey_project(
                root.as_fd(),
                entry,
                ws,
                &classifier,
                root_stat.as_ref().ok(),
            )
        })
        .collect();
    for result in results.into_iter().flatten() {
        let (project, walked) = result;
        survey.errors.extend(walked.errors);
        survey.mounts_skipped.extend(walked.mounts_skipped);
        survey.projects.push(project);
    }
    survey.projects.sort_by(|a, b| a.path.cmp(&b.path));
    survey
}

fn survey_project(
    root: rustix::fd::BorrowedFd<'_>,
    entry: &fsys::Listed,
    ws: &Workspace,
    classifier: &RuleClassifier<'_>,
    root_stat: Option<&EntryStat>,
) -> Option<(ProjectSurvey, scan::Walked)> {
    let name = entry.os_name();
    let path = ws.path.join(name);
    let protected_name = ws.protect.iter().any(|p| OsStr::new(p) == name);
    let st = match fsys::stat_entry(root, &entry.name) {
        Ok(st) => st,
        Err(_) => return None, // vanished
    };
    let mut walked = scan::Walked::default();
    let on_same_mount = root_stat.is_none_or(|r| r.dev == st.dev && r.mnt_id == st.mnt_id);
    if !on_same_mount {
        walked.mounts_skipped.push(path.clone());
        return Some((empty_project(path, false, protected_name), walked));
    }
    if st.kind == EntryKind::Dir {
        walked = match fsys::open_child_dir(root, &entry.name) {
            Ok(fd) => scan::walk_tree(fd.as_fd(), &path, classifier).unwrap_or_else(|e| {
                let mut w = scan::Walked::default();
                w.errors.push(WalkError {
                    path: path.clone(),
                    error: format!("cannot stat: {e}"),
                });
                w
            }),
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
        if let Some(rule) = classifier.rule_for(name, &st, 0) {
            walked.matches.push(RuleMatch {
                rel_path: PathBuf::new(),
                rule,
                kind: st.kind,
                freeable: walked.tally.freeable(),
            });
        }
    }
    let project = ProjectSurvey {
        path,
        usage: walked.tally.usage(),
        freeable: walked.tally.freeable(),
        is_dir: st.kind == EntryKind::Dir,
        protected_name,
        contains_keep: walked.contains_keep,
        matches: std::mem::take(&mut walked.matches),
    };
    Some((project, walked))
}

fn empty_project(path: PathBuf, is_dir: bool, protected_name: bool) -> ProjectSurvey {
    ProjectSurvey {
        path,
        usage: Usage::default(),
        freeable: Usage::default(),
        is_dir,
        protected_name,
        contains_keep: false,
        matches: Vec::new(),
    }
}

/// Turns surveys into policy candidates: every rule match old enough, and every project dir as
/// a phase-2 candidate, each marked blocked when protection forbids deleting it. `now` is in
/// seconds since the epoch.
pub fn candidates(
    surveys: &[WorkspaceSurvey],
    rules: &[CompiledRule],
    procs: &ProcSnapshot,
    extra_protection: &dyn Fn(&Path) -> Option<String>,
    now: i64,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for project in surveys.iter().flat_map(|s| &s.projects) {
        if project.protected_name {
            continue;
        }
        let in_use = project_in_use(project, procs, extra_protection);
        for m in &project.matches {
            let rule = &rules[m.rule];
            if let Some(min_age) = rule.older_than {
                if now - m.freeable.newest_change < min_age.as_secs() as i64 {
                    continue;
                }
            }
            let path = if m.rel_path.as_os_str().is_empty() {
                project.path.clone()
            } else {
                project.path.join(&m.rel_path)
            };
            out.push(Candidate {
                path,
                project: project.path.clone(),
                kind: CandidateKind::Rule {
                    rule: rule.name.clone(),
                    phase: rule.phase,
                },
                bytes: m.freeable.allocated,
                inodes: m.freeable.inodes,
                project_active: project.last_active(),
                newest_change: m.freeable.newest_change,
                blocked: in_use.clone(),
            });
        }
        if project.is_dir {
            out.push(Candidate {
                path: project.path.clone(),
                project: project.path.clone(),
                kind: CandidateKind::Project,
                bytes: project.freeable.allocated,
                inodes: project.freeable.inodes,
                project_active: project.last_active(),
                newest_change: project.last_active(),
                blocked: in_use.clone().or_else(|| {
                    project
                        .contains_keep
                        .then(|| format!("kept: a {} marker is inside", scan::KEEP_MARKER))
                }),
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
