use super::*;
use std::os::unix::fs::symlink;
use std::process::Command;

/// `du -sB1 -x` (plus `--apparent-size` when asked) of `path`, in bytes.
fn du(path: &Path, apparent: bool) -> u64 {
    let mut cmd = Command::new("du");
    cmd.arg("-sB1").arg("-x");
    if apparent {
        cmd.arg("--apparent-size");
    }
    let out = cmd.arg(path).output().expect("run du");
    assert!(
        out.status.success(),
        "du failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn build_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("d/node_modules/x")).unwrap();
    for (i, size) in [0usize, 1, 4095, 4096, 4097, 100_000, 1 << 20]
        .iter()
        .enumerate()
    {
        std::fs::write(root.join(format!("a/f{i}")), vec![7u8; *size]).unwrap();
        std::fs::write(root.join(format!("a/b/c/g{i}")), vec![1u8; *size / 2]).unwrap();
    }
    std::fs::write(root.join("d/node_modules/x/big"), vec![3u8; 300_000]).unwrap();
    // Hard links: inside one dir, across dirs.
    std::fs::hard_link(root.join("a/f5"), root.join("a/b/f5-link")).unwrap();
    std::fs::hard_link(root.join("a/f6"), root.join("d/f6-link")).unwrap();
    // Symlinks: to a file inside, to a dir outside, dangling.
    symlink("f1", root.join("a/link-to-f1")).unwrap();
    symlink("/usr", root.join("d/link-to-usr")).unwrap();
    symlink("/nonexistent/target/path", root.join("d/dangling")).unwrap();
}

#[test]
fn scan_equals_du_with_hard_links_and_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    build_tree(&root);
    let walked = scan_path(&root).unwrap();
    let usage = walked.tally.usage();
    assert_eq!(
        usage.allocated,
        du(&root, false),
        "allocated bytes vs du -sB1 -x"
    );
    assert_eq!(
        usage.apparent,
        du(&root, true),
        "apparent bytes vs du --apparent-size"
    );
    assert!(walked.errors.is_empty(), "{:?}", walked.errors);
}

#[test]
fn freeable_counts_shared_hard_links_only_when_all_links_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    build_tree(&root);
    // d/f6-link shares its inode with a/f6 (1 MiB): deleting d alone frees none of it.
    let d = scan_path(&root.join("d")).unwrap();
    let usage = d.tally.usage();
    let freeable = d.tally.freeable();
    assert!(usage.allocated >= freeable.allocated + (1 << 20));
    // The whole tree holds both links, so all of it is freeable.
    let all = scan_path(&root).unwrap();
    assert_eq!(all.tally.usage(), all.tally.freeable());
}

#[test]
fn shared_lists_the_inodes_a_tree_holds_only_some_links_of() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    build_tree(&root);
    let id = |p: &str| crate::fsys::identity_of(&root.join(p)).unwrap();
    // d holds one of a/f6's two links; a/f5's two links are both under a.
    let d = scan_path(&root.join("d")).unwrap();
    assert_eq!(
        d.tally.shared(),
        [SharedInode {
            identity: id("a/f6"),
            nlink: 2,
            seen: 1
        }]
    );
    let a = scan_path(&root.join("a")).unwrap();
    let shared: Vec<_> = a.tally.shared().iter().map(|s| s.identity).collect();
    assert_eq!(shared, [id("a/f6")]);
    assert!(scan_path(&root).unwrap().tally.shared().is_empty());
}

#[test]
fn unreadable_dir_is_reported_not_fatal() {
    if !crate::testkit::require_root("unreadable_dir_is_reported_not_fatal") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    build_tree(&root);
    let locked = root.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("secret"), vec![1u8; 8192]).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    // Root reads every dir: the walk runs on a thread of its own that has given up
    // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (capabilities are per thread), inside a
    // one-thread pool so it never hops to the walk pool's privileged threads. The walk pool is
    // built first, here: threads inherit the capabilities of the thread that starts them.
    crate::fsys::walk_pool();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let walked = pool.install(|| {
        crate::testkit::drop_capabilities_of_this_thread(&[
            crate::testkit::CAP_DAC_OVERRIDE,
            crate::testkit::CAP_DAC_READ_SEARCH,
        ]);
        scan_path(&root).expect("the walk itself goes on")
    });
    let errors: Vec<_> = walked.errors.iter().map(|e| e.path.clone()).collect();
    assert_eq!(errors, std::slice::from_ref(&locked), "{:?}", walked.errors);
    assert!(
        walked.errors[0].error.contains("Permission denied"),
        "{:?}",
        walked.errors
    );
    // Everything else is still counted: the locked dir's own inode, not its contents.
    let full = scan_path(&root).unwrap();
    assert!(full.errors.is_empty(), "{:?}", full.errors);
    assert_eq!(walked.tally.usage().files + 1, full.tally.usage().files);
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn rule_matches_are_measured_whole_and_not_searched_inside() {
    struct NodeModules;
    impl Classify for NodeModules {
        fn rule_for(&self, name: &OsStr, _: &EntryStat, _: usize, _: &Around<'_>) -> Option<usize> {
            (name == "node_modules" || name == "x").then_some(0)
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    build_tree(&root);
    let fd = fsys::open_dir_path(&root).unwrap();
    let walked = walk_tree(fd.as_fd(), &root, &NodeModules).unwrap();
    assert_eq!(
        walked.matches.len(),
        1,
        "x inside node_modules is not a separate match"
    );
    let m = &walked.matches[0];
    assert_eq!(m.rel_path, PathBuf::from("d/node_modules"));
    assert_eq!(
        m.freeable.allocated,
        du(&root.join("d/node_modules"), false)
    );
}

#[test]
fn keep_marker_hides_matches_and_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    build_tree(&root);
    std::fs::write(root.join("d").join(KEEP_MARKER), b"").unwrap();
    struct All;
    impl Classify for All {
        fn rule_for(&self, name: &OsStr, _: &EntryStat, _: usize, _: &Around<'_>) -> Option<usize> {
            (name == "node_modules").then_some(0)
        }
    }
    let fd = fsys::open_dir_path(&root).unwrap();
    let walked = walk_tree(fd.as_fd(), &root, &All).unwrap();
    assert!(walked.contains_keep);
    assert!(walked.matches.is_empty());
}

#[test]
fn keep_marker_exempts_only_its_own_subtree() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    build_tree(&root);
    std::fs::create_dir_all(root.join("a/node_modules")).unwrap();
    std::fs::write(root.join("d").join(KEEP_MARKER), b"").unwrap();
    struct NodeModules;
    impl Classify for NodeModules {
        fn rule_for(&self, name: &OsStr, _: &EntryStat, _: usize, _: &Around<'_>) -> Option<usize> {
            (name == "node_modules").then_some(0)
        }
    }
    let fd = fsys::open_dir_path(&root).unwrap();
    let walked = walk_tree(fd.as_fd(), &root, &NodeModules).unwrap();
    assert!(walked.contains_keep);
    let paths: Vec<_> = walked.matches.iter().map(|m| m.rel_path.clone()).collect();
    assert_eq!(
        paths,
        [PathBuf::from("a/node_modules")],
        "d is kept, a is not"
    );
}

#[test]
fn deep_trees_are_walked_to_the_limit_without_overflowing_a_stack() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("deep");
    std::fs::create_dir(&root).unwrap();
    // Build MAX_DEPTH + 10 levels relative to an fd (paths this long exceed PATH_MAX).
    let mut fd = fsys::open_dir_path(&root).unwrap();
    for _ in 0..MAX_DEPTH + 10 {
        rustix::fs::mkdirat(&fd, c"d", rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
        fd = fsys::open_child_dir(&fd, c"d").unwrap();
    }
    let walked = scan_path(&root).unwrap();
    assert!(
        walked.tally.usage().dirs as usize >= MAX_DEPTH,
        "walked {} dirs",
        walked.tally.usage().dirs
    );
    assert!(
        walked
            .errors
            .iter()
            .any(|e| e.error.contains("deeper than")),
        "the cut is reported"
    );
}
