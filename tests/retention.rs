//! Retention end to end on a real tmpfs with the real `guardian` binary and real processes: a
//! releases dir with a `current` pointer and a pin, backups of three types, logs one of which a
//! process holds open, pointers and pins that change between decision and deletion, a retention
//! dir outside every workspace refused at config load, and the embedded defaults on a plain task
//! work dir and on a seed-004 training tree.

mod support;

use guardian::config::Config;
use guardian::protect::ProcSnapshot;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};
use support::*;

/// A tmpfs with a workspace `ws` holding the project `train`, Guardian's state beside it.
struct Setup {
    mount: TestMount,
    config: PathBuf,
}

impl Setup {
    fn new(retention: &str) -> Setup {
        let mount = TestMount::tmpfs(64 * MIB);
        std::fs::create_dir_all(mount.path("ws/train")).unwrap();
        std::fs::create_dir_all(mount.path("state")).unwrap();
        let config = mount.path("guardian.toml");
        write_config(
            &config,
            &mount.path("ws"),
            &mount.path("state"),
            "1s",
            &retention.replace("@WS", &mount.path("ws").display().to_string()),
        );
        Setup { mount, config }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mount.path(rel)
    }

    fn audit(&self) -> PathBuf {
        self.path("state/audit.jsonl")
    }

    fn retention(&self, args: &[&str]) -> std::process::Output {
        let config = self.config.display().to_string();
        let mut all = vec!["retention", "--config", config.as_str()];
        all.extend_from_slice(args);
        guardian(&all)
    }

    fn dry_run_json(&self) -> Value {
        let out = self.retention(&["--dry-run", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn config(&self) -> Config {
        Config::load(&self.config).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set_mtime(path: &Path, ago: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

/// Every entry decision of a `--json` report: name → (verdict, reasons).
fn decisions(report: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in report["rules"].as_array().unwrap() {
        for dir in rule["dirs"].as_array().unwrap() {
            for series in dir["series"].as_array().unwrap() {
                for e in series["entries"].as_array().unwrap() {
                    out.push((
                        e["name"].as_str().unwrap().to_string(),
                        e["verdict"].as_str().unwrap().to_string(),
                        e["reasons"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| r.as_str().unwrap().to_string())
                            .collect(),
                    ));
                }
            }
        }
    }
    out
}

const RELEASES: &str = r#"
[[retention]]
name = "releases"
dir = "@WS/train/releases"
regex = '^v\d+_(?P<ts>\d{8}_\d{6})$'
order = "timestamp"
timestamp_format = "%Y%m%d_%H%M%S"
keep_last = 3
"#;

fn release(i: usize) -> String {
    format!("v{i:02}_202611{i:02}_120000")
}

/// 12 timestamped versions of 256 KiB each, `current` → the 9th, the 2nd pinned.
fn make_releases(s: &Setup) {
    let dir = s.path("ws/train/releases");
    for i in 1..=12 {
        write_file(&dir.join(release(i)).join("model.bin"), 256 << 10);
    }
    std::os::unix::fs::symlink(release(9), dir.join("current")).unwrap();
    std::fs::write(dir.join(release(2)).join(".guardian-keep"), "").unwrap();
}

#[test]
fn releases_keep_the_newest_three_the_current_and_the_pinned() {
    if !require_root("releases_keep_the_newest_three_the_current_and_the_pinned") {
        return;
    }
    let s = Setup::new(RELEASES);
    make_releases(&s);
    let dir = s.path("ws/train/releases");
    // The training job works in the project: it does not block retention of old versions.
    let job = Reaped::spawn(
        Command::new("sleep")
            .arg("60")
            .current_dir(s.path("ws/train")),
    );
    wait_for_cwd(job.pid(), &s.path("ws/train"));

    let before = digest(&dir);
    let report = s.dry_run_json();
    assert_eq!(digest(&dir), before, "a dry run changed the releases dir");
    let decided = decisions(&report);
    assert_eq!(decided.len(), 12);
    for (name, verdict, reasons) in &decided {
        assert!(!reasons.is_empty(), "{name}: no reason");
        let i: usize = name[1..3].parse().unwrap();
        let expected = match i {
            10..=12 => vec![format!("kept by keep_last #{}", 13 - i)],
            9 => vec!["kept: target of `current`".to_string()],
            2 => vec!["kept: pinned (.guardian-keep)".to_string()],
            _ => vec!["deleted: beyond keep_last 3".to_string()],
        };
        let mut want = expected.clone();
        if i == 12 {
            want.insert(0, "kept: newest of the series".into());
        }
        assert_eq!(reasons, &want, "{name}");
        let keep = !expected[0].starts_with("deleted");
        assert_eq!(verdict, if keep { "keep" } else { "delete" }, "{name}");
    }
    let d = &report["rules"][0]["dirs"][0];
    assert_eq!(d["entries_to_delete"], 7);
    assert_eq!(report["entries_to_delete"], 7);
    assert_eq!(report["bytes_to_delete"], d["bytes_to_delete"]);
    // Kept directories are not walked: their size is not measured.
    assert!(report["rules"][0]["dirs"][0]["series"][0]["entries"][0]["bytes"].is_null());
    assert!(d["bytes_to_delete"].as_u64().unwrap() >= 7 * (256 << 10));
    assert_eq!(d["untouched"][0]["name"], "current");

    let out = s.retention(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want: BTreeSet<String> = [2, 9, 10, 11, 12].iter().map(|&i| release(i)).collect();
    want.insert("current".into());
    assert_eq!(names(&dir), want);
    let lines = audit_lines(&s.audit());
    assert_eq!(lines.len(), 7, "{lines:?}");
    for l in &lines {
        assert_eq!(l["rule"], "retention:releases");
        assert_eq!(l["outcome"], "deleted");
        assert_eq!(l["reason"], "deleted: beyond keep_last 3");
        assert!(l["bytes_freed"].as_u64().unwrap() > 0, "{l}");
    }
    assert_eq!(audit_intents(&s.audit()).len(), 7);
}

#[test]
fn backups_of_three_types_keep_the_newest_of_each() {
    if !require_root("backups_of_three_types_keep_the_newest_of_each") {
        return;
    }
    let s = Setup::new(
        r#"
[[retention]]
name = "backups"
dir = "@WS/train/backups"
regex = '^(?P<series>[a-z_]+)_(?P<ts>\d{8})\.tar$'
order = "timestamp"
timestamp_format = "%Y%m%d"
keep_last = 1
"#,
    );
    let dir = s.path("ws/train/backups");
    for kind in ["db", "pre_consolidation", "config"] {
        for day in 1..=4 {
            write_file(&dir.join(format!("{kind}_2026110{day}.tar")), 64 << 10);
        }
    }
    write_file(&dir.join("README"), 10);
    let out = s.retention(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["rules"][0]["dirs"][0]["series"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let want: BTreeSet<String> = [
        "README",
        "config_20261104.tar",
        "db_20261104.tar",
        "pre_consolidation_20261104.tar",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names(&dir), want);
    assert_eq!(audit_lines(&s.audit()).len(), 9);
}

const LOGS: &str = r#"
[[retention]]
name = "logs"
project_dir = "logs"
glob = "*.log"
order = "mtime"
keep_within = "7d"
"#;

/// A process that holds `file` open (as its stdin) until dropped.
fn hold_open(file: &Path) -> Reaped {
    let f = std::fs::File::open(file).unwrap();
    let child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::from(f))
        .spawn()
        .unwrap();
    let held = Reaped(child);
    let fd0 = PathBuf::from(format!("/proc/{}/fd/0", held.pid()));
    assert!(wait_until(Duration::from_secs(10), || std::fs::read_link(
        &fd0
    )
    .ok()
    .as_deref()
        == Some(file)));
    held
}

#[test]
fn a_log_held_open_by_a_process_survives() {
    if !require_root("a_log_held_open_by_a_process_survives") {
        return;
    }
    let s = Setup::new(LOGS);
    let logs = s.path("ws/train/logs");
    for (name, days) in [
        ("new.log", 0),
        ("week.log", 6),
        ("old.log", 10),
        ("held.log", 12),
    ] {
        write_file(&logs.join(name), 32 << 10);
        set_mtime(&logs.join(name), Duration::from_secs(days * 86_400 + 60));
    }
    write_file(&logs.join("notes.txt"), 10);
    set_mtime(&logs.join("notes.txt"), Duration::from_secs(90 * 86_400));
    let _holder = hold_open(&logs.join("held.log"));

    let report = s.dry_run_json();
    let decided = decisions(&report);
    let reasons = |n: &str| {
        decided
            .iter()
            .find(|d| d.0 == n)
            .unwrap_or_else(|| panic!("{n} not decided"))
            .clone()
    };
    assert_eq!(reasons("old.log").1, "delete");
    assert_eq!(
        reasons("old.log").2,
        ["deleted: older than keep_within 7days"]
    );
    assert_eq!(reasons("held.log").1, "keep");
    assert!(
        reasons("held.log").2[0].starts_with("kept: in use: pid"),
        "{:?}",
        reasons("held.log")
    );
    assert!(reasons("week.log").2[0].starts_with("kept by keep_within 7days"));

    let out = s.retention(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: BTreeSet<String> = ["new.log", "week.log", "held.log", "notes.txt"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names(&logs), want);
}

#[test]
fn a_log_opened_after_the_decision_is_refused_by_the_executor() {
    if !require_root("a_log_opened_after_the_decision_is_refused_by_the_executor") {
        return;
    }
    let s = Setup::new(LOGS);
    let logs = s.path("ws/train/logs");
    write_file(&logs.join("new.log"), 4096);
    write_file(&logs.join("old.log"), 4096);
    set_mtime(&logs.join("old.log"), Duration::from_secs(30 * 86_400));
    let config = s.config();
    let rule = &config.retention[0];
    let mut report = guardian::retention::plan_rule(&config, rule, &ProcSnapshot::capture());
    assert_eq!(report.dirs[0].entries_to_delete, 1);
    // Between the decision and the deletion a process opens the log.
    let _holder = hold_open(&logs.join("old.log"));
    let executor = executor(&config);
    let mut seen = Vec::new();
    guardian::retention::apply(&executor, rule, &mut report, &mut |r| seen.push(r.clone()))
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].outcome, guardian::cleanup::Outcome::Refused);
    assert!(
        seen[0].record.error.as_deref().unwrap().contains("in use"),
        "{:?}",
        seen[0].record
    );
    assert!(logs.join("old.log").exists());
}

fn executor(config: &Config) -> guardian::cleanup::Executor {
    guardian::cleanup::Executor::new(
        config.workspaces.clone(),
        guardian::cleanup::AuditLog::open(&config.daemon.audit_log).unwrap(),
        false,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        std::sync::Arc::new(|_: &Path| None),
    )
}

#[test]
fn pointer_and_pin_changed_after_the_decision_are_rechecked_at_delete_time() {
    if !require_root("pointer_and_pin_changed_after_the_decision_are_rechecked_at_delete_time") {
        return;
    }
    let s = Setup::new(RELEASES);
    make_releases(&s);
    let dir = s.path("ws/train/releases");
    let config = s.config();
    let rule = &config.retention[0];
    let mut report = guardian::retention::plan_rule(&config, rule, &ProcSnapshot::capture());
    assert_eq!(report.dirs[0].entries_to_delete, 7);
    // After the decision: `current` now points (absolutely) into v05, and v06 is pinned by a
    // sibling file, v07 by a marker inside.
    std::fs::remove_file(dir.join("current")).unwrap();
    std::os::unix::fs::symlink(dir.join(release(5)).join("model.bin"), dir.join("current"))
        .unwrap();
    std::fs::write(dir.join(format!("{}.guardian-keep", release(6))), "").unwrap();
    std::fs::write(dir.join(release(7)).join(".guardian-keep"), "").unwrap();
    let executor = executor(&config);
    let mut seen = Vec::new();
    guardian::retention::apply(&executor, rule, &mut report, &mut |r| seen.push(r.clone()))
        .unwrap();
    let outcome = |i: usize| {
        seen.iter()
            .find(|r| r.record.path == dir.join(release(i)))
            .map(|r| (r.outcome, r.record.error.clone().unwrap_or_default()))
            .unwrap()
    };
    use guardian::cleanup::Outcome::{Deleted, Refused};
    assert_eq!(outcome(5).0, Refused);
    assert!(
        outcome(5).1.contains("target of `current`"),
        "{:?}",
        outcome(5)
    );
    assert_eq!(outcome(6).0, Refused);
    assert!(outcome(6).1.contains("pinned"), "{:?}", outcome(6));
    assert_eq!(outcome(7).0, Refused);
    assert!(outcome(7).1.contains(".guardian-keep"), "{:?}", outcome(7));
    for i in [1, 3, 4, 8] {
        assert_eq!(outcome(i).0, Deleted, "{}", release(i));
    }
    for i in [2, 5, 6, 7, 9, 10, 11, 12] {
        assert!(dir.join(release(i)).exists(), "{}", release(i));
    }
}

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
