//! Issue 17: writes that undo themselves start no cleanup. On a real 1 GiB tmpfs at 34 % free
//! (under the 40 % floor, above `cleanup_free` 20 %), the real `guardian run` in dry run with the
//! eBPF source watches a build-like writer that puts 120 MB of temporary files into a project
//! over ~3 s, deletes them, waits 5 s and starts again: on main the preemptive trigger fired on
//! every tooth. The forecast must learn the pattern within three teeth, also when the teeth's
//! peaks come within 1 pp of the threshold, and a steady 20 MB/s writer in the same setup must
//! still trigger before `cleanup_free` is crossed.

use super::*;

/// One tooth: 12 temporary files of 10 MB, one every 250 ms (120 MB over ~3 s), then deleted.
const TOOTH_FILES: usize = 12;
const TOOTH_FILE: u64 = 10_000_000;
const TOOTH_EVERY: Duration = Duration::from_millis(250);
pub(super) const TOOTH_REST: Duration = Duration::from_secs(5);

pub(super) struct Tmpfs {
    pub(super) mount: TestMount,
    pub(super) ws: PathBuf,
    pub(super) state: PathBuf,
    pub(super) config: PathBuf,
}

impl Tmpfs {
    /// A 1 GiB tmpfs with idle projects holding `node_modules` (what a preemptive phase 1
    /// would plan to delete), a `build` project the writer works in, and a filler outside the
    /// workspace bringing free space to `free_percent`; the daemon in dry run with the eBPF
    /// source.
    pub(super) fn new(free_percent: f64) -> Tmpfs {
        let mount = TestMount::tmpfs(1024 * MIB);
        let ws = mount.path("dispatch");
        for i in 0..3 {
            let project = ws.join(format!("idle-{i}"));
            write_files(&project.join("node_modules"), 4, 5 * MIB);
            age_tree(&project, Duration::from_secs((2 + i as u64) * 86400));
        }
        std::fs::create_dir_all(ws.join("build")).unwrap();
        let (total, avail) = space(&mount.dir);
        let target_avail = (total as f64 * free_percent / 100.0) as u64;
        write_file(&mount.path("filler"), avail - target_avail);
        let state = mount.path("guardian-state");
        let config = mount.path("guardian.toml");
        write_config(&config, &ws, &state, "1s", "");
        let text = std::fs::read_to_string(&config).unwrap().replacen(
            "[daemon]\n",
            "[daemon]\ndry_run = true\nsource = \"ebpf\"\n",
            1,
        );
        std::fs::write(&config, text).unwrap();
        Tmpfs {
            mount,
            ws,
            state,
            config,
        }
    }

    pub(super) fn start_daemon(&self) -> Reaped {
        let daemon = Reaped::spawn(
            Command::new(guardian_bin())
                .args(["run", "--config", self.config.to_str().unwrap()])
                .env("GUARDIAN_LOG", "info"),
        );
        assert!(
            wait_until(Duration::from_secs(20), || self
                .state
                .join("state/state.json")
                .exists()),
            "the daemon never wrote its state"
        );
        std::thread::sleep(Duration::from_secs(3));
        let status = guardian(&[
            "status",
            "--json",
            "--config",
            self.config.to_str().unwrap(),
        ]);
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(status["source"], "ebpf", "{status}");
        daemon
    }

    /// When each preemptive cycle was planned (dry run: its would-be deletions' audit lines).
    fn preemptive_at(&self) -> Vec<SystemTime> {
        let mut out: Vec<SystemTime> = audit_lines(&self.state.join("audit.jsonl"))
            .into_iter()
            .filter(|l| l["action"] == "delete")
            .filter(|l| {
                l["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("preemptive"))
            })
            .map(|l| humantime::parse_rfc3339(l["ts"].as_str().unwrap()).unwrap())
            .collect();
        out.sort();
        out.dedup_by(|b, a| {
            b.duration_since(*a)
                .is_ok_and(|d| d < Duration::from_millis(500))
        });
        out
    }

    fn level(&self, percent: f64) -> u64 {
        let (total, _) = space(&self.mount.dir);
        (total as f64 * percent / 100.0).round() as u64
    }
}

/// Writes one tooth into `dir` and deletes it; returns the lowest free space seen.
pub(super) fn tooth(dir: &Path, mount: &Path) -> u64 {
    let data = vec![0x5au8; TOOTH_FILE as usize];
    let began = Instant::now();
    let mut lowest = u64::MAX;
    for k in 0..TOOTH_FILES {
        if let Some(wait) = (began + TOOTH_EVERY * k as u32).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        let mut f = std::fs::File::create(dir.join(format!("tmp-{k}.o"))).unwrap();
        f.write_all(&data).unwrap();
        lowest = lowest.min(space(mount).1);
    }
    std::thread::sleep(TOOTH_EVERY);
    lowest = lowest.min(space(mount).1);
    for k in 0..TOOTH_FILES {
        std::fs::remove_file(dir.join(format!("tmp-{k}.o"))).unwrap();
    }
    lowest
}

/// Runs the sawtooth for `seconds`; returns when each tooth ended and the lowest free space.
fn sawtooth(s: &Tmpfs, seconds: u64, step: Option<(usize, u64)>) -> (Vec<SystemTime>, u64) {
    let dir = s.ws.join("build");
    let began = Instant::now();
    let (mut ends, mut lowest) = (Vec::new(), u64::MAX);
    while began.elapsed() < Duration::from_secs(seconds) {
        lowest = lowest.min(tooth(&dir, &s.mount.dir));
        ends.push(SystemTime::now());
        // A file the build keeps, written as a tooth ends: the teeth that follow peak higher.
        if let Some((after, bytes)) = step {
            if ends.len() == after {
                write_file(&dir.join("kept.bin"), bytes);
            }
        }
        std::thread::sleep(TOOTH_REST);
    }
    (ends, lowest)
}

/// The finding of issue 17, then the same teeth with their peaks 1 pp above `cleanup_free`
/// (a kept 19 MB file written as the fifth tooth ends): no preemptive cycle after the third
/// tooth in either, for 90 s.
#[test]
fn sawtooth_at_34_percent_free_triggers_nothing_after_the_third_tooth() {
    if !require_root("sawtooth_at_34_percent_free_triggers_nothing_after_the_third_tooth") {
        return;
    }
    let _serial = one_at_a_time();
    let s = Tmpfs::new(34.0);
    let cleanup_free = s.level(20.0);
    let (_, avail) = space(&s.mount.dir);
    // Peaks at 1 pp above cleanup_free once the step is in.
    let step = avail - TOOTH_FILE * TOOTH_FILES as u64 - s.level(21.0);
    let _daemon = s.start_daemon();
    let (ends, lowest) = sawtooth(&s, 90, Some((5, step)));
    let fired = s.preemptive_at();
    let after_third: Vec<f64> = fired
        .iter()
        .filter(|t| **t > ends[2])
        .map(|t| t.duration_since(ends[2]).unwrap().as_secs_f64())
        .collect();
    eprintln!(
        "{} teeth; lowest free {:.0} MB (cleanup_free {:.0} MB); preemptive cycles: {} ({} after \
         the third tooth, at +{after_third:.1?} s)",
        ends.len(),
        mb(lowest),
        mb(cleanup_free),
        fired.len(),
        after_third.len()
    );
    assert!(ends.len() >= 10, "setup: the writer fell behind");
    assert!(lowest > cleanup_free, "setup: a tooth crossed cleanup_free");
    assert!(
        lowest < s.level(21.5),
        "setup: the peaks must come within 1.5 pp of cleanup_free"
    );
    assert!(
        after_third.is_empty(),
        "preemptive cycles after the third tooth: +{after_third:.1?} s"
    );
}

/// A steady 20 MB/s writer from 34 % free (the setup above, no teeth before it) triggers a
/// preemptive cycle before `cleanup_free` is crossed: ~7 s of writing, so the forecast must
/// learn a new writer within a few seconds.
#[test]
fn steady_20mb_per_s_from_34_percent_free_triggers_before_cleanup_free() {
    if !require_root("steady_20mb_per_s_from_34_percent_free_triggers_before_cleanup_free") {
        return;
    }
    let _serial = one_at_a_time();
    let s = Tmpfs::new(34.0);
    let cleanup_free = s.level(20.0);
    let _daemon = s.start_daemon();
    let data = vec![0x5au8; MIB as usize];
    let mut file = std::fs::File::create(s.ws.join("build/checkpoint.bin")).unwrap();
    let began = Instant::now();
    let mut crossed = None;
    for k in 0..400u32 {
        if let Some(wait) =
            (began + Duration::from_millis(50) * k).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        file.write_all(&data).unwrap();
        if space(&s.mount.dir).1 < cleanup_free {
            crossed = Some(SystemTime::now());
            break;
        }
    }
    let crossed = crossed.expect("setup: the writer never crossed cleanup_free");
    std::thread::sleep(Duration::from_secs(1));
    let fired = s.preemptive_at();
    eprintln!(
        "crossed after {:.1} s; preemptive cycles at {:.1?} s before the crossing",
        began.elapsed().as_secs_f64() - 1.0,
        fired
            .iter()
            .map(|t| crossed
                .duration_since(*t)
                .map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64()))
            .collect::<Vec<_>>()
    );
    assert!(
        fired.first().is_some_and(|t| *t < crossed),
        "no preemptive cycle before free space went under cleanup_free"
    );
}
