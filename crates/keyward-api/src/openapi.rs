//! The OpenAPI 3.1 document served at `/openapi.json`.
//!
//! It is built in three steps:
//! 1. utoipa generates paths, parameters, bodies and each operation's own
//!    error responses from the handlers' `#[utoipa::path]` annotations and
//!    the types in `views`;
//! 2. `constraints` makes the request schemas as strict as the handlers'
//!    validation (lengths, patterns, ranges, item limits, from the same
//!    constants where the handlers have them), and the deployment's
//!    environments, scope catalog, tiers and API-key header are filled in,
//!    so a body valid by the schema is not refused for its shape;
//! 3. the errors every operation can meet outside its handler are added:
//!    the front door's (`invalid_path`, `invalid_host`, `malformed_request`,
//!    `request_timeout`, `overloaded`) and, for operations that take a key,
//!    authentication's (`credentials_misplaced`, 401s, `ip_not_allowed`,
//!    `store_unavailable`).
//!
//! Every 4xx and 5xx response is `application/problem+json` with the
//! `ProblemDoc` schema. The committed `docs/openapi.json` is this document
//! for the default configuration; a test keeps the two equal, and
//! `scripts/schemathesis.sh` checks a running server against it.

use serde_json::{json, Map, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{audit, changes, credits, keys, leaks, meta, tenants, usage, webhooks, ApiSettings};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward",
        description = "Self-hostable API-key platform: issue keys, verify them, manage tenants. Errors are RFC 9457 problem+json with a stable `code`. Integer fields take JSON integers (`5`, not `5.0`)."
    ),
    paths(
        meta::health,
        meta::ready,
        meta::me,
        tenants::create,
        tenants::list,
        tenants::get,
        tenants::update,
        keys::create,
        keys::list,
        keys::get,
        keys::update,
        keys::revoke,
        keys::rotate,
        keys::delete,
        keys::verify,
        changes::list,
        audit::list,
        credits::get,
        credits::change,
        credits::set_refill,
        credits::clear_refill,
        credits::ledger,
        usage::key,
        usage::ips,
        usage::tenant,
        leaks::report,
        leaks::check,
        leaks::of_key,
        leaks::github,
        leaks::gitlab_types,
        leaks::gitlab_revoke,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::update,
        webhooks::delete,
        webhooks::rotate,
        webhooks::test,
        webhooks::deliveries,
        webhooks::delivery,
        webhooks::redeliver,
        webhooks::publish,
        webhooks::alerts,
    ),
    modifiers(&Security),
    tags(
        (name = "meta", description = "Health, readiness and the caller's principal."),
        (name = "tenants", description = "Businesses, accounts or organizations that own keys."),
        (name = "keys", description = "API keys: issue, manage, verify."),
        (name = "audit", description = "Append-only log of management actions."),
        (name = "credits", description = "Tenant credit balances, refills and the ledger."),
        (name = "leaks", description = "Leaked keys: reports from GitHub's secret scanning, GitLab's token revocation API and people, acted on by the deployment's policy; and which hashes are live keys."),
        (name = "webhooks", description = "Signed event delivery (Standard Webhooks v1): endpoints per tenant or operator-wide, their delivery logs, events handed in by the upstream API, and alerts."),
        (name = "usage", description = "Requests per key, tenant header, route and outcome, by minute, hour or day, and each key's client addresses."),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The document served at `/openapi.json`, for this deployment and the
/// `tiers` in force (a reload may change them).
pub(crate) fn document(settings: &ApiSettings, tiers: &[&str]) -> Result<Value, serde_json::Error> {
    let mut api = ApiDoc::openapi();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(&api)?;
    for (schema, property, constraint) in constraints() {
        if let Some(p) = property_mut(&mut doc, schema, property) {
            merge(p, &constraint);
        }
    }
    if let Some(s) = doc.pointer_mut("/components/schemas/ChangeCredits") {
        merge(s, &change_credits());
    }
    deployment(&mut doc, settings, tiers);
    for op in operations_mut(&mut doc) {
        optional_body(op);
        query_constraints(op);
        common_errors(op);
    }
    Ok(doc)
}

/// Printable text: no control characters (what `char::is_control` refuses).
const PRINTABLE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Printable and not blank: at least one character that is neither a
/// control character nor white space (what `str::trim` removes).
const NAME: &str = concat!(
    "^[^\\u0000-\\u001f\\u007f-\\u009f]*",
    "[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
    "[^\\u0000-\\u001f\\u007f-\\u009f]*$"
);
/// `keyward_limits::valid_tier_name`.
const TIER: &str = "^[a-z0-9_-]{1,64}$";
/// `keyward_core::scope::check_syntax` (lengths apart).
const SCOPE: &str = "^[A-Za-z0-9._:/-]*\\*?$";
const IPV4_CIDR: &str = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])$";
/// IPv6 in its full and `::`-compressed forms (not the dotted-quad tail or
/// a zone, which a CIDR does not need), then a prefix.
const IPV6_CIDR: &str = concat!(
    "^(",
    "([0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
    "|([0-9A-Fa-f]{1,4}:){1,7}:",
    "|([0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}",
    "|([0-9A-Fa-f]{1,4}:){1,5}(:[0-9A-Fa-f]{1,4}){1,2}",
    "|([0-9A-Fa-f]{1,4}:){1,4}(:[0-9A-Fa-f]{1,4}){1,3}",
    "|([0-9A-Fa-f]{1,4}:){1,3}(:[0-9A-Fa-f]{1,4}){1,4}",
    "|([0-9A-Fa-f]{1,4}:){1,2}(:[0-9A-Fa-f]{1,4}){1,5}",
    "|[0-9A-Fa-f]{1,4}:(:[0-9A-Fa-f]{1,4}){1,6}",
    "|:((:[0-9A-Fa-f]{1,4}){1,7}|:)",
    ")/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$"
);
/// A hex SHA-256 digest, as the leak endpoints take key hashes.
const SHA256_HEX: &str = "^[0-9a-f]{64}$";
/// `idempotency::key_of`: 1 to 255 printable ASCII characters (a stricter
/// reading: not quoted, no white space at either end).
const IDEMPOTENCY_KEY: &str = "^[!#-~]([ -~]{0,253}[!-~])?$";

fn name(max: usize) -> Value {
    json!({ "minLength": 1, "maxLength": max, "pattern": NAME })
}

fn text(max: usize) -> Value {
    json!({ "maxLength": max, "pattern": PRINTABLE })
}

/// A `u64` field: utoipa says `int64`, which stops at 2^63 - 1.
fn unsigned(min: u64) -> Value {
    json!({ "format": "uint64", "minimum": min, "maximum": u64::MAX })
}

fn limited_array(max: usize, items: Value) -> Value {
    json!({ "maxItems": max, "items": items })
}

/// Constraints merged into `(schema, property)` of the generated component
/// schemas: what each handler checks, said in JSON Schema. Checks a schema
/// cannot express (who may set a field, an expiry in the future, a CIDR
/// without host bits, metadata's size) answer 422 and are described.
fn constraints() -> Vec<(&'static str, &'static str, Value)> {
    let tier = json!({ "pattern": TIER });
    let owner = text(200);
    let grantable = limited_array(
        tenants::MAX_GRANTABLE,
        json!({ "type": "string", "minLength": 1, "maxLength": 128, "pattern": SCOPE }),
    );
    let scopes = limited_array(
        keys::MAX_SCOPES,
        json!({ "type": "string", "minLength": 1, "maxLength": 128, "pattern": SCOPE }),
    );
    let allowlist = limited_array(
        keys::MAX_ALLOWLIST,
        json!({
            "type": "string",
            "description": "An IPv4 or IPv6 address, or a CIDR without host bits (`10.0.0.0/8`, not `10.1.2.3/8`).",
            "anyOf": [
                { "format": "ipv4" },
                { "format": "ipv6" },
                { "pattern": IPV4_CIDR },
                { "pattern": IPV6_CIDR },
            ],
        }),
    );
    let sub_tenants = limited_array(
        keys::MAX_ALLOWLIST,
        json!({ "type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$" }),
    );
    let expiry = json!({ "format": "date-time" });
    let not_negative = json!({ "minimum": 0 });
    vec![
        (
            "CreateTenant",
            "id",
            json!({ "pattern": "^[A-Za-z0-9_-]{1,64}$" }),
        ),
        ("CreateTenant", "name", name(tenants::MAX_NAME)),
        ("CreateTenant", "tier", tier.clone()),
        ("UpdateTenant", "name", name(tenants::MAX_NAME)),
        ("UpdateTenant", "tier", tier.clone()),
        ("CreateTenant", "grantable_scopes", grantable.clone()),
        ("UpdateTenant", "grantable_scopes", grantable),
        ("CreateKey", "name", name(keys::MAX_NAME)),
        ("CreateKey", "scopes", scopes.clone()),
        ("CreateKey", "owner", owner.clone()),
        ("CreateKey", "tier", tier.clone()),
        ("CreateKey", "credit_cap", not_negative.clone()),
        ("CreateKey", "ip_allowlist", allowlist.clone()),
        ("CreateKey", "sub_tenants", sub_tenants.clone()),
        ("CreateKey", "expires_at", expiry.clone()),
        ("UpdateKey", "name", name(keys::MAX_NAME)),
        ("UpdateKey", "scopes", scopes),
        ("UpdateKey", "owner", owner),
        ("UpdateKey", "tier", tier),
        ("UpdateKey", "credit_cap", not_negative.clone()),
        ("UpdateKey", "ip_allowlist", allowlist),
        ("UpdateKey", "sub_tenants", sub_tenants),
        ("UpdateKey", "expires_at", expiry),
        ("RevokeKey", "reason", text(keys::MAX_REASON)),
        (
            "RotateKey",
            "grace_seconds",
            json!({ "minimum": 0, "maximum": keys::MAX_GRACE_SECONDS }),
        ),
        (
            "VerifyKey",
            "scopes",
            json!({ "items": { "type": "string", "minLength": 1, "maxLength": 128, "pattern": SCOPE } }),
        ),
        (
            "VerifyKey",
            "ip",
            json!({ "anyOf": [{ "format": "ipv4" }, { "format": "ipv6" }] }),
        ),
        ("VerifyKey", "cost", unsigned(0)),
        ("VerifyKey", "credits", not_negative.clone()),
        ("RateLimitSpec", "limit", unsigned(1)),
        ("RateLimitSpec", "window_seconds", unsigned(1)),
        ("RateLimitSpec", "burst", unsigned(1)),
        ("RefillSpec", "amount", not_negative),
        (
            "RefillSpec",
            "every",
            json!({ "enum": ["daily", "monthly"] }),
        ),
        ("RefillSpec", "mode", json!({ "enum": ["set", "add"] })),
        (
            "ChangeCredits",
            "kind",
            json!({ "enum": ["grant", "adjust"] }),
        ),
        ("ChangeCredits", "reason", text(500)),
        (
            "CheckLeaks",
            "hashes",
            json!({ "minItems": 1, "maxItems": keyward_manage::MAX_CHECK_HASHES, "items": { "type": "string", "pattern": SHA256_HEX } }),
        ),
        ("ReportLeak", "key_hash", json!({ "pattern": SHA256_HEX })),
    ]
}

/// A grant adds (amount ≥ 1); an adjustment changes (amount ≠ 0).
fn change_credits() -> Value {
    json!({
        "oneOf": [
            { "properties": { "kind": { "const": "grant" }, "amount": { "minimum": 1 } } },
            { "properties": { "kind": { "const": "adjust" }, "amount": { "not": { "const": 0 } } } },
        ]
    })
}

/// What this deployment's configuration decides: its environments, the
/// scopes a key may be granted, its tiers, and the API-key header.
fn deployment(doc: &mut Value, settings: &ApiSettings, tiers: &[&str]) {
    let environments: Vec<Value> = settings
        .credentials
        .format
        .environments()
        .map(Value::from)
        .collect();
    if let Some(p) = property_mut(doc, "CreateKey", "environment") {
        p["enum"] = Value::Array(environments);
    }
    let grantable = grantable_scopes(settings);
    for (schema, property) in [
        ("CreateKey", "scopes"),
        ("UpdateKey", "scopes"),
        ("CreateTenant", "grantable_scopes"),
        ("UpdateTenant", "grantable_scopes"),
    ] {
        if let Some(items) = property_mut(doc, schema, property).and_then(|p| p.get_mut("items")) {
            items["enum"] = json!(grantable);
        }
    }
    if !tiers.is_empty() {
        for schema in ["CreateTenant", "UpdateTenant", "CreateKey", "UpdateKey"] {
            if let Some(p) = property_mut(doc, schema, "tier") {
                let mut values: Vec<Value> = tiers.iter().map(|t| Value::from(*t)).collect();
                if nullable(p) {
                    values.push(Value::Null);
                }
                p["enum"] = Value::Array(values);
            }
        }
    }
    if let Some(s) = doc.pointer_mut("/components/securitySchemes/api_key") {
        s["name"] = Value::from(settings.credentials.header.as_str());
    }
}

/// The catalog's scopes and the wildcards at each `:` boundary that cover
/// them (`*`, `vox:*`, `vox:calls:*`). Other wildcards that cover a
/// declared scope (`vo*`) are accepted too, but not offered.
fn grantable_scopes(settings: &ApiSettings) -> Vec<String> {
    let mut out = std::collections::BTreeSet::from(["*".to_owned()]);
    for s in settings.catalog.declared() {
        out.insert(s.to_owned());
        for (i, _) in s.match_indices(':') {
            out.insert(format!("{}*", &s[..=i]));
        }
    }
    out.into_iter().collect()
}

/// An `Option<T>` body (`MaybeJson`) may be left out, but it is not
/// `null`: utoipa's `oneOf: [null, T]` becomes `T`, not required.
fn optional_body(op: &mut Value) {
    let Some(body) = op.get_mut("requestBody") else {
        return;
    };
    let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) else {
        return;
    };
    let mut optional = false;
    for media in content.values_mut() {
        let Some(one_of) = media.pointer("/schema/oneOf").and_then(Value::as_array) else {
            continue;
        };
        if let [a, b] = one_of.as_slice() {
            let inner = match (
                a.get("type") == Some(&json!("null")),
                b.get("type") == Some(&json!("null")),
            ) {
                (true, false) => b.clone(),
                (false, true) => a.clone(),
                _ => continue,
            };
            media["schema"] = inner;
            optional = true;
        }
    }
    if optional {
        body["required"] = Value::Bool(false);
    }
}

/// Query and path parameters' ranges and values (`keyward_views::paging`,
/// the list filters, ids).
fn query_constraints(op: &mut Value) {
    let operation = op
        .get("operationId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params {
        // A query parameter is absent or a string, never null.
        if p["in"] == "query" {
            if let Some(types) = p.pointer_mut("/schema/type").and_then(Value::as_array_mut) {
                types.retain(|t| t != "null");
                if let [only] = types.as_slice() {
                    let only = only.clone();
                    p["schema"]["type"] = only;
                }
            }
        }
        let constraint = match (p["in"].as_str(), p["name"].as_str()) {
            (Some("query"), Some("limit")) => json!({ "minimum": 1, "maximum": 100 }),
            (Some("query"), Some("status")) => {
                json!({ "enum": ["active", "disabled", "expired", "revoked"] })
            }
            (Some("query"), Some("kind")) if operation == "list_alerts" => json!({
                "enum": ["new_ip", "traffic_spike", "error_rate", "key_dormant",
                         "key_expiring", "credits_low", "endpoint_failing"]
            }),
            (Some("query"), Some("kind")) => json!({ "enum": ["tenant", "root"] }),
            (Some("query"), Some("from" | "to")) => json!({ "format": "date-time" }),
            (Some("query"), Some("granularity")) => json!({ "enum": ["minute", "hour", "day"] }),
            (Some("query"), Some("group_by")) => {
                json!({ "enum": ["key", "tenant_header", "route", "outcome"] })
            }
            // Ids are keyward's (`key_…`, `ten_…`) or a tenant's own id,
            // 1 to 64 of these characters; anything else is not an id (and
            // an encoded slash or backslash is refused before routing).
            (Some("path"), Some("id" | "event_id")) => {
                json!({ "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$" })
            }
            (Some("header"), Some("Idempotency-Key")) => {
                json!({ "minLength": 1, "maxLength": 255, "pattern": IDEMPOTENCY_KEY })
            }
            _ => continue,
        };
        if let Some(schema) = p.get_mut("schema") {
            merge(schema, &constraint);
        }
    }
}

/// Errors answered before routing, on any path.
const FRONT_DOOR: &[(&str, &str)] = &[
    ("400", "`invalid_path`: the path holds an encoded slash, an encoded dot segment or NUL; `invalid_host`: no `Host` header, or more than one; `malformed_request`: the request's framing (e.g. a chunked body) is broken."),
    ("408", "`request_timeout`: the request head or body did not arrive in time."),
    ("503", "`overloaded`: the server is at its connection limit; retry shortly."),
];

/// Errors of every operation that takes a key, from `Caller`.
const AUTHENTICATED: &[(&str, &str)] = &[
    ("400", "`credentials_misplaced`: a key was sent in the query string or a cookie."),
    ("401", "`missing_credentials`, `invalid_api_key`, `revoked_api_key`, `disabled_api_key` or `expired_api_key`: no usable key was presented."),
    ("403", "`ip_not_allowed`: the client address is outside the key's allowlist."),
    ("503", "`store_unavailable`: the store does not answer; `rate_limiter_unavailable`: the shared rate limiter (Redis) does not answer and `redis.on_failure` is `fail_closed` (operations that spend rate limits). Retry shortly."),
];

fn common_errors(op: &mut Value) {
    let authenticated = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let common = FRONT_DOOR
        .iter()
        .chain(authenticated.then_some(AUTHENTICATED).into_iter().flatten());
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    for (status, description) in common {
        let response = responses
            .entry(*status)
            .or_insert_with(|| json!({ "description": "" }));
        let before = response["description"].as_str().unwrap_or_default();
        response["description"] = Value::from(if before.is_empty() {
            (*description).to_owned()
        } else {
            format!("{before} {description}")
        });
        response["content"] = json!({
            "application/problem+json": {
                "schema": { "$ref": "#/components/schemas/ProblemDoc" }
            }
        });
        if *status == "401" {
            response["headers"] = json!({
                "WWW-Authenticate": {
                    "description": "One challenge per way this deployment accepts keys (`keys.schemes`): `Bearer realm=\"keyward\"` (with `error=\"invalid_token\"` and the code when a key was presented), `Basic realm=\"keyward\", charset=\"UTF-8\"`, or, when only the header scheme is on, `ApiKey realm=\"keyward\", header=\"<keys.header>\"`.",
                    "schema": { "type": "string" }
                }
            });
        }
    }
    // Statuses in order, whatever order they were added in.
    let mut sorted: Vec<(String, Value)> = std::mem::take(responses).into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    responses.extend(sorted);
}

fn operations_mut(doc: &mut Value) -> impl Iterator<Item = &mut Value> {
    doc.get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(Map::values_mut)
}

fn property_mut<'a>(doc: &'a mut Value, schema: &str, property: &str) -> Option<&'a mut Value> {
    doc.pointer_mut(&format!(
        "/components/schemas/{schema}/properties/{property}"
    ))
}

fn nullable(schema: &Value) -> bool {
    match &schema["type"] {
        Value::Array(types) => types.iter().any(|t| t == "null"),
        t => t == "null",
    }
}

/// Sets each of `patch`'s members in `target` (an object).
fn merge(target: &mut Value, patch: &Value) {
    if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            t.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::scope::ScopeCatalog;
    use keyward_core::secret::KeyFormat;
    use keyward_verify::credential::CredentialRules;

    /// The settings of a deployment with these environments, API-key
    /// header and declared scopes (the default configuration's root
    /// prefix).
    fn settings(environments: &[(&str, &str)], header: &str, scopes: &[&str]) -> ApiSettings {
        let format = KeyFormat::new(environments.iter().copied(), "kw_root_").unwrap();
        ApiSettings {
            credentials: CredentialRules {
                header: header.to_owned(),
                format,
            },
            trusted_proxies: Vec::new(),
            catalog: ScopeCatalog::new(scopes.iter().copied()).unwrap(),
        }
    }

    /// The default configuration's.
    fn default_settings() -> ApiSettings {
        settings(
            &[("live", "kw_live_"), ("test", "kw_test_")],
            "X-API-Key",
            &[],
        )
    }

    fn doc() -> Value {
        document(&default_settings(), &[]).unwrap()
    }

    #[test]
    fn every_constraint_lands_on_a_property() {
        let mut doc = doc();
        for (schema, property, _) in constraints() {
            assert!(
                property_mut(&mut doc, schema, property).is_some(),
                "{schema}.{property} is not in the document"
            );
        }
        assert!(doc
            .pointer("/components/schemas/ChangeCredits/oneOf")
            .is_some());
    }

    #[test]
    fn the_deployment_reaches_the_document() {
        let settings = settings(&[("prod", "acme_prod_")], "X-Acme-Key", &[]);
        let doc = document(&settings, &["gold"]).unwrap();
        let at = |p: &str| doc.pointer(p).cloned().unwrap_or_default();
        assert_eq!(at("/components/securitySchemes/api_key/name"), "X-Acme-Key");
        assert_eq!(
            at("/components/schemas/CreateKey/properties/environment/enum"),
            json!(["prod"])
        );
        assert_eq!(
            at("/components/schemas/CreateTenant/properties/tier/enum"),
            json!(["gold", null])
        );
    }

    #[test]
    fn grantable_scopes_are_the_catalog_and_its_segment_wildcards() {
        let settings = settings(
            &[("live", "kw_live_"), ("test", "kw_test_")],
            "X-API-Key",
            &["vox:calls:create"],
        );
        let scopes = grantable_scopes(&settings);
        for s in [
            "*",
            "vox:*",
            "vox:calls:*",
            "vox:calls:create",
            "keyward:keys:*",
        ] {
            assert!(scopes.iter().any(|g| g == s), "{s} missing from {scopes:?}");
            assert!(
                settings.catalog.check_grant(s).is_ok(),
                "{s} is offered but refused"
            );
        }
    }
}
