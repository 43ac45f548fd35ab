//! Guarantee 2: fresh dirs with back-dated files are not idle.

use super::*;

#[test]
fn fresh_project_with_back_dated_files_is_not_deleted_by_phase_2() {
    if !require_root("fresh_project_with_back_dated_files_is_not_deleted_by_phase_2") {
        return;
    }
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    // What `tar x` / `cp -a` / `git checkout` of old files leave: a dir made now, files with
    // 2020 mtimes. ctime is now, and cannot be back-dated.
    let fresh = ws.join("fresh-clone");
    write_files(&fresh.join("src"), 4, 5 * MIB);
    age_tree(&fresh, Duration::from_secs(6 * 365 * 86400));
    write_config(&config, &ws, &state, "1s", "");
    // The default active_within (15m): the test config's 1s is for tests that want phase 2.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("active_within = \"1s\"", "active_within = \"15m\"");
    std::fs::write(&config, text).unwrap();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 97.0);
    let before = digest(&fresh);

    let out = guardian(&["plan", "--json", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions = plan[0]["plan"]["actions"].as_array().unwrap();
    assert!(
        actions.iter().all(|a| a["path"] != fresh.to_str().unwrap()),
        "a project changed seconds ago was planned for deletion: {plan:#}"
    );
    let skipped = plan[0]["plan"]["skipped"].as_array().unwrap();
    let why = skipped
        .iter()
        .find(|s| s["path"] == fresh.to_str().unwrap())
        .unwrap_or_else(|| panic!("not listed as skipped: {plan:#}"));
    assert!(why["reason"].as_str().unwrap().contains("active"), "{why}");

    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(digest(&fresh), before, "the fresh project changed");
}
