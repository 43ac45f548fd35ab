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

/// Capability numbers for [`drop_capabilities_of_this_thread`].
pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_ADMIN: u32 = 21;

/// Drops `caps` from the calling thread's effective and permitted sets. Capabilities are per
/// thread on Linux, so a test can run one thread as a less privileged root (e.g. without
/// CAP_DAC_OVERRIDE, to meet an unreadable directory) while the rest of the process keeps its
/// privileges. Work that must stay on that thread must not hop to a thread pool.
#[cfg(target_os = "linux")]
pub fn drop_capabilities_of_this_thread(caps: &[u32]) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let mut header = Header {
        version: V3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and the two data words v3 takes; pid 0 is the
    // calling thread, and the change affects only it.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0,
            "capget"
        );
        for cap in caps {
            let (word, bit) = ((cap / 32) as usize, cap % 32);
            data[word].effective &= !(1 << bit);
            data[word].permitted &= !(1 << bit);
        }
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0,
            "capset"
        );
    }
}
