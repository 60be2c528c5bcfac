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

if cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt >/dev/null 2>&1; then
  cargo fmt --check
else
  echo "rustfmt is not installed and could not be added: format check SKIPPED" >&2
fi
cargo test
