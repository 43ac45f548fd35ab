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
