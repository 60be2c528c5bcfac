#!/usr/bin/env bash
# The speed benchmark (README: Benchmark): release build, a generated dataset,
# rockup against cp -a + sync, RocksDB BackupEngine + a file copy, rclone and
# the AWS CLI (where installed), locally and against a native S3 server
# (s3s-fs, installed from crates.io) on loopback. Prints a table of ratios;
# asserts nothing. Arguments go to `bench run` (examples/bench/main.rs):
#   bash scripts/bench.sh [--shape many-small|few-large] [--db-mib N] [--files N]
#                         [--file-kib N] [--rounds N] [--only local|s3] [--work DIR]
#                         [--without aws,…]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
TOOLS="${ROCKUP_BENCH_TOOLS:-$HOME/.cache/rockup-tools}"
if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
  # 0.14 is the newest s3s-fs that builds with rustc 1.95.
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$TOOLS" \
    --target-dir "$TOOLS/target"
fi
if ! command -v rclone >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rclone >/dev/null
fi
cargo build --release --bin rockup --example bench
BIN="$CARGO_TARGET_DIR/release"
# Debian's rclone refuses to start with AWS_CA_BUNDLE set (plain HTTP here anyway).
unset AWS_CA_BUNDLE
exec "$BIN/examples/bench" run --rockup "$BIN/rockup" --s3-server "$TOOLS/bin/s3s-fs" "$@"
