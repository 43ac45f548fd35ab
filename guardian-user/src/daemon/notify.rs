//! What the daemon tells its service manager (systemd `Type=notify`, through the `sd-notify`
//! crate): `READY=1` once start-up is done, `WATCHDOG=1` from the main loop only after it
//! completed a poll or a sample (never from a timer of its own: a loop stuck in a syscall stops
//! the pings and systemd restarts it after `WatchdogSec=`), `RELOADING=1`/`READY=1` around a
//! reload, `STOPPING=1` on shutdown.
//!
//! Invariants: does nothing at all when `NOTIFY_SOCKET` is unset (started by hand, launchd, a
//! test); a failed send is logged once a minute and never stops the daemon; pings are sent at
//! most every quarter of the watchdog period, so a fast sample interval costs one datagram
//! per period share, not one per sample.

use std::time::{Duration, Instant};

/// The service manager's end, as the environment describes it when the daemon starts.
#[derive(Debug)]
pub struct Notifier {
    /// `NOTIFY_SOCKET` is set: someone listens.
    enabled: bool,
    /// `WATCHDOG_USEC` for this process (`WATCHDOG_PID` unset or ours), while enabled.
    watchdog: Option<Duration>,
    /// When the last `WATCHDOG=1` went out.
    last_ping: Option<Instant>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let watchdog = if enabled { watchdog_period() } else { None };
        Notifier {
            enabled,
            watchdog: watchdog.filter(|d| !d.is_zero()),
            last_ping: None,
        }
    }

    /// The watchdog period the service manager asked for, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Start-up (or a reload) is done: the service is up.
    pub fn ready(&mut self) {
        self.send(&[State::Ready], "ready");
    }

    /// A reload starts (SIGHUP): `READY=1` follows when it is over, swapped in or refused.
    pub fn reloading(&mut self) {
        self.send(&[State::Reloading], "reloading");
    }

    /// Shutdown has begun.
    pub fn stopping(&mut self) {
        self.send(&[State::Stopping], "stopping");
    }

    /// The main loop completed a round (a poll or a sample): pings the watchdog when a quarter
    /// of its period has passed since the last ping.
    pub fn progress(&mut self) {
        let Some(period) = self.watchdog else {
            return;
        };
        let now = Instant::now();
        if self
            .last_ping
            .is_some_and(|last| now.duration_since(last) < period / 4)
        {
            return;
        }
        self.last_ping = Some(now);
        self.send(&[State::Watchdog], "watchdog");
    }

    fn send(&self, states: &[State], what: &'static str) {
        if !self.enabled {
            return;
        }
        if let Err(e) = send(states) {
            crate::warn_quiet!("notify.send", error = %e, what, "cannot notify the service manager");
        }
    }
}

/// The messages Guardian sends.
#[derive(Clone, Copy, Debug)]
enum State {
    Ready,
    Reloading,
    Stopping,
    Watchdog,
}

#[cfg(target_os = "linux")]
fn send(states: &[State]) -> std::io::Result<()> {
    use sd_notify::NotifyState;
    let mut out = Vec::with_capacity(states.len() + 1);
    for state in states {
        match state {
            State::Ready => out.push(NotifyState::Ready),
            State::Reloading => {
                out.push(NotifyState::Reloading);
                // systemd ≥ 253 pairs RELOADING=1 with the monotonic time it was sent at.
                if let Ok(now) = NotifyState::monotonic_usec_now() {
                    out.push(now);
                }
            }
            State::Stopping => out.push(NotifyState::Stopping),
            State::Watchdog => out.push(NotifyState::Watchdog),
        }
    }
    sd_notify::notify(&out)
}

#[cfg(not(target_os = "linux"))]
fn send(_states: &[State]) -> std::io::Result<()> {
    // launchd has no readiness protocol; NOTIFY_SOCKET is never set there.
    Ok(())
}

#[cfg(target_os = "linux")]
fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

#[cfg(not(target_os = "linux"))]
fn watchdog_period() -> Option<Duration> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn without_a_watchdog_progress_sends_nothing() {
        let mut n = Notifier {
            enabled: false,
            watchdog: None,
            last_ping: None,
        };
        n.progress();
        assert!(n.last_ping.is_none());
    }

    #[test]
    fn pings_are_spaced_by_a_quarter_of_the_period() {
        let mut n = Notifier {
            // Not enabled: nothing is sent, the spacing is still decided.
            enabled: false,
            watchdog: Some(Duration::from_secs(3600)),
            last_ping: None,
        };
        n.progress();
        let first = n.last_ping.expect("first progress pings");
        n.progress();
        assert_eq!(n.last_ping, Some(first), "a second ping within 15 min");
    }
}
