//! The polling source: sees no writes as they happen; per-project growth comes from sampling the
//! size of every watched project with the scanner (`scan/`, `du -sB1 -x` semantics) on a thread
//! of its own, at an interval stretched so that the walks' own CPU time stays within a budget
//! (`daemon.poll_cpu_budget`, 2% of one core by default). Always available; the path on macOS, the
//! last fallback on Linux, and what `source = "poll"` runs.
//!
//! Invariants: the sampler never runs on the caller's thread (`watch` and `drain` only exchange
//! data under a short lock); its CPU time is measured on its own thread (the walks run there, one
//! entry after another, not on the shared walk pool, so the clock counts exactly them), and the
//! next walk starts no sooner than `walk CPU / budget` after the last one started; growth is the
//! change of a project's allocated bytes between two walks of the same directory (a project
//! replaced by another one of the same name starts over from a baseline); what it holds is bounded
//! by the watched projects.

use super::{ProjectDir, Sample, Source, SourceError};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shortest interval between two walks, whatever the budget allows.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest: a walk as cheap as it may be still waits for this at most.
const MAX_WAIT_STEP: Duration = Duration::from_secs(1);

/// The CPU budget every poll source uses, as `f64` bits (set from the config at start and on
/// reload; the sampler reads it before each wait).
static CPU_BUDGET: AtomicU64 = AtomicU64::new(0x3F94_7AE1_47AE_147B); // 0.02

/// Sets the share of one core the size sampling may use (`daemon.poll_cpu_budget`).
pub fn set_cpu_budget(fraction: f64) {
    if fraction.is_finite() && fraction > 0.0 {
        CPU_BUDGET.store(fraction.to_bits(), Ordering::Relaxed);
    }
}

fn cpu_budget() -> f64 {
    f64::from_bits(CPU_BUDGET.load(Ordering::Relaxed))
}

/// What the sampler spent and how often it walked: the `sampling` part of the source status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// The budget in force, as a fraction of one core.
    pub cpu_budget: f64,
    /// Walks of all watched projects so far.
    pub walks: u64,
    /// CPU time (user + system) of every walk, in seconds, measured on the sampler's thread.
    pub walk_cpu_s: f64,
    /// Seconds from the first walk's start to now.
    pub wall_s: f64,
    /// The interval the last walk's CPU time asked for, in seconds.
    pub interval_s: f64,
    /// Projects sized by the last walk.
    pub projects: usize,
}

/// What the sampler and the source share.
#[derive(Default)]
struct Shared {
    projects: Vec<ProjectDir>,
    /// Growth since the last drain, per project id.
    growth: HashMap<u32, i64>,
    accounting: Sampling,
    first_walk: Option<Instant>,
    /// Why the last walk could not size some projects (one line, the first error).
    problem: Option<String>,
}

enum Command {
    /// The watched set changed: walk it now.
    Wake,
    Shutdown,
}

/// Per-project sizes sampled on a thread of its own.
#[derive(Default)]
pub struct PollSource {
    shared: Arc<Mutex<Shared>>,
    sampler: Option<Sampler>,
    /// Why the sampler thread could not start.
    failed: Option<String>,
}

struct Sampler {
    commands: Sender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        // A walk in progress finishes on its own; the thread is not waited for.
        drop(self.thread.take());
    }
}

impl PollSource {
    pub fn new() -> PollSource {
        PollSource::default()
    }

    /// The sampler's accounting so far.
    pub fn accounting(&self) -> Sampling {
        let Ok(shared) = self.shared.lock() else {
            return Sampling::default();
        };
        let mut out = shared.accounting.clone();
        out.wall_s = shared
            .first_walk
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        out.cpu_budget = cpu_budget();
        out
    }

    fn start_sampler(&mut self) {
        let (commands, rx) = crossbeam_channel::unbounded();
        let shared = self.shared.clone();
        match std::thread::Builder::new()
            .name("guardian-poll".into())
            .spawn(move || sample_loop(&shared, &rx))
        {
            Ok(thread) => {
                self.sampler = Some(Sampler {
                    commands,
                    thread: Some(thread),
                })
            }
            Err(e) => self.failed = Some(format!("cannot start the size sampler: {e}")),
        }
    }
}

impl Source for PollSource {
    fn name(&self) -> &'static str {
        "poll"
    }

    fn watch(&mut self, projects: &[ProjectDir]) -> Result<(), SourceError> {
        if let Ok(mut shared) = self.shared.lock() {
            shared.projects = projects.to_vec();
            let ids: std::collections::HashSet<u32> = projects.iter().map(|p| p.id).collect();
            shared.growth.retain(|id, _| ids.contains(id));
        }
        if self.sampler.is_none() && self.failed.is_none() && !projects.is_empty() {
            self.start_sampler();
        }
        if let Some(s) = &self.sampler {
            let _ = s.commands.send(Command::Wake);
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<Sample, SourceError> {
        let growth = match self.shared.lock() {
            Ok(mut shared) => std::mem::take(&mut shared.growth),
            Err(_) => HashMap::new(),
        };
        Ok(Sample {
            growth,
            ..Sample::default()
        })
    }

    fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.failed.iter().cloned().collect();
        if let Ok(shared) = self.shared.lock() {
            out.extend(shared.problem.clone());
        }
        out
    }

    fn sampling(&self) -> Option<Sampling> {
        Some(self.accounting())
    }
}

/// The sampler: walk every watched project, account the walk's CPU time, wait until the budget
/// allows the next one (or the watched set changes, or shutdown).
fn sample_loop(shared: &Mutex<Shared>, commands: &Receiver<Command>) {
    // Last size of each project, by id, with the identity it was measured for.
    let mut sizes: HashMap<u32, (u64, u64, u64)> = HashMap::new();
    let mut next_walk = Instant::now();
    loop {
        // Wait for the next walk; a change of the watched set walks at once only when the
        // budget already allows it (a churn of projects does not buy extra walks).
        loop {
            let wait = next_walk.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            match commands.recv_timeout(wait.min(MAX_WAIT_STEP)) {
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Command::Wake) | Err(RecvTimeoutError::Timeout) => {}
            }
        }
        let projects = match shared.lock() {
            Ok(s) => s.projects.clone(),
            Err(_) => return,
        };
        let began = Instant::now();
        let cpu_before = thread_cpu_time();
        let mut walked = HashMap::with_capacity(projects.len());
        let mut problem = None;
        for p in &projects {
            match commands.try_recv() {
                Ok(Command::Shutdown) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return
                }
                _ => {}
            }
            match crate::scan::size_dir_here(&p.path) {
                Ok(w) => {
                    walked.insert(p.id, (w.tally.usage().allocated, p.dev, p.ino));
                }
                Err(e) => {
                    problem.get_or_insert_with(|| {
                        format!(
                            "poll: cannot size {}: {e}",
                            crate::textpath::escape(&p.path)
                        )
                    });
                }
            }
        }
        let cpu = thread_cpu_time().saturating_sub(cpu_before);
        let interval = next_interval(cpu, cpu_budget());
        next_walk = began + interval;
        let Ok(mut s) = shared.lock() else {
            return;
        };
        for (id, (bytes, dev, ino)) in &walked {
            if let Some((before, bdev, bino)) = sizes.get(id) {
                if (bdev, bino) == (dev, ino) && bytes != before {
                    let delta = i64::try_from(*bytes)
                        .unwrap_or(i64::MAX)
                        .saturating_sub(i64::try_from(*before).unwrap_or(i64::MAX));
                    let g = s.growth.entry(*id).or_default();
                    *g = g.saturating_add(delta);
                }
            }
        }
        sizes = walked;
        s.first_walk.get_or_insert(began);
        s.accounting.walks += 1;
        s.accounting.walk_cpu_s += cpu.as_secs_f64();
        s.accounting.interval_s = interval.as_secs_f64();
        s.accounting.projects = sizes.len();
        s.problem = problem;
    }
}

/// The interval a walk that took `cpu` allows under `budget` (a fraction of one core): walks
/// start at least `cpu / budget` apart, and never more often than [`MIN_INTERVAL`].
pub fn next_interval(cpu: Duration, budget: f64) -> Duration {
    let budget = if budget.is_finite() && budget > 0.0 {
        budget
    } else {
        0.02
    };
    let stretched =
        Duration::try_from_secs_f64(cpu.as_secs_f64() / budget).unwrap_or(Duration::MAX);
    stretched.max(MIN_INTERVAL)
}

/// CPU time (user + system) this thread used so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos.min(999_999_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_stretches_with_the_walks_cpu_time() {
        // 2% of a core: 100 ms of walking asks for 5 s.
        assert_eq!(
            next_interval(Duration::from_millis(100), 0.02),
            Duration::from_secs(5)
        );
        // A cheap walk is still not repeated more often than MIN_INTERVAL.
        assert_eq!(next_interval(Duration::ZERO, 0.02), MIN_INTERVAL);
        // A nonsensical budget falls back to the default.
        assert_eq!(
            next_interval(Duration::from_millis(100), f64::NAN),
            Duration::from_secs(5)
        );
        assert_eq!(
            next_interval(Duration::from_secs(u64::MAX / 2), 1e-9),
            Duration::MAX
        );
    }

    #[test]
    fn the_default_budget_is_two_percent() {
        assert_eq!(f64::from_bits(0x3F94_7AE1_47AE_147B), 0.02);
    }

    #[test]
    fn thread_cpu_time_counts_this_threads_work() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time() > before);
    }
}
