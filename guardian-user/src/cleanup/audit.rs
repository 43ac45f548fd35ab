//! The append-only audit log: one JSON line per event, written with `O_APPEND` to a file opened
//! without following symlinks in a directory checked to be Guardian's own, and fsync'd before
//! the event is acted on or reported.
//!
//! A deletion is audited twice: an *intent* line (with the target's identity and the rule's
//! cut-off) is on disk before anything is unlinked, and an outcome line with the same `id`
//! follows. A process killed in between leaves a dangling intent, which the next start finishes
//! ([`dangling_intents`], `Executor::recover`). When the log cannot be written, nothing is
//! deleted. The log follows its path: before every line (and every health check) the file at
//! the configured path must still be the one held open — a log moved aside, replaced by a
//! symlink, or whose directory or filesystem was replaced is closed and opened again by path
//! (refused when the path is unusable), so no line is written where nobody looks. A small
//! reserve file next to the log is given up when the disk is full, so the lines that let
//! Guardian free space can still be written on a filesystem without a root reserve (tmpfs).

use crate::fsys::files::OwnDir;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// `outcome` of an intent line.
pub const INTENT: &str = "intent";
/// Bytes of the reserve kept next to the log for a full disk.
const RESERVE_BYTES: u64 = 256 << 10;
/// How much of the end of the log a start reads for dangling intents.
const TAIL_BYTES: u64 = 8 << 20;

/// One audit line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC timestamp.
    pub ts: String,
    /// Ties an intent to its outcome line (empty on lines that are not deletions).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `delete`, `journal_vacuum`, …
    pub action: String,
    /// Escaped losslessly (`crate::textpath`): any byte string survives.
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    pub rule: String,
    pub phase: u8,
    pub reason: String,
    pub bytes_estimated: u64,
    /// Free bytes gained as `statvfs` measured it around the action (0 if it shrank meanwhile).
    pub bytes_freed: u64,
    /// Allocated bytes of the inodes whose last link was removed.
    pub bytes_unlinked: u64,
    pub entries_removed: u64,
    pub dry_run: bool,
    /// `intent`, `deleted`, `partial`, `would_delete`, `refused`, `skipped`, `failed`,
    /// `interrupted`, `ok`.
    pub outcome: String,
    pub error: Option<String>,
    /// On intents: what the target must still be, and who acts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
}

impl AuditRecord {
    /// A line stamped now with nothing measured: the start of every record (a deletion's
    /// executor fills in the rest).
    pub fn event(
        action: &str,
        path: PathBuf,
        rule: &str,
        phase: u8,
        reason: String,
        dry_run: bool,
        outcome: &str,
    ) -> AuditRecord {
        AuditRecord {
            ts: timestamp(SystemTime::now()),
            id: String::new(),
            action: action.into(),
            path,
            rule: rule.into(),
            phase,
            reason,
            bytes_estimated: 0,
            bytes_freed: 0,
            bytes_unlinked: 0,
            entries_removed: 0,
            dry_run,
            outcome: outcome.into(),
            error: None,
            intent: None,
        }
    }
}

/// What an intent line pins down, so a later start can finish the action only if it still
/// applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The target's identity when it was planned.
    pub dev: u64,
    pub ino: u64,
    /// The project dir the target belongs to.
    #[serde(with = "crate::textpath")]
    pub project: PathBuf,
    /// Entries changed less than this many seconds before the deletion are left in place.
    pub min_idle_secs: Option<u64>,
    /// The acting process and its start time (clock ticks since boot, `/proc/PID/stat`), to
    /// tell a dead actor from a live one.
    pub pid: u32,
    pub pid_start: u64,
}

/// RFC 3339 timestamp of `t`, millisecond precision.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A fresh id for an intent/outcome pair: unique across processes and restarts.
pub fn new_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}-{seq}", std::process::id())
}

/// The audit log. Opening never fails: a log that cannot be opened is reported by every
/// [`record`](AuditLog::record) (and opened again), so the daemon can wait in a refusing state
/// instead of exiting.
pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    dir: Option<OwnDir>,
    file: Option<File>,
    /// (dev, ino) of the open file.
    identity: Option<(u64, u64)>,
    reserve_held: bool,
}

impl AuditLog {
    /// The log at `path` (absolute), opened now if possible (creating its directory, mode 0750,
    /// and the file, mode 0640).
    pub fn new(path: &Path) -> AuditLog {
        let log = AuditLog {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                dir: None,
                file: None,
                identity: None,
                reserve_held: false,
            }),
        };
        let _ = log.lock().ensure_open(&log.path);
        log
    }

    /// Like [`new`](AuditLog::new), but an error when the log cannot be opened now (for the
    /// commands that delete once and exit).
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        let log = AuditLog::new(path);
        log.lock().ensure_open(&log.path)?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the log cannot be written now, if it cannot (opens it if it is not open, and again
    /// if the file at its path is no longer the one held open).
    pub fn health(&self) -> Result<(), String> {
        self.lock()
            .ensure_open(&self.path)
            .map_err(|e| format!("audit log {}: {e}", crate::textpath::escape(&self.path)))
    }

    /// Like [`health`](AuditLog::health), and the log has room to spare: its reserve is held or
    /// can be made again now. After a write failed for lack of space, this says when writing is
    /// worth trying again.
    pub fn writable(&self) -> Result<(), String> {
        let shown = || crate::textpath::escape(&self.path);
        let mut inner = self.lock();
        inner
            .ensure_open(&self.path)
            .map_err(|e| format!("audit log {}: {e}", shown()))?;
        inner.refill_reserve();
        if inner.reserve_held {
            Ok(())
        } else {
            Err(format!(
                "audit log {}: no room next to it for its {} KiB reserve (the disk is still full)",
                shown(),
                RESERVE_BYTES >> 10
            ))
        }
    }

    /// Appends one record and waits until it is on disk. On a full disk the reserve next to the
    /// log is given up and the write tried again.
    pub fn record(&self, record: &AuditRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut inner = self.lock();
        inner.ensure_open(&self.path)?;
        match inner.append(&line) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && inner.reserve_held => {
                inner.release_reserve();
                inner.append(&line)
            }
            other => other,
        }?;
        inner.refill_reserve();
        Ok(())
    }
}

impl Inner {
    fn ensure_open(&mut self, path: &Path) -> io::Result<()> {
        if self.file.is_some() && self.identity.is_some() && self.identity == path_identity(path) {
            return Ok(());
        }
        // Not open, or the path no longer leads to the open file (moved, replaced, its
        // directory or filesystem replaced): open it again from the path, directory included.
        self.close();
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::other("the audit log path has no file name"));
        };
        let name = name
            .to_str()
            .ok_or_else(|| io::Error::other("the audit log's file name is not UTF-8"))?;
        if self.dir.is_none() {
            self.dir = Some(OwnDir::open(parent, true).map_err(io::Error::other)?);
        }
        let dir = self
            .dir
            .as_ref()
            .ok_or_else(|| io::Error::other("no dir"))?;
        let file = dir.open_append(name).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open {name} without following links: {e}"),
            )
        })?;
        let st = rustix::fs::fstat(&file)?;
        self.identity = Some(crate::fsys::stat_identity(&st));
        self.file = Some(file);
        self.refill_reserve();
        Ok(())
    }

    /// Forgets the open file and directory (the next write opens both again by path).
    fn close(&mut self) {
        self.file = None;
        self.dir = None;
        self.identity = None;
        self.reserve_held = false;
    }

    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("closed"))?;
        let result = file.write_all(line).and_then(|()| file.sync_data());
        if let Err(e) = &result {
            if e.raw_os_error() != Some(libc::ENOSPC) {
                // Open again next time, directory included: the file, its directory or the
                // filesystem under them may have been replaced or remounted.
                self.close();
            }
        }
        result
    }

    fn reserve_name(&self) -> &'static str {
        ".audit-reserve"
    }

    fn release_reserve(&mut self) {
        if let Some(dir) = &self.dir {
            if dir.remove(self.reserve_name()).is_ok() {
                self.reserve_held = false;
                tracing::warn!("disk full: gave up the audit log's reserve to keep auditing");
            }
        }
    }

    /// Keeps `RESERVE_BYTES` allocated next to the log while there is room.
    fn refill_reserve(&mut self) {
        if self.reserve_held {
            return;
        }
        let Some(dir) = &self.dir else { return };
        let name = self.reserve_name();
        let made = (|| -> io::Result<()> {
            let fd = rustix::fs::openat(
                dir.fd(),
                name,
                rustix::fs::OFlags::WRONLY
                    | rustix::fs::OFlags::CREATE
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o600),
            )?;
            rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, RESERVE_BYTES)?;
            Ok(())
        })();
        match made {
            Ok(()) => self.reserve_held = true,
            Err(_) => {
                let _ = dir.remove(name);
            }
        }
    }
}

/// (dev, ino) of the entry at `path`, not following a symlink; `None` when it cannot be read.
fn path_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Reads every record of an audit log (lines that do not parse are skipped).
pub fn read_records(path: &Path) -> io::Result<Vec<AuditRecord>> {
    read_tail(path, u64::MAX)
}

/// The records in the last `bytes` of the log (the first, partial line dropped).
pub fn read_tail(path: &Path, bytes: u64) -> io::Result<Vec<AuditRecord>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut text = Vec::new();
    file.take(bytes).read_to_end(&mut text)?;
    let mut lines = text.split(|b| *b == b'\n');
    if start > 0 {
        lines.next();
    }
    Ok(lines
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect())
}

/// Intents near the end of the log with no outcome line, whose actor is no longer running.
pub fn dangling_intents(path: &Path) -> io::Result<Vec<AuditRecord>> {
    let records = match read_tail(path, TAIL_BYTES) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut open: Vec<AuditRecord> = Vec::new();
    for r in records {
        if r.id.is_empty() {
            continue;
        }
        if r.outcome == INTENT {
            open.retain(|o| o.id != r.id);
            open.push(r);
        } else {
            open.retain(|o| o.id != r.id);
        }
    }
    open.retain(|r| {
        r.intent
            .as_ref()
            .is_some_and(|i| !process_alive(i.pid, i.pid_start))
    });
    Ok(open)
}

/// Start time of process `pid` (clock ticks since boot, field 22 of `/proc/PID/stat`).
pub fn process_start(pid: u32) -> Option<u64> {
    let pid = i32::try_from(pid).ok()?;
    Some(crate::tasks::procs::read_stat(pid).ok()??.start_ticks)
}

/// Whether `pid` is alive and is still the process that started at `start`.
fn process_alive(pid: u32, start: u64) -> bool {
    process_start(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, outcome: &str, pid: u32, start: u64) -> AuditRecord {
        AuditRecord {
            ts: timestamp(SystemTime::now()),
            id: id.into(),
            action: "delete".into(),
            path: PathBuf::from(
                <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
                    b"/ws/bad\xff".to_vec(),
                ),
            ),
            rule: "r".into(),
            phase: 1,
            reason: "test".into(),
            bytes_estimated: 0,
            bytes_freed: 0,
            bytes_unlinked: 0,
            entries_removed: 0,
            dry_run: false,
            outcome: outcome.into(),
            error: None,
            intent: (outcome == INTENT).then(|| Intent {
                dev: 1,
                ino: 2,
                project: PathBuf::from("/ws/p"),
                min_idle_secs: None,
                pid,
                pid_start: start,
            }),
        }
    }

    #[test]
    fn non_utf8_paths_round_trip_and_dangling_intents_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        let me = std::process::id();
        let my_start = process_start(me).unwrap();
        // A dead actor (a start time that is not ours), a closed one, and a live one (us).
        log.record(&record("a", INTENT, me, my_start + 1)).unwrap();
        log.record(&record("b", INTENT, me, my_start + 1)).unwrap();
        log.record(&record("b", "deleted", me, 0)).unwrap();
        log.record(&record("c", INTENT, me, my_start)).unwrap();
        let all = read_records(&path).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].path, record("a", INTENT, 0, 0).path);
        let dangling: Vec<_> = dangling_intents(&path)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(dangling, ["a"]);
        assert!(tmp.path().join("log/.audit-reserve").exists());
    }

    #[test]
    fn a_log_moved_aside_or_replaced_by_a_symlink_is_reopened_at_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record(&record("a", "deleted", 1, 1)).unwrap();
        // Moved aside (logrotate without a signal): the next line goes to the configured path.
        std::fs::rename(&path, tmp.path().join("log/audit.jsonl.1")).unwrap();
        log.record(&record("b", "deleted", 1, 1)).unwrap();
        let ids: Vec<_> = read_records(&path)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["b"]);
        // Replaced by a symlink: refused, and nothing is written through it or to the old file.
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::rename(&path, tmp.path().join("log/audit.jsonl.2")).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(log.health().is_err());
        assert!(log.record(&record("c", "deleted", 1, 1)).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let moved = read_records(&tmp.path().join("log/audit.jsonl.2")).unwrap();
        assert_eq!(moved.len(), 1);
        // Restored: writable again.
        std::fs::remove_file(&path).unwrap();
        log.record(&record("d", "deleted", 1, 1)).unwrap();
        assert!(log.writable().is_ok());
        assert_eq!(read_records(&path).unwrap().len(), 1);
    }

    #[test]
    fn an_audit_log_that_is_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::create_dir(tmp.path().join("log")).unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join("log/audit.jsonl")).unwrap();
        let log = AuditLog::new(&tmp.path().join("log/audit.jsonl"));
        assert!(log.health().is_err());
        assert!(log.record(&record("x", "deleted", 1, 1)).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
