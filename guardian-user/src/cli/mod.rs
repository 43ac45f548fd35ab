//! The command line: parses arguments into one mode and runs it. Each mode is a small function
//! over the library; exit codes are 0 ok, 1 runtime failure, 2 usage or config error.

mod demo;
mod output;
mod retention;
mod service;
mod tasks;
mod top;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use guardian::cleanup::ExtraProtection;
use guardian::config::Config;
use guardian::daemon::{self, Event, Guardian};
use guardian::textpath::shown;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Exit code for usage and config errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for runtime failures.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "guardian",
    version,
    long_version = guardian::sources::LONG_VERSION,
    about = "Keeps build and agent nodes from running out of disk"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: check free space every poll_interval, clean when a threshold is crossed.
    Run {
        /// Config file; the embedded default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Check once (cleaning if needed) and exit.
        #[arg(long)]
        once: bool,
        /// Log every action, delete nothing (overrides daemon.dry_run).
        #[arg(long)]
        dry_run: bool,
    },
    /// Print what a cleanup cycle would do now. Deletes nothing.
    Plan {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show each guarded filesystem and the last actions, from the daemon's state file.
    Status {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Size a tree like `du -sB1 -x` (allocated and apparent bytes, hard links once).
    Scan {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print or check configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// As root: mount a tmpfs sandbox, fill it like a busy node and watch Guardian keep it free.
    Demo {
        /// Size of the sandbox filesystem.
        #[arg(long, default_value = "256MiB")]
        size: String,
        /// How much the pretend running task writes, in percent of the sandbox (2% per 250 ms).
        #[arg(long, default_value_t = 45, value_parser = clap::value_parser!(u64).range(1..=100))]
        write_percent: u64,
    },
    /// Task lifecycle hooks for the task wrapper (`task done`).
    Task {
        #[command(subcommand)]
        action: TaskAction,
    },
    /// Find tasks `running` longer than tasks.ghosts.ghost_after on this node, kill their
    /// processes, mark them failed and release their slots; print a report.
    Ghosts {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Report what would be done; signal nothing, write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// List task work dirs and scratch sessions with size, idle time and verdict. Deletes nothing.
    Sessions {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Apply the [[retention]] rules: each series, what is kept and why, what goes and how many
    /// bytes (deleted or compressed through the executor, and audited).
    Retention {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Decide and report only; touch nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// A live view of the running daemon (its /status and /events): filesystems, forecasts,
    /// projects, writing cgroups, actions; `p` shows the next plan. `q` quits.
    Top {
        /// The daemon's address; default: `[serve] listen` of `--config` (127.0.0.1:9867).
        #[arg(long)]
        url: Option<String>,
        /// A file holding the bearer token; default: `[serve] token_file` of `--config`.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Read the address and the token file from this config's `[serve]`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Write the service file (systemd unit, or launchd plist on macOS) for CONFIG with the
    /// workspaces writable, and print the commands that enable it. Never enables or starts it.
    InstallService {
        /// The config the service runs with [default: /etc/guardian/guardian.toml].
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// systemd unit or launchd plist [default: the one of this OS].
        #[arg(long, value_enum)]
        kind: Option<service::Kind>,
        /// Where the file goes [default: /etc/systemd/system or /Library/LaunchDaemons].
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// The binary the service runs [default: this one].
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// Write the man pages and shell completions (bash, zsh, fish) into DIR (for packages).
    #[command(hide = true)]
    GenerateAssets { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
enum TaskAction {
    /// A task ended: done/discarded → delete its work dir now; failed/error → keep it for
    /// debugging (tasks.keep_failed_for, tasks.keep_failed_max). Exit 2 if PATH is not a work dir
    /// directly in a task area.
    Done {
        /// The task's work dir, e.g. /home/worker/dispatch/<project>.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_enum)]
        status: tasks::StatusArg,
        /// The task's id in the task DB: its own `running` row does not protect the dir.
        #[arg(long)]
        task: Option<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Print the embedded default configuration.
    Default,
    /// Validate a config file; exit 2 naming the key and line if it is wrong.
    Check { file: PathBuf },
}

impl Cli {
    /// True for the commands that run as a service (`run`, `demo`): they must not die of a
    /// closed pipe. The others print a report and are often piped into `head`.
    pub fn is_service(&self) -> bool {
        matches!(self.command, Command::Run { .. } | Command::Demo { .. })
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            config,
            once,
            dry_run,
        } => run_daemon(config.as_deref(), once, dry_run),
        Command::Plan { config, json } => plan(config.as_deref(), json),
        Command::Status { config, json } => status(config.as_deref(), json),
        Command::Scan { path, json } => scan(&path, json),
        Command::Config { action } => match action {
            ConfigAction::Default => {
                print!("{}", guardian::config::DEFAULT_CONFIG);
                Ok(ExitCode::SUCCESS)
            }
            ConfigAction::Check { file } => config_check(&file),
        },
        Command::Demo {
            size,
            write_percent,
        } => demo::run(&size, write_percent),
        Command::Task {
            action:
                TaskAction::Done {
                    dir,
                    status,
                    task,
                    config,
                    json,
                },
        } => tasks::task_done(config.as_deref(), &dir, status, task.as_deref(), json),
        Command::Ghosts {
            config,
            dry_run,
            json,
        } => tasks::ghosts(config.as_deref(), dry_run, json),
        Command::Sessions { config, json } => tasks::sessions(config.as_deref(), json),
        Command::Retention {
            config,
            dry_run,
            json,
        } => retention::retention(config.as_deref(), dry_run, json),
        Command::Top {
            url,
            token_file,
            config,
        } => {
            let serve = match &config {
                Some(path) => Some(load_config(Some(path))?.serve),
                None => None,
            };
            let url = url
                .or_else(|| serve.as_ref().map(|s| format!("http://{}", s.listen)))
                .unwrap_or_else(|| top::DEFAULT_URL.to_string());
            let token_file = token_file.or_else(|| serve.and_then(|s| s.token_file));
            top::top(&url, token_file.as_deref())
        }
        Command::InstallService {
            config,
            dry_run,
            kind,
            output_dir,
            binary,
        } => service::install_service(service::InstallArgs {
            config,
            dry_run,
            kind: kind.unwrap_or_else(service::Kind::native),
            output_dir,
            binary,
        }),
        Command::GenerateAssets { dir } => service::generate_assets(Cli::command(), &dir),
    }
}

/// A config error: printed, and the process exits with the usage code.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The config of every command: the file (read with limits) or the embedded default, validated
/// and its paths checked on disk (read-only) before anything runs.
fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p),
        None => Config::load_embedded_default(),
    }
    .map_err(|e| UsageError(e.to_string()).into())
}

fn config_check(file: &Path) -> anyhow::Result<ExitCode> {
    let config = load_config(Some(file))?;
    tasks::check_statements(file, &config)?;
    println!(
        "{}: ok ({} workspaces, {} rules)",
        shown(file),
        config.workspaces.len(),
        config.rules.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_daemon(path: Option<&Path>, once: bool, dry_run: bool) -> anyhow::Result<ExitCode> {
    let mut config = load_config(path)?;
    config.daemon.dry_run |= dry_run;
    raise_fd_limit();
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::unbounded();
    let reloads = daemon::ReloadRequests::default();
    spawn_signal_thread(cancel.clone(), reloads.clone(), tx)?;
    let no_extra: ExtraProtection = Arc::new(|_: &Path| None);
    let guardian = Guardian::new(config, cancel, no_extra)
        .map_err(|e| match e {
            daemon::DaemonError::Source(_) => anyhow::Error::from(UsageError(e.to_string())),
            e => e.into(),
        })?
        .reload_from(
            daemon::ReloadFrom {
                path: path.map(Path::to_path_buf),
                dry_run,
            },
            reloads,
        );
    guardian.run(rx, once)?;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT/SIGTERM set `cancel` (which stops a deletion between two entries) and wake the loop
/// to stop; past `daemon::SHUTDOWN_BOUND` this thread ends the process whatever still runs; SIGHUP asks for a reload of the config (a storm of
/// them is coalesced into one).
fn spawn_signal_thread(
    cancel: Arc<AtomicBool>,
    reloads: daemon::ReloadRequests,
    tx: crossbeam_channel::Sender<Event>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::flag::register(SIGINT, cancel.clone()).context("installing the SIGINT handler")?;
    signal_hook::flag::register(SIGTERM, cancel.clone())
        .context("installing the SIGTERM handler")?;
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reloads.request(&tx);
                } else {
                    tracing::info!(signal, "shutdown requested");
                    let _ = tx.send(Event::Shutdown);
                    // The backstop of the stop bound: the main thread normally returns (and
                    // the process exits) well before this.
                    std::thread::sleep(daemon::SHUTDOWN_BOUND);
                    tracing::error!(
                        "shutdown took longer than {:?}: exiting now (the next start finishes any deletion left without its outcome)",
                        daemon::SHUTDOWN_BOUND
                    );
                    std::process::exit(0);
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Deep trees are removed with one open fd per level: lift the soft limit to the hard one. Then
/// the process's fd table is grown once to [`FD_TABLE`] slots: a thread that opens the fd one
/// past the table's size grows it, and growing a table its threads share waits out an RCU grace
/// period while every other thread that opens a file waits too — measured at 10–20 ms, inside a
/// cleanup cycle, when a thousand `/events` clients had filled the first 1,024 slots. The table
/// never shrinks, so it is grown here, before any thread starts (no grace period to wait).
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
    }
    let room = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    // The largest table the limit allows, up to FD_TABLE (a power of two: the kernel sizes
    // tables in powers of two).
    let mut slots = FD_TABLE;
    while slots > 1024 && u64::from(slots) > room {
        slots /= 2;
    }
    // A duplicate of some fd at the table's last slot, closed at once (dropped).
    if let (Ok(root), Ok(last)) = (std::fs::File::open("/"), i32::try_from(slots - 1)) {
        let _ = rustix::io::fcntl_dupfd_cloexec(&root, last);
    }
}

/// Fd table slots reserved at start: the server's streams ([`crate::serve::MAX_STREAMS`]), its
/// scrapes and the deep removals' one fd per level fit (64 KiB of pointers).
const FD_TABLE: u32 = 8192;

fn plan(config: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let plans = daemon::plan_now(&config);
    if json {
        println!("{}", serde_json::to_string_pretty(&plans)?);
    } else {
        output::print_plans(&plans);
    }
    Ok(ExitCode::SUCCESS)
}

fn status(config: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config)?;
    let state = daemon::state::read_state_of(&config.daemon);
    if json {
        let value = match &state {
            Ok(s) => serde_json::to_value(s)?,
            Err(e) => serde_json::json!({
                "error": format!("no state in {}: {e}", shown(&config.daemon.runtime_dir())),
                "filesystems": output::live_filesystems(&config),
            }),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        output::print_status(&config, state.as_ref());
    }
    Ok(if state.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

fn scan(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let walked =
        guardian::scan::scan_path(path).with_context(|| format!("cannot scan {}", shown(path)))?;
    let usage = walked.tally.usage();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "path": guardian::textpath::escape(path),
                "allocated_bytes": usage.allocated,
                "apparent_bytes": usage.apparent,
                "inodes": usage.inodes,
                "files": usage.files,
                "dirs": usage.dirs,
                "symlinks": usage.symlinks,
                "errors": walked.errors,
                "mounts_skipped": walked
                    .mounts_skipped
                    .iter()
                    .map(|m| guardian::textpath::escape(m))
                    .collect::<Vec<_>>(),
            }))?
        );
    } else {
        println!("{}\t{}", usage.allocated, shown(path));
        println!(
            "# apparent {} B, {} files, {} dirs, {} symlinks",
            usage.apparent, usage.files, usage.dirs, usage.symlinks
        );
        for e in &walked.errors {
            eprintln!("guardian scan: {}: {}", shown(&e.path), e.error);
        }
        for m in &walked.mounts_skipped {
            eprintln!(
                "guardian scan: {}: other filesystem or mount, not entered",
                shown(m)
            );
        }
    }
    Ok(if walked.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}
