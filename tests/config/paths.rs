//! What a well-formed config is refused for: a sample interval out of range, workspaces through
//! symlinks or overlapping by text, the audit log or state dir through a symlink or inside a
//! workspace; the embedded default loads.

use super::*;

#[test]
fn sample_interval_of_1ns_is_refused() {
    let s = Sandbox::new();
    let ws = s.dir("ws");
    let daemon = format!(
        "sample_interval = \"1ns\"\naudit_log = \"{}\"\nstate_dir = \"{}\"\n",
        s.path("state/audit.jsonl").display(),
        s.path("state/state").display()
    );
    let config = s.config_with(&[&ws], &daemon, "");
    for command in CONFIG_COMMANDS {
        let out = run_with_config(command, &config);
        assert_refused(&out, &["daemon.sample_interval", "line 2", "1ns"]);
    }
    s.assert_nothing_created();
}

#[test]
fn workspace_through_a_symlinked_parent_is_refused() {
    let s = Sandbox::new();
    let real = s.dir("real");
    let alpha = s.dir("real/alpha");
    std::fs::write(alpha.join("precious"), b"data").unwrap();
    let link = s.path("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let config = s.config(&[&link.join("alpha")], "");
    for command in CONFIG_COMMANDS {
        let out = run_with_config(command, &config);
        assert_refused(
            &out,
            &[
                "workspaces.0.path",
                "line 6",
                "symbolic link",
                &link.display().to_string(),
                &alpha.canonicalize().unwrap().display().to_string(),
            ],
        );
    }
    s.assert_nothing_created();
    assert!(alpha.join("precious").exists());
    // The real path is accepted.
    let config = s.config(&[&alpha.canonicalize().unwrap()], "");
    let out = run_with_config(&["config", "check"], &config);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn workspace_that_is_a_symlink_is_refused() {
    let s = Sandbox::new();
    let real = s.dir("real");
    let link = s.path("ws");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let config = s.config(&[&link], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.0.path", "is a symbolic link"],
    );
    // A link below a path that does not exist yet is still found.
    let config = s.config(&[&link.join("not-yet/deeper")], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.0.path", "symbolic link"],
    );
}

#[test]
fn audit_log_and_state_dir_through_a_symlink_are_refused() {
    let s = Sandbox::new();
    let ws = s.dir("ws");
    let real = s.dir("real-logs");
    let link = s.path("logs");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for (daemon, key) in [
        (
            format!(
                "audit_log = \"{}\"\nstate_dir = \"{}\"\n",
                link.join("audit.jsonl").display(),
                s.path("state/state").display()
            ),
            "daemon.audit_log",
        ),
        (
            format!(
                "audit_log = \"{}\"\nstate_dir = \"{}\"\n",
                s.path("state/audit.jsonl").display(),
                link.join("state").display()
            ),
            "daemon.state_dir",
        ),
    ] {
        let config = s.config_with(&[&ws], &daemon, "");
        assert_refused(
            &run_with_config(&["run", "--once", "--config"], &config),
            &[key, "symbolic link"],
        );
    }
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    s.assert_nothing_created();
}

#[test]
fn overlapping_workspaces_are_refused_naming_both_keys() {
    let s = Sandbox::new();
    let outer = s.dir("ws");
    let inner = s.dir("ws/tasks");
    let config = s.config(&[&outer, &inner], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.1.path", "workspaces.0.path", "line 9", "inside"],
    );
    s.assert_nothing_created();
}

#[test]
fn audit_log_inside_a_workspace_is_refused() {
    let s = Sandbox::new();
    let ws = s.dir("ws");
    let daemon = format!(
        "audit_log = \"{}\"\nstate_dir = \"{}\"\n",
        ws.join("logs/audit.jsonl").display(),
        s.path("state/state").display()
    );
    let config = s.config_with(&[&ws], &daemon, "");
    assert_refused(
        &run_with_config(&["run", "--once", "--config"], &config),
        &["daemon.audit_log", "workspaces.0.path", "line 2"],
    );
    assert!(!ws.join("logs").exists());
}

#[test]
fn the_embedded_default_loads_with_its_paths_checked() {
    // /home/worker/dispatch need not exist: paths that do not exist get the text checks only.
    Config::load_embedded_default().unwrap();
}
