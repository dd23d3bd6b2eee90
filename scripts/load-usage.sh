#!/usr/bin/env bash
# What usage recording and metrics cost, side by side in one run on
# 127.0.0.1: two keyward processes of the same build, one with usage
# recording and metrics on (the defaults plus `metrics.enabled`, scraped
# every 5 s as Prometheus would) and one with both off
# (`usage.enabled = false`), each with its own store and 10,000 keys, each
# in front of the same upstream (an nginx `return 200`). Rounds alternate
# between them, for the gateway (GET through a route with a scope, a
# different key per request) and for the verify API.
#
#   cargo build --release -p keyward && scripts/load-usage.sh
#
# Env: KEYWARD_BIN, DURATION (10s), CONNECTIONS (64), THREADS (2), KEYS (10000), ROUNDS (3).
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${KEYWARD_BIN:-$root_dir/target/release/keyward}"
unset KEYWARD_BIN   # not a keyward setting: keyward refuses unknown KEYWARD_* variables
DURATION="${DURATION:-10s}"; CONNECTIONS="${CONNECTIONS:-64}"; THREADS="${THREADS:-2}"
KEYS="${KEYS:-10000}"; ROUNDS="${ROUNDS:-3}"
UP_PORT=18471; ON_PORT=18472; OFF_PORT=18473
tmp="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

cat >"$tmp/keyward.toml" <<TOML
[keys]
scopes = ["items:read"]
[gateway]
upstream = "http://127.0.0.1:$UP_PORT"
[[routes]]
methods = ["GET"]
path = "/v1/items"
scopes = ["items:read"]
TOML
export KEYWARD_LOG=warn
# start NAME PORT ENV...: a keyward with its own store; sets NAME_pid, NAME_root, keys in $tmp/NAME-keys.txt.
start() {
  local name=$1 port=$2; shift 2
  local root pid
  root="$("$BIN" root-keys create --name load --data-dir "$tmp/$name" --config "$tmp/keyward.toml" 2>/dev/null)"
  env "$@" "$BIN" serve --config "$tmp/keyward.toml" --data-dir "$tmp/$name" --listen "127.0.0.1:$port" 2>"$tmp/$name.log" & pid=$!
  pids+=($pid)
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/v1/health" >/dev/null && break; sleep 0.1; done
  python3 "$root_dir/scripts/mint_keys.py" "http://127.0.0.1:$port" "$root" "$KEYS" "$tmp/$name-keys.txt" items:read >/dev/null
  printf -v "${name}_pid" '%s' "$pid"
  printf -v "${name}_root" '%s' "$root"
}
start on "$ON_PORT" KEYWARD_METRICS__ENABLED=true
start off "$OFF_PORT" KEYWARD_USAGE__ENABLED=false KEYWARD_METRICS__ENABLED=false
{
  echo "worker_processes auto; pid $tmp/upstream.pid; error_log $tmp/upstream-error.log;"
  echo "events { worker_connections 4096; }"
  echo "http { access_log off;"
  echo "  server { listen 127.0.0.1:$UP_PORT; location / { default_type application/json; return 200 '{\"items\":[]}'; } } }"
} >"$tmp/upstream.conf"
nginx -c "$tmp/upstream.conf" -g 'daemon off;' 2>/dev/null & pids+=($!)
sleep 0.5
# A scrape every 5 s, bounded by the run.
( end=$((SECONDS + 3600)); while [ $SECONDS -lt $end ]; do curl -sf "127.0.0.1:$ON_PORT/metrics" >/dev/null || true; sleep 5; done ) & pids+=($!)

. "$root_dir/scripts/wrk_lib.sh"
for name in on off; do   # warm both caches
  port=$ON_PORT; [ "$name" = off ] && port=$OFF_PORT
  KEYS_FILE="$tmp/$name-keys.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$root_dir/scripts/gateway.lua" "http://127.0.0.1:$port" >/dev/null
done
for r in $(seq 1 "$ROUNDS"); do
  # Alternate which goes first, so neither always runs on a warmer machine.
  order="off on"; [ $((r % 2)) -eq 0 ] && order="on off"
  for name in $order; do
    port=$ON_PORT; pid=$on_pid; root=$on_root
    [ "$name" = off ] && { port=$OFF_PORT; pid=$off_pid; root=$off_root; }
    lua="$root_dir/scripts/gateway.lua" KEYS_FILE="$tmp/$name-keys.txt" wrk_run "gateway-$name" "http://127.0.0.1:$port" "$pid"
    lua="$root_dir/scripts/verify.lua" KEYS_FILE="$tmp/$name-keys.txt" ROOT_KEY="$root" wrk_run "verify-$name" "http://127.0.0.1:$port" "$pid"
  done
done
python3 "$root_dir/scripts/wrk_summary.py" "$tmp/results" gateway-off gateway-on verify-off verify-on \
  --ratio gateway-on/gateway-off --ratio verify-on/verify-off
# The usage the "on" process wrote (it counted every request it served).
sleep 2
echo "usage rows written by the 'on' node: $(sqlite3 "$tmp/on/keyward.db" 'SELECT COUNT(*) FROM usage_counts' 2>/dev/null || echo '(sqlite3 not installed)')"
