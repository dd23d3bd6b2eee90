//! Usage: how often each key was used, for what, with what outcome and from
//! where — the records behind the usage API, the console's charts and the
//! "unfamiliar address" question.
//!
//! Nodes count requests in memory and add them here in batches
//! ([`UsageStore::add_usage`]). Every batch row is *added* to the stored
//! counts (an upsert that sums), so any number of nodes can write the same
//! minute. Each row is added at three granularities in the same
//! transaction — its minute, its hour and its day — so a late batch (a node
//! that could not reach the store for a while) lands in all three and no
//! rollup pass can miss or double-count it. [`UsageStore::prune_usage`] is
//! the retention: it deletes rows of each granularity older than its own
//! horizon, so minutes go first and the hours and days that hold the same
//! counts stay.
//!
//! Client addresses per key ([`IpSighting`]) are kept with first and last
//! sight and a count; each key keeps at most `max_ips_per_key` addresses,
//! the most recently seen (the longest unseen go first).

use async_trait::async_trait;

use crate::StoreResult;

/// The three sizes of a usage bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    /// The bucket's length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Granularity::Minute => 60_000,
            Granularity::Hour => 3_600_000,
            Granularity::Day => 86_400_000,
        }
    }

    /// The start of the bucket holding `at` (UTC).
    pub fn floor(self, at: i64) -> i64 {
        at - at.rem_euclid(self.millis())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Granularity> {
        match s {
            "minute" => Some(Granularity::Minute),
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            _ => None,
        }
    }
}

/// How a request ended, in four classes (the error rate is
/// `Error / all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutcomeClass {
    /// Valid: a verification that passed, a `respond` route, or a forwarded
    /// request the upstream answered 1xx–3xx.
    Success,
    /// keyward refused it (a denial: revoked, scope, rate limit, credits…,
    /// or another 4xx keyward answered itself).
    Denied,
    /// Forwarded, and the upstream answered 4xx.
    ClientError,
    /// A 5xx: the upstream's, or keyward's own (upstream timeout or down,
    /// store unavailable).
    Error,
}

impl OutcomeClass {
    pub fn as_i64(self) -> i64 {
        match self {
            OutcomeClass::Success => 0,
            OutcomeClass::Denied => 1,
            OutcomeClass::ClientError => 2,
            OutcomeClass::Error => 3,
        }
    }

    pub fn from_i64(v: i64) -> OutcomeClass {
        match v {
            0 => OutcomeClass::Success,
            1 => OutcomeClass::Denied,
            2 => OutcomeClass::ClientError,
            _ => OutcomeClass::Error,
        }
    }
}

/// Counts to add to one series in one minute. A series is one key, tenant
/// header value, route and outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDelta {
    /// The minute's start (ms); hours and days are derived from it.
    pub minute: i64,
    pub key_id: String,
    /// The key's tenant (`None` for root keys).
    pub tenant_id: Option<String>,
    /// The tenant header's value the request carried and the key was
    /// allowed (`""` for none).
    pub tenant_header: String,
    /// The route's template (`GET /v1/calls/{id}`, `POST /v1/keys/verify`),
    /// never a raw path.
    pub route: String,
    /// `valid`, a denial or error code (`revoked_api_key`,
    /// `rate_limited`…), or the upstream's status class (`upstream_2xx`…).
    pub outcome: String,
    pub class: OutcomeClass,
    pub requests: i64,
    pub credits: i64,
    /// Sum of the requests' latencies, microseconds.
    pub latency_us: i64,
}

/// One key's use from one client address, over a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSighting {
    pub key_id: String,
    pub ip: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub requests: i64,
}

/// A client address of a key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIp {
    pub ip: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub requests: i64,
}

/// Counts of one bucket and outcome, as stored (the rows behind a series).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub bucket: i64,
    pub outcome: String,
    pub class: OutcomeClass,
    pub requests: i64,
    pub credits: i64,
    pub latency_us: i64,
}

/// What a tenant's usage is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Key,
    TenantHeader,
    Route,
    Outcome,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Key => "key",
            GroupBy::TenantHeader => "tenant_header",
            GroupBy::Route => "route",
            GroupBy::Outcome => "outcome",
        }
    }

    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "key" => Some(GroupBy::Key),
            "tenant_header" => Some(GroupBy::TenantHeader),
            "route" => Some(GroupBy::Route),
            "outcome" => Some(GroupBy::Outcome),
            _ => None,
        }
    }
}

/// Counts of one group value and outcome class (and outcome, for denials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// The group's value: a key id, a tenant header value (`""`: none), a
    /// route template or an outcome.
    pub group: String,
    pub outcome: String,
    pub class: OutcomeClass,
    pub requests: i64,
    pub credits: i64,
    pub latency_us: i64,
}

/// A usage query over `[from, to)` (ms, aligned by the caller to the
/// granularity).
#[derive(Debug, Clone, Copy)]
pub struct UsageRange {
    pub granularity: Granularity,
    pub from: i64,
    pub to: i64,
}

/// How long each granularity is kept (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRetention {
    pub minutes: i64,
    pub hours: i64,
    pub days: i64,
}

/// What [`UsageStore::prune_usage`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub minutes: u64,
    pub hours: u64,
    pub days: u64,
    pub ips: u64,
}

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds `deltas` (to their minute, hour and day) and `ips` in one
    /// transaction, then trims each key in `ips` to its `max_ips_per_key`
    /// most recently seen addresses. Rows are written in a fixed order, so
    /// nodes adding to the same rows at once do not deadlock.
    async fn add_usage(
        &self,
        deltas: &[UsageDelta],
        ips: &[IpSighting],
        max_ips_per_key: u32,
    ) -> StoreResult<()>;

    /// One key's rows in `range`, by bucket then outcome.
    async fn key_usage(&self, key_id: &str, range: UsageRange) -> StoreResult<Vec<UsageRow>>;

    /// One tenant's counts in `range` grouped by `by` and outcome, ordered
    /// by group value then outcome: the rows of the first `limit` group
    /// values greater than `after`.
    async fn tenant_usage(
        &self,
        tenant_id: &str,
        range: UsageRange,
        by: GroupBy,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<GroupRow>>;

    /// A key's client addresses, most recently seen first; `offset` rows
    /// skipped, at most `limit` returned.
    async fn key_ips(&self, key_id: &str, offset: u64, limit: u32) -> StoreResult<Vec<KeyIp>>;

    /// Deletes the rows of each granularity whose bucket started before
    /// `now - retention`, and client addresses last seen before
    /// `now - retention.days`.
    async fn prune_usage(&self, now: i64, retention: UsageRetention) -> StoreResult<Pruned>;
}
