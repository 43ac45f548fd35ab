//! `cargo xtask forecast-record`: runs a real tool's workload (a cargo build, npm install +
//! tests, logrotate, a checkpoint writer; the scripts in `workloads/`) on a fresh tmpfs and
//! samples the filesystem's used bytes (statvfs) at a fixed interval into a recorded trace
//! (`recorded.rs` has the format). Root only (it mounts the tmpfs).

use super::recorded::Recorded;
use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    Cargo,
    Npm,
    Logrotate,
    Checkpoint,
}

impl Tool {
    fn script(self) -> &'static str {
        match self {
            Tool::Cargo => include_str!("workloads/cargo.sh"),
            Tool::Npm => include_str!("workloads/npm.sh"),
            Tool::Logrotate => include_str!("workloads/logrotate.sh"),
            Tool::Checkpoint => include_str!("workloads/checkpoint.sh"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tool::Cargo => "cargo",
            Tool::Npm => "npm",
            Tool::Logrotate => "logrotate",
            Tool::Checkpoint => "checkpoint",
        }
    }

    /// The programs the workload runs.
    fn needs(self) -> &'static [&'static str] {
        match self {
            Tool::Cargo => &["cargo"],
            Tool::Npm => &["npm", "npx", "node"],
            Tool::Logrotate => &["logrotate", "python3", "gzip"],
            Tool::Checkpoint => &["python3"],
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// The workload to run.
    #[arg(long, value_enum)]
    tool: Tool,
    /// The trace file to write (CSV, e.g. xtask/traces/cargo.csv).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Sampling interval, milliseconds (the daemon samples every 250 ms).
    #[arg(long, default_value_t = 250)]
    interval_ms: u64,
    /// Size of the tmpfs, MiB.
    #[arg(long, default_value_t = 4096)]
    size_mib: u64,
    /// Stop the workload (its whole process group) after this many seconds.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
}

pub fn run(args: &RecordArgs) -> Result<ExitCode> {
    if !rustix::process::geteuid().is_root() {
        bail!("forecast-record mounts a tmpfs: run it as root");
    }
    if !(50..=1000).contains(&args.interval_ms) {
        bail!("--interval-ms {}: want 50 to 1000", args.interval_ms);
    }
    for program in args.tool.needs() {
        if which(program).is_none() {
            bail!(
                "the {} workload needs `{program}` on PATH (e.g. apt-get install {program})",
                args.tool.name()
            );
        }
    }
    let mount = Tmpfs::mount(args.size_mib)?;
    let interval = Duration::from_millis(args.interval_ms);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (samples, outcome) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample(&mount.dir, interval, &stop));
        let outcome = workload(args, &mount.dir);
        // The level the workload leaves, for a couple of seconds.
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        (sampler.join(), outcome)
    });
    let samples = match samples {
        Ok(s) => s?,
        Err(_) => bail!("the sampling thread panicked"),
    };
    let size = samples.size;
    drop(mount);
    outcome?;
    let recorded = Recorded {
        tool: args.tool.name().to_string(),
        size_bytes: size,
        interval_ms: args.interval_ms,
        note: format!(
            "recorded {} on {} ({:.0} s, {} samples)",
            crate::bench::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
            kernel(),
            started.elapsed().as_secs_f64(),
            samples.t_ms.len()
        ),
        t_ms: samples.t_ms,
        used: samples.used,
    };
    let text = recorded.to_csv();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, &text).with_context(|| format!("writing {}", args.out.display()))?;
    let peak = recorded.used.iter().copied().max().unwrap_or(0);
    eprintln!(
        "wrote {} ({} samples, {} KB, peak {:.1} MB used of {:.0} MB)",
        args.out.display(),
        recorded.used.len(),
        text.len() / 1000,
        peak as f64 / 1e6,
        size as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs the workload script in its own process group, cwd and `$DIR` the tmpfs; kills the
/// group when it outlasts `--max-seconds`.
fn workload(args: &RecordArgs, dir: &Path) -> Result<()> {
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", args.tool.script()])
        .env("DIR", dir)
        .current_dir(dir)
        .process_group(0)
        .spawn()
        .context("starting bash")?;
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    loop {
        if let Some(status) = child.try_wait().context("waiting for the workload")? {
            if !status.success() {
                bail!("the {} workload failed: {status}", args.tool.name());
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            let _ = child.wait();
            eprintln!(
                "the {} workload ran past {} s: stopped",
                args.tool.name(),
                args.max_seconds
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Samples {
    size: u64,
    t_ms: Vec<u64>,
    used: Vec<u64>,
}

/// statvfs every `interval` (on a fixed schedule: a late tick is skipped, not bunched) until
/// `stop`; used = (blocks − free blocks) × fragment size.
fn sample(dir: &Path, interval: Duration, stop: &AtomicBool) -> Result<Samples> {
    let start = Instant::now();
    let mut out = Samples {
        size: 0,
        t_ms: Vec::new(),
        used: Vec::new(),
    };
    let mut tick: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let st = rustix::fs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
        let frsize = st.f_frsize;
        out.size = st.f_blocks.saturating_mul(frsize);
        out.used.push(
            st.f_blocks
                .saturating_sub(st.f_bfree)
                .saturating_mul(frsize),
        );
        out.t_ms
            .push(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
        let now = start.elapsed();
        while interval * tick <= now {
            tick += 1;
        }
        std::thread::sleep((interval * tick).saturating_sub(now));
    }
    Ok(out)
}

/// A fresh tmpfs on a new directory under /tmp; unmounted and removed on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Result<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("guardian-record-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755")])
            .arg("guardian-record")
            .arg(&dir)
            .status()
            .context("running mount")?;
        if !status.success() {
            let _ = std::fs::remove_dir(&dir);
            bail!("mount -t tmpfs on {} failed: {status}", dir.display());
        }
        Ok(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

fn kernel() -> String {
    let uname = rustix::system::uname();
    format!(
        "Linux {}",
        uname.release().to_string_lossy().trim().to_owned()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sampler on a real tmpfs: a 20 MB file written and removed shows up in the used bytes,
    /// and the samples come at the interval.
    #[test]
    fn sampler_sees_a_file_written_and_removed_on_a_fresh_tmpfs() {
        if !guardian::testkit::require_root("sampler_sees_a_file_written_and_removed") {
            return;
        }
        let mount = Tmpfs::mount(64).unwrap();
        let stop = AtomicBool::new(false);
        let file = mount.dir.join("blob");
        let samples = std::thread::scope(|scope| {
            let sampler = scope.spawn(|| sample(&mount.dir, Duration::from_millis(100), &stop));
            std::thread::sleep(Duration::from_millis(400));
            std::fs::write(&file, vec![7u8; 20_000_000]).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            std::fs::remove_file(&file).unwrap();
            std::thread::sleep(Duration::from_millis(400));
            stop.store(true, Ordering::Relaxed);
            sampler.join().unwrap().unwrap()
        });
        assert_eq!(samples.size, 64 << 20);
        let first = samples.used[0];
        let peak = samples.used.iter().copied().max().unwrap();
        let last = *samples.used.last().unwrap();
        assert!(peak - first >= 20_000_000, "peak {peak}, first {first}");
        assert!(
            last.abs_diff(first) < 1_000_000,
            "first {first}, last {last}"
        );
        assert!(samples.t_ms.len() >= 8, "{} samples", samples.t_ms.len());
        assert!(samples.t_ms.windows(2).all(|w| w[1] > w[0]));
        drop(mount);
    }
}
