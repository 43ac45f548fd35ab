//! `cargo xtask soak` (issue 12) and `cargo xtask soak-attacks` (issue 11): the stress
//! harness of the integration tests (tests/support/stress/, included here with `#[path]` so the
//! smoke runs in the test suite and these full-length runs share one implementation), run for
//! 10 minutes by default against the release `guardian` binary, with the figures printed and,
//! with `--write-doc`, written to docs/benchmarks.md by [`doc`].
//!
//! The harness's child processes (churn writers, the hostile process) are this xtask binary
//! again, through the hidden `soak-child` subcommand.

mod doc;
#[path = "../../../tests/support/stress/mod.rs"]
pub mod stress;

use crate::bench::{self, report::Machine, report::RunInfo};
use anyhow::{ensure, Context, Result};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use stress::{attacks, rng::Rng, soak, Runner};

/// The soak's RSS is flat when its least-squares slope over the second half of the run stays
/// under this (KiB per minute; a leak of one 4 KiB page per cycle would be ~12).
pub const RSS_LATE_SLOPE_LIMIT_KIB_PER_MIN: f64 = 64.0;
/// The fd count is flat when it never strays further than this from where it started (a
/// removal holds one fd per directory level it is in).
pub const FD_SPREAD_LIMIT: f64 = 16.0;

fn parse_duration(text: &str) -> Result<Duration, String> {
    guardian::config::HumanDuration::parse(text).map(|d| d.0)
}

#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    /// How long to run (`30s`, `10m`, `1h`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed of the writers' randomness (a failing run prints its seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The `guardian` binary to run (default: build and use target/release/guardian).
    #[arg(long)]
    pub guardian: Option<PathBuf>,
    /// Write the figures into docs/benchmarks.md.
    #[arg(long)]
    pub write_doc: bool,
}

impl SoakArgs {
    /// The command line as typed, non-default options only (the seed is reported apart).
    fn display(&self, name: &str) -> String {
        let mut s = format!("cargo xtask {name}");
        if self.duration != Duration::from_secs(600) {
            s += &format!(" --duration {}", humantime_short(self.duration));
        }
        if let Some(seed) = self.seed {
            s += &format!(" --seed {seed}");
        }
        if self.write_doc {
            s += " --write-doc";
        }
        s
    }

    fn seed(&self) -> u64 {
        self.seed
            .unwrap_or_else(|| Rng::seed_from_env("GUARDIAN_SOAK_SEED"))
    }
}

fn humantime_short(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// What both runs start from: the harness, the seed, and where and how they ran.
struct Start {
    runner: Runner,
    seed: u64,
    machine: Machine,
    run: RunInfo,
    cancel: Arc<AtomicBool>,
}

/// Progress lines while a run goes.
const PROGRESS: Option<Duration> = Some(Duration::from_secs(30));

fn start(args: &SoakArgs, name: &str) -> Result<Start> {
    let runner = prepare(args)?;
    let seed = args.seed();
    eprintln!(
        "{name}: {} with {}, seed {seed}",
        humantime_short(args.duration),
        runner.guardian.display()
    );
    Ok(Start {
        runner,
        seed,
        machine: Machine::detect(),
        run: run_info(&args.display(name)),
        cancel: cancel_on_signals()?,
    })
}

/// `cargo xtask soak`.
pub fn run_soak(args: &SoakArgs) -> Result<ExitCode> {
    let s = start(args, "soak")?;
    let report = soak::run(
        &s.runner,
        &soak::SoakOptions {
            duration: args.duration,
            seed: s.seed,
            progress: PROGRESS,
            cancel: s.cancel,
        },
    )?;
    report.print();
    let checks = doc::soak_checks(&report);
    let markdown = doc::soak_markdown(&report, &checks, &s.machine, &s.run);
    finish(args, "soak", markdown, &checks)
}

/// `cargo xtask soak-attacks`.
pub fn run_attacks(args: &SoakArgs) -> Result<ExitCode> {
    let s = start(args, "soak-attacks")?;
    let report = attacks::run(
        &s.runner,
        &attacks::AttackOptions {
            duration: args.duration,
            seed: s.seed,
            progress: PROGRESS,
            cancel: s.cancel,
        },
    )?;
    report.print();
    let checks = doc::attack_checks(&report);
    let markdown = doc::attacks_markdown(&report, &checks, &s.machine, &s.run);
    finish(args, "soak-attacks", markdown, &checks)
}

/// Prints the verdicts, writes the doc section when asked, and sets the exit code.
fn finish(args: &SoakArgs, key: &str, markdown: String, checks: &[doc::Check]) -> Result<ExitCode> {
    let mut failed = false;
    for c in checks {
        println!(
            "  {}: {} — {}",
            c.name,
            c.measured,
            if c.passed { "pass" } else { "FAIL" }
        );
        failed |= !c.passed;
    }
    let cancelled = checks
        .iter()
        .any(|c| c.name == doc::RAN_TO_ITS_END && !c.passed);
    if args.write_doc && cancelled {
        println!("cancelled: docs/benchmarks.md left as it was");
    } else if args.write_doc {
        let path = bench::workspace_root().join("docs/benchmarks.md");
        bench::report::write_section(&path, key, &markdown)?;
        println!("wrote the {key} section of {}", path.display());
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A flag SIGINT and SIGTERM set: the run ends early but still stops its processes and
/// unmounts its filesystems (the children ignore it: the harness stops them).
fn cancel_on_signals() -> Result<Arc<AtomicBool>> {
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, cancel.clone())?;
    }
    Ok(cancel)
}

fn run_info(command: &str) -> RunInfo {
    RunInfo {
        when: bench::command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        revision: bench::revision(&["guardian-user", "guardian-common", "guardian-ebpf", "tests"]),
        command: command.into(),
    }
}

/// Root, the binary (built in release unless given), and the child command (this xtask).
fn prepare(args: &SoakArgs) -> Result<Runner> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "the soak mounts tmpfs filesystems and bind mounts: run it as root"
    );
    let guardian = match &args.guardian {
        Some(p) => p.clone(),
        None => build_release()?,
    };
    ensure!(
        guardian.is_file(),
        "no guardian binary at {}",
        guardian.display()
    );
    let exe = std::env::current_exe().context("the xtask binary's path")?;
    Ok(Runner {
        guardian,
        child: Box::new(move |child_args: &[String]| {
            let mut cmd = Command::new(&exe);
            cmd.arg("soak-child").args(child_args);
            cmd
        }),
    })
}

fn build_release() -> Result<PathBuf> {
    let root = bench::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("soak: building guardian in release");
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "guardian-user",
            "--bin",
            "guardian",
        ])
        .status()
        .context("cannot run cargo build")?;
    ensure!(status.success(), "cargo build --release failed ({status})");
    Ok(bench::target_dir(&cargo, &root)?.join("release/guardian"))
}

/// `soak-child`: a harness child process.
pub fn run_child(args: &[String]) -> Result<ExitCode> {
    stress::child_main(args)?;
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask soak-index`: the index churn test of guardian-user
/// (`survey::index::tests::index_and_a_fresh_walk_agree_after_random_churn`, 20 s in
/// `cargo test`) for the whole duration, in release.
pub fn run_index(args: &SoakArgs) -> Result<ExitCode> {
    let seed = args.seed();
    eprintln!(
        "soak-index: {} of churn, seed {seed}",
        humantime_short(args.duration)
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "test",
            "--release",
            "-p",
            "guardian-user",
            "--lib",
            "survey::index::tests::index_and_a_fresh_walk_agree_after_random_churn",
            "--",
            "--exact",
            "--nocapture",
        ])
        .env(
            "GUARDIAN_INDEX_SOAK_SECS",
            args.duration.as_secs().to_string(),
        )
        .env("GUARDIAN_INDEX_SOAK_SEED", seed.to_string())
        .env("GUARDIAN_REQUIRE_PRIVILEGED_TESTS", "1")
        .status()
        .context("running cargo test")?;
    ensure!(status.success(), "soak-index failed (seed {seed})");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::stress::logscan::{parse_line, summarize};
    use super::stress::rng::Rng;
    use super::stress::soak::{slope, Trend};

    #[test]
    fn log_lines_parse_into_time_level_target_message_and_fields() {
        let line = "2026-12-06T03:29:55.455596Z  WARN guardian::daemon::state: cannot write the \
                    state file; guarding goes on held_back=0 error=cannot write /x: No space \
                    left on device (os error 28)";
        let l = parse_line(line).unwrap();
        assert_eq!(l.level, "WARN");
        assert_eq!(l.target, "guardian::daemon::state");
        assert_eq!(l.message, "cannot write the state file; guarding goes on");
        assert_eq!(l.field("held_back"), Some("0"));
        assert!(l.field("error").unwrap().starts_with("cannot write /x"));
        assert!((l.t - 1_796_527_795.455_596).abs() < 1e-3, "{}", l.t);
        let quoted = "2026-12-06T03:29:55Z  INFO guardian::sources: write source selected \
                      source=\"ebpf\"";
        assert_eq!(parse_line(quoted).unwrap().field("source"), Some("ebpf"));
        assert!(parse_line("thread 'main' panicked at src/x.rs:1:1:").is_none());
    }

    #[test]
    fn a_warning_repeated_within_a_minute_is_spam_and_events_are_not() {
        let at = |s: u32, msg: &str| {
            format!(
                "2026-01-01T00:{:02}:{:02}Z  WARN g::d: {msg} mount=/m",
                s / 60,
                s % 60
            )
        };
        let text = [
            at(0, "cannot write the state file"),
            at(30, "cannot write the state file"),
            at(100, "cannot write the state file"),
            at(1, "pressure: starting a cleanup cycle"),
            at(2, "pressure: starting a cleanup cycle"),
            "garbage line".to_string(),
        ]
        .join("\n");
        let s = summarize(&text);
        assert_eq!(s.spam.len(), 1);
        let (n, gap) = s.spam.values().next().copied().unwrap();
        assert_eq!(n, 1);
        assert!((gap - 30.0).abs() < 1e-6);
        assert_eq!(s.events.values().sum::<u64>(), 2);
        assert_eq!(s.unparsed, ["garbage line"]);
    }

    #[test]
    fn slopes_and_trends_of_series() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 5.0 + 2.0 * i as f64)).collect();
        assert!((slope(&pts) - 2.0).abs() < 1e-9);
        let t = Trend::of(&pts);
        assert_eq!((t.start, t.end, t.min, t.max), (5.0, 23.0, 5.0, 23.0));
        assert!((t.slope_per_min - 120.0).abs() < 1e-6);
        assert_eq!(slope(&pts[..1]), 0.0);
    }

    #[test]
    fn the_generator_replays_from_its_seed_and_keeps_its_bounds() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.between(3, 5);
            assert_eq!(x, b.between(3, 5));
            assert!((3..=5).contains(&x));
            assert!(a.below(10) < 10);
            b.below(10);
        }
        assert_eq!(a.below(0), 0);
    }
}
