//! Project-type artifacts on a real tmpfs with the real `guardian` binary: a corpus with every
//! type of the built-in table (the real marker files, many small files) and decoys that look
//! like artifacts but are not proven (a `target/` without `Cargo.toml`, a `target/` beside a
//! symlinked `Cargo.toml`, a marker-less `build/`, `dist/` beside a bare `package.json`, …).
//! Phase 1 must find every type, leave every decoy alone, order by what a deletion costs to
//! undo, and free more before phase 2 than today's `[[rules]]` alone.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::*;

const KIB: u64 = 1024;

/// Files `count` × `each` under `dir` (small files, like the real thing).
fn small_files(dir: &Path, count: usize, each: u64) {
    write_files(dir, count, each);
}

/// Every type of the table: (type name, project, artifact dir). Built by [`build_corpus`].
const ARTIFACTS: &[(&str, &str, &str)] = &[
    ("node-modules", "web", "node_modules"),
    ("next-build", "web", ".next"),
    ("js-dist", "web", "dist"),
    ("cargo-target", "rust", "target"),
    ("python-venv", "py", ".venv"),
    ("python-bytecode", "py", "pkg/__pycache__"),
    ("pytest-cache", "py", ".pytest_cache"),
    ("mypy-cache", "py", ".mypy_cache"),
    ("tox", "py", ".tox"),
    ("gradle-build", "java", "build"),
    ("gradle-cache", "java", ".gradle"),
    ("cmake-build", "cpp", "build"),
    ("terraform", "infra", ".terraform"),
    ("go-build-cache", "go", ".gocache"),
];

/// Dirs that look like artifacts but no marker proves them: user data, never touched.
const DECOYS: &[&str] = &[
    "data/target",
    "data/build",
    "data/dist",
    "data/.venv",
    "data/.terraform",
    "linked/target",
    "linked/.tox",
    "linked/.venv",
];

/// Builds the corpus in `ws`: the real marker files and many small files per artifact.
fn build_corpus(ws: &Path) {
    let file = |rel: &str, bytes: u64| write_file(&ws.join(rel), bytes);
    // An npm app with Next.js and TypeScript.
    file("web/package.json", 2 * KIB);
    file("web/next.config.js", KIB);
    file("web/tsconfig.json", KIB);
    file("web/src/index.ts", 8 * KIB);
    for p in 0..40 {
        file(&format!("web/node_modules/pkg-{p}/package.json"), KIB);
        small_files(
            &ws.join(format!("web/node_modules/pkg-{p}/lib")),
            8,
            8 * KIB,
        );
    }
    small_files(&ws.join("web/.next/cache"), 60, 16 * KIB);
    small_files(&ws.join("web/dist"), 30, 16 * KIB);
    // A Cargo crate: a big target/ of many small files.
    file("rust/Cargo.toml", KIB);
    file("rust/src/main.rs", 4 * KIB);
    small_files(&ws.join("rust/target/debug/deps"), 200, 48 * KIB);
    // Python: venv, bytecode, test and type caches, tox.
    file("py/pyproject.toml", KIB);
    file("py/tox.ini", KIB);
    file("py/pkg/mod.py", 4 * KIB);
    file("py/.venv/pyvenv.cfg", 200);
    small_files(
        &ws.join("py/.venv/lib/python3.12/site-packages"),
        150,
        24 * KIB,
    );
    file("py/pkg/__pycache__/mod.cpython-312.pyc", 8 * KIB);
    small_files(&ws.join("py/pkg/__pycache__/more"), 20, 8 * KIB);
    file("py/.pytest_cache/CACHEDIR.TAG", 200);
    small_files(&ws.join("py/.pytest_cache/v"), 20, 4 * KIB);
    file("py/.mypy_cache/CACHEDIR.TAG", 200);
    small_files(&ws.join("py/.mypy_cache/3.12"), 80, 16 * KIB);
    small_files(&ws.join("py/.tox/py312"), 60, 16 * KIB);
    // Gradle.
    file("java/build.gradle", KIB);
    file("java/settings.gradle.kts", KIB);
    small_files(&ws.join("java/build/classes"), 80, 16 * KIB);
    small_files(&ws.join("java/.gradle/8.5"), 40, 16 * KIB);
    // CMake, building in build/.
    file("cpp/CMakeLists.txt", KIB);
    file("cpp/build/CMakeCache.txt", 16 * KIB);
    small_files(&ws.join("cpp/build/CMakeFiles"), 80, 16 * KIB);
    // Terraform.
    file("infra/main.tf", KIB);
    small_files(&ws.join("infra/.terraform/providers"), 20, 64 * KIB);
    // A Go build cache kept in the project (GOCACHE=$PWD/.gocache).
    file("go/go.mod", 200);
    file("go/.gocache/trim.txt", 16);
    file("go/.gocache/README", 200);
    small_files(&ws.join("go/.gocache/00"), 40, 16 * KIB);
    // Decoys: names of artifacts, no proof.
    file("data/package.json", KIB); // a dist/ beside a bare package.json is not proven
    small_files(&ws.join("data/target"), 60, 32 * KIB);
    small_files(&ws.join("data/build"), 30, 32 * KIB);
    small_files(&ws.join("data/dist"), 20, 32 * KIB);
    small_files(&ws.join("data/.venv/lib"), 20, 32 * KIB);
    file("data/.venv/pyvenv.cfg.bak", 100);
    small_files(&ws.join("data/.terraform"), 10, 32 * KIB);
    // Markers that are symlinks prove nothing: they are not the project's own files.
    std::fs::create_dir_all(ws.join("linked")).unwrap();
    std::os::unix::fs::symlink("../rust/Cargo.toml", ws.join("linked/Cargo.toml")).unwrap();
    std::os::unix::fs::symlink("../py/tox.ini", ws.join("linked/tox.ini")).unwrap();
    small_files(&ws.join("linked/target"), 20, 32 * KIB);
    small_files(&ws.join("linked/.tox"), 10, 32 * KIB);
    small_files(&ws.join("linked/.venv/lib"), 10, 32 * KIB);
    std::os::unix::fs::symlink(
        "../../py/.venv/pyvenv.cfg",
        ws.join("linked/.venv/pyvenv.cfg"),
    )
    .unwrap();
}

/// Today's rules (the old default), with every built-in artifact type turned off.
fn todays_rules() -> String {
    let mut s = String::from(
        "[[rules]]\nname = \"regenerable\"\nphase = 1\n\
         names = [\"node_modules\", \".git\", \"__pycache__\"]\n\n\
         [[rules]]\nname = \"old-logs\"\nphase = 1\nglobs = [\"*.log\"]\nolder_than = \"1h\"\n",
    );
    for name in guardian::config::builtin_names() {
        s.push_str(&format!(
            "\n[[artifacts]]\nname = \"{name}\"\nenabled = false\n"
        ));
    }
    s
}

/// The new default's rules (`.git` only in `regenerable`) and the built-in table, with the Go
/// build cache configured.
fn new_rules() -> String {
    "[[rules]]\nname = \"regenerable\"\nphase = 1\nnames = [\".git\"]\n\
     rebuild = \"30s\"\nrebuild_per_gib = \"2m\"\n\n\
     [[rules]]\nname = \"old-logs\"\nphase = 1\nglobs = [\"*.log\"]\nolder_than = \"1h\"\n\n\
     [[artifacts]]\nname = \"go-build-cache\"\nenabled = true\ndirs = [\".gocache\"]\n"
        .to_string()
}

/// A config for `ws` whose projects all count as active (phase 2 never deletes one: what is
/// freed is phase 1's) and whose target phase 1 cannot reach (every candidate is planned).
fn write_config(path: &Path, ws: &Path, state: &Path, rules: &str) {
    let text = format!(
        "[daemon]\npoll_interval = \"1s\"\naudit_log = \"{state}/audit.jsonl\"\n\
         state_dir = \"{state}/state\"\nactive_within = \"1h\"\n\n\
         [thresholds]\ncleanup_free = \"20%\"\ncritical_free = \"10%\"\ntarget_free = \"70%\"\n\n\
         [[workspaces]]\npath = \"{ws}\"\n\n{rules}",
        state = state.display(),
        ws = ws.display(),
    );
    std::fs::write(path, text).unwrap();
}

/// The phase-1 actions of `guardian plan --json`: path → (rule, bytes, rebuild secs).
fn phase1_plan(config: &Path) -> Vec<(PathBuf, String, u64, Option<u64>)> {
    let out = guardian(&["plan", "--json", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions = plans[0]["plan"]["actions"].as_array().unwrap();
    actions
        .iter()
        .filter(|a| a["phase"] == 1)
        .map(|a| {
            (
                PathBuf::from(a["path"].as_str().unwrap()),
                a["rule"].as_str().unwrap().to_string(),
                a["bytes_estimated"].as_u64().unwrap(),
                a["rebuild"]["secs"].as_u64(),
            )
        })
        .collect()
}

/// Runs one cycle; returns the bytes the phase-1 deletions freed (statvfs, as audited) and the
/// deleted paths by rule.
fn run_once(config: &Path, state: &Path) -> (u64, BTreeMap<PathBuf, String>) {
    let out = guardian(&["run", "--once", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut freed = 0;
    let mut deleted = BTreeMap::new();
    for line in audit_lines(&state.join("audit.jsonl")) {
        if line["action"] != "delete" {
            continue;
        }
        assert_eq!(line["phase"], 1, "only phase 1 may run here: {line}");
        assert_eq!(line["outcome"], "deleted", "{line}");
        freed += line["bytes_freed"].as_u64().unwrap();
        deleted.insert(
            PathBuf::from(line["path"].as_str().unwrap()),
            line["rule"].as_str().unwrap().to_string(),
        );
    }
    (freed, deleted)
}

#[test]
fn phase1_recognises_every_artifact_type_leaves_decoys_and_frees_more_than_todays_rules() {
    if !require_root(
        "phase1_recognises_every_artifact_type_leaves_decoys_and_frees_more_than_todays_rules",
    ) {
        return;
    }
    let mount = TestMount::tmpfs(256 * MIB);
    let ws = mount.path("dispatch");
    build_corpus(&ws);
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 85.0);

    let old_state = mount.path("old-state");
    let old_config = mount.path("old.toml");
    write_config(&old_config, &ws, &old_state, &todays_rules());
    let new_state = mount.path("new-state");
    let new_config = mount.path("new.toml");
    write_config(&new_config, &ws, &new_state, &new_rules());

    // The plans: the new table proves every type, and only those.
    let old_plan = phase1_plan(&old_config);
    let new_plan = phase1_plan(&new_config);
    let planned: BTreeMap<PathBuf, String> = new_plan
        .iter()
        .map(|(p, r, _, _)| (p.clone(), r.clone()))
        .collect();
    let expected: BTreeMap<PathBuf, String> = ARTIFACTS
        .iter()
        .map(|(t, project, dir)| (ws.join(project).join(dir), t.to_string()))
        .collect();
    assert_eq!(planned, expected, "phase 1 of the new table");
    for (path, rule, _, rebuild) in &new_plan {
        assert!(
            rebuild.is_some_and(|s| s > 0),
            "{rule} {}: no estimate",
            path.display()
        );
    }
    let position = |rel: &str| {
        new_plan
            .iter()
            .position(|(p, ..)| p == &ws.join(rel))
            .unwrap()
    };
    assert!(
        position("web/node_modules") < position("rust/target"),
        "a node_modules is cheaper to undo than a target/: {new_plan:?}"
    );
    let old_planned: u64 = old_plan.iter().map(|(_, _, b, _)| b).sum();
    let new_planned: u64 = new_plan.iter().map(|(_, _, b, _)| b).sum();

    // The human plan shows the estimate per action.
    let human = guardian(&["plan", "--config", new_config.to_str().unwrap()]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human
            .lines()
            .any(|l| l.contains("cargo-target") && l.contains("rebuild ~")),
        "{human}"
    );

    // Real deletions, today's rules first on this corpus, then the new table on a fresh one.
    let (old_freed, old_deleted) = run_once(&old_config, &old_state);
    let old_names: Vec<_> = old_deleted
        .keys()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert!(
        old_names
            .iter()
            .all(|n| n == "node_modules" || n == "__pycache__"),
        "{old_deleted:?}"
    );
    std::fs::remove_dir_all(&ws).unwrap();
    std::fs::remove_file(mount.path("filler.bin")).unwrap();
    build_corpus(&ws);
    let decoys_before: Vec<_> = DECOYS.iter().map(|d| digest(&ws.join(d))).collect();
    fill_to_used(&mount.dir, &mount.path("filler.bin"), 85.0);
    let (new_freed, new_deleted) = run_once(&new_config, &new_state);
    assert_eq!(new_deleted, expected, "deleted by the new table");
    for (decoy, before) in DECOYS.iter().zip(&decoys_before) {
        assert_eq!(&digest(&ws.join(decoy)), before, "{decoy} was touched");
    }
    assert!(ws.join("rust/Cargo.toml").exists() && ws.join("py/pkg/mod.py").exists());
    eprintln!(
        "phase 1 before phase 2: today's rules plan {:.1} MiB and free {:.1} MiB; the artifact \
         table plans {:.1} MiB and frees {:.1} MiB ({} types)",
        old_planned as f64 / MIB as f64,
        old_freed as f64 / MIB as f64,
        new_planned as f64 / MIB as f64,
        new_freed as f64 / MIB as f64,
        ARTIFACTS.len()
    );
    assert!(
        new_freed > old_freed && new_planned > old_planned,
        "the table must free more before phase 2: old {old_freed}, new {new_freed}"
    );
}
