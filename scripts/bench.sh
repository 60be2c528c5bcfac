#!/usr/bin/env bash
# Backup and restore speed and memory on a sample database with external files,
# as ratios against a baseline measured in the same run (cp -a + sync of the same
# data to the same disk). Prints figures; asserts nothing.
#   bash scripts/bench.sh [DB_MIB] [FILES] [FILE_KIB]     (default 1024 2000 64)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
DB_MIB=${1:-1024}; FILES=${2:-2000}; FILE_KIB=${3:-64}
cargo build --bin rockup --example make_sample 2>/dev/null
BIN="$CARGO_TARGET_DIR/debug"
WORK=$(mktemp -d /var/tmp/rockup-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$BIN/examples/make_sample" "$WORK/src" "$DB_MIB" "$FILES" "$FILE_KIB" >/dev/null

python3 - "$BIN/rockup" "$WORK" <<'PY'
import json, os, resource, subprocess, sys, time
rockup, work = sys.argv[1], sys.argv[2]
src = f"{work}/src"

def run(args, **kw):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.monotonic()
    out = subprocess.run(args, check=True, capture_output=True, text=True, **kw)
    elapsed = time.monotonic() - start
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, max over children so far
    return elapsed, rss, out.stdout

def size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)

total = size(src)
mib = total / 2**20
base, _, _ = run(["sh", "-c", f"cp -a {src} {work}/copy && sync"])
blob = ["--blob-root", f"{src}/files", "--blob-cf", "files", "--blob-ref", "json:/path",
        "--blob-key-prefix", "file:", "--blob-sha256", "json:/sha256"]
repo = f"{work}/repo"
b1, rss1, out1 = run([rockup, "backup", "--repo", repo, "--db", f"{src}/db", "--json", *blob])
subprocess.run(["sync"], check=True)
b2, _, out2 = run([rockup, "backup", "--repo", repo, "--db", f"{src}/db", "--json", *blob])
r, rss2, _ = run([rockup, "restore", "--repo", repo, "--db-dir", f"{work}/r/db", "--blob-root", f"{work}/r/files", "--json"])
subprocess.run(["sync"], check=True)
h1, h2 = json.loads(out1)["header"]["stats"], json.loads(out2)["header"]["stats"]
print(f"data: {mib:.0f} MiB ({h1['db_files']} DB files, {h1['external_files']} external files)")
print(f"baseline cp -a + sync:     {base:6.2f} s  {mib/base:7.1f} MiB/s")
print(f"backup (first):            {b1:6.2f} s  {mib/b1:7.1f} MiB/s  = {base/b1:.2f}x baseline speed")
print(f"backup (second, unchanged):{b2:6.2f} s  uploaded {h2['uploaded_objects']} objects, {h2['uploaded_bytes']} bytes")
print(f"restore (verified):        {r:6.2f} s  {mib/r:7.1f} MiB/s  = {base/r:.2f}x baseline speed")
print(f"peak RSS of any rockup run: {max(rss1, rss2)/1024:.0f} MiB")
PY
