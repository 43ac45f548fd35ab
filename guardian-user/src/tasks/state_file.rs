//! `tasks.json`: what the task side last found (sweep outcome, usage levels, ghost report), for
//! people and tools. Lives in the runtime dir next to `state.json` (`DaemonConfig::runtime_dir`:
//! a tmpfs by default) and is replaced only when its content changed — the times it carries
//! (`updated`, `last_sweep`, the ghost report's `ts`) are not content, so an idle node whose
//! sweep and reaper find the same every few minutes writes nothing.

use super::ghosts::GhostReport;
use super::sessions::UsageView;
use super::TASKS_STATE_FILE;
use crate::fsys::files::OwnDir;
use serde::Serialize;
use std::io;
use std::path::{Path, PathBuf};

/// The file's fields.
#[derive(Debug, Default, Serialize)]
pub(super) struct TasksState {
    /// When the file was last written (its content changed).
    pub(super) updated: String,
    pub(super) node: String,
    pub(super) task_state_unknown: Option<String>,
    pub(super) usage: Vec<UsageView>,
    /// When the sweep that found this content ran (a later sweep finding the same leaves the
    /// file as it is).
    pub(super) last_sweep: Option<String>,
    #[serde(with = "crate::textpath::list")]
    pub(super) last_sweep_deleted: Vec<PathBuf>,
    pub(super) last_ghosts: Option<GhostReport>,
}

/// The state's content: its serialization with every time field blanked.
fn content(state: &mut TasksState) -> Result<Vec<u8>, serde_json::Error> {
    let updated = std::mem::take(&mut state.updated);
    let swept = state.last_sweep.as_mut().map(std::mem::take);
    let ghosts_ts = state
        .last_ghosts
        .as_mut()
        .map(|g| std::mem::take(&mut g.ts));
    let out = serde_json::to_vec(state);
    state.updated = updated;
    if let (Some(at), Some(t)) = (state.last_sweep.as_mut(), swept) {
        *at = t;
    }
    if let (Some(g), Some(t)) = (state.last_ghosts.as_mut(), ghosts_ts) {
        g.ts = t;
    }
    out
}

/// Writes `tasks.json` into one dir when its content changed.
#[derive(Debug)]
pub(super) struct TasksStateFile {
    dir: PathBuf,
    /// The content last written (empty before the first write, and after a failed one).
    last: Vec<u8>,
    writes: u64,
}

impl TasksStateFile {
    pub(super) fn new(dir: &Path) -> TasksStateFile {
        TasksStateFile {
            dir: dir.to_path_buf(),
            last: Vec::new(),
            writes: 0,
        }
    }

    /// Replaces the file with `state`, stamped `now`, when its content differs from what was
    /// last written; a failed write is retried at the next call.
    pub(super) fn write(&mut self, state: &mut TasksState, now: &str) -> io::Result<()> {
        let content = content(state).map_err(io::Error::other)?;
        if content == self.last {
            return Ok(());
        }
        self.last.clear();
        state.updated = now.to_string();
        let own = OwnDir::open(&self.dir, true).map_err(io::Error::other)?;
        let text = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        own.replace(TASKS_STATE_FILE, &text)?;
        self.last = content;
        self.writes += 1;
        Ok(())
    }

    /// Where the file goes.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Times the file was replaced.
    #[cfg(test)]
    pub(super) fn writes(&self) -> u64 {
        self.writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::sessions::Level;
    use std::os::unix::fs::MetadataExt;

    fn usage(bytes: u64) -> UsageView {
        UsageView {
            scope: "/w".into(),
            bytes,
            warning: Some(10),
            critical: None,
            level: Level::Ok,
        }
    }

    #[test]
    fn tasks_json_is_replaced_only_when_more_than_its_times_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let mut file = TasksStateFile::new(&dir);
        let mut state = TasksState {
            node: "n1".into(),
            usage: vec![usage(5)],
            last_sweep: Some("t1".into()),
            last_ghosts: Some(GhostReport {
                ts: "t1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        file.write(&mut state, "t1").unwrap();
        let path = dir.join(TASKS_STATE_FILE);
        let inode = || std::fs::metadata(&path).unwrap().ino();
        let first = inode();
        // The next runs find the same: only their times differ.
        for t in ["t2", "t3"] {
            state.last_sweep = Some(t.into());
            if let Some(g) = state.last_ghosts.as_mut() {
                g.ts = t.into();
            }
            file.write(&mut state, t).unwrap();
        }
        assert_eq!(file.writes(), 1);
        assert_eq!(
            inode(),
            first,
            "tasks.json replaced though only its times changed"
        );
        assert_eq!(state.last_sweep.as_deref(), Some("t3"), "times are kept");
        // A usage change is content.
        state.usage = vec![usage(6)];
        file.write(&mut state, "t4").unwrap();
        assert_eq!(file.writes(), 2);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["usage"][0]["bytes"], 6);
        assert_eq!(json["updated"], "t4");
        assert_eq!(json["last_sweep"], "t3");
        assert_eq!(json["last_ghosts"]["ts"], "t3");
    }

    #[test]
    fn a_failed_tasks_json_write_is_retried_with_the_same_content() {
        let tmp = tempfile::tempdir().unwrap();
        // A file where the dir should be: every write fails.
        let dir = tmp.path().join("run");
        std::fs::write(&dir, b"").unwrap();
        let mut file = TasksStateFile::new(&dir);
        let mut state = TasksState::default();
        assert!(file.write(&mut state, "t1").is_err());
        std::fs::remove_file(&dir).unwrap();
        file.write(&mut state, "t2").unwrap();
        assert_eq!(file.writes(), 1);
        assert!(dir.join(TASKS_STATE_FILE).exists());
    }
}
