//! The aggregator: turns source samples into per-project state — a stable id per project dir,
//! smoothed write rates, and the cgroups writing most into each project. Pure: the caller passes
//! samples and elapsed time; nothing here reads the disk or the clock.
//!
//! Ids are recycled: a project that vanishes frees its id and the next new project gets the
//! smallest free one, so ids stay below the number of projects that exist at once (the eBPF
//! probe counts into a fixed-size table; its source keeps the kernel side apart from the ids).
//! Per sample the work is bounded by the projects that are writing or still cooling down, not by
//! every project known.

use crate::sources::{CgroupBytes, ProjectDir, Sample};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Weight of the newest sample in the smoothed rates (per sample interval).
const RATE_ALPHA: f64 = 0.3;
/// Cgroups listed per project.
const TOP_CGROUPS: usize = 3;
/// A smoothed rate below this (bytes per second) with nothing written is zero: the project stops
/// being updated each sample.
const REST_BPS: f64 = 0.5;
/// Per-cgroup rates below this (bytes per second) are forgotten.
const CGROUP_REST_BPS: f64 = 1.0;

/// Write activity of one project as the daemon reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectActivity {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    /// Smoothed growth, bytes per second (negative when the project shrinks): bytes written
    /// with the eBPF source, the change of sizes with the others.
    pub rate_bps: f64,
    /// Smoothed net growth, bytes per second: growth less what others deleted or truncated
    /// (`Sample::net`). Equal to `rate_bps` with sources whose growth is already a change of
    /// sizes; near zero for a project that deletes what it writes.
    #[serde(default)]
    pub net_bps: f64,
    /// Growth seen since the daemon started (bytes).
    pub total_bytes: i64,
    /// Bytes others freed since the daemon started (eBPF; 0 with the other sources, whose
    /// growth already shrinks with deletions).
    #[serde(default)]
    pub freed_bytes: u64,
    /// The cgroups writing most into the project: (cgroup id, smoothed bytes per second).
    pub top_cgroups: Vec<CgroupRate>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupRate {
    pub cgroup: u64,
    /// cgroup v2 path when known (e.g. `/system.slice/build.service`).
    #[serde(default, with = "crate::textpath::option")]
    pub path: Option<PathBuf>,
    pub rate_bps: f64,
}

/// Project ids, rates and per-cgroup rates.
#[derive(Debug)]
pub struct Aggregator {
    /// The ids of the known projects in path order (the resting projects a report lists come
    /// first by path); a path is found by binary search through the slots' paths. 4 bytes per
    /// project, where a map by path held a copy of the key and a node share.
    by_path: Vec<u32>,
    /// Ids freed by vanished projects, reused smallest first; all below `slots.len()`.
    free: BTreeSet<u32>,
    /// Slot `id` holds project `id` (`None`: a free id; slot 0 is never used). A table indexed
    /// by id, not a map: 48 bytes per project, no hashing, no per-entry allocation.
    slots: Vec<Option<Slot>>,
    /// Projects whose rate is not zero: the only ones a sample without their growth updates.
    moving: HashSet<u32>,
    /// Smoothed bytes per second per project and cgroup (only rates of at least
    /// [`CGROUP_REST_BPS`] are kept).
    cgroup_rates: HashMap<u32, HashMap<u64, f64>>,
}

/// One known project: its shared path and its activity so far ([`ProjectActivity`] without
/// the cgroups, which are kept apart for the few projects that write).
#[derive(Debug)]
struct Slot {
    path: Arc<Path>,
    rate_bps: f64,
    net_bps: f64,
    total_bytes: i64,
    freed_bytes: u64,
}

impl Slot {
    fn new(path: Arc<Path>) -> Slot {
        Slot {
            path,
            rate_bps: 0.0,
            net_bps: 0.0,
            total_bytes: 0,
            freed_bytes: 0,
        }
    }
}

impl Default for Aggregator {
    fn default() -> Aggregator {
        Aggregator::new()
    }
}

impl Aggregator {
    pub fn new() -> Aggregator {
        Aggregator {
            by_path: Vec::new(),
            free: BTreeSet::new(),
            slots: vec![None],
            moving: HashSet::new(),
            cgroup_rates: HashMap::new(),
        }
    }

    /// The id of a project path, assigned on first sight and kept while the project exists; a
    /// vanished project's id is given to a later one.
    pub fn id_for(&mut self, path: &Path) -> u32 {
        self.shared_id_for(path).0
    }

    /// [`id_for`](Aggregator::id_for), and the project's shared path: the one allocation of
    /// it every holder of the project list clones.
    fn shared_id_for(&mut self, path: &Path) -> (u32, Arc<Path>) {
        let at = match self.find(path) {
            Ok(at) => {
                let known = self
                    .by_path
                    .get(at)
                    .and_then(|id| Some((*id, self.slot(*id)?.path.clone())));
                if let Some(known) = known {
                    return known;
                }
                at
            }
            Err(at) => at,
        };
        let id = match self.free.pop_first() {
            Some(id) => id,
            None => {
                // Past u32::MAX projects at once (unreachable: memory runs out first) ids
                // would repeat; nothing panics.
                let id = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(None);
                id
            }
        };
        let shared: Arc<Path> = Arc::from(path);
        // At the end when projects come in path order (a listing): no shifting.
        self.by_path.insert(at, id);
        if let Some(slot) = self.slot_entry(id) {
            *slot = Some(Slot::new(shared.clone()));
        }
        (id, shared)
    }

    /// Where `path` is (`Ok`) or belongs (`Err`) in `by_path`.
    fn find(&self, path: &Path) -> Result<usize, usize> {
        self.by_path
            .binary_search_by(|id| self.path_of(*id).cmp(&Some(path)))
    }

    fn slot_entry(&mut self, id: u32) -> Option<&mut Option<Slot>> {
        self.slots.get_mut(usize::try_from(id).ok()?)
    }

    fn slot(&self, id: u32) -> Option<&Slot> {
        self.slots.get(usize::try_from(id).ok()?)?.as_ref()
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Slot> {
        self.slot_entry(id)?.as_mut()
    }

    /// Projects from (path, dev, ino) triples, with their ids. `dirs` is every project there is
    /// now: the ids of the others are freed first, so they can be given to new ones. A project
    /// already known keeps its shared path (the listing's own copy is not kept).
    pub fn project_dirs(&mut self, dirs: &[(PathBuf, u64, u64)]) -> Vec<ProjectDir> {
        let alive: HashSet<&Path> = dirs.iter().map(|d| d.0.as_path()).collect();
        self.retain_paths(&|p| alive.contains(p));
        let projects: Vec<ProjectDir> = dirs
            .iter()
            .map(|(path, dev, ino)| {
                let (id, path) = self.shared_id_for(path);
                ProjectDir {
                    id,
                    path,
                    dev: *dev,
                    ino: *ino,
                }
            })
            .collect();
        // The tables grew by doubling; a project set changes seldom.
        self.slots.shrink_to_fit();
        self.by_path.shrink_to_fit();
        projects
    }

    /// Projects known.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Folds one sample covering `seconds` into the rates. Projects absent from the sample
    /// decay toward zero.
    pub fn absorb(&mut self, sample: &Sample, seconds: f64) {
        if seconds <= 0.0 || !seconds.is_finite() {
            return;
        }
        for id in sample.projects() {
            if let Some(slot) = self.slot_mut(id) {
                let bytes = sample.growth.get(&id).copied().unwrap_or(0);
                slot.total_bytes = slot.total_bytes.saturating_add(bytes);
                let freed = sample.freed.get(&id).copied().unwrap_or(0);
                slot.freed_bytes = slot.freed_bytes.saturating_add(freed);
                self.moving.insert(id);
            }
        }
        let slots = &mut self.slots;
        self.moving.retain(|id| {
            let Some(Some(a)) = usize::try_from(*id).ok().and_then(|i| slots.get_mut(i)) else {
                return false;
            };
            let bytes = sample.growth.get(id).copied().unwrap_or(0);
            let net = sample.net(*id);
            a.rate_bps = smooth(a.rate_bps, bytes as f64 / seconds);
            a.net_bps = smooth(a.net_bps, net as f64 / seconds);
            if bytes == 0 && net == 0 && a.rate_bps.abs() < REST_BPS && a.net_bps.abs() < REST_BPS {
                a.rate_bps = 0.0;
                a.net_bps = 0.0;
                return false;
            }
            true
        });
        let mut fresh: HashMap<(u32, u64), u64> = HashMap::new();
        for CgroupBytes {
            project,
            cgroup,
            bytes,
        } in &sample.by_cgroup
        {
            if self.slot(*project).is_some() {
                let total = fresh.entry((*project, *cgroup)).or_default();
                *total = total.saturating_add(*bytes);
            }
        }
        for (project, cgroup) in fresh.keys() {
            self.cgroup_rates
                .entry(*project)
                .or_default()
                .entry(*cgroup)
                .or_insert(0.0);
        }
        self.cgroup_rates.retain(|project, rates| {
            rates.retain(|cgroup, rate| {
                let bytes = fresh.get(&(*project, *cgroup)).copied().unwrap_or(0);
                *rate = smooth(*rate, bytes as f64 / seconds);
                *rate >= CGROUP_REST_BPS
            });
            !rates.is_empty()
        });
    }

    /// Every known project's activity, busiest first; cgroup paths resolved by `name_cgroup`.
    pub fn report(
        &self,
        name_cgroup: &mut dyn FnMut(u64) -> Option<PathBuf>,
    ) -> Vec<ProjectActivity> {
        self.report_top(usize::MAX, name_cgroup)
    }

    /// The path of the project with id `id`.
    pub fn path_of(&self, id: u32) -> Option<&Path> {
        self.slot(id).map(|s| &*s.path)
    }

    /// The `limit` busiest projects' activity, busiest first (by rate, then path); only their
    /// entries are copied. The work is bounded by the moving projects and `limit`, not by the
    /// projects known: resting ones (rate zero) are taken in path order.
    pub fn report_top(
        &self,
        limit: usize,
        name_cgroup: &mut dyn FnMut(u64) -> Option<PathBuf>,
    ) -> Vec<ProjectActivity> {
        self.top(limit)
            .into_iter()
            .map(|(id, a)| self.with_cgroups(id, a, name_cgroup))
            .collect()
    }

    /// [`report_top`](Aggregator::report_top), and the number and summed rate of the projects
    /// it leaves out.
    pub fn report_summary(
        &self,
        limit: usize,
        name_cgroup: &mut dyn FnMut(u64) -> Option<PathBuf>,
    ) -> (Vec<ProjectActivity>, usize, f64) {
        let listed = self.report_top(limit, name_cgroup);
        let omitted = self.len().saturating_sub(listed.len());
        let moving: f64 = self
            .moving
            .iter()
            .filter_map(|id| self.slot(*id))
            .map(|a| a.rate_bps)
            .sum();
        let shown: f64 = listed.iter().map(|a| a.rate_bps).sum();
        let rest = if omitted == 0 { 0.0 } else { moving - shown };
        (listed, omitted, rest)
    }

    /// The `limit` first projects by rate (descending), then path: the moving ones sorted, the
    /// resting ones (rate zero) in path order where they belong.
    fn top(&self, limit: usize) -> Vec<(u32, &Slot)> {
        let order = |x: &(u32, &Slot), y: &(u32, &Slot)| {
            y.1.rate_bps
                .total_cmp(&x.1.rate_bps)
                .then(x.1.path.cmp(&y.1.path))
        };
        let mut chosen: Vec<(u32, &Slot)> = self
            .moving
            .iter()
            .filter_map(|id| Some((*id, self.slot(*id)?)))
            .collect();
        // Resting projects have a rate of exactly zero: the first `limit` of them by path are
        // the only ones that can make the list.
        chosen.extend(
            self.by_path
                .iter()
                .filter(|id| !self.moving.contains(id))
                .filter_map(|id| Some((*id, self.slot(*id)?)))
                .take(limit),
        );
        if limit < chosen.len() {
            chosen.select_nth_unstable_by(limit, order);
            chosen.truncate(limit);
        }
        chosen.sort_by(order);
        chosen
    }

    fn with_cgroups(
        &self,
        id: u32,
        a: &Slot,
        name_cgroup: &mut dyn FnMut(u64) -> Option<PathBuf>,
    ) -> ProjectActivity {
        let mut top: Vec<CgroupRate> = self
            .cgroup_rates
            .get(&id)
            .map(|rates| {
                rates
                    .iter()
                    .map(|(cgroup, rate)| CgroupRate {
                        cgroup: *cgroup,
                        path: None,
                        rate_bps: *rate,
                    })
                    .collect()
            })
            .unwrap_or_default();
        top.sort_by(|x, y| {
            y.rate_bps
                .total_cmp(&x.rate_bps)
                .then(x.cgroup.cmp(&y.cgroup))
        });
        top.truncate(TOP_CGROUPS);
        for c in &mut top {
            c.path = name_cgroup(c.cgroup);
        }
        ProjectActivity {
            path: a.path.to_path_buf(),
            rate_bps: a.rate_bps,
            net_bps: a.net_bps,
            total_bytes: a.total_bytes,
            freed_bytes: a.freed_bytes,
            top_cgroups: top,
        }
    }

    /// Forgets projects that no longer exist; their ids become free. Free ids at the end of
    /// the table are dropped with their slots: the table is as long as the highest id in use.
    pub fn retain_paths(&mut self, alive: &dyn Fn(&Path) -> bool) {
        let mut gone = Vec::new();
        let slots = &self.slots;
        self.by_path.retain(|id| {
            let path = usize::try_from(*id)
                .ok()
                .and_then(|i| slots.get(i)?.as_ref())
                .map(|s| &*s.path);
            let keep = path.is_some_and(alive);
            if !keep {
                gone.push(*id);
            }
            keep
        });
        for id in gone {
            if let Some(slot) = self.slot_entry(id) {
                *slot = None;
            }
            self.moving.remove(&id);
            self.cgroup_rates.remove(&id);
            self.free.insert(id);
        }
        while self.slots.len() > 1 && matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        if let Ok(len) = u32::try_from(self.slots.len()) {
            self.free.split_off(&len);
        }
    }
}

fn smooth(previous: f64, current: f64) -> f64 {
    RATE_ALPHA * current + (1.0 - RATE_ALPHA) * previous
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(growth: &[(u32, i64)], cgroups: &[(u32, u64, u64)]) -> Sample {
        Sample {
            growth: growth.iter().copied().collect(),
            by_cgroup: cgroups
                .iter()
                .map(|&(project, cgroup, bytes)| CgroupBytes {
                    project,
                    cgroup,
                    bytes,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn ids_are_stable_while_a_project_exists_and_recycled_after() {
        let mut agg = Aggregator::new();
        let a = agg.id_for(Path::new("/w/a"));
        let b = agg.id_for(Path::new("/w/b"));
        assert_eq!(agg.id_for(Path::new("/w/a")), a);
        assert_ne!(a, b);
        agg.absorb(&sample(&[(a, 1000)], &[(a, 7, 1000)]), 1.0);
        agg.retain_paths(&|p| p != Path::new("/w/a"));
        let c = agg.id_for(Path::new("/w/c"));
        assert_eq!(c, a, "the freed id is given to the next new project");
        let report = agg.report(&mut |_| None);
        let c_report = report.iter().find(|p| p.path == Path::new("/w/c")).unwrap();
        assert_eq!(c_report.total_bytes, 0, "nothing of /w/a carries over");
        assert!(c_report.top_cgroups.is_empty());
    }

    /// 10 rounds of 1,000 project dirs created and removed: ids stay below what exists at once
    /// (they used to climb past the probe's 8,192 slots).
    #[test]
    fn ten_rounds_of_a_thousand_projects_keep_ids_small() {
        let mut agg = Aggregator::new();
        let mut highest = 0;
        for round in 0..10 {
            let dirs: Vec<(PathBuf, u64, u64)> = (0..1000)
                .map(|i| (PathBuf::from(format!("/w/r{round}-{i}")), 1, i))
                .collect();
            highest = highest.max(agg.project_dirs(&dirs).iter().map(|p| p.id).max().unwrap());
        }
        let last = agg.project_dirs(&[(PathBuf::from("/w/new"), 1, 1)]);
        assert!(highest <= 1000, "{highest}");
        assert_eq!(last[0].id, 1);
        assert_eq!(agg.len(), 1);
    }

    /// Issue 16 (memory at 10,000 projects): a project's path is allocated once, when it is
    /// first listed; every later listing hands out that same allocation (the watched set, the
    /// source, the forecasts clone a pointer), and the listing's own copy is not kept.
    #[test]
    fn every_listing_hands_out_the_one_shared_path_of_a_project() {
        let mut agg = Aggregator::new();
        let dirs: Vec<(PathBuf, u64, u64)> = (0..100)
            .map(|i| (PathBuf::from(format!("/w/p{i:03}")), 1, i))
            .collect();
        let first = agg.project_dirs(&dirs);
        let again = agg.project_dirs(&dirs.clone());
        for (a, b) in first.iter().zip(&again) {
            assert!(Arc::ptr_eq(&a.path, &b.path), "{}", a.path.display());
            assert_eq!(a.id, b.id);
            assert!(std::ptr::eq(agg.path_of(a.id).unwrap(), &*a.path));
        }
        // The aggregator's slot, `first` and `again`: nothing else holds it.
        assert_eq!(Arc::strong_count(&first[7].path), 3);
        drop(again);
        agg.retain_paths(&|p| p != Path::new("/w/p007"));
        assert_eq!(
            Arc::strong_count(&first[7].path),
            1,
            "a vanished project lets go of it"
        );
    }

    /// The id table is as long as the highest id in use: after 10,000 projects come and go it
    /// shrinks back, and its free list holds no id past its end.
    #[test]
    fn the_id_table_shrinks_when_the_projects_with_the_highest_ids_vanish() {
        let mut agg = Aggregator::new();
        let many: Vec<(PathBuf, u64, u64)> = (0..10_000)
            .map(|i| (PathBuf::from(format!("/w/p{i:05}")), 1, i))
            .collect();
        agg.project_dirs(&many);
        assert_eq!(agg.slots.len(), 10_001);
        let few = agg.project_dirs(&many[..3]);
        assert_eq!(few.iter().map(|p| p.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(agg.slots.len(), 4);
        assert!(agg.slots.capacity() < 100, "{}", agg.slots.capacity());
        assert!(agg.free.is_empty(), "{:?}", agg.free.len());
        // A hole in the middle stays free and is given out first.
        agg.retain_paths(&|p| p != Path::new("/w/p00001"));
        assert_eq!(agg.slots.len(), 4);
        assert_eq!(agg.id_for(Path::new("/w/new")), 2);
        assert_eq!(agg.id_for(Path::new("/w/newer")), 4);
        assert_eq!(agg.len(), 4);
    }

    /// Per-cgroup rates are a cache that grows with the writers seen: once a cgroup stops
    /// writing its entry goes, so 1,000 short-lived writers leave nothing behind.
    #[test]
    fn cgroups_that_stop_writing_are_forgotten() {
        let mut agg = Aggregator::new();
        let a = agg.id_for(Path::new("/w/a"));
        for cgroup in 0..1000u64 {
            agg.absorb(&sample(&[(a, 1 << 20)], &[(a, cgroup, 1 << 20)]), 0.25);
        }
        assert!(agg.cgroup_rates[&a].len() > 10);
        for _ in 0..200 {
            agg.absorb(&Sample::default(), 0.25);
        }
        assert!(agg.cgroup_rates.is_empty(), "{:?}", agg.cgroup_rates.len());
        assert!(agg.moving.is_empty());
    }

    #[test]
    fn a_sample_updates_only_the_projects_that_write_or_cool_down() {
        let mut agg = Aggregator::new();
        let ids: Vec<u32> = (0..10_000)
            .map(|i| agg.id_for(Path::new(&format!("/w/p{i}"))))
            .collect();
        agg.absorb(&sample(&[(ids[5], 4096)], &[]), 0.25);
        assert_eq!(agg.moving.len(), 1);
        let report = agg.report_top(3, &mut |_| None);
        assert_eq!(report.len(), 3);
        assert_eq!(report[0].total_bytes, 4096, "the busiest first");
        for _ in 0..200 {
            agg.absorb(&Sample::default(), 0.25);
        }
        assert!(agg.moving.is_empty(), "a quiet project comes to rest");
        assert_eq!(agg.report(&mut |_| None).len(), 10_000);
    }

    /// The short list equals the full report's head, whatever mix of moving, resting and
    /// shrinking projects there is, and the summary accounts for the rest.
    #[test]
    fn the_top_of_the_report_is_the_head_of_the_full_report() {
        let mut agg = Aggregator::new();
        let ids: Vec<u32> = (0..50)
            .map(|i| agg.id_for(Path::new(&format!("/w/p{:02}", (i * 37) % 50))))
            .collect();
        let growth: Vec<(u32, i64)> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(i, id)| (*id, (i as i64 - 20) * 1000))
            .collect();
        agg.absorb(&sample(&growth, &[]), 1.0);
        let full = agg.report(&mut |_| None);
        for limit in [0, 1, 5, 17, 30, 49, 50, 80] {
            let (top, omitted, rest) = agg.report_summary(limit, &mut |_| None);
            assert_eq!(top, full[..limit.min(50)].to_vec(), "limit {limit}");
            assert_eq!(omitted, 50 - limit.min(50));
            let expected: f64 = full[limit.min(50)..].iter().map(|a| a.rate_bps).sum();
            assert!((rest - expected).abs() < 1e-6, "{rest} vs {expected}");
        }
    }

    #[test]
    fn steady_writes_converge_to_the_rate_and_rank_projects() {
        let mut agg = Aggregator::new();
        let a = agg.id_for(Path::new("/w/a"));
        let b = agg.id_for(Path::new("/w/b"));
        for _ in 0..40 {
            // 1 MiB per 0.25 s into a (4 MiB/s) from cgroup 7; 100 KiB into b.
            agg.absorb(
                &sample(
                    &[(a, 1 << 20), (b, 100 << 10)],
                    &[(a, 7, 1 << 20), (a, 9, 1000)],
                ),
                0.25,
            );
        }
        let report = agg.report(&mut |id| (id == 7).then(|| PathBuf::from("/build.slice")));
        assert_eq!(report[0].path, PathBuf::from("/w/a"));
        assert!(
            (report[0].rate_bps - 4.0 * (1 << 20) as f64).abs() < 1000.0,
            "{}",
            report[0].rate_bps
        );
        assert_eq!(report[0].top_cgroups[0].cgroup, 7);
        assert_eq!(
            report[0].top_cgroups[0].path.as_deref(),
            Some(Path::new("/build.slice"))
        );
        assert_eq!(report[0].total_bytes, 40 << 20);
        // Silence decays the rate.
        for _ in 0..40 {
            agg.absorb(&Sample::default(), 0.25);
        }
        assert!(agg.report(&mut |_| None)[0].rate_bps < 1000.0);
    }

    /// A project that deletes what it writes: its write rate stays, its net rate is near zero;
    /// a sample with only frees still updates it (and a quiet one comes to rest).
    #[test]
    fn frees_by_others_make_the_net_rate_not_the_write_rate() {
        let mut agg = Aggregator::new();
        let churn = agg.id_for(Path::new("/w/churn"));
        let grower = agg.id_for(Path::new("/w/grower"));
        for tick in 0..80 {
            // churn: 4 MiB written per 0.25 s, and every other tick the last 8 MiB deleted.
            let mut s = sample(&[(churn, 4 << 20), (grower, 1 << 20)], &[]);
            if tick % 2 == 1 {
                s.freed.insert(churn, 8 << 20);
            }
            agg.absorb(&s, 0.25);
        }
        let report = agg.report(&mut |_| None);
        let churn_a = report.iter().find(|a| a.path.ends_with("churn")).unwrap();
        let grower_a = report.iter().find(|a| a.path.ends_with("grower")).unwrap();
        assert!(churn_a.rate_bps > 15e6, "{churn_a:?}");
        assert!(
            churn_a.net_bps.abs() < 0.25 * churn_a.rate_bps,
            "{churn_a:?}"
        );
        assert!((grower_a.net_bps - grower_a.rate_bps).abs() < 1.0);
        assert_eq!(churn_a.total_bytes, 80 * (4 << 20));
        assert_eq!(churn_a.freed_bytes, 40 * (8 << 20));
        let only_freed = Sample {
            freed: [(churn, 1 << 20)].into_iter().collect(),
            ..Default::default()
        };
        let before = agg.report(&mut |_| None);
        agg.absorb(&only_freed, 0.25);
        let after = agg.report(&mut |_| None);
        let net = |r: &[ProjectActivity]| {
            r.iter()
                .find(|a| a.path.ends_with("churn"))
                .unwrap()
                .net_bps
        };
        assert!(
            net(&after) < net(&before),
            "a sample of frees alone moves the net rate"
        );
        for _ in 0..400 {
            agg.absorb(&Sample::default(), 0.25);
        }
        assert!(agg.moving.is_empty());
    }
}
