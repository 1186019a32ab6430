#!/usr/bin/env bash
# End-to-end fan-out benchmark (issue 4): wshub's chat example against a typical
# tokio-tungstenite + tokio::sync::broadcast relay (examples/baseline_server.rs), both driven
# by examples/loadgen.rs over 127.0.0.1. Every run gets a fresh server process.
#
#   scripts/bench_e2e.sh                 # full pass, REPEAT=3 runs per configuration
#   QUICK=1 scripts/bench_e2e.sh         # small and fast, one run each
#   REPEAT=5 SERVERS=wshub scripts/bench_e2e.sh
#
# Environment:
#   REPEAT=N        runs per configuration (default 3; 1 with QUICK=1); the table shows medians
#   QUICK=1         small configurations
#   SERVERS="..."   which servers (default "wshub baseline"); "before" runs the chat binary
#                   named by BEFORE_CHAT (e.g. built from an older commit), for same-run ratios
#   CONFIGS="..."   override the configurations, one per line:
#                     fanout CLIENTS MESSAGES WINDOW SIZE
#                     idle CLIENTS HOLD_SECS
#   TIMEOUT_SECS=T  loadgen's bound per run (default 120)
#   OUT=DIR         where results go (default target/bench-e2e)
#
# Writes one JSON line per run to $OUT/results.jsonl (the previous file is kept as
# results.jsonl.prev), servers' stderr to $OUT/logs/, then prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then REPEAT=${REPEAT:-1}; else REPEAT=${REPEAT:-3}; fi
SERVERS=${SERVERS:-"wshub baseline"}
TIMEOUT_SECS=${TIMEOUT_SECS:-120}
OUT=${OUT:-target/bench-e2e}

if [ -z "${CONFIGS:-}" ]; then
  if [ "$QUICK" = 1 ]; then
    CONFIGS="fanout 100 2000 200 64
fanout 1000 200 200 64
fanout 5000 60 200 64
fanout 1000 200 200 512
idle 2000 1"
  else
    # About 3-5 million deliveries per fan-out run.
    CONFIGS="fanout 100 50000 200 64
fanout 1000 4000 200 64
fanout 5000 800 200 64
fanout 1000 4000 200 512
idle 10000 2"
  fi
fi

command -v python3 >/dev/null || { echo "bench_e2e.sh needs python3 for the table" >&2; exit 1; }

cargo build --release --example chat --example baseline_server --example loadgen
bin=target/release/examples

# 10 000 idle clients need 10 000+ descriptors in loadgen and in the server (which inherits
# this limit).
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 20000 ]; then want=20000; else want=$hard; fi
ulimit -Sn "$want" 2>/dev/null || true
echo "open files: soft $(ulimit -Sn), hard $hard"

mkdir -p "$OUT/logs"
results="$OUT/results.jsonl"
[ -f "$results" ] && mv "$results" "$results.prev"
: >"$results"

server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    # chat shuts down gracefully (up to 5 s); do not wait longer than that.
    for _ in $(seq 70); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# start_server NAME LOG: starts a fresh server on a free port; sets server_pid and url.
start_server() {
  local name=$1 log=$2 out
  out=$(mktemp)
  case $name in
    wshub) "$bin/chat" --addr 127.0.0.1:0 >"$out" 2>"$log" & ;;
    baseline) "$bin/baseline_server" --addr 127.0.0.1:0 >"$out" 2>"$log" & ;;
    before) "${BEFORE_CHAT:?set BEFORE_CHAT to a chat binary}" --addr 127.0.0.1:0 >"$out" 2>"$log" & ;;
    *) echo "unknown server $name" >&2; exit 2 ;;
  esac
  server_pid=$!
  local hostport=""
  for _ in $(seq 100); do
    # chat: "... http://127.0.0.1:PORT/ ..."; baseline: "... ws://127.0.0.1:PORT/ws"
    hostport=$(grep -oE '(http|ws)://[0-9.]+:[0-9]+' "$out" | head -n1 | sed -E 's#^[a-z]+://##' || true)
    [ -n "$hostport" ] && break
    kill -0 "$server_pid" 2>/dev/null || { echo "$name exited at start:"; cat "$log"; exit 1; }
    sleep 0.1
  done
  rm -f "$out"
  [ -n "$hostport" ] || { echo "$name did not print its address" >&2; exit 1; }
  url="ws://$hostport/ws"
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no -- src Cargo.toml examples 2>/dev/null)" ]; then commit="$commit+dirty"; fi
echo "wshub at $commit"

failures=0
runs=0
while read -r mode clients a b c; do
  [ -z "$mode" ] && continue
  for run in $(seq "$REPEAT"); do
    for server in $SERVERS; do
      runs=$((runs + 1))
      log="$OUT/logs/$server-$mode-$clients-$run.log"
      start_server "$server" "$log"
      case $mode in
        fanout)
          desc="fanout N=$clients M=$a W=$b size=$c"
          args=(--clients "$clients" --messages "$a" --window "$b" --size "$c") ;;
        idle)
          desc="idle N=$clients hold=${a}s"
          args=(--mode idle --clients "$clients" --hold-secs "$a") ;;
        *) echo "bad configuration line: $mode $clients $a $b $c" >&2; exit 2 ;;
      esac
      printf '%-9s %-40s run %s/%s ... ' "$server" "$desc" "$run" "$REPEAT"
      set +e
      line=$("$bin/loadgen" --url "$url" --pid "$server_pid" --label "$server" --json \
        --timeout-secs "$TIMEOUT_SECS" "${args[@]}")
      rc=$?
      set -e
      stop_server
      if [ -z "$line" ]; then
        line="{\"label\":\"$server\",\"mode\":\"$mode\",\"clients\":$clients,\"ok\":false,\"exit\":$rc,\"error\":\"loadgen printed nothing\"}"
      fi
      echo "$line" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read()); r["run"] = int(sys.argv[1]); r["commit"] = sys.argv[2]
print(json.dumps(r))' "$run" "$commit" >>"$results"
      echo "$line" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
def g(k, f="{:.0f}"):
    v = r.get(k)
    return "-" if v is None else f.format(v)
if r.get("mode") == "fanout":
    s = "%s/s p50 %s ms p99 %s ms lost %s ended %s" % (g("deliveries_per_s"), g("lat_p50_ms", "{:.2f}"), g("lat_p99_ms", "{:.2f}"), g("lost"), g("evicted"))
else:
    s = "%s KB/conn, ended %s" % (g("kb_per_conn", "{:.1f}"), g("evicted"))
if not r.get("ok"): s += "  FAILED (exit %s): %s" % (r.get("exit"), r.get("error"))
print(s)'
      [ "$rc" = 0 ] || failures=$((failures + 1))
      sleep 1
    done
  done
done <<<"$CONFIGS"

echo
echo "results: $results ($runs runs, $failures failed); machine: $(nproc) CPUs, Linux $(uname -r)"
echo
python3 - "$results" <<'PY'
import json, sys, statistics
from collections import OrderedDict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = OrderedDict()
for r in rows:
    key = (r.get("mode"), r.get("clients"), r.get("size"), r.get("window"), r.get("messages"))
    groups.setdefault(key, OrderedDict()).setdefault(r.get("label"), []).append(r)

def med(rs, k):
    vals = [r[k] for r in rs if r.get(k) is not None and r.get("ok")]
    return statistics.median(vals) if vals else None

def fmt(v, f="{:.2f}"):
    return "-" if v is None else f.format(v)

print("| server | mode | N | size | window | M | runs ok | deliveries/s | p50 ms | p99 ms | max ms | lost | evicted | server CPU ns/delivery | KB/conn | KB/conn after run | wshub ratios |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for key, by_server in groups.items():
    mode, n, size, window, m = key
    for server, rs in by_server.items():
        ok = sum(1 for r in rs if r.get("ok"))
        lost = sum(r.get("lost") or 0 for r in rs)
        ev = sum(r.get("evicted") or 0 for r in rs)
        maxes = [r["lat_max_ms"] for r in rs if r.get("lat_max_ms") is not None]
        ratios = []
        for other in ("baseline", "before"):
            theirs = by_server.get(other)
            if server != "wshub" or not theirs:
                continue
            if mode == "fanout":
                a, b = med(rs, "deliveries_per_s"), med(theirs, "deliveries_per_s")
                c, d = med(rs, "server_ns_per_delivery"), med(theirs, "server_ns_per_delivery")
                ratios.append("%s vs %s (throughput), %s (CPU/delivery)" % (
                    fmt(a / b if a and b else None), other, fmt(c / d if c and d else None)))
            else:
                a, b = med(rs, "kb_per_conn"), med(theirs, "kb_per_conn")
                ratios.append("%s vs %s (memory)" % (fmt(a / b if a and b else None), other))
        ratio = "; ".join(ratios)
        print("| %s | %s | %s | %s | %s | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            server, mode, n, fmt(size, "{}"), fmt(window, "{}"), fmt(m, "{}"), ok, len(rs),
            fmt(med(rs, "deliveries_per_s"), "{:,.0f}"),
            fmt(med(rs, "lat_p50_ms")), fmt(med(rs, "lat_p99_ms")),
            fmt(max(maxes) if maxes else None),
            lost if mode == "fanout" else "-", ev,
            fmt(med(rs, "server_ns_per_delivery"), "{:,.0f}"),
            fmt(med(rs, "kb_per_conn"), "{:.1f}"),
            fmt(med(rs, "kb_per_conn_after"), "{:.1f}"), ratio))
print()
print("Medians over the runs that succeeded; max ms is the largest over all runs; lost and evicted")
print("are totals over all runs. KB/conn: server VmRSS growth from before connecting to all")
print("connected, divided by the connections (N+1 for fan-out, which includes the publisher);")
print("after run: the same at the end of the fan-out, connections still open. Server CPU is")
print("user+system time of the server process during the fan-out (10 ms resolution). Server and")
print("load generator share this machine's CPUs: deliveries/s is what the pair achieves together.")
PY
[ "$failures" = 0 ]
