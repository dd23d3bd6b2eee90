#!/usr/bin/env bash
# Load benchmark for POST /v1/keys/verify with 10,000 cached keys, compared in
# the same run against nginx answering `return 200` (the ceiling for this
# machine). Sends traffic to 127.0.0.1 only; every run is bounded in time.
#
#   cargo build --release -p keyward && scripts/load-verify.sh
#
# Env: KEYWARD_BIN (default target/release/keyward), DURATION (10s),
# CONNECTIONS (64), THREADS (2), KEYS (10000), ROUNDS (2).
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${KEYWARD_BIN:-$root_dir/target/release/keyward}"
unset KEYWARD_BIN   # not a keyward setting: keyward refuses unknown KEYWARD_* variables
DURATION="${DURATION:-10s}"; CONNECTIONS="${CONNECTIONS:-64}"; THREADS="${THREADS:-2}"
KEYS="${KEYS:-10000}"; ROUNDS="${ROUNDS:-2}"
KW_PORT=18481; NGINX_PORT=18482
tmp="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

export KEYWARD_LOG=warn
ROOT_KEY="$("$BIN" root-keys create --name load --data-dir "$tmp/data" 2>/dev/null)"
"$BIN" serve --data-dir "$tmp/data" --listen "127.0.0.1:$KW_PORT" 2>"$tmp/keyward.log" & kw_pid=$!; pids+=($kw_pid)
cat >"$tmp/nginx.conf" <<NGINX
worker_processes auto;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { default_type application/json; return 200 '{"valid":true}'; }
  }
}
NGINX
nginx -c "$tmp/nginx.conf" -g 'daemon off;' & nginx_pid=$!; pids+=($nginx_pid)
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$KW_PORT/v1/health" >/dev/null && break; sleep 0.1; done

python3 "$root_dir/scripts/mint_keys.py" "http://127.0.0.1:$KW_PORT" "$ROOT_KEY" "$KEYS" "$tmp/keys.txt" >/dev/null
export ROOT_KEY KEYS_FILE="$tmp/keys.txt"
lua="$root_dir/scripts/verify.lua"

# Warm-up: every key into the cache.
wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$lua" "http://127.0.0.1:$KW_PORT" >/dev/null

. "$root_dir/scripts/wrk_lib.sh"
for _ in $(seq 1 "$ROUNDS"); do
  wrk_run nginx "http://127.0.0.1:$NGINX_PORT" $(nginx_workers "$nginx_pid")
  wrk_run keyward "http://127.0.0.1:$KW_PORT" "$kw_pid"
done
python3 "$root_dir/scripts/wrk_summary.py" "$tmp/results" nginx keyward --ratio keyward/nginx
