//! The adversary's five attack threads (`swap`, `bind`, `move`, `name`, `hold`) and the
//! fd-relative, symlink-refusing helpers they write through.

use super::{nap, some_file, tag, Ctx, Rng, HOSTILE_PREFIX, VICTIM_PREFIX};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// The adversary's own writes go through dir fds opened without following symlinks: its
// threads swap victims for symlinks to trees it must never change, so a path through a victim
// could lead anywhere by the time it is used.

/// Opens the directory `name` relative to `at` (or the absolute path `name`) without following
/// a symlink in its last component.
pub(super) fn open_dir(at: Option<BorrowedFd<'_>>, name: &Path) -> Option<OwnedFd> {
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

pub(super) fn mount_id(fd: BorrowedFd<'_>) -> Option<u64> {
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

fn is_symlink_at(at: BorrowedFd<'_>, name: &Path) -> bool {
    rustix::fs::statat(at, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
    })
}

/// Swaps a victim's `node_modules`, one of its packages, or the victim itself for a symlink,
/// then puts it back.
pub(super) fn swap(ctx: &Ctx, rng: &mut Rng) {
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
pub(super) fn bind(ctx: &Ctx, rng: &mut Rng) {
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
pub(super) fn relocate(ctx: &Ctx, rng: &mut Rng) {
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
pub(super) fn hostile_names(ctx: &Ctx, rng: &mut Rng) {
    let Some(ws) = rng.pick(&ctx.spec.workspaces).cloned() else {
        return;
    };
    if super::super::fsx::space(&ws).is_ok_and(|s| s.used_percent() >= ctx.spec.keep_used_percent) {
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
pub(super) fn hold(ctx: &Ctx, rng: &mut Rng) {
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
