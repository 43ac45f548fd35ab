//! The verdict on a `.git`, read without a `git` binary: pushed and clean, unpushed commits,
//! branches or a detached head not on the remote, a stash, a dirty work tree, an unreadable repo,
//! a check that did not finish, an unpushed commit in a submodule.

use super::*;

#[test]
fn a_pushed_clean_repo_holds_no_unpushed_work() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = pushed_repo(tmp.path(), "app");
    // An ignored file is regenerable, not work.
    write_file(&repo.join("build/out.bin"), 4096);
    assert_eq!(verdict(&repo), None);
}

#[test]
fn a_commit_on_no_remote_tracking_ref_keeps_the_git_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = pushed_repo(tmp.path(), "app");
    commit_file(&repo, "work.txt", "not pushed\n");
    assert_eq!(verdict(&repo).as_deref(), Some("unpushed commits on main"));
    // Pushed: the same repo holds nothing unpushed any more.
    git(&repo, &["push", "-q", "origin", "main"]);
    assert_eq!(verdict(&repo), None);
}

#[test]
fn a_repo_without_any_remote_and_a_commit_is_unpushed() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("solo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    // No commit yet: nothing to lose but the untracked file.
    assert_eq!(verdict(&repo), None);
    commit_file(&repo, "a.txt", "a\n");
    assert_eq!(verdict(&repo).as_deref(), Some("unpushed commits on main"));
}

#[test]
fn a_branch_or_detached_head_not_on_the_remote_keeps_the_git_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = pushed_repo(tmp.path(), "app");
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    commit_file(&repo, "f.txt", "f\n");
    git(&repo, &["checkout", "-q", "main"]);
    assert_eq!(
        verdict(&repo).as_deref(),
        Some("unpushed commits on feature")
    );
    git(&repo, &["branch", "-q", "-D", "feature"]);
    // Gone from every ref but a detached HEAD: still work.
    git(&repo, &["checkout", "-q", "--detach", "main"]);
    commit_file(&repo, "d.txt", "d\n");
    assert_eq!(
        verdict(&repo).as_deref(),
        Some("unpushed commits on a detached HEAD")
    );
}

#[test]
fn a_stash_keeps_the_git_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = pushed_repo(tmp.path(), "app");
    std::fs::write(repo.join("README"), "changed\n").unwrap();
    git(&repo, &["stash", "-q"]);
    assert_eq!(
        verdict(&repo).as_deref(),
        Some("stash entries (refs/stash)")
    );
}

#[test]
fn a_dirty_work_tree_keeps_the_git_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = pushed_repo(tmp.path(), "app");
    std::fs::write(repo.join("README"), "edited, not committed\n").unwrap();
    assert_eq!(
        verdict(&repo).as_deref(),
        Some("uncommitted changes in the work tree")
    );
    git(&repo, &["add", "README"]);
    assert_eq!(
        verdict(&repo).as_deref(),
        Some("staged changes not committed")
    );
    git(&repo, &["reset", "-q", "--hard"]);
    assert_eq!(verdict(&repo), None);
    std::fs::write(repo.join("notes.txt"), "new file\n").unwrap();
    assert_eq!(
        verdict(&repo).as_deref(),
        Some("untracked files in the work tree")
    );
}

#[test]
fn a_repo_that_cannot_be_read_is_kept_and_a_dir_that_is_no_repo_is_not_judged() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = pushed_repo(tmp.path(), "app");
    // main points at an object that does not exist: cannot decide, so kept.
    std::fs::write(
        repo.join(".git/refs/heads/main"),
        "1234567890123456789012345678901234567890\n",
    )
    .unwrap();
    let v = verdict(&repo).expect("a broken repo must be kept");
    assert!(v.starts_with("kept:"), "{v}");
    // Through the bounded entry point too.
    let v = unpushed::work_at_risk(&repo.join(".git"), unpushed::CHECK_LIMIT)
        .expect("a broken repo must be kept");
    assert!(v.starts_with("kept:"), "{v}");
    // A dir named `.git` without HEAD/objects/refs is no repo: its rule decides.
    let fake = tmp.path().join("fake");
    write_file(&fake.join(".git/objects/blob"), 4096);
    assert_eq!(verdict(&fake), None);
}

#[test]
fn a_check_that_did_not_finish_keeps_the_repo() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = pushed_repo(tmp.path(), "app");
    // Told to stop (as the time limit does): no verdict, so the caller keeps the repo.
    let stopped = unpushed::check(&repo.join(".git"), &AtomicBool::new(true));
    assert!(stopped.is_err(), "{stopped:?}");
    assert_eq!(
        unpushed::check(&repo.join(".git"), &AtomicBool::new(false)),
        Ok(None)
    );
}

#[test]
fn an_unpushed_commit_in_a_submodule_keeps_the_superprojects_git_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = pushed_repo(tmp.path(), "lib");
    let lib_remote = tmp.path().join("remotes/lib.git");
    let app = pushed_repo(tmp.path(), "app");
    let out = git_cmd(&app)
        .args(["-c", "protocol.file.allow=always", "submodule", "add", "-q"])
        .arg(&lib_remote)
        .arg("libs/lib")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    git(&app, &["commit", "-q", "-m", "submodule"]);
    git(&app, &["push", "-q", "origin", "main"]);
    drop(lib);
    assert!(app.join(".git/modules/libs/lib/HEAD").exists());
    assert_eq!(verdict(&app), None, "everything is pushed");
    // A commit inside the submodule that its remote does not have: lost with the superproject's
    // .git (the submodule's repo lives in .git/modules/).
    let sub = app.join("libs/lib");
    commit_file(&sub, "sub.txt", "only here\n");
    let v = verdict(&app).expect("kept");
    assert!(v.contains("submodule libs/lib: unpushed commits"), "{v}");
}
