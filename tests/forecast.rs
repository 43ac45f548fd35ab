//! End to end: the daemon's growth forecast starts phase 1 before a threshold is crossed. On a
//! loop-mounted 1 GiB ext4 with idle projects holding regenerable artifacts, the real `guardian
//! run` (write source as `auto` picks it) against a writer in a running project: at a steady
//! 20 MB/s the first cleanup comes before free space is under `cleanup_free` and names the
//! forecast; at the disk's full speed the writer never sees ENOSPC; far from the thresholds
//! growth alone triggers nothing.

mod support;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use support::*;

/// The tests of this binary run one at a time: each races a daemon against a writer (one at
/// 400+ MB/s), and three daemons with their writers on two CPUs measure the machine, not
/// Guardian.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Idle projects, each with a `node_modules` of this many 5 MiB files.
const IDLE_PROJECTS: usize = 4;
const NODE_MODULES_FILES: usize = 14;
/// How long the daemon watches the idle disk before a writer starts.
const IDLE_WARMUP: Duration = Duration::from_secs(5);

struct Setup {
    mount: TestMount,
    ws: PathBuf,
    config: PathBuf,
    state: PathBuf,
    /// Allocated bytes of every `node_modules` (what phase 1 may delete).
    regenerable: u64,
}

impl Setup {
    /// Idle projects with regenerable artifacts and a `busy` project the writer runs in.
    fn new() -> Setup {
        let mount = TestMount::ext4(1024 * MIB);
        let ws = mount.path("dispatch");
        for i in 0..IDLE_PROJECTS {
            let project = ws.join(format!("idle-{i}"));
            write_files(&project.join("node_modules"), NODE_MODULES_FILES, 5 * MIB);
            write_file(&project.join("src/main.rs"), 16 * 1024);
            age_tree(&project, Duration::from_secs((2 + i as u64) * 86400));
        }
        std::fs::create_dir_all(ws.join("busy")).unwrap();
        let regenerable = (0..IDLE_PROJECTS)
            .map(|i| allocated(&ws.join(format!("idle-{i}/node_modules"))))
            .sum();
        let state = mount.path("guardian-state");
        let config = mount.path("guardian.toml");
        write_config(&config, &ws, &state, "1s", "");
        Setup {
            mount,
            ws,
            config,
            state,
            regenerable,
        }
    }

    /// Starts `guardian run` and waits until it has written its first state and watched the
    /// idle disk for a while.
    fn start_daemon(&self) -> Reaped {
        let daemon = Reaped::spawn(
            Command::new(guardian_bin())
                .args(["run", "--config", self.config.to_str().unwrap()])
                .env("GUARDIAN_LOG", "info"),
        );
        assert!(
            wait_until(Duration::from_secs(20), || self
                .state
                .join("state/state.json")
                .exists()),
            "the daemon never wrote its state"
        );
        std::thread::sleep(IDLE_WARMUP);
        assert!(self.deletions().is_empty(), "nothing to do on an idle disk");
        daemon
    }

    fn deletions(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.state.join("audit.jsonl"))
            .into_iter()
            .filter(|l| l["action"] == "delete")
            .collect()
    }

    fn status(&self) -> serde_json::Value {
        let out = guardian(&[
            "status",
            "--json",
            "--config",
            self.config.to_str().unwrap(),
        ]);
        serde_json::from_slice(&out.stdout).expect("status --json")
    }

    /// Free bytes at each threshold, as Guardian resolves the config's percentages.
    fn level(&self, percent: f64) -> u64 {
        let (total, _) = space(&self.mount.dir);
        (total as f64 * percent / 100.0).round() as u64
    }
}

/// Allocated bytes of a tree (`du -sB1`, no hard links here).
fn allocated(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    own + std::fs::read_dir(path)
        .unwrap()
        .flatten()
        .map(|e| allocated(&e.path()))
        .sum::<u64>()
}

/// Free space sampled every 20 ms (wall clock, available bytes) until stopped.
struct SpaceLog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<(SystemTime, u64)>>>,
}

impl SpaceLog {
    fn start(mount: &Path) -> SpaceLog {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, mount) = (stop.clone(), mount.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                samples.push((SystemTime::now(), space(&mount).1));
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        SpaceLog {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(SystemTime, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// What a writer did: bytes written and the error that stopped it, if any.
struct Written {
    bytes: u64,
    error: Option<std::io::Error>,
    seconds: f64,
}

/// Writes `total` bytes into `path` in `chunk`-sized `write`s, one every `every` (as fast as
/// possible when `every` is zero), keeping the file open throughout: a running task.
fn write_steadily(path: &Path, total: u64, chunk: u64, every: Duration) -> Written {
    let data = vec![0x5au8; chunk as usize];
    let mut file = std::fs::File::create(path).unwrap();
    let began = Instant::now();
    let mut written = 0;
    let mut k = 0u32;
    while written < total {
        let due = began + every * k;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let n = (total - written).min(chunk) as usize;
        if let Err(e) = file.write_all(&data[..n]) {
            return Written {
                bytes: written,
                error: Some(e),
                seconds: began.elapsed().as_secs_f64(),
            };
        }
        written += n as u64;
        k += 1;
    }
    Written {
        bytes: written,
        error: None,
        seconds: began.elapsed().as_secs_f64(),
    }
}

fn audit_time(line: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(line["ts"].as_str().unwrap()).unwrap()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

#[test]
fn steady_20mb_per_s_is_cleaned_before_cleanup_free_and_the_audit_names_the_forecast() {
    if !require_root(
        "steady_20mb_per_s_is_cleaned_before_cleanup_free_and_the_audit_names_the_forecast",
    ) {
        return;
    }
    let _serial = one_at_a_time();
    let s = Setup::new();
    let cleanup_free = s.level(20.0);
    let (_, avail) = space(&s.mount.dir);
    // Enough to cross cleanup_free (and critical_free) without Guardian; the busy project
    // holds no regenerable bytes, the idle ones hold more than the writer needs.
    let total = avail - s.level(8.0);
    assert!(avail.saturating_sub(total) < cleanup_free && total < avail + s.regenerable);
    let _daemon = s.start_daemon();

    let log = SpaceLog::start(&s.mount.dir);
    // 1 MiB every 50 ms: 20.97 MB/s.
    let written = write_steadily(
        &s.ws.join("busy/checkpoint.bin"),
        total,
        MIB,
        Duration::from_millis(50),
    );
    let samples = log.finish();

    assert!(
        written.error.is_none(),
        "the writer failed after {:.0} MB: {:?}",
        mb(written.bytes),
        written.error
    );
    let deletions = s.deletions();
    let first = deletions
        .first()
        .expect("no cleanup although the writer crossed cleanup_free's level");
    let first_at = audit_time(first);
    let crossing = samples.iter().find(|(_, avail)| *avail < cleanup_free);
    // The lowest free space seen until the first deletion was done and recorded.
    let lowest_before_first = samples
        .iter()
        .take_while(|(t, _)| *t <= first_at)
        .map(|(_, a)| *a)
        .min()
        .unwrap();
    let writer_bps = written.bytes as f64 / written.seconds;
    eprintln!(
        "writer: {:.0} MB in {:.1} s; cleanup_free {:.0} MB; lowest free until the first audit line {:.0} MB \
         ({:.1} s ahead of cleanup_free at the writer's rate); \
         crossing {}; lowest free {:.0} MB; {} deletions; reason: {}",
        mb(written.bytes),
        written.seconds,
        mb(cleanup_free),
        mb(lowest_before_first),
        lowest_before_first.saturating_sub(cleanup_free) as f64 / writer_bps,
        match crossing {
            Some((t, _)) => format!(
                "{:.1} s after the first audit line",
                t.duration_since(first_at).map_or(-1.0, |d| d.as_secs_f64())
            ),
            None => "never".into(),
        },
        mb(samples.iter().map(|(_, a)| *a).min().unwrap()),
        deletions.len(),
        first["reason"]
    );
    if let Some((crossed_at, _)) = crossing {
        assert!(
            first_at < *crossed_at,
            "the first cleanup came after free space dropped under cleanup_free"
        );
    }
    assert!(lowest_before_first >= cleanup_free);
    assert_eq!(first["phase"], 1, "{first}");
    assert_eq!(first["outcome"], "deleted", "{first}");
    let reason = first["reason"].as_str().unwrap();
    assert!(
        reason.contains("preemptive") && reason.contains("forecast") && reason.contains("P90"),
        "the audit line must say which forecast triggered: {reason}"
    );
    assert!(first["path"].as_str().unwrap().ends_with("/node_modules"));
    assert_eq!(
        std::fs::metadata(s.ws.join("busy/checkpoint.bin"))
            .unwrap()
            .len(),
        total,
        "the running task's data is intact"
    );
    for line in &deletions {
        assert_eq!(line["phase"], 1, "a forecast never starts phase 2: {line}");
    }
}

#[test]
fn full_speed_writer_never_sees_enospc_while_regenerable_bytes_remain() {
    if !require_root("full_speed_writer_never_sees_enospc_while_regenerable_bytes_remain") {
        return;
    }
    let _serial = one_at_a_time();
    let s = Setup::new();
    let st = rustix::fs::statvfs(&s.mount.dir).unwrap();
    let (avail, free_with_reserve) = (st.f_bavail * st.f_frsize, st.f_bfree * st.f_frsize);
    // More than root could write without Guardian (the reserve included), less than the free
    // space plus what phase 1 may delete.
    let total = free_with_reserve + s.regenerable / 2;
    assert!(total > free_with_reserve && total < avail + s.regenerable);
    let _daemon = s.start_daemon();

    let log = SpaceLog::start(&s.mount.dir);
    let written = write_steadily(&s.ws.join("busy/image.bin"), total, 8 * MIB, Duration::ZERO);
    let samples = log.finish();
    let deletions = s.deletions();
    eprintln!(
        "writer: {:.0} MB in {:.2} s ({:.0} MB/s), initial free {:.0} MB (+{:.0} MB reserve), \
         regenerable {:.0} MB, lowest free {:.0} MB, {} deletions freeing {:.0} MB; first reason: {}",
        mb(written.bytes),
        written.seconds,
        mb(written.bytes) / written.seconds,
        mb(avail),
        mb(free_with_reserve - avail),
        mb(s.regenerable),
        mb(samples.iter().map(|(_, a)| *a).min().unwrap()),
        deletions.len(),
        mb(deletions
            .iter()
            .map(|l| l["bytes_unlinked"].as_u64().unwrap())
            .sum()),
        deletions.first().map_or(&serde_json::Value::Null, |l| &l["reason"])
    );
    assert!(
        written.error.is_none(),
        "ENOSPC (or another error) after {:.0} of {:.0} MB: {:?}",
        mb(written.bytes),
        mb(total),
        written.error
    );
    assert!(!deletions.is_empty());
    // Regenerable bytes first: phase 2 (idle project dirs, by the reactive path under
    // critical_free) only once phase 1 has nothing left, and never from a forecast.
    let last_phase1 = deletions.iter().rposition(|l| l["phase"] == 1).unwrap();
    for (i, line) in deletions.iter().enumerate() {
        let reason = line["reason"].as_str().unwrap();
        if line["phase"] == 1 {
            assert!(line["path"].as_str().unwrap().ends_with("/node_modules"));
        } else {
            assert!(i > last_phase1, "phase 2 before phase 1 was done: {line}");
            assert!(!reason.contains("preemptive"), "{line}");
        }
    }
}

#[test]
fn growth_far_from_the_thresholds_triggers_nothing() {
    if !require_root("growth_far_from_the_thresholds_triggers_nothing") {
        return;
    }
    let _serial = one_at_a_time();
    let s = Setup::new();
    let floor = s.level(40.0);
    let (_, avail) = space(&s.mount.dir);
    // 20 MB/s, stopping 60 MB above the 40 % floor.
    let total = avail - floor - 60_000_000;
    let _daemon = s.start_daemon();

    let log = SpaceLog::start(&s.mount.dir);
    let writer = {
        let path = s.ws.join("busy/steady.bin");
        std::thread::spawn(move || write_steadily(&path, total, MIB, Duration::from_millis(50)))
    };
    // While it writes, the daemon's forecast sees the growth (state.json, every poll).
    let rate_of = |v: &serde_json::Value| v["rate_bps"].as_f64().unwrap_or(0.0);
    let mut seen = serde_json::Value::Null;
    while !writer.is_finished() {
        let status = s.status();
        let fs = &status["filesystems"][0]["forecast"];
        if rate_of(fs) > rate_of(&seen) {
            seen = fs.clone();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let written = writer.join().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let samples = log.finish();

    assert!(written.error.is_none(), "{:?}", written.error);
    let lowest = samples.iter().map(|(_, a)| *a).min().unwrap();
    assert!(lowest >= floor, "setup: free space went under the floor");
    let fs = &seen;
    let rate = rate_of(fs);
    eprintln!(
        "lowest free {:.0} MB, floor {:.0} MB, daemon's rate {:.1} MB/s; next: {}",
        mb(lowest),
        mb(floor),
        rate / 1e6,
        fs["next"]
    );
    assert!(rate > 5e6, "the forecast must see the growth: {fs}");
    assert!(fs["next"].as_str().unwrap().contains("floor"), "{fs}");
    assert!(
        s.deletions().is_empty(),
        "growth above the floor must not trigger a cleanup: {:?}",
        s.deletions()
    );
}

#[path = "forecast/sawtooth.rs"]
mod sawtooth;

#[path = "forecast/netgrowth.rs"]
mod netgrowth;
