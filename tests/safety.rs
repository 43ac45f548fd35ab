//! Regressions of the safety issue (issue 11): each test is named after an edge that once let
//! Guardian delete what it must not, or let a task on the node turn it off or use it. Real
//! tmpfs, real bind mounts and mount namespaces, real processes, the real binary.
//! This file holds the shared helpers; each guarantee of ARCHITECTURE.md is a file under
//! `safety/`.

mod support;

use guardian::cleanup::{ActionReport, AuditLog, Executor, Outcome};
use guardian::config::Workspace;
use guardian::fsys::{force_mount_ids, MountIds};
use guardian::policy::PlannedAction;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn executor(workspaces: &[(&Path, &[&str])], audit: &Path) -> Executor {
    Executor::new(
        workspaces
            .iter()
            .map(|(p, protect)| Workspace {
                path: p.to_path_buf(),
                protect: protect.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
        AuditLog::open(audit).unwrap(),
        false,
        Arc::new(AtomicBool::new(false)),
        Arc::new(|_: &Path| None),
    )
}

/// A planned deletion of the entry at `path` now, as a survey would have measured it.
fn planned(path: &Path, project: &Path, min_idle_secs: Option<u64>) -> PlannedAction {
    PlannedAction {
        path: path.to_path_buf(),
        project: project.to_path_buf(),
        rule: "test".into(),
        phase: 1,
        reason: "safety test".into(),
        bytes_estimated: 0,
        inodes_estimated: 0,
        identity: guardian::fsys::identity_of(path).unwrap_or((0, 0)),
        min_idle_secs,
        rebuild: None,
    }
}

fn run(exec: &Executor, action: &PlannedAction) -> ActionReport {
    exec.execute(action)
        .unwrap_or_else(|e| panic!("audit failed: {e}"))
}

fn bytes_path(base: &Path, name: &[u8]) -> PathBuf {
    base.join(OsString::from_vec(name.to_vec()))
}

fn status_json(config: &Path) -> serde_json::Value {
    let out = guardian(&["status", "--json", "--config", config.to_str().unwrap()]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[path = "safety/activity.rs"]
mod activity;
#[path = "safety/audit.rs"]
mod audit;
#[path = "safety/drift.rs"]
mod drift;
#[path = "safety/in_use.rs"]
mod in_use;
#[path = "safety/mount_boundary.rs"]
mod mount_boundary;
#[path = "safety/names.rs"]
mod names;
#[path = "safety/own_files.rs"]
mod own_files;
#[path = "safety/workspaces.rs"]
mod workspaces;
