//! What the daemon tells the outside while it runs: typed [`Event`]s (a `"type"` tag each) and
//! the latest status snapshot, held by a [`Hub`]. The synchronous core publishes into it; the
//! `serve` thread (the only async code) reads from it. Counters for `/metrics` are kept here, in
//! [`metrics::Counters`], from the same events, so a client that lags never loses a count.
//!
//! Invariants: publishing needs no runtime and never blocks — the status is a
//! `tokio::sync::watch` (the newest replaces the last), events go to a bounded
//! `tokio::sync::broadcast` (a receiver that falls behind loses the oldest and is told so, the
//! sender never waits); an event with no listener costs one counter update and nothing else,
//! and one with listeners is serialized once and wakes each receiver once — the server has one
//! (its relay, however many clients it has), plus one per webhook.
//! Paths are written through `crate::textpath`.

pub mod metrics;
pub mod written;

use crate::cleanup::AuditRecord;
use crate::daemon::state::CycleSummary;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// Events a receiver may fall behind by before it loses the oldest (and gets a resync).
pub const EVENT_BUFFER: usize = 1024;

/// One thing that happened, as `/events` and webhooks carry it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The whole current status (`guardian status --json`): first on every connection, and
    /// again after a client fell behind (`resync: true`).
    Status {
        resync: bool,
        status: serde_json::Value,
    },
    /// Usage over a level (seed 002's shape): a workspace's or all workspaces' usage against a
    /// `[tasks]` usage limit (`scope` = `workspace` or `total`), or a filesystem's used bytes
    /// against what `cleanup_free`/`critical_free` allow (`scope` = `filesystem`).
    DiskPressure {
        level: PressureLevel,
        scope: Scope,
        /// The workspace (scope `workspace`) or mount point (scope `filesystem`).
        #[serde(
            with = "crate::textpath::option",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        path: Option<PathBuf>,
        /// Bytes used.
        used: u64,
        /// Bytes that may be used before this level.
        limit: u64,
    },
    /// A filesystem's pressure changed (`ok` → `pressure` → `critical`, and back).
    ThresholdCrossed {
        #[serde(with = "crate::textpath")]
        mount: PathBuf,
        from: crate::policy::Pressure,
        to: crate::policy::Pressure,
        avail_bytes: u64,
        /// Free bytes at the threshold crossed (`cleanup_free` or `critical_free`).
        threshold_bytes: u64,
        reason: String,
    },
    /// A forecast fired above every threshold: a preemptive phase 1 starts.
    ForecastTrigger {
        #[serde(with = "crate::textpath")]
        mount: PathBuf,
        trigger: String,
        avail_bytes: u64,
        goal_free: u64,
    },
    /// A cleanup cycle was handed to the cleanup thread.
    CleanupStarted {
        #[serde(with = "crate::textpath")]
        mount: PathBuf,
        /// `reactive` or `preemptive`.
        kind: String,
        trigger: String,
        avail_bytes: u64,
    },
    /// One audit outcome line, as written.
    Action { record: AuditRecord },
    /// A cleanup cycle ended.
    CleanupFinished {
        #[serde(flatten)]
        summary: CycleSummary,
        /// `reactive` or `preemptive`.
        kind: String,
        seconds: f64,
    },
    /// The ghost reaper handled a task left `running` (the audit line).
    GhostReaped { record: AuditRecord },
    /// The write source changed (a fallback or a restoration).
    SourceChanged {
        from: String,
        to: String,
        degraded: Option<String>,
    },
}

impl Event {
    /// How much the event asks for attention (webhooks' `min_level`).
    pub fn severity(&self) -> crate::config::Severity {
        use crate::config::Severity;
        use crate::policy::Pressure;
        match self {
            Event::DiskPressure { level, .. } => match level {
                PressureLevel::Warning => Severity::Warning,
                PressureLevel::Critical => Severity::Critical,
            },
            Event::ThresholdCrossed { to, .. } => match to {
                Pressure::Ok => Severity::Info,
                Pressure::Pressure => Severity::Warning,
                Pressure::Critical => Severity::Critical,
            },
            Event::CleanupFinished { summary, .. } if !summary.reached_target => Severity::Warning,
            Event::Action { record } if matches!(record.outcome.as_str(), "failed" | "refused") => {
                Severity::Warning
            }
            Event::GhostReaped { .. } => Severity::Warning,
            Event::SourceChanged { degraded, .. } if degraded.is_some() => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// The `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Status { .. } => "status",
            Event::DiskPressure { .. } => "disk_pressure",
            Event::ThresholdCrossed { .. } => "threshold_crossed",
            Event::ForecastTrigger { .. } => "forecast_trigger",
            Event::CleanupStarted { .. } => "cleanup_started",
            Event::Action { .. } => "action",
            Event::CleanupFinished { .. } => "cleanup_finished",
            Event::GhostReaped { .. } => "ghost_reaped",
            Event::SourceChanged { .. } => "source_changed",
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum PressureLevel {
    Warning,
    Critical,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Workspace,
    Total,
    Filesystem,
}

/// An event as sent: the event and its JSON, serialized once for every client.
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    pub json: String,
}

/// Where the core publishes and the server reads. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    status: Arc<watch::Sender<Arc<str>>>,
    events: broadcast::Sender<Arc<Published>>,
    pub counters: Arc<metrics::Counters>,
    /// What the server wants the status to show (a port it cannot bind), by what has it.
    problems: Arc<Mutex<std::collections::BTreeMap<&'static str, String>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        let (status, _) = watch::channel(Arc::from("{}"));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Hub {
            status: Arc::new(status),
            events,
            counters: Arc::new(metrics::Counters::new()),
            problems: Arc::new(Mutex::new(std::collections::BTreeMap::new())),
        }
    }

    /// Publishes an event: counted, and sent to whoever listens. Never blocks.
    pub fn publish(&self, event: Event) {
        self.counters.observe(&event);
        if self.events.receiver_count() == 0 {
            return;
        }
        let Ok(json) = serde_json::to_string(&event) else {
            return;
        };
        // An error only says nobody listens.
        let _ = self.events.send(Arc::new(Published { event, json }));
    }

    /// Replaces the status snapshot (the JSON of `guardian status --json`).
    pub fn set_status(&self, json: String) {
        self.status.send_replace(Arc::from(json));
    }

    /// The newest status snapshot.
    pub fn status(&self) -> Arc<str> {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn watch_status(&self) -> watch::Receiver<Arc<str>> {
        self.status.subscribe()
    }

    /// A receiver of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.events.subscribe()
    }

    /// How many receivers the events have (the server's relay and each webhook): what one
    /// `publish` wakes.
    pub fn receivers(&self) -> usize {
        self.events.receiver_count()
    }

    /// The current status as an event (`resync` when a client fell behind).
    pub fn status_event(&self, resync: bool) -> String {
        Hub::status_event_of(&self.status(), resync)
    }

    /// `status` (a status snapshot) as the JSON of [`Event::Status`]: the snapshot is put in as
    /// written, not parsed into a value and written again; one that is not JSON is `null`.
    pub fn status_event_of(status: &str, resync: bool) -> String {
        let status = match serde_json::from_str::<serde::de::IgnoredAny>(status) {
            Ok(_) => status.trim(),
            Err(_) => "null",
        };
        format!("{{\"type\":\"status\",\"resync\":{resync},\"status\":{status}}}")
    }

    /// Sets or clears the problem of one part of the server (`what`: `tcp`, `unix`, …), shown
    /// in the status.
    pub fn set_problem(&self, what: &'static str, problem: Option<String>) {
        let mut map = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        match problem {
            Some(p) => map.insert(what, p),
            None => map.remove(what),
        };
    }

    /// The server's problems now.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_that_falls_behind_is_told_so_and_the_sender_never_waits() {
        let hub = Hub::new();
        let mut rx = hub.subscribe();
        for i in 0..(EVENT_BUFFER + 10) {
            hub.publish(Event::SourceChanged {
                from: "a".into(),
                to: format!("{i}"),
                degraded: None,
            });
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
        let next = rx.try_recv().unwrap();
        assert_eq!(next.event.kind(), "source_changed");
        assert!(next.json.contains("\"type\":\"source_changed\""));
    }

    #[test]
    fn the_status_event_holds_the_snapshot_as_written_and_null_for_what_is_not_json() {
        let status = "{\"source\":\"ebpf\",\"pid\":1,\"filesystems\":[]}";
        let json = Hub::status_event_of(status, true);
        assert_eq!(
            json,
            format!("{{\"type\":\"status\",\"resync\":true,\"status\":{status}}}")
        );
        let back: Event = serde_json::from_str(&json).unwrap();
        let Event::Status { resync, status } = back else {
            panic!("a status event expected");
        };
        assert!(resync);
        assert_eq!(status["source"], "ebpf");
        for bad in ["", "{", "{} {}", "nul", "{\"a\":1}]"] {
            let json = Hub::status_event_of(bad, false);
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert!(v["status"].is_null(), "{bad:?} gave {json}");
        }
    }

    #[test]
    fn events_carry_their_type_tag_and_paths_escaped() {
        use std::os::unix::ffi::OsStrExt;
        let e = Event::DiskPressure {
            level: PressureLevel::Warning,
            scope: Scope::Workspace,
            path: Some(PathBuf::from(std::ffi::OsStr::from_bytes(b"/w/\xff\n"))),
            used: 10,
            limit: 5,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.starts_with("{\"type\":\"disk_pressure\",\"level\":\"warning\""));
        assert!(json.contains("\\\\xff"), "{json}");
        assert!(!json.contains('\n'));
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }
}
