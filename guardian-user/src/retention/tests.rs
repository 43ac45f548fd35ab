//! The pure core on plain data: series, orders, every keep rule, pins, pointers, reasons.

use super::*;
use crate::config::Config;

const DAY: i64 = 86_400;
/// 2026-11-01T00:00:00Z.
const T0: i64 = 1_793_491_200;

fn rule(extra: &str) -> RetentionRule {
    let text = format!(
        "[[workspaces]]\npath = \"/w\"\n[[retention]]\nname = \"r\"\ndir = \"/w/p/d\"\n{extra}\n"
    );
    let config = Config::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"));
    config.retention.into_iter().next().unwrap()
}

fn entry(name: &str, mtime: i64) -> Entry {
    Entry {
        name: name.into(),
        mtime,
        bytes: Some(1000),
        pinned: false,
        pointed_by: None,
        in_use: None,
    }
}

fn kept(d: &DirDecisions) -> Vec<String> {
    let mut v: Vec<String> = d
        .series
        .iter()
        .flat_map(|s| &s.entries)
        .filter(|e| e.verdict == Verdict::Keep)
        .map(|e| e.name.display().to_string())
        .collect();
    v.sort();
    v
}

fn reasons_of<'a>(d: &'a DirDecisions, name: &str) -> &'a [String] {
    d.series
        .iter()
        .flat_map(|s| &s.entries)
        .find(|e| e.name.as_os_str() == name)
        .map(|e| e.reasons.as_slice())
        .unwrap_or_else(|| panic!("{name} not decided"))
}

#[test]
fn keep_last_keeps_the_newest_n_plus_pinned_and_pointed() {
    let sel = Selector::from_rule(&rule(
        "regex = '^v(?P<n>\\d+)_(?P<ts>\\d{8}_\\d{6})$'\norder = \"timestamp\"\ntimestamp_format = \"%Y%m%d_%H%M%S\"\nkeep_last = 3",
    ));
    let mut entries: Vec<Entry> = (1..=12)
        .map(|i| entry(&format!("v{i:02}_202611{i:02}_120000"), T0))
        .collect();
    entries[1].pinned = true;
    entries[8].pointed_by = Some("current".into());
    entries.push(entry("current", T0));
    entries.push(entry("notes.txt", T0));
    let d = decide(&entries, &sel);
    assert_eq!(
        kept(&d),
        [
            "v02_20261102_120000",
            "v09_20261109_120000",
            "v10_20261110_120000",
            "v11_20261111_120000",
            "v12_20261112_120000"
        ]
    );
    assert!(reasons_of(&d, "v11_20261111_120000").contains(&"kept by keep_last #2".to_string()));
    assert!(reasons_of(&d, "v02_20261102_120000")[0].starts_with("kept: pinned"));
    assert_eq!(
        reasons_of(&d, "v09_20261109_120000"),
        ["kept: target of `current`"]
    );
    assert_eq!(
        reasons_of(&d, "v01_20261101_120000"),
        ["deleted: beyond keep_last 3"]
    );
    let untouched: Vec<_> = d
        .untouched
        .iter()
        .map(|u| u.name.display().to_string())
        .collect();
    assert_eq!(untouched, ["current", "notes.txt"]);
}

#[test]
fn series_by_capture_keep_the_newest_of_each_type() {
    let sel = Selector::from_rule(&rule(
        "regex = '^(?P<series>[a-z]+)_(?P<ts>\\d{8})\\.tar$'\norder = \"timestamp\"\ntimestamp_format = \"%Y%m%d\"\nkeep_last = 1",
    ));
    let mut entries = Vec::new();
    for kind in ["db", "models", "config"] {
        for day in 1..=4 {
            entries.push(entry(&format!("{kind}_2026110{day}.tar"), T0));
        }
    }
    let d = decide(&entries, &sel);
    assert_eq!(d.series.len(), 3);
    assert_eq!(
        kept(&d),
        [
            "config_20261104.tar",
            "db_20261104.tar",
            "models_20261104.tar"
        ]
    );
}

#[test]
fn keep_within_is_measured_from_the_newest_entry_not_from_now() {
    let sel = Selector::from_rule(&rule(
        "glob = \"*.log\"\norder = \"mtime\"\nkeep_within = \"7d\"",
    ));
    // A series whose producer stopped a year ago: nothing ages out but what is 7 days older
    // than its own newest entry.
    let stalled = T0 - 365 * DAY;
    let entries = vec![
        entry("a.log", stalled),
        entry("b.log", stalled - 6 * DAY),
        entry("c.log", stalled - 8 * DAY),
    ];
    let d = decide(&entries, &sel);
    assert_eq!(kept(&d), ["a.log", "b.log"]);
    assert_eq!(
        reasons_of(&d, "c.log"),
        ["deleted: older than keep_within 7days"]
    );
    assert!(reasons_of(&d, "b.log")[0].starts_with("kept by keep_within 7days (6days"));
}

#[test]
fn the_newest_of_a_series_and_entries_in_use_are_always_kept() {
    let sel = Selector::from_rule(&rule(
        "glob = \"*.log\"\norder = \"mtime\"\nkeep_within = \"1s\"",
    ));
    let mut entries = vec![
        entry("new.log", T0),
        entry("held.log", T0 - DAY),
        entry("old.log", T0 - 2 * DAY),
    ];
    entries[1].in_use = Some("in use: pid 7 (sleep) holds".into());
    let d = decide(&entries, &sel);
    assert_eq!(kept(&d), ["held.log", "new.log"]);
    assert_eq!(
        reasons_of(&d, "new.log"),
        [
            "kept: newest of the series",
            "kept by keep_within 1s (0s before the newest)"
        ]
    );
}

#[test]
fn periodic_rules_keep_the_newest_entry_of_each_bucket() {
    let sel = Selector::from_rule(&rule(
        "glob = \"b*\"\norder = \"mtime\"\nkeep_daily = 3\nkeep_monthly = 2",
    ));
    // Two entries a day for 40 days.
    let mut entries = Vec::new();
    for day in 0..40 {
        entries.push(entry(&format!("b{day}am"), T0 + day * DAY + 3600));
        entries.push(entry(&format!("b{day}pm"), T0 + day * DAY + 13 * 3600));
    }
    let d = decide(&entries, &sel);
    // Daily: the pm entries of the last 3 days; monthly: the newest of December and November.
    assert_eq!(kept(&d), ["b29pm", "b37pm", "b38pm", "b39pm"]);
    assert!(reasons_of(&d, "b38pm").contains(&"kept by keep_daily #2 (2026-12-09)".to_string()));
    assert!(reasons_of(&d, "b29pm").contains(&"kept by keep_monthly #2 (2026-11)".to_string()));
}

#[test]
fn name_order_compares_numbers_as_numbers() {
    let sel = Selector::from_rule(&rule("glob = \"v*\"\nkeep_last = 2"));
    let entries = vec![
        entry("v9", T0),
        entry("v10", T0 - DAY),
        entry("v100", T0 - 2 * DAY),
        entry("v2", T0),
    ];
    assert_eq!(kept(&decide(&entries, &sel)), ["v10", "v100"]);
    assert_eq!(natural_cmp(b"v010", b"v10"), std::cmp::Ordering::Greater);
    assert_eq!(natural_cmp(b"a", b"a1"), std::cmp::Ordering::Less);
}

#[test]
fn unparsable_timestamps_and_non_utf8_names_are_left_alone() {
    use std::os::unix::ffi::OsStringExt;
    let sel = Selector::from_rule(&rule(
        "regex = '^x_(?P<ts>.*)$'\norder = \"timestamp\"\ntimestamp_format = \"%Y%m%d\"\nkeep_last = 1",
    ));
    let mut bad = entry("x", T0);
    bad.name = std::ffi::OsString::from_vec(b"x_\xff\xfe".to_vec());
    let entries = vec![
        entry("x_20261101", T0),
        entry("x_20261102", T0),
        entry("x_2026", T0),
        bad,
    ];
    let d = decide(&entries, &sel);
    assert_eq!(kept(&d), ["x_20261102"]);
    assert_eq!(d.untouched.len(), 2);
    // `.` matches UTF-8 only: the non-UTF-8 name does not match; `2026` does not parse.
    let reasons: Vec<_> = d.untouched.iter().map(|u| u.reason.as_str()).collect();
    assert!(
        reasons.contains(&"untouched: does not match the regex"),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("does not read as")),
        "{reasons:?}"
    );
}

#[test]
fn pins_and_pointer_names_are_never_candidates() {
    let sel = Selector::from_rule(&rule("glob = \"*\"\nkeep_last = 1"));
    let entries = vec![
        entry("a", T0),
        entry("b", T0 - 1),
        entry("b.guardian-keep", T0),
        entry("latest", T0),
    ];
    let d = decide(&entries, &sel);
    assert_eq!(d.untouched.len(), 2);
    assert_eq!(d.series[0].entries.len(), 2);
}

#[test]
fn the_schedule_runs_each_rule_at_start_then_every_interval() {
    let mut a = rule("glob = \"v*\"\nkeep_last = 1\ninterval = \"1h\"");
    a.name = "a".into();
    let mut b = rule("glob = \"v*\"\nkeep_last = 1\ninterval = \"2h\"");
    b.name = "b".into();
    let rules = [a, b];
    let mut s = Schedule::default();
    let t = std::time::Instant::now();
    let h = std::time::Duration::from_secs(3600);
    assert_eq!(s.due(t, &rules), ["a", "b"]);
    assert!(s.due(t + h / 2, &rules).is_empty());
    assert_eq!(s.due(t + h, &rules), ["a"]);
    assert_eq!(s.due(t + 2 * h, &rules), ["a", "b"]);
    // A rule removed from the config is forgotten.
    assert_eq!(s.due(t + 5 * h, &rules[..1]), ["a"]);
    assert_eq!(s.last.len(), 1);
}

#[test]
fn a_compressing_rule_never_takes_its_archives_or_temp_files_again() {
    let sel = Selector::from_rule(&rule("glob = \"v*\"\nkeep_last = 1\ncompress = true"));
    let entries = vec![
        entry("v3", T0),
        entry("v2", T0),
        entry("v1.tar.zst", T0),
        entry(".guardian-tmp-00ff.zst", T0),
    ];
    let d = decide(&entries, &sel);
    assert_eq!(kept(&d), ["v3"]);
    assert_eq!(d.series[0].entries.len(), 2);
    let reasons: Vec<_> = d.untouched.iter().map(|u| u.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "untouched: already compressed",
            "untouched: Guardian's temp file"
        ]
    );
    // Without compress, an archive is an entry like any other.
    let sel = Selector::from_rule(&rule("glob = \"v*\"\nkeep_last = 1"));
    assert_eq!(decide(&entries, &sel).series[0].entries.len(), 3);
}
