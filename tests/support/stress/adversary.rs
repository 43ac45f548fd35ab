//! The hostile process: a child process whose threads attack the workspaces while Guardian
//! cleans them. It only ever touches *victims* (project dirs whose names start with
//! [`VICTIM_PREFIX`] or [`HOSTILE_PREFIX`]), its own scratch dir outside the workspaces, and
//! mounts it makes itself; what it points symlinks and bind mounts at (protected dirs, trees
//! outside the workspaces, another filesystem) it never writes.
//!
//! Threads, each looping until the deadline:
//! - `swap`: a victim's `node_modules`, one of its packages, or the victim itself renamed
//!   away and replaced by a symlink (to an outside tree, a protected dir, another filesystem,
//!   `/`), then put back;
//! - `bind`: a bind mount of an outside tree (same filesystem), of another filesystem, or of a
//!   protected dir onto a victim, its `node_modules`, a package or a fresh dir in it; unmounted
//!   after a while;
//! - `move`: victims renamed between the two workspaces, `node_modules` moved into another
//!   victim, victims moved out to the scratch dir and back in;
//! - `name`: victims with non-UTF-8, newline, control-character, escape-lookalike and maximum
//!   length names, with such names inside their `node_modules` too;
//! - `hold`: files in victims held open and `sleep` processes with their cwd in victims, for a
//!   while (a held file found unlinked when it is let go is counted);
//!
//! plus, for the whole life of the process, the fixed holds the harness asks for (a `sleep` with
//! its cwd in each `hold_cwd` dir, an open file in each `hold_fd` dir): those projects must
//! survive. Protocol: after the fixed holds are in place the process writes the `ready` file;
//! at the deadline it stops attacking and writes its counts (JSON) to `report`; it lets the fixed
//! holds go and exits when its stdin is closed.

mod actions;

use super::rng::Rng;
use actions::{bind, hold, hostile_names, mount_id, open_dir, relocate, swap};
use anyhow::{Context, Result};
use rustix::fd::AsFd;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ROLE: &str = "adversary";
/// Names of victims the harness creates.
pub const VICTIM_PREFIX: &str = "v-";
/// Names of victims the adversary creates with hostile bytes.
pub const HOSTILE_PREFIX: &str = "x-";

/// Everything the hostile process is told.
#[derive(Clone, Debug)]
pub struct AdversarySpec {
    pub workspaces: Vec<PathBuf>,
    /// Where victims moved out of the workspaces go (outside policy, not digested).
    pub scratch: PathBuf,
    /// Symlink and bind-mount targets that must never change (outside trees, protected dirs,
    /// another filesystem).
    pub targets: Vec<PathBuf>,
    pub hold_cwd: Vec<PathBuf>,
    pub hold_fd: Vec<PathBuf>,
    pub seed: u64,
    pub until: SystemTime,
    /// Hostile-named victims are made only while the workspaces' filesystem is less used than
    /// this (the harness keeps it at about this level; the adversary attacks, it does not race
    /// Guardian for space).
    pub keep_used_percent: f64,
    pub ready: PathBuf,
    pub report: PathBuf,
}

fn paths_json(paths: &[PathBuf]) -> serde_json::Value {
    paths
        .iter()
        .map(|p| serde_json::Value::String(p.to_string_lossy().into_owned()))
        .collect()
}

fn paths_from(v: &serde_json::Value) -> Vec<PathBuf> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

impl AdversarySpec {
    pub fn args(&self) -> Vec<String> {
        let until = self
            .until
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let spec = serde_json::json!({
            "workspaces": paths_json(&self.workspaces),
            "scratch": self.scratch.to_string_lossy(),
            "targets": paths_json(&self.targets),
            "hold_cwd": paths_json(&self.hold_cwd),
            "hold_fd": paths_json(&self.hold_fd),
            "seed": self.seed,
            "until": until,
            "keep_used_percent": self.keep_used_percent,
            "ready": self.ready.to_string_lossy(),
            "report": self.report.to_string_lossy(),
        });
        vec![ROLE.into(), spec.to_string()]
    }

    fn parse(args: &[String]) -> Result<AdversarySpec> {
        let v: serde_json::Value =
            serde_json::from_str(args.first().context("no adversary spec")?)?;
        let path = |k: &str| -> Result<PathBuf> {
            Ok(PathBuf::from(
                v[k].as_str().with_context(|| format!("no {k}"))?,
            ))
        };
        Ok(AdversarySpec {
            workspaces: paths_from(&v["workspaces"]),
            scratch: path("scratch")?,
            targets: paths_from(&v["targets"]),
            hold_cwd: paths_from(&v["hold_cwd"]),
            hold_fd: paths_from(&v["hold_fd"]),
            seed: v["seed"].as_u64().context("no seed")?,
            until: UNIX_EPOCH + Duration::from_secs_f64(v["until"].as_f64().unwrap_or(0.0)),
            keep_used_percent: v["keep_used_percent"].as_f64().unwrap_or(95.0),
            ready: path("ready")?,
            report: path("report")?,
        })
    }
}

/// Counts by action (`swap.node_modules`, `bind.other_fs`, …); failures (the victim vanished
/// under the action) are counted as `…failed`.
#[derive(Default)]
struct Counts(Mutex<BTreeMap<String, u64>>);

impl Counts {
    fn add(&self, key: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(key.to_string()).or_insert(0) += 1;
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct Ctx {
    spec: AdversarySpec,
    counts: Counts,
    stop: AtomicBool,
    /// Mount id of the workspaces: a victim dir on another mount is one of the adversary's bind
    /// mounts (of a tree it must not change), never written into.
    base_mnt: u64,
}

impl Ctx {
    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || SystemTime::now() >= self.spec.until
    }

    /// Every victim in the workspaces now.
    fn victims(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for ws in &self.spec.workspaces {
            let Ok(entries) = std::fs::read_dir(ws) else {
                continue;
            };
            for e in entries.flatten() {
                if is_victim_name(&e.file_name()) {
                    out.push(e.path());
                }
            }
        }
        out
    }

    fn pick_victim(&self, rng: &mut Rng) -> Option<PathBuf> {
        rng.pick(&self.victims()).cloned()
    }

    fn outcome(&self, action: &str, ok: bool) {
        if ok {
            self.counts.add(action);
        } else {
            self.counts.add(&format!("{action}.failed"));
        }
    }
}

/// A victim's name: one the adversary may touch.
pub fn is_victim_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    (b.starts_with(VICTIM_PREFIX.as_bytes()) || b.starts_with(HOSTILE_PREFIX.as_bytes()))
        && !b.ends_with(b".away")
}

/// The hostile child process.
pub fn main(args: &[String]) -> Result<()> {
    let spec = AdversarySpec::parse(args)?;
    std::fs::create_dir_all(&spec.scratch)?;
    // Fixed holds for the whole life of the process.
    let mut sleepers: Vec<Child> = Vec::new();
    for dir in &spec.hold_cwd {
        sleepers.push(
            Command::new("sleep")
                .arg("1000000")
                .current_dir(dir)
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot hold {}", dir.display()))?,
        );
    }
    let mut held_files = Vec::new();
    for dir in &spec.hold_fd {
        let file =
            first_file(dir).with_context(|| format!("no file to hold in {}", dir.display()))?;
        held_files.push(std::fs::File::open(&file)?);
    }
    wait_for_cwds(&sleepers, &spec.hold_cwd);
    std::fs::write(&spec.ready, b"ready\n")?;

    let first = spec.workspaces.first().context("no workspace")?;
    let base_mnt = open_dir(None, first)
        .and_then(|fd| mount_id(fd.as_fd()))
        .context("the workspace's mount id")?;
    let ctx = Arc::new(Ctx {
        spec: spec.clone(),
        counts: Counts::default(),
        stop: AtomicBool::new(false),
        base_mnt,
    });
    let mut rng = Rng::new(spec.seed);
    type Action = fn(&Ctx, &mut Rng);
    let threads: [(&str, Action); 5] = [
        ("swap", swap),
        ("bind", bind),
        ("move", relocate),
        ("name", hostile_names),
        ("hold", hold),
    ];
    let handles: Vec<_> = threads
        .iter()
        .map(|(name, action)| {
            let (ctx, mut rng, action) = (ctx.clone(), rng.fork(), *action);
            std::thread::Builder::new()
                .name(format!("adversary-{name}"))
                .spawn(move || {
                    while !ctx.done() {
                        action(&ctx, &mut rng);
                    }
                })
        })
        .collect::<std::io::Result<_>>()?;
    for h in handles {
        let _ = h.join();
    }
    let counts = ctx.counts.snapshot();
    std::fs::write(&spec.report, serde_json::to_vec(&counts)?)?;

    // Hold on until the harness has taken its digests (it closes our stdin).
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    drop(held_files);
    for mut s in sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(())
}

fn wait_for_cwds(sleepers: &[Child], dirs: &[PathBuf]) {
    for (child, dir) in sleepers.iter().zip(dirs) {
        for _ in 0..500 {
            if std::fs::read_link(format!("/proc/{}/cwd", child.id()))
                .ok()
                .as_deref()
                == Some(dir)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The first regular file below `dir` (depth first).
fn first_file(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in &entries {
        let t = e.file_type().ok()?;
        if t.is_file() {
            return Some(e.path());
        }
    }
    entries
        .iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| first_file(&e.path()))
}

/// A random file somewhere in `dir` (a few levels down), if any.
fn some_file(dir: &Path, rng: &mut Rng) -> Option<PathBuf> {
    let mut here = dir.to_path_buf();
    for _ in 0..4 {
        let entries: Vec<_> = std::fs::read_dir(&here).ok()?.flatten().collect();
        let e = rng.pick(&entries)?;
        let t = e.file_type().ok()?;
        if t.is_file() {
            return Some(e.path());
        }
        if !t.is_dir() {
            return None;
        }
        here = e.path();
    }
    None
}

fn nap(rng: &mut Rng, max_ms: u64) {
    std::thread::sleep(Duration::from_millis(rng.below(max_ms + 1)));
}

fn tag(rng: &mut Rng) -> String {
    format!("{:08x}", rng.next_u64() as u32)
}

/// Counters that are observations, not hostile actions.
pub const OBSERVATIONS: &[&str] = &["bind.left_mounted", "hold.open_file.unlinked_while_held"];
