//! A `.git` holding unpushed work is kept in phase 1: by the survey, and again by the executor
//! when a commit is made between plan and delete.

use super::*;

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
