//! The write countdown of the fanotify and inotify workers on real filesystems: growth spends
//! the budget of the project's filesystem, and a budget about to run out cuts the worker's
//! batch short, so the read that spends it does not wait for the batch timer.

use super::worker::{BATCH, TICK};
use super::Worker;
use crate::sources::countdown::{Budget, Wake};
use crate::sources::testutil::{is_root, project, tempdir, write_with_write, Tmpfs};
use crate::sources::Source;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Growth the worker applies is spent from the project's filesystem budget: nothing before
/// the budget is reached, one wake-up when it is, none more until re-armed.
fn wakes_when_the_budget_is_spent(mut source: Box<dyn Source>, name: &str) {
    let dir = tempdir();
    let a = dir.path().join("a");
    std::fs::create_dir(&a).unwrap();
    source.watch_and_wait(&[project(1, &a)]).unwrap();
    let (waker, wakeups) = crossbeam_channel::bounded(1);
    source.set_waker(waker);
    let dev = std::fs::metadata(&a).unwrap().dev();
    source.arm(&[Budget::new(dev, 4 << 20)]);
    write_with_write(&a.join("small"), 1 << 20, 64 << 10);
    assert!(
        wakeups.recv_timeout(Duration::from_millis(500)).is_err(),
        "{name}: woken before the budget was spent"
    );
    write_with_write(&a.join("big"), 4 << 20, 64 << 10);
    let wake = wakeups
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{name}: no wake-up after the budget was spent"));
    assert_eq!((wake.source, wake.dev), (name, dev));
    assert!(wake.bytes >= 4 << 20, "{wake:?}");
    write_with_write(&a.join("more"), 8 << 20, 64 << 10);
    assert!(
        wakeups.recv_timeout(Duration::from_millis(500)).is_err(),
        "{name}: one wake-up per arming"
    );
    source.arm(&[Budget::new(dev, 1 << 20)]);
    write_with_write(&a.join("again"), 2 << 20, 64 << 10);
    assert!(
        wakeups.recv_timeout(Duration::from_secs(5)).is_ok(),
        "{name}: re-armed budget never woke"
    );
}

#[test]
fn inotify_growth_counts_down_and_wakes_once_per_budget() {
    let source = crate::sources::inotify::open().expect("inotify");
    wakes_when_the_budget_is_spent(Box::new(source), "inotify");
}

#[test]
fn fanotify_growth_counts_down_and_wakes_once_per_budget() {
    if !crate::testkit::require_root("fanotify countdown test") {
        return;
    }
    let source = crate::sources::fanotify::open().expect("fanotify");
    wakes_when_the_budget_is_spent(Box::new(source), "fanotify");
}

/// Writes 1 MiB chunks into `file` at about 1 GiB/s (a chunk, then 1 ms) until the source wakes
/// the daemon or `most` bytes are written; the wake-up and its delay after the write that
/// brought the total to `budget`.
fn write_until_woken(
    file: &Path,
    budget: u64,
    most: u64,
    wakeups: &crossbeam_channel::Receiver<Wake>,
) -> Option<(Wake, Duration)> {
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0x5au8; MIB as usize];
    let mut written = 0;
    let mut spent_at = None;
    while written < most {
        f.write_all(&chunk).unwrap();
        written += MIB;
        if written >= budget {
            spent_at.get_or_insert_with(Instant::now);
        }
        if let Ok(wake) = wakeups.recv_timeout(Duration::from_millis(1)) {
            return Some((wake, spent_at.map_or(Duration::ZERO, |at| at.elapsed())));
        }
    }
    let at = spent_at?;
    let wake = wakeups.recv_timeout(Duration::from_secs(5)).ok()?;
    Some((wake, at.elapsed()))
}

/// Issue 16 item 4: far from every budget the worker keeps reading in whole batches; once a
/// budget is close it reads sooner, and the read that spends the budget — and wakes the daemon
/// — comes before the batch timer would have let it. The delay from the write that spent the
/// budget to the wake-up is printed (it is a few ms on an idle machine; not asserted).
fn a_spent_budget_wakes_before_the_batch_ends(mut source: Worker, root: &Path, name: &str) {
    let a = root.join("a");
    std::fs::create_dir(&a).unwrap();
    source.watch_and_wait(&[project(1, &a)]).unwrap();
    let (waker, wakeups) = crossbeam_channel::bounded(1);
    Source::set_waker(&mut source, waker);
    let dev = std::fs::metadata(&a).unwrap().dev();
    // Ordinary bookkeeping: a budget far away leaves the batches whole.
    Source::arm(&mut source, &[Budget::new(dev, 1 << 40)]);
    assert!(write_until_woken(&a.join("far"), 1 << 40, 24 * MIB, &wakeups).is_none());
    std::thread::sleep(BATCH * 2);
    assert_eq!(
        source.pace().early_reads,
        0,
        "{name}: reads brought forward far from every budget"
    );
    // A budget of 32 MiB: spent by the writer within ~40 ms.
    let budget = 32 * MIB;
    Source::arm(&mut source, &[Budget::new(dev, budget)]);
    let (wake, delay) = write_until_woken(&a.join("near"), budget, 3 * budget, &wakeups)
        .unwrap_or_else(|| panic!("{name}: no wake-up after {} MiB", 3 * budget / MIB));
    let pace = source.pace();
    eprintln!(
        "{name}: woken {:.1} ms after the write that spent the budget ({} MiB counted; {pace:?})",
        delay.as_secs_f64() * 1e3,
        wake.bytes / MIB
    );
    assert_eq!((wake.source, wake.dev), (name, dev));
    assert!(wake.bytes >= budget, "{wake:?}");
    assert!(pace.early_reads > 0, "{name}: no read brought forward");
    let after = pace
        .woken_after
        .unwrap_or_else(|| panic!("{name}: the wake-up came from no read: {pace:?}"));
    assert!(
        after < BATCH,
        "{name}: the read that spent the budget waited {after:?}, a whole batch"
    );
}

#[test]
fn inotify_a_spent_budget_wakes_before_the_batch_ends() {
    let source = crate::sources::inotify::open().expect("inotify");
    // inotify needs no privilege: without root (no tmpfs mount) on the temporary directory.
    if is_root() {
        let tmpfs = Tmpfs::mount().expect("mount tmpfs");
        a_spent_budget_wakes_before_the_batch_ends(source, &tmpfs.path, "inotify");
    } else {
        let dir = tempdir();
        a_spent_budget_wakes_before_the_batch_ends(source, dir.path(), "inotify");
    }
}

#[test]
fn fanotify_a_spent_budget_wakes_before_the_batch_ends() {
    if !crate::testkit::require_root("fanotify_a_spent_budget_wakes_before_the_batch_ends") {
        return;
    }
    let source = crate::sources::fanotify::open().expect("fanotify");
    let tmpfs = Tmpfs::mount().expect("mount tmpfs");
    a_spent_budget_wakes_before_the_batch_ends(source, &tmpfs.path, "fanotify");
}

/// A worker's periodic work (polling, sharing watches) runs in short slices only near a
/// threshold: a resting sampler's 1 MiB budget (far from every threshold) leaves them whole.
/// (Cut by the resting budget, they made a polling round past the watch limit five times slower
/// and kept it running while the node was idle.)
#[test]
fn inotify_slices_are_cut_near_a_threshold_not_by_a_resting_budget() {
    let mut source = crate::sources::inotify::open().expect("inotify");
    let dir = tempdir();
    let a = dir.path().join("a");
    std::fs::create_dir(&a).unwrap();
    source.watch_and_wait(&[project(1, &a)]).unwrap();
    let dev = std::fs::metadata(&a).unwrap().dev();
    // Idle, the worker ticks once per `TICK`: one has run with the budget armed after a
    // `TICK` and a little more.
    let slice_of_the_next_tick = |source: &mut Worker, budget: Budget| {
        Source::arm(source, &[budget]);
        std::thread::sleep(TICK + Duration::from_millis(200));
        source.pace().slice.expect("no tick")
    };
    let resting = Budget {
        dev,
        bytes: MIB,
        asked: 10 << 30,
    };
    assert_eq!(slice_of_the_next_tick(&mut source, resting), BATCH);
    let near = slice_of_the_next_tick(&mut source, Budget::new(dev, MIB));
    assert!(
        near < Duration::from_millis(5),
        "near a threshold: {near:?}"
    );
}
