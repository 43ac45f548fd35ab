//! Churn writers: child processes that write into a workspace the way build and agent tasks do
//! — `node_modules`-like trees in fresh project dirs (whole projects deleted again later),
//! growing and rotated logs, big artifacts written and deleted — at a bounded rate, until a
//! deadline or SIGTERM. Every `ENOSPC` is recorded with the reclaimable bytes (`node_modules`
//! outside the protected dirs) measured at that moment; a dir deleted under the writer (by
//! Guardian) is counted and the writer moves on.
//!
//! Arguments (after the role): `kind=modules|logs|big dir=WORKSPACE mount=MOUNT seed=N
//! rate=BYTES_PER_S until=UNIX_SECS report=FILE protected=NAME,NAME…`.

use super::fsx;
use super::rng::Rng;
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ROLE: &str = "churn";

/// Projects a `modules` writer keeps before deleting its oldest (a finished task's dir): more
/// than fit the soak's tmpfs, so finished projects' trees pile up until Guardian cleans them.
pub const KEEP_PROJECTS: usize = 40;
/// A `logs` writer renames its log aside at this size.
const ROTATE_AT: u64 = 12 << 20;
/// Big files a `big` writer keeps.
const KEEP_BIG: usize = 2;

/// What one writer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Modules,
    Logs,
    Big,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Modules => "modules",
            Kind::Logs => "logs",
            Kind::Big => "big",
        }
    }

    fn parse(s: &str) -> Result<Kind> {
        Ok(match s {
            "modules" => Kind::Modules,
            "logs" => Kind::Logs,
            "big" => Kind::Big,
            other => bail!("unknown writer kind {other}"),
        })
    }
}

/// One writer's settings.
#[derive(Clone, Debug)]
pub struct WriterSpec {
    pub kind: Kind,
    pub id: usize,
    pub workspace: PathBuf,
    pub mount: PathBuf,
    pub seed: u64,
    pub rate: u64,
    pub until: SystemTime,
    pub report: PathBuf,
    /// Project names whose `node_modules` do not count as reclaimable (protected, kept, in use).
    pub protected: Vec<String>,
}

impl WriterSpec {
    pub fn args(&self) -> Vec<String> {
        let until = self
            .until
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        vec![
            ROLE.into(),
            format!("kind={}", self.kind.name()),
            format!("id={}", self.id),
            format!("dir={}", self.workspace.display()),
            format!("mount={}", self.mount.display()),
            format!("seed={}", self.seed),
            format!("rate={}", self.rate),
            format!("until={until}"),
            format!("report={}", self.report.display()),
            format!("protected={}", self.protected.join(",")),
        ]
    }

    fn parse(args: &[String]) -> Result<WriterSpec> {
        let map: HashMap<&str, &str> = args.iter().filter_map(|a| a.split_once('=')).collect();
        let get = |k: &str| map.get(k).copied().with_context(|| format!("missing {k}="));
        let until: f64 = get("until")?.parse()?;
        Ok(WriterSpec {
            kind: Kind::parse(get("kind")?)?,
            id: get("id")?.parse()?,
            workspace: PathBuf::from(get("dir")?),
            mount: PathBuf::from(get("mount")?),
            seed: get("seed")?.parse()?,
            rate: get("rate")?.parse()?,
            until: UNIX_EPOCH + Duration::from_secs_f64(until.max(0.0)),
            report: PathBuf::from(get("report")?),
            protected: get("protected")?
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        })
    }
}

/// A line of a writer's report file (JSON).
#[derive(Clone, Debug, Default)]
pub struct ReportLine {
    /// `enospc` or `summary`.
    pub event: String,
    pub kind: String,
    pub id: usize,
    /// Seconds since the epoch.
    pub t: f64,
    /// `enospc`: reclaimable bytes then, and free bytes.
    pub reclaimable: u64,
    pub avail: u64,
    /// `summary`: what the writer did.
    pub bytes: u64,
    pub files: u64,
    pub deleted_under_it: u64,
    pub enospc: u64,
    pub other_errors: u64,
}

impl ReportLine {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "event": self.event, "kind": self.kind, "id": self.id, "t": self.t,
            "reclaimable": self.reclaimable, "avail": self.avail, "bytes": self.bytes,
            "files": self.files, "deleted_under_it": self.deleted_under_it,
            "enospc": self.enospc, "other_errors": self.other_errors,
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<ReportLine> {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Some(ReportLine {
            event: v["event"].as_str()?.to_string(),
            kind: v["kind"].as_str().unwrap_or("").to_string(),
            id: usize::try_from(n("id")).unwrap_or(0),
            t: v["t"].as_f64().unwrap_or(0.0),
            reclaimable: n("reclaimable"),
            avail: n("avail"),
            bytes: n("bytes"),
            files: n("files"),
            deleted_under_it: n("deleted_under_it"),
            enospc: n("enospc"),
            other_errors: n("other_errors"),
        })
    }
}

/// The child process: runs one writer until its deadline or SIGTERM.
pub fn main(args: &[String]) -> Result<()> {
    let spec = WriterSpec::parse(args)?;
    fsx::ensure_on(&spec.mount, &spec.workspace)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    let mut w = Writer {
        spec: spec.clone(),
        rng: Rng::new(spec.seed),
        stop,
        started: Instant::now(),
        bytes: 0,
        files: 0,
        deleted_under_it: 0,
        enospc: 0,
        other_errors: 0,
        report: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.report)
            .with_context(|| format!("cannot open {}", spec.report.display()))?,
    };
    match spec.kind {
        Kind::Modules => w.modules(),
        Kind::Logs => w.logs(),
        Kind::Big => w.big(),
    }
    w.line(ReportLine {
        event: "summary".into(),
        bytes: w.bytes,
        files: w.files,
        deleted_under_it: w.deleted_under_it,
        enospc: w.enospc,
        other_errors: w.other_errors,
        ..w.base("summary")
    });
    Ok(())
}

struct Writer {
    spec: WriterSpec,
    rng: Rng,
    stop: Arc<AtomicBool>,
    started: Instant,
    bytes: u64,
    files: u64,
    deleted_under_it: u64,
    enospc: u64,
    other_errors: u64,
    report: std::fs::File,
}

/// Why a write did not happen.
enum Failed {
    /// The dir was deleted under the writer.
    Vanished,
    NoSpace,
    Other,
}

impl Writer {
    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || SystemTime::now() >= self.spec.until
    }

    fn base(&self, event: &str) -> ReportLine {
        ReportLine {
            event: event.into(),
            kind: self.spec.kind.name().into(),
            id: self.spec.id,
            t: now_secs(),
            ..ReportLine::default()
        }
    }

    fn line(&mut self, line: ReportLine) {
        let mut text = line.to_json().to_string().into_bytes();
        text.push(b'\n');
        let _ = self.report.write_all(&text);
    }

    /// Sleeps as long as needed to keep the average rate at `rate`.
    fn pace(&self) {
        let due = Duration::from_secs_f64(self.bytes as f64 / self.spec.rate.max(1) as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep((due - elapsed).min(Duration::from_millis(500)));
        }
    }

    /// Writes `bytes` to a new file at `path`; failures are classified and recorded.
    fn write_file(&mut self, path: &Path, bytes: u64) -> Result<(), Failed> {
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(path)?;
            let chunk = [0x6bu8; 64 << 10];
            let mut left = bytes;
            while left > 0 {
                let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
                f.write_all(&chunk[..n])?;
                left -= n as u64;
                self.bytes += n as u64;
                if left > 0 && n == chunk.len() {
                    self.pace();
                }
            }
            Ok(())
        })();
        self.files += 1;
        self.pace();
        result.map_err(|e| self.failed(&e))
    }

    fn mkdirs(&mut self, dir: &Path) -> Result<(), Failed> {
        std::fs::create_dir_all(dir).map_err(|e| self.failed(&e))
    }

    fn failed(&mut self, e: &std::io::Error) -> Failed {
        if fsx::is_enospc(e) {
            self.enospc += 1;
            let reclaimable = reclaimable_bytes(&self.spec.workspace, &self.spec.protected);
            let avail = fsx::space(&self.spec.mount).map(|s| s.avail).unwrap_or(0);
            let line = ReportLine {
                reclaimable,
                avail,
                ..self.base("enospc")
            };
            self.line(line);
            std::thread::sleep(Duration::from_millis(200));
            Failed::NoSpace
        } else if e.kind() == std::io::ErrorKind::NotFound {
            self.deleted_under_it += 1;
            Failed::Vanished
        } else {
            self.other_errors += 1;
            Failed::Other
        }
    }

    /// `node_modules`-like trees in fresh projects; the oldest project is deleted whole.
    fn modules(&mut self) {
        let mut projects: VecDeque<PathBuf> = VecDeque::new();
        let mut n = 0;
        while !self.done() {
            let project = self
                .spec
                .workspace
                .join(format!("mod-{}-{n}", self.spec.id));
            n += 1;
            let _ = self.one_project(&project);
            projects.push_back(project);
            while projects.len() > KEEP_PROJECTS {
                if let Some(old) = projects.pop_front() {
                    let _ = std::fs::remove_dir_all(&old);
                }
            }
        }
    }

    fn one_project(&mut self, project: &Path) -> Result<(), Failed> {
        self.mkdirs(&project.join("src"))?;
        for i in 0..8 {
            self.write_file(&project.join(format!("src/m{i}.ts")), 4096)?;
        }
        let packages = self.rng.between(40, 120);
        for p in 0..packages {
            if self.done() {
                return Ok(());
            }
            let pkg = project.join(format!("node_modules/pkg-{p}"));
            self.mkdirs(&pkg.join("lib"))?;
            self.write_file(&pkg.join("package.json"), 300)?;
            let index = self.rng.between(1024, 8192);
            self.write_file(&pkg.join("index.js"), index)?;
            for f in 0..self.rng.between(3, 8) {
                let size = self.rng.between(512, 16 << 10);
                self.write_file(&pkg.join(format!("lib/f{f}.js")), size)?;
            }
            if self.rng.chance(0.05) {
                let size = self.rng.between(256 << 10, 2 << 20);
                self.write_file(&pkg.join("binding.node"), size)?;
            }
        }
        self.write_file(&project.join("build.log"), 64 << 10)
    }

    /// A log appended line by line, renamed aside when it grows past `ROTATE_AT`.
    fn logs(&mut self) {
        let dir = self.spec.workspace.join(format!("logger-{}", self.spec.id));
        let log = dir.join("app.log");
        let line = [b'x'; 199];
        while !self.done() {
            if self.mkdirs(&dir).is_err() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log);
            let mut file = match file {
                Ok(f) => f,
                Err(e) => {
                    self.failed(&e);
                    continue;
                }
            };
            self.files += 1;
            let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
            while !self.done() && size < ROTATE_AT {
                let mut batch = Vec::with_capacity(8192);
                for _ in 0..40 {
                    batch.extend_from_slice(&line);
                    batch.push(b'\n');
                }
                match file.write_all(&batch) {
                    Ok(()) => {
                        size += batch.len() as u64;
                        self.bytes += batch.len() as u64;
                    }
                    Err(e) => {
                        self.failed(&e);
                        break;
                    }
                }
                self.pace();
            }
            if size >= ROTATE_AT {
                let _ = std::fs::rename(&log, dir.join("app.log.1"));
            }
        }
    }

    /// Big artifacts; the oldest beyond `KEEP_BIG` is deleted.
    fn big(&mut self) {
        let dir = self.spec.workspace.join(format!("bigjob-{}", self.spec.id));
        let mut files: VecDeque<PathBuf> = VecDeque::new();
        let mut n = 0;
        while !self.done() {
            if self.mkdirs(&dir).is_err() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let path = dir.join(format!("artifact-{n}.bin"));
            n += 1;
            let size = self.rng.between(16 << 20, 48 << 20);
            let _ = self.write_file(&path, size);
            files.push_back(path);
            while files.len() > KEEP_BIG {
                if let Some(old) = files.pop_front() {
                    let _ = std::fs::remove_file(old);
                }
            }
        }
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Allocated bytes of every `node_modules` dir (at most three levels down) in the workspace's
/// projects, except those named in `protected`: what Guardian's phase 1 may delete.
pub fn reclaimable_bytes(workspace: &Path, protected: &[String]) -> u64 {
    let Ok(entries) = std::fs::read_dir(workspace) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if protected.iter().any(|p| std::ffi::OsStr::new(p) == name) {
            continue;
        }
        total += modules_below(&e.path(), 3);
    }
    total
}

fn modules_below(dir: &Path, depth: u32) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    if !meta.is_dir() || depth == 0 {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name() == "node_modules" {
            total += fsx::du(&path);
        } else {
            total += modules_below(&path, depth - 1);
        }
    }
    total
}

/// Reads every writer report in `dir` (files `*.jsonl`).
pub fn read_reports(dir: &Path) -> Vec<ReportLine> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if e.path().extension().is_some_and(|x| x == "jsonl") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|v| ReportLine::from_json(&v)),
            );
        }
    }
    out
}
