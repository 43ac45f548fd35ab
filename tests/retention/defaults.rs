//! The embedded defaults on a plain task work dir and on a seed-004 training tree.

use super::*;

/// The embedded default with its paths moved into the test's mount.
fn default_config_in(s: &Setup) -> PathBuf {
    let out = guardian(&["config", "default"]);
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace("/home/worker/dispatch", &s.path("ws").display().to_string())
        .replace("/var/log/guardian", &s.path("state").display().to_string())
        .replace(
            "/var/lib/guardian",
            &s.path("state/state").display().to_string(),
        );
    let path = s.path("default.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn defaults_implement_seed_004_and_leave_a_plain_work_dir_alone() {
    if !require_root("defaults_implement_seed_004_and_leave_a_plain_work_dir_alone") {
        return;
    }
    let s = Setup::new("");
    // A plain task work dir: nothing of it is a retention dir's entry.
    let plain = s.path("ws/app");
    for rel in [
        "src/main.rs",
        "target/debug/app",
        "build/v1/out.o",
        "versions/v1/x",
        "backups/db_20260101.tar",
        "app.log",
        "out/logs/run.log",
    ] {
        write_file(&plain.join(rel), 1024);
    }
    set_mtime(&plain.join("app.log"), Duration::from_secs(60 * 86_400));
    // A seed-004 training tree.
    let train = s.path("ws/train");
    for v in 1..=5 {
        write_file(
            &train.join(format!("models/versions/v{v:03}_2026110{v}_031848/w.bin")),
            4096,
        );
    }
    write_file(&train.join("models/current_model/w.bin"), 4096);
    for kind in ["pre_consolidation", "nightly"] {
        for day in 1..=3 {
            write_file(
                &train.join(format!("models/backups/{kind}_2026110{day}/w.bin")),
                4096,
            );
        }
    }
    for (name, days) in [
        ("train.log", 0),
        ("train.log.1", 3),
        ("train.log.2", 9),
        ("disk.log", 20),
    ] {
        write_file(&train.join("logs").join(name), 4096);
        set_mtime(
            &train.join("logs").join(name),
            Duration::from_secs(days * 86_400 + 60),
        );
    }
    let plain_before = digest(&plain);
    let config = default_config_in(&s);
    let out = guardian(&["retention", "--config", config.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        digest(&plain),
        plain_before,
        "the defaults touched a plain work dir"
    );
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        names(&train.join("models/versions")),
        set(&["v004_20261104_031848", "v005_20261105_031848"])
    );
    assert_eq!(
        names(&train.join("models/backups")),
        set(&["nightly_20261103", "pre_consolidation_20261103"])
    );
    assert_eq!(
        names(&train.join("logs")),
        set(&["train.log", "train.log.1"])
    );
    assert!(train.join("models/current_model/w.bin").exists());
}
