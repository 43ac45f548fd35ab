//! Protection re-checked between planning and deleting.

use super::*;

/// A project with a small node_modules (phase 1) and bigger data (phase 2), and a nested
/// package with its own node_modules.
fn make_planned_project(proj: &Path, days: u64) {
    write_files(&proj.join("node_modules"), 4, 64 * 1024);
    write_files(&proj.join("packages/web/node_modules"), 2, 32 * 1024);
    write_files(&proj.join("data"), 3, MIB);
    write_file(&proj.join("src/main.rs"), 4096);
    age_tree(proj, Duration::from_secs(days * 86400));
}

#[test]
fn keep_marker_and_in_use_are_rechecked_before_delete() {
    if !require_root("keep_marker_and_in_use_are_rechecked_before_delete") {
        return;
    }
    let mount = TestMount::tmpfs(128 * MIB);
    let ws = mount.path("dispatch");
    let state = mount.path("guardian-state");
    let names = [
        "kept-top",
        "kept-mid",
        "kept-inside",
        "busy-cwd",
        "busy-deep",
        "task",
        "control",
    ];
    for (i, name) in names.iter().enumerate() {
        make_planned_project(&ws.join(name), 20 - i as u64);
    }
    let config = load_config(&mount.path("guardian.toml"), &ws, &state);
    wait_out_activity();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 93.0);

    // Plan while nothing is protected: every project is planned, phase 1 and phase 2.
    let plans = plan_now(&config);
    let plan = &plans[0].plan;
    assert!(
        plan.phase2_allowed,
        "setup: phase 2 must be planned: {plan:#?}"
    );
    let actions_of = |name: &str| -> Vec<PlannedAction> {
        let proj = ws.join(name);
        let found: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| a.project == proj)
            .cloned()
            .collect();
        let paths: Vec<_> = found.iter().map(|a| a.path.clone()).collect();
        for want in [
            proj.join("node_modules"),
            proj.join("packages/web/node_modules"),
            proj.clone(),
        ] {
            assert!(
                paths.contains(&want),
                "setup: {} not planned: {paths:?}",
                want.display()
            );
        }
        found
    };

    // Protection appears after planning, before executing.
    write_file(&ws.join("kept-top/.guardian-keep"), 0);
    write_file(&ws.join("kept-mid/packages/.guardian-keep"), 0);
    write_file(&ws.join("kept-inside/data/d1/.guardian-keep"), 0);
    let cwd_dir = ws.join("busy-cwd/src");
    let _cwd = Reaped::spawn(Command::new("sleep").arg("300").current_dir(&cwd_dir));
    wait_for_cwd(_cwd.pid(), &cwd_dir);
    let deep_dir = ws.join("busy-deep/node_modules/d0");
    let _deep = Reaped::spawn(Command::new("sleep").arg("300").current_dir(&deep_dir));
    wait_for_cwd(_deep.pid(), &deep_dir);
    let digests: BTreeMap<&str, _> = names.iter().map(|n| (*n, digest(&ws.join(n)))).collect();

    let task_proj = ws.join("task");
    let extra: ExtraProtection = Arc::new(move |project: &Path| {
        (project == task_proj).then(|| "task db: a task is running here".to_string())
    });
    let exec = Executor::new(
        config.workspaces.clone(),
        AuditLog::open(&config.daemon.audit_log).unwrap(),
        false,
        Arc::new(AtomicBool::new(false)),
        extra,
    );

    // Every action of a project kept at its top, busy, or held by a task is refused.
    for (name, why) in [
        ("kept-top", ".guardian-keep"),
        ("busy-cwd", "in use"),
        ("busy-deep", "in use"),
        ("task", "task db"),
    ] {
        for action in actions_of(name) {
            let report = run_action(&exec, &action);
            assert_eq!(
                report.outcome,
                Outcome::Refused,
                "{name}: {} was not refused: {:?}",
                action.path.display(),
                report.record
            );
            let error = report.record.error.clone().unwrap_or_default();
            assert!(
                error.contains(why),
                "{name}: refusal does not say {why:?}: {error}"
            );
        }
        assert_eq!(digest(&ws.join(name)), digests[name], "{name} changed");
    }

    // A marker above the target (below the project top) protects the target beneath it.
    let below_marker = ws.join("kept-mid/packages/web/node_modules");
    let action = actions_of("kept-mid")
        .into_iter()
        .find(|a| a.path == below_marker)
        .unwrap();
    let report = run_action(&exec, &action);
    assert_eq!(
        report.outcome,
        Outcome::Refused,
        "a target below a new .guardian-keep was not refused: {:?}",
        report.record
    );
    assert_eq!(
        digest(&ws.join("kept-mid")),
        digests["kept-mid"],
        "kept-mid changed"
    );

    // A marker inside the target: the kept dir (and so its ancestors) stays, byte for byte.
    let kept_dir = ws.join("kept-inside/data/d1");
    let kept_before = digest(&kept_dir);
    let whole = actions_of("kept-inside")
        .into_iter()
        .find(|a| a.path == ws.join("kept-inside"))
        .unwrap();
    let report = run_settled(&exec, &whole);
    assert_eq!(report.outcome, Outcome::Partial, "{:?}", report.record);
    assert_eq!(digest(&kept_dir), kept_before, "the kept dir changed");
    let error = report.record.error.clone().unwrap_or_default();
    assert!(error.contains(".guardian-keep"), "{error}");

    // Control: the unprotected project's planned actions all delete.
    for action in actions_of("control") {
        let report = run_settled(&exec, &action);
        assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.record);
        assert!(
            !present(&action.path),
            "{} still exists",
            action.path.display()
        );
    }
}
