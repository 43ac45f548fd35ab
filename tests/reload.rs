//! The daemon as a service: SIGHUP reloads the config (a broken one is refused and named in the
//! status while the old one keeps guarding; a changed threshold is used by the next cycle; a
//! storm of SIGHUPs does not stall the loop), SIGTERM in the middle of a long cycle exits 0
//! within `SHUTDOWN_BOUND` with every audit intent given its outcome, the journal log format
//! under systemd, and per-project growth from the poll source within its CPU budget. All on a
//! real tmpfs with the real binary.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn status_json(config: &Path) -> serde_json::Value {
    let out = guardian(&["status", "--config", config.to_str().unwrap(), "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The problems of the state file under `state` (read directly: `guardian status` would load
/// the broken config to find it).
fn problems(state: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(state.join("state/state.json")).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text).unwrap_or(serde_json::Value::Null)["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn signal(pid: i32, sig: &str) {
    run(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string()));
}

fn alive(daemon: &mut Reaped) -> bool {
    daemon.0.try_wait().unwrap().is_none()
}

/// A workspace with one idle project holding 24 MiB of `node_modules`, the rest of a 100 MiB
/// tmpfs filled to 75% used (25% free: above the 20% threshold of `write_config`).
fn setup(mount: &TestMount, poll: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ws = mount.path("dispatch");
    write_files(&ws.join("old/node_modules"), 6, 4 * MIB);
    age_tree(&ws.join("old"), Duration::from_secs(3 * 86400));
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    write_config(&config, &ws, &state, poll, "");
    fill_to_used(&mount.dir, &mount.path("filler"), 75.0);
    (config, state, ws)
}

fn start(config: &Path) -> Reaped {
    Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "info"),
    )
}

fn set_cleanup_free(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(config, text.replace(from, to)).unwrap();
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_and_status_names_the_key() {
    if !require_root("sighup_with_a_broken_config_keeps_the_old_one_and_status_names_the_key") {
        return;
    }
    let mount = TestMount::tmpfs(100 * MIB);
    let (config, state, ws) = setup(&mount, "200ms");
    let mut daemon = start(&config);
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    set_cleanup_free(&config, "cleanup_free = \"20%\"", "cleanup_free = \"lots\"");
    signal(daemon.pid(), "HUP");
    let mut seen = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            seen = problems(&state);
            seen.iter().any(|p| p.contains("config reload refused"))
        }),
        "no refusal in the status: {seen:?}"
    );
    let refusal = seen
        .iter()
        .find(|p| p.contains("config reload refused"))
        .unwrap();
    eprintln!("status: {refusal}");
    assert!(refusal.contains("cleanup_free"), "{refusal}");
    assert!(alive(&mut daemon), "the daemon exited on a broken config");
    // Still guarding on the old thresholds: under 20% free, it cleans.
    write_file(&mount.path("filler2"), 8 * MIB);
    assert!(free_percent(&mount.dir) < 20.0);
    assert!(
        wait_until(Duration::from_secs(20), || !ws
            .join("old/node_modules")
            .exists()),
        "the daemon stopped guarding after a refused reload"
    );
    assert!(alive(&mut daemon));
}

#[test]
fn sighup_with_a_raised_threshold_starts_a_cleanup_the_old_one_would_not() {
    if !require_root("sighup_with_a_raised_threshold_starts_a_cleanup_the_old_one_would_not") {
        return;
    }
    let mount = TestMount::tmpfs(100 * MIB);
    let (config, state, ws) = setup(&mount, "200ms");
    let mut daemon = start(&config);
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    // Several polls at 25% free: no cycle under a 20% threshold.
    std::thread::sleep(Duration::from_secs(1));
    assert!(ws.join("old/node_modules").exists());
    assert!(audit_intents(&state.join("audit.jsonl")).is_empty());
    // 30% now, with the target above it; a storm of SIGHUPs coalesces into a reload or two.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("cleanup_free = \"20%\"", "cleanup_free = \"30%\"")
            .replace("target_free = \"30%\"", "target_free = \"40%\""),
    )
    .unwrap();
    for _ in 0..100 {
        signal(daemon.pid(), "HUP");
    }
    assert!(
        wait_until(Duration::from_secs(20), || !ws
            .join("old/node_modules")
            .exists()),
        "the reloaded threshold did not start a cleanup"
    );
    assert!(alive(&mut daemon));
    assert!(
        problems(&state)
            .iter()
            .all(|p| !p.contains("config reload")),
        "{:?}",
        problems(&state)
    );
}

#[test]
fn sighup_with_a_lowered_threshold_keeps_a_cleanup_from_starting() {
    if !require_root("sighup_with_a_lowered_threshold_keeps_a_cleanup_from_starting") {
        return;
    }
    let mount = TestMount::tmpfs(100 * MIB);
    let (config, state, ws) = setup(&mount, "200ms");
    // No forecast: a fast drop of free space would start a preemptive phase 1 whatever the
    // thresholds say.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[forecast]\nenabled = false\n")).unwrap();
    let log = mount.path("daemon.log");
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("GUARDIAN_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("cleanup_free = \"20%\"", "cleanup_free = \"10%\"")
            .replace("critical_free = \"10%\"", "critical_free = \"5%\""),
    )
    .unwrap();
    signal(_daemon.pid(), "HUP");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("config reloaded")),
        "no reload in the log"
    );
    // 17% free: under the old 20%, above the new 10%.
    write_file(&mount.path("filler2"), 8 * MIB);
    let free = free_percent(&mount.dir);
    assert!((10.0..20.0).contains(&free), "{free}");
    // Ten polls and more.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        ws.join("old/node_modules").exists(),
        "a cleanup started under the threshold the reload replaced: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(audit_intents(&state.join("audit.jsonl")).is_empty());
}

#[test]
fn sigterm_mid_cycle_exits_zero_within_the_bound_with_every_intent_audited() {
    if !require_root("sigterm_mid_cycle_exits_zero_within_the_bound_with_every_intent_audited") {
        return;
    }
    // 240 idle projects of 250 small files each: a cycle of hundreds of deletions.
    let mount = TestMount::tmpfs(512 * MIB);
    let ws = mount.path("dispatch");
    for i in 0..240 {
        write_files(&ws.join(format!("p{i:03}/node_modules")), 250, 1024);
    }
    age_tree(&ws, Duration::from_secs(3 * 86400));
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    write_config(&config, &ws, &state, "200ms", "");
    // Free space just under the threshold, with a target only all the projects together reach.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("target_free = \"30%\"", "target_free = \"99%\"");
    std::fs::write(&config, text).unwrap();
    fill_to_used(&mount.dir, &mount.path("filler"), 81.0);
    let audit = state.join("audit.jsonl");
    let mut daemon = start(&config);
    assert!(
        wait_until(Duration::from_secs(30), || !audit_intents(&audit)
            .is_empty()),
        "no cleanup started"
    );
    terminate_within_bound(&mut daemon);
    let lines = all_audit_lines(&audit);
    let outcomes: HashSet<&str> = lines
        .iter()
        .filter(|l| l["outcome"] != "intent")
        .filter_map(|l| l["id"].as_str())
        .collect();
    let dangling: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["outcome"] == "intent")
        .filter(|l| !outcomes.contains(l["id"].as_str().unwrap_or("")))
        .collect();
    assert!(dangling.is_empty(), "intents without outcome: {dangling:?}");
    let left = std::fs::read_dir(&ws)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("node_modules").exists())
        .count();
    assert!(
        left > 0,
        "the cycle had finished before SIGTERM: the test proves nothing"
    );
}

/// The pids of `parent`'s children named `comm`.
fn children_named(parent: i32, comm: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map(|(_, n)| n).unwrap_or("");
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if name == comm && ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn sigterm_kills_a_running_child_and_exits_within_the_bound() {
    if !require_root("sigterm_kills_a_running_child_and_exits_within_the_bound") {
        return;
    }
    // Nothing to delete under pressure: the cycle runs the journal vacuum, here a `sleep 300`.
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("dispatch");
    std::fs::create_dir_all(ws.join("empty")).unwrap();
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    write_config(&config, &ws, &state, "200ms", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[thresholds]",
        &format!(
            "journal_vacuum = [\"sleep\", \"300\"]\njournal_dir = \"{}\"\n\n[thresholds]",
            mount.dir.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    fill_to_used(&mount.dir, &mount.path("filler"), 85.0);
    let mut daemon = start(&config);
    let pid = daemon.pid();
    let mut sleeping = Vec::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            sleeping = children_named(pid, "sleep");
            !sleeping.is_empty()
        }),
        "the journal vacuum never ran"
    );
    terminate_within_bound(&mut daemon);
    for child in sleeping {
        assert!(
            !Path::new(&format!("/proc/{child}")).exists(),
            "the vacuum (pid {child}) outlived the daemon"
        );
    }
    let vacuum = audit_lines(&state.join("audit.jsonl"))
        .into_iter()
        .find(|l| l["action"] == "journal_vacuum")
        .expect("the killed vacuum is audited");
    assert!(
        vacuum["error"].as_str().unwrap_or("").contains("stopping"),
        "{vacuum}"
    );
}

/// Runs `guardian run --once` with stderr into a file; with `journal`, `JOURNAL_STREAM` names
/// that file as systemd would.
fn once_log(journal: bool) -> String {
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("dispatch");
    std::fs::create_dir_all(&ws).unwrap();
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    write_config(&config, &ws, &state, "1s", "");
    let log = mount.path("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(guardian_bin());
    cmd.args(["run", "--once", "--config", config.to_str().unwrap()])
        .env("GUARDIAN_LOG", "info")
        .env_remove("JOURNAL_STREAM");
    if journal {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().unwrap();
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    let status = cmd.stderr(file).status().unwrap();
    assert!(status.success());
    std::fs::read_to_string(&log).unwrap()
}

fn has_timestamp(line: &str) -> bool {
    // `2026-12-06T09:30:00.123456Z`: a date and a time.
    line.as_bytes().windows(11).any(|w| {
        w[4] == b'-' && w[7] == b'-' && w[10] == b'T' && w[..4].iter().all(u8::is_ascii_digit)
    })
}

#[test]
fn under_systemd_log_lines_carry_a_priority_and_no_timestamp() {
    if !require_root("under_systemd_log_lines_carry_a_priority_and_no_timestamp") {
        return;
    }
    let journal = once_log(true);
    let lines: Vec<&str> = journal.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>") && l.contains("guardian started")),
        "{journal}"
    );
    for line in &lines {
        let prio = line.strip_prefix('<').and_then(|r| r.split_once('>'));
        assert!(
            prio.is_some_and(|(n, _)| matches!(n, "3" | "4" | "6" | "7")),
            "no priority prefix: {line}"
        );
        assert!(!has_timestamp(line), "timestamp under systemd: {line}");
    }
    let plain = once_log(false);
    let started = plain
        .lines()
        .find(|l| l.contains("guardian started"))
        .unwrap_or_else(|| panic!("{plain}"));
    assert!(has_timestamp(started), "{started}");
    assert!(!started.starts_with('<'), "{started}");
}

/// The write rate `status` reports for the project at `path` (0 when not listed).
fn rate_of(config: &Path, path: &Path) -> f64 {
    status_json(config)["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["path"].as_str() == path.to_str())
        .and_then(|p| p["rate_bps"].as_f64())
        .unwrap_or(0.0)
}

/// Writes 1 MiB into `dir` every 200 ms until `status` shows a write rate for it (true) or
/// `limit` passes (false).
fn write_until_rated(config: &Path, dir: &Path, limit: Duration) -> bool {
    let began = Instant::now();
    let mut n = 0;
    while began.elapsed() < limit {
        write_file(&dir.join(format!("chunk{n}")), MIB);
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
        if rate_of(config, dir) > 0.0 {
            return true;
        }
    }
    false
}

/// `source = "poll"` with a 100 ms sample interval, into `config`.
fn with_poll_source(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap().replace(
        "[thresholds]",
        "source = \"poll\"\nsample_interval = \"100ms\"\npoll_cpu_budget = \"2%\"\n\n[thresholds]",
    );
    std::fs::write(config, text).unwrap();
}

#[test]
fn sighup_adding_a_workspace_makes_the_source_watch_its_projects() {
    if !require_root("sighup_adding_a_workspace_makes_the_source_watch_its_projects") {
        return;
    }
    let mount = TestMount::tmpfs(256 * MIB);
    let first = mount.path("dispatch");
    let second = mount.path("scratch");
    std::fs::create_dir_all(first.join("a")).unwrap();
    std::fs::create_dir_all(second.join("b")).unwrap();
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    write_config(&config, &first, &state, "200ms", "");
    with_poll_source(&config);
    let mut daemon = start(&config);
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    // Not a workspace yet: written, but nobody watches it.
    write_file(&second.join("b/before"), 4 * MIB);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rate_of(&config, &second.join("b")), 0.0);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[[workspaces]]\npath = \"{}\"\n", second.display()),
    )
    .unwrap();
    signal(daemon.pid(), "HUP");
    assert!(
        write_until_rated(&config, &second.join("b"), Duration::from_secs(30)),
        "a workspace added by reload is not watched: {}",
        status_json(&config)
    );
    assert!(alive(&mut daemon));
}

#[test]
fn poll_source_reports_a_projects_write_rate_within_its_cpu_budget() {
    if !require_root("poll_source_reports_a_projects_write_rate_within_its_cpu_budget") {
        return;
    }
    let mount = TestMount::tmpfs(256 * MIB);
    let ws = mount.path("dispatch");
    // Enough entries that a walk costs measurable CPU time.
    for i in 0..20 {
        write_files(&ws.join(format!("idle{i}/src")), 200, 512);
    }
    std::fs::create_dir_all(ws.join("busy")).unwrap();
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    write_config(&config, &ws, &state, "500ms", "");
    with_poll_source(&config);
    let _daemon = start(&config);
    assert!(wait_until(Duration::from_secs(10), || state
        .join("state/state.json")
        .exists()));
    assert_eq!(status_json(&config)["source"], "poll");
    // A writer adds 1 MiB every 200 ms into `busy`.
    assert!(
        write_until_rated(&config, &ws.join("busy"), Duration::from_secs(30)),
        "no write rate for `busy` in polling mode"
    );
    // The budget, from the source's own accounting.
    let mut sampling = serde_json::Value::Null;
    assert!(wait_until(Duration::from_secs(20), || {
        sampling = status_json(&config)["source_status"]["sampling"].clone();
        sampling["walks"].as_u64().unwrap_or(0) >= 3
    }));
    let cpu = sampling["walk_cpu_s"].as_f64().unwrap();
    let wall = sampling["wall_s"].as_f64().unwrap();
    eprintln!("poll sampling: {sampling}");
    assert!(cpu > 0.0, "{sampling}");
    // Walk CPU over the time since the first walk, allowing for the last walk's own share
    // (its interval has not passed yet).
    let interval = sampling["interval_s"].as_f64().unwrap();
    assert!(
        cpu <= 0.02 * (wall + interval),
        "walks used {cpu} s of CPU in {wall} s: over 2%: {sampling}"
    );
}

/// Sends SIGTERM and waits for the daemon to exit 0 within `SHUTDOWN_BOUND` (plus 5 s slack for
/// a loaded test machine).
fn terminate_within_bound(daemon: &mut Reaped) {
    let stopped = Instant::now();
    signal(daemon.pid(), "TERM");
    let status = loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < guardian::daemon::SHUTDOWN_BOUND + Duration::from_secs(5),
            "still running {:?} after SIGTERM",
            stopped.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("exited {:?} after SIGTERM: {status}", stopped.elapsed());
    assert!(status.success(), "{status}");
}
