//! The soak's smoke run: the same harness as `cargo xtask soak` (tests/support/stress/soak.rs),
//! for a short time — churn writers on a 512 MiB tmpfs, cleanups under pressure, protected dirs
//! byte-identical, no log spam, no ENOSPC while reclaimable bytes existed, the audit log
//! complete. The full-length run and its figures: `cargo xtask soak` (docs/benchmarks.md).

mod support;

use std::time::Duration;
use support::stress::{self, rng::Rng, soak, Runner};
use support::*;

/// Length of the smoke run (the full soak is 10 minutes).
const SMOKE: Duration = Duration::from_secs(45);

#[test]
fn soak_smoke_churn_keeps_protected_dirs_no_spam_no_enospc_while_reclaimable() {
    if !require_root("soak_smoke_churn_keeps_protected_dirs_no_spam_no_enospc_while_reclaimable") {
        return;
    }
    let seed = Rng::seed_from_env("GUARDIAN_SOAK_SEED");
    eprintln!("soak smoke: seed {seed} (replay with GUARDIAN_SOAK_SEED={seed})");
    let runner = Runner {
        guardian: guardian_bin(),
        child: stress::test_child_command("stress_child_entry_point"),
    };
    let report = soak::run(
        &runner,
        &soak::SoakOptions {
            duration: SMOKE,
            seed,
            progress: Some(Duration::from_secs(15)),
            cancel: Default::default(),
        },
    )
    .expect("the soak runs");
    report.print();
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "soak smoke (seed {seed}) failed:\n{}",
        failures.join("\n")
    );
}

/// Not a test: the entry point of the harness's child processes (churn writers), which the smoke
/// run starts by re-running this test binary on this name.
#[test]
#[ignore = "entry point of the stress harness's child processes, started by the smoke test"]
fn stress_child_entry_point() {
    stress::child_main_from_env();
}
