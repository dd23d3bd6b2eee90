//! The JSON shapes of the API come from [`keyward_wire`] (re-exported here,
//! so `api::views::KeyView` and the like keep working); the conversions
//! from store records the console shares live in [`keyward_views`]
//! (re-exported too). This module builds what only the server has: the
//! principal behind a verified key and a rate limit's state. Times are
//! RFC 3339 strings in UTC.

use keyward_store::KeyRecord;
use keyward_views::opt_time;

use crate::verifier::CachedKey;

pub use keyward_views::{
    audit_event_view, ledger_entry_view, rate_limit_spec, refill_spec, store_refill, tenant_view,
    with_secret, KeyViewExt,
};
pub use keyward_wire::{
    AuditEventView, AuditPage, ChangeCredits, CreateKey, CreateTenant, CreditState, CreditsView,
    Health, KeyPage, KeyView, KeyWithSecret, LedgerEntryView, LedgerPage, Principal, ProblemDoc,
    RateLimitSpec, RateLimitState, RefillSpec, RevokeKey, RotateKey, TenantPage, TenantView,
    UpdateKey, UpdateTenant, VerifyKey, VerifyResult,
};

/// `Principal::new(key)`: the principal behind a verified key.
pub(crate) trait PrincipalExt {
    fn new(k: &CachedKey) -> Self;
}

impl PrincipalExt for Principal {
    fn new(k: &CachedKey) -> Principal {
        let r = &k.record;
        Principal {
            key_id: r.id.clone(),
            key_name: r.name.clone(),
            start: r.start.clone(),
            kind: r.class.as_str().to_owned(),
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

pub(crate) fn rate_limit_state(r: &crate::limits::RateState) -> RateLimitState {
    {
        RateLimitState {
            policy: r.policy.to_string(),
            limit: r.limit,
            window_seconds: r.window_seconds,
            remaining: r.remaining,
            reset_seconds: r.reset_seconds,
        }
    }
}

/// When the key stops working: its expiry or its rotation grace, whichever is first.
fn effective_expiry(r: &KeyRecord) -> Option<i64> {
    match (r.expires_at, r.grace_until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
