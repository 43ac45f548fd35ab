#!/usr/bin/env bash
# Builds Guardian's eBPF probe with the pinned nightly (guardian-ebpf/rust-toolchain.toml) and
# bpf-linker, and prints the path of the object on stdout. Used by `cargo xtask build-ebpf` and by
# guardian-user's build script, so both build it the same way. The object goes to
# $GUARDIAN_EBPF_TARGET_DIR (default: guardian-ebpf/target)/bpfel-unknown-none/release/; the build
# script watches that path.
set -euo pipefail
cd "$(dirname "$0")"
# An outer cargo (build script) exports variables that would redirect or break this build.
for var in $(env | sed -n 's/^\(CARGO_[A-Z0-9_]*\)=.*/\1/p'); do
  case "$var" in CARGO_HOME) ;; *) unset "$var" ;; esac
done
unset RUSTC RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER RUSTDOC RUSTFLAGS RUSTUP_TOOLCHAIN
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
target_dir="${GUARDIAN_EBPF_TARGET_DIR:-$PWD/target}"
command -v bpf-linker >/dev/null || { echo "bpf-linker not found: run .ci/run or see README (Building the probe)" >&2; exit 3; }
cargo "+$toolchain" build --release --locked --target-dir "$target_dir" >&2
echo "$target_dir/bpfel-unknown-none/release/guardian-probe"
