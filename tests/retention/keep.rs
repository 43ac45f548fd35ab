//! What a rule keeps: a releases dir with a `current` pointer and a pin, backups of three types.

use super::*;

#[test]
fn releases_keep_the_newest_three_the_current_and_the_pinned() {
    if !require_root("releases_keep_the_newest_three_the_current_and_the_pinned") {
        return;
    }
    let s = Setup::new(RELEASES);
    make_releases(&s);
    let dir = s.path("ws/train/releases");
    // The training job works in the project: it does not block retention of old versions.
    let job = Reaped::spawn(
        Command::new("sleep")
            .arg("60")
            .current_dir(s.path("ws/train")),
    );
    wait_for_cwd(job.pid(), &s.path("ws/train"));

    let before = digest(&dir);
    let report = s.dry_run_json();
    assert_eq!(digest(&dir), before, "a dry run changed the releases dir");
    let decided = decisions(&report);
    assert_eq!(decided.len(), 12);
    for (name, verdict, reasons) in &decided {
        assert!(!reasons.is_empty(), "{name}: no reason");
        let i: usize = name[1..3].parse().unwrap();
        let expected = match i {
            10..=12 => vec![format!("kept by keep_last #{}", 13 - i)],
            9 => vec!["kept: target of `current`".to_string()],
            2 => vec!["kept: pinned (.guardian-keep)".to_string()],
            _ => vec!["deleted: beyond keep_last 3".to_string()],
        };
        let mut want = expected.clone();
        if i == 12 {
            want.insert(0, "kept: newest of the series".into());
        }
        assert_eq!(reasons, &want, "{name}");
        let keep = !expected[0].starts_with("deleted");
        assert_eq!(verdict, if keep { "keep" } else { "delete" }, "{name}");
    }
    let d = &report["rules"][0]["dirs"][0];
    assert_eq!(d["entries_to_delete"], 7);
    assert_eq!(report["entries_to_delete"], 7);
    assert_eq!(report["bytes_to_delete"], d["bytes_to_delete"]);
    // Kept directories are not walked: their size is not measured.
    assert!(report["rules"][0]["dirs"][0]["series"][0]["entries"][0]["bytes"].is_null());
    assert!(d["bytes_to_delete"].as_u64().unwrap() >= 7 * (256 << 10));
    assert_eq!(d["untouched"][0]["name"], "current");

    let out = s.retention(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want: BTreeSet<String> = [2, 9, 10, 11, 12].iter().map(|&i| release(i)).collect();
    want.insert("current".into());
    assert_eq!(names(&dir), want);
    let lines = audit_lines(&s.audit());
    assert_eq!(lines.len(), 7, "{lines:?}");
    for l in &lines {
        assert_eq!(l["rule"], "retention:releases");
        assert_eq!(l["outcome"], "deleted");
        assert_eq!(l["reason"], "deleted: beyond keep_last 3");
        assert!(l["bytes_freed"].as_u64().unwrap() > 0, "{l}");
    }
    assert_eq!(audit_intents(&s.audit()).len(), 7);
}

#[test]
fn backups_of_three_types_keep_the_newest_of_each() {
    if !require_root("backups_of_three_types_keep_the_newest_of_each") {
        return;
    }
    let s = Setup::new(
        r#"
[[retention]]
name = "backups"
dir = "@WS/train/backups"
regex = '^(?P<series>[a-z_]+)_(?P<ts>\d{8})\.tar$'
order = "timestamp"
timestamp_format = "%Y%m%d"
keep_last = 1
"#,
    );
    let dir = s.path("ws/train/backups");
    for kind in ["db", "pre_consolidation", "config"] {
        for day in 1..=4 {
            write_file(&dir.join(format!("{kind}_2026110{day}.tar")), 64 << 10);
        }
    }
    write_file(&dir.join("README"), 10);
    let out = s.retention(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["rules"][0]["dirs"][0]["series"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let want: BTreeSet<String> = [
        "README",
        "config_20261104.tar",
        "db_20261104.tar",
        "pre_consolidation_20261104.tar",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names(&dir), want);
    assert_eq!(audit_lines(&s.audit()).len(), 9);
}
