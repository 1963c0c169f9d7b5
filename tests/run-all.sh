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
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace --release

step "build ulpddp (release) for the interop tests"
cargo build --release -p ulpddp

for t in tests/interop/*-*.sh; do
    [ -e "$t" ] || continue
    step "interop: $t"
    bash "$t"
done

step "all tests passed"
