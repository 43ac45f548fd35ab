//! `--only sources`: what each write source costs a small-write workload. `dd if=/dev/zero
//! bs=4k` (and `bs=64k`) rewrites a file in a project of a guarded workspace on a fresh tmpfs
//! (no device under it, so the CPU cost of the hooks dominates) and, with `--sources-ext4`, on
//! a loop-mounted ext4, with: no Guardian; the empty eBPF floor (the probe object's `noop`
//! program on the same 8 syscall exit tracepoints, loaded in this process); and the real
//! `guardian run` with each source. Runs of the six setups are interleaved. One more run of the
//! floor and of the probe with `kernel.bpf_stats_enabled` says how long the programs run.
//! The runs are in `runner`, the BPF run-time statistics in `bpf_stats`, the paired rounds of
//! the probe against the floor in `paired`, the goals and the write-up in `summary`.

use super::scratch::{Scratch, TempBase, Tmpfs};
use anyhow::{bail, Result};
use bpf_stats::Attribution;
use runner::measure_fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

mod bpf_stats;
mod paired;
mod runner;
mod summary;

/// Goal: the probe within this many percentage points of the empty floor with 4 KiB writes.
const FLOOR_GOAL_PP: f64 = 2.0;
/// Goal: the probe's programs run at most this many times as long per call as the empty floor
/// program (kernel `bpf_stats`, the busiest program of each: `exit_write` for dd).
const NS_PER_RUN_GOAL: f64 = 1.5;
/// Goal: at most this slowdown (%) with the probe and 64 KiB writes.
const SLOWDOWN_64K_GOAL: f64 = 3.0;
/// Entries of the generated workspace (projects with `node_modules`) the sources watch.
const WORKSPACE_ENTRIES: u64 = 4_000;
const SEED: u64 = 0x7772_6974_6573_2121;
/// After the daemon is ready and before dd starts: one sample interval, so its start-up is over.
const SETTLE: Duration = Duration::from_millis(300);
/// Block sizes measured: (dd's `bs=`, bytes).
const BLOCK_SIZES: [(&str, u64); 2] = [("4k", 4096), ("64k", 65536)];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// No Guardian at all.
    Bare,
    /// The empty eBPF program on the probe's hooks.
    Floor,
    /// `guardian run` with this source.
    Daemon(&'static str),
}

const SETUPS: [Setup; 6] = [
    Setup::Bare,
    Setup::Floor,
    Setup::Daemon("ebpf"),
    Setup::Daemon("fanotify"),
    Setup::Daemon("inotify"),
    Setup::Daemon("poll"),
];

impl Setup {
    fn label(self) -> String {
        match self {
            Setup::Bare => "no Guardian".into(),
            Setup::Floor => "empty eBPF floor (`noop` on the 8 exit tracepoints)".into(),
            Setup::Daemon(s) => format!("`guardian run`, source = {s}"),
        }
    }

    fn short(self) -> &'static str {
        match self {
            Setup::Bare => "none",
            Setup::Floor => "floor",
            Setup::Daemon(s) => s,
        }
    }
}

/// The measured runs of one setup.
#[derive(Default)]
struct Runs {
    /// dd's wall time.
    wall: Vec<Duration>,
    /// The daemon's utime + stime over the dd.
    daemon_cpu: Vec<Duration>,
    /// dd's own utime + stime.
    dd_cpu: Vec<Duration>,
    /// CPU seconds everything else (but the daemon) used during the dd.
    others: Vec<f64>,
    /// Runs still disturbed after the last attempt.
    interfered: u32,
    /// Attempts thrown away.
    repeated: u32,
}

impl Runs {
    fn mbps(&self, bytes: u64) -> Vec<f64> {
        self.wall
            .iter()
            .map(|d| bytes as f64 / 1e6 / d.as_secs_f64())
            .collect()
    }
}

/// One filesystem × block size, all setups.
struct Workload {
    fs: String,
    bs: &'static str,
    bs_bytes: u64,
    runs: Vec<Runs>,
    /// Where the BPF time goes, from one extra run of each eBPF setup with BPF stats on.
    attribution: Option<Attribution>,
    /// The probe alone against the floor, in paired rounds (what the goals are checked on).
    paired: paired::Paired,
}

pub struct Params {
    pub dd_bytes: u64,
    pub runs: u32,
    pub ext4: bool,
}

pub struct SourcesReport {
    params: Params,
    workloads: Vec<Workload>,
    workspace: String,
    ebpf_mode: String,
}

pub fn run(params: Params, guardian_bin: &Path, cancel: &AtomicBool) -> Result<SourcesReport> {
    let base = TempBase::create("sources")?;
    let ebpf_mode = ebpf_mode();
    eprintln!("bench: sources: eBPF probe mode here: {ebpf_mode}");
    let mut workloads = Vec::new();
    let workspace = {
        let tmpfs = Tmpfs::mount(
            &base.path.join("mnt"),
            (params.dd_bytes + (512 << 20)).next_multiple_of(1 << 20),
        )?;
        let desc = tmpfs.describe();
        measure_fs(
            &params,
            guardian_bin,
            &tmpfs.root,
            &desc,
            None,
            &base.path,
            cancel,
            &mut workloads,
        )?
    };
    if params.ext4 {
        let scratch = Scratch::create(2 * params.dd_bytes + (1 << 30), 200_000)?;
        if let Some(why) = &scratch.fallback_reason {
            bail!("no loop-mounted ext4 for --sources-ext4: {why}");
        }
        measure_fs(
            &params,
            guardian_bin,
            &scratch.root,
            &scratch.filesystem.clone(),
            Some(&scratch),
            &base.path,
            cancel,
            &mut workloads,
        )?;
    }
    Ok(SourcesReport {
        params,
        workloads,
        workspace,
        ebpf_mode,
    })
}

/// How the real probe attaches on this kernel.
fn ebpf_mode() -> String {
    match guardian::sources::ebpf::EbpfSource::load() {
        Ok(source) => match source.fexit_refused() {
            None => format!("{} (fexit on vfs_write/vfs_writev)", source.mode()),
            Some(why) => {
                let why = why.trim().trim_end_matches("Verifier output:").trim_end();
                let why = why.trim_end_matches('.');
                format!(
                    "{}: the 8 syscall exit tracepoints (fexit refused: {why})",
                    source.mode()
                )
            }
        },
        Err(e) => format!("unavailable: {e}"),
    }
}
