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

/// Voluntary context switches of the daemon's main thread (the loop: one per wake-up).
fn main_thread_wakeups(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

/// With nothing written the sampler rests (a sample a second, not every `sample_interval`), and
/// the first MiB a new writer puts down wakes it through the write countdown — far above every
/// threshold, where the countdown's budget is otherwise the headroom, hundreds of MiB. Counts,
/// not timing: the loop's wake-ups over a quiet window, and the wake-up's own log line. With
/// each source that has a countdown.
#[test]
fn an_idle_sampler_rests_and_a_new_writers_first_mib_wakes_it() {
    if !require_root("an_idle_sampler_rests_and_a_new_writers_first_mib_wakes_it") {
        return;
    }
    for source in ["ebpf", "fanotify", "inotify"] {
        let mount = TestMount::tmpfs(512 * MIB);
        let ws = mount.path("dispatch");
        for i in 0..20 {
            write_files(&ws.join(format!("p{i:02}/src")), 3, 4096);
        }
        let state = mount.path("guardian");
        let config = mount.path("guardian.toml");
        write_config(&config, &ws, &state, "1h", "");
        let text = std::fs::read_to_string(&config).unwrap().replacen(
            "[daemon]\n",
            &format!("[daemon]\nsource = \"{source}\"\nsample_interval = \"100ms\"\n"),
            1,
        );
        std::fs::write(&config, text).unwrap();
        let log = mount.path("daemon.log");
        let daemon = Reaped::spawn(
            Command::new(guardian_bin())
                .args(["run", "--config", config.to_str().unwrap()])
                .env("GUARDIAN_LOG", "warn,guardian::daemon=debug")
                .stderr(std::fs::File::create(&log).unwrap()),
        );
        assert!(
            wait_until(Duration::from_secs(20), || state
                .join("state/state.json")
                .exists()),
            "{source}: the daemon never wrote its state"
        );
        // Start-up settles (the baseline walk, the first samples).
        std::thread::sleep(Duration::from_secs(3));
        let pid = daemon.pid();
        let before = main_thread_wakeups(pid);
        std::thread::sleep(Duration::from_secs(5));
        let wakeups = main_thread_wakeups(pid) - before;
        eprintln!("{source}: {wakeups} wake-ups of the loop in 5 s of quiet");
        // At its pace, 50 samples; resting, 5 (and a few others).
        assert!(
            wakeups <= 20,
            "{source}: the loop woke {wakeups} times in 5 s with nothing written"
        );
        let wakes = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("sampling: woken by the") && l.contains("resting=true"))
                .count()
        };
        assert_eq!(wakes(), 0, "{source}: woken with nothing written");
        let mut f = std::fs::File::create(ws.join("p07/src/new.bin")).unwrap();
        std::io::Write::write_all(&mut f, &vec![7u8; 3 * MIB as usize]).unwrap();
        drop(f);
        assert!(
            wait_until(Duration::from_secs(10), || wakes() >= 1),
            "{source}: 3 MiB written while resting woke nothing: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}
