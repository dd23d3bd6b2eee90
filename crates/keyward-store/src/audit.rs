//! The append-only audit log: one event per management change, written by
//! the other stores in the change's own transaction, read back here.

use async_trait::async_trait;
use serde_json::Value;

use crate::{Page, PageRequest, StoreResult};

/// What a management action records, written with the change itself.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: String,
    pub at: i64,
    /// Who: a key id, or `cli` for commands run on the server's host.
    pub actor: String,
    pub actor_ip: Option<String>,
    pub tenant_id: Option<String>,
    /// `key.created`, `key.revoked`, `tenant.updated`, …
    pub action: String,
    /// The id of the thing acted on.
    pub target: String,
    /// Non-secret details (changed field names, reasons).
    pub details: Value,
    /// The event this change publishes (`key.revoked`…), recorded and
    /// fanned out to webhook endpoints in the change's transaction.
    pub event: Option<crate::NewEvent>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub seq: i64,
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub actor_ip: Option<String>,
    pub tenant_id: Option<String>,
    pub action: String,
    pub target: String,
    pub details: Value,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant_id: Option<String>,
}

/// Reading the audit log (writing happens with each change).
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEvent>>;
}
