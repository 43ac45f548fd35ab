//! The randomized adversary's smoke run (issue 11): the same harness as
//! `cargo xtask soak-attacks` (tests/support/stress/attacks.rs) for 30 seconds — a hostile
//! process swapping symlinks, bind-mounting, renaming dirs between workspaces, creating
//! non-UTF-8 and newline names and holding files open while the real daemon cleans a tmpfs kept
//! at ~95% used; everything outside policy byte-identical afterwards, the audit log complete.
//! The full run (≥ 10 minutes) and its figures: `cargo xtask soak-attacks` (docs/benchmarks.md).

mod support;

use std::path::PathBuf;
use std::time::Duration;
use support::stress::{self, attacks, rng::Rng, Runner};
use support::*;

/// The tests of this binary run one at a time. `unshare(CLONE_FILES)` gives a thread a copy of
/// the whole process's file table: a file another test's thread had open at that moment stays
/// open in the copy — and so, rightly, in use — for as long as the holding thread runs.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Length of the smoke run (the full run is at least 10 minutes).
const SMOKE: Duration = Duration::from_secs(30);

#[test]
fn randomized_adversary_smoke_leaves_everything_outside_policy_byte_identical() {
    let _serial = one_at_a_time();
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

// ---------------------------------------------------------------------------------------------
// Holds the adversary's processes could take one thread at a time: a thread that left its
// process's shared cwd or fd table (`unshare(CLONE_FS)`, `unshare(CLONE_FILES)`) shows its
// holds only under /proc/PID/task/TID, not /proc/PID.

/// A thread of this process that unshares `flags`, then runs `hold` and keeps what it holds
/// until the returned guard is dropped.
struct ThreadHold {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadHold {
    fn start(
        flags: libc::c_int,
        hold: impl FnOnce() -> Box<dyn std::any::Any> + Send + 'static,
    ) -> ThreadHold {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: unshare only detaches this thread's fs context or fd table from the
            // process's; it takes no pointers.
            assert_eq!(unsafe { libc::unshare(flags) }, 0, "unshare");
            let held = hold();
            tx.send(()).unwrap();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(held);
        });
        rx.recv().expect("the holding thread is ready");
        ThreadHold {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ThreadHold {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Two projects with `node_modules` at 85% used; `run --once` while `hold` holds `busy`: only
/// `idle`'s trees may go.
fn busy_project_survives(
    name: &str,
    flags: libc::c_int,
    hold: fn(PathBuf) -> Box<dyn std::any::Any>,
) {
    if !require_root(name) {
        return;
    }
    let _serial = one_at_a_time();
    let m = TestMount::tmpfs(64 * MIB);
    let ws = m.path("ws");
    write_files(&ws.join("busy/node_modules"), 4, 2 * MIB);
    write_files(&ws.join("idle/node_modules"), 4, 2 * MIB);
    let config = m.path("guardian.toml");
    write_config(&config, &ws, &m.path("guardian"), "1s", "");
    let busy = ws.join("busy");
    let _hold = ThreadHold::start(flags, move || hold(busy));
    fill_to_used(&m.dir, &m.path("filler"), 85.0);
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !ws.join("idle/node_modules").exists(),
        "the run deleted nothing:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ws.join("busy/node_modules").exists(),
        "a project a thread holds was cleaned: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_thread_with_its_own_cwd_in_a_project_keeps_it_in_use() {
    busy_project_survives(
        "a_thread_with_its_own_cwd_in_a_project_keeps_it_in_use",
        libc::CLONE_FS,
        |dir| {
            std::env::set_current_dir(&dir).unwrap();
            Box::new(())
        },
    );
}

#[test]
fn a_thread_with_its_own_fd_table_holding_a_file_keeps_its_project_in_use() {
    busy_project_survives(
        "a_thread_with_its_own_fd_table_holding_a_file_keeps_its_project_in_use",
        libc::CLONE_FILES,
        |dir| Box::new(std::fs::File::open(dir.join("node_modules/d0/f0")).unwrap()),
    );
}
