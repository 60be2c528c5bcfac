#!/usr/bin/env bash
# The scale run (README: Benchmark): rockup alone on many tiny external files
# (default 1,000,000 of ~1 KiB beside a 64 MiB database) to a local repository:
# time, peak RSS and requests of the first backup, the unchanged backup, the
# restore, the restore of one file (--include), a verify and a prune. Asserts
# nothing; prints figures.
#   bash scripts/scale.sh [FILES] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
FILES=${1:-1000000}
WORK=${2:-/var/tmp/rockup-scale}
cargo build --release --bin rockup --example bench
BIN="$CARGO_TARGET_DIR/release"
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
RESOLVER=(--blob-cf files --blob-ref json:/path --blob-key-prefix file: --blob-sha256 json:/sha256)

# Runs one step with GNU time; prints seconds, peak RSS and rockup's request line.
step() {
  local name=$1
  shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" 2>"$WORK/stderr" >/dev/null
  read -r secs rss <"$WORK/time"
  printf '%-22s %8.1f s  %6d MiB peak RSS  %s\n' "$name" "$secs" $((rss / 1024)) \
    "$(grep -o 'requests: .*' "$WORK/stderr" || true)"
}

step "generate" "$BIN/examples/bench" generate "$WORK/src" --db-mib 64 --files "$FILES" --file-kib 1
echo "dataset: $(du -sh "$WORK/src/files" | cut -f1) in $FILES files (+ $(du -sh "$WORK/src/db" | cut -f1) database)"
backup=("$BIN/rockup" backup --repo "$WORK/repo" --db "$WORK/src/db" --blob-root "$WORK/src/files" "${RESOLVER[@]}")
step "backup (first)" "${backup[@]}"
sync
step "backup (unchanged)" "${backup[@]}"
echo "repository: $(find "$WORK/repo" -type f | wc -l) objects, $(du -sh "$WORK/repo" | cut -f1)"
step "verify" "$BIN/rockup" verify --repo "$WORK/repo"
step "restore" "$BIN/rockup" restore --repo "$WORK/repo" --db-dir "$WORK/out/db" --blob-root "$WORK/out/files"
step "restore one file" "$BIN/rockup" restore --repo "$WORK/repo" --no-db --blob-root "$WORK/one" --include 007/7.bin
cmp "$WORK/src/files/007/7.bin" "$WORK/one/007/7.bin"
step "prune --keep-last 1" "$BIN/rockup" prune --repo "$WORK/repo" --keep-last 1 --grace 0s
