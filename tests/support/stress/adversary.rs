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

use super::rng::Rng;
use anyhow::{Context, Result};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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

// The adversary's own writes go through dir fds opened without following symlinks: its
// threads swap victims for symlinks to trees it must never change, so a path through a victim
// could lead anywhere by the time it is used.

/// Opens the directory `name` relative to `at` (or the absolute path `name`) without following
/// a symlink in its last component.
fn open_dir(at: Option<BorrowedFd<'_>>, name: &Path) -> Option<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match at {
        Some(fd) => rustix::fs::openat(fd, name, flags, Mode::empty()).ok(),
        None => rustix::fs::openat(rustix::fs::CWD, name, flags, Mode::empty()).ok(),
    }
}

/// An `O_PATH` handle on the directory `name` in `at`, not following a symlink: a mount point
/// given as `/proc/self/fd/N` is exactly this directory.
fn path_handle(at: BorrowedFd<'_>, name: &Path) -> Option<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(at, name, flags, Mode::empty()).ok()
}

fn mount_id(fd: BorrowedFd<'_>) -> Option<u64> {
    rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID)
        .ok()
        .map(|st| st.stx_mnt_id)
}

impl Ctx {
    /// Like [`open_dir`], and only a directory on the workspaces' own mount: one of the
    /// adversary's bind mounts (a protected or outside tree seen through a victim) is never
    /// written into. Writes then go through the fd, which stays on this directory even if a
    /// mount is put over its path later.
    fn writable_dir(&self, at: Option<BorrowedFd<'_>>, name: &Path) -> Option<OwnedFd> {
        let fd = open_dir(at, name)?;
        (mount_id(fd.as_fd()) == Some(self.base_mnt)).then_some(fd)
    }
}

impl Ctx {
    /// The victim's `node_modules` (made again, with packages `pkg-0` and `pkg-1`, when
    /// Guardian already deleted it): the attacks on it need something to attack.
    fn modules_of(&self, victim: BorrowedFd<'_>) -> Option<OwnedFd> {
        let nm = Path::new("node_modules");
        let _ = rustix::fs::mkdirat(victim, nm, Mode::from_raw_mode(0o755));
        let fd = self.writable_dir(Some(victim), nm)?;
        for pkg in ["pkg-0", "pkg-1"] {
            if rustix::fs::mkdirat(&fd, pkg, Mode::from_raw_mode(0o755)).is_ok() {
                if let Some(dir) = self.writable_dir(Some(fd.as_fd()), Path::new(pkg)) {
                    let file = rustix::fs::openat(
                        &dir,
                        "index.js",
                        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
                        Mode::from_raw_mode(0o644),
                    );
                    if let Ok(file) = file {
                        let _ = rustix::io::write(&file, &[b'j'; 1024]);
                    }
                }
            }
        }
        Some(fd)
    }
}

/// Counters that are observations, not hostile actions.
pub const OBSERVATIONS: &[&str] = &["bind.left_mounted", "hold.open_file.unlinked_while_held"];

fn is_symlink_at(at: BorrowedFd<'_>, name: &Path) -> bool {
    rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
    })
}

/// Swaps a victim's `node_modules`, one of its packages, or the victim itself for a symlink,
/// then puts it back.
fn swap(ctx: &Ctx, rng: &mut Rng) {
    let Some(victim) = ctx.pick_victim(rng) else {
        nap(rng, 20);
        return;
    };
    let Some(target) = rng.pick(&ctx.spec.targets).cloned() else {
        return;
    };
    let target = match rng.below(4) {
        0 => PathBuf::from("/"),
        1 => target.join("node_modules"),
        _ => target,
    };
    // The directory holding the entry to swap, and the entry's name.
    let (holder, name, kind) = match rng.below(3) {
        0 => {
            let v = ctx.writable_dir(None, &victim);
            if let Some(v) = &v {
                ctx.modules_of(v.as_fd());
            }
            (v, PathBuf::from("node_modules"), "swap.node_modules")
        }
        1 => (
            ctx.writable_dir(None, &victim)
                .and_then(|v| ctx.modules_of(v.as_fd())),
            PathBuf::from("pkg-0"),
            "swap.package",
        ),
        _ => {
            let (Some(parent), Some(name)) = (victim.parent(), victim.file_name()) else {
                return;
            };
            (
                ctx.writable_dir(None, parent),
                PathBuf::from(name),
                "swap.project",
            )
        }
    };
    let Some(holder) = holder else {
        ctx.outcome(kind, false);
        return;
    };
    let mut away = name.as_os_str().to_os_string();
    away.push(format!(".{}.away", tag(rng)));
    let away = PathBuf::from(away);
    if rustix::fs::renameat(&holder, &name, &holder, &away).is_err() {
        ctx.outcome(kind, false);
        return;
    }
    let linked = rustix::fs::symlinkat(&target, &holder, &name).is_ok();
    ctx.outcome(kind, linked);
    nap(rng, 40);
    if is_symlink_at(holder.as_fd(), &name) {
        let _ = rustix::fs::unlinkat(&holder, &name, AtFlags::empty());
    }
    let _ = rustix::fs::renameat(&holder, &away, &holder, &name);
}

/// Bind-mounts something that must not change onto a victim, for a while.
fn bind(ctx: &Ctx, rng: &mut Rng) {
    let Some(victim) = ctx.pick_victim(rng) else {
        nap(rng, 20);
        return;
    };
    let Some(source) = rng.pick(&ctx.spec.targets).cloned() else {
        return;
    };
    let (Some(parent), Some(victim_name)) = (victim.parent(), victim.file_name()) else {
        return;
    };
    let Some(ws) = ctx.writable_dir(None, parent) else {
        return;
    };
    let vfd = ctx.writable_dir(Some(ws.as_fd()), Path::new(victim_name));
    let nm = vfd.as_ref().and_then(|v| ctx.modules_of(v.as_fd()));
    // The handle to mount on, and the path to unmount later.
    let (point, shown, kind) = match rng.below(4) {
        0 => (
            vfd.as_ref()
                .and_then(|v| path_handle(v.as_fd(), Path::new("node_modules"))),
            victim.join("node_modules"),
            "bind.onto_node_modules",
        ),
        1 => (
            nm.as_ref()
                .and_then(|n| path_handle(n.as_fd(), Path::new("pkg-1"))),
            victim.join("node_modules/pkg-1"),
            "bind.onto_package",
        ),
        2 => (
            path_handle(ws.as_fd(), Path::new(victim_name)),
            victim.clone(),
            "bind.onto_project",
        ),
        _ => {
            let name = PathBuf::from(format!("evil-{}", tag(rng)));
            let made = nm
                .as_ref()
                .is_some_and(|n| rustix::fs::mkdirat(n, &name, Mode::from_raw_mode(0o755)).is_ok());
            (
                nm.as_ref()
                    .filter(|_| made)
                    .and_then(|n| path_handle(n.as_fd(), &name)),
                victim.join("node_modules").join(&name),
                "bind.into_new_dir",
            )
        }
    };
    // Same filesystem as the workspaces or not: the source's device says which.
    let kind = if same_device(&source, &victim) {
        format!("{kind}.same_fs")
    } else {
        format!("{kind}.other_fs")
    };
    let Some(point) = point else {
        ctx.outcome(&kind, false);
        return;
    };
    let at = format!("/proc/self/fd/{}", point.as_raw_fd());
    if rustix::mount::mount_bind(&source, at.as_str()).is_err() {
        ctx.outcome(&kind, false);
        return;
    }
    ctx.outcome(&kind, true);
    nap(rng, 1500);
    // Moved away by a rename meanwhile: left for the harness, which unmounts everything below
    // the tmpfs at the end.
    let flags = rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW;
    if rustix::mount::unmount(&shown, flags).is_err() {
        ctx.counts.add("bind.left_mounted");
    }
}

fn same_device(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => false,
    }
}

/// Renames victims between workspaces, `node_modules` into other victims, victims out to the
/// scratch dir and back.
fn relocate(ctx: &Ctx, rng: &mut Rng) {
    match rng.below(4) {
        0 => {
            let Some(victim) = ctx.pick_victim(rng) else {
                nap(rng, 20);
                return;
            };
            let Some(ws) = rng.pick(&ctx.spec.workspaces) else {
                return;
            };
            let to = ws.join(format!("{VICTIM_PREFIX}moved-{}", tag(rng)));
            ctx.outcome(
                "move.between_workspaces",
                std::fs::rename(&victim, to).is_ok(),
            );
        }
        1 => {
            let (Some(a), Some(b)) = (ctx.pick_victim(rng), ctx.pick_victim(rng)) else {
                nap(rng, 20);
                return;
            };
            let sub = PathBuf::from(format!("sub-{}", tag(rng)));
            let nm = Path::new("node_modules");
            let ok = (|| {
                let (afd, bfd) = (ctx.writable_dir(None, &a)?, ctx.writable_dir(None, &b)?);
                ctx.modules_of(afd.as_fd())?;
                rustix::fs::mkdirat(&bfd, &sub, Mode::from_raw_mode(0o755)).ok()?;
                let deep = ctx.writable_dir(Some(bfd.as_fd()), &sub)?;
                rustix::fs::renameat(&afd, nm, &deep, nm).ok()
            })()
            .is_some();
            ctx.outcome("move.node_modules_into_another_project", ok);
        }
        2 => {
            let Some(victim) = ctx.pick_victim(rng) else {
                nap(rng, 20);
                return;
            };
            let to = ctx.spec.scratch.join(format!("out-{}", tag(rng)));
            ctx.outcome(
                "move.out_of_workspace",
                std::fs::rename(&victim, to).is_ok(),
            );
        }
        _ => {
            let out: Vec<PathBuf> = std::fs::read_dir(&ctx.spec.scratch)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            let (Some(from), Some(ws)) = (rng.pick(&out).cloned(), rng.pick(&ctx.spec.workspaces))
            else {
                nap(rng, 20);
                return;
            };
            let to = ws.join(format!("{VICTIM_PREFIX}back-{}", tag(rng)));
            ctx.outcome(
                "move.back_into_workspace",
                std::fs::rename(from, to).is_ok(),
            );
        }
    }
    nap(rng, 30);
}

/// Hostile name tails (after [`HOSTILE_PREFIX`]).
fn hostile_tail(rng: &mut Rng) -> Vec<u8> {
    let tails: [&[u8]; 12] = [
        b"bad\xff\xfe",
        b"new\nline",
        b"tab\there",
        b"esc\x1b[2Jclear",
        b"back\\slash",
        b"looks\\x41escaped",
        b"quote\"d",
        b"\xc3\x28invalid",
        b"cr\rreturn",
        b"\xe2\x80\xaertl",
        b" lead space",
        b"..dots",
    ];
    let mut name = rng.pick(&tails).map(|t| t.to_vec()).unwrap_or_default();
    if rng.chance(0.1) {
        // As long as a name may be.
        name.resize(250 - HOSTILE_PREFIX.len(), b'L');
    }
    name
}

/// Creates a victim with a hostile name and hostile names inside its `node_modules`.
fn hostile_names(ctx: &Ctx, rng: &mut Rng) {
    let Some(ws) = rng.pick(&ctx.spec.workspaces).cloned() else {
        return;
    };
    if super::fsx::space(&ws).is_ok_and(|s| s.used_percent() >= ctx.spec.keep_used_percent) {
        nap(rng, 100);
        return;
    }
    let mut name = HOSTILE_PREFIX.as_bytes().to_vec();
    name.extend(hostile_tail(rng));
    name.extend(format!("-{}", tag(rng)).as_bytes());
    name.truncate(255);
    // Built under a name no other thread touches, then renamed into place.
    let building = ws.join(format!(".building-{}", tag(rng)));
    let made = (|| -> std::io::Result<()> {
        let inner = building
            .join("node_modules")
            .join(OsString::from_vec(hostile_tail(rng)));
        std::fs::create_dir_all(&inner)?;
        for i in 0..rng.between(4, 24) {
            let mut file = hostile_tail(rng);
            file.extend(format!("-{i}").as_bytes());
            file.truncate(255);
            std::fs::write(inner.join(OsStr::from_bytes(&file)), vec![b'h'; 4 << 10])?;
        }
        std::fs::write(building.join("main.rs"), b"fn main() {}\n")?;
        std::fs::rename(&building, ws.join(OsString::from_vec(name)))
    })();
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    ctx.outcome("name.hostile_project", made.is_ok());
    nap(rng, 100);
}

/// Holds a file of a victim open, or puts a `sleep` in it, for a while.
fn hold(ctx: &Ctx, rng: &mut Rng) {
    let Some(victim) = ctx.pick_victim(rng) else {
        nap(rng, 20);
        return;
    };
    if rng.chance(0.5) {
        let Some(file) = some_file(&victim, rng) else {
            ctx.outcome("hold.open_file", false);
            return;
        };
        let Ok(f) = std::fs::File::open(&file) else {
            ctx.outcome("hold.open_file", false);
            return;
        };
        ctx.outcome("hold.open_file", true);
        nap(rng, 2000);
        // Unlinked while held: another process deleted it under an open file (Guardian would
        // have had to decide in between; counted, not judged — the fixed holds are the check).
        if rustix::fs::fstat(&f).is_ok_and(|st| st.st_nlink == 0) {
            ctx.counts.add("hold.open_file.unlinked_while_held");
        }
    } else {
        let child = Command::new("sleep")
            .arg(format!("{}", rng.between(1, 3)))
            .current_dir(&victim)
            .stdin(Stdio::null())
            .spawn();
        match child {
            Ok(mut c) => {
                ctx.outcome("hold.cwd", true);
                let _ = c.wait();
            }
            Err(_) => ctx.outcome("hold.cwd", false),
        }
    }
}
