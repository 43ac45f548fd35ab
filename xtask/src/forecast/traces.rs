//! Traces: the format (JSON lines) and the deterministic generators of the synthetic families;
//! the recorded families are replayed by `recorded.rs`.
//!
//! Format, one JSON object per line:
//!
//! ```text
//! {"trace":"steady-0","family":"steady","capacity":1099511627776,"interval_s":60}
//! {"t":0,"free":604731195392,"projects":{"build":0,"cache":0}}
//! {"t":60,"free":604712345600,"projects":{"build":13421772,"cache":5752188}}
//! ```
//!
//! The first line is the header; every later line is a sample: `t` seconds from the start,
//! `free` bytes available (statvfs `f_bavail * f_frsize`), `projects` the bytes of each project
//! (what Guardian's per-project forecasters would be fed). What is neither a project nor free is
//! the rest of the filesystem (system files, and the churn of temporary files: the noise).

use super::recorded::{self, Recorded};
use super::rng::Rng;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;

pub const MINUTE: f64 = 60.0;
pub const HOUR: f64 = 3600.0;
pub const DAY: f64 = 86_400.0;
const GIB: f64 = (1u64 << 30) as f64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Steady,
    Accelerating,
    Bursty,
    CronSawtooth,
    LogRotation,
    WeekendBurst,
    FastSawtooth,
    /// Replays of the recordings in xtask/traces/ (`recorded.rs`).
    RecCargo,
    RecNpm,
    RecLogrotate,
    RecCheckpoint,
}

impl Family {
    pub const ALL: [Family; 11] = [
        Family::Steady,
        Family::Accelerating,
        Family::Bursty,
        Family::CronSawtooth,
        Family::LogRotation,
        Family::WeekendBurst,
        Family::FastSawtooth,
        Family::RecCargo,
        Family::RecNpm,
        Family::RecLogrotate,
        Family::RecCheckpoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Steady => "steady",
            Family::Accelerating => "accelerating",
            Family::Bursty => "bursty",
            Family::CronSawtooth => "cron-sawtooth",
            Family::LogRotation => "log-rotation",
            Family::WeekendBurst => "weekend-burst",
            Family::FastSawtooth => "fast-sawtooth",
            Family::RecCargo => "rec-cargo",
            Family::RecNpm => "rec-npm",
            Family::RecLogrotate => "rec-logrotate",
            Family::RecCheckpoint => "rec-checkpoint",
        }
    }

    /// The recording a recorded family replays: (file name under xtask/traces/, its text).
    pub fn recording(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Family::RecCargo => ("cargo.csv", include_str!("../../traces/cargo.csv")),
            Family::RecNpm => ("npm.csv", include_str!("../../traces/npm.csv")),
            Family::RecLogrotate => ("logrotate.csv", include_str!("../../traces/logrotate.csv")),
            Family::RecCheckpoint => (
                "checkpoint.csv",
                include_str!("../../traces/checkpoint.csv"),
            ),
            _ => return None,
        })
    }
}

pub struct Trace {
    pub name: String,
    pub family_name: String,
    pub capacity: f64,
    pub interval_s: f64,
    pub t: Vec<f64>,
    pub free: Vec<f64>,
    pub projects: Vec<(String, Vec<f64>)>,
}

impl Trace {
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        let header = json!({
            "trace": self.name,
            "family": self.family_name,
            "capacity": self.capacity as u64,
            "interval_s": self.interval_s,
        });
        let _ = writeln!(out, "{header}");
        for k in 0..self.t.len() {
            let projects: serde_json::Map<String, Value> = self
                .projects
                .iter()
                .map(|(name, bytes)| (name.clone(), json!(bytes[k].max(0.0).round() as u64)))
                .collect();
            let line = json!({
                "t": self.t[k],
                "free": self.free[k].max(0.0).round() as u64,
                "projects": projects,
            });
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// Reads a trace file: JSON lines, or a recording (`.csv`, `recorded.rs`) as it was
    /// recorded (its tmpfs, no placement).
    pub fn read(path: &Path) -> Result<Trace> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "csv") {
            let rec = Recorded::parse(&path.display().to_string(), &text)?;
            let capacity = rec.size_bytes as f64;
            return Ok(Trace {
                name: path
                    .file_stem()
                    .map_or_else(|| rec.tool.clone(), |s| s.to_string_lossy().into_owned()),
                family_name: format!("file-{}", rec.tool),
                capacity,
                interval_s: rec.interval_ms as f64 / 1000.0,
                t: rec.t_ms.iter().map(|&ms| ms as f64 / 1000.0).collect(),
                free: rec.used.iter().map(|&u| capacity - u as f64).collect(),
                projects: Vec::new(),
            });
        }
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Value =
            serde_json::from_str(lines.next().context("empty trace")?).context("trace header")?;
        let capacity = header["capacity"]
            .as_f64()
            .context("header needs \"capacity\"")?;
        let family_name = header["family"].as_str().unwrap_or("other").to_string();
        let name = header["trace"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| path.display().to_string());
        let mut trace = Trace {
            name,
            family_name,
            capacity,
            interval_s: header["interval_s"].as_f64().unwrap_or(0.0),
            t: Vec::new(),
            free: Vec::new(),
            projects: Vec::new(),
        };
        for (n, line) in lines.enumerate() {
            let v: Value =
                serde_json::from_str(line).with_context(|| format!("sample {}", n + 1))?;
            let (Some(t), Some(free)) = (v["t"].as_f64(), v["free"].as_f64()) else {
                bail!("sample {} needs \"t\" and \"free\"", n + 1);
            };
            if trace.t.last().is_some_and(|last| t <= *last) {
                bail!("sample {}: time does not increase", n + 1);
            }
            trace.t.push(t);
            trace.free.push(free);
            if let Some(map) = v["projects"].as_object() {
                for (name, bytes) in map {
                    let idx = match trace.projects.iter().position(|(p, _)| p == name) {
                        Some(i) => i,
                        None => {
                            trace
                                .projects
                                .push((name.clone(), vec![0.0; trace.t.len() - 1]));
                            trace.projects.len() - 1
                        }
                    };
                    trace.projects[idx].1.push(bytes.as_f64().unwrap_or(0.0));
                }
            }
            for (_, bytes) in &mut trace.projects {
                bytes.resize(trace.t.len(), *bytes.last().unwrap_or(&0.0));
            }
        }
        Ok(trace)
    }
}

/// The instances that do not cross (3 of every 8); the others are built to cross.
pub fn crossing_instance(i: u32) -> bool {
    !matches!(i % 8, 2 | 5 | 7)
}

/// Sampling and length of every generated trace.
const INTERVAL: f64 = MINUTE;
const LENGTH: f64 = 7.0 * DAY;
/// The threshold the generators aim at (cleanup_free), as a fraction of the capacity.
pub const THRESHOLD: f64 = 0.20;

pub fn generate(family: Family, i: u32, seed: u64) -> Result<Trace> {
    if let Some((file, text)) = family.recording() {
        let rec = Recorded::parse(&format!("xtask/traces/{file}"), text)?;
        return Ok(recorded::replay(&rec, family.name(), i, seed));
    }
    let mut rng = Rng::new(Rng::seed_of(
        &[family.name()],
        seed.wrapping_mul(1000) + i as u64,
    ));
    let capacity = [256.0, 512.0, 1024.0, 2048.0][(i % 4) as usize] * GIB;
    let cross = crossing_instance(i);
    if family == Family::FastSawtooth {
        let mut sim = Sim::with(capacity, FAST_INTERVAL, FAST_LENGTH, &mut rng);
        fast(&mut sim, &mut rng, i, cross);
        return Ok(sim.finish(format!("{}-{i}", family.name()), family, &mut rng));
    }
    let mut sim = Sim::new(capacity, &mut rng);
    match family {
        Family::Steady => steady(&mut sim, &mut rng, cross),
        Family::Accelerating => accelerating(&mut sim, &mut rng, cross),
        Family::Bursty => bursty(&mut sim, &mut rng, cross),
        Family::CronSawtooth => cron(&mut sim, &mut rng, i, cross),
        Family::LogRotation => logs(&mut sim, &mut rng, cross),
        Family::WeekendBurst => weekend(&mut sim, &mut rng, cross),
        Family::FastSawtooth
        | Family::RecCargo
        | Family::RecNpm
        | Family::RecLogrotate
        | Family::RecCheckpoint => unreachable!("generated above"),
    }
    Ok(sim.finish(format!("{}-{i}", family.name()), family, &mut rng))
}

/// Minute-by-minute simulation: project sizes are set by the generator; free = capacity − base
/// − projects − churn, where churn is white noise plus a mean-reverting (AR(1)) component
/// (temporary files and build dirs that come and go).
struct Sim {
    capacity: f64,
    interval: f64,
    /// Bytes of the rest of the filesystem.
    base: f64,
    t: Vec<f64>,
    names: Vec<&'static str>,
    sizes: Vec<Vec<f64>>,
    white: f64,
    ar_sd: f64,
    ar_phi: f64,
}

impl Sim {
    fn new(capacity: f64, rng: &mut Rng) -> Sim {
        Sim::with(capacity, INTERVAL, LENGTH, rng)
    }

    fn with(capacity: f64, interval: f64, length: f64, rng: &mut Rng) -> Sim {
        let n = (length / interval) as usize + 1;
        Sim {
            capacity,
            interval,
            base: 0.0,
            t: (0..n).map(|k| k as f64 * interval).collect(),
            names: Vec::new(),
            sizes: Vec::new(),
            white: rng.range(0.00005, 0.0005) * capacity,
            ar_sd: rng.range(0.0005, 0.003) * capacity,
            ar_phi: (-interval / (rng.range(20.0, 120.0) * MINUTE)).exp(),
        }
    }

    /// Starts so that `free0` (fraction) is free at t = 0 with empty projects.
    fn start_free(&mut self, free0: f64) {
        self.base = (1.0 - free0) * self.capacity;
    }

    fn project(&mut self, name: &'static str) -> usize {
        self.names.push(name);
        self.sizes.push(vec![0.0; self.t.len()]);
        self.sizes.len() - 1
    }

    fn n(&self) -> usize {
        self.t.len()
    }

    fn quiet(&mut self, factor: f64) {
        self.white *= factor;
        self.ar_sd *= factor;
    }

    fn finish(self, name: String, family: Family, rng: &mut Rng) -> Trace {
        let mut ar = 0.0;
        let innovation = self.ar_sd * (1.0 - self.ar_phi * self.ar_phi).sqrt();
        let free = (0..self.n())
            .map(|k| {
                ar = self.ar_phi * ar + innovation * rng.normal();
                // Churn only ever adds used bytes on top of the base (files that exist for a
                // while), so it is folded into [0, 4 sd].
                let churn = (ar + 2.0 * self.ar_sd).clamp(0.0, 4.0 * self.ar_sd)
                    + (self.white * rng.normal()).abs();
                let used: f64 = self.base + self.sizes.iter().map(|s| s[k]).sum::<f64>() + churn;
                (self.capacity - used).max(0.0)
            })
            .collect();
        Trace {
            name,
            family_name: family.name().to_string(),
            capacity: self.capacity,
            interval_s: self.interval,
            t: self.t,
            free,
            projects: self
                .names
                .into_iter()
                .map(String::from)
                .zip(self.sizes)
                .collect(),
        }
    }
}

/// A writer at a constant rate; non-crossing instances stop (the job ends) well above the
/// threshold.
fn steady(sim: &mut Sim, rng: &mut Rng, cross: bool) {
    let free0 = rng.range(0.42, 0.65);
    sim.start_free(free0);
    let c = sim.capacity;
    let (rate, stop) = if cross {
        let to_cross = rng.range(1.5, 5.5) * DAY;
        ((free0 - THRESHOLD) * c / to_cross, f64::INFINITY)
    } else {
        let stop_free = rng.range(0.25, 0.32);
        let total = (free0 - stop_free) * c;
        (total / (rng.range(1.5, 4.0) * DAY), total)
    };
    let (build, cache) = (sim.project("build"), sim.project("cache"));
    for k in 0..sim.n() {
        let grown = (rate * sim.t[k]).min(stop);
        sim.sizes[build][k] = 0.7 * grown;
        sim.sizes[cache][k] = 0.3 * grown;
    }
}

/// Exponentially accelerating growth (a cache warming up, a dataset download fanning out).
fn accelerating(sim: &mut Sim, rng: &mut Rng, cross: bool) {
    let free0 = rng.range(0.42, 0.65);
    sim.start_free(free0);
    let c = sim.capacity;
    let tau = rng.range(0.5, 1.5) * DAY;
    let (target, at, stop) = if cross {
        (
            (free0 - THRESHOLD) * c,
            rng.range(2.0, 5.5) * DAY,
            f64::INFINITY,
        )
    } else {
        let total = (free0 - rng.range(0.27, 0.33)) * c;
        (total, rng.range(2.0, 4.0) * DAY, total)
    };
    let r0 = target / (tau * ((at / tau).exp() - 1.0));
    let data = sim.project("dataset");
    for k in 0..sim.n() {
        sim.sizes[data][k] = (r0 * tau * ((sim.t[k] / tau).exp() - 1.0)).min(stop);
    }
}

/// A slow background plus bursts: persistent ones (image pulls, artifacts kept) that drive the
/// crossing, and transient ones (a big temporary file removed after a while).
fn bursty(sim: &mut Sim, rng: &mut Rng, cross: bool) {
    let c = sim.capacity;
    let free0 = if cross {
        rng.range(0.35, 0.50)
    } else {
        rng.range(0.30, 0.36)
    };
    sim.start_free(free0);
    let (bg, persistent) = if cross {
        let to_cross = rng.range(1.5, 5.5) * DAY;
        let bg = rng.range(0.002, 0.01) * c / DAY;
        let median = rng.range(0.003, 0.012) * c;
        let mean = median * (0.7f64 * 0.7 / 2.0).exp();
        let burst_rate = ((free0 - THRESHOLD) * c / to_cross - bg).max(0.0);
        (bg, Some((median, mean / burst_rate)))
    } else {
        (rng.range(0.0, 0.002) * c / DAY, None)
    };
    let transient_every = rng.range(2.0, 6.0) * HOUR;
    let transient_median = rng.range(0.01, 0.03) * c;
    let (images, scratch) = (sim.project("images"), sim.project("scratch"));
    let n = sim.n();
    // Persistent bursts, each written over 1–3 samples.
    if let Some((median, every)) = persistent {
        let mut t = rng.exp(every);
        while t < LENGTH {
            let size = rng.lognormal(median, 0.7);
            let k0 = (t / INTERVAL) as usize;
            let spread = 1 + (rng.unit() * 3.0) as usize;
            for k in k0..n {
                let done = ((k - k0 + 1) as f64 / spread as f64).min(1.0);
                sim.sizes[images][k] += size * done;
            }
            t += rng.exp(every);
        }
    }
    for k in 0..n {
        sim.sizes[images][k] += bg * sim.t[k];
    }
    // Transient bursts: written in one sample, removed 5–95 min later.
    let mut t = rng.exp(transient_every);
    while t < LENGTH {
        let size = rng.lognormal(transient_median, 0.5).min(0.06 * c);
        let life = 5.0 * MINUTE + rng.exp(30.0 * MINUTE).min(90.0 * MINUTE);
        let k0 = (t / INTERVAL) as usize;
        let k1 = (((t + life) / INTERVAL) as usize).min(n);
        for k in k0..k1 {
            sim.sizes[scratch][k] += size;
        }
        t += rng.exp(transient_every);
    }
}

/// A cron job fills a scratch area at a steady rate and wipes it every period. Crossing
/// instances either leave a little more behind at each wipe (drift) or lose the cron job.
fn cron(sim: &mut Sim, rng: &mut Rng, i: u32, cross: bool) {
    let c = sim.capacity;
    let period = [1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 24.0, 3.0][(i % 8) as usize] * HOUR;
    let base_free = rng.range(0.32, 0.40);
    sim.start_free(base_free);
    let fill = rng.range(0.04, (base_free - 0.24).min(0.12)) * c;
    let rate = fill / period;
    let drifts = cross && (i & 1) == 0;
    let dies_at = if cross && !drifts {
        rng.range(2.0, 5.0) * DAY
    } else {
        f64::INFINITY
    };
    // Drift per wipe, so that the lowest point crosses after ~2–5.5 days.
    let drift = if drifts {
        let to_cross = rng.range(2.0, 5.5) * DAY;
        ((base_free - THRESHOLD) * c - fill).max(0.0) / (to_cross / period).max(1.0)
    } else {
        0.0
    };
    let (scratch, kept) = (sim.project("scratch"), sim.project("kept"));
    let mut next_wipe = period * (1.0 + 0.05 * rng.normal());
    let mut since = 0.0; // bytes written since the last wipe
    let mut left = 0.0; // bytes left behind by wipes
    for k in 1..sim.n() {
        let t = sim.t[k];
        since += rate * INTERVAL;
        if t >= next_wipe && t < dies_at {
            left += drift;
            since = 0.0;
            next_wipe += period * (1.0 + 0.05 * rng.normal()).max(0.5);
        }
        sim.sizes[scratch][k] = since;
        sim.sizes[kept][k] = left;
    }
}

/// Logs with a diurnal write rate (busy afternoons, quiet nights), rotated daily just after
/// midnight by copytruncate: the copy doubles the log for a moment, the truncate and gzip take
/// it back, and the oldest archive is removed. Crossing instances also grow otherwise.
fn logs(sim: &mut Sim, rng: &mut Rng, cross: bool) {
    let c = sim.capacity;
    let daily = rng.range(0.03, 0.07) * c;
    // The lowest point of each day is the copy at rotation: twice the day's log above the
    // morning level.
    let churn = 4.0 * sim.ar_sd + 3.0 * sim.white;
    let free0 = THRESHOLD + (2.0 * daily + churn) / c + rng.range(0.04, 0.10);
    sim.start_free(free0);
    let other = if cross {
        // Cross on day ~3–6.
        let to_cross = rng.range(3.0, 6.0) * DAY;
        ((free0 - THRESHOLD) * c - 2.0 * daily - churn) / to_cross
    } else {
        0.0
    };
    let archive = 0.1 * daily;
    let (log, archives, app) = (
        sim.project("logs"),
        sim.project("archives"),
        sim.project("app"),
    );
    let mut size = 0.0;
    let mut gz = 7.0 * archive;
    sim.base -= gz; // the archives are part of the used bytes at the start
    let mut rotation = DAY + rng.range(0.0, 10.0) * MINUTE;
    let mut step = 0; // 0: writing, 1: copied, 2: truncated, 3: compressed
    let mut copy = 0.0;
    for k in 0..sim.n() {
        let t = sim.t[k];
        let hour = (t % DAY) / HOUR;
        let busy = 1.0 + 0.9 * (std::f64::consts::TAU * (hour - 8.0) / 24.0).sin();
        size += daily / DAY * busy * INTERVAL;
        if step == 0 && t >= rotation {
            copy = size;
            step = 1;
        } else if step == 1 {
            size = 0.0;
            step = 2;
        } else if step == 2 {
            gz += 0.1 * copy - archive;
            copy = 0.0;
            step = 0;
            rotation += DAY + rng.range(-5.0, 5.0) * MINUTE;
        }
        sim.sizes[log][k] = size + copy;
        sim.sizes[archives][k] = gz;
        sim.sizes[app][k] = other * t;
    }
}

/// An idle weekend (Saturday and Sunday), then on Monday at 8:00 a heavy rebuild for a few
/// hours, then light office-hours growth for the rest of the week.
fn weekend(sim: &mut Sim, rng: &mut Rng, cross: bool) {
    let c = sim.capacity;
    let burst_rate = rng.range(0.03, 0.08) * c / HOUR;
    let burst_len = rng.range(2.0, 6.0) * HOUR;
    let office = rng.range(0.0005, 0.002) * c / HOUR;
    let office_total = 5.0 * 10.0 * HOUR * office;
    let burst_total = burst_rate * burst_len;
    let free0 = if cross {
        THRESHOLD + burst_total * rng.range(0.6, 0.95) / c
    } else {
        THRESHOLD + (burst_total + office_total) / c + rng.range(0.05, 0.10)
    };
    sim.start_free(free0.min(0.9));
    sim.quiet(0.5);
    let ci = sim.project("ci");
    let mut used = 0.0;
    let start = 2.0 * DAY + 8.0 * HOUR;
    for k in 1..sim.n() {
        let t = sim.t[k];
        let hour = (t % DAY) / HOUR;
        let rate = if t >= start && t < start + burst_len {
            burst_rate
        } else if t >= 2.0 * DAY && (8.0..18.0).contains(&hour) {
            office
        } else {
            0.0
        };
        used += rate * INTERVAL;
        sim.sizes[ci][k] = used;
    }
}

/// Sampling and length of the fast sawtooth traces (the daemon samples every 250 ms).
const FAST_INTERVAL: f64 = 1.0;
const FAST_LENGTH: f64 = 4.0 * HOUR;

/// A build-like writer: temporary files written over 40 % of a period of 5 s to 5 min and
/// deleted, teeth whose peaks come 1–4 pp above the threshold from a base 25–36 % free.
/// Crossing instances: after 1–3 h a steady fill (crossing 10–60 min later) joins the teeth,
/// or the teeth start to leave part of their files behind.
fn fast(sim: &mut Sim, rng: &mut Rng, i: u32, cross: bool) {
    sim.quiet(0.05);
    let c = sim.capacity;
    let period = [5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0][(i % 8) as usize];
    let peak_free = THRESHOLD + rng.range(0.01, 0.04);
    let base_free = rng.range((peak_free + 0.03).max(0.25), 0.36);
    sim.start_free(base_free);
    let amp = (base_free - peak_free) * c;
    let rise = 0.4 * period;
    let starts_at = rng.range(1.0, 3.0) * HOUR;
    let fills = cross && (i & 1) == 0;
    let fill_rate = if fills {
        (peak_free - THRESHOLD + 0.5 * (base_free - peak_free)) * c
            / (rng.range(10.0, 60.0) * MINUTE)
    } else {
        0.0
    };
    // Leaving a share behind: the base reaches the threshold in 20–60 min.
    let keep = if cross && !fills {
        (base_free - THRESHOLD) * c / (rng.range(20.0, 60.0) * MINUTE / period)
    } else {
        0.0
    };
    let (scratch, kept) = (sim.project("scratch"), sim.project("kept"));
    let mut next = period * rng.range(0.0, 1.0);
    let mut tooth_start = f64::NEG_INFINITY;
    let mut left = 0.0;
    for k in 1..sim.n() {
        let t = sim.t[k];
        if t >= next {
            tooth_start = t;
            next += period * (1.0 + 0.1 * rng.normal()).max(0.5);
            if t >= starts_at {
                left += keep;
            }
        }
        let phase = t - tooth_start;
        let size = if phase < rise {
            amp * (phase / rise).min(1.0)
        } else if phase < rise + sim.interval {
            amp
        } else {
            0.0
        };
        sim.sizes[scratch][k] = size;
        let filled = if t >= starts_at {
            fill_rate * (t - starts_at)
        } else {
            0.0
        };
        sim.sizes[kept][k] = left + filled;
    }
}
