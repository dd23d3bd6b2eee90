//! Tenant credits: the balance, grants and adjustments, the refill
//! schedule, the ledger.

use http::Method;
use keyward_wire::{ChangeCredits, CreditsView, LedgerEntryView, ListLedger, Page, RefillSpec};

use super::tenants::tenant_path;
use crate::call::{json_body, Call};
use crate::retry::Replay;
use crate::{paging, Client, ClientError};

impl Client {
    /// `GET /v1/tenants/{id}/credits`.
    pub async fn get_credits(&self, tenant_id: &str) -> Result<CreditsView, ClientError> {
        self.read(self.url(&credits_path(tenant_id, ""))?).await
    }

    /// `POST /v1/tenants/{id}/credits`: a grant or an adjustment, applied
    /// once however often it is sent. The `Idempotency-Key` is
    /// `idempotency_key`, or one the client makes for this call; every
    /// attempt sends the same, so retries after a lost answer replay the
    /// first result instead of changing the balance again. Give your own
    /// key (an order id, say) to make your own retries of the call safe
    /// too: a replay answers the entry first recorded.
    pub async fn change_credits(
        &self,
        tenant_id: &str,
        change: &ChangeCredits,
        idempotency_key: Option<&str>,
    ) -> Result<LedgerEntryView, ClientError> {
        let call = Call {
            method: Method::POST,
            url: self.url(&credits_path(tenant_id, ""))?,
            body: Some(json_body(change)?),
            idempotency_key: Some(self.idempotency_key(idempotency_key)?),
            replay: Replay::Safe,
        };
        self.execute(&call).await?.json()
    }

    /// `PUT /v1/tenants/{id}/credits/refill`: the tenant's own schedule.
    pub async fn set_refill(
        &self,
        tenant_id: &str,
        refill: &RefillSpec,
    ) -> Result<CreditsView, ClientError> {
        let url = self.url(&credits_path(tenant_id, "/refill"))?;
        self.write(Method::PUT, url, Some(json_body(refill)?))
            .await?
            .json()
    }

    /// `DELETE /v1/tenants/{id}/credits/refill`: the tier's schedule
    /// applies again, if any.
    pub async fn clear_refill(&self, tenant_id: &str) -> Result<CreditsView, ClientError> {
        let url = self.url(&credits_path(tenant_id, "/refill"))?;
        self.write(Method::DELETE, url, None).await?.json()
    }

    /// `GET /v1/tenants/{id}/credits/ledger`: one page, newest first.
    pub async fn list_ledger(
        &self,
        tenant_id: &str,
        query: &ListLedger,
    ) -> Result<Page<LedgerEntryView>, ClientError> {
        self.read(self.url_with_query(&credits_path(tenant_id, "/ledger"), query)?)
            .await
    }

    /// Every page of the ledger from `query.cursor` on, at most
    /// `max_pages` requests.
    pub async fn list_ledger_all(
        &self,
        tenant_id: &str,
        query: &ListLedger,
        max_pages: usize,
    ) -> Result<Page<LedgerEntryView>, ClientError> {
        paging::walk(query, max_pages, |q| async move {
            self.list_ledger(tenant_id, &q).await
        })
        .await
    }
}

fn credits_path(tenant_id: &str, rest: &str) -> String {
    format!("{}/credits{rest}", tenant_path(tenant_id))
}
