//! Retention end to end on a real tmpfs with the real `guardian` binary and real processes: a
//! releases dir with a `current` pointer and a pin, backups of three types, logs one of which a
//! process holds open, pointers and pins that change between decision and deletion, a retention
//! dir outside every workspace refused at config load, and the embedded defaults on a plain task
//! work dir and on a seed-004 training tree.
//! This file holds the shared setup and helpers; each theme is a file under `retention/`.

mod support;

use guardian::config::Config;
use guardian::protect::ProcSnapshot;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};
use support::*;

/// A tmpfs with a workspace `ws` holding the project `train`, Guardian's state beside it.
struct Setup {
    mount: TestMount,
    config: PathBuf,
}

impl Setup {
    fn new(retention: &str) -> Setup {
        let mount = TestMount::tmpfs(64 * MIB);
        std::fs::create_dir_all(mount.path("ws/train")).unwrap();
        std::fs::create_dir_all(mount.path("state")).unwrap();
        let config = mount.path("guardian.toml");
        write_config(
            &config,
            &mount.path("ws"),
            &mount.path("state"),
            "1s",
            &retention.replace("@WS", &mount.path("ws").display().to_string()),
        );
        Setup { mount, config }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mount.path(rel)
    }

    fn audit(&self) -> PathBuf {
        self.path("state/audit.jsonl")
    }

    fn retention(&self, args: &[&str]) -> std::process::Output {
        let config = self.config.display().to_string();
        let mut all = vec!["retention", "--config", config.as_str()];
        all.extend_from_slice(args);
        guardian(&all)
    }

    fn dry_run_json(&self) -> Value {
        let out = self.retention(&["--dry-run", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn config(&self) -> Config {
        Config::load(&self.config).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set_mtime(path: &Path, ago: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

/// Every entry decision of a `--json` report: name → (verdict, reasons).
fn decisions(report: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in report["rules"].as_array().unwrap() {
        for dir in rule["dirs"].as_array().unwrap() {
            for series in dir["series"].as_array().unwrap() {
                for e in series["entries"].as_array().unwrap() {
                    out.push((
                        e["name"].as_str().unwrap().to_string(),
                        e["verdict"].as_str().unwrap().to_string(),
                        e["reasons"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| r.as_str().unwrap().to_string())
                            .collect(),
                    ));
                }
            }
        }
    }
    out
}

const RELEASES: &str = r#"
[[retention]]
name = "releases"
dir = "@WS/train/releases"
regex = '^v\d+_(?P<ts>\d{8}_\d{6})$'
order = "timestamp"
timestamp_format = "%Y%m%d_%H%M%S"
keep_last = 3
"#;

fn release(i: usize) -> String {
    format!("v{i:02}_202611{i:02}_120000")
}

/// 12 timestamped versions of 256 KiB each, `current` → the 9th, the 2nd pinned.
fn make_releases(s: &Setup) {
    let dir = s.path("ws/train/releases");
    for i in 1..=12 {
        write_file(&dir.join(release(i)).join("model.bin"), 256 << 10);
    }
    std::os::unix::fs::symlink(release(9), dir.join("current")).unwrap();
    std::fs::write(dir.join(release(2)).join(".guardian-keep"), "").unwrap();
}

#[path = "retention/daemon.rs"]
mod daemon;
#[path = "retention/defaults.rs"]
mod defaults;
#[path = "retention/keep.rs"]
mod keep;
#[path = "retention/recheck.rs"]
mod recheck;
#[path = "retention/refused.rs"]
mod refused;
