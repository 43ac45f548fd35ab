//! Test harness shared by the integration tests: real tmpfs and loop-mounted ext4 filesystems,
//! project trees, fillers, tree digests for byte-for-byte comparisons, and the real `guardian`
//! binary. Tests that need root say so loudly and skip when not root.
#![allow(dead_code)]

pub mod stress;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const MIB: u64 = 1 << 20;

/// True when running as root; otherwise a loud SKIPPED line naming the test, or a failure when
/// `GUARDIAN_REQUIRE_PRIVILEGED_TESTS=1` (CI) — see `guardian::testkit`.
pub fn require_root(test: &str) -> bool {
    guardian::testkit::require_root(test)
}

/// The `guardian` binary built for these tests.
pub fn guardian_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_guardian"))
}

/// Runs `guardian ARGS` to completion.
pub fn guardian(args: &[&str]) -> Output {
    Command::new(guardian_bin())
        .args(args)
        .env("GUARDIAN_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run guardian")
}

/// A filesystem mounted for one test on a fresh directory; unmounted on drop.
pub struct TestMount {
    pub dir: PathBuf,
    image: Option<PathBuf>,
    _holder: tempfile::TempDir,
}

impl TestMount {
    /// A tmpfs of `bytes`.
    pub fn tmpfs(bytes: u64) -> TestMount {
        let holder = tempfile::tempdir().unwrap();
        let dir = holder.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        // mode=0755: a tmpfs root is 1777 by default, and Guardian refuses to keep its own
        // files in a directory others can write.
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0755"))
            .arg("guardian-test")
            .arg(&dir));
        TestMount {
            dir,
            image: None,
            _holder: holder,
        }
    }

    /// An ext4 filesystem of `bytes` in a loop-mounted image file.
    pub fn ext4(bytes: u64) -> TestMount {
        let holder = tempfile::tempdir().unwrap();
        let image = holder.path().join("disk.img");
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(bytes).unwrap();
        drop(file);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        let dir = holder.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&dir));
        TestMount {
            dir,
            image: Some(image),
            _holder: holder,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        // Lazy unmount: a test that failed may still have a process inside.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = self.image.take();
    }
}

pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `statvfs` of `path`: (size, available-to-users) in bytes.
pub fn space(path: &Path) -> (u64, u64) {
    let st = rustix::fs::statvfs(path).unwrap();
    (st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
}

/// Free space in percent of size, as `df` shows it.
pub fn free_percent(path: &Path) -> f64 {
    let (total, avail) = space(path);
    avail as f64 * 100.0 / total as f64
}

/// Writes a file of `bytes` (non-zero, so it is allocated on every filesystem).
pub fn write_file(path: &Path, bytes: u64) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let chunk = vec![0x5au8; MIB as usize];
    let mut file = std::fs::File::create(path).unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB) as usize;
        std::io::Write::write_all(&mut file, &chunk[..n]).unwrap();
        left -= n as u64;
    }
    file.sync_all().unwrap();
}

/// Writes `count` files of `each` bytes under `dir`, spread over a few subdirs.
pub fn write_files(dir: &Path, count: usize, each: u64) {
    for i in 0..count {
        write_file(&dir.join(format!("d{}/f{i}", i % 5)), each);
    }
}

/// Grows a filler file (outside any workspace) until the filesystem is `used_percent` used,
/// as `df` counts it (used = size - avail).
pub fn fill_to_used(mount: &Path, filler: &Path, used_percent: f64) {
    let (total, avail) = space(mount);
    let want_avail = (total as f64 * (100.0 - used_percent) / 100.0) as u64;
    assert!(avail > want_avail, "already more than {used_percent}% used");
    write_file(filler, avail - want_avail);
}

/// Sets the mtime of every entry in the tree (and of the root) to `ago` in the past.
pub fn age_tree(path: &Path, ago: Duration) {
    let when = SystemTime::now() - ago;
    fn walk(p: &Path, when: SystemTime) {
        let meta = std::fs::symlink_metadata(p).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                walk(&e.path(), when);
            }
            std::fs::File::open(p).unwrap().set_modified(when).unwrap();
        } else if meta.is_file() {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }
    walk(path, when);
}

/// A digest of a tree: every entry's relative path → kind, size, content hash, link target.
/// Two equal digests mean the tree is unchanged byte for byte.
pub fn digest(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let meta = std::fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let desc = if meta.file_type().is_symlink() {
            format!("link -> {}", std::fs::read_link(p).unwrap().display())
        } else if meta.is_dir() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                walk(root, &e.path(), out);
            }
            "dir".to_string()
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(p).unwrap().hash(&mut h);
            format!("file {} {:x} ino {}", meta.len(), h.finish(), meta.ino())
        };
        out.insert(rel, desc);
    }
    walk(root, root, &mut out);
    out
}

/// `daemon.active_within` of [`write_config`]: a project changed within it is never deleted
/// whole. Tests that expect phase 2 wait it out with [`wait_out_activity`].
pub const TEST_ACTIVE_WITHIN: Duration = Duration::from_secs(1);

/// Waits until every project written so far is idle longer than [`TEST_ACTIVE_WITHIN`]
/// (activity comes from ctime, which cannot be back-dated: only time makes a project idle).
pub fn wait_out_activity() {
    std::thread::sleep(TEST_ACTIVE_WITHIN + Duration::from_millis(1100));
}

/// Writes a config for a workspace at `workspace`, with the audit log and state under `state`.
/// The HTTP server is off unless `extra` has a `[serve]` table: daemons of tests running in
/// parallel would otherwise contend for its default port (and report that as a problem).
pub fn write_config(path: &Path, workspace: &Path, state: &Path, poll: &str, extra: &str) {
    let serve = if extra.contains("[serve]") {
        ""
    } else {
        "\n[serve]\nenabled = false\n"
    };
    let text = format!(
        r#"[daemon]
poll_interval = "{poll}"
audit_log = "{state}/audit.jsonl"
state_dir = "{state}/state"
active_within = "1s"

[thresholds]
cleanup_free = "20%"
critical_free = "10%"
target_free = "30%"

[[workspaces]]
path = "{ws}"
protect = ["dispatch-worker", "output", "task-wrapper.sh"]

[[rules]]
name = "regenerable"
phase = 1
names = ["node_modules", ".git", "__pycache__"]

[[rules]]
name = "old-logs"
phase = 1
globs = ["*.log"]
older_than = "1h"
{extra}{serve}"#,
        poll = poll,
        state = state.display(),
        ws = workspace.display(),
    );
    std::fs::write(path, text).unwrap();
}

/// Reads the audit log as JSON values: the outcome lines (a deletion's intent line, written
/// before anything is unlinked, is left out; see [`audit_intents`]).
pub fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    all_audit_lines(path)
        .into_iter()
        .filter(|l| l["outcome"] != "intent")
        .collect()
}

/// The intent lines of the audit log.
pub fn audit_intents(path: &Path) -> Vec<serde_json::Value> {
    all_audit_lines(path)
        .into_iter()
        .filter(|l| l["outcome"] == "intent")
        .collect()
}

/// Every line of the audit log, each of which must be JSON.
pub fn all_audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// A child process killed on drop.
pub struct Reaped(pub Child);

impl Reaped {
    pub fn spawn(cmd: &mut Command) -> Reaped {
        Reaped(cmd.stdin(Stdio::null()).spawn().expect("spawn"))
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Waits until `/proc` shows the child `pid` with its cwd at `dir` (it is set up).
pub fn wait_for_cwd(pid: i32, dir: &Path) {
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_link(format!("/proc/{pid}/cwd"))
                .ok()
                .as_deref()
                == Some(dir)
        }),
        "process {pid} never had its cwd in {}",
        dir.display()
    );
}

/// Every metric family `/metrics` exports (the names the fleet files in deploy/ may use;
/// tests/serve.rs checks a real scrape has each of them, tests/fleet.rs that the files name
/// no other).
pub const EXPORTED_METRICS: &[&str] = &[
    "guardian_filesystem_size_bytes",
    "guardian_filesystem_avail_bytes",
    "guardian_filesystem_threshold_bytes",
    "guardian_filesystem_time_to_threshold_seconds",
    "guardian_project_written_bytes_total",
    "guardian_cleanup_freed_bytes_total",
    "guardian_cleanup_actions_total",
    "guardian_cleanup_cycles_total",
    "guardian_cleanup_cycle_duration_seconds",
    "guardian_cleanup_cycle_duration_seconds_bucket",
    "guardian_cleanup_cycle_duration_seconds_sum",
    "guardian_cleanup_cycle_duration_seconds_count",
    "guardian_ghosts_reaped_total",
    "guardian_source_info",
    "guardian_build_info",
    "guardian_refusing",
];
