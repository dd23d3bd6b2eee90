#!/usr/bin/env bash
# What the tower layer costs a Rust service, side by side in one run on
# 127.0.0.1: the example service (examples/library) with the layer and the
# remote backend (every key cached: no call to keyward per request), and
# the same service without it (the same handlers, a fixed principal). Both
# serve GET /v1/calls (scope calls:read) to wrk with a different key per
# request; rounds alternate which goes first. The CPU figure is the
# service process's own user + system time per request (wrk_lib.sh); the
# difference between the two rows is the layer's cost. keyward's own CPU
# during the layered runs is printed too: it should be ~0 (cache hits).
#
#   cargo build --release -p keyward -p keyward-example-library && scripts/load-library.sh
#
# Env: KEYWARD_BIN, LIBRARY_BIN, DURATION (10s), CONNECTIONS (64),
# THREADS (2), KEYS (1000), ROUNDS (3).
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root_dir/target}"
BIN="${KEYWARD_BIN:-$target/release/keyward}"
LIB="${LIBRARY_BIN:-$target/release/keyward-example-library}"
unset KEYWARD_BIN   # not a keyward setting: keyward refuses unknown KEYWARD_* variables
DURATION="${DURATION:-10s}"; CONNECTIONS="${CONNECTIONS:-64}"; THREADS="${THREADS:-2}"
KEYS="${KEYS:-1000}"; ROUNDS="${ROUNDS:-3}"
KW_PORT=18481; WITH_PORT=18482; WITHOUT_PORT=18483
tmp="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

cat >"$tmp/keyward.toml" <<TOML
[keys]
scopes = ["calls:read", "calls:write"]
TOML
export KEYWARD_LOG=warn
root="$("$BIN" root-keys create --name load --data-dir "$tmp/kw" --config "$tmp/keyward.toml" 2>/dev/null)"
"$BIN" serve --config "$tmp/keyward.toml" --data-dir "$tmp/kw" --listen "127.0.0.1:$KW_PORT" 2>"$tmp/kw.log" & kw_pid=$!
pids+=($kw_pid)
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$KW_PORT/v1/health" >/dev/null && break; sleep 0.1; done
python3 "$root_dir/scripts/mint_keys.py" "http://127.0.0.1:$KW_PORT" "$root" "$KEYS" "$tmp/keys.txt" calls:read >/dev/null

env -u KEYWARD_LOG LISTEN="127.0.0.1:$WITH_PORT" KEYWARD_URL="http://127.0.0.1:$KW_PORT" KEYWARD_ROOT_KEY="$root" \
  "$LIB" 2>"$tmp/with.log" & with_pid=$!
pids+=($with_pid)
env -u KEYWARD_LOG LISTEN="127.0.0.1:$WITHOUT_PORT" LIBRARY_WITHOUT_KEYS=1 "$LIB" 2>"$tmp/without.log" & without_pid=$!
pids+=($without_pid)
for port in $WITH_PORT $WITHOUT_PORT; do
  for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done

. "$root_dir/scripts/wrk_lib.sh"
lua="$root_dir/scripts/library.lua"
export KEYS_FILE="$tmp/keys.txt"
# Warm-up: every key into the layer's cache (and both processes' allocators).
for port in $WITH_PORT $WITHOUT_PORT; do
  wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s "$lua" "http://127.0.0.1:$port" >/dev/null
done
echo "keyward CPU ticks before the layered runs: $(cpu_ticks "$kw_pid")"
for r in $(seq 1 "$ROUNDS"); do
  order="without with"; [ $((r % 2)) -eq 0 ] && order="with without"
  for name in $order; do
    if [ "$name" = with ]; then
      before=$(cpu_ticks "$kw_pid")
      wrk_run "library-with-layer" "http://127.0.0.1:$WITH_PORT" "$with_pid"
      echo "keyward CPU ticks during round $r (layered): $(( $(cpu_ticks "$kw_pid") - before ))"
    else
      wrk_run "library-without" "http://127.0.0.1:$WITHOUT_PORT" "$without_pid"
    fi
  done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$root_dir/scripts/wrk_summary.py" "$tmp/results" library-without library-with-layer \
  --ratio library-with-layer/library-without
