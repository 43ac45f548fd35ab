//! Guarantee 9: root writes only where nobody else can redirect them.

use super::*;

#[test]
fn state_file_replaced_by_a_symlink_is_not_written_through() {
    if !require_root("state_file_replaced_by_a_symlink_is_not_written_through") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    std::fs::create_dir_all(&ws).unwrap();
    write_config(&config, &ws, &state, "1s", "");
    let victim = mount.path("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::create_dir_all(state.join("state")).unwrap();
    std::os::unix::fs::symlink(&victim, state.join("state/state.json")).unwrap();
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let meta = std::fs::symlink_metadata(state.join("state/state.json")).unwrap();
    assert!(meta.is_file(), "the state file is a new regular file");
    // No temp file left behind, none with a predictable name.
    let names: Vec<_> = std::fs::read_dir(state.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn state_dir_writable_by_others_is_refused_and_nothing_is_written_there() {
    if !require_root("state_dir_writable_by_others_is_refused_and_nothing_is_written_there") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    std::fs::create_dir_all(&ws).unwrap();
    write_config(&config, &ws, &state, "1s", "");
    std::fs::create_dir_all(state.join("state")).unwrap();
    std::fs::set_permissions(state.join("state"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(state.join("state")).unwrap().count(), 0);
}
