//! The daemon's side of `publish`: the one-line hooks of the main loop that tell the
//! [`Hub`](crate::publish::Hub) what happened — pressure changes, cycles starting and ending,
//! every audit outcome, source changes, each new status — and the start of the `serve` thread.
//! Everything here runs on the main loop and returns at once (see `publish`'s invariants).

use super::cycle::CycleKind;
use super::state::{CycleSummary, DaemonState};
use super::{GuardedFs, Guardian};
use crate::cleanup::AuditRecord;
use crate::fsys::FsSpace;
use crate::policy::{self, Pressure};
use crate::publish::{Event, Hub, PressureLevel, Scope};
use std::collections::HashMap;
use std::time::Instant;

/// What the outside was last told.
#[derive(Default)]
pub(super) struct Told {
    /// Each filesystem's pressure, by device.
    pressure: HashMap<u64, Pressure>,
    /// The running source.
    source: Option<String>,
    /// The state's last `updated` stamp (set only when its content changed).
    updated: String,
    /// The running cycle: when it was handed over, and its kind.
    cycle: Option<(Instant, &'static str)>,
}

impl Guardian {
    /// Where events and the status are published (for the server, and for tests in-process).
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// Starts the `serve` thread; a failure is a problem in the status, never a stop.
    pub(super) fn start_server(&mut self) {
        let config = self.planner_config.clone();
        let planner: crate::serve::Planner = std::sync::Arc::new(move || {
            // The config as of now (a reload replaces it), not held while planning.
            let config = match config.lock() {
                Ok(c) => c.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            serde_json::to_value(super::plan_now(&config))
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
        });
        match crate::serve::spawn(&self.config.serve, self.hub.clone(), Some(planner)) {
            Ok(server) => self.server = server,
            Err(e) => {
                crate::warn_quiet!("serve.start", error = %e, "cannot serve /metrics, /status, /events; guarding goes on");
                self.hub.set_problem("start", Some(e.to_string()));
            }
        }
    }

    /// A filesystem's pressure changed: `threshold_crossed`, and `disk_pressure` when it is
    /// under a threshold now.
    pub(super) fn tell_pressure(&mut self, fs: &GuardedFs, space: &FsSpace) {
        let a = policy::assess(space, &self.config.thresholds, false);
        let from = self
            .told
            .pressure
            .insert(fs.dev, a.pressure)
            .unwrap_or(Pressure::Ok);
        if from == a.pressure {
            return;
        }
        let critical = from == Pressure::Critical || a.pressure == Pressure::Critical;
        let threshold_bytes = if critical {
            a.limits.critical_bytes
        } else {
            a.limits.cleanup_bytes
        };
        self.hub.publish(Event::ThresholdCrossed {
            mount: fs.mount.clone(),
            from,
            to: a.pressure,
            avail_bytes: space.avail_bytes,
            threshold_bytes,
            reason: a.reason.clone(),
        });
        let (level, free_limit) = match a.pressure {
            Pressure::Ok => return,
            Pressure::Pressure => (PressureLevel::Warning, a.limits.cleanup_bytes),
            Pressure::Critical => (PressureLevel::Critical, a.limits.critical_bytes),
        };
        self.hub.publish(Event::DiskPressure {
            level,
            scope: Scope::Filesystem,
            path: Some(fs.mount.clone()),
            used: space.total_bytes.saturating_sub(space.avail_bytes),
            limit: space.total_bytes.saturating_sub(free_limit),
        });
    }

    /// A cycle was handed over: `forecast_trigger` (preemptive) and `cleanup_started`.
    pub(super) fn tell_cycle_started(&mut self, fs: &GuardedFs, kind: &CycleKind) {
        let avail_bytes = self
            .spaces
            .get(&fs.dev)
            .map(|(s, _)| s.avail_bytes)
            .or_else(|| crate::fsys::fs_space(&fs.probe).ok().map(|s| s.avail_bytes))
            .unwrap_or(0);
        let name = match kind {
            CycleKind::Reactive { .. } => "reactive",
            CycleKind::Preemptive { plan, .. } => {
                self.hub.publish(Event::ForecastTrigger {
                    mount: fs.mount.clone(),
                    trigger: plan.trigger.clone(),
                    avail_bytes,
                    goal_free: plan.goal_free,
                });
                "preemptive"
            }
        };
        self.told.cycle = Some((Instant::now(), name));
        self.hub.publish(Event::CleanupStarted {
            mount: fs.mount.clone(),
            kind: name.into(),
            trigger: kind.describe(),
            avail_bytes,
        });
    }

    pub(super) fn tell_cycle_finished(&mut self, summary: &CycleSummary) {
        let (began, kind) = self
            .told
            .cycle
            .take()
            .unwrap_or((Instant::now(), "reactive"));
        self.hub.publish(Event::CleanupFinished {
            summary: summary.clone(),
            kind: kind.into(),
            seconds: began.elapsed().as_secs_f64(),
        });
    }

    /// Bytes the source saw written into each project (`guardian_project_written_bytes_total`);
    /// only the projects in the sample are touched.
    pub(super) fn tell_writes(&mut self, sample: &crate::sources::Sample) {
        let now = std::time::Instant::now();
        for (id, bytes) in &sample.growth {
            let Ok(bytes) = u64::try_from(*bytes) else {
                continue; // shrinking (fanotify/inotify) is not writing
            };
            if let Some(path) = self.aggregator.path_of(*id) {
                self.hub.counters.written.add(path, bytes, now);
            }
        }
    }

    /// Every audit outcome line; a ghost handled is also `ghost_reaped`, a usage level change
    /// also `disk_pressure` (scope `workspace` or `total`).
    pub(super) fn tell_action(&mut self, record: &AuditRecord) {
        self.hub.publish(Event::Action {
            record: record.clone(),
        });
        match record.action.as_str() {
            "ghost" if !record.dry_run && record.outcome != "failed" => {
                self.hub.publish(Event::GhostReaped {
                    record: record.clone(),
                });
            }
            "usage_pressure" => {
                if let Some(event) = usage_event(&self.config, record) {
                    self.hub.publish(event);
                }
            }
            _ => {}
        }
    }

    /// The running source changed since the last poll: `source_changed`.
    pub(super) fn tell_source(&mut self, status: &crate::sources::SourceStatus) {
        let before = self.told.source.replace(status.active.clone());
        match before {
            Some(from) if from != status.active => self.hub.publish(Event::SourceChanged {
                from,
                to: status.active.clone(),
                degraded: status
                    .degraded
                    .as_ref()
                    .map(|d| format!("{} failed: {}", d.failed, d.reason)),
            }),
            _ => {}
        }
    }

    /// The newest state for `/status` (with the `updated` stamp of the last change).
    pub(super) fn tell_status(&mut self, state: &mut DaemonState) {
        if state.updated.is_empty() {
            state.updated = self.told.updated.clone();
        } else {
            self.told.updated = state.updated.clone();
        }
        if let Ok(json) = serde_json::to_string(state) {
            self.hub.set_status(json);
        }
    }
}

/// The `disk_pressure` of a usage level change (`usage_pressure` audit line), with the limit
/// the level is about; none when the level cleared.
fn usage_event(config: &crate::config::Config, record: &AuditRecord) -> Option<Event> {
    let level = match record.outcome.as_str() {
        "warning" => PressureLevel::Warning,
        "critical" => PressureLevel::Critical,
        _ => return None,
    };
    let t = &config.tasks;
    let pick = |w: Option<crate::config::ByteSize>, c: Option<crate::config::ByteSize>| match level
    {
        PressureLevel::Warning => w,
        PressureLevel::Critical => c,
    };
    let (scope, path, limit) = if record.path.as_os_str() == "total" {
        (
            Scope::Total,
            None,
            pick(t.total_usage_warning, t.total_usage_critical),
        )
    } else {
        let l = t.usage_limits.iter().find(|l| l.workspace == record.path);
        (
            Scope::Workspace,
            Some(record.path.clone()),
            l.and_then(|l| pick(l.warning, l.critical)),
        )
    };
    Some(Event::DiskPressure {
        level,
        scope,
        path,
        used: record.bytes_estimated,
        limit: limit.map_or(0, |b| b.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn record(scope: &str, outcome: &str, bytes: u64) -> AuditRecord {
        AuditRecord {
            bytes_estimated: bytes,
            ..AuditRecord::event(
                "usage_pressure",
                scope.into(),
                "usage_limit",
                0,
                String::new(),
                false,
                outcome,
            )
        }
    }

    #[test]
    fn a_usage_level_change_is_disk_pressure_with_the_limit_of_its_level() {
        let config = Config::parse(
            "[[workspaces]]\npath = \"/srv/ci\"\n\n[tasks]\ntotal_usage_warning = \"3GiB\"\n\
             total_usage_critical = \"4GiB\"\n\n[[tasks.usage_limits]]\nworkspace = \"/srv/ci\"\n\
             warning = \"1GiB\"\ncritical = \"2GiB\"\n",
            "t.toml",
        )
        .unwrap();
        let json = |e: Option<Event>| serde_json::to_value(e.unwrap()).unwrap();
        let e = json(usage_event(&config, &record("/srv/ci", "critical", 5)));
        assert_eq!(e["type"], "disk_pressure");
        assert_eq!(e["level"], "critical");
        assert_eq!(e["scope"], "workspace");
        assert_eq!(e["path"], "/srv/ci");
        assert_eq!(e["used"], 5);
        assert_eq!(e["limit"], 2u64 << 30);
        let e = json(usage_event(&config, &record("total", "warning", 7)));
        assert_eq!(e["scope"], "total");
        assert_eq!(e["limit"], 3u64 << 30);
        assert!(e.get("path").is_none());
        assert!(usage_event(&config, &record("total", "cleared", 1)).is_none());
    }
}
