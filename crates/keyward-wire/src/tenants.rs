//! Tenants: the businesses, accounts or organizations that own keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::nullable;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    /// Rate-limit tier of the tenant's keys that name none.
    pub tier: Option<String>,
    /// The ceiling of scopes its keys may be given by anyone but operators
    /// (a plan); `null`: no ceiling.
    pub grantable_scopes: Option<Vec<String>>,
    /// A balance under this raises the `credits.low` alert and event;
    /// `null`: the deployment's default (`alerts.credits_low_threshold`).
    pub credits_low_threshold: Option<i64>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// One page of tenants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantPage {
    pub data: Vec<TenantView>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Optional id of your own (1-64 of A-Z a-z 0-9 _ -), e.g. an account id
    /// such as `AC123456` used in account-scoped paths; default `ten_…`.
    pub id: Option<String>,
    pub name: String,
    /// One of `limits.tiers` (operators only).
    pub tier: Option<String>,
    /// The most its keys may be given by anyone but operators: scopes of the
    /// catalog or wildcards covering some (operators only); absent or
    /// `null`: no ceiling.
    pub grantable_scopes: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// A balance under this raises `credits.low` (0 or more).
    #[schema(minimum = 0)]
    pub credits_low_threshold: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One of `limits.tiers`, or `null` (operators only).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub tier: Option<Option<String>>,
    /// The ceiling of grantable scopes, or `null` to remove it (operators
    /// only). Keys keep the scopes they hold; it bounds later grants.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Vec<String>>)]
    pub grantable_scopes: Option<Option<Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// The `credits.low` threshold (0 or more), or `null` for the
    /// deployment's default.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, minimum = 0)]
    pub credits_low_threshold: Option<Option<i64>>,
}

// The query of `GET /v1/tenants`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTenants {
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
