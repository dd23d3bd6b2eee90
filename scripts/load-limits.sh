#!/usr/bin/env bash
# What rate limiting and credits cost the gateway, side by side in one run on
# 127.0.0.1: two keyward gateways in front of the same upstream (nginx
# `return 200`), identical but for the limits:
#   off: no tiers, no credits on the route;
#   on:  every key in a tier (GCRA check-and-spend per request, in memory)
#        and the route costing 1 credit (spent from a reservation). The tier
#        is generous (1,000,000/s) and the balance large, so nothing is
#        refused: this measures the cost of the checks, not of 429s.
#   redis: as "on", with the rate limit spent in Redis (REDIS_URL, default
#        redis://127.0.0.1:6379; one Lua script per request, as every node
#        of a cluster would): the cost of limits shared across nodes.
#
#   cargo build --release -p keyward && scripts/load-limits.sh
#
# Env: KEYWARD_BIN, REDIS_URL, DURATION (10s), CONNECTIONS (64), THREADS (2), KEYS (10000), ROUNDS (2).
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${KEYWARD_BIN:-$root_dir/target/release/keyward}"
unset KEYWARD_BIN   # not a keyward setting: keyward refuses unknown KEYWARD_* variables
DURATION="${DURATION:-10s}"; CONNECTIONS="${CONNECTIONS:-64}"; THREADS="${THREADS:-2}"
KEYS="${KEYS:-10000}"; ROUNDS="${ROUNDS:-2}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
UP_PORT=18591; OFF_PORT=18592; ON_PORT=18593; REDIS_PORT=18594
tmp="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

route='
[[routes]]
methods = ["GET"]
path = "/v1/items"
scopes = ["items:read"]'
common="[keys]
scopes = [\"items:read\"]
[gateway]
upstream = \"http://127.0.0.1:$UP_PORT\""
printf '%s\n%s\n' "$common" "$route" >"$tmp/off.toml"
printf '%s\n[limits]\ndefault_tier = "load"\n[limits.tiers.load]\nlimit = 1000000\nwindow_seconds = 1\n%s\ncredits = 1\n' "$common" "$route" >"$tmp/on.toml"
{ printf 'redis_url = "%s"\n[redis]\nprefix = "keyward-load-%s:"\n' "$REDIS_URL" "$$"; cat "$tmp/on.toml"; } >"$tmp/redis.toml"

echo "worker_processes auto; pid $tmp/nginx.pid; error_log $tmp/nginx-error.log;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$UP_PORT; location / { default_type application/json; return 200 '{\"items\":[]}'; } } }" >"$tmp/nginx.conf"
nginx -c "$tmp/nginx.conf" -g 'daemon off;' & pids+=($!)

export KEYWARD_LOG=warn
start() { # name port
  local root
  root="$("$BIN" root-keys create --name load --data-dir "$tmp/$1" --config "$tmp/$1.toml" 2>/dev/null)"
  "$BIN" serve --config "$tmp/$1.toml" --data-dir "$tmp/$1" --listen "127.0.0.1:$2" 2>"$tmp/$1.log" & pids+=($!)
  echo $! >"$tmp/$1.pid"
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$2/v1/health" >/dev/null && break; sleep 0.1; done
  local tenant
  tenant="$(python3 "$root_dir/scripts/mint_keys.py" "http://127.0.0.1:$2" "$root" "$KEYS" "$tmp/$1.keys" items:read)"
  curl -sf -o /dev/null -H "Authorization: Bearer $root" -H 'Content-Type: application/json' \
    -d '{"kind":"grant","amount":1000000000000}' "127.0.0.1:$2/v1/tenants/$tenant/credits"
  echo "$root" >"$tmp/$1.root"; echo "$tenant" >"$tmp/$1.tenant"
}
start off $OFF_PORT
start on $ON_PORT
start redis $REDIS_PORT

lua="$root_dir/scripts/gateway.lua"
port_of() { case $1 in off) echo $OFF_PORT;; on) echo $ON_PORT;; redis) echo $REDIS_PORT;; esac; }
for name in off on redis; do   # warm each cache
  port=$(port_of "$name")
  KEYS_FILE="$tmp/$name.keys" wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$lua" "http://127.0.0.1:$port" >/dev/null
done

. "$root_dir/scripts/wrk_lib.sh"
for _ in $(seq 1 "$ROUNDS"); do
  KEYS_FILE="$tmp/off.keys" wrk_run off "http://127.0.0.1:$OFF_PORT" "$(cat "$tmp/off.pid")"
  KEYS_FILE="$tmp/on.keys" wrk_run on "http://127.0.0.1:$ON_PORT" "$(cat "$tmp/on.pid")"
  KEYS_FILE="$tmp/redis.keys" wrk_run redis "http://127.0.0.1:$REDIS_PORT" "$(cat "$tmp/redis.pid")"
done
curl -sf "127.0.0.1:$REDIS_PORT/v1/ready" | grep -q '"rate_limiter":"redis"' \
  || { echo "the redis gateway was not on Redis (see /v1/ready)" >&2; exit 1; }
python3 "$root_dir/scripts/wrk_summary.py" "$tmp/results" off on redis --ratio on/off --ratio redis/on
# The spends were real: credits spent on "on" (one per 2xx, warm-up included).
balance="$(curl -sf -H "Authorization: Bearer $(cat "$tmp/on.root")" "127.0.0.1:$ON_PORT/v1/tenants/$(cat "$tmp/on.tenant")/credits" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["balance"])')"
echo "credits spent by the 'on' gateway: $((1000000000000 - balance))"
