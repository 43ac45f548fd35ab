//! `guardian retention [--dry-run] [--json]`: every `[[retention]]` rule's dirs and series,
//! what is kept and why, what goes and how many bytes; without `--dry-run` the executor carries
//! it out (and audits it). Thin glue over `guardian::retention`.

use super::{load_config, EXIT_FAILURE};
use guardian::cleanup::{AuditLog, Executor, ExtraProtection};
use guardian::config::human_bytes;
use guardian::retention::{self, RuleReport, Verdict};
use guardian::textpath::shown;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

pub fn retention(config: Option<&Path>, dry_run: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let executor = if dry_run {
        None
    } else {
        let audit = AuditLog::open(&config.daemon.audit_log).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the audit log {}: {e}",
                shown(&config.daemon.audit_log)
            )
        })?;
        let none: ExtraProtection = Arc::new(|_: &Path| None);
        Some(Executor::new(
            config.workspaces.clone(),
            audit,
            config.daemon.dry_run,
            Arc::new(AtomicBool::new(false)),
            none,
        ))
    };
    let (reports, failed) =
        retention::run(&config, executor.as_ref(), &|_| true, None, &mut |_| {});
    if as_json {
        let dirs = || reports.iter().flat_map(|r| &r.dirs);
        let mut text = serde_json::to_string_pretty(&serde_json::json!({
            "dry_run": dry_run || config.daemon.dry_run,
            "entries_to_delete": dirs().map(|d| d.entries_to_delete).sum::<usize>(),
            "bytes_to_delete": dirs().map(|d| d.bytes_to_delete).fold(0u64, u64::saturating_add),
            "rules": reports,
            "error": failed.as_ref().map(|e| e.to_string()),
        }))?;
        text.push('\n');
        emit(&text)?;
    } else {
        emit(&human(&reports, dry_run || config.daemon.dry_run))?;
    }
    if let Some(e) = failed {
        eprintln!("guardian retention: {e}");
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    let errors = reports
        .iter()
        .flat_map(|r| &r.dirs)
        .filter(|d| d.error.is_some())
        .count();
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

fn human(reports: &[RuleReport], dry_run: bool) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        out.push_str("no [[retention]] rules configured\n");
        return out;
    }
    let (mut count, mut bytes) = (0usize, 0u64);
    for r in reports {
        let _ = writeln!(
            out,
            "rule {}{}: {} dir(s)",
            r.rule,
            if r.compress { " (compress)" } else { "" },
            r.dirs.len()
        );
        for d in &r.dirs {
            let _ = writeln!(out, "  {}", shown(&d.dir));
            if let Some(e) = &d.error {
                let _ = writeln!(out, "    left alone: {e}");
            }
            for s in &d.series {
                if !s.key.is_empty() {
                    let _ = writeln!(out, "    series {}", s.key);
                }
                for e in &s.entries {
                    let verb = match (e.verdict, r.compress) {
                        (Verdict::Keep, _) => "keep    ",
                        (Verdict::Delete, false) => "delete  ",
                        (Verdict::Delete, true) => "compress",
                    };
                    let _ = writeln!(
                        out,
                        "      {verb} {:>10}  {}  {}",
                        e.bytes.map(human_bytes).unwrap_or_else(|| "-".into()),
                        shown(&e.name),
                        e.reasons.join("; ")
                    );
                }
            }
            if !d.untouched.is_empty() {
                let _ = writeln!(out, "    {} entries untouched", d.untouched.len());
            }
            for a in &d.actions {
                let _ = writeln!(
                    out,
                    "    {} {}: {}{}{}",
                    a.action,
                    shown(&a.path),
                    a.outcome,
                    if a.bytes_freed > 0 {
                        format!(", freed {}", human_bytes(a.bytes_freed))
                    } else {
                        String::new()
                    },
                    a.error
                        .as_ref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
            }
            count += d.entries_to_delete;
            bytes = bytes.saturating_add(d.bytes_to_delete);
        }
    }
    let _ = writeln!(
        out,
        "{count} entries ({}) {}",
        human_bytes(bytes),
        if dry_run {
            "would go (dry run)"
        } else {
            "to go"
        }
    );
    out
}
