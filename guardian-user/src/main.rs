//! The `guardian` binary: sets up logging (`guardian::logfmt`: the journal's format under
//! systemd), parses the command line and hands over to the CLI
//! module; maps errors to exit codes (1 runtime failure, 2 usage or config error).

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    guardian::logfmt::init();
    let parsed = cli::Cli::parse();
    if !parsed.is_service() {
        // `guardian status | head`: a reader that went away ends a report command quietly, as
        // it does `cat`, instead of a panic on the failed write.
        // SAFETY: setting a signal disposition to its default is async-signal-safe and done
        // before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli::run(parsed) {
        Ok(code) => code,
        Err(e) if e.is::<cli::UsageError>() => {
            eprintln!("guardian: {e}");
            ExitCode::from(cli::EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("guardian: {e:#}");
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
