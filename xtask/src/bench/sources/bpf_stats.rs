//! Where the BPF time goes: a few more dd runs with the empty floor and the probe attached at
//! once while `kernel.bpf_stats_enabled` is on, so both are timed on the same writes, the
//! programs' run time read from `/proc/PID/fdinfo`.

use super::runner::Dd;
use super::SETTLE;
use crate::bench::daemon::{Daemon, DaemonConfig};
use crate::bench::report::median;
use crate::bench::thousands;
use anyhow::{Context, Result};
use std::path::Path;

/// Run time of one loaded BPF program, from `/proc/PID/fdinfo` (counted while
/// `kernel.bpf_stats_enabled` is 1).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ProgStat {
    insns: u64,
    run_ns: u64,
    runs: u64,
}

/// BPF time of one dd run with both attached: the floor's program and the probe's programs.
pub(super) struct PairedRun {
    /// Whether the floor was attached first (it then runs first on each write).
    pub(super) floor_first: bool,
    pub(super) floor: Vec<ProgStat>,
    pub(super) probe: Vec<ProgStat>,
}

/// BPF time of the attribution runs.
pub(super) struct Attribution {
    pub(super) writes: u64,
    pub(super) runs: Vec<PairedRun>,
}

/// Attribution runs: half with the floor attached first, half with the probe first (the first
/// program on a hook meets colder caches; alternating takes that out of the ratio).
pub(super) const RUNS: usize = 6;

impl Attribution {
    /// ns per call of the busiest program (the one on dd's `write`): the kernel's own
    /// `run_time_ns / run_cnt`, which neither the machine's load nor dd's page-cache work move.
    fn ns_per_run(progs: &[ProgStat]) -> Option<f64> {
        let busiest = progs.iter().max_by_key(|p| p.runs)?;
        (busiest.runs > 0).then(|| busiest.run_ns as f64 / busiest.runs as f64)
    }

    /// Each run's busiest-program ns per call: (floor attached first, probe, floor).
    fn per_run(&self) -> Vec<(bool, f64, f64)> {
        self.runs
            .iter()
            .filter_map(|r| {
                Some((
                    r.floor_first,
                    Self::ns_per_run(&r.probe)?,
                    Self::ns_per_run(&r.floor)?,
                ))
            })
            .collect()
    }

    /// The probe's ns per run against the floor's, medians over the runs, and the median of
    /// the runs' ratios: (probe, floor, ratio).
    pub(super) fn run_ratio(&self) -> Option<(f64, f64, f64)> {
        let runs = self.per_run();
        if runs.is_empty() {
            return None;
        }
        let of = |f: fn(&(bool, f64, f64)) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Some((of(|r| r.1), of(|r| r.2), of(|r| r.1 / r.2.max(1e-9))))
    }

    /// The runs' ratios, in run order, with the floor's place: "1.41 (floor first)".
    pub(super) fn ratios(&self) -> Vec<String> {
        self.per_run()
            .iter()
            .map(|&(floor_first, probe, floor)| {
                let first = if floor_first { "floor" } else { "probe" };
                format!("{:.2} ({first} first)", probe / floor.max(1e-9))
            })
            .collect()
    }

    /// Median over the runs of the floor's and of the probe's BPF time per write.
    pub(super) fn ns_per_write_medians(&self) -> (f64, f64) {
        let of = |pick: fn(&PairedRun) -> &Vec<ProgStat>| {
            median(
                &self
                    .runs
                    .iter()
                    .map(|r| Self::ns_per_write(pick(r), self.writes))
                    .collect::<Vec<_>>(),
            )
        };
        (of(|r| &r.floor), of(|r| &r.probe))
    }

    pub(super) fn ns_per_write(progs: &[ProgStat], writes: u64) -> f64 {
        progs.iter().map(|p| p.run_ns).sum::<u64>() as f64 / writes.max(1) as f64
    }

    /// The programs that ran for (about) every write, then the rest summed up.
    pub(super) fn describe(progs: &[ProgStat], writes: u64) -> String {
        let (main, rest): (Vec<&ProgStat>, Vec<&ProgStat>) =
            progs.iter().partition(|p| p.runs >= writes / 2);
        let mut parts: Vec<String> = main
            .iter()
            .map(|p| {
                format!(
                    "{} insns: {:.0} ns × {} calls",
                    thousands(p.insns),
                    p.run_ns as f64 / p.runs.max(1) as f64,
                    thousands(p.runs)
                )
            })
            .collect();
        if !rest.is_empty() {
            parts.push(format!(
                "other hooks: {} calls of other syscalls",
                thousands(rest.iter().map(|p| p.runs).sum())
            ));
        }
        parts.join("; ")
    }
}

/// Turns `kernel.bpf_stats_enabled` on and restores its previous value on drop.
struct BpfStats {
    old: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<BpfStats> {
        let old = std::fs::read_to_string(BPF_STATS)?.trim().to_string();
        std::fs::write(BPF_STATS, "1").with_context(|| format!("cannot write {BPF_STATS}"))?;
        Ok(BpfStats { old })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS, &self.old) {
            eprintln!("bench: cannot restore {BPF_STATS} to {}: {e}", self.old);
        }
    }
}

/// The BPF programs process `pid` holds, by fd, with their run time so far.
fn bpf_prog_stats(pid: u32) -> Result<Vec<(String, ProgStat)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let entry = entry?;
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some(stat) = parse_prog_fdinfo(&text) {
            out.push((entry.file_name().to_string_lossy().into_owned(), stat));
        }
    }
    Ok(out)
}

/// What ran between two `bpf_prog_stats` readings, busiest first.
fn prog_delta(before: &[(String, ProgStat)], after: &[(String, ProgStat)]) -> Vec<ProgStat> {
    let mut out: Vec<ProgStat> = after
        .iter()
        .map(|(fd, a)| {
            let b = before.iter().find(|(f, _)| f == fd).map(|(_, b)| b);
            ProgStat {
                insns: a.insns,
                run_ns: a.run_ns - b.map_or(0, |b| b.run_ns.min(a.run_ns)),
                runs: a.runs - b.map_or(0, |b| b.runs.min(a.runs)),
            }
        })
        .filter(|p| p.runs > 0)
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.run_ns));
    out
}

fn parse_prog_fdinfo(text: &str) -> Option<ProgStat> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    field("prog_type")?;
    Some(ProgStat {
        insns: field("verified_insns").unwrap_or(0),
        run_ns: field("run_time_ns")?,
        runs: field("run_cnt")?,
    })
}

/// `RUNS` more dd runs with the floor and the probe attached at once, BPF statistics on: the
/// time each spends per call on the same writes, so a host that speeds up or slows down
/// between runs moves both alike. Not part of the throughput figures (the statistics cost time
/// themselves).
pub(super) fn attribute(
    dd: &Dd<'_>,
    guardian_bin: &Path,
    config: &DaemonConfig<'_>,
) -> Result<Attribution> {
    let stats = BpfStats::enable()?;
    let me = std::process::id();
    let mut runs = Vec::new();
    for run in 0..RUNS {
        let floor_first = run % 2 == 0;
        let (floor, daemon) = if floor_first {
            let floor = guardian::sources::ebpf::load_empty_floor()?;
            (floor, Daemon::start(guardian_bin, config)?)
        } else {
            let daemon = Daemon::start(guardian_bin, config)?;
            (guardian::sources::ebpf::load_empty_floor()?, daemon)
        };
        std::thread::sleep(SETTLE);
        dd.settle()?;
        let before = (bpf_prog_stats(me)?, bpf_prog_stats(daemon.pid)?);
        dd.run()?;
        let after = (bpf_prog_stats(me)?, bpf_prog_stats(daemon.pid)?);
        daemon.stop()?;
        drop(floor);
        runs.push(PairedRun {
            floor_first,
            floor: prog_delta(&before.0, &after.0),
            probe: prog_delta(&before.1, &after.1),
        });
    }
    drop(stats);
    Ok(Attribution {
        writes: dd.count,
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_fdinfo_and_deltas() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_jited:\t1\n\
                    prog_tag:\t0dd81fb296a95794\nprog_id:\t2469\nrun_time_ns:\t34026423\n\
                    run_cnt:\t201618\nrecursion_misses:\t0\nverified_insns:\t3183\n";
        let p = parse_prog_fdinfo(text).unwrap();
        assert_eq!(
            p,
            ProgStat {
                insns: 3183,
                run_ns: 34_026_423,
                runs: 201_618
            }
        );
        assert_eq!(parse_prog_fdinfo("pos:\t0\nflags:\t02\n"), None);
        let before = vec![("15".to_string(), p.clone())];
        let mut later = p.clone();
        later.run_ns += 1_000;
        later.runs += 10;
        let idle = ProgStat {
            insns: 2,
            run_ns: 0,
            runs: 0,
        };
        let after = vec![("15".to_string(), later), ("16".to_string(), idle)];
        assert_eq!(
            prog_delta(&before, &after),
            vec![ProgStat {
                insns: 3183,
                run_ns: 1_000,
                runs: 10
            }]
        );
    }

    fn prog(run_ns: u64, runs: u64) -> ProgStat {
        ProgStat {
            insns: 10,
            run_ns,
            runs,
        }
    }

    #[test]
    fn the_ratio_is_the_median_of_the_runs_on_the_busiest_programs() {
        let run = |floor_first, floor_ns: u64, probe_ns: u64| PairedRun {
            floor_first,
            // The busiest program is the one on write; a quiet one beside it does not count.
            floor: vec![prog(floor_ns * 1000, 1000)],
            probe: vec![prog(probe_ns * 1000, 1000), prog(900_000, 3)],
        };
        let a = Attribution {
            writes: 1000,
            runs: vec![run(true, 60, 90), run(false, 80, 100), run(true, 70, 140)],
        };
        let (probe, floor, ratio) = a.run_ratio().unwrap();
        assert_eq!((probe, floor), (100.0, 70.0));
        assert_eq!(ratio, 1.5, "median of 1.5, 1.25 and 2.0");
        assert_eq!(
            a.ratios(),
            vec![
                "1.50 (floor first)",
                "1.25 (probe first)",
                "2.00 (floor first)"
            ]
        );
        assert_eq!(
            Attribution {
                writes: 1,
                runs: vec![]
            }
            .run_ratio(),
            None
        );
    }
}
