//! Guarantee 1 (ARCHITECTURE.md): nested workspaces, the executor picks the most specific one.

use super::*;

#[test]
fn nested_workspaces_the_executor_picks_the_most_specific_one() {
    if !require_root("nested_workspaces_the_executor_picks_the_most_specific_one") {
        return;
    }
    // Config validation refuses overlapping workspaces (tests/config.rs); the executor must be
    // right even if handed them: `W/tasks` protects `output`, `W` does not. The first prefix
    // (`W`) would see project `tasks` and delete `W/tasks/output`.
    let mount = TestMount::tmpfs(64 * MIB);
    let outer = mount.path("w");
    let inner = outer.join("tasks");
    write_file(&inner.join("output/results.json"), 4096);
    let before = digest(&inner.join("output"));
    let outer_ws: (&Path, &[&str]) = (&outer, &[]);
    let inner_ws: (&Path, &[&str]) = (&inner, &["output"]);
    for order in [[outer_ws, inner_ws], [inner_ws, outer_ws]] {
        let exec = executor(&order, &mount.path("state/audit.jsonl"));
        let target = inner.join("output");
        let report = run(&exec, &planned(&target, &target, None));
        assert_eq!(report.outcome, Outcome::Refused, "{:?}", report.record);
        assert!(
            report
                .record
                .error
                .as_deref()
                .unwrap_or("")
                .contains("protect list"),
            "{:?}",
            report.record
        );
        // Planned as the outer workspace would see it: refused too, it names the wrong project.
        let report = run(&exec, &planned(&target, &inner, None));
        assert_eq!(report.outcome, Outcome::Refused, "{:?}", report.record);
    }
    assert_eq!(digest(&inner.join("output")), before);
}
