//! Refused at config load: a retention dir outside every workspace, and one reached through a
//! symlink (nothing touched).

use super::*;

#[test]
fn a_retention_dir_outside_every_workspace_is_refused_at_config_load() {
    // Pure text check: no root needed.
    let holder = tempfile::tempdir().unwrap();
    let config = holder.path().join("guardian.toml");
    write_config(
        &config,
        &holder.path().join("ws"),
        &holder.path().join("state"),
        "1s",
        "[[retention]]\nname = \"elsewhere\"\ndir = \"/srv/models/versions\"\nglob = \"v*\"\nkeep_last = 2\n",
    );
    for args in [
        vec!["config", "check", config.to_str().unwrap()],
        vec![
            "retention",
            "--dry-run",
            "--config",
            config.to_str().unwrap(),
        ],
    ] {
        let out = guardian(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("retention.0.dir"), "{err}");
        assert!(err.contains("not inside a configured workspace"), "{err}");
    }
    // The workspace root itself is not a retention dir either (its children are projects).
    write_config(
        &config,
        &holder.path().join("ws"),
        &holder.path().join("state"),
        "1s",
        &format!(
            "[[retention]]\nname = \"root\"\ndir = \"{}\"\nglob = \"v*\"\nkeep_last = 2\n",
            holder.path().join("ws").display()
        ),
    );
    let out = guardian(&["config", "check", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_retention_dir_reached_through_a_symlink_is_refused_at_load_and_nothing_is_touched() {
    if !require_root(
        "a_retention_dir_reached_through_a_symlink_is_refused_at_load_and_nothing_is_touched",
    ) {
        return;
    }
    // The configured dir is a symlink to the real releases dir: the config is refused, naming
    // the key, and nothing is listed or deleted through it.
    let s = Setup::new(&RELEASES.replace("train/releases", "train/link"));
    make_releases(&s);
    std::os::unix::fs::symlink(s.path("ws/train/releases"), s.path("ws/train/link")).unwrap();
    let before = digest(&s.path("ws/train/releases"));
    let out = s.retention(&["--json"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("retention") && stderr.contains("dir"),
        "{stderr}"
    );
    assert!(stderr.contains("link"), "{stderr}");
    assert_eq!(digest(&s.path("ws/train/releases")), before);
    assert!(audit_lines(&s.audit()).is_empty());
}
