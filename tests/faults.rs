//! Fault injection (issue 12's acceptance), on real tmpfs and loop-mounted ext4 with the real
//! `guardian` binary: a disk 100% full (the audit log and state dir on it, or on another
//! filesystem; full before the daemon starts, before the audit dir exists), an audit log made
//! unusable mid-run (its path replaced, its filesystem shut down and replaced), the workspace's
//! filesystem remounted read-only and back (the whole filesystem while the daemon is stopped
//! with SIGSTOP, and the workspace's own bind mount while it runs), the workspace root deleted,
//! replaced by a symlink and recreated, and `kill -9` at random points of cleanup cycles on a ~200k-entry tree, restarted
//! 20 times. Throughout: the daemon never exits, says what is wrong (`guardian status --json`:
//! `problems`, `refusing`), deletes nothing it cannot audit, resumes as soon as it can, every
//! audit line parses, every intent gets its outcome line, and nothing outside policy changes
//! (digests of protected and outside trees, byte for byte).
//! This file holds the shared scene and helpers; each kind of fault is a file under `faults/`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::stress::auditlog::AuditCheck;
use support::stress::daemon::{status_json, Daemon, Spec};
use support::stress::fsx;
use support::stress::rng::Rng;
use support::*;

/// How long any condition the daemon should reach within a few polls may take (generous: the
/// machine is shared; each wait ends as soon as its condition holds).
const SOON: Duration = Duration::from_secs(20);

/// Old projects with `node_modules` (and sources that no rule matches), a protected `output`
/// dir and a tree outside the workspace, both holding what the rule matches.
struct Scene {
    ws: PathBuf,
    /// Trees that must stay byte-identical, with their digests now.
    kept: Vec<(PathBuf, BTreeMap<Vec<u8>, String>)>,
}

impl Scene {
    fn new(ws: &Path, outside: &Path, projects: usize, modules_mib: u64) -> Scene {
        for p in 0..projects {
            let dir = ws.join(format!("p{p}"));
            write_files(&dir.join("node_modules"), 8, modules_mib * MIB / 8);
            write_file(&dir.join("src/main.rs"), 4096);
        }
        write_files(&ws.join("output/node_modules"), 4, MIB / 4);
        write_files(&outside.join("node_modules"), 4, MIB / 4);
        let mut kept = vec![ws.join("output"), outside.to_path_buf()];
        kept.extend((0..projects).map(|p| ws.join(format!("p{p}/src"))));
        Scene {
            ws: ws.to_path_buf(),
            kept: kept
                .into_iter()
                .map(|d| {
                    let digest = fsx::digest(&d);
                    (d, digest)
                })
                .collect(),
        }
    }

    fn modules(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(&self.ws)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().join("node_modules"))
                    .filter(|p| p.exists() && !p.starts_with(self.ws.join("output")))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    fn assert_kept(&self) {
        for (dir, before) in &self.kept {
            let diff = fsx::digest_diff(before, &fsx::digest(dir), 10);
            assert!(
                diff.is_empty(),
                "{} changed:\n{}",
                dir.display(),
                diff.join("\n")
            );
        }
    }
}

/// Waits until `cond` holds, or fails naming `what` with the daemon's last log lines.
fn wait_for(daemon: &mut Daemon, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        if let Some(status) = daemon.exited() {
            panic!(
                "the daemon exited ({status}) while waiting for {what}:\n{}",
                daemon.log_tail(20)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; daemon log:\n{}",
            daemon.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that the daemon stays alive and deletes nothing of `modules` for `how_long`.
fn assert_nothing_deleted_for(daemon: &mut Daemon, modules: &[PathBuf], how_long: Duration) {
    let deadline = Instant::now() + how_long;
    while Instant::now() < deadline {
        assert!(
            daemon.alive(),
            "the daemon exited:\n{}",
            daemon.log_tail(20)
        );
        for m in modules {
            assert!(
                m.exists(),
                "{} was deleted while Guardian could not audit it",
                m.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit log parses line by line, every intent has its outcome, no action is recorded
/// twice, and every deletion is a `node_modules` inside the workspace.
fn assert_audit_complete(audit_log: &Path, ws: &Path) -> AuditCheck {
    let audit = AuditCheck::read(audit_log).unwrap_or_else(|e| panic!("{e:#}"));
    let dangling: Vec<_> = audit.dangling().iter().map(|r| r.id.clone()).collect();
    assert!(dangling.is_empty(), "intents without outcome: {dangling:?}");
    assert!(audit.duplicate_outcomes().is_empty());
    for r in audit.deletions() {
        assert!(
            r.path.starts_with(ws) && r.path.ends_with("node_modules"),
            "deleted outside policy: {}",
            r.path.display()
        );
    }
    audit
}

fn status(config: &Path) -> (Option<i32>, serde_json::Value) {
    status_json(&guardian_bin(), config).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The `refusing` reason `guardian status --json` shows, if any (and that `problems` says it).
fn refusing(config: &Path) -> Option<String> {
    let (_, state) = status(config);
    refusing_in(&state)
}

/// The `refusing` reason in the daemon's state file, read directly: `guardian status` itself
/// refuses to run while the configured audit log or workspace is a symlink (a config error that
/// names it), which is the point of those tests.
fn refusing_in_state_file(spec: &Spec) -> Option<String> {
    let state = guardian::daemon::state::read_state(&spec.state_dir).ok()?;
    refusing_in(&serde_json::to_value(state).unwrap())
}

fn refusing_in(state: &serde_json::Value) -> Option<String> {
    let why = state["refusing"].as_str()?.to_string();
    let problems = state["problems"].to_string();
    assert!(
        problems.contains("refusing to delete"),
        "refusing without a problem line: {state}"
    );
    Some(why)
}

fn start(config: &Path, log: &Path) -> Daemon {
    let mut d = Daemon::start(&guardian_bin(), config, log).unwrap_or_else(|e| panic!("{e:#}"));
    d.wait_started(SOON).unwrap_or_else(|e| panic!("{e:#}"));
    d
}

fn stop_clean(daemon: &mut Daemon) {
    let status = daemon
        .stop(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        status.success(),
        "daemon exit status {status}:\n{}",
        daemon.log_tail(20)
    );
}

/// A directory for the config and the daemon's log, on the root filesystem (never filled).
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[path = "faults/audit_log.rs"]
mod audit_log;
#[path = "faults/full_disk.rs"]
mod full_disk;
#[path = "faults/kill9.rs"]
mod kill9;
#[path = "faults/workspace_fs.rs"]
mod workspace_fs;
