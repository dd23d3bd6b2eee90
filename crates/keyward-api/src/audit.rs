//! The audit log: every management action, append-only, newest first.

use axum::extract::State;
use keyward_manage::AuditQuery;

use super::views::{AuditPage, ProblemDoc};
use super::{Caller, Query};
use crate::ApiState;
use keyward_http::error::ApiError;
use keyward_views::{audit_event_view, page_parts, paging};
use keyward_wire::ListAudit;

/// Lists audit events (`keyward:audit:read`).
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    operation_id = "list_audit",
    params(ListAudit),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, description = "`invalid_query`: a query parameter of the wrong type; `invalid_cursor`: not a `next_cursor` this server gave.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:audit:read`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: `tenant_id` names another tenant (tenant keys).", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `limit` is not 1 to 100 (`errors` says so).", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(q): Query<ListAudit>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let query = AuditQuery {
        tenant_id: q.tenant_id,
        paging: paging(q.limit, q.cursor.as_deref()),
    };
    let page = state.manage.list_audit(&caller.actor, query).await?;
    let (data, next_cursor, has_more) = page_parts(&page, audit_event_view);
    Ok(axum::Json(AuditPage {
        data,
        next_cursor,
        has_more,
    }))
}
