#!/usr/bin/env bash
# Runs every test of ulp-ddp: formatting, lints, unit/property/integration tests, and the
# interop tests against the Linux kernel host and target in qemu (tests/interop/*.sh).
# Prerequisites are installed by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n=== %s (%(%H:%M:%S)T)\n' "$*" -1; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (profile ci: optimised, no LTO)"
cargo test --workspace --profile ci --all-features

# `cargo test` built the binary for the integration tests already (same profile).
export ULPDDP="${CARGO_TARGET_DIR:-$PWD/target}/ci/ulpddp"
if [ ! -x "$ULPDDP" ]; then
    step "build ulpddp for the interop tests"
    cargo build --profile ci -p ulpddp --all-features
fi

for t in tests/interop/*-*.sh; do
    [ -e "$t" ] || continue
    step "interop: $t"
    bash "$t"
done

step "all tests passed"
