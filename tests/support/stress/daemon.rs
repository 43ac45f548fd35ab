//! The real daemon under stress: its config, the `guardian run` process with its stderr in a
//! file, its memory, fd and thread counts from `/proc`, `guardian status --json`, and stopping
//! it (SIGTERM) or killing it (SIGKILL).

use anyhow::{bail, ensure, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// One `[[workspaces]]` entry.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub path: PathBuf,
    pub protect: Vec<String>,
}

/// A daemon config.
#[derive(Clone, Debug)]
pub struct Spec {
    pub workspaces: Vec<Workspace>,
    pub audit_log: PathBuf,
    pub state_dir: PathBuf,
    pub poll_interval: String,
    pub sample_interval: String,
    pub active_within: String,
    /// `auto`, `ebpf`, `fanotify`, `inotify` or `poll`.
    pub source: String,
    pub cleanup_free: String,
    pub critical_free: String,
    pub target_free: String,
    /// Names of the phase-1 `regenerable` rule.
    pub regenerable: Vec<String>,
    /// Extra TOML appended at the end (more `[[rules]]`).
    pub extra: String,
}

impl Spec {
    /// One workspace (protecting `output`), audit log and state dir under `state`, the
    /// `node_modules` rule, thresholds 20/10/30 %, a 200 ms poll, no journal vacuum, no task DB.
    pub fn new(workspace: &Path, state: &Path) -> Spec {
        Spec {
            workspaces: vec![Workspace {
                path: workspace.to_path_buf(),
                protect: vec!["output".into()],
            }],
            audit_log: state.join("audit.jsonl"),
            state_dir: state.join("state"),
            poll_interval: "200ms".into(),
            sample_interval: "250ms".into(),
            active_within: "1s".into(),
            source: "auto".into(),
            cleanup_free: "20%".into(),
            critical_free: "10%".into(),
            target_free: "30%".into(),
            regenerable: vec!["node_modules".into()],
            extra: String::new(),
        }
    }

    pub fn toml(&self) -> String {
        let q = |p: &Path| quote(&p.to_string_lossy());
        let mut s = String::from("# Written by the stress harness (tests/support/stress).\n");
        let _ = writeln!(s, "[daemon]");
        let _ = writeln!(s, "poll_interval = {}", quote(&self.poll_interval));
        let _ = writeln!(s, "sample_interval = {}", quote(&self.sample_interval));
        let _ = writeln!(s, "source = {}", quote(&self.source));
        let _ = writeln!(s, "audit_log = {}", q(&self.audit_log));
        let _ = writeln!(s, "state_dir = {}", q(&self.state_dir));
        let _ = writeln!(s, "active_within = {}", quote(&self.active_within));
        let _ = writeln!(s, "journal_vacuum = []\n");
        let _ = writeln!(s, "[thresholds]");
        let _ = writeln!(s, "cleanup_free = {}", quote(&self.cleanup_free));
        let _ = writeln!(s, "critical_free = {}", quote(&self.critical_free));
        let _ = writeln!(s, "target_free = {}\n", quote(&self.target_free));
        let _ = writeln!(s, "[forecast]\nenabled = false\n");
        for ws in &self.workspaces {
            let protect: Vec<String> = ws.protect.iter().map(|p| quote(p)).collect();
            let _ = writeln!(s, "[[workspaces]]");
            let _ = writeln!(s, "path = {}", q(&ws.path));
            let _ = writeln!(s, "protect = [{}]\n", protect.join(", "));
        }
        let names: Vec<String> = self.regenerable.iter().map(|n| quote(n)).collect();
        let _ = writeln!(s, "[[rules]]\nname = \"regenerable\"\nphase = 1");
        let _ = writeln!(s, "names = [{}]\n", names.join(", "));
        s.push_str(&self.extra);
        s
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.toml())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running `guardian run`; killed (SIGKILL) when dropped unless stopped.
pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    /// Its stderr (the log), appended across restarts.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `guardian run --config CONFIG` (`GUARDIAN_LOG=info`), stderr appended to `log`.
    pub fn start(guardian: &Path, config: &Path, log: &Path) -> Result<Daemon> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let child = Command::new(guardian)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("GUARDIAN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", guardian.display()))?;
        Ok(Daemon {
            pid: child.id(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Waits until the daemon logged that it started (its sources are open, its first poll
    /// follows at once).
    pub fn wait_started(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.log_text().contains("guardian started") {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                bail!(
                    "guardian exited before it started ({status}): {}",
                    self.log_tail(10)
                );
            }
            ensure!(
                Instant::now() < deadline,
                "guardian not started after {limit:?}: {}",
                self.log_tail(10)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn alive(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (at most `limit`; then SIGKILL and an error).
    pub fn stop(&mut self, limit: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("the daemon was already stopped");
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("guardian did not stop within {limit:?} of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Memory, fds and threads of the daemon now.
    pub fn sample(&self) -> Option<ProcSample> {
        proc_sample(self.pid)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One look at a process in `/proc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    pub threads: u64,
}

pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcSample {
        rss_kib: field("VmRSS:")?,
        fds,
        threads: field("Threads:")?,
    })
}

/// `guardian status --config CONFIG --json`: the exit code and the JSON it printed.
pub fn status_json(guardian: &Path, config: &Path) -> Result<(Option<i32>, serde_json::Value)> {
    let out = Command::new(guardian)
        .args(["status", "--json", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .context("cannot run guardian status")?;
    let value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "guardian status printed no JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code(), value))
}
