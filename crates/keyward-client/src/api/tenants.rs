//! Tenants: the businesses, accounts or organizations that own keys.

use http::Method;
use keyward_wire::{CreateTenant, ListTenants, Page, TenantView, UpdateTenant};

use crate::call::json_body;
use crate::path::segment;
use crate::{paging, Client, ClientError};

impl Client {
    /// `POST /v1/tenants`.
    pub async fn create_tenant(&self, tenant: &CreateTenant) -> Result<TenantView, ClientError> {
        self.write(
            Method::POST,
            self.url("/v1/tenants")?,
            Some(json_body(tenant)?),
        )
        .await?
        .json()
    }

    /// `GET /v1/tenants`: one page, newest first.
    pub async fn list_tenants(&self, query: &ListTenants) -> Result<Page<TenantView>, ClientError> {
        self.read(self.url_with_query("/v1/tenants", query)?).await
    }

    /// Every page of `GET /v1/tenants` from `query.cursor` on, at most
    /// `max_pages` requests.
    pub async fn list_tenants_all(
        &self,
        query: &ListTenants,
        max_pages: usize,
    ) -> Result<Page<TenantView>, ClientError> {
        paging::walk(
            query,
            max_pages,
            |q| async move { self.list_tenants(&q).await },
        )
        .await
    }

    /// `GET /v1/tenants/{id}`.
    pub async fn get_tenant(&self, id: &str) -> Result<TenantView, ClientError> {
        self.read(self.url(&tenant_path(id))?).await
    }

    /// `PATCH /v1/tenants/{id}`: absent fields stay.
    pub async fn update_tenant(
        &self,
        id: &str,
        changes: &UpdateTenant,
    ) -> Result<TenantView, ClientError> {
        self.write(
            Method::PATCH,
            self.url(&tenant_path(id))?,
            Some(json_body(changes)?),
        )
        .await?
        .json()
    }
}

/// `/v1/tenants/{id}`.
pub(crate) fn tenant_path(id: &str) -> String {
    format!("/v1/tenants/{}", segment(id))
}
