//! The JSON shapes of the API come from [`keyward_wire`] (re-exported here,
//! so `api::views::KeyView` and the like keep working); this module builds
//! them from store records and server state. Times are RFC 3339 strings in
//! UTC.

use keyward_core::clock::Timestamp;
use keyward_store::{AuditEvent, KeyRecord, Tenant};

use crate::verifier::CachedKey;

pub use keyward_wire::{
    AuditEventView, AuditPage, ChangeCredits, CreateKey, CreateTenant, CreditState, CreditsView,
    Health, KeyPage, KeyView, KeyWithSecret, LedgerEntryView, LedgerPage, Principal, ProblemDoc,
    RateLimitSpec, RateLimitState, RefillSpec, RevokeKey, RotateKey, TenantPage, TenantView,
    UpdateKey, UpdateTenant, VerifyKey, VerifyResult,
};

fn time(ms: i64) -> String {
    Timestamp(ms).to_rfc3339()
}

fn opt_time(ms: Option<i64>) -> Option<String> {
    ms.map(time)
}

/// `KeyView::new(record, now)`: a key as management sees it (the wire type
/// is foreign here, so its constructor is a trait).
pub(crate) trait KeyViewExt {
    fn new(k: &KeyRecord, now: Timestamp) -> Self;
}

impl KeyViewExt for KeyView {
    fn new(k: &KeyRecord, now: Timestamp) -> KeyView {
        KeyView {
            id: k.id.clone(),
            kind: k.class.as_str().to_owned(),
            tenant_id: k.tenant_id.clone(),
            name: k.name.clone(),
            environment: k.environment.clone(),
            start: k.start.clone(),
            status: k.status(now.0).as_str().to_owned(),
            scopes: k.scopes.clone(),
            owner: k.owner.clone(),
            tier: k.tier.clone(),
            credit_cap: k.credit_cap,
            rate_limit: k.rate_limit.map(rate_limit_spec),
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

/// `Principal::new(key)`: the principal behind a verified key.
pub(crate) trait PrincipalExt {
    fn new(k: &CachedKey) -> Self;
}

impl PrincipalExt for Principal {
    fn new(k: &CachedKey) -> Principal {
        keyward_gateway::principal(k)
    }
}

pub(crate) fn tenant_view(t: &Tenant) -> TenantView {
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

pub(crate) fn audit_event_view(e: &AuditEvent) -> AuditEventView {
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

pub(crate) fn rate_limit_spec(r: keyward_store::RateLimitOverride) -> RateLimitSpec {
    RateLimitSpec {
        limit: r.limit,
        window_seconds: r.window_ms / 1000,
        burst: Some(r.burst),
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

pub(crate) fn refill_spec(r: keyward_store::limits::Refill) -> RefillSpec {
    use keyward_store::limits::{RefillMode, RefillPeriod};
    RefillSpec {
        amount: r.amount,
        every: match r.every {
            RefillPeriod::Daily => keyward_wire::RefillPeriod::Daily,
            RefillPeriod::Monthly => keyward_wire::RefillPeriod::Monthly,
        },
        mode: match r.mode {
            RefillMode::Set => keyward_wire::RefillMode::Set,
            RefillMode::Add => keyward_wire::RefillMode::Add,
        },
    }
}

/// The store's refill for a requested schedule.
pub(crate) fn store_refill(s: &RefillSpec) -> keyward_store::limits::Refill {
    use keyward_store::limits::{Refill, RefillMode, RefillPeriod};
    Refill {
        amount: s.amount,
        every: match s.every {
            keyward_wire::RefillPeriod::Daily => RefillPeriod::Daily,
            keyward_wire::RefillPeriod::Monthly => RefillPeriod::Monthly,
        },
        mode: match s.mode {
            keyward_wire::RefillMode::Set => RefillMode::Set,
            keyward_wire::RefillMode::Add => RefillMode::Add,
        },
    }
}

pub(crate) fn ledger_entry_view(e: &keyward_store::limits::LedgerEntry) -> LedgerEntryView {
    LedgerEntryView {
        id: e.id.clone(),
        tenant_id: e.tenant_id.clone(),
        at: time(e.at),
        kind: e.kind.as_str().to_owned(),
        amount: e.amount,
        balance_after: e.balance_after,
        key_id: e.key_id.clone(),
        requests: e.requests,
        actor: e.actor.clone(),
        reason: e.reason.clone(),
        idempotency_key: e.idempotency_key.clone(),
    }
}
