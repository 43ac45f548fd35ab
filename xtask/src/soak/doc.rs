//! The verdicts of a soak and of an adversary run, and their sections of docs/benchmarks.md
//! (`<!-- bench:soak -->`, `<!-- bench:soak-attacks -->`), written through the bench's report
//! writer: every figure comes from the run's report, none is typed by hand.

use super::stress::adversary;
use super::stress::attacks::{self, AttackReport};
use super::stress::churn;
use super::stress::fsx::MIB;
use super::stress::logscan::SPAM_WINDOW_SECS;
use super::stress::soak::{self, SoakReport, Trend};
use super::{FD_SPREAD_LIMIT, RSS_LATE_SLOPE_LIMIT_KIB_PER_MIN};
use crate::bench::report::{machine_table, wrap, Machine, RunInfo};
use std::fmt::Write as _;

/// The check that fails when a run was cancelled (its figures do not go into the doc).
pub const RAN_TO_ITS_END: &str = "ran to its end";

/// One checked goal.
pub struct Check {
    pub name: String,
    pub measured: String,
    pub passed: bool,
}

fn check(name: impl Into<String>, measured: impl Into<String>, passed: bool) -> Check {
    Check {
        name: name.into(),
        measured: measured.into(),
        passed,
    }
}

/// The soak's goals (issue 12): flat RSS and fds, no message more than once a minute, no
/// ENOSPC while reclaimable bytes existed, protected dirs byte-identical — and the invariants
/// the harness checks on the way (the daemon ran throughout, the audit log is complete).
pub fn soak_checks(r: &SoakReport) -> Vec<Check> {
    let fd_spread = (r.fds.max - r.fds.start).max(r.fds.start - r.fds.min);
    let spam: u64 = r.log.spam.values().map(|(n, _)| n).sum();
    vec![
        check(
            format!("RSS flat: second-half slope under {RSS_LATE_SLOPE_LIMIT_KIB_PER_MIN} KiB/min"),
            format!("{:+.1} KiB/min", r.rss_kib.late_slope_per_min),
            r.rss_kib.late_slope_per_min < RSS_LATE_SLOPE_LIMIT_KIB_PER_MIN,
        ),
        check(
            format!("fds flat: within {FD_SPREAD_LIMIT} of the start"),
            format!(
                "{:.0} → {:.0} (min {:.0}, max {:.0})",
                r.fds.start, r.fds.end, r.fds.min, r.fds.max
            ),
            fd_spread <= FD_SPREAD_LIMIT && r.fds.end <= r.fds.start + 2.0,
        ),
        check(
            "no message more than once a minute per cause",
            format!("{spam} repeat(s)"),
            spam == 0,
        ),
        check(
            "no ENOSPC while reclaimable bytes existed",
            format!(
                "{} of {} ENOSPC",
                r.enospc_with_reclaimable.len(),
                r.enospc_total
            ),
            r.enospc_with_reclaimable.is_empty(),
        ),
        check(
            "protected dirs byte-identical",
            if r.protected_changes.is_empty() {
                "identical".to_string()
            } else {
                format!("{} change(s)", r.protected_changes.len())
            },
            r.protected_changes.is_empty(),
        ),
        check(
            "daemon ran throughout, audit log complete",
            format!(
                "{} problem(s), {} audit lines",
                r.daemon_problems.len() + r.audit_problems.len() + r.log.unparsed.len(),
                r.audit_lines
            ),
            r.daemon_problems.is_empty()
                && r.audit_problems.is_empty()
                && r.log.unparsed.is_empty(),
        ),
        check("cleanups ran", format!("{} cycles", r.cycles), r.cycles > 0),
        check(
            RAN_TO_ITS_END,
            format!("{:.0} s", r.duration_s),
            !r.cancelled,
        ),
    ]
}

/// The adversary's goals (issue 11): everything outside policy byte-identical, the daemon ran
/// throughout, the audit log complete with nothing deleted outside the workspaces.
pub fn attack_checks(r: &AttackReport) -> Vec<Check> {
    vec![
        check(
            "everything outside policy byte-identical",
            if r.digest_changes.is_empty() {
                "identical".to_string()
            } else {
                format!("{} change(s)", r.digest_changes.len())
            },
            r.digest_changes.is_empty(),
        ),
        check(
            "audit log parses, every intent closed, nothing deleted outside policy",
            format!("{} problem(s)", r.audit_problems.len()),
            r.audit_problems.is_empty(),
        ),
        check(
            "daemon ran throughout",
            format!(
                "{} problem(s)",
                r.daemon_problems.len() + r.log.unparsed.len()
            ),
            r.daemon_problems.is_empty() && r.log.unparsed.is_empty(),
        ),
        check(
            "Guardian cleaned under attack",
            format!("{} deletions in {} cycles", r.deletions, r.cycles),
            r.deletions > 0,
        ),
        check(
            RAN_TO_ITS_END,
            format!("{:.0} s", r.duration_s),
            !r.cancelled,
        ),
    ]
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / MIB as f64)
}

fn trend(t: &Trend, unit: &str) -> String {
    let sp = if unit.is_empty() { "" } else { " " };
    format!(
        "{:.0} → {:.0}{sp}{unit} (min {:.0}, max {:.0}); slope {:+.1}{sp}{unit}/min, second half {:+.1}",
        t.start, t.end, t.min, t.max, t.slope_per_min, t.late_slope_per_min
    )
}

/// "10 minutes", "1 minute", "45 s".
fn minutes(seconds: f64) -> String {
    let m = (seconds / 60.0).round();
    if seconds < 90.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{m:.0} minutes")
    }
}

fn checks_table(s: &mut String, checks: &[Check]) {
    let _ = writeln!(s, "| Goal | Measured | Result |");
    let _ = writeln!(s, "|---|---|---|");
    for c in checks {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            c.name,
            c.measured,
            if c.passed { "pass" } else { "FAIL" }
        );
    }
}

pub fn soak_markdown(r: &SoakReport, checks: &[Check], machine: &Machine, run: &RunInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Soak: {} of churn on a {} MiB tmpfs\n",
        minutes(r.duration_s),
        r.fs_bytes / MIB
    );
    let method = format!(
        "Written by `cargo xtask soak --write-doc` (tests/support/stress/soak.rs; a short smoke \
         of the same code runs in `cargo test`, tests/soak.rs). The release `guardian run` \
         guards one workspace on a fresh {} MiB tmpfs that also holds its audit log and state \
         (thresholds 20 / 10 / 30 %, poll 1 s, sample 250 ms, source `auto`, forecasts off). \
         Old projects fill it to {:.0}% used first; then churn writers, each a child process, \
         write at a bounded rate: {}. A modules writer fills fresh projects with \
         `node_modules`-like trees (40–120 packages of 0.5–16 KiB files, a few 0.25–2 MiB \
         binaries) and deletes its oldest project beyond {}; the logs writer appends and rotates \
         at 12 MiB; the big writer writes 16–48 MiB artifacts and keeps 2. Protected for the \
         whole run and compared byte for byte at the end: `output` (on the protect list), a \
         project with `.guardian-keep`, a project a `sleep` has its cwd in, and a tree outside \
         the workspace, each holding a `node_modules` the rule matches. Every second the \
         daemon's VmRSS, open fds and threads are read from /proc (slopes: least squares). Its \
         stderr is parsed: a warning or error of one cause (level, target, message with digits \
         blanked, mount) twice within {:.0} s counts as a repeat; per-event lines (a cycle \
         starting) are counted apart. Every writer ENOSPC is recorded with the bytes of \
         unprotected `node_modules` measured at that moment; one with at least {} MiB \
         reclaimable fails the run.",
        r.fs_bytes / MIB,
        soak::PRELOAD_USED_PERCENT,
        r.writers.join(", "),
        churn::KEEP_PROJECTS,
        SPAM_WINDOW_SECS,
        soak::RECLAIMABLE_SLACK / MIB
    );
    let _ = writeln!(s, "{}\n", wrap(&method, "", 100));
    s += &machine_table(
        machine,
        &[
            ("Filesystem", format!("tmpfs, {} MiB", r.fs_bytes / MIB)),
            ("Write source", r.source.clone()),
            ("Seed", r.seed.to_string()),
        ],
        run,
    );
    let _ = writeln!(s, "| Figure | Value |");
    let _ = writeln!(s, "|---|---|");
    let rows = [
        ("Duration", format!("{:.0} s", r.duration_s)),
        (
            "Written by the churn",
            format!("{} in {} files", mib(r.written_bytes), r.written_files),
        ),
        (
            "Cleanup cycles",
            format!(
                "{}: one every {:.1} s on average (min {:.1}, max {:.1})",
                r.cycles, r.cycle_interval.0, r.cycle_interval.1, r.cycle_interval.2
            ),
        ),
        (
            "Deletions",
            format!(
                "{} ({}); {} unlinked, {} freed",
                r.actions,
                outcomes(&r.outcomes),
                mib(r.bytes_unlinked),
                mib(r.bytes_freed)
            ),
        ),
        (
            "Writes into a dir Guardian had just deleted",
            r.deleted_under_writers.to_string(),
        ),
        ("Lowest free space", format!("{:.1} %", r.min_free_percent)),
        ("Daemon RSS", trend(&r.rss_kib, "KiB")),
        ("Daemon fds", trend(&r.fds, "")),
        ("Daemon threads", trend(&r.threads, "")),
        (
            "Log lines",
            format!(
                "{} ({}); per-event lines {}",
                r.log.lines,
                outcomes(&r.log.by_level),
                r.log.events.values().sum::<u64>()
            ),
        ),
        (
            "Busiest log cause",
            r.log
                .busiest
                .as_ref()
                .map(|(c, n)| format!("{n} × `{c}`"))
                .unwrap_or_default(),
        ),
        (
            "ENOSPC seen by writers",
            format!(
                "{} ({} while reclaimable bytes existed)",
                r.enospc_total,
                r.enospc_with_reclaimable.len()
            ),
        ),
        (
            "Audit log",
            format!("{} lines, every intent closed", r.audit_lines),
        ),
        ("Samples", format!("{} (1 s apart)", r.samples)),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {} |", v.replace('|', "\\|"));
    }
    let _ = writeln!(s);
    checks_table(&mut s, checks);
    s
}

fn outcomes(m: &std::collections::BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn attacks_markdown(
    r: &AttackReport,
    checks: &[Check],
    machine: &Machine,
    run: &RunInfo,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Randomized adversary: {} of attacks while Guardian cleans at ~{:.0}% used\n",
        minutes(r.duration_s),
        attacks::KEEP_USED_PERCENT
    );
    let method = format!(
        "Written by `cargo xtask soak-attacks --write-doc` (tests/support/stress/attacks.rs \
         and adversary.rs; a short smoke of the same code runs in `cargo test`, \
         tests/attacks_random.rs). The release `guardian run` guards two workspaces on a fresh \
         {} MiB tmpfs (thresholds 10 / 7 / 12 %, so phase 1 and phase 2 both run; \
         `active_within` 1 s; poll 200 ms). A filler outside the workspaces takes it to 75% \
         used and victim projects (`node_modules` of 0.5–1.5 MiB) are created whenever it is \
         under {:.0}% used. A hostile child process runs five threads for the whole run: \
         symlink swaps (a victim's `node_modules`, one of its packages, or the victim itself \
         renamed away and replaced by a symlink to an outside tree, a protected dir, another \
         filesystem or `/`, then put back), bind mounts (an outside tree on the same \
         filesystem, another filesystem, a protected dir — onto a victim, its `node_modules`, a \
         package or a new dir in it; up to 1.5 s), renames (between the workspaces, \
         `node_modules` into another victim, victims out of the workspaces and back), hostile \
         names (non-UTF-8, newline, control and escape characters, 250-byte names, inside too) \
         and holds (open files, `sleep` with its cwd in a victim). Outside policy and compared \
         byte for byte after the run: the trees outside the workspaces (same and other \
         filesystem), `output` in both workspaces (protect list), a `.guardian-keep` project \
         in each, a project a `sleep` has its cwd in and one with a file held open for the \
         whole run. An action counted `.failed` found its victim changed or gone (usually \
         deleted by Guardian) and did nothing.",
        attacks::FS_BYTES / MIB,
        attacks::KEEP_USED_PERCENT
    );
    let _ = writeln!(s, "{}\n", wrap(&method, "", 100));
    s += &machine_table(
        machine,
        &[
            (
                "Filesystem",
                format!("tmpfs, {} MiB", attacks::FS_BYTES / MIB),
            ),
            ("Write source", r.source.clone()),
            ("Seed", r.seed.to_string()),
        ],
        run,
    );
    let _ = writeln!(s, "| Figure | Value |");
    let _ = writeln!(s, "|---|---|");
    let rows = [
        ("Duration", format!("{:.0} s", r.duration_s)),
        ("Rounds (cleanup cycles under attack)", r.cycles.to_string()),
        ("Hostile actions", r.hostile_actions().to_string()),
        ("Victim projects created", r.victims_created.to_string()),
        (
            "Deletions",
            format!("{} ({})", r.deletions, outcomes(&r.outcomes)),
        ),
        (
            "Bytes deleted",
            format!(
                "{} unlinked, {} freed",
                mib(r.bytes_unlinked),
                mib(r.bytes_freed)
            ),
        ),
        (
            "Tmpfs used (min / mean / max)",
            format!(
                "{:.1} / {:.1} / {:.1} %",
                r.used_percent.0, r.used_percent.1, r.used_percent.2
            ),
        ),
        (
            "Log lines",
            format!("{} ({})", r.log.lines, outcomes(&r.log.by_level)),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "| Hostile action | Done | Found its victim changed |");
    let _ = writeln!(s, "|---|---:|---:|");
    let observation = |k: &str| adversary::OBSERVATIONS.contains(&k);
    for (k, n) in r
        .actions
        .iter()
        .filter(|(k, _)| !k.ends_with(".failed") && !observation(k))
    {
        let failed = r.actions.get(&format!("{k}.failed")).copied().unwrap_or(0);
        let _ = writeln!(s, "| `{k}` | {n} | {failed} |");
    }
    for (k, n) in r.actions.iter().filter(|(k, _)| {
        k.ends_with(".failed") && !r.actions.contains_key(k.trim_end_matches(".failed"))
    }) {
        let _ = writeln!(s, "| `{}` | 0 | {n} |", k.trim_end_matches(".failed"));
    }
    let _ = writeln!(s);
    for (k, n) in r.actions.iter().filter(|(k, _)| observation(k)) {
        let what = match k.as_str() {
            "bind.left_mounted" => "bind mounts whose victim a rename had moved when the adversary came to unmount them (unmounted by the harness at the end)",
            _ => "files a `hold` thread found unlinked when it let them go (it opened them while a deletion that had already checked protection was under way)",
        };
        let _ = writeln!(s, "- {n} {what}.");
    }
    let _ = writeln!(s);
    checks_table(&mut s, checks);
    s
}
