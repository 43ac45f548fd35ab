//! Git maintenance: `git gc` frees measured bytes as the repo's owner, never as root; a repo
//! with a process in it is not maintained; packing that reaches the target keeps the `.git`; a
//! repo kept for unpushed work is still maintained by the cycle.

use super::*;

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
