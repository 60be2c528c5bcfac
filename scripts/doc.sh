#!/usr/bin/env bash
# The library's API documentation, without `cargo doc`: cargo doc builds the
# dependencies in check mode, which compiles RocksDB's C++ a second time (most
# of an hour on two cores). This runs rustdoc with the exact flags and
# dependencies of the normal build instead.
#   bash scripts/doc.sh [OUT_DIR]     (default: $CARGO_TARGET_DIR/doc)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
out="${1:-$CARGO_TARGET_DIR/doc}"
touch src/lib.rs
cmd="$(cargo build -v --lib 2>&1 | grep -o 'Running `[^`]*--crate-name rockup [^`]*src/lib.rs[^`]*`' | head -1)"
cmd="${cmd#Running \`}"
cmd="${cmd%\`}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
python3 - "$out" "$cmd" "$version" <<'PY'
import os, shlex, subprocess, sys
out, cmd, version = sys.argv[1], sys.argv[2], sys.argv[3]
parts = shlex.split(cmd)
start = next(i for i, p in enumerate(parts) if p.endswith(("rustc", "clippy-driver")))
args, keep, i = parts[start + 1:], [], 0
while i < len(args):
    a = args[i]
    if a in ("--crate-type", "--emit", "-C", "--out-dir"):
        i += 2
        continue
    if not a.startswith(("--error-format", "--json", "--emit", "--diagnostic-width", "-C")):
        keep.append(a)
    i += 1
env = dict(os.environ, CARGO_PKG_VERSION=version, CARGO_PKG_NAME="rockup", CARGO_MANIFEST_DIR=os.getcwd())
done = subprocess.run(["rustdoc", *keep, "-D", "warnings", "-o", out], env=env)
sys.exit(done.returncode)
PY
echo "documentation: $out/rockup/index.html"
