//! The worker thread shared by the fanotify and inotify sources: it owns the kernel queue and
//! the size table (a [`Backend`]), polls the queue fd and an eventfd that wakes it for commands
//! (a closed [`Command`] enum: `Watch`, `Shutdown`, the latter sent on drop), and accumulates
//! growth in a mutex-protected [`Sample`] that `drain()` swaps out, so `drain()` never waits for
//! event processing. Growth it sees is also spent from the write countdown of the project's
//! filesystem (`sources::countdown::Tally`), which wakes the daemon when a budget runs out; the
//! queue is read in batches of [`BATCH`], cut short while a budget is close to running out
//! (`countdown::batch_for`), so the read that spends it does not wait for the batch.
//! When the thread stops (an error reading the queue, a panic), `drain()`
//! reports why and the supervisor (`sources::supervise`) falls back.

use crate::sources::countdown::{self, Budget, Tally, Waker};
use crate::sources::{ProjectDir, Sample, SourceError};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use rustix::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a worker thread owns: the kernel queue and what it knows.
pub(crate) trait Backend: Send + 'static {
    /// The queue descriptor to poll.
    fn raw_fd(&self) -> i32;
    /// Sets the projects (marks, watches, baseline).
    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError>;
    /// Reads and applies every queued event without blocking.
    fn pump(&mut self) -> io::Result<()>;
    /// Periodic work (re-walks, polled dirs, retries), about once per [`TICK`]; what can be
    /// cut anywhere (polling directories without a watch, sharing watches) in slices of at
    /// most `slice` — a few ms while the next threshold is close ([`Tally::slice`]; not
    /// while a resting sampler's 1 MiB budget waits for a new writer: 2 ms slices then made a
    /// polling round five times slower and kept it running at idle), so a crossing's event
    /// does not wait behind it. Re-walks keep their own slice: a walk cannot stop
    /// mid-project.
    fn tick(&mut self, slice: Duration);
    /// Whether [`Backend::tick`] has urgent work (then it runs as soon as the budget allows,
    /// not only once per [`TICK`]).
    fn busy(&self) -> bool {
        false
    }
    /// What changed since the last call.
    fn take(&mut self) -> Sample;
    /// Conditions the operator should see now (degraded directories, …).
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Time between two reads of the kernel queue while events keep coming (well under the daemon's
/// sample interval; see `run`), unless the write countdown cuts it short.
pub(crate) const BATCH: Duration = Duration::from_millis(100);

/// Period of [`Backend::tick`].
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// Makes workers fail on purpose, for tests of the fallback: `<source>[:<seconds>[:<count>]]`
/// (e.g. `fanotify:1:2`: the first two fanotify workers fail one second after they start;
/// without a count every one does). The failure takes the real path: the thread stops with an
/// error, as when reading the kernel queue fails.
pub const FORCE_WORKER_FAILURE_ENV: &str = "GUARDIAN_FORCE_WORKER_FAILURE";

/// Workers failed on purpose so far (see [`FORCE_WORKER_FAILURE_ENV`]).
static FORCED: AtomicU32 = AtomicU32::new(0);

/// When the worker named `name` is to fail on purpose, if at all.
fn forced_failure(name: &str) -> Option<Duration> {
    let spec = std::env::var(FORCE_WORKER_FAILURE_ENV).ok()?;
    let mut parts = spec.split(':');
    if parts.next()? != name {
        return None;
    }
    let after = parts
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
        .unwrap_or(0.0);
    if let Some(count) = parts.next().and_then(|s| s.parse::<u32>().ok()) {
        if FORCED.fetch_add(1, Ordering::Relaxed) >= count {
            return None;
        }
    }
    Some(Duration::from_secs_f64(after))
}

/// Messages to the worker thread.
pub(crate) enum Command {
    /// The new project set, and where to answer once it is watched (`None`: nobody waits; a
    /// failure stops the worker and reaches `drain`).
    Watch(Vec<ProjectDir>, Option<Sender<Result<(), SourceError>>>),
    Shutdown,
}

#[derive(Default)]
struct Shared {
    sample: Sample,
    failure: Option<String>,
    problems: Vec<String>,
    /// The write countdown, armed by the daemon after each `statvfs`.
    tally: Tally,
    waker: Option<Waker>,
    /// While the worker waits out a batch: (its last read, the batch it waits for), so arming
    /// a closer budget can cut the wait short.
    batching: Option<(Instant, Duration)>,
    /// How the countdown paced the reads, for tests.
    pace: Pace,
}

/// How the write countdown paced the worker's reads of the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pace {
    /// Reads made before a whole [`BATCH`] had passed since the previous one, because a budget
    /// was close to running out.
    pub(crate) early_reads: u64,
    /// The batch the worker waited for before the read that woke the daemon last.
    pub(crate) woken_after: Option<Duration>,
    /// The slice the last [`Backend::tick`] was given.
    pub(crate) slice: Option<Duration>,
}

/// A worker thread running a [`Backend`], stopped and joined on drop.
pub struct Worker {
    name: &'static str,
    commands: Sender<Command>,
    wake: Arc<OwnedFd>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub(crate) fn spawn<B: Backend>(name: &'static str, backend: B) -> Result<Worker, SourceError> {
        let failed = |reason: String| SourceError::Failed {
            source_name: name,
            reason,
        };
        // SAFETY: plain syscall, result checked and owned.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(failed(format!("eventfd: {}", io::Error::last_os_error())));
        }
        // SAFETY: fresh descriptor.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(wake) });
        let (commands, inbox) = crossbeam_channel::unbounded();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let fail_at = forced_failure(name).map(|after| Instant::now() + after);
        let thread = std::thread::Builder::new()
            .name(format!("guardian-{name}"))
            .spawn({
                let wake = wake.clone();
                let shared = shared.clone();
                move || run(name, backend, inbox, wake, shared, fail_at)
            })
            .map_err(|e| failed(format!("cannot start the worker thread: {e}")))?;
        Ok(Worker {
            name,
            commands,
            wake,
            shared,
            thread: Some(thread),
        })
    }

    fn failed(&self, reason: String) -> SourceError {
        SourceError::Failed {
            source_name: self.name,
            reason,
        }
    }

    fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes eight bytes from a local buffer to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Hands the projects to the worker and waits for its baseline.
    /// Hands the new project set to the worker and waits until it is watched (baseline walks
    /// included).
    pub(crate) fn watch_and_wait(&self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Watch(projects.to_vec(), Some(reply)))
            .map_err(|_| self.failed(self.failure_reason()))?;
        self.wake();
        answer
            .recv()
            .map_err(|_| self.failed(self.failure_reason()))?
    }

    /// Hands the new project set to the worker without waiting: its baseline walks run on the
    /// worker's thread, never the caller's.
    pub(crate) fn watch(&self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        self.commands
            .send(Command::Watch(projects.to_vec(), None))
            .map_err(|_| self.failed(self.failure_reason()))?;
        self.wake();
        Ok(())
    }

    fn failure_reason(&self) -> String {
        self.shared
            .lock()
            .map(|s| s.failure.clone())
            .unwrap_or_default()
            .unwrap_or_else(|| "the worker thread stopped".into())
    }

    /// How the write countdown paced the reads so far.
    #[cfg(test)]
    pub(crate) fn pace(&self) -> Pace {
        self.shared.lock().map(|s| s.pace).unwrap_or_default()
    }

    /// Takes what the worker accumulated; never waits for event processing.
    pub(crate) fn drain(&self) -> Result<Sample, SourceError> {
        let mut shared = self
            .shared
            .lock()
            .map_err(|_| self.failed("the worker thread panicked".into()))?;
        let sample = std::mem::take(&mut shared.sample);
        match &shared.failure {
            Some(reason) if sample == Sample::default() => Err(self.failed(reason.clone())),
            _ => Ok(sample),
        }
    }
}

/// fanotify and inotify are both a [`Worker`] running their backend.
impl crate::sources::Source for Worker {
    fn name(&self) -> &'static str {
        self.name
    }

    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        Worker::watch(self, projects)
    }

    fn watch_and_wait(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        Worker::watch_and_wait(self, projects)
    }

    fn drain(&mut self) -> Result<Sample, SourceError> {
        Worker::drain(self)
    }

    fn problems(&self) -> Vec<String> {
        self.shared
            .lock()
            .map(|s| s.problems.clone())
            .unwrap_or_default()
    }

    fn set_waker(&mut self, waker: Waker) {
        if let Ok(mut s) = self.shared.lock() {
            s.waker = Some(waker);
        }
    }

    fn arm(&mut self, budgets: &[Budget]) {
        let cut_short = match self.shared.lock() {
            Ok(mut s) => {
                s.tally.arm(budgets);
                // Waiting out a batch longer than the new budgets allow: read sooner.
                s.batching
                    .is_some_and(|(_, waiting)| s.tally.batch(BATCH) < waiting)
            }
            Err(_) => false,
        };
        if cut_short {
            self.wake();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Records why the worker stopped, also when it panics.
struct ExitGuard {
    shared: Arc<Mutex<Shared>>,
    clean: bool,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if !self.clean {
            let mut shared = match self.shared.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            shared
                .failure
                .get_or_insert_with(|| "the worker thread panicked".into());
        }
    }
}

/// A `poll(2)` timeout: whole milliseconds, rounded up (rounded down, the last fraction of a
/// millisecond before a deadline became a zero timeout, and the loop spun on `poll` until it
/// passed: ~175 calls a second on an idle node).
fn millis(d: Duration) -> libc::c_int {
    libc::c_int::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
}

fn run<B: Backend>(
    name: &'static str,
    mut backend: B,
    inbox: Receiver<Command>,
    wake: Arc<OwnedFd>,
    shared: Arc<Mutex<Shared>>,
    fail_at: Option<Instant>,
) {
    let mut guard = ExitGuard {
        shared: shared.clone(),
        clean: false,
    };
    let mut last_tick = Instant::now();
    let mut last_pump = Instant::now() - BATCH;
    // The project set as last watched: ids are recycled, so growth still waiting for `drain()`
    // under an id whose project changed belongs to the vanished one and is dropped.
    let mut watched: HashMap<u32, ProjectDir> = HashMap::new();
    loop {
        // Between two reads of the queue the kernel merges repeated events on the same file, so
        // a writer making many small writes costs one event per batch instead of one per write.
        // Close to a countdown budget running out the batch is shorter: the read that spends it
        // wakes the daemon within a few ms of the write (`countdown::batch_for`).
        let batch_left = match shared.lock() {
            Ok(mut s) => {
                let batch = s.tally.batch(BATCH);
                let left = batch.saturating_sub(last_pump.elapsed());
                s.batching = (!left.is_zero()).then_some((last_pump, batch));
                left
            }
            Err(_) => return,
        };
        let queue_fd = if batch_left.is_zero() {
            backend.raw_fd()
        } else {
            -1 // poll(2) skips negative descriptors
        };
        let tick_every = if backend.busy() { BATCH } else { TICK };
        let mut timeout = tick_every.saturating_sub(last_tick.elapsed());
        if !batch_left.is_zero() {
            timeout = timeout.min(batch_left);
        }
        if let Some(at) = fail_at {
            timeout = timeout.min(at.saturating_duration_since(Instant::now()));
        }
        let mut fds = [
            libc::pollfd {
                fd: queue_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds.
        let rc =
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis(timeout)) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                fail(&shared, format!("poll: {err}"));
                return;
            }
            continue;
        }
        if fds[1].revents != 0 {
            let mut buf = [0u8; 8];
            // SAFETY: reads at most eight bytes into a local buffer.
            unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        }
        loop {
            match inbox.try_recv() {
                Ok(Command::Watch(projects, reply)) => {
                    let take = backend.take();
                    let now: HashMap<u32, ProjectDir> =
                        projects.iter().map(|p| (p.id, p.clone())).collect();
                    if let Ok(mut s) = shared.lock() {
                        s.sample.absorb(take);
                        s.sample
                            .growth
                            .retain(|id, _| now.get(id) == watched.get(id));
                    }
                    watched = now;
                    let result = backend.watch(&projects);
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(result);
                        }
                        None => {
                            if let Err(e) = result {
                                fail(&shared, format!("watching the projects: {e}"));
                                return;
                            }
                        }
                    }
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    guard.clean = true;
                    return;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if fail_at.is_some_and(|at| Instant::now() >= at) {
            fail(
                &shared,
                format!("reading events: forced to fail by {FORCE_WORKER_FAILURE_ENV}"),
            );
            return;
        }
        let mut read_after = None;
        if fds[0].revents != 0 {
            read_after = Some(last_pump.elapsed());
            last_pump = Instant::now();
            if let Err(err) = backend.pump() {
                fail(&shared, format!("reading events: {err}"));
                return;
            }
        }
        // The slice as the budgets are now (armed perhaps while the worker waited).
        let slice = (last_tick.elapsed() >= tick_every)
            .then(|| shared.lock().map_or(BATCH, |s| s.tally.slice(BATCH)));
        if let Some(slice) = slice {
            backend.tick(slice);
            last_tick = Instant::now();
        }
        let sample = backend.take();
        let problems = backend.problems();
        match shared.lock() {
            Ok(mut s) => {
                if slice.is_some() {
                    s.pace.slice = slice;
                }
                if read_after.is_some_and(|after| after < BATCH) {
                    s.pace.early_reads += 1;
                }
                if sample != Sample::default() {
                    if spend_growth(name, &mut s, &sample, &watched) {
                        s.pace.woken_after = read_after;
                    }
                    s.sample.absorb(sample);
                }
                if s.problems != problems {
                    s.problems = problems;
                }
            }
            Err(_) => return,
        }
    }
}

/// Spends the growth of `sample` from the countdown of each project's filesystem (shrinking
/// counts nothing: only a `statvfs` says what was freed), waking the daemon when a budget runs
/// out; whether one did.
fn spend_growth(
    name: &'static str,
    shared: &mut Shared,
    sample: &Sample,
    watched: &HashMap<u32, ProjectDir>,
) -> bool {
    let mut woke = false;
    for (id, growth) in &sample.growth {
        let (Ok(bytes), Some(project)) = (u64::try_from(*growth), watched.get(id)) else {
            continue;
        };
        if let Some(wake) = shared.tally.spend(name, project.dev, bytes) {
            countdown::wake(shared.waker.as_ref(), wake);
            woke = true;
        }
    }
    woke
}

fn fail(shared: &Mutex<Shared>, reason: String) {
    tracing::debug!(%reason, "write source worker stopped");
    if let Ok(mut s) = shared.lock() {
        s.failure = Some(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_timeout_is_never_rounded_down_to_a_spin() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_micros(999)), 1);
        assert_eq!(millis(Duration::from_millis(2)), 2);
        assert_eq!(millis(Duration::from_micros(2001)), 3);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), libc::c_int::MAX);
    }
}
