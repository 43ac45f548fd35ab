//! `--only scale`: whether the daemon's reaction and idle cost stay flat as the workspace grows.
//! Per size (`--scale-sizes`, default 10k, 100k, 1M and 5M entries on loop-mounted ext4 and 200k
//! on a tmpfs) and source (ebpf, fanotify, inotify): the real daemon on a generated workspace
//! (`node_modules`-heavy projects, [`tree::generate`]) plus a bench-made `victim` project and an
//! empty `writer` project; once its survey index is warm (its `survey index warm` log line), the
//! idle CPU (the threads' schedstat run time) and RSS over `--scale-idle-seconds`, then `--scale-trials` crossings:
//! a writer fills `writer/fill.bin` past `cleanup_free`, and the first audit line's `ts` minus
//! the moment `statvfs` showed the crossing is the reaction; the log's cycle start and
//! `cleanup cycle finished` give the cycle time.
//!
//! The generated projects are `protect`ed (still surveyed and planned, never deleted), so every
//! first action removes one of the victim's `node_modules` (the same size at every scale) and
//! the ext4 trees survive the runs: each is built once into a sparse image under
//! [`CACHE_DIR`] and reused while its stamp file matches the tree's parameters.

use super::daemon::{parse_rfc3339, seconds_between, Daemon, DaemonConfig};
use super::idle::proc_memory;
use super::report::{machine_table, median, wait_quiet, wrap, CpuUse, Machine, RunInfo};
use super::scratch::{describe_fs, run as run_cmd, unmount_retrying, TempBase, Tmpfs};
use super::tree::{self, TreeStats};
use super::{check_cancel, thousands};
use anyhow::{bail, ensure, Context, Result};
use std::fmt::Write as _;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

/// Where the ext4 images and their stamps are kept between runs.
pub const CACHE_DIR: &str = "/var/tmp/guardian-bench/scale";
pub const DEFAULT_SIZES: &str = "10k,100k,1M,5M,200k@tmpfs";
pub const SOURCES: [&str; 3] = ["ebpf", "fanotify", "inotify"];
const SEED: u64 = 0x7363_616c_6520_7472;
const VICTIM_SEED: u64 = 0x7669_6374_696d_2121;
/// The victim project: four `node_modules` of ~1,000 entries (~2–4 MiB each).
const VICTIM_ENTRIES: u64 = 4_000;
/// `cleanup_free` lies this far below the free space at the start: what the writer fills.
const HEADROOM: u64 = 64 << 20;
const CHUNK: usize = 1 << 20;
/// Bumped when the tree's shape or the image's layout changes (the stamp then misses).
const LAYOUT: u32 = 1;
const READY_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const WARM_TIMEOUT: Duration = Duration::from_secs(120 * 60);
/// After a trial's victim is restored: time for the index to re-walk it and the writer.
const RESETTLE: Duration = Duration::from_secs(8);
const CYCLE_START: &str = "pressure: starting a cleanup cycle";
const CYCLE_END: &str = "cleanup cycle finished";
const INDEX_WARM: &str = "survey index warm";
/// Goals of issue 16.
const GOAL_EXT4_MS: f64 = 100.0;
const GOAL_TMPFS_MS: f64 = 50.0;
const GOAL_CPU_PERCENT: f64 = 0.1;
const GOAL_RSS_EBPF_MIB: f64 = 20.0;
const GOAL_BYTES_PER_FILE: f64 = 24.0;

/// One workspace size: its entries and whether it lives on a tmpfs (else loop ext4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub entries: u64,
    pub tmpfs: bool,
}

/// `10k`, `1M`, `5000000`, `200k@tmpfs`.
pub fn parse_size(text: &str) -> Result<Size, String> {
    let (num, tmpfs) = match text.trim().split_once('@') {
        Some((n, "tmpfs")) => (n, true),
        Some((n, "ext4")) => (n, false),
        Some((_, fs)) => return Err(format!("unknown filesystem {fs:?} (ext4 or tmpfs)")),
        None => (text.trim(), false),
    };
    let (digits, unit) = match num.char_indices().last() {
        Some((i, 'k' | 'K')) => (&num[..i], 1_000),
        Some((i, 'm' | 'M')) => (&num[..i], 1_000_000),
        _ => (num, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not an entry count like 10k, 1M or 200k@tmpfs"))?;
    let entries = n
        .checked_mul(unit)
        .filter(|e| (1_000..=100_000_000).contains(e))
        .ok_or_else(|| format!("{text:?}: between 1k and 100M entries"))?;
    Ok(Size { entries, tmpfs })
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.entries;
        if e.is_multiple_of(1_000_000) {
            write!(f, "{}M", e / 1_000_000)?;
        } else if e.is_multiple_of(1_000) {
            write!(f, "{}k", e / 1_000)?;
        } else {
            write!(f, "{e}")?;
        }
        if self.tmpfs {
            write!(f, "@tmpfs")?;
        }
        Ok(())
    }
}

pub struct Params {
    pub sizes: Vec<Size>,
    pub sources: Vec<String>,
    pub trials: u32,
    pub idle_seconds: u64,
}

/// One crossing.
struct Trial {
    /// Crossing → first audit line, seconds.
    reaction: f64,
    /// Crossing → the cycle's start in the log.
    detection: Option<f64>,
    /// The cycle's start → `cleanup cycle finished`.
    cycle: Option<f64>,
    /// The first round's survey: projects walked and taken from the index, seconds.
    walked: Option<u64>,
    cached: Option<u64>,
}

/// One daemon on one tree.
struct Row {
    size: Size,
    source: String,
    ready: f64,
    warm: f64,
    cpu_percent: f64,
    rss_kib: u64,
    hwm_kib: u64,
    trials: Vec<Trial>,
    error: Option<String>,
}

/// One tree as measured.
struct TreeInfo {
    size: Size,
    filesystem: String,
    stats: TreeStats,
    projects: usize,
    built: String,
}

pub struct ScaleReport {
    background: String,
    params_trials: u32,
    idle_seconds: u64,
    trees: Vec<TreeInfo>,
    rows: Vec<Row>,
}

pub fn run(params: &Params, guardian_bin: &Path, cancel: &AtomicBool) -> Result<ScaleReport> {
    let _lock = if params.sizes.iter().any(|s| !s.tmpfs) {
        Some(image::CacheLock::take(cancel)?)
    } else {
        None
    };
    let cpu = CpuUse::now();
    let base = TempBase::create("scale")?;
    let (mut trees, mut rows) = (Vec::new(), Vec::new());
    for &size in &params.sizes {
        check_cancel(cancel)?;
        let tree = Tree::open(size, &base.path, cancel).with_context(|| format!("tree {size}"))?;
        let projects = project_names(&tree.ws)?.len();
        for source in &params.sources {
            check_cancel(cancel)?;
            let row = one_source(&tree, source, params, &base.path, guardian_bin, cancel);
            let row = match row {
                Ok(r) => r,
                Err(e) if check_cancel(cancel).is_err() => return Err(e),
                Err(e) => {
                    eprintln!("bench: scale: {size} {source}: {e:#}");
                    Row::failed(size, source, format!("{e:#}"))
                }
            };
            rows.push(row);
        }
        // What the runs deleted must be the victim's only (the rest is protected).
        let after = project_names(&tree.ws)?.len();
        if after != projects {
            tree.invalidate();
            bail!("{size}: the workspace had {projects} projects, now {after}: stamp removed");
        }
        trees.push(TreeInfo {
            size,
            filesystem: tree.filesystem.clone(),
            stats: tree.stats,
            projects,
            built: tree.built.clone(),
        });
    }
    Ok(ScaleReport {
        background: cpu.describe_since(),
        params_trials: params.trials,
        idle_seconds: params.idle_seconds,
        trees,
        rows,
    })
}

/// The generated projects: every child of the workspace but the bench's own two.
fn project_names(ws: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(ws).with_context(|| format!("cannot list {}", ws.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "victim" && name != "writer" {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A fresh victim project and an empty writer project (whatever a previous run left).
fn reset_bench_projects(ws: &Path, cancel: &AtomicBool) -> Result<()> {
    remove_project(ws, "writer")?;
    std::fs::create_dir(ws.join("writer"))?;
    reset_victim(ws, cancel)
}

/// A fresh victim project between crossings. The writer project stays the directory it was
/// (its fill file is removed after each crossing): made afresh, it would be a new project,
/// which the daemon learns of at its next poll (`poll_interval`, 30 s here), and a crossing
/// before that would measure a writer no source watches yet, not the reaction.
fn reset_victim(ws: &Path, cancel: &AtomicBool) -> Result<()> {
    remove_project(ws, "victim")?;
    tree::generate(&ws.join("victim"), VICTIM_ENTRIES, VICTIM_SEED, cancel)?;
    syncfs(ws)
}

fn remove_project(ws: &Path, name: &str) -> Result<()> {
    match std::fs::remove_dir_all(ws.join(name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(format!("cannot remove {name}")),
    }
}

fn one_source(
    tree: &Tree,
    source: &str,
    params: &Params,
    base: &Path,
    guardian_bin: &Path,
    cancel: &AtomicBool,
) -> Result<Row> {
    let ws = &tree.ws;
    reset_bench_projects(ws, cancel)?;
    let protect = project_names(ws)?;
    let avail = guardian::fsys::fs_space(ws)?.avail_bytes;
    ensure!(
        avail > HEADROOM + (256 << 20),
        "only {avail} bytes free on the tree's filesystem"
    );
    let cleanup = (avail - HEADROOM) >> 20 << 20;
    let cleanup_text = format!("{}MiB", cleanup >> 20);
    let state = base.join("state");
    let config = DaemonConfig {
        source,
        workspace: ws,
        state: &state,
        poll_interval: "30s",
        sample_interval: "250ms",
        cleanup_free: &cleanup_text,
        critical_free: "8MiB",
        target_free: &cleanup_text,
    };
    let toml = with_protect(&config.toml(), ws, &protect)?;
    let started = Instant::now();
    let daemon = Daemon::start_toml(guardian_bin, &config, &toml, READY_TIMEOUT)?;
    let ready = started.elapsed().as_secs_f64();
    eprintln!(
        "bench: scale: {} {source}: ready after {ready:.1} s; waiting for the survey index",
        tree_label(tree)
    );
    wait_for_log(&daemon, 0, INDEX_WARM, WARM_TIMEOUT, cancel)?;
    let warm = started.elapsed().as_secs_f64();
    wait_quiet(Duration::from_secs(5));
    let cpu0 = daemon.cpu_snapshot()?;
    let idle_start = Instant::now();
    while idle_start.elapsed() < Duration::from_secs(params.idle_seconds) {
        check_cancel(cancel)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu_percent = cpu0.until(&daemon.cpu_snapshot()?).as_secs_f64()
        / idle_start.elapsed().as_secs_f64()
        * 100.0;
    let (rss_kib, hwm_kib) = proc_memory(daemon.pid)?;
    eprintln!(
        "bench: scale: {} {source}: index warm after {warm:.1} s; idle cpu {cpu_percent:.3}%, \
         RSS {:.1} MiB",
        tree_label(tree),
        rss_kib as f64 / 1024.0
    );
    let audit = config.audit_log();
    let mut trials = Vec::new();
    for t in 0..params.trials {
        check_cancel(cancel)?;
        if t > 0 {
            reset_victim(ws, cancel)?;
            std::thread::sleep(RESETTLE);
        }
        let trial =
            crossing(&daemon, &audit, ws, cleanup, cancel).with_context(|| format!("trial {t}"))?;
        eprintln!(
            "bench: scale: {} {source} trial {t}: first action after {:.1} ms, cycle {} ms, \
             walked {}/cached {}",
            tree_label(tree),
            trial.reaction * 1e3,
            trial
                .cycle
                .map_or("?".into(), |c| format!("{:.0}", c * 1e3)),
            trial.walked.map_or("?".into(), |n| n.to_string()),
            trial.cached.map_or("?".into(), |n| n.to_string()),
        );
        trials.push(trial);
    }
    daemon.stop()?;
    check_deletions(&audit, ws)?;
    reset_bench_projects(ws, cancel)?;
    Ok(Row {
        size: tree.size,
        source: source.to_string(),
        ready,
        warm,
        cpu_percent,
        rss_kib,
        hwm_kib,
        trials,
        error: None,
    })
}

fn tree_label(tree: &Tree) -> String {
    tree.size.to_string()
}

/// `toml` with `protect = [names]` in its (only) workspace table.
fn with_protect(toml: &str, ws: &Path, names: &[String]) -> Result<String> {
    let line = format!("path = \"{}\"\n", ws.display());
    ensure!(
        toml.contains(&line),
        "the bench config has no workspace line"
    );
    let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    Ok(toml.replacen(
        &line,
        &format!("{line}protect = [{}]\n", list.join(", ")),
        1,
    ))
}

/// One crossing: fills the writer's file past `cleanup` and waits for the cycle to finish.
fn crossing(
    daemon: &Daemon,
    audit: &Path,
    ws: &Path,
    cleanup: u64,
    cancel: &AtomicBool,
) -> Result<Trial> {
    let log_from = file_len(&daemon.log);
    let audit_from = file_len(audit);
    wait_quiet(Duration::from_secs(2));
    let mut file = std::fs::File::create(ws.join("writer/fill.bin"))?;
    let chunk = vec![0x5au8; CHUNK];
    let mut written = 0u64;
    let crossed = loop {
        file.write_all(&chunk).context("writer")?;
        written += CHUNK as u64;
        if guardian::fsys::fs_space(ws)?.avail_bytes < cleanup {
            break SystemTime::now();
        }
        ensure!(
            written < 4 * HEADROOM,
            "wrote {written} bytes without crossing"
        );
    };
    drop(file);
    let timeout = Duration::from_secs(120);
    let start = Instant::now();
    let first = loop {
        if let Some(ts) = audit_ts_after(audit, audit_from)? {
            break ts;
        }
        check_cancel(cancel)?;
        ensure!(
            start.elapsed() < timeout,
            "no audit line {timeout:?} after the crossing: {}",
            daemon.log_tail()
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let end = wait_for_log(daemon, log_from, CYCLE_END, timeout, cancel)?;
    let cycle_start = log_after(&daemon.log, log_from, CYCLE_START);
    let surveyed = log_after(&daemon.log, log_from, "surveyed");
    let field = |name: &str| {
        surveyed.as_ref().and_then(|(_, line)| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
                .parse()
                .ok()
        })
    };
    std::fs::remove_file(ws.join("writer/fill.bin"))?;
    Ok(Trial {
        reaction: seconds_between(crossed, first),
        detection: cycle_start
            .as_ref()
            .map(|(t, _)| seconds_between(crossed, *t)),
        cycle: cycle_start.map(|(t, _)| seconds_between(t, end)),
        walked: field("walked"),
        cached: field("cached"),
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The text of `path` from byte `from` on.
fn text_after(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(std::io::SeekFrom::Start(from)).is_ok() {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

/// The time and text of the first log line after byte `from` containing `needle`.
fn log_after(log: &Path, from: u64, needle: &str) -> Option<(SystemTime, String)> {
    let text = text_after(log, from);
    let line = text.lines().find(|l| l.contains(needle))?;
    Some((
        parse_rfc3339(line.split_whitespace().next()?)?,
        line.to_string(),
    ))
}

fn wait_for_log(
    daemon: &Daemon,
    from: u64,
    needle: &str,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<SystemTime> {
    let start = Instant::now();
    let mut report = Instant::now();
    loop {
        if let Some((t, _)) = log_after(&daemon.log, from, needle) {
            return Ok(t);
        }
        check_cancel(cancel)?;
        ensure!(
            start.elapsed() < timeout,
            "no {needle:?} in the daemon's log after {timeout:?}: {}",
            daemon.log_tail()
        );
        if report.elapsed() > Duration::from_secs(60) {
            report = Instant::now();
            eprintln!(
                "bench: scale: still waiting for {needle:?} ({:.0} s; daemon CPU {:.1} s)",
                start.elapsed().as_secs_f64(),
                daemon.cpu_time()?.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The `ts` of the first complete audit line after byte `from`.
fn audit_ts_after(audit: &Path, from: u64) -> Result<Option<SystemTime>> {
    let text = text_after(audit, from);
    let Some((line, _)) = text.split_once('\n') else {
        return Ok(None);
    };
    let record: serde_json::Value = serde_json::from_str(line).context("audit line")?;
    let ts = record["ts"].as_str().context("the audit line has no ts")?;
    Ok(Some(parse_rfc3339(ts).context("audit ts")?))
}

/// Fails when an audit line names anything but the victim's entries.
fn check_deletions(audit: &Path, ws: &Path) -> Result<()> {
    let victim = ws.join("victim");
    for line in text_after(audit, 0).lines() {
        let record: serde_json::Value = serde_json::from_str(line).context("audit line")?;
        let path = record["path"].as_str().unwrap_or("");
        ensure!(
            Path::new(path).starts_with(&victim),
            "the daemon acted on {path}, outside the victim project"
        );
    }
    Ok(())
}

impl Row {
    fn failed(size: Size, source: &str, error: String) -> Row {
        Row {
            size,
            source: source.to_string(),
            ready: f64::NAN,
            warm: f64::NAN,
            cpu_percent: f64::NAN,
            rss_kib: 0,
            hwm_kib: 0,
            trials: Vec::new(),
            error: Some(error),
        }
    }

    fn reactions_ms(&self) -> Vec<f64> {
        self.trials.iter().map(|t| t.reaction * 1e3).collect()
    }
}

mod image;
mod table;

use image::{syncfs, Tree};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes_and_print_back() {
        for text in ["10k", "100k", "1M", "5M", "200k@tmpfs", "1500"] {
            assert_eq!(parse_size(text).unwrap().to_string(), text);
        }
        assert_eq!(
            parse_size("2m@ext4"),
            Ok(Size {
                entries: 2_000_000,
                tmpfs: false
            })
        );
        assert!(parse_size("10").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("10k@xfs").is_err());
        assert!(parse_size("99999999999999999999M").is_err());
    }

    #[test]
    fn protected_names_go_into_the_workspace_table() {
        let ws = Path::new("/mnt/ws");
        let cfg = DaemonConfig {
            source: "ebpf",
            workspace: ws,
            state: Path::new("/tmp/state"),
            poll_interval: "30s",
            sample_interval: "250ms",
            cleanup_free: "64MiB",
            critical_free: "8MiB",
            target_free: "64MiB",
        };
        let names = vec!["app-0-0".to_string(), "app-1-0".to_string()];
        let toml = with_protect(&cfg.toml(), ws, &names).unwrap();
        let config = guardian::config::Config::parse(&toml, "bench").unwrap();
        assert_eq!(config.workspaces[0].protect, names);
    }
}
