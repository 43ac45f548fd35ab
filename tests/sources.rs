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
    let ws = mount.path("dispatch");
    for (name, days) in [("old", 3), ("older", 5)] {
        write_files(&ws.join(name).join("node_modules"), 10, 4 * MIB);
        age_tree(&ws.join(name), Duration::from_secs(days * 86400));
    }
    std::fs::create_dir_all(ws.join("busy")).unwrap();
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    write_config(&config, &ws, &state, "1h", "");
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
