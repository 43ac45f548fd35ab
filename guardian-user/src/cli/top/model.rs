//! What `guardian top` shows, as plain data: the daemon's last status, a bounded history of
//! free space per filesystem (the sparklines), the live action log, the project table and its
//! sort order. **Pure**: status documents and events go in, rows come out; no IO, no clock.

use guardian::cleanup::AuditRecord;
use guardian::daemon::state::DaemonState;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

/// Free-space samples kept per filesystem (one per status read: two minutes at 1/s).
pub const HISTORY: usize = 120;
/// Lines kept in the action log.
pub const LOG_LINES: usize = 200;

/// The project table's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Fastest writer first.
    Rate,
    /// Soonest P90 time to the first threshold first (projects with none last).
    Eta,
    /// Most bytes written since the daemon started first.
    Written,
    /// Longest idle first (no write seen for longest; projects never seen writing last).
    Idle,
}

impl SortKey {
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Rate => SortKey::Eta,
            SortKey::Eta => SortKey::Written,
            SortKey::Written => SortKey::Idle,
            SortKey::Idle => SortKey::Rate,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Rate => "write rate",
            SortKey::Eta => "P90 time to threshold",
            SortKey::Written => "bytes written",
            SortKey::Idle => "idle time",
        }
    }
}

/// One line of the action log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub ts: String,
    pub text: String,
    /// Estimated and measured bytes of an action (none for other events).
    pub bytes: Option<(u64, u64)>,
}

/// One row of the project table.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectRow {
    pub path: PathBuf,
    pub rate_bps: f64,
    /// Net growth rate: writes less what others deleted (the eBPF source counts both).
    pub net_bps: f64,
    pub written: i64,
    /// P90 seconds to the soonest threshold if only this project grew.
    pub eta_p90_s: Option<f64>,
    /// Seconds since a write was last seen (as of the status's last reading).
    pub idle_s: Option<f64>,
    /// Why it would not be deleted now, from the last plan read (`p`).
    pub protected: Option<String>,
}

#[derive(Debug)]
pub struct Model {
    pub status: Option<DaemonState>,
    /// Why the daemon cannot be read right now (connection, HTTP status, parse error).
    pub problem: Option<String>,
    pub history: HashMap<PathBuf, VecDeque<u64>>,
    pub log: VecDeque<LogLine>,
    pub sort: SortKey,
    /// The last plan read (`GET /plan`), shown while `show_plan`.
    pub plan: Option<Value>,
    pub show_plan: bool,
    /// Seconds (of the status clock) at which each project was last seen writing.
    last_write: HashMap<PathBuf, f64>,
    /// The status clock: seconds, from the caller (monotonic), at the last status applied.
    now: f64,
    /// Ids of action lines already in the log (the status repeats recent actions).
    seen_ids: VecDeque<String>,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            status: None,
            problem: None,
            history: HashMap::new(),
            log: VecDeque::new(),
            sort: SortKey::Rate,
            plan: None,
            show_plan: false,
            last_write: HashMap::new(),
            now: 0.0,
            seen_ids: VecDeque::new(),
        }
    }
}

impl Model {
    /// A status document read at `now` (seconds, monotonic, from the caller).
    pub fn apply_status(&mut self, status: DaemonState, now: f64) {
        self.now = now;
        for fs in &status.filesystems {
            let h = self.history.entry(fs.mount.clone()).or_default();
            h.push_back(fs.space.avail_bytes);
            while h.len() > HISTORY {
                h.pop_front();
            }
        }
        let mounts: Vec<PathBuf> = status.filesystems.iter().map(|f| f.mount.clone()).collect();
        self.history.retain(|m, _| mounts.contains(m));
        for p in &status.projects {
            if p.rate_bps > 0.0 {
                self.last_write.insert(p.path.clone(), now);
            }
        }
        // Bounded like the status itself: projects no longer listed are forgotten.
        let listed: std::collections::HashSet<&PathBuf> =
            status.projects.iter().map(|p| &p.path).collect();
        self.last_write.retain(|p, _| listed.contains(p));
        for record in &status.recent_actions {
            self.push_action(record);
        }
        self.status = Some(status);
        self.problem = None;
    }

    /// One event from `/events` (a JSON object with a `type`).
    pub fn apply_event(&mut self, event: &Value) {
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("event");
        if kind == "action" {
            let record = event.get("record").unwrap_or(event);
            if let Ok(record) = serde_json::from_value::<AuditRecord>(record.clone()) {
                self.push_action(&record);
                return;
            }
        }
        if kind == "status" || kind == "resync" {
            return;
        }
        let ts = event
            .get("ts")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.push_line(LogLine {
            ts,
            text: describe_event(kind, event),
            bytes: None,
        });
    }

    fn push_action(&mut self, r: &AuditRecord) {
        if r.outcome == "intent" {
            return;
        }
        let key = format!("{}/{}", r.id, r.outcome);
        if self.seen_ids.contains(&key) {
            return;
        }
        self.seen_ids.push_back(key);
        while self.seen_ids.len() > LOG_LINES * 2 {
            self.seen_ids.pop_front();
        }
        self.push_line(LogLine {
            ts: r.ts.clone(),
            text: format!(
                "{} {} {} ({}, phase {})",
                r.outcome,
                r.action,
                guardian::textpath::shown(&r.path),
                r.rule,
                r.phase
            ),
            bytes: (r.action != "event").then_some((r.bytes_estimated, r.bytes_freed)),
        });
    }

    fn push_line(&mut self, line: LogLine) {
        self.log.push_back(line);
        while self.log.len() > LOG_LINES {
            self.log.pop_front();
        }
    }

    /// The project table in the chosen order, with protection reasons from the last plan.
    pub fn project_rows(&self) -> Vec<ProjectRow> {
        let Some(status) = &self.status else {
            return Vec::new();
        };
        let etas: HashMap<&PathBuf, f64> = status
            .forecast
            .iter()
            .flat_map(|f| &f.projects)
            .filter_map(|p| {
                let soonest = p
                    .forecast
                    .eta
                    .iter()
                    .filter_map(|e| e.p90_s)
                    .min_by(f64::total_cmp)?;
                Some((&p.path, soonest))
            })
            .collect();
        let blocked = self.plan_reasons();
        let mut rows: Vec<ProjectRow> = status
            .projects
            .iter()
            .map(|p| ProjectRow {
                path: p.path.clone(),
                rate_bps: p.rate_bps,
                net_bps: p.net_bps,
                written: p.total_bytes,
                eta_p90_s: etas.get(&p.path).copied(),
                idle_s: self.last_write.get(&p.path).map(|t| self.now - t),
                protected: blocked
                    .iter()
                    .find(|(path, _)| path.starts_with(&p.path))
                    .map(|(_, why)| why.clone()),
            })
            .collect();
        let key = |r: &ProjectRow| -> f64 {
            match self.sort {
                SortKey::Rate => -r.rate_bps,
                SortKey::Eta => r.eta_p90_s.unwrap_or(f64::INFINITY),
                SortKey::Written => -(r.written as f64),
                SortKey::Idle => -r.idle_s.unwrap_or(f64::NEG_INFINITY),
            }
        };
        rows.sort_by(|a, b| key(a).total_cmp(&key(b)).then_with(|| a.path.cmp(&b.path)));
        rows
    }

    /// (path, reason) of every entry the last plan will not delete.
    fn plan_reasons(&self) -> Vec<(PathBuf, String)> {
        plan_entries(self.plan.as_ref())
            .into_iter()
            .filter(|e| !e.deletes)
            .map(|e| (PathBuf::from(e.path), e.why))
            .collect()
    }
}

/// One entry of a plan as the plan view lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanEntry {
    pub mount: String,
    pub path: String,
    pub deletes: bool,
    pub why: String,
    pub bytes: u64,
}

/// The entries of a plan document (`guardian plan --json`): per filesystem, the actions (will
/// be deleted, with their reason) then the skipped entries (will not, with why).
pub fn plan_entries(plan: Option<&Value>) -> Vec<PlanEntry> {
    let Some(plan) = plan else {
        return Vec::new();
    };
    let filesystems = plan
        .get("filesystems")
        .and_then(Value::as_array)
        .or_else(|| plan.as_array());
    let mut out = Vec::new();
    for fs in filesystems.into_iter().flatten() {
        let mount = text(fs.get("mount")).unwrap_or_default();
        let plan = fs.get("plan").unwrap_or(fs);
        for a in plan
            .get("actions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(PlanEntry {
                mount: mount.clone(),
                path: text(a.get("path")).unwrap_or_default(),
                deletes: true,
                why: text(a.get("reason")).unwrap_or_default(),
                bytes: a
                    .get("bytes_estimated")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            });
        }
        for s in plan
            .get("skipped")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(PlanEntry {
                mount: mount.clone(),
                path: text(s.get("path")).unwrap_or_default(),
                deletes: false,
                why: text(s.get("reason")).unwrap_or_default(),
                bytes: 0,
            });
        }
    }
    out
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

/// A one-line description of an event other than an action.
fn describe_event(kind: &str, e: &Value) -> String {
    let field = |k: &str| {
        e.get(k).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let mut parts = vec![kind.to_string()];
    for k in [
        "level",
        "mount",
        "workspace",
        "trigger",
        "threshold",
        "used",
        "limit",
        "from",
        "to",
        "reason",
    ] {
        if let Some(v) = field(k) {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(projects: &[(&str, f64, i64)], avail: u64) -> DaemonState {
        serde_json::from_value(json!({
            "updated": "2026-12-06T06:00:00Z",
            "pid": 1,
            "source": "ebpf",
            "projects": projects.iter().map(|(p, r, t)| json!({
                "path": p, "rate_bps": r, "total_bytes": t, "top_cgroups": []
            })).collect::<Vec<_>>(),
            "dry_run": false,
            "poll_interval_ms": 5000,
            "filesystems": [{
                "mount": "/srv",
                "workspaces": ["/srv/ws"],
                "space": {"total_bytes": 1000, "avail_bytes": avail, "free_bytes": avail,
                          "total_inodes": 10, "avail_inodes": 5},
                "limits": {"cleanup_bytes": 200, "critical_bytes": 100, "target_bytes": 300,
                           "min_free_bytes": 0, "cleanup_inodes": 1, "critical_inodes": 1,
                           "target_inodes": 1},
                "pressure": "ok",
                "reason": ""
            }],
            "last_cycle": null,
            "recent_actions": [],
            "problems": []
        }))
        .expect("a status document")
    }

    #[test]
    fn history_is_bounded_and_follows_the_filesystems() {
        let mut m = Model::default();
        for i in 0..(HISTORY as u64 + 30) {
            m.apply_status(status(&[], 500 + i), i as f64);
        }
        let h = &m.history[&PathBuf::from("/srv")];
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h.back(), Some(&(500 + HISTORY as u64 + 29)));
    }

    #[test]
    fn projects_sort_by_each_key() {
        let mut m = Model::default();
        m.apply_status(
            status(&[("/srv/ws/a", 10.0, 5), ("/srv/ws/b", 0.0, 50)], 500),
            0.0,
        );
        m.apply_status(
            status(&[("/srv/ws/a", 0.0, 5), ("/srv/ws/b", 3.0, 50)], 500),
            30.0,
        );
        let order = |m: &Model| -> Vec<String> {
            m.project_rows()
                .iter()
                .map(|r| r.path.display().to_string())
                .collect()
        };
        assert_eq!(order(&m), ["/srv/ws/b", "/srv/ws/a"]);
        m.sort = SortKey::Written;
        assert_eq!(order(&m), ["/srv/ws/b", "/srv/ws/a"]);
        m.sort = SortKey::Idle;
        // a last wrote at 0 s (idle 30 s), b now (idle 0 s).
        assert_eq!(order(&m), ["/srv/ws/a", "/srv/ws/b"]);
        let rows = m.project_rows();
        assert_eq!(rows[0].idle_s, Some(30.0));
    }

    #[test]
    fn actions_are_logged_once_with_estimated_and_measured_bytes() {
        let mut m = Model::default();
        let action = json!({"type": "action", "record": {
            "ts": "t1", "id": "x1", "action": "delete", "path": "/srv/ws/a/node_modules",
            "rule": "node-modules", "phase": 1, "reason": "r", "bytes_estimated": 100,
            "bytes_freed": 90, "bytes_unlinked": 95, "entries_removed": 3, "dry_run": false,
            "outcome": "deleted", "error": null
        }});
        m.apply_event(&action);
        m.apply_event(&action);
        m.apply_event(&json!({"type": "threshold_crossed", "mount": "/srv", "level": "cleanup"}));
        assert_eq!(m.log.len(), 2);
        assert_eq!(m.log[0].bytes, Some((100, 90)));
        assert!(m.log[0].text.contains("node_modules"), "{:?}", m.log[0]);
        assert!(m.log[1].text.contains("threshold_crossed"));
        assert!(m.log[1].text.contains("level=cleanup"));
    }

    #[test]
    fn the_log_is_bounded() {
        let mut m = Model::default();
        for i in 0..(LOG_LINES + 50) {
            m.apply_event(&json!({"type": "source_changed", "to": format!("s{i}")}));
        }
        assert_eq!(m.log.len(), LOG_LINES);
    }

    #[test]
    fn a_plan_says_what_goes_and_why_the_rest_stays() {
        let plan = json!([{
            "mount": "/srv",
            "plan": {
                "actions": [{"path": "/srv/ws/a/node_modules", "reason": "phase 1: node-modules",
                             "bytes_estimated": 4096}],
                "skipped": [{"path": "/srv/ws/b", "reason": "in use: pid 7 (make) cwd /srv/ws/b"}]
            }
        }]);
        let entries = plan_entries(Some(&plan));
        assert_eq!(entries.len(), 2);
        assert!(entries[0].deletes && entries[0].bytes == 4096);
        assert!(!entries[1].deletes && entries[1].why.contains("in use"));
        let mut m = Model::default();
        m.apply_status(status(&[("/srv/ws/b", 1.0, 1)], 500), 0.0);
        m.plan = Some(plan);
        assert_eq!(
            m.project_rows()[0].protected.as_deref(),
            Some("in use: pid 7 (make) cwd /srv/ws/b")
        );
    }
}
