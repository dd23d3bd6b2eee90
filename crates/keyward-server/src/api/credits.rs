//! Tenant credits: balance, grants and adjustments, refill schedules and
//! the ledger. Reading needs `keyward:credits:read` (a tenant key reads its
//! own tenant); changing needs `keyward:credits:write` on an operator root
//! key, since credits are what customers pay for.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_core::id::new_id;
use keyward_store::limits::{CreditAccount, CreditChange, LedgerKind, Refill};
use keyward_store::{StoreError, Tenant};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::views::{
    ChangeCredits, CreditsView, LedgerEntryView, LedgerPage, ProblemDoc, RefillSpec,
};
use super::{encode_cursor, page_request, Caller, Json, Query};
use crate::app::AppState;
use crate::error::{ApiError, FieldError};
use crate::idempotency;

async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<Tenant, ApiError> {
    if !caller.sees_tenant(Some(id)) {
        return Err(ApiError::NotFound("tenant"));
    }
    state.store.get_tenant(id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::NotFound("tenant"),
        other => other.into(),
    })
}

fn tier_refill(state: &AppState, tenant: &Tenant) -> Option<Refill> {
    state
        .policy
        .current()
        .tiers
        .refill_for_tenant(tenant.tier.as_deref())
}

/// The balance as this node knows it: stored plus this node's unspent
/// reservation (other nodes' reservations are not shown: they may be spent).
async fn view(state: &AppState, tenant: &Tenant, a: &CreditAccount) -> CreditsView {
    let reserved = state.limits.credits.reserved(&tenant.id).await;
    let tier = tier_refill(state, tenant);
    let (refill, source) = match (a.refill, tier) {
        (Some(r), _) => (Some(r), Some("tenant")),
        (None, Some(r)) => (Some(r), Some("tier")),
        (None, None) => (None, None),
    };
    let time = |ms: i64| keyward_core::clock::Timestamp(ms).to_rfc3339();
    CreditsView {
        tenant_id: a.tenant_id.clone(),
        balance: a.balance + reserved,
        refill: refill.map(RefillSpec::from),
        refill_source: source,
        last_refill_at: a.last_refill_at.map(time),
        next_refill_at: a.next_refill_at.map(time),
    }
}

/// A tenant's credit balance and refill schedule (`keyward:credits:read`).
/// A refill that is due is applied first.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/credits",
    tag = "credits",
    operation_id = "get_credits",
    params(("id" = String, Path, description = "The tenant's id, e.g. `ten_3fQ9…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = CreditsView),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:credits:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<CreditsView>, ApiError> {
    caller.require("keyward:credits:read")?;
    let tenant = visible(&state, &caller, &id).await?;
    let account = state
        .store
        .credit_account(&id, tier_refill(&state, &tenant), state.clock.now().0)
        .await?;
    Ok(axum::Json(view(&state, &tenant, &account).await))
}

/// Grants (`kind: grant`, amount > 0) or adjusts (`kind: adjust`, either
/// sign) a tenant's credits; the balance never goes below zero. Send an
/// `Idempotency-Key` header to make retries safe: the same key replays the
/// first result (`Idempotent-Replayed: true`), the same key with another
/// body answers 422. Operator root keys with `keyward:credits:write`.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/credits",
    tag = "credits",
    operation_id = "change_credits",
    request_body = ChangeCredits,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    params(
        ("id" = String, Path, description = "The tenant's id, e.g. `ten_3fQ9…`."),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1-255 printable ASCII characters, bare or in double quotes."),
    ),
    responses(
        (status = 201, body = LedgerEntryView),
        (status = 200, body = LedgerEntryView, description = "A replay of an earlier change with the same Idempotency-Key."),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field. `invalid_idempotency_key`: the Idempotency-Key header is malformed.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:credits:write`; `root_key_required`: operator root keys only.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`insufficient_balance`: the adjustment would take the balance below zero.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field. `idempotency_key_reused`: the Idempotency-Key was used for another change.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ChangeCredits>,
) -> Result<Response, ApiError> {
    caller.require("keyward:credits:write")?;
    caller.require_root()?;
    let tenant = visible(&state, &caller, &id).await?;
    let idempotency_key = idempotency::key_of(&headers)?;
    let mut errors = Vec::new();
    let kind = match body.kind.as_str() {
        "grant" => {
            if body.amount <= 0 {
                errors.push(FieldError::new(
                    "amount",
                    "out_of_range",
                    "a grant adds credits: amount must be positive",
                ));
            }
            LedgerKind::Grant
        }
        "adjust" => {
            if body.amount == 0 {
                errors.push(FieldError::new(
                    "amount",
                    "out_of_range",
                    "an adjustment must change the balance: amount must not be 0",
                ));
            }
            LedgerKind::Adjust
        }
        _ => {
            errors.push(FieldError::new(
                "kind",
                "invalid",
                "kind must be grant or adjust",
            ));
            LedgerKind::Adjust
        }
    };
    if let Some(r) = &body.reason {
        if r.chars().count() > 500 || r.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "reason",
                "invalid",
                "reason must be at most 500 printable characters",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut h = Sha256::new();
    h.update(format!(
        "{}\n{}\n{}",
        body.kind,
        body.amount,
        body.reason.as_deref().unwrap_or("")
    ));
    let fingerprint: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let ledger_id = new_id("led", state.entropy.as_ref()).map_err(|_| ApiError::Internal)?;
    let audit = caller.audit(
        &state,
        if kind == LedgerKind::Grant {
            "credits.granted"
        } else {
            "credits.adjusted"
        },
        &ledger_id,
        Some(&id),
        json!({ "amount": body.amount, "reason": body.reason }),
    )?;
    let change = CreditChange {
        id: ledger_id,
        tenant_id: id.clone(),
        kind,
        amount: body.amount,
        at: state.clock.now().0,
        actor: caller.key.record.id.clone(),
        reason: body.reason,
        idempotency_key,
        fingerprint,
        refill: tier_refill(&state, &tenant),
    };
    let outcome = state
        .store
        .change_credits(&change, &audit)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) if m.contains("Idempotency-Key") => {
                ApiError::IdempotencyKeyReused
            }
            StoreError::Conflict(m) => ApiError::Conflict {
                code: "insufficient_balance",
                message: format!("The balance is too low: {m}."),
            },
            other => other.into(),
        })?;
    let view = axum::Json(LedgerEntryView::from(&outcome.entry));
    Ok(if outcome.replayed {
        let mut r = (StatusCode::OK, view).into_response();
        r.headers_mut()
            .insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
        r
    } else {
        (StatusCode::CREATED, view).into_response()
    })
}

/// Sets the tenant's own refill schedule, which wins over its tier's. It
/// applies at once, then at each boundary. Operator root keys with
/// `keyward:credits:write`.
#[utoipa::path(
    put,
    path = "/v1/tenants/{id}/credits/refill",
    tag = "credits",
    operation_id = "set_refill",
    params(("id" = String, Path, description = "The tenant's id, e.g. `ten_3fQ9…`.")),
    request_body = RefillSpec,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = CreditsView),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:credits:write`; `root_key_required`: operator root keys only.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn set_refill(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<RefillSpec>,
) -> Result<axum::Json<CreditsView>, ApiError> {
    caller.require("keyward:credits:write")?;
    caller.require_root()?;
    let tenant = visible(&state, &caller, &id).await?;
    if body.amount < 0 {
        return Err(ApiError::Validation(vec![FieldError::new(
            "amount",
            "out_of_range",
            "amount must not be negative",
        )]));
    }
    let refill = Refill {
        amount: body.amount,
        every: body.every,
        mode: body.mode,
    };
    let audit = caller.audit(
        &state,
        "credits.refill_set",
        &id,
        Some(&id),
        json!({ "refill": refill }),
    )?;
    let now = state.clock.now().0;
    state
        .store
        .set_refill(&id, Some(refill), now, &audit)
        .await?;
    let account = state
        .store
        .credit_account(&id, tier_refill(&state, &tenant), now)
        .await?;
    Ok(axum::Json(view(&state, &tenant, &account).await))
}

/// Removes the tenant's own refill schedule (its tier's applies, if any).
#[utoipa::path(
    delete,
    path = "/v1/tenants/{id}/credits/refill",
    tag = "credits",
    operation_id = "clear_refill",
    params(("id" = String, Path, description = "The tenant's id, e.g. `ten_3fQ9…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = CreditsView),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:credits:write`; `root_key_required`: operator root keys only.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn clear_refill(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<CreditsView>, ApiError> {
    caller.require("keyward:credits:write")?;
    caller.require_root()?;
    let tenant = visible(&state, &caller, &id).await?;
    let audit = caller.audit(&state, "credits.refill_cleared", &id, Some(&id), json!({}))?;
    let now = state.clock.now().0;
    let account = state.store.set_refill(&id, None, now, &audit).await?;
    Ok(axum::Json(view(&state, &tenant, &account).await))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListLedger {
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The tenant's credit ledger, newest first: grants, adjustments, refills,
/// and spends (one entry per key per committed batch). `keyward:credits:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/credits/ledger",
    tag = "credits",
    operation_id = "list_ledger",
    params(
        ("id" = String, Path, description = "The tenant's id, e.g. `ten_3fQ9…`."),
        ListLedger,
    ),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = LedgerPage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:credits:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `limit` is not 1 to 100 (`errors` says so).", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub async fn ledger(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ListLedger>,
) -> Result<axum::Json<LedgerPage>, ApiError> {
    caller.require("keyward:credits:read")?;
    visible(&state, &caller, &id).await?;
    // This node's spends so far belong in the answer.
    state.limits.credits.settle(false).await?;
    let page = state
        .store
        .list_ledger(&id, page_request(q.limit, q.cursor.as_deref())?)
        .await?;
    Ok(axum::Json(LedgerPage {
        data: page
            .items
            .iter()
            .map(|(_, e)| LedgerEntryView::from(e))
            .collect(),
        next_cursor: page.next.map(encode_cursor),
        has_more: page.next.is_some(),
    }))
}
