//! Whether this process's mount table changed: the kernel flags an open `/proc/self/mountinfo`
//! with `POLLPRI | POLLERR` after any mount or unmount in the namespace, so one `poll(2)` with a
//! zero timeout answers without reading the table. Used to keep listings that a mount could
//! invalidate without re-reading them on a timer.

/// A watch on the mount table. Where it cannot be had (no `/proc`, not Linux) every question is
/// answered "changed", so callers fall back to re-reading.
#[derive(Debug)]
pub struct MountWatch {
    #[cfg(target_os = "linux")]
    file: Option<std::fs::File>,
    asked: bool,
}

impl Default for MountWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MountWatch {
    pub fn new() -> MountWatch {
        Self::of(std::path::Path::new("/proc/self/mountinfo"))
    }

    /// A watch on the mount table `mountinfo` (`/proc/thread-self/mountinfo` for a thread in
    /// a mount namespace of its own).
    pub fn of(mountinfo: &std::path::Path) -> MountWatch {
        #[cfg(not(target_os = "linux"))]
        let _ = mountinfo;
        MountWatch {
            #[cfg(target_os = "linux")]
            file: std::fs::File::open(mountinfo).ok(),
            asked: false,
        }
    }

    /// Whether the mount table may have changed since the last call: `true` the first time,
    /// after a mount or unmount, and whenever the watch cannot tell.
    pub fn changed(&mut self) -> bool {
        let first = !std::mem::replace(&mut self.asked, true);
        // Always polled, so the first call also takes the flag of a change before it.
        self.flagged() || first
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::MountWatch;

    /// A real tmpfs mounted and unmounted: each is seen once, and nothing in between. Run in a
    /// thread with a private mount namespace of its own, so the mounts of tests running at the
    /// same time are not seen.
    #[test]
    fn a_mount_and_an_unmount_are_each_seen_once() {
        if !crate::testkit::require_root("a_mount_and_an_unmount_are_each_seen_once") {
            return;
        }
        std::thread::spawn(in_a_namespace_of_its_own)
            .join()
            .unwrap();
    }

    fn in_a_namespace_of_its_own() {
        // SAFETY: plain syscalls on this thread only (CLONE_NEWNS unshares this thread's
        // filesystem information and mount namespace).
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0, "unshare");
        rustix::mount::mount_change(
            "/",
            rustix::mount::MountPropagationFlags::PRIVATE
                | rustix::mount::MountPropagationFlags::REC,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut watch = MountWatch::of(std::path::Path::new("/proc/thread-self/mountinfo"));
        assert!(
            watch.changed(),
            "the first question is always answered 'changed'"
        );
        assert!(!watch.changed(), "nothing was mounted since");
        rustix::mount::mount(
            "tmpfs",
            dir.path(),
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(c"size=1m"),
        )
        .unwrap();
        assert!(watch.changed(), "the mount is seen");
        assert!(!watch.changed(), "and only once");
        rustix::mount::unmount(dir.path(), rustix::mount::UnmountFlags::empty()).unwrap();
        assert!(watch.changed(), "the unmount is seen");
        assert!(!watch.changed());
    }
}
