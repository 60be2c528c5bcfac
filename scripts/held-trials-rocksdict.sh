#!/usr/bin/env bash
# Trials of `rockup backup --db` against a database held open and written by a
# Python application using rocksdict (its own RocksDB build; nothing of rockup's),
# N backups (default 20), alternately with and without pre-links, each restored
# by the CLI and checked with rocksdict. Prints how many committed, how many
# restored to one point in time, and external files reported missing per backup.
#   bash scripts/held-trials-rocksdict.sh [N]
# ROCKUP_TRIALS_FLUSH_EVERY=10 makes the writer flush every 10 steps (default 700).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
tools="${ROCKUP_TOOLS_DIR:-$HOME/.cache/rockup-test-tools}/rocksdict-venv"
if [ ! -x "$tools/bin/python" ] || ! "$tools/bin/python" -c 'import rocksdict' 2>/dev/null; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q 'rocksdict>=0.3.29,<0.4'
fi
cargo build
"$tools/bin/python" scripts/held_trials_rocksdict.py "$CARGO_TARGET_DIR/debug/rockup" "${1:-20}"
