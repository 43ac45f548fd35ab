//! Child processes Guardian runs (the journal vacuum, git maintenance): never waited on without a limit. The
//! child gets no stdin and no stdout; what it writes to stderr is kept (bounded) for the audit
//! line; past its time limit it is killed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most bytes of stderr kept for the message.
const STDERR_KEPT: usize = 2048;

/// When every running child is killed, whatever its own limit: set on shutdown so a `git gc`
/// never outlives the daemon's stop bound.
static STOP_ALL_BY: Mutex<Option<Instant>> = Mutex::new(None);

/// Kills every child running at `deadline` (and any started after it at once).
pub fn stop_all_by(deadline: Instant) {
    if let Ok(mut at) = STOP_ALL_BY.lock() {
        *at = Some(at.map_or(deadline, |known| known.min(deadline)));
    }
}

fn stop_all_at() -> Option<Instant> {
    STOP_ALL_BY.lock().ok().and_then(|at| *at)
}

/// Runs `argv` (no shell) and waits at most `limit`. `Err` says why it failed: not started,
/// killed after the limit, or a non-zero exit with the start of its stderr.
pub fn run_with_limit(argv: &[String], limit: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut command = Command::new(program);
    command.args(args);
    run_command_with_limit(command, program, limit)
}

/// [`run_with_limit`] for a command the caller set up (user, environment, directory); `program`
/// names it in messages. Stdin and stdout are set to null, stderr is kept.
pub fn run_command_with_limit(
    mut command: Command,
    program: &str,
    limit: Duration,
) -> Result<(), String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // Drained on its own thread so a chatty child never blocks on a full pipe.
    let reader = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            kept
        })
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("{program} did not finish within {limit:?}: killed"));
            }
            Ok(None) if stop_all_at().is_some_and(|at| Instant::now() >= at) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("{program} killed: Guardian is stopping"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(format!("cannot wait for {program}: {e}")),
        }
    };
    let stderr = reader
        .and_then(|r| r.join().ok())
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    match status? {
        s if s.success() => Ok(()),
        s => Err(format!("{program} exited with {s}: {stderr}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_child_past_its_limit_is_killed_and_reported() {
        let started = Instant::now();
        let e = run_with_limit(&argv(&["sleep", "30"]), Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn exit_status_and_stderr_are_reported() {
        assert!(run_with_limit(&argv(&["true"]), Duration::from_secs(10)).is_ok());
        let e = run_with_limit(
            &argv(&["sh", "-c", "echo nope >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(e.contains("nope") && e.contains('3'), "{e}");
        assert!(run_with_limit(&argv(&["/nonexistent/cmd"]), Duration::from_secs(1)).is_err());
    }
}
