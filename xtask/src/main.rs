//! Developer tasks for Guardian, run as `cargo xtask <task>`.

mod bench;
mod build_ebpf;
mod dist;
mod forecast;
mod soak;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for Guardian")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF probe (pinned nightly + bpf-linker) and rebuild guardian-user with it
    /// embedded.
    BuildEbpf {
        /// Also rebuild guardian-user in release mode.
        #[arg(long)]
        release: bool,
        /// Instead: replay a build without bpf-linker, then build-ebpf, then `cargo build
        /// --release`, in scratch target dirs, and fail unless the probe ends up embedded.
        #[arg(long)]
        check_embedding: bool,
    },
    /// Measure `guardian scan` against `du -sx` and the cleanup executor against `rm -rf` on
    /// generated trees (release build, warm cache; needs root for the loop-mounted ext4
    /// scratch filesystem, falls back to a directory on the root filesystem), what each write
    /// source costs a `dd` workload, and the reaction to a threshold crossing (root, tmpfs,
    /// eBPF), and how reaction and idle cost scale with the workspace (`scale`: 10k–5M entries on
    /// loop ext4 images cached in /var/tmp/guardian-bench/scale). `--only
    /// scan,delete,sources,reaction,serve,idle,scale` picks sections.
    Bench(bench::BenchArgs),
    /// The measuring half of `bench`, run by it from a release build of xtask.
    #[command(hide = true)]
    BenchInner {
        #[command(flatten)]
        args: bench::BenchArgs,
        /// The release `guardian` binary to measure.
        #[arg(long)]
        guardian: PathBuf,
    },
    /// Evaluate Guardian's forecaster against predict_linear baselines on synthetic traces
    /// (docs/forecast.md).
    ForecastEval(forecast::ForecastArgs),
    /// Record a real tool's write pattern (cargo build, npm install + tests, logrotate, a
    /// checkpoint writer) on a fresh tmpfs as a trace for forecast-eval (root).
    ForecastRecord(forecast::record::RecordArgs),
    /// The soak (issue 12): the release daemon guards a 512 MiB tmpfs while churn writers fill
    /// and empty it, cleanups every ~20 s; checks RSS and fds stay flat, no log message more
    /// than once a minute, no ENOSPC while reclaimable bytes existed, protected dirs
    /// byte-identical (root). `--write-doc` writes the figures to docs/benchmarks.md.
    Soak(soak::SoakArgs),
    /// The randomized adversary (issue 11): a hostile process swaps symlinks, bind-mounts,
    /// renames dirs between workspaces, creates hostile names and holds files while the release
    /// daemon cleans a tmpfs kept at ~95% used; everything outside policy must stay
    /// byte-identical (root). `--write-doc` writes the figures to docs/benchmarks.md.
    SoakAttacks(soak::SoakArgs),
    /// Build the release binary (probe embedded) and pack it as a .deb (dpkg-deb) and an .rpm
    /// (the `rpm` crate) into target/dist: the unit installed but disabled, the default config
    /// as a conffile, docs, man pages and shell completions (docs/service.md).
    Dist(dist::DistArgs),
    /// `systemd-analyze verify` and `security --offline=yes` of deploy/systemd/guardian.service;
    /// the exposure figure in docs/service.md must match (`--write-doc` writes it).
    UnitCheck(dist::UnitCheckArgs),
    /// The survey index's churn soak (issue 16): random creates, growth, truncation, renames
    /// across projects, deletions and hard links on a tmpfs while the index refreshes; every
    /// project it serves must agree with a fresh walk (root; runs the lib test in release).
    SoakIndex(soak::SoakArgs),
    /// A child process of soak / soak-attacks (churn writer, hostile process).
    #[command(hide = true)]
    SoakChild {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The workspace root (xtask's parent).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().task {
        Task::BuildEbpf {
            release,
            check_embedding,
        } => {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            if check_embedding {
                build_ebpf::check_embedding(&workspace)
            } else {
                build_ebpf::run(&workspace, release)
            }
        }
        Task::Bench(args) => bench::run(&args),
        Task::BenchInner { args, guardian } => bench::run_inner(&args, &guardian),
        Task::ForecastEval(args) => forecast::run(&args),
        Task::ForecastRecord(args) => forecast::record::run(&args),
        Task::Soak(args) => soak::run_soak(&args),
        Task::SoakAttacks(args) => soak::run_attacks(&args),
        Task::SoakIndex(args) => soak::run_index(&args),
        Task::SoakChild { args } => soak::run_child(&args),
        Task::Dist(args) => dist::run(&workspace(), &args),
        Task::UnitCheck(args) => dist::unit_check(&workspace(), &args),
    }
}
