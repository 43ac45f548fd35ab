//! Attacks on the cleanup executor: symlinks, swaps, bind mounts, hard links, path escapes.
//! This file holds the shared helpers; each attack is a file under `attacks/`.

mod support;

use guardian::cleanup::audit::read_records;
use guardian::cleanup::{ActionReport, AuditLog, Executor, ExtraProtection, Outcome};
use guardian::config::{Config, Workspace};
use guardian::daemon::plan_now;
use guardian::policy::PlannedAction;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// An executor (not dry run) over `workspaces`, each protecting `protect`, logging to `audit`.
fn executor(workspaces: &[&Path], protect: &[&str], audit: &Path) -> Executor {
    executor_with(workspaces, protect, audit, Arc::new(|_: &Path| None))
}

fn executor_with(
    workspaces: &[&Path],
    protect: &[&str],
    audit: &Path,
    extra: ExtraProtection,
) -> Executor {
    let workspaces = workspaces
        .iter()
        .map(|p| Workspace {
            path: p.to_path_buf(),
            protect: protect.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    Executor::new(
        workspaces,
        AuditLog::open(audit).unwrap(),
        false,
        Arc::new(AtomicBool::new(false)),
        extra,
    )
}

/// An executor for a loaded config, as the daemon builds it.
fn executor_for(config: &Config) -> Executor {
    Executor::new(
        config.workspaces.clone(),
        AuditLog::open(&config.daemon.audit_log).unwrap(),
        false,
        Arc::new(AtomicBool::new(false)),
        Arc::new(|_: &Path| None),
    )
}

/// A hand-made planned deletion of `path` in `project`, of the entry there now (as a survey
/// would have measured it).
fn planned(path: &Path, project: &Path, rule: &str, phase: u8) -> PlannedAction {
    PlannedAction {
        path: path.to_path_buf(),
        project: project.to_path_buf(),
        rule: rule.into(),
        phase,
        reason: "attack test".into(),
        bytes_estimated: 0,
        inodes_estimated: 0,
        identity: guardian::fsys::identity_of(path).unwrap_or((0, 0)),
        min_idle_secs: None,
        rebuild: None,
    }
}

fn run_action(exec: &Executor, action: &PlannedAction) -> ActionReport {
    exec.execute(action)
        .unwrap_or_else(|e| panic!("audit write failed for {}: {e}", action.path.display()))
}

/// Executes `action`, again while it is refused only because a process has something inside
/// it open. A process that a concurrently running test forks holds copies of this process's
/// descriptors (files this test just wrote) until it execs, which the executor rightly counts
/// as use. Used where the action is expected to go ahead; gives up after 100 tries.
fn run_settled(exec: &Executor, action: &PlannedAction) -> ActionReport {
    for _ in 0..100 {
        let report = run_action(exec, action);
        let in_use = report.outcome == Outcome::Refused
            && report
                .record
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("in use:"));
        if !in_use {
            return report;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    run_action(exec, action)
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", link.display(), target.display()));
}

/// Whether anything (a symlink included) exists at `path`, without following it.
fn present(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// Writes a config for `ws` (state under `state`) and loads it the way the daemon does.
fn load_config(path: &Path, ws: &Path, state: &Path) -> Config {
    write_config(path, ws, state, "1s", "");
    let text = std::fs::read_to_string(path).unwrap();
    Config::parse(&text, &path.display().to_string()).expect("test config parses")
}

/// The `guardian` binary's run, asserted to succeed.
fn guardian_ok(args: &[&str]) -> std::process::Output {
    let out = guardian(args);
    assert!(
        out.status.success(),
        "guardian {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[path = "attacks/bind_mounts.rs"]
mod bind_mounts;
#[path = "attacks/escapes.rs"]
mod escapes;
#[path = "attacks/hard_links.rs"]
mod hard_links;
#[path = "attacks/recheck.rs"]
mod recheck;
#[path = "attacks/swap_race.rs"]
mod swap_race;
#[path = "attacks/symlinks.rs"]
mod symlinks;
