#!/usr/bin/env bash
# Figures for `rockup follow` (release build): for each interval (1 s, 10 s)
# and load (idle; the held tests' writer paced at 1,000 and at 10,000 batches a
# second — the line says the rate it reached —, each batch a record referencing a new file and the deletion
# of an old one), follow runs for SECONDS (default 60) beside the writer and
# prints its CPU time, peak RSS, lag, the requests it made (from its own traffic
# counters) and those per hour, and what they cost at public S3 prices
# (PUT $0.005 and GET $0.0004 per 1,000, LIST as PUT). Then follow runs
# RESTORE_SECONDS (default SECONDS; 3600 for "an hour after the base") at 1 s
# and 1,000 batches a second, and its repository is restored to its latest
# point (base + merged segments) and to its base alone, timed, with requests.
#   bash scripts/follow-bench.sh [SECONDS] [RESTORE_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
seconds="${1:-60}"
restore_seconds="${2:-$seconds}"
profile="${ROCKUP_BENCH_PROFILE:-release}" # debug: request counts only, quicker to build
cargo build --profile "$( [ "$profile" = debug ] && echo dev || echo release)" --bin rockup
tests=$(cargo test --test tests --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*tests-[^"]*\)".*/\1/p' | head -1)
rockup="$CARGO_TARGET_DIR/$profile/rockup"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

run() { # interval rate(batches/s; 0: idle) [seconds]
  local interval=$1 rate=$2 seconds=${3:-$seconds} dir="$work/$1-$2-${3:-$seconds}"
  mkdir -p "$dir/files"
  local writer_rate=$rate seconds_writing=$((seconds + 30))
  [ "$rate" = 0 ] && seconds_writing=0 # writes its first 2,000 steps, then stops
  ROCKUP_WRITER_DB="$dir/db" ROCKUP_WRITER_FILES="$dir/files" ROCKUP_WRITER_VARIANT=safepoint \
    ROCKUP_WRITER_RATE="$writer_rate" ROCKUP_WRITER_SECONDS="$seconds_writing" \
    "$tests" --exact suite::held::writer_process --ignored >/dev/null 2>&1 &
  local writer=$!
  until [ -e "$dir/db.ready" ]; do sleep 0.1; done
  /usr/bin/time -f "%e %U %S %M" -o "$dir/time" "$rockup" follow --repo "$dir/repo" --db "$dir/db" \
    --blob-root "$dir/files" --blob-cf files --blob-ref json:/path --blob-key-prefix file: \
    --allow-missing-blobs --interval "$interval" --safepoint-file "$dir/db.safepoint" \
    --work-dir "$dir/work" --json >"$dir/status" 2>"$dir/log" &
  local follow=$!
  sleep "$seconds"
  kill -TERM "$(pgrep -P $follow rockup || echo $follow)" 2>/dev/null || kill -TERM $follow
  wait $follow || true
  kill $writer 2>/dev/null || true; wait $writer 2>/dev/null || true
  python3 - "$dir" "$interval" "$rate" "$seconds" <<'PY'
import json, sys
d, interval, rate, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
from datetime import datetime
lines = [json.loads(l) for l in open(f"{d}/status") if l.strip()]
first, last = lines[0], lines[-1]  # the first line follows the base backup
wall, user, system, rss_kib = open(f"{d}/time").read().split()
at = lambda l: datetime.fromisoformat(l["shipped_at"].replace("Z", "+00:00")).timestamp()
span = max(at(last) - at(first), 1.0)
# Steady state: the requests between the first and the last status line.
t = {k: last["traffic"][k] - first["traffic"][k] for k in ("put", "get", "head", "list")}
per_hour = lambda n: n * 3600 / span
cost = (per_hour(t["put"] + t["list"]) * 0.005 + per_hour(t["get"] + t["head"]) * 0.0004) / 1000
batches = (last["shipped_sequence"] - first["shipped_sequence"]) / (4 * span)
lag = max(l["lag_seconds"] for l in lines)
print(f"interval {interval:>4} load {rate:>5} ({batches:,.0f} batches/s): CPU {float(user)+float(system):.1f} s of {wall} s, "
      f"peak RSS {int(rss_kib)//1024} MiB, max lag {lag:.1f} s; requests PUT {t['put']} GET {t['get']} HEAD {t['head']} LIST {t['list']} "
      f"over {span:.0f} s = {per_hour(t['put']):,.0f} PUT/h, {per_hour(t['get']+t['head']+t['list']):,.0f} other/h, ${cost:.3f}/h (${cost*24*30:.2f}/month); "
      f"{last['segments']} segments, {last['files']} files, {last['problems']} problems")
PY
}

for interval in 1s 10s; do
  for rate in 0 1000 10000; do run "$interval" "$rate"; done
done

run 1s 1000 "$restore_seconds"
last="$work/1s-1000-$restore_seconds"
restore() { # label, flags…
  local label=$1; shift
  rm -rf "$work/r"
  local start=$(date +%s.%N)
  "$rockup" restore --repo "$last/repo" --db-dir "$work/r/db" --blob-root "$work/r/files" "$@" 2>"$work/restore.log"
  echo "restore $label, ${restore_seconds} s after the base: $(echo "$(date +%s.%N) - $start" | bc) s;$(grep -o 'requests:.*' "$work/restore.log")"
}
echo "segments by level: $(find "$last/repo/segments" -type f | awk -F/ '{print "L" $(NF-1)}' | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
restore "to the latest point (base + segments)" --to-latest
restore "of the base alone" --backup latest
