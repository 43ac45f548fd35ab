//! Whether a `.git` holds work that exists nowhere else: commits no remote-tracking ref reaches
//! (in a repo without remote-tracking refs, any commit), stash entries, linked worktrees, the
//! same in the repos of its submodules (`modules/`), or a work tree that differs from its
//! index/HEAD (modified, staged, or untracked and not ignored).
//! Read with `gix` (no `git` binary, no parsing of its output), read-only, with the repo's own
//! configuration confined: no system/global config, no environment, and no config section
//! trusted, so no filter or diff driver a repo names is ever run.
//!
//! Invariant: whatever cannot be decided — an unreadable or corrupt repo, a broken ref, a
//! check past its time limit — keeps the `.git` (the answer is a reason to keep it). A dir
//! named `.git` that is no repository at all (no `HEAD`, `objects`, `refs`) holds nothing git
//! could lose; its rule decides as for any other name.

use crossbeam_channel::RecvTimeoutError;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one check may take; a repo not decided by then is kept. Reading refs and walking
/// from local tips to the first commit no remote reaches takes milliseconds on usual repos; a
/// huge history whose local and remote sides are disjoint is the case this bounds.
pub const CHECK_LIMIT: Duration = Duration::from_secs(10);
/// Most refs read from one repo; a repo with more is kept (cannot decide within bounds).
const MAX_REFS: usize = 100_000;
/// Most checks whose thread still runs (past their limit, or in progress) at once. A check past
/// its limit is told to stop and ends on its own; while this many still run, a new repo is kept
/// without being read, so a stream of hostile repos cannot pile up threads.
const MAX_RUNNING: usize = 4;

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Why the `.git` directory at `git_dir` must not be deleted because it holds work found
/// nowhere else (or because that cannot be decided within [`CHECK_LIMIT`]); `None` when every
/// commit is on a remote-tracking ref, no stash and no linked worktree exists, and the work tree
/// is clean. Runs the check on a thread of its own and waits at most `limit`.
pub fn work_at_risk(git_dir: &Path, limit: Duration) -> Option<String> {
    if RUNNING.fetch_add(1, Ordering::AcqRel) >= MAX_RUNNING {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
        return Some("kept: earlier git checks are still running, cannot decide now".into());
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let stop = Arc::new(AtomicBool::new(false));
    let path = git_dir.to_path_buf();
    let flag = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("guardian-git-check".into())
        .spawn(move || {
            let verdict = check(&path, &flag);
            let _ = tx.send(verdict);
            RUNNING.fetch_sub(1, Ordering::AcqRel);
        });
    if let Err(e) = spawned {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
        return Some(format!("kept: cannot start the git check: {e}"));
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(e)) => Some(format!("kept: cannot read the repo: {e}")),
        Err(RecvTimeoutError::Timeout) => {
            stop.store(true, Ordering::Relaxed);
            Some(format!(
                "kept: could not decide within {limit:?} whether it holds unpushed work"
            ))
        }
        Err(RecvTimeoutError::Disconnected) => Some("kept: the git check failed".into()),
    }
}

/// The check itself, on the calling thread: `Ok(Some(reason))` when work would be lost,
/// `Ok(None)` when none would, `Err` when the repo cannot be read. `stop` ends it early (as
/// "cannot decide").
pub fn check(git_dir: &Path, stop: &AtomicBool) -> Result<Option<String>, String> {
    check_at(git_dir, stop, 0)
}

/// Most submodule repos (`modules/…`) looked at in one repo, and how deep they may nest.
const MAX_SUBMODULES: usize = 64;
const MAX_SUBMODULE_DEPTH: usize = 3;

fn check_at(git_dir: &Path, stop: &AtomicBool, depth: usize) -> Result<Option<String>, String> {
    let Some(repo) = open(git_dir)? else {
        // Not a repository git would recognise (no HEAD, objects and refs): a dir of that name
        // holds no commits, stash or index to lose; the rule that named it decides.
        return Ok(None);
    };
    if let Some(why) = linked_worktrees(git_dir) {
        return Ok(Some(why));
    }
    if repo
        .try_find_reference("refs/stash")
        .map_err(|e| format!("refs/stash: {e}"))?
        .is_some()
    {
        return Ok(Some("stash entries (refs/stash)".into()));
    }
    if let Some(why) = submodules(git_dir, stop, depth)? {
        return Ok(Some(why));
    }
    if let Some(why) = unpushed_commits(&repo, stop)? {
        return Ok(Some(why));
    }
    if stop.load(Ordering::Relaxed) {
        return Err("stopped".into());
    }
    dirty_work_tree(&repo, stop)
}

/// Opens the repo at exactly `git_dir`, confined: its local config only, no section of it
/// trusted (no filter/diff driver, no program it names), no environment. `None`: not a repo.
fn open(git_dir: &Path) -> Result<Option<gix::Repository>, String> {
    let options = gix::open::Options::isolated()
        .open_path_as_is(true)
        .filter_config_section(|_| false)
        .lossy_config(true);
    match gix::open_opts(git_dir, options) {
        Ok(repo) => Ok(Some(repo)),
        Err(gix::open::Error::NotARepository { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Linked worktrees (`git worktree add`) keep their HEAD, index and work tree state under
/// `worktrees/`; deleting the main `.git` orphans them. Not read further: kept.
fn linked_worktrees(git_dir: &Path) -> Option<String> {
    let dir = git_dir.join("worktrees");
    let mut entries = std::fs::read_dir(&dir).ok()?;
    entries
        .next()
        .is_some()
        .then(|| "linked worktrees (worktrees/)".into())
}

/// The repos of submodules live in the superproject's `modules/` (at their submodule path):
/// deleting the `.git` deletes them, so each is judged like the repo itself.
fn submodules(git_dir: &Path, stop: &AtomicBool, depth: usize) -> Result<Option<String>, String> {
    let modules = git_dir.join("modules");
    if !modules.is_dir() {
        return Ok(None);
    }
    if depth >= MAX_SUBMODULE_DEPTH {
        return Err(format!(
            "submodules nested deeper than {MAX_SUBMODULE_DEPTH}"
        ));
    }
    // Repo dirs (holding HEAD) under modules/, at most a few levels down (`libs/foo`).
    let mut repos = Vec::new();
    let mut dirs = vec![(modules.clone(), 0usize)];
    while let Some((dir, level)) = dirs.pop() {
        if dir != modules && dir.join("HEAD").is_file() {
            repos.push(dir);
            if repos.len() > MAX_SUBMODULES {
                return Err(format!("more than {MAX_SUBMODULES} submodule repos"));
            }
            continue;
        }
        if level >= 4 {
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("modules: {e}"))?;
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push((entry.path(), level + 1));
            }
        }
    }
    for repo in repos {
        if let Some(why) = check_at(&repo, stop, depth + 1)? {
            let name = repo.strip_prefix(&modules).unwrap_or(&repo);
            return Ok(Some(format!(
                "submodule {}: {why}",
                crate::textpath::shown(name)
            )));
        }
    }
    Ok(None)
}

/// A ref's target as a commit id, or `None` when it does not end at a commit (a tag of a tree).
fn peeled_commit(
    reference: &mut gix::Reference<'_>,
) -> Result<Option<gix::ObjectId>, gix::reference::peel::Error> {
    let id = reference.peel_to_id()?;
    Ok(match id.object() {
        Ok(object) if object.kind == gix::object::Kind::Commit => Some(id.detach()),
        Ok(_) => None,
        Err(_) => Some(id.detach()), // a missing object: walked, and the walk fails (kept)
    })
}

/// The first local ref (branch, tag, detached HEAD, anything but remote-tracking refs and the
/// stash) whose commits are not all reachable from a remote-tracking ref.
fn unpushed_commits(repo: &gix::Repository, stop: &AtomicBool) -> Result<Option<String>, String> {
    let platform = repo.references().map_err(|e| format!("refs: {e}"))?;
    let mut local: Vec<(String, gix::ObjectId)> = Vec::new();
    let mut remote: Vec<gix::ObjectId> = Vec::new();
    for (n, reference) in platform
        .all()
        .map_err(|e| format!("refs: {e}"))?
        .enumerate()
    {
        if n >= MAX_REFS {
            return Err(format!("more than {MAX_REFS} refs"));
        }
        if stop.load(Ordering::Relaxed) {
            return Err("stopped".into());
        }
        let mut reference = reference.map_err(|e| format!("a ref: {e}"))?;
        let name = reference.name().as_bstr().to_string();
        if name == "refs/stash" {
            continue;
        }
        if name.starts_with("refs/remotes/") {
            // A broken remote-tracking ref only hides less: more is counted as unpushed.
            if let Ok(Some(id)) = peeled_commit(&mut reference) {
                remote.push(id);
            }
            continue;
        }
        match peeled_commit(&mut reference) {
            Ok(Some(id)) => local.push((name, id)),
            Ok(None) => {}
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    // A detached HEAD is on no branch: its commits count too. An unborn HEAD has none.
    match repo.head() {
        Ok(head) if head.is_detached() => {
            if let Some(id) = head.id() {
                local.push(("HEAD".into(), id.detach()));
            }
        }
        Ok(_) => {}
        Err(e) => return Err(format!("HEAD: {e}")),
    }
    if local.is_empty() {
        return Ok(None);
    }
    let tips: Vec<_> = local.iter().map(|(_, id)| *id).collect();
    let mut walk = repo
        .rev_walk(tips)
        .with_hidden(remote)
        .all()
        .map_err(|e| format!("walk: {e}"))?;
    // Tips are visited first: the first commit the walk yields is the tip of a ref with
    // unpushed commits (or, when its tip is reached from another local ref, an ancestor).
    let Some(first) = walk.next() else {
        return Ok(None);
    };
    let first = first.map_err(|e| format!("walk: {e}"))?.id;
    let on: Vec<&str> = local
        .iter()
        .filter(|(_, id)| *id == first)
        .map(|(name, _)| short_name(name))
        .collect();
    Ok(Some(match on.as_slice() {
        [] => "unpushed commits".to_string(),
        [one] if *one == "HEAD" => "unpushed commits on a detached HEAD".to_string(),
        names => format!("unpushed commits on {}", names.join(", ")),
    }))
}

/// `main` for `refs/heads/main`, `tag v1` for `refs/tags/v1`, the full name otherwise.
fn short_name(name: &str) -> &str {
    name.strip_prefix("refs/heads/").unwrap_or(name)
}

/// Modified, staged, deleted or untracked (not ignored) files in the work tree, if it has one.
fn dirty_work_tree(repo: &gix::Repository, stop: &AtomicBool) -> Result<Option<String>, String> {
    if repo.workdir().is_none() {
        return Ok(None);
    }
    let interrupt = Arc::new(AtomicBool::new(stop.load(Ordering::Relaxed)));
    let status = repo
        .status(gix::progress::Discard)
        .map_err(|e| format!("status: {e}"))?
        .untracked_files(gix::status::UntrackedFiles::Collapsed)
        .should_interrupt_owned(interrupt.clone());
    let mut items = status
        .into_iter(Vec::<gix::bstr::BString>::new())
        .map_err(|e| format!("status: {e}"))?;
    let first = items.next();
    interrupt.store(true, Ordering::Relaxed);
    if stop.load(Ordering::Relaxed) {
        return Err("stopped".into());
    }
    match first {
        None => Ok(None),
        Some(Err(e)) => Err(format!("status: {e}")),
        Some(Ok(item)) => Ok(Some(describe(&item))),
    }
}

fn describe(item: &gix::status::Item) -> String {
    use gix::status::index_worktree::Item as Worktree;
    use gix::status::Item;
    match item {
        Item::TreeIndex(_) => "staged changes not committed".into(),
        Item::IndexWorktree(Worktree::DirectoryContents { .. }) => {
            "untracked files in the work tree".into()
        }
        Item::IndexWorktree(_) => "uncommitted changes in the work tree".into(),
    }
}
