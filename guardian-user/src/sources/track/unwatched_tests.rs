//! The polling of directories the source could not watch (`unwatched.rs`) on real
//! filesystems: rounds at a budget, resting while the filesystem is unchanged, and the watches
//! a shallow directory takes from deeper ones when the source has none left.

use super::tree::{Hooks, Key, Refused, Tree, Watch, UNWATCHED};
use crate::sources::testutil::{project, tempdir, Tmpfs};
use std::collections::HashMap;
use std::fs;
use std::time::Duration;

/// Hooks of a source whose every watch is refused, for a reason no freed watch would cure.
struct RefuseWatches;

impl Hooks for RefuseWatches {
    fn dir_added(&mut self, _: Key, _: rustix::fd::BorrowedFd<'_>) -> Result<Watch, Refused> {
        Err(Refused::Other)
    }

    fn dir_dropped(&mut self, _: Key, _: Watch) {}
}

/// Directories without a watch are polled in turn at a budget (`unwatched.rs`): a tick allowed
/// next to nothing polls one directory and keeps its place, the next tick goes on from there,
/// and a round reaches every directory and finds what was written in each (before, every tick
/// polled all of them: a 5M-entry node past a 192k watch limit kept the worker at 92% of a core).
#[test]
fn unwatched_directories_are_polled_in_turn_and_a_round_finds_every_change() {
    use super::unwatched::{Pace, UNWATCHED_BURST};
    use std::time::{Duration, Instant};
    let dir = tempdir();
    let root = dir.path().join("p");
    for d in 0..300 {
        fs::create_dir_all(root.join(format!("d{d:03}"))).unwrap();
    }
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &root)], &mut RefuseWatches);
    assert_eq!(tree.unwatched(), 301);
    assert_eq!(tree.total(1), 0);
    for d in 0..300 {
        fs::write(root.join(format!("d{d:03}/f")), vec![b'x'; 1000 + d]).unwrap();
    }
    let want: i64 = (0..300).map(|d| 1000 + d).sum();

    // A tick with its whole budget but no time before the next read of the queue is due (a
    // countdown budget about to run out: the crossing's event comes first) polls nothing.
    tree.unwatched_pace = Pace::new(Instant::now());
    tree.poll_unwatched(&mut RefuseWatches, Duration::ZERO);
    assert_eq!(tree.unwatched_pace.cursor, None);
    assert_eq!(tree.total(1), 0);

    // A tick with next to nothing left to spend polls exactly one directory, the first.
    tree.unwatched_pace = Pace::new(Instant::now());
    tree.unwatched_pace
        .spent(UNWATCHED_BURST - Duration::from_nanos(1));
    tree.poll_unwatched(&mut RefuseWatches, Duration::MAX);
    let first = tree.unwatched_pace.cursor.expect("one directory polled");
    assert_eq!(
        tree.dirs.next_unwatched(None).map(|(at, _)| at),
        Some(first)
    );
    assert_eq!(tree.unwatched_pace.rounds, 0);
    assert!(
        tree.total(1) < want,
        "the whole round ran in a tick allowed a nanosecond"
    );
    // Spent: the next tick polls nothing until the budget refills.
    tree.poll_unwatched(&mut RefuseWatches, Duration::MAX);
    assert_eq!(tree.unwatched_pace.cursor, Some(first));

    // Ticks with time (a fresh burst each, not to wait for the refill) go on from the cursor
    // until the round ends; every directory's file is then counted.
    let mut ticks = 0;
    while tree.unwatched_pace.rounds == 0 {
        let cursor = tree.unwatched_pace.cursor;
        tree.unwatched_pace = Pace::new(Instant::now());
        tree.unwatched_pace.cursor = cursor;
        tree.poll_unwatched(&mut RefuseWatches, Duration::MAX);
        ticks += 1;
        assert!(ticks < 10_000, "the round never ended");
    }
    assert_eq!(tree.total(1), want);
    assert_eq!(tree.unwatched(), 301, "watches are still refused");
}

/// Runs polling ticks of `tree`'s unwatched directories until a round has run in full, or
/// until a tick polls nothing; the number of rounds run.
fn unwatched_round(tree: &mut Tree) -> u64 {
    unwatched_round_with(tree, &mut RefuseWatches)
}

fn unwatched_round_with(tree: &mut Tree, hooks: &mut dyn Hooks) -> u64 {
    let rounds = tree.unwatched_pace.rounds;
    for _ in 0..10_000 {
        // A fresh burst each tick, not to wait for the budget's refill.
        tree.unwatched_pace.refill_for_tests();
        tree.poll_unwatched(hooks, Duration::MAX);
        if tree.unwatched_pace.rounds > rounds || tree.unwatched_pace.cursor.is_none() {
            break;
        }
    }
    tree.unwatched_pace.rounds
}

/// Between rounds, polling the unwatched directories waits while their filesystem stays as the
/// last whole round found it (`unwatched::Stamp`) — the baseline walk that met the watch limit
/// counts as one: an idle node polls nothing from the start, a write starts the round that
/// finds it, a file made or removed does too, and a filesystem that keeps no block or inode
/// count (an unbounded tmpfs; btrfs keeps no inode count) is polled round after round as before.
#[test]
fn unwatched_polling_rests_while_their_filesystem_is_unchanged() {
    if !crate::testkit::require_root("unwatched_polling_rests_while_their_filesystem_is_unchanged")
    {
        return;
    }
    let tmpfs = Tmpfs::mount().expect("mount tmpfs");
    let root = tmpfs.path.join("p");
    for d in 0..50 {
        fs::create_dir_all(root.join(format!("d{d:02}"))).unwrap();
    }
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &root)], &mut RefuseWatches);
    assert_eq!(tree.unwatched(), 51);
    assert_eq!(
        tree.unwatched_pace.rounds, 1,
        "the baseline walk read them all"
    );
    // Nothing changed: however many ticks, no directory is polled.
    for _ in 0..20 {
        assert_eq!(
            unwatched_round(&mut tree),
            1,
            "a round ran on an idle filesystem"
        );
        assert_eq!(tree.unwatched_pace.cursor, None);
    }
    // A write that allocates: the next round runs and counts it.
    fs::write(root.join("d07/f"), vec![b'x'; 10_000]).unwrap();
    assert_eq!(unwatched_round(&mut tree), 2);
    assert_eq!(tree.take_sample().growth.get(&1), Some(&10_000));
    assert_eq!(unwatched_round(&mut tree), 2, "settled again");
    // A file removed (its blocks and its inode freed).
    fs::remove_file(root.join("d07/f")).unwrap();
    assert_eq!(unwatched_round(&mut tree), 3);
    assert_eq!(tree.take_sample().growth.get(&1), Some(&-10_000));
    // An empty file made: no block, but an inode.
    fs::write(root.join("d08/empty"), b"").unwrap();
    assert_eq!(unwatched_round(&mut tree), 4);
    assert_eq!(unwatched_round(&mut tree), 4);
    // A directory whose watch went away: one more round though nothing moved.
    let key = tree.dirs.unwatched_keys().next().unwrap();
    tree.mark_unwatched(key);
    assert_eq!(unwatched_round(&mut tree), 5);
    assert_eq!(unwatched_round(&mut tree), 5);

    // No counts to compare: every tick goes on polling, round after round.
    let unbounded = Tmpfs::mount_with(c"size=0,nr_inodes=0").expect("mount tmpfs");
    let root = unbounded.path.join("p");
    fs::create_dir_all(root.join("d")).unwrap();
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &root)], &mut RefuseWatches);
    assert_eq!(tree.unwatched_pace.rounds, 1, "the baseline walk");
    for want in 2..=6 {
        assert_eq!(unwatched_round(&mut tree), want);
    }
}

/// Hooks of a source with `limit` watches to give (inotify's `fs.inotify.max_user_watches`):
/// a directory asked for again keeps its watch, a dropped one frees it.
struct Limited {
    limit: usize,
    watched: HashMap<Key, Watch>,
    next: Watch,
}

impl Limited {
    fn new(limit: usize) -> Limited {
        Limited {
            limit,
            watched: HashMap::new(),
            next: 0,
        }
    }
}

impl Hooks for Limited {
    fn dir_added(&mut self, key: Key, _: rustix::fd::BorrowedFd<'_>) -> Result<Watch, Refused> {
        if let Some(watch) = self.watched.get(&key) {
            return Ok(*watch);
        }
        if self.watched.len() >= self.limit {
            return Err(Refused::OutOfWatches);
        }
        self.next += 1;
        self.watched.insert(key, self.next);
        Ok(self.next)
    }

    fn dir_dropped(&mut self, key: Key, watch: Watch) {
        if self.watched.get(&key) == Some(&watch) {
            self.watched.remove(&key);
        }
    }
}

fn key_of_path(path: &std::path::Path) -> Key {
    use std::os::unix::fs::MetadataExt;
    let st = fs::metadata(path).unwrap();
    (st.dev(), st.ino())
}

/// Out of watches, a project added later (a new task) still has its root and the two levels
/// below it watched — where tasks write their logs and build outputs — taken at the next tick
/// (not during the walk) from the deepest directories of the projects walked first, which are
/// polled from then on; the totals stay exact through it, and nothing shallow gives its watch
/// away. Before, the watches went in walk
/// order and the new project had none.
#[test]
fn out_of_watches_a_new_project_takes_the_watches_of_deep_directories() {
    let dir = tempdir();
    let old = dir.path().join("old");
    for n in 0..20 {
        fs::create_dir_all(old.join(format!("pkg{n:02}/lib/src/deep"))).unwrap();
    }
    let new = dir.path().join("new");
    for d in ["logs", "target/debug/deps/x"] {
        fs::create_dir_all(new.join(d)).unwrap();
    }
    // Exactly enough for the old project's 81 directories.
    let mut hooks = Limited::new(81);
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &old)], &mut hooks);
    assert_eq!(tree.unwatched(), 0);
    assert_eq!(hooks.watched.len(), 81);

    tree.set_projects(&[project(1, &old), project(2, &new)], &mut hooks);
    // Nothing is taken during the walk (each dropped watch queues an event, and the walk does
    // not read the queue): the four shallow directories wait for the next tick.
    assert_eq!(tree.watch_share.taken, 0);
    assert_eq!(tree.watch_share.wanting.len(), 4);
    assert_eq!(tree.unwatched(), 6);
    assert!(!tree.unwatched_pace.unsettled(), "the walk read them all");
    // Written while only polled: found when its watch comes. And written in the deepest
    // directories of the old project with no event read yet: found in those that give their
    // watch away, read again then.
    fs::write(new.join("logs/run.log"), vec![b'l'; 700]).unwrap();
    for n in 0..20 {
        let deep = old.join(format!("pkg{n:02}/lib/src/deep"));
        fs::write(deep.join("f"), vec![b'd'; 100 + n]).unwrap();
    }
    // A tick with no time before the next read of the queue is due (a countdown budget about
    // to run out) leaves them waiting.
    tree.share_watches(&mut hooks, Duration::ZERO);
    assert_eq!(tree.watch_share.wanting.len(), 4);
    assert_eq!(tree.watch_share.taken, 0);
    tree.share_watches(&mut hooks, Duration::MAX);
    assert!(tree.watch_share.wanting.is_empty());
    assert_eq!(tree.total(2), 700);
    let evicted: Vec<Key> = tree.dirs.unwatched_keys().collect();
    let in_evicted: i64 = evicted
        .iter()
        .filter(|k| tree.dirs.project(**k) == Some(1))
        .filter_map(|k| fs::metadata(tree.path_of(*k)?.join("f")).ok())
        .map(|m| i64::try_from(m.len()).unwrap())
        .sum();
    assert!(in_evicted > 0);
    assert_eq!(tree.total(1), in_evicted);
    // Both were read again: the polling rounds need not start over.
    assert!(!tree.unwatched_pace.unsettled());
    assert_eq!(hooks.watched.len(), 81, "no more watches than the limit");
    for d in ["", "logs", "target", "target/debug"] {
        let key = key_of_path(&new.join(d));
        assert!(hooks.watched.contains_key(&key), "new/{d} has no watch");
        assert_eq!(tree.watch_of(key), hooks.watched.get(&key).copied());
    }
    for d in ["target/debug/deps", "target/debug/deps/x"] {
        let key = key_of_path(&new.join(d));
        assert_eq!(tree.watch_of(key), Some(UNWATCHED), "new/{d}");
    }
    assert_eq!(tree.watch_share.taken, 4);
    assert_eq!(tree.unwatched(), 6);
    // What gave its watch away is deeper than any that took one, and only that.
    for key in tree.dirs.unwatched_keys().collect::<Vec<_>>() {
        assert!(tree.dirs.depth(key).unwrap() >= 3, "{key:?}");
        assert!(!hooks.watched.contains_key(&key));
    }
    let old_root = key_of_path(&old);
    assert!(hooks.watched.contains_key(&old_root));
    for n in 0..20 {
        for d in ["", "/lib"] {
            let key = key_of_path(&old.join(format!("pkg{n:02}{d}")));
            assert!(hooks.watched.contains_key(&key), "old/pkg{n:02}{d}");
        }
    }

    // The directories that gave theirs away are polled: a round finds what was written in
    // every one of them.
    let mut want = 700 + in_evicted;
    for (i, key) in tree
        .dirs
        .unwatched_keys()
        .collect::<Vec<_>>()
        .iter()
        .enumerate()
    {
        let path = tree.path_of(*key).unwrap();
        fs::write(path.join("g"), vec![b'x'; 1_000 + i]).unwrap();
        want += 1_000 + i64::try_from(i).unwrap();
    }
    // (The writes moved the filesystem's free blocks and inodes: a round runs.)
    let rounds = tree.unwatched_pace.rounds;
    assert_eq!(unwatched_round_with(&mut tree, &mut hooks), rounds + 1);
    assert_eq!(tree.total(1) + tree.total(2), want);

    // With nothing deeper left to give, a shallow directory stays unwatched, and the search
    // is not repeated until the source gives a watch again.
    let tiny = dir.path().join("tiny");
    fs::create_dir_all(tiny.join("a")).unwrap();
    let mut hooks = Limited::new(1);
    let mut tree = Tree::default();
    tree.set_projects(&[project(3, &tiny)], &mut hooks);
    assert_eq!(tree.watch_share.wanting.len(), 1);
    tree.share_watches(&mut hooks, Duration::MAX);
    assert_eq!(tree.watch_share.taken, 0);
    assert!(tree.watch_share.exhausted);
    assert!(tree.watch_share.wanting.is_empty());
    // Refused again (a polling round retries it): not even queued.
    tree.watch_share.want(key_of_path(&tiny.join("a")));
    assert!(tree.watch_share.wanting.is_empty());
    assert_eq!(tree.watch_of(key_of_path(&tiny.join("a"))), Some(UNWATCHED));
    assert!(hooks.watched.contains_key(&key_of_path(&tiny)));

    // A source that refuses for another reason than a full table gives nothing away.
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &old)], &mut RefuseWatches);
    assert!(tree.watch_share.wanting.is_empty());
    tree.share_watches(&mut RefuseWatches, Duration::MAX);
    assert_eq!(tree.watch_share.taken, 0);
    assert_eq!(tree.unwatched(), 81);
}
