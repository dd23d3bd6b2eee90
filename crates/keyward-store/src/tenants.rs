//! Tenants: the customers whose keys keyward keeps, each with an optional
//! rate-limit tier and a ceiling of grantable scopes.

use async_trait::async_trait;
use serde_json::Value;

use crate::{AuditEntry, Page, PageRequest, StoreResult};

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub metadata: Value,
    pub created_at: i64,
    pub updated_at: i64,
    /// The rate-limit tier of the tenant's keys that name none themselves.
    pub tier: Option<String>,
    /// The ceiling of scopes its keys may be given by anyone but operators
    /// (a plan); `None` is no ceiling.
    pub grantable_scopes: Option<Vec<String>>,
    /// A balance under this raises `credits.low` (see `EventStore`);
    /// `None`: the deployment's default, if any.
    pub credits_low_threshold: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub metadata: Option<Value>,
    pub tier: Option<Option<String>>,
    pub grantable_scopes: Option<Option<Vec<String>>>,
    pub credits_low_threshold: Option<Option<i64>>,
    pub updated_at: i64,
}

/// Tenants. Every change is written with its [`AuditEntry`] in one
/// transaction.
#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn create_tenant(&self, tenant: &Tenant, audit: &AuditEntry) -> StoreResult<()>;
    async fn get_tenant(&self, id: &str) -> StoreResult<Tenant>;
    async fn list_tenants(&self, page: PageRequest) -> StoreResult<Page<Tenant>>;
    async fn update_tenant(
        &self,
        id: &str,
        patch: &TenantPatch,
        audit: &AuditEntry,
    ) -> StoreResult<Tenant>;
}
