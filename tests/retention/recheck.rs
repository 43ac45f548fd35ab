//! In use and changed under Guardian: a log a process holds open survives, one opened after the
//! decision is refused by the executor, pointers and pins that change between decision and
//! deletion are re-checked.

use super::*;

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
    assert_eq!(outcome(7).0, Refused, "{:?}", outcome(7));
    assert!(outcome(7).1.contains(".guardian-keep"), "{:?}", outcome(7));
    for i in [1, 3, 4, 8] {
        assert_eq!(outcome(i).0, Deleted, "{}", release(i));
    }
    for i in [2, 5, 6, 7, 9, 10, 11, 12] {
        assert!(dir.join(release(i)).exists(), "{}", release(i));
    }
}
