//! The append-only audit log: one JSON line per action, written with `O_APPEND` and fsync'd
//! before the action is reported.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// One audit line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC timestamp.
    pub ts: String,
    /// `delete`, `journal_vacuum`, …
    pub action: String,
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
    /// `deleted`, `partial`, `would_delete`, `refused`, `failed`, `interrupted`, `ok`.
    pub outcome: String,
    pub error: Option<String>,
}

/// RFC 3339 timestamp of `t`, millisecond precision.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The open audit log.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating it and its directory if needed) the log for appending.
    pub fn open(path: &Path) -> io::Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and waits until it is on disk.
    pub fn record(&self, record: &AuditRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)?;
        file.sync_data()
    }
}

/// Reads every record of an audit log (lines that do not parse are skipped).
pub fn read_records(path: &Path) -> io::Result<Vec<AuditRecord>> {
    let file = File::open(path)?;
    Ok(BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect())
}
