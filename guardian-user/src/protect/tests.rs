use super::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process that is killed when dropped.
struct Holding(Child);

impl Drop for Holding {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(dir: &Path, script: &str) -> Holding {
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sh");
    Holding(child)
}

/// Waits until the snapshot shows what `want` looks for (the child needs a moment to set up).
fn wait_for(dir: &Path, want: impl Fn(&Protection) -> bool) -> Protection {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = ProcSnapshot::capture();
        if let Some(p) = check_dir(dir, &snapshot) {
            if want(&p) {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no protection seen for {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_dir_is_not_protected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idle");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), b"x").unwrap();
    assert_eq!(check_dir(&dir, &ProcSnapshot::capture()), None);
}

#[test]
fn process_cwd_inside_protects() {
    let tmp = tempfile::tempdir().unwrap();
    let nested = tmp.path().join("proj/src");
    std::fs::create_dir_all(&nested).unwrap();
    let _child = spawn_in(&nested, "exec sleep 30");
    let p = wait_for(&tmp.path().join("proj"), |p| {
        matches!(
            p,
            Protection::InUse {
                how: HoldKind::Cwd,
                ..
            }
        )
    });
    assert!(p.to_string().contains("cwd"), "{p}");
}

#[test]
fn open_file_inside_protects() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("proj");
    std::fs::create_dir(&proj).unwrap();
    std::fs::write(proj.join("data.bin"), b"x").unwrap();
    let _child = spawn_in(tmp.path(), "exec 3<proj/data.bin; exec sleep 30");
    wait_for(
        &proj,
        |p| matches!(p, Protection::InUse { how: HoldKind::OpenFile, path, .. } if path.ends_with("data.bin")),
    );
}

#[test]
fn flock_on_dir_protects() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("proj");
    std::fs::create_dir(&proj).unwrap();
    // util-linux flock(1) opens the dir, takes the lock and runs sleep with the fd inherited.
    let _child = spawn_in(tmp.path(), "exec flock proj sleep 30");
    wait_for(&proj, |p| {
        matches!(
            p,
            Protection::InUse {
                how: HoldKind::Lock,
                ..
            }
        )
    });
}

#[test]
fn keep_marker_protects() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("proj");
    std::fs::create_dir(&proj).unwrap();
    std::fs::write(proj.join(KEEP_MARKER), b"").unwrap();
    assert!(matches!(
        check_dir(&proj, &ProcSnapshot::capture()),
        Some(Protection::KeepMarker { .. })
    ));
}

#[test]
fn sibling_with_common_prefix_is_not_protected() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = tmp.path().join("proj-2");
    std::fs::create_dir(&busy).unwrap();
    std::fs::create_dir(tmp.path().join("proj")).unwrap();
    let _child = spawn_in(&busy, "exec sleep 30");
    wait_for(&busy, |_| true);
    assert_eq!(
        check_dir(&tmp.path().join("proj"), &ProcSnapshot::capture()),
        None
    );
}
