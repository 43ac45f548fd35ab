//! Embeds Guardian's eBPF probe: on Linux targets, builds it with `guardian-ebpf/build-probe.sh`
//! (the same script `cargo xtask build-ebpf` runs) and copies the object into OUT_DIR. When the
//! probe cannot be built here (no pinned nightly, no bpf-linker), the build goes on with an empty
//! object and says so; the eBPF source then reports itself unavailable and Guardian falls back.
//!
//! Cargo re-runs this script when the probe's sources change, when the probe object the script
//! produces changes (so a probe built by `cargo xtask build-ebpf` is picked up by the next
//! `cargo build`, release or not), and when bpf-linker appears or changes. A file named in
//! `rerun-if-changed` that does not exist makes cargo re-run the script on every build: while
//! the probe cannot be built, every build tries again (the script fails fast without bpf-linker).
//! `guardian --version` says whether the probe is embedded (`GUARDIAN_PROBE_STATUS`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where build-probe.sh puts the object, relative to the eBPF crate's target directory.
const OBJECT: &str = "bpfel-unknown-none/release/guardian-probe";

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("guardian-probe.o");
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest.join("../guardian-ebpf");
    println!("cargo:rerun-if-env-changed=GUARDIAN_PROBE_OBJ");
    println!("cargo:rerun-if-env-changed=GUARDIAN_EBPF_TARGET_DIR");
    for watched in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
        "build-probe.sh",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            ebpf_dir.join(watched).display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../guardian-common/src").display()
    );
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        std::fs::write(&out, b"").expect("write empty probe placeholder");
        println!("cargo:rustc-env=GUARDIAN_PROBE_STATUS=not embedded (not a Linux target)");
        return;
    }
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_target_dir(&ebpf_dir).join(OBJECT).display()
    );
    println!("cargo:rerun-if-changed={}", bpf_linker().display());
    match probe_object(&ebpf_dir) {
        Ok(object) => {
            std::fs::copy(&object, &out).expect("copy the probe object into OUT_DIR");
            let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            println!("cargo:rustc-env=GUARDIAN_PROBE_STATUS=embedded ({bytes} bytes)");
        }
        Err(why) => {
            println!("cargo:warning=eBPF probe not built ({why}); the ebpf source will be unavailable. Run `cargo xtask build-ebpf` to see the full error.");
            std::fs::write(&out, b"").expect("write empty probe placeholder");
            let why = why.replace(['\n', '\r'], " ");
            println!("cargo:rustc-env=GUARDIAN_PROBE_STATUS=not embedded: {why}");
        }
    }
}

/// The eBPF crate's target directory, as build-probe.sh chooses it.
fn ebpf_target_dir(ebpf_dir: &Path) -> PathBuf {
    match std::env::var_os("GUARDIAN_EBPF_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => ebpf_dir.join("target"),
    }
}

/// bpf-linker as build-probe.sh finds it (first on PATH); where `cargo install` puts it when it
/// is nowhere yet.
fn bpf_linker() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bpf-linker"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .unwrap_or_else(|| PathBuf::from("/nonexistent"));
        home.join("bin/bpf-linker")
    })
}

/// The probe object: `GUARDIAN_PROBE_OBJ` if set, else freshly built by the shared script.
fn probe_object(ebpf_dir: &Path) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GUARDIAN_PROBE_OBJ") {
        return Ok(PathBuf::from(path));
    }
    let output = Command::new("bash")
        .arg(ebpf_dir.join("build-probe.sh"))
        .output()
        .map_err(|e| format!("cannot run build-probe.sh: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        return Err(format!("build-probe.sh failed: {last}"));
    }
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    Ok(PathBuf::from(path))
}
