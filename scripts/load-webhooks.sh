#!/usr/bin/env bash
# Webhook delivery on 127.0.0.1, two measures in one run of one keyward
# (release build, embedded SQLite, webhooks.allow_private_addresses):
#
# 1. Outbox throughput: EVENTS events handed in with `POST /v1/events`
#    (8 client threads) for a tenant with one endpoint on a local receiver
#    (nginx `return 204`); reports the publish rate and the delivery rate
#    (events delivered per second, first publish to last delivery, read
#    from the store).
# 2. The gateway while deliveries run: wrk through a route (a different key
#    per request) alone, then while a publisher hands in RATE (500) events
#    a second that keyward delivers; rounds alternate; the ratio is with /
#    without. (The publisher shares the machine: the CPU figure per
#    request counts keyward's process only.)
#
#   cargo build --release -p keyward && scripts/load-webhooks.sh
#
# Env: KEYWARD_BIN, EVENTS (20000), DURATION (10s), CONNECTIONS (64),
# THREADS (2), KEYS (1000), ROUNDS (3), RATE (500).
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${KEYWARD_BIN:-$root_dir/target/release/keyward}"
unset KEYWARD_BIN
EVENTS="${EVENTS:-20000}"; DURATION="${DURATION:-10s}"; CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"; KEYS="${KEYS:-1000}"; ROUNDS="${ROUNDS:-3}"
UP_PORT=18491; KW_PORT=18492
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
[webhooks]
allow_private_addresses = true
poll_interval_ms = 20
TOML
{
  echo "worker_processes 1; pid $tmp/nginx.pid; error_log $tmp/nginx-error.log;"
  echo "events { worker_connections 4096; }"
  echo "http { access_log off;"
  echo "  server { listen 127.0.0.1:$UP_PORT;"
  echo "    location /hook { return 204; }"
  echo "    location / { default_type application/json; return 200 '{\"items\":[]}'; } } }"
} >"$tmp/nginx.conf"
nginx -c "$tmp/nginx.conf" -g 'daemon off;' 2>/dev/null & pids+=($!)

export KEYWARD_LOG=warn
root="$("$BIN" root-keys create --name load --data-dir "$tmp/kw" --config "$tmp/keyward.toml" 2>/dev/null)"
"$BIN" serve --config "$tmp/keyward.toml" --data-dir "$tmp/kw" --listen "127.0.0.1:$KW_PORT" 2>"$tmp/kw.log" & kw_pid=$!
pids+=($kw_pid)
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$KW_PORT/v1/health" >/dev/null && break; sleep 0.1; done
base="http://127.0.0.1:$KW_PORT"
tenant="$(curl -sf -X POST "$base/v1/tenants" -H "Authorization: Bearer $root" -H 'Content-Type: application/json' \
  -d '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
curl -sf -X POST "$base/v1/webhooks" -H "Authorization: Bearer $root" -H 'Content-Type: application/json' \
  -d "{\"tenant_id\":\"$tenant\",\"url\":\"http://127.0.0.1:$UP_PORT/hook\",\"event_types\":[\"bench.*\"]}" >/dev/null
python3 "$root_dir/scripts/mint_keys.py" "$base" "$root" "$KEYS" "$tmp/keys.txt" items:read >/dev/null
db="$tmp/kw/keyward.db"
delivered() { sqlite3 "$db" "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'"; }

# publish N [RATE SECONDS]: N events from 8 threads (or, with RATE and
# SECONDS, RATE events a second for SECONDS); prints the seconds it took.
publish() {
  python3 - "$base" "$root" "$tenant" "$@" <<'PY'
import http.client, json, sys, threading, time, urllib.parse
base, root, tenant, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
secs = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
u = urllib.parse.urlparse(base)
t0 = time.monotonic()
def worker(k):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    i = 0
    while True:
        if rate:
            # This thread's share of the rate, for the given time.
            due = t0 + i * 8 / rate
            if due - t0 >= secs:
                return
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
        elif i >= n // 8:
            return
        body = json.dumps({"tenant_id": tenant, "type": "bench.call.completed", "data": {"n": k, "i": i}})
        c.request("POST", "/v1/events", body, {"Authorization": "Bearer " + root, "Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status != 202:
            sys.exit(f"POST /v1/events answered {r.status}")
        i += 1
ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
for t in ts: t.start()
for t in ts: t.join()
print(f"{time.monotonic() - t0:.3f}")
PY
}

# 1. Outbox throughput.
before=$(delivered)
t0=$(date +%s.%N)
pub_s=$(publish "$EVENTS")
end=$((SECONDS + 600))
while [ "$(delivered)" -lt $((before + EVENTS)) ] && [ $SECONDS -lt $end ]; do sleep 0.05; done
t1=$(date +%s.%N)
done_n=$(( $(delivered) - before ))
python3 -c "
pub=$pub_s; total=$t1-$t0; n=$EVENTS; d=$done_n
print(f'outbox: {n} events published in {pub:.1f} s ({n/pub:.0f}/s); {d} delivered {total:.1f} s after the first publish: {d/total:.0f} deliveries/s end to end')"

# 2. The gateway alone, and while RATE events a second are published and
#    delivered (a publisher process beside wrk, bounded by the run).
RATE="${RATE:-500}"
. "$root_dir/scripts/wrk_lib.sh"
lua="$root_dir/scripts/gateway.lua"
KEYS_FILE="$tmp/keys.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$lua" "$base" >/dev/null
secs="${DURATION%s}"
for r in $(seq 1 "$ROUNDS"); do
  order="idle delivering"; [ $((r % 2)) -eq 0 ] && order="delivering idle"
  for mode in $order; do
    if [ "$mode" = delivering ]; then
      before=$(delivered)
      publish 0 "$RATE" "$secs" >/dev/null & pub=$!
      KEYS_FILE="$tmp/keys.txt" wrk_run "gateway-$mode" "$base" "$kw_pid"
      wait "$pub"
      sleep 1
      echo "round $r: $(( $(delivered) - before )) events delivered during the ${DURATION} run (asked: $(python3 -c "print(int($RATE * $secs))"))"
    else
      KEYS_FILE="$tmp/keys.txt" wrk_run "gateway-$mode" "$base" "$kw_pid"
    fi
  done
done
python3 "$root_dir/scripts/wrk_summary.py" "$tmp/results" gateway-idle gateway-delivering \
  --ratio gateway-delivering/gateway-idle
