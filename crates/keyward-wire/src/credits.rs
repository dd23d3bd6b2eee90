//! Tenant credits: balances, refill schedules and the ledger.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreditState {
    /// The tenant's credits not yet spent after this request, as the node
    /// that answered sees them: its own unspent reservation, plus the stored
    /// balance and other nodes' reservations as of its last reservation.
    /// On one node the exact balance; with several, an estimate.
    pub balance: i64,
    /// What the key may still spend under its `credit_cap`.
    pub key_remaining: Option<i64>,
}

/// A refill schedule. `set` makes the balance the amount (unused credits
/// lapse, including those nodes hold in reservations); `add` adds the
/// amount. Boundaries are UTC midnights (daily) or the 1st of the month
/// (monthly); a new schedule applies at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillSpec {
    pub amount: i64,
    /// `daily` or `monthly`.
    #[schema(value_type = String)]
    pub every: RefillPeriod,
    /// `set` or `add`.
    #[schema(value_type = String)]
    pub mode: RefillMode,
}

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
    /// (a monthly allowance).
    Set,
    /// The amount is added to the balance (a top-up).
    Add,
}

/// A tenant's credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreditsView {
    pub tenant_id: String,
    /// The tenant's credits not yet spent, as in the ledger's
    /// `balance_after` (the stored balance plus every node's reservation),
    /// less what the answering node spent and has not settled yet. On one
    /// node this is exact; with several, other nodes' spends of their last
    /// `credits.settle_interval_ms` may still be counted.
    pub balance: i64,
    /// The schedule in force.
    pub refill: Option<RefillSpec>,
    /// `tenant` (its own schedule), `tier`, or null.
    pub refill_source: Option<String>,
    pub last_refill_at: Option<String>,
    pub next_refill_at: Option<String>,
}

/// A grant (positive) or adjustment (either sign) of a tenant's credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeCredits {
    /// `grant` or `adjust`.
    pub kind: String,
    pub amount: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerEntryView {
    pub id: String,
    pub tenant_id: String,
    pub at: String,
    /// `grant`, `adjust`, `refill` or `spend`.
    pub kind: String,
    /// Change to the balance; negative for spends.
    pub amount: i64,
    /// The tenant's credits not yet spent after this entry: the stored
    /// balance plus what every node holds in reservations, as of the
    /// entry's transaction. The ledger is a running balance: in the order
    /// entries were written, each `balance_after` is the previous entry's
    /// plus this entry's `amount`.
    pub balance_after: i64,
    /// Spend entries: the key that spent.
    pub key_id: Option<String>,
    /// Spend entries: how many requests the entry covers.
    pub requests: i64,
    pub actor: Option<String>,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerPage {
    pub data: Vec<LedgerEntryView>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

// The query of `GET /v1/tenants/{id}/credits/ledger`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListLedger {
    /// 1 to 100, default 20.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}
