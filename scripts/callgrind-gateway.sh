#!/usr/bin/env bash
# Instructions per forwarded gateway request, counted by callgrind: unlike
# req/s, the count does not depend on what else the machine is doing, so two
# builds can be compared on a shared machine.
#
#   cargo build --release -p keyward
#   scripts/callgrind-gateway.sh target/release/keyward [OTHER_BINARY ...]
#
# For each binary: nginx (`return 200`) as the upstream, keyward under
# `valgrind --tool=callgrind` with one worker thread, 200 keys, 400 warm-up
# requests (every key cached, upstream connections open), then the counters
# are zeroed and N (default 2000) requests are sent one after another over
# one keep-alive connection, each with a different key in X-API-Key.
# Prints user-space instructions per request. Env: N; CALLGRIND_OUT=DIR
# keeps each profile; LIMITS=1 puts every key
# in a (never exceeded) rate-limit tier and makes the route cost 1 credit.
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
N="${N:-2000}"
UP_PORT=18891; KW_PORT=18892
tmp="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
echo "worker_processes 1; pid $tmp/nginx.pid; error_log $tmp/nginx-error.log;
events { worker_connections 1024; }
http { access_log off;
  server { listen 127.0.0.1:$UP_PORT; location / { default_type application/json; return 200 '{\"items\":[]}'; } } }" >"$tmp/nginx.conf"
nginx -c "$tmp/nginx.conf" -g 'daemon off;' & pids+=($!)
printf '[keys]\nscopes = ["items:read"]\n[gateway]\nupstream = "http://127.0.0.1:%s"\n[[routes]]\nmethods = ["GET"]\npath = "/v1/items"\nscopes = ["items:read"]\n' $UP_PORT >"$tmp/k.toml"
if [ "${LIMITS:-0}" = 1 ]; then
  printf 'credits = 1\n[limits]\ndefault_tier = "load"\n[limits.tiers.load]\nlimit = 1000000\nwindow_seconds = 1\n' >>"$tmp/k.toml"
fi
cat >"$tmp/drive.py" <<PY
import http.client, sys
keys = [l.strip() for l in open(sys.argv[2]) if l.strip()]
c = http.client.HTTPConnection("127.0.0.1", $KW_PORT)
for i in range(int(sys.argv[1])):
    c.request("GET", "/v1/items", headers={"X-API-Key": keys[i % len(keys)]})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
export KEYWARD_LOG=warn
for bin in "$@"; do
  d="$(mktemp -d -p "$tmp")"
  root="$("$bin" root-keys create --name load --data-dir "$d/data" --config "$tmp/k.toml" 2>/dev/null)"
  KEYWARD_HTTP__WORKERS=1 TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" \
    "$bin" serve --config "$tmp/k.toml" --data-dir "$d/data" --listen "127.0.0.1:$KW_PORT" 2>"$d/vg.log" & kw=$!
  for _ in $(seq 1 300); do curl -sf "127.0.0.1:$KW_PORT/v1/health" >/dev/null && break; sleep 0.2; done
  tenant="$(python3 "$root_dir/scripts/mint_keys.py" "http://127.0.0.1:$KW_PORT" "$root" 200 "$d/keys.txt" items:read)"
  curl -sf -o /dev/null -H "Authorization: Bearer $root" -H 'Content-Type: application/json' \
    -d '{"kind":"grant","amount":1000000000000}' "127.0.0.1:$KW_PORT/v1/tenants/$tenant/credits"
  python3 "$tmp/drive.py" 400 "$d/keys.txt"
  callgrind_control -z "$kw" >/dev/null
  python3 "$tmp/drive.py" "$N" "$d/keys.txt"
  callgrind_control -d "$kw" >/dev/null
  sleep 1
  kill "$kw"; wait "$kw" 2>/dev/null || true
  total="$(callgrind_annotate --threshold=100 --auto=no "$d"/cg.out.1 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')"
  echo "$bin: $((total / N)) instructions per request"
  # CALLGRIND_OUT=DIR keeps the profile (callgrind_annotate --inclusive=yes DIR/…).
  if [ -n "${CALLGRIND_OUT:-}" ]; then mkdir -p "$CALLGRIND_OUT"; cp "$d"/cg.out.1 "$CALLGRIND_OUT/$(basename "$bin").cg.out"; fi
done
