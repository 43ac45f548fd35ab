//! `--only serve`: the event stream under load. Per trial: a fresh tmpfs with a generated
//! workspace, the real daemon serving on a free port of 127.0.0.1, a WebSocket client on
//! `/events` that stamps each message with the wall clock as it arrives, and a writer that
//! crosses `cleanup_free` (as in the reaction section). Measured: crossing → `threshold_crossed`
//! on the socket (per source; goal p99 < 1 s with ebpf and fanotify), and the cycle's duration
//! (`cleanup_finished.seconds`) with no other client and with 1,000 idle WebSocket clients plus
//! one that never reads (their trials interleaved). Without clients the bench holds as many
//! plain sockets instead, so both arms leave the same number of fds for the daemon's /proc scan.

use super::daemon::{seconds_between, thread_cpu_time, Daemon, DaemonConfig};
use super::report::{machine_table, median, percentile, wrap, Machine, RunInfo};
use super::scratch::{TempBase, Tmpfs};
use super::{check_cancel, thousands, tree};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

const GOAL_P99: f64 = 1.0;
/// Cycle p50 with the clients connected over cycle p50 alone.
const GOAL_CYCLE_RATIO: f64 = 1.10;
const TMPFS_SIZE: u64 = 256 << 20;
const CLEANUP_FREE: u64 = 64 << 20;
const CHUNK: usize = 1 << 20;
const WORKSPACE_ENTRIES: u64 = 4_000;
const SEED: u64 = 0x7365_7276_6520_7773;
const IDLE_CLIENTS: usize = 1000;
const SOURCES: [&str; 2] = ["ebpf", "fanotify"];

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

#[derive(Default)]
struct Trials {
    /// Crossing → `threshold_crossed` received, seconds.
    latency: Vec<f64>,
    /// `cleanup_finished.seconds` without / with the idle clients.
    cycle_alone: Vec<f64>,
    cycle_loaded: Vec<f64>,
    /// CPU seconds of the server thread (`guardian-serve`) and of the cleanup thread
    /// (`guardian-cleanup`) from the crossing to `cleanup_finished`, in loaded trials.
    server_cpu_loaded: Vec<f64>,
    cleaner_cpu_alone: Vec<f64>,
    cleaner_cpu_loaded: Vec<f64>,
    /// CPU seconds of the daemon's main thread (the loop that publishes the events) over the
    /// same span.
    main_cpu_alone: Vec<f64>,
    main_cpu_loaded: Vec<f64>,
}

/// What one trial measured.
struct Trial {
    latency: f64,
    cycle: f64,
    server_cpu: f64,
    cleaner_cpu: f64,
    main_cpu: f64,
}

pub struct ServeReport {
    background: String,
    trials: u32,
    sources: Vec<(&'static str, Trials)>,
    workspace: String,
}

pub fn run(trials: u32, guardian_bin: &Path, cancel: &AtomicBool) -> Result<ServeReport> {
    raise_fd_limit();
    let cpu = super::report::CpuUse::now();
    let base = TempBase::create("serve")?;
    let mut results: Vec<Trials> = SOURCES.iter().map(|_| Trials::default()).collect();
    let mut workspace = String::new();
    eprintln!(
        "bench: serve: {trials} trials × {} sources × (alone, {IDLE_CLIENTS} idle clients)",
        SOURCES.len()
    );
    for trial in 0..trials as usize {
        for (i, source) in SOURCES.iter().enumerate() {
            for loaded in [trial % 2 == 1, trial % 2 == 0] {
                check_cancel(cancel)?;
                let t = one_trial(
                    &base.path,
                    source,
                    loaded,
                    SEED ^ trial as u64,
                    guardian_bin,
                    cancel,
                    &mut workspace,
                )
                .with_context(|| format!("serve trial {trial} with {source}"))?;
                eprintln!(
                    "bench: serve: {source:<8} trial {trial:>2} {}: event after {:>6.1} ms, \
                     cycle {:>6.1} ms (CPU: cleanup thread {:>5.1} ms, server {:>5.1} ms, \
                     main loop {:>5.1} ms)",
                    if loaded { "loaded" } else { "alone " },
                    t.latency * 1e3,
                    t.cycle * 1e3,
                    t.cleaner_cpu * 1e3,
                    t.server_cpu * 1e3,
                    t.main_cpu * 1e3,
                );
                let r = &mut results[i];
                r.latency.push(t.latency);
                if loaded {
                    r.cycle_loaded.push(t.cycle);
                    r.server_cpu_loaded.push(t.server_cpu);
                    r.cleaner_cpu_loaded.push(t.cleaner_cpu);
                    r.main_cpu_loaded.push(t.main_cpu);
                } else {
                    r.cycle_alone.push(t.cycle);
                    r.cleaner_cpu_alone.push(t.cleaner_cpu);
                    r.main_cpu_alone.push(t.main_cpu);
                }
            }
        }
    }
    Ok(ServeReport {
        background: cpu.describe_since(),
        trials,
        sources: SOURCES.iter().copied().zip(results).collect(),
        workspace,
    })
}

/// Lifts the open-file limit to the hard limit (the idle clients need the fds).
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A WebSocket client whose messages arrive on the channel with their arrival time.
fn listen(port: u16) -> Result<mpsc::Receiver<(SystemTime, serde_json::Value)>> {
    // The daemon binds its port on the server's thread, maybe after the state file appeared.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut ws, _) = loop {
        match tungstenite::connect(format!("ws://127.0.0.1:{port}/events")) {
            Ok(ws) => break ws,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(e).context("the daemon's /events"),
        }
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(msg) = ws.read() {
            let at = SystemTime::now();
            if let tungstenite::Message::Text(t) = msg {
                let Ok(v) = serde_json::from_str(t.as_str()) else {
                    continue;
                };
                if tx.send((at, v)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// Waits for the first message of `kind`.
fn wait_for(
    rx: &mpsc::Receiver<(SystemTime, serde_json::Value)>,
    kind: &str,
) -> Result<(SystemTime, serde_json::Value)> {
    loop {
        let (at, v) = rx
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("no {kind} event within 30 s"))?;
        if v["type"] == kind {
            return Ok((at, v));
        }
    }
}

fn one_trial(
    base: &Path,
    source: &'static str,
    loaded: bool,
    seed: u64,
    guardian_bin: &Path,
    cancel: &AtomicBool,
    workspace: &mut String,
) -> Result<Trial> {
    let tmpfs = Tmpfs::mount(&base.join("mnt"), TMPFS_SIZE)?;
    let ws = tmpfs.root.join("ws");
    let stats = tree::generate(&ws, WORKSPACE_ENTRIES, seed, cancel)?;
    let writer_dir = ws.join("writer");
    std::fs::create_dir(&writer_dir)?;
    if workspace.is_empty() {
        *workspace = format!(
            "{}; one workspace: {} projects with `node_modules` ({} entries, {:.1} MiB, \
             generated afresh per trial) and the writer's project",
            tmpfs.describe(),
            std::fs::read_dir(&ws)?.count() - 1,
            thousands(stats.entries),
            stats.bytes as f64 / (1 << 20) as f64
        );
    }
    let state = base.join("state");
    let cleanup_text = format!("{}MiB", CLEANUP_FREE >> 20);
    let config = DaemonConfig {
        source,
        workspace: &ws,
        state: &state,
        poll_interval: "30s",
        sample_interval: "250ms",
        cleanup_free: &cleanup_text,
        critical_free: "8MiB",
        target_free: &cleanup_text,
    };
    let port = free_port()?;
    let daemon = Daemon::start_with(
        guardian_bin,
        &config,
        &format!("\n[serve]\nlisten = \"127.0.0.1:{port}\"\n"),
    )?;
    let rx = listen(port)?;
    wait_for(&rx, "status")?;
    let mut idle: Vec<Ws> = Vec::new();
    // Without clients this process holds as many sockets, not connected to the daemon: the
    // cleanup thread reads every process's fds from /proc before deleting (~8 µs per fd), and
    // that cost of sockets anywhere on the node is not what serving the clients costs.
    let mut stand_ins: Vec<std::net::UdpSocket> = Vec::new();
    if loaded {
        // The one that never reads, then the idle ones (each gets the status and every event).
        for _ in 0..=IDLE_CLIENTS {
            idle.push(tungstenite::connect(format!("ws://127.0.0.1:{port}/events"))?.0);
        }
    } else {
        for _ in 0..=IDLE_CLIENTS {
            stand_ins.push(std::net::UdpSocket::bind("127.0.0.1:0").context("a stand-in socket")?);
        }
    }
    super::report::wait_quiet(Duration::from_secs(2));
    let mut file = std::fs::File::create(writer_dir.join("fill.bin"))?;
    let chunk = vec![0x5au8; CHUNK];
    let mut written = 0u64;
    // The cleanup thread's work includes the survey on the walk pool.
    let cpu = |names: &[&str]| -> Result<f64> {
        let mut total = 0.0;
        for name in names {
            total += thread_cpu_time(daemon.pid, name)?.as_secs_f64();
        }
        Ok(total)
    };
    const SERVER: &[&str] = &["guardian-serve"];
    const CLEANER: &[&str] = &["guardian-cleanu", "guardian-walk"];
    let (server0, cleaner0, main0) = (cpu(SERVER)?, cpu(CLEANER)?, main_thread_cpu(daemon.pid)?);
    let crossing = loop {
        file.write_all(&chunk).context("writer")?;
        written += CHUNK as u64;
        if guardian::fsys::fs_space(&ws)?.avail_bytes < CLEANUP_FREE {
            break SystemTime::now();
        }
        if written > TMPFS_SIZE {
            bail!("wrote {written} bytes without crossing cleanup_free");
        }
    };
    let (at, _) = wait_for(&rx, "threshold_crossed")
        .with_context(|| format!("daemon log: {}", daemon.log_tail()))?;
    let (_, finished) = wait_for(&rx, "cleanup_finished")?;
    let cycle = finished["seconds"]
        .as_f64()
        .context("cleanup_finished.seconds")?;
    let (server1, cleaner1, main1) = (cpu(SERVER)?, cpu(CLEANER)?, main_thread_cpu(daemon.pid)?);
    drop(idle);
    drop(stand_ins);
    daemon.stop()?;
    drop(file);
    drop(tmpfs);
    Ok(Trial {
        latency: seconds_between(crossing, at),
        cycle,
        server_cpu: server1 - server0,
        cleaner_cpu: cleaner1 - cleaner0,
        main_cpu: main1 - main0,
    })
}

/// CPU seconds of a process's main thread (its thread id is the process id; the thread names
/// of `thread_cpu_time` are prefixes, and every thread's name starts with `guardian`).
fn main_thread_cpu(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/task/{pid}/schedstat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let ns: u64 = stat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("cannot parse {path}"))?;
    Ok(Duration::from_nanos(ns).as_secs_f64())
}

impl ServeReport {
    fn passed(&self) -> bool {
        self.sources.iter().all(|(_, t)| {
            percentile(&t.latency, 99.0) < GOAL_P99 && cycle_ratio(t) <= GOAL_CYCLE_RATIO
        })
    }

    pub fn verdict(&self) -> &'static str {
        if self.passed() {
            "pass"
        } else {
            "MISS"
        }
    }

    pub fn print(&self) {
        println!("== Serve: crossing → threshold_crossed on a WebSocket; cycle time under load ==");
        println!("other CPU use: {}", self.background);
        for (source, t) in &self.sources {
            println!(
                "  {source:<9} event p50 {:>6.1} ms  p99 {:>6.1} ms   cycle p50 alone {:>6.1} ms  \
                 with {IDLE_CLIENTS}+1 clients {:>6.1} ms   cleanup CPU {:>5.1} → {:>5.1} ms, \
                 main loop CPU {:>5.1} → {:>5.1} ms, server CPU {:>5.1} ms",
                percentile(&t.latency, 50.0) * 1e3,
                percentile(&t.latency, 99.0) * 1e3,
                median(&t.cycle_alone) * 1e3,
                median(&t.cycle_loaded) * 1e3,
                median(&t.cleaner_cpu_alone) * 1e3,
                median(&t.cleaner_cpu_loaded) * 1e3,
                median(&t.main_cpu_alone) * 1e3,
                median(&t.main_cpu_loaded) * 1e3,
                median(&t.server_cpu_loaded) * 1e3,
            );
        }
        println!(
            "  goals: event p99 < {GOAL_P99} s with ebpf and fanotify, cycle with clients ≤ \
             {GOAL_CYCLE_RATIO:.2}× alone: {}",
            self.verdict()
        );
    }

    pub fn markdown(&self, machine: &Machine, run: &RunInfo) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Serve: the crossing on the event stream, and cycles with 1,000 clients connected\n"
        );
        let method = format!(
            "Per trial: a fresh {} MiB tmpfs with a generated workspace, the real \
             `target/release/guardian run` with `cleanup_free = \"{}MiB\"`, `sample_interval = \
             \"250ms\"`, `poll_interval = \"30s\"`, `[forecast] enabled = false` and `[serve] \
             listen` on a free port of 127.0.0.1. A WebSocket client on `/events` stamps every \
             message with the wall clock as it arrives. A writer in the bench process writes \
             1 MiB chunks and calls `statvfs` after each; the crossing is the wall-clock time \
             right after the first `statvfs` under `cleanup_free`. Event latency: arrival of \
             `threshold_crossed` minus the crossing, over all trials of the source. Cycle time: `cleanup_finished.seconds` \
             (hand-over to the cleanup thread → end of the cycle), in trials alone and in \
             trials with {IDLE_CLIENTS} idle WebSocket clients plus one that never reads, \
             connected before the crossing (alternating which comes first); in trials alone              the bench process holds {} plain UDP sockets instead, because the cleanup thread              reads every process's fds from `/proc` before it deletes (a cost of sockets              anywhere on the node, not of serving them). CPU: time on a CPU \
             (`/proc/PID/task/TID/schedstat`) from the crossing to `cleanup_finished` of the \
             cleanup thread with the walk pool, of the daemon's main thread (the loop that \
             publishes the events) and of the server thread (which runs at nice 10). {} trials per source and load. Percentiles are nearest-rank.",
            TMPFS_SIZE >> 20,
            CLEANUP_FREE >> 20,
            IDLE_CLIENTS + 1,
            self.trials
        );
        let _ = writeln!(s, "{}\n", wrap(&method, "", 100));
        s += &machine_table(
            machine,
            &[
                ("Filesystem", self.workspace.clone()),
                ("Other CPU use", self.background.clone()),
            ],
            run,
        );
        let _ = writeln!(
            s,
            "| Source | Event p50 | Event p99 | Event max | Cycle p50 alone | Cycle p50 with \
             {IDLE_CLIENTS}+1 clients | Ratio | Cleanup CPU alone | with clients | Main loop \
             CPU alone | with clients | Server CPU with clients |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (source, t) in &self.sources {
            let (alone, loaded) = (median(&t.cycle_alone), median(&t.cycle_loaded));
            let _ = writeln!(
                s,
                "| {source} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} |",
                ms(percentile(&t.latency, 50.0)),
                ms(percentile(&t.latency, 99.0)),
                ms(percentile(&t.latency, 100.0)),
                ms(alone),
                ms(loaded),
                loaded / alone,
                ms(median(&t.cleaner_cpu_alone)),
                ms(median(&t.cleaner_cpu_loaded)),
                ms(median(&t.main_cpu_alone)),
                ms(median(&t.main_cpu_loaded)),
                ms(median(&t.server_cpu_loaded)),
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "| Goal | Measured | Result |");
        let _ = writeln!(s, "|---|---:|---|");
        for (source, t) in &self.sources {
            let p99 = percentile(&t.latency, 99.0);
            let _ = writeln!(
                s,
                "| {source}: event p99 < {GOAL_P99} s | {} | {} |",
                ms(p99),
                if p99 < GOAL_P99 { "pass" } else { "MISS" }
            );
        }
        for (source, t) in &self.sources {
            let ratio = cycle_ratio(t);
            let _ = writeln!(
                s,
                "| {source}: cycle p50 with {IDLE_CLIENTS}+1 clients ≤ {GOAL_CYCLE_RATIO:.2}× alone \
                 | {ratio:.2}× | {} |",
                if ratio <= GOAL_CYCLE_RATIO { "pass" } else { "MISS" }
            );
        }
        s
    }
}

fn cycle_ratio(t: &Trials) -> f64 {
    median(&t.cycle_loaded) / median(&t.cycle_alone)
}

fn ms(seconds: f64) -> String {
    if seconds.is_nan() {
        "—".into()
    } else {
        format!("{:.0} ms", seconds * 1e3)
    }
}
