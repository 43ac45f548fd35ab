//! The aggregator: turns source samples into per-project state — a stable id per project dir,
//! smoothed write rates, and the cgroups writing most into each project. Pure: the caller passes
//! samples and elapsed time; nothing here reads the disk or the clock.

use crate::sources::{CgroupBytes, ProjectDir, Sample};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Weight of the newest sample in the smoothed rates (per sample interval).
const RATE_ALPHA: f64 = 0.3;
/// Cgroups listed per project.
const TOP_CGROUPS: usize = 3;

/// Write activity of one project as the daemon reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectActivity {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    /// Smoothed growth, bytes per second (negative when the project shrinks).
    pub rate_bps: f64,
    /// Growth seen since the daemon started (bytes).
    pub total_bytes: i64,
    /// The cgroups writing most into the project: (cgroup id, smoothed bytes per second).
    pub top_cgroups: Vec<CgroupRate>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupRate {
    pub cgroup: u64,
    /// cgroup v2 path when known (e.g. `/system.slice/build.service`).
    pub path: Option<String>,
    pub rate_bps: f64,
}

/// Project ids, rates and per-cgroup rates.
#[derive(Debug, Default)]
pub struct Aggregator {
    ids: HashMap<PathBuf, u32>,
    next_id: u32,
    activity: HashMap<u32, ProjectActivity>,
    cgroup_rates: HashMap<(u32, u64), f64>,
}

impl Aggregator {
    pub fn new() -> Aggregator {
        Aggregator {
            next_id: 1,
            ..Default::default()
        }
    }

    /// The id of a project path, assigned on first sight and never reused in this run.
    pub fn id_for(&mut self, path: &Path) -> u32 {
        if let Some(id) = self.ids.get(path) {
            return *id;
        }
        let id = self.next_id;
        self.next_id += 1;
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

    /// Projects from (path, dev, ino) triples, with their ids.
    pub fn project_dirs(&mut self, dirs: &[(PathBuf, u64, u64)]) -> Vec<ProjectDir> {
        dirs.iter()
            .map(|(path, dev, ino)| ProjectDir {
                id: self.id_for(path),
                path: path.clone(),
                dev: *dev,
                ino: *ino,
            })
            .collect()
    }

    /// Folds one sample covering `seconds` into the rates. Projects absent from the sample
    /// decay toward zero.
    pub fn absorb(&mut self, sample: &Sample, seconds: f64) {
        if seconds <= 0.0 {
            return;
        }
        for (id, activity) in self.activity.iter_mut() {
            let bytes = sample.growth.get(id).copied().unwrap_or(0);
            activity.total_bytes += bytes;
            activity.rate_bps = smooth(activity.rate_bps, bytes as f64 / seconds);
        }
        let mut fresh: HashMap<(u32, u64), u64> = HashMap::new();
        for CgroupBytes {
            project,
            cgroup,
            bytes,
        } in &sample.by_cgroup
        {
            *fresh.entry((*project, *cgroup)).or_default() += bytes;
        }
        for key in fresh.keys() {
            self.cgroup_rates.entry(*key).or_insert(0.0);
        }
        for (key, rate) in self.cgroup_rates.iter_mut() {
            let bytes = fresh.get(key).copied().unwrap_or(0);
            *rate = smooth(*rate, bytes as f64 / seconds);
        }
        self.cgroup_rates.retain(|_, rate| *rate >= 1.0);
    }

    /// Every known project's activity, busiest first; cgroup paths resolved by `name_cgroup`.
    pub fn report(
        &self,
        name_cgroup: &mut dyn FnMut(u64) -> Option<String>,
    ) -> Vec<ProjectActivity> {
        let mut out: Vec<ProjectActivity> = self
            .activity
            .iter()
            .map(|(id, a)| {
                let mut top: Vec<CgroupRate> = self
                    .cgroup_rates
                    .iter()
                    .filter(|((p, _), _)| p == id)
                    .map(|((_, cgroup), rate)| CgroupRate {
                        cgroup: *cgroup,
                        path: None,
                        rate_bps: *rate,
                    })
                    .collect();
                top.sort_by(|x, y| y.rate_bps.total_cmp(&x.rate_bps));
                top.truncate(TOP_CGROUPS);
                for c in &mut top {
                    c.path = name_cgroup(c.cgroup);
                }
                ProjectActivity {
                    top_cgroups: top,
                    ..a.clone()
                }
            })
            .collect();
        out.sort_by(|x, y| y.rate_bps.total_cmp(&x.rate_bps).then(x.path.cmp(&y.path)));
        out
    }

    /// Forgets projects that no longer exist.
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
            self.cgroup_rates.retain(|(p, _), _| *p != id);
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
    fn ids_are_stable_and_never_reused() {
        let mut agg = Aggregator::new();
        let a = agg.id_for(Path::new("/w/a"));
        let b = agg.id_for(Path::new("/w/b"));
        assert_eq!(agg.id_for(Path::new("/w/a")), a);
        assert_ne!(a, b);
        agg.retain_paths(&|p| p != Path::new("/w/a"));
        let again = agg.id_for(Path::new("/w/a"));
        assert!(again != a && again != b);
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
        let report = agg.report(&mut |id| (id == 7).then(|| "/build.slice".to_string()));
        assert_eq!(report[0].path, PathBuf::from("/w/a"));
        assert!(
            (report[0].rate_bps - 4.0 * (1 << 20) as f64).abs() < 1000.0,
            "{}",
            report[0].rate_bps
        );
        assert_eq!(report[0].top_cgroups[0].cgroup, 7);
        assert_eq!(
            report[0].top_cgroups[0].path.as_deref(),
            Some("/build.slice")
        );
        assert_eq!(report[0].total_bytes, 40 << 20);
        // Silence decays the rate.
        for _ in 0..40 {
            agg.absorb(&Sample::default(), 0.25);
        }
        assert!(agg.report(&mut |_| None)[0].rate_bps < 1000.0);
    }
}
