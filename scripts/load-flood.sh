#!/usr/bin/env bash
# Valid keys during a flood of made-up ones, on 127.0.0.1 only, every run
# bounded in time. The keyward gateway forwards GET /v1/items to an nginx
# `return 200` upstream; in each round:
#   1. calm:        wrk with the KEYS valid keys (scripts/gateway.lua) alone;
#   2. flood-valid: the same wrk again, while a second wrk (flood) sends a
#      new random key with a valid checksum on every request
#      (scripts/flood.lua): each one passes the format check, misses the
#      cache and costs a store read, and anyone can make them.
# The summary gives the median req/s of each and the ratio flood-valid/calm:
# how much of its throughput a real client keeps during the flood.
#
#   cargo build --release -p keyward && scripts/load-flood.sh
#
# With BASELINE_BIN=path/to/an/older/keyward the same two rows (base-calm,
# base-flood-valid, base-flood) run against that build too, alternating with
# this one in every round (each build its own store and keys).
# CACHE_CAPACITY sets [cache] capacity (default: keyward's own); the CPU
# column of the flood rows is left at 0 (keyward's CPU then serves both wrks).
#
# Env: KEYWARD_BIN, BASELINE_BIN, CACHE_CAPACITY, DURATION (10s),
# CONNECTIONS (32), THREADS (1), FLOOD_CONNECTIONS (32), FLOOD_THREADS (1),
# KEYS (10000), ROUNDS (3).
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${KEYWARD_BIN:-$root_dir/target/release/keyward}"
BASE="${BASELINE_BIN:-}"
unset KEYWARD_BIN   # not a keyward setting: keyward refuses unknown KEYWARD_* variables
DURATION="${DURATION:-10s}"; CONNECTIONS="${CONNECTIONS:-32}"; THREADS="${THREADS:-1}"
FLOOD_CONNECTIONS="${FLOOD_CONNECTIONS:-32}"; FLOOD_THREADS="${FLOOD_THREADS:-1}"
KEYS="${KEYS:-10000}"; ROUNDS="${ROUNDS:-3}"
UP_PORT=18501; KW_PORT=18503; BASE_PORT=18504
tmp="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

{
  echo '[keys]'
  echo 'scopes = ["items:read"]'
  if [ -n "${CACHE_CAPACITY:-}" ]; then echo '[cache]'; echo "capacity = $CACHE_CAPACITY"; fi
  echo '[gateway]'
  echo "upstream = \"http://127.0.0.1:$UP_PORT\""
  echo '[[routes]]'
  echo 'methods = ["GET"]'
  echo 'path = "/v1/items"'
  echo 'scopes = ["items:read"]'
} >"$tmp/keyward.toml"
export KEYWARD_LOG=warn

# start NAME BIN PORT: a keyward with its own store and KEYS keys in $tmp/NAME-keys.txt.
start() {
  local name=$1 bin=$2 port=$3 root
  root="$("$bin" root-keys create --name load --data-dir "$tmp/$name-data" --config "$tmp/keyward.toml" 2>/dev/null)"
  "$bin" serve --config "$tmp/keyward.toml" --data-dir "$tmp/$name-data" --listen "127.0.0.1:$port" 2>"$tmp/$name.log" &
  pids+=($!); eval "${name}_pid=$!"
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/v1/health" >/dev/null && break; sleep 0.1; done
  python3 "$root_dir/scripts/mint_keys.py" "http://127.0.0.1:$port" "$root" "$KEYS" "$tmp/$name-keys.txt" items:read >/dev/null
}
start kw "$BIN" "$KW_PORT"
if [ -n "$BASE" ]; then start base "$BASE" "$BASE_PORT"; fi

{
  echo "worker_processes auto; pid $tmp/upstream.pid; error_log $tmp/upstream-error.log;"
  echo "events { worker_connections 4096; }"
  echo "http { access_log off;"
  echo "  server { listen 127.0.0.1:$UP_PORT; location / { default_type application/json; return 200 '{\"items\":[]}'; } } }"
} >"$tmp/upstream.conf"
nginx -c "$tmp/upstream.conf" -g 'daemon off;' 2>/dev/null & pids+=($!)
sleep 0.5

# The flood's keys must pass keyward's checksum, or they would cost nothing:
# check a sample against Python's CRC32 (sent to the upstream, not keyward).
FLOOD_SAMPLE="$tmp/sample.txt" wrk -t1 -c1 -d1s -s "$root_dir/scripts/flood.lua" "http://127.0.0.1:$UP_PORT" >/dev/null
python3 - "$tmp/sample.txt" <<'PY'
import sys, zlib
A = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
for k in open(sys.argv[1]).read().split():
    body, check = k[:-6], k[-6:]
    v, s = zlib.crc32(body.encode()), ""
    for _ in range(6):
        s, v = A[v % 62] + s, v // 62
    assert s == check and len(body) == len("kw_test_") + 32, f"bad flood key {k}"
PY

lua="$root_dir/scripts/gateway.lua"
# Warm each cache with every valid key.
KEYS_FILE="$tmp/kw-keys.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$lua" "http://127.0.0.1:$KW_PORT" >/dev/null
if [ -n "$BASE" ]; then
  KEYS_FILE="$tmp/base-keys.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$lua" "http://127.0.0.1:$BASE_PORT" >/dev/null
fi

. "$root_dir/scripts/wrk_lib.sh"
seconds=${DURATION%s}
# measure PREFIX NAME PORT PID: the calm and flooded rows for one build.
measure() {
  local prefix=$1 name=$2 port=$3 pid=$4 out
  export KEYS_FILE="$tmp/$name-keys.txt"
  wrk_run "${prefix}calm" "http://127.0.0.1:$port" "$pid"
  # The flood starts a second before the measured run and ends a second after.
  timeout $((seconds + 10)) wrk -t"$FLOOD_THREADS" -c"$FLOOD_CONNECTIONS" -d"$((seconds + 2))s" --latency \
    -s "$root_dir/scripts/flood.lua" "http://127.0.0.1:$port" >"$tmp/flood.out" &
  local flood=$!
  sleep 1
  wrk_run "${prefix}flood-valid" "http://127.0.0.1:$port"
  wait "$flood"
  out="$(cat "$tmp/flood.out")"
  echo "${prefix}flood $(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out") $(awk '/Non-2xx/ {print $NF}' <<<"$out" | grep . || echo 0) 0" >>"$tmp/results"
  # The flooded keys were valid ones: none may have been refused.
  local refused
  refused=$(awk '$1 ~ /flood-valid$/ {n=$5} END {print n+0}' "$tmp/results")
  if [ "$refused" != 0 ]; then echo "warning: $refused valid-key requests were refused during the flood" >&2; fi
}
for _ in $(seq 1 "$ROUNDS"); do
  measure "" kw "$KW_PORT" "$kw_pid"
  if [ -n "$BASE" ]; then measure base- base "$BASE_PORT" "$base_pid"; fi
done
uptime
if [ -n "$BASE" ]; then
  python3 "$root_dir/scripts/wrk_summary.py" "$tmp/results" calm flood-valid flood base-calm base-flood-valid base-flood \
    --ratio flood-valid/calm --ratio base-flood-valid/base-calm --ratio flood-valid/base-flood-valid
else
  python3 "$root_dir/scripts/wrk_summary.py" "$tmp/results" calm flood-valid flood --ratio flood-valid/calm
fi
