#!/usr/bin/env bash
# The whole suite on a fresh machine: set-up, release build of every binary, then every test
# of the workspace (unit tests and the end-to-end tests in tests/, which start the release
# edge binary and drive Chromium and aiortc against it). Exits non-zero on any failure.
#
# Logs of every process the e2e tests start: target/test-logs/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh

echo "[test] cargo fmt --check"
cargo fmt --all --check

echo "[test] cargo build --release --workspace --bins"
cargo build --release --workspace --bins

echo "[test] cargo test --release --workspace"
# The e2e test binaries serialize their own heavy tests (one edge at a time); cargo runs the
# test binaries one after another. --no-fail-fast: one failing suite must not hide the others.
status=0
cargo test --release --workspace --no-fail-fast "$@" || status=$?

echo "[test] cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --release --workspace --all-targets -- -D warnings || status=$?
exit "$status"
