//! The config file as an attacker or a typo would write it, through the library and the real
//! `guardian` binary: files that are not regular (a FIFO, `/dev/zero`), too large or not UTF-8;
//! workspaces through symlinks, overlapping by text or by identity (a real bind mount); the
//! audit log inside a workspace; the committed corpus of hostile configs (tests/corpus/config);
//! and a property test feeding generated hostile TOML to `Config::parse`.
//! This file holds the shared helpers; each theme is a file under `config/`.

mod support;

use guardian::config::{Config, MAX_CONFIG_BYTES};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Runs `guardian ARGS`, failing the test (not hanging it) if it does not exit within a minute.
fn guardian_bounded(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(guardian_bin())
        .args(args)
        .env("GUARDIAN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn guardian");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("guardian {args:?} did not exit: it blocked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(Into::into).collect()
}

/// Runs `guardian ARGS…` with the config path appended where a command takes one.
fn run_with_config(args: &[&str], config: &Path) -> Output {
    let mut all = os(args);
    all.push(config.into());
    let refs: Vec<&std::ffi::OsStr> = all.iter().map(|a| a.as_os_str()).collect();
    guardian_bounded(&refs)
}

/// Every command that loads a config, with its `--config` flag last.
const CONFIG_COMMANDS: &[&[&str]] = &[
    &["config", "check"],
    &["run", "--once", "--config"],
    &["plan", "--config"],
    &["status", "--config"],
    &["sessions", "--config"],
    &["ghosts", "--dry-run", "--config"],
    &[
        "task",
        "done",
        "--dir",
        "/srv/guardian-test/none",
        "--status",
        "done",
        "--config",
    ],
];

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts `out` is a config refusal (exit 2) whose message contains every `needle`.
fn assert_refused(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "expected exit 2: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`: {err}");
    }
}

/// A temp dir holding `state/` (audit log, state dir) and whatever a test builds.
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A config with these workspaces (and `extra` appended), audit and state under `state/`.
    /// Line 2 is the audit log, line 3 the state dir, workspace N's path is on line 6 + 3N.
    fn config(&self, workspaces: &[&Path], extra: &str) -> PathBuf {
        self.config_with(
            workspaces,
            &format!(
                "audit_log = \"{}\"\nstate_dir = \"{}\"\n",
                self.path("state/audit.jsonl").display(),
                self.path("state/state").display()
            ),
            extra,
        )
    }

    /// A config with these `[daemon]` lines (from line 2 on), workspaces and `extra`.
    fn config_with(&self, workspaces: &[&Path], daemon: &str, extra: &str) -> PathBuf {
        let mut text = format!("[daemon]\n{daemon}");
        for ws in workspaces {
            text.push_str(&format!("\n[[workspaces]]\npath = \"{}\"\n", ws.display()));
        }
        text.push_str(extra);
        let path = self.path("guardian.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Nothing Guardian writes exists: no audit log, no state dir.
    fn assert_nothing_created(&self) {
        assert!(
            !self.path("state").exists(),
            "a refused config created {}",
            self.path("state").display()
        );
    }
}

#[path = "config/binds.rs"]
mod binds;
#[path = "config/file.rs"]
mod file;
#[path = "config/hostile.rs"]
mod hostile;
#[path = "config/paths.rs"]
mod paths;
