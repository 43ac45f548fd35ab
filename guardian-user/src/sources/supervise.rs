//! Keeps a write source running. The [`Supervisor`] is the `Source` the daemon holds: it runs the
//! configured source, and when that one fails (its worker thread stops, the probe's maps cannot
//! be read, a `watch` is refused) it falls back at once to polling, brings the next source of the
//! `auto` order up on a background thread (an explicit choice falls back to polling only), and
//! retries the failed one with exponential back-off ([`RETRY_FIRST`] doubling to [`RETRY_MAX`]).
//! Opening and the first baseline walk of a source brought up later never run on the caller's
//! thread. Every repeating message goes through `crate::warn_quiet!` (once a minute per cause,
//! with a count); [`SourceStatus`] says what runs, what failed, when, why, and when the next
//! retry is.

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
    projects: Vec<ProjectDir>,
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
    /// The project set of the last `watch`.
    projects: Vec<ProjectDir>,
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
                started = Some((SourceKind::Poll, Box::new(PollSource) as Box<dyn Source>));
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
        let (active_kind, active) =
            started.unwrap_or((SourceKind::Poll, Box::new(PollSource) as Box<dyn Source>));
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
            projects: Vec::new(),
            skipped,
            degraded: None,
            bring_up: None,
            pending: None,
            backoff: RETRY_FIRST,
            restored_at: None,
            switches: 0,
            failures: 0,
            logged_problems: Vec::new(),
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
        self.active = Box::new(PollSource);
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
        self.projects = projects.to_vec();
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

    fn problems(&self) -> Vec<String> {
        self.active.problems()
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Mutex;

    /// A fake source per kind: `broken` makes `open` (and a running one's `drain`) fail.
    #[derive(Default)]
    struct Switches {
        broken: Mutex<Vec<SourceKind>>,
        opened: AtomicU32,
        fail_watch: AtomicBool,
    }

    impl Switches {
        fn set(&self, kind: SourceKind, broken: bool) {
            let mut b = self.broken.lock().unwrap();
            b.retain(|k| *k != kind);
            if broken {
                b.push(kind);
            }
        }

        fn is_broken(&self, kind: SourceKind) -> bool {
            self.broken.lock().unwrap().contains(&kind)
        }
    }

    struct Fake {
        kind: SourceKind,
        switches: Arc<Switches>,
    }

    impl Source for Fake {
        fn name(&self) -> &'static str {
            kind_name(self.kind)
        }

        fn watch(&mut self, _: &[ProjectDir]) -> Result<(), SourceError> {
            if self.switches.fail_watch.load(Ordering::Relaxed) {
                return Err(SourceError::Unavailable {
                    source_name: self.name(),
                    reason: "refused".into(),
                });
            }
            Ok(())
        }

        fn drain(&mut self) -> Result<Sample, SourceError> {
            if self.switches.is_broken(self.kind) {
                return Err(SourceError::Failed {
                    source_name: self.name(),
                    reason: "broken".into(),
                });
            }
            let mut s = Sample::default();
            s.growth.insert(1, 1);
            Ok(s)
        }
    }

    fn opener(switches: &Arc<Switches>) -> Opener {
        let switches = switches.clone();
        Arc::new(move |kind, _| {
            switches.opened.fetch_add(1, Ordering::Relaxed);
            if switches.is_broken(kind) {
                return Err(SourceError::Unavailable {
                    source_name: kind_name(kind),
                    reason: "broken".into(),
                });
            }
            Ok(Box::new(Fake {
                kind,
                switches: switches.clone(),
            }) as Box<dyn Source>)
        })
    }

    /// Drains until the active source is `want` or five seconds pass.
    fn drain_until(s: &mut Supervisor, want: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            s.drain().unwrap();
            if s.name() == want && s.bring_up.is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn an_explicit_choice_that_cannot_start_is_an_error_and_auto_skips_it() {
        let switches = Arc::new(Switches::default());
        switches.set(SourceKind::Ebpf, true);
        let err = Supervisor::start(SourceKind::Ebpf, vec![], opener(&switches))
            .err()
            .expect("an explicit ebpf that cannot load must not start");
        assert!(err.to_string().contains("broken"), "{err}");
        let auto = Supervisor::start(SourceKind::Auto, vec![], opener(&switches)).unwrap();
        assert_eq!(auto.name(), "fanotify");
        assert_eq!(auto.skipped().len(), 1);
        assert_eq!(auto.status().configured, "auto");
    }

    #[test]
    fn a_failed_source_falls_back_to_the_next_and_is_retried_with_back_off() {
        let switches = Arc::new(Switches::default());
        let mut s = Supervisor::start(SourceKind::Auto, vec![], opener(&switches)).unwrap();
        assert_eq!(s.name(), "ebpf");
        switches.set(SourceKind::Ebpf, true);
        let sample = s.drain().unwrap();
        assert_eq!(sample, Sample::default(), "a failure is not handed on");
        assert!(
            drain_until(&mut s, "fanotify"),
            "falls back to the next source"
        );
        let status = s.status();
        let d = status.degraded.clone().expect("degraded");
        assert_eq!(d.failed, "ebpf");
        assert!(d.retry_in_secs > 0 && d.retry_in_secs <= RETRY_FIRST.as_secs());
        let text = status.to_string();
        assert!(
            text.starts_with("fanotify (ebpf failed at ") && text.contains("broken; retrying in"),
            "{text}"
        );
        // The retry is due: it fails (still broken), the back-off doubles.
        s.degraded.as_mut().unwrap().retry_at = Instant::now();
        let opened = switches.opened.load(Ordering::Relaxed);
        assert!(drain_until(&mut s, "fanotify"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.status().degraded.unwrap().attempts == 0 && Instant::now() < deadline {
            s.drain().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(switches.opened.load(Ordering::Relaxed) > opened);
        let d = s.status().degraded.unwrap();
        assert_eq!(d.attempts, 1);
        assert!(d.retry_in_secs > RETRY_FIRST.as_secs(), "{d:?}");
        // Repaired: the next retry restores it.
        switches.set(SourceKind::Ebpf, false);
        s.degraded.as_mut().unwrap().retry_at = Instant::now();
        assert!(drain_until(&mut s, "ebpf"));
        assert!(s.status().degraded.is_none());
        assert_eq!(s.status().switches, 3, "poll, fanotify, ebpf again");
    }

    #[test]
    fn an_explicit_choice_falls_back_to_polling_and_flapping_doubles_the_back_off() {
        let switches = Arc::new(Switches::default());
        let mut s = Supervisor::start(SourceKind::Inotify, vec![], opener(&switches)).unwrap();
        switches.set(SourceKind::Inotify, true);
        s.drain().unwrap();
        assert_eq!(s.name(), "poll");
        assert!(
            s.bring_up.is_none() && s.pending.is_none(),
            "nothing but polling"
        );
        let first = s.backoff;
        assert_eq!(first, RETRY_FIRST);
        switches.set(SourceKind::Inotify, false);
        s.degraded.as_mut().unwrap().retry_at = Instant::now();
        assert!(drain_until(&mut s, "inotify"));
        // Fails again right after it came back: the next wait is longer.
        switches.set(SourceKind::Inotify, true);
        s.drain().unwrap();
        assert_eq!(s.name(), "poll");
        assert!(s.backoff > first, "{:?}", s.backoff);
    }

    #[test]
    fn a_refused_watch_fails_over_like_a_failed_drain() {
        let switches = Arc::new(Switches::default());
        let mut s = Supervisor::start(SourceKind::Fanotify, vec![], opener(&switches)).unwrap();
        switches.fail_watch.store(true, Ordering::Relaxed);
        s.watch(&[]).expect("the supervisor absorbs the failure");
        assert_eq!(s.name(), "poll");
        assert_eq!(s.status().degraded.unwrap().reason, "refused");
    }

    #[test]
    fn the_status_line_names_the_failure_and_the_retry() {
        let status = SourceStatus {
            active: "inotify".into(),
            configured: "auto".into(),
            degraded: Some(Degradation {
                failed: "fanotify".into(),
                reason: "reading events: EIO".into(),
                since: "2026-01-01T00:00:00.000Z".into(),
                attempts: 2,
                failures: 1,
                last_attempt: Some("fanotify failed: x".into()),
                retry_in_secs: 40,
            }),
            ..SourceStatus::default()
        };
        assert_eq!(
            status.to_string(),
            "inotify (fanotify failed at 2026-01-01T00:00:00.000Z: reading events: EIO; \
             retrying in 40 s, 2 retries failed, last: fanotify failed: x)"
        );
    }
}
