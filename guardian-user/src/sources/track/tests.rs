//! The size table on real filesystems: what a tracked file costs, and random churn (with name
//! hashes forced to collide) checked against a fresh walk.

use super::tree::{key_of, At, NoHooks, Tree};
use super::Change;
use crate::fsys;
use crate::sources::testutil::{project, tempdir, Tmpfs};
use rustix::fd::{AsFd, OwnedFd};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn open(dir: &Path) -> (OwnedFd, (u64, u64), Option<u64>) {
    let fd = fsys::open_dir_path(dir).unwrap();
    let st = fsys::stat_fd(&fd).unwrap();
    (fd, key_of(&st), st.mnt_id)
}

/// Tells `tree` what the events for `dir/name` would say.
fn event(tree: &mut Tree, dir: &Path, name: &str, change: Change) {
    let Ok(fd) = fsys::open_dir_path(dir) else {
        return;
    };
    let st = fsys::stat_fd(&fd).unwrap();
    let key = key_of(&st);
    if !tree.has_dir(key) {
        return;
    }
    let at = At {
        fd: fd.as_fd(),
        mnt: st.mnt_id,
    };
    let name = CString::new(name).unwrap();
    // One event is one batch here, as a source would see a change made just before it.
    tree.end_batch();
    assert!(tree.reconcile(key, at, &name, change, &mut NoHooks));
    tree.end_batch();
}

const CREATED: Change = Change {
    known: true,
    deleted: false,
    moved_away: false,
    moved_in: false,
};

fn deleted() -> Change {
    Change::seen(true, false, false)
}

fn away() -> Change {
    Change::seen(false, true, false)
}

fn moved_in() -> Change {
    Change::seen(false, false, true)
}

/// 200,000 files in 2,000 directories of 100 on tmpfs: the table's own accounting (capacities of every
/// map and list it holds) must stay within the goal of 24 bytes per tracked file.
#[test]
fn a_tracked_file_costs_at_most_24_bytes_in_the_table() {
    if !crate::testkit::require_root("a_tracked_file_costs_at_most_24_bytes_in_the_table") {
        return;
    }
    let tmpfs = Tmpfs::mount().expect("mount tmpfs");
    let root = tmpfs.path.join("ws/p");
    let mut want = 0i64;
    for d in 0..2_000 {
        let dir = root.join(format!("src/m{:02}/d{d:04}", d % 50));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            // Mostly empty (a tmpfs page per non-empty file adds up); what a file costs in
            // the table does not depend on its size.
            let size = if f % 50 == 0 {
                (d * 7 + f * 13) % 300
            } else {
                0
            };
            fs::write(dir.join(format!("file-{f:03}.rs")), vec![b'x'; size]).unwrap();
            want += i64::try_from(size).unwrap();
        }
    }
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &root)], &mut NoHooks);
    assert_eq!(tree.total(1), want);
    assert_eq!(tree.tracked_files(), 200_000);
    let bytes = tree.heap_bytes();
    let per_file = bytes as f64 / 200_000.0;
    eprintln!(
        "size table: {bytes} heap bytes for 200,000 files in 2,050 directories: {per_file:.1} B \
         per tracked file"
    );
    assert!(per_file <= 24.0, "{per_file:.1} B per tracked file");
    // Small directories (10 files each) cost more per file: their own record is shared by fewer.
    let small = tmpfs.path.join("ws/q");
    for d in 0..2_000 {
        let dir = small.join(format!("node_modules/pkg{d:04}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..10 {
            fs::write(dir.join(format!("f{f}.js")), b"x").unwrap();
        }
    }
    let mut tree = Tree::default();
    tree.set_projects(&[project(2, &small)], &mut NoHooks);
    assert_eq!(tree.tracked_files(), 20_000);
    let per_entry = tree.heap_bytes() as f64 / 22_002.0;
    eprintln!("size table, 10 files per directory: {per_entry:.1} B per tracked entry");
    assert!(per_entry <= 24.0, "{per_entry:.1} B per tracked entry");
}

/// A tiny deterministic generator (the churn must be reproducible from its seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }
}

/// Regular files and directories below `dir` (depth-first, sorted).
fn walk(dir: &Path, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            dirs.push(p.clone());
            walk(&p, files, dirs);
        } else if md.is_file() {
            files.push(p);
        }
    }
}

fn split(path: &Path) -> (PathBuf, String) {
    let parent = path.parent().unwrap().to_path_buf();
    let name = String::from_utf8(path.file_name().unwrap().as_bytes().to_vec()).unwrap();
    (parent, name)
}

/// Random creates, growth, truncation, deletions, renames (within a directory, across
/// directories and projects, onto existing names, out of every project), hard links (within a
/// project and from a store outside), new and deleted subtrees and moved directories, each told
/// to the table as its events would; every 20 steps the per-project totals must equal a fresh
/// walk's. With `mask` 0 every name of a directory hashes alike, with 3 one in four do.
fn churn_matches_a_fresh_walk(mask: u32, seed: u64, steps: usize) {
    let base = tempdir();
    let (a, b, out) = (
        base.path().join("A"),
        base.path().join("B"),
        base.path().join("out"),
    );
    for dir in [&a, &b] {
        for d in 0..3 {
            fs::create_dir_all(dir.join(format!("d{d}/e"))).unwrap();
            for f in 0..4 {
                fs::write(dir.join(format!("d{d}/f{f}")), vec![1u8; 100 * (f + 1)]).unwrap();
            }
        }
    }
    fs::create_dir_all(&out).unwrap();
    let projects = [project(1, &a), project(2, &b)];
    let mut tree = Tree::with_hash_mask(mask);
    tree.set_projects(&projects, &mut NoHooks);
    let mut rng = Rng(seed | 1);
    let mut counter = 0;
    for step in 0..steps {
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        for p in [&a, &b] {
            dirs.push(p.to_path_buf());
            walk(p, &mut files, &mut dirs);
        }
        counter += 1;
        // A name from a small pool, so renames and creates often land on existing names.
        let pool_name = format!("n{}", rng.below(6));
        let pick_dir = |rng: &mut Rng| dirs[rng.below(dirs.len())].clone();
        let op = rng.below(12);
        match op {
            0 | 1 => {
                let dir = pick_dir(&mut rng);
                let name = if rng.below(2) == 0 {
                    pool_name.clone()
                } else {
                    format!("c{counter}")
                };
                let path = dir.join(&name);
                if path.is_dir() {
                    continue;
                }
                let existed = path.exists();
                fs::write(&path, vec![2u8; rng.below(5000)]).unwrap();
                let change = if existed {
                    Change::seen(false, false, false)
                } else {
                    CREATED
                };
                event(&mut tree, &dir, &name, change);
            }
            2 | 3 if !files.is_empty() => {
                let path = files[rng.below(files.len())].clone();
                let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
                let len = f.metadata().unwrap().len();
                let new = if rng.below(2) == 0 {
                    len + u64::try_from(rng.below(4000)).unwrap()
                } else {
                    len / 2
                };
                f.set_len(new).unwrap();
                let (dir, name) = split(&path);
                event(&mut tree, &dir, &name, Change::seen(false, false, false));
            }
            4 if !files.is_empty() => {
                let path = files[rng.below(files.len())].clone();
                fs::remove_file(&path).unwrap();
                let (dir, name) = split(&path);
                event(&mut tree, &dir, &name, deleted());
            }
            5 | 6 if !files.is_empty() => {
                let path = files[rng.below(files.len())].clone();
                let nlink = fs::metadata(&path).unwrap().nlink();
                let same_project = path.starts_with(&a);
                let target_dir = match rng.below(8) {
                    0 => out.clone(),
                    _ => {
                        let d = pick_dir(&mut rng);
                        // A multi-link file keeps the project its first name was counted in:
                        // keep those in theirs, so per-project totals stay comparable.
                        if nlink > 1 && d.starts_with(&a) != same_project {
                            continue;
                        }
                        d
                    }
                };
                if nlink > 1 && target_dir == out {
                    continue;
                }
                let target = target_dir.join(&pool_name);
                if target.is_dir() || target == path {
                    continue;
                }
                if target.exists() && fs::metadata(&target).unwrap().nlink() > 1 {
                    continue; // replacing one name of a multi-link file: same reason
                }
                fs::rename(&path, &target).unwrap();
                let (dir, name) = split(&path);
                event(&mut tree, &dir, &name, away());
                event(&mut tree, &target_dir, &pool_name, moved_in());
            }
            7 if !files.is_empty() => {
                let path = files[rng.below(files.len())].clone();
                let dir = pick_dir(&mut rng);
                if dir.starts_with(&a) != path.starts_with(&a) {
                    continue;
                }
                let name = format!("l{counter}");
                fs::hard_link(&path, dir.join(&name)).unwrap();
                event(&mut tree, &dir, &name, CREATED);
            }
            8 => {
                let store = out.join(format!("s{counter}"));
                fs::write(&store, vec![3u8; rng.below(3000)]).unwrap();
                let dir = pick_dir(&mut rng);
                let name = format!("s{counter}");
                fs::hard_link(&store, dir.join(&name)).unwrap();
                event(&mut tree, &dir, &name, CREATED);
            }
            9 => {
                let dir = pick_dir(&mut rng);
                let name = format!("m{counter}");
                fs::create_dir_all(dir.join(&name).join("x")).unwrap();
                for f in 0..rng.below(4) {
                    fs::write(dir.join(&name).join(format!("x/g{f}")), vec![4u8; 321]).unwrap();
                    fs::write(dir.join(&name).join(format!("g{f}")), vec![4u8; 123]).unwrap();
                }
                event(&mut tree, &dir, &name, CREATED);
            }
            10 if dirs.len() > 2 => {
                let victim = dirs[rng.below(dirs.len())].clone();
                if victim == a || victim == b {
                    continue;
                }
                let mut inner = (Vec::new(), Vec::new());
                walk(&victim, &mut inner.0, &mut inner.1);
                let cross = inner.0.iter().any(|f| fs::metadata(f).unwrap().nlink() > 1);
                let (dir, name) = split(&victim);
                if rng.below(2) == 0 || cross {
                    fs::remove_dir_all(&victim).unwrap();
                    event(&mut tree, &dir, &name, deleted());
                } else {
                    let to = pick_dir(&mut rng);
                    let target = to.join(format!("v{counter}"));
                    if to.starts_with(&victim) {
                        continue;
                    }
                    fs::rename(&victim, &target).unwrap();
                    event(&mut tree, &dir, &name, away());
                    event(&mut tree, &to, &format!("v{counter}"), moved_in());
                }
            }
            _ => continue,
        }
        tree.finalize(&mut NoHooks);
        if step % 20 == 19 || step + 1 == steps {
            let mut fresh = Tree::default();
            fresh.set_projects(&projects, &mut NoHooks);
            for id in [1, 2] {
                assert_eq!(
                    tree.total(id),
                    fresh.total(id),
                    "mask {mask:#x} seed {seed}: project {id} after step {step} (op {op})"
                );
            }
        }
    }
}

#[test]
fn churn_matches_a_fresh_walk_with_full_name_hashes() {
    churn_matches_a_fresh_walk(u32::MAX, 0x9e37_79b9_7f4a_7c15, 400);
}

#[test]
fn churn_matches_a_fresh_walk_when_every_name_of_a_directory_hashes_alike() {
    churn_matches_a_fresh_walk(0, 0x2545_f491_4f6c_dd1d, 400);
}

#[test]
fn churn_matches_a_fresh_walk_when_a_quarter_of_the_names_hash_alike() {
    churn_matches_a_fresh_walk(3, 0x1234_5678_9abc_def1, 400);
}

/// Hard links are counted once: a link made after the baseline to a file the table holds,
/// one from a store outside every project, one within the same directory; deleting one name
/// keeps the file, deleting the last drops it.
#[test]
fn hard_links_are_counted_once_through_every_name() {
    let base = tempdir();
    let (a, out) = (base.path().join("A"), base.path().join("out"));
    fs::create_dir_all(a.join("x/y")).unwrap();
    fs::create_dir_all(&out).unwrap();
    fs::write(a.join("x/f"), vec![0u8; 1000]).unwrap();
    fs::write(out.join("store"), vec![0u8; 500]).unwrap();
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &a)], &mut NoHooks);
    assert_eq!(tree.total(1), 1000);
    // A second name of a file already counted.
    fs::hard_link(a.join("x/f"), a.join("x/y/g")).unwrap();
    event(&mut tree, &a.join("x/y"), "g", CREATED);
    fs::hard_link(a.join("x/f"), a.join("x/f2")).unwrap();
    event(&mut tree, &a.join("x"), "f2", CREATED);
    tree.finalize(&mut NoHooks);
    assert_eq!(tree.total(1), 1000, "links of a counted file");
    // A name of a file outside every project counts once.
    fs::hard_link(out.join("store"), a.join("s")).unwrap();
    event(&mut tree, &a, "s", CREATED);
    tree.finalize(&mut NoHooks);
    assert_eq!(tree.total(1), 1500);
    // Growth through one name is growth of the file.
    fs::OpenOptions::new()
        .write(true)
        .open(a.join("x/y/g"))
        .unwrap()
        .set_len(4000)
        .unwrap();
    event(
        &mut tree,
        &a.join("x/y"),
        "g",
        Change::seen(false, false, false),
    );
    tree.finalize(&mut NoHooks);
    assert_eq!(tree.total(1), 4500);
    for (dir, name) in [("x", "f"), ("x", "f2")] {
        fs::remove_file(a.join(dir).join(name)).unwrap();
        event(&mut tree, &a.join(dir), name, deleted());
        tree.finalize(&mut NoHooks);
        assert_eq!(tree.total(1), 4500, "{name} was not the last name");
    }
    fs::remove_file(a.join("x/y/g")).unwrap();
    event(&mut tree, &a.join("x/y"), "g", deleted());
    tree.finalize(&mut NoHooks);
    assert_eq!(tree.total(1), 500);
    // A baseline with links inside it counts each file once too.
    let mut fresh = Tree::default();
    fs::hard_link(a.join("s"), a.join("x/s2")).unwrap();
    fresh.set_projects(&[project(1, &a)], &mut NoHooks);
    assert_eq!(fresh.total(1), 500);
    let (_fd, key, _) = open(&a);
    assert!(fresh.has_dir(key));
}

/// fanotify hands the table directories opened from file handles with `O_PATH`, which cannot
/// be listed: a deletion in a small directory (re-read from a listing) must still be resolved
/// there and then, not by a re-walk of the whole project.
#[test]
fn a_deletion_seen_through_a_path_handle_is_resolved_without_a_rewalk() {
    let base = tempdir();
    let a = base.path().join("A");
    fs::create_dir_all(a.join("d")).unwrap();
    for f in 0..5 {
        fs::write(a.join(format!("d/f{f}")), vec![0u8; 100]).unwrap();
    }
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &a)], &mut NoHooks);
    assert_eq!(tree.total(1), 500);
    fs::remove_file(a.join("d/f3")).unwrap();
    let handle = rustix::fs::open(
        a.join("d"),
        fsys::handle_flags() | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let st = fsys::stat_fd(&handle).unwrap();
    let at = At {
        fd: handle.as_fd(),
        mnt: st.mnt_id,
    };
    assert!(tree.reconcile(key_of(&st), at, c"f3", deleted(), &mut NoHooks));
    tree.finalize(&mut NoHooks);
    assert_eq!(tree.total(1), 400);
    assert!(!tree.walks_pending(), "the deletion asked for a re-walk");
}

/// A tree shaped like the scale bench's (`node_modules`: a directory per ~7 files, short
/// names): with the directories packed (`dirs/`) and 12-byte entries (`entries.rs`), the
/// table costs at most 24 bytes per tracked file (39.5 with a hash map slot, a name and a list
/// allocation per directory and 16-byte entries), of which a directory's own record, index
/// bucket and name at most 56 bytes.
#[test]
fn a_tree_of_small_directories_costs_at_most_24_bytes_per_tracked_file() {
    if !crate::testkit::require_root(
        "a_tree_of_small_directories_costs_at_most_24_bytes_per_tracked_file",
    ) {
        return;
    }
    let tmpfs = Tmpfs::mount().expect("mount tmpfs");
    let root = tmpfs.path.join("ws/p");
    for d in 0..3_000 {
        let dir = root.join(format!("node_modules/pkg-{d:04}/lib"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..14 {
            let at = if f % 2 == 0 {
                dir.as_path()
            } else {
                dir.parent().unwrap()
            };
            fs::write(at.join(format!("mod{f:02}.js")), b"").unwrap();
        }
    }
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &root)], &mut NoHooks);
    assert_eq!(tree.tracked_files(), 42_000);
    let per_file = tree.heap_bytes() as f64 / 42_000.0;
    let per_dir = tree.dirs.dir_heap_bytes() as f64 / tree.dirs.len() as f64;
    eprintln!(
        "size table, 7 files per directory: {per_file:.1} B per tracked file, {per_dir:.1} B \
         per directory besides its entries"
    );
    assert_eq!(tree.dirs.len(), 6_002);
    assert!(per_dir <= 56.0, "{per_dir:.1} B per directory");
    assert!(per_file <= 24.0, "{per_file:.1} B per tracked file");
}

/// A project's periodic re-walk (`rewalk.rs`) runs only when its filesystem changed since its
/// last walk began: turns on an idle filesystem pass without reading a directory, and a write
/// anywhere on it makes the next turn walk (and correct a count that drifted).
#[test]
fn periodic_rewalks_pass_while_the_filesystem_is_unchanged() {
    if !crate::testkit::require_root("periodic_rewalks_pass_while_the_filesystem_is_unchanged") {
        return;
    }
    let tmpfs = Tmpfs::mount().expect("mount tmpfs");
    let root = tmpfs.path.join("p");
    fs::create_dir_all(root.join("src")).unwrap();
    fs::write(root.join("src/a"), vec![b'a'; 3_000]).unwrap();
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &root)], &mut NoHooks);
    assert_eq!(tree.total(1), 3_000);
    // Every turn due at once (a tick walks or passes for at most its slice).
    tree.walks.set_period_for_tests(Duration::ZERO);
    for _ in 0..3 {
        tree.rewalk_due("test", &mut NoHooks);
    }
    assert_eq!(
        tree.walks.done, 0,
        "walked again though idle since its baseline"
    );
    assert!(tree.walks.passed > 0, "no turn came");
    // A file no event told the tree about (a count that drifted): the write moves the
    // filesystem's free blocks, so the next turn walks and finds it.
    fs::write(root.join("src/b"), vec![b'b'; 5_000]).unwrap();
    tree.rewalk_due("test", &mut NoHooks);
    assert_eq!(tree.walks.done, 1);
    assert_eq!(tree.total(1), 8_000);
    tree.rewalk_due("test", &mut NoHooks);
    assert_eq!(tree.walks.done, 1, "settled again");

    // No counts to compare: every turn walks.
    let unbounded = Tmpfs::mount_with(c"size=0,nr_inodes=0").expect("mount tmpfs");
    let root = unbounded.path.join("p");
    fs::create_dir_all(&root).unwrap();
    let mut tree = Tree::default();
    tree.set_projects(&[project(1, &root)], &mut NoHooks);
    tree.walks.set_period_for_tests(Duration::ZERO);
    tree.rewalk_due("test", &mut NoHooks);
    assert!(tree.walks.done > 1, "{} walks", tree.walks.done);
    assert_eq!(tree.walks.passed, 0);
}
