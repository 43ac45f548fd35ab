//! The audit log made unusable mid-run: its path replaced by a symlink, its filesystem shut
//! down and replaced.

use super::*;

#[test]
fn audit_log_path_replaced_by_a_symlink_mid_run_deletes_nothing_until_restored() {
    if !require_root("audit_log_path_replaced_by_a_symlink_mid_run_deletes_nothing_until_restored")
    {
        return;
    }
    let tmp = scratch();
    let data = TestMount::tmpfs(128 * MIB);
    let own = TestMount::tmpfs(16 * MIB);
    let scene = Scene::new(&data.path("ws"), &data.path("outside"), 6, 8);
    let spec = Spec::new(&scene.ws, &own.path("guardian"));
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    let mut daemon = start(&config, &tmp.path().join("daemon.log"));
    wait_for(&mut daemon, SOON, "the audit log", || {
        spec.audit_log.exists()
    });
    let modules = scene.modules();

    // The log is moved aside and a symlink to a file Guardian must never write takes its place.
    let victim = own.path("victim.txt");
    std::fs::write(&victim, b"not an audit log\n").unwrap();
    std::fs::rename(&spec.audit_log, own.path("guardian/audit.jsonl.moved")).unwrap();
    std::os::unix::fs::symlink(&victim, &spec.audit_log).unwrap();
    fill_to_used(&data.dir, &data.path("filler"), 85.0);
    wait_for(
        &mut daemon,
        SOON,
        "the state saying why nothing is deleted",
        || refusing_in_state_file(&spec).is_some(),
    );
    let why = refusing_in_state_file(&spec).unwrap();
    assert!(why.contains("audit"), "{why}");
    assert_nothing_deleted_for(&mut daemon, &modules, Duration::from_secs(3));
    assert_eq!(std::fs::read(&victim).unwrap(), b"not an audit log\n");

    std::fs::remove_file(&spec.audit_log).unwrap();
    wait_for(
        &mut daemon,
        SOON,
        "free space back at the 30% target",
        || free_percent(&data.dir) >= 30.0,
    );
    wait_for(&mut daemon, SOON, "status no longer refusing", || {
        refusing(&config).is_none()
    });
    stop_clean(&mut daemon);
    // Every deletion is recorded in the log at the configured path.
    let audit = assert_audit_complete(&spec.audit_log, &scene.ws);
    let gone = modules.iter().filter(|m| !m.exists()).count();
    assert!(gone > 0);
    assert_eq!(
        audit.deletions().count(),
        gone,
        "deletions missing from the audit log"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"not an audit log\n");
    scene.assert_kept();
}

/// `EXT4_IOC_SHUTDOWN` with `EXT4_GOING_FLAGS_NOLOGFLUSH`: every later write to the filesystem
/// fails with EIO, as on a dying disk.
fn shut_down_ext4(dir: &Path) {
    const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
    let flags: u32 = 2;
    let fd = std::fs::File::open(dir).unwrap();
    // SAFETY: the ioctl reads one u32 through the pointer, which outlives the call.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            EXT4_IOC_SHUTDOWN as _,
            &flags as *const u32,
        )
    };
    assert_eq!(rc, 0, "shutdown ioctl: {}", std::io::Error::last_os_error());
}

/// A fresh ext4 image mounted on `dir` (over whatever was detached from it); unmounted on drop.
struct Replacement {
    dir: PathBuf,
    _image_dir: tempfile::TempDir,
}

impl Replacement {
    fn mount_on(dir: &Path, bytes: u64) -> Replacement {
        let image_dir = tempfile::tempdir().unwrap();
        let image = image_dir.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(dir));
        Replacement {
            dir: dir.to_path_buf(),
            _image_dir: image_dir,
        }
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn audit_fs_shut_down_mid_run_refuses_then_resumes_on_a_replacement_fs() {
    if !require_root("audit_fs_shut_down_mid_run_refuses_then_resumes_on_a_replacement_fs") {
        return;
    }
    let tmp = scratch();
    let data = TestMount::tmpfs(128 * MIB);
    let logs = TestMount::ext4(32 * MIB);
    let scene = Scene::new(&data.path("ws"), &data.path("outside"), 6, 8);
    let mut spec = Spec::new(&scene.ws, &data.path("guardian"));
    spec.audit_log = logs.path("guardian/audit.jsonl");
    let config = tmp.path().join("guardian.toml");
    spec.write(&config).unwrap();
    let mut daemon = start(&config, &tmp.path().join("daemon.log"));
    wait_for(&mut daemon, SOON, "the audit log", || {
        spec.audit_log.exists()
    });
    let modules = scene.modules();

    shut_down_ext4(&logs.dir);
    fill_to_used(&data.dir, &data.path("filler"), 85.0);
    wait_for(
        &mut daemon,
        SOON,
        "status saying why nothing is deleted",
        || refusing(&config).is_some(),
    );
    assert_nothing_deleted_for(&mut daemon, &modules, Duration::from_secs(3));

    // The dead filesystem is detached and a new one mounted in its place.
    run(Command::new("umount").arg("-l").arg(&logs.dir));
    let _fresh = Replacement::mount_on(&logs.dir, 32 * MIB);
    wait_for(
        &mut daemon,
        SOON,
        "free space back at the 30% target",
        || free_percent(&data.dir) >= 30.0,
    );
    wait_for(&mut daemon, SOON, "status no longer refusing", || {
        refusing(&config).is_none()
    });
    stop_clean(&mut daemon);
    let audit = assert_audit_complete(&spec.audit_log, &scene.ws);
    let gone = modules.iter().filter(|m| !m.exists()).count();
    assert_eq!(
        audit.deletions().count(),
        gone,
        "deletions missing from the audit log"
    );
    scene.assert_kept();
}
