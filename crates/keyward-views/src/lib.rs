//! keyward's store records and management results as the JSON views of
//! [`keyward_wire`]: the conversions the HTTP API and the developer console
//! share, so both show a key, a tenant, an audit event or a ledger entry the
//! same way, and the list cursor's text form.
//!
//! Why a crate of its own: the conversions read store records
//! ([`keyward_store`]) and management results ([`keyward_manage`]), and
//! `keyward-wire` is for clients too (the CLI, the tests), so it stays free
//! of the store; neither the API (in `keyward-server`) nor the console
//! (`keyward-console`) may depend on the other. Dependencies point down:
//! core, store, manage, wire → views → console, server.
//!
//! Times are RFC 3339 strings in UTC. The wire types are foreign here, so a
//! constructor that reads like one (`KeyView::new(record, now)`) is an
//! extension trait ([`KeyViewExt`]).

use base64::Engine;
use keyward_core::clock::Timestamp;
use keyward_manage::{Cursor, IssuedKey, Paging};
use keyward_store::{AuditEvent, KeyRecord, Page, Tenant};
use keyward_wire::{
    AuditEventView, KeyView, KeyWithSecret, LedgerEntryView, RateLimitSpec, RefillSpec, TenantView,
};

/// A store time (milliseconds since the epoch) as RFC 3339 in UTC.
pub fn time(ms: i64) -> String {
    Timestamp(ms).to_rfc3339()
}

/// [`time`] of an optional time.
pub fn opt_time(ms: Option<i64>) -> Option<String> {
    ms.map(time)
}

/// `KeyView::new(record, now)`: a key as management sees it (the wire type
/// is foreign here, so its constructor is a trait).
pub trait KeyViewExt {
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

/// A key just issued, with its secret, as it is shown once.
pub fn with_secret(issued: &IssuedKey) -> KeyWithSecret {
    KeyWithSecret {
        secret: issued.secret.expose().to_owned(),
        key: KeyView::new(&issued.record, issued.at),
    }
}

pub fn tenant_view(t: &Tenant) -> TenantView {
    TenantView {
        id: t.id.clone(),
        name: t.name.clone(),
        tier: t.tier.clone(),
        grantable_scopes: t.grantable_scopes.clone(),
        credits_low_threshold: t.credits_low_threshold,
        metadata: t.metadata.clone(),
        created_at: time(t.created_at),
        updated_at: time(t.updated_at),
    }
}

pub fn audit_event_view(e: &AuditEvent) -> AuditEventView {
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

pub fn rate_limit_spec(r: keyward_store::RateLimitOverride) -> RateLimitSpec {
    RateLimitSpec {
        limit: r.limit,
        window_seconds: r.window_ms / 1000,
        burst: Some(r.burst),
    }
}

pub fn refill_spec(r: keyward_store::Refill) -> RefillSpec {
    use keyward_store::{RefillMode, RefillPeriod};
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
pub fn store_refill(s: &RefillSpec) -> keyward_store::Refill {
    use keyward_store::{Refill, RefillMode, RefillPeriod};
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

pub fn ledger_entry_view(e: &keyward_store::LedgerEntry) -> LedgerEntryView {
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

/// Cursor pagination: `?limit=1..100&cursor=…` (the service checks the
/// limit; a cursor that does not decode is [`Cursor::Invalid`]).
pub fn paging(limit: Option<u32>, cursor: Option<&str>) -> Paging {
    let cursor = match cursor {
        None | Some("") => Cursor::Start,
        Some(c) => decode_cursor(c).map_or(Cursor::Invalid, Cursor::Before),
    };
    Paging { limit, cursor }
}

/// A page of the service's as the wire's `(data, next_cursor, has_more)`.
pub fn page_parts<T, V>(page: &Page<T>, view: impl Fn(&T) -> V) -> (Vec<V>, Option<String>, bool) {
    (
        page.items.iter().map(|(_, t)| view(t)).collect(),
        page.next.map(encode_cursor),
        page.next.is_some(),
    )
}

fn encode_cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("seq:{seq}"))
}

fn decode_cursor(c: &str) -> Option<i64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("seq:")?
        .parse()
        .ok()
}

/// Usage counts as the wire writes them.
pub fn usage_counts_view(c: &keyward_manage::UsageCounts) -> keyward_wire::UsageCountsView {
    keyward_wire::UsageCountsView {
        requests: c.requests,
        successes: c.successes,
        denied: c.denied,
        client_errors: c.client_errors,
        errors: c.errors,
        error_rate: c.error_rate(),
        denials: c.denied_by_code(),
        outcomes: c.outcomes.clone(),
        credits: c.credits,
        mean_latency_ms: c.mean_latency_ms(),
    }
}

/// The cursor of a page of usage groups: the last group of the page.
pub fn group_cursor(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("group:{last}"))
}

/// The group a [`group_cursor`] names (`None`: not such a cursor).
pub fn decode_group_cursor(c: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("group:")
        .map(str::to_owned)
}

/// The cursor of a page of a key's addresses (the next page's offset).
pub fn offset_cursor(offset: i64) -> String {
    encode_cursor(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_invalid() {
        let (_, next, more) = page_parts(
            &Page {
                items: vec![(7, ())],
                next: Some(7),
            },
            |_| (),
        );
        assert!(more);
        let text = next.unwrap();
        assert!(matches!(
            paging(None, Some(&text)).cursor,
            Cursor::Before(7)
        ));
        assert!(matches!(paging(None, None).cursor, Cursor::Start));
        assert!(matches!(paging(None, Some("")).cursor, Cursor::Start));
        assert!(matches!(
            paging(None, Some("not a cursor")).cursor,
            Cursor::Invalid
        ));
    }
}
