//! `cargo xtask build-ebpf`: builds Guardian's eBPF probe with the pinned nightly and
//! bpf-linker through `guardian-ebpf/build-probe.sh` (the script guardian-user's build script
//! runs too), then rebuilds guardian-user so the new object is embedded.

use anyhow::{bail, Context};
use std::path::Path;
use std::process::{Command, ExitCode};

pub fn run(workspace: &Path, release: bool) -> anyhow::Result<ExitCode> {
    let script = workspace.join("guardian-ebpf/build-probe.sh");
    let out = Command::new("bash")
        .arg(&script)
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
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(workspace)
        .args(["build", "-p", "guardian-user"]);
    if release {
        cargo.arg("--release");
    }
    let status = cargo
        .status()
        .context("running cargo build -p guardian-user")?;
    if !status.success() {
        bail!("cargo build -p guardian-user failed ({status})");
    }
    println!("guardian-user rebuilt with the probe embedded");
    Ok(ExitCode::SUCCESS)
}
