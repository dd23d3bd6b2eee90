//! Tenant credit balances with their ledger (see docs/ARCHITECTURE.md, keyward-limits).
//!
//! Credits are spent from *reservations*: a node takes credits out of the
//! tenant's balance durably ([`CreditStore::reserve_credits`]) before it lets
//! requests spend them from memory, and later records what was spent
//! ([`CreditStore::settle_credits`], one ledger entry per tenant per
//! settlement) and gives back what it no longer needs. A request is only
//! admitted against credits that already left the stored balance, so after a
//! crash the balance never shows credits that were spent, and nothing is
//! spent twice; what a crashed node had reserved but not settled is counted
//! as spent when it is recovered ([`CreditStore::recover_reservations`]).
//!
//! # The ledger is a running balance
//! A ledger entry's `balance_after` is the tenant's credits *not yet spent*
//! after the entry: the stored balance plus every node's outstanding
//! reservation (`credit_reservations`), read in the entry's transaction under
//! the account's row lock. Reserving and releasing move credits between the
//! two without changing their sum, and every change of the sum is an entry
//! (grant, adjust, refill, a settled spend, a reservation counted as spent),
//! so in `seq` order each entry's `balance_after` is the previous one's plus
//! its `amount`, whichever node wrote it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Page, PageRequest, StoreResult};

/// How often a refill happens. Boundaries are UTC: midnight, or the first
/// day of the month at midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefillPeriod {
    Daily,
    Monthly,
}

/// What a refill does to the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefillMode {
    /// The balance becomes the amount: unused credits do not carry over
    /// (a monthly allowance). "The balance" counts what nodes hold in
    /// reservations, so the stored balance becomes the amount less those
    /// (never below zero): credits a node reserved before the refill are
    /// spent from the new amount, not on top of it.
    Set,
    /// The amount is added to the balance (a top-up).
    Add,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refill {
    pub amount: i64,
    pub every: RefillPeriod,
    pub mode: RefillMode,
}

/// A tenant's credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditAccount {
    pub tenant_id: String,
    /// The stored balance: what no node holds.
    pub balance: i64,
    /// What every node holds in reservations (out of `balance`, and not yet
    /// settled as spent: some of it may have been spent in a node's memory
    /// since its last settlement). `balance + reserved` is the ledger's
    /// running balance.
    pub reserved: i64,
    /// The tenant's own refill schedule (a tier's schedule applies otherwise).
    pub refill: Option<Refill>,
    pub last_refill_at: Option<i64>,
    pub next_refill_at: Option<i64>,
    pub updated_at: i64,
}

/// Kinds of ledger entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerKind {
    /// Credits granted by an operator (positive).
    Grant,
    /// A correction by an operator (either sign).
    Adjust,
    /// A scheduled refill.
    Refill,
    /// Requests' spends, one entry per tenant per committed batch (negative).
    Spend,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Grant => "grant",
            LedgerKind::Adjust => "adjust",
            LedgerKind::Refill => "refill",
            LedgerKind::Spend => "spend",
        }
    }

    pub fn parse(s: &str) -> Option<LedgerKind> {
        Some(match s {
            "grant" => LedgerKind::Grant,
            "adjust" => LedgerKind::Adjust,
            "refill" => LedgerKind::Refill,
            "spend" => LedgerKind::Spend,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: String,
    pub tenant_id: String,
    pub at: i64,
    pub kind: LedgerKind,
    /// Change to the balance (negative for spends).
    pub amount: i64,
    /// The tenant's credits not yet spent after this entry: the stored
    /// balance plus every node's outstanding reservation. Each entry's is
    /// the previous entry's (in `seq` order) plus its `amount`.
    pub balance_after: i64,
    /// The key that spent (spend entries whose batch had one key only).
    pub key_id: Option<String>,
    /// Requests this entry covers (spend entries), else 0.
    pub requests: i64,
    pub actor: Option<String>,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
}

/// A node asking for credits of a tenant.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    pub tenant_id: String,
    pub node_id: String,
    /// Take nothing unless at least this much is available.
    pub min: i64,
    /// Take up to this much.
    pub want: i64,
    /// The refill schedule in force for the tenant (its own or its tier's),
    /// applied first if due.
    pub refill: Option<Refill>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// Credits moved from the balance into this node's reservation.
    pub granted: i64,
    /// The stored balance after the reservation.
    pub balance: i64,
    /// What other nodes hold in reservations of this tenant (some of it
    /// possibly spent and not settled yet): credits a node that came up
    /// short may ask them to hand back.
    pub held_elsewhere: i64,
}

/// What a node spent of its reservation since the last settlement, and
/// what it gives back.
#[derive(Debug, Clone, Default)]
pub struct Settlement {
    pub tenant_id: String,
    pub spent: i64,
    pub requests: i64,
    /// Unspent reserved credits returned to the balance.
    pub release: i64,
    /// The key that spent, when only one did.
    pub key_id: Option<String>,
    /// Spends of keys with a credit cap, added to their totals.
    pub key_spends: Vec<(String, i64)>,
}

/// Which reservations [`CreditStore::recover_reservations`] takes.
#[derive(Debug, Clone, Copy)]
pub enum Recover<'a> {
    /// All of this node's, at its start (left by a crash).
    Node(&'a str),
    /// Other nodes' reservations not settled since `before`.
    StaleExcept { node_id: &'a str, before: i64 },
}

/// A grant or adjustment by an operator.
#[derive(Debug, Clone)]
pub struct CreditChange {
    /// Ledger entry id to use.
    pub id: String,
    pub tenant_id: String,
    pub kind: LedgerKind,
    pub amount: i64,
    pub at: i64,
    pub actor: String,
    pub reason: Option<String>,
    /// Replays: the same key returns the first entry instead of applying twice.
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request under `idempotency_key`; the same key with
    /// another fingerprint is [`crate::StoreError::Conflict`].
    pub fingerprint: String,
    pub refill: Option<Refill>,
}

/// The result of [`CreditStore::change_credits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeOutcome {
    pub entry: LedgerEntry,
    /// `true` when this was a replay of an earlier change with the same key.
    pub replayed: bool,
}

/// Credit accounts, reservations and the ledger.
#[async_trait]
pub trait CreditStore: Send + Sync {
    /// The tenant's credit account, after applying a due refill of
    /// `refill` (the schedule in force). A tenant that never had credits
    /// has a zero balance.
    async fn credit_account(
        &self,
        tenant_id: &str,
        refill: Option<Refill>,
        now: i64,
    ) -> StoreResult<CreditAccount>;
    /// Moves credits from the tenant's balance into this node's reservation:
    /// `min(balance, want)` if that is at least `min`, else nothing; and says
    /// what other nodes hold ([`Reserved::held_elsewhere`]).
    async fn reserve_credits(&self, request: &ReserveRequest, now: i64) -> StoreResult<Reserved>;
    /// Records spends from this node's reservations (a ledger `spend` entry
    /// per tenant) and returns released credits to the balances, in one
    /// transaction.
    async fn settle_credits(
        &self,
        node_id: &str,
        settlements: &[Settlement],
        now: i64,
    ) -> StoreResult<()>;
    /// Counts reservations as spent (ledger entries): their nodes stopped
    /// without settling, so what they spent is unknown. Returns how many
    /// reservations were recovered.
    async fn recover_reservations(&self, which: Recover<'_>, now: i64) -> StoreResult<u64>;
    /// What a key has spent in all (for its `credit_cap`), as settled.
    async fn key_credits_spent(&self, key_id: &str) -> StoreResult<i64>;
    /// Applies a grant or adjustment; the balance never goes below zero
    /// ([`crate::StoreError::Conflict`] if it would).
    /// A replay (same idempotency key) writes no audit event.
    async fn change_credits(
        &self,
        change: &CreditChange,
        audit: &crate::AuditEntry,
    ) -> StoreResult<ChangeOutcome>;
    /// Sets or clears the tenant's own refill schedule.
    async fn set_refill(
        &self,
        tenant_id: &str,
        refill: Option<Refill>,
        now: i64,
        audit: &crate::AuditEntry,
    ) -> StoreResult<CreditAccount>;
    async fn list_ledger(
        &self,
        tenant_id: &str,
        page: PageRequest,
    ) -> StoreResult<Page<LedgerEntry>>;
}

/// The first refill boundary strictly after `now` (ms since the epoch, UTC).
pub fn next_boundary(period: RefillPeriod, now: i64) -> i64 {
    use time::{Date, Month, OffsetDateTime, Time};
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000) else {
        return now.saturating_add(86_400_000);
    };
    let date = t.date();
    let next: Option<Date> = match period {
        RefillPeriod::Daily => date.next_day(),
        RefillPeriod::Monthly => {
            let (y, m) = match date.month() {
                Month::December => (date.year() + 1, Month::January),
                m => (date.year(), m.next()),
            };
            Date::from_calendar_date(y, m, 1).ok()
        }
    };
    match next {
        Some(d) => {
            let at = d.with_time(Time::MIDNIGHT).assume_utc();
            i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
        }
        None => now.saturating_add(86_400_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_utc_midnights() {
        // 2026-11-22T18:19:50Z
        let now = 1_795_371_590_000;
        assert_eq!(next_boundary(RefillPeriod::Daily, now), 1_795_392_000_000);
        // 2026-12-01T00:00:00Z
        assert_eq!(next_boundary(RefillPeriod::Monthly, now), 1_796_083_200_000);
        // December rolls into the next year: 2026-12-15 → 2027-01-01.
        assert_eq!(
            next_boundary(RefillPeriod::Monthly, 1_797_292_800_000),
            1_798_761_600_000
        );
        // Exactly at a boundary, the next one is a full period later.
        assert_eq!(
            next_boundary(RefillPeriod::Daily, 1_795_392_000_000),
            1_795_478_400_000
        );
    }
}
