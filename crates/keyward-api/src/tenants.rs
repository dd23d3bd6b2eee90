//! Tenants: the businesses, accounts or organizations that own keys.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use keyward_manage::{limits, NewTenant, TenantChanges};

use super::views::{CreateTenant, ProblemDoc, TenantPage, TenantView, UpdateTenant};
use super::{Caller, Json, Query};
use crate::ApiState;
use keyward_http::error::ApiError;
use keyward_views::{page_parts, paging, tenant_view};
use keyward_wire::ListTenants;

pub(crate) const MAX_NAME: usize = limits::MAX_TENANT_NAME;
pub(crate) const MAX_GRANTABLE: usize = limits::MAX_GRANTABLE;

/// Creates a tenant. Root keys only (`keyward:tenants:write`).
#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    operation_id = "create_tenant",
    request_body = CreateTenant,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 201, body = TenantView),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:tenants:write`; `root_key_required`: operator root keys only.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "`tenant_exists`: a tenant with this id exists.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, axum::Json<TenantView>), ApiError> {
    let input = NewTenant {
        id: body.id,
        name: body.name,
        tier: body.tier,
        grantable_scopes: body.grantable_scopes,
        metadata: body.metadata,
        credits_low_threshold: body.credits_low_threshold,
    };
    let tenant = state.manage.create_tenant(&caller.actor, input).await?;
    Ok((StatusCode::CREATED, axum::Json(tenant_view(&tenant))))
}

/// Lists tenants, newest first. Root keys only (`keyward:tenants:read`).
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    operation_id = "list_tenants",
    params(ListTenants),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = TenantPage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:tenants:read`; `root_key_required`: operator root keys only.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `limit` is not 1 to 100 (`errors` says so).", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<ListTenants>,
) -> Result<axum::Json<TenantPage>, ApiError> {
    let page = state
        .manage
        .list_tenants(&caller.actor, paging(q.limit, q.cursor.as_deref()))
        .await?;
    let (data, next_cursor, has_more) = page_parts(&page, tenant_view);
    Ok(axum::Json(TenantPage {
        data,
        next_cursor,
        has_more,
    }))
}

/// One tenant. Root keys, or a key of that tenant (`keyward:tenants:read`).
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    operation_id = "get_tenant",
    params(("id" = String, Path, description = "The tenant's id, e.g. `ten_3fQ9…`.")),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = TenantView),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:tenants:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<TenantView>, ApiError> {
    let t = state.manage.get_tenant(&caller.actor, &id).await?;
    Ok(axum::Json(tenant_view(&t)))
}

/// Renames a tenant or replaces its metadata (`keyward:tenants:write`).
#[utoipa::path(
    patch,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    operation_id = "update_tenant",
    params(("id" = String, Path, description = "The tenant's id, e.g. `ten_3fQ9…`.")),
    request_body = UpdateTenant,
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = TenantView),
        (status = 400, description = "`invalid_body`: not JSON, a field of the wrong type, or an unknown field.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:tenants:write`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such tenant, or one the key may not see.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: the body is over `http.max_body_bytes`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `errors` names each invalid field.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateTenant>,
) -> Result<axum::Json<TenantView>, ApiError> {
    let input = TenantChanges {
        name: body.name,
        tier: body.tier,
        grantable_scopes: body.grantable_scopes,
        metadata: body.metadata,
        credits_low_threshold: body.credits_low_threshold,
    };
    let t = state
        .manage
        .update_tenant(&caller.actor, &id, input)
        .await?;
    Ok(axum::Json(tenant_view(&t)))
}
