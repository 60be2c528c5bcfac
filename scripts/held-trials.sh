#!/usr/bin/env bash
# Figures for out-of-process backups of a database another process writes:
# N backups (default 20) of a database a separate writer process holds open and
# writes continuously (atomic batches across three column families, external
# files written before their records and deleted right after their records are),
# each restored and checked to be one point in time. Prints how many committed,
# how many restored to one point in time, checkpoint attempts, and external files
# reported missing per backup with pre-links and without (the baseline), measured
# alternately in the same run.
#   bash scripts/held-trials.sh [N]
# ROCKUP_WRITER_VARIANT=recycle|track-wals|atomic-flush|pipelined|unordered|
#   wal-archive|manual-wal-flush runs the writer with that RocksDB setting.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ROCKUP_TRIALS="${1:-20}" cargo test --test tests held_database_trials -- --ignored --nocapture
