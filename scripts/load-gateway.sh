#!/usr/bin/env bash
# Gateway load benchmark, side by side in one run on 127.0.0.1:
#   1. the upstream direct (nginx `return 200`, the ceiling),
#   2. nginx checking X-API-Key against a `map` of the same 10,000 keys
#      (plaintext, as nginx needs them) and proxying to that upstream,
#   3. the keyward gateway (checksum, SHA-256, cache, scopes, identity
#      headers) proxying to that upstream.
# The upstream is an nginx of its own, so both proxies make the same hop to
# another process, and each row's CPU column is that target's own processes
# only (upstream: the upstream's workers; nginx-map: the map proxy's
# workers; keyward: keyward).
#
#   cargo build --release -p keyward && scripts/load-gateway.sh
#
# With BASELINE_BIN=path/to/an/older/keyward a fourth row, keyward-base,
# runs that build the same way (its own store and keys) in every round, and
# the summary adds the ratio keyward/keyward-base.
#
# Env: KEYWARD_BIN, BASELINE_BIN, DURATION (10s), CONNECTIONS (64), THREADS (2), KEYS (10000), ROUNDS (2).
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${KEYWARD_BIN:-$root_dir/target/release/keyward}"
BASE="${BASELINE_BIN:-}"
unset KEYWARD_BIN   # not a keyward setting: keyward refuses unknown KEYWARD_* variables
DURATION="${DURATION:-10s}"; CONNECTIONS="${CONNECTIONS:-64}"; THREADS="${THREADS:-2}"
KEYS="${KEYS:-10000}"; ROUNDS="${ROUNDS:-2}"
UP_PORT=18491; MAP_PORT=18492; KW_PORT=18493; BASE_PORT=18494
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
ROOT_KEY="$("$BIN" root-keys create --name load --data-dir "$tmp/data" --config "$tmp/keyward.toml" 2>/dev/null)"
"$BIN" serve --config "$tmp/keyward.toml" --data-dir "$tmp/data" --listen "127.0.0.1:$KW_PORT" 2>"$tmp/keyward.log" & kw_pid=$!; pids+=($kw_pid)
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$KW_PORT/v1/health" >/dev/null && break; sleep 0.1; done
python3 "$root_dir/scripts/mint_keys.py" "http://127.0.0.1:$KW_PORT" "$ROOT_KEY" "$KEYS" "$tmp/keys.txt" items:read >/dev/null
if [ -n "$BASE" ]; then
  BASE_ROOT="$("$BASE" root-keys create --name load --data-dir "$tmp/base-data" --config "$tmp/keyward.toml" 2>/dev/null)"
  "$BASE" serve --config "$tmp/keyward.toml" --data-dir "$tmp/base-data" --listen "127.0.0.1:$BASE_PORT" 2>"$tmp/base.log" & base_pid=$!; pids+=($base_pid)
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$BASE_PORT/v1/health" >/dev/null && break; sleep 0.1; done
  python3 "$root_dir/scripts/mint_keys.py" "http://127.0.0.1:$BASE_PORT" "$BASE_ROOT" "$KEYS" "$tmp/base-keys.txt" items:read >/dev/null
fi

{
  echo "worker_processes auto; pid $tmp/upstream.pid; error_log $tmp/upstream-error.log;"
  echo "events { worker_connections 4096; }"
  echo "http { access_log off;"
  echo "  server { listen 127.0.0.1:$UP_PORT; location / { default_type application/json; return 200 '{\"items\":[]}'; } } }"
} >"$tmp/upstream.conf"
{
  echo "worker_processes auto; pid $tmp/nginx.pid; error_log $tmp/nginx-error.log;"
  echo "events { worker_connections 4096; }"
  echo "http { access_log off;"
  echo "  map_hash_max_size 65536; map_hash_bucket_size 128;"
  echo '  map $http_x_api_key $key_ok { default 0;'
  while read -r k; do echo "    \"$k\" 1;"; done <"$tmp/keys.txt"
  echo "  }"
  echo "  upstream api { server 127.0.0.1:$UP_PORT; keepalive 64; }"
  echo "  server { listen 127.0.0.1:$MAP_PORT; location / {"
  echo '    if ($key_ok = 0) { return 401; }'
  echo '    proxy_set_header X-API-Key ""; proxy_http_version 1.1; proxy_set_header Connection "";'
  echo "    proxy_pass http://api; } }"
  echo "}"
} >"$tmp/nginx.conf"
nginx -c "$tmp/upstream.conf" -g 'daemon off;' 2>/dev/null & up_pid=$!; pids+=($up_pid)
nginx -c "$tmp/nginx.conf" -g 'daemon off;' 2>/dev/null & map_pid=$!; pids+=($map_pid)
sleep 0.5
export KEYS_FILE="$tmp/keys.txt"
lua="$root_dir/scripts/gateway.lua"
wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$lua" "http://127.0.0.1:$KW_PORT" >/dev/null   # warm keyward's cache
if [ -n "$BASE" ]; then
  KEYS_FILE="$tmp/base-keys.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$lua" "http://127.0.0.1:$BASE_PORT" >/dev/null
fi

. "$root_dir/scripts/wrk_lib.sh"
for _ in $(seq 1 "$ROUNDS"); do
  wrk_run upstream "http://127.0.0.1:$UP_PORT" $(nginx_workers "$up_pid")
  wrk_run nginx-map "http://127.0.0.1:$MAP_PORT" $(nginx_workers "$map_pid")
  wrk_run keyward "http://127.0.0.1:$KW_PORT" "$kw_pid"
  if [ -n "$BASE" ]; then
    KEYS_FILE="$tmp/base-keys.txt" wrk_run keyward-base "http://127.0.0.1:$BASE_PORT" "$base_pid"
  fi
done
if [ -n "$BASE" ]; then
  python3 "$root_dir/scripts/wrk_summary.py" "$tmp/results" upstream nginx-map keyward keyward-base \
    --ratio keyward/nginx-map --ratio keyward/upstream --ratio keyward/keyward-base
else
  python3 "$root_dir/scripts/wrk_summary.py" "$tmp/results" upstream nginx-map keyward --ratio keyward/nginx-map --ratio keyward/upstream
fi
