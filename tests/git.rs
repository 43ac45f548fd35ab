//! Git repos in workspaces (issue 13, items 3 and 4): a `.git` holding work that exists nowhere
//! else (unpushed commits, a stash, a dirty work tree) is kept in phase 1 — by the survey, and
//! again by the executor right before deleting; maintenance frees measured bytes in a repo with
//! many loose objects, running as the repo's owner. Real repos made with the real `git` binary,
//! on real tmpfs; the checks themselves read the repos without one.

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

/// A 64 MiB tmpfs workspace with a pushed repo and one with an unpushed commit, filled to 85%.
struct Pressured {
    mount: TestMount,
    ws: PathBuf,
    config: PathBuf,
    state: PathBuf,
}

fn pressured(extra_config: &str) -> Pressured {
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("guardian-state");
    std::fs::create_dir_all(&ws).unwrap();
    let config = mount.path("guardian.toml");
    write_config(&config, &ws, &state, "1s", extra_config);
    // The bare remotes live outside the workspace.
    let remotes = mount.path("upstream");
    std::fs::create_dir_all(&remotes).unwrap();
    for name in ["pushed", "unpushed"] {
        let repo = pushed_repo(&remotes, name);
        std::fs::rename(&repo, ws.join(name)).unwrap();
        write_file(
            &ws.join(name).join(".git/objects/pack/filler.keep"),
            2 * MIB,
        );
    }
    commit_file(&ws.join("unpushed"), "work.txt", "only here\n");
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 85.0);
    Pressured {
        mount,
        ws,
        config,
        state,
    }
}

/// `guardian ARGS` with no `git` anywhere on its PATH.
fn guardian_without_git(args: &[&str]) -> std::process::Output {
    Command::new(guardian_bin())
        .args(args)
        .env_clear()
        .env("PATH", "/nonexistent")
        .env("GUARDIAN_LOG", "info")
        .output()
        .expect("run guardian")
}

#[test]
fn a_git_dir_with_an_unpushed_commit_is_left_alone_by_phase_1() {
    if !require_root("a_git_dir_with_an_unpushed_commit_is_left_alone_by_phase_1") {
        return;
    }
    let p = pressured("");
    let config = p.config.to_str().unwrap();
    let out = guardian_without_git(&["plan", "--config", config, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unpushed_git = p.ws.join("unpushed/.git");
    let pushed_git = p.ws.join("pushed/.git");
    let skipped = plan[0]["plan"]["skipped"].as_array().unwrap();
    let entry = skipped
        .iter()
        .find(|s| s["path"] == unpushed_git.to_str().unwrap())
        .unwrap_or_else(|| panic!("unpushed .git not skipped: {plan}"));
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("unpushed commits on main"),
        "{entry}"
    );
    let actions = plan[0]["plan"]["actions"].as_array().unwrap();
    assert!(
        actions
            .iter()
            .any(|a| a["path"] == pushed_git.to_str().unwrap()),
        "the pushed repo's .git should be planned: {plan}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| a["path"] == unpushed_git.to_str().unwrap()),
        "{plan}"
    );

    let out = guardian_without_git(&["run", "--once", "--config", config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !pushed_git.exists(),
        "the pushed repo's .git should be gone"
    );
    assert!(
        unpushed_git.join("HEAD").exists(),
        "unpushed work was deleted"
    );
    assert!(
        p.ws.join("unpushed/work.txt").exists(),
        "the work tree must stay"
    );
    let audit = audit_lines(&p.state.join("audit.jsonl"));
    assert!(
        !audit
            .iter()
            .any(|l| l["path"] == unpushed_git.to_str().unwrap() && l["outcome"] == "deleted"),
        "{audit:?}"
    );
    drop(p.mount);
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

fn planned_git_dir(repo: &Path) -> PlannedAction {
    let path = repo.join(".git");
    PlannedAction {
        identity: guardian::fsys::identity_of(&path).unwrap(),
        path,
        project: repo.to_path_buf(),
        rule: "regenerable".into(),
        phase: 1,
        reason: "git test".into(),
        bytes_estimated: 0,
        inodes_estimated: 0,
        min_idle_secs: None,
        rebuild: None,
    }
}

#[test]
fn a_commit_made_between_plan_and_delete_still_saves_the_repo() {
    if !require_root("a_commit_made_between_plan_and_delete_still_saves_the_repo") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let upstream = mount.path("upstream");
    let late = pushed_repo(&upstream, "late");
    let clean = pushed_repo(&upstream, "clean");
    std::fs::rename(&late, ws.join("late")).unwrap();
    std::fs::rename(&clean, ws.join("clean")).unwrap();
    let exec = executor(&ws, &mount.path("audit.jsonl"));
    // Both planned while everything was pushed…
    let late_action = planned_git_dir(&ws.join("late"));
    let clean_action = planned_git_dir(&ws.join("clean"));
    // …then a commit lands in one of them before the executor gets to it.
    commit_file(&ws.join("late"), "late.txt", "committed after planning\n");
    let report = exec.execute(&late_action).unwrap();
    assert_eq!(report.outcome, Outcome::Skipped, "{:?}", report.record);
    assert_eq!(
        report.record.error.as_deref(),
        Some("unpushed commits on main")
    );
    assert!(ws.join("late/.git/HEAD").exists());
    // The one that stayed pushed goes: the re-check does not keep everything.
    let report = exec.execute(&clean_action).unwrap();
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.record);
    assert!(!ws.join("clean/.git").exists());
    // Phase 2 (whole-dir rules) is not held back by the git check.
    let mut whole = planned_git_dir(&ws.join("late"));
    whole.phase = 2;
    let report = exec.execute(&whole).unwrap();
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.record);
}

/// Writes `count` small files of distinct content under `repo/many/` and commits them: as many
/// loose blobs in `.git/objects`, each taking a block of its own.
fn commit_many_files(repo: &Path, count: usize) {
    let dir = repo.join("many");
    for i in 0..count {
        let sub = dir.join(format!("d{}", i % 16));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}")), format!("file {i}\n")).unwrap();
    }
    git(repo, &["add", "many"]);
    git(repo, &["commit", "-q", "-m", "many"]);
}

/// Lets another user reach paths under the test mount (tempdirs are created 0700).
fn open_ancestors(mount: &TestMount) {
    use std::os::unix::fs::PermissionsExt;
    let holder = mount.dir.parent().unwrap();
    std::fs::set_permissions(holder, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn chown_tree(path: &Path, uid: u32) {
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(path));
}

/// Every entry under `dir` whose owner is not `uid`.
fn not_owned_by(dir: &Path, uid: u32) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.uid() != uid {
            out.push(p.clone());
        }
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

fn du_bytes(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sB1").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn git_settings(min_loose: u64) -> guardian::config::GitConfig {
    guardian::config::GitConfig {
        maintenance: true,
        maintenance_timeout: guardian::config::HumanDuration(std::time::Duration::from_secs(60)),
        min_loose_objects: min_loose,
        stale_after: guardian::config::HumanDuration(std::time::Duration::from_secs(1)),
    }
}

const NOBODY: u32 = 65534;

#[test]
fn git_gc_frees_measured_bytes_as_the_repos_owner_never_as_root() {
    if !require_root("git_gc_frees_measured_bytes_as_the_repos_owner_never_as_root") {
        return;
    }
    use guardian::git::maintenance::{maintain, Target};
    let mount = TestMount::tmpfs(128 * MIB);
    open_ancestors(&mount);
    let ws = mount.path("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let repo = pushed_repo(&mount.path("upstream"), "app");
    commit_many_files(&repo, 3000);
    git(&repo, &["push", "-q", "origin", "main"]);
    std::fs::rename(&repo, ws.join("app")).unwrap();
    let repo = ws.join("app");
    let git_dir = repo.join(".git");
    // Leftovers of a killed git: a temp pack and a gc.log.
    write_file(&git_dir.join("objects/pack/tmp_pack_Xq3z9"), 256 * 1024);
    std::fs::write(git_dir.join("gc.log"), "error: gc failed\n").unwrap();
    chown_tree(&repo, NOBODY);
    std::thread::sleep(std::time::Duration::from_millis(2100)); // past stale_after = 1s
    let before = du_bytes(&git_dir);

    let exec = executor(&ws, &mount.path("audit.jsonl"));
    let target = Target {
        git_dir: git_dir.clone(),
        project: repo.clone(),
    };
    let reports = maintain(&exec, &target, &git_settings(100), &|_: &Path| None).unwrap();
    let after = du_bytes(&git_dir);

    let stale: Vec<_> = reports
        .iter()
        .filter(|r| r.record.rule == "git-stale")
        .collect();
    assert_eq!(stale.len(), 2, "{reports:?}");
    assert!(
        stale.iter().all(|r| r.outcome == Outcome::Deleted),
        "{stale:?}"
    );
    assert!(!git_dir.join("objects/pack/tmp_pack_Xq3z9").exists());
    assert!(!git_dir.join("gc.log").exists());

    let gc = reports
        .iter()
        .find(|r| r.record.action == "git_maintenance")
        .unwrap_or_else(|| panic!("no gc: {reports:?}"));
    assert_eq!(gc.record.outcome, "ok", "{:?}", gc.record);
    let freed = gc.record.bytes_freed;
    eprintln!(
        "git gc in a repo of 3000 loose blobs: .git {before} -> {after} bytes (du -sB1), \
         audited bytes_freed {freed}"
    );
    assert!(freed >= 4 * MIB, "gc freed only {freed} bytes");
    assert!(after < before, "du: {before} -> {after}");
    // git ran as the owner: what it wrote (the new pack) is nobody's, nothing is root's.
    let packs: Vec<_> = std::fs::read_dir(git_dir.join("objects/pack"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    assert!(!packs.is_empty(), "gc wrote no pack");
    let foreign = not_owned_by(&git_dir, NOBODY);
    assert!(foreign.is_empty(), "written as another user: {foreign:?}");
    // The audit line is on disk, with the measured figure.
    let audit = audit_lines(&mount.path("audit.jsonl"));
    let line = audit
        .iter()
        .find(|l| l["action"] == "git_maintenance")
        .unwrap_or_else(|| panic!("{audit:?}"));
    assert_eq!(line["bytes_freed"].as_u64(), Some(freed));
    assert!(
        line["reason"].as_str().unwrap().contains("as uid 65534"),
        "{line}"
    );
    // Nothing of the history was lost.
    assert_eq!(verdict(&repo), None);
}

#[test]
fn a_repo_with_a_process_in_it_is_not_maintained() {
    if !require_root("a_repo_with_a_process_in_it_is_not_maintained") {
        return;
    }
    use guardian::git::maintenance::{maintain, Target};
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let repo = pushed_repo(&mount.path("upstream"), "busy");
    commit_many_files(&repo, 200);
    std::fs::rename(&repo, ws.join("busy")).unwrap();
    let repo = ws.join("busy");
    let git_dir = repo.join(".git");
    write_file(&git_dir.join("objects/pack/tmp_pack_busy"), 64 * 1024);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let exec = executor(&ws, &mount.path("audit.jsonl"));
    let target = Target {
        git_dir: git_dir.clone(),
        project: repo.clone(),
    };
    // A process working in the repo (as a git would): nothing is done.
    let holder = Reaped::spawn(Command::new("sleep").arg("30").current_dir(&repo));
    wait_for_cwd(holder.pid(), &repo);
    let reports = maintain(&exec, &target, &git_settings(100), &|_: &Path| None).unwrap();
    assert!(reports.is_empty(), "{reports:?}");
    assert!(git_dir.join("objects/pack/tmp_pack_busy").exists());
    drop(holder);
    // A running task in the project: nothing either.
    let task = |p: &Path| (p == repo).then(|| "running task 7".to_string());
    let reports = maintain(&exec, &target, &git_settings(100), &task).unwrap();
    assert!(reports.is_empty(), "{reports:?}");
    // A git lock taken: the temp pack may be a live one; left alone, and no gc.
    std::fs::write(git_dir.join("index.lock"), "").unwrap();
    let reports = maintain(&exec, &target, &git_settings(100), &|_: &Path| None).unwrap();
    assert!(reports.is_empty(), "{reports:?}");
    assert!(git_dir.join("objects/pack/tmp_pack_busy").exists());
    // Free of all three: maintained.
    std::fs::remove_file(git_dir.join("index.lock")).unwrap();
    let reports = maintain(&exec, &target, &git_settings(100), &|_: &Path| None).unwrap();
    assert!(
        reports.iter().any(|r| r.record.action == "git_maintenance"),
        "{reports:?}"
    );
    assert!(!git_dir.join("objects/pack/tmp_pack_busy").exists());
}

#[test]
fn a_repo_that_packing_brings_to_target_keeps_its_git_dir() {
    if !require_root("a_repo_that_packing_brings_to_target_keeps_its_git_dir") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    open_ancestors(&mount);
    let ws = mount.path("dispatch");
    let state = mount.path("guardian-state");
    std::fs::create_dir_all(&ws).unwrap();
    let config = mount.path("guardian.toml");
    write_config(
        &config,
        &ws,
        &state,
        "1s",
        "\n[git]\nmin_loose_objects = 100\n",
    );
    let repo = pushed_repo(&mount.path("upstream"), "app");
    commit_many_files(&repo, 4000);
    git(&repo, &["push", "-q", "origin", "main"]);
    std::fs::rename(&repo, ws.join("app")).unwrap();
    let repo = ws.join("app");
    chown_tree(&repo, NOBODY);
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 85.0);
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = audit_lines(&state.join("audit.jsonl"));
    let gc = audit
        .iter()
        .find(|l| l["action"] == "git_maintenance")
        .unwrap_or_else(|| panic!("no maintenance: {audit:?}"));
    assert_eq!(gc["outcome"], "ok", "{gc}");
    assert!(gc["bytes_freed"].as_u64().unwrap() > 0, "{gc}");
    // Packing got the filesystem back to the target: the pushed .git did not have to go.
    assert!(
        free_percent(&mount.dir) >= 30.0,
        "free {:.1}%",
        free_percent(&mount.dir)
    );
    assert!(repo.join(".git/HEAD").exists(), "{audit:?}");
    assert!(
        !audit
            .iter()
            .any(|l| l["action"] == "delete" && l["outcome"] == "deleted"),
        "{audit:?}"
    );
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

#[test]
fn a_repo_kept_for_unpushed_work_is_still_maintained_by_the_cycle() {
    if !require_root("a_repo_kept_for_unpushed_work_is_still_maintained_by_the_cycle") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    open_ancestors(&mount);
    let ws = mount.path("dispatch");
    let state = mount.path("guardian-state");
    std::fs::create_dir_all(&ws).unwrap();
    let config = mount.path("guardian.toml");
    write_config(
        &config,
        &ws,
        &state,
        "1s",
        "\n[git]\nmin_loose_objects = 100\n",
    );
    let repo = pushed_repo(&mount.path("upstream"), "app");
    commit_many_files(&repo, 4000); // committed, never pushed
    std::fs::rename(&repo, ws.join("app")).unwrap();
    let repo = ws.join("app");
    chown_tree(&repo, NOBODY);
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 85.0);
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = audit_lines(&state.join("audit.jsonl"));
    let gc = audit
        .iter()
        .find(|l| l["action"] == "git_maintenance")
        .unwrap_or_else(|| panic!("no maintenance: {audit:?}"));
    assert_eq!(gc["outcome"], "ok", "{gc}");
    assert!(gc["bytes_freed"].as_u64().unwrap() > MIB, "{gc}");
    // The repo is packed, not deleted, and its unpushed commit is still there.
    assert_eq!(verdict(&repo).as_deref(), Some("unpushed commits on main"));
    assert!(
        !audit
            .iter()
            .any(|l| l["action"] == "delete" && l["outcome"] == "deleted"),
        "{audit:?}"
    );
}
