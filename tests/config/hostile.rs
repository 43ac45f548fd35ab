//! The committed corpus of hostile configs (tests/corpus/config), each refused naming its key,
//! and property tests feeding generated hostile TOML to `Config::parse`.

use super::*;

/// The corpus files with the key each must be refused at (its first line says).
fn corpus() -> &'static [(PathBuf, String)] {
    static CORPUS: std::sync::OnceLock<Vec<(PathBuf, String)>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(read_corpus)
}

fn read_corpus() -> Vec<(PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 40, "corpus shrank: {}", files.len());
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let key = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect-key: "))
                .unwrap_or_else(|| {
                    panic!("{}: first line must be `# expect-key: KEY`", p.display())
                })
                .to_string();
            (p, key)
        })
        .collect()
}

#[test]
fn every_corpus_config_is_refused_naming_its_key() {
    for (path, key) in corpus() {
        let key = key.as_str();
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.display().to_string();
        let err = Config::parse(&text, &name).expect_err(&name);
        assert!(
            err.key.as_deref().is_some_and(|k| k.contains(key)),
            "{name}: expected key {key}: {err}"
        );
        assert!(err.line.is_some(), "{name}: no line: {err}");
        let err = Config::load(path).expect_err(&name);
        assert!(err.to_string().contains(key), "{name}: {err}");
        let out = run_with_config(&["config", "check"], path);
        assert_refused(&out, &[key, "line "]);
    }
}

/// The real keys, by table, so generated files reach validation and not only the parser.
const KEYS: &[(&str, &[&str])] = &[
    (
        "daemon",
        &[
            "poll_interval",
            "sample_interval",
            "audit_log",
            "state_dir",
            "dry_run",
            "journal_vacuum",
            "source",
        ],
    ),
    (
        "thresholds",
        &[
            "cleanup_free",
            "critical_free",
            "target_free",
            "min_free",
            "inodes_cleanup_free",
            "inodes_critical_free",
            "inodes_target_free",
        ],
    ),
    (
        "forecast",
        &["enabled", "lead_time", "lead_margin", "floor_free"],
    ),
    ("[workspaces]", &["path", "protect"]),
    (
        "[rules]",
        &["name", "phase", "names", "globs", "older_than"],
    ),
    (
        "tasks",
        &[
            "db",
            "node",
            "busy_timeout",
            "retries",
            "naive_times",
            "task_areas",
            "scratch_areas",
            "max_age",
            "inactive_after",
            "keep_failed_for",
            "keep_failed_max",
            "sweep_interval",
            "total_usage_warning",
            "total_usage_critical",
        ],
    ),
    (
        "tasks.ghosts",
        &[
            "enabled",
            "ghost_after",
            "interval",
            "grace",
            "start_tolerance",
            "projects",
        ],
    ),
    (
        "[tasks.usage_limits]",
        &["workspace", "warning", "critical"],
    ),
];

/// TOML text for a value an operator (or an attacker) might write.
fn value() -> impl Strategy<Value = String> {
    let unit = prop::sample::select(vec![
        "", "ns", "ms", "s", "m", "h", "d", "days", "y", "B", "KiB", "MiB", "GiB", "TiB", "PiB",
        "EiB", "EB", "%", "x",
    ]);
    let number = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| n.to_string()),
        "[0-9]{1,60}",
        "[0-9]{0,5}\\.[0-9]{0,30}",
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("-1".to_string()),
        Just("1e400".to_string()),
    ];
    let path = prop_oneof![
        "(/[a-z.]{0,3}){0,6}/?",
        Just("/".to_string()),
        Just("/etc".to_string()),
        Just("/srv/ci".to_string()),
        Just("/srv/ci/tasks".to_string()),
        Just("/srv//ci/./x".to_string()),
        Just("relative/path".to_string()),
    ];
    let scalar = prop_oneof![
        (number.clone(), unit).prop_map(|(n, u)| format!("\"{n}{u}\"")),
        number,
        path.prop_map(|p| format!("\"{p}\"")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "\"[ -~]{0,40}\"".prop_map(|s: String| s.replace('\\', "/")),
        (0usize..5_000).prop_map(|n| format!("\"{}\"", "y".repeat(n))),
        Just("\"\"".to_string()),
        Just("\"*\"".to_string()),
        Just("\"\\u0000\"".to_string()),
    ];
    scalar.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4).prop_map(|v| {
                let fields: Vec<String> =
                    v.into_iter().map(|(k, x)| format!("{k} = {x}")).collect();
                format!("{{ {} }}", fields.join(", "))
            }),
            (1usize..500).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        ]
    })
}

/// A whole file: tables of real keys (some repeated, some misspelled) with generated values.
fn structured_toml() -> impl Strategy<Value = String> {
    let table = (
        0..KEYS.len(),
        prop::collection::vec((any::<prop::sample::Index>(), value(), 0u8..10), 0..8),
    )
        .prop_map(|(t, entries)| {
            let (name, keys) = KEYS[t];
            let header =
                if let Some(array) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
                    format!("[[{array}]]")
                } else {
                    format!("[{name}]")
                };
            let mut text = format!("{header}\n");
            for (index, v, twist) in entries {
                let key = keys[index.index(keys.len())];
                let key = match twist {
                    0 => format!("{key}x"),
                    1 => format!("\"{key}\""),
                    _ => key.to_string(),
                };
                text.push_str(&format!("{key} = {v}\n"));
            }
            text
        });
    prop::collection::vec(table, 0..8).prop_map(|t| t.concat())
}

/// Asserts what must hold for any input: no panic, and an error names a key or a line.
fn check_any(text: &str) {
    match Config::parse(text, "gen.toml") {
        Ok(config) => {
            let _ = config.compiled_rules();
            if let Err(e) = Config::load_text(text, "gen.toml") {
                assert!(e.key.is_some(), "disk check error without a key: {e}");
            }
        }
        Err(e) => assert!(
            e.key.is_some() || e.line.is_some(),
            "error names neither key nor line: {e}\n--- input ---\n{text}"
        ),
    }
}

/// Bounded for CI: a fixed number of cases (the three targets together take seconds).
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn parse_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_any(&String::from_utf8_lossy(&bytes));
    }

}

proptest! {
    #![proptest_config(cases(800))]

    #[test]
    fn parse_never_panics_and_always_locates_errors_on_generated_configs(text in structured_toml()) {
        check_any(&text);
    }

    #[test]
    fn parse_never_panics_on_a_corpus_file_with_one_line_changed(
        file in any::<prop::sample::Index>(),
        line in any::<prop::sample::Index>(),
        replacement in value(),
    ) {
        let corpus = corpus();
        let (path, _) = &corpus[file.index(corpus.len())];
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let i = line.index(lines.len().max(1)).min(lines.len().saturating_sub(1));
        if let Some(l) = lines.get_mut(i) {
            if let Some((k, _)) = l.split_once('=') {
                *l = format!("{k}= {replacement}");
            }
        }
        check_any(&lines.join("\n"));
    }
}
