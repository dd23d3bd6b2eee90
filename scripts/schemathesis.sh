#!/usr/bin/env bash
# Checks a running keyward against its own OpenAPI document with Schemathesis
# (from PyPI): every answer must be documented (status, content type, body
# schema) and none may be a 5xx.
#
# It builds the debug binary, starts `keyward serve` on a fresh SQLite store
# in a temporary directory, on a free loopback port, with a scope catalog
# and tiers so the deployment-specific parts of the document are exercised;
# makes the run's operator root key with `keyward root-keys create` and a
# fixture tenant; runs Schemathesis (all phases: examples, coverage,
# fuzzing, stateful) with a bounded number of examples per operation; then
# checks that the root key still works (see scripts/schemathesis_hooks.py
# for why it must) and prints the statuses each operation answered.
#
# Checks: not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance and positive_data_acceptance (less the refusals
# no schema can prevent, listed in the hooks file and counted at the end).
#
# Exits non-zero on any failure. Needs python3 with venv (installed with
# apt-get if missing). Settings (environment):
#   SCHEMATHESIS_CHECK_EXAMPLES  examples per operation and phase (default 100)
#   SCHEMATHESIS_CHECK_SEED      reproduce a run (its seed is printed)
#   SCHEMATHESIS_CHECK_VENV      where the venv lives (default: under the temp dir,
#                                kept between runs)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES="${SCHEMATHESIS_CHECK_EXAMPLES:-100}"
TMP_ROOT="${TMPDIR:-/tmp}"
TARGET="${CARGO_TARGET_DIR:-target}"

# A Python for the venv. CPython 3.11 (3.11.2 and 3.11.7 both, here) now
# and then fails inside Hypothesis with "SystemError: AST constructor
# recursion depth mismatch", which ends the run as an error; 3.12 and 3.13
# have not. So a newer interpreter is preferred where there is one
# (pyenv's included); any python3 with venv will do otherwise.
pick_python() {
  local candidate
  for candidate in python3.13 python3.12 \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3 \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3 \
    python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
}

PY="$(pick_python)"
if [ -z "$PY" ]; then
  echo "== installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3-venv >/dev/null
  PY="$(pick_python)"
fi
[ -n "$PY" ] || { echo "FATAL: no python3 with venv" >&2; exit 1; }
PY_VERSION="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
VENV="${SCHEMATHESIS_CHECK_VENV:-$TMP_ROOT/keyward-schemathesis-$SCHEMATHESIS_VERSION-py$PY_VERSION}"
if [ ! -x "$VENV/bin/st" ] || ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "== schemathesis $SCHEMATHESIS_VERSION into $VENV ($("$PY" --version))"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
PYTHON="$VENV/bin/python"

echo "== cargo build -p keyward"
cargo build -q -p keyward --bin keyward
KEYWARD="$(cd "$TARGET" && pwd)/debug/keyward"

WORK="$(mktemp -d "$TMP_ROOT/keyward-schemathesis.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
cat >"$WORK/keyward.toml" <<EOF
listen = "127.0.0.1:$PORT"
data_dir = "$WORK/data"

[log]
level = "warn"

[keys]
scopes = ["vox:read", "vox:calls:read", "vox:calls:create"]

[limits.tiers.free]
limit = 1000
window_seconds = 60

[limits.tiers.standard]
limit = 6000
window_seconds = 60
refill = { amount = 1000, every = "monthly", mode = "set" }
EOF
export KEYWARD_CONFIG="$WORK/keyward.toml"

# The secret goes to stdout only.
if ! ROOT_KEY="$("$KEYWARD" root-keys create --name schemathesis 2>"$WORK/root-key.log")"; then
  cat "$WORK/root-key.log" >&2
  echo "FAIL: could not create the run's root key" >&2
  exit 1
fi
"$KEYWARD" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# Waits for the server, then makes the fixture tenant; prints the root
# key's id and the tenant's id.
read -r ROOT_KEY_ID TENANT_ID < <(ST_KEYWARD_ROOT_KEY="$ROOT_KEY" "$PYTHON" - "$BASE" <<'EOF'
import json, os, sys, time, urllib.request

base, key = sys.argv[1], os.environ["ST_KEYWARD_ROOT_KEY"]
def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Bearer " + key)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)
deadline = time.monotonic() + 60
while True:
    try:
        me = call("GET", "/v1/me")
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
tenant = call("POST", "/v1/tenants", {"name": "Schemathesis fixture"})
print(me["key_id"], tenant["id"])
EOF
)
if [ -z "${TENANT_ID:-}" ]; then
  echo "FAIL: keyward did not start, or the fixture tenant could not be made" >&2
  tail -n 50 "$WORK/server.log" >&2
  exit 1
fi
echo "== keyward at $BASE; root key $ROOT_KEY_ID; fixture tenant $TENANT_ID"

export SCHEMATHESIS_HOOKS=schemathesis_hooks
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
export ST_KEYWARD_ROOT_KEY_ID="$ROOT_KEY_ID" ST_KEYWARD_TENANT_ID="$TENANT_ID" ST_KEYWARD_TALLY="$WORK/tally"
SEED_ARGS=()
if [ -n "${SCHEMATHESIS_CHECK_SEED:-}" ]; then
  SEED_ARGS=(--seed "$SCHEMATHESIS_CHECK_SEED")
fi

echo "== schemathesis ($MAX_EXAMPLES examples per operation)"
status=0
# From the work directory: Schemathesis keeps a cache (.schemathesis/) where it runs.
(cd "$WORK" && timeout 420 "$VENV/bin/st" run "$BASE/openapi.json" \
  --header "Authorization: Bearer $ROOT_KEY" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,positive_data_acceptance \
  --max-examples "$MAX_EXAMPLES" \
  --workers 2 \
  --request-timeout 10 \
  --no-color \
  "${SEED_ARGS[@]}" </dev/null) || status=$?

# The run must have kept its key: otherwise it tested little after losing it.
ST_KEYWARD_ROOT_KEY="$ROOT_KEY" "$PYTHON" - "$BASE" "$ROOT_KEY_ID" <<'EOF' || status=1
import json, os, sys, urllib.request

base, key_id = sys.argv[1], sys.argv[2]
req = urllib.request.Request(base + "/v1/me")
req.add_header("Authorization", "Bearer " + os.environ["ST_KEYWARD_ROOT_KEY"])
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        me = json.load(r)
except Exception as e:
    sys.exit(f"FAIL: the run's root key no longer works after the run: {e}")
if me.get("key_id") != key_id or "keyward:*" not in me.get("scopes", []):
    sys.exit(f"FAIL: the run's root key changed during the run: {me}")
print("== the root key still works")
EOF

echo "== statuses answered per operation"
"$PYTHON" - "$WORK/tally" <<'EOF' || status=1
import collections, sys

tally = collections.defaultdict(collections.Counter)
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        method, path, code = line.split()
        tally[f"{method} {path}"][code] += 1
# Undocumented methods on documented paths (Schemathesis probes them) answer 405.
probes = {op: c for op, c in tally.items() if set(c) == {"405"}}
ops = {op: c for op, c in tally.items() if op not in probes}
width = max(map(len, ops), default=0)
for op in sorted(ops):
    print(f"  {op:<{width}}  " + "  ".join(f"{c}×{n}" for c, n in sorted(ops[op].items())))
print(f"  {sum(sum(c.values()) for c in tally.values())} requests; {len(probes)} undocumented methods answered 405")
# Each operation must have been reached past authentication at least once,
# but GitLab's revocation calls: they take a shared token of GitLab's
# (`[leaks.gitlab]`, tested in crates/keyward/tests/it/leaks.rs), not the
# run's key, which Schemathesis sends on every request.
partner = ("/v1/leaks/gitlab/",)
unreached = [
    op for op, c in ops.items()
    if set(c) <= {"401"} and not op.split()[1].startswith(partner)
]
if unreached:
    sys.exit(f"FAIL: never authenticated: {unreached}")
with open(sys.argv[1] + ".ops", "w", encoding="utf-8") as f:
    f.write(str(len(ops)))
try:
    with open(sys.argv[1] + ".dropped", encoding="utf-8") as f:
        dropped = collections.Counter(line.strip() for line in f)
except FileNotFoundError:
    dropped = collections.Counter()
print("== schema-valid requests refused for what no schema can say (not failures)")
for why, n in dropped.most_common():
    print(f"  {n:5}  {why}")
EOF

if grep -q 'panicked' "$WORK/server.log"; then
  echo "FAIL: the server panicked:" >&2
  grep -E 'panicked' "$WORK/server.log" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "== server log (last 50 lines)"
  tail -n 50 "$WORK/server.log"
  echo "FAIL: schemathesis found problems (exit $status)" >&2
  exit "$status"
fi
echo "== schemathesis: clean"
echo "schemathesis: $(cat "$WORK/tally.ops") passed, 0 failed"
