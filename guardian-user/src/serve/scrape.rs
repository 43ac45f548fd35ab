//! `GET /metrics`: OpenMetrics text (`prometheus-client`). Gauges come from the newest status
//! snapshot, counters from [`Counters`](crate::publish::metrics::Counters); filesystem series
//! carry node_exporter's labels (`mountpoint`, `device`, `fstype`) so they join with
//! `node_filesystem_*`. No `quantile` label (reserved by Prometheus): forecasts are labelled
//! `estimate="p50|p90"`.
//!
//! Invariants: bounded series (projects: see [`crate::publish::written`]); a time to a
//! threshold is absent when the filesystem is not filling.

use super::AppState;
use crate::daemon::state::DaemonState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::path::Path;
use std::sync::atomic::AtomicU64;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, AtomicU64>;

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let status = state.hub.status();
    let parsed: Option<DaemonState> = serde_json::from_str(&status).ok();
    match render(parsed.as_ref(), &state.hub, state.version) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The whole exposition for `status` (none before the first poll) and the hub's counters.
pub fn render(
    status: Option<&DaemonState>,
    hub: &crate::publish::Hub,
    version: &str,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    let size = Family::<Labels, FGauge>::default();
    let avail = Family::<Labels, FGauge>::default();
    let threshold = Family::<Labels, FGauge>::default();
    let eta = Family::<Labels, FGauge>::default();
    // 1 while the daemon refuses to delete (its audit log cannot be written); /status says why.
    let refusing = Gauge::<i64>::default();
    refusing.set(i64::from(status.is_some_and(|s| s.refusing.is_some())));
    registry.register(
        "guardian_refusing",
        "1 while Guardian deletes nothing because its audit log cannot be written (see /status)",
        refusing,
    );
    if let Some(s) = status {
        let mounts = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
        for fs in &s.filesystems {
            let (device, fstype) = mount_source(&mounts, &fs.mount);
            let base: Labels = vec![
                ("mountpoint", crate::textpath::escape(&fs.mount)),
                ("device", device),
                ("fstype", fstype),
            ];
            let with = |extra: &[(&'static str, &str)]| {
                let mut l = base.clone();
                l.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
                l
            };
            size.get_or_create(&base).set(fs.space.total_bytes as f64);
            avail.get_or_create(&base).set(fs.space.avail_bytes as f64);
            for (level, bytes) in [
                ("cleanup", fs.limits.cleanup_bytes),
                ("critical", fs.limits.critical_bytes),
                ("target", fs.limits.target_bytes),
                ("min", fs.limits.min_free_bytes),
            ] {
                threshold
                    .get_or_create(&with(&[("level", level)]))
                    .set(bytes as f64);
            }
            for e in fs.forecast.iter().flat_map(|f| &f.forecast.eta) {
                for (estimate, seconds) in [("p50", e.p50_s), ("p90", e.p90_s)] {
                    if let Some(seconds) = seconds.filter(|s| s.is_finite() && *s >= 0.0) {
                        let name = e.name.trim_end_matches("_free");
                        eta.get_or_create(&with(&[("threshold", name), ("estimate", estimate)]))
                            .set(seconds);
                    }
                }
            }
        }
        registry.register(
            "guardian_source",
            "The write source running now",
            Info::new(vec![("source", s.source.clone())]),
        );
    }
    registry.register(
        "guardian_filesystem_size_bytes",
        "Size of each guarded filesystem (statvfs)",
        size,
    );
    registry.register(
        "guardian_filesystem_avail_bytes",
        "Bytes available to unprivileged users on each guarded filesystem (statvfs)",
        avail,
    );
    registry.register(
        "guardian_filesystem_threshold_bytes",
        "Free bytes at each threshold: cleanup, critical, target, min",
        threshold,
    );
    registry.register(
        "guardian_filesystem_time_to_threshold_seconds",
        "Forecast time until free space falls to a threshold (absent when not filling)",
        eta,
    );
    hub.counters.register(&mut registry);
    registry.register(
        "guardian_build",
        "Guardian's version and OS (the fleet rules tell a macOS worker, which polls by design, \
         from a Linux node degraded to polling)",
        Info::new(vec![
            ("version", version.to_string()),
            ("os", std::env::consts::OS.to_string()),
        ]),
    );
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// The mount source (`device`) and filesystem type of the mount at `mount`, from mountinfo
/// (the last mount there wins: it is the one seen); empty when unknown.
fn mount_source(mountinfo: &[u8], mount: &Path) -> (String, String) {
    use std::os::unix::ffi::OsStrExt;
    let want = mount.as_os_str().as_bytes();
    let mut found = (String::new(), String::new());
    for line in mountinfo.split(|b| *b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
        let Some(point) = fields.get(4) else {
            continue;
        };
        if crate::fsys::unescape_mountinfo(point) != want {
            continue;
        }
        // After the optional fields, `-` separates: fstype, source, super options.
        let Some(dash) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        let text = |i: usize| {
            fields
                .get(i)
                .map(|f| crate::textpath::escape_bytes(&crate::fsys::unescape_mountinfo(f)))
                .unwrap_or_default()
        };
        found = (text(dash + 2), text(dash + 1));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_gives_device_and_fstype_of_the_last_mount_at_a_point() {
        let info = b"22 1 0:21 / /proc rw shared:12 - proc proc rw\n\
            30 1 8:1 / /w\\040x rw shared:1 - ext4 /dev/sda1 rw\n\
            31 30 0:50 / /w\\040x rw - tmpfs guardian-test rw,size=1024k\n";
        assert_eq!(
            mount_source(info, Path::new("/w x")),
            ("guardian-test".into(), "tmpfs".into())
        );
        assert_eq!(
            mount_source(info, Path::new("/nope")),
            (String::new(), String::new())
        );
    }

    #[test]
    fn metric_names_are_as_the_issue_spells_them_without_quantile() {
        let hub = crate::publish::Hub::new();
        let mut record = crate::cleanup::AuditRecord::event(
            "delete",
            "/w/p/node_modules".into(),
            "regenerable",
            1,
            String::new(),
            false,
            "deleted",
        );
        record.bytes_freed = 4096;
        hub.publish(crate::publish::Event::Action { record });
        let text = render(None, &hub, "0.1.0").unwrap();
        for name in [
            "guardian_cleanup_freed_bytes_total{rule=\"regenerable\",phase=\"1\"} 4096",
            "guardian_cleanup_actions_total{rule=\"regenerable\",phase=\"1\",outcome=\"deleted\"} 1",
            "guardian_cleanup_cycle_duration_seconds",
            "guardian_ghosts_reaped_total",
            "guardian_build_info{version=\"0.1.0\",os=\"linux\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        assert!(!text.contains("quantile"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// A filling filesystem exports its P50/P90 time to each threshold, named as the level
    /// labels of `guardian_filesystem_threshold_bytes`; one not filling exports none.
    #[test]
    fn a_filling_filesystem_exports_its_time_to_each_threshold() {
        use crate::daemon::forecast::{ForecastView, FsForecastView, Lead, ThresholdEta};
        use crate::daemon::state::{DaemonState, FsState};
        let fs: FsState = serde_json::from_value(serde_json::json!({
            "mount": "/srv",
            "workspaces": ["/srv/ws"],
            "space": {"total_bytes": 1000, "avail_bytes": 400, "free_bytes": 400,
                      "total_inodes": 10, "avail_inodes": 5},
            "limits": {"cleanup_bytes": 200, "critical_bytes": 100, "target_bytes": 300,
                       "min_free_bytes": 0, "cleanup_inodes": 1, "critical_inodes": 1,
                       "target_inodes": 1},
            "pressure": "ok",
            "reason": ""
        }))
        .unwrap();
        let eta = |name: &str, p50: Option<f64>, p90: Option<f64>| ThresholdEta {
            name: name.into(),
            threshold: 0,
            p50_s: p50,
            p90_s: p90,
        };
        let filling = FsState {
            forecast: Some(FsForecastView {
                forecast: ForecastView {
                    rate_bps: 10.0,
                    samples: 100,
                    eta: vec![
                        eta("cleanup_free", Some(20.0), Some(12.0)),
                        eta("critical_free", Some(30.0), Some(f64::INFINITY)),
                    ],
                    next: String::new(),
                    trigger: None,
                },
                enabled: true,
                floor_free: 400,
                lead: Lead::default(),
            }),
            ..fs
        };
        let status: DaemonState = serde_json::from_value(serde_json::json!({
            "updated": "", "pid": 1, "source": "poll", "projects": [], "dry_run": false,
            "poll_interval_ms": 5000, "filesystems": [], "last_cycle": null,
            "recent_actions": [], "problems": []
        }))
        .unwrap();
        let status = DaemonState {
            filesystems: vec![filling],
            ..status
        };
        let hub = crate::publish::Hub::new();
        let text = render(Some(&status), &hub, "0.1.0").unwrap();
        let line = |threshold: &str, estimate: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("guardian_filesystem_time_to_threshold_seconds{")
                        && l.contains(&format!("threshold=\"{threshold}\""))
                        && l.contains(&format!("estimate=\"{estimate}\""))
                })
                .map(str::to_string)
        };
        assert!(
            line("cleanup", "p90").is_some_and(|l| l.ends_with(" 12.0")),
            "{text}"
        );
        assert!(
            line("cleanup", "p50").is_some_and(|l| l.ends_with(" 20.0")),
            "{text}"
        );
        assert!(line("critical", "p50").is_some(), "{text}");
        // Not finite: absent, never a sample an alert could compare.
        assert!(line("critical", "p90").is_none(), "{text}");
        assert!(text.contains("level=\"critical\""), "{text}");
    }

    /// An unwritable audit log is a refusing state: a metric says so (issue 12).
    #[test]
    fn a_refusing_daemon_says_so_in_a_metric() {
        let status: DaemonState = serde_json::from_value(serde_json::json!({
            "updated": "", "pid": 1, "source": "poll", "projects": [], "dry_run": false,
            "poll_interval_ms": 5000, "filesystems": [], "last_cycle": null,
            "recent_actions": [], "problems": [],
            "refusing": "audit log unwritable: EROFS"
        }))
        .unwrap();
        let hub = crate::publish::Hub::new();
        let text = render(Some(&status), &hub, "0.1.0").unwrap();
        assert!(text.lines().any(|l| l == "guardian_refusing 1"), "{text}");
        let fine = DaemonState {
            refusing: None,
            ..status
        };
        let text = render(Some(&fine), &hub, "0.1.0").unwrap();
        assert!(text.lines().any(|l| l == "guardian_refusing 0"), "{text}");
    }
}
