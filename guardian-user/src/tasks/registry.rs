//! Guardian's own registry of task work dirs in `state_dir` (`kept.json`, guarded by
//! `kept.lock`): dirs kept for debugging (failed/errored tasks, until `keep_failed_for`, within
//! `keep_failed_max`) and dirs whose task `guardian task done` recorded as over but whose
//! deletion did not complete (the sweep retries them). Never in the task DB.

use super::clock::now_secs;
use crate::fsys::files::OwnDir;
use crate::textpath::shown;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The registry file in `state_dir`.
pub const KEPT_FILE: &str = "kept.json";
const KEPT_LOCK: &str = "kept.lock";

/// One kept work dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptDir {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    pub task: Option<String>,
    pub status: String,
    /// Seconds since the epoch.
    pub kept_at: i64,
    /// Allocated bytes when last measured.
    pub bytes: u64,
}

/// A work dir whose task `task done` recorded as over (done or discarded) but whose deletion
/// did not complete then (in use, protected, refused): the sweep retries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedDir {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    pub task: Option<String>,
    /// `done` or `discarded`.
    pub status: String,
    /// When `task done` was called (seconds since the epoch).
    pub at: i64,
    /// Why the deletion did not complete then.
    pub why: String,
}

/// Most finished dirs remembered; the oldest are forgotten first.
const MAX_FINISHED: usize = 10_000;

/// `kept.json`: Guardian's own registry of task work dirs — kept for debugging, and finished
/// but not yet deleted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Registry {
    #[serde(default)]
    pub kept: Vec<KeptDir>,
    #[serde(default)]
    pub finished: Vec<FinishedDir>,
}

impl Registry {
    /// Forgets `path` (deleted or gone).
    pub fn forget(&mut self, path: &Path) {
        self.kept.retain(|k| k.path != path);
        self.finished.retain(|f| f.path != path);
    }

    /// Records a finished dir whose deletion did not complete, replacing an older entry.
    pub fn finish(&mut self, entry: FinishedDir) {
        self.finished.retain(|f| f.path != entry.path);
        self.finished.push(entry);
        if self.finished.len() > MAX_FINISHED {
            self.finished.sort_by_key(|f| f.at);
            let extra = self.finished.len() - MAX_FINISHED;
            self.finished.drain(..extra);
        }
    }
}

/// Pure: indices of kept dirs to drop so the total fits `cap`, oldest first (ties: the order
/// they were kept in, which is the registry's order).
pub fn over_cap(kept: &[KeptDir], cap: u64) -> Vec<usize> {
    let mut total: u64 = kept.iter().map(|k| k.bytes).sum();
    let mut order: Vec<usize> = (0..kept.len()).collect();
    order.sort_by_key(|&i| kept[i].kept_at);
    let mut drop = Vec::new();
    for i in order {
        if total <= cap {
            break;
        }
        total = total.saturating_sub(kept[i].bytes);
        drop.push(i);
    }
    drop
}

/// Pure: whether a kept dir has outlived `ttl_secs`.
pub fn expired(k: &KeptDir, ttl_secs: i64, now: i64) -> bool {
    now - k.kept_at > ttl_secs
}

/// The registry, locked against the daemon and other `task done` calls while held.
pub struct Locked {
    dir: PathBuf,
    own: OwnDir,
    _lock: File,
    pub registry: Registry,
}

impl Locked {
    /// Takes the lock in `state_dir` (created if needed; it must be Guardian's own, see
    /// [`OwnDir`]) and reads the registry. A registry that does not parse is set aside (renamed)
    /// with a warning and starts empty.
    pub fn open(state_dir: &Path) -> io::Result<Locked> {
        let own = OwnDir::open(state_dir, true).map_err(io::Error::other)?;
        let lock = own.open_lock(KEPT_LOCK)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
        let registry = read_registry(state_dir)?;
        Ok(Locked {
            dir: state_dir.to_path_buf(),
            own,
            _lock: lock,
            registry,
        })
    }

    /// The state dir holding the registry.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the registry atomically ([`OwnDir::replace`]).
    pub fn save(&self) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(&self.registry).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.own.replace(KEPT_FILE, &bytes)
    }
}

/// Largest registry read.
const MAX_REGISTRY_BYTES: u64 = 16 << 20;

/// Reads `kept.json` without locking (for listings), not following a symlink; missing → empty.
pub fn read_registry(state_dir: &Path) -> io::Result<Registry> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join(KEPT_FILE);
    let read = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .and_then(|f| {
            let mut text = Vec::new();
            f.take(MAX_REGISTRY_BYTES).read_to_end(&mut text)?;
            Ok(text)
        });
    match read {
        Ok(text) => match serde_json::from_slice(&text) {
            Ok(r) => Ok(r),
            Err(e) => {
                let aside = state_dir.join(format!("{KEPT_FILE}.corrupt-{}", now_secs()));
                tracing::warn!(path = %shown(&path), error = %e, aside = %shown(&aside), "kept-dir registry does not parse; set aside, starting empty");
                let _ = std::fs::rename(&path, &aside);
                Ok(Registry::default())
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Registry::default()),
        Err(e) => Err(e),
    }
}
