//! `guardian install-service`: the installed unit passes `systemd-analyze verify`, a dry run
//! writes nothing, and a place it cannot write is refused clearly.

use super::*;

/// A config with two workspaces (and its audit/state dirs) under `root`.
fn two_workspace_config(root: &Path) -> std::path::PathBuf {
    for d in ["ws-a", "ws b", "var"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let config = root.join("guardian.toml");
    std::fs::write(
        &config,
        format!(
            r#"[daemon]
audit_log = "{r}/var/log/audit.jsonl"
state_dir = "{r}/var/state"
journal_vacuum = []

[[workspaces]]
path = "{r}/ws-a"

[[workspaces]]
path = "{r}/ws b"

[serve]
enabled = false
"#,
            r = root.display()
        ),
    )
    .unwrap();
    config
}

fn systemd_analyze_verify(unit: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .expect("systemd-analyze (systemd) is installed: .ci/run installs it")
}

/// `install-service` for a config with two workspaces writes a unit that `systemd-analyze
/// verify` accepts (ExecStart= the built binary), with each workspace and Guardian's own dirs
/// writable, and says how to enable it without doing so.
#[test]
fn installed_unit_for_two_workspaces_passes_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let config = two_workspace_config(tmp.path());
    let out_dir = tmp.path().join("units");
    std::fs::create_dir(&out_dir).unwrap();
    let out = guardian(&[
        "install-service",
        "--kind",
        "systemd",
        "--config",
        config.to_str().unwrap(),
        "--output-dir",
        out_dir.to_str().unwrap(),
        "--binary",
        guardian_bin().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("systemctl enable --now guardian.service"),
        "{stdout}"
    );
    let unit_path = out_dir.join("guardian.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let r = tmp.path().display();
    for want in [
        format!("ReadWritePaths=-{r}/ws-a"),
        format!("ReadWritePaths=-\"{r}/ws b\""),
        format!("ReadWritePaths=-{r}/var/log"),
        format!("ReadWritePaths=-{r}/var/state"),
        format!(
            "ExecStart={} run --config {}",
            guardian_bin().display(),
            config.display()
        ),
    ] {
        assert!(unit.lines().any(|l| l == want), "no {want} in\n{unit}");
    }
    let verify = systemd_analyze_verify(&unit_path);
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Nothing was enabled: no symlink anywhere under the output dir.
    let entries: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the unit was written");
}

/// `--dry-run` prints the unit and writes nothing.
#[test]
fn install_service_dry_run_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = two_workspace_config(tmp.path());
    let out_dir = tmp.path().join("units");
    std::fs::create_dir(&out_dir).unwrap();
    for kind in ["systemd", "launchd"] {
        let out = guardian(&[
            "install-service",
            "--dry-run",
            "--kind",
            kind,
            "--config",
            config.to_str().unwrap(),
            "--output-dir",
            out_dir.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{kind}: {stdout}");
        assert!(stdout.contains("dry run: nothing written"), "{stdout}");
        assert!(
            stdout.contains("Type=notify") || stdout.contains("launchctl bootstrap system"),
            "{stdout}"
        );
        assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0, "{kind}");
    }
}

/// A directory it cannot write is refused, naming the file and what to do.
#[test]
fn install_service_refuses_clearly_when_it_cannot_write() {
    let tmp = tempfile::tempdir().unwrap();
    let config = two_workspace_config(tmp.path());
    let missing = tmp.path().join("no-such-dir");
    let out = guardian(&[
        "install-service",
        "--config",
        config.to_str().unwrap(),
        "--output-dir",
        missing.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot write {}",
            missing.join("guardian.service").display()
        )),
        "{stderr}"
    );
}
