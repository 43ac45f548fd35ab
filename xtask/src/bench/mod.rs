//! `cargo xtask bench`: measures Guardian's scanner against `du -sx` and its cleanup executor
//! against `rm -rf` on generated `node_modules`-like trees (warm cache), what each write source
//! costs a small-write workload (`dd bs=4k`/`64k`), how fast the daemon reacts to a
//! threshold crossing, and how fast the crossing reaches an `/events` client and whether 1,000
//! connected clients slow a cycle (`serve`); release build. `--only` picks sections.
//!
//! `cargo xtask` builds xtask in dev mode, so `bench` only builds `guardian` and xtask in
//! release and re-runs itself from the release build as the hidden `bench-inner`, which does the
//! work: scan timings, the sources and the reaction run the real `target/release/guardian`
//! binary; delete timings call the library executor (release-built, linked into xtask) as the
//! daemon does, and the eBPF floor is loaded from the release-built library.

mod daemon;
mod idle;
mod reaction;
pub(crate) mod report;
mod scale;
mod scratch;
mod serve;
mod sources;
mod tree;
mod walks;

use anyhow::{bail, ensure, Context, Result};
use guardian::cleanup::{AuditLog, Executor, Outcome};
use guardian::config::Workspace;
use guardian::policy::PlannedAction;
use report::{Comparison, Machine, RunInfo, Timings, Tool};
use scratch::Scratch;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tree::TreeStats;

const DEFAULT_SCAN_ENTRIES: u64 = 500_000;
const DEFAULT_DELETE_ENTRIES: u64 = 200_000;
const DEFAULT_RUNS: u32 = 3;
const DEFAULT_DD_MIB: u64 = 2048;
const DEFAULT_SOURCES_RUNS: u32 = 7;
const DEFAULT_REACTION_TRIALS: u32 = 20;
const DEFAULT_IDLE_SECONDS: u64 = 30;
/// Crossings per scale row: the flatness goal compares medians, and with three trials a row's
/// median rested on two (10k inotify: 6, 6 and 21 ms, the other sources' 13 ms).
const DEFAULT_SCALE_TRIALS: u32 = 5;
const DEFAULT_SCALE_IDLE_SECONDS: u64 = 30;
const SCAN_SEED: u64 = 0x6775_6172_6469_616e;
const DELETE_SEED: u64 = 0x726d_2d72_6620_7673;
/// Goals from the issue: scan at most 0.7× du's wall time, deletion no slower than rm -rf.
const SCAN_GOAL: f64 = 0.7;
const DELETE_GOAL: f64 = 1.0;

/// A part of the benchmark (a section of docs/benchmarks.md).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// `guardian scan` vs `du -sx`.
    Scan,
    /// The cleanup executor vs `rm -rf`.
    Delete,
    /// dd throughput with each write source vs no Guardian and the empty eBPF floor.
    Sources,
    /// Threshold crossing → first audit line, per source.
    Reaction,
    /// Crossing → `threshold_crossed` on `/events`; cycle time with 1,000 idle clients.
    Serve,
    /// What an idle daemon costs (write syscalls, bytes to storage, CPU, RSS) per source.
    Idle,
    /// Crossing → first action, cycle time, idle CPU and RSS per source on workspaces of 10k to
    /// 5M entries (ext4 images built once in /var/tmp/guardian-bench/scale and reused).
    Scale,
}

impl Section {
    const ALL: [Section; 7] = [
        Section::Scan,
        Section::Delete,
        Section::Sources,
        Section::Reaction,
        Section::Serve,
        Section::Idle,
        Section::Scale,
    ];

    fn name(self) -> &'static str {
        match self {
            Section::Scan => "scan",
            Section::Delete => "delete",
            Section::Sources => "sources",
            Section::Reaction => "reaction",
            Section::Serve => "serve",
            Section::Idle => "idle",
            Section::Scale => "scale",
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Sections to run (comma-separated or repeated); all of them when omitted.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Entries (files, dirs, symlinks, hard links) in the tree sized by du and guardian scan.
    #[arg(long, default_value_t = DEFAULT_SCAN_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    pub scan_entries: u64,
    /// Entries in each tree deleted by rm -rf and by guardian (a fresh copy per run).
    #[arg(long, default_value_t = DEFAULT_DELETE_ENTRIES,
          value_parser = clap::value_parser!(u64).range(1_000..))]
    pub delete_entries: u64,
    /// Measured runs per tool in scan and delete (the scan has one more, unmeasured, warm-up
    /// run each).
    #[arg(long, default_value_t = DEFAULT_RUNS, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// MiB written by each dd run of the sources section.
    #[arg(long, default_value_t = DEFAULT_DD_MIB,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub dd_mib: u64,
    /// Measured rounds of the sources section (each setup runs once per round).
    #[arg(long, default_value_t = DEFAULT_SOURCES_RUNS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub sources_runs: u32,
    /// Also measure the sources on a loop-mounted ext4 (besides the tmpfs).
    #[arg(long)]
    pub sources_ext4: bool,
    /// Trials per source in the reaction section (and per source and load in the serve
    /// section).
    #[arg(long, default_value_t = DEFAULT_REACTION_TRIALS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub reaction_trials: u32,
    /// Seconds each idle daemon is watched in the idle section (after its start-up).
    #[arg(long, default_value_t = DEFAULT_IDLE_SECONDS,
          value_parser = clap::value_parser!(u64).range(5..))]
    pub idle_seconds: u64,
    /// Workspace sizes of the scale section (entries; `k`/`M` suffixes; `@tmpfs` for a fresh
    /// tmpfs instead of a cached loop ext4 image), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = scale::DEFAULT_SIZES,
          value_parser = scale::parse_size)]
    pub scale_sizes: Vec<scale::Size>,
    /// Write sources of the scale section, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "ebpf,fanotify,inotify",
          value_parser = clap::builder::PossibleValuesParser::new(scale::SOURCES))]
    pub scale_sources: Vec<String>,
    /// Crossings per size and source in the scale section.
    #[arg(long, default_value_t = DEFAULT_SCALE_TRIALS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub scale_trials: u32,
    /// Seconds each daemon of the scale section is watched idle (once its index is warm).
    #[arg(long, default_value_t = DEFAULT_SCALE_IDLE_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub scale_idle_seconds: u64,
    /// Rewrite the sections that ran in docs/benchmarks.md with the results.
    #[arg(long)]
    pub write_doc: bool,
}

impl BenchArgs {
    /// The sections to run, in order.
    fn sections(&self) -> Vec<Section> {
        Section::ALL
            .into_iter()
            .filter(|s| self.only.is_empty() || self.only.contains(s))
            .collect()
    }

    fn runs_section(&self, section: Section) -> bool {
        self.sections().contains(&section)
    }

    fn only_list(&self) -> Option<String> {
        (!self.only.is_empty()).then(|| {
            self.sections()
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    fn scale_sizes_list(&self) -> String {
        self.scale_sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn to_cli(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(only) = self.only_list() {
            v.extend(["--only".into(), only]);
        }
        v.extend([
            "--scan-entries".into(),
            self.scan_entries.to_string(),
            "--delete-entries".into(),
            self.delete_entries.to_string(),
            "--runs".into(),
            self.runs.to_string(),
            "--dd-mib".into(),
            self.dd_mib.to_string(),
            "--sources-runs".into(),
            self.sources_runs.to_string(),
            "--reaction-trials".into(),
            self.reaction_trials.to_string(),
            "--idle-seconds".into(),
            self.idle_seconds.to_string(),
            "--scale-sizes".into(),
            self.scale_sizes_list(),
            "--scale-sources".into(),
            self.scale_sources.join(","),
            "--scale-trials".into(),
            self.scale_trials.to_string(),
            "--scale-idle-seconds".into(),
            self.scale_idle_seconds.to_string(),
        ]);
        if self.sources_ext4 {
            v.push("--sources-ext4".into());
        }
        if self.write_doc {
            v.push("--write-doc".into());
        }
        v
    }

    /// The command line as a user types it, non-default options only.
    fn display(&self) -> String {
        let mut s = String::from("cargo xtask bench");
        if let Some(only) = self.only_list() {
            s += &format!(" --only {only}");
        }
        if self.scan_entries != DEFAULT_SCAN_ENTRIES {
            s += &format!(" --scan-entries {}", self.scan_entries);
        }
        if self.delete_entries != DEFAULT_DELETE_ENTRIES {
            s += &format!(" --delete-entries {}", self.delete_entries);
        }
        if self.runs != DEFAULT_RUNS {
            s += &format!(" --runs {}", self.runs);
        }
        if self.dd_mib != DEFAULT_DD_MIB {
            s += &format!(" --dd-mib {}", self.dd_mib);
        }
        if self.sources_runs != DEFAULT_SOURCES_RUNS {
            s += &format!(" --sources-runs {}", self.sources_runs);
        }
        if self.sources_ext4 {
            s += " --sources-ext4";
        }
        if self.reaction_trials != DEFAULT_REACTION_TRIALS {
            s += &format!(" --reaction-trials {}", self.reaction_trials);
        }
        if self.idle_seconds != DEFAULT_IDLE_SECONDS {
            s += &format!(" --idle-seconds {}", self.idle_seconds);
        }
        if self.scale_sizes_list() != scale::DEFAULT_SIZES {
            s += &format!(" --scale-sizes {}", self.scale_sizes_list());
        }
        if self.scale_sources != scale::SOURCES {
            s += &format!(" --scale-sources {}", self.scale_sources.join(","));
        }
        if self.scale_trials != DEFAULT_SCALE_TRIALS {
            s += &format!(" --scale-trials {}", self.scale_trials);
        }
        if self.scale_idle_seconds != DEFAULT_SCALE_IDLE_SECONDS {
            s += &format!(" --scale-idle-seconds {}", self.scale_idle_seconds);
        }
        if self.write_doc {
            s += " --write-doc";
        }
        s
    }
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo xtask bench`: builds in release and runs the release xtask's `bench-inner`.
pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    eprintln!("bench: building guardian and xtask in release");
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "guardian-user",
            "-p",
            "xtask",
            "--bins",
        ])
        .status()
        .context("cannot run cargo build")?;
    ensure!(status.success(), "cargo build --release failed ({status})");
    let release = target_dir(&cargo, &root)?.join("release");
    // Ctrl-C reaches the inner process too; it cleans up (unmounts) before exiting, so wait
    // for it instead of dying first.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())?;
    }
    let status = Command::new(release.join("xtask"))
        .arg("bench-inner")
        .args(args.to_cli())
        .arg("--guardian")
        .arg(release.join("guardian"))
        .status()
        .context("cannot run the release xtask")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) fn target_dir(cargo: &OsString, root: &Path) -> Result<PathBuf> {
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo metadata")?;
    ensure!(out.status.success(), "cargo metadata failed");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let dir = meta["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// `bench-inner`: the measurements, in a release build.
pub fn run_inner(args: &BenchArgs, guardian_bin: &Path) -> Result<ExitCode> {
    ensure!(
        guardian_bin.is_file(),
        "no guardian binary at {}",
        guardian_bin.display()
    );
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, cancel.clone())?;
    }
    let started = Instant::now();
    let machine = Machine::detect();
    let run = RunInfo {
        when: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        revision: revision(&["guardian-user", "guardian-common", "guardian-ebpf"]),
        command: args.display(),
    };
    eprintln!(
        "bench: {} CPUs, {}, kernel {}; sections: {}",
        machine.nproc,
        machine.cpu,
        machine.kernel,
        args.sections()
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let doc = workspace_root().join("docs/benchmarks.md");
    let write = |key: &str, body: String| -> Result<()> {
        if args.write_doc {
            report::write_section(&doc, key, &body)?;
            println!("wrote the {key} section of {}", doc.display());
        }
        Ok(())
    };
    let mut verdicts: Vec<(&str, &str)> = Vec::new();
    let mut invalid = false;

    let (scan_on, delete_on) = (
        args.runs_section(Section::Scan),
        args.runs_section(Section::Delete),
    );
    if scan_on || delete_on {
        let total =
            u64::from(scan_on) * args.scan_entries + u64::from(delete_on) * args.delete_entries;
        let inodes = total + total / 4 + 20_000;
        let size = (total * 12 * 1024 + (2 << 30)).next_multiple_of(1 << 30);
        let scratch = Scratch::create(size, inodes)?;
        if let Some(why) = &scratch.fallback_reason {
            eprintln!("\n{}", "!".repeat(78));
            eprintln!("!! LOOP MOUNT NOT USED: {why}");
            eprintln!(
                "!! Measuring on a plain directory of the root filesystem ({}) instead:",
                scratch.root.display()
            );
            eprintln!("!! results depend on what else lives on and uses that filesystem.");
            eprintln!("{}\n", "!".repeat(78));
        }
        eprintln!(
            "bench: scratch: {} at {}",
            scratch.filesystem,
            scratch.root.display()
        );
        if scan_on {
            let scan = walks::scan_bench(args, guardian_bin, &scratch, &cancel)?;
            scan.print();
            write(scan.key, scan.markdown(&machine, &run))?;
            verdicts.push(("scan", scan.verdict()));
            invalid |= scan.invalid.is_some();
        }
        if delete_on {
            let delete = walks::delete_bench(args, &scratch, &cancel)?;
            delete.print();
            write(delete.key, delete.markdown(&machine, &run))?;
            verdicts.push(("delete", delete.verdict()));
            invalid |= delete.invalid.is_some();
        }
    }
    if args.runs_section(Section::Sources) {
        let params = sources::Params {
            dd_bytes: args.dd_mib << 20,
            runs: args.sources_runs,
            ext4: args.sources_ext4,
        };
        let sources = sources::run(params, guardian_bin, &cancel)?;
        sources.print();
        write("sources", sources.markdown(&machine, &run))?;
        verdicts.push(("sources", sources.verdict()));
    }
    if args.runs_section(Section::Reaction) {
        let reaction = reaction::run(args.reaction_trials, guardian_bin, &cancel)?;
        reaction.print();
        write("reaction", reaction.markdown(&machine, &run))?;
        verdicts.push(("reaction", reaction.verdict()));
    }
    if args.runs_section(Section::Serve) {
        let serve = serve::run(args.reaction_trials, guardian_bin, &cancel)?;
        serve.print();
        write("serve", serve.markdown(&machine, &run))?;
        verdicts.push(("serve", serve.verdict()));
    }
    if args.runs_section(Section::Idle) {
        let idle = idle::run(args.idle_seconds, guardian_bin, &cancel)?;
        idle.print();
        write("idle", idle.markdown(&machine, &run))?;
        verdicts.push(("idle", idle.verdict()));
    }
    if args.runs_section(Section::Scale) {
        let params = scale::Params {
            sizes: args.scale_sizes.clone(),
            sources: args.scale_sources.clone(),
            trials: args.scale_trials,
            idle_seconds: args.scale_idle_seconds,
        };
        let scale = scale::run(&params, guardian_bin, &cancel)?;
        scale.print();
        write("scale", scale.markdown(&machine, &run))?;
        verdicts.push(("scale", scale.verdict()));
        // A daemon that could not be measured fails the run (a missed goal does not).
        invalid |= scale.incomplete();
    }

    println!(
        "bench: done in {:.0} s; goals: {}",
        started.elapsed().as_secs_f64(),
        verdicts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // A missed goal is a result; tools that disagree make the run fail.
    Ok(if invalid {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn check_cancel(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

pub(crate) fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit measured, and whether the sources under `paths` differ from it.
pub(crate) fn revision(paths: &[&str]) -> String {
    let root = workspace_root();
    let root = root.to_string_lossy();
    let Some(commit) = command_line("git", &["-C", &root, "rev-parse", "--short", "HEAD"]) else {
        return "unknown revision".into();
    };
    // Each path on its own, so the line names only those that differ.
    let dirty: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|path| {
            command_line("git", &["-C", &root, "status", "--porcelain", "--", path])
                .is_some_and(|s| !s.is_empty())
        })
        .collect();
    if dirty.is_empty() {
        format!("commit {commit}")
    } else {
        format!(
            "commit {commit} + uncommitted changes to {}",
            dirty.join(", ")
        )
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let head = digits.len() % 3;
    let mut groups = Vec::new();
    if head > 0 {
        groups.push(&digits[..head]);
    }
    groups.extend(
        digits.as_bytes()[head..]
            .chunks(3)
            .map(|g| std::str::from_utf8(g).expect("ASCII digits")),
    );
    groups.join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_digits() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1_000), "1,000");
        assert_eq!(super::thousands(200_658), "200,658");
        assert_eq!(super::thousands(2_984_845_312), "2,984,845,312");
    }
}
