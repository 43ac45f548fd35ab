//! An idle daemon costs nothing on the node's disks (issue 16): with its state file and
//! `tasks.json` in the runtime dir (a tmpfs) and nothing written into the workspaces, it writes no
//! byte to disk and replaces neither file — with a task DB too, whose sweep and ghost reaper run
//! every 10 s and find the same each time. Counts, not timing: `/proc/PID/io` `write_bytes`
//! (bytes the process sent towards storage), the files' inodes (every write replaces them), the
//! loop device's own count of sectors written.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn io_field(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/io"))
}

/// Sectors written to the block device holding `path` (`/sys/dev/block/M:m/stat`, field 7).
fn sectors_written(path: &Path) -> u64 {
    let dev = std::fs::metadata(path).unwrap().dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat"))
        .expect("block device stat");
    stat.split_whitespace()
        .nth(6)
        .and_then(|v| v.parse().ok())
        .expect("sectors written")
}

fn inode(file: &Path) -> Option<u64> {
    std::fs::metadata(file).map(|m| m.ino()).ok()
}

/// 300 idle projects on a tmpfs; state dir and audit log on loop ext4; the runtime dir on a
/// tmpfs of its own.
struct IdleNode {
    workspaces: TestMount,
    disk: TestMount,
    runtime: TestMount,
    config: PathBuf,
}

impl IdleNode {
    /// `extra`: TOML appended to the config.
    fn new(extra: impl Fn(&IdleNode) -> String) -> IdleNode {
        let mut node = IdleNode {
            workspaces: TestMount::tmpfs(64 * MIB),
            disk: TestMount::ext4(64 * MIB),
            runtime: TestMount::tmpfs(8 * MIB),
            config: PathBuf::new(),
        };
        let ws = node.ws();
        for i in 0..300 {
            let src = ws.join(format!("p{i:03}/src"));
            std::fs::create_dir_all(&src).unwrap();
            for j in 0..3 {
                std::fs::write(src.join(format!("f{j}.txt")), [b'x'; 100]).unwrap();
            }
        }
        let state = node.state();
        std::fs::create_dir_all(&state).unwrap();
        node.config = node.disk.path("guardian.toml");
        write_config(&node.config, &ws, &state, "200ms", &extra(&node));
        let text = std::fs::read_to_string(&node.config).unwrap().replace(
            "[daemon]",
            &format!(
                "[daemon]\nsample_interval = \"50ms\"\njournal_vacuum = []\nruntime_dir = \"{}\"",
                node.run_dir().display()
            ),
        );
        std::fs::write(&node.config, text).unwrap();
        node
    }

    fn ws(&self) -> PathBuf {
        self.workspaces.path("dispatch")
    }

    fn state(&self) -> PathBuf {
        self.disk.path("guardian")
    }

    fn run_dir(&self) -> PathBuf {
        self.runtime.path("run")
    }

    fn start(&self) -> Reaped {
        Reaped::spawn(
            Command::new(guardian_bin())
                .args(["run", "--config", self.config.to_str().unwrap()])
                .env("GUARDIAN_LOG", "warn")
                .stderr(Stdio::null()),
        )
    }

    /// Waits until start-up settled: the state file shows the filesystem's forecast with all
    /// the samples it needs (until then each poll's sample count is news, written at most every
    /// 30 s), and has been still for 3 s since — a daemon that rewrites it while idle never
    /// gets there.
    fn settle(&self) {
        let file = self.run_dir().join("state.json");
        assert!(wait_until(Duration::from_secs(20), || file.exists()));
        let warm = || {
            std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["filesystems"][0]["forecast"]["samples"].as_u64())
                .is_some_and(|n| n >= 10)
        };
        assert!(
            wait_until(Duration::from_secs(60), warm),
            "the state file never showed a warm forecast"
        );
        let mut still = (inode(&file), Instant::now());
        assert!(
            wait_until(Duration::from_secs(40), || {
                let now = inode(&file);
                if now != still.0 {
                    still = (now, Instant::now());
                }
                still.1.elapsed() >= Duration::from_secs(3)
            }),
            "the state file never stopped changing on an idle node"
        );
    }

    /// Watches the idle daemon `pid` for `watch`: nothing towards storage, no sector written to
    /// the disk holding state_dir and the audit log, none of `files` replaced.
    fn assert_idle(&self, pid: i32, watch: Duration, files: &[PathBuf]) {
        // Whatever start-up left dirty in the page cache reaches the disk first.
        rustix::fs::sync();
        let inodes = || files.iter().map(|f| inode(f)).collect::<Vec<_>>();
        let (bytes0, sectors0, inodes0) = (
            io_field(pid, "write_bytes"),
            sectors_written(&self.disk.dir),
            inodes(),
        );
        std::thread::sleep(watch);
        rustix::fs::sync();
        let (bytes1, sectors1, inodes1) = (
            io_field(pid, "write_bytes"),
            sectors_written(&self.disk.dir),
            inodes(),
        );
        assert_eq!(
            bytes1 - bytes0,
            0,
            "bytes written towards storage while idle"
        );
        assert_eq!(
            inodes1, inodes0,
            "a file of {files:?} was replaced while idle"
        );
        assert_eq!(
            sectors1 - sectors0,
            0,
            "sectors written to the disk holding state_dir and the audit log while idle"
        );
    }
}

#[test]
fn idle_daemon_writes_nothing_to_disk_and_keeps_its_state_file() {
    if !require_root("idle_daemon_writes_nothing_to_disk_and_keeps_its_state_file") {
        return;
    }
    let node = IdleNode::new(|_| String::new());
    let daemon = node.start();
    node.settle();
    assert!(
        !node.state().join("state/state.json").exists(),
        "the state file is in the runtime dir, not in state_dir"
    );
    let pid = daemon.pid();
    node.assert_idle(
        pid,
        Duration::from_secs(10),
        &[node.run_dir().join("state.json")],
    );
    let status = guardian(&[
        "status",
        "--json",
        "--config",
        node.config.to_str().unwrap(),
    ]);
    assert!(status.status.success(), "guardian status finds the state");
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["pid"], pid);
}

/// With a task DB, the sweep (usage limits, a task area) and the ghost reaper run every 10 s and
/// find the same each time: `tasks.json` is in the runtime dir and is not replaced, and nothing
/// reaches the disk. Before, it was rewritten in `state_dir` after every run.
#[test]
fn idle_daemon_with_a_task_db_writes_nothing_to_disk_and_keeps_tasks_json() {
    if !require_root("idle_daemon_with_a_task_db_writes_nothing_to_disk_and_keeps_tasks_json") {
        return;
    }
    let node = IdleNode::new(|n| {
        let db = n.disk.path("dispatch.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(
                "CREATE TABLE tasks (id TEXT PRIMARY KEY, project TEXT NOT NULL, \
                 status TEXT NOT NULL, started_at, node TEXT, pid INTEGER);",
            )
            .unwrap();
        format!(
            "\n[tasks]\ndb = \"{db}\"\nnode = \"n1\"\ntask_areas = [\"{ws}\"]\n\
             sweep_interval = \"10s\"\n\n[[tasks.usage_limits]]\nworkspace = \"{ws}\"\n\
             warning = \"1GiB\"\n\n[tasks.ghosts]\ninterval = \"10s\"\n",
            db = db.display(),
            ws = n.ws().display()
        )
    });
    let daemon = node.start();
    let tasks = node.run_dir().join("tasks.json");
    assert!(
        wait_until(Duration::from_secs(20), || tasks.exists()),
        "tasks.json is in the runtime dir"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&tasks).unwrap()).unwrap();
    assert!(
        json["last_sweep"].is_string() && json["last_ghosts"].is_object(),
        "{json}"
    );
    assert_eq!(json["usage"].as_array().map(Vec::len), Some(1), "{json}");
    node.settle();
    assert!(!node.state().join("state/tasks.json").exists());
    // Longer than both intervals: at least one sweep and one ghost run in the window.
    node.assert_idle(
        daemon.pid(),
        Duration::from_secs(12),
        &[node.run_dir().join("state.json"), tasks],
    );
}
