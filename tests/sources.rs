//! The daemon with its write sources: source selection and fallback, reacting to a crossing
//! within a sample interval instead of at the next poll, and per-project rates with the
//! cgroups that write.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// A workspace with two projects holding regenerable artifacts, and a config whose poll
/// interval is an hour: only the sampler can react in time.
fn setup(mount: &TestMount, source: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    setup_polling(mount, source, "1h")
}

/// [`setup`] with another poll interval (the state file is rewritten on each poll).
fn setup_polling(
    mount: &TestMount,
    source: &str,
    poll: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let ws = mount.path("dispatch");
    for (name, days) in [("old", 3), ("older", 5)] {
        write_files(&ws.join(name).join("node_modules"), 10, 4 * MIB);
        age_tree(&ws.join(name), Duration::from_secs(days * 86400));
    }
    std::fs::create_dir_all(ws.join("busy")).unwrap();
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    write_config(&config, &ws, &state, poll, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[thresholds]",
        &format!("source = \"{source}\"\nsample_interval = \"100ms\"\n\n[thresholds]"),
    );
    std::fs::write(&config, text).unwrap();
    (config, state)
}

fn status_json(config: &Path) -> serde_json::Value {
    let out = guardian(&["status", "--config", config.to_str().unwrap(), "--json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The bytes the status counts for the project whose path ends with `suffix`.
fn project_total(config: &Path, suffix: &str) -> Option<i64> {
    status_json(config)["projects"].as_array().and_then(|ps| {
        ps.iter()
            .find(|p| p["path"].as_str().is_some_and(|s| s.ends_with(suffix)))
            .and_then(|p| p["total_bytes"].as_i64())
    })
}

/// Writes `bytes` into `path` with `dd` (a separate process, so it has its own cgroup view).
fn dd(path: &Path, bytes: u64) {
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", path.display()))
        .arg("bs=1M")
        .arg(format!("count={}", bytes / MIB))
        .arg("status=none")
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn ebpf_source_reacts_within_a_sample_and_names_the_writing_cgroup() {
    if !require_root("ebpf_source_reacts_within_a_sample_and_names_the_writing_cgroup") {
        return;
    }
    let mount = TestMount::tmpfs(256 * MIB);
    let (config, state) = setup(&mount, "ebpf");
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "info"),
    );
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    assert_eq!(
        status_json(&config)["source"],
        "ebpf",
        "the probe must load here (root, BTF)"
    );
    // The running task in `busy` writes until the disk is 82% used.
    let (total, avail) = space(&mount.dir);
    let to_write = avail - (total as f64 * 0.18) as u64;
    let crossed = Instant::now();
    dd(&mount.path("dispatch/busy/checkpoint.bin"), to_write);
    let cleaned = wait_until(Duration::from_secs(20), || {
        !audit_lines(&state.join("audit.jsonl")).is_empty()
    });
    let reaction = crossed.elapsed();
    assert!(
        cleaned,
        "no cleanup although the poll interval is 1h: the sampler did not react"
    );
    eprintln!("first audit line {reaction:?} after the writer started");
    let status = status_json(&config);
    let busy = status["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"].as_str().unwrap().ends_with("/busy"))
        .expect("busy project reported")
        .clone();
    assert!(
        busy["total_bytes"].as_i64().unwrap() >= (to_write as i64) * 9 / 10,
        "{busy}"
    );
    assert!(
        !busy["top_cgroups"].as_array().unwrap().is_empty(),
        "{busy}"
    );
}

/// A crossing with a 5 s `sample_interval` and a 1 h poll: the probe's countdown wakes the
/// daemon, which samples at once. The first budget (headroom less a margin) always runs out
/// before the crossing, so a cycle whose trigger names the countdown also shows the budget was
/// re-armed after the statvfs of that wake-up (and of any before it).
#[test]
fn a_crossing_is_seen_by_the_probes_countdown_not_at_the_next_sample() {
    if !require_root("a_crossing_is_seen_by_the_probes_countdown_not_at_the_next_sample") {
        return;
    }
    let mount = TestMount::tmpfs(256 * MIB);
    let (config, state) = setup(&mount, "ebpf");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("sample_interval = \"100ms\"", "sample_interval = \"5s\"");
    std::fs::write(&config, text).unwrap();
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "info"),
    );
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    assert_eq!(status_json(&config)["source"], "ebpf");
    let (total, avail) = space(&mount.dir);
    let to_write = avail - (total as f64 * 0.18) as u64;
    dd(&mount.path("dispatch/busy/checkpoint.bin"), to_write);
    let cleaned = wait_until(Duration::from_secs(20), || {
        status_json(&config)["last_cycle"]["trigger"].is_string()
    });
    assert!(cleaned, "no cleanup cycle finished");
    let trigger = status_json(&config)["last_cycle"]["trigger"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        trigger.contains("cleanup_free") && trigger.contains("woken by the ebpf write countdown"),
        "the cycle must start from the countdown's wake-up, not from a sample tick: {trigger}"
    );
    assert!(!audit_lines(&state.join("audit.jsonl")).is_empty());
}

#[test]
fn auto_falls_back_when_the_probe_fails_and_still_guards() {
    if !require_root("auto_falls_back_when_the_probe_fails_and_still_guards") {
        return;
    }
    let mount = TestMount::tmpfs(256 * MIB);
    let (config, state) = setup(&mount, "auto");
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "info")
            .env("GUARDIAN_FORCE_EBPF_FAILURE", "1"),
    );
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    let status = status_json(&config);
    assert_ne!(status["source"], "ebpf");
    assert_ne!(
        status["source"], "poll",
        "fanotify or inotify must take over on Linux as root"
    );
    let skipped = status["source_skipped"].as_array().unwrap();
    assert!(
        skipped[0]
            .as_str()
            .unwrap()
            .contains("GUARDIAN_FORCE_EBPF_FAILURE"),
        "{skipped:?}"
    );
    let (total, avail) = space(&mount.dir);
    dd(
        &mount.path("dispatch/busy/checkpoint.bin"),
        avail - (total as f64 * 0.18) as u64,
    );
    assert!(
        wait_until(Duration::from_secs(20), || free_percent(&mount.dir) >= 30.0),
        "the fallback source did not guard the disk"
    );
}

/// Starts the daemon on `config` with its log in `log` and extra environment.
fn daemon_logging_to(config: &Path, log: &Path, env: &[(&str, &str)]) -> Reaped {
    let mut cmd = Command::new(guardian_bin());
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .env("GUARDIAN_LOG", "info")
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Reaped::spawn(&mut cmd)
}

/// Lines of the daemon's log about write sources failing, falling back or coming back (not the
/// start-up selection).
fn source_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains("write source")
                && !l.contains("write source selected")
                && !l.contains("skipping write source")
        })
        .map(str::to_string)
        .collect()
}

/// Issue 12 item 6: a fanotify worker that fails made `drain()` fail forever, with a warning
/// every sample and no fallback. Now the daemon falls back to inotify, says so in its status,
/// retries fanotify with back-off (here every retry fails too) and logs the failure a couple of
/// times, not every sample.
#[test]
fn a_failing_fanotify_worker_falls_back_to_inotify_and_the_log_stays_quiet() {
    if !require_root("a_failing_fanotify_worker_falls_back_to_inotify_and_the_log_stays_quiet") {
        return;
    }
    let mount = TestMount::tmpfs(256 * MIB);
    let (config, state) = setup_polling(&mount, "auto", "1s");
    let log = mount.path("daemon.log");
    let _daemon = daemon_logging_to(
        &config,
        &log,
        &[
            ("GUARDIAN_FORCE_EBPF_FAILURE", "1"),
            ("GUARDIAN_FORCE_WORKER_FAILURE", "fanotify:1"),
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    // The first status may still show fanotify; the fallback follows within seconds.
    assert!(
        wait_until(Duration::from_secs(15), || {
            let s = status_json(&config);
            s["source"] == "inotify" && s["source_status"]["degraded"]["failed"] == "fanotify"
        }),
        "no fallback to inotify: {}",
        status_json(&config)
    );
    // inotify guards and counts: a writer in `busy` is seen.
    dd(&mount.path("dispatch/busy/seen.bin"), 4 * MIB);
    // Many seconds with every retry of fanotify failing again (the first retry is due after
    // 10 s, the next after 20 s more).
    std::thread::sleep(Duration::from_secs(25));
    let status = status_json(&config);
    let degraded = &status["source_status"]["degraded"];
    assert_eq!(degraded["failed"], "fanotify", "{status}");
    assert!(
        degraded["reason"]
            .as_str()
            .unwrap()
            .contains("GUARDIAN_FORCE_WORKER_FAILURE"),
        "{status}"
    );
    // Each retry opens fanotify, which fails again a second later: at least two failures.
    assert!(degraded["failures"].as_u64().unwrap() >= 2, "{status}");
    let text = guardian(&["status", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("source: inotify (fanotify failed at ") && text.contains("retr"),
        "{text}"
    );
    let lines = source_lines(&log);
    eprintln!("{}", lines.join("\n"));
    assert!(
        lines.len() <= 3,
        "{} lines about the failing source in ~30 s:\n{}",
        lines.len(),
        lines.join("\n")
    );
    let busy = status["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"].as_str().unwrap().ends_with("/busy"))
        .cloned()
        .unwrap_or_default();
    assert!(
        busy["total_bytes"].as_i64().unwrap_or(0) >= 4 * MIB as i64,
        "the fallback counts writes: {busy}"
    );
}

/// The retry of a failed source brings it back: status shows it running again.
#[test]
fn a_failed_source_is_retried_and_restored() {
    if !require_root("a_failed_source_is_retried_and_restored") {
        return;
    }
    let mount = TestMount::tmpfs(256 * MIB);
    let (config, state) = setup_polling(&mount, "fanotify", "1s");
    let log = mount.path("daemon.log");
    let _daemon = daemon_logging_to(
        &config,
        &log,
        &[("GUARDIAN_FORCE_WORKER_FAILURE", "fanotify:1:1")],
    );
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    assert!(
        wait_until(Duration::from_secs(15), || {
            status_json(&config)["source_status"]["degraded"]["failed"] == "fanotify"
        }),
        "an explicit fanotify that fails runs on polling and says so: {}",
        status_json(&config)
    );
    assert_eq!(status_json(&config)["source"], "poll");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let s = status_json(&config);
            s["source"] == "fanotify" && s["source_status"]["degraded"].is_null()
        }),
        "fanotify was not restored: {}",
        status_json(&config)
    );
    let lines = source_lines(&log);
    assert!(lines.len() <= 3, "{}", lines.join("\n"));
}

/// Issue 12 item 11: `source = "ebpf"` where the probe cannot load ran silently on `poll`. An
/// explicit choice that cannot be honoured is an error at start: exit 2 with the reason.
#[test]
fn an_explicit_source_that_cannot_run_is_refused_at_start_with_exit_2() {
    if !require_root("an_explicit_source_that_cannot_run_is_refused_at_start_with_exit_2") {
        return;
    }
    let mount = TestMount::tmpfs(256 * MIB);
    let (config, _state) = setup(&mount, "ebpf");
    let log = mount.path("daemon.log");
    let mut daemon = daemon_logging_to(&config, &log, &[("GUARDIAN_FORCE_EBPF_FAILURE", "1")]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("the daemon kept running:\n{text}"));
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(
        text.contains("daemon.source") && text.contains("GUARDIAN_FORCE_EBPF_FAILURE"),
        "{text}"
    );
    // `auto` still falls back at start.
    let (auto, _) = setup(&mount, "auto");
    let once = Command::new(guardian_bin())
        .args(["run", "--once", "--config", auto.to_str().unwrap()])
        .env("GUARDIAN_FORCE_EBPF_FAILURE", "1")
        .output()
        .unwrap();
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
}

/// Issue 12 item 8, as reported: 10 rounds of 1,000 project dirs created and removed under the
/// running daemon, then a new project's 10 MiB counted 0 bytes while status showed `ebpf` and no
/// problem (project ids were never reused; the probe refused ids ≥ 8,192).
#[test]
fn ebpf_attribution_survives_ten_thousand_project_dirs_created_and_removed() {
    if !require_root("ebpf_attribution_survives_ten_thousand_project_dirs_created_and_removed") {
        return;
    }
    let mount = TestMount::tmpfs(512 * MIB);
    let (config, state) = setup_polling(&mount, "ebpf", "1s");
    let ws = mount.path("dispatch");
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "warn"),
    );
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    // The state file names the busiest 100 projects and counts the rest.
    let projects = |config: &Path| {
        let status = status_json(config);
        status["projects"].as_array().map_or(0, Vec::len)
            + status["projects_omitted"].as_u64().unwrap_or(0) as usize
    };
    for round in 0..10 {
        for i in 0..1000 {
            std::fs::create_dir(ws.join(format!("r{round}-{i}"))).unwrap();
        }
        assert!(
            wait_until(Duration::from_secs(20), || projects(&config) >= 1000),
            "round {round}: the daemon never saw the 1,000 projects"
        );
        for i in 0..1000 {
            std::fs::remove_dir(ws.join(format!("r{round}-{i}"))).unwrap();
        }
        assert!(
            wait_until(Duration::from_secs(20), || projects(&config) < 1000),
            "round {round}: the daemon never saw the projects go"
        );
    }
    std::fs::create_dir(ws.join("new-project")).unwrap();
    let total = |config: &Path| project_total(config, "/new-project");
    assert!(wait_until(Duration::from_secs(10), || total(&config).is_some()));
    // Watched from the next poll on.
    std::thread::sleep(Duration::from_secs(2));
    dd(&ws.join("new-project/data.bin"), 10 * MIB);
    assert!(
        wait_until(Duration::from_secs(10), || total(&config)
            == Some(10 * MIB as i64)),
        "the new project's 10 MiB: {:?}; status: {}",
        total(&config),
        status_json(&config)["source_status"]
    );
    let status = status_json(&config);
    assert_eq!(status["source"], "ebpf");
    assert!(
        status["problems"].as_array().unwrap().is_empty(),
        "{}",
        status["problems"]
    );
}

/// A bind mount over a project dir gives it another identity without touching its workspace
/// dir's times: the mount table's watch re-lists the projects at the next poll, and the probe
/// counts what is written through the mount into the project (the listing was trusted for up to
/// 60 s before, and such a project's bytes went uncounted meanwhile).
#[test]
fn a_bind_mount_over_a_project_dir_is_counted_from_the_next_poll() {
    if !require_root("a_bind_mount_over_a_project_dir_is_counted_from_the_next_poll") {
        return;
    }
    let mount = TestMount::tmpfs(256 * MIB);
    let (config, state) = setup_polling(&mount, "ebpf", "1s");
    let ws = mount.path("dispatch");
    let elsewhere = mount.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "warn"),
    );
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    let total = |config: &Path| project_total(config, "/busy");
    assert!(wait_until(Duration::from_secs(10), || total(&config).is_some()));
    // Settled: the listing has been trusted for a few polls.
    std::thread::sleep(Duration::from_secs(3));
    let busy = ws.join("busy");
    run(Command::new("mount")
        .arg("--bind")
        .arg(&elsewhere)
        .arg(&busy));
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(busy.clone());
    // Two polls: the re-listing, then the probe's registration of the mounted dir.
    std::thread::sleep(Duration::from_secs(3));
    dd(&busy.join("data.bin"), 8 * MIB);
    assert!(
        wait_until(Duration::from_secs(10), || total(&config)
            .is_some_and(|t| t >= 8 * MIB as i64)),
        "bytes written through the bind mount: {:?}",
        total(&config)
    );
}
