//! Forecasts in the daemon: one growth model per guarded filesystem (fed every `statvfs`) and
//! one per project (fed the write source's net growth — written less freed by others — or scan
//! sizes with the poll source; a drop of a project is files deleted, net growth going down,
//! never a jump to leave out: see [`project_params`]),
//! Guardian's own deletions taken as level resets, the lead time (`lead.rs`), the trigger, and
//! what `guardian status` shows of it all.
//! Pure: no IO, no clock; the daemon passes timestamps (seconds since it started) and
//! measurements.

pub use super::lead::{Lead, LeadEstimator};
use crate::config::{human_bytes, ForecastConfig};
use crate::fsys::FsSpace;
use crate::policy::{Limits, Preemptive};
use crate::predict::{Forecast, Forecaster, Params, Trigger, TriggerRule};
use crate::sources::ProjectDir;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a drop of our own waits for the source to report it (fanotify, inotify): that
/// shrinkage is not counted twice.
const OWN_DROP_WINDOW_S: f64 = 30.0;

/// One project's model.
struct ProjectModel {
    /// Device of the project dir: which filesystem it grows on.
    dev: u64,
    /// Its bytes as far as the source tells (counters since start, or the last scan size).
    level: u64,
    /// None while at rest: a flat forecast needs no model of its own (thousands of idle
    /// projects hold none).
    forecaster: Option<Box<Forecaster>>,
    /// Bytes Guardian deleted here that the source may still report as shrinkage, and when.
    own_drop: Option<(u64, f64)>,
    /// When the forecaster last saw a sample.
    observed_at: f64,
    /// When the model was created (the daemon's last sample then; -inf before the first).
    created_at: f64,
    /// When the source last reported a change of its level.
    changed_at: f64,
}

/// The model of a project: the filesystem's, but every drop the source reports is growth going
/// down (files others deleted or truncated: net growth), never an event to leave out of the
/// trend — a project that deletes what it writes grows by nothing, whatever it writes. Guardian's
/// own deletions stay level resets (`Forecaster::reset`, which needs no detection).
pub fn project_params() -> Params {
    Params {
        warmup_samples: u64::MAX,
        ..Params::default()
    }
}

/// A project whose level has not moved for this long gets a fresh model (at rest, costing
/// nothing per drain): its slowest scale (~9 h) has long forgotten the growth it saw.
const REST_AFTER_S: f64 = 12.0 * 3600.0;

/// A project whose source reports no change is sampled this often (every drain while it
/// changes): thousands of idle projects cost next to nothing per drain.
const IDLE_OBSERVE_S: f64 = 5.0;

impl ProjectModel {
    /// A new model at rest at level 0.
    fn new(dev: u64, now: f64) -> ProjectModel {
        ProjectModel::resting_at(dev, 0, now)
    }

    /// A fresh model at rest at `level` since `now`.
    fn resting_at(dev: u64, level: u64, now: f64) -> ProjectModel {
        ProjectModel {
            dev,
            level,
            forecaster: None,
            own_drop: None,
            observed_at: f64::NEG_INFINITY,
            created_at: now,
            changed_at: now,
        }
    }

    /// Its model, made when first needed.
    fn model(&mut self) -> &mut Forecaster {
        self.forecaster
            .get_or_insert_with(|| Box::new(Forecaster::new(project_params())))
    }

    /// A resting project moves at `t` (the drain before was at `previous`): its model is told
    /// the flat stretch since it was created first, as the samples every [`IDLE_OBSERVE_S`]
    /// would have told it.
    fn wake(&mut self, previous: f64, t: f64) {
        for at in [self.created_at, previous] {
            if at.is_finite() && at < t && at > self.observed_at {
                let level = self.level;
                self.model().observe(at, level);
                self.observed_at = at;
            }
        }
    }

    /// Adds the source's growth, leaving out shrinkage Guardian's own deletions explain.
    fn absorb(&mut self, t: f64, growth: i64) {
        if growth == 0 && self.own_drop.is_none() && t - self.observed_at < IDLE_OBSERVE_S {
            return;
        }
        self.observed_at = t;
        let mut growth = growth;
        if let Some((pending, since)) = self.own_drop {
            let explained = growth.saturating_neg().clamp(0, pending as i64);
            growth += explained;
            let left = pending - explained as u64;
            self.own_drop = (left > 0 && t - since < OWN_DROP_WINDOW_S).then_some((left, since));
        }
        self.level = self.level.saturating_add_signed(growth);
        let level = self.level;
        self.model().observe(t, level);
    }

    /// Guardian deleted `bytes` here: a level reset. `reported`: the source will report the
    /// shrinkage too (fanotify, inotify), which must then not count twice.
    fn cleaned(&mut self, t: f64, bytes: u64, reported: bool) {
        self.level = self.level.saturating_sub(bytes);
        if reported {
            let pending = self.own_drop.map_or(0, |(b, _)| b);
            self.own_drop = Some((pending + bytes, t));
        }
        let level = self.level;
        self.model().reset(t, level);
    }
}

/// The time to one threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdEta {
    /// `cleanup_free`, `min_free` or `critical_free`.
    pub name: String,
    /// Free bytes at the threshold.
    pub threshold: u64,
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
}

/// One forecast as `guardian status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastView {
    /// Growth, bytes per second, to three significant digits (under 1 B/s: 0), so a state
    /// file of an idle node does not change.
    pub rate_bps: f64,
    /// Samples seen, counted up to the number a forecast needs.
    pub samples: u64,
    pub eta: Vec<ThresholdEta>,
    /// The forecast that would trigger a preemptive phase 1 next, in words.
    pub next: String,
    /// Set when the forecast triggers now: which one (the audit lines' reason).
    pub trigger: Option<String>,
}

/// A filesystem's forecast, with the rule it is checked against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FsForecastView {
    #[serde(flatten)]
    pub forecast: ForecastView,
    /// `[forecast] enabled`.
    pub enabled: bool,
    pub floor_free: u64,
    pub lead: Lead,
}

/// A project's forecast: "if only this project grew", against its filesystem's free space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectForecastView {
    #[serde(with = "crate::textpath")]
    pub path: PathBuf,
    #[serde(flatten)]
    pub forecast: ForecastView,
}

/// Every growth model of the daemon.
pub struct Forecasts {
    config: ForecastConfig,
    filesystems: HashMap<u64, Forecaster>,
    /// Keyed by the project's shared path ([`ProjectDir::path`]): no copy of its own.
    projects: HashMap<Arc<Path>, ProjectModel>,
    /// Projects whose level moved since their model started: the only ones a drain updates.
    moving: HashSet<Arc<Path>>,
    /// The others, at rest at their starting level (every forecast of theirs is flat), in path
    /// order: thousands of idle projects cost nothing per drain nor per status.
    resting: BTreeSet<Arc<Path>>,
    /// The time of the last drain.
    last_t: f64,
    /// The model of a project at rest (never fed).
    blank: Forecaster,
    pub lead: LeadEstimator,
}

impl Forecasts {
    pub fn new(config: &ForecastConfig, sample_interval: Duration) -> Forecasts {
        Forecasts {
            config: config.clone(),
            filesystems: HashMap::new(),
            projects: HashMap::new(),
            moving: HashSet::new(),
            resting: BTreeSet::new(),
            last_t: f64::NEG_INFINITY,
            blank: Forecaster::new(project_params()),
            lead: LeadEstimator::new(config, sample_interval),
        }
    }

    /// A `statvfs` sample of the filesystem `dev`.
    pub fn observe_fs(&mut self, dev: u64, t: f64, space: &FsSpace) {
        self.fs_model(dev).observe(t, used(space));
    }

    /// Whether the model of filesystem `dev` has the samples a forecast needs (until then
    /// every reading is worth feeding it, changed or not).
    pub fn fs_warm(&self, dev: u64) -> bool {
        self.filesystems
            .get(&dev)
            .is_some_and(|f| f.samples() >= f.params().min_samples)
    }

    /// Guardian freed space on `dev`; `space` is measured after it.
    pub fn fs_cleaned(&mut self, dev: u64, t: f64, space: &FsSpace) {
        self.fs_model(dev).reset(t, used(space));
    }

    fn fs_model(&mut self, dev: u64) -> &mut Forecaster {
        self.filesystems
            .entry(dev)
            .or_insert_with(|| Forecaster::new(Params::default()))
    }

    /// Keeps one model per current project dir (new ones start empty, at rest). Linear in the
    /// number of projects: it runs on the main loop whenever the set of project dirs changes.
    pub fn retain_projects(&mut self, projects: &[ProjectDir]) {
        let current: HashSet<&Path> = projects.iter().map(|p| &*p.path).collect();
        self.projects.retain(|path, _| current.contains(&**path));
        self.moving.retain(|path| current.contains(&**path));
        self.resting.retain(|path| current.contains(&**path));
        for p in projects {
            if self.projects.contains_key(&p.path) {
                continue;
            }
            self.projects
                .insert(p.path.clone(), ProjectModel::new(p.dev, self.last_t));
            self.resting.insert(p.path.clone());
        }
    }

    /// One drain of a counting source: every project's net growth since the last one (absent:
    /// none). Updates only the projects that grew now or since their model started: a
    /// project at rest stays at rest (its flat stretch is handed to its model when it grows),
    /// and one quiet for [`REST_AFTER_S`] comes to rest again.
    pub fn absorb_growth(&mut self, t: f64, growth: &HashMap<PathBuf, i64>) {
        let previous = self.last_t;
        self.last_t = self.last_t.max(t);
        for (path, g) in growth {
            if *g == 0 {
                continue;
            }
            let Some(path) = self.resting.take(path.as_path()) else {
                continue;
            };
            if let Some(model) = self.projects.get_mut(&path) {
                model.wake(previous, t);
                self.moving.insert(path);
            }
        }
        let projects = &mut self.projects;
        let mut quiet = Vec::new();
        self.moving.retain(|path| {
            let Some(model) = projects.get_mut(path) else {
                return false;
            };
            let g = growth.get(&**path).copied().unwrap_or(0);
            model.absorb(t, g);
            if g != 0 {
                model.changed_at = t;
            }
            let moves = t - model.changed_at < REST_AFTER_S || model.own_drop.is_some();
            if !moves {
                *model = ProjectModel::resting_at(model.dev, model.level, t);
                quiet.push(path.clone());
            }
            moves
        });
        self.resting.extend(quiet);
    }

    /// A project's size as a survey measured it (the poll source has no counters).
    pub fn observe_project_size(&mut self, path: &Path, t: f64, bytes: u64) {
        if let Some(model) = self.projects.get_mut(path) {
            model.level = bytes;
            model.model().observe(t, bytes);
            self.mark_moving(path);
        }
    }

    /// Guardian deleted `bytes` inside `project`; `reported`: the source reports that
    /// shrinkage too (fanotify, inotify: sizes; the eBPF probe leaves Guardian's frees out).
    pub fn project_cleaned(&mut self, project: &Path, t: f64, bytes: u64, reported: bool) {
        if let Some(model) = self.projects.get_mut(project) {
            if self.resting.contains(project) {
                model.wake(self.last_t, t);
            }
            model.cleaned(t, bytes, reported);
            model.changed_at = t;
            self.mark_moving(project);
        }
    }

    fn mark_moving(&mut self, path: &Path) {
        if let Some(path) = self.resting.take(path) {
            self.moving.insert(path);
        }
    }

    /// Growth rate of each project on `dev` with `free` bytes left (the plan's ordering).
    pub fn growth_rates(&self, dev: u64, free: u64) -> HashMap<PathBuf, f64> {
        self.projects
            .iter()
            .filter(|(_, m)| m.dev == dev)
            .map(|(path, m)| {
                let rate = m.forecaster.as_ref().map_or(0.0, |f| f.rate_bps(free));
                (path.to_path_buf(), rate)
            })
            .collect()
    }

    /// The lead time a preemptive phase 1 needs on a filesystem with these limits.
    pub fn lead(&self, limits: &Limits) -> Lead {
        self.lead.lead(phase1_bytes(limits))
    }

    fn rule(&self, space: &FsSpace, limits: &Limits) -> TriggerRule {
        TriggerRule {
            lead_time_s: self.lead(limits).lead_time_s,
            floor_free: self.config.floor_free.0.resolve(space.total_bytes),
        }
    }

    /// The preemptive trigger for filesystem `dev` now, if its forecast fires (only with
    /// `[forecast] enabled`; never for a threshold already crossed, nor above the floor).
    pub fn check(&self, dev: u64, t: f64, space: &FsSpace, limits: &Limits) -> Option<Named> {
        if !self.config.enabled {
            return None;
        }
        let model = self.filesystems.get(&dev)?;
        let levels = thresholds(limits, false);
        let forecast = forecast_at(model, t, space, &levels);
        fire(&self.rule(space, limits), &forecast, &levels)
    }

    /// What a fired trigger asks the policy for: phase 1 freeing what the reactive cycle would
    /// free at the crossing (`target_free` − `cleanup_free`), so that free space is at the usual
    /// target when the forecast crossing comes instead of at the threshold.
    pub fn preemptive(&self, trigger: &Named, limits: &Limits) -> Preemptive {
        Preemptive {
            goal_free: trigger
                .trigger
                .free_bytes
                .saturating_add(phase1_bytes(limits)),
            trigger: trigger.describe(),
        }
    }

    /// The filesystem's forecast for `guardian status`.
    pub fn fs_view(&self, dev: u64, t: f64, space: &FsSpace, limits: &Limits) -> FsForecastView {
        let rule = self.rule(space, limits);
        let forecast = match self.filesystems.get(&dev) {
            Some(model) => self.view(model, t, space, limits, &rule),
            None => ForecastView {
                rate_bps: 0.0,
                samples: 0,
                eta: Vec::new(),
                next: "no sample yet".into(),
                trigger: None,
            },
        };
        FsForecastView {
            forecast,
            enabled: self.config.enabled,
            floor_free: rule.floor_free,
            lead: self.lead(limits),
        }
    }

    /// Every project's forecast against its filesystem (`spaces` by device), fastest growing
    /// first.
    ///
    /// At most `limit`, computed for the moving projects and the first `limit` resting ones
    /// by path (a resting project's rate is zero: no other could make the list).
    pub fn project_views(
        &self,
        t: f64,
        spaces: &HashMap<u64, (FsSpace, Limits)>,
        limit: usize,
    ) -> Vec<ProjectForecastView> {
        let resting = self
            .resting
            .iter()
            .filter(|path| {
                self.projects
                    .get(*path)
                    .is_some_and(|m| spaces.contains_key(&m.dev))
            })
            .take(limit);
        let mut out: Vec<ProjectForecastView> = self
            .moving
            .iter()
            .chain(resting)
            .filter_map(|path| Some((path, self.projects.get(path)?)))
            .filter_map(|(path, m)| {
                let (space, limits) = spaces.get(&m.dev)?;
                let rule = self.rule(space, limits);
                Some(ProjectForecastView {
                    path: path.to_path_buf(),
                    forecast: self.view(
                        m.forecaster.as_deref().unwrap_or(&self.blank),
                        t,
                        space,
                        limits,
                        &rule,
                    ),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b.forecast
                .rate_bps
                .total_cmp(&a.forecast.rate_bps)
                .then(a.path.cmp(&b.path))
        });
        out.truncate(limit);
        out
    }

    fn view(
        &self,
        model: &Forecaster,
        t: f64,
        space: &FsSpace,
        limits: &Limits,
        rule: &TriggerRule,
    ) -> ForecastView {
        let levels = thresholds(limits, true);
        let forecast = forecast_at(model, t, space, &levels);
        let trigger_levels = thresholds(limits, false);
        let fired = fire(rule, &forecast, &trigger_levels).filter(|_| self.config.enabled);
        let next = if self.config.enabled {
            next_trigger(&forecast, &trigger_levels, rule, fired.as_ref())
        } else {
            "preemptive cleanup is off ([forecast] enabled = false)".into()
        };
        ForecastView {
            rate_bps: shown_rate(forecast.rate_bps),
            samples: forecast.samples.min(Params::default().min_samples),
            eta: levels
                .iter()
                .zip(&forecast.eta)
                .map(|((name, threshold), eta)| ThresholdEta {
                    name: name.to_string(),
                    threshold: *threshold,
                    p50_s: eta.p50_s,
                    p90_s: eta.p90_s,
                })
                .collect(),
            next,
            trigger: fired.map(|f| f.describe()),
        }
    }
}

/// A fired trigger and the name of its threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Named {
    pub name: &'static str,
    pub trigger: Trigger,
}

impl Named {
    /// Which forecast triggered, for the audit log: `cleanup_free forecast: free … lead time …`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.name, self.trigger.describe())
    }
}

/// Used bytes as the forecasts count them: size − available.
fn used(space: &FsSpace) -> u64 {
    space.total_bytes.saturating_sub(space.avail_bytes)
}

/// What phase 1 frees from the `cleanup_free` crossing up to the target.
fn phase1_bytes(limits: &Limits) -> u64 {
    limits.target_bytes.saturating_sub(limits.cleanup_bytes)
}

/// The named free-space levels forecasts are made for: those a forecast may act on
/// (`cleanup_free`, `min_free` when set), and `critical_free` for the status.
fn thresholds(limits: &Limits, with_critical: bool) -> Vec<(&'static str, u64)> {
    let mut out = vec![("cleanup_free", limits.cleanup_bytes)];
    if limits.min_free_bytes > 0 {
        out.push(("min_free", limits.min_free_bytes));
    }
    if with_critical {
        out.push(("critical_free", limits.critical_bytes));
    }
    out
}

fn forecast_at(
    model: &Forecaster,
    t: f64,
    space: &FsSpace,
    levels: &[(&'static str, u64)],
) -> Forecast {
    let bytes: Vec<u64> = levels.iter().map(|(_, b)| *b).collect();
    model.forecast(t, space.avail_bytes, &bytes)
}

fn fire(rule: &TriggerRule, forecast: &Forecast, levels: &[(&'static str, u64)]) -> Option<Named> {
    let trigger = rule.check(forecast)?;
    let name = levels
        .iter()
        .find(|(_, b)| *b == trigger.threshold)
        .map_or("threshold", |(n, _)| n);
    Some(Named { name, trigger })
}

/// "preemptive phase 1 when P90 to cleanup_free < lead 12 s and free < floor 410 MiB; now
/// P90 = 3 min, free 500 MiB", or why it fires now, or that the reactive path has it.
fn next_trigger(
    forecast: &Forecast,
    levels: &[(&'static str, u64)],
    rule: &TriggerRule,
    fired: Option<&Named>,
) -> String {
    if let Some(f) = fired {
        return format!("preemptive phase 1 now: {}", f.describe());
    }
    let free = forecast.free_bytes;
    if let Some((name, _)) = levels.iter().find(|(_, b)| free < *b) {
        return format!("under {name}: the reactive cycle's business, not a forecast's");
    }
    let nearest = levels.iter().zip(&forecast.eta).min_by(|(_, a), (_, b)| {
        let key = |e: &crate::predict::Eta| e.p90_s.unwrap_or(f64::INFINITY);
        key(a).total_cmp(&key(b))
    });
    let Some(((name, _), eta)) = nearest else {
        return "no threshold to forecast".into();
    };
    let now = match eta.p90_s {
        Some(s) => format!("P90 = {}", human_seconds(s)),
        None if forecast.samples < Params::default().min_samples => {
            "too few samples for a forecast".into()
        }
        None => "no crossing in sight".into(),
    };
    format!(
        "preemptive phase 1 when P90 to {name} < lead {} and free < floor {}; now {now}, free {}",
        human_seconds(rule.lead_time_s),
        human_bytes(rule.floor_free),
        human_bytes(free)
    )
}

/// `0.2 s`, `12 s`, `3.5 min`, `5.2 h`, `3.1 days`.
/// A rate as the views show it: three significant digits, 0 under 1 B/s either way.
fn shown_rate(bps: f64) -> f64 {
    if !bps.is_finite() || bps.abs() < 1.0 {
        return 0.0;
    }
    let digits = bps.abs().log10().floor() as i32 - 2;
    let unit = 10f64.powi(digits);
    (bps / unit).round() * unit
}

pub fn human_seconds(s: f64) -> String {
    if s < 9.95 {
        format!("{s:.1} s")
    } else if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 90.0 * 60.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 48.0 * 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

#[cfg(test)]
mod tests;
