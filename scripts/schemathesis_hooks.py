"""Schemathesis hooks for scripts/schemathesis.sh (loaded via SCHEMATHESIS_HOOKS).

The run authenticates with one operator root key, which must work from the
first request to the last: a run that disabled, narrowed or revoked it
would see nothing but 401s and 403s afterwards, all of them documented,
and pass without testing anything. So every change aimed at that key's own
id (PATCH, DELETE, revoke, rotate) is sent to an id that does not exist
instead (404). The script checks afterwards that the key still works.

A root key must name the tenant of a key it creates; a made-up tenant id
answers 404. Half of the generated key bodies (by a hash of the body, so
the choice is reproducible) get the run's fixture tenant instead, so keys
are really created, and then rotated, revoked, changed and deleted.

Every answer's status is tallied per operation into ST_KEYWARD_TALLY, for
the script's summary.
"""

import hashlib
import json
import os

import schemathesis

ROOT_KEY_ID = os.environ["ST_KEYWARD_ROOT_KEY_ID"]
TENANT_ID = os.environ["ST_KEYWARD_TENANT_ID"]
TALLY = os.environ["ST_KEYWARD_TALLY"]
NO_SUCH_KEY = "key_schemathesisNoSuchKey000"


@schemathesis.hook
def before_call(context, case, kwargs):
    params = case.path_parameters or {}
    if case.path.startswith("/v1/keys/{id}") and case.method.upper() != "GET":
        if params.get("id") == ROOT_KEY_ID:
            params["id"] = NO_SUCH_KEY
    if case.method.upper() == "POST" and case.path == "/v1/keys" and isinstance(case.body, dict):
        digest = hashlib.sha256(json.dumps(case.body, sort_keys=True, default=str).encode()).digest()
        if digest[0] % 2 == 0:
            case.body["tenant_id"] = TENANT_ID


@schemathesis.hook
def after_call(context, case, response):
    with open(TALLY, "a", encoding="utf-8") as f:
        f.write(f"{case.method.upper()} {case.path} {response.status_code}\n")
