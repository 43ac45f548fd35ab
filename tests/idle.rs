//! An idle daemon costs nothing on the node's disks (issue 16): with its state file in the
//! runtime dir (a tmpfs) and nothing written into the workspaces, it writes no byte to disk and
//! does not replace its state file. Counts, not timing: `/proc/PID/io` `write_bytes` (bytes the
//! process sent towards storage), the state file's inode (every write replaces it), the loop
//! device's own count of sectors written.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// How long the idle daemon is watched.
const WATCH: Duration = Duration::from_secs(10);

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

#[test]
fn idle_daemon_writes_nothing_to_disk_and_keeps_its_state_file() {
    if !require_root("idle_daemon_writes_nothing_to_disk_and_keeps_its_state_file") {
        return;
    }
    let workspaces = TestMount::tmpfs(64 * MIB);
    let disk = TestMount::ext4(64 * MIB);
    let runtime = TestMount::tmpfs(8 * MIB);
    let ws = workspaces.path("dispatch");
    for i in 0..300 {
        let src = ws.join(format!("p{i:03}/src"));
        std::fs::create_dir_all(&src).unwrap();
        for j in 0..3 {
            std::fs::write(src.join(format!("f{j}.txt")), [b'x'; 100]).unwrap();
        }
    }
    let state = disk.path("guardian");
    std::fs::create_dir_all(&state).unwrap();
    let config = disk.path("guardian.toml");
    write_config(&config, &ws, &state, "200ms", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[daemon]",
        &format!(
            "[daemon]\nsample_interval = \"50ms\"\njournal_vacuum = []\nruntime_dir = \"{}\"",
            runtime.path("run").display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "warn")
            .stderr(Stdio::null()),
    );
    let file = runtime.path("run/state.json");
    assert!(wait_until(Duration::from_secs(20), || file.exists()));
    assert!(
        !state.join("state/state.json").exists(),
        "the state file is in the runtime dir, not in state_dir"
    );
    // Start-up settles: the file shows the filesystem's forecast with all the samples it needs
    // (until then each poll's sample count is news, written at most every 30 s), and has been
    // still for 3 s since — a daemon that rewrites it while idle never gets there.
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
    let inode = || std::fs::metadata(&file).map(|m| m.ino()).ok();
    let mut still = (inode(), Instant::now());
    assert!(
        wait_until(Duration::from_secs(40), || {
            let now = inode();
            if now != still.0 {
                still = (now, Instant::now());
            }
            still.1.elapsed() >= Duration::from_secs(3)
        }),
        "the state file never stopped changing on an idle node"
    );
    // Whatever start-up left dirty in the page cache reaches the disk first.
    rustix::fs::sync();
    let pid = daemon.pid();
    let (bytes0, sectors0, inode0) = (
        io_field(pid, "write_bytes"),
        sectors_written(&disk.dir),
        inode(),
    );
    std::thread::sleep(WATCH);
    rustix::fs::sync();
    let (bytes1, sectors1, inode1) = (
        io_field(pid, "write_bytes"),
        sectors_written(&disk.dir),
        inode(),
    );
    assert_eq!(
        bytes1 - bytes0,
        0,
        "bytes written towards storage while idle"
    );
    assert_eq!(inode1, inode0, "the state file was replaced while idle");
    assert_eq!(
        sectors1 - sectors0,
        0,
        "sectors written to the disk holding state_dir and the audit log while idle"
    );
    let status = guardian(&["status", "--json", "--config", config.to_str().unwrap()]);
    assert!(status.status.success(), "guardian status finds the state");
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["pid"], pid);
}
