//! `sd_notify` to a real unix datagram socket: READY=1, WATCHDOG=1 only while the main loop makes
//! progress (silent while it is stalled on a FUSE mount that never answers), RELOADING=1,
//! STOPPING=1; without a notify socket the daemon runs and stops cleanly.

use super::*;
use std::os::unix::net::UnixDatagram;

/// The service manager's end of `NOTIFY_SOCKET`.
struct NotifySocket {
    sock: UnixDatagram,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let sock = UnixDatagram::bind(path).expect("bind the notify socket");
        NotifySocket { sock }
    }

    /// The next message within `limit`, or None.
    fn recv(&self, limit: Duration) -> Option<String> {
        self.sock
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Waits for a message containing `line` (e.g. `READY=1`) within `limit`; returns the
    /// messages seen before it.
    fn wait_for(&self, line: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut before = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(m) if m.lines().any(|l| l == line) => return before,
                Some(m) => before.push(m),
                None => break,
            }
        }
        panic!("no {line} within {limit:?}; got {before:?}");
    }
}

/// A FUSE filesystem whose server never answers: every stat or statvfs under it blocks until
/// the device fd is closed (the connection is then aborted, calls fail with ENOTCONN).
#[cfg(target_os = "linux")]
struct DeadFuse {
    dir: std::path::PathBuf,
    dev: Option<std::fs::File>,
}

#[cfg(target_os = "linux")]
impl DeadFuse {
    fn mount(dir: &Path) -> std::io::Result<DeadFuse> {
        use std::os::fd::AsRawFd;
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")?;
        let data = format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd());
        rustix::mount::mount(
            "guardian-dead-fuse",
            dir,
            "fuse.guardian-dead",
            rustix::mount::MountFlags::empty(),
            Some(std::ffi::CString::new(data).unwrap().as_c_str()),
        )?;
        Ok(DeadFuse {
            dir: dir.to_path_buf(),
            dev: Some(dev),
        })
    }

    /// Closes the device: pending and later calls fail instead of blocking.
    fn abort(&mut self) {
        self.dev.take();
    }
}

#[cfg(target_os = "linux")]
impl Drop for DeadFuse {
    fn drop(&mut self) {
        self.abort();
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A config for a daemon that polls and samples fast, with the poll source (no probe to load).
fn fast_config(path: &Path, ws: &Path, state: &Path) {
    let text = format!(
        r#"[daemon]
poll_interval = "200ms"
sample_interval = "100ms"
source = "poll"
audit_log = "{state}/audit.jsonl"
state_dir = "{state}/state"
journal_vacuum = []

[[workspaces]]
path = "{ws}"

[serve]
enabled = false
"#,
        state = state.display(),
        ws = ws.display(),
    );
    std::fs::write(path, text).unwrap();
}

/// READY=1 once started, WATCHDOG=1 pings while the main loop completes polls and samples; none
/// while the loop is stuck in a `stat` on a filesystem that never answers (other threads still
/// run: a timer thread would go on pinging), pings again once the call returns; STOPPING=1 on
/// SIGTERM and a clean exit.
#[cfg(target_os = "linux")]
#[test]
fn watchdog_pings_only_while_the_main_loop_makes_progress() {
    if !require_root("watchdog_pings_only_while_the_main_loop_makes_progress") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let state = tmp.path().join("var");
    std::fs::create_dir(&state).unwrap();
    let config = tmp.path().join("guardian.toml");
    // The workspace does not exist yet: it becomes the dead FUSE mount later, and the config
    // load (which stats it) must not meet that.
    fast_config(&config, &ws, &state);
    let notify = NotifySocket::bind(&tmp.path().join("notify.sock"));
    let mut daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("GUARDIAN_LOG", "warn")
            .env("NOTIFY_SOCKET", tmp.path().join("notify.sock"))
            .env("WATCHDOG_USEC", "400000"),
    );
    let before_ready = notify.wait_for("READY=1", SOON);
    assert!(
        before_ready.is_empty(),
        "nothing before READY=1: {before_ready:?}"
    );
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1", SOON);
    }

    std::fs::create_dir(&ws).unwrap();
    let mut fuse = match DeadFuse::mount(&ws) {
        Ok(f) => f,
        Err(e) => {
            guardian::testkit::skip(
                "watchdog_pings_only_while_the_main_loop_makes_progress (stalled loop part)",
                &format!("cannot mount a FUSE filesystem here: {e}"),
            );
            return;
        }
    };
    // The next poll stats the workspace and blocks there. Pings already on their way drain
    // first; then the socket must stay silent.
    let silent_from = Instant::now();
    let mut stalled = false;
    while silent_from.elapsed() < SOON {
        if notify.recv(Duration::from_millis(1500)).is_none() {
            stalled = true;
            break;
        }
    }
    assert!(
        stalled,
        "WATCHDOG=1 kept coming while the main loop was stuck in a stat on a dead filesystem"
    );
    let quiet = notify.recv(Duration::from_secs(3));
    assert_eq!(quiet, None, "a ping while the loop is stuck");
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "the daemon is alive, only its loop is stuck"
    );
    let threads = std::fs::read_dir(format!("/proc/{}/task", daemon.pid()))
        .unwrap()
        .count();
    assert!(threads > 1, "other threads run on: {threads}");

    fuse.abort();
    notify.wait_for("WATCHDOG=1", SOON);

    // `systemctl reload` (SIGHUP): RELOADING=1, then READY=1 once the config is read again.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon.pid()).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    notify.wait_for("RELOADING=1", SOON);
    notify.wait_for("READY=1", SOON);

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon.pid()).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    notify.wait_for("STOPPING=1", SOON);
    assert!(
        wait_until(SOON, || daemon.0.try_wait().unwrap().is_some()),
        "the daemon exits after STOPPING=1"
    );
    assert!(daemon.0.wait().unwrap().success());
}

/// Without NOTIFY_SOCKET the daemon runs as before (nothing to notify, no error).
#[test]
fn without_notify_socket_the_daemon_runs_and_stops_cleanly() {
    if !require_root("without_notify_socket_the_daemon_runs_and_stops_cleanly") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let state = tmp.path().join("var");
    std::fs::create_dir(&state).unwrap();
    let config = tmp.path().join("guardian.toml");
    fast_config(&config, &ws, &state);
    let out = Command::new(guardian_bin())
        .args(["run", "--once", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "400000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("notify"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
