//! `guardian task done`, `guardian ghosts` and `guardian sessions`: thin glue over
//! `guardian::tasks`, with human and JSON output.

use super::{load_config, UsageError, EXIT_FAILURE};
use guardian::cleanup::AuditLog;
use guardian::config::human_bytes;
use guardian::tasks::clock::{human_secs, now_secs};
use guardian::tasks::completion::{self, DoneError, DoneStatus};
use guardian::tasks::db::TaskDb;
use guardian::tasks::sessions::{self, Scope};
use guardian::tasks::{ghosts, Recorder, RunningProtection};
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

/// `guardian task done`: the completion policy for one work dir.
pub fn task_done(
    config: Option<&Path>,
    dir: &Path,
    status: StatusArg,
    task: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let report = match completion::task_done(&config, dir, status.into(), task) {
        Ok(r) => r,
        Err(DoneError::Usage(m)) => {
            return Err(UsageError(format!("task done: {m}; nothing was deleted")).into())
        }
        Err(DoneError::Runtime(m)) => anyhow::bail!("task done: {m}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.message);
    }
    Ok(match report.result.as_str() {
        "deleted" | "would_delete" | "kept" | "already_gone" => ExitCode::SUCCESS,
        _ => {
            if !json {
                eprintln!(
                    "guardian: task done: the work dir stays; the periodic sweep retries once nothing protects it"
                );
            }
            ExitCode::from(EXIT_FAILURE)
        }
    })
}

/// `guardian ghosts`: one run of the ghost reaper, with its report.
pub fn ghosts(config: Option<&Path>, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
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
                config.daemon.audit_log.display()
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
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", ghosts::render(&report));
    }
    Ok(if report.error.is_some() {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// `guardian sessions`: every workspace child with its size, idle time and verdict.
pub fn sessions(config: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let protection = RunningProtection::new(&config, None);
    let db = TaskDb::from_config(&config.tasks);
    let registry = completion::read_registry(&config.daemon.state_dir).unwrap_or_default();
    let overview = sessions::gather(
        &config,
        &protection,
        db.as_ref(),
        &registry,
        now_secs(),
        Scope::All,
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&overview)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "node {} · task state: {}",
        overview.node,
        match (&overview.task_state_unknown, &db) {
            (Some(e), _) => format!("UNKNOWN ({e}): nothing is deleted"),
            (None, Some(db)) => format!("from {}", db.path().display()),
            (None, None) => "no task DB configured".into(),
        }
    );
    if overview.sessions.is_empty() {
        println!("no work dirs or sessions found");
    } else {
        println!(
            "{:<8} {:>10} {:>9} {:<7} {:<40} REASON",
            "KIND", "SIZE", "IDLE", "VERDICT", "PATH"
        );
    }
    for s in &overview.sessions {
        println!(
            "{:<8} {:>10} {:>9} {:<7} {:<40} {}",
            format!("{:?}", s.kind).to_lowercase(),
            human_bytes(s.bytes),
            human_secs(s.idle_secs),
            match s.verdict {
                sessions::Verdict::Keep => "keep",
                sessions::Verdict::Delete => "delete",
            },
            s.path.display(),
            s.reason
        );
    }
    for u in &overview.usage {
        println!("{}", u.message());
    }
    for e in &overview.errors {
        println!("warning: {e}");
    }
    Ok(ExitCode::SUCCESS)
}
