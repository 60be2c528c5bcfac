#!/usr/bin/env bash
# Installs what building rockup needs on a fresh Debian machine (as root, or with
# sudo): libclang for the rocksdb crate's bindgen, a C/C++ toolchain for RocksDB
# and aws-lc. Sourced by demo.sh and test.sh; safe to run again.
set -euo pipefail

need=()
for pkg in libclang-dev clang build-essential pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "rockup setup: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Keep cargo's build output outside the clone so RocksDB's C++ build (minutes)
# is reused across checkouts.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rockup-target}"
