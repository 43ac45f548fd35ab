//! Keeps a write source running. The [`Supervisor`] is the `Source` the daemon holds: it runs the
//! configured source, and when that one fails (its worker thread stops, the probe's maps cannot
//! be read, a `watch` is refused) it falls back at once to polling, brings the next source of the
//! `auto` order up on a background thread (an explicit choice falls back to polling only), and
//! retries the failed one with exponential back-off ([`RETRY_FIRST`] doubling to [`RETRY_MAX`]).
//! Opening and the first baseline walk of a source brought up later never run on the caller's
//! thread. Every repeating message goes through `crate::warn_quiet!` (once a minute per cause,
//! with a count); [`SourceStatus`] says what runs, what failed, when, why, and when the next
//! retry is.

use super::countdown::{Budget, Waker};
use super::{kind_name, poll::PollSource, ProjectDir, Sample, Source, SourceError};
use crate::config::SourceKind;
use crossbeam_channel::{Receiver, TryRecvError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// First wait before retrying a source that failed.
pub const RETRY_FIRST: Duration = Duration::from_secs(10);
/// Longest wait between two retries (the wait doubles per failed attempt up to this).
pub const RETRY_MAX: Duration = Duration::from_secs(600);
/// A restored source that runs this long without failing starts over from [`RETRY_FIRST`] when
/// it fails again; one that fails sooner keeps doubling its back-off.
const STABLE_AFTER: Duration = RETRY_MAX;

/// Opens one source kind for the given workspaces (`sources::open_one`; tests pass fakes).
pub(crate) type Opener =
    Arc<dyn Fn(SourceKind, &[PathBuf]) -> Result<Box<dyn Source>, SourceError> + Send + Sync>;

/// Which source runs, and why not a better one: what `guardian status` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source running now (`ebpf`, `fanotify`, `inotify`, `poll`).
    pub active: String,
    /// `daemon.source` as configured.
    #[serde(default)]
    pub configured: String,
    /// Why each better source was skipped at start (`auto`).
    #[serde(default)]
    pub skipped: Vec<String>,
    /// Set while a failed source waits for its retry and a fallback runs.
    #[serde(default)]
    pub degraded: Option<Degradation>,
    /// Conditions of the running source worth attention (it keeps working).
    #[serde(default)]
    pub problems: Vec<String>,
    /// How often the running source changed since start (fallbacks and restorations).
    #[serde(default)]
    pub switches: u64,
    /// The polling source's size sampling: its CPU budget, what its walks cost, their interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<super::poll::Sampling>,
}

/// A source that failed and waits for its retry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Degradation {
    /// The source that failed (the one retried).
    pub failed: String,
    pub reason: String,
    /// When it failed (RFC 3339).
    pub since: String,
    /// Retries that failed since.
    pub attempts: u32,
    /// Times this source failed since the daemon started (a source that comes back and fails
    /// again keeps doubling its back-off).
    #[serde(default)]
    pub failures: u32,
    /// Why the last retry failed.
    #[serde(default)]
    pub last_attempt: Option<String>,
    /// Seconds until the next retry as of this status (0: under way).
    pub retry_in_secs: u64,
}

impl SourceStatus {
    /// A source running as configured.
    pub fn running(name: &str, problems: Vec<String>) -> SourceStatus {
        SourceStatus {
            active: name.to_string(),
            configured: name.to_string(),
            problems,
            ..SourceStatus::default()
        }
    }
}

impl std::fmt::Display for SourceStatus {
    /// `inotify (fanotify failed at …: reason; retrying in 40 s, 2 retries failed)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.active)?;
        if let Some(d) = &self.degraded {
            write!(f, " ({} failed at {}: {}; ", d.failed, d.since, d.reason)?;
            if d.retry_in_secs == 0 {
                f.write_str("retrying now")?;
            } else {
                write!(f, "retrying in {} s", d.retry_in_secs)?;
            }
            if d.attempts > 0 {
                write!(
                    f,
                    ", {} retr{} failed",
                    d.attempts,
                    if d.attempts == 1 { "y" } else { "ies" }
                )?;
                if let Some(last) = &d.last_attempt {
                    write!(f, ", last: {last}")?;
                }
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The failed source and its retry schedule.
struct Degraded {
    failed: SourceKind,
    failures: u32,
    reason: String,
    since: SystemTime,
    attempts: u32,
    last_attempt: Option<String>,
    retry_at: Instant,
}

/// A source being opened and given its baseline on a background thread.
struct BringUp {
    kind: SourceKind,
    projects: Arc<[ProjectDir]>,
    answer: Receiver<Result<Box<dyn Source>, SourceError>>,
}

/// The write source the daemon holds (see the module doc).
pub struct Supervisor {
    configured: SourceKind,
    /// Sources in fallback order: the one that started first, polling last.
    chain: Vec<SourceKind>,
    workspaces: Vec<PathBuf>,
    opener: Opener,
    active: Box<dyn Source>,
    active_kind: SourceKind,
    /// The source that started: retries aim for it.
    preferred: SourceKind,
    /// The project set of the last `watch` (the daemon's own list, shared).
    projects: Arc<[ProjectDir]>,
    skipped: Vec<String>,
    degraded: Option<Degraded>,
    bring_up: Option<BringUp>,
    /// The next source of the chain to bring up once the background slot is free.
    pending: Option<SourceKind>,
    /// The next retry's wait.
    backoff: Duration,
    restored_at: Option<Instant>,
    switches: u64,
    /// Times the preferred source failed.
    failures: u32,
    /// The active source's problems as last logged (digits left out, so a growing count is the
    /// same problem).
    logged_problems: Vec<String>,
    /// Where the write countdown wakes the daemon, and the budgets last armed: handed to each
    /// source that becomes active.
    waker: Option<Waker>,
    budgets: Vec<Budget>,
}

fn order(kind: SourceKind) -> Vec<SourceKind> {
    match kind {
        SourceKind::Auto => vec![
            SourceKind::Ebpf,
            SourceKind::Fanotify,
            SourceKind::Inotify,
            SourceKind::Poll,
        ],
        SourceKind::Poll => vec![SourceKind::Poll],
        other => vec![other, SourceKind::Poll],
    }
}

fn shape(problem: &str) -> String {
    problem.chars().filter(|c| !c.is_ascii_digit()).collect()
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl Supervisor {
    /// Opens `kind` (see `sources::open`).
    pub(crate) fn start(
        kind: SourceKind,
        workspaces: Vec<PathBuf>,
        opener: Opener,
    ) -> Result<Supervisor, SourceError> {
        let candidates = order(kind);
        let mut skipped = Vec::new();
        let mut started = None;
        for candidate in &candidates {
            if *candidate == SourceKind::Poll {
                started = Some((
                    SourceKind::Poll,
                    Box::new(PollSource::new()) as Box<dyn Source>,
                ));
                break;
            }
            match opener(*candidate, &workspaces) {
                Ok(source) => {
                    started = Some((*candidate, source));
                    break;
                }
                // Only `auto` goes on to the next source at start.
                Err(e) if kind != SourceKind::Auto => return Err(e),
                Err(e) => {
                    tracing::info!("skipping write source: {e}");
                    skipped.push(e.to_string());
                }
            }
        }
        let (active_kind, active) = started.unwrap_or((
            SourceKind::Poll,
            Box::new(PollSource::new()) as Box<dyn Source>,
        ));
        tracing::info!(source = kind_name(active_kind), "write source selected");
        let chain = candidates
            .iter()
            .copied()
            .skip_while(|k| *k != active_kind)
            .collect();
        Ok(Supervisor {
            configured: kind,
            chain,
            workspaces,
            opener,
            active,
            active_kind,
            preferred: active_kind,
            projects: Arc::from(Vec::new()),
            skipped,
            degraded: None,
            bring_up: None,
            pending: None,
            backoff: RETRY_FIRST,
            restored_at: None,
            switches: 0,
            failures: 0,
            logged_problems: Vec::new(),
            waker: None,
            budgets: Vec::new(),
        })
    }

    /// Why each better source was skipped at start.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// The active source failed: run on polling now, bring the next source of the chain up in
    /// the background, and schedule the retry of the preferred one.
    fn fail(&mut self, error: SourceError) {
        let failed = self.active_kind;
        let reason = match &error {
            SourceError::Unavailable { reason, .. } | SourceError::Failed { reason, .. } => {
                reason.clone()
            }
        };
        let now = Instant::now();
        if failed == self.preferred {
            let flapping = self
                .restored_at
                .is_some_and(|t| now.saturating_duration_since(t) < STABLE_AFTER);
            self.backoff = if flapping {
                (self.backoff * 2).min(RETRY_MAX)
            } else {
                RETRY_FIRST
            };
            self.failures = self.failures.saturating_add(1);
            self.degraded = Some(Degraded {
                failed,
                failures: self.failures,
                reason: reason.clone(),
                since: SystemTime::now(),
                attempts: 0,
                last_attempt: None,
                retry_at: now + self.backoff,
            });
        }
        self.active = Box::new(PollSource::new());
        // The fallback samples the sizes of the projects the failed source watched (polling
        // never refuses a watch).
        let _ = self.active.watch(&self.projects);
        self.active_kind = SourceKind::Poll;
        self.switches += 1;
        self.logged_problems.clear();
        self.pending = self
            .chain
            .iter()
            .copied()
            .skip_while(|k| *k != failed)
            .nth(1)
            .filter(|k| *k != SourceKind::Poll);
        crate::warn_quiet!(
            format!("source-failed:{}", kind_name(failed)),
            source = kind_name(failed),
            %reason,
            fallback = kind_name(self.pending.unwrap_or(SourceKind::Poll)),
            retry_in = %human(self.backoff),
            "write source failed; falling back and retrying it later"
        );
        self.start_pending();
    }

    fn start_pending(&mut self) {
        if self.bring_up.is_some() {
            return;
        }
        if let Some(kind) = self.pending.take() {
            self.spawn_bring_up(kind);
        }
    }

    /// Opens `kind` and takes its baseline on a background thread.
    fn spawn_bring_up(&mut self, kind: SourceKind) {
        let (tx, answer) = crossbeam_channel::bounded(1);
        let opener = self.opener.clone();
        let workspaces = self.workspaces.clone();
        let projects = self.projects.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("guardian-up-{}", kind_name(kind)))
            .spawn({
                let projects = projects.clone();
                move || {
                    let result = opener(kind, &workspaces).and_then(|mut source| {
                        source.watch_and_wait(&projects)?;
                        Ok(source)
                    });
                    let _ = tx.send(result);
                }
            });
        match spawned {
            Ok(_) => {
                self.bring_up = Some(BringUp {
                    kind,
                    projects,
                    answer,
                })
            }
            Err(e) => self.brought_up(
                kind,
                Err(SourceError::Failed {
                    source_name: kind_name(kind),
                    reason: format!("cannot start a thread to open it: {e}"),
                }),
            ),
        }
    }

    /// Takes the background bring-up's result, if it finished.
    fn poll_bring_up(&mut self) {
        let Some(up) = &self.bring_up else {
            return;
        };
        let result = match up.answer.try_recv() {
            Ok(result) => result,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => Err(SourceError::Failed {
                source_name: kind_name(up.kind),
                reason: "opening it stopped without an answer (panicked)".into(),
            }),
        };
        let Some(up) = self.bring_up.take() else {
            return;
        };
        let result = result.and_then(|mut source| {
            if source_projects_differ(&up.projects, &self.projects) {
                source.watch(&self.projects)?;
            }
            Ok(source)
        });
        self.brought_up(up.kind, result);
        self.start_pending();
    }

    /// Gives the active source the daemon's waker and the budgets armed last.
    fn hand_countdown(&mut self) {
        if let Some(waker) = &self.waker {
            self.active.set_waker(waker.clone());
            self.active.arm(&self.budgets);
        }
    }

    fn rank(&self, kind: SourceKind) -> usize {
        self.chain
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(usize::MAX)
    }

    fn brought_up(&mut self, kind: SourceKind, result: Result<Box<dyn Source>, SourceError>) {
        let now = Instant::now();
        match result {
            Ok(source) if self.rank(kind) < self.rank(self.active_kind) => {
                let was = self.active_kind;
                self.active = source;
                self.active_kind = kind;
                self.hand_countdown();
                self.switches += 1;
                self.logged_problems.clear();
                if kind == self.preferred {
                    let attempts = self.degraded.take().map(|d| d.attempts + 1).unwrap_or(0);
                    self.restored_at = Some(now);
                    if let Some(held_back) =
                        crate::quiet::allow(&format!("source-restored:{}", kind_name(kind)))
                    {
                        tracing::info!(
                            held_back,
                            source = kind_name(kind),
                            replaces = kind_name(was),
                            attempts,
                            "write source restored"
                        );
                    }
                } else if let Some(held_back) =
                    crate::quiet::allow(&format!("source-took-over:{}", kind_name(kind)))
                {
                    tracing::info!(
                        held_back,
                        source = kind_name(kind),
                        replaces = kind_name(was),
                        "write source took over while the failed one waits for its retry"
                    );
                }
            }
            // Not better than what runs now (a late fallback after the preferred came back).
            Ok(_) => {}
            Err(e) if kind == self.preferred => {
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
                if let Some(d) = &mut self.degraded {
                    d.attempts += 1;
                    d.last_attempt = Some(e.to_string());
                    d.retry_at = now + self.backoff;
                }
                crate::warn_quiet!(
                    format!("source-retry:{}", kind_name(kind)),
                    source = kind_name(kind),
                    error = %e,
                    next_in = %human(self.backoff),
                    "retrying the write source failed"
                );
            }
            Err(e) => {
                crate::warn_quiet!(
                    format!("source-fallback:{}", kind_name(kind)),
                    source = kind_name(kind),
                    error = %e,
                    "fallback write source could not start; trying the next"
                );
                self.pending = self
                    .chain
                    .iter()
                    .copied()
                    .skip_while(|k| *k != kind)
                    .nth(1)
                    .filter(|k| {
                        *k != SourceKind::Poll && self.rank(*k) < self.rank(self.active_kind)
                    });
            }
        }
    }

    /// Starts the retry of the failed source when it is due.
    fn maybe_retry(&mut self) {
        if self.bring_up.is_some() {
            return;
        }
        let due = self
            .degraded
            .as_ref()
            .is_some_and(|d| Instant::now() >= d.retry_at);
        if due {
            self.spawn_bring_up(self.preferred);
        } else {
            self.start_pending();
        }
    }

    /// Logs each problem of the active source once when it appears (rate-limited per kind).
    fn log_new_problems(&mut self) {
        let problems = self.active.problems();
        let shapes: Vec<String> = problems.iter().map(|p| shape(p)).collect();
        for (problem, s) in problems.iter().zip(&shapes) {
            if !self.logged_problems.contains(s) {
                crate::warn_quiet!(
                    format!("source-problem:{s}"),
                    source = self.active.name(),
                    "{problem}"
                );
            }
        }
        self.logged_problems = shapes;
    }
}

fn source_projects_differ(a: &[ProjectDir], b: &[ProjectDir]) -> bool {
    a != b
}

impl Source for Supervisor {
    fn name(&self) -> &'static str {
        self.active.name()
    }

    /// Always `Ok`: a source that refuses the projects is failed over like one whose `drain`
    /// fails, and [`SourceStatus`] says so.
    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        self.watch_shared(&Arc::from(projects))
    }

    /// Keeps the caller's list (no copy of every project); always `Ok`, as
    /// [`watch`](Supervisor::watch).
    fn watch_shared(&mut self, projects: &Arc<[ProjectDir]>) -> Result<(), SourceError> {
        self.projects = projects.clone();
        if let Err(e) = self.active.watch(projects) {
            self.fail(e);
        }
        Ok(())
    }

    /// Always `Ok` (see [`Supervisor::watch`]); notes of the source are logged here, rate-limited,
    /// and not handed on.
    fn drain(&mut self) -> Result<Sample, SourceError> {
        self.poll_bring_up();
        self.maybe_retry();
        let mut sample = match self.active.drain() {
            Ok(sample) => sample,
            Err(e) => {
                self.fail(e);
                return Ok(Sample::default());
            }
        };
        for note in std::mem::take(&mut sample.notes) {
            crate::warn_quiet!(
                format!("source-note:{}:{}", self.active.name(), note.cause),
                source = self.active.name(),
                "{note}"
            );
        }
        self.log_new_problems();
        Ok(sample)
    }

    fn sampling(&self) -> Option<super::poll::Sampling> {
        self.active.sampling()
    }

    fn problems(&self) -> Vec<String> {
        self.active.problems()
    }

    fn set_waker(&mut self, waker: Waker) {
        self.waker = Some(waker);
        self.hand_countdown();
    }

    fn arm(&mut self, budgets: &[Budget]) {
        self.budgets = budgets.to_vec();
        self.active.arm(budgets);
    }

    fn status(&self) -> SourceStatus {
        let now = Instant::now();
        SourceStatus {
            active: self.active.name().to_string(),
            configured: kind_name(self.configured).to_string(),
            skipped: self.skipped.clone(),
            degraded: self.degraded.as_ref().map(|d| Degradation {
                failed: kind_name(d.failed).to_string(),
                reason: d.reason.clone(),
                since: crate::cleanup::audit::timestamp(d.since),
                attempts: d.attempts,
                failures: d.failures,
                last_attempt: d.last_attempt.clone(),
                retry_in_secs: if self.bring_up.as_ref().is_some_and(|b| b.kind == d.failed) {
                    0
                } else {
                    d.retry_at.saturating_duration_since(now).as_secs()
                },
            }),
            problems: self.active.problems(),
            switches: self.switches,
            sampling: self.active.sampling(),
        }
    }
}

#[cfg(test)]
mod tests;
