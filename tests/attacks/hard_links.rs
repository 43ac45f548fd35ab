//! Hard links shared between projects.

use super::*;

/// `du -sB1 -x PATH`.
fn du_bytes(path: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-sB1", "-x"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn hard_links_shared_between_projects_counted_once() {
    if !require_root("hard_links_shared_between_projects_counted_once") {
        return;
    }
    const BIG: u64 = 20 * MIB;
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("guardian-state");
    let proj_a = ws.join("proj-a");
    let proj_b = ws.join("proj-b");
    write_files(&proj_a.join("data"), 4, MIB);
    write_files(&proj_b.join("data"), 2, MIB);
    write_file(&proj_a.join("big"), BIG);
    std::fs::hard_link(proj_a.join("big"), proj_b.join("big")).unwrap();
    age_tree(&proj_a, Duration::from_secs(9 * 86400));
    age_tree(&proj_b, Duration::from_secs(8 * 86400));
    let config_path = mount.path("guardian.toml");
    let config = load_config(&config_path, &ws, &state);
    wait_out_activity();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 93.0);

    // `guardian scan` counts the shared inode once, as du does.
    let out = guardian_ok(&["scan", ws.to_str().unwrap(), "--json"]);
    let scan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scanned = scan["allocated_bytes"].as_u64().unwrap();
    assert_eq!(
        scanned,
        du_bytes(&ws),
        "guardian scan and du -sB1 -x disagree"
    );
    assert!(
        (BIG + 6 * MIB..2 * BIG).contains(&scanned),
        "workspace scanned as {scanned} bytes: the 20 MiB inode must count exactly once"
    );

    // Neither project's estimate counts the shared inode: deleting one project frees none of it.
    let estimates = |plan: &serde_json::Value| -> BTreeMap<String, u64> {
        plan[0]["plan"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["path"].as_str().unwrap().to_string(),
                    a["bytes_estimated"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let out = guardian_ok(&["plan", "--config", config_path.to_str().unwrap(), "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan[0]["plan"]["phase2_allowed"], true,
        "setup: phase 2 must be planned"
    );
    let cli_estimates = estimates(&plan);
    let (a_key, b_key) = (
        proj_a.to_str().unwrap().to_string(),
        proj_b.to_str().unwrap().to_string(),
    );
    for (key, own) in [(&a_key, 4 * MIB), (&b_key, 2 * MIB)] {
        let est = *cli_estimates
            .get(key)
            .unwrap_or_else(|| panic!("{key} not planned: {cli_estimates:?}"));
        assert!(
            (own..own + MIB).contains(&est),
            "{key}: estimate {est} should be its own {own} bytes, without the shared 20 MiB"
        );
    }

    // The library plans the same; execute its action on proj-a.
    let plans = plan_now(&config);
    let action = plans[0]
        .plan
        .actions
        .iter()
        .find(|a| a.path == proj_a)
        .expect("proj-a planned")
        .clone();
    assert_eq!(action.bytes_estimated, cli_estimates[&a_key]);
    let b_big_before = digest(&proj_b);
    let report = run_settled(&executor_for(&config), &action);
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.record);
    assert!(!present(&proj_a));
    assert_eq!(
        digest(&proj_b),
        b_big_before,
        "proj-b changed when proj-a was deleted"
    );
    assert_eq!(std::fs::metadata(proj_b.join("big")).unwrap().nlink(), 1);

    // The audit line agrees: statvfs saw the estimate freed, not 20 MiB more.
    let records = read_records(&config.daemon.audit_log).unwrap();
    let record = records.last().unwrap();
    assert_eq!(record.path, proj_a);
    assert_eq!(record, &report.record);
    let est = record.bytes_estimated;
    assert!(
        record.bytes_freed + MIB / 2 >= est && record.bytes_freed <= est + MIB / 2,
        "bytes_freed {} vs estimate {est}: {record:?}",
        record.bytes_freed
    );
    assert!(
        record.bytes_unlinked <= est + MIB / 2,
        "bytes_unlinked {} counts the still-linked inode: {record:?}",
        record.bytes_unlinked
    );

    // Now proj-b holds the only link: its estimate includes the inode. (Refill first, so that
    // phase 2 is planned again.)
    wait_out_activity();
    fill_to_used(&mount.dir, &mount.path("filler2.bin"), 93.0);
    let plans = plan_now(&config);
    let b_est = plans[0]
        .plan
        .actions
        .iter()
        .find(|a| a.path == proj_b)
        .map(|a| a.bytes_estimated)
        .expect("proj-b planned");
    assert!(
        b_est >= BIG + 2 * MIB,
        "proj-b estimate {b_est} after its link became the last"
    );
}
