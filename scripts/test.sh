#!/usr/bin/env bash
# The second command: install what the build and the tests need, then run the
# whole suite (formatting, unit, integration and doc tests).
#   bash scripts/test.sh
#
# Lints are a developer step, not part of this script: `cargo clippy` builds
# dependencies in check mode, which compiles RocksDB's C++ a second time (most of
# an hour on two cores). Run `cargo clippy --all-targets -- -D warnings` yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

rustup component add rustfmt >/dev/null 2>&1 || true
cargo fmt --check
cargo test
