//! Test support shared by the unit tests and the integration tests: the one place that decides
//! whether a test that needs privileges may skip. Never used by Guardian itself.
//!
//! A test that needs root calls [`require_root`]. Without root it prints a loud `SKIPPED` line
//! and returns false — unless `GUARDIAN_REQUIRE_PRIVILEGED_TESTS=1` is set (CI sets it), in which
//! case a skip is a failure: a test that cannot run where it must run fails loudly.

/// The variable that turns every privileged-test skip into a failure.
pub const REQUIRE_PRIVILEGED: &str = "GUARDIAN_REQUIRE_PRIVILEGED_TESTS";

/// True when the test may run: the process is root. Otherwise prints a loud SKIPPED line naming
/// `test` and returns false, or panics when [`REQUIRE_PRIVILEGED`] is set to `1`.
pub fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    skip(
        test,
        "needs root (mounts tmpfs / loop ext4, loads the probe, signals other users' processes)",
    )
}

/// Skips `test` for `why`: loud on stderr, a failure when privileged tests are required.
pub fn skip(test: &str, why: &str) -> bool {
    if std::env::var(REQUIRE_PRIVILEGED).as_deref() == Ok("1") {
        panic!("{test} cannot run here ({why}) and {REQUIRE_PRIVILEGED}=1 forbids skipping it");
    }
    eprintln!("\n*** SKIPPED {test}: {why} ***\n");
    false
}
