use super::*;

const ISSUE_EXAMPLE: &str = r#"
[daemon]
poll_interval = "1s"
audit_log = "/srv/guardian/audit.jsonl"
state_dir = "/srv/guardian/state"
dry_run = false

[thresholds]
cleanup_free = "20%"     # phase 1 starts below this much free space
critical_free = "10%"    # phase 2 allowed below this
target_free = "30%"      # clean until this much is free (hysteresis)
min_free = "50GiB"       # also act when free bytes fall below this (OR)

[[workspaces]]           # each child dir is a project / task work dir
path = "/home/worker/dispatch"
protect = ["dispatch-worker", "output", "task-wrapper.sh"]

[[rules]]
name = "regenerable"
phase = 1
names = ["node_modules", ".git", "__pycache__"]

[[rules]]
name = "old-logs"
phase = 1
globs = ["*.log"]
older_than = "1h"
"#;

#[test]
fn issue_example_is_accepted_as_written() {
    let config = Config::parse(ISSUE_EXAMPLE, "example.toml").unwrap();
    assert_eq!(config.daemon.poll_interval.0, Duration::from_secs(1));
    assert_eq!(config.thresholds.min_free.0, 50 << 30);
    assert_eq!(config.workspaces[0].protect.len(), 3);
    let rules = config.compiled_rules();
    assert!(rules[0].matches_name("node_modules"));
    assert!(rules[1].matches_name("build.log"));
    assert!(!rules[1].matches_name("build.log.gz"));
    assert_eq!(rules[1].older_than, Some(Duration::from_secs(3600)));
}

#[test]
fn embedded_default_is_valid() {
    let config = Config::embedded_default();
    assert!(!config.rules.is_empty());
    assert!(!config.workspaces.is_empty());
}

#[test]
fn unknown_key_names_key_and_line() {
    let text = ISSUE_EXAMPLE.replace("dry_run = false", "dry_run = false\ndry_runn = true");
    let err = Config::parse(&text, "x.toml").unwrap_err();
    assert_eq!(err.line, Some(7), "{err}");
    assert_eq!(err.key.as_deref(), Some("daemon.dry_runn"), "{err}");
    assert!(err.to_string().contains("dry_runn"), "{err}");
}

#[test]
fn bad_value_names_key_and_line() {
    let text = ISSUE_EXAMPLE.replace("critical_free = \"10%\"", "critical_free = \"10 percent\"");
    let err = Config::parse(&text, "x.toml").unwrap_err();
    assert_eq!(err.line, Some(10), "{err}");
    assert_eq!(
        err.key.as_deref(),
        Some("thresholds.critical_free"),
        "{err}"
    );
}

#[test]
fn bad_duration_in_array_of_tables_names_key() {
    let text = ISSUE_EXAMPLE.replace("older_than = \"1h\"", "older_than = \"an hour\"");
    let err = Config::parse(&text, "x.toml").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("rules.1.older_than"), "{err}");
    assert_eq!(err.line, Some(27), "{err}");
}

#[test]
fn inverted_thresholds_are_rejected_with_location() {
    let text = ISSUE_EXAMPLE.replace("target_free = \"30%\"", "target_free = \"15%\"");
    let err = Config::parse(&text, "x.toml").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("thresholds.target_free"), "{err}");
    assert_eq!(err.line, Some(11), "{err}");
}

#[test]
fn rule_without_matchers_is_rejected_with_location() {
    let text = ISSUE_EXAMPLE.replace("globs = [\"*.log\"]\n", "");
    let err = Config::parse(&text, "x.toml").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("rules.1.names"), "{err}");
    assert_eq!(err.line, Some(23), "{err}");
}

#[test]
fn relative_workspace_is_rejected() {
    let text = ISSUE_EXAMPLE.replace("/home/worker/dispatch", "home/worker");
    let err = Config::parse(&text, "x.toml").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("workspaces.0.path"), "{err}");
    assert_eq!(err.line, Some(15), "{err}");
}

#[test]
fn protect_entries_must_be_plain_names() {
    let text = ISSUE_EXAMPLE.replace("\"output\"", "\"../etc\"");
    let err = Config::parse(&text, "x.toml").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("workspaces.0.protect"), "{err}");
}

#[test]
fn bad_phase_is_rejected() {
    let text = ISSUE_EXAMPLE.replace("phase = 1\nnames", "phase = 3\nnames");
    let err = Config::parse(&text, "x.toml").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("rules.0.phase"), "{err}");
    assert_eq!(err.line, Some(20), "{err}");
}

#[test]
fn forecast_defaults_apply_when_the_table_is_absent() {
    let config = Config::parse(ISSUE_EXAMPLE, "example.toml").unwrap();
    assert!(config.forecast.enabled);
    assert_eq!(config.forecast.lead_time, LeadTime::Auto);
    assert_eq!(config.forecast.lead_margin.0, Duration::from_secs(5));
    assert_eq!(config.forecast.floor_free.0, FreeAmount::Percent(40.0));
    let embedded = Config::embedded_default();
    assert_eq!(embedded.forecast.lead_time, LeadTime::Auto);
    assert_eq!(embedded.forecast.floor_free.0, FreeAmount::Percent(40.0));
}

#[test]
fn forecast_keys_parse() {
    let text = format!(
        "{ISSUE_EXAMPLE}\n[forecast]\nenabled = false\nlead_time = \"90s\"\nlead_margin = \"2s\"\nfloor_free = \"100GiB\"\n"
    );
    let config = Config::parse(&text, "x.toml").unwrap();
    assert!(!config.forecast.enabled);
    assert_eq!(
        config.forecast.lead_time,
        LeadTime::Fixed(HumanDuration(Duration::from_secs(90)))
    );
    assert_eq!(config.forecast.lead_margin.0, Duration::from_secs(2));
    assert_eq!(
        config.forecast.floor_free.0,
        FreeAmount::Absolute(100 << 30)
    );
}

#[test]
fn bad_forecast_values_name_key_and_line() {
    let with = |body: &str| format!("{ISSUE_EXAMPLE}\n[forecast]\n{body}\n");
    // ISSUE_EXAMPLE ends on line 27: `[forecast]` is line 29, its first key line 30.
    for (body, key) in [
        ("lead_time = \"soonish\"", "forecast.lead_time"),
        ("lead_time = \"0s\"", "forecast.lead_time"),
        ("lead_margin = 5", "forecast.lead_margin"),
        ("floor_free = \"forty\"", "forecast.floor_free"),
        ("floor_free = \"15%\"", "forecast.floor_free"),
        ("enable = true", "forecast.enable"),
    ] {
        let err = Config::parse(&with(body), "x.toml").unwrap_err();
        assert_eq!(err.key.as_deref(), Some(key), "{body}: {err}");
        assert_eq!(err.line, Some(30), "{body}: {err}");
        assert!(err.to_string().contains("x.toml"), "{err}");
    }
    let err = Config::parse(&with("lead_time = \"soonish\""), "x.toml").unwrap_err();
    assert!(err.message.contains("auto"), "{err}");
    let err = Config::parse(&with("floor_free = \"15%\""), "x.toml").unwrap_err();
    assert!(err.message.contains("cleanup_free"), "{err}");
}

// ---- Values that must be refused (issue 12 item 4): key and line in every error. ----

/// A minimal valid config with `extra` appended (line 4 is the first line of `extra`).
fn with(extra: &str) -> String {
    format!("[[workspaces]]\npath = \"/srv/ci\"\n\n{extra}")
}

/// Parses `text`, expecting an error at `key` on `line`; returns the message.
fn refused(text: &str, key: &str, line: usize) -> String {
    let err = Config::parse(text, "x.toml").expect_err(text);
    assert_eq!(err.key.as_deref(), Some(key), "{text}\n{err}");
    assert_eq!(err.line, Some(line), "{text}\n{err}");
    let shown = err.to_string();
    assert!(
        shown.contains(key) && shown.contains(&format!("line {line}")),
        "{shown}"
    );
    err.message
}

#[test]
fn sample_interval_of_1ns_is_refused() {
    let m = refused(
        &with("[daemon]\nsample_interval = \"1ns\"\n"),
        "daemon.sample_interval",
        5,
    );
    assert!(m.contains("10ms to 1m"), "{m}");
}

#[test]
fn poll_interval_of_1ns_is_refused() {
    refused(
        &with("[daemon]\npoll_interval = \"1ns\"\n"),
        "daemon.poll_interval",
        5,
    );
}

#[test]
fn ghost_after_of_1ns_is_refused() {
    refused(
        &with("[tasks]\ndb = \"/srv/db/dispatch.db\"\n\n[tasks.ghosts]\nghost_after = \"1ns\"\n"),
        "tasks.ghosts.ghost_after",
        8,
    );
}

#[test]
fn start_tolerance_of_1y_is_refused() {
    let m = refused(
        &with(
            "[tasks]\ndb = \"/srv/db/dispatch.db\"\n\n[tasks.ghosts]\nstart_tolerance = \"1y\"\n",
        ),
        "tasks.ghosts.start_tolerance",
        8,
    );
    assert!(m.contains("1s to 10m"), "{m}");
}

#[test]
fn every_duration_is_accepted_at_its_bounds_and_refused_just_outside() {
    for r in ranges::DURATIONS {
        let parts: Vec<&str> = r.key.split('.').collect();
        let field = parts.last().unwrap();
        let body = |d: Duration| {
            let v = format!("{field} = \"{}\"\n", humantime::format_duration(d));
            match parts.as_slice() {
                ["rules", _, _] => format!("[[rules]]\nname = \"r\"\nnames = [\"x\"]\n{v}"),
                ["artifacts", _, _] => format!("[[artifacts]]\nname = \"cargo-target\"\n{v}"),
                ["tasks", "ghosts", _] => {
                    format!("[tasks]\ndb = \"/srv/db/d.db\"\n[tasks.ghosts]\n{v}")
                }
                [table, _] => format!("[{table}]\n{v}"),
                _ => unreachable!("{}", r.key),
            }
        };
        for ok in [r.min, r.max] {
            Config::parse(&with(&body(ok)), "x.toml")
                .unwrap_or_else(|e| panic!("{} = {ok:?} refused: {e}", r.key));
        }
        let mut outside = vec![r.max + Duration::from_secs(1)];
        if !r.min.is_zero() {
            outside.push(r.min - Duration::from_nanos(1));
        }
        for bad in outside {
            let text = with(&body(bad));
            let err = Config::parse(&text, "x.toml").expect_err(&text);
            let key = err.key.clone().unwrap();
            let key = key
                .replace("rules.0.", "rules.*.")
                .replace("artifacts.0.", "artifacts.*.");
            assert_eq!(key, r.key, "{err}");
            assert!(err.line.is_some(), "{err}");
            assert!(err.message.contains(r.text), "{err}");
        }
    }
}

#[test]
fn the_short_values_tests_and_the_demo_use_stay_valid() {
    let text = with(
        "[daemon]\npoll_interval = \"100ms\"\nsample_interval = \"100ms\"\n\
         [tasks]\ndb = \"/srv/db/d.db\"\nbusy_timeout = \"1s\"\nretries = 1\nkeep_failed_for = \"1s\"\n\
         [tasks.ghosts]\nghost_after = \"5s\"\ngrace = \"1s\"\n",
    );
    Config::parse(&text, "x.toml").unwrap();
    Config::parse(&with("[daemon]\npoll_interval = \"1h\"\n"), "x.toml").unwrap();
}

#[test]
fn empty_and_match_everything_globs_are_refused() {
    for glob in ["", " ", "*", "**", "?*", "*?*", "{*,x}"] {
        let text = with(&format!("[[rules]]\nname = \"r\"\nglobs = [\"{glob}\"]\n"));
        refused(&text, "rules.0.globs", 6);
    }
    for name in ["", ".", "..", "a/b", &"n".repeat(256)] {
        let text = with(&format!("[[rules]]\nname = \"r\"\nnames = [\"{name}\"]\n"));
        refused(&text, "rules.0.names", 6);
    }
    // What a rule may still say.
    for glob in ["*.log", "core.*", "?"] {
        let text = with(&format!("[[rules]]\nname = \"r\"\nglobs = [\"{glob}\"]\n"));
        Config::parse(&text, "x.toml").unwrap();
    }
}

#[test]
fn rules_that_would_delete_the_keep_marker_are_refused() {
    refused(
        &with("[[rules]]\nname = \"r\"\nnames = [\".guardian-keep\"]\n"),
        "rules.0.names",
        6,
    );
    refused(
        &with("[[rules]]\nname = \"r\"\nglobs = [\".guardian-*\"]\n"),
        "rules.0.globs",
        6,
    );
}

#[test]
fn sizes_past_u64_are_refused_not_wrapped() {
    for size in [
        "\"18446744073709551616\"",
        "\"16EiB\"",
        "\"17EB\"",
        "\"99999999999999999999999999999999999999999999GiB\"",
        "\"18446744073709551615.9\"",
    ] {
        let m = refused(
            &with(&format!("[thresholds]\nmin_free = {size}\n")),
            "thresholds.min_free",
            5,
        );
        assert!(
            m.contains("too large") || m.contains("range"),
            "{size}: {m}"
        );
    }
    assert_eq!(ByteSize::parse("18446744073709551615").unwrap().0, u64::MAX);
    assert!(ByteSize::parse("18446744073709551616").is_err());
    assert!(ByteSize::parse("16EiB").is_err());
    assert_eq!(ByteSize::parse("1.5KiB").unwrap().0, 1536);
    assert_eq!(ByteSize::parse("0.1B").unwrap().0, 0);
    assert_eq!(
        ByteSize::parse("1.999999999999999999GiB").unwrap().0,
        2 << 30
    );
    for bad in ["", ".", "1..5GiB", "1.2.3", "1e3", "-5", "0x10"] {
        assert!(ByteSize::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn sizes_above_1_pib_are_refused_for_every_size_key() {
    for (body, key, line) in [
        ("[thresholds]\nmin_free = \"2PiB\"\n", "thresholds.min_free", 5),
        ("[thresholds]\ncleanup_free = \"2PiB\"\ncritical_free = \"1GiB\"\ntarget_free = \"3PiB\"\n", "thresholds.cleanup_free", 5),
        ("[thresholds]\ninodes_target_free = 2000000000000\n", "thresholds.inodes_target_free", 5),
        ("[forecast]\nfloor_free = \"2PiB\"\n", "forecast.floor_free", 5),
        ("[tasks]\nkeep_failed_max = \"2PiB\"\n", "tasks.keep_failed_max", 5),
        ("[tasks]\ntotal_usage_critical = \"2PiB\"\n", "tasks.total_usage_critical", 5),
        ("[[tasks.usage_limits]]\nworkspace = \"/srv/ci\"\nwarning = \"2PiB\"\n", "tasks.usage_limits.0.warning", 6),
    ] {
        refused(&with(body), key, line);
    }
    Config::parse(&with("[thresholds]\nmin_free = \"1PiB\"\n"), "x.toml").unwrap();
}

#[test]
fn nan_and_infinite_percentages_are_refused() {
    for pct in [
        "NaN%",
        "nan%",
        "inf%",
        "-inf%",
        "infinity%",
        "1e400%",
        "101%",
        "-1%",
    ] {
        refused(
            &with(&format!("[thresholds]\ncleanup_free = \"{pct}\"\n")),
            "thresholds.cleanup_free",
            5,
        );
    }
}

#[test]
fn ghosts_table_without_tasks_db_is_refused() {
    for (body, line) in [
        ("[tasks.ghosts]\nenabled = true\n", 4),
        ("[tasks]\nghosts = { grace = \"2s\" }\n", 5),
        ("[tasks]\nghosts.grace = \"2s\"\n", 5),
    ] {
        let m = refused(&with(body), "tasks.ghosts", line);
        assert!(m.contains("tasks.db"), "{m}");
    }
    Config::parse(
        &with("[tasks]\ndb = \"/srv/db/d.db\"\n[tasks.ghosts]\nenabled = true\n"),
        "x.toml",
    )
    .unwrap();
}

#[test]
fn retries_above_10_are_refused() {
    refused(&with("[tasks]\nretries = 11\n"), "tasks.retries", 5);
}

#[test]
fn duplicate_keys_and_tables_name_the_key_and_line() {
    refused(
        "[daemon]\npoll_interval = \"1s\"\npoll_interval = \"2s\"\n",
        "daemon.poll_interval",
        3,
    );
    refused("[daemon]\ndry_run = true\n\n[daemon]\n", "daemon", 4);
    refused(
        "[[rules]]\nname = \"a\"\nnames = [\"x\"]\nname = \"b\"\n",
        "rules.0.name",
        4,
    );
}

#[test]
fn type_errors_name_the_key_and_line() {
    refused(
        "[[workspaces]]\npath = \"/srv/a\"\n[[workspaces]]\nprotect = []\n",
        "workspaces.1.path",
        3,
    );
    refused("[rules]\nname = \"x\"\n", "rules", 1);
    refused(
        "workspaces = [{path = \"/a/b\"}, {path = 5}]\n",
        "workspaces.1.path",
        1,
    );
    refused(
        "[[rules]]\nname = \"r\"\nglobs = [\n  \"*.log\",\n  5,\n]\n",
        "rules.0.globs.1",
        5,
    );
    refused("daemon = 5\n", "daemon", 1);
    refused("[tasks]\nretries = -1\n", "tasks.retries", 2);
}

#[test]
fn overlapping_workspaces_are_refused_naming_both_keys() {
    for (second, how) in [
        ("/srv/ci/tasks", "is inside"),
        ("/srv", "contains"),
        ("/srv/ci/", "is the same directory as"),
        ("//srv//ci", "is the same directory as"),
    ] {
        let text =
            format!("[[workspaces]]\npath = \"/srv/ci\"\n\n[[workspaces]]\npath = \"{second}\"\n");
        let m = refused(&text, "workspaces.1.path", 5);
        assert!(m.contains("workspaces.0.path") && m.contains(how), "{m}");
    }
    let text = "[[workspaces]]\npath = \"/srv/ci\"\n[[workspaces]]\npath = \"/srv/ci-other\"\n";
    Config::parse(text, "x.toml").unwrap();
}

#[test]
fn system_directories_are_refused_as_workspaces_but_dirs_below_them_are_fine() {
    for dir in [
        "/",
        "/etc",
        "/usr",
        "/var",
        "/var/lib",
        "/var/log",
        "/home",
        "/tmp",
        "/root",
        "/usr/local",
        "/proc/1",
        "/sys/fs/cgroup",
    ] {
        let text = format!("[[workspaces]]\npath = \"{dir}\"\n");
        refused(&text, "workspaces.0.path", 2);
    }
    for dir in [
        "/home/worker/dispatch",
        "/var/lib/builds",
        "/srv/ci",
        "/srv",
        "/data/ci",
        "/tmp/ci",
    ] {
        let text = format!("[[workspaces]]\npath = \"{dir}\"\n");
        Config::parse(&text, "x.toml").unwrap_or_else(|e| panic!("{dir}: {e}"));
    }
}

#[test]
fn dot_components_in_the_raw_path_text_are_refused() {
    // `Path::components` drops a `.` in the middle: the raw text is what counts.
    for path in [
        "/srv/./ci",
        "/srv/ci/.",
        "/srv/../srv/ci",
        "/srv/ci/..",
        "./srv",
        "srv/ci",
    ] {
        let text = format!("[[workspaces]]\npath = \"{path}\"\n");
        refused(&text, "workspaces.0.path", 2);
    }
    for (body, key, line) in [
        (
            "[daemon]\naudit_log = \"/var/log/./g.jsonl\"\n",
            "daemon.audit_log",
            5,
        ),
        (
            "[daemon]\nstate_dir = \"/var/lib/g/..\"\n",
            "daemon.state_dir",
            5,
        ),
        ("[tasks]\ndb = \"/srv/db/../d.db\"\n", "tasks.db", 5),
        (
            "[tasks]\ntask_areas = [\"/srv/./ci\"]\n",
            "tasks.task_areas",
            5,
        ),
        (
            "[daemon]\nstate_dir = \"/var/lib/g\\u0000x\"\n",
            "daemon.state_dir",
            5,
        ),
    ] {
        refused(&with(body), key, line);
    }
}

#[test]
fn repeated_and_trailing_slashes_are_normalized_in_every_path_key() {
    let text = "[daemon]\naudit_log = \"/var/log//g/audit.jsonl\"\nstate_dir = \"/var/lib/g/\"\n\
                [[workspaces]]\npath = \"/srv//ci/\"\n[tasks]\ntask_areas = [\"/srv/ci\"]\n\
                [[tasks.usage_limits]]\nworkspace = \"/srv/ci//\"\nwarning = \"1GiB\"\n";
    let config = Config::parse(text, "x.toml").unwrap();
    assert_eq!(config.workspaces[0].path, Path::new("/srv/ci"));
    assert_eq!(config.workspaces[0].path.as_os_str(), "/srv/ci");
    assert_eq!(config.daemon.state_dir.as_os_str(), "/var/lib/g");
    assert_eq!(
        config.daemon.audit_log.as_os_str(),
        "/var/log/g/audit.jsonl"
    );
    assert_eq!(
        config.tasks.usage_limits[0].workspace.as_os_str(),
        "/srv/ci"
    );
    assert_eq!(
        config.tasks.area_kind(&config.workspaces[0].path),
        AreaKind::Tasks
    );
}

#[test]
fn audit_log_inside_a_workspace_is_refused() {
    let m = refused(
        "[daemon]\naudit_log = \"/srv/ci/logs/audit.jsonl\"\n[[workspaces]]\npath = \"/srv/ci\"\n",
        "daemon.audit_log",
        2,
    );
    assert!(m.contains("workspaces.0.path"), "{m}");
}

#[test]
fn state_dir_inside_a_workspace_or_a_workspace_inside_it_is_refused() {
    refused(
        "[daemon]\nstate_dir = \"/srv/ci/state\"\n[[workspaces]]\npath = \"/srv/ci\"\n",
        "daemon.state_dir",
        2,
    );
    refused(
        "[daemon]\nstate_dir = \"/srv/g\"\n[[workspaces]]\npath = \"/srv/g/ws\"\n",
        "workspaces.0.path",
        4,
    );
    refused("[daemon]\nstate_dir = \"/etc\"\n", "daemon.state_dir", 2);
}

#[test]
fn every_error_of_a_syntax_error_names_a_line() {
    for text in [
        "x = {a=1\n",
        "[daemon\n",
        "a = \"\n",
        "= 1\n",
        "[[rules]]\nname = \n",
    ] {
        let err = Config::parse(text, "x.toml").unwrap_err();
        assert!(err.line.is_some(), "{text}: {err}");
    }
}

#[test]
fn artifact_entries_are_checked_naming_key_and_line() {
    // An added type without a marker proves nothing.
    let m = refused(
        &with("[[artifacts]]\nname = \"bazel\"\ndirs = [\"bazel-out\"]\n"),
        "artifacts.0.beside",
        4,
    );
    assert!(m.contains("needs a marker"), "{m}");
    // An unknown key names itself.
    refused(
        &with("[[artifacts]]\nname = \"cargo-target\"\nmarker = \"Cargo.toml\"\n"),
        "artifacts.0.marker",
        6,
    );
    // A rule may not take a built-in type's name, nor a type a rule's.
    refused(
        &with("[[rules]]\nname = \"cargo-target\"\nnames = [\"x\"]\n"),
        "rules.0.name",
        5,
    );
    refused(
        &with(
            "[[rules]]\nname = \"mine\"\nnames = [\"x\"]\n\n[[artifacts]]\nname = \"mine\"\n\
             dirs = [\"out\"]\nbeside = [\"x.json\"]\n",
        ),
        "artifacts.0.name",
        9,
    );
    let m = refused(
        &with("[[rules]]\nname = \"r\"\nnames = [\"x\"]\nrebuild_per_gib = \"2days\"\n"),
        "rules.0.rebuild_per_gib",
        7,
    );
    assert!(m.contains("0s to 24h"), "{m}");
}

#[test]
fn the_default_rules_leave_node_modules_and_pycache_to_the_table() {
    // Nothing is matched twice: the default `regenerable` rule keeps `.git` only, the table
    // has the rest, each behind its marker.
    let config = Config::embedded_default();
    let rules = config.compiled_rules();
    let takes = |name: &str| {
        rules
            .iter()
            .filter(|r| r.matches_name(name))
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(takes(".git"), ["regenerable"]);
    assert_eq!(takes("node_modules"), ["node-modules"]);
    assert_eq!(takes("__pycache__"), ["python-bytecode"]);
    assert_eq!(takes("target"), ["cargo-target"]);
    assert!(
        rules.iter().all(|r| r.name != "go-build-cache"),
        "off by default"
    );
    assert!(rules
        .iter()
        .filter(|r| r.markers.is_some())
        .all(|r| r.phase == 1));
}

#[test]
fn the_example_of_docs_config_md_parses() {
    let docs = include_str!("../../../docs/config.md");
    let example = docs
        .split("## Example")
        .nth(1)
        .and_then(|s| s.split("```toml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .unwrap();
    let config = Config::parse(example, "docs/config.md").unwrap();
    let target = config.artifact_types();
    let target = target.iter().find(|t| t.name == "cargo-target").unwrap();
    assert_eq!(target.rebuild, Duration::from_secs(600));
    assert_eq!(target.beside, ["Cargo.toml"]);
}
