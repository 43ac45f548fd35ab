//! Git maintenance in phase 1: frees space inside a repo without deleting it. For each `.git`
//! a phase-1 plan meets (planned for deletion, or kept for unpushed work), when no process holds
//! the repo (no git running in it, no task using it) and no git lock is taken: stale temp packs
//! and a leftover `gc.log` are deleted through the executor, and `git gc` runs as the repo's
//! owner — only with many loose objects, only when free space covers the repo's packs (a repack
//! writes the new pack before dropping the old ones), killed after a time limit. What it freed
//! is measured with the scanner (the `.git`'s allocated bytes before and after) and audited.
//!
//! Why `git gc` with every expiry set to `never`, not `git maintenance run --task=loose-objects`:
//! the loose-objects task packs one batch per run and drops the loose copies only on the *next*
//! run, so one run frees nothing; `gc` packs and drops in one go and also deltifies. With
//! `gc.pruneExpire`, the reflog expiries and `gc.worktreePruneExpire` at `never` it deletes no
//! object, reflog entry or worktree a user could still want: only copies it has packed.
//!
//! Invariants: `git` never runs as root in a repo another user owns (the child takes the uid
//! and gid of the `.git`'s owner, and a non-root Guardian runs it only in its own repos); the
//! child gets no inherited environment and no system or global git config; Guardian deletes
//! only through `cleanup::Executor`.

use crate::cleanup::{ActionReport, AuditFailed, AuditRecord, Executor, Outcome};
use crate::config::{GitConfig, Workspace};
use crate::fsys;
use crate::policy::{Plan, PlannedAction};
use crate::protect::{self, ProcSnapshot};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Most repos maintained in one cycle (each may take up to its time limit).
pub const MAX_REPOS_PER_CYCLE: usize = 8;
/// Most entries looked at under `objects/` when counting loose objects.
const MAX_LOOSE_COUNTED: u64 = 1_000_000;
/// A `gc.pid` younger than this (seconds) means a gc may be running (git's own rule).
const GC_PID_FRESH_SECS: i64 = 12 * 3600;
/// Where the child looks for `git` (its environment is not inherited).
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A `.git` to maintain and the project it belongs to (for running-task protection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub git_dir: PathBuf,
    pub project: PathBuf,
}

/// The `.git` dirs a plan meets in phase 1: those it plans to delete and those it keeps (for
/// unpushed work), each once, each inside a workspace.
pub fn targets(plan: &Plan, workspaces: &[Workspace]) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let planned = plan
        .actions
        .iter()
        .filter(|a| a.phase == 1)
        .map(|a| (&a.path, Some(&a.project)));
    let kept = plan.skipped.iter().map(|s| (&s.path, None));
    for (path, project) in planned.chain(kept) {
        if path.file_name().is_none_or(|n| n != super::GIT_DIR) {
            continue;
        }
        let Some(project) = project.cloned().or_else(|| project_of(path, workspaces)) else {
            continue;
        };
        if !out.iter().any(|t| &t.git_dir == path) {
            out.push(Target {
                git_dir: path.clone(),
                project,
            });
        }
    }
    out
}

/// The workspace child holding `path` (the most specific workspace), if any.
fn project_of(path: &Path, workspaces: &[Workspace]) -> Option<PathBuf> {
    workspaces
        .iter()
        .filter_map(|ws| {
            let rel = path.strip_prefix(&ws.path).ok()?;
            match rel.components().next()? {
                Component::Normal(first) => Some(ws.path.join(first)),
                _ => None,
            }
        })
        .max_by_key(|p| p.as_os_str().len())
}

/// What [`inspect`] found in a `.git`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoFacts {
    /// Owner of the `.git` dir.
    pub uid: u32,
    pub gid: u32,
    pub identity: (u64, u64),
    /// Loose objects (capped at [`MAX_LOOSE_COUNTED`]).
    pub loose_objects: u64,
    /// Allocated bytes of `objects/pack/*.pack`.
    pub pack_bytes: u64,
    /// A git lock taken (`index.lock`, `gc.pid`, …): git may be at work in it.
    pub busy: Option<String>,
    /// Temp packs and a `gc.log` unchanged since before the stale cut-off.
    pub stale: Vec<PathBuf>,
}

/// What to do with one repo, decided from plain facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run `git gc` as this user and group.
    Run {
        uid: u32,
        gid: u32,
    },
    Skip(String),
}

/// Whether to run `git gc`: the repo is not busy, has at least `min_loose` loose objects,
/// `avail` free bytes cover its packs, and Guardian (effective uid `euid`) may act as its owner.
pub fn decide(facts: &RepoFacts, avail: u64, euid: u32, min_loose: u64) -> Decision {
    if let Some(why) = &facts.busy {
        return Decision::Skip(why.clone());
    }
    if facts.loose_objects < min_loose {
        return Decision::Skip(format!(
            "{} loose objects, under min_loose_objects ({min_loose})",
            facts.loose_objects
        ));
    }
    if avail < facts.pack_bytes {
        return Decision::Skip(format!(
            "free space {} is below the size of its packs {}: a repack could not finish",
            crate::config::human_bytes(avail),
            crate::config::human_bytes(facts.pack_bytes)
        ));
    }
    if euid != 0 && euid != facts.uid {
        return Decision::Skip(format!(
            "owned by uid {}, and Guardian (uid {euid}) cannot act as its owner",
            facts.uid
        ));
    }
    Decision::Run {
        uid: facts.uid,
        gid: facts.gid,
    }
}

/// Looks at a `.git` without changing it: owner, loose objects, pack bytes, git locks, stale
/// temp files (unchanged — mtime and ctime — for `stale_after` at `now`).
pub fn inspect(git_dir: &Path, now: i64, stale_after: Duration) -> std::io::Result<RepoFacts> {
    let meta = std::fs::symlink_metadata(git_dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    let mut facts = RepoFacts {
        uid: meta.uid(),
        gid: meta.gid(),
        identity: (meta.dev(), meta.ino()),
        ..RepoFacts::default()
    };
    let cutoff = now.saturating_sub(i64::try_from(stale_after.as_secs()).unwrap_or(i64::MAX));
    let changed = |m: &std::fs::Metadata| m.mtime().max(m.ctime());
    for entry in std::fs::read_dir(git_dir)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(m) = entry.path().symlink_metadata() else {
            continue;
        };
        if name.ends_with(".lock") && facts.busy.is_none() {
            facts.busy = Some(format!("a git lock is taken ({name})"));
        }
        if name == "gc.pid" && changed(&m) > now.saturating_sub(GC_PID_FRESH_SECS) {
            facts.busy = Some("a gc may be running (gc.pid)".into());
        }
        if name == "gc.log" && m.is_file() && changed(&m) <= cutoff {
            facts.stale.push(entry.path());
        }
    }
    let objects = git_dir.join("objects");
    if objects.join("maintenance.lock").symlink_metadata().is_ok() {
        facts.busy = Some("a git lock is taken (objects/maintenance.lock)".into());
    }
    let pack = objects.join("pack");
    for entry in std::fs::read_dir(&pack).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(m) = entry.path().symlink_metadata() else {
            continue;
        };
        if !m.is_file() {
            continue;
        }
        if name.ends_with(".pack") {
            facts.pack_bytes = facts
                .pack_bytes
                .saturating_add(m.blocks().saturating_mul(512));
        } else if (name.starts_with("tmp_pack_") || name.starts_with("tmp_idx_"))
            && changed(&m) <= cutoff
        {
            facts.stale.push(entry.path());
        }
    }
    'count: for entry in std::fs::read_dir(&objects)?.flatten() {
        let name = entry.file_name();
        let is_fanout = name.len() == 2 && name.to_str().is_some_and(is_hex);
        if !is_fanout || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for _ in std::fs::read_dir(entry.path()).into_iter().flatten() {
            facts.loose_objects += 1;
            if facts.loose_objects >= MAX_LOOSE_COUNTED {
                break 'count;
            }
        }
    }
    Ok(facts)
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why nothing may be done in this repo now (a process in its work tree or `.git`, a running
/// task in its project), if so.
fn held(target: &Target, protection: &dyn Fn(&Path) -> Option<String>) -> Option<String> {
    let procs = ProcSnapshot::capture();
    if !procs.complete {
        return Some("process table unreadable: cannot prove no git runs in it".into());
    }
    let work_tree = target.git_dir.parent().unwrap_or(&target.git_dir);
    for dir in [work_tree, target.git_dir.as_path()] {
        if let Some(p) = protect::check_dir(dir, &procs) {
            return Some(p.to_string());
        }
    }
    protection(&target.project)
}

/// Maintains one repo: stale temp files deleted through the executor, then `git gc` as its
/// owner when [`decide`] says so, audited with the bytes it freed (measured). Returns the
/// reports of what was done (nothing when the repo is held or not worth it: the reason is
/// logged); the error is an audit log that cannot be written.
pub fn maintain(
    exec: &Executor,
    target: &Target,
    settings: &GitConfig,
    protection: &dyn Fn(&Path) -> Option<String>,
) -> Result<Vec<ActionReport>, AuditFailed> {
    let mut reports = Vec::new();
    let shown = crate::textpath::shown(&target.git_dir);
    if let Some(why) = held(target, protection) {
        tracing::debug!(repo = %shown, "git maintenance skipped: {why}");
        return Ok(reports);
    }
    let now = crate::tasks::clock::now_secs();
    let facts = match inspect(&target.git_dir, now, settings.stale_after.0) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(repo = %shown, "git maintenance skipped: {e}");
            return Ok(reports);
        }
    };
    if facts.busy.is_none() {
        for path in &facts.stale {
            reports.push(exec.execute(&stale_action(path, target, settings))?);
        }
    }
    let avail = fsys::fs_space(&target.git_dir).map_or(0, |s| s.avail_bytes);
    let euid = rustix::process::geteuid().as_raw();
    let (uid, gid) = match decide(&facts, avail, euid, settings.min_loose_objects) {
        Decision::Run { uid, gid } => (uid, gid),
        Decision::Skip(why) => {
            tracing::debug!(repo = %shown, "git gc skipped: {why}");
            return Ok(reports);
        }
    };
    let Some(git) = find_git() else {
        crate::warn_quiet!(
            "git.maintenance.nogit",
            "git maintenance skipped: no `git` binary in {SAFE_PATH}"
        );
        return Ok(reports);
    };
    let reason = format!(
        "phase 1: git gc as uid {uid} ({} loose objects)",
        facts.loose_objects
    );
    let mut record = AuditRecord::event(
        "git_maintenance",
        target.git_dir.clone(),
        "git-maintenance",
        1,
        reason,
        exec.dry_run(),
        "",
    );
    let before = measure(&target.git_dir);
    let (outcome, error) = if exec.dry_run() {
        (Outcome::WouldDelete, None)
    } else if fsys::identity_of(&target.git_dir).ok() != Some(facts.identity) {
        (
            Outcome::Skipped,
            Some("the .git was replaced while it was inspected".to_string()),
        )
    } else {
        let command = gc_command(&git, &target.git_dir, uid, gid);
        match crate::child::run_command_with_limit(
            command,
            "git gc",
            settings.maintenance_timeout.0,
        ) {
            Ok(()) => (Outcome::Deleted, None),
            Err(e) => (Outcome::Failed, Some(e)),
        }
    };
    let after = measure(&target.git_dir);
    record.ts = crate::cleanup::audit::timestamp(std::time::SystemTime::now());
    record.bytes_estimated = before.unwrap_or(0);
    record.bytes_freed = match (before, after) {
        (Some(b), Some(a)) => b.saturating_sub(a),
        _ => 0,
    };
    record.outcome = match outcome {
        Outcome::Deleted => "ok",
        other => other.as_str(),
    }
    .into();
    record.error = error;
    reports.push(exec.record_event(outcome, record)?);
    Ok(reports)
}

/// A planned deletion of a stale temp file, re-checked by the executor like any other.
fn stale_action(path: &Path, target: &Target, settings: &GitConfig) -> PlannedAction {
    PlannedAction {
        path: path.to_path_buf(),
        project: target.project.clone(),
        rule: "git-stale".into(),
        phase: 1,
        reason: format!(
            "phase 1: stale git temp file, unchanged for {}",
            humantime::format_duration(settings.stale_after.0)
        ),
        bytes_estimated: std::fs::symlink_metadata(path).map_or(0, |m| m.blocks() * 512),
        inodes_estimated: 1,
        identity: fsys::identity_of(path).unwrap_or((0, 0)),
        min_idle_secs: Some(settings.stale_after.0.as_secs()),
        rebuild: None,
    }
}

/// The allocated bytes of the tree at `dir` (`du` semantics), measured with the scanner.
fn measure(dir: &Path) -> Option<u64> {
    use rustix::fd::AsFd;
    let fd = fsys::open_dir_nofollow(dir).ok()?;
    let walked = crate::scan::walk_tree(fd.as_fd(), dir, &crate::scan::NoRules).ok()?;
    Some(walked.tally.usage().allocated)
}

/// The first executable `git` in [`SAFE_PATH`].
fn find_git() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    SAFE_PATH
        .split(':')
        .map(|d| Path::new(d).join("git"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `git gc` on `git_dir` as `uid`/`gid`, losing nothing: every expiry `never`, no system or
/// global config, a clean environment, no hooks.
fn gc_command(git: &Path, git_dir: &Path, uid: u32, gid: u32) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(git);
    let mut dir_arg = std::ffi::OsString::from("--git-dir=");
    dir_arg.push(git_dir);
    cmd.arg(dir_arg);
    for setting in [
        "gc.auto=0",
        "gc.pruneExpire=never",
        "gc.reflogExpire=never",
        "gc.reflogExpireUnreachable=never",
        "gc.worktreePruneExpire=never",
        "gc.rerereResolved=never",
        "gc.rerereUnresolved=never",
        "core.hooksPath=/dev/null",
        "maintenance.auto=false",
    ] {
        cmd.args(["-c", setting]);
    }
    cmd.args(["gc", "--quiet"])
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("HOME", "/nonexistent")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C")
        .current_dir("/");
    // std drops the supplementary groups when root changes uid.
    if rustix::process::geteuid().is_root() {
        cmd.gid(gid).uid(uid);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RepoFacts {
        RepoFacts {
            uid: 1000,
            gid: 1000,
            loose_objects: 5000,
            pack_bytes: 100 << 20,
            ..RepoFacts::default()
        }
    }

    #[test]
    fn gc_runs_as_the_owner_of_the_repo_even_when_guardian_is_root() {
        assert_eq!(
            decide(&facts(), 1 << 30, 0, 1000),
            Decision::Run {
                uid: 1000,
                gid: 1000
            }
        );
        // A root-owned repo under a root Guardian: root is its owner.
        let root_owned = RepoFacts {
            uid: 0,
            gid: 0,
            ..facts()
        };
        assert_eq!(
            decide(&root_owned, 1 << 30, 0, 1000),
            Decision::Run { uid: 0, gid: 0 }
        );
    }

    #[test]
    fn a_non_root_guardian_never_maintains_another_users_repo() {
        assert!(matches!(
            decide(&facts(), 1 << 30, 1001, 1000),
            Decision::Skip(why) if why.contains("uid 1000")
        ));
        assert!(matches!(
            decide(&facts(), 1 << 30, 1000, 1000),
            Decision::Run { .. }
        ));
    }

    #[test]
    fn gc_needs_free_space_for_its_packs_many_loose_objects_and_no_lock() {
        let f = facts();
        assert!(matches!(
            decide(&f, (100 << 20) - 1, 0, 1000),
            Decision::Skip(why) if why.contains("below the size of its packs")
        ));
        assert!(matches!(
            decide(&f, 100 << 20, 0, 1000),
            Decision::Run { .. }
        ));
        assert!(matches!(
            decide(&f, 1 << 30, 0, 5001),
            Decision::Skip(why) if why.contains("min_loose_objects")
        ));
        let busy = RepoFacts {
            busy: Some("a git lock is taken (index.lock)".into()),
            ..facts()
        };
        assert!(matches!(
            decide(&busy, 1 << 30, 0, 1),
            Decision::Skip(why) if why.contains("index.lock")
        ));
    }

    #[test]
    fn targets_are_the_git_dirs_a_plan_deletes_or_keeps_in_phase_1() {
        use crate::policy::{Plan, Skipped};
        let ws = Workspace {
            path: PathBuf::from("/ws"),
            protect: Vec::new(),
        };
        let action = |path: &str, phase: u8| PlannedAction {
            path: PathBuf::from(path),
            project: PathBuf::from("/ws/a"),
            rule: "r".into(),
            phase,
            reason: String::new(),
            bytes_estimated: 0,
            inodes_estimated: 0,
            identity: (0, 0),
            min_idle_secs: None,
            rebuild: None,
        };
        let space = fsys::FsSpace {
            total_bytes: 100,
            avail_bytes: 10,
            free_bytes: 10,
            total_inodes: 0,
            avail_inodes: 0,
        };
        let mut plan: Plan =
            crate::policy::plan(&space, &crate::config::Thresholds::default(), &[], true);
        plan.actions = vec![
            action("/ws/a/.git", 1),
            action("/ws/a/node_modules", 1),
            action("/ws/c/.git", 2),
        ];
        plan.skipped = vec![
            Skipped {
                path: PathBuf::from("/ws/b/sub/.git"),
                reason: "unpushed commits on main".into(),
            },
            Skipped {
                path: PathBuf::from("/elsewhere/.git"),
                reason: "x".into(),
            },
        ];
        let got = targets(&plan, &[ws]);
        assert_eq!(
            got,
            vec![
                Target {
                    git_dir: PathBuf::from("/ws/a/.git"),
                    project: PathBuf::from("/ws/a")
                },
                Target {
                    git_dir: PathBuf::from("/ws/b/sub/.git"),
                    project: PathBuf::from("/ws/b")
                },
            ]
        );
    }
}
