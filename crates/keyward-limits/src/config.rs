//! The limits' configuration: `[limits]` (tiers) and `[credits]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A tier setting that does not hold: which (`limits.tiers.free.…`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct TierError {
    pub setting: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The tier of keys whose key and tenant name none; none means such
    /// keys are not rate limited.
    pub default_tier: Option<String>,
    /// Named tiers: `[limits.tiers.free] limit = 100, window_seconds = 60`.
    pub tiers: BTreeMap<String, TierConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Tokens per window (a request costs its route's `cost`, default 1).
    pub limit: u64,
    pub window_seconds: u64,
    /// Most tokens spendable at once; defaults to `limit`.
    pub burst: Option<u64>,
    /// Credits refilled for tenants of this tier (unless a tenant has its
    /// own schedule): `{ amount = 100000, every = "monthly", mode = "set" }`.
    pub refill: Option<keyward_store::Refill>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CreditsConfig {
    /// This node's name in credit reservations. Default: `local` on SQLite
    /// (one node), a random id per process on PostgreSQL. Give each node a
    /// stable one so a node that crashed settles its own reservations when
    /// it comes back.
    pub node_id: Option<String>,
    /// How often spends are written to the ledger.
    pub settle_interval_ms: u64,
    /// Largest reservation a node takes at once: at most this much is
    /// counted as spent if the node crashes.
    pub max_reservation: i64,
    /// Reservations unused this long go back to the balance.
    pub idle_release_seconds: u64,
    /// A reservation its node has not refreshed for this long is counted as
    /// spent by the other nodes (its node stopped). 0 turns this off.
    pub stale_seconds: u64,
    /// With several nodes: how long a request that the stored balance cannot
    /// cover waits for other nodes to hand back their reservations (they are
    /// asked through the change log) before it is refused. A request is
    /// refused at once when no other node holds any of the tenant's credits.
    pub reclaim_wait_ms: u64,
}

impl Default for CreditsConfig {
    fn default() -> CreditsConfig {
        CreditsConfig {
            node_id: None,
            settle_interval_ms: 1_000,
            max_reservation: 10_000,
            idle_release_seconds: 10,
            stale_seconds: 300,
            reclaim_wait_ms: 500,
        }
    }
}
