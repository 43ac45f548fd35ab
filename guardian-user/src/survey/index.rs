//! The survey index: each project's last survey (its rule matches with their sizes and
//! identities, its usage and newest change), kept by the cleanup thread so that a cycle walks
//! only the projects written into since they were measured. Writes come from the daemon's write
//! source through [`Pending`]; a slow background refresh ([`Index::refresh_one`], paced by a CPU
//! budget) re-walks what they made stale.
//!
//! Invariants: an entry is served only while no write was reported into its project since the
//! walk that measured it began, the project entry is the same (dev, ino) with the same mtime and
//! ctime, and every cached match is still the (dev, ino) it was; otherwise the project is walked.
//! A project that shares inodes (hard links) with others is served only while the kept projects
//! hold every link of each, all fresh and none written since its walk began (`links.rs`); one
//! sharing an inode with anything outside the kept projects, walked with errors or across a
//! mount, is never served.
//! With a source that reports no writes (poll) nothing is served, and once writes may have been
//! missed (the source fell back, the pending set overflowed) every entry is stale. The index only
//! saves walks: the executor re-checks every target on disk right before deleting it. Bounded:
//! [`MAX_PROJECTS`] entries, [`MAX_MATCHES`] matches per project and [`MAX_TOTAL_MATCHES`] in all,
//! [`MAX_PENDING`] written paths between two syncs.

use super::links::{Held, Links, Verdict};
use super::ProjectSurvey;
use crate::config::{CompiledRule, Workspace};
use crate::fsys::{self, EntryStat};
use crate::scan::{RuleMatch, Usage};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most projects the index keeps.
pub const MAX_PROJECTS: usize = 100_000;
/// A project with more rule matches than this is walked at every cycle instead.
pub const MAX_MATCHES: usize = 4096;
/// Most rule matches kept over all projects.
pub const MAX_TOTAL_MATCHES: usize = 1_000_000;
/// Most written project paths held between two syncs; beyond, every entry counts as stale.
pub const MAX_PENDING: usize = 8192;
/// The background refresh's CPU budget: its walks take at most this share of one core.
pub const CPU_SHARE: f64 = 0.02;
/// Stale projects walked per refresh round (one listing of the workspace pays for them all).
pub const REFRESH_BATCH: usize = 64;

/// What the daemon tells the cleanup thread between cycles, shared under a lock: the projects
/// the write source saw written and whether the source reports writes at all.
#[derive(Default)]
pub struct Pending {
    inner: Mutex<PendingInner>,
}

#[derive(Default)]
struct PendingInner {
    written: HashSet<PathBuf>,
    overflow: bool,
    trusted: bool,
    /// The write source's name: any change (a fall back, a retried source) may have lost writes.
    source: String,
    /// Trust was (re)gained since the last sync: writes before it may have been missed.
    regained: bool,
}

impl Pending {
    pub fn new() -> Arc<Pending> {
        Arc::new(Pending::default())
    }

    /// Notes writes (or shrinking, or a rescan) the source saw in these projects.
    pub fn written<'a>(&self, paths: impl IntoIterator<Item = &'a Path>) {
        let Ok(mut p) = self.inner.lock() else { return };
        for path in paths {
            if p.written.len() >= MAX_PENDING {
                p.overflow = true;
                p.written.clear();
            }
            if !p.overflow && !p.written.contains(path) {
                p.written.insert(path.to_path_buf());
            }
        }
    }

    /// Which write source runs: every one but `poll` reports writes. A change of source makes
    /// every entry stale (writes around the switch may not have been seen).
    pub fn trust(&self, source: &str) {
        let Ok(mut p) = self.inner.lock() else { return };
        if p.source != source {
            p.regained = true;
            p.source = source.to_string();
        }
        p.trusted = source != "poll";
    }
}

/// The project entry's own state when it was walked: a change to it (a rename in or out of the
/// project's top, the project replaced) makes the entry stale.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct RootStamp {
    dev: u64,
    ino: u64,
    mtime: i64,
    ctime: i64,
    ctime_nsec: u32,
}

impl RootStamp {
    fn of(st: &EntryStat) -> RootStamp {
        RootStamp {
            dev: st.dev,
            ino: st.ino,
            mtime: st.mtime,
            ctime: st.ctime,
            ctime_nsec: st.ctime_nsec,
        }
    }
}

/// What a served entry keeps of its survey: the rest (its path, its entry's stat) is the
/// table's key and the lookup's own stat. Boxed: the table holds 10,000s of entries, most of
/// them small.
struct Kept {
    identity: (u64, u64),
    usage: Usage,
    freeable: Usage,
    is_dir: bool,
    protected_name: bool,
    contains_keep: bool,
    matches: Box<[RuleMatch]>,
}

impl Kept {
    fn of(survey: &ProjectSurvey) -> Kept {
        Kept {
            identity: survey.identity,
            usage: survey.usage,
            freeable: survey.freeable,
            is_dir: survey.is_dir,
            protected_name: survey.protected_name,
            contains_keep: survey.contains_keep,
            matches: survey.matches.clone().into_boxed_slice(),
        }
    }

    /// The survey of the project at `path`, whose entry is `root` now. The inodes it shares
    /// stay with the index (see [`ProjectSurvey::shared`]).
    fn survey(&self, path: &Path, root: &EntryStat) -> ProjectSurvey {
        ProjectSurvey {
            path: path.to_path_buf(),
            identity: self.identity,
            usage: self.usage,
            freeable: self.freeable,
            is_dir: self.is_dir,
            protected_name: self.protected_name,
            contains_keep: self.contains_keep,
            matches: self.matches.to_vec(),
            shared: Vec::new(),
            root: Some(*root),
            complete: true,
            cached: false,
        }
    }
}

struct Entry {
    /// `None` for a project walked but never served (see [`Index::store`]): the refresh does not
    /// walk it again until it is written.
    kept: Option<Box<Kept>>,
    root: RootStamp,
    /// The sync count when the walk that measured it began.
    walked_at: u64,
    /// The inodes it shares with others (on `root.dev`), as counted in the partner table;
    /// `None` when they could not be kept (then it is never served).
    links: Option<Box<[Held]>>,
    /// Counted as a stale holder in the partner table.
    stale: bool,
    /// The partner table's [`Verdict`] on `links` and the table's change count it was taken at
    /// (see [`Entry::verdict`]); atomic: lookups run on the walk pool.
    verdict: AtomicU64,
}

impl Entry {
    /// What the partner table says of the inodes it shares (`None` when they could not be
    /// kept): taken once per change of the table, not per lookup (at 5M entries the kept
    /// projects hold ~10^5 shared inodes, a hash lookup each).
    fn verdict(&self, links: &Links) -> Option<Verdict> {
        let held = self.links.as_deref()?;
        // Packed: (changes + 1) << 2 | servable << 1 | written_since; 0: never taken.
        let stamp = links.changes() + 1;
        let cached = self.verdict.load(Ordering::Relaxed);
        if cached >> 2 == stamp {
            return Some(Verdict {
                servable: cached & 2 != 0,
                written_since: cached & 1 != 0,
            });
        }
        let v = links.verdict(self.root.dev, held, self.walked_at);
        let packed = stamp << 2 | u64::from(v.servable) << 1 | u64::from(v.written_since);
        self.verdict.store(packed, Ordering::Relaxed);
        Some(v)
    }
}

/// The index itself, owned by the cleanup thread.
pub struct Index {
    pending: Arc<Pending>,
    /// Keyed by the project's path, boxed (no spare capacity).
    entries: HashMap<Box<Path>, Entry>,
    /// The sync count at which each project was last reported written.
    written_at: HashMap<PathBuf, u64>,
    /// Entries walked before this sync count are stale (writes may have been missed).
    stale_before: u64,
    clock: u64,
    trusted: bool,
    matches: usize,
    /// Who else holds the inodes the kept projects share.
    links: Links,
    /// Something may need a refresh (writes arrived, or the index is not known to be complete).
    dirty: bool,
    /// The refresh found the index complete since the start or the last [`clear`](Index::clear)
    /// (logged once then: `survey index warm`).
    warm: bool,
}

impl Index {
    pub fn new(pending: Arc<Pending>) -> Index {
        Index {
            pending,
            entries: HashMap::new(),
            written_at: HashMap::new(),
            stale_before: 1,
            clock: 0,
            trusted: false,
            matches: 0,
            links: Links::default(),
            dirty: true,
            warm: false,
        }
    }

    /// Takes in what the daemon reported since the last sync; returns the sync count, the
    /// ticket a walk beginning now stores its result under.
    pub fn sync(&mut self) -> u64 {
        self.clock += 1;
        let (written, overflow, trusted, regained) = match self.pending.inner.lock() {
            Ok(mut p) => (
                std::mem::take(&mut p.written),
                std::mem::take(&mut p.overflow),
                p.trusted,
                std::mem::take(&mut p.regained),
            ),
            Err(_) => (HashSet::new(), true, false, false),
        };
        self.trusted = trusted;
        if overflow || regained || !trusted {
            self.forget_writes();
        }
        if !written.is_empty() {
            self.dirty = true;
        }
        for path in written {
            if self.written_at.len() >= MAX_PROJECTS {
                self.forget_writes();
            }
            if let Some(entry) = self.entries.get_mut(path.as_path()) {
                note_written(&mut self.links, entry, self.clock);
            }
            self.written_at.insert(path, self.clock);
        }
        self.clock
    }

    /// Every entry walked before now is stale.
    fn forget_writes(&mut self) {
        self.written_at.clear();
        self.stale_before = self.clock;
        self.dirty = true;
        for entry in self.entries.values_mut() {
            note_written(&mut self.links, entry, self.clock);
        }
    }

    /// Drops every entry: what they matched was decided by rules that no longer hold (a reload).
    pub fn clear(&mut self) {
        self.entries = HashMap::new();
        self.links.clear();
        self.matches = 0;
        self.warm = false;
        self.forget_writes();
    }

    /// Whether entries may be served (the write source reports writes).
    pub fn trusted(&self) -> bool {
        self.trusted
    }

    /// How many projects the index holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the entry for `path` was measured after the last write reported into it.
    fn fresh(&self, path: &Path, entry: &Entry) -> bool {
        self.fresh_since(path, entry.walked_at)
    }

    /// Whether a walk of `path` that began at sync `walked_at` saw every write reported into it.
    fn fresh_since(&self, path: &Path, walked_at: u64) -> bool {
        walked_at >= self.stale_before && self.written_at.get(path).is_none_or(|w| *w <= walked_at)
    }

    /// Whether the background refresh should walk `path` again: its entry is stale, or a
    /// project sharing inodes with it was written since its walk.
    fn needs_walk(&self, path: &Path) -> bool {
        self.entries.get(path).is_none_or(|e| {
            !self.fresh(path, e) || e.verdict(&self.links).is_some_and(|v| v.written_since)
        })
    }

    /// The cached survey of the project at `path`, whose entry is `st` now, if it is still
    /// true of it (see the module's invariants). Stats each cached match (read-only).
    pub fn lookup(&self, path: &Path, st: &EntryStat) -> Option<ProjectSurvey> {
        if !self.trusted {
            return None;
        }
        let entry = self.entries.get(path)?;
        let kept = entry.kept.as_ref()?;
        // No verdict without kept links: a project whose shared inodes were not kept is walked.
        if !self.fresh(path, entry)
            || entry.root != RootStamp::of(st)
            || !entry.verdict(&self.links).is_some_and(|v| v.servable)
        {
            return None;
        }
        let unchanged = kept.matches.iter().all(|m| {
            m.rel_path.as_os_str().is_empty()
                || fsys::identity_of(&path.join(&m.rel_path)).is_ok_and(|id| id == m.identity)
        });
        unchanged.then(|| kept.survey(path, st))
    }

    /// The inodes the kept entry of `path` shares with other projects, in the scanner's form
    /// (what a walk of it puts in [`ProjectSurvey::shared`]).
    #[cfg(test)]
    pub fn shared_of(&self, path: &Path) -> Option<Vec<crate::scan::SharedInode>> {
        let entry = self.entries.get(path)?;
        Some(Links::expand(entry.root.dev, entry.links.as_deref()?))
    }

    /// Keeps a project walked under `ticket` (from [`sync`](Index::sync) before the walk began),
    /// unless it was taken from the index, its walk was incomplete, or a bound is reached.
    pub fn store(&mut self, ticket: u64, survey: &ProjectSurvey) {
        let Some(root) = survey.root else { return };
        if survey.cached {
            return;
        }
        self.remove(&survey.path);
        if self.entries.len() >= MAX_PROJECTS {
            return;
        }
        // What it shares with others (hard links) is served only while they are kept and fresh
        // too: a write through another link is reported in the other project.
        let links = survey
            .complete
            .then(|| Links::compact(root.dev, &survey.shared))
            .flatten()
            .filter(|held| self.links.room(held.len()));
        let servable = links.is_some()
            && survey.matches.len() <= MAX_MATCHES
            && self.matches + survey.matches.len() <= MAX_TOTAL_MATCHES;
        if servable {
            self.matches += survey.matches.len();
        }
        let stale = !self.fresh_since(&survey.path, ticket);
        if let Some(held) = &links {
            let written = self.written_at.get(&survey.path).copied();
            self.links.add(root.dev, held, stale, written);
        }
        self.entries.insert(
            survey.path.clone().into_boxed_path(),
            Entry {
                kept: servable.then(|| Box::new(Kept::of(survey))),
                root: RootStamp::of(&root),
                walked_at: ticket,
                links,
                stale,
                verdict: AtomicU64::new(0),
            },
        );
    }

    fn remove(&mut self, path: &Path) {
        if let Some(old) = self.entries.remove(path) {
            let n = old.kept.map_or(0, |k| k.matches.len());
            self.matches = self.matches.saturating_sub(n);
            if let Some(held) = &old.links {
                self.links.remove(old.root.dev, held, old.stale);
            }
        }
    }

    /// Drops the projects of `workspace` that are not in `alive` (they vanished).
    pub fn prune(&mut self, workspace: &Path, alive: &HashSet<PathBuf>) {
        let gone: Vec<PathBuf> = self
            .entries
            .keys()
            .filter(|p| p.parent() == Some(workspace) && !alive.contains(&***p))
            .map(|p| p.to_path_buf())
            .collect();
        for p in gone {
            // Its links went with it: the projects sharing inodes with it count them no more
            // and are walked again.
            if let Some(Entry {
                links: Some(held),
                root,
                ..
            }) = self.entries.get(p.as_path())
            {
                if !held.is_empty() {
                    self.links.written(root.dev, held, self.clock, false);
                    self.dirty = true;
                }
            }
            self.remove(&p);
        }
        self.written_at
            .retain(|p, _| p.parent() != Some(workspace) || alive.contains(p));
    }

    /// Background refresh: walks the first [`REFRESH_BATCH`] projects of a workspace that have
    /// no fresh entry and keeps them. Returns the CPU time the listing and the walks took (to
    /// pace the next round), or `None` when nothing needed a walk (then nothing is listed again
    /// until a write is reported).
    pub fn refresh_one(
        &mut self,
        workspaces: &[Workspace],
        rules: &[CompiledRule],
    ) -> Option<Duration> {
        let ticket = self.sync();
        if !self.trusted || !self.dirty {
            return None;
        }
        // The listing is paid from the budget too: with 10,000 projects it costs more than the
        // walk of one small project, so each round walks a batch of stale ones.
        let began = cpu_time();
        for ws in workspaces {
            let Ok(listed) = std::fs::read_dir(&ws.path) else {
                continue;
            };
            let alive: HashSet<PathBuf> = listed.flatten().map(|e| e.path()).collect();
            // Pruned first: a vanished project's partners need a new walk.
            self.prune(&ws.path, &alive);
            let todo: Vec<_> = alive
                .iter()
                .filter(|p| self.needs_walk(p))
                .take(REFRESH_BATCH)
                .filter_map(|p| p.file_name())
                .collect();
            if !todo.is_empty() {
                for name in todo {
                    if let Some(survey) = super::survey_one(ws, rules, name) {
                        self.store(ticket, &survey);
                    }
                }
                return Some(cpu_time().saturating_sub(began));
            }
        }
        self.dirty = false;
        if !self.warm {
            // Once per start and reload, not per refresh: `cargo xtask bench --only scale`
            // waits for it before a crossing.
            self.warm = true;
            tracing::info!(
                projects = self.entries.len(),
                matches = self.matches,
                shared_inodes = self.links.len(),
                "survey index warm"
            );
        }
        None
    }
}

/// A kept project was reported written at sync `at` (or may have missed writes): the partner
/// table learns it for its shared inodes, and it counts as a stale holder until walked again.
fn note_written(links: &mut Links, entry: &mut Entry, at: u64) {
    if let Some(held) = &entry.links {
        links.written(entry.root.dev, held, at, !entry.stale);
        entry.stale = true;
    }
}

/// The process's CPU time (user + system, all threads: the walk runs on the walk pool's).
/// Counting other threads' time too only slows the refresh down.
pub fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(u64::try_from(ts.tv_sec).unwrap_or(0))
        + Duration::from_nanos(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// How long the refresh waits after a walk that took `cpu` so that its walks stay within
/// [`CPU_SHARE`] of a core.
pub fn pause_after(cpu: Duration) -> Duration {
    cpu.div_f64(CPU_SHARE)
        .clamp(Duration::from_millis(20), Duration::from_secs(60))
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
