#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, then every test of every crate.
# Needs only the Rust toolchain (cargo, rustfmt, clippy). One build serves clippy-free
# compilation, the test binaries and the integration tests' `beamq` binary.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== docs/CONFORMANCE.md up to date, every test it names exists"
python3 scripts/conformance.py --check

echo "== cargo build (tests)"
cargo build --workspace --tests

echo "== cargo test"
cargo test --workspace
