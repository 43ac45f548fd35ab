//! The mount boundary: the one place that decides whether an entry lies on the same filesystem
//! *and mount* as the root of a walk or a removal. A bind mount of the same filesystem has the
//! same device number, so the device alone is not enough: the mount id is needed too.
//!
//! Ways to learn the mount of an entry, best first:
//! 1. `statx` with `STATX_MNT_ID` (Linux 5.8+): free, part of the stat every walk does anyway;
//! 2. `name_to_handle_at` (Linux 2.6.39+), which reports the mount id of the entry it resolves —
//!    one extra syscall per directory;
//! 3. `/proc/self/mountinfo`: the (dev, ino) of the root of every mount point below the root of
//!    the walk, read when the boundary is set up; an entry with one of those identities is a
//!    mount (or the source of a bind mount, which is left alone too).
//!
//! When none works, the boundary cannot be proven and [`Boundary::of`] says so: the executor
//! then refuses to delete. On macOS, where a mount always has a device number of its own (no
//! same-device bind mounts), the device is the boundary. Never deletes, never follows a symlink.

// The fallbacks below are Linux-only; on macOS the device is the boundary and they go unused.
#![cfg_attr(not(target_os = "linux"), allow(unused_imports, dead_code))]

use super::{EntryKind, EntryStat};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd};
use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::CStr;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How mount ids are learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountIds {
    /// `statx` reports `STATX_MNT_ID`.
    Statx,
    /// `name_to_handle_at` reports the mount id.
    Handle,
    /// The identities of mount roots listed in `/proc/self/mountinfo`.
    Mountinfo,
    /// No way: the boundary cannot be proven.
    Unavailable,
}

thread_local! {
    static FORCED: Cell<Option<MountIds>> = const { Cell::new(None) };
}

/// For tests only: on the calling thread, pretend the kernel offers no better way than `method`
/// (e.g. a kernel before 5.8 without `STATX_MNT_ID`), so the fallbacks are exercised on this
/// machine. `None` undoes it. A boundary is set up on the thread that starts a walk or a removal
/// and carried from there, so this reaches the whole operation and nothing else.
#[doc(hidden)]
pub fn force_mount_ids(method: Option<MountIds>) {
    FORCED.with(|f| f.set(method));
}

fn forced() -> Option<MountIds> {
    FORCED.with(|f| f.get())
}

/// How the mount of an entry is compared with the root's.
#[derive(Clone, Debug)]
enum MountCheck {
    /// `EntryStat::mnt_id` (statx) must equal this.
    Statx(u64),
    /// `name_to_handle_at` must report this mount id for every directory.
    Handle(u64),
    /// No entry may have one of these (dev, ino): roots of mounts below the walk's root.
    Roots(HashSet<(u64, u64)>),
    /// Device only: a read-only walk that could not learn mounts (see [`Boundary::lenient`]).
    DeviceOnly,
}

/// The filesystem and mount a walk or a removal must stay on.
#[derive(Clone, Debug)]
pub struct Boundary {
    dev: u64,
    check: MountCheck,
}

/// Why the mount boundary of a root cannot be proven.
#[derive(Debug, thiserror::Error)]
#[error("cannot tell mount points apart below {root}: {why}")]
pub struct BoundaryError {
    pub root: String,
    pub why: String,
}

impl Boundary {
    /// The boundary of the open directory `root`: its device (see the module doc).
    #[cfg(not(target_os = "linux"))]
    pub fn of(root: BorrowedFd<'_>, shown: &Path) -> Result<Boundary, BoundaryError> {
        let st = super::stat_fd(root).map_err(|e| BoundaryError {
            root: crate::textpath::escape(shown),
            why: format!("cannot stat it: {e}"),
        })?;
        Ok(Boundary {
            dev: st.dev,
            check: MountCheck::DeviceOnly,
        })
    }

    /// The boundary of the open directory `root` (shown as `shown`, its absolute path, which the
    /// mountinfo fallback needs). Fails when no method can tell mounts apart here.
    #[cfg(target_os = "linux")]
    pub fn of(root: BorrowedFd<'_>, shown: &Path) -> Result<Boundary, BoundaryError> {
        let err = |why: String| BoundaryError {
            root: crate::textpath::escape(shown),
            why,
        };
        let st = super::stat_fd(root).map_err(|e| err(format!("cannot stat it: {e}")))?;
        let forced = forced();
        let allowed = |m: MountIds| match forced {
            None => true,
            Some(f) => rank(m) >= rank(f),
        };
        if allowed(MountIds::Statx) {
            if let Some(id) = st.mnt_id {
                return Ok(Boundary {
                    dev: st.dev,
                    check: MountCheck::Statx(id),
                });
            }
        }
        let mut why = vec!["statx reports no mount id (kernel before 5.8)".to_string()];
        if allowed(MountIds::Handle) {
            match handle_mount_id(root, c"") {
                Ok(id) => {
                    return Ok(Boundary {
                        dev: st.dev,
                        check: MountCheck::Handle(id),
                    })
                }
                Err(e) => why.push(format!("name_to_handle_at: {e}")),
            }
        }
        if allowed(MountIds::Mountinfo) {
            match mount_roots_below(shown, st.dev, st.ino) {
                Ok(roots) => {
                    return Ok(Boundary {
                        dev: st.dev,
                        check: MountCheck::Roots(roots),
                    })
                }
                Err(e) => why.push(format!("/proc/self/mountinfo: {e}")),
            }
        }
        Err(err(why.join("; ")))
    }

    /// For read-only walks (sizing): the boundary when it can be proven, else the device alone
    /// and the reason, so the walk can say it could not tell mounts apart.
    pub fn lenient(root: BorrowedFd<'_>, shown: &Path) -> io::Result<(Boundary, Option<String>)> {
        match Boundary::of(root, shown) {
            Ok(b) => Ok((b, None)),
            Err(e) => {
                let st = super::stat_fd(root)?;
                Ok((
                    Boundary {
                        dev: st.dev,
                        check: MountCheck::DeviceOnly,
                    },
                    Some(e.to_string()),
                ))
            }
        }
    }

    /// Which method this boundary uses.
    pub fn method(&self) -> MountIds {
        match self.check {
            MountCheck::Statx(_) => MountIds::Statx,
            MountCheck::Handle(_) => MountIds::Handle,
            MountCheck::Roots(_) => MountIds::Mountinfo,
            MountCheck::DeviceOnly => MountIds::Unavailable,
        }
    }

    /// Whether the entry `name` of `parent`, stated (without following) as `st`, lies on the
    /// boundary's filesystem and mount. A directory is checked before it is entered.
    pub fn admits(&self, parent: BorrowedFd<'_>, name: &CStr, st: &EntryStat) -> bool {
        if st.dev != self.dev {
            return false;
        }
        match &self.check {
            MountCheck::Statx(id) => st.mnt_id == Some(*id),
            // Only a directory can be entered; a file bind-mounted over a file is unlinked
            // (the kernel refuses with EBUSY), never entered.
            MountCheck::Handle(id) => {
                st.kind != EntryKind::Dir || handle_mount_id(parent, name).ok() == Some(*id)
            }
            MountCheck::Roots(roots) => !roots.contains(&(st.dev, st.ino)),
            MountCheck::DeviceOnly => true,
        }
    }

    /// Whether the open directory `dir`, stated as `st`, lies on the boundary (checked again
    /// after opening, against a swap between stat and open).
    pub fn admits_open(&self, dir: BorrowedFd<'_>, st: &EntryStat) -> bool {
        self.admits(dir, c"", st)
    }
}

fn rank(m: MountIds) -> u8 {
    match m {
        MountIds::Statx => 0,
        MountIds::Handle => 1,
        MountIds::Mountinfo => 2,
        MountIds::Unavailable => 3,
    }
}

#[cfg(not(target_os = "linux"))]
fn handle_mount_id(_dir: BorrowedFd<'_>, _name: &CStr) -> io::Result<u64> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The mount id of the entry `name` of `dir` (of `dir` itself when `name` is empty), from
/// `name_to_handle_at`. Symlinks are not followed.
#[cfg(target_os = "linux")]
fn handle_mount_id(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<u64> {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; } with room for
    // MAX_HANDLE_SZ (128) bytes of handle.
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        data: [u8; 128],
    }
    let mut handle = Handle {
        bytes: 128,
        kind: 0,
        data: [0; 128],
    };
    let mut mount_id: libc::c_int = -1;
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `handle` has the
    // layout of `struct file_handle` with 128 bytes of room, `mount_id` is a c_int.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_fd().as_raw_fd(),
            name.as_ptr(),
            &mut handle as *mut Handle,
            &mut mount_id as *mut libc::c_int,
            flags,
        )
    };
    // EOVERFLOW still reports the mount id: only the handle did not fit.
    let ok = rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EOVERFLOW);
    if !ok {
        return Err(io::Error::last_os_error());
    }
    u64::try_from(mount_id).map_err(|_| io::Error::other("no mount id reported"))
}

/// The (dev, ino) of the root of every mount whose mount point lies below `root` (excluding the
/// mount `root` itself is on), from `/proc/self/mountinfo`.
#[cfg(target_os = "linux")]
fn mount_roots_below(root: &Path, dev: u64, ino: u64) -> io::Result<HashSet<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read("/proc/self/mountinfo")?;
    let mut roots = HashSet::new();
    for line in text.split(|b| *b == b'\n') {
        let Some(field) = line.split(|b| *b == b' ').nth(4) else {
            continue;
        };
        let point = super::unescape_mountinfo(field);
        let point = Path::new(OsStr::from_bytes(&point));
        if point == root || !point.starts_with(root) {
            continue;
        }
        // The mounted root as seen through the mount point (follows into the mount).
        if let Ok(meta) = std::fs::metadata(point) {
            if (meta.dev(), meta.ino()) != (dev, ino) {
                roots.insert((meta.dev(), meta.ino()));
            }
        }
    }
    Ok(roots)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn every_method_admits_plain_entries_of_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        let root = super::super::open_dir_path(tmp.path()).unwrap();
        for method in [MountIds::Statx, MountIds::Handle, MountIds::Mountinfo] {
            force_mount_ids(Some(method));
            let b = Boundary::of(root.as_fd(), tmp.path()).unwrap();
            force_mount_ids(None);
            assert_eq!(b.method(), method, "this kernel offers {method:?}");
            for name in [c"d", c"f"] {
                let st = super::super::stat_entry(root.as_fd(), name).unwrap();
                assert!(b.admits(root.as_fd(), name, &st), "{method:?} {name:?}");
            }
        }
        force_mount_ids(Some(MountIds::Unavailable));
        let refused = Boundary::of(root.as_fd(), tmp.path());
        let (lenient, why) = Boundary::lenient(root.as_fd(), tmp.path()).unwrap();
        force_mount_ids(None);
        assert!(refused.is_err());
        assert_eq!(lenient.method(), MountIds::Unavailable);
        assert!(why.unwrap().contains("cannot tell mount points apart"));
    }
}
