//! Whether the mounts below some directories changed: the kernel flags an open
//! `/proc/self/mountinfo` with `POLLPRI | POLLERR` after any mount or unmount in the namespace,
//! so one `poll(2)` with a zero timeout says whether to look; only then is the table read, and
//! only mounts below the watched directories count (a node starting containers mounts all the
//! time elsewhere). Used to keep listings that a mount could invalidate without re-reading them
//! on a timer.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A watch on the mount table. Where it cannot be had (no `/proc`, not Linux) every question is
/// answered "changed", so callers fall back to re-reading.
#[derive(Debug)]
pub struct MountWatch {
    table: PathBuf,
    #[cfg(target_os = "linux")]
    file: Option<std::fs::File>,
    /// The mounts below the watched dirs when last read: (mount id, mount point).
    below: Option<Vec<(u64, PathBuf)>>,
    /// Whether [`MountWatch::changed`] was asked before.
    asked: bool,
}

impl Default for MountWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MountWatch {
    pub fn new() -> MountWatch {
        Self::of(Path::new("/proc/self/mountinfo"))
    }

    /// A watch on the mount table `mountinfo` (`/proc/thread-self/mountinfo` for a thread in
    /// a mount namespace of its own).
    pub fn of(mountinfo: &Path) -> MountWatch {
        MountWatch {
            table: mountinfo.to_path_buf(),
            #[cfg(target_os = "linux")]
            file: std::fs::File::open(mountinfo).ok(),
            below: None,
            asked: false,
        }
    }

    /// Whether anything was mounted or unmounted since the last call: `true` the first time
    /// and whenever the watch cannot tell. Never reads the table. (One watch answers either
    /// this or [`MountWatch::changed_below`]: each consumes the kernel's flag.)
    pub fn changed(&mut self) -> bool {
        let first = !self.asked;
        self.asked = true;
        self.flagged() || first
    }

    /// Whether the mounts below any of `roots` may have changed since the last call: `true` the
    /// first time, after a mount or unmount below one of them, and whenever the watch cannot
    /// tell. A mount elsewhere costs one read of the table, not a `true`.
    /// `roots` is called only when the table has to be read.
    pub fn changed_below(&mut self, roots: impl FnOnce() -> Vec<PathBuf>) -> bool {
        if self.below.is_some() && !self.flagged() {
            return false;
        }
        let Ok(table) = std::fs::read(&self.table) else {
            self.below = None;
            return true;
        };
        let roots = roots();
        let roots: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
        let now = mounts_below(&table, &roots);
        let changed = self.below.as_ref() != Some(&now);
        self.below = Some(now);
        changed
    }

    #[cfg(target_os = "linux")]
    fn flagged(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let Some(file) = &self.file else {
            return true;
        };
        let mut fds = [PollFd::new(file, PollFlags::PRI)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(0) => false,
            Ok(_) => fds[0]
                .revents()
                .intersects(PollFlags::PRI | PollFlags::ERR | PollFlags::NVAL),
            Err(_) => true,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn flagged(&self) -> bool {
        true
    }
}

/// The mounts of `table` (mountinfo text) whose mount point lies strictly below one of `roots`,
/// as (mount id, mount point), in the table's order. Pure.
pub fn mounts_below(table: &[u8], roots: &[&Path]) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    for line in table.split(|b| *b == b'\n') {
        let mut fields = line.split(|b| *b == b' ');
        let id = fields
            .next()
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|f| f.parse::<u64>().ok());
        let (Some(id), Some(point)) = (id, fields.nth(3)) else {
            continue;
        };
        let point = super::unescape_mountinfo(point);
        let point = Path::new(OsStr::from_bytes(&point));
        if roots.iter().any(|r| point != *r && point.starts_with(r)) {
            out.push((id, point.to_path_buf()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[u8] = b"22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
        30 22 0:40 / /work/ws rw shared:2 - tmpfs tmpfs rw\n\
        31 30 0:41 / /work/ws/p\\040one rw shared:3 - tmpfs tmpfs rw\n\
        32 22 0:42 /x /work/wsx rw shared:4 - tmpfs tmpfs rw\n\
        33 31 0:43 / /work/ws/p\\040one/node_modules rw - tmpfs tmpfs rw\n\
        garbage\n\
        x 22 0:44 / /work/ws/bad rw - tmpfs tmpfs rw\n";

    #[test]
    fn only_mounts_strictly_below_a_root_count_with_their_ids_and_unescaped_points() {
        let below = mounts_below(TABLE, &[Path::new("/work/ws")]);
        assert_eq!(
            below,
            vec![
                (31, PathBuf::from("/work/ws/p one")),
                (33, PathBuf::from("/work/ws/p one/node_modules")),
            ]
        );
        assert!(mounts_below(TABLE, &[Path::new("/elsewhere")]).is_empty());
        assert!(mounts_below(b"", &[Path::new("/work/ws")]).is_empty());
    }

    /// Real tmpfs mounts: below the watched dir each mount and unmount is seen once; elsewhere
    /// none is. Run in a thread with a private mount namespace of its own, so the mounts of
    /// tests running at the same time are not seen.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_mount_below_is_seen_once_and_one_elsewhere_not_at_all() {
        if !crate::testkit::require_root("a_mount_below_is_seen_once_and_one_elsewhere_not_at_all")
        {
            return;
        }
        std::thread::spawn(in_a_namespace_of_its_own)
            .join()
            .unwrap();
    }

    #[cfg(target_os = "linux")]
    fn in_a_namespace_of_its_own() {
        use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
        // SAFETY: a plain syscall for this thread only (CLONE_NEWNS unshares this thread's
        // filesystem information and mount namespace).
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0, "unshare");
        rustix::mount::mount_change(
            "/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (ws, other) = (tmp.path().join("ws"), tmp.path().join("other"));
        let (project, elsewhere) = (ws.join("p"), other.join("q"));
        for d in [&project, &elsewhere] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mount = |at: &Path| {
            rustix::mount::mount("tmpfs", at, "tmpfs", MountFlags::empty(), Some(c"size=1m"))
                .unwrap()
        };
        let unmount = |at: &Path| rustix::mount::unmount(at, UnmountFlags::empty()).unwrap();
        let mut watch = MountWatch::of(Path::new("/proc/thread-self/mountinfo"));
        let roots = || vec![ws.clone()];
        assert!(watch.changed_below(roots), "the first question: changed");
        assert!(!watch.changed_below(roots), "nothing was mounted since");
        mount(&project);
        assert!(watch.changed_below(roots), "the mount below is seen");
        assert!(!watch.changed_below(roots), "and only once");
        mount(&elsewhere);
        assert!(!watch.changed_below(roots), "a mount elsewhere is not");
        unmount(&elsewhere);
        assert!(!watch.changed_below(roots));
        unmount(&project);
        assert!(watch.changed_below(roots), "the unmount below is seen");
        assert!(!watch.changed_below(roots));
        // Any change at all, for a watch that asks only that.
        let mut table = MountWatch::of(Path::new("/proc/thread-self/mountinfo"));
        assert!(table.changed(), "the first question: changed");
        assert!(!table.changed(), "nothing was mounted since");
        mount(&elsewhere);
        assert!(table.changed(), "a mount anywhere is seen");
        assert!(!table.changed(), "and only once");
        unmount(&elsewhere);
        assert!(table.changed(), "so is an unmount");
    }
}
