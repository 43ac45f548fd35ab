//! Issue 17, item 1: per-project trends model net growth. With the eBPF source, the real
//! `guardian run` (dry run, 1 GiB tmpfs) watches a build-like project that writes 120 MB of
//! temporary files per tooth and deletes them, next to a project written steadily at 2 MiB/s:
//! the probe counts the deletions as freed by others, so the build project's forecast shows no
//! growth and no time to a threshold, and it ranks below the steady grower, while its write
//! activity (bytes written, freed) is still reported. Before frees were counted, the build
//! project looked like a 15 MB/s grower, the fastest of the node.

use super::sawtooth::{tooth, Tmpfs, TOOTH_REST};
use super::*;

/// `guardian status --json`.
fn status(s: &Tmpfs) -> serde_json::Value {
    let out = guardian(&["status", "--json", "--config", s.config.to_str().unwrap()]);
    serde_json::from_slice(&out.stdout).expect("status --json")
}

/// The entry for `name` in the status list `list` (`projects` or `forecast.projects`).
fn entry<'a>(list: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    list.as_array()?
        .iter()
        .find(|p| p["path"].as_str().is_some_and(|path| path.ends_with(name)))
}

/// What the forecasts say of the build project now, as a failure message (None: no grower).
fn build_looks_like_a_grower(status: &serde_json::Value) -> Option<String> {
    let projects = &status["forecast"]["projects"];
    let build = entry(projects, "/build")?;
    let steady = entry(projects, "/steady");
    let rate = build["rate_bps"].as_f64().unwrap_or(0.0);
    let steady_rate = steady.and_then(|s| s["rate_bps"].as_f64()).unwrap_or(0.0);
    let eta = build["eta"]
        .as_array()
        .is_some_and(|e| e.iter().any(|t| !t["p50_s"].is_null()));
    let order: Vec<&str> = projects
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["path"].as_str()).collect())
        .unwrap_or_default();
    let build_first = order.iter().position(|p| p.ends_with("/build"))
        < order.iter().position(|p| p.ends_with("/steady"));
    (rate >= steady_rate || eta || build_first).then(|| {
        format!(
            "build forecast {rate:.0} B/s (steady {steady_rate:.0} B/s), P50 ETA: {eta}, order \
             {order:?}: {build}"
        )
    })
}

#[test]
fn a_project_that_deletes_what_it_writes_is_not_ranked_as_a_grower() {
    if !require_root("a_project_that_deletes_what_it_writes_is_not_ranked_as_a_grower") {
        return;
    }
    let _serial = one_at_a_time();
    // 50 % free: the teeth (120 MB) and the steady writer (~70 MB) stay clear of the thresholds.
    let s = Tmpfs::new(50.0);
    let steady_dir = s.ws.join("steady");
    std::fs::create_dir_all(&steady_dir).unwrap();
    let _daemon = s.start_daemon();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let data = vec![0x42u8; MIB as usize];
            let mut f = std::fs::File::create(steady_dir.join("log.bin")).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&data).unwrap();
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let build = s.ws.join("build");
    let mut failures = Vec::new();
    for k in 0..5 {
        tooth(&build, &s.mount.dir);
        // After the third tooth: at a tooth's end (its peak just deleted) and after its rest.
        if k >= 2 {
            std::thread::sleep(Duration::from_millis(1500));
            failures.extend(build_looks_like_a_grower(&status(&s)));
        }
        std::thread::sleep(TOOTH_REST - Duration::from_millis(1500));
        if k >= 2 {
            failures.extend(build_looks_like_a_grower(&status(&s)));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // The status is the state file, rewritten when its content changed beyond measurement
    // noise: the last tooth's frees may reach it a few seconds after they happened.
    let activity = |st: &serde_json::Value| {
        let build = entry(&st["projects"], "/build").expect("build in the status");
        let written = build["total_bytes"].as_i64().unwrap_or(0);
        let freed = build["freed_bytes"].as_i64().unwrap_or(0);
        (build.clone(), written, freed)
    };
    let mut st = status(&s);
    wait_until(Duration::from_secs(15), || {
        st = status(&s);
        let (_, written, freed) = activity(&st);
        (written - freed).abs() < 10_000_000
    });
    let (build_activity, written, freed) = activity(&st);
    eprintln!(
        "build: written {:.0} MB, freed by others {:.0} MB; {} of 6 readings looked like a grower",
        written as f64 / 1e6,
        freed as f64 / 1e6,
        failures.len()
    );
    assert!(
        written >= 5 * 120_000_000,
        "setup: the teeth were written: {build_activity}"
    );
    assert!(
        (written - freed).abs() < 10_000_000,
        "the probe counts what the build deleted: {build_activity}"
    );
    let steady = entry(&st["projects"], "/steady").expect("steady in the status");
    assert_eq!(steady["freed_bytes"].as_i64(), Some(0), "{steady}");
    assert!(failures.is_empty(), "{failures:#?}");
}
