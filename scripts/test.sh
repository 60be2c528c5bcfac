#!/usr/bin/env bash
# The second command: install what the build and the tests need, start the
# object-store emulators on 127.0.0.1, run the whole suite (formatting, unit,
# integration and doc tests, the conformance suite against every backend), and
# stop the emulators, also when tests fail.
#   bash scripts/test.sh
#
# Already-running stores are used instead of emulators when their URLs are set,
# e.g. MinIO from `docker compose up -d` (see README, "Running the tests"):
#   ROCKUP_TEST_S3=s3://rockup AWS_ENDPOINT=http://127.0.0.1:9000 ... bash scripts/test.sh
# ROCKUP_TEST_SKIP=s3,azure skips backends explicitly; ROCKUP_TEST_GCS=gs://… runs
# the GCS conformance test against a real bucket.
#
# Lints run too (scripts/lint.sh: clippy as the workspace's compiler over the
# dependencies the tests build, warnings as errors).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source scripts/emulators.sh

if cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt >/dev/null 2>&1; then
  cargo fmt --check
else
  echo "rustfmt is not installed and could not be added: format check SKIPPED" >&2
fi

bash scripts/lint.sh

# The clock-skew tests run the binary under libfaketime.
if ! command -v faketime >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq faketime >/dev/null
fi

trap stop_emulators EXIT
start_emulators
if [ -n "${ROCKUP_TEST_GCS:-}" ]; then
  cargo test --test tests -- --ignored --exact suite::conformance::gcs
fi
cargo test
