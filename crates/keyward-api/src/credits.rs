//! Tenant credits: balance, grants and adjustments, refill schedules and
//! the ledger. Reading needs `keyward:credits:read` (a tenant key reads its
//! own tenant); changing needs `keyward:credits:write` on an operator root
//! key, since credits are what customers pay for.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_manage::{CreditChangeInput, Credits};

use super::views::{
    ChangeCredits, CreditsView, LedgerEntryView, LedgerPage, ProblemDoc, RefillSpec,
};
use super::{Caller, Json, Query};
use crate::ApiState;
use keyward_gateway::idempotency;
use keyward_http::error::ApiError;
use keyward_views::{ledger_entry_view, page_parts, paging, refill_spec, store_refill};
use keyward_wire::ListLedger;

/// The balance is the ledger's notion, the tenant's credits not yet spent
/// (stored balance + every node's reservation), less what this node spent
/// and has not settled yet: on one node the exact balance; with several,
/// other nodes' spends since their last settlement (one
/// `credits.settle_interval_ms`) are still counted.
fn view(state: &ApiState, c: &Credits) -> CreditsView {
    let a = &c.account;
    let unsettled = state.limits.credits.unsettled(&c.tenant.id);
    let tier = c.tier_refill;
    let (refill, source) = match (a.refill, tier) {
        (Some(r), _) => (Some(r), Some("tenant")),
        (None, Some(r)) => (Some(r), Some("tier")),
        (None, None) => (None, None),
    };
    let time = |ms: i64| keyward_core::clock::Timestamp(ms).to_rfc3339();
    CreditsView {
        tenant_id: a.tenant_id.clone(),
        balance: (a.balance + a.reserved - unsettled).max(0),
        refill: refill.map(refill_spec),
        refill_source: source.map(str::to_owned),
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
pub(crate) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<CreditsView>, ApiError> {
    let credits = state.manage.credits(&caller.actor, &id).await?;
    Ok(axum::Json(view(&state, &credits)))
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
pub(crate) async fn change(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ChangeCredits>,
) -> Result<Response, ApiError> {
    let input = CreditChangeInput {
        kind: body.kind,
        amount: body.amount,
        reason: body.reason,
        idempotency_key: idempotency::key_of(&headers).map_err(|e| match e {
            ApiError::InvalidIdempotencyKey(why) => why,
            _ => "is invalid",
        }),
    };
    let outcome = state
        .manage
        .change_credits(&caller.actor, &id, input)
        .await?;
    let view = axum::Json(ledger_entry_view(&outcome.entry));
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
pub(crate) async fn set_refill(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<RefillSpec>,
) -> Result<axum::Json<CreditsView>, ApiError> {
    let refill = store_refill(&body);
    let credits = state.manage.set_refill(&caller.actor, &id, refill).await?;
    Ok(axum::Json(view(&state, &credits)))
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
pub(crate) async fn clear_refill(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<CreditsView>, ApiError> {
    let credits = state.manage.clear_refill(&caller.actor, &id).await?;
    Ok(axum::Json(view(&state, &credits)))
}

/// The tenant's credit ledger, newest first: grants, adjustments, refills,
/// and spends (one entry per key per committed batch). Each entry's
/// `balance_after` is the tenant's credits not yet spent after it (the
/// stored balance plus every node's reservation), so entries chain: an
/// entry's `balance_after` is the next older entry's plus its `amount`.
/// `keyward:credits:read`.
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
pub(crate) async fn ledger(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ListLedger>,
) -> Result<axum::Json<LedgerPage>, ApiError> {
    // This node's spends so far belong in the answer.
    let settle = state.limits.credits.settle(false);
    let page = state
        .manage
        .ledger(
            &caller.actor,
            &id,
            paging(q.limit, q.cursor.as_deref()),
            settle,
        )
        .await?;
    let (data, next_cursor, has_more) = page_parts(&page, ledger_entry_view);
    Ok(axum::Json(LedgerPage {
        data,
        next_cursor,
        has_more,
    }))
}
