//! Human-readable output of `guardian plan` and `guardian status`.

use guardian::config::{human_bytes, Config};
use guardian::daemon::forecast::{human_seconds, ForecastView, FsForecastView, Lead};
use guardian::daemon::state::DaemonState;
use guardian::daemon::{guarded_filesystems, FsPlan};
use guardian::fsys;
use guardian::policy;
use guardian::textpath::shown;

pub fn print_plans(plans: &[FsPlan]) {
    if plans.is_empty() {
        println!("no guarded filesystem: no configured workspace exists");
    }
    for fp in plans {
        let a = &fp.plan.assessment;
        println!(
            "{}: {} of {} free ({:.1}%), {:?}: {}",
            shown(&fp.mount),
            human_bytes(fp.space.avail_bytes),
            human_bytes(fp.space.total_bytes),
            fp.space.avail_percent(),
            a.pressure,
            a.reason
        );
        if fp.plan.actions.is_empty() {
            println!("  nothing to do");
        }
        for (i, action) in fp.plan.actions.iter().enumerate() {
            println!(
                "  {:>3}. phase {} {:<15} {:>10}  {:<17} {}",
                i + 1,
                action.phase,
                action.rule,
                human_bytes(action.bytes_estimated),
                rebuild_text(action.rebuild.as_ref()),
                shown(&action.path)
            );
        }
        for s in &fp.plan.skipped {
            println!("  skip {}: {}", shown(&s.path), s.reason);
        }
        if fp.plan.shortfall_bytes > 0 && a.pressure != policy::Pressure::Ok {
            println!(
                "  shortfall: {} still missing to the target after this plan{}",
                human_bytes(fp.plan.shortfall_bytes),
                if fp.plan.phase2_allowed {
                    ""
                } else {
                    " (phase 2 not allowed: phase 1 can get above critical_free)"
                }
            );
        }
        for e in &fp.survey_errors {
            println!("  warning: {}: {}", shown(&e.path), e.error);
        }
    }
}

/// An action's rebuild estimate as the plan shows it (docs/artifacts.md).
fn rebuild_text(estimate: Option<&policy::RebuildEstimate>) -> String {
    match estimate {
        None => "no rebuild".to_string(),
        // Seconds are at most u64::MAX: as f64 they only lose precision, never wrap.
        Some(e) => format!("rebuild ~{}", human_seconds(e.secs as f64)),
    }
}

/// The guarded filesystems as `statvfs` shows them now (when no daemon state exists).
pub fn live_filesystems(config: &Config) -> serde_json::Value {
    let list: Vec<_> = guarded_filesystems(&config.workspaces)
        .into_iter()
        .filter_map(|fs| {
            let space = fsys::fs_space(&fs.probe).ok()?;
            let a = policy::assess(&space, &config.thresholds, false);
            Some(serde_json::json!({
                "mount": fs.mount, "space": space, "limits": a.limits,
                "pressure": a.pressure, "reason": a.reason,
            }))
        })
        .collect();
    serde_json::Value::Array(list)
}

pub fn print_status(config: &Config, state: Result<&DaemonState, &std::io::Error>) {
    let state = match state {
        Ok(s) => s,
        Err(e) => {
            println!(
                "no daemon state in {} ({e}): is `guardian run` running with this config?",
                shown(&config.daemon.runtime_dir())
            );
            println!("live view:");
            for fs in guarded_filesystems(&config.workspaces) {
                if let Ok(space) = fsys::fs_space(&fs.probe) {
                    let a = policy::assess(&space, &config.thresholds, false);
                    println!(
                        "  {}: {} of {} free ({:.1}%), {:?}: {}",
                        shown(&fs.mount),
                        human_bytes(space.avail_bytes),
                        human_bytes(space.total_bytes),
                        space.avail_percent(),
                        a.pressure,
                        a.reason
                    );
                }
            }
            return;
        }
    };
    println!(
        "guardian pid {} · source {} · poll every {} ms · dry run {} · updated {}",
        state.pid,
        state.source,
        state.poll_interval_ms,
        if state.dry_run { "yes" } else { "no" },
        state.updated
    );
    println!(
        "{:<28} {:>10} {:>10} {:>7} {:>10} {:>10} {:>10}  STATE",
        "FILESYSTEM", "SIZE", "AVAIL", "FREE%", "CLEANUP<", "CRITICAL<", "TARGET"
    );
    for fs in &state.filesystems {
        println!(
            "{:<28} {:>10} {:>10} {:>6.1}% {:>10} {:>10} {:>10}  {:?}",
            shown(&fs.mount),
            human_bytes(fs.space.total_bytes),
            human_bytes(fs.space.avail_bytes),
            fs.space.avail_percent(),
            human_bytes(fs.limits.cleanup_bytes),
            human_bytes(fs.limits.critical_bytes),
            human_bytes(fs.limits.target_bytes),
            fs.pressure
        );
        println!(
            "{:<28} inodes {:.1}% free · {}",
            "",
            fs.space.avail_inodes_percent(),
            fs.reason
        );
        if let Some(f) = &fs.forecast {
            print_fs_forecast(f);
        }
    }
    for skipped in &state.source_skipped {
        println!("source skipped: {skipped}");
    }
    if let Some(source) = state
        .source_status
        .as_ref()
        .filter(|s| s.degraded.is_some())
    {
        println!("source: {source}");
    }
    let active: Vec<_> = state
        .projects
        .iter()
        .filter(|p| p.rate_bps.abs() >= 1.0 || p.net_bps.abs() >= 1.0)
        .collect();
    if !active.is_empty() {
        println!(
            "{:<48} {:>12} {:>12} {:>12}  TOP WRITERS (cgroup)",
            "PROJECT", "RATE/s", "NET/s", "SINCE START"
        );
        for p in active.iter().take(15) {
            let writers: Vec<String> = p
                .top_cgroups
                .iter()
                .map(|c| {
                    format!(
                        "{} {}/s",
                        c.path
                            .as_deref()
                            .map(guardian::textpath::escape)
                            .unwrap_or_else(|| format!("cgroup {}", c.cgroup)),
                        human_bytes(c.rate_bps as u64)
                    )
                })
                .collect();
            println!(
                "{:<48} {:>12} {:>12} {:>12}  {}",
                shown(&p.path),
                signed_bytes(p.rate_bps as i64),
                signed_bytes(p.net_bps as i64),
                signed_bytes(p.total_bytes),
                writers.join(", ")
            );
        }
    }
    if let Some(forecast) = &state.forecast {
        print_project_forecasts(&forecast.projects);
    }
    if let Some(c) = &state.last_cycle {
        println!(
            "last cycle on {} at {}: {} actions in {} rounds, freed {}, {}",
            shown(&c.mount),
            c.started,
            c.actions,
            c.rounds,
            human_bytes(c.bytes_freed),
            if c.reached_target {
                "reached the target".to_string()
            } else {
                c.shortfall
                    .clone()
                    .unwrap_or_else(|| "stopped short of the target".into())
            }
        );
    }
    if !state.recent_actions.is_empty() {
        println!("recent actions:");
        for r in &state.recent_actions {
            println!(
                "  {} {:<12} {:<12} est {:>10} freed {:>10}  {}{}",
                r.ts,
                r.outcome,
                r.rule,
                human_bytes(r.bytes_estimated),
                human_bytes(r.bytes_freed),
                shown(&r.path),
                r.error
                    .as_ref()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            );
        }
    }
    for p in &state.problems {
        println!("problem: {p}");
    }
}

/// A filesystem's growth, time to each threshold, lead time and next trigger.
fn print_fs_forecast(f: &FsForecastView) {
    let indent = format!("{:<28}", "");
    println!(
        "{indent} growth {}/s · {}",
        signed_bytes(f.forecast.rate_bps as i64),
        etas(&f.forecast)
    );
    println!("{indent} lead time {}", describe_lead(&f.lead));
    match &f.forecast.trigger {
        Some(t) => println!("{indent} TRIGGERED: {t}"),
        None => println!("{indent} next: {}", f.forecast.next),
    }
}

/// Projects with growth or a time to a threshold: rate, P50/P90 per threshold, next trigger.
fn print_project_forecasts(projects: &[guardian::daemon::forecast::ProjectForecastView]) {
    let listed: Vec<_> = projects
        .iter()
        .filter(|p| {
            p.forecast.rate_bps.abs() >= 1.0 || p.forecast.eta.iter().any(|e| e.p90_s.is_some())
        })
        .take(10)
        .collect();
    if listed.is_empty() {
        return;
    }
    println!(
        "{:<48} {:>12}  TIME TO THRESHOLD (P50 / P90) IF ONLY IT GREW",
        "PROJECT FORECAST", "GROWTH/s"
    );
    for p in listed {
        println!(
            "{:<48} {:>12}  {}",
            shown(&p.path),
            signed_bytes(p.forecast.rate_bps as i64),
            etas(&p.forecast)
        );
        println!("{:<48} next: {}", "", p.forecast.next);
    }
}

/// `cleanup_free P50 2.1 min / P90 1.5 min · critical_free P50 none / P90 none`.
fn etas(f: &ForecastView) -> String {
    let time = |s: Option<f64>| s.map(human_seconds).unwrap_or_else(|| "none".into());
    f.eta
        .iter()
        .map(|e| format!("{} P50 {} / P90 {}", e.name, time(e.p50_s), time(e.p90_s)))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// `8 s = sample 0 s + scan 1 s + delete 2 s (102 MiB at 50 MiB/s, assumed) + margin 5 s`.
fn describe_lead(l: &Lead) -> String {
    let measured = |m: bool| if m { "measured" } else { "assumed" };
    let parts = format!(
        "sample {} + scan {} ({}) + delete {} ({} at {}/s, {}) + margin {}",
        human_seconds(l.sample_s),
        human_seconds(l.scan_s),
        measured(l.scan_measured),
        human_seconds(l.delete_s),
        human_bytes(l.delete_bytes),
        human_bytes(l.delete_bps as u64),
        measured(l.delete_measured),
        human_seconds(l.margin_s)
    );
    if l.auto {
        format!("{} = {parts}", human_seconds(l.lead_time_s))
    } else {
        format!(
            "{} (fixed; auto would be {parts})",
            human_seconds(l.lead_time_s)
        )
    }
}

fn signed_bytes(n: i64) -> String {
    if n < 0 {
        format!("-{}", human_bytes(n.unsigned_abs()))
    } else {
        human_bytes(n as u64)
    }
}
