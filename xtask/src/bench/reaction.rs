//! `--only reaction`: how long after the write that takes free space below `cleanup_free` the
//! daemon's cycle records its first action. Each trial: a fresh tmpfs with a workspace of
//! projects holding `node_modules`, the real daemon with `poll_interval = 30s` (so only the
//! sampler can react; `poll` keeps its default 5 s, for contrast), and a writer in this process
//! that writes 1 MiB chunks into a project file and calls `statvfs` after each. The crossing is
//! the moment `statvfs` first shows less than `cleanup_free` available; the reaction is the
//! first audit line's `ts` minus that moment (both wall clock).

use super::daemon::{first_audit_ts, log_line_time, seconds_between, Daemon, DaemonConfig};
use super::report::{machine_table, median, percentile, wrap, Machine, RunInfo};
use super::scratch::{TempBase, Tmpfs};
use super::{check_cancel, thousands, tree};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

/// Goal: p99 below this with ebpf and fanotify.
const GOAL_P99: f64 = 1.0;
const TMPFS_SIZE: u64 = 256 << 20;
const CLEANUP_FREE: u64 = 64 << 20;
const CHUNK: usize = 1 << 20;
const WORKSPACE_ENTRIES: u64 = 4_000;
const SEED: u64 = 0x7265_6163_7469_6f6e;
const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// The message the daemon logs when a cycle starts (for the detection part of the reaction).
const CYCLE_START: &str = "pressure: starting a cleanup cycle";

/// (source, poll_interval).
const SOURCES: [(&str, Duration); 4] = [
    ("ebpf", Duration::from_secs(30)),
    ("fanotify", Duration::from_secs(30)),
    ("inotify", Duration::from_secs(30)),
    ("poll", Duration::from_secs(5)),
];

/// What was measured for one source.
#[derive(Default)]
struct Trials {
    /// Crossing → first audit line, seconds.
    reaction: Vec<f64>,
    /// Crossing → the daemon's "starting a cleanup cycle" log line, seconds.
    detection: Vec<f64>,
    /// Outcomes of the first audit lines.
    outcomes: Vec<String>,
}

pub struct ReactionReport {
    /// What else used the CPUs meanwhile.
    background: String,
    trials: u32,
    sources: Vec<(&'static str, Duration, Trials)>,
    workspace: String,
}

pub fn run(trials: u32, guardian_bin: &Path, cancel: &AtomicBool) -> Result<ReactionReport> {
    let cpu = super::report::CpuUse::now();
    let base = TempBase::create("reaction")?;
    let mut results: Vec<Trials> = SOURCES.iter().map(|_| Trials::default()).collect();
    let mut workspace = String::new();
    eprintln!(
        "bench: reaction: {trials} trials × {} sources, interleaved",
        SOURCES.len()
    );
    for trial in 0..trials as usize {
        for k in 0..SOURCES.len() {
            check_cancel(cancel)?;
            let i = (k + trial) % SOURCES.len();
            let (source, poll) = SOURCES[i];
            // Where in the sampler's (or poller's) period the crossing falls: spread evenly
            // over the trials (golden-ratio sequence), not locked to the daemon's start.
            let period = if source == "poll" {
                poll
            } else {
                SAMPLE_INTERVAL
            };
            let phase = ((trial as f64 + 1.0) * 0.618_033_988_749_895).fract();
            let delay = period.mul_f64(phase);
            let t = one_trial(
                &base.path,
                source,
                poll,
                delay,
                SEED ^ trial as u64,
                guardian_bin,
                cancel,
                &mut workspace,
            )
            .with_context(|| format!("reaction trial {trial} with {source}"))?;
            eprintln!(
                "bench: reaction: {source:<8} trial {trial:>2}: {:>7.1} ms (cycle started after \
                 {} ms; first action {})",
                t.reaction * 1e3,
                t.detection
                    .map(|d| format!("{:.1}", d * 1e3))
                    .unwrap_or_else(|| "?".into()),
                t.outcome
            );
            let r = &mut results[i];
            r.reaction.push(t.reaction);
            r.detection.extend(t.detection);
            r.outcomes.push(t.outcome);
        }
    }
    Ok(ReactionReport {
        background: cpu.describe_since(),
        trials,
        sources: SOURCES
            .iter()
            .zip(results)
            .map(|(&(s, p), t)| (s, p, t))
            .collect(),
        workspace,
    })
}

struct Trial {
    reaction: f64,
    detection: Option<f64>,
    outcome: String,
}

#[allow(clippy::too_many_arguments)]
fn one_trial(
    base: &Path,
    source: &'static str,
    poll: Duration,
    delay: Duration,
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
            "{}; one workspace: {} projects with `node_modules` ({} entries, {:.1} MiB, generated \
             afresh per trial) and the writer's project",
            tmpfs.describe(),
            std::fs::read_dir(&ws)?.count() - 1,
            thousands(stats.entries),
            stats.bytes as f64 / (1 << 20) as f64
        );
    }
    let state = base.join("state");
    let poll_text = format!("{}s", poll.as_secs());
    let cleanup_text = format!("{}MiB", CLEANUP_FREE >> 20);
    let config = DaemonConfig {
        source,
        workspace: &ws,
        state: &state,
        poll_interval: &poll_text,
        sample_interval: "250ms",
        cleanup_free: &cleanup_text,
        critical_free: "8MiB",
        target_free: &cleanup_text,
    };
    let audit = config.audit_log();
    let daemon = Daemon::start(guardian_bin, &config)?;
    let start_space = guardian::fsys::fs_space(&ws)?;
    if start_space.avail_bytes < CLEANUP_FREE + (32 << 20) {
        bail!(
            "the fresh tmpfs has only {} bytes available",
            start_space.avail_bytes
        );
    }
    super::report::wait_quiet(Duration::from_secs(2));
    std::thread::sleep(delay);
    // The writer: 1 MiB chunks, statvfs after each; the file stays open until the trial ends.
    let mut file = std::fs::File::create(writer_dir.join("fill.bin"))?;
    let chunk = vec![0x5au8; CHUNK];
    let mut written = 0u64;
    let crossing = loop {
        file.write_all(&chunk).context("writer")?;
        written += CHUNK as u64;
        let space = guardian::fsys::fs_space(&ws)?;
        if space.avail_bytes < CLEANUP_FREE {
            break SystemTime::now();
        }
        if written > TMPFS_SIZE {
            bail!("wrote {written} bytes without crossing cleanup_free");
        }
    };
    let wait_start = Instant::now();
    let timeout = poll + Duration::from_secs(20);
    let first = loop {
        if let Some(ts) = first_audit_ts(&audit)? {
            break ts;
        }
        if wait_start.elapsed() > timeout {
            bail!(
                "no audit line {timeout:?} after the crossing: {}",
                daemon.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let detection = log_line_time(&daemon.log, CYCLE_START).map(|t| seconds_between(crossing, t));
    let outcome = std::fs::read_to_string(&audit)
        .ok()
        .and_then(|t| {
            let line = t.lines().next()?.to_string();
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            Some(format!(
                "{} {}",
                v["action"].as_str()?,
                v["outcome"].as_str()?
            ))
        })
        .unwrap_or_else(|| "?".into());
    daemon.stop()?;
    drop(file);
    drop(tmpfs);
    Ok(Trial {
        reaction: seconds_between(crossing, first),
        detection,
        outcome,
    })
}

impl ReactionReport {
    fn passed(&self) -> bool {
        self.sources
            .iter()
            .filter(|(s, _, _)| matches!(*s, "ebpf" | "fanotify"))
            .all(|(_, _, t)| percentile(&t.reaction, 99.0) < GOAL_P99)
    }

    pub fn verdict(&self) -> &'static str {
        if self.passed() {
            "pass"
        } else {
            "MISS"
        }
    }

    pub fn print(&self) {
        println!("== Reaction: crossing cleanup_free → first audit line ==");
        println!("other CPU use: {}", self.background);
        for (source, poll, t) in &self.sources {
            println!(
                "  {source:<9} poll {:>3} s  p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  max \
                 {:>7.1} ms  (cycle start p50 {:.1} ms)",
                poll.as_secs(),
                percentile(&t.reaction, 50.0) * 1e3,
                percentile(&t.reaction, 90.0) * 1e3,
                percentile(&t.reaction, 99.0) * 1e3,
                percentile(&t.reaction, 100.0) * 1e3,
                median(&t.detection) * 1e3,
            );
        }
        println!(
            "  goal: p99 < {GOAL_P99} s with ebpf and fanotify: {}",
            self.verdict()
        );
    }

    pub fn markdown(&self, machine: &Machine, run: &RunInfo) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Reaction: the write that crosses `cleanup_free` → the cycle's first audit line\n"
        );
        let method = format!(
            "Per trial: a fresh {} MiB tmpfs with a generated workspace, the real \
             `target/release/guardian run` with `cleanup_free = \"{}MiB\"`, `sample_interval = \
             \"250ms\"`, `poll_interval = \"30s\"` (so only the sampler can react in time; \
             `poll` keeps its default 5 s, for contrast) and `[forecast] enabled = false` (this \
             measures the reactive path; the forecast's lead is tested in tests/forecast.rs), started and ready (state file \
             written). After a delay that spreads the crossing evenly over the sampler's (for \
             `poll`: the poller's) period, a writer in the bench process writes 1 MiB chunks \
             into a file of one project and calls `statvfs` after each; the crossing is the \
             wall-clock time (`SystemTime`) right after the first `statvfs` that shows less than \
             `cleanup_free` available. The reaction is the `ts` of the first audit line \
             (RFC 3339, ms, written after the first deletion of the cycle) minus the crossing: \
             it covers the wait for the next sample, the survey of the workspace, the plan, the \
             first `node_modules` removal and the fsync'd audit write. \"Cycle start\" is the \
             daemon's `{CYCLE_START}` log line (µs) minus the crossing: the detection part \
             alone. {} trials per source, sources interleaved. Percentiles are nearest-rank: \
             with {} trials p99 is the maximum.",
            TMPFS_SIZE >> 20,
            CLEANUP_FREE >> 20,
            self.trials,
            self.trials
        );
        let _ = writeln!(s, "{}\n", wrap(&method, "", 100));
        s += &machine_table(
            machine,
            &[
                ("Filesystem", self.workspace.clone()),
                (
                    "Audit log, state",
                    "on the root filesystem (ext4 on /dev/vda), as in production".into(),
                ),
                ("Other CPU use", self.background.clone()),
            ],
            run,
        );
        let _ = writeln!(
            s,
            "| Source | `poll_interval` | Trials | p50 | p90 | p99 | Max | Cycle start p50 / max \
             | First action |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for (source, poll, t) in &self.sources {
            let mut outcomes: Vec<String> = t.outcomes.clone();
            outcomes.sort();
            outcomes.dedup();
            let _ = writeln!(
                s,
                "| {source} | {} s | {} | {} | {} | {} | {} | {} / {} | {} |",
                poll.as_secs(),
                t.reaction.len(),
                ms(percentile(&t.reaction, 50.0)),
                ms(percentile(&t.reaction, 90.0)),
                ms(percentile(&t.reaction, 99.0)),
                ms(percentile(&t.reaction, 100.0)),
                ms(median(&t.detection)),
                ms(percentile(&t.detection, 100.0)),
                outcomes.join(", ")
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "| Goal | Measured | Result |");
        let _ = writeln!(s, "|---|---:|---|");
        for (source, _, t) in &self.sources {
            if matches!(*source, "ebpf" | "fanotify") {
                let p99 = percentile(&t.reaction, 99.0);
                let _ = writeln!(
                    s,
                    "| {source}: p99 < {GOAL_P99} s | {} | {} |",
                    ms(p99),
                    if p99 < GOAL_P99 { "pass" } else { "MISS" }
                );
            }
        }
        s
    }
}

fn ms(seconds: f64) -> String {
    if seconds.is_nan() {
        "—".into()
    } else if seconds >= 10.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{:.0} ms", seconds * 1e3)
    }
}
