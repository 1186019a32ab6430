#!/usr/bin/env bash
# Smoke test for the end-to-end load tools (issue 4): builds the chat example and loadgen
# (debug), starts chat on a free port on 127.0.0.1, runs a small lossless fan-out and a small
# idle run against it, stops the server. Exits non-zero on any failure. Once built it takes a
# few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --example chat --example loadgen
bin=target/debug/examples

# 20 + 1 + 50 connections here; raise the soft limit anyway, as far as the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/chat" --addr 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

# chat prints "chat room: open http://127.0.0.1:PORT/ in a browser (...)".
addr=""
for _ in $(seq 100); do
  addr=$(grep -o 'http://[0-9.]*:[0-9]*/' "$work/server.out" 2>/dev/null | head -n1 || true)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "chat exited early:"; cat "$work/server.err"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "chat did not print its address within 10 s"; exit 1; }
hostport=${addr#http://}
hostport=${hostport%/}
url="ws://$hostport/ws"
echo "chat (pid $server_pid) at $url"

echo "--- fanout: 20 clients x 200 messages, window 50, 64 B"
"$bin/loadgen" --url "$url" --pid "$server_pid" --clients 20 --messages 200 --window 50 \
  --size 64 --expect-no-loss --timeout-secs 60

echo "--- idle: 50 clients, hold 1 s"
"$bin/loadgen" --url "$url" --pid "$server_pid" --mode idle --clients 50 --hold-secs 1 \
  --expect-no-loss --timeout-secs 30

kill -0 "$server_pid" 2>/dev/null || { echo "chat died during the smoke test"; exit 1; }
echo "loadgen smoke test: ok"
