//! Reading the probe's counters on each drain, with a cost bounded by what changed: the per-CPU
//! `MOVED` log says which project counters the probe touched, so only those are read (every
//! counter is read again whenever a CPU's log overflowed, and at most every [`FULL_SWEEP`] while
//! the log moved since the last such read — an idle probe costs nothing that grows with the
//! projects, see [`sweep_due`]); the write
//! slots are one read; the per-(cgroup, project) map is pruned of vanished projects' entries and
//! of entries idle for [`PRUNE_IDLE`], so it neither fills nor costs more each drain. What the
//! probe could not store (a full per-cgroup map) becomes a problem, not a silent loss. Bytes
//! freed by others (`ProjectStats::freed`, counted straight into `STATS`, logged in `MOVED`
//! like the writes) are reported apart as `Sample::freed`. Also applies index changes
//! (`index.rs`) to the kernel maps.

use super::index::Changes;
use super::{failed, map_mut, user_dev_to_kernel, EbpfSource};
use crate::sources::{CgroupBytes, Sample, SourceError};
use aya::maps::{Array, HashMap as BpfHashMap, MapError, PerCpuArray, PerCpuHashMap};
use guardian_common::{
    CgroupKey, InodeKey, MovedLog, ProbeCounters, ProjectStats, WriteCache, MAX_PROJECTS,
    MOVED_RING,
};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Every project counter is read at least this often while the probe moved bytes (a safety net
/// under the `MOVED` log).
const FULL_SWEEP: Duration = Duration::from_secs(30);
/// A per-cgroup entry that did not change for this long is removed from the kernel map.
const PRUNE_IDLE: Duration = Duration::from_secs(300);
/// A full per-cgroup map is reported this long after its last failed insert.
const REPORT_LOSS_FOR: Duration = Duration::from_secs(600);

/// One (cgroup, project index) as last read.
struct CgroupSeen {
    /// The kernel map entry's total (all CPUs) as last read.
    map: u64,
    /// Highest total (map + bytes still in write slots) reported.
    reported: u64,
    changed: Instant,
}

/// What was read and reported (see the module doc).
pub(super) struct Counts {
    /// `STATS` per index (all CPUs) as last read.
    stats: Vec<u64>,
    /// Highest total (stats + bytes still in write slots) reported per index.
    reported: Vec<u64>,
    /// `STATS[index].freed` (all CPUs) as last read, and the highest reported.
    freed: Vec<u64>,
    freed_reported: Vec<u64>,
    /// Each CPU's `MovedLog::count` as last read.
    moved_seen: Vec<u64>,
    /// When every counter was last read, and each CPU's `MovedLog::count` then.
    last_sweep: Option<(Instant, Vec<u64>)>,
    cgroups: HashMap<(u64, u32), CgroupSeen>,
    /// `COUNTERS` summed over CPUs as last read.
    counters: ProbeCounters,
    last_cgroup_loss: Option<Instant>,
    /// Projects whose registration failed, with why.
    refused: Vec<String>,
}

impl Counts {
    pub(super) fn new() -> Counts {
        Counts {
            stats: Vec::new(),
            reported: Vec::new(),
            freed: Vec::new(),
            freed_reported: Vec::new(),
            moved_seen: Vec::new(),
            last_sweep: None,
            cgroups: HashMap::new(),
            counters: ProbeCounters::default(),
            last_cgroup_loss: None,
            refused: Vec::new(),
        }
    }
}

/// `list[index]`, the list grown to cover it: the per-index lists grow with the indices handed
/// out (the index table's), not with the probe's capacity. `None` beyond the capacity.
fn at(list: &mut Vec<u64>, index: u32) -> Option<&mut u64> {
    if index >= MAX_PROJECTS {
        return None;
    }
    let i = usize::try_from(index).ok()?;
    if i >= list.len() {
        list.resize(i + 1, 0);
    }
    list.get_mut(i)
}

/// One project index's counters summed over CPUs.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    /// Written, copied in and allocated.
    added: u64,
    /// Freed by others.
    freed: u64,
}

/// Which project counters to read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Touched {
    All,
    Some(HashSet<u32>),
}

/// The indices logged since the last read, per CPU: from one entry before the last count seen
/// (an entry written after its count was read is read again), or `All` when a CPU's log wrapped.
pub(super) fn touched(logs: &[MovedLog], seen: &mut Vec<u64>) -> Touched {
    if seen.len() != logs.len() {
        *seen = logs.iter().map(|l| l.count).collect();
        return Touched::All;
    }
    let mut out = HashSet::new();
    let mut all = false;
    for (log, last) in logs.iter().zip(seen.iter_mut()) {
        let from = last.saturating_sub(1);
        let new = log.count.saturating_sub(from);
        if log.count < *last || new > MOVED_RING as u64 {
            all = true;
        } else {
            for n in from..log.count {
                if let Some(id) = log.ids.get((n % MOVED_RING as u64) as usize) {
                    out.insert(*id);
                }
            }
        }
        *last = log.count;
    }
    if all {
        Touched::All
    } else {
        Touched::Some(out)
    }
}

/// Whether every counter should be read now: first, then every [`FULL_SWEEP`] — but only when
/// some CPU's log moved since the last full read. A counter changes only after its index was
/// logged (a move to the index logged last is not logged again, and that entry is read at every
/// drain): a log that did not move since a full read means no counter moved that the drains do
/// not read, so the sweep would find nothing. An idle node reads no counter but the last ones.
pub(super) fn sweep_due(
    last: Option<&(Instant, Vec<u64>)>,
    logs: &[MovedLog],
    now: Instant,
) -> bool {
    let Some((at, counts)) = last else {
        return true;
    };
    let moved = counts.len() != logs.len() || logs.iter().zip(counts).any(|(l, c)| l.count != *c);
    moved && now.saturating_duration_since(*at) >= FULL_SWEEP
}

fn map_err(what: &'static str) -> impl Fn(MapError) -> SourceError {
    move |e| failed(format!("{what}: {e}"))
}

impl EbpfSource {
    /// Applies index changes, in an order that never lets a vanished project's bytes reach its
    /// index's next owner: freed projects are unregistered and a new epoch makes every cached
    /// resolution stale before their index generation is bumped; assigned indices get their new
    /// generation before their project is registered, and their counters' current totals as
    /// baseline; a last epoch makes files in the new projects resolve again.
    pub(super) fn apply(&mut self, changes: Changes) -> Result<(), SourceError> {
        let mut refused = Vec::new();
        if !changes.freed.is_empty() {
            let mut projects: BpfHashMap<_, InodeKey, u32> =
                BpfHashMap::try_from(map_mut(&mut self.ebpf, "PROJECTS")?)
                    .map_err(map_err("map PROJECTS"))?;
            for (_, dir, _) in &changes.freed {
                let _ = projects.remove(&InodeKey::new(user_dev_to_kernel(dir.dev), dir.ino));
            }
            self.new_epoch()?;
        }
        self.set_gens(
            changes
                .freed
                .iter()
                .map(|(i, _, g)| (*i, *g))
                .chain(changes.assigned.iter().map(|(i, _, g)| (*i, *g))),
        )?;
        {
            let mut projects: BpfHashMap<_, InodeKey, u32> =
                BpfHashMap::try_from(map_mut(&mut self.ebpf, "PROJECTS")?)
                    .map_err(map_err("map PROJECTS"))?;
            for (index, dir, _) in &changes.assigned {
                let key = InodeKey::new(user_dev_to_kernel(dir.dev), dir.ino);
                if let Err(e) = projects.insert(key, *index, 0) {
                    refused.push((
                        dir.clone(),
                        format!(
                            "ebpf: cannot register project {}: {e}",
                            crate::textpath::shown(&dir.path)
                        ),
                    ));
                }
            }
        }
        let unassigned: Vec<(u32, u32)> = refused
            .iter()
            .filter_map(|(dir, _)| self.index.unassign(dir).map(|(i, _, g)| (i, g)))
            .collect();
        self.set_gens(unassigned.into_iter())?;
        let freed: HashSet<u32> = changes.freed.iter().map(|(i, _, _)| *i).collect();
        if !freed.is_empty() {
            self.counts
                .cgroups
                .retain(|(_, index), _| !freed.contains(index));
            self.prune_cgroup_keys(|key| freed.contains(&key.project))?;
        }
        let assigned: Vec<u32> = changes.assigned.iter().map(|(i, _, _)| *i).collect();
        for (index, total) in self.read_stats_of(&assigned)? {
            let counts = &mut self.counts;
            for (list, value) in [
                (&mut counts.stats, total.added),
                (&mut counts.reported, total.added),
                (&mut counts.freed, total.freed),
                (&mut counts.freed_reported, total.freed),
            ] {
                if let Some(slot) = at(list, index) {
                    *slot = value;
                }
            }
        }
        self.counts.refused = refused.into_iter().map(|(_, why)| why).collect();
        self.new_epoch()
    }

    fn set_gens(&mut self, gens: impl Iterator<Item = (u32, u32)>) -> Result<(), SourceError> {
        let mut map: Array<_, u32> =
            Array::try_from(map_mut(&mut self.ebpf, "GENS")?).map_err(map_err("map GENS"))?;
        for (index, gen) in gens {
            map.set(index, gen, 0).map_err(map_err("writing GENS"))?;
        }
        Ok(())
    }

    /// `STATS[index]` summed over CPUs, for each of `indices`.
    /// Every CPU's write cache (the `SLOTS` value), in CPU order.
    pub(super) fn write_caches(&self) -> Result<Vec<WriteCache>, SourceError> {
        let slots: PerCpuArray<_, WriteCache> =
            PerCpuArray::try_from(self.map("SLOTS")?).map_err(map_err("map SLOTS"))?;
        Ok(slots
            .get(&0, 0)
            .map_err(map_err("reading SLOTS"))?
            .iter()
            .copied()
            .collect())
    }

    fn read_stats_of(&self, indices: &[u32]) -> Result<Vec<(u32, Totals)>, SourceError> {
        let stats: PerCpuArray<_, ProjectStats> =
            PerCpuArray::try_from(self.map("STATS")?).map_err(map_err("map STATS"))?;
        indices
            .iter()
            .map(|index| {
                let per_cpu = stats.get(index, 0).map_err(map_err("reading STATS"))?;
                let total = per_cpu.iter().fold(Totals::default(), |a, s| Totals {
                    added: a
                        .added
                        .saturating_add(s.written)
                        .saturating_add(s.copied)
                        .saturating_add(s.allocated),
                    freed: a.freed.saturating_add(s.freed),
                });
                Ok((*index, total))
            })
            .collect()
    }

    /// Removes the per-cgroup entries whose key `doomed` picks.
    fn prune_cgroup_keys(
        &mut self,
        doomed: impl Fn(&CgroupKey) -> bool,
    ) -> Result<(), SourceError> {
        let mut map: PerCpuHashMap<_, CgroupKey, u64> =
            PerCpuHashMap::try_from(map_mut(&mut self.ebpf, "CGROUP_BYTES")?)
                .map_err(map_err("map CGROUP_BYTES"))?;
        let keys: Vec<CgroupKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| doomed(k))
            .collect();
        for key in keys {
            let _ = map.remove(&key);
        }
        Ok(())
    }

    /// Reads what changed since the last drain. The maps the probe moves bytes into are read
    /// before the write slots, so a racing move out of a slot can only delay bytes to the next
    /// read, never count them twice; totals only ever rise (the highest seen is kept).
    pub(super) fn read_counts(&mut self) -> Result<Sample, SourceError> {
        let now = Instant::now();
        // 1. Which project counters changed.
        let logs: Vec<MovedLog> = {
            let moved: PerCpuArray<_, MovedLog> =
                PerCpuArray::try_from(self.map("MOVED")?).map_err(map_err("map MOVED"))?;
            moved
                .get(&0, 0)
                .map_err(map_err("reading MOVED"))?
                .iter()
                .copied()
                .collect()
        };
        let mut touched = touched(&logs, &mut self.counts.moved_seen);
        if sweep_due(self.counts.last_sweep.as_ref(), &logs, now) {
            touched = Touched::All;
        }
        let indices: Vec<u32> = match touched {
            Touched::All => {
                self.counts.last_sweep = Some((now, logs.iter().map(|l| l.count).collect()));
                self.index.indices().collect()
            }
            Touched::Some(set) => set
                .into_iter()
                .filter(|i| self.index.owner(*i).is_some())
                .collect(),
        };
        for (index, total) in self.read_stats_of(&indices)? {
            if let Some(slot) = at(&mut self.counts.stats, index) {
                *slot = (*slot).max(total.added);
            }
            if let Some(slot) = at(&mut self.counts.freed, index) {
                *slot = (*slot).max(total.freed);
            }
        }
        // 2. The per-(cgroup, project) map: entries of indices no project has are removed.
        let mut cgroup_map: HashMap<(u64, u32), u64> = HashMap::new();
        let mut stale = Vec::new();
        {
            let map: PerCpuHashMap<_, CgroupKey, u64> =
                PerCpuHashMap::try_from(self.map("CGROUP_BYTES")?)
                    .map_err(map_err("map CGROUP_BYTES"))?;
            for entry in map.iter() {
                let (key, values) = entry.map_err(map_err("reading CGROUP_BYTES"))?;
                if self.index.owner(key.project).is_none() {
                    stale.push(key);
                    continue;
                }
                let total: u64 = values.iter().fold(0u64, |a, v| a.saturating_add(*v));
                cgroup_map.insert((key.cgroup, key.project), total);
            }
        }
        // 3. Bytes still in the write slots (of current index generations only).
        let caches = self.write_caches()?;
        let mut in_slots: HashMap<u32, u64> = HashMap::new();
        let mut cgroup_slots: HashMap<(u64, u32), u64> = HashMap::new();
        for cache in &caches {
            for (slot, &cgroup) in cache.slots.iter().zip(&cache.cgroups) {
                let bytes = slot
                    .written
                    .saturating_add(slot.copied)
                    .saturating_add(slot.allocated);
                let project = u32::from(slot.project);
                if project == 0
                    || bytes == 0
                    || self.index.owner(project).is_none()
                    || slot.owner_gen != self.index.gen(project)
                {
                    continue;
                }
                *in_slots.entry(project).or_default() += bytes;
                *cgroup_slots.entry((cgroup, project)).or_default() += bytes;
            }
        }
        // 4. Growth: per index above the highest total reported.
        let mut sample = Sample::default();
        let mut candidates: HashSet<u32> = indices.into_iter().collect();
        candidates.extend(in_slots.keys().copied());
        for index in candidates {
            let Some(id) = self.index.owner(index) else {
                continue;
            };
            let (Some(stats), Some(reported)) = (
                self.counts.stats.get(index as usize).copied(),
                self.counts.reported.get_mut(index as usize),
            ) else {
                continue;
            };
            let total = stats.saturating_add(in_slots.get(&index).copied().unwrap_or(0));
            if total > *reported {
                let bytes = total - *reported;
                *reported = total;
                sample
                    .growth
                    .insert(id, i64::try_from(bytes).unwrap_or(i64::MAX));
            }
            let (Some(freed), Some(reported)) = (
                self.counts.freed.get(index as usize).copied(),
                self.counts.freed_reported.get_mut(index as usize),
            ) else {
                continue;
            };
            if freed > *reported {
                sample.freed.insert(id, freed - *reported);
                *reported = freed;
            }
        }
        let mut keys: HashSet<(u64, u32)> = cgroup_map.keys().copied().collect();
        keys.extend(cgroup_slots.keys().copied());
        let mut idle = Vec::new();
        for key in keys {
            let Some(project) = self.index.owner(key.1) else {
                continue;
            };
            let map = cgroup_map.get(&key).copied().unwrap_or(0);
            let slots = cgroup_slots.get(&key).copied().unwrap_or(0);
            let seen = self.counts.cgroups.entry(key).or_insert(CgroupSeen {
                map: 0,
                reported: 0,
                changed: now,
            });
            seen.map = seen.map.max(map);
            let total = map.saturating_add(slots);
            if total > seen.reported {
                sample.by_cgroup.push(CgroupBytes {
                    project,
                    cgroup: key.0,
                    bytes: total - seen.reported,
                });
                seen.reported = total;
                seen.changed = now;
            } else if slots == 0
                && cgroup_map.contains_key(&key)
                && now.saturating_duration_since(seen.changed) >= PRUNE_IDLE
            {
                idle.push(key);
            }
        }
        // 5. Pruning: idle entries go (their bytes were reported; a write racing the removal
        // loses its cgroup attribution, never its project total).
        for key in &idle {
            self.counts.cgroups.remove(key);
        }
        let idle: HashSet<(u64, u32)> = idle.into_iter().collect();
        if !idle.is_empty() || !stale.is_empty() {
            let stale: HashSet<(u64, u32)> = stale.iter().map(|k| (k.cgroup, k.project)).collect();
            self.prune_cgroup_keys(|k| {
                idle.contains(&(k.cgroup, k.project)) || stale.contains(&(k.cgroup, k.project))
            })?;
        }
        self.counts
            .cgroups
            .retain(|(_, index), _| self.index.owner(*index).is_some());
        // 6. What the probe could not store.
        let counters: ProbeCounters = {
            let map: PerCpuArray<_, ProbeCounters> =
                PerCpuArray::try_from(self.map("COUNTERS")?).map_err(map_err("map COUNTERS"))?;
            map.get(&0, 0)
                .map_err(map_err("reading COUNTERS"))?
                .iter()
                .fold(ProbeCounters::default(), |a, c| ProbeCounters {
                    cgroup_insert_failures: a
                        .cgroup_insert_failures
                        .saturating_add(c.cgroup_insert_failures),
                    cgroup_bytes_lost: a.cgroup_bytes_lost.saturating_add(c.cgroup_bytes_lost),
                    stale_bytes_dropped: a
                        .stale_bytes_dropped
                        .saturating_add(c.stale_bytes_dropped),
                })
        };
        if counters.cgroup_insert_failures > self.counts.counters.cgroup_insert_failures {
            self.counts.last_cgroup_loss = Some(now);
        }
        self.counts.counters = counters;
        Ok(sample)
    }

    /// Conditions of the probe worth attention: projects beyond its table, projects it could not
    /// register, a per-cgroup map that was full.
    pub(super) fn counts_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let waiting = self.index.waiting();
        if let Some(first) = waiting.first() {
            out.push(format!(
                "ebpf: {} project(s) beyond the probe's capacity of {} are not counted (first: {})",
                waiting.len(),
                MAX_PROJECTS - 1,
                crate::textpath::shown(&first.path)
            ));
        }
        out.extend(self.counts.refused.iter().cloned());
        if self
            .counts
            .last_cgroup_loss
            .is_some_and(|t| t.elapsed() < REPORT_LOSS_FOR)
        {
            out.push(format!(
                "ebpf: the per-cgroup byte map was full: {} bytes written since start are not \
                 attributed to a cgroup ({} failed inserts; project totals are exact)",
                self.counts.counters.cgroup_bytes_lost, self.counts.counters.cgroup_insert_failures
            ));
        }
        out
    }

    /// What the probe could not store so far (tests).
    #[cfg(test)]
    pub(super) fn probe_counters(&self) -> ProbeCounters {
        self.counts.counters
    }

    /// Entries in the per-cgroup map (tests).
    #[cfg(test)]
    pub(super) fn cgroup_entries(&self) -> usize {
        self.map("CGROUP_BYTES")
            .ok()
            .and_then(|m| PerCpuHashMap::<_, CgroupKey, u64>::try_from(m).ok())
            .map(|m| m.keys().count())
            .unwrap_or(0)
    }

    /// Pretends every per-cgroup entry has been idle long enough to be pruned (tests).
    #[cfg(test)]
    pub(super) fn age_cgroup_entries(&mut self) {
        for seen in self.counts.cgroups.values_mut() {
            seen.changed = Instant::now() - PRUNE_IDLE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(count: u64, ids: &[(u64, u32)]) -> MovedLog {
        let mut l = MovedLog {
            count,
            last: 0,
            _pad: 0,
            ids: [0; MOVED_RING],
        };
        for (n, id) in ids {
            l.ids[(*n % MOVED_RING as u64) as usize] = *id;
        }
        l
    }

    #[test]
    fn touched_reads_each_cpus_new_entries_and_the_one_before() {
        let mut seen = Vec::new();
        assert_eq!(
            touched(&[log(0, &[]), log(0, &[])], &mut seen),
            Touched::All
        );
        let logs = [log(2, &[(0, 5), (1, 6)]), log(1, &[(0, 9)])];
        assert_eq!(
            touched(&logs, &mut seen),
            Touched::Some([5, 6, 9].into_iter().collect())
        );
        // Nothing new: the last entry of each CPU is read again (it may have been torn).
        assert_eq!(
            touched(&logs, &mut seen),
            Touched::Some([6, 9].into_iter().collect())
        );
        // A CPU whose log wrapped: everything.
        let wrapped = [log(2 + MOVED_RING as u64 + 1, &[]), log(1, &[(0, 9)])];
        assert_eq!(touched(&wrapped, &mut seen), Touched::All);
    }

    #[test]
    fn the_safety_sweep_runs_only_after_the_log_moved_never_while_idle() {
        let t0 = Instant::now();
        let logs = [log(4, &[]), log(7, &[])];
        assert!(
            sweep_due(None, &logs, t0),
            "the first drain reads everything"
        );
        let last = (t0, vec![4, 7]);
        // Idle: the logs did not move since the full read, however long ago it was.
        for later in [FULL_SWEEP, FULL_SWEEP * 100] {
            assert!(!sweep_due(Some(&last), &logs, t0 + later));
        }
        // One CPU logged a move: the next full read comes FULL_SWEEP after the last one.
        let moved = [log(4, &[]), log(8, &[])];
        assert!(!sweep_due(Some(&last), &moved, t0 + FULL_SWEEP / 2));
        assert!(sweep_due(Some(&last), &moved, t0 + FULL_SWEEP));
        // A CPU more (hot-plugged): everything once.
        let more = [log(4, &[]), log(7, &[]), log(0, &[])];
        assert!(sweep_due(Some(&last), &more, t0 + FULL_SWEEP));
    }
}
