//! `guardian task done`: the policy for each status, and paths outside the task area, with
//! `..` or through symlinks refused without deleting anything.

use super::*;

#[test]
fn task_done_applies_the_policy_for_each_status() {
    let t = TaskArea::new("keep_failed_max = \"5MiB\"\n");
    for name in ["alpha", "shared", "beta", "gamma", "delta", "eps"] {
        write_files(&t.ws.join(name), 4, MIB / 2); // 2 MiB each
    }
    {
        let conn = Connection::open(&t.db).unwrap();
        // The wrapper's own task is still `running` when it calls `task done`.
        let now = Value::Integer(now_secs());
        insert_task(
            &conn,
            "t-alpha",
            "alpha",
            "running",
            now.clone(),
            NODE,
            None,
        );
        // `shared` is also used by another running task of the same project.
        insert_task(
            &conn,
            "t-shared-1",
            "shared",
            "running",
            now.clone(),
            NODE,
            None,
        );
        insert_task(&conn, "t-shared-2", "shared", "running", now, NODE, None);
    }

    // done → deleted now, although its own row still says running.
    let out = t.done(&t.ws.join("alpha"), "done", Some("t-alpha"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!t.ws.join("alpha").exists());
    assert!(stdout(&out).contains("deleted"), "{}", stdout(&out));

    // Another running task uses the dir: refused, kept, exit 1 (not a usage error).
    let before = digest(&t.ws.join("shared"));
    let out = t.done(&t.ws.join("shared"), "done", Some("t-shared-1"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(digest(&t.ws.join("shared")), before);
    assert!(stdout(&out).contains("t-shared-2"), "{}", stdout(&out));

    // discarded → deleted now.
    let out = t.done(&t.ws.join("beta"), "discarded", None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!t.ws.join("beta").exists());

    // failed and error → kept for debugging, recorded in Guardian's own registry.
    let out = t.done(&t.ws.join("gamma"), "failed", Some("t-gamma"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("kept"), "{}", stdout(&out));
    let out = t.done(&t.ws.join("delta"), "error", None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(t.ws.join("gamma").exists() && t.ws.join("delta").exists());
    assert_eq!(t.kept(), ["gamma", "delta"]);

    // A third kept dir goes over keep_failed_max (5 MiB): the oldest kept one is dropped.
    let out = t.done(&t.ws.join("eps"), "failed", None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !t.ws.join("gamma").exists(),
        "the oldest kept dir stays over the cap"
    );
    assert!(t.ws.join("delta").exists() && t.ws.join("eps").exists());
    assert_eq!(t.kept(), ["delta", "eps"]);

    // Nothing left to do for a dir that is already gone.
    let out = t.done(&t.ws.join("alpha"), "done", None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("nothing to do"));

    let audit = t.audit();
    let by_rule = |rule: &str| -> Vec<String> {
        audit
            .iter()
            .filter(|l| l["rule"] == rule)
            .map(|l| {
                format!(
                    "{} {}",
                    l["path"].as_str().unwrap().rsplit('/').next().unwrap(),
                    l["outcome"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(by_rule("task_done"), ["alpha deleted", "shared refused"]);
    assert_eq!(by_rule("task_discarded"), ["beta deleted"]);
    assert_eq!(
        by_rule("keep_failed_for"),
        ["gamma kept", "delta kept", "eps kept"]
    );
    assert_eq!(by_rule("keep_failed_max"), ["gamma deleted"]);
    assert!(audit.iter().all(|l| l["phase"] == 0));

    // The daemon's sweep drops kept dirs once keep_failed_for has passed; the task DB was only
    // read (its rows are as they were).
    let db_before = dump(&Connection::open(&t.db).unwrap());
    t.write_config("keep_failed_max = \"5MiB\"\nkeep_failed_for = \"1s\"\n");
    std::thread::sleep(Duration::from_millis(2100));
    let out = guardian(&["run", "--once", "--config", t.cfg()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!t.ws.join("delta").exists() && !t.ws.join("eps").exists());
    assert!(
        t.ws.join("shared").exists(),
        "a running task's dir was swept"
    );
    assert!(t.kept().is_empty());
    let audit = t.audit();
    let expired: Vec<_> = audit
        .iter()
        .filter(|l| l["rule"] == "keep_failed_for" && l["outcome"] == "deleted")
        .collect();
    assert_eq!(expired.len(), 2, "{audit:?}");
    assert_eq!(dump(&Connection::open(&t.db).unwrap()), db_before);
}

#[test]
fn task_done_refuses_paths_outside_the_task_area_dotdot_and_symlinks_deleting_nothing() {
    let t = TaskArea::new("");
    write_files(&t.ws.join("alpha/sub"), 2, 4096);
    write_files(&t.outside.join("victim"), 2, 4096);
    write_files(&t.plain.join("proj"), 2, 4096);
    write_files(&t.ws.join("output"), 1, 4096);
    std::os::unix::fs::symlink(t.outside.join("victim"), t.ws.join("link-out")).unwrap();
    std::os::unix::fs::symlink(t.ws.join("alpha"), t.ws.join("link-in")).unwrap();
    std::os::unix::fs::symlink("../outside", t.ws.join("link-rel")).unwrap();
    let root = t.tmp.path().to_path_buf();
    let keep_out = |p: &Path| !p.starts_with(&t.state);
    let snapshot = || -> BTreeMap<PathBuf, String> {
        digest(&root)
            .into_iter()
            .filter(|(p, _)| keep_out(&root.join(p)))
            .collect()
    };
    let before = snapshot();
    let ws = t.ws.display().to_string();
    let bad: Vec<(String, &str)> = vec![
        (
            t.outside.join("victim").display().to_string(),
            "outside every task area",
        ),
        (
            t.plain.join("proj").display().to_string(),
            "outside every task area",
        ),
        (format!("{ws}/../outside/victim"), "`..`"),
        (format!("{ws}/alpha/.."), "`..`"),
        (format!("{ws}/alpha/../../outside"), "`..`"),
        (format!("{ws}/./alpha"), "`..`"),
        (format!("{ws}/link-out"), "symlink"),
        (format!("{ws}/link-in"), "symlink"),
        (format!("{ws}/link-rel"), "symlink"),
        (format!("{ws}/link-out/victim"), "direct child"),
        (format!("{ws}/alpha/sub"), "direct child"),
        (ws.clone(), "task area itself"),
        (format!("{ws}/output"), "protect list"),
        ("dispatch/alpha".to_string(), "absolute"),
        ("/".to_string(), "outside every task area"),
    ];
    for (path, why) in &bad {
        for status in ["done", "discarded"] {
            let out = t.done(Path::new(path), status, None);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{path} {status}: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            assert!(err.contains(why), "{path}: expected `{why}` in: {err}");
            assert!(err.contains("nothing was deleted"), "{err}");
        }
    }
    assert_eq!(snapshot(), before, "a refused PATH changed something");
    assert!(
        t.audit().iter().all(|l| l["action"] != "delete"),
        "a refused PATH reached the executor"
    );
    // An unknown status is a usage error too.
    let out = t.done(&t.ws.join("alpha"), "finished", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(t.ws.join("alpha/sub").exists());
}
