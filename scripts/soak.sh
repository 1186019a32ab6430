#!/usr/bin/env bash
# Soak benchmark (not a test; CI does not run it): the chat example (release) on a free port on
# 127.0.0.1 under connection churn plus fan-out traffic for SOAK_SECS, sampling the server
# process every few seconds: resident memory, threads, open descriptors and open connections.
# Ends with a summary: memory after the warm-up against memory at the end, and what is left
# once the load has stopped. Stops by itself and cleans up every process it started.
#
#   scripts/soak.sh                     # 60 s
#   SOAK_SECS=600 scripts/soak.sh       # ten minutes
#
# Environment:
#   SOAK_SECS=N         how long the load runs (default 60)
#   WARMUP_SECS=N       the memory baseline is taken this long into the load (default SOAK_SECS/6,
#                       at least 5)
#   INTERVAL=N          seconds between samples (default 5)
#   CHURN_WORKERS=N     concurrent churn clients (default 20), in room "churn": each connects,
#                       sends, waits for its echo, then closes politely, drops the TCP stream,
#                       or resets it mid-frame, in turn (examples/loadgen.rs --mode churn)
#   FANOUT_CLIENTS=N    receivers per fan-out run (default 200), in the default room; runs
#   FANOUT_MESSAGES=N   of N messages (default 2000) follow each other until the end, so the
#   FANOUT_SIZE=B       receivers connect and disconnect once per run (size default 64)
#   OUT=DIR             logs and per-run JSON (default target/soak)
#
# "conns" is the number of established TCP connections to the server's port (server side, from
# /proc/net/tcp), the closest outside view of Server::connection_count.
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECS=${SOAK_SECS:-60}
WARMUP_SECS=${WARMUP_SECS:-$((SOAK_SECS / 6 > 5 ? SOAK_SECS / 6 : 5))}
INTERVAL=${INTERVAL:-5}
CHURN_WORKERS=${CHURN_WORKERS:-20}
FANOUT_CLIENTS=${FANOUT_CLIENTS:-200}
FANOUT_MESSAGES=${FANOUT_MESSAGES:-2000}
FANOUT_SIZE=${FANOUT_SIZE:-64}
OUT=${OUT:-target/soak}

if [ "$WARMUP_SECS" -ge "$SOAK_SECS" ]; then
  echo "WARMUP_SECS ($WARMUP_SECS) must be less than SOAK_SECS ($SOAK_SECS)" >&2
  exit 2
fi

cargo build --release --example chat --example loadgen
bin=target/release/examples

hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 20000 ]; then want=20000; else want=$hard; fi
ulimit -Sn "$want" 2>/dev/null || true

mkdir -p "$OUT"
rm -f "$OUT"/fanout.jsonl "$OUT"/churn.json "$OUT"/samples.tsv
server_pid=""
churn_pid=""
fanout_pid=""

# stop PID: SIGTERM, up to 7 s for a graceful exit (chat's shutdown grace is 5 s), then SIGKILL.
stop() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 70); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  # The fan-out loop first (it would start another run), then the load, then the server.
  stop "$fanout_pid"
  stop "$churn_pid"
  stop "$server_pid"
  fanout_pid="" churn_pid="" server_pid=""
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

out=$(mktemp)
"$bin/chat" --addr 127.0.0.1:0 >"$out" 2>"$OUT/server.log" &
server_pid=$!
hostport=""
for _ in $(seq 100); do
  hostport=$(grep -oE 'http://[0-9.]+:[0-9]+' "$out" | head -n1 | sed 's#^http://##' || true)
  [ -n "$hostport" ] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "chat exited at start:"; cat "$OUT/server.log"; exit 1; }
  sleep 0.1
done
rm -f "$out"
[ -n "$hostport" ] || { echo "chat did not print its address" >&2; exit 1; }
port=${hostport##*:}
url="ws://$hostport/ws"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo 0; }
threads() { awk '/^Threads:/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo 0; }
fds() { find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# Established (state 01) TCP sockets whose local port is the server's.
conns() {
  local hex
  hex=$(printf '%04X' "$port")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v p=":$hex" '$4 == "01" && substr($2, length($2) - 4) == p { n++ } END { print n + 0 }'
}

echo "chat (pid $server_pid) at $url; soak ${SOAK_SECS}s (warm-up ${WARMUP_SECS}s), $(nproc) CPUs"
idle_rss=$(rss_kb) idle_threads=$(threads) idle_fds=$(fds)
echo "idle: RSS ${idle_rss} KiB, threads ${idle_threads}, fds ${idle_fds}"

start=$(date +%s)
end_at=$((start + SOAK_SECS))

# Churn, in a room of its own so the fan-out receivers see only the fan-out. It runs a little
# past the end so the last sample is taken under load.
"$bin/loadgen" --url "$url?room=churn" --mode churn --clients "$CHURN_WORKERS" \
  --duration-secs $((SOAK_SECS + 3)) --timeout-secs $((SOAK_SECS + 40)) --json \
  >"$OUT/churn.json" 2>"$OUT/churn.log" &
churn_pid=$!

# Fan-out runs back to back until the end (the last one may end a little later).
# loadgen runs in the background of this subshell so that a TERM is handled at once (bash
# defers traps while a foreground child runs) and the run in progress is stopped with it.
(
  run=""
  trap '[ -z "$run" ] || kill "$run" 2>/dev/null; exit 0' TERM
  while [ "$(date +%s)" -lt "$end_at" ]; do
    left=$((end_at - $(date +%s)))
    "$bin/loadgen" --url "$url" --clients "$FANOUT_CLIENTS" --messages "$FANOUT_MESSAGES" \
      --window 200 --size "$FANOUT_SIZE" --timeout-secs $((left + 30)) --json \
      >>"$OUT/fanout.jsonl" 2>>"$OUT/fanout.log" &
    run=$!
    wait "$run" || true
    run=""
  done
) &
fanout_pid=$!

printf '%6s %10s %8s %7s %7s\n' "t(s)" "RSS(KiB)" threads fds conns
printf 't_s\trss_kb\tthreads\tfds\tconns\n' >"$OUT/samples.tsv"
warm_rss="" peak_rss=0
next_sample=$start
while :; do
  now=$(date +%s)
  [ "$now" -ge "$end_at" ] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "chat died during the soak:"; tail "$OUT/server.log"; exit 1; }
  if [ "$now" -ge "$next_sample" ]; then
    t=$((now - start)) r=$(rss_kb) th=$(threads) f=$(fds) c=$(conns)
    printf '%6d %10d %8d %7d %7d\n' "$t" "$r" "$th" "$f" "$c"
    printf '%d\t%d\t%d\t%d\t%d\n' "$t" "$r" "$th" "$f" "$c" >>"$OUT/samples.tsv"
    [ "$r" -gt "$peak_rss" ] && peak_rss=$r
    if [ -z "$warm_rss" ] && [ "$t" -ge "$WARMUP_SECS" ]; then warm_rss=$r warm_t=$t; fi
    next_sample=$((next_sample + INTERVAL))
  fi
  sleep 0.2
done
end_rss=$(rss_kb) end_fds=$(fds) end_conns=$(conns)
: "${warm_rss:=$end_rss}" "${warm_t:=$SOAK_SECS}"

# Let the load finish by itself (churn 3 s after the end; the last fan-out run within its
# timeout), 40 s at most.
for _ in $(seq 400); do
  kill -0 "$churn_pid" 2>/dev/null || kill -0 "$fanout_pid" 2>/dev/null || break
  sleep 0.1
done
stop "$fanout_pid"; fanout_pid=""
stop "$churn_pid"; churn_pid=""
sleep 2
after_rss=$(rss_kb) after_threads=$(threads) after_fds=$(fds) after_conns=$(conns)
# chat logs its hub's counters when it shuts down.
stop "$server_pid"; server_pid=""

echo
echo "=== soak summary (${SOAK_SECS}s) ==="
python3 - "$OUT" <<'PY' || echo "(no python3: see $OUT/churn.json and $OUT/fanout.jsonl)"
import json, os, sys
out = sys.argv[1]
try:
    c = json.load(open(os.path.join(out, "churn.json")))
    print("churn: %d cycles (%.0f/s), %d failed%s" % (c["cycles"], c["cycles_per_s"], c["failed"],
          "; first error: %s" % c["error"] if c.get("error") else ""))
except Exception as e:
    print("churn: no report (%s)" % e)
runs = []
path = os.path.join(out, "fanout.jsonl")
if os.path.exists(path):
    runs = [json.loads(l) for l in open(path) if l.strip()]
ok = sum(1 for r in runs if r.get("ok"))
deliveries = sum(r.get("deliveries") or 0 for r in runs)
lost = sum(r.get("lost") or 0 for r in runs)
ended = sum(r.get("evicted") or 0 for r in runs)
p99 = sorted(r["lat_p99_ms"] for r in runs if r.get("lat_p99_ms") is not None)
print("fan-out: %d runs (%d ok), %d deliveries, %d lost, %d receivers ended early%s" % (
    len(runs), ok, deliveries, lost, ended,
    ", p99 latency per run %.2f..%.2f ms" % (p99[0], p99[-1]) if p99 else ""))
for r in runs:
    if not r.get("ok"):
        print("  failed run: %s" % r.get("error"))
PY
growth=$((end_rss - warm_rss))
echo "RSS: idle ${idle_rss} KiB; after warm-up (t=${warm_t}s) ${warm_rss} KiB; peak ${peak_rss} KiB; at the end ${end_rss} KiB (${growth} KiB since warm-up)"
echo "at the end, under load: fds ${end_fds}, conns ${end_conns}"
echo "after the load (2 s later): RSS ${after_rss} KiB, threads ${after_threads} (idle ${idle_threads}), fds ${after_fds} (idle ${idle_fds}), conns ${after_conns}"
echo "server at shutdown: $(sed 's/\x1b\[[0-9;]*m//g' "$OUT/server.log" | grep -m1 ' stopped ' | sed 's/^.* stopped //' || true)"
echo "samples: $OUT/samples.tsv; logs: $OUT/"
