//! The append-only log of management actions.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEventView {
    pub id: String,
    pub at: String,
    /// The key id that acted, or `cli`.
    pub actor: String,
    pub actor_ip: Option<String>,
    pub tenant_id: Option<String>,
    /// e.g. `key.created`, `key.revoked`, `tenant.updated`.
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub details: Value,
}

/// One page of audit events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub data: Vec<AuditEventView>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

// The query of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAudit {
    /// Root keys may filter by tenant; tenant keys always see their own.
    pub tenant_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
