//! End to end on real filesystems with the real `guardian` binary: phase 1 at 82% used, the
//! daemon reacting within a few polls, phase 2 at 93% used sparing protected and in-use dirs,
//! dry run, bad config, `guardian scan` against `du`, status and plan.

mod support;

use std::os::unix::fs::PermissionsExt;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

/// A project with regenerable artifacts, sources, an old log and a fresh log; aged `days`.
fn make_project(dir: &Path, node_modules_mib: u64, git_mib: u64, days: u64) {
    write_files(&dir.join("node_modules"), 20, node_modules_mib * MIB / 20);
    write_files(&dir.join(".git/objects"), 8, git_mib * MIB / 8);
    write_file(&dir.join("src/__pycache__/mod.cpython-311.pyc"), 64 * 1024);
    write_file(&dir.join("src/main.py"), 8 * 1024);
    write_file(&dir.join("old.log"), 512 * 1024);
    age_tree(dir, Duration::from_secs(days * 86400 + 7200));
    // Written after the ageing: this log is fresh and must survive older_than = "1h".
    write_file(&dir.join("fresh.log"), 256 * 1024);
}

struct Setup {
    mount: TestMount,
    ws: PathBuf,
    config: PathBuf,
    state: PathBuf,
}

impl Setup {
    fn new(mount: TestMount, poll: &str) -> Setup {
        let ws = mount.path("dispatch");
        let state = mount.path("guardian-state");
        std::fs::create_dir_all(&ws).unwrap();
        let config = mount.path("guardian.toml");
        write_config(&config, &ws, &state, poll, "");
        Setup {
            mount,
            ws,
            config,
            state,
        }
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.state.join("audit.jsonl"))
    }

    fn config_arg(&self) -> &str {
        self.config.to_str().unwrap()
    }
}

/// Three projects with regenerable artifacts on a 256 MiB filesystem filled to 82% used.
fn phase1_setup(mount: TestMount, poll: &str) -> Setup {
    let s = phase1_projects(mount, poll);
    fill_to_used(&s.mount.dir, &s.mount.path("filler.bin"), 82.0);
    s
}

/// The three projects and a protected `output` dir holding a name a rule matches.
fn phase1_projects(mount: TestMount, poll: &str) -> Setup {
    let s = Setup::new(mount, poll);
    make_project(&s.ws.join("alpha"), 24, 8, 3);
    make_project(&s.ws.join("beta"), 20, 10, 2);
    make_project(&s.ws.join("gamma"), 16, 6, 1);
    write_file(&s.ws.join("output/node_modules/keep.bin"), MIB);
    s
}

fn assert_phase1_result(s: &Setup) {
    assert!(
        free_percent(&s.mount.dir) >= 30.0,
        "free {:.1}% after cleanup, target 30%",
        free_percent(&s.mount.dir)
    );
    let audit: Vec<_> = s
        .audit()
        .into_iter()
        .filter(|l| l["action"] == "delete")
        .collect();
    assert!(!audit.is_empty(), "no audit lines");
    for line in &audit {
        assert_eq!(line["phase"], 1, "only phase 1 may run: {line}");
        let rule = line["rule"].as_str().unwrap();
        assert!(rule == "regenerable" || rule == "old-logs", "{line}");
        assert_eq!(line["outcome"], "deleted", "{line}");
        assert_eq!(line["dry_run"], false);
        for key in ["ts", "action", "path", "reason", "bytes_estimated", "error"] {
            assert!(line.get(key).is_some(), "audit line lacks {key}: {line}");
        }
        let path = PathBuf::from(line["path"].as_str().unwrap());
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            ["node_modules", ".git", "__pycache__", "old.log"].contains(&name),
            "deleted something no phase-1 rule names: {}",
            path.display()
        );
        assert!(!path.exists(), "{} still exists", path.display());
    }
    for project in ["alpha", "beta", "gamma"] {
        let dir = s.ws.join(project);
        assert!(
            dir.join("fresh.log").exists(),
            "a log newer than older_than was deleted"
        );
        assert!(dir.join("src/main.py").exists(), "sources were deleted");
    }
    assert!(
        s.ws.join("output/node_modules/keep.bin").exists(),
        "a protected dir was touched"
    );
    // Measured, not assumed: statvfs shows what the deletions freed.
    let freed: u64 = audit
        .iter()
        .map(|l| l["bytes_freed"].as_u64().unwrap())
        .sum();
    assert!(freed > 0, "audit reports nothing freed");
}

#[test]
fn run_once_at_82_percent_cleans_phase1_to_target_on_ext4() {
    if !require_root("run_once_at_82_percent_cleans_phase1_to_target_on_ext4") {
        return;
    }
    let s = phase1_setup(TestMount::ext4(256 * MIB), "1s");
    // The journal vacuum command runs once per cycle on the filesystem holding the journal dir,
    // and is audited like a deletion.
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::create_dir_all(s.mount.path("journal")).unwrap();
    let text = text.replace(
        "[thresholds]",
        &format!(
            "journal_vacuum = [\"true\"]\njournal_dir = \"{}\"\n\n[thresholds]",
            s.mount.path("journal").display()
        ),
    );
    std::fs::write(&s.config, text).unwrap();
    let before = free_percent(&s.mount.dir);
    assert!(
        before < 20.0,
        "setup: free {before:.1}% should be under cleanup_free"
    );
    let out = guardian(&["run", "--once", "--config", s.config_arg()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_phase1_result(&s);
    let audit = s.audit();
    let vacuum: Vec<_> = audit
        .iter()
        .filter(|l| l["action"] == "journal_vacuum")
        .collect();
    assert_eq!(vacuum.len(), 1, "{audit:?}");
    assert_eq!(vacuum[0]["outcome"], "ok");
    // Least recently active first: alpha (3 days idle) is cleaned before gamma (1 day).
    let first = audit[0]["path"].as_str().unwrap();
    assert!(first.contains("/alpha/"), "first action {first}");
}

#[test]
fn daemon_reacts_within_a_few_polls_and_reports_status() {
    if !require_root("daemon_reacts_within_a_few_polls_and_reports_status") {
        return;
    }
    let s = phase1_projects(TestMount::tmpfs(256 * MIB), "200ms");
    let mut daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", s.config_arg()])
            .env("GUARDIAN_LOG", "info"),
    );
    // The daemon is up once it has written its state file.
    assert!(wait_until(Duration::from_secs(10), || s
        .state
        .join("state/state.json")
        .exists()));
    assert!(s.audit().is_empty(), "nothing to do above the thresholds");
    fill_to_used(&s.mount.dir, &s.mount.path("filler.bin"), 82.0);
    let reached = wait_until(Duration::from_secs(10), || {
        free_percent(&s.mount.dir) >= 30.0
    });
    assert!(reached, "daemon did not bring free space to the target");
    assert_phase1_result(&s);

    // The status file follows the daemon's loop: the cleanup's actions reach it within a few
    // polls of the deletion that freed the space, not at the same instant.
    let mut state = serde_json::Value::Null;
    let reported = wait_until(Duration::from_secs(10), || {
        let status = guardian(&["status", "--config", s.config_arg(), "--json"]);
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        state = serde_json::from_slice(&status.stdout).unwrap();
        state["recent_actions"]
            .as_array()
            .is_some_and(|actions| !actions.is_empty())
    });
    assert!(
        reported,
        "status never reported the cleanup's actions: {state}"
    );
    let source = state["source"].as_str().unwrap();
    assert!(
        ["ebpf", "fanotify", "inotify", "poll"].contains(&source),
        "{source}"
    );
    assert_eq!(
        state["filesystems"][0]["mount"],
        s.mount.dir.to_str().unwrap()
    );
    let text = guardian(&["status", "--config", s.config_arg()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("last cycle"), "{text}");

    // SIGTERM stops it cleanly.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon.pid()).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "daemon exit status {status}");
}

#[test]
fn phase2_at_93_percent_deletes_idle_projects_and_spares_protected_and_in_use() {
    if !require_root("phase2_at_93_percent_deletes_idle_projects_and_spares_protected_and_in_use") {
        return;
    }
    let s = Setup::new(TestMount::tmpfs(256 * MIB), "1s");
    let ws = &s.ws;
    // Idle projects without regenerable artifacts, oldest first. Activity comes from ctime,
    // which cannot be back-dated: they are written one after the other, a second apart.
    for (name, days) in [("idle-oldest", 9), ("idle-middle", 6), ("idle-newest", 3)] {
        write_files(&ws.join(name).join("data"), 7, 5 * MIB);
        age_tree(&ws.join(name), Duration::from_secs(days * 86400));
        std::thread::sleep(Duration::from_millis(1100));
    }
    // Projects that must survive byte for byte, all older than every idle one.
    let spared = [
        "cwd-proj",
        "open-proj",
        "flock-proj",
        "keep-proj",
        "output",
        "dispatch-worker",
    ];
    for name in spared {
        write_files(&ws.join(name).join("data"), 4, 2 * MIB);
        age_tree(&ws.join(name), Duration::from_secs(30 * 86400));
    }
    write_file(&ws.join("keep-proj/.guardian-keep"), 0);
    write_file(&ws.join("task-wrapper.sh"), 4096);
    let _cwd = Reaped::spawn(
        Command::new("sleep")
            .arg("300")
            .current_dir(ws.join("cwd-proj/data/d0")),
    );
    wait_for_cwd(_cwd.pid(), &ws.join("cwd-proj/data/d0"));
    let _open = Reaped::spawn(
        Command::new("sh")
            .args(["-c", "exec 3<data/d1/f1; exec sleep 300"])
            .current_dir(ws.join("open-proj")),
    );
    let _flock = Reaped::spawn(
        Command::new("flock")
            .arg(ws.join("flock-proj"))
            .args(["sleep", "300"]),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .count()
            > 0
            && std::fs::read_link(format!("/proc/{}/fd/3", _open.pid())).is_ok()
    }));
    let before: Vec<_> = spared.iter().map(|n| digest(&ws.join(n))).collect();
    let wrapper_before = std::fs::read(ws.join("task-wrapper.sh")).unwrap();
    wait_out_activity();
    fill_to_used(&s.mount.dir, &s.mount.path("filler.bin"), 93.0);

    let plan = guardian(&["plan", "--config", s.config_arg(), "--json"]);
    assert!(plan.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan[0]["plan"]["phase2_allowed"], true);

    let out = guardian(&["run", "--once", "--config", s.config_arg()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        free_percent(&s.mount.dir) >= 30.0,
        "free {:.1}%",
        free_percent(&s.mount.dir)
    );
    assert!(!ws.join("idle-oldest").exists());
    assert!(!ws.join("idle-middle").exists());
    assert!(
        ws.join("idle-newest").exists(),
        "deleted more than the target needed, or out of order"
    );
    for (name, digest_before) in spared.iter().zip(&before) {
        assert_eq!(&digest(&ws.join(name)), digest_before, "{name} changed");
    }
    assert_eq!(
        std::fs::read(ws.join("task-wrapper.sh")).unwrap(),
        wrapper_before
    );
    let audit = s.audit();
    let deleted: Vec<_> = audit
        .iter()
        .filter(|l| l["outcome"] == "deleted")
        .map(|l| {
            l["path"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(deleted, ["idle-oldest", "idle-middle"]);
    assert!(audit
        .iter()
        .all(|l| l["phase"] == 2 && l["rule"] == "project"));
}

#[test]
fn dry_run_deletes_nothing_and_logs_the_same_lines() {
    if !require_root("dry_run_deletes_nothing_and_logs_the_same_lines") {
        return;
    }
    let s = phase1_setup(TestMount::tmpfs(256 * MIB), "1s");
    let before = digest(&s.ws);
    let out = guardian(&["run", "--once", "--dry-run", "--config", s.config_arg()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(digest(&s.ws), before, "dry run changed the workspace");
    let audit = s.audit();
    assert!(!audit.is_empty());
    for line in &audit {
        assert_eq!(line["dry_run"], true);
        assert_eq!(line["outcome"], "would_delete");
        assert_eq!(line["phase"], 1);
    }
}

#[test]
fn bad_config_exits_2_naming_the_key_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let state = tmp.path().join("state");
    let config = tmp.path().join("bad.toml");
    write_config(&config, &ws, &state, "1s", "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("target_free = \"30%\"", "target_free = \"thirty\""),
    )
    .unwrap();
    for args in [
        vec!["config", "check", config.to_str().unwrap()],
        vec!["run", "--once", "--config", config.to_str().unwrap()],
        vec!["plan", "--config", config.to_str().unwrap()],
    ] {
        let out = guardian(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("thresholds.target_free"), "{err}");
        assert!(err.contains("line 10"), "{err}");
    }
    assert!(!state.exists(), "a bad config must change nothing on disk");
    let out = guardian(&["run", "--once", "--bogus-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = guardian(&["config", "check", "/nonexistent/guardian.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/guardian.toml"));
}

#[test]
fn config_default_prints_a_config_that_checks() {
    let out = guardian(&["config", "default"]);
    assert!(out.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("default.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = guardian(&["config", "check", path.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn scan_equals_du_on_a_tree_with_hard_links_and_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    for i in 0..300u64 {
        write_file(
            &root.join(format!("p{}/sub{}/f{i}", i % 7, i % 13)),
            (i * 977) % 70_000,
        );
    }
    for i in 0..40 {
        std::fs::hard_link(
            root.join(format!("p{}/sub{}/f{i}", i % 7, i % 13)),
            root.join(format!("p{}/hl{i}", (i + 3) % 7)),
        )
        .unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join(format!("p{}/sym{i}", i % 7))).unwrap();
    }
    let out = guardian(&["scan", root.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let du = |apparent: bool| -> u64 {
        let mut cmd = Command::new("du");
        cmd.args(["-sB1", "-x"]);
        if apparent {
            cmd.arg("--apparent-size");
        }
        let out = cmd.arg(&root).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(scan["allocated_bytes"].as_u64().unwrap(), du(false));
    assert_eq!(scan["apparent_bytes"].as_u64().unwrap(), du(true));
    let plain = guardian(&["scan", root.to_str().unwrap()]);
    let first = String::from_utf8_lossy(&plain.stdout);
    assert_eq!(
        first
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        du(false)
    );
}

#[test]
fn scan_reports_unreadable_dirs_and_goes_on() {
    if !require_root("scan_reports_unreadable_dirs_and_goes_on") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("tree");
    write_file(&root.join("ok/file"), 10_000);
    let locked = root.join("locked");
    write_file(&locked.join("secret"), 10_000);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads every dir: the scan runs as nobody, for whom `locked` is unreadable.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(guardian_bin())
        .args(["scan", "--json", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report:#}");
    assert_eq!(errors[0]["path"], locked.to_str().unwrap());
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("Permission denied"));
    // The readable rest is counted: the ok file, both dirs and the root.
    assert_eq!(report["files"], 1, "{report:#}");
    assert!(report["allocated_bytes"].as_u64().unwrap() >= 10_000);
    // A missing path is an error too, and names the path.
    let out = guardian(&["scan", root.join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = guardian(&["scan", root.to_str().unwrap()]);
    assert!(out.status.success());
}

#[test]
fn sigterm_mid_deletion_stops_cleanly_and_audits_the_interruption() {
    if !require_root("sigterm_mid_deletion_stops_cleanly_and_audits_the_interruption") {
        return;
    }
    let s = Setup::new(TestMount::tmpfs(512 * MIB), "100ms");
    // Many small files: the removal takes long enough to be interrupted.
    let modules = s.ws.join("big/node_modules");
    for d in 0..200 {
        let dir = modules.join(format!("pkg{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..300 {
            std::fs::write(dir.join(format!("f{f}.js")), b"module.exports = 1;\n").unwrap();
        }
    }
    age_tree(&s.ws.join("big"), Duration::from_secs(86400));
    fill_to_used(&s.mount.dir, &s.mount.path("filler.bin"), 85.0);
    let (_, filled) = space(&s.mount.dir);
    let mut daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", s.config_arg()])
            .env("GUARDIAN_LOG", "info"),
    );
    // Spin on statvfs (cheap) until the deletion has visibly started freeing space.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while space(&s.mount.dir).1 < filled + MIB {
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion never started"
        );
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon.pid()).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "daemon exit status {status}");
    let audit = s.audit();
    let last = audit.last().expect("the interrupted action is audited");
    assert_eq!(last["path"], modules.to_str().unwrap());
    if modules.exists() {
        assert_eq!(last["outcome"], "interrupted", "{last}");
    } else {
        eprintln!(
            "note: the deletion finished before SIGTERM arrived; outcome {}",
            last["outcome"]
        );
    }
}
