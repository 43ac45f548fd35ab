//! Retention in the daemon: on its schedule without pressure, first in a phase 1 cycle, and
//! `compress` replacing old versions by verified archives with the bytes saved audited.

use super::*;

const VERSIONS: &str = r#"
[[retention]]
name = "versions"
project_dir = "models/versions"
glob = "v*"
keep_last = 2
"#;

/// Six 2 MiB versions in the project `train`.
fn make_versions(s: &Setup) -> PathBuf {
    let dir = s.path("ws/train/models/versions");
    for v in 1..=6 {
        write_file(&dir.join(format!("v{v}/w.bin")), 2 * MIB);
    }
    dir
}

fn run_once(s: &Setup) {
    let out = guardian(&["run", "--once", "--config", s.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn retention_lines(s: &Setup) -> Vec<Value> {
    audit_lines(&s.audit())
        .into_iter()
        .filter(|l| l["rule"] == "retention:versions")
        .collect()
}

#[test]
fn the_daemon_applies_retention_on_its_schedule_without_pressure() {
    if !require_root("the_daemon_applies_retention_on_its_schedule_without_pressure") {
        return;
    }
    let s = Setup::new(VERSIONS);
    let dir = make_versions(&s);
    assert!(
        free_percent(&s.path("ws")) > 30.0,
        "the test needs no pressure"
    );
    run_once(&s);
    let want: BTreeSet<String> = ["v5", "v6"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names(&dir), want);
    assert_eq!(retention_lines(&s).len(), 4);
}

#[test]
fn a_phase_1_cycle_starts_with_retention() {
    if !require_root("a_phase_1_cycle_starts_with_retention") {
        return;
    }
    let s = Setup::new(VERSIONS);
    let dir = make_versions(&s);
    // 85% used: phase 1 (below cleanup_free 20%), not critical. The filler is protected.
    fill_to_used(&s.path("ws"), &s.path("ws/output/filler"), 85.0);
    run_once(&s);
    let want: BTreeSet<String> = ["v5", "v6"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names(&dir), want);
    let lines = retention_lines(&s);
    assert_eq!(lines.len(), 4);
    let freed: u64 = lines
        .iter()
        .map(|l| l["bytes_freed"].as_u64().unwrap())
        .sum();
    // statvfs around each deletion: 8 MiB of data, less what other writers took meanwhile.
    assert!(freed > 7 * MIB, "freed {freed}");
    assert!(s.path("ws/output/filler").exists());
}

#[test]
fn compress_replaces_old_versions_by_verified_archives_and_audits_the_bytes_saved() {
    if !require_root(
        "compress_replaces_old_versions_by_verified_archives_and_audits_the_bytes_saved",
    ) {
        return;
    }
    let s = Setup::new(
        r#"
[[retention]]
name = "versions"
project_dir = "models/versions"
glob = "v*"
keep_last = 1
compress = true

[[retention]]
name = "logs"
project_dir = "logs"
glob = "*.log"
order = "mtime"
keep_within = "1d"
compress = true
"#,
    );
    let dir = s.path("ws/train/models/versions");
    for v in 1..=3 {
        write_file(&dir.join(format!("v{v}/w.bin")), 2 * MIB);
        std::os::unix::fs::symlink("w.bin", dir.join(format!("v{v}/link"))).unwrap();
    }
    let logs = s.path("ws/train/logs");
    write_file(&logs.join("new.log"), 4096);
    write_file(&logs.join("old.log"), MIB);
    set_mtime(&logs.join("old.log"), Duration::from_secs(5 * 86_400));
    let v1 = digest(&dir.join("v1"));
    // What changed in the second before an archive began is left in place (it might not be
    // in the archive): let the fresh test files age past that.
    std::thread::sleep(Duration::from_millis(2100));

    let out = s.retention(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(names(&dir), set(&["v1.tar.zst", "v2.tar.zst", "v3"]));
    assert_eq!(names(&logs), set(&["new.log", "old.log.zst"]));
    let lines = audit_lines(&s.audit());
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert_eq!(l["action"], "compress");
        assert_eq!(l["outcome"], "deleted");
        assert!(
            l["reason"].as_str().unwrap().contains("compressed to "),
            "{l}"
        );
        // Measured with statvfs: the originals' space less the archives'.
        assert!(l["bytes_freed"].as_u64().unwrap() > 0, "{l}");
    }
    // The archive holds the tree as it was.
    let unpack = s.path("unpacked");
    std::fs::create_dir(&unpack).unwrap();
    let tar_bytes =
        zstd::stream::decode_all(std::fs::File::open(dir.join("v1.tar.zst")).unwrap()).unwrap();
    tar::Archive::new(&tar_bytes[..]).unpack(&unpack).unwrap();
    // Same kinds, sizes, contents and link targets (inode numbers differ).
    let no_ino = |d: std::collections::BTreeMap<PathBuf, String>| {
        d.into_iter()
            .map(|(k, v)| (k, v.split(" ino ").next().unwrap().to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(no_ino(digest(&unpack.join("v1"))), no_ino(v1));
    let log =
        zstd::stream::decode_all(std::fs::File::open(logs.join("old.log.zst")).unwrap()).unwrap();
    assert_eq!(log.len(), MIB as usize);

    // A second run finds nothing new: archives are not candidates again.
    let before = digest(&dir);
    let out = s.retention(&[]);
    assert!(out.status.success());
    assert_eq!(digest(&dir), before);
    assert_eq!(audit_lines(&s.audit()).len(), 3);
}
