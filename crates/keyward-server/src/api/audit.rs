//! The audit log: every management action, append-only, newest first.

use axum::extract::State;
use keyward_store::AuditFilter;
use serde::Deserialize;

use super::views::{AuditEventView, AuditPage};
use super::{encode_cursor, page_request, Caller, Query};
use crate::app::AppState;
use crate::error::ApiError;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAudit {
    /// Root keys may filter by tenant; tenant keys always see their own.
    pub tenant_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Lists audit events (`keyward:audit:read`).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(ListAudit), security(("bearer" = [])), responses((status = 200, body = AuditPage)))]
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
            .map(|(_, e)| AuditEventView::from(e))
            .collect(),
        next_cursor: page.next.map(encode_cursor),
        has_more: page.next.is_some(),
    }))
}
