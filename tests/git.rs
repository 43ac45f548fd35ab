//! Git repos in workspaces (issue 13, items 3 and 4): a `.git` holding work that exists nowhere
//! else (unpushed commits, a stash, a dirty work tree) is kept in phase 1 — by the survey, and
//! again by the executor right before deleting; maintenance frees measured bytes in a repo with
//! many loose objects, running as the repo's owner. Real repos made with the real `git` binary,
//! on real tmpfs; the checks themselves read the repos without one.
//! This file holds the shared helpers; each theme is a file under `git/`.

mod support;

use guardian::cleanup::{AuditLog, Executor, Outcome};
use guardian::config::Workspace;
use guardian::git::unpushed;
use guardian::policy::PlannedAction;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use support::*;

/// Runs `git ARGS` in `dir` with a fixed identity and no system/global config.
fn git(dir: &Path, args: &[&str]) {
    let out = git_cmd(dir).args(args).output().expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn git_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid");
    cmd
}

fn commit_file(repo: &Path, name: &str, text: &str) {
    std::fs::write(repo.join(name), text).unwrap();
    git(repo, &["add", name]);
    git(repo, &["commit", "-q", "-m", name]);
}

/// A work tree at `base/name` cloned from a bare "remote" at `base/remotes/name.git`, with one
/// commit pushed: clean, nothing unpushed.
fn pushed_repo(base: &Path, name: &str) -> PathBuf {
    let remote = base.join("remotes").join(format!("{name}.git"));
    std::fs::create_dir_all(&remote).unwrap();
    git(&remote, &["init", "-q", "--bare", "-b", "main"]);
    let repo = base.join(name);
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(
        &repo,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    commit_file(&repo, "README", "hello\n");
    std::fs::write(repo.join(".gitignore"), "build/\n").unwrap();
    git(&repo, &["add", ".gitignore"]);
    git(&repo, &["commit", "-q", "-m", "ignore"]);
    git(&repo, &["push", "-q", "-u", "origin", "main"]);
    repo
}

/// The verdict on `repo/.git`, read without a `git` binary.
fn verdict(repo: &Path) -> Option<String> {
    unpushed::check(&repo.join(".git"), &AtomicBool::new(false))
        .unwrap_or_else(|e| Some(format!("kept: {e}")))
}

fn executor(ws: &Path, audit: &Path) -> Executor {
    Executor::new(
        vec![Workspace {
            path: ws.to_path_buf(),
            protect: Vec::new(),
        }],
        AuditLog::open(audit).unwrap(),
        false,
        Arc::new(AtomicBool::new(false)),
        Arc::new(|_: &Path| None),
    )
}

#[path = "git/keep.rs"]
mod keep;
#[path = "git/maintenance.rs"]
mod maintenance;
#[path = "git/verdicts.rs"]
mod verdicts;
