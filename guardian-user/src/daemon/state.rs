//! The daemon's state file (`state.json` in `state_dir`): what `guardian status` shows. Written
//! atomically (temp file, fsync, rename) after every check.

use super::forecast::{FsForecastView, ProjectForecastView};
use crate::cleanup::AuditRecord;
use crate::fsys::FsSpace;
use crate::policy::{Limits, Pressure};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";

/// One guarded filesystem as last seen.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FsState {
    /// Mount point (or the workspace path where the mount point is unknown).
    pub mount: PathBuf,
    pub workspaces: Vec<PathBuf>,
    pub space: FsSpace,
    pub limits: Limits,
    pub pressure: Pressure,
    pub reason: String,
    /// Growth rate, P50/P90 time to each threshold, the lead time and the next trigger.
    #[serde(default)]
    pub forecast: Option<FsForecastView>,
}

/// The forecasting side beyond each filesystem's own forecast.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForecastState {
    /// `[forecast] enabled`: forecasts may start a preemptive phase 1.
    pub enabled: bool,
    /// `[forecast] lead_time` as configured (`auto` or a duration).
    pub lead_time: String,
    /// Each project's forecast against its filesystem, fastest growing first.
    pub projects: Vec<ProjectForecastView>,
}

/// The last cleanup cycle.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CycleSummary {
    pub mount: PathBuf,
    pub started: String,
    pub finished: String,
    pub trigger: String,
    pub rounds: u32,
    pub actions: u32,
    /// Free bytes gained over the whole cycle, as `statvfs` measured it.
    pub bytes_freed: u64,
    pub reached_target: bool,
    /// Why the cycle stopped short of the target, when it did.
    pub shortfall: Option<String>,
}

/// Everything `guardian status` reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonState {
    pub updated: String,
    pub pid: u32,
    /// The active write source.
    pub source: String,
    /// Why each better source was skipped (`auto`).
    #[serde(default)]
    pub source_skipped: Vec<String>,
    /// What runs, what failed and when it is retried, the running source's problems.
    #[serde(default)]
    pub source_status: Option<crate::sources::SourceStatus>,
    /// Per-project write rates and top writing cgroups, busiest first.
    #[serde(default)]
    pub projects: Vec<crate::aggregate::ProjectActivity>,
    /// Per-project forecasts and the forecast settings.
    #[serde(default)]
    pub forecast: Option<ForecastState>,
    pub dry_run: bool,
    pub poll_interval_ms: u64,
    pub filesystems: Vec<FsState>,
    pub last_cycle: Option<CycleSummary>,
    pub recent_actions: Vec<AuditRecord>,
    pub problems: Vec<String>,
}

/// Writes the state atomically: a reader sees the old file or the new one, never a mix.
pub fn write_state(dir: &Path, state: &DaemonState) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer_pretty(&mut file, state).map_err(io::Error::other)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(STATE_FILE))
}

/// Reads the state file from `dir`.
pub fn read_state(dir: &Path) -> io::Result<DaemonState> {
    let text = std::fs::read_to_string(dir.join(STATE_FILE))?;
    serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
