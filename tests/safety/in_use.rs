//! Guarantee 4: in use, by identity: a process in its own mount namespace.

use super::*;

#[test]
fn process_in_its_own_mount_namespace_protects_its_work_dir() {
    if !require_root("process_in_its_own_mount_namespace_protects_its_work_dir") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let ws = mount.path("ws");
    let proj = ws.join("proj");
    write_files(&proj.join("node_modules/pkg"), 3, 4096);
    std::fs::create_dir_all(proj.join("src")).unwrap();
    // The container's view: the work dir bind-mounted at /…/view in a mount namespace of its
    // own, the task's cwd inside. Its /proc cwd link reads `…/view/src`, a path that means
    // nothing on the host.
    let view = mount.path("view");
    std::fs::create_dir_all(&view).unwrap();
    let task = Reaped::spawn(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind '{}' '{}' && cd '{}/src' && exec sleep 300",
                proj.display(),
                view.display(),
                view.display()
            ))
            .stdout(Stdio::null()),
    );
    // The shell execs sleep: wait until the task's cwd shows the namespace's path.
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_link(format!("/proc/{}/cwd", task.pid())).ok() == Some(view.join("src"))
        }),
        "the namespaced task never set up"
    );
    let before = digest(&proj);
    let exec = executor(&[(&ws, &[])], &mount.path("state/audit.jsonl"));
    let nm = proj.join("node_modules");
    let report = run(&exec, &planned(&nm, &proj, None));
    assert_eq!(report.outcome, Outcome::Refused, "{:?}", report.record);
    assert!(
        report
            .record
            .error
            .as_deref()
            .unwrap_or("")
            .contains("in use"),
        "{:?}",
        report.record
    );
    assert_eq!(digest(&proj), before, "the task's work dir changed");
    drop(task);
    // Control: with the task gone, the same action goes ahead.
    assert!(wait_until(Duration::from_secs(10), || {
        run(&exec, &planned(&nm, &proj, None)).outcome == Outcome::Deleted
    }));
}
