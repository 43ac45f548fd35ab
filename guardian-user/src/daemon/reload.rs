//! Reloading the config on SIGHUP, and the bounded stop on SIGTERM. A reload reads the file the
//! daemon started with (the embedded default when it started on that) through the same
//! `Config::load` as start-up; a valid config is swapped in between two events of the main loop
//! (the cleanup thread takes it for its next job, never in the middle of a cycle), an invalid one
//! is refused — logged once per attempt, shown in the status with the error text naming the key
//! or line — and the running config stays. The keys that only a restart can apply keep their
//! running values and are named in the status ([`RESTART_ONLY`]).
//!
//! Invariants: a storm of SIGHUPs costs at most one reload per pass of the main loop
//! ([`ReloadRequests`] coalesces them); a refused reload changes nothing; the stop after SIGTERM
//! ends within [`SHUTDOWN_BOUND`] however busy the cleanup thread or a child process is.

use super::cycle::Reconfigured;
use super::Guardian;
use crate::cleanup::{AuditLog, Executor};
use crate::config::Config;
use crossbeam_channel::Sender;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the daemon takes at most from SIGTERM/SIGINT to its exit: the entry being deleted
/// stops and is audited, a child process (git maintenance, the journal vacuum) is killed at
/// [`CHILD_KILL_AFTER`], the cleanup thread's report is waited for until [`CLEANER_WAIT`], the
/// state file is written, and past the bound the process exits whatever still runs.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);
/// After SIGTERM, a running child process is killed this late.
pub const CHILD_KILL_AFTER: Duration = Duration::from_secs(5);
/// After SIGTERM, the main loop waits this long at most for the cleanup thread's last report.
pub const CLEANER_WAIT: Duration = Duration::from_secs(7);
/// After the cleanup thread, the state file gets this long at most.
const STATE_FLUSH: Duration = Duration::from_secs(1);

/// Config keys a reload cannot apply to the running daemon: changing them is reported and takes
/// effect at the next start (the running values stay in force until then).
pub const RESTART_ONLY: &[&str] = &[
    "daemon.source",
    "daemon.audit_log",
    "daemon.state_dir",
    "daemon.runtime_dir",
    "[tasks]",
    "[forecast]",
    "[serve]",
];

/// Where a reload reads the config from: the file the daemon started with, or the embedded
/// default; and whether `--dry-run` was given (it stays in force across reloads).
#[derive(Clone, Debug, Default)]
pub struct ReloadFrom {
    pub path: Option<PathBuf>,
    pub dry_run: bool,
}

impl ReloadFrom {
    /// Reads and validates the config as at start-up.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        let mut config = match &self.path {
            Some(path) => Config::load(path)?,
            None => Config::load_embedded_default()?,
        };
        config.daemon.dry_run |= self.dry_run;
        Ok(config)
    }
}

/// Pending reload requests, coalesced: however many SIGHUPs arrive before the main loop takes
/// one, it reloads once.
#[derive(Clone, Debug, Default)]
pub struct ReloadRequests(Arc<AtomicBool>);

impl ReloadRequests {
    /// Asks for a reload (the signal thread, on SIGHUP): wakes the loop with
    /// [`Event::Reload`](super::Event::Reload) unless a request is already pending.
    pub fn request(&self, wake: &Sender<super::Event>) {
        if !self.0.swap(true, Ordering::AcqRel) {
            let _ = wake.send(super::Event::Reload);
        }
    }

    /// Takes the pending request: true when there was one.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// Keeps the running values of the [`RESTART_ONLY`] keys in `new` and names those that
/// differed.
pub fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    fn differs<T: serde::Serialize>(a: &T, b: &T) -> bool {
        serde_json::to_value(a).ok() != serde_json::to_value(b).ok()
    }
    let mut changed = Vec::new();
    if running.daemon.source != new.daemon.source {
        changed.push("daemon.source");
        new.daemon.source = running.daemon.source;
    }
    if running.daemon.audit_log != new.daemon.audit_log {
        changed.push("daemon.audit_log");
        new.daemon.audit_log = running.daemon.audit_log.clone();
    }
    if running.daemon.state_dir != new.daemon.state_dir {
        changed.push("daemon.state_dir");
        new.daemon.state_dir = running.daemon.state_dir.clone();
    }
    if running.daemon.runtime_dir != new.daemon.runtime_dir {
        changed.push("daemon.runtime_dir");
        new.daemon.runtime_dir = running.daemon.runtime_dir.clone();
    }
    if differs(&running.tasks, &new.tasks) {
        changed.push("[tasks]");
        new.tasks = running.tasks.clone();
    }
    if differs(&running.forecast, &new.forecast) {
        changed.push("[forecast]");
        new.forecast = running.forecast.clone();
    }
    if differs(&running.serve, &new.serve) {
        changed.push("[serve]");
        new.serve = running.serve.clone();
    }
    changed
}

/// The state of reloading, for the status.
#[derive(Debug, Default)]
pub(super) struct ReloadState {
    pub from: ReloadFrom,
    pub requests: ReloadRequests,
    /// Why the last reload was refused (cleared by the next one that succeeds).
    pub refused: Option<String>,
    /// Keys changed in the file that wait for a restart.
    pub restart_pending: Vec<&'static str>,
}

impl ReloadState {
    /// The reload's lines in the status's problems.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = &self.refused {
            out.push(format!(
                "config reload refused (still running on the previous config): {why}"
            ));
        }
        if !self.restart_pending.is_empty() {
            out.push(format!(
                "config reloaded, but {} changed: takes effect at the next restart",
                self.restart_pending.join(", ")
            ));
        }
        out
    }
}

impl Guardian {
    /// Where reloads read the config from and how SIGHUPs reach the loop (`run` sets them; a
    /// daemon without them reloads the embedded default).
    pub fn reload_from(mut self, from: ReloadFrom, requests: ReloadRequests) -> Guardian {
        self.reload.from = from;
        self.reload.requests = requests;
        self
    }

    /// The reload: the one place it starts and ends (a service manager's RELOADING=1 goes at
    /// its start, READY=1 at its end). Returns true when a new config was swapped in.
    pub fn reload(&mut self) -> bool {
        // SIGHUPs arriving from here on ask for one more reload (they may have changed the
        // file again after this read).
        self.reload.requests.take();
        tracing::info!(
            config = %self
                .reload
                .from
                .path
                .as_deref()
                .map(crate::textpath::shown)
                .map(|p| p.to_string())
                .unwrap_or_else(|| "embedded default".into()),
            "reloading the config"
        );
        let mut new = match self.reload.from.load() {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "config reload refused: the running config stays");
                self.reload.refused = Some(e.to_string());
                self.publish_state();
                return false;
            }
        };
        self.reload.refused = None;
        let pending = keep_restart_only(&self.config, &mut new);
        if !pending.is_empty() {
            tracing::warn!(
                keys = %pending.join(", "),
                "config reloaded; these changes take effect at the next restart"
            );
        }
        self.reload.restart_pending = pending;
        self.apply(new);
        tracing::info!(
            poll_interval = ?self.config.daemon.poll_interval.0,
            sample_interval = ?self.config.daemon.sample_interval.0,
            dry_run = self.config.daemon.dry_run,
            workspaces = self.config.workspaces.len(),
            "config reloaded"
        );
        self.publish_state();
        true
    }

    /// Swaps `new` in: the main loop's config, a new executor (workspaces, rules, dry run), the
    /// cleanup thread's next job, the poll source's budget; the source re-watches the projects
    /// of the new workspaces at the next poll.
    fn apply(&mut self, new: Config) {
        let executor = Arc::new(
            Executor::new(
                new.workspaces.clone(),
                AuditLog::new(&new.daemon.audit_log),
                new.daemon.dry_run,
                self.cancel.clone(),
                self.protection.clone(),
            )
            .with_rules(&new.compiled_rules()),
        );
        let config = Arc::new(new);
        crate::sources::poll::set_cpu_budget(config.daemon.poll_cpu_budget.fraction());
        self.cleaner.reconfigure(Reconfigured {
            config: config.clone(),
            rules: Arc::new(config.compiled_rules()),
            executor: executor.clone(),
        });
        if let Ok(mut planner) = self.planner_config.lock() {
            *planner = config.clone();
        }
        self.executor = executor;
        self.config = config;
        // Workspaces added or removed: the next poll lists their projects and re-watches them.
        self.filesystems = super::guarded_filesystems(&self.config.workspaces);
        self.stalled.clear();
    }

    /// After SIGTERM/SIGINT: the entry being deleted stops and is audited (the executor sees
    /// `cancel`), a child process is killed at [`CHILD_KILL_AFTER`], the cleanup thread's last
    /// report is taken until [`CLEANER_WAIT`], the state file written. (The binary's signal
    /// thread ends the process at [`SHUTDOWN_BOUND`] whatever still runs; the next start
    /// finishes a deletion left without its outcome.)
    pub(super) fn stop(&mut self, reports: &crossbeam_channel::Receiver<super::cycle::Report>) {
        let began = Instant::now();
        self.cancel.store(true, Ordering::SeqCst);
        crate::child::stop_all_by(began + CHILD_KILL_AFTER);
        while self.cleaner.busy() {
            let left = (began + CLEANER_WAIT).saturating_duration_since(Instant::now());
            match reports.recv_timeout(left) {
                Ok(report) => self.on_cleanup(report),
                Err(_) => {
                    tracing::warn!(
                        "the cleanup thread did not stop within {CLEANER_WAIT:?}; exiting without it"
                    );
                    break;
                }
            }
        }
        self.publish_state();
    }

    /// What the state file gets after [`stop`](Guardian::stop).
    pub(super) fn state_flush_limit() -> Duration {
        STATE_FLUSH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, "test").unwrap()
    }

    #[test]
    fn restart_only_keys_keep_their_running_values_and_are_named() {
        let running = parse("[daemon]\nsource = \"poll\"\npoll_interval = \"5s\"\n");
        let mut new = parse(
            "[daemon]\nsource = \"inotify\"\npoll_interval = \"1s\"\n[serve]\nlisten = \"127.0.0.1:9\"\n",
        );
        let changed = keep_restart_only(&running, &mut new);
        assert_eq!(changed, vec!["daemon.source", "[serve]"]);
        assert_eq!(new.daemon.source, running.daemon.source);
        assert_eq!(new.serve.listen, running.serve.listen);
        // What a reload can apply is applied.
        assert_eq!(new.daemon.poll_interval.0, Duration::from_secs(1));
    }

    #[test]
    fn an_unchanged_config_needs_no_restart() {
        let running = parse("[daemon]\npoll_interval = \"5s\"\n");
        let mut new = running.clone();
        assert!(keep_restart_only(&running, &mut new).is_empty());
    }

    #[test]
    fn a_storm_of_requests_wakes_the_loop_once() {
        let requests = ReloadRequests::default();
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..100 {
            requests.request(&tx);
        }
        assert_eq!(rx.try_iter().count(), 1);
        assert!(requests.take());
        assert!(!requests.take());
        requests.request(&tx);
        assert_eq!(rx.try_iter().count(), 1);
    }
}
