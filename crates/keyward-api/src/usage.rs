//! Usage: a key's series (`/v1/keys/{id}/usage`), a tenant's usage grouped
//! (`/v1/tenants/{id}/usage`), a key's client addresses
//! (`/v1/keys/{id}/ips`). Counts arrive from every node's recorder within
//! `usage.counts_interval_ms`.

use axum::extract::{Path, State};
use keyward_core::clock::Timestamp;
use keyward_manage::{GroupPaging, UsageWindow};
use keyward_store::{Granularity, GroupBy};

use super::views::ProblemDoc;
use super::{Caller, Query};
use crate::ApiState;
use keyward_http::error::{ApiError, FieldError};
use keyward_views::{decode_group_cursor, group_cursor, offset_cursor, paging, usage_counts_view};
use keyward_wire::{
    KeyIpPage, KeyIpView, KeyUsageView, ListIps, TenantUsagePage, TenantUsageQuery, UsageGroupView,
    UsagePoint, UsageQuery,
};

/// The window a query asks for, or the fields it got wrong.
fn window(
    from: Option<&str>,
    to: Option<&str>,
    granularity: Option<&str>,
) -> Result<UsageWindow, ApiError> {
    let mut errors = Vec::new();
    let mut time = |field: &str, v: Option<&str>| match v.map(Timestamp::parse_rfc3339) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            errors.push(FieldError::new(field, "invalid", e.to_string()));
            None
        }
    };
    let from = time("from", from);
    let to = time("to", to);
    let granularity = match granularity {
        None => None,
        Some(g) => match Granularity::parse(g) {
            Some(g) => Some(g),
            None => {
                errors.push(FieldError::new(
                    "granularity",
                    "invalid",
                    "granularity must be minute, hour or day",
                ));
                None
            }
        },
    };
    if errors.is_empty() {
        Ok(UsageWindow {
            from,
            to,
            granularity,
        })
    } else {
        Err(ApiError::Validation(errors))
    }
}

const RANGE_ERRORS: &str = "`validation_failed`: `from` or `to` is not an RFC 3339 time, `granularity` is not `minute`, `hour` or `day`, `from` is not before `to` (`invalid_range`), or the range holds more than 2,200 buckets (`range_too_large`); `errors` names the field.";

/// A key's usage over a range, bucket by bucket (`keyward:keys:read`).
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/usage",
    tag = "usage",
    operation_id = "get_key_usage",
    params(("id" = String, Path, description = "The key's id."), UsageQuery),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyUsageView),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = RANGE_ERRORS, body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn key(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<axum::Json<KeyUsageView>, ApiError> {
    let w = window(q.from.as_deref(), q.to.as_deref(), q.granularity.as_deref())?;
    let usage = state.manage.key_usage(&caller.actor, &id, w).await?;
    Ok(axum::Json(KeyUsageView {
        key_id: usage.key.id,
        granularity: usage.range.granularity.as_str().to_owned(),
        from: Timestamp(usage.range.from).to_rfc3339(),
        to: Timestamp(usage.range.to).to_rfc3339(),
        totals: usage_counts_view(&usage.totals),
        points: usage
            .points
            .iter()
            .map(|(start, c)| UsagePoint {
                start: Timestamp(*start).to_rfc3339(),
                counts: usage_counts_view(c),
            })
            .collect(),
    }))
}

/// A tenant's usage over a range, grouped by key, tenant header value,
/// route or outcome (`keyward:tenants:read`).
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/usage",
    tag = "usage",
    operation_id = "get_tenant_usage",
    params(("id" = String, Path, description = "The tenant's id."), TenantUsageQuery),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = TenantUsagePage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:tenants:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = RANGE_ERRORS, body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn tenant(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<TenantUsageQuery>,
) -> Result<axum::Json<TenantUsagePage>, ApiError> {
    let mut w = window(q.from.as_deref(), q.to.as_deref(), q.granularity.as_deref());
    let by = match q.group_by.as_deref() {
        None => GroupBy::Key,
        Some(g) => match GroupBy::parse(g) {
            Some(by) => by,
            None => {
                let e = FieldError::new(
                    "group_by",
                    "invalid",
                    "group_by must be key, tenant_header, route or outcome",
                );
                w = Err(match w {
                    Err(ApiError::Validation(mut errors)) => {
                        errors.push(e);
                        ApiError::Validation(errors)
                    }
                    _ => ApiError::Validation(vec![e]),
                });
                GroupBy::Key
            }
        },
    };
    let w = w?;
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_group_cursor(c).ok_or(ApiError::InvalidCursor)?),
    };
    let usage = state
        .manage
        .tenant_usage(
            &caller.actor,
            &id,
            w,
            by,
            GroupPaging {
                limit: q.limit,
                after,
            },
        )
        .await?;
    Ok(axum::Json(TenantUsagePage {
        tenant_id: id,
        group_by: by.as_str().to_owned(),
        granularity: usage.range.granularity.as_str().to_owned(),
        from: Timestamp(usage.range.from).to_rfc3339(),
        to: Timestamp(usage.range.to).to_rfc3339(),
        data: usage
            .groups
            .iter()
            .map(|(group, c)| UsageGroupView {
                group: group.clone(),
                counts: usage_counts_view(c),
            })
            .collect(),
        has_more: usage.next.is_some(),
        next_cursor: usage.next.as_deref().map(group_cursor),
    }))
}

/// A key's client addresses, most recently seen first; at most
/// `usage.max_ips_per_key` are kept per key (`keyward:keys:read`).
#[utoipa::path(
    get,
    path = "/v1/keys/{id}/ips",
    tag = "usage",
    operation_id = "list_key_ips",
    params(("id" = String, Path, description = "The key's id."), ListIps),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = KeyIpPage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such key, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `limit` is not 1 to 100 (`errors` says so).", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn ips(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<ListIps>,
) -> Result<axum::Json<KeyIpPage>, ApiError> {
    let page = state
        .manage
        .key_addresses(&caller.actor, &id, paging(q.limit, q.cursor.as_deref()))
        .await?;
    Ok(axum::Json(KeyIpPage {
        data: page
            .items
            .iter()
            .map(|a| KeyIpView {
                ip: a.ip.ip.clone(),
                first_seen: Timestamp(a.ip.first_seen).to_rfc3339(),
                last_seen: Timestamp(a.ip.last_seen).to_rfc3339(),
                requests: a.ip.requests,
                unfamiliar: a.unfamiliar,
            })
            .collect(),
        has_more: page.next.is_some(),
        next_cursor: page.next.map(offset_cursor),
    }))
}
