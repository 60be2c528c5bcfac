#!/usr/bin/env bash
# The first command: build rockup and run `rockup demo` — back up a sample
# database with external files to a local repository, verify, restore, compare.
#   bash scripts/demo.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --bin rockup
exec "$CARGO_TARGET_DIR/debug/rockup" demo "$@"
