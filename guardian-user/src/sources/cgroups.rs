//! Names cgroups for status: cgroup v2 id (what the probe records per write) → its path below the
//! cgroup root, e.g. `/system.slice/build.service`. A bounded cache answers at once; a miss is
//! looked up on a background thread (never on the daemon's loop): by opening the cgroup's
//! directory from its id as a kernfs file handle (one syscall), else by a bounded walk of the
//! cgroup filesystem. Failed lookups are remembered only for [`NEGATIVE_TTL`], names for
//! [`POSITIVE_TTL`]; the cache holds at most [`CAPACITY`] ids. Reads only.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most ids remembered; the least recently asked for are forgotten first.
pub const CAPACITY: usize = 4096;
/// How long a failed lookup is remembered before it is tried again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// How long a name is trusted (cgroups can be renamed) before it is looked up again.
pub const POSITIVE_TTL: Duration = Duration::from_secs(3600);
/// Most lookups queued for the background thread.
const MAX_PENDING: usize = 256;
/// Most directories the fallback walk visits per lookup.
const WALK_LIMIT: usize = 20_000;

struct Entry {
    name: Option<PathBuf>,
    found: Instant,
    used: Instant,
}

/// The cache (see the module doc).
pub struct CgroupNames {
    entries: HashMap<u64, Entry>,
    pending: HashSet<u64>,
    requests: Option<Sender<u64>>,
    answers: Option<Receiver<(u64, Option<PathBuf>)>>,
    /// The lookup, replaced in tests.
    lookup: fn(u64) -> Option<PathBuf>,
}

impl Default for CgroupNames {
    fn default() -> Self {
        CgroupNames::new()
    }
}

impl CgroupNames {
    pub fn new() -> CgroupNames {
        CgroupNames::with_lookup(lookup)
    }

    fn with_lookup(lookup: fn(u64) -> Option<PathBuf>) -> CgroupNames {
        CgroupNames {
            entries: HashMap::new(),
            pending: HashSet::new(),
            requests: None,
            answers: None,
            lookup,
        }
    }

    /// The name of cgroup `id` if known now; otherwise `None` and a lookup is queued (a later
    /// call has the answer). Never blocks.
    pub fn name(&mut self, id: u64) -> Option<PathBuf> {
        self.collect();
        let now = Instant::now();
        let (name, fresh) = match self.entries.get_mut(&id) {
            Some(entry) => {
                entry.used = now;
                let ttl = if entry.name.is_some() {
                    POSITIVE_TTL
                } else {
                    NEGATIVE_TTL
                };
                (
                    entry.name.clone(),
                    now.saturating_duration_since(entry.found) < ttl,
                )
            }
            None => (None, false),
        };
        if !fresh {
            self.request(id);
        }
        name
    }

    /// Ids remembered (for tests and status).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn request(&mut self, id: u64) {
        if self.pending.contains(&id) || self.pending.len() >= MAX_PENDING {
            return;
        }
        if self.requests.is_none() {
            self.start();
        }
        let Some(requests) = &self.requests else {
            return;
        };
        match requests.try_send(id) {
            Ok(()) => {
                self.pending.insert(id);
            }
            Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => {
                // The thread is gone (it panicked): start another on the next request.
                self.requests = None;
                self.answers = None;
                self.pending.clear();
            }
        }
    }

    fn start(&mut self) {
        let (requests, inbox) = crossbeam_channel::bounded::<u64>(MAX_PENDING);
        let (outbox, answers) = crossbeam_channel::bounded(MAX_PENDING);
        let lookup = self.lookup;
        let spawned = std::thread::Builder::new()
            .name("guardian-cgroups".into())
            .spawn(move || {
                for id in inbox {
                    if outbox.send((id, lookup(id))).is_err() {
                        break;
                    }
                }
            });
        if spawned.is_ok() {
            self.requests = Some(requests);
            self.answers = Some(answers);
        }
    }

    /// Takes the answers the background thread has.
    fn collect(&mut self) {
        let Some(answers) = &self.answers else {
            return;
        };
        let now = Instant::now();
        let got: Vec<(u64, Option<PathBuf>)> = answers.try_iter().collect();
        for (id, name) in got {
            self.pending.remove(&id);
            self.insert(id, name, now);
        }
    }

    fn insert(&mut self, id: u64, name: Option<PathBuf>, now: Instant) {
        if !self.entries.contains_key(&id) && self.entries.len() >= CAPACITY {
            // Forget the eighth least recently used, so eviction is not paid on every insert.
            let mut by_use: Vec<(Instant, u64)> =
                self.entries.iter().map(|(k, e)| (e.used, *k)).collect();
            by_use.sort_unstable();
            for (_, k) in by_use.into_iter().take(CAPACITY / 8) {
                self.entries.remove(&k);
            }
        }
        let used = self.entries.get(&id).map(|e| e.used).unwrap_or(now);
        self.entries.insert(
            id,
            Entry {
                name,
                found: now,
                used,
            },
        );
    }
}

/// Looks cgroup `id` up: by file handle, else by a bounded walk.
fn lookup(id: u64) -> Option<PathBuf> {
    let root = cgroup2_root()?;
    match by_handle(&root, id) {
        Ok(path) => path,
        Err(()) => by_walk(&root, id),
    }
}

/// Where cgroup v2 is mounted (the first `cgroup2` line of `/proc/self/mountinfo`).
fn cgroup2_root() -> Option<PathBuf> {
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    info.split(|b| *b == b'\n').find_map(|line| {
        let text = std::str::from_utf8(line).ok()?;
        let (left, right) = text.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4).map(unescape_mountinfo))?
    })
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// `FILEID_KERNFS`: a kernfs file handle is the node's 64-bit id.
#[cfg(target_os = "linux")]
const FILEID_KERNFS: i32 = 0xfe;

/// Opens the cgroup directory whose kernfs id is `id` and reads its path. `Ok(None)`: no such
/// cgroup (any more); `Err`: this way does not work here.
#[cfg(target_os = "linux")]
fn by_handle(root: &Path, id: u64) -> Result<Option<PathBuf>, ()> {
    use rustix::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mount = rustix::fs::open(
        root,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|_| ())?;
    // `struct file_handle`: u32 handle_bytes, i32 handle_type, then the eight id bytes.
    let mut raw = [0u32; 4];
    raw[0] = 8;
    raw[1] = FILEID_KERNFS as u32;
    let id_bytes = id.to_ne_bytes();
    raw[2] = u32::from_ne_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]]);
    raw[3] = u32::from_ne_bytes([id_bytes[4], id_bytes[5], id_bytes[6], id_bytes[7]]);
    // SAFETY: `raw` is a valid, aligned `struct file_handle` with eight handle bytes.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            raw.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ESTALE) | Some(libc::ENOENT) => Ok(None),
            _ => Err(()),
        };
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| ())?;
    relative(root, &target).ok_or(())
}

#[cfg(not(target_os = "linux"))]
fn by_handle(_root: &Path, _id: u64) -> Result<Option<PathBuf>, ()> {
    Err(())
}

/// `/system.slice/x` for `root/system.slice/x`; `/` for the root itself.
fn relative(root: &Path, dir: &Path) -> Option<Option<PathBuf>> {
    let rel = dir.strip_prefix(root).ok()?;
    Some(Some(Path::new("/").join(rel)))
}

/// Finds the directory whose inode is `id` by walking at most [`WALK_LIMIT`] directories.
fn by_walk(root: &Path, id: u64) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut visited = 0;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > WALK_LIMIT {
            return None;
        }
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if meta.ino() == id {
            return relative(root, &dir).flatten();
        }
        if depth >= 16 {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_until(names: &mut CgroupNames, id: u64) -> Option<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(name) = names.name(id) {
                return Some(name);
            }
            if names.entries.contains_key(&id) && names.pending.is_empty() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    #[test]
    fn names_this_process_cgroup_by_handle_off_the_callers_thread() {
        let Some(root) = cgroup2_root() else {
            crate::testkit::skip(
                "names_this_process_cgroup_by_handle_off_the_callers_thread",
                "no cgroup v2 mounted",
            );
            return;
        };
        if !crate::testkit::require_root(
            "names_this_process_cgroup_by_handle_off_the_callers_thread",
        ) {
            return;
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_string();
        use std::os::unix::fs::MetadataExt;
        let id = std::fs::metadata(root.join(rel.trim_start_matches('/')))
            .unwrap()
            .ino();
        assert_eq!(by_handle(&root, id), Ok(Some(PathBuf::from(&rel))));
        let mut names = CgroupNames::new();
        assert_eq!(names.name(id), None, "the first call never waits");
        assert_eq!(answer_until(&mut names, id), Some(PathBuf::from(&rel)));
        // An id no cgroup has: a negative answer, remembered.
        assert_eq!(by_handle(&root, u64::MAX - 7), Ok(None));
    }

    #[test]
    fn failed_lookups_expire_and_the_cache_is_bounded() {
        fn none(_: u64) -> Option<PathBuf> {
            None
        }
        let mut names = CgroupNames::with_lookup(none);
        assert_eq!(answer_until(&mut names, 7), None);
        assert!(names.entries.contains_key(&7));
        // Not asked again while fresh; asked again once expired.
        assert_eq!(names.name(7), None);
        assert!(names.pending.is_empty());
        names.entries.get_mut(&7).unwrap().found = Instant::now() - NEGATIVE_TTL;
        names.name(7);
        assert!(names.pending.contains(&7) || names.entries[&7].found.elapsed() < NEGATIVE_TTL);
        let now = Instant::now();
        for id in 0..(CAPACITY as u64 * 3) {
            names.insert(id, None, now);
        }
        assert!(names.len() <= CAPACITY);
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(
            unescape_mountinfo("/sys/fs/my\\040cgroup\\134x"),
            PathBuf::from("/sys/fs/my cgroup\\x")
        );
        assert_eq!(unescape_mountinfo("/a\\9"), PathBuf::from("/a\\9"));
    }
}
