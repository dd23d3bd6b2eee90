"""Schemathesis hooks for scripts/schemathesis.sh (loaded via SCHEMATHESIS_HOOKS).

The run authenticates with one operator root key, which must work from the
first request to the last: a run that disabled, narrowed or revoked it
would see nothing but 401s and 403s afterwards, all of them documented,
and pass without testing anything. So every change aimed at that key's own
id (PATCH, DELETE, revoke, rotate) is sent to an id that does not exist
instead (404). The script checks afterwards that the key still works.

The change feed's long poll (`GET /v1/changes?wait_ms=`) is asked to wait
at most 1 s, under the run's request timeout.

A root key must name the tenant of a key it creates; a made-up tenant id
answers 404, and most generated expiries are in the past (422). Half of
the generated key bodies (by a hash of the body, so the choice is
reproducible) get the run's fixture tenant and an expiry in 2100 instead,
so keys are really created, and then rotated, revoked, changed and deleted.

Every answer's status is tallied per operation into ST_KEYWARD_TALLY, for
the script's summary.

`positive_data_acceptance` (a body valid by the schema must not be refused
with a 4xx other than 401, 403, 404, 409, 429) is checked too, less the
refusals no schema can prevent, each named in `inexpressible` below: a
value only the server can judge (a cursor it issued, an expiry in the
future, metadata's size in bytes, a webhook URL that must resolve to a
public address, an event filter's grammar, keyward's reserved event types, a CIDR without host bits, a rate faster
than 10^6 per second, an Idempotency-Key used before) or a JSON integer
written as a float (`5.0`, which JSON Schema counts as an integer and
serde does not). Any other refusal fails the run.
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
    # `GET /v1/changes` may wait up to 30 s for a change (a long poll), past
    # the run's request timeout: the run asks for at most 1 s.
    if case.path == "/v1/changes" and isinstance(case.query, dict):
        wait = case.query.get("wait_ms")
        try:
            too_long = int(wait) > 1000
        except (TypeError, ValueError):
            too_long = False
        if too_long:
            case.query["wait_ms"] = 1000
    if case.method.upper() == "POST" and case.path == "/v1/keys" and isinstance(case.body, dict):
        digest = hashlib.sha256(json.dumps(case.body, sort_keys=True, default=str).encode()).digest()
        if digest[0] % 2 == 0:
            case.body["tenant_id"] = TENANT_ID
            if isinstance(case.body.get("expires_at"), str):
                case.body["expires_at"] = "2100-01-01T00:00:00Z"


@schemathesis.hook
def after_call(context, case, response):
    with open(TALLY, "a", encoding="utf-8") as f:
        f.write(f"{case.method.upper()} {case.path} {response.status_code}\n")


# (field, code) pairs of `validation_failed` that a schema cannot express.
# (`tenant_id` is optional for tenant keys, required of root keys.)
INEXPRESSIBLE_FIELDS = {
    ("expires_at", "in_past"),
    # Usage ranges: `from` before `to`, and at most 2,200 buckets of the
    # granularity between them.
    ("from", "invalid_range"),
    ("from", "range_too_large"),
    # `POST /v1/leaks`: exactly one of `key` and `key_hash`.
    ("key", "required"),
    ("metadata", "too_large"),
    ("tenant_id", "required"),
    # Webhook endpoints: a URL must be public and resolve (no DNS in the
    # run), and a filter pattern's grammar (`prefix.*`, `*`) is the
    # server's; a description without control characters.
    ("url", "forbidden_address"),
    ("url", "unresolvable_host"),
    ("url", "invalid_url"),
    ("url", "unsupported_url_scheme"),
    ("url", "url_without_host"),
    ("url", "url_with_credentials"),
    ("url", "url_with_fragment"),
    ("url", "url_too_long"),
    ("event_types", "invalid_event_filter"),
    ("event_types", "invalid_event_type"),
    ("event_types", "duplicate_event_filter"),
    ("description", "invalid"),
    # `POST /v1/events`: keyward's own type prefixes, data's size in bytes.
    ("type", "reserved_type"),
    ("data", "too_large"),
}


def _inexpressible_field(error):
    field, code, message = error.get("field", ""), error.get("code"), error.get("message", "")
    if (field, code) in INEXPRESSIBLE_FIELDS:
        return True
    if field.startswith("ip_allowlist[") and code == "invalid_cidr" and "host bits" in message:
        return True
    return field == "rate_limit" and code == "invalid" and "million tokens per second" in message


def inexpressible(problem):
    """Why this refusal of a schema-valid request is one no schema can
    prevent, or None."""
    code = problem.get("code")
    if code in ("invalid_cursor", "idempotency_key_reused"):
        return code
    if code == "invalid_body" and "invalid type: floating point" in problem.get("detail", ""):
        return "integer written as a float"
    if code == "validation_failed":
        errors = problem.get("errors") or []
        if errors and all(_inexpressible_field(e) for e in errors):
            return ", ".join(sorted({f"{e['field'].split('[')[0]} {e['code']}" for e in errors}))
    return None


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if getattr(failure, "code", None) != "ST202":
        return True
    try:
        problem = json.loads(response.content)
    except ValueError:
        return True
    why = inexpressible(problem) if isinstance(problem, dict) else None
    if why is None:
        return True
    with open(TALLY + ".dropped", "a", encoding="utf-8") as f:
        f.write(why + "\n")
    return False
