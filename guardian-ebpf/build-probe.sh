#!/usr/bin/env bash
# Builds Guardian's eBPF probe with the pinned nightly (guardian-ebpf/rust-toolchain.toml) and
# bpf-linker, and prints the path of the object on stdout. Used by `cargo xtask build-ebpf` and by
# guardian-user's build script, so both build it the same way.
set -euo pipefail
cd "$(dirname "$0")"
# An outer cargo (build script) exports variables that would redirect or break this build.
for var in $(env | sed -n 's/^\(CARGO_[A-Z0-9_]*\)=.*/\1/p'); do
  case "$var" in CARGO_HOME) ;; *) unset "$var" ;; esac
done
unset RUSTC RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER RUSTDOC RUSTFLAGS RUSTUP_TOOLCHAIN
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
command -v bpf-linker >/dev/null || { echo "bpf-linker not found: run .ci/run or see README (Building the probe)" >&2; exit 3; }
cargo "+$toolchain" build --release --locked >&2
echo "$PWD/target/bpfel-unknown-none/release/guardian-probe"
