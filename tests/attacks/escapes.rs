//! Paths that escape the workspace.

use super::*;

#[test]
fn path_escapes_are_refused() {
    if !require_root("path_escapes_are_refused") {
        return;
    }
    let mount = TestMount::tmpfs(64 * MIB);
    let outside = mount.path("outside");
    write_files(&outside.join("data"), 5, 64 * 1024);
    let ws = mount.path("ws");
    let proj = ws.join("proj");
    write_files(&proj.join("data"), 5, 64 * 1024);
    write_files(&proj.join("a/b"), 2, 4096);
    write_files(&ws.join("output/node_modules"), 2, 4096);
    write_files(&ws.join("output/data"), 2, 4096);
    // Symlinks as parent components: inside a project, as a whole project, and mid-path.
    symlink(&outside, &proj.join("link"));
    symlink(&outside, &ws.join("evil"));
    std::fs::create_dir_all(outside.join("b")).unwrap();
    write_file(&outside.join("b/f"), 4096);
    symlink(&outside, &proj.join("a/x"));
    // A sibling whose name extends the workspace's: a string-prefix check would accept it.
    let ws_sibling = mount.path("ws-sibling");
    write_files(&ws_sibling.join("proj"), 2, 4096);
    let ws_link = mount.path("ws-link");
    symlink(&ws, &ws_link);

    let snapshot = || {
        [&outside, &ws, &ws_sibling]
            .iter()
            .map(|p| digest(p))
            .collect::<Vec<_>>()
    };
    let before = snapshot();
    let audit = mount.path("state/audit.jsonl");
    let exec = executor(&[&ws], &["output", "dispatch-worker"], &audit);

    let cases: Vec<(&str, PathBuf, PathBuf)> = vec![
        (
            "outside every workspace",
            outside.join("data"),
            outside.clone(),
        ),
        (
            "outside, the data itself",
            outside.join("data/d0/f0"),
            outside.clone(),
        ),
        (
            "prefix sibling",
            ws_sibling.join("proj"),
            ws_sibling.join("proj"),
        ),
        ("filesystem root", PathBuf::from("/"), PathBuf::from("/")),
        ("dot-dot", proj.join("../../outside/data"), proj.clone()),
        ("dot-dot at the end", proj.join("data/.."), proj.clone()),
        ("dot-dot to the root", ws.join("proj/.."), ws.clone()),
        (
            "relative path",
            PathBuf::from("ws/proj/data"),
            PathBuf::from("ws/proj"),
        ),
        ("workspace root", ws.clone(), ws.clone()),
        (
            "workspace root, trailing slash",
            PathBuf::from(format!("{}/", ws.display())),
            ws.clone(),
        ),
        (
            "parent of the workspace",
            mount.dir.clone(),
            mount.dir.clone(),
        ),
        ("protected name", ws.join("output"), ws.join("output")),
        (
            "inside a protected name",
            ws.join("output/node_modules"),
            ws.join("output"),
        ),
        (
            "symlinked parent in a project",
            proj.join("link/data"),
            proj.clone(),
        ),
        (
            "symlinked parent, deeper",
            proj.join("link/data/d0"),
            proj.clone(),
        ),
        ("symlinked project", ws.join("evil/data"), ws.join("evil")),
        ("symlinked mid-path dir", proj.join("a/x/b"), proj.clone()),
        (
            "workspace through a symlink",
            ws_link.join("proj/data"),
            ws_link.join("proj"),
        ),
    ];
    for (what, path, project) in &cases {
        let report = run_action(&exec, &planned(path, project, "regenerable", 1));
        assert_eq!(
            report.outcome,
            Outcome::Refused,
            "{what}: {} was not refused: {:?}",
            path.display(),
            report.record
        );
        assert_eq!(report.record.entries_removed, 0, "{what}");
        assert!(report.record.error.is_some(), "{what}: a refusal says why");
        assert_eq!(
            snapshot(),
            before,
            "{what}: {} changed something",
            path.display()
        );
    }
    // An executor configured with the workspace through a symlink refuses too.
    let via_link = executor(&[&ws_link], &[], &audit);
    let report = run_action(
        &via_link,
        &planned(&ws_link.join("proj/data"), &ws_link.join("proj"), "r", 1),
    );
    assert_eq!(report.outcome, Outcome::Refused, "{:?}", report.record);
    assert_eq!(snapshot(), before);

    let records = read_records(&audit).unwrap();
    assert_eq!(
        records.len(),
        cases.len() + 1,
        "one audit line per refused action"
    );
    assert!(records
        .iter()
        .all(|r| r.outcome == "refused" && r.entries_removed == 0));

    // Control: the same executor does delete a plain path inside the workspace.
    let report = run_settled(&exec, &planned(&proj.join("data"), &proj, "regenerable", 1));
    assert_eq!(report.outcome, Outcome::Deleted, "{:?}", report.record);
    assert!(!present(&proj.join("data")));
    assert!(present(&proj.join("link")) && present(&proj.join("a/b/d0/f0")));
    assert_eq!(digest(&outside), before[0]);
}
