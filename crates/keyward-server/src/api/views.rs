//! The JSON shapes of the API. Times are RFC 3339 strings in UTC.

use keyward_core::clock::Timestamp;
use keyward_store::{AuditEvent, KeyRecord, Tenant};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::nullable;
use crate::verifier::CachedKey;

fn time(ms: i64) -> String {
    Timestamp(ms).to_rfc3339()
}

fn opt_time(ms: Option<i64>) -> Option<String> {
    ms.map(time)
}

/// An API key as management sees it. Never contains the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// Public id, e.g. `key_3fQ9…`; usable as the Basic-auth user name.
    pub id: String,
    /// `tenant` or `root`.
    pub kind: &'static str,
    pub tenant_id: Option<String>,
    pub name: String,
    pub environment: String,
    /// Prefix and first body characters, e.g. `kw_live_AB7K`.
    pub start: String,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: &'static str,
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

impl KeyView {
    pub fn new(k: &KeyRecord, now: Timestamp) -> KeyView {
        KeyView {
            id: k.id.clone(),
            kind: k.class.as_str(),
            tenant_id: k.tenant_id.clone(),
            name: k.name.clone(),
            environment: k.environment.clone(),
            start: k.start.clone(),
            status: k.status(now.0).as_str(),
            scopes: k.scopes.clone(),
            owner: k.owner.clone(),
            tier: k.tier.clone(),
            credit_cap: k.credit_cap,
            rate_limit: k.rate_limit.map(RateLimitSpec::from),
            ip_allowlist: k.ip_allowlist.clone(),
            sub_tenants: k.sub_tenants.clone(),
            expires_at: opt_time(k.expires_at),
            metadata: k.metadata.clone(),
            enabled: k.enabled,
            created_by: k.created_by.clone(),
            created_at: time(k.created_at),
            updated_at: time(k.updated_at),
            last_used_at: opt_time(k.last_used_at),
            last_used_ip: k.last_used_ip.clone(),
            revoked_at: opt_time(k.revoked_at),
            revoked_reason: k.revoked_reason.clone(),
            rotated_from: k.rotated_from.clone(),
            replaced_by: k.replaced_by.clone(),
            grace_until: opt_time(k.grace_until),
        }
    }
}

/// The response to creating or rotating a key: the only time the secret is shown.
#[derive(Serialize, ToSchema)]
pub struct KeyWithSecret {
    /// The plaintext secret. Shown once; keyward keeps only its hash.
    pub secret: String,
    pub key: KeyView,
}

/// The principal behind a key, as `/v1/me` and verification report it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Principal {
    pub key_id: String,
    pub key_name: String,
    pub start: String,
    /// `tenant` or `root`.
    pub kind: &'static str,
    pub tenant_id: Option<String>,
    pub tenant_name: Option<String>,
    pub environment: String,
    pub scopes: Vec<String>,
    pub owner: Option<String>,
    pub tier: Option<String>,
    pub expires_at: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl Principal {
    pub fn new(k: &CachedKey) -> Principal {
        let r = &k.record;
        Principal {
            key_id: r.id.clone(),
            key_name: r.name.clone(),
            start: r.start.clone(),
            kind: r.class.as_str(),
            tenant_id: r.tenant_id.clone(),
            tenant_name: k.tenant_name.clone(),
            environment: r.environment.clone(),
            scopes: r.scopes.clone(),
            owner: r.owner.clone(),
            tier: r.tier.clone().or_else(|| k.tenant_tier.clone()),
            expires_at: opt_time(effective_expiry(r)),
            metadata: r.metadata.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    /// Rate-limit tier of the tenant's keys that name none.
    pub tier: Option<String>,
    /// The ceiling of scopes its keys may be given by anyone but operators
    /// (a plan); `null`: no ceiling.
    pub grantable_scopes: Option<Vec<String>>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> TenantView {
        TenantView {
            id: t.id.clone(),
            name: t.name.clone(),
            tier: t.tier.clone(),
            grantable_scopes: t.grantable_scopes.clone(),
            metadata: t.metadata.clone(),
            created_at: time(t.created_at),
            updated_at: time(t.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
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

impl From<&AuditEvent> for AuditEventView {
    fn from(e: &AuditEvent) -> AuditEventView {
        AuditEventView {
            id: e.id.clone(),
            at: time(e.at),
            actor: e.actor.clone(),
            actor_ip: e.actor_ip.clone(),
            tenant_id: e.tenant_id.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            details: e.details.clone(),
        }
    }
}

/// One page of keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyPage {
    pub data: Vec<KeyView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// One page of tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    pub data: Vec<TenantView>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// One page of audit events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub data: Vec<AuditEventView>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
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
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    /// One of `limits.tiers`, or `null` (operators only).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub tier: Option<Option<String>>,
    /// The ceiling of grantable scopes, or `null` to remove it (operators
    /// only). Keys keep the scopes they hold; it bounds later grants.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub grantable_scopes: Option<Option<Vec<String>>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Required for root keys; tenant keys create keys in their own tenant.
    pub tenant_id: Option<String>,
    /// Unique among the tenant's live keys.
    pub name: String,
    /// One of the configured environments, e.g. `live` or `test`.
    pub environment: String,
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
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub owner: Option<Option<String>>,
    pub scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub tier: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub credit_cap: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RateLimitSpec>)]
    pub rate_limit: Option<Option<RateLimitSpec>>,
    pub ip_allowlist: Option<Vec<String>>,
    pub sub_tenants: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old secret keeps working; 0 (the default) ends it now.
    #[serde(default)]
    pub grace_seconds: u64,
}

#[derive(Deserialize, ToSchema)]
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

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResult {
    pub valid: bool,
    /// `valid`, or the denial code (`invalid_api_key`, `revoked_api_key`, …).
    pub code: &'static str,
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
}

/// A rate limit: `limit` tokens per `window_seconds`, at most `burst` at once.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub limit: u64,
    pub window_seconds: u64,
    /// Defaults to `limit`.
    pub burst: Option<u64>,
}

impl From<keyward_store::RateLimitOverride> for RateLimitSpec {
    fn from(r: keyward_store::RateLimitOverride) -> RateLimitSpec {
        RateLimitSpec {
            limit: r.limit,
            window_seconds: r.window_ms / 1000,
            burst: Some(r.burst),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitState {
    /// The tier (or `key` for a key's own limit).
    pub policy: String,
    pub limit: u64,
    pub window_seconds: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
}

impl From<&crate::limits::RateState> for RateLimitState {
    fn from(r: &crate::limits::RateState) -> RateLimitState {
        RateLimitState {
            policy: r.policy.to_string(),
            limit: r.limit,
            window_seconds: r.window_seconds,
            remaining: r.remaining,
            reset_seconds: r.reset_seconds,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditState {
    /// The tenant's balance after this request.
    pub balance: i64,
    /// What the key may still spend under its `credit_cap`.
    pub key_remaining: Option<i64>,
}

/// A refill schedule. `set` makes the balance the amount (unused credits
/// lapse); `add` adds the amount. Boundaries are UTC midnights (daily) or
/// the 1st of the month (monthly); a new schedule applies at once.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillSpec {
    pub amount: i64,
    /// `daily` or `monthly`.
    #[schema(value_type = String)]
    pub every: keyward_store::limits::RefillPeriod,
    /// `set` or `add`.
    #[schema(value_type = String)]
    pub mode: keyward_store::limits::RefillMode,
}

impl From<keyward_store::limits::Refill> for RefillSpec {
    fn from(r: keyward_store::limits::Refill) -> RefillSpec {
        RefillSpec {
            amount: r.amount,
            every: r.every,
            mode: r.mode,
        }
    }
}

/// A tenant's credits.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsView {
    pub tenant_id: String,
    pub balance: i64,
    /// The schedule in force.
    pub refill: Option<RefillSpec>,
    /// `tenant` (its own schedule), `tier`, or null.
    pub refill_source: Option<&'static str>,
    pub last_refill_at: Option<String>,
    pub next_refill_at: Option<String>,
}

/// A grant (positive) or adjustment (either sign) of a tenant's credits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeCredits {
    /// `grant` or `adjust`.
    pub kind: String,
    pub amount: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEntryView {
    pub id: String,
    pub tenant_id: String,
    pub at: String,
    /// `grant`, `adjust`, `refill` or `spend`.
    pub kind: &'static str,
    /// Change to the balance; negative for spends.
    pub amount: i64,
    pub balance_after: i64,
    /// Spend entries: the key that spent.
    pub key_id: Option<String>,
    /// Spend entries: how many requests the entry covers.
    pub requests: i64,
    pub actor: Option<String>,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
}

impl From<&keyward_store::limits::LedgerEntry> for LedgerEntryView {
    fn from(e: &keyward_store::limits::LedgerEntry) -> LedgerEntryView {
        LedgerEntryView {
            id: e.id.clone(),
            tenant_id: e.tenant_id.clone(),
            at: time(e.at),
            kind: e.kind.as_str(),
            amount: e.amount,
            balance_after: e.balance_after,
            key_id: e.key_id.clone(),
            requests: e.requests,
            actor: e.actor.clone(),
            reason: e.reason.clone(),
            idempotency_key: e.idempotency_key.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPage {
    pub data: Vec<LedgerEntryView>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
    pub version: &'static str,
}

/// An RFC 9457 problem, as every error is answered by default (a
/// deployment with `errors.style = "envelope"` answers
/// `{"error": {"code", "message"}}` as `application/json` instead).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDoc {
    /// `errors.type_base` followed by the code.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    pub detail: String,
    /// Stable snake_case code to branch on.
    pub code: String,
    /// With `insufficient_scope`.
    pub missing_scopes: Option<Vec<String>>,
    /// With `scope_not_grantable`: the scopes the caller may not give.
    pub not_grantable_scopes: Option<Vec<String>>,
    /// With `validation_failed`.
    pub errors: Option<Vec<crate::error::FieldError>>,
    /// With `idempotency_in_progress` and `rate_limited`: seconds to wait
    /// (also in `Retry-After`).
    pub retry_after: Option<u64>,
}

/// When the key stops working: its expiry or its rotation grace, whichever is first.
fn effective_expiry(r: &KeyRecord) -> Option<i64> {
    match (r.expires_at, r.grace_until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
