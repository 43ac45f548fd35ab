//! Recorded traces (xtask/traces/*.csv, written by `cargo xtask forecast-record`): the format,
//! and their replay as families of `forecast-eval` (each recording looped for an hour onto a
//! disk sized and filled so that the threshold sits at a chosen place relative to the
//! recording's peak, with or without a slow fill underneath that makes a peak cross).
//!
//! Format (CSV with `#` header lines):
//!
//! ```text
//! # guardian forecast trace: tool=cargo size_bytes=4294967296 interval_ms=250
//! # recorded 2025-01-01 12:00 UTC on Linux 6.1 (301 s, 1204 samples)
//! t_ms,used_bytes
//! 0,0
//! 250,4096
//! ```
//!
//! `t_ms`: milliseconds since the start (increasing); `used_bytes`: the filesystem's used bytes
//! (statvfs: (blocks − free blocks) × fragment size); `size_bytes`: its size.

use super::rng::Rng;
use super::traces::{crossing_instance, Trace, MINUTE, THRESHOLD};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;

/// One recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub tool: String,
    pub size_bytes: u64,
    pub interval_ms: u64,
    /// Free text: when and where it was recorded.
    pub note: String,
    pub t_ms: Vec<u64>,
    pub used: Vec<u64>,
}

const MAGIC: &str = "# guardian forecast trace:";
const COLUMNS: &str = "t_ms,used_bytes";

impl Recorded {
    pub fn to_csv(&self) -> String {
        let mut out = format!(
            "{MAGIC} tool={} size_bytes={} interval_ms={}\n# {}\n{COLUMNS}\n",
            self.tool, self.size_bytes, self.interval_ms, self.note
        );
        for (t, u) in self.t_ms.iter().zip(&self.used) {
            let _ = writeln!(out, "{t},{u}");
        }
        out
    }

    /// Parses a trace file's text; `what` names it in errors.
    pub fn parse(what: &str, text: &str) -> Result<Recorded> {
        let mut lines = text.lines().enumerate();
        let first = lines.next().map(|(_, l)| l).unwrap_or("");
        let Some(fields) = first.strip_prefix(MAGIC) else {
            bail!("{what}: line 1 must start with `{MAGIC}`");
        };
        let mut rec = Recorded {
            tool: String::new(),
            size_bytes: 0,
            interval_ms: 0,
            note: String::new(),
            t_ms: Vec::new(),
            used: Vec::new(),
        };
        for field in fields.split_whitespace() {
            let (k, v) = field
                .split_once('=')
                .with_context(|| format!("{what}: line 1: `{field}` is not key=value"))?;
            let number = || {
                v.parse::<u64>()
                    .with_context(|| format!("{what}: line 1: {k}={v} is not a number"))
            };
            match k {
                "tool" => rec.tool = v.to_string(),
                "size_bytes" => rec.size_bytes = number()?,
                "interval_ms" => rec.interval_ms = number()?,
                _ => {}
            }
        }
        if rec.tool.is_empty() || rec.size_bytes == 0 || rec.interval_ms == 0 {
            bail!("{what}: line 1 needs tool=, size_bytes= and interval_ms=");
        }
        let mut columns = false;
        for (n, line) in lines {
            let n = n + 1;
            if let Some(note) = line.strip_prefix('#') {
                if rec.note.is_empty() {
                    rec.note = note.trim().to_string();
                }
                continue;
            }
            if !columns {
                if line.trim() != COLUMNS {
                    bail!("{what}: line {n}: expected the column line `{COLUMNS}`");
                }
                columns = true;
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let (t, u) = line
                .split_once(',')
                .with_context(|| format!("{what}: line {n}: expected `t_ms,used_bytes`"))?;
            let t: u64 = t
                .trim()
                .parse()
                .with_context(|| format!("{what}: line {n}: t_ms `{t}` is not a number"))?;
            let u: u64 = u
                .trim()
                .parse()
                .with_context(|| format!("{what}: line {n}: used_bytes `{u}` is not a number"))?;
            if rec.t_ms.last().is_some_and(|&last| t <= last) {
                bail!("{what}: line {n}: time does not increase");
            }
            if u > rec.size_bytes {
                bail!(
                    "{what}: line {n}: {u} bytes used on a {} B filesystem",
                    rec.size_bytes
                );
            }
            rec.t_ms.push(t);
            rec.used.push(u);
        }
        if rec.t_ms.len() < 10 {
            bail!("{what}: fewer than 10 samples");
        }
        Ok(rec)
    }

    /// Bytes between the lowest and the highest level.
    pub fn amplitude(&self) -> u64 {
        let max = self.used.iter().copied().max().unwrap_or(0);
        let min = self.used.iter().copied().min().unwrap_or(0);
        max - min
    }

    /// Seconds from the first sample to one interval past the last (one loop of the replay).
    pub fn span_s(&self) -> f64 {
        let first = self.t_ms.first().copied().unwrap_or(0);
        let last = self.t_ms.last().copied().unwrap_or(0);
        (last - first + self.interval_ms) as f64 / 1000.0
    }
}

/// How long each replay lasts (the recording looped).
pub const REPLAY_LENGTH: f64 = 60.0 * MINUTE;

/// Where a replay puts the threshold: the recording's range (highest − lowest used) is
/// `range` of the disk, its highest level leaves `margin` of the disk above the threshold
/// (both fractions of the size), and crossing instances get a slow fill underneath.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    pub range: f64,
    pub margin: f64,
    pub cross: bool,
}

/// The placement of instance `i` (before jitter): disks from 7 to 50 times the recording's
/// range, peaks 0.3 to 3 pp above the threshold; 3 of every 8 do not cross.
pub fn placement(i: u32) -> Placement {
    let (range, margin) = [
        (0.10, 0.01),
        (0.05, 0.005),
        (0.10, 0.01),
        (0.15, 0.02),
        (0.02, 0.003),
        (0.05, 0.005),
        (0.15, 0.03),
        (0.02, 0.003),
    ][(i % 8) as usize];
    Placement {
        range,
        margin,
        cross: crossing_instance(i),
    }
}

/// Instance `i` of the family replaying `rec`: the recording looped for `REPLAY_LENGTH` from
/// a random phase, on a disk whose size makes the recording's range `range` of it and whose
/// highest level is `margin` above the threshold (both jittered ±15 %). Crossing instances:
/// after 10–20 min a steady fill starts underneath (a job that keeps what it writes) whose
/// bytes reach the margin 8–20 min later, so the first peak after that crosses, at the latest
/// one loop of the recording later.
pub fn replay(rec: &Recorded, family: &str, i: u32, seed: u64) -> Trace {
    let mut rng = Rng::new(Rng::seed_of(&[family], seed.wrapping_mul(1000) + i as u64));
    let p = placement(i);
    let range = p.range * rng.range(0.85, 1.15);
    let margin = p.margin * rng.range(0.85, 1.15);
    let amplitude = rec.amplitude().max(1) as f64;
    let capacity = (amplitude / range).round();
    let peak = rec.used.iter().copied().max().unwrap_or(0) as f64;
    // free = capacity × (threshold + margin) + peak − used − fill
    let top = capacity * (THRESHOLD + margin) + peak;
    let (fill_at, fill_rate) = if p.cross {
        let at = rng.range(10.0, 20.0) * MINUTE;
        (at, margin * capacity / (rng.range(8.0, 20.0) * MINUTE))
    } else {
        (f64::INFINITY, 0.0)
    };
    let span = rec.span_s();
    let t0 = rec.t_ms.first().copied().unwrap_or(0) as f64 / 1000.0;
    let start = rng.range(0.0, span);
    let (mut t, mut free) = (Vec::new(), Vec::new());
    // Sample k of loop n is at n × span + its time in the recording − start.
    let first = rec
        .t_ms
        .iter()
        .position(|&ms| ms as f64 / 1000.0 - t0 >= start)
        .unwrap_or(0);
    let mut k = first;
    let mut offset = -start;
    loop {
        let at = offset + rec.t_ms[k] as f64 / 1000.0 - t0;
        if at >= REPLAY_LENGTH {
            break;
        }
        let fill = if at > fill_at {
            fill_rate * (at - fill_at)
        } else {
            0.0
        };
        t.push(at);
        free.push((top - rec.used[k] as f64 - fill).max(0.0));
        k += 1;
        if k == rec.t_ms.len() {
            k = 0;
            offset += span;
        }
    }
    Trace {
        name: format!("{family}-{i}"),
        family_name: family.to_string(),
        capacity,
        interval_s: rec.interval_ms as f64 / 1000.0,
        t,
        free,
        projects: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sawtooth() -> Recorded {
        // 10 s teeth of 100 MB over a 50 MB base, sampled every 250 ms for 60 s.
        let t_ms: Vec<u64> = (0..240).map(|k| k * 250).collect();
        let used = t_ms
            .iter()
            .map(|&ms| 50_000_000 + (ms % 10_000) * 10_000)
            .collect();
        Recorded {
            tool: "test".into(),
            size_bytes: 1 << 30,
            interval_ms: 250,
            note: "made up".into(),
            t_ms,
            used,
        }
    }

    #[test]
    fn csv_round_trips() {
        let rec = sawtooth();
        assert_eq!(Recorded::parse("t", &rec.to_csv()).unwrap(), rec);
    }

    #[test]
    fn bad_csv_names_the_line() {
        let rec = sawtooth();
        let text = rec.to_csv().replacen("\n250,", "\n250x,", 1);
        let err = format!("{:#}", Recorded::parse("f.csv", &text).unwrap_err());
        assert!(err.contains("f.csv: line 5"), "{err}");
        let text = rec.to_csv().replacen("\n250,", "\n0,", 1);
        let err = format!("{:#}", Recorded::parse("f.csv", &text).unwrap_err());
        assert!(err.contains("time does not increase"), "{err}");
        let err = format!("{:#}", Recorded::parse("f.csv", "t_ms,used\n").unwrap_err());
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn replay_places_the_peak_above_the_threshold_and_only_crossing_instances_cross() {
        let rec = sawtooth();
        for i in 0..16 {
            let trace = replay(&rec, "saw", i, 1);
            let p = placement(i);
            let threshold = THRESHOLD * trace.capacity;
            let span = trace.t.last().unwrap() - trace.t[0];
            assert!(span > REPLAY_LENGTH - 1.0, "instance {i} lasts {span} s");
            assert!(trace.t.windows(2).all(|w| w[1] > w[0]));
            let crossing = trace.free.iter().position(|&f| f < threshold);
            assert_eq!(crossing.is_some(), p.cross, "instance {i}");
            // Before any fill the lowest free level is the peak, `margin` above the threshold.
            let early: f64 = trace
                .t
                .iter()
                .zip(&trace.free)
                .take_while(|(t, _)| **t < 10.0 * MINUTE)
                .map(|(_, f)| *f)
                .fold(f64::INFINITY, f64::min);
            let above = (early - threshold) / trace.capacity;
            assert!(
                (above - p.margin).abs() <= 0.16 * p.margin,
                "instance {i}: peak {above} above, want {}",
                p.margin
            );
            // The range is `range` of the disk.
            let amp = rec.amplitude() as f64 / trace.capacity;
            assert!((amp - p.range).abs() <= 0.16 * p.range, "instance {i}");
        }
    }

    /// The recordings in xtask/traces/: real (written by forecast-record), small, a few
    /// minutes at the daemon's sampling, ending where they started (so that they loop), and
    /// every replay crosses exactly when its placement says so.
    #[test]
    fn committed_recordings_are_small_real_loops_and_replay_as_placed() {
        use crate::forecast::traces::Family;
        let recorded: Vec<Family> = Family::ALL
            .into_iter()
            .filter(|f| f.recording().is_some())
            .collect();
        assert_eq!(recorded.len(), 4);
        for family in recorded {
            let (file, text) = family.recording().unwrap();
            assert!(text.len() <= 200_000, "{file}: {} bytes", text.len());
            let rec = Recorded::parse(file, text).unwrap();
            assert!(rec.note.starts_with("recorded "), "{file}: {}", rec.note);
            assert_eq!(rec.interval_ms, 250, "{file}");
            let span = rec.span_s();
            assert!((120.0..=900.0).contains(&span), "{file}: {span} s");
            // Sampling kept up: no gap over 1 s.
            let gap = rec.t_ms.windows(2).map(|w| w[1] - w[0]).max().unwrap();
            assert!(gap <= 1000, "{file}: a {gap} ms gap");
            let amplitude = rec.amplitude();
            assert!(amplitude >= 20_000_000, "{file}: range {amplitude} B");
            let (first, last) = (rec.used[0], *rec.used.last().unwrap());
            assert!(
                first.abs_diff(last) <= amplitude / 20,
                "{file}: starts at {first} B, ends at {last} B"
            );
            for i in 0..8 {
                let trace = replay(&rec, family.name(), i, 1);
                let threshold = THRESHOLD * trace.capacity;
                let crossed = trace.free.iter().any(|&f| f < threshold);
                assert_eq!(crossed, placement(i).cross, "{file} instance {i}");
            }
        }
    }
}
