//! The stress harness: long-running, randomized runs of the real `guardian` daemon on real
//! tmpfs mounts, shared by the integration tests (short smokes: `tests/soak.rs`,
//! `tests/attacks_random.rs`, and the fault-injection suite `tests/faults.rs`) and by
//! `cargo xtask soak` / `cargo xtask soak-attacks` (full length, figures written to
//! docs/benchmarks.md). The xtask includes this directory with `#[path]`; nothing here may use
//! what only one of the two has (`env!("CARGO_BIN_EXE_guardian")`, the xtask's report writer):
//! the `guardian` binary and the way to start a child process come in as [`Runner`].
//!
//! - [`soak`]: churning writer processes, cleanups every ~20 s, protected dirs, RSS/fd series,
//!   log-spam and ENOSPC accounting;
//! - [`attacks`]: a hostile process swapping symlinks, bind-mounting, renaming and holding
//!   files while Guardian cleans a tmpfs kept at ~95% used;
//! - the parts both use: [`fsx`] (mounts, fills that refuse any other filesystem, digests),
//!   [`daemon`] (config, process, /proc samples), [`logscan`] (the daemon's stderr),
//!   [`auditlog`] (strict audit log reading), [`rng`].
#![allow(dead_code)]

pub mod adversary;
pub mod attacks;
pub mod auditlog;
pub mod churn;
pub mod daemon;
pub mod fsx;
pub mod logscan;
pub mod rng;
pub mod soak;

use std::path::PathBuf;
use std::process::Command;

/// Builds the command that starts one of the harness's child processes (a churn writer, the
/// adversary) with `args`; the child calls [`child_main`] with them. The xtask re-executes
/// itself with a hidden subcommand; a test re-executes its test binary on an ignored entry test.
pub type ChildCommand = Box<dyn Fn(&[String]) -> Command + Send + Sync>;

/// What a run needs from its caller.
pub struct Runner {
    /// The `guardian` binary under test.
    pub guardian: PathBuf,
    /// Starts a harness child process.
    pub child: ChildCommand,
}

/// The entry point of every harness child process: `args[0]` names the role.
pub fn child_main(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some(churn::ROLE) => churn::main(&args[1..]),
        Some(adversary::ROLE) => adversary::main(&args[1..]),
        other => anyhow::bail!("unknown stress child role {other:?}"),
    }
}

/// The environment variable through which a test binary re-executed as a harness child gets
/// its arguments (a JSON array of strings).
pub const CHILD_ARGS_ENV: &str = "GUARDIAN_STRESS_CHILD_ARGS";

/// A [`ChildCommand`] for an integration test: re-runs the current test binary on the ignored
/// test `entry` (which calls [`child_main_from_env`]), with the arguments in [`CHILD_ARGS_ENV`].
pub fn test_child_command(entry: &'static str) -> ChildCommand {
    Box::new(move |args: &[String]| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new(exe);
        cmd.args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ARGS_ENV,
            serde_json::to_string(args).expect("JSON args"),
        )
        .stdout(std::process::Stdio::null());
        cmd
    })
}

/// The body of a test binary's ignored entry test: runs [`child_main`] with the arguments from
/// [`CHILD_ARGS_ENV`] and exits (never returns to the test harness); does nothing when the
/// variable is unset (someone ran the ignored tests by hand).
pub fn child_main_from_env() {
    let Ok(text) = std::env::var(CHILD_ARGS_ENV) else {
        eprintln!("{CHILD_ARGS_ENV} is not set: this entry only runs as a stress harness child");
        return;
    };
    let code = match serde_json::from_str::<Vec<String>>(&text)
        .map_err(anyhow::Error::from)
        .and_then(|args| child_main(&args))
    {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stress child failed: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
