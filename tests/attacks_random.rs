//! The randomized adversary's smoke run (issue 11): the same harness as
//! `cargo xtask soak-attacks` (tests/support/stress/attacks.rs) for 30 seconds — a hostile
//! process swapping symlinks, bind-mounting, renaming dirs between workspaces, creating
//! non-UTF-8 and newline names and holding files open while the real daemon cleans a tmpfs kept
//! at ~95% used; everything outside policy byte-identical afterwards, the audit log complete.
//! The full run (≥ 10 minutes) and its figures: `cargo xtask soak-attacks` (docs/benchmarks.md).

mod support;

use std::time::Duration;
use support::stress::{self, attacks, rng::Rng, Runner};
use support::*;

/// Length of the smoke run (the full run is at least 10 minutes).
const SMOKE: Duration = Duration::from_secs(30);

#[test]
fn randomized_adversary_smoke_leaves_everything_outside_policy_byte_identical() {
    if !require_root("randomized_adversary_smoke_leaves_everything_outside_policy_byte_identical") {
        return;
    }
    let seed = Rng::seed_from_env("GUARDIAN_ATTACKS_SEED");
    eprintln!("adversary smoke: seed {seed} (replay with GUARDIAN_ATTACKS_SEED={seed})");
    let runner = Runner {
        guardian: guardian_bin(),
        child: stress::test_child_command("stress_child_entry_point"),
    };
    let report = attacks::run(
        &runner,
        &attacks::AttackOptions {
            duration: SMOKE,
            seed,
            progress: Some(Duration::from_secs(10)),
            cancel: Default::default(),
        },
    )
    .expect("the adversary run");
    report.print();
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "adversary smoke (seed {seed}) failed:\n{}",
        failures.join("\n")
    );
}

/// Not a test: the entry point of the harness's child processes (the hostile process), which
/// the smoke run starts by re-running this test binary on this name.
#[test]
#[ignore = "entry point of the stress harness's child processes, started by the smoke test"]
fn stress_child_entry_point() {
    stress::child_main_from_env();
}
