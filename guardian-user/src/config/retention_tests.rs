//! `[[retention]]` validation: every bad value refused naming its key, the docs listing every
//! range, the embedded default's rules.

use super::super::Config;

/// Parses a config with one workspace and `table` as its retention rule(s).
fn parse(table: &str) -> Result<Config, String> {
    let text = format!(
        "[[workspaces]]\npath = \"/w\"\nprotect = [\"output\"]\n\n[[retention]]\n{table}\n"
    );
    Config::parse(&text, "test").map_err(|e| e.to_string())
}

fn refused(table: &str, key: &str, words: &str) {
    let e = parse(table).expect_err(table);
    assert!(e.contains(&format!("at key `{key}`")), "{table}: {e}");
    assert!(e.contains(words), "{table}: {e}");
}

const OK: &str = "name = \"r\"\ndir = \"/w/p/versions\"\nglob = \"v*\"\nkeep_last = 2";

#[test]
fn a_valid_rule_parses_with_its_defaults() {
    let c = parse(OK).unwrap();
    let r = &c.retention[0];
    assert_eq!(r.pointers, ["current", "latest"]);
    assert_eq!(r.interval.0.as_secs(), 86_400);
    assert!(!r.compress);
    let c = parse("name = \"r\"\ndir = \"/w//p/versions/\"\nglob = \"v*\"\nkeep_last = 2").unwrap();
    assert_eq!(
        c.retention[0].dir.as_deref(),
        Some(std::path::Path::new("/w/p/versions"))
    );
}

#[test]
fn where_a_rule_applies_is_checked() {
    refused(
        "name = \"r\"\ndir = \"/srv/versions\"\nglob = \"v*\"\nkeep_last = 2",
        "retention.0.dir",
        "not inside a configured workspace",
    );
    refused(
        "name = \"r\"\ndir = \"/w\"\nglob = \"v*\"\nkeep_last = 2",
        "retention.0.dir",
        "not inside a configured workspace",
    );
    refused(
        "name = \"r\"\ndir = \"/w/output/v\"\nglob = \"v*\"\nkeep_last = 2",
        "retention.0.dir",
        "protected entry",
    );
    refused(
        "name = \"r\"\ndir = \"/w/p/../etc\"\nglob = \"v*\"\nkeep_last = 2",
        "retention.0.dir",
        "`..`",
    );
    refused(
        "name = \"r\"\nglob = \"v*\"\nkeep_last = 2",
        "retention.0.dir",
        "needs `dir`",
    );
    refused(
        "name = \"r\"\ndir = \"/w/p/v\"\nproject_dir = \"v\"\nglob = \"v*\"\nkeep_last = 2",
        "retention.0.project_dir",
        "not both",
    );
    for bad in ["/abs", "a/../b", "./a", "a//b", ""] {
        refused(
            &format!("name = \"r\"\nproject_dir = \"{bad}\"\nglob = \"v*\"\nkeep_last = 2"),
            "retention.0.project_dir",
            "`",
        );
    }
}

#[test]
fn selection_and_order_are_checked() {
    let base = "name = \"r\"\ndir = \"/w/p/v\"\nkeep_last = 1\n";
    refused(base, "retention.0.glob", "by `glob` or `regex`");
    refused(
        &format!("{base}glob = \"v*\"\nregex = \"v\""),
        "retention.0.regex",
        "not both",
    );
    refused(
        &format!("{base}regex = \"v(\""),
        "retention.0.regex",
        "not a valid regex",
    );
    refused(
        &format!("{base}glob = \"a/b\""),
        "retention.0.glob",
        "no `/`",
    );
    refused(
        &format!("{base}glob = \"[\""),
        "retention.0.glob",
        "not a valid glob",
    );
    refused(
        &format!("{base}glob = \"v*\"\norder = \"timestamp\""),
        "retention.0.order",
        "named group `ts`",
    );
    refused(
        &format!("{base}regex = '(?P<ts>\\d+)'\norder = \"timestamp\""),
        "retention.0.timestamp_format",
        "needs `timestamp_format`",
    );
    refused(
        &format!(
            "{base}regex = '(?P<ts>\\d+)'\norder = \"timestamp\"\ntimestamp_format = \"%H%M\""
        ),
        "retention.0.timestamp_format",
        "",
    );
    refused(
        &format!("{base}glob = \"v*\"\ntimestamp_format = \"%Y\""),
        "retention.0.timestamp_format",
        "only used with",
    );
    refused(
        &format!("{base}glob = \"v*\"\norder = \"size\""),
        "retention.0.order",
        "",
    );
    // A huge regex is refused, not compiled without bound.
    refused(
        &format!("{base}regex = '(\\w{{50}}){{50}}'"),
        "retention.0.regex",
        "not a valid regex",
    );
}

#[test]
fn keep_counts_and_durations_have_ranges() {
    let base = "name = \"r\"\ndir = \"/w/p/v\"\nglob = \"v*\"\n";
    refused(base, "retention.0.keep_last", "must say what it keeps");
    refused(
        &format!("{base}keep_last = 100001"),
        "retention.0.keep_last",
        "outside the allowed range",
    );
    refused(
        &format!("{base}keep_daily = 200000"),
        "retention.0.keep_daily",
        "outside the allowed range",
    );
    refused(
        &format!("{base}keep_last = -1"),
        "retention.0.keep_last",
        "",
    );
    refused(
        &format!("{base}keep_within = \"11years\""),
        "retention.0.keep_within",
        "0s to 10years",
    );
    refused(
        &format!("{base}keep_last = 1\ninterval = \"1s\""),
        "retention.0.interval",
        "1m to 30days",
    );
    refused(
        &format!("{base}keep_last = 1\npointers = [\"a/b\"]"),
        "retention.0.pointers",
        "plain entry name",
    );
    refused(
        &format!("{base}keep_last = 1\nkeep = 3"),
        "retention.0.keep",
        "unknown field",
    );
    parse(&format!("{base}keep_within = \"0s\"")).unwrap();
}

#[test]
fn names_are_checked_and_unique() {
    let text = "[[workspaces]]\npath = \"/w\"\n[[retention]]\nname = \"r\"\ndir = \"/w/p/a\"\nglob = \"v*\"\nkeep_last = 1\n[[retention]]\nname = \"r\"\ndir = \"/w/p/b\"\nglob = \"v*\"\nkeep_last = 1\n";
    let e = Config::parse(text, "test").unwrap_err().to_string();
    assert!(
        e.contains("retention.1.name") && e.contains("used twice"),
        "{e}"
    );
    refused(
        "name = \"\"\ndir = \"/w/p/v\"\nglob = \"v*\"\nkeep_last = 1",
        "retention.0.name",
        "must not be empty",
    );
}

#[test]
fn docs_list_every_range_in_the_row_of_its_key() {
    let docs = include_str!("../../../docs/config.md");
    let row = |field: &str| {
        docs.lines()
            .filter(|l| l.starts_with(&format!("| `{field}` |")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for r in [super::KEEP_WITHIN, super::INTERVAL] {
        let field = r.key.rsplit('.').next().unwrap();
        assert!(row(field).contains(r.text), "docs: {} {}", r.key, r.text);
        let (lo, hi) = r.text.split_once(" to ").unwrap();
        assert_eq!(humantime::parse_duration(lo).unwrap(), r.min);
        assert_eq!(humantime::parse_duration(hi).unwrap(), r.max);
    }
    for field in ["keep_last", "keep_daily", "keep_weekly", "keep_monthly"] {
        assert!(
            row(field).contains(&format!("0 to {}", super::MAX_KEEP)),
            "docs: {field}"
        );
    }
}

#[test]
fn the_embedded_default_has_the_seed_004_rules() {
    let c = Config::embedded_default();
    let names: Vec<_> = c.retention.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["model-versions", "model-backups", "logs"]);
    assert!(c
        .retention
        .iter()
        .all(|r| r.project_dir.is_some() && !r.compress));
}
