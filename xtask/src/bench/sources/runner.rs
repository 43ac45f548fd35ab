//! The runs of the sources section: the workspace and the file dd rewrites on one filesystem,
//! every setup in rotated rounds per block size, and one dd run measured (wall time, dd's and the
//! daemon's CPU, repeated while something else used the machine).

use super::bpf_stats::attribute;
use super::{
    paired, Params, Runs, Setup, Workload, BLOCK_SIZES, SEED, SETTLE, SETUPS, WORKSPACE_ENTRIES,
};
use crate::bench::daemon::{proc_cpu_time, Daemon, DaemonConfig};
use crate::bench::scratch::Scratch;
use crate::bench::{check_cancel, report, thousands, tree};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Measures both block sizes on one filesystem; returns the workspace description.
#[allow(clippy::too_many_arguments)]
pub(super) fn measure_fs(
    params: &Params,
    guardian_bin: &Path,
    root: &Path,
    fs: &str,
    scratch: Option<&Scratch>,
    base: &Path,
    cancel: &AtomicBool,
    out: &mut Vec<Workload>,
) -> Result<String> {
    let ws = root.join("ws");
    let stats = tree::generate(&ws, WORKSPACE_ENTRIES, SEED, cancel)?;
    let projects = std::fs::read_dir(&ws)?.count() + 1;
    let project = ws.join("build");
    std::fs::create_dir(&project)?;
    let target = project.join("zero.bin");
    let workspace = format!(
        "one workspace of {projects} projects ({} entries, {:.1} MiB, with `node_modules`); dd \
         writes `PROJECT/zero.bin` in one of them",
        thousands(stats.entries),
        stats.bytes as f64 / (1 << 20) as f64
    );
    if let Some(s) = scratch {
        s.settle()?;
    }
    let state = base.join("state");
    let config = |source| DaemonConfig {
        source,
        workspace: &ws,
        state: &state,
        poll_interval: "5s",
        sample_interval: "250ms",
        // Never crossed: no cleanup runs.
        cleanup_free: "1MiB",
        critical_free: "1MiB",
        target_free: "1MiB",
    };
    // The file dd overwrites in place (`conv=notrunc`), written once: see `Dd::run`.
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.display()))
        .arg("bs=1M")
        .arg(format!("count={}", params.dd_bytes.div_ceil(1 << 20)))
        .arg("status=none")
        .status()
        .context("cannot run dd")?;
    if !status.success() {
        bail!("dd could not write {}", target.display());
    }
    for (bs, bs_bytes) in BLOCK_SIZES {
        let count = params.dd_bytes / bs_bytes;
        let bytes = count * bs_bytes;
        eprintln!(
            "bench: sources: {fs}, dd bs={bs} count={count}: one warm-up, then {} rounds of {} \
             setups",
            params.runs,
            SETUPS.len()
        );
        let dd = Dd {
            target: target.clone(),
            bs,
            bs_bytes,
            count,
            scratch,
        };
        dd.settle()?;
        dd.run()?;
        let mut runs: Vec<Runs> = SETUPS.iter().map(|_| Runs::default()).collect();
        for round in 0..params.runs as usize {
            for k in 0..SETUPS.len() {
                check_cancel(cancel)?;
                let i = (k + round) % SETUPS.len();
                let setup = SETUPS[i];
                let m = match setup {
                    Setup::Bare => dd.measure(None)?,
                    Setup::Floor => {
                        let floor = guardian::sources::ebpf::load_empty_floor()
                            .context("loading the empty eBPF floor")?;
                        let m = dd.measure(None)?;
                        drop(floor);
                        m
                    }
                    Setup::Daemon(source) => {
                        let daemon = Daemon::start(guardian_bin, &config(source))?;
                        std::thread::sleep(SETTLE);
                        let m = dd.measure(Some(&daemon));
                        daemon.stop()?;
                        m?
                    }
                };
                eprintln!(
                    "bench: sources: {fs} bs={bs} {:<8} {:>8.0} MB/s  dd cpu {:.2} s{}",
                    setup.short(),
                    bytes as f64 / 1e6 / m.wall.as_secs_f64(),
                    m.dd_cpu.as_secs_f64(),
                    m.daemon_cpu
                        .map(|d| format!("  daemon cpu {} ms", d.as_millis()))
                        .unwrap_or_default()
                );
                runs[i].wall.push(m.wall);
                runs[i].dd_cpu.push(m.dd_cpu);
                runs[i].others.push(m.others);
                runs[i].interfered += u32::from(m.interfered);
                runs[i].repeated += m.repeated;
                if let Some(d) = m.daemon_cpu {
                    runs[i].daemon_cpu.push(d);
                }
            }
        }
        let attribution = match attribute(&dd, guardian_bin, &config("ebpf")) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("bench: sources: no BPF run-time statistics: {e:#}");
                None
            }
        };
        eprintln!(
            "bench: sources: {fs}, dd bs={bs}: {} paired rounds of no BPF, the floor and the \
             probe loaded here",
            paired::ROUNDS
        );
        let paired = paired::measure(&dd, &project, cancel)?;
        out.push(Workload {
            fs: fs.to_string(),
            bs,
            bs_bytes,
            runs,
            attribution,
            paired,
        });
    }
    Ok(workspace)
}

pub(super) struct Dd<'a> {
    target: PathBuf,
    pub(super) bs: &'static str,
    /// Bytes per write (`bs`).
    pub(super) bs_bytes: u64,
    pub(super) count: u64,
    scratch: Option<&'a Scratch>,
}

pub(super) struct Measured {
    pub(super) wall: Duration,
    dd_cpu: Duration,
    daemon_cpu: Option<Duration>,
    /// CPU seconds used during the dd by neither dd, the daemon nor this process.
    others: f64,
    /// Still disturbed after the last attempt.
    interfered: bool,
    /// Attempts thrown away because something else ran meanwhile.
    pub(super) repeated: u32,
}

impl Dd<'_> {
    /// One dd over the existing file, in place. Not a new file each time: this VM returns
    /// freed guest pages to the host (virtio-balloon free page reporting), and a new file's
    /// pages then fault in on the host at random, so identical runs took 0.7–3 s; rewriting
    /// the file's page-cache pages varies by about 2 %. Each write is the same syscall for
    /// the hooks either way, and with less work per write their share is, if anything, larger.
    pub(super) fn run(&self) -> Result<Duration> {
        let start = Instant::now();
        let out = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.target.display()))
            .arg(format!("bs={}", self.bs))
            .arg(format!("count={}", self.count))
            .arg("conv=notrunc")
            .arg("status=none")
            .stdin(Stdio::null())
            .output()
            .context("cannot run dd")?;
        let wall = start.elapsed();
        if !out.status.success() {
            bail!(
                "dd failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(wall)
    }

    /// One measured run, repeated (up to [`ATTEMPTS`] times) while something else used more
    /// than [`INTERFERENCE`] CPUs during it: other sessions share this machine.
    pub(super) fn measure(&self, daemon: Option<&Daemon>) -> Result<Measured> {
        let mut attempt = 1;
        loop {
            let m = self.measure_once(daemon)?;
            let load = m.others / m.wall.as_secs_f64();
            if load <= INTERFERENCE || attempt == ATTEMPTS {
                return Ok(Measured {
                    interfered: load > INTERFERENCE,
                    repeated: attempt - 1,
                    ..m
                });
            }
            eprintln!(
                "bench: sources: something else used {load:.2} CPUs during the run; repeating it"
            );
            attempt += 1;
        }
    }

    fn measure_once(&self, daemon: Option<&Daemon>) -> Result<Measured> {
        self.settle()?;
        report::wait_quiet(Duration::from_secs(10));
        let me = std::process::id();
        let daemon_before = daemon.map(Daemon::cpu_time).transpose()?;
        let children_before = proc_cpu_time(me, true)?;
        let machine = report::CpuUse::now();
        let wall = self.run()?;
        let (others, _) = machine.others_since();
        let children_after = proc_cpu_time(me, true)?;
        let daemon_after = daemon.map(Daemon::cpu_time).transpose()?;
        let daemon_cpu = daemon_after
            .zip(daemon_before)
            .map(|(a, b)| a.saturating_sub(b));
        Ok(Measured {
            wall,
            dd_cpu: children_after.saturating_sub(children_before),
            others: others - daemon_cpu.map_or(0.0, |d| d.as_secs_f64()),
            daemon_cpu,
            interfered: false,
            repeated: 0,
        })
    }

    /// On ext4, writes back what the previous run dirtied, so it does not happen during the
    /// next one.
    pub(super) fn settle(&self) -> Result<()> {
        if let Some(s) = self.scratch {
            s.settle()?;
        }
        Ok(())
    }
}

/// Most CPUs something other than dd and the daemon may use during a run that counts.
pub(super) const INTERFERENCE: f64 = 0.10;
/// Attempts at one run before it counts anyway (flagged).
pub(super) const ATTEMPTS: u32 = 5;
