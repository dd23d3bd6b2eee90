//! API keys: the view, creation, changes, revocation, rotation and
//! verification.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::credits::CreditState;
use crate::meta::Principal;
use crate::nullable;

/// An API key as management sees it. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Public id, e.g. `key_3fQ9…`; usable as the Basic-auth user name.
    pub id: String,
    /// `tenant` or `root`.
    pub kind: String,
    pub tenant_id: Option<String>,
    pub name: String,
    pub environment: String,
    /// Prefix and first body characters, e.g. `kw_live_AB7K`.
    pub start: String,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: String,
    pub scopes: Vec<String>,
    pub owner: Option<String>,
    pub tier: Option<String>,
    pub credit_cap: Option<i64>,
    /// The key's own rate limit, overriding its tier's.
    pub rate_limit: Option<RateLimitSpec>,
    pub ip_allowlist: Vec<String>,
    /// Sub-tenants the key may name in the gateway's tenant header.
    pub sub_tenants: Vec<String>,
    pub expires_at: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    pub revoked_at: Option<String>,
    pub revoked_reason: Option<String>,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<String>,
    /// The key that replaced this one by rotation.
    pub replaced_by: Option<String>,
    /// When a rotated key's secret stops working.
    pub grace_until: Option<String>,
}

/// The response to creating or rotating a key: the only time the secret is shown.
// No `Debug`: it holds a secret.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyWithSecret {
    /// The plaintext secret. Shown once; keyward keeps only its hash.
    pub secret: String,
    pub key: KeyView,
}

/// One page of keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyPage {
    pub data: Vec<KeyView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Required for root keys; tenant keys create keys in their own tenant.
    pub tenant_id: Option<String>,
    /// Unique among the tenant's live keys.
    pub name: String,
    /// Required: one of the deployment's `keys.environments`, e.g. `live`
    /// or `test`. Its absence is a `422 validation_failed` naming it.
    // An `Option` only so that its absence is checked with the other
    // fields (by the management service), not refused as a parse error.
    #[schema(value_type = String, required = true)]
    pub environment: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub owner: Option<String>,
    /// One of `limits.tiers` (operators only).
    pub tier: Option<String>,
    /// Most credits this key may spend in all.
    pub credit_cap: Option<i64>,
    /// The key's own rate limit (operators only).
    pub rate_limit: Option<RateLimitSpec>,
    /// CIDRs or addresses, IPv4 or IPv6; empty allows all.
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
    /// Sub-tenant ids this key may act for (gateway tenant header).
    #[serde(default)]
    pub sub_tenants: Vec<String>,
    /// RFC 3339; must be in the future.
    pub expires_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub enabled: Option<bool>,
}

/// Fields to change; absent fields stay, `null` clears nullable ones.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub owner: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub tier: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>)]
    pub credit_cap: Option<Option<i64>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<RateLimitSpec>)]
    pub rate_limit: Option<Option<RateLimitSpec>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_allowlist: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_tenants: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old secret keeps working; 0 (the default) ends it now.
    #[serde(default)]
    pub grace_seconds: u64,
}

// No `Debug`: it holds a secret.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyKey {
    /// The key as presented to your service.
    pub key: String,
    /// Scopes the request needs; all must be held.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The client address, checked against the key's IP allowlist. A key
    /// with an allowlist is refused (`ip_not_allowed`) if this is absent.
    pub ip: Option<String>,
    /// Rate-limit tokens this request costs (default 1; 0 only reads the
    /// state).
    pub cost: Option<u64>,
    /// Credits this request costs, spent from the key's tenant (default 0).
    pub credits: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerifyResult {
    pub valid: bool,
    /// `valid`, or the denial code (`invalid_api_key`, `revoked_api_key`, …).
    pub code: String,
    /// The principal, for every known key of the caller's tenant.
    pub key: Option<Principal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_scopes: Option<Vec<String>>,
    pub message: Option<String>,
    /// Rate-limit state after this request, when the key has a limit.
    pub ratelimit: Option<RateLimitState>,
    /// Credit state after this request, when credits were spent.
    pub credits: Option<CreditState>,
    /// With `rate_limited`: seconds until the same request would pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// With `?include_policy=true`, for every known key of the caller's
    /// tenant (valid or not): what a caller needs to decide later requests of this
    /// key itself. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<VerifyPolicy>,
}

/// A key's policy as the verify API reports it with `include_policy`: the
/// facts `revoked → enabled → expiry → IP → scopes` are decided on, and the
/// rate limit in force for it. Times are milliseconds since the epoch.
/// Changes to any of these appear in the change feed (`GET /v1/changes`)
/// under the key's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyPolicy {
    /// Revoked or deleted.
    pub revoked: bool,
    pub enabled: bool,
    pub expires_at_ms: Option<i64>,
    /// Set on a rotated key: its old secret works until then.
    pub grace_until_ms: Option<i64>,
    /// Addresses and CIDR ranges; empty allows every address.
    pub ip_allowlist: Vec<String>,
    pub scopes: Vec<String>,
    pub environment: String,
    pub tenant_id: Option<String>,
    /// The key's tenant's sub-tenants it may act for (the tenant header).
    pub sub_tenants: Vec<String>,
    /// The most the key may spend in all.
    pub credit_cap: Option<i64>,
    /// The rate limit in force (the key's own, else its tier's, else its
    /// tenant's tier's, else the default tier's); none: not limited.
    pub rate_limit: Option<RatePolicySpec>,
}

/// A resolved rate limit: `limit` tokens per `window_ms`, at most `burst`
/// at once, reported under `policy` (a tier's name, or `key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RatePolicySpec {
    pub policy: String,
    pub limit: u64,
    pub window_ms: u64,
    pub burst: u64,
}

/// A rate limit: `limit` tokens per `window_seconds`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub limit: u64,
    pub window_seconds: u64,
    /// Defaults to `limit`.
    pub burst: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RateLimitState {
    /// The tier (or `key` for a key's own limit).
    pub policy: String,
    pub limit: u64,
    pub window_seconds: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
}

/// The query of `POST /v1/keys/verify`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// Also answer the key's policy (`policy`), so the caller can cache the
    /// key and decide later requests itself, as the tower layer's remote
    /// backend does. Default `false`. A query parameter rather than a body
    /// field, so bodies stay what older servers accept.
    pub include_policy: Option<bool>,
}

// The query of `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListKeys {
    /// Root keys: filter by tenant. Tenant keys see their own tenant.
    pub tenant_id: Option<String>,
    pub environment: Option<String>,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: Option<String>,
    /// `tenant` (default) or `root` (root keys only).
    pub kind: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
