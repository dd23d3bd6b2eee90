//! The audit log of management actions.

use keyward_wire::{AuditEventView, ListAudit, Page};

use crate::{paging, Client, ClientError};

impl Client {
    /// `GET /v1/audit`: one page, newest first.
    pub async fn list_audit(&self, query: &ListAudit) -> Result<Page<AuditEventView>, ClientError> {
        self.read(self.url_with_query("/v1/audit", query)?).await
    }

    /// Every page of the audit log from `query.cursor` on, at most
    /// `max_pages` requests.
    pub async fn list_audit_all(
        &self,
        query: &ListAudit,
        max_pages: usize,
    ) -> Result<Page<AuditEventView>, ClientError> {
        paging::walk(
            query,
            max_pages,
            |q| async move { self.list_audit(&q).await },
        )
        .await
    }
}
