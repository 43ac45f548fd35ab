//! Workspaces overlapping by identity: real bind mounts of one workspace, of a subdirectory of
//! one, and of a system directory.

use super::*;

/// A bind mount, unmounted on drop.
struct Bind(PathBuf);

impl Bind {
    fn new(from: &Path, to: &Path) -> Bind {
        std::fs::create_dir_all(to).unwrap();
        run(Command::new("mount").arg("--bind").arg(from).arg(to));
        Bind(to.to_path_buf())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn bind_mounted_spellings_of_one_workspace_are_refused_by_identity() {
    if !require_root("bind_mounted_spellings_of_one_workspace_are_refused_by_identity") {
        return;
    }
    let s = Sandbox::new();
    let ws = s.dir("a/ws");
    s.dir("a/ws/tasks");
    let alias = s.path("b/alias");
    let _bind = Bind::new(&ws, &alias);
    // Two texts that share no prefix, one directory.
    let config = s.config(&[&ws, &alias], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &[
            "workspaces.1.path",
            "workspaces.0.path",
            "same directory",
            "device and inode",
        ],
    );
    // Nested through the alias: b/alias/tasks is inside a/ws.
    let config = s.config(&[&ws, &alias.join("tasks")], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.1.path", "workspaces.0.path", "is inside"],
    );
    // The other order: the outer one through the alias.
    let config = s.config(&[&ws.join("tasks"), &alias], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.1.path", "workspaces.0.path", "contains"],
    );
    // The audit log and the state dir under the alias are inside the workspace.
    let config = s.config(&[&ws], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let audit_in = text.replace(
        &s.path("state/audit.jsonl").display().to_string(),
        &alias.join("audit.jsonl").display().to_string(),
    );
    std::fs::write(&config, audit_in).unwrap();
    assert_refused(
        &run_with_config(&["run", "--once", "--config"], &config),
        &["daemon.audit_log", "workspaces.0.path", "device and inode"],
    );
    let state_in = text.replace(
        &s.path("state/state").display().to_string(),
        &alias.join("tasks").display().to_string(),
    );
    std::fs::write(&config, state_in).unwrap();
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["daemon.state_dir", "workspaces.0.path"],
    );
    s.assert_nothing_created();
    assert!(!alias.join("audit.jsonl").exists());
}

#[test]
fn a_bind_mount_of_a_subdirectory_of_a_workspace_is_refused_as_a_second_workspace() {
    if !require_root(
        "a_bind_mount_of_a_subdirectory_of_a_workspace_is_refused_as_a_second_workspace",
    ) {
        return;
    }
    // `..` from the bind mount's root leads to b/, never to a/ws: only the mount table tells
    // that b/alias is a/ws/tasks.
    let s = Sandbox::new();
    let ws = s.dir("a/ws");
    let tasks = s.dir("a/ws/tasks");
    let alias = s.path("b/alias");
    let _bind = Bind::new(&tasks, &alias);
    let config = s.config(&[&ws, &alias], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &[
            "workspaces.1.path",
            "workspaces.0.path",
            "is inside",
            "device and inode",
        ],
    );
    let config = s.config(&[&alias, &ws], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.1.path", "workspaces.0.path", "contains"],
    );
    // The audit log in a dir below the alias (not created yet) is inside the workspace too.
    let daemon = format!(
        "audit_log = \"{}\"\nstate_dir = \"{}\"\n",
        alias.join("logs/audit.jsonl").display(),
        s.path("state/state").display()
    );
    let config = s.config_with(&[&ws], &daemon, "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["daemon.audit_log", "workspaces.0.path"],
    );
}

#[test]
fn a_bind_mount_of_a_system_directory_is_refused_as_a_workspace() {
    if !require_root("a_bind_mount_of_a_system_directory_is_refused_as_a_workspace") {
        return;
    }
    let s = Sandbox::new();
    let alias = s.path("etc-alias");
    let _bind = Bind::new(Path::new("/etc"), &alias);
    let config = s.config(&[&alias], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.0.path", "system directory `/etc`"],
    );
}
