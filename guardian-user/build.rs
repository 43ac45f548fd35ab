//! Embeds Guardian's eBPF probe: on Linux targets, builds it with `guardian-ebpf/build-probe.sh`
//! (the same script `cargo xtask build-ebpf` runs) and copies the object into OUT_DIR. When the
//! probe cannot be built here (no pinned nightly, no bpf-linker), the build goes on with an empty
//! object and says so; the eBPF source then reports itself unavailable and Guardian falls back.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("guardian-probe.o");
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest.join("../guardian-ebpf");
    println!("cargo:rerun-if-env-changed=GUARDIAN_PROBE_OBJ");
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
        return;
    }
    match probe_object(&ebpf_dir) {
        Ok(object) => {
            std::fs::copy(&object, &out).expect("copy the probe object into OUT_DIR");
        }
        Err(why) => {
            println!("cargo:warning=eBPF probe not built ({why}); the ebpf source will be unavailable. Run `cargo xtask build-ebpf` to see the full error.");
            std::fs::write(&out, b"").expect("write empty probe placeholder");
        }
    }
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
