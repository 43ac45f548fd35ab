//! `cargo xtask build-ebpf`: builds Guardian's eBPF probe with the pinned nightly and
//! bpf-linker through `guardian-ebpf/build-probe.sh` (the script guardian-user's build script
//! runs too), then rebuilds guardian-user so the new object is embedded, and checks that the
//! rebuilt `guardian --version` says so. `--check-embedding` replays the documented steps from a
//! build made without bpf-linker, in scratch target directories, and fails unless both the
//! debug and the release binary embed the probe afterwards.

use anyhow::{bail, Context};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Environment for the child commands (scratch target directories, a PATH).
type Env = Vec<(&'static str, OsString)>;

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

pub fn run(workspace: &Path, release: bool) -> anyhow::Result<ExitCode> {
    run_with(workspace, release, &Env::new())
}

fn run_with(workspace: &Path, release: bool, env: &Env) -> anyhow::Result<ExitCode> {
    let script = workspace.join("guardian-ebpf/build-probe.sh");
    let out = Command::new("bash")
        .arg(&script)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "building the probe failed ({}); needs the nightly pinned in guardian-ebpf/rust-toolchain.toml \
             with rust-src, and bpf-linker 0.13 built against LLVM 22 (see .ci/run)",
            out.status
        );
    }
    let object = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("probe object: {object}");
    build_guardian(workspace, release, env)?;
    let version = guardian_version(workspace, release, env)?;
    if !version.contains("eBPF probe: embedded") {
        bail!("the rebuilt guardian does not embed the probe: {version}");
    }
    println!("guardian-user rebuilt with the probe embedded: {version}");
    Ok(ExitCode::SUCCESS)
}

fn build_guardian(workspace: &Path, release: bool, env: &Env) -> anyhow::Result<()> {
    let mut cargo = Command::new(cargo());
    cargo
        .current_dir(workspace)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["build", "-p", "guardian-user", "--bin", "guardian"]);
    if release {
        cargo.arg("--release");
    }
    let status = cargo
        .status()
        .context("running cargo build -p guardian-user")?;
    if !status.success() {
        bail!("cargo build -p guardian-user failed ({status})");
    }
    Ok(())
}

/// The target directory cargo uses under `env`.
fn target_dir(workspace: &Path, env: &Env) -> PathBuf {
    env.iter()
        .find(|(k, _)| *k == "CARGO_TARGET_DIR")
        .map(|(_, v)| PathBuf::from(v))
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| workspace.join("target"))
}

/// `guardian --version` of the binary built under `env`.
fn guardian_version(workspace: &Path, release: bool, env: &Env) -> anyhow::Result<String> {
    let bin = target_dir(workspace, env)
        .join(if release { "release" } else { "debug" })
        .join("guardian");
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A PATH without bpf-linker: the directory of the toolchain's own cargo and rustc, then the
/// system directories.
fn path_without_bpf_linker() -> anyhow::Result<OsString> {
    let cargo = PathBuf::from(cargo());
    let toolchain_bin = cargo
        .parent()
        .filter(|d| d.join("rustc").is_file())
        .context("cannot find the toolchain's bin directory from $CARGO")?;
    let dirs = [
        toolchain_bin.to_path_buf(),
        PathBuf::from("/usr/local/bin"),
        PathBuf::from("/usr/bin"),
        PathBuf::from("/bin"),
    ];
    for dir in &dirs {
        if dir.join("bpf-linker").exists() {
            bail!(
                "bpf-linker is in {}: cannot build without it here",
                dir.display()
            );
        }
    }
    std::env::join_paths(dirs).context("joining PATH")
}

/// Replays the documented steps in scratch target directories: a release build made while
/// bpf-linker is not on PATH (it says the probe is not embedded), then `cargo xtask build-ebpf`,
/// then `cargo build --release`: both binaries must embed the probe, with no file touched.
pub fn check_embedding(workspace: &Path) -> anyhow::Result<ExitCode> {
    let scratch = workspace.join("target/probe-embedding-check");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("removing {}", scratch.display()))?;
    }
    let env: Env = vec![
        ("CARGO_TARGET_DIR", scratch.join("guardian").into()),
        ("GUARDIAN_EBPF_TARGET_DIR", scratch.join("ebpf").into()),
    ];
    let mut without = env.clone();
    without.push(("PATH", path_without_bpf_linker()?));
    println!("1/3 cargo build --release without bpf-linker on PATH");
    build_guardian(workspace, true, &without)?;
    let before = guardian_version(workspace, true, &env)?;
    println!("    {before}");
    if !before.contains("not embedded") {
        bail!("the build without bpf-linker claims a probe: {before}");
    }
    println!("2/3 cargo xtask build-ebpf");
    run_with(workspace, false, &env)?;
    println!("3/3 cargo build --release");
    build_guardian(workspace, true, &env)?;
    let after = guardian_version(workspace, true, &env)?;
    println!("    {after}");
    if !after.contains("eBPF probe: embedded") {
        bail!(
            "after `cargo xtask build-ebpf`, `cargo build --release` still has no probe: {after}"
        );
    }
    println!("ok: the release binary embeds the probe after the documented steps");
    Ok(ExitCode::SUCCESS)
}
