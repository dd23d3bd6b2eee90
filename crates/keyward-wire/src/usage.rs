//! Usage: a key's series, a tenant's usage grouped, a key's client
//! addresses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Counts over a bucket, a group or a whole range.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageCountsView {
    pub requests: i64,
    /// Valid verifications, `respond` routes, and forwarded requests the
    /// upstream answered 1xx–3xx.
    pub successes: i64,
    /// Refused by keyward (every denial code).
    pub denied: i64,
    /// Forwarded, and the upstream answered 4xx.
    pub client_errors: i64,
    /// 5xx: the upstream's, or keyward's own (upstream timeout or down).
    pub errors: i64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Requests refused by keyward, by code (`revoked_api_key`,
    /// `rate_limited`, `insufficient_scope`…).
    pub denials: BTreeMap<String, i64>,
    /// Every outcome and its count (`valid`, `upstream_2xx`, each denial
    /// code…).
    pub outcomes: BTreeMap<String, i64>,
    /// Credits spent.
    pub credits: i64,
    /// Mean latency in milliseconds, from the request's head to its answer
    /// (`null` without requests).
    pub mean_latency_ms: Option<f64>,
}

/// One bucket of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsagePoint {
    /// The bucket's start (RFC 3339, UTC).
    pub start: String,
    #[serde(flatten)]
    pub counts: UsageCountsView,
}

/// A key's usage over a range: every bucket of it (empty ones too), oldest
/// first, and the totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyUsageView {
    pub key_id: String,
    /// `minute`, `hour` or `day`.
    pub granularity: String,
    /// The range's start, widened to a whole bucket.
    pub from: String,
    /// The range's end (exclusive), widened to a whole bucket.
    pub to: String,
    pub totals: UsageCountsView,
    pub points: Vec<UsagePoint>,
}

/// One group of a tenant's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageGroupView {
    /// The group's value: a key id, a tenant header value (`""`: requests
    /// without one), a route template or an outcome.
    pub group: String,
    #[serde(flatten)]
    pub counts: UsageCountsView,
}

/// A page of a tenant's usage, grouped, in the groups' order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantUsagePage {
    pub tenant_id: String,
    /// `key`, `tenant_header`, `route` or `outcome`.
    pub group_by: String,
    pub granularity: String,
    pub from: String,
    pub to: String,
    pub data: Vec<UsageGroupView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// A client address a key was used from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyIpView {
    pub ip: String,
    pub first_seen: String,
    pub last_seen: String,
    pub requests: i64,
    /// First seen in the last 24 hours, on a key older than that.
    pub unfamiliar: bool,
}

/// A page of a key's client addresses, most recently seen first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyIpPage {
    pub data: Vec<KeyIpView>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

// The query of `GET /v1/keys/{id}/usage`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// RFC 3339; default: a day before `to`.
    pub from: Option<String>,
    /// RFC 3339; default: now.
    pub to: Option<String>,
    /// `minute`, `hour` (default) or `day`. At most 2,200 buckets per answer.
    pub granularity: Option<String>,
}

// The query of `GET /v1/tenants/{id}/usage`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantUsageQuery {
    /// RFC 3339; default: a day before `to`.
    pub from: Option<String>,
    /// RFC 3339; default: now.
    pub to: Option<String>,
    /// `minute`, `hour` (default) or `day`: the buckets summed.
    pub granularity: Option<String>,
    /// `key` (default), `tenant_header`, `route` or `outcome`.
    pub group_by: Option<String>,
    /// 1 to 100, default 20 (groups per page).
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

// The query of `GET /v1/keys/{id}/ips`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListIps {
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
