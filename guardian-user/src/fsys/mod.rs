//! Filesystem primitives relative to directory file descriptors: open a child directory without
//! following symlinks, stat an entry without following symlinks (with its mount id where the OS
//! has one), list a directory, read free space with `statvfs`; the mount boundary
//! ([`mount`]) and safe writing of Guardian's own files ([`files`]). Nothing here deletes
//! anything but Guardian's own temp files.

pub mod files;
pub mod mount;
pub mod mountwatch;
pub use mount::{force_mount_ids, Boundary, BoundaryError, MountIds};
pub use mountwatch::MountWatch;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// Deepest directory level the scanner walks and the executor removes; deeper trees are
/// reported (and left in place), never followed.
pub const MAX_DEPTH: usize = 4096;

/// Stack of each walk thread. Walks recurse once per directory level (plus rayon's frames when
/// they go parallel): `MAX_DEPTH` levels overflow rayon's default 2 MiB stacks, and an overflow
/// aborts the daemon. This is address space; only the pages used are committed.
const WALK_STACK: usize = 64 << 20;

/// The threads (one per CPU) that scan and remove trees, built on first use; `None` if they
/// cannot be started (callers then run on the current thread). There is one such pool and work
/// never hops from another pool into it mid-walk: see [`on_walk_pool`].
pub fn walk_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .stack_size(WALK_STACK)
            .thread_name(|i| format!("guardian-walk-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Runs `f` on the walk pool: directly when already on one of its threads, else through one
/// `install` from outside. Never `install` from a thread of another pool (rayon's global one
/// included): a worker blocked in `install` steals its own pool's next job onto the same stack,
/// so stacks nest once per job — a survey of thousands of projects overflowed that way. The bool
/// says whether `f` runs on the pool (and may use rayon's parallel iterators).
pub fn on_walk_pool<R: Send>(f: impl FnOnce(bool) -> R + Send) -> R {
    match walk_pool() {
        Some(pool) if pool.current_thread_index().is_some() => f(true),
        Some(pool) if rayon::current_thread_index().is_none() => pool.install(|| f(true)),
        // On a thread of some other pool: stay here, sequentially.
        Some(_) => f(false),
        None => f(false),
    }
}

/// What Guardian needs to know about one directory entry, read without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryStat {
    pub kind: EntryKind,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    /// Apparent size (`st_size`).
    pub size: u64,
    /// Allocated bytes (`st_blocks * 512`), what `du` counts.
    pub allocated: u64,
    /// Modification time, seconds since the epoch. Anyone who can write the file can set it to
    /// any value (`tar x`, `cp -a`, `touch -d`).
    pub mtime: i64,
    /// Status change time, seconds since the epoch, and its nanoseconds: set by the kernel to now
    /// on every change (including `utimes`), so it cannot be back-dated.
    pub ctime: i64,
    pub ctime_nsec: u32,
    /// Mount id (Linux `STATX_MNT_ID`); `None` where the OS does not report one.
    pub mnt_id: Option<u64>,
}

impl EntryStat {
    /// The last change that cannot be back-dated: the newer of mtime and ctime (seconds).
    pub fn changed(&self) -> i64 {
        self.mtime.max(self.ctime)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    Other,
}

impl EntryKind {
    fn from_mode(mode: u32) -> Self {
        match FileType::from_raw_mode(mode as _) {
            FileType::Directory => EntryKind::Dir,
            FileType::RegularFile => EntryKind::File,
            FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }
}

/// Turns an entry name into a C string for the `*at` calls.
pub fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Opens `path` (absolute or relative to the cwd) as a directory; the last component must not
/// be a symlink.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(path, dir_flags(), Mode::empty()).map_err(io::Error::from)
}

/// Opens the absolute directory `path` one component at a time from `/`, none of them followed
/// if it is a symlink: a parent swapped for a link at run time cannot redirect a deletion.
pub fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    use std::path::Component;
    let mut fd = open_dir_path(Path::new("/"))?;
    for part in path.components() {
        match part {
            Component::RootDir => {}
            Component::Normal(name) => fd = open_child_dir(&fd, &c_name(name)?)?,
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }
    Ok(fd)
}

/// Opens the child directory `name` of `parent` without following a symlink in its place.
pub fn open_child_dir<Fd: AsFd>(parent: Fd, name: &CStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(parent, name, dir_flags(), Mode::empty()).map_err(io::Error::from)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Flags for a directory opened only as a handle (to stat it, walk `..` from it, or open
/// relative to it): `O_PATH` on Linux, which needs no read permission; a read-only open
/// elsewhere. Callers add `DIRECTORY`, `NOFOLLOW`, `CLOEXEC` as they need.
pub fn handle_flags() -> OFlags {
    #[cfg(target_os = "linux")]
    return OFlags::PATH;
    #[cfg(not(target_os = "linux"))]
    return OFlags::RDONLY;
}

/// The (st_dev, st_ino) identity of a `stat` result, widened to `u64` on every OS (macOS's
/// `st_dev` is an `i32`: its bits are kept as they are).
#[allow(clippy::unnecessary_cast)]
pub fn stat_identity(st: &rustix::fs::Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

/// Stats the entry `name` of `dir` without following symlinks.
#[cfg(target_os = "linux")]
pub fn stat_entry<Fd: AsFd>(dir: Fd, name: &CStr) -> io::Result<EntryStat> {
    use rustix::fs::{statx, StatxFlags};
    let st = statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
        StatxFlags::BASIC_STATS | StatxFlags::MNT_ID,
    )?;
    Ok(EntryStat {
        kind: EntryKind::from_mode(st.stx_mode as u32),
        dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        nlink: st.stx_nlink as u64,
        size: st.stx_size,
        allocated: st.stx_blocks * 512,
        mtime: st.stx_mtime.tv_sec,
        ctime: st.stx_ctime.tv_sec,
        ctime_nsec: st.stx_ctime.tv_nsec,
        mnt_id: (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id),
    })
}

/// Stats the entry `name` of `dir` without following symlinks.
#[cfg(not(target_os = "linux"))]
pub fn stat_entry<Fd: AsFd>(dir: Fd, name: &CStr) -> io::Result<EntryStat> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(stat_to_entry(&st))
}

#[cfg(not(target_os = "linux"))]
fn stat_to_entry(st: &rustix::fs::Stat) -> EntryStat {
    EntryStat {
        kind: EntryKind::from_mode(u32::from(st.st_mode)),
        dev: stat_identity(st).0,
        ino: stat_identity(st).1,
        nlink: u64::from(st.st_nlink),
        size: u64::try_from(st.st_size).unwrap_or(0),
        allocated: u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512),
        mtime: st.st_mtime,
        ctime: st.st_ctime,
        ctime_nsec: u32::try_from(st.st_ctime_nsec).unwrap_or(0),
        mnt_id: None,
    }
}

/// The (dev, ino) of the entry at `path`, not following a final symlink.
pub fn identity_of(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Stats an open directory itself (`"."` relative to it).
pub fn stat_fd<Fd: AsFd>(dir: Fd) -> io::Result<EntryStat> {
    stat_entry(dir, c".")
}

/// One listed entry: its name and the type `getdents` reported (may be unknown).
pub struct Listed {
    pub name: CString,
    pub kind_hint: Option<EntryKind>,
}

impl Listed {
    pub fn os_name(&self) -> &OsStr {
        OsStr::from_bytes(self.name.as_bytes())
    }
}

/// Lists the entries of the open directory `dir` (without `.` and `..`). Reads with
/// `getdents64` straight from `dir`, rewound first (its file offset is all that changes, so it
/// stays usable for `*at` calls), into one 32 KiB buffer: no second descriptor per directory.
#[cfg(target_os = "linux")]
pub fn list_dir<Fd: AsFd>(dir: Fd) -> io::Result<Vec<Listed>> {
    use rustix::fs::{RawDir, SeekFrom};
    let dir = dir.as_fd();
    rustix::fs::seek(dir, SeekFrom::Start(0))?;
    let mut buf = Vec::<u8>::with_capacity(32 * 1024);
    let mut reader = RawDir::new(dir, buf.spare_capacity_mut());
    let mut out = Vec::new();
    while let Some(entry) = reader.next() {
        let entry = match entry {
            Ok(entry) => entry,
            // The directory was removed while being read: it has no entries left.
            Err(rustix::io::Errno::NOENT) => break,
            Err(e) => return Err(e.into()),
        };
        let name = entry.file_name();
        if let Some(listed) = listed(name, entry.file_type()) {
            out.push(listed);
        }
    }
    Ok(out)
}

/// Lists the entries of the open directory `dir` (without `.` and `..`). Reads through a
/// duplicate of the descriptor, so `dir` stays usable for `*at` calls.
#[cfg(not(target_os = "linux"))]
pub fn list_dir<Fd: AsFd>(dir: Fd) -> io::Result<Vec<Listed>> {
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        if let Some(listed) = listed(entry.file_name(), entry.file_type()) {
            out.push(listed);
        }
    }
    Ok(out)
}

/// The `Listed` for a directory entry; `None` for `.` and `..`.
fn listed(name: &CStr, file_type: FileType) -> Option<Listed> {
    let bytes = name.to_bytes();
    if bytes == b"." || bytes == b".." {
        return None;
    }
    let kind_hint = match file_type {
        FileType::Directory => Some(EntryKind::Dir),
        FileType::RegularFile => Some(EntryKind::File),
        FileType::Symlink => Some(EntryKind::Symlink),
        FileType::Unknown => None,
        _ => Some(EntryKind::Other),
    };
    Some(Listed {
        name: name.to_owned(),
        kind_hint,
    })
}

/// Free space of the filesystem holding `path`, as `df` computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FsSpace {
    /// Size in bytes (`f_blocks * f_frsize`).
    pub total_bytes: u64,
    /// Bytes available to unprivileged users (`f_bavail * f_frsize`); what `df` calls Avail.
    pub avail_bytes: u64,
    /// Bytes free including the root reserve (`f_bfree * f_frsize`).
    pub free_bytes: u64,
    pub total_inodes: u64,
    /// Inodes available to unprivileged users.
    pub avail_inodes: u64,
}

impl FsSpace {
    /// Available bytes as a percentage of the size, as `df` shows it.
    pub fn avail_percent(&self) -> f64 {
        percent(self.avail_bytes, self.total_bytes)
    }

    pub fn avail_inodes_percent(&self) -> f64 {
        percent(self.avail_inodes, self.total_inodes)
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Reads the free space of the filesystem holding `path`.
pub fn fs_space(path: &Path) -> io::Result<FsSpace> {
    Ok(space_of(rustix::fs::statvfs(path)?))
}

/// Reads the free space of the filesystem holding the open file or directory `fd` (no path
/// lookup between finding the filesystem and reading it).
pub fn fs_space_fd<Fd: AsFd>(fd: Fd) -> io::Result<FsSpace> {
    Ok(space_of(rustix::fs::fstatvfs(fd)?))
}

fn space_of(st: rustix::fs::StatVfs) -> FsSpace {
    let frsize = st.f_frsize;
    FsSpace {
        total_bytes: st.f_blocks * frsize,
        avail_bytes: st.f_bavail * frsize,
        free_bytes: st.f_bfree * frsize,
        total_inodes: st.f_files,
        avail_inodes: st.f_favail,
    }
}

/// The nearest existing ancestor of `path` (itself if it exists), for filesystems whose
/// workspace dir has not been created yet.
pub fn nearest_existing(path: &Path) -> &Path {
    let mut p = path;
    loop {
        if p.symlink_metadata().is_ok() {
            return p;
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return p,
        }
    }
}

/// Joins bytes of a name onto a path.
pub fn name_to_os(name: &CStr) -> OsString {
    OsString::from_vec(name.to_bytes().to_vec())
}

/// The mount point of the filesystem holding `path`: the longest mount point in
/// `/proc/self/mountinfo` that is a prefix of it. `None` where there is no mountinfo.
pub fn mount_point_of(path: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read("/proc/self/mountinfo").ok()?;
    text.split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| std::path::PathBuf::from(OsString::from_vec(unescape_mountinfo(field))))
        .filter(|mount| path.starts_with(mount))
        .max_by_key(|mount| mount.as_os_str().len())
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub(crate) fn unescape_mountinfo(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (u32::from(bytes[i + 1] - b'0') << 6)
                | (u32::from(bytes[i + 2] - b'0') << 3)
                | u32::from(bytes[i + 3] - b'0');
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}
