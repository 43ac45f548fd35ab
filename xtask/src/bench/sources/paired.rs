//! The probe alone against the empty floor, in paired rounds. Each round runs dd three times back
//! to back: with no BPF program, with the empty floor and with Guardian's real probe. The probe is
//! loaded in this process with `EbpfSource::load()`, the project registered and its maps drained
//! every 250 ms as the daemon does, with the write countdown armed on the filesystem (a budget
//! larger than the run, so every write pays for the countdown and none wakes). The order rotates from round to round. The figures are
//! medians of per-round differences, so the machine's drift between rounds (the daemon rounds
//! are minutes apart) cancels out. Each run also checks that the probe counted exactly the bytes
//! dd wrote.

use super::runner::{Dd, Measured};
use crate::bench::check_cancel;
use crate::bench::report::{self, median};
use anyhow::{bail, Context, Result};
use guardian::sources::ebpf::{load_empty_floor, EbpfSource};
use guardian::sources::{ProjectDir, Source};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Rounds of the paired phase per block size. Single rounds spread over about ±5 pp on this
/// shared VM; with 31, the 95% interval of the median was ±0.4 to ±1 pp wide in the runs of
/// 2026-11-22 (docs/benchmarks.md).
pub(super) const ROUNDS: usize = 31;

/// How often the probe's maps are read during a run (the daemon's default `sample_interval`).
const DRAIN_EVERY: Duration = Duration::from_millis(250);

/// The three arms of a round, in the order of `Round::wall`.
#[derive(Clone, Copy)]
enum Arm {
    Bare,
    Floor,
    Probe,
}

const ARMS: [Arm; 3] = [Arm::Bare, Arm::Floor, Arm::Probe];

/// dd's wall time (seconds) with each arm in one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Round {
    pub wall: [f64; 3],
}

impl Round {
    /// Throughput lost against the bare run, in % (as the daemon table's "slowdown").
    fn slowdown(&self, arm: Arm) -> f64 {
        (1.0 - self.wall[Arm::Bare as usize] / self.wall[arm as usize]) * 100.0
    }

    /// The probe's slowdown minus the floor's, in percentage points.
    pub fn above_floor_pp(&self) -> f64 {
        self.slowdown(Arm::Probe) - self.slowdown(Arm::Floor)
    }

    pub fn probe_slowdown(&self) -> f64 {
        self.slowdown(Arm::Probe)
    }
}

/// The paired rounds of one block size.
pub(super) struct Paired {
    pub rounds: Vec<Round>,
    pub writes: u64,
}

impl Paired {
    pub fn above_floor_pp(&self) -> f64 {
        median(&self.above_floor_rounds())
    }

    pub fn probe_slowdown(&self) -> f64 {
        median(
            &self
                .rounds
                .iter()
                .map(Round::probe_slowdown)
                .collect::<Vec<_>>(),
        )
    }

    /// Median extra wall time per write of the probe over the floor, in ns.
    pub fn ns_above_floor(&self) -> f64 {
        let per_write = |r: &Round| {
            (r.wall[Arm::Probe as usize] - r.wall[Arm::Floor as usize]) * 1e9 / self.writes as f64
        };
        median(&self.rounds.iter().map(per_write).collect::<Vec<_>>())
    }

    /// 95% confidence interval of `above_floor_pp` (see `report::median_ci95`).
    pub fn above_floor_ci95(&self) -> Option<(f64, f64)> {
        report::median_ci95(&self.above_floor_rounds())
    }

    /// Each round's `Round::above_floor_pp`, in round order.
    pub fn above_floor_rounds(&self) -> Vec<f64> {
        self.rounds.iter().map(Round::above_floor_pp).collect()
    }

    /// Lowest and highest per-round above-floor figure.
    pub fn above_floor_range(&self) -> (f64, f64) {
        report::min_max(&self.above_floor_rounds())
    }
}

/// Runs the paired rounds on `dd`, whose file lies in `project`.
pub(super) fn measure(dd: &Dd<'_>, project: &Path, cancel: &AtomicBool) -> Result<Paired> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let mut wall = [0.0; 3];
        for k in 0..ARMS.len() {
            check_cancel(cancel)?;
            let arm = ARMS[(k + round) % ARMS.len()];
            let m = match arm {
                Arm::Bare => dd.measure(None)?,
                Arm::Floor => {
                    let floor = load_empty_floor().context("loading the empty eBPF floor")?;
                    let m = dd.measure(None)?;
                    drop(floor);
                    m
                }
                Arm::Probe => with_probe(dd, project)?,
            };
            wall[arm as usize] = m.wall.as_secs_f64();
        }
        let r = Round { wall };
        eprintln!(
            "bench: sources: paired round {} bs={}: probe {:+.1} pp above the floor",
            round + 1,
            dd.bs,
            r.above_floor_pp()
        );
        rounds.push(r);
    }
    Ok(Paired {
        rounds,
        writes: dd.count,
    })
}

/// One measured dd with Guardian's probe loaded here, watching `project` and drained every
/// `DRAIN_EVERY`; fails unless the probe counted exactly the bytes dd wrote.
fn with_probe(dd: &Dd<'_>, project: &Path) -> Result<Measured> {
    let mut source = EbpfSource::load().context("loading the probe")?;
    let meta = std::fs::metadata(project)?;
    source.watch(&[ProjectDir {
        id: 1,
        path: project.into(),
        dev: meta.dev(),
        ino: meta.ino(),
    }])?;
    // Armed as the daemon arms it: every write spends from the budget.
    source.arm(&[guardian::sources::countdown::Budget::new(
        meta.dev(),
        u64::MAX / 2,
    )]);
    source.drain()?;
    let done = AtomicBool::new(false);
    let (measured, counted) = std::thread::scope(|scope| {
        let drainer = scope.spawn(|| -> Result<i64> {
            let mut counted = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(DRAIN_EVERY);
                counted += source.drain()?.growth.get(&1).copied().unwrap_or(0);
            }
            Ok(counted)
        });
        let measured = dd.measure(None);
        done.store(true, Ordering::Relaxed);
        let counted = drainer.join().expect("drainer thread");
        (measured, counted)
    });
    let measured = measured?;
    let counted = counted? + source.drain()?.growth.get(&1).copied().unwrap_or(0);
    let expected = (dd.count * dd.bs_bytes) as i64 * (1 + i64::from(measured.repeated));
    if counted != expected {
        bail!("the probe counted {counted} bytes, dd wrote {expected}");
    }
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_figures() {
        // 1.00 s bare, 1.01 s floor, 1.03 s probe.
        let r = Round {
            wall: [1.0, 1.01, 1.03],
        };
        assert!((r.probe_slowdown() - 2.9126).abs() < 1e-3);
        assert!((r.above_floor_pp() - (2.9126 - 0.9901)).abs() < 1e-3);
        let p = Paired {
            rounds: vec![
                r,
                Round {
                    wall: [1.0, 1.0, 1.0],
                },
                Round {
                    wall: [1.0, 1.0, 1.1],
                },
            ],
            writes: 1_000_000,
        };
        assert!((p.above_floor_pp() - r.above_floor_pp()).abs() < 1e-9);
        assert!((p.ns_above_floor() - 20.0).abs() < 1e-6);
        let (lo, hi) = p.above_floor_range();
        assert!(lo.abs() < 1e-9 && (hi - 9.0909).abs() < 1e-3);
    }
}
