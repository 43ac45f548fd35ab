//! The soak: the real daemon guarding a 512 MiB tmpfs for a long time while churn writers (child
//! processes, see [`churn`]) fill it with `node_modules`-like trees, logs and big artifacts and
//! delete them again, so that a cleanup runs every ~20 s. Around it: protected dirs that must
//! stay byte-identical (a name on the protect list, a dir with a `.guardian-keep` marker, a
//! project a process has its cwd in, a tree outside the workspace), the daemon's RSS, fd and
//! thread counts sampled every second, its stderr checked for spam, every writer's `ENOSPC`
//! checked against the reclaimable bytes at that moment, and the audit log read strictly.
//!
//! [`run`] returns the figures ([`SoakReport`]); [`SoakReport::failures`] says what broke an
//! invariant. The length comes from the caller: a 30–60 s smoke in the test run, 10 minutes in
//! `cargo xtask soak`.

use super::auditlog::AuditCheck;
use super::churn::{self, Kind, WriterSpec};
use super::daemon::{Daemon, Spec};
use super::fsx::{self, Tmpfs, MIB};
use super::logscan::{self, LogSummary};
use super::rng::Rng;
use super::Runner;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Size of the soaked tmpfs.
pub const SOAK_BYTES: u64 = 512 * MIB;
/// An `ENOSPC` with at least this much reclaimable is a failure (Guardian should have freed it).
pub const RECLAIMABLE_SLACK: u64 = MIB;
/// Old reclaimable projects fill the tmpfs to this much used before the daemon starts (the
/// target is 70% used, cleanups start at 80%).
pub const PRELOAD_USED_PERCENT: f64 = 72.0;

/// How to run a soak.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub duration: Duration,
    pub seed: u64,
    /// Print a progress line this often (none when `None`).
    pub progress: Option<Duration>,
    /// Set (e.g. by a SIGINT handler) to end the run early; everything is still checked and
    /// cleaned up.
    pub cancel: Arc<AtomicBool>,
}

/// One `/proc` + `statvfs` sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since the daemon started.
    pub t: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
    pub avail: u64,
}

/// A series' start, end, extremes and least-squares slope (per minute).
#[derive(Clone, Copy, Debug, Default)]
pub struct Trend {
    pub start: f64,
    pub end: f64,
    pub min: f64,
    pub max: f64,
    pub slope_per_min: f64,
    /// The slope over the second half of the run only (after warm-up).
    pub late_slope_per_min: f64,
}

impl Trend {
    pub fn of(points: &[(f64, f64)]) -> Trend {
        let Some(first) = points.first() else {
            return Trend::default();
        };
        let last = points[points.len() - 1];
        let (min, max) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.1), hi.max(p.1))
            });
        let half = &points[points.len() / 2..];
        Trend {
            start: first.1,
            end: last.1,
            min,
            max,
            slope_per_min: slope(points) * 60.0,
            late_slope_per_min: slope(half) * 60.0,
        }
    }
}

/// Least-squares slope of y over x (0 with fewer than two points).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

/// Everything a soak measured.
#[derive(Clone, Debug, Default)]
pub struct SoakReport {
    pub seed: u64,
    /// The run was ended early through the cancel flag.
    pub cancelled: bool,
    pub duration_s: f64,
    pub fs_bytes: u64,
    pub source: String,
    pub writers: Vec<String>,
    pub written_bytes: u64,
    pub written_files: u64,
    /// Writes that failed because Guardian had deleted the dir under the writer.
    pub deleted_under_writers: u64,
    pub cycles: u64,
    /// Seconds between cycle starts: mean, min, max.
    pub cycle_interval: (f64, f64, f64),
    pub actions: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub bytes_unlinked: u64,
    pub bytes_freed: u64,
    pub audit_lines: usize,
    pub min_free_percent: f64,
    pub rss_kib: Trend,
    pub fds: Trend,
    pub threads: Trend,
    pub samples: usize,
    pub log: LogSummary,
    pub enospc_total: u64,
    /// `ENOSPC`s while at least [`RECLAIMABLE_SLACK`] was reclaimable: (t since start, bytes).
    pub enospc_with_reclaimable: Vec<(f64, u64)>,
    pub protected_changes: Vec<String>,
    pub audit_problems: Vec<String>,
    pub daemon_problems: Vec<String>,
}

impl SoakReport {
    /// What broke an invariant (empty when the soak passed).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.daemon_problems.iter().cloned());
        for c in &self.protected_changes {
            out.push(format!("protected dir changed: {c}"));
        }
        out.extend(self.audit_problems.iter().cloned());
        for (cause, (n, gap)) in &self.log.spam {
            out.push(format!(
                "log message repeated {n} time(s) within a minute (shortest gap {gap:.1} s): {cause}"
            ));
        }
        for line in &self.log.unparsed {
            out.push(format!(
                "a daemon stderr line not in the log format: {line}"
            ));
        }
        for (t, bytes) in &self.enospc_with_reclaimable {
            out.push(format!(
                "a writer got ENOSPC at +{t:.1} s while {} MiB were reclaimable",
                bytes / MIB
            ));
        }
        if self.cycles == 0 {
            out.push("no cleanup cycle ran: the churn never created pressure".into());
        }
        if self.cancelled {
            out.push("the run was cancelled before its end".into());
        }
        out
    }

    /// One line per figure, for the console.
    pub fn print(&self) {
        println!(
            "soak: {:.0} s on a {} MiB tmpfs, seed {}, source {}",
            self.duration_s,
            self.fs_bytes / MIB,
            self.seed,
            self.source
        );
        println!(
            "  writers {}: {} MiB in {} files ({} writes hit a dir Guardian had deleted)",
            self.writers.join(", "),
            self.written_bytes / MIB,
            self.written_files,
            self.deleted_under_writers
        );
        println!(
            "  cleanup cycles {}: every {:.1} s on average (min {:.1}, max {:.1}); {} actions {:?}; {} MiB unlinked, {} MiB freed; lowest free {:.1} %",
            self.cycles,
            self.cycle_interval.0,
            self.cycle_interval.1,
            self.cycle_interval.2,
            self.actions,
            self.outcomes,
            self.bytes_unlinked / MIB,
            self.bytes_freed / MIB,
            self.min_free_percent
        );
        let t = |name: &str, tr: &Trend, unit: &str| {
            println!(
                "  {name}: start {:.0} end {:.0} min {:.0} max {:.0} {unit}; slope {:+.1} {unit}/min (second half {:+.1})",
                tr.start, tr.end, tr.min, tr.max, tr.slope_per_min, tr.late_slope_per_min
            )
        };
        t("RSS", &self.rss_kib, "KiB");
        t("fds", &self.fds, "");
        t("threads", &self.threads, "");
        println!(
            "  log: {} lines {:?}; events {:?}; busiest cause {:?}; repeats within a minute: {}",
            self.log.lines,
            self.log.by_level,
            self.log.events,
            self.log.busiest,
            self.log.spam.len()
        );
        println!(
            "  ENOSPC: {} total, {} while reclaimable bytes existed; audit: {} lines",
            self.enospc_total,
            self.enospc_with_reclaimable.len(),
            self.audit_lines
        );
    }
}

/// Runs one soak.
pub fn run(runner: &Runner, opts: &SoakOptions) -> Result<SoakReport> {
    let fs = Tmpfs::mount(SOAK_BYTES, "soak")?;
    let logs = fsx::fresh_dir("soak-logs")?;
    let result = run_on(runner, opts, &fs, &logs);
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&logs);
    } else {
        eprintln!(
            "soak: the daemon's log and the writers' reports are kept in {}",
            logs.display()
        );
    }
    result
}

/// Protected dirs (names in the workspace) and what holds the in-use one.
const OUTPUT: &str = "output";
const KEPT: &str = "kept";
const BUSY: &str = "busy";

fn run_on(runner: &Runner, opts: &SoakOptions, fs: &Tmpfs, logs: &Path) -> Result<SoakReport> {
    let mut rng = Rng::new(opts.seed);
    let ws = fs.path("ws");
    let outside = fs.path("outside");
    let state = fs.path("guardian");
    std::fs::create_dir_all(&ws)?;
    for (dir, seed) in [
        (ws.join(OUTPUT), 1),
        (ws.join(KEPT), 2),
        (ws.join(BUSY), 3),
        (outside.clone(), 4),
    ] {
        make_modules_tree(&dir.join("node_modules"), 4 * MIB, seed)?;
        std::fs::write(dir.join("README.md"), b"must stay byte-identical\n")?;
    }
    std::fs::write(ws.join(KEPT).join(guardian::scan::KEEP_MARKER), b"")?;
    let protected_dirs = [
        ws.join(OUTPUT),
        ws.join(KEPT),
        ws.join(BUSY),
        outside.clone(),
    ];
    let before: Vec<_> = protected_dirs.iter().map(|d| fsx::digest(d)).collect();
    // A process with its cwd in `busy` for the whole run.
    let mut holder = HeldChild(
        Command::new("sleep")
            .arg("100000")
            .current_dir(ws.join(BUSY))
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start the cwd holder")?,
    );

    // Old projects with reclaimable trees up to just above the target, so that the first
    // cleanups come within seconds, not after minutes of churn.
    let mut n = 0;
    while fs.space().used_percent() < PRELOAD_USED_PERCENT {
        make_modules_tree(
            &ws.join(format!("old-{n}/node_modules")),
            8 * MIB,
            rng.next_u64(),
        )?;
        n += 1;
    }

    let mut spec = Spec::new(&ws, &state);
    spec.poll_interval = "1s".into();
    spec.active_within = "5m".into();
    spec.extra =
        "[[rules]]\nname = \"old-logs\"\nphase = 1\nglobs = [\"*.log\"]\nolder_than = \"1h\"\n"
            .into();
    let config = logs.join("guardian.toml");
    spec.write(&config)?;
    let mut daemon = Daemon::start(&runner.guardian, &config, &logs.join("daemon.log"))?;
    daemon.wait_started(Duration::from_secs(30))?;
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let monitor = {
        let (stop, samples, pid, mount) =
            (stop.clone(), samples.clone(), daemon.pid, fs.dir.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(p) = super::daemon::proc_sample(pid) {
                    let avail = fsx::space(&mount).map(|s| s.avail).unwrap_or(0);
                    let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
                    s.push(Sample {
                        t: started.elapsed().as_secs_f64(),
                        rss_kib: p.rss_kib,
                        fds: p.fds,
                        threads: p.threads,
                        avail,
                    });
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let until = SystemTime::now() + opts.duration;
    let reports = logs.join("writers");
    std::fs::create_dir_all(&reports)?;
    let plan: [(Kind, u64); 5] = [
        (Kind::Modules, 768 << 10),
        (Kind::Modules, 768 << 10),
        (Kind::Modules, 768 << 10),
        (Kind::Logs, 256 << 10),
        (Kind::Big, 6 * MIB),
    ];
    let mut writers = Vec::new();
    for (id, (kind, rate)) in plan.iter().enumerate() {
        let w = WriterSpec {
            kind: *kind,
            id,
            workspace: ws.clone(),
            mount: fs.dir.clone(),
            seed: rng.next_u64(),
            rate: *rate,
            until,
            report: reports.join(format!("{}-{id}.jsonl", kind.name())),
            protected: vec![OUTPUT.into(), KEPT.into(), BUSY.into()],
        };
        let child = (runner.child)(&w.args())
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start a churn writer")?;
        writers.push(HeldChild(child));
    }

    let mut report = SoakReport {
        seed: opts.seed,
        fs_bytes: SOAK_BYTES,
        writers: plan
            .iter()
            .map(|(k, r)| format!("{} at {} KiB/s", k.name(), r >> 10))
            .collect(),
        ..SoakReport::default()
    };
    let mut last_progress = Instant::now();
    while SystemTime::now() < until && !opts.cancel.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(status) = daemon.exited() {
            report.daemon_problems.push(format!(
                "the daemon exited during the soak ({status}): {}",
                daemon.log_tail(10)
            ));
            break;
        }
        if let Some(every) = opts.progress {
            if last_progress.elapsed() >= every {
                last_progress = Instant::now();
                let s = samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last()
                    .copied();
                if let Some(s) = s {
                    eprintln!(
                        "soak: +{:.0} s, free {:.1} %, RSS {} KiB, {} fds, {} cycles so far",
                        s.t,
                        s.avail as f64 * 100.0 / SOAK_BYTES as f64,
                        s.rss_kib,
                        s.fds,
                        daemon.log_text().matches("cleanup cycle finished").count()
                    );
                }
            }
        }
    }
    // Writers stop at the deadline on their own; give them a little, then stop them (at once
    // when the run was cancelled).
    report.cancelled = opts.cancel.load(Ordering::Relaxed);
    let grace = if report.cancelled {
        Duration::ZERO
    } else {
        Duration::from_secs(20)
    };
    for w in &mut writers {
        w.wait_or_term(grace);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = monitor.join();
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

    // Protected dirs, while the holder still holds `busy`.
    for (dir, old) in protected_dirs.iter().zip(&before) {
        for change in fsx::digest_diff(old, &fsx::digest(dir), 5) {
            report
                .protected_changes
                .push(format!("{}: {change}", dir.display()));
        }
    }
    holder.stop();

    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    report.samples = samples.len();
    let series = |f: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.t, f(s))).collect()
    };
    report.rss_kib = Trend::of(&series(&|s| s.rss_kib as f64));
    report.fds = Trend::of(&series(&|s| s.fds as f64));
    report.threads = Trend::of(&series(&|s| s.threads as f64));
    report.min_free_percent = samples
        .iter()
        .map(|s| s.avail as f64 * 100.0 / SOAK_BYTES as f64)
        .fold(100.0, f64::min);

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
    let starts: Vec<f64> = lines
        .iter()
        .filter(|l| l.message.starts_with("pressure: starting a cleanup cycle"))
        .map(|l| l.t)
        .collect();
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    if !gaps.is_empty() {
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let (lo, hi) = gaps
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), g| {
                (a.min(*g), b.max(*g))
            });
        report.cycle_interval = (mean, lo, hi);
    }

    check_audit(&spec.audit_log, &ws, &protected_dirs, &mut report)?;

    let start_t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
        - report.duration_s;
    for line in churn::read_reports(&reports) {
        match line.event.as_str() {
            "enospc" => {
                report.enospc_total += 1;
                if line.reclaimable >= RECLAIMABLE_SLACK {
                    report
                        .enospc_with_reclaimable
                        .push((line.t - start_t, line.reclaimable));
                }
            }
            "summary" => {
                report.written_bytes += line.bytes;
                report.written_files += line.files;
                report.deleted_under_writers += line.deleted_under_it;
            }
            _ => {}
        }
    }
    Ok(report)
}

/// Strict audit checks: every line a record, no intent without its outcome (the daemon was
/// stopped cleanly), no action recorded twice, nothing deleted outside the workspace or in a
/// protected dir.
fn check_audit(
    audit_log: &Path,
    ws: &Path,
    protected: &[PathBuf],
    report: &mut SoakReport,
) -> Result<()> {
    let audit = match AuditCheck::read(audit_log) {
        Ok(a) => a,
        Err(e) => {
            report.audit_problems.push(format!("{e:#}"));
            return Ok(());
        }
    };
    report.audit_lines = audit.records.len();
    report.outcomes = audit.outcome_counts();
    report.actions = audit.deletions().count() as u64;
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
        if !r.path.starts_with(ws) || protected.iter().any(|p| r.path.starts_with(p)) {
            report.audit_problems.push(format!(
                "deleted outside policy: {}",
                guardian::textpath::escape(&r.path)
            ));
        }
    }
    Ok(())
}

/// A `node_modules`-like tree of about `bytes` at `dir` (deterministic for `seed`).
pub fn make_modules_tree(dir: &Path, bytes: u64, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    let mut written = 0;
    let mut p = 0;
    while written < bytes {
        let pkg = dir.join(format!("pkg-{p}/lib"));
        std::fs::create_dir_all(&pkg)?;
        for f in 0..rng.between(2, 6) {
            let size = rng.between(256, 32 << 10);
            let byte = (rng.next_u64() & 0xff) as u8;
            std::fs::write(pkg.join(format!("f{f}.js")), vec![byte; size as usize])?;
            written += size;
        }
        p += 1;
    }
    Ok(())
}

/// A child process stopped (SIGKILL) when dropped.
pub struct HeldChild(pub Child);

impl HeldChild {
    /// Waits up to `limit` for the child to exit on its own, then SIGTERM and a short wait, then
    /// SIGKILL.
    pub fn wait_or_term(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
    }

    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        self.stop();
    }
}
