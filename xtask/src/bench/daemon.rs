//! The real daemon under measurement: writes its config, starts `target/release/guardian run`,
//! waits until it is ready (its state file appears, which it writes after opening the write
//! source, registering the projects and the first check), reads its CPU time from
//! `/proc/PID/stat`, and stops it with SIGTERM.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// How long a daemon may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything one daemon config needs.
pub struct DaemonConfig<'a> {
    /// `ebpf`, `fanotify`, `inotify` or `poll`.
    pub source: &'a str,
    pub workspace: &'a Path,
    /// Holds `audit.jsonl` and `state/`.
    pub state: &'a Path,
    pub poll_interval: &'a str,
    pub sample_interval: &'a str,
    /// `[thresholds]` values, as TOML strings (`"64MiB"`, `"20%"`).
    pub cleanup_free: &'a str,
    pub critical_free: &'a str,
    pub target_free: &'a str,
}

impl DaemonConfig<'_> {
    pub fn audit_log(&self) -> PathBuf {
        self.state.join("audit.jsonl")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state.join("state")
    }

    /// The TOML text: one workspace, the `node_modules` rule, no journal vacuum, no task DB, no
    /// forecasting (the benches measure the write path and the reactive path alone).
    pub fn toml(&self) -> String {
        format!(
            r#"# Written by `cargo xtask bench`.
[daemon]
source = "{source}"
poll_interval = "{poll}"
sample_interval = "{sample}"
audit_log = "{audit}"
state_dir = "{state_dir}"
journal_vacuum = []

[thresholds]
cleanup_free = "{cleanup}"
critical_free = "{critical}"
target_free = "{target}"
min_free = "0B"

[forecast]
enabled = false

[[workspaces]]
path = "{ws}"

[[rules]]
name = "regenerable"
phase = 1
names = ["node_modules"]
"#,
            source = self.source,
            poll = self.poll_interval,
            sample = self.sample_interval,
            audit = self.audit_log().display(),
            state_dir = self.state_dir().display(),
            cleanup = self.cleanup_free,
            critical = self.critical_free,
            target = self.target_free,
            ws = self.workspace.display(),
        )
    }
}

/// A running `guardian run`. Dropping it kills it (SIGKILL) if it was not stopped.
pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    pub log: PathBuf,
}

impl Daemon {
    /// Writes `config` next to its state dir (clearing the previous state and audit log), starts
    /// the daemon with its log (`GUARDIAN_LOG=info`) in `state/daemon.log`, waits until it is
    /// ready and checks that it runs the configured source rather than a fallback.
    pub fn start(guardian: &Path, config: &DaemonConfig<'_>) -> Result<Daemon> {
        Daemon::start_with(guardian, config, "")
    }

    /// [`start`](Daemon::start) with `extra` TOML appended to the config (e.g. a `[serve]`).
    pub fn start_with(guardian: &Path, config: &DaemonConfig<'_>, extra: &str) -> Result<Daemon> {
        Daemon::start_toml(guardian, config, &(config.toml() + extra), READY_TIMEOUT)
    }

    /// [`start`](Daemon::start) with the whole config text `toml` (made from `config`, which
    /// names the state dir and the source) and a longer wait for the daemon to become ready
    /// (a large tree's baseline walk).
    pub fn start_toml(
        guardian: &Path,
        config: &DaemonConfig<'_>,
        toml: &str,
        ready_timeout: Duration,
    ) -> Result<Daemon> {
        let _ = std::fs::remove_dir_all(config.state);
        std::fs::create_dir_all(config.state)?;
        let config_path = config.state.join("guardian.toml");
        std::fs::write(&config_path, toml)?;
        let log = config.state.join("daemon.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(guardian)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("GUARDIAN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", guardian.display()))?;
        let mut daemon = Daemon {
            pid: child.id(),
            child: Some(child),
            log,
        };
        let state_file = config.state_dir().join("state.json");
        let start = Instant::now();
        while !state_file.exists() {
            if let Some(status) = daemon.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                bail!(
                    "guardian run exited before it was ready ({status}): {}",
                    daemon.log_tail()
                );
            }
            if start.elapsed() > ready_timeout {
                bail!(
                    "guardian run not ready after {ready_timeout:?}: {}",
                    daemon.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&state_file)
                .with_context(|| format!("cannot read {}", state_file.display()))?,
        )?;
        let running = state["source"].as_str().unwrap_or("?");
        ensure!(
            running == config.source,
            "guardian runs the {running} source, not {} (skipped: {})",
            config.source,
            state["source_skipped"]
        );
        Ok(daemon)
    }

    /// User + system CPU time of the whole process (all threads) so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        proc_cpu_time(self.pid, false)
    }

    /// The CPU time of each of its threads now, to the nanosecond (see [`CpuSnapshot`]).
    pub fn cpu_snapshot(&self) -> Result<CpuSnapshot> {
        CpuSnapshot::of(self.pid)
    }

    /// SIGTERM, then waits for the exit (SIGKILL after a timeout). Fails if it did not exit 0.
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                ensure!(
                    status.success(),
                    "guardian run exited with {status}: {}",
                    self.log_tail()
                );
                return Ok(());
            }
            if start.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("guardian run did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// utime + stime of process `pid` from `/proc/PID/stat` (fields 14 and 15), or with
/// `children`, cutime + cstime (16 and 17: the children it has waited for).
pub fn proc_cpu_time(pid: u32, children: bool) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let ticks = parse_stat_cpu(&text, children).with_context(|| format!("cannot parse {path}"))?;
    let hz = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// Time on a CPU, in nanoseconds (`/proc/PID/task/TID/schedstat`, first field), of the threads
/// of process `pid` whose name (`comm`) starts with `name`, summed.
pub fn thread_cpu_time(pid: u32, name: &str) -> Result<Duration> {
    let tasks = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for entry in std::fs::read_dir(&tasks).with_context(|| format!("cannot list {tasks}"))? {
        let dir = entry?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended
        };
        if !comm.trim_end().starts_with(name) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("cannot parse {}/schedstat", dir.display()))?;
        total += ns;
    }
    Ok(Duration::from_nanos(total))
}

/// The CPU time of a process's threads at one moment: each thread's time on a CPU to the
/// nanosecond (`/proc/PID/task/TID/schedstat`), and the process's utime + stime in clock ticks
/// (10 ms: over an idle window of 20 s one tick is 0.05 % of a core — the resolution the
/// schedstat figure does not have to live with).
#[derive(Clone, Debug, PartialEq)]
pub struct CpuSnapshot {
    threads: std::collections::BTreeMap<u32, u64>,
    ticks: Duration,
}

impl CpuSnapshot {
    pub fn of(pid: u32) -> Result<CpuSnapshot> {
        let tasks = format!("/proc/{pid}/task");
        let mut threads = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(&tasks).with_context(|| format!("cannot list {tasks}"))? {
            let dir = entry?.path();
            let Some(tid) = dir.file_name().and_then(|n| n.to_str()?.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
                continue; // the thread ended
            };
            let ns: u64 = stat
                .split_whitespace()
                .next()
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("cannot parse {}/schedstat", dir.display()))?;
            threads.insert(tid, ns);
        }
        Ok(CpuSnapshot {
            threads,
            ticks: proc_cpu_time(pid, false)?,
        })
    }

    /// CPU time used from `self` to `later`: the threads' nanoseconds (a thread started since
    /// counts from zero); when a thread ended in between (its time is gone from the task list),
    /// the ticks instead.
    pub fn until(&self, later: &CpuSnapshot) -> Duration {
        if self
            .threads
            .keys()
            .any(|tid| !later.threads.contains_key(tid))
        {
            return later.ticks.saturating_sub(self.ticks);
        }
        let ns = (later.threads.iter())
            .map(|(tid, ns)| ns.saturating_sub(self.threads.get(tid).copied().unwrap_or(0)))
            .sum();
        Duration::from_nanos(ns)
    }
}

/// The CPU ticks of a `/proc/PID/stat` line: utime + stime, or cutime + cstime.
fn parse_stat_cpu(text: &str, children: bool) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is fields[n - 3].
    let (a, b) = if children { (16, 17) } else { (14, 15) };
    let a: i64 = fields.get(a - 3)?.parse().ok()?;
    let b: i64 = fields.get(b - 3)?.parse().ok()?;
    Some((a + b).max(0) as u64)
}

/// The first audit line's `ts`, if the log has a line yet.
pub fn first_audit_ts(audit_log: &Path) -> Result<Option<SystemTime>> {
    let text = match std::fs::read_to_string(audit_log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Only a complete line counts (the daemon writes and fsyncs whole lines).
    let Some((line, _)) = text.split_once('\n') else {
        return Ok(None);
    };
    let record: serde_json::Value =
        serde_json::from_str(line).context("the audit line is not JSON")?;
    let ts = record["ts"].as_str().context("the audit line has no ts")?;
    parse_rfc3339(ts)
        .map(Some)
        .with_context(|| format!("cannot parse the audit ts {ts:?}"))
}

/// The timestamp of the first line of the daemon's log containing `needle` (tracing's default
/// format starts each line with an RFC 3339 UTC time, microseconds).
pub fn log_line_time(log: &Path, needle: &str) -> Option<SystemTime> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains(needle))?;
    parse_rfc3339(line.split_whitespace().next()?)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") && &tz[3..4] == ":" => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let sign = if &tz[..1] == "-" { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `b - a` in seconds, negative when `b` is earlier.
pub fn seconds_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(threads: &[(u32, u64)], ticks_ms: u64) -> CpuSnapshot {
        CpuSnapshot {
            threads: threads.iter().copied().collect(),
            ticks: Duration::from_millis(ticks_ms),
        }
    }

    #[test]
    fn cpu_used_is_the_threads_nanoseconds_unless_one_ended() {
        let a = snapshot(&[(10, 1_000), (11, 5_000)], 100);
        // A thread started in between counts from zero.
        let b = snapshot(&[(10, 1_500), (11, 5_250), (12, 40)], 100);
        assert_eq!(a.until(&b), Duration::from_nanos(500 + 250 + 40));
        // Thread 11 ended: its time in the window is gone from the list; the ticks tell.
        let c = snapshot(&[(10, 2_000), (12, 90)], 120);
        assert_eq!(b.until(&c), Duration::from_millis(20));
    }

    fn unix(s: &str) -> f64 {
        parse_rfc3339(s)
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    #[test]
    fn rfc3339_timestamps_parse_to_the_right_instant() {
        assert_eq!(unix("1970-01-01T00:00:00Z"), 0.0);
        assert_eq!(unix("2000-03-01T00:00:00Z"), 951_868_800.0);
        assert_eq!(unix("2026-11-22T04:11:05.123Z"), 1_795_320_665.123);
        assert_eq!(unix("2026-11-22T04:11:05.123456Z"), 1_795_320_665.123456);
        assert_eq!(unix("2026-11-22T05:11:05+01:00"), 1_795_320_665.0);
        assert!(parse_rfc3339("2026-11-22 04:11").is_none());
        assert!(parse_rfc3339("2026-13-22T04:11:05Z").is_none());
        assert!(parse_rfc3339("2026-11-22T04:11:05.Z").is_none());
        assert!(parse_rfc3339("2026-11-22T04:11:05").is_none());
    }

    #[test]
    fn the_audit_timestamp_format_round_trips() {
        // What the daemon writes: humantime's RFC 3339 with milliseconds.
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_320_665_123);
        let text = guardian::cleanup::audit::timestamp(t);
        assert_eq!(parse_rfc3339(&text), Some(t), "{text}");
    }

    #[test]
    fn stat_cpu_fields_are_found_after_the_command_name() {
        let line = "4242 (guard (ian) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    123 45 6 7 20 0 3 0 100 1000 200";
        assert_eq!(parse_stat_cpu(line, false), Some(168));
        assert_eq!(parse_stat_cpu(line, true), Some(13));
        assert_eq!(parse_stat_cpu("garbage", false), None);
    }

    #[test]
    fn config_is_valid_for_guardian() {
        let cfg = DaemonConfig {
            source: "ebpf",
            workspace: Path::new("/tmp/ws"),
            state: Path::new("/tmp/state"),
            poll_interval: "30s",
            sample_interval: "250ms",
            cleanup_free: "64MiB",
            critical_free: "8MiB",
            target_free: "64MiB",
        };
        let config = guardian::config::Config::parse(&cfg.toml(), "bench").unwrap();
        assert_eq!(config.daemon.source, guardian::config::SourceKind::Ebpf);
        assert_eq!(config.daemon.poll_interval.0, Duration::from_secs(30));
        assert!(config.daemon.journal_vacuum.is_empty());
        assert_eq!(config.workspaces[0].path, Path::new("/tmp/ws"));
    }
}
