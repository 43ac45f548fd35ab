//! The fleet files in `deploy/`: the Prometheus rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`), every alert is unit-tested and annotated, the example
//! Prometheus config passes `promtool check config`, the Grafana dashboard parses, has its
//! datasource and instance variables and only valid PromQL, and rules and dashboard name only
//! metrics Guardian exports. promtool missing is a loud skip, a failure under
//! `GUARDIAN_REQUIRE_PRIVILEGED_TESTS=1` (CI installs it: `.ci/run`).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

fn read(rel: &str) -> String {
    let path = deploy(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `promtool` on PATH, or `None` after a loud skip (a failure when privileged tests are
/// required: CI must run these).
fn promtool(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        guardian::testkit::skip(
            test,
            "promtool is not installed (Debian: apt-get install prometheus; .ci/run does it)",
        );
    }
    found
}

/// Runs promtool with `args`; panics with its output unless it succeeds.
fn run_promtool(promtool: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(promtool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", promtool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check() {
    let Some(promtool) = promtool("alert_rules_pass_promtool_check") else {
        return;
    };
    let rules = deploy("prometheus/guardian-rules.yml");
    let out = run_promtool(
        &promtool,
        &["check".as_ref(), "rules".as_ref(), rules.as_ref()],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let Some(promtool) = promtool("alert_rules_pass_their_promtool_unit_tests") else {
        return;
    };
    let tests = deploy("prometheus/guardian-rules.test.yml");
    let out = run_promtool(
        &promtool,
        &["test".as_ref(), "rules".as_ref(), tests.as_ref()],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn prometheus_example_config_passes_promtool_check() {
    let Some(promtool) = promtool("prometheus_example_config_passes_promtool_check") else {
        return;
    };
    // --syntax-only: the example names a token file that exists only on a real server.
    let config = deploy("prometheus/prometheus.example.yml");
    let out = run_promtool(
        &promtool,
        &[
            "check".as_ref(),
            "config".as_ref(),
            "--syntax-only".as_ref(),
            config.as_ref(),
        ],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The alerts of the rules file, each with the text of its rule (up to the next rule).
fn alerts(rules: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            found.push((name.trim().to_string(), String::new()));
        } else if trimmed.starts_with("- record:") || trimmed.starts_with("- name:") {
            found.push((String::new(), String::new()));
        } else if let Some((_, body)) = found.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    found.retain(|(name, _)| !name.is_empty());
    found
}

#[test]
fn every_alert_has_severity_annotations_and_a_unit_test() {
    let rules = read("prometheus/guardian-rules.yml");
    let tests = read("prometheus/guardian-rules.test.yml");
    let alerts = alerts(&rules);
    let names: BTreeSet<&str> = alerts.iter().map(|(name, _)| name.as_str()).collect();
    for expected in [
        "GuardianFilesystemWillFillSoon",
        "GuardianCleanupNotFreeing",
        "GuardianDown",
        "GuardianAbsent",
        "GuardianDegradedToPolling",
        "GuardianGhostReaped",
        "GuardianManagesFilesystem",
    ] {
        assert!(names.contains(expected), "no alert {expected} in {names:?}");
    }
    for (name, body) in &alerts {
        for key in ["severity:", "summary:", "description:"] {
            assert!(body.contains(key), "alert {name} has no {key}\n{body}");
        }
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "alert {name} has no alert_rule_test in guardian-rules.test.yml"
        );
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("grafana/guardian-dashboard.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/guardian-dashboard.json: {e}"))
}

/// Every PromQL expression of the dashboard: panel targets and the metric selectors of its
/// `label_values(selector, label)` variables.
fn dashboard_exprs(dash: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str();
            exprs.push(
                expr.unwrap_or_else(|| panic!("a target without expr: {target}"))
                    .to_string(),
            );
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().unwrap_or_default();
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map(|(selector, _label)| selector.to_string());
            exprs.push(selector.unwrap_or_else(|| panic!("variable query {query:?}")));
        }
    }
    exprs
}

#[test]
fn dashboard_parses_and_has_datasource_and_instance_variables() {
    let dash = dashboard();
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("instance")["type"], "query");
    assert_eq!(var("instance")["datasource"]["uid"], "${datasource}");

    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for panel in panels {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel id: {panel}"));
        assert!(ids.insert(id), "panel id {id} used twice");
        if panel["type"] == "row" {
            continue;
        }
        titles.insert(panel["title"].as_str().unwrap_or_default().to_string());
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{target}");
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("instance=~\"$instance\""),
                "panel {} ignores the instance variable: {expr}",
                panel["title"]
            );
        }
    }
    for wanted in [
        "Free space and thresholds",
        "Time to threshold (P50 / P90)",
        "Freed bytes by rule",
        "Cleanup actions by outcome",
        "Cleanup cycle duration",
        "Top writing projects",
        "Source in use",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted:?} in {titles:?}");
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let Some(promtool) = promtool("dashboard_queries_are_valid_promql") else {
        return;
    };
    // Each query becomes a recording rule, with Grafana's variables replaced by values, so
    // `promtool check rules` parses it.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_exprs(&dashboard()).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$instance", ".*")
            .replace("$mountpoint", ".*");
        let quoted = serde_json::to_string(&expr).expect("a string serializes");
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, &rules).expect("write the queries");
    let out = run_promtool(
        &promtool,
        &["check".as_ref(), "rules".as_ref(), file.as_ref()],
    );
    assert!(out.contains("SUCCESS"), "{out}\n{rules}");
}

/// The `guardian_*` metric names in `text` (whole PromQL identifiers, so recording rules such as
/// `instance:guardian_cleanup_cycles:increase30m` are not read as a metric).
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    text.split(|c: char| !is_ident(c))
        .filter(|word| word.starts_with("guardian_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn rules_and_dashboard_name_only_metrics_guardian_exports() {
    let rules = read("prometheus/guardian-rules.yml");
    let tests = read("prometheus/guardian-rules.test.yml");
    let dash = read("grafana/guardian-dashboard.json");
    let exported: BTreeSet<&str> = support::EXPORTED_METRICS.iter().copied().collect();
    for (file, text) in [
        ("guardian-rules.yml", &rules),
        ("guardian-rules.test.yml", &tests),
        ("guardian-dashboard.json", &dash),
    ] {
        let names = metric_names(text);
        assert!(!names.is_empty(), "{file} names no guardian metric");
        for name in &names {
            assert!(
                exported.contains(name.as_str()),
                "{file} names {name}, which Guardian does not export"
            );
        }
    }
    // Recording rules the alerts use are defined.
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if word.contains(':') && word.contains("guardian") {
            assert!(
                rules.contains(&format!("record: {word}\n")),
                "{word} is used but not recorded"
            );
        }
    }
}
