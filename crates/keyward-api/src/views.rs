//! The JSON shapes of the API come from [`keyward_wire`]; the conversions
//! from store records the console shares live in [`keyward_views`]. This
//! module builds what only the API has: the principal behind a verified
//! key and a rate limit's state. Times are RFC 3339 strings in UTC.

use keyward_verify::verifier::CachedKey;

pub(crate) use keyward_wire::{
    AuditPage, ChangeCredits, CreateKey, CreateTenant, CreditState, CreditsView, Health, KeyPage,
    KeyView, KeyWithSecret, LedgerEntryView, LedgerPage, Principal, ProblemDoc, RateLimitSpec,
    RateLimitState, RefillSpec, RevokeKey, RotateKey, TenantPage, TenantView, UpdateKey,
    UpdateTenant, VerifyKey, VerifyResult,
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

pub(crate) fn rate_limit_state(r: &keyward_limits::RateState) -> RateLimitState {
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
