//! The randomized adversary run (issue 11): the real daemon cleans two workspaces on a 256 MiB
//! tmpfs kept at ~95% used (victim projects keep being created as Guardian deletes them) while
//! a hostile process ([`adversary`]) swaps symlinks in place of dirs, bind-mounts outside trees,
//! another filesystem and protected dirs into projects, renames dirs between the workspaces and
//! in and out of them, creates hostile names and holds files and cwds in projects. Afterwards
//! everything outside policy must be byte-identical: trees outside the workspaces (on the same
//! filesystem and on another one), protected names, `.guardian-keep` dirs, projects held in use
//! for the whole run; the audit log must parse line by line with every intent closed and no
//! deletion outside the workspaces.

use super::adversary::{self, AdversarySpec};
use super::auditlog::AuditCheck;
use super::daemon::{Daemon, Spec, Workspace};
use super::fsx::{self, Tmpfs, MIB};
use super::logscan::{self, LogSummary};
use super::rng::Rng;
use super::soak::{make_modules_tree, HeldChild};
use super::Runner;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The attacked tmpfs.
pub const FS_BYTES: u64 = 256 * MIB;
/// Victims are created while the tmpfs is less used than this.
pub const KEEP_USED_PERCENT: f64 = 95.0;

#[derive(Clone, Debug)]
pub struct AttackOptions {
    pub duration: Duration,
    pub seed: u64,
    pub progress: Option<Duration>,
    /// Set (e.g. by a SIGINT handler) to end the run early; the checks and the clean-up still
    /// run (the adversary is stopped instead of reporting).
    pub cancel: Arc<AtomicBool>,
}

/// What an adversary run did and found.
#[derive(Clone, Debug, Default)]
pub struct AttackReport {
    pub seed: u64,
    /// The run was ended early through the cancel flag.
    pub cancelled: bool,
    pub duration_s: f64,
    pub source: String,
    /// Cleanup cycles the daemon ran under attack (its rounds).
    pub cycles: u64,
    /// Hostile actions by kind (`….failed`: the victim changed under the action).
    pub actions: BTreeMap<String, u64>,
    pub victims_created: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub deletions: u64,
    pub bytes_unlinked: u64,
    pub bytes_freed: u64,
    /// Used share of the tmpfs over the run: (min, mean, max) of 1 s samples.
    pub used_percent: (f64, f64, f64),
    pub digest_changes: Vec<String>,
    pub audit_problems: Vec<String>,
    pub daemon_problems: Vec<String>,
    pub log: LogSummary,
}

impl AttackReport {
    pub fn hostile_actions(&self) -> u64 {
        self.actions
            .iter()
            .filter(|(k, _)| {
                !k.ends_with(".failed") && !adversary::OBSERVATIONS.contains(&k.as_str())
            })
            .map(|(_, n)| n)
            .sum()
    }

    pub fn failures(&self) -> Vec<String> {
        let mut out = self.daemon_problems.clone();
        out.extend(
            self.digest_changes
                .iter()
                .map(|c| format!("outside policy changed: {c}")),
        );
        out.extend(self.audit_problems.iter().cloned());
        for line in &self.log.unparsed {
            out.push(format!(
                "a daemon stderr line not in the log format: {line}"
            ));
        }
        if self.deletions == 0 {
            out.push("Guardian deleted nothing: the run did not exercise cleaning".into());
        }
        if self.hostile_actions() == 0 {
            out.push("the adversary did nothing".into());
        }
        if self.cancelled {
            out.push("the run was cancelled before its end".into());
        }
        out
    }

    pub fn print(&self) {
        println!(
            "soak-attacks: {:.0} s, seed {}, source {}; tmpfs used {:.1}/{:.1}/{:.1} % (min/mean/max)",
            self.duration_s,
            self.seed,
            self.source,
            self.used_percent.0,
            self.used_percent.1,
            self.used_percent.2
        );
        println!(
            "  rounds (cleanup cycles under attack) {}; {} deletions {:?}; {} MiB unlinked, {} MiB freed; {} victims created",
            self.cycles,
            self.deletions,
            self.outcomes,
            self.bytes_unlinked / MIB,
            self.bytes_freed / MIB,
            self.victims_created
        );
        println!(
            "  hostile actions {}: {:?}",
            self.hostile_actions(),
            self.actions
        );
        println!(
            "  log: {} lines {:?}; repeats within a minute: {}",
            self.log.lines,
            self.log.by_level,
            self.log.spam.len()
        );
    }
}

/// Runs the adversary for `opts.duration`.
pub fn run(runner: &Runner, opts: &AttackOptions) -> Result<AttackReport> {
    let fs = Tmpfs::mount(FS_BYTES, "attacks")?;
    let other = Tmpfs::mount(32 * MIB, "attacks-other")?;
    let logs = fsx::fresh_dir("attacks-logs")?;
    let result = run_on(runner, opts, &fs, &other, &logs);
    if result.as_ref().is_ok_and(|r| r.failures().is_empty()) {
        let _ = std::fs::remove_dir_all(&logs);
    } else {
        eprintln!(
            "soak-attacks: the daemon's log is kept in {}",
            logs.display()
        );
    }
    result
}

fn run_on(
    runner: &Runner,
    opts: &AttackOptions,
    fs: &Tmpfs,
    other: &Tmpfs,
    logs: &Path,
) -> Result<AttackReport> {
    let mut rng = Rng::new(opts.seed);
    let (ws_a, ws_b) = (fs.path("ws-a"), fs.path("ws-b"));
    let outside = fs.path("outside");
    let other_tree = other.path("other");
    // Outside policy: protected names, keep markers, projects held in use, outside trees.
    let kept_dirs = [
        ws_a.join("output"),
        ws_b.join("output"),
        ws_a.join("kept-a"),
        ws_b.join("kept-b"),
        ws_a.join("held-cwd"),
        ws_b.join("held-fd"),
    ];
    for (i, dir) in kept_dirs.iter().enumerate() {
        make_modules_tree(&dir.join("node_modules"), 2 * MIB, 100 + i as u64)?;
    }
    std::fs::write(ws_a.join("kept-a").join(guardian::scan::KEEP_MARKER), b"")?;
    std::fs::write(ws_b.join("kept-b").join(guardian::scan::KEEP_MARKER), b"")?;
    let mut targets = Vec::new();
    for t in 0..4 {
        let tree = outside.join(format!("tree-{t}"));
        make_modules_tree(&tree.join("node_modules"), MIB, 200 + t)?;
        targets.push(tree);
    }
    make_modules_tree(&other_tree.join("node_modules"), 2 * MIB, 300)?;
    targets.push(other_tree.clone());
    targets.extend(kept_dirs.iter().cloned());
    let digested: Vec<PathBuf> = kept_dirs
        .iter()
        .cloned()
        .chain([outside.clone(), other_tree.clone()])
        .collect();
    let before: Vec<_> = digested.iter().map(|d| fsx::digest(d)).collect();
    // The baseline: a filler outside the workspaces; victims take the rest up to ~95%.
    fsx::fill_to_used(&fs.dir, &fs.path("filler"), 75.0)?;

    let ready = logs.join("adversary.ready");
    let adversary_report = logs.join("adversary.json");
    let until = SystemTime::now() + opts.duration;
    let spec = AdversarySpec {
        workspaces: vec![ws_a.clone(), ws_b.clone()],
        scratch: fs.path("scratch"),
        targets,
        hold_cwd: vec![ws_a.join("held-cwd")],
        hold_fd: vec![ws_b.join("held-fd")],
        seed: rng.next_u64(),
        until,
        keep_used_percent: KEEP_USED_PERCENT,
        ready: ready.clone(),
        report: adversary_report.clone(),
    };
    // Victims exist before the adversary starts.
    let created = Arc::new(AtomicU64::new(0));
    for _ in 0..16 {
        let n = created.fetch_add(1, Ordering::Relaxed);
        let ws = if n & 1 == 0 { &ws_a } else { &ws_b };
        make_victim(ws, n, &mut rng)?;
    }
    let mut hostile = HeldChild(
        (runner.child)(&spec.args())
            .stdin(Stdio::piped())
            .spawn()
            .context("cannot start the adversary")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if let Ok(Some(status)) = hostile.0.try_wait() {
            bail!("the adversary exited before it was ready ({status})");
        }
        if Instant::now() > deadline {
            bail!("the adversary was not ready within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut config = Spec::new(&ws_a, &fs.path("guardian"));
    config.workspaces = vec![
        Workspace {
            path: ws_a.clone(),
            protect: vec!["output".into()],
        },
        Workspace {
            path: ws_b.clone(),
            protect: vec!["output".into()],
        },
    ];
    config.cleanup_free = "10%".into();
    config.critical_free = "7%".into();
    config.target_free = "12%".into();
    let config_path = logs.join("guardian.toml");
    config.write(&config_path)?;
    let mut daemon = Daemon::start(&runner.guardian, &config_path, &logs.join("daemon.log"))?;
    daemon.wait_started(Duration::from_secs(30))?;
    let started = Instant::now();

    // Victims keep coming while there is room: the tmpfs stays at ~95% used.
    let stop = Arc::new(AtomicBool::new(false));
    let creator = {
        let (stop, created, mount) = (stop.clone(), created.clone(), fs.dir.clone());
        let (ws_a, ws_b, mut rng) = (ws_a.clone(), ws_b.clone(), rng.fork());
        std::thread::spawn(move || {
            let mut used = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let s = fsx::space(&mount).unwrap_or_default();
                used.push(s.used_percent());
                if s.used_percent() < KEEP_USED_PERCENT {
                    let n = created.fetch_add(1, Ordering::Relaxed);
                    let ws = if rng.chance(0.5) { &ws_a } else { &ws_b };
                    let _ = make_victim(ws, n, &mut rng);
                } else {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            used
        })
    };

    let mut report = AttackReport {
        seed: opts.seed,
        ..AttackReport::default()
    };
    let mut last_progress = Instant::now();
    while SystemTime::now() < until && !opts.cancel.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(status) = daemon.exited() {
            report.daemon_problems.push(format!(
                "the daemon exited under attack ({status}): {}",
                daemon.log_tail(10)
            ));
            break;
        }
        if opts
            .progress
            .is_some_and(|every| last_progress.elapsed() >= every)
        {
            last_progress = Instant::now();
            eprintln!(
                "soak-attacks: +{:.0} s, used {:.1} %, {} victims, {} cycles",
                started.elapsed().as_secs_f64(),
                fs.space().used_percent(),
                created.load(Ordering::Relaxed),
                daemon.log_text().matches("cleanup cycle finished").count()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    report.cancelled = opts.cancel.load(Ordering::Relaxed);
    let used = creator.join().unwrap_or_default();
    // The adversary stops attacking at the deadline and reports; its fixed holds stay.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !adversary_report.exists()
        && Instant::now() < deadline
        && !opts.cancel.load(Ordering::Relaxed)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    report.actions = std::fs::read(&adversary_report)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.as_object().map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
        })
        .unwrap_or_default();
    report.duration_s = started.elapsed().as_secs_f64();
    if daemon.alive() {
        match daemon.stop(Duration::from_secs(30)) {
            Ok(status) if status.success() => {}
            Ok(status) => report
                .daemon_problems
                .push(format!("the daemon exited with {status} after SIGTERM")),
            Err(e) => report.daemon_problems.push(format!("{e:#}")),
        }
    }
    // The adversary's mounts, wherever its renames took them.
    fsx::unmount_below(&fs.dir);
    for (dir, old) in digested.iter().zip(&before) {
        for change in fsx::digest_diff(old, &fsx::digest(dir), 5) {
            report
                .digest_changes
                .push(format!("{}: {change}", dir.display()));
        }
    }
    drop(hostile.0.stdin.take());
    hostile.wait_or_term(Duration::from_secs(10));

    report.victims_created = created.load(Ordering::Relaxed);
    if !used.is_empty() {
        let mean = used.iter().sum::<f64>() / used.len() as f64;
        let (lo, hi) = used
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), u| {
                (a.min(*u), b.max(*u))
            });
        report.used_percent = (lo, mean, hi);
    }
    let text = daemon.log_text();
    report.log = logscan::summarize(&text);
    let lines: Vec<_> = text.lines().filter_map(logscan::parse_line).collect();
    report.source = lines
        .iter()
        .find(|l| l.message == "guardian started")
        .and_then(|l| l.field("source"))
        .unwrap_or("?")
        .to_string();
    report.cycles = lines
        .iter()
        .filter(|l| l.message == "cleanup cycle finished")
        .count() as u64;
    check_audit(&config.audit_log, &[ws_a, ws_b], &digested, &mut report);
    Ok(report)
}

/// A victim project: `node_modules` of 0.5–1.5 MiB of small files and a source file. Built
/// under a name the adversary leaves alone, then renamed into place (a path through a victim
/// may be a symlink to a tree that must not change by the time it is used).
fn make_victim(ws: &Path, n: u64, rng: &mut Rng) -> Result<()> {
    let building = ws.join(format!(".building-{n}"));
    let made = (|| -> Result<()> {
        let bytes = rng.between(MIB / 2, 3 * MIB / 2);
        make_modules_tree(&building.join("node_modules"), bytes, rng.next_u64())?;
        std::fs::write(building.join("main.rs"), b"fn main() {}\n")?;
        std::fs::rename(
            &building,
            ws.join(format!("{}{n}", adversary::VICTIM_PREFIX)),
        )?;
        Ok(())
    })();
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    made
}

fn check_audit(
    audit_log: &Path,
    workspaces: &[PathBuf],
    kept: &[PathBuf],
    report: &mut AttackReport,
) {
    let audit = match AuditCheck::read(audit_log) {
        Ok(a) => a,
        Err(e) => {
            report.audit_problems.push(format!("{e:#}"));
            return;
        }
    };
    report.outcomes = audit.outcome_counts();
    report.deletions = audit.deletions().count() as u64;
    report.bytes_unlinked = audit.bytes_unlinked();
    report.bytes_freed = audit.bytes_freed();
    for d in audit.dangling() {
        report.audit_problems.push(format!(
            "intent {} for {} has no outcome line after a clean stop",
            d.id,
            guardian::textpath::escape(&d.path)
        ));
    }
    for id in audit.duplicate_outcomes() {
        report
            .audit_problems
            .push(format!("action {id} has more than one outcome line"));
    }
    for r in audit.deletions() {
        let inside = workspaces.iter().any(|w| r.path.starts_with(w));
        if !inside || kept.iter().any(|k| r.path.starts_with(k)) {
            report.audit_problems.push(format!(
                "deleted outside policy: {}",
                guardian::textpath::escape(&r.path)
            ));
        }
    }
}
