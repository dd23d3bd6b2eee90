//! The JSON shapes of the API come from [`keyward_wire`] (re-exported here,
//! so `api::views::KeyView` and the like keep working); the conversions
//! from store records the console shares live in [`keyward_views`]
//! (re-exported too). This module builds what only the server has: the
//! principal behind a verified key and a rate limit's state. Times are
//! RFC 3339 strings in UTC.

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
        keyward_gateway::principal(k)
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
