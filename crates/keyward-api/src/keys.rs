//! Keys: create (secret shown once), list, read, update, revoke, rotate,
//! delete, and verify.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keyward_core::scope;
use keyward_core::verdict::Denial;
use keyward_manage::{limits, KeyChanges, KeyQuery, NewKey, RateLimitInput};
use keyward_observe::{KeyFacts, Observation, Surface};
use keyward_store::{KeyClass, OutcomeClass};

use super::views::PrincipalExt;
use super::views::{
    CreateKey, CreditState, KeyPage, KeyView, KeyWithSecret, Principal, ProblemDoc, RateLimitSpec,
    RevokeKey, RotateKey, UpdateKey, VerifyKey, VerifyResult,
};
use super::{Caller, Json, MaybeJson, Query};
use crate::ApiState;
use keyward_http::error::{ApiError, FieldError};
use keyward_verify::credential::{Presented, Secret};
use keyward_verify::verifier::{Outcome, Request};
use keyward_views::{page_parts, paging, with_secret, KeyViewExt};
use keyward_wire::ListKeys;
use keyward_wire::{RatePolicySpec, VerifyPolicy, VerifyQuery};

pub(crate) const MAX_NAME: usize = limits::MAX_KEY_NAME;
pub(crate) const MAX_ALLOWLIST: usize = limits::MAX_ALLOWLIST;
pub(crate) const MAX_SCOPES: usize = limits::MAX_SCOPES;
pub(crate) const MAX_REASON: usize = limits::MAX_REASON;
pub(crate) const MAX_GRACE_SECONDS: u64 = limits::MAX_GRACE_SECONDS;

fn rate_limit(r: &RateLimitSpec) -> RateLimitInput {
    RateLimitInput {
        limit: r.limit,
        window_seconds: r.window_seconds,
        burst: r.burst,
    }
}

/// The request body as the service's input.
pub(crate) fn new_key(body: CreateKey) -> NewKey {
    NewKey {
        rate_limit: body.rate_limit.as_ref().map(rate_limit),
        tenant_id: body.tenant_id,
        name: body.name,
        // Absent reads as empty: the service names the field as required.
        environment: body.environment.unwrap_or_default(),
        scopes: body.scopes,
        owner: body.owner,
        tier: body.tier,
        credit_cap: body.credit_cap,
        ip_allowlist: body.ip_allowlist,
        sub_tenants: body.sub_tenants,
        expires_at: body.expires_at,
        metadata: body.metadata,
        enabled: body.enabled,
    }
}

/// The request body as the service's input.
pub(crate) fn key_changes(body: UpdateKey) -> KeyChanges {
    KeyChanges {
        rate_limit: body.rate_limit.as_ref().map(|r| r.as_ref().map(rate_limit)),
        name: body.name,
        owner: body.owner,
        scopes: body.scopes,
        tier: body.tier,
        credit_cap: body.credit_cap,
        ip_allowlist: body.ip_allowlist,
        sub_tenants: body.sub_tenants,
        expires_at: body.expires_at,
        metadata: body.metadata,
        enabled: body.enabled,
    }
}

/// Creates a key. The response holds the secret; it is never shown again.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    operation_id = "create_key",
    request_body = CreateKey,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 201, body = KeyWithSecret),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:write`. `scope_not_grantable`: a scope the key may not grant.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`name_taken`: a live key of the tenant has this name.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, axum::Json<KeyWithSecret>), ApiError> {
    let issued = state
        .manage
        .create_key(&caller.actor, new_key(body))
        .await?;
    Ok((StatusCode::CREATED, axum::Json(with_secret(&issued))))
}

/// Lists keys, newest first (`keyward:keys:read`).
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    operation_id = "list_keys",
    params(ListKeys),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyPage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:read`. `root_key_required`: `kind=root` from a tenant key.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: `tenant_id` names another tenant (tenant keys).", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `status`, `kind` or `limit` is not one of its values (`errors` names them).", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<ListKeys>,
) -> Result<axum::Json<KeyPage>, ApiError> {
    let query = KeyQuery {
        tenant_id: q.tenant_id,
        environment: q.environment,
        status: q.status,
        kind: q.kind,
        paging: paging(q.limit, q.cursor.as_deref()),
    };
    let page = state.manage.list_keys(&caller.actor, query).await?;
    let now = state.clock.now();
    let (data, next_cursor, has_more) = page_parts(&page, |k| KeyView::new(k, now));
    Ok(axum::Json(KeyPage {
        data,
        next_cursor,
        has_more,
    }))
}

/// One key (`keyward:keys:read`).
#[utoipa::path(
    get,
    path = "/v1/keys/{id}",
    tag = "keys",
    operation_id = "get_key",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyView),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    let k = state.manage.get_key(&caller.actor, &id).await?;
    Ok(axum::Json(KeyView::new(&k, state.clock.now())))
}

/// Changes a key's name, scopes, expiry, allowlist, metadata or enabled flag (`keyward:keys:write`).
#[utoipa::path(
    patch,
    path = "/v1/keys/{id}",
    tag = "keys",
    operation_id = "update_key",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    request_body = UpdateKey,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyView),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:write`. `scope_not_grantable`: a scope the key may not grant.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`key_revoked`: a revoked key cannot be changed. `last_root_key`: the change would disable, or take `keyward:keys:write` from, the last active root key that can manage keys.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateKey>,
) -> Result<axum::Json<KeyView>, ApiError> {
    let k = state
        .manage
        .update_key(&caller.actor, &id, key_changes(body))
        .await?;
    Ok(axum::Json(KeyView::new(&k, state.clock.now())))
}

/// Revokes a key at once: the very next request with it is refused (`keyward:keys:write`).
/// Idempotent: revoking a revoked key changes and audits nothing, answers
/// the key as it is, and says so in `Keyward-Already-Revoked: true`.
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/revoke",
    tag = "keys",
    operation_id = "revoke_key",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    request_body(content = Option<RevokeKey>, description = "Optional; an empty body revokes without a reason."),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyView, headers(("Keyward-Already-Revoked" = String, description = "`true` when the key was revoked before this call (nothing changed)."))),
        (status = 400, description = "`invalid_body`: not JSON (an empty body is fine), a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`last_root_key`: the last active root key cannot be revoked; create another with `keyward root-keys create` first.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn revoke(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    MaybeJson(body): MaybeJson<RevokeKey>,
) -> Result<axum::response::Response, ApiError> {
    let reason = body.and_then(|b| b.reason);
    let r = state.manage.revoke_key(&caller.actor, &id, reason).await?;
    let view = axum::Json(KeyView::new(&r.key, state.clock.now()));
    Ok(if r.already_revoked {
        ([("keyward-already-revoked", "true")], view).into_response()
    } else {
        view.into_response()
    })
}

/// Issues a new secret for a key. The old secret keeps working for
/// `grace_seconds` (0 = it stops now). Returns the new secret once (`keyward:keys:write`).
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/rotate",
    tag = "keys",
    operation_id = "rotate_key",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    request_body(content = Option<RotateKey>, description = "Optional; an empty body ends the old secret now."),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 201, body = KeyWithSecret),
        (status = 400, description = "`invalid_body`: not JSON (an empty body is fine), a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:write`. `scope_not_grantable`: the key may not grant the scopes the rotated key holds.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`root_key_rotation`: root keys are rotated with the CLI; `key_not_rotatable`: the key is revoked, expired or already rotated.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn rotate(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    MaybeJson(body): MaybeJson<RotateKey>,
) -> Result<(StatusCode, axum::Json<KeyWithSecret>), ApiError> {
    let grace = body.map_or(0, |b| b.grace_seconds);
    let issued = state.manage.rotate_key(&caller.actor, &id, grace).await?;
    Ok((StatusCode::CREATED, axum::Json(with_secret(&issued))))
}

/// Deletes a key: it stops working at once and disappears from listings (`keyward:keys:write`).
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    operation_id = "delete_key",
    params(("id" = String, Path, description = "The key's id, e.g. `key_3fQ9…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`cannot_delete_self`: a key cannot delete itself; `last_root_key`: the last active root key cannot be deleted.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.manage.delete_key(&caller.actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Verifies a presented key. Always HTTP 200: the verdict is data
/// (`valid`, `code`). Needs `keyward:keys:verify`; a tenant key verifies
/// only its own tenant's keys (others are `invalid_api_key`). With
/// `?include_policy=true` the answer also holds the key's `policy`, so a
/// service can cache the key by its hash and decide later requests itself
/// (following `GET /v1/changes` to drop what changed).
#[utoipa::path(
    post,
    path = "/v1/keys/verify",
    tag = "keys",
    operation_id = "verify_key",
    params(VerifyQuery),
    request_body = VerifyKey,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = VerifyResult, description = "The verdict, valid or not."),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:verify`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn verify(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<VerifyQuery>,
    Json(body): Json<VerifyKey>,
) -> Result<axum::response::Response, ApiError> {
    caller.actor.require("keyward:keys:verify")?;
    let include_policy = query.include_policy.unwrap_or(false);
    let mut errors = Vec::new();
    for (i, s) in body.scopes.iter().enumerate() {
        if let Err(e) = scope::check_syntax(s) {
            errors.push(FieldError::new(
                format!("scopes[{i}]"),
                "invalid",
                e.to_string(),
            ));
        }
    }
    let ip = match body.ip.as_deref().map(str::parse::<IpAddr>) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => {
            errors.push(FieldError::new(
                "ip",
                "invalid",
                "ip must be an IPv4 or IPv6 address",
            ));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if body.credits.is_some_and(|c| c < 0) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "credits",
            "out_of_range",
            "credits must not be negative",
        )]));
    }
    let started = std::time::Instant::now();
    let presented = Presented::Secret(Secret::new(body.key));
    let outcome = state
        .verifier
        .verify(
            &presented,
            Request {
                client_ip: ip,
                required_scopes: &body.scopes,
            },
        )
        .await?;
    let foreign = |k: &keyward_verify::verifier::CachedKey| {
        k.record.class != KeyClass::Tenant
            || !caller.actor.sees_tenant(k.record.tenant_id.as_deref())
    };
    let denied = |d: Denial, key: Option<Principal>| VerifyResult {
        valid: false,
        code: d.code().to_owned(),
        missing_scopes: match &d {
            Denial::InsufficientScope { missing } => Some(missing.clone()),
            _ => None,
        },
        retry_after: match &d {
            Denial::RateLimited {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            _ => None,
        },
        message: Some(d.message()),
        key,
        ratelimit: None,
        credits: None,
        policy: None,
    };
    let policy_of = |k: &keyward_verify::verifier::CachedKey| {
        include_policy.then(|| verify_policy(k, &state.policy.current().tiers))
    };
    let mut rate = None;
    let mut counted: Option<&keyward_verify::verifier::CachedKey> = None;
    let mut credits = 0;
    let mut code: &'static str = "valid";
    let result = match &outcome {
        Outcome::Valid(k) if !foreign(k) => {
            counted = Some(k);
            // Rate limit, then credits: spent only now that all else passed.
            let policy = state.policy.current();
            let spent = state
                .limits
                .spend(
                    &policy.tiers,
                    &keyward_gateway::spender(k),
                    body.cost.unwrap_or(1),
                    body.credits.unwrap_or(0),
                    state.clock.now(),
                )
                .await?;
            match spent {
                Ok(spent) => {
                    rate = spent.rate;
                    if spent.credits.is_some() {
                        credits = body.credits.unwrap_or(0);
                    }
                    VerifyResult {
                        valid: true,
                        code: "valid".to_owned(),
                        key: Some(Principal::new(k)),
                        missing_scopes: None,
                        message: None,
                        ratelimit: rate.as_ref().map(super::views::rate_limit_state),
                        credits: spent.credits.map(|c| CreditState {
                            balance: c.balance,
                            key_remaining: c.key_remaining,
                        }),
                        retry_after: None,
                        policy: policy_of(k),
                    }
                }
                Err(refused) => {
                    rate = refused.rate;
                    code = refused.denial.code();
                    VerifyResult {
                        ratelimit: rate.as_ref().map(super::views::rate_limit_state),
                        policy: policy_of(k),
                        ..denied(refused.denial, Some(Principal::new(k)))
                    }
                }
            }
        }
        Outcome::Denied(d, Some(k)) if !foreign(k) => {
            counted = Some(k);
            code = d.code();
            VerifyResult {
                policy: policy_of(k),
                ..denied(d.clone(), Some(Principal::new(k)))
            }
        }
        Outcome::Denied(d, None) => {
            code = d.code();
            denied(d.clone(), None)
        }
        // A key of another tenant (or a root key) does not exist for this caller.
        _ => {
            code = Denial::InvalidApiKey.code();
            denied(Denial::InvalidApiKey, None)
        }
    };
    let class = if result.valid {
        OutcomeClass::Success
    } else {
        OutcomeClass::Denied
    };
    state.observer.observe(&Observation {
        surface: Surface::Verify,
        at: state.clock.now(),
        route: "POST /v1/keys/verify",
        key: counted.map(|k| KeyFacts {
            key_id: &k.record.id,
            tenant_id: k.record.tenant_id.as_deref(),
        }),
        tenant_header: None,
        outcome: code,
        class,
        status: 200,
        credits,
        latency: started.elapsed(),
        upstream: None,
        client_ip: ip,
    });
    let mut response = axum::Json(result).into_response();
    if let Some(r) = rate {
        r.write_headers(response.headers_mut());
    }
    Ok(response)
}

/// A known key's policy for `include_policy`: its stored facts, and the
/// rate limit the tiers in force give it (what the verify API itself would
/// spend against).
fn verify_policy(
    k: &keyward_verify::verifier::CachedKey,
    tiers: &keyward_limits::Tiers,
) -> VerifyPolicy {
    let r = &k.record;
    VerifyPolicy {
        revoked: k.policy.revoked,
        enabled: r.enabled,
        expires_at_ms: r.expires_at,
        grace_until_ms: r.grace_until,
        ip_allowlist: r.ip_allowlist.clone(),
        scopes: r.scopes.clone(),
        environment: r.environment.clone(),
        tenant_id: r.tenant_id.clone(),
        sub_tenants: r.sub_tenants.clone(),
        credit_cap: r.credit_cap,
        rate_limit: tiers
            .policy_for(&keyward_gateway::spender(k))
            .map(|p| RatePolicySpec {
                policy: p.name.to_string(),
                limit: p.limit,
                window_ms: p.window_ms,
                burst: p.burst,
            }),
    }
}
