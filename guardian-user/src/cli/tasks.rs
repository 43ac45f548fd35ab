//! `guardian task done`, `guardian ghosts` and `guardian sessions`: thin glue over
//! `guardian::tasks`, with human and JSON output (paths escaped losslessly, a closed pipe is not
//! an error).

use super::{load_config, UsageError, EXIT_FAILURE};
use guardian::cleanup::AuditLog;
use guardian::config::human_bytes;
use guardian::tasks::clock::{human_secs, now_secs};
use guardian::tasks::completion::{self, DoneError, DoneStatus};
use guardian::tasks::db::TaskDb;
use guardian::tasks::sessions::Verdict;
use guardian::tasks::sweep::{self, Inputs, Scope};
use guardian::tasks::{ghosts, Cancel, Recorder, RunningProtection};
use guardian::textpath::shown;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

/// The statuses a wrapper may report.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StatusArg {
    Done,
    Failed,
    Error,
    Discarded,
}

impl From<StatusArg> for DoneStatus {
    fn from(s: StatusArg) -> DoneStatus {
        match s {
            StatusArg::Done => DoneStatus::Done,
            StatusArg::Failed => DoneStatus::Failed,
            StatusArg::Error => DoneStatus::Error,
            StatusArg::Discarded => DoneStatus::Discarded,
        }
    }
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text)
}

/// `guardian config check`'s look at the task DB: when the DB file exists, every configured
/// statement is prepared against it with the authorizer (a statement that would write, or that
/// names a missing table or column, is a config error naming its key).
pub fn check_statements(file: &Path, config: &guardian::config::Config) -> anyhow::Result<()> {
    let Some(db) = TaskDb::from_config(&config.tasks) else {
        return Ok(());
    };
    match db.check_statements() {
        Ok(true) => emit(&format!(
            "{}: task DB statements prepare against {} (read-only, authorizer on)\n",
            shown(file),
            shown(db.path())
        )),
        Ok(false) => emit(&format!(
            "{}: task DB {} does not exist: statements checked as text only\n",
            shown(file),
            shown(db.path())
        )),
        Err(e) => Err(UsageError(format!(
            "config error in {} at key `{}`: {}",
            shown(file),
            e.key,
            e.message
        ))
        .into()),
    }
}

/// `guardian task done`: the completion policy for one work dir.
pub fn task_done(
    config: Option<&Path>,
    dir: &Path,
    status: StatusArg,
    task: Option<&str>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let report = match completion::task_done(&config, dir, status.into(), task) {
        Ok(r) => r,
        Err(DoneError::Usage(m)) => {
            return Err(UsageError(format!("task done: {m}; nothing was deleted")).into())
        }
        Err(DoneError::Runtime(m)) => anyhow::bail!("task done: {m}"),
    };
    if as_json {
        json(&report)?;
    } else {
        emit(&format!("{}\n", report.message))?;
    }
    Ok(match report.result.as_str() {
        "deleted" | "would_delete" | "kept" | "already_gone" => ExitCode::SUCCESS,
        _ => {
            if !as_json {
                eprintln!(
                    "guardian: task done: the work dir stays; the periodic sweep deletes it once nothing protects it"
                );
            }
            ExitCode::from(EXIT_FAILURE)
        }
    })
}

/// `guardian ghosts`: one run of the ghost reaper, with its report.
pub fn ghosts(config: Option<&Path>, dry_run: bool, as_json: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let Some(db) = TaskDb::from_config(&config.tasks) else {
        return Err(UsageError(
            "ghosts: tasks.db is not set in the config: there is no task DB to look at".into(),
        )
        .into());
    };
    let dry_run = dry_run || config.daemon.dry_run;
    let node = config.tasks.node_name();
    let log;
    let recorder = if dry_run {
        None
    } else {
        log = AuditLog::open(&config.daemon.audit_log).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the audit log {}: {e}",
                shown(&config.daemon.audit_log)
            )
        })?;
        Some(Recorder::new(&log))
    };
    let report = ghosts::reap(
        &db,
        &config.tasks,
        &node,
        now_secs(),
        dry_run,
        recorder.as_ref(),
        &Cancel::never(),
    )?;
    if as_json {
        json(&report)?;
    } else {
        emit(&ghosts::render(&report))?;
    }
    Ok(if report.error.is_some() {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// `guardian sessions`: every workspace child with its size, idle time and verdict. Reads
/// only (the task DB is opened read-only).
pub fn sessions(config: Option<&Path>, as_json: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let protection = RunningProtection::new(&config, None, &Cancel::never());
    let now = now_secs();
    let tasks = protection.fresh_for_command();
    let activity = sweep::read_activity(&config, &protection, now, &Cancel::never());
    let registry = completion::read_registry(&config.daemon.state_dir).unwrap_or_default();
    let no_writes = |_: &Path| None;
    let inputs = Inputs {
        tasks: &tasks,
        activity,
        registry: &registry,
        writes: &no_writes,
    };
    let overview = sweep::gather(&config, &inputs, now, Scope::All);
    if as_json {
        json(&overview)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} · task state: {}",
        overview.node,
        match (&overview.task_state_unknown, protection.db()) {
            (Some(e), _) => format!("UNKNOWN ({e}): nothing is deleted"),
            (None, Some(db)) => format!("from {}", shown(db.path())),
            (None, None) => "no task DB configured".into(),
        }
    );
    if overview.sessions.is_empty() {
        let _ = writeln!(out, "no work dirs or sessions found");
    } else {
        let _ = writeln!(
            out,
            "{:<8} {:>10} {:>9} {:<7} {:<40} REASON",
            "KIND", "SIZE", "IDLE", "VERDICT", "PATH"
        );
    }
    for s in &overview.sessions {
        let _ = writeln!(
            out,
            "{:<8} {:>10} {:>9} {:<7} {:<40} {}",
            format!("{:?}", s.kind).to_lowercase(),
            human_bytes(s.bytes),
            human_secs(s.idle_secs),
            match s.verdict {
                Verdict::Keep => "keep",
                Verdict::Delete => "delete",
            },
            shown(&s.path).to_string(),
            s.reason
        );
    }
    for u in &overview.usage {
        let _ = writeln!(out, "{}", u.message());
    }
    for e in &overview.errors {
        let _ = writeln!(out, "warning: {e}");
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}
