//! The config file as an attacker or a typo would write it, through the library and the real
//! `guardian` binary: files that are not regular (a FIFO, `/dev/zero`), too large or not UTF-8;
//! workspaces through symlinks, overlapping by text or by identity (a real bind mount); the
//! audit log inside a workspace; the committed corpus of hostile configs (tests/corpus/config);
//! and a property test feeding generated hostile TOML to `Config::parse`.

mod support;

use guardian::config::{Config, MAX_CONFIG_BYTES};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Runs `guardian ARGS`, failing the test (not hanging it) if it does not exit within a minute.
fn guardian_bounded(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(guardian_bin())
        .args(args)
        .env("GUARDIAN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn guardian");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("guardian {args:?} did not exit: it blocked");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(Into::into).collect()
}

/// Runs `guardian ARGS…` with the config path appended where a command takes one.
fn run_with_config(args: &[&str], config: &Path) -> Output {
    let mut all = os(args);
    all.push(config.into());
    let refs: Vec<&std::ffi::OsStr> = all.iter().map(|a| a.as_os_str()).collect();
    guardian_bounded(&refs)
}

/// Every command that loads a config, with its `--config` flag last.
const CONFIG_COMMANDS: &[&[&str]] = &[
    &["config", "check"],
    &["run", "--once", "--config"],
    &["plan", "--config"],
    &["status", "--config"],
    &["sessions", "--config"],
    &["ghosts", "--dry-run", "--config"],
    &[
        "task",
        "done",
        "--dir",
        "/srv/guardian-test/none",
        "--status",
        "done",
        "--config",
    ],
];

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts `out` is a config refusal (exit 2) whose message contains every `needle`.
fn assert_refused(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "expected exit 2: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`: {err}");
    }
}

#[test]
fn config_check_refuses_a_fifo_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("guardian.toml");
    run(Command::new("mkfifo").arg(&fifo));
    for command in CONFIG_COMMANDS {
        let out = run_with_config(command, &fifo);
        assert_refused(
            &out,
            &["FIFO", "not a regular file", &fifo.display().to_string()],
        );
    }
}

#[test]
fn config_check_refuses_dev_zero_without_reading_it() {
    for command in [&["config", "check"][..], &["plan", "--config"][..]] {
        let out = run_with_config(command, Path::new("/dev/zero"));
        assert_refused(&out, &["/dev/zero", "character device"]);
    }
}

#[test]
fn config_check_refuses_a_directory_and_a_missing_file() {
    let tmp = tempfile::tempdir().unwrap();
    assert_refused(
        &run_with_config(&["config", "check"], tmp.path()),
        &["a directory"],
    );
    assert_refused(
        &run_with_config(&["config", "check"], &tmp.path().join("absent.toml")),
        &["absent.toml"],
    );
}

#[test]
fn config_over_1_mib_is_refused_and_1_mib_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let at_limit = tmp.path().join("at-limit.toml");
    let limit = usize::try_from(MAX_CONFIG_BYTES).unwrap();
    let mut text = "#".repeat(limit - 1);
    text.push('\n');
    std::fs::write(&at_limit, &text).unwrap();
    let out = run_with_config(&["config", "check"], &at_limit);
    assert!(out.status.success(), "{}", stderr(&out));
    let over = tmp.path().join("over.toml");
    text.insert(0, '#');
    std::fs::write(&over, &text).unwrap();
    assert_refused(
        &run_with_config(&["config", "check"], &over),
        &["larger than", "over.toml"],
    );
}

#[test]
fn non_utf8_config_is_refused_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("latin1.toml");
    std::fs::write(&path, b"[daemon]\ndry_run = false\n# caf\xe9\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert_refused(
        &run_with_config(&["config", "check"], &path),
        &["line 3", "UTF-8"],
    );
}

#[test]
fn a_symlink_to_a_regular_config_file_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real.toml");
    std::fs::write(&real, "[daemon]\ndry_run = true\n").unwrap();
    let link = tmp.path().join("guardian.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = run_with_config(&["config", "check"], &link);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A temp dir holding `state/` (audit log, state dir) and whatever a test builds.
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A config with these workspaces (and `extra` appended), audit and state under `state/`.
    /// Line 2 is the audit log, line 3 the state dir, workspace N's path is on line 6 + 3N.
    fn config(&self, workspaces: &[&Path], extra: &str) -> PathBuf {
        self.config_with(
            workspaces,
            &format!(
                "audit_log = \"{}\"\nstate_dir = \"{}\"\n",
                self.path("state/audit.jsonl").display(),
                self.path("state/state").display()
            ),
            extra,
        )
    }

    /// A config with these `[daemon]` lines (from line 2 on), workspaces and `extra`.
    fn config_with(&self, workspaces: &[&Path], daemon: &str, extra: &str) -> PathBuf {
        let mut text = format!("[daemon]\n{daemon}");
        for ws in workspaces {
            text.push_str(&format!("\n[[workspaces]]\npath = \"{}\"\n", ws.display()));
        }
        text.push_str(extra);
        let path = self.path("guardian.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Nothing Guardian writes exists: no audit log, no state dir.
    fn assert_nothing_created(&self) {
        assert!(
            !self.path("state").exists(),
            "a refused config created {}",
            self.path("state").display()
        );
    }
}

#[test]
fn sample_interval_of_1ns_is_refused() {
    let s = Sandbox::new();
    let ws = s.dir("ws");
    let daemon = format!(
        "sample_interval = \"1ns\"\naudit_log = \"{}\"\nstate_dir = \"{}\"\n",
        s.path("state/audit.jsonl").display(),
        s.path("state/state").display()
    );
    let config = s.config_with(&[&ws], &daemon, "");
    for command in CONFIG_COMMANDS {
        let out = run_with_config(command, &config);
        assert_refused(&out, &["daemon.sample_interval", "line 2", "1ns"]);
    }
    s.assert_nothing_created();
}

#[test]
fn workspace_through_a_symlinked_parent_is_refused() {
    let s = Sandbox::new();
    let real = s.dir("real");
    let alpha = s.dir("real/alpha");
    std::fs::write(alpha.join("precious"), b"data").unwrap();
    let link = s.path("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let config = s.config(&[&link.join("alpha")], "");
    for command in CONFIG_COMMANDS {
        let out = run_with_config(command, &config);
        assert_refused(
            &out,
            &[
                "workspaces.0.path",
                "line 6",
                "symbolic link",
                &link.display().to_string(),
                &alpha.canonicalize().unwrap().display().to_string(),
            ],
        );
    }
    s.assert_nothing_created();
    assert!(alpha.join("precious").exists());
    // The real path is accepted.
    let config = s.config(&[&alpha.canonicalize().unwrap()], "");
    let out = run_with_config(&["config", "check"], &config);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn workspace_that_is_a_symlink_is_refused() {
    let s = Sandbox::new();
    let real = s.dir("real");
    let link = s.path("ws");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let config = s.config(&[&link], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.0.path", "is a symbolic link"],
    );
    // A link below a path that does not exist yet is still found.
    let config = s.config(&[&link.join("not-yet/deeper")], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.0.path", "symbolic link"],
    );
}

#[test]
fn audit_log_and_state_dir_through_a_symlink_are_refused() {
    let s = Sandbox::new();
    let ws = s.dir("ws");
    let real = s.dir("real-logs");
    let link = s.path("logs");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for (daemon, key) in [
        (
            format!(
                "audit_log = \"{}\"\nstate_dir = \"{}\"\n",
                link.join("audit.jsonl").display(),
                s.path("state/state").display()
            ),
            "daemon.audit_log",
        ),
        (
            format!(
                "audit_log = \"{}\"\nstate_dir = \"{}\"\n",
                s.path("state/audit.jsonl").display(),
                link.join("state").display()
            ),
            "daemon.state_dir",
        ),
    ] {
        let config = s.config_with(&[&ws], &daemon, "");
        assert_refused(
            &run_with_config(&["run", "--once", "--config"], &config),
            &[key, "symbolic link"],
        );
    }
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    s.assert_nothing_created();
}

#[test]
fn overlapping_workspaces_are_refused_naming_both_keys() {
    let s = Sandbox::new();
    let outer = s.dir("ws");
    let inner = s.dir("ws/tasks");
    let config = s.config(&[&outer, &inner], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.1.path", "workspaces.0.path", "line 9", "inside"],
    );
    s.assert_nothing_created();
}

#[test]
fn audit_log_inside_a_workspace_is_refused() {
    let s = Sandbox::new();
    let ws = s.dir("ws");
    let daemon = format!(
        "audit_log = \"{}\"\nstate_dir = \"{}\"\n",
        ws.join("logs/audit.jsonl").display(),
        s.path("state/state").display()
    );
    let config = s.config_with(&[&ws], &daemon, "");
    assert_refused(
        &run_with_config(&["run", "--once", "--config"], &config),
        &["daemon.audit_log", "workspaces.0.path", "line 2"],
    );
    assert!(!ws.join("logs").exists());
}

#[test]
fn the_embedded_default_loads_with_its_paths_checked() {
    // /home/worker/dispatch need not exist: paths that do not exist get the text checks only.
    Config::load_embedded_default().unwrap();
}

/// A bind mount, unmounted on drop.
struct Bind(PathBuf);

impl Bind {
    fn new(from: &Path, to: &Path) -> Bind {
        std::fs::create_dir_all(to).unwrap();
        run(Command::new("mount").arg("--bind").arg(from).arg(to));
        Bind(to.to_path_buf())
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn bind_mounted_spellings_of_one_workspace_are_refused_by_identity() {
    if !require_root("bind_mounted_spellings_of_one_workspace_are_refused_by_identity") {
        return;
    }
    let s = Sandbox::new();
    let ws = s.dir("a/ws");
    s.dir("a/ws/tasks");
    let alias = s.path("b/alias");
    let _bind = Bind::new(&ws, &alias);
    // Two texts that share no prefix, one directory.
    let config = s.config(&[&ws, &alias], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &[
            "workspaces.1.path",
            "workspaces.0.path",
            "same directory",
            "device and inode",
        ],
    );
    // Nested through the alias: b/alias/tasks is inside a/ws.
    let config = s.config(&[&ws, &alias.join("tasks")], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.1.path", "workspaces.0.path", "is inside"],
    );
    // The other order: the outer one through the alias.
    let config = s.config(&[&ws.join("tasks"), &alias], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.1.path", "workspaces.0.path", "contains"],
    );
    // The audit log and the state dir under the alias are inside the workspace.
    let config = s.config(&[&ws], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let audit_in = text.replace(
        &s.path("state/audit.jsonl").display().to_string(),
        &alias.join("audit.jsonl").display().to_string(),
    );
    std::fs::write(&config, audit_in).unwrap();
    assert_refused(
        &run_with_config(&["run", "--once", "--config"], &config),
        &["daemon.audit_log", "workspaces.0.path", "device and inode"],
    );
    let state_in = text.replace(
        &s.path("state/state").display().to_string(),
        &alias.join("tasks").display().to_string(),
    );
    std::fs::write(&config, state_in).unwrap();
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["daemon.state_dir", "workspaces.0.path"],
    );
    s.assert_nothing_created();
    assert!(!alias.join("audit.jsonl").exists());
}

#[test]
fn a_bind_mount_of_a_subdirectory_of_a_workspace_is_refused_as_a_second_workspace() {
    if !require_root(
        "a_bind_mount_of_a_subdirectory_of_a_workspace_is_refused_as_a_second_workspace",
    ) {
        return;
    }
    // `..` from the bind mount's root leads to b/, never to a/ws: only the mount table tells
    // that b/alias is a/ws/tasks.
    let s = Sandbox::new();
    let ws = s.dir("a/ws");
    let tasks = s.dir("a/ws/tasks");
    let alias = s.path("b/alias");
    let _bind = Bind::new(&tasks, &alias);
    let config = s.config(&[&ws, &alias], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &[
            "workspaces.1.path",
            "workspaces.0.path",
            "is inside",
            "device and inode",
        ],
    );
    let config = s.config(&[&alias, &ws], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.1.path", "workspaces.0.path", "contains"],
    );
    // The audit log in a dir below the alias (not created yet) is inside the workspace too.
    let daemon = format!(
        "audit_log = \"{}\"\nstate_dir = \"{}\"\n",
        alias.join("logs/audit.jsonl").display(),
        s.path("state/state").display()
    );
    let config = s.config_with(&[&ws], &daemon, "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["daemon.audit_log", "workspaces.0.path"],
    );
}

#[test]
fn a_bind_mount_of_a_system_directory_is_refused_as_a_workspace() {
    if !require_root("a_bind_mount_of_a_system_directory_is_refused_as_a_workspace") {
        return;
    }
    let s = Sandbox::new();
    let alias = s.path("etc-alias");
    let _bind = Bind::new(Path::new("/etc"), &alias);
    let config = s.config(&[&alias], "");
    assert_refused(
        &run_with_config(&["config", "check"], &config),
        &["workspaces.0.path", "system directory `/etc`"],
    );
}

// ---- The committed corpus of hostile configs. ----

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

// ---- Generated hostile TOML. ----

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
