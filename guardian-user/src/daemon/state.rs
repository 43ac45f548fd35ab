//! The daemon's state file (`state.json` in the runtime dir, `DaemonConfig::runtime_dir`): what
//! `guardian status` shows. Bounded (the busiest projects, the rest summarized), serialized into
//! one buffer, and handed to a
//! writer thread that replaces the file atomically ([`OwnDir::replace`]) only when its content
//! changed — a slow or full disk never blocks the main loop, and a failed write is a reported
//! problem, never a reason to exit.

use super::forecast::{FsForecastView, ProjectForecastView};
use crate::cleanup::AuditRecord;
use crate::fsys::files::OwnDir;
use crate::fsys::FsSpace;
use crate::policy::{Limits, Pressure};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const STATE_FILE: &str = "state.json";
/// Projects listed by name in the state file (busiest first); the rest are summarized.
pub const MAX_PROJECTS: usize = 100;
/// Largest state file `guardian status` reads.
const MAX_STATE_BYTES: u64 = 16 << 20;
/// A state whose only changes are measurements (free space, growth rates, forecasts) is written
/// at most this often; any other change (pressure, a cycle, an action, a problem) at once. The
/// state file may live on a guarded filesystem, where each write moves the measurements.
const MEASUREMENTS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// One guarded filesystem as last seen.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FsState {
    /// Mount point (or the workspace path where the mount point is unknown).
    #[serde(with = "crate::textpath")]
    pub mount: PathBuf,
    #[serde(with = "crate::textpath::list")]
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
    /// The fastest growing projects' forecasts (at most [`MAX_PROJECTS`]).
    pub projects: Vec<ProjectForecastView>,
}

/// The last cleanup cycle.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CycleSummary {
    #[serde(with = "crate::textpath")]
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
    /// When the content last changed (the file is not rewritten while nothing changes).
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
    /// Per-project write rates and top writing cgroups, busiest first (at most
    /// [`MAX_PROJECTS`]).
    #[serde(default)]
    pub projects: Vec<crate::aggregate::ProjectActivity>,
    /// Projects left out of `projects`, and their total growth rate.
    #[serde(default)]
    pub projects_omitted: usize,
    #[serde(default)]
    pub projects_omitted_rate_bps: f64,
    /// Per-project forecasts and the forecast settings.
    #[serde(default)]
    pub forecast: Option<ForecastState>,
    pub dry_run: bool,
    pub poll_interval_ms: u64,
    pub filesystems: Vec<FsState>,
    pub last_cycle: Option<CycleSummary>,
    pub recent_actions: Vec<AuditRecord>,
    /// Why nothing is deleted now, when Guardian refuses (the audit log cannot be written).
    #[serde(default)]
    pub refusing: Option<String>,
    pub problems: Vec<String>,
}

/// The thread that writes the state file.
pub struct StateWriter {
    tx: crossbeam_channel::Sender<Vec<u8>>,
    /// Closed by the writer thread when it ends.
    done: crossbeam_channel::Receiver<()>,
    /// Why the last write failed, until one succeeds.
    failure: Arc<Mutex<Option<String>>>,
    /// The content last handed over, without its `updated` stamp.
    last: Vec<u8>,
    /// The same without its measurements, and when the file was last handed over.
    last_significant: Vec<u8>,
    last_at: Option<std::time::Instant>,
    handed: u64,
}

impl StateWriter {
    /// Starts the writer for `dir` (created, mode 0750, when missing; refused when not
    /// Guardian's own — see [`OwnDir`]).
    pub fn spawn(dir: &Path) -> io::Result<StateWriter> {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(1);
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("guardian-state".into())
            .spawn(move || {
                let _done = done_tx;
                let mut own: Option<OwnDir> = None;
                for mut bytes in rx.iter() {
                    // Only the newest state matters.
                    while let Ok(newer) = rx.try_recv() {
                        bytes = newer;
                    }
                    let written = (|| -> Result<(), String> {
                        if own.is_none() {
                            own = Some(OwnDir::open(&dir, true).map_err(|e| e.to_string())?);
                        }
                        let d = own.as_ref().ok_or("no state dir")?;
                        d.replace(STATE_FILE, &bytes).map_err(|e| {
                            own = None;
                            format!(
                                "cannot write {}: {e}",
                                crate::textpath::escape(&dir.join(STATE_FILE))
                            )
                        })
                    })();
                    let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
                    match written {
                        Ok(()) => {
                            if f.take().is_some() {
                                crate::quiet::clear("state.write");
                                tracing::info!("state file written again");
                            }
                        }
                        Err(e) => {
                            crate::warn_quiet!("state.write", error = %e, "cannot write the state file; guarding goes on");
                            *f = Some(e);
                        }
                    }
                }
            })?;
        Ok(StateWriter {
            tx,
            done,
            failure,
            last: Vec::new(),
            last_significant: Vec::new(),
            last_at: None,
            handed: 0,
        })
    }

    /// Hands `state` to the writer when its content (all but `updated`) changed since the last
    /// call — at once when more than measurements changed, else at most every
    /// [`MEASUREMENTS_EVERY`]; `updated` is then set to `now`. Never blocks: a writer still
    /// busy gets the newest state when it is done. Returns false when the content is what the
    /// last call saw (the caller need not tell anyone): an idle daemon renders its state once
    /// per check and writes nothing.
    pub fn submit(&mut self, state: &mut DaemonState, now: &str) -> bool {
        let stamp = std::mem::take(&mut state.updated);
        let Ok(content) = serde_json::to_vec(state) else {
            state.updated = stamp;
            return true;
        };
        if content == self.last {
            state.updated = stamp;
            return false;
        }
        let significant = serde_json::to_vec(&without_measurements(state)).unwrap_or_default();
        let measurements_only = significant == self.last_significant;
        let recently = self
            .last_at
            .is_some_and(|at| at.elapsed() < MEASUREMENTS_EVERY);
        if measurements_only && recently {
            state.updated = stamp;
            return true;
        }
        self.last_significant = significant;
        self.last_at = Some(std::time::Instant::now());
        state.updated = now.to_string();
        let bytes = with_stamp(&content, now);
        self.last = content;
        self.handed += 1;
        match self.tx.try_send(bytes) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(bytes)) => {
                // The writer is busy with an older state: replace it with this one.
                let _ = self
                    .tx
                    .send_timeout(bytes, std::time::Duration::from_millis(1));
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {}
        }
        true
    }

    /// States handed to the writer so far (each one a write of the file).
    pub fn handed(&self) -> u64 {
        self.handed
    }

    /// Why the state file cannot be written, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits (at most `limit`) until every submitted state is on disk — for `run --once`.
    pub fn flush(self, limit: std::time::Duration) {
        let StateWriter { tx, done, .. } = self;
        drop(tx);
        // The thread ends (closing `done`) once it has written what was pending.
        let _ = done.recv_timeout(limit);
    }
}

/// The file's bytes: `content` (serialized with an empty `updated`, the first field) with the
/// stamp `now` put in, and a final newline — without serializing the state a second time.
fn with_stamp(content: &[u8], now: &str) -> Vec<u8> {
    const EMPTY: &[u8] = br#"{"updated":"""#;
    let stamp = serde_json::to_vec(now).unwrap_or_else(|_| b"\"\"".to_vec());
    let mut bytes = Vec::with_capacity(content.len() + stamp.len() + 1);
    match content.strip_prefix(EMPTY) {
        Some(rest) => {
            bytes.extend_from_slice(br#"{"updated":"#);
            bytes.extend_from_slice(&stamp);
            bytes.extend_from_slice(rest);
        }
        // Not reached while `updated` is the first field; the content stays valid JSON.
        None => bytes.extend_from_slice(content),
    }
    bytes.push(b'\n');
    bytes
}

/// `state` with its measurements coarsened to what a reader would call a change: free space to
/// the MiB, growth to two significant digits (under 1 KiB/s: none), times to two significant
/// digits, the texts that spell those numbers left out. Guardian's own writes of its state file
/// and audit log do not move it.
fn without_measurements(state: &DaemonState) -> DaemonState {
    let mut s = state.clone();
    for fs in &mut s.filesystems {
        fs.space.avail_bytes >>= 20;
        fs.space.free_bytes >>= 20;
        fs.space.avail_inodes /= 1000;
        fs.reason.clear();
        if let Some(f) = &mut fs.forecast {
            coarsen(&mut f.forecast);
            f.lead = Default::default();
        }
    }
    if let Some(f) = &mut s.forecast {
        for p in &mut f.projects {
            coarsen(&mut p.forecast);
        }
    }
    for p in &mut s.projects {
        p.rate_bps = coarse_rate(p.rate_bps);
        p.net_bps = coarse_rate(p.net_bps);
        p.total_bytes >>= 20;
        p.freed_bytes >>= 20;
        for c in &mut p.top_cgroups {
            c.rate_bps = coarse_rate(c.rate_bps);
        }
    }
    s.projects_omitted_rate_bps = coarse_rate(s.projects_omitted_rate_bps);
    // The poll source's accounting moves with every walk: its walk count to two digits.
    if let Some(sampling) = s.source_status.as_mut().and_then(|st| st.sampling.as_mut()) {
        sampling.walks = two_digits(sampling.walks as f64) as u64;
        sampling.walk_cpu_s = 0.0;
        sampling.wall_s = 0.0;
        sampling.interval_s = two_digits(sampling.interval_s);
    }
    s
}

fn coarsen(f: &mut super::forecast::ForecastView) {
    f.rate_bps = coarse_rate(f.rate_bps);
    f.samples = 0;
    f.next.clear();
    for eta in &mut f.eta {
        eta.p50_s = eta.p50_s.map(two_digits);
        eta.p90_s = eta.p90_s.map(two_digits);
    }
}

fn coarse_rate(bps: f64) -> f64 {
    if bps.abs() < 1024.0 {
        0.0
    } else {
        two_digits(bps)
    }
}

fn two_digits(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return 0.0;
    }
    let unit = 10f64.powi(x.abs().log10().floor() as i32 - 1);
    (x / unit).round() * unit
}

/// Reads the state file the daemon of `config` writes: in its runtime dir, or — the runtime
/// dir left at its default and holding none — in `state_dir`, where daemons before the runtime
/// dir kept it.
pub fn read_state_of(config: &crate::config::DaemonConfig) -> io::Result<DaemonState> {
    let dir = config.runtime_dir();
    match read_state(&dir) {
        Err(e)
            if e.kind() == io::ErrorKind::NotFound
                && config.runtime_dir.is_none()
                && dir != config.state_dir =>
        {
            read_state(&config.state_dir).map_err(|_| e)
        }
        other => other,
    }
}

/// Reads the state file from `dir` (not following a symlink, at most 16 MiB).
pub fn read_state(dir: &Path) -> io::Result<DaemonState> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(STATE_FILE))?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("the state file is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(io::Error::other("the state file is too large"));
    }
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
