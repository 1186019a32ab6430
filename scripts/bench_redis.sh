#!/usr/bin/env bash
# Cross-node fan-out through Redis (issue 5): two chat processes sharing rooms through one
# redis-server, loadgen's receivers on node 2 and its publisher on node 1 (every message
# crosses Redis), against local-only delivery on the same pair (publisher on node 2 too).
# Everything on 127.0.0.1; servers and Redis are stopped at the end.
#
#   scripts/bench_redis.sh                 # N=1000, M=4000, W=200, 64 B, REPEAT=3
#   N=100 M=20000 REPEAT=1 scripts/bench_redis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}; M=${M:-4000}; W=${W:-200}; SIZE=${SIZE:-64}; REPEAT=${REPEAT:-3}
OUT=${OUT:-target/bench-redis}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --features redis --example chat --example loadgen
bin=target/release/examples

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done

start_chat() { # start_chat PORT -> pid in $chat_pid
  "$bin/chat" --addr "127.0.0.1:$1" --redis "redis://127.0.0.1:$rport" >"$OUT/chat-$1.log" 2>&1 &
  chat_pid=$!
  pids+=("$chat_pid")
  for _ in $(seq 100); do grep -q "http://" "$OUT/chat-$1.log" 2>/dev/null && return; sleep 0.1; done
  echo "chat on $1 did not start"; exit 1
}

results="$OUT/results.jsonl"
: >"$results"
for run in $(seq "$REPEAT"); do
  p1=$(free_port); start_chat "$p1"
  p2=$(free_port); start_chat "$p2"; pid2=$chat_pid
  sleep 0.5
  for mode in cross local; do
    if [ "$mode" = cross ]; then pub="ws://127.0.0.1:$p1/ws?room=bench"; else pub="ws://127.0.0.1:$p2/ws?room=bench"; fi
    echo "run $run/$REPEAT $mode: N=$N M=$M W=$W size=$SIZE"
    "$bin/loadgen" --url "ws://127.0.0.1:$p2/ws?room=bench" --publish-url "$pub" --pid "$pid2" \
      --clients "$N" --messages "$M" --window "$W" --size "$SIZE" --timeout-secs 120 \
      --json --label "$mode" >>"$results" || echo "  (run failed; see $results)"
  done
  kill "${pids[-1]}" "${pids[-2]}" 2>/dev/null || true
  unset 'pids[-1]'; unset 'pids[-1]'
  sleep 0.5
done

python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
print("| delivery | runs ok | deliveries/s | p50 ms | p99 ms | max ms | lost | evicted |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
med = {}
for label in ("local", "cross"):
    rs = [r for r in runs if r.get("label") == label and r.get("ok")]
    if not rs:
        print(f"| {label} | 0 | - | - | - | - | - | - |"); continue
    m = lambda k: statistics.median(r[k] for r in rs)
    med[label] = m("deliveries_per_s")
    print(f"| {label} | {len(rs)}/{sum(1 for r in runs if r.get('label') == label)} | {m('deliveries_per_s'):,.0f} | "
          f"{m('lat_p50_ms'):.2f} | {m('lat_p99_ms'):.2f} | {max(r['lat_max_ms'] for r in rs):.2f} | "
          f"{sum(r['lost'] for r in rs)} | {sum(r['evicted'] for r in rs)} |")
if "local" in med and "cross" in med:
    print(f"\ncross-node / local-only deliveries/s: {med['cross'] / med['local']:.2f}")
PY
