#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, the conformance map, every test of every crate,
# then interoperability with the mosquitto clients and paho-mqtt (installed by scripts/interop.sh
# from Debian and PyPI if missing). Needs the Rust toolchain and python3. One build serves the
# test binaries, the integration tests' `beamq` binary and the interoperability run.
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

echo "== interoperability: mosquitto clients and paho-mqtt against the binary"
scripts/interop.sh
