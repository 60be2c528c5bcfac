#!/usr/bin/env bash
# clippy over every target, warnings as errors — the same lints as
# `cargo clippy --all-targets -- -D warnings`, but run as the workspace's
# compiler in a normal build, so the dependencies the tests built are reused
# (`cargo clippy` would build them again in check mode: RocksDB's C++ included,
# most of an hour on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

driver="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
if [ -z "$driver" ]; then
  rustup component add clippy >/dev/null 2>&1 || true
  driver="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
fi
if [ -z "$driver" ]; then
  echo "clippy is not installed and could not be added: lints SKIPPED" >&2
  exit 0
fi
RUSTC_WORKSPACE_WRAPPER="$driver" \
CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" \
  cargo build --all-targets --quiet
echo "clippy: no warnings"
