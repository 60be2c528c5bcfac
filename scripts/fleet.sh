#!/usr/bin/env bash
# The fleet simulation: SOURCES databases with overlapping external files back
# up concurrently into one S3 repository (moto on 127.0.0.1, or the S3 set in
# ROCKUP_TEST_S3 + AWS_*) while prunes run, for ROUNDS rounds; then every kept
# backup of every source is restored and compared with its database at the
# time, verify --deep must be clean, shared files must be stored once, and
# `list` is timed with LIST_BACKUPS backups in the repository.
#   bash scripts/fleet.sh [SOURCES=16] [ROUNDS=4] [FILES=40] [LIST_BACKUPS=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source scripts/emulators.sh
export ROCKUP_TEST_SKIP="${ROCKUP_TEST_SKIP:-azure}"
trap stop_emulators EXIT
start_emulators
export RUST_LOG="${RUST_LOG:-error}"
cargo run --example fleet -- "$ROCKUP_TEST_S3/fleet-$(date +%s)" "$@"
