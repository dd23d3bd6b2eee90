//! The audit log: every management action, append-only, newest first.

use axum::extract::State;
use keyward_store::AuditFilter;
pub use keyward_wire::ListAudit;

use super::views::{audit_event_view, AuditPage, ProblemDoc};
use super::{encode_cursor, page_request, Caller, Query};
use crate::app::AppState;
use crate::error::ApiError;

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
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListAudit>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    caller.require("keyward:audit:read")?;
    let tenant_id = match (caller.is_root(), q.tenant_id) {
        (true, t) => t,
        (false, Some(t)) if Some(t.as_str()) != caller.tenant_id() => {
            return Err(ApiError::NotFound("tenant"))
        }
        (false, _) => caller.tenant_id().map(str::to_owned),
    };
    let page = state
        .store
        .list_audit(
            &AuditFilter { tenant_id },
            page_request(q.limit, q.cursor.as_deref())?,
        )
        .await?;
    Ok(axum::Json(AuditPage {
        data: page
            .items
            .iter()
            .map(|(_, e)| audit_event_view(e))
            .collect(),
        next_cursor: page.next.map(encode_cursor),
        has_more: page.next.is_some(),
    }))
}
