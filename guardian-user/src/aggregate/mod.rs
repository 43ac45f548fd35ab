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
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

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
#[derive(Debug, Default)]
pub struct Aggregator {
    /// Ids by path, in path order (the resting projects a report lists come first by path).
    ids: BTreeMap<PathBuf, u32>,
    /// Ids freed by vanished projects, reused smallest first.
    free: BTreeSet<u32>,
    next_id: u32,
    activity: HashMap<u32, ProjectActivity>,
    /// Projects whose rate is not zero: the only ones a sample without their growth updates.
    moving: HashSet<u32>,
    /// Smoothed bytes per second per project and cgroup (only rates of at least
    /// [`CGROUP_REST_BPS`] are kept).
    cgroup_rates: HashMap<u32, HashMap<u64, f64>>,
}

impl Aggregator {
    pub fn new() -> Aggregator {
        Aggregator {
            next_id: 1,
            ..Default::default()
        }
    }

    /// The id of a project path, assigned on first sight and kept while the project exists; a
    /// vanished project's id is given to a later one.
    pub fn id_for(&mut self, path: &Path) -> u32 {
        if let Some(id) = self.ids.get(path) {
            return *id;
        }
        let id = match self.free.pop_first() {
            Some(id) => id,
            None => {
                let id = self.next_id;
                self.next_id = self.next_id.saturating_add(1);
                id
            }
        };
        self.ids.insert(path.to_path_buf(), id);
        self.activity.insert(
            id,
            ProjectActivity {
                path: path.to_path_buf(),
                ..Default::default()
            },
        );
        id
    }

    /// Projects from (path, dev, ino) triples, with their ids. `dirs` is every project there is
    /// now: the ids of the others are freed first, so they can be given to new ones.
    pub fn project_dirs(&mut self, dirs: &[(PathBuf, u64, u64)]) -> Vec<ProjectDir> {
        let alive: HashSet<&Path> = dirs.iter().map(|d| d.0.as_path()).collect();
        self.retain_paths(&|p| alive.contains(p));
        dirs.iter()
            .map(|(path, dev, ino)| ProjectDir {
                id: self.id_for(path),
                path: path.clone(),
                dev: *dev,
                ino: *ino,
            })
            .collect()
    }

    /// Projects known.
    pub fn len(&self) -> usize {
        self.activity.len()
    }

    pub fn is_empty(&self) -> bool {
        self.activity.is_empty()
    }

    /// Folds one sample covering `seconds` into the rates. Projects absent from the sample
    /// decay toward zero.
    pub fn absorb(&mut self, sample: &Sample, seconds: f64) {
        if seconds <= 0.0 || !seconds.is_finite() {
            return;
        }
        for id in sample.projects() {
            if let Some(activity) = self.activity.get_mut(&id) {
                let bytes = sample.growth.get(&id).copied().unwrap_or(0);
                activity.total_bytes = activity.total_bytes.saturating_add(bytes);
                let freed = sample.freed.get(&id).copied().unwrap_or(0);
                activity.freed_bytes = activity.freed_bytes.saturating_add(freed);
                self.moving.insert(id);
            }
        }
        let activity = &mut self.activity;
        self.moving.retain(|id| {
            let Some(a) = activity.get_mut(id) else {
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
            if self.activity.contains_key(project) {
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
        self.activity.get(&id).map(|a| a.path.as_path())
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
        let omitted = self.activity.len().saturating_sub(listed.len());
        let moving: f64 = self
            .moving
            .iter()
            .filter_map(|id| self.activity.get(id))
            .map(|a| a.rate_bps)
            .sum();
        let shown: f64 = listed.iter().map(|a| a.rate_bps).sum();
        let rest = if omitted == 0 { 0.0 } else { moving - shown };
        (listed, omitted, rest)
    }

    /// The `limit` first projects by rate (descending), then path: the moving ones sorted, the
    /// resting ones (rate zero) in path order where they belong.
    fn top(&self, limit: usize) -> Vec<(u32, &ProjectActivity)> {
        let order = |x: &(u32, &ProjectActivity), y: &(u32, &ProjectActivity)| {
            y.1.rate_bps
                .total_cmp(&x.1.rate_bps)
                .then(x.1.path.cmp(&y.1.path))
        };
        let mut chosen: Vec<(u32, &ProjectActivity)> = self
            .moving
            .iter()
            .filter_map(|id| Some((*id, self.activity.get(id)?)))
            .collect();
        // Resting projects have a rate of exactly zero: the first `limit` of them by path are
        // the only ones that can make the list.
        chosen.extend(
            self.ids
                .values()
                .filter(|id| !self.moving.contains(id))
                .filter_map(|id| Some((*id, self.activity.get(id)?)))
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
        a: &ProjectActivity,
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
            top_cgroups: top,
            ..a.clone()
        }
    }

    /// Forgets projects that no longer exist; their ids become free.
    pub fn retain_paths(&mut self, alive: &dyn Fn(&Path) -> bool) {
        let gone: Vec<u32> = self
            .activity
            .iter()
            .filter(|(_, a)| !alive(&a.path))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(a) = self.activity.remove(&id) {
                self.ids.remove(&a.path);
            }
            self.moving.remove(&id);
            self.cgroup_rates.remove(&id);
            self.free.insert(id);
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
