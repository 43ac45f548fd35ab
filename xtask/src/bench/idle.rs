//! `--only idle`: what an idle daemon costs. Per source (ebpf, fanotify, inotify) and project
//! count (100 and 10,000 idle projects of three small files each, on a fresh tmpfs): the real
//! daemon at its default cadence (`poll_interval = "5s"`, `sample_interval = "250ms"`), given
//! [`SETTLE`] to finish its start-up, then watched for `--idle-seconds` while nothing is
//! written. Counts first (the machine is shared: CPU figures are noisy): write syscalls
//! (`/proc/PID/io` `syscw`), bytes towards storage (`write_bytes`), state-file replacements
//! (its inode), then CPU (each thread's schedstat run time) and memory (`VmRSS`, `VmHWM`).

use super::daemon::{log_line_time, Daemon, DaemonConfig};
use super::report::{machine_table, wrap, Machine, RunInfo};
use super::scratch::{TempBase, Tmpfs};
use super::{check_cancel, thousands};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const SOURCES: [&str; 3] = ["ebpf", "fanotify", "inotify"];
const PROJECTS: [u64; 2] = [100, 10_000];
const FILES_PER_PROJECT: u64 = 3;
const TMPFS_SIZE: u64 = 1 << 30;
/// Start-up before the watch starts: the baseline walk, the forecasts' first ten samples (one
/// per poll while nothing changes; until then each is news for the state file), the heap given
/// back over the first six polls. At 10,000 projects the survey index's background walk of every
/// project can outlast it: the watch also waits for its `survey index warm` line (up to
/// [`WARM_TIMEOUT`]) and [`AFTER_WARM`] more.
const SETTLE: Duration = Duration::from_secs(60);
const INDEX_WARM: &str = "survey index warm";
const WARM_TIMEOUT: Duration = Duration::from_secs(600);
const AFTER_WARM: Duration = Duration::from_secs(5);
/// Goals of issue 16.
const GOAL_CPU_PERCENT: f64 = 0.1;
const GOAL_RSS_EBPF_MIB: f64 = 20.0;
const GOAL_BYTES_PER_FILE: f64 = 24.0;

/// One daemon watched while idle.
pub struct Idle {
    source: &'static str,
    projects: u64,
    files: u64,
    seconds: f64,
    cpu_percent: f64,
    write_syscalls: u64,
    write_bytes: u64,
    state_writes: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

pub struct IdleReport {
    background: String,
    seconds: u64,
    rows: Vec<Idle>,
}

pub fn run(seconds: u64, guardian_bin: &Path, cancel: &AtomicBool) -> Result<IdleReport> {
    let cpu = super::report::CpuUse::now();
    let base = TempBase::create("idle")?;
    let mut rows = Vec::new();
    for &projects in &PROJECTS {
        for source in SOURCES {
            check_cancel(cancel)?;
            let row = one(&base.path, source, projects, seconds, guardian_bin, cancel)
                .with_context(|| format!("idle: {source} with {projects} projects"))?;
            eprintln!(
                "bench: idle: {source:<8} {:>6} projects: cpu {:.3}%, {} write syscalls, {} B \
                 to storage, {} state writes, RSS {} KiB (peak {} KiB)",
                thousands(projects),
                row.cpu_percent,
                row.write_syscalls,
                row.write_bytes,
                row.state_writes,
                row.rss_kib,
                row.hwm_kib
            );
            rows.push(row);
        }
    }
    Ok(IdleReport {
        background: cpu.describe_since(),
        seconds,
        rows,
    })
}

fn one(
    base: &Path,
    source: &'static str,
    projects: u64,
    seconds: u64,
    guardian_bin: &Path,
    cancel: &AtomicBool,
) -> Result<Idle> {
    let tmpfs = Tmpfs::mount(&base.join("mnt"), TMPFS_SIZE)?;
    let ws = tmpfs.root.join("ws");
    for p in 0..projects {
        check_cancel(cancel)?;
        let src = ws.join(format!("p{p:05}/src"));
        std::fs::create_dir_all(&src)?;
        for f in 0..FILES_PER_PROJECT {
            std::fs::write(src.join(format!("f{f}.txt")), [b'x'; 100])?;
        }
    }
    let state = base.join("state");
    let config = DaemonConfig {
        source,
        workspace: &ws,
        state: &state,
        poll_interval: "5s",
        sample_interval: "250ms",
        cleanup_free: "1%",
        critical_free: "1%",
        target_free: "2%",
    };
    let daemon = Daemon::start(guardian_bin, &config)?;
    let started = Instant::now();
    let mut warm = None;
    while started.elapsed() < SETTLE || warm.is_none_or(|w: Instant| w.elapsed() < AFTER_WARM) {
        check_cancel(cancel)?;
        anyhow::ensure!(
            started.elapsed() < WARM_TIMEOUT,
            "no {INDEX_WARM:?} in the daemon's log after {WARM_TIMEOUT:?}: {}",
            daemon.log_tail()
        );
        if warm.is_none() && log_line_time(&daemon.log, INDEX_WARM).is_some() {
            warm = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let state_file = config.state_dir().join("state.json");
    let inode = || std::fs::metadata(&state_file).map(|m| m.ino()).ok();
    let (cpu0, io0) = (daemon.cpu_snapshot()?, proc_io(daemon.pid)?);
    let start = Instant::now();
    let mut last = inode();
    let mut state_writes = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        check_cancel(cancel)?;
        std::thread::sleep(Duration::from_millis(100));
        let now = inode();
        if now != last {
            state_writes += 1;
            last = now;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu1, io1) = (daemon.cpu_snapshot()?, proc_io(daemon.pid)?);
    let (rss_kib, hwm_kib) = proc_memory(daemon.pid)?;
    daemon.stop()?;
    drop(tmpfs);
    Ok(Idle {
        source,
        projects,
        files: projects * FILES_PER_PROJECT,
        seconds: elapsed,
        cpu_percent: cpu0.until(&cpu1).as_secs_f64() / elapsed * 100.0,
        write_syscalls: io1.0.saturating_sub(io0.0),
        write_bytes: io1.1.saturating_sub(io0.1),
        state_writes,
        rss_kib,
        hwm_kib,
    })
}

/// `syscw` and `write_bytes` of `/proc/PID/io`.
fn proc_io(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/io"))
    };
    Ok((field("syscw")?, field("write_bytes")?))
}

/// `VmRSS` and `VmHWM` of `/proc/PID/status`, KiB.
pub(super) fn proc_memory(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS")?, field("VmHWM")?))
}

impl IdleReport {
    pub fn print(&self) {
        for r in &self.rows {
            println!(
                "idle {:<8} {:>6} projects: cpu {:.3}%  syscw {}  write_bytes {}  state writes {}  \
                 RSS {:.1} MiB",
                r.source,
                r.projects,
                r.cpu_percent,
                r.write_syscalls,
                r.write_bytes,
                r.state_writes,
                r.rss_kib as f64 / 1024.0
            );
        }
    }

    /// Whether every count goal holds (CPU and memory are reported against their goals, not
    /// judged: the shared machine makes them noisy).
    pub fn verdict(&self) -> &'static str {
        if self
            .rows
            .iter()
            .all(|r| r.write_bytes == 0 && r.state_writes == 0)
        {
            "pass"
        } else {
            "MISS"
        }
    }

    /// RSS above the ebpf daemon's with the same projects, per tracked file.
    fn per_file(&self, r: &Idle) -> Option<f64> {
        let ebpf = self
            .rows
            .iter()
            .find(|e| e.source == "ebpf" && e.projects == r.projects)?;
        (r.source != "ebpf")
            .then(|| (r.rss_kib as f64 - ebpf.rss_kib as f64) * 1024.0 / r.files as f64)
    }

    pub fn markdown(&self, machine: &Machine, run: &RunInfo) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Idle: what a daemon costs while nothing is written\n");
        let method = format!(
            "Per source and project count: a fresh tmpfs with one workspace of N projects \
             ({FILES_PER_PROJECT} files of 100 B each in a `src/` dir), the real \
             `target/release/guardian run` with `poll_interval = \"5s\"`, `sample_interval = \
             \"250ms\"` and thresholds far below the free space; {} s for start-up (and at least \
             {} s after the daemon's `{INDEX_WARM}` log line: its survey index has walked every \
             project), then {} s watched with nothing written. Write syscalls: `syscw` of `/proc/PID/io` (every \
             `write`-family call, to any fd); to storage: its `write_bytes`; state writes: \
             replacements of `state.json` (its inode, read every 100 ms); CPU: the daemon's \
             threads' time on a CPU (`/proc/PID/task/TID/schedstat`, to the ns; utime + stime \
             ticks of 10 ms if a thread ended in the window); RSS and its peak: `VmRSS`, `VmHWM` at the end. Per file: RSS above the \
             ebpf daemon's with the same projects, divided by the tracked files.",
            SETTLE.as_secs(),
            AFTER_WARM.as_secs(),
            self.seconds
        );
        let _ = writeln!(s, "{}\n", wrap(&method, "", 100));
        s += &machine_table(machine, &[("Other CPU use", self.background.clone())], run);
        let _ = writeln!(
            s,
            "| Source | Projects | CPU | Write syscalls | Bytes to storage | State writes | RSS \
             (peak) | RSS per file over ebpf |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let per_file = self.per_file(r).map_or("—".into(), |b| format!("{b:.0} B"));
            let _ = writeln!(
                s,
                "| {} | {} | {:.3}% | {} ({:.1}/s) | {} | {} | {:.1} MiB ({:.1} MiB) | {} |",
                r.source,
                thousands(r.projects),
                r.cpu_percent,
                thousands(r.write_syscalls),
                r.write_syscalls as f64 / r.seconds,
                r.write_bytes,
                r.state_writes,
                r.rss_kib as f64 / 1024.0,
                r.hwm_kib as f64 / 1024.0,
                per_file
            );
        }
        let _ = writeln!(
            s,
            "| goal | | ≤ {GOAL_CPU_PERCENT}%, flat in projects | 0 | 0 | 0 | ≤ {GOAL_RSS_EBPF_MIB} \
             MiB (ebpf) | ≤ {GOAL_BYTES_PER_FILE} B |\n"
        );
        s
    }
}
