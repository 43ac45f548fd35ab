//! The sources section's results in words: per-workload notes (noise, BPF time, paired rounds),
//! the goal checks, the terminal summary and the `docs/benchmarks.md` section.

use super::bpf_stats::Attribution;
use super::runner::{ATTEMPTS, INTERFERENCE};
use super::{
    Setup, SourcesReport, Workload, FLOOR_GOAL_PP, NS_PER_RUN_GOAL, SETTLE, SETUPS,
    SLOWDOWN_64K_GOAL,
};
use crate::bench::report::{self, machine_table, median, wrap, Machine, RunInfo};
use crate::bench::thousands;
use std::fmt::Write as _;
use std::time::Duration;

impl Workload {
    fn median_mbps(&self, setup: usize, bytes: u64) -> f64 {
        median(&self.runs[setup].mbps(bytes))
    }

    /// Where the BPF time goes, one sentence.
    fn attribution_note(&self) -> Option<String> {
        let a = self.attribution.as_ref()?;
        let wall = median(
            &self.runs[0]
                .wall
                .iter()
                .map(Duration::as_secs_f64)
                .collect::<Vec<_>>(),
        );
        let base = wall * 1e9 / a.writes as f64;
        let (floor, probe) = a.ns_per_write_medians();
        let first = a.runs.first()?;
        Some(format!(
            "BPF run time per dd write, from {} extra runs with `kernel.bpf_stats_enabled = 1` \
             (restored afterwards; not part of the figures above) in which the empty floor and \
             Guardian's probe were attached at once, so both are timed on the same writes — half \
             the runs with the floor attached first, half with the probe first, since the first \
             program on a hook meets colder caches. Medians: empty floor {floor:.0} ns ({}), \
             Guardian's probe {probe:.0} ns ({}). A write without Guardian takes {base:.0} ns \
             here (median wall time / writes), so the probe's programs add {:.1}% and the \
             floor's {:.1}% (the tracepoint dispatch around the programs is not in these \
             figures).{}",
            a.runs.len(),
            Attribution::describe(&first.floor, a.writes),
            Attribution::describe(&first.probe, a.writes),
            probe / base * 100.0,
            floor / base * 100.0,
            a.run_ratio()
                .map(|(probe, floor, ratio)| format!(
                    " Per call of the busiest program (`run_time_ns / run_cnt`): the probe's \
                     {probe:.1} ns (write countdown armed by the daemon) against the empty \
                     floor's {floor:.1} ns; the median of the runs' ratios {ratio:.2}× (runs: \
                     {}) — the stable figure the probe's goal is judged by (the throughput \
                     rounds swing by tens of pp on shared VMs).",
                    a.ratios().join(", ")
                ))
                .unwrap_or_default(),
        ))
    }

    /// How noisy the runs were: the spread of the no-Guardian runs, and the idle poll daemon
    /// (which cannot slow dd down) against no Guardian.
    fn noise_note(&self, bytes: u64) -> String {
        let mbps = self.runs[0].mbps(bytes);
        let (lo, hi) = report::min_max(&mbps);
        let poll = SETUPS
            .iter()
            .position(|s| *s == Setup::Daemon("poll"))
            .expect("poll setup");
        let others: f64 = self.runs.iter().flat_map(|r| &r.others).sum();
        let wall: f64 = self
            .runs
            .iter()
            .flat_map(|r| &r.wall)
            .map(Duration::as_secs_f64)
            .sum();
        let repeated: u32 = self.runs.iter().map(|r| r.repeated).sum();
        let interfered: u32 = self.runs.iter().map(|r| r.interfered).sum();
        format!(
            "Noise: the no-Guardian runs spread {:.1}% (slowest to fastest); the `poll` daemon, \
             which does nothing per write, measured {:+.1}% against no Guardian. Everything but \
             dd and the daemon used {:.2} CPUs on average during the counted runs \
             (`/proc/stat`); {repeated} runs were repeated because something else used more \
             than {INTERFERENCE} CPUs during them, {interfered} counted although still disturbed \
             after {ATTEMPTS} attempts.",
            (hi / lo - 1.0) * 100.0,
            self.slowdown(poll, bytes),
            (others / wall.max(1e-3)).max(0.0)
        )
    }

    /// The paired rounds, one paragraph.
    fn paired_note(&self) -> String {
        let p = &self.paired;
        let (lo, hi) = p.above_floor_range();
        format!(
            "Probe alone, {} paired rounds (no BPF, the floor, Guardian's probe loaded in the \
             bench process and drained every 250 ms; order rotated; medians of per-round \
             differences): the probe is {:+.1} pp above the floor ({}; {:+.0} ns per write; \
             rounds from {lo:+.1} to {hi:+.1} pp) and {:.1}% slower than no BPF. Per-round \
             figures: {}. Every probe run counted exactly the bytes dd wrote.",
            p.rounds.len(),
            p.above_floor_pp(),
            ci95_text(p.above_floor_ci95()),
            p.ns_above_floor(),
            p.probe_slowdown(),
            p.above_floor_rounds()
                .iter()
                .map(|pp| format!("{pp:+.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Throughput lost against no Guardian, in %.
    fn slowdown(&self, setup: usize, bytes: u64) -> f64 {
        (1.0 - self.median_mbps(setup, bytes) / self.median_mbps(0, bytes)) * 100.0
    }
}

/// "95% CI a to b pp" for a median's interval.
fn ci95_text(ci: Option<(f64, f64)>) -> String {
    match ci {
        Some((lo, hi)) => format!("95% CI {lo:+.1} to {hi:+.1} pp"),
        None => "too few rounds for a 95% CI".into(),
    }
}

/// A goal check.
struct Check {
    what: String,
    measured: String,
    passed: bool,
}

impl SourcesReport {
    /// The goals, checked on the paired rounds (the probe alone against the floor).
    fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        for w in &self.workloads {
            let fs = w.fs.split([',', ' ']).next().unwrap_or("");
            if w.bs_bytes == 4096 {
                if let Some((probe, floor, ratio)) =
                    w.attribution.as_ref().and_then(Attribution::run_ratio)
                {
                    checks.push(Check {
                        what: format!(
                            "{fs}, 4 KiB: eBPF probe (`exit_write`, countdown armed) ≤ \
                             {NS_PER_RUN_GOAL}× the empty floor's ns per run (kernel \
                             `bpf_stats`, same host, same run)"
                        ),
                        measured: format!("{probe:.1} ns vs {floor:.1} ns ({ratio:.2}×)"),
                        passed: ratio <= NS_PER_RUN_GOAL,
                    });
                }
                let above = w.paired.above_floor_pp();
                checks.push(Check {
                    what: format!(
                        "{fs}, 4 KiB: eBPF probe within {FLOOR_GOAL_PP} pp of the empty floor \
                         (paired rounds)"
                    ),
                    measured: format!(
                        "{above:+.1} pp ({})",
                        ci95_text(w.paired.above_floor_ci95())
                    ),
                    passed: above <= FLOOR_GOAL_PP,
                });
            } else {
                let slowdown = w.paired.probe_slowdown();
                checks.push(Check {
                    what: format!(
                        "{fs}, 64 KiB: eBPF probe slowdown ≤ {SLOWDOWN_64K_GOAL}% (paired rounds)"
                    ),
                    measured: format!("{slowdown:.1}%"),
                    passed: slowdown <= SLOWDOWN_64K_GOAL,
                });
            }
        }
        checks
    }

    pub fn verdict(&self) -> &'static str {
        if self.checks().iter().all(|c| c.passed) {
            "pass"
        } else {
            "MISS"
        }
    }

    pub fn print(&self) {
        println!("== Write throughput with each source ==");
        println!("eBPF probe: {}", self.ebpf_mode);
        for w in &self.workloads {
            let bytes = (self.params.dd_bytes / w.bs_bytes) * w.bs_bytes;
            println!("{} dd bs={}:", w.fs, w.bs);
            for (i, setup) in SETUPS.iter().enumerate() {
                let r = &w.runs[i];
                println!(
                    "  {:<9} median {:>7.0} MB/s  slowdown {:>5.1}%  above floor {:>5.1} pp  \
                     daemon cpu {:>6}  others {:.2} s  runs {}",
                    setup.short(),
                    w.median_mbps(i, bytes),
                    w.slowdown(i, bytes),
                    w.slowdown(i, bytes) - w.slowdown(1, bytes),
                    cpu_ms(&r.daemon_cpu),
                    median(&r.others),
                    list(&r.mbps(bytes)),
                );
            }
            println!("  {}", w.noise_note(bytes));
            if let Some(note) = w.attribution_note() {
                println!("  {note}");
            }
            println!("  {}", w.paired_note());
        }
        for c in self.checks() {
            println!(
                "  goal: {}: {} → {}",
                c.what,
                c.measured,
                if c.passed { "pass" } else { "MISS" }
            );
        }
    }

    pub fn markdown(&self, machine: &Machine, run: &RunInfo) -> String {
        let p = &self.params;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Write throughput with each source: `dd bs=4k` and `bs=64k`\n"
        );
        let ext4 = if p.ext4 {
            " (and, for comparison, on a loop-mounted ext4; its file is synced before each run)"
        } else {
            ""
        };
        let method = format!(
            "`dd if=/dev/zero of=PROJECT/zero.bin bs=4k count={} conv=notrunc` and the same \
             with `bs=64k`: {} GiB per run, rewriting in place a file written once beforehand, \
             in a project of a guarded workspace on a tmpfs{ext4}. Nothing waits on a device, \
             so the run is bound by the CPU and the cost of the write hooks dominates: the worst \
             case, on a disk the same cost is a smaller share. The file is rewritten rather \
             than created anew because this VM hands freed guest pages back to the host \
             (virtio-balloon free page reporting): a new file's pages fault in on the host at \
             random, and identical new-file runs took 0.7–3 s; the hooks see the same syscalls \
             either way. Setups: no Guardian; the empty eBPF floor \
             (`guardian::sources::ebpf::load_empty_floor()` in the bench process: the probe \
             object's empty `noop` program on the same 8 `syscalls/sys_exit_*` \
             tracepoints); the real `target/release/guardian run --config CFG` with `source = \
             ebpf | fanotify | inotify | poll`, `sample_interval = 250ms`, thresholds that are \
             never crossed (no cleanup runs), started for each run, ready (state file written: \
             source open, projects registered, first check done) plus {} ms, and stopped with \
             SIGTERM after it. One unmeasured warm-up dd per block size, then {} rounds; in each \
             round every setup runs once, the order rotated from round to round. MB/s = bytes / \
             dd's wall time (10^6 bytes); slowdown = throughput lost against no Guardian \
             (medians); \"above floor\" = slowdown minus the floor's, in percentage points. \
             Daemon CPU = utime + stime of the daemon (all threads) from `/proc/PID/stat` over \
             the dd (10 ms ticks; BPF programs run inside dd's syscalls, so they count as dd's \
             system time, not the daemon's); dd CPU likewise from this process's cutime + \
             cstime.",
            p.dd_bytes / 4096,
            p.dd_bytes as f64 / (1u64 << 30) as f64,
            SETTLE.as_millis(),
            p.runs
        );
        let _ = writeln!(s, "{}\n", wrap(&method, "", 100));
        let mut filesystems: Vec<String> = Vec::new();
        for w in &self.workloads {
            if !filesystems.contains(&w.fs) {
                filesystems.push(w.fs.clone());
            }
        }
        s += &machine_table(
            machine,
            &[
                ("Filesystem", filesystems.join("; ")),
                ("Workspace", self.workspace.clone()),
                ("eBPF probe", self.ebpf_mode.clone()),
            ],
            run,
        );
        for w in &self.workloads {
            let bytes = (p.dd_bytes / w.bs_bytes) * w.bs_bytes;
            let _ = writeln!(
                s,
                "### {}, `dd bs={}` ({} writes of {} KiB)\n",
                w.fs.split(" (").next().unwrap_or(&w.fs),
                w.bs,
                thousands(bytes / w.bs_bytes),
                w.bs_bytes / 1024
            );
            let _ = writeln!(
                s,
                "| Setup | Median MB/s | Slowdown | Above floor | Daemon CPU (median) | dd CPU \
                 (median) | Runs (MB/s) |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|");
            for (i, setup) in SETUPS.iter().enumerate() {
                let r = &w.runs[i];
                let (slow, above) = if i == 0 {
                    ("—".to_string(), "—".to_string())
                } else if i == 1 {
                    (format!("{:.1}%", w.slowdown(i, bytes)), "—".to_string())
                } else {
                    (
                        format!("{:.1}%", w.slowdown(i, bytes)),
                        format!("{:+.1} pp", w.slowdown(i, bytes) - w.slowdown(1, bytes)),
                    )
                };
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {} | {} | {} | {:.2} s | {} |",
                    setup.label(),
                    w.median_mbps(i, bytes),
                    slow,
                    above,
                    cpu_ms(&r.daemon_cpu),
                    report::median(
                        &r.dd_cpu
                            .iter()
                            .map(Duration::as_secs_f64)
                            .collect::<Vec<_>>()
                    ),
                    list(&r.mbps(bytes))
                );
            }
            let _ = writeln!(s);
            let _ = writeln!(s, "{}\n", wrap(&w.noise_note(bytes), "", 100));
            if let Some(note) = w.attribution_note() {
                let _ = writeln!(s, "{}\n", wrap(&note, "", 100));
            }
            let _ = writeln!(s, "{}\n", wrap(&w.paired_note(), "", 100));
        }
        let _ = writeln!(s, "| Goal | Measured | Result |");
        let _ = writeln!(s, "|---|---:|---|");
        for c in self.checks() {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                c.what,
                c.measured,
                if c.passed { "pass" } else { "MISS" }
            );
        }
        s
    }
}

fn cpu_ms(v: &[Duration]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    let ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    format!("{:.0} ms", median(&ms))
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}
