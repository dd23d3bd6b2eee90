//! Usage: a key's series and client addresses, a tenant's usage grouped.

use keyward_wire::{
    KeyIpView, KeyUsageView, ListIps, Page, TenantUsagePage, TenantUsageQuery, UsageQuery,
};

use super::keys::key_path;
use super::tenants::tenant_path;
use crate::{paging, Client, ClientError};

impl Client {
    /// `GET /v1/keys/{id}/usage`: every bucket of the range and the totals.
    pub async fn key_usage(
        &self,
        key_id: &str,
        query: &UsageQuery,
    ) -> Result<KeyUsageView, ClientError> {
        self.read(self.url_with_query(&key_path(key_id, "/usage"), query)?)
            .await
    }

    /// `GET /v1/keys/{id}/ips`: one page, most recently seen first.
    pub async fn list_key_ips(
        &self,
        key_id: &str,
        query: &ListIps,
    ) -> Result<Page<KeyIpView>, ClientError> {
        self.read(self.url_with_query(&key_path(key_id, "/ips"), query)?)
            .await
    }

    /// Every page of a key's client addresses from `query.cursor` on, at
    /// most `max_pages` requests.
    pub async fn list_key_ips_all(
        &self,
        key_id: &str,
        query: &ListIps,
        max_pages: usize,
    ) -> Result<Page<KeyIpView>, ClientError> {
        paging::walk(query, max_pages, |q| async move {
            self.list_key_ips(key_id, &q).await
        })
        .await
    }

    /// `GET /v1/tenants/{id}/usage`: one page of groups.
    pub async fn tenant_usage(
        &self,
        tenant_id: &str,
        query: &TenantUsageQuery,
    ) -> Result<TenantUsagePage, ClientError> {
        let path = format!("{}/usage", tenant_path(tenant_id));
        self.read(self.url_with_query(&path, query)?).await
    }

    /// Every page of a tenant's usage groups from `query.cursor` on, at
    /// most `max_pages` requests.
    pub async fn tenant_usage_all(
        &self,
        tenant_id: &str,
        query: &TenantUsageQuery,
        max_pages: usize,
    ) -> Result<TenantUsagePage, ClientError> {
        paging::walk(query, max_pages, |q| async move {
            self.tenant_usage(tenant_id, &q).await
        })
        .await
    }
}
