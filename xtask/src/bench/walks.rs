//! `--only scan` and `--only delete`: Guardian's scanner against `du -sx` and its cleanup
//! executor against `rm -rf`, on the same generated trees, interleaved, warm cache.

use super::*;

pub(super) fn scan_bench(
    args: &BenchArgs,
    guardian_bin: &Path,
    scratch: &Scratch,
    cancel: &AtomicBool,
) -> Result<Comparison> {
    let dir = scratch.root.join("scan");
    let stats = generate(&dir, args.scan_entries, SCAN_SEED, scratch, cancel)?;
    let du = || {
        let mut c = Command::new("du");
        c.arg("-sx").arg(&dir);
        c
    };
    let guardian = || {
        let mut c = Command::new(guardian_bin);
        c.arg("scan").arg(&dir).arg("--json");
        c
    };
    eprintln!(
        "bench: scan: one warm-up run each, then {} measured",
        args.runs
    );
    timed(&mut du())?;
    timed(&mut guardian())?;
    // The first reads after generation update directory atimes (relatime): write those now.
    scratch.settle()?;
    let (mut du_t, mut g_t) = (Timings::default(), Timings::default());
    let mut reports = Vec::new();
    for i in 0..args.runs {
        check_cancel(cancel)?;
        for guardian_turn in [i % 2 == 1, i % 2 == 0] {
            if guardian_turn {
                let (d, out) = timed(&mut guardian())?;
                g_t.runs.push(d);
                reports.push(serde_json::from_slice::<serde_json::Value>(&out)?);
            } else {
                du_t.runs.push(timed(&mut du())?.0);
            }
        }
    }
    let du_allocated = du_bytes(&dir, false)?;
    let du_apparent = du_bytes(&dir, true)?;
    let mut mismatch = None;
    for r in &reports {
        let allocated = r["allocated_bytes"].as_u64().unwrap_or(u64::MAX);
        let apparent = r["apparent_bytes"].as_u64().unwrap_or(u64::MAX);
        let errors = r["errors"].as_array().map_or(0, |e| e.len());
        if allocated != du_allocated || apparent != du_apparent || errors > 0 {
            mismatch = Some(format!(
                "guardian reported {allocated} allocated / {apparent} apparent bytes and \
                 {errors} errors; du -sB1 -x reports {du_allocated} / {du_apparent}"
            ));
        }
    }
    let first = &reports[0];
    let notes = match &mismatch {
        None => vec![format!(
            "Same sizes in every run: allocated {} bytes (`du -sB1 -x`), apparent {} bytes \
             (`du -sB1 -x --apparent-size`); guardian counted {} inodes ({} files, {} dirs, \
             {} symlinks).",
            thousands(du_allocated),
            thousands(du_apparent),
            thousands(first["inodes"].as_u64().unwrap_or(0)),
            thousands(first["files"].as_u64().unwrap_or(0)),
            thousands(first["dirs"].as_u64().unwrap_or(0)),
            thousands(first["symlinks"].as_u64().unwrap_or(0)),
        )],
        Some(_) => Vec::new(),
    };
    Ok(Comparison {
        key: "scan",
        title: "Scan: `guardian scan` vs `du -sx`".into(),
        method: format!(
            "Wall time of the whole process, sizing one generated tree; one unmeasured warm-up \
             run of each tool, then {} measured runs each, interleaved. `guardian scan` walks \
             with rayon over all CPUs; `du` is single-threaded.",
            args.runs
        ),
        tree: describe_tree(&stats, Some(du_allocated)),
        filesystem: scratch.filesystem.clone(),
        reference: Tool {
            name: "du",
            command: "du -sx DIR".into(),
            timings: du_t,
        },
        guardian: Tool {
            name: "guardian",
            command: "target/release/guardian scan DIR --json".into(),
            timings: g_t,
        },
        goal: SCAN_GOAL,
        notes,
        invalid: mismatch.map(|m| format!("SIZE MISMATCH: {m}")),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Deleter {
    Rm,
    Guardian,
}

pub(super) fn delete_bench(
    args: &BenchArgs,
    scratch: &Scratch,
    cancel: &Arc<AtomicBool>,
) -> Result<Comparison> {
    let workspace = scratch.root.join("delete");
    std::fs::create_dir(&workspace)?;
    let audit_path = scratch.base.join("audit.jsonl");
    let executor = Executor::new(
        vec![Workspace {
            path: workspace.clone(),
            protect: Vec::new(),
        }],
        AuditLog::open(&audit_path)?,
        false,
        cancel.clone(),
        Arc::new(|_: &Path| None),
    );
    let (mut rm_t, mut g_t) = (Timings::default(), Timings::default());
    let mut stats = TreeStats::default();
    let mut removed = Vec::new();
    for i in 0..args.runs {
        let order = if i % 2 == 0 {
            [Deleter::Rm, Deleter::Guardian]
        } else {
            [Deleter::Guardian, Deleter::Rm]
        };
        for who in order {
            check_cancel(cancel)?;
            let name = match who {
                Deleter::Rm => format!("rm-{i}"),
                Deleter::Guardian => format!("guardian-{i}"),
            };
            let tree = workspace.join(&name);
            stats = generate(&tree, args.delete_entries, DELETE_SEED, scratch, cancel)?;
            match who {
                Deleter::Rm => {
                    let (d, _) = timed(Command::new("rm").arg("-rf").arg(&tree))?;
                    eprintln!("bench: rm -rf: {:.3} s", d.as_secs_f64());
                    rm_t.runs.push(d);
                }
                Deleter::Guardian => {
                    let action = PlannedAction {
                        path: tree.clone(),
                        project: tree.clone(),
                        rule: "bench".into(),
                        phase: 1,
                        reason: "cargo xtask bench".into(),
                        bytes_estimated: 0,
                        inodes_estimated: 0,
                        identity: guardian::fsys::identity_of(&tree)?,
                        min_idle_secs: None,
                        rebuild: None,
                    };
                    let start = Instant::now();
                    let report = executor.execute(&action)?;
                    let d = start.elapsed();
                    eprintln!("bench: guardian executor: {:.3} s", d.as_secs_f64());
                    ensure!(
                        report.outcome == Outcome::Deleted,
                        "guardian did not delete {}: {} ({})",
                        tree.display(),
                        report.outcome.as_str(),
                        report.record.error.unwrap_or_default()
                    );
                    // Every name below the root, plus the root.
                    ensure!(
                        report.record.entries_removed == stats.entries + 1,
                        "guardian removed {} entries, the tree had {}",
                        report.record.entries_removed,
                        stats.entries + 1
                    );
                    removed.push(report.record.entries_removed);
                    g_t.runs.push(d);
                }
            }
            if tree.symlink_metadata().is_ok() {
                bail!("{} still exists after deletion", tree.display());
            }
        }
    }
    Ok(Comparison {
        key: "delete",
        title: "Delete: Guardian's executor vs `rm -rf`".into(),
        method: format!(
            "A fresh copy of the same generated tree for every run (generated, then synced to \
             disk, caches left warm); {} runs of each tool, interleaved. `rm -rf DIR` is timed \
             as a process; Guardian is the release-built library executor \
             (`guardian::cleanup::Executor::execute`, dry run off) called in-process and timed \
             around the call: workspace resolution with `O_NOFOLLOW` opens, process/lock/keep \
             re-check, the removal, `statvfs` before and after, and the fsync'd audit line. \
             Guardian removes sibling directories in parallel over all CPUs; `rm` is \
             single-threaded.",
            args.runs
        ),
        tree: format!("{} (a fresh copy per run)", describe_tree(&stats, None)),
        filesystem: scratch.filesystem.clone(),
        reference: Tool {
            name: "rm",
            command: "rm -rf DIR".into(),
            timings: rm_t,
        },
        guardian: Tool {
            name: "guardian",
            command: "guardian::cleanup::Executor::execute(DIR)".into(),
            timings: g_t,
        },
        goal: DELETE_GOAL,
        notes: vec![format!(
            "Guardian's audit lines reported every tree removed completely ({} entries each \
             including the tree's root).",
            thousands(removed.first().copied().unwrap_or(0))
        )],
        invalid: None,
    })
}

fn generate(
    dir: &Path,
    entries: u64,
    seed: u64,
    scratch: &Scratch,
    cancel: &AtomicBool,
) -> Result<TreeStats> {
    let start = Instant::now();
    let stats = tree::generate(dir, entries, seed, cancel)
        .with_context(|| format!("cannot generate the tree at {}", dir.display()))?;
    scratch.settle()?;
    eprintln!(
        "bench: generated {} entries in {} in {:.1} s (synced)",
        thousands(stats.entries),
        dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(stats)
}

fn describe_tree(s: &TreeStats, allocated: Option<u64>) -> String {
    let mut d = format!(
        "{} entries: {} files, {} dirs, {} symlinks, {} extra hard links; {:.2} GiB written",
        thousands(s.entries),
        thousands(s.files),
        thousands(s.dirs),
        thousands(s.symlinks),
        thousands(s.hard_links),
        s.bytes as f64 / (1u64 << 30) as f64
    );
    if let Some(a) = allocated {
        d += &format!(", {:.2} GiB allocated", a as f64 / (1u64 << 30) as f64);
    }
    d
}

/// Runs `cmd` to completion, its output captured; fails unless it exits 0.
fn timed(cmd: &mut Command) -> Result<(Duration, Vec<u8>)> {
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((elapsed, out.stdout))
}

/// `du -sB1 -x [--apparent-size] DIR` in bytes.
fn du_bytes(dir: &Path, apparent: bool) -> Result<u64> {
    let mut cmd = Command::new("du");
    cmd.args(["-sB1", "-x"]);
    if apparent {
        cmd.arg("--apparent-size");
    }
    let (_, out) = timed(cmd.arg(dir))?;
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("cannot parse du's output")
}
