//! Developer tasks for Guardian, run as `cargo xtask <task>`.

mod bench;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for Guardian")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Measure `guardian scan` against `du -sx` and the cleanup executor against `rm -rf` on
    /// generated trees (release build, warm cache; needs root for the loop-mounted ext4
    /// scratch filesystem, falls back to a directory on the root filesystem).
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
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().task {
        Task::Bench(args) => bench::run(&args),
        Task::BenchInner { args, guardian } => bench::run_inner(&args, &guardian),
    }
}
