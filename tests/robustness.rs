//! Regressions of the robustness issue (issue 12) that belong to the daemon and the CLI: a node
//! with thousands of projects, output piped into `head`, a state file that costs nothing while
//! nothing changes. (Full disks, kill -9 and the like: tests/faults.rs.)

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `count` project dirs under `ws`, each with a small `node_modules`.
fn many_projects(ws: &Path, count: usize) {
    for i in 0..count {
        let nm = ws.join(format!("p{i:05}/node_modules"));
        std::fs::create_dir_all(&nm).unwrap();
        std::fs::write(nm.join("index.js"), vec![b'x'; 2048]).unwrap();
    }
}

#[test]
fn survey_of_10000_projects_under_pressure_does_not_overflow_the_stack() {
    if !require_root("survey_of_10000_projects_under_pressure_does_not_overflow_the_stack") {
        return;
    }
    // Today's main aborted ("has overflowed its stack") from ~1,400 projects: the survey's
    // per-project walks hopped between two thread pools and nested their stacks.
    let mount = TestMount::tmpfs(512 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    many_projects(&ws, 10_000);
    write_config(&config, &ws, &state, "1s", "");
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 85.0);
    let out = guardian(&["plan", "--json", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "plan: {}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !plan[0]["plan"]["actions"].as_array().unwrap().is_empty(),
        "nothing planned"
    );
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "run --once: {}", stderr(&out));
    let deleted = audit_lines(&state.join("audit.jsonl"))
        .iter()
        .filter(|l| l["outcome"] == "deleted")
        .count();
    assert!(deleted > 0, "the daemon cleaned nothing");
}

#[test]
fn report_piped_into_a_reader_that_goes_away_ends_quietly() {
    if !require_root("report_piped_into_a_reader_that_goes_away_ends_quietly") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    many_projects(&ws, 50);
    write_config(&config, &ws, &state, "1s", "");
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success());
    for args in [
        "status",
        "status --json",
        "plan --json",
        "sessions --json",
        "config default",
    ] {
        // `true` reads nothing and exits: every write of guardian's meets a closed pipe.
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; '{}' {args} --config '{}' | true; echo \"status ${{PIPESTATUS[0]}}\"",
                guardian_bin().display(),
                config.display()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args}: {err}");
        assert!(!text.contains("status 101"), "{args}: {text} {err}");
    }
}

#[test]
fn state_file_is_rewritten_only_when_it_changed_and_stays_bounded() {
    if !require_root("state_file_is_rewritten_only_when_it_changed_and_stays_bounded") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("state");
    let config = mount.path("guardian.toml");
    many_projects(&ws, 400);
    write_config(&config, &ws, &state, "100ms", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[daemon]", "[daemon]\nsource = \"inotify\"");
    std::fs::write(&config, text).unwrap();
    let _daemon = Reaped::spawn(
        Command::new(guardian_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .stderr(Stdio::null()),
    );
    let file = state.join("state/state.json");
    assert!(wait_until(Duration::from_secs(10), || file.exists()));
    // Every write replaces the file (a new inode). Start-up changes the state for a few seconds
    // (the forecasts gather their first samples): wait until it has been still for 2 s — a
    // daemon that rewrites it on every poll never gets there — then watch it over 30 polls.
    let inode = || std::fs::metadata(&file).map(|m| m.ino()).ok();
    let mut still = (inode(), std::time::Instant::now());
    assert!(
        wait_until(Duration::from_secs(30), || {
            let now = inode();
            if now != still.0 {
                still = (now, std::time::Instant::now());
            }
            still.1.elapsed() >= Duration::from_secs(2)
        }),
        "the state file never stopped changing on an idle node"
    );
    let first = inode();
    let mut last = first;
    let mut changes = 0;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        let now = inode();
        if now != last {
            changes += 1;
            last = now;
        }
    }
    assert_eq!(changes, 0, "the state file was rewritten on an idle node");
    // A change (a new project) is written.
    std::fs::create_dir_all(ws.join("new-project")).unwrap();
    std::fs::write(ws.join("new-project/f"), vec![1u8; 1 << 20]).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || inode() != first),
        "a change never reached the state file"
    );
    // Bounded: the busiest 100 projects by name, the rest summarized.
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(status["projects"].as_array().unwrap().len() <= 100);
    assert!(
        status["projects_omitted"].as_u64().unwrap() >= 300,
        "{}",
        status["projects_omitted"]
    );
}
