//! keyward's storage: everything the server keeps durably, behind traits
//! split by concern, and their SQLite / PostgreSQL implementation.
//!
//! One trait per concern, so another backend can implement some of them:
//!
//! - tenants: [`TenantStore`];
//! - keys: [`KeyStore`], tenant keys and operator root keys in one table
//!   told apart by [`KeyClass`]; lookups by secret hash, last use;
//! - the append-only audit log: [`AuditStore`]. Every management change
//!   and its [`AuditEntry`] are written in one transaction by the store
//!   that makes the change;
//! - credit balances, reservations and the ledger: [`CreditStore`];
//! - the gateway's idempotency records: [`IdempotencyStore`];
//! - the console's people (users, roles per tenant, sessions, invitations
//!   and failed sign-in counts): [`UserStore`];
//! - the change log every node follows to keep its cache true, with a live
//!   feed on PostgreSQL: [`ChangeStore`];
//! - usage counts per key, tenant header, route and outcome by minute, hour
//!   and day, and each key's client addresses: [`UsageStore`];
//! - leak reports (a key's secret found in public, by hash only), acted on
//!   once per key: [`LeakStore`];
//! - the outbox of events (written in the transaction of the change that
//!   caused them and fanned out there to matching webhook endpoints),
//!   endpoints, deliveries leased to one worker at a time, attempts, and
//!   alerts: [`EventStore`].
//!
//! [`Store`] is all of them plus a readiness [`Store::ping`]; the server
//! holds an `Arc<dyn Store>` and calls every method through it.
//!
//! [`SqlStore`] implements it for SQLite (the embedded default) and
//! PostgreSQL (many nodes) with the same code: queries use only portable SQL
//! and portable column types (TEXT, BIGINT milliseconds, JSON as TEXT), and
//! the few dialect differences live in [`sql::schema`]. The conformance suite
//! in the integration tests runs each concern's tests against both.
#![forbid(unsafe_code)]

mod audit;
mod changes;
mod credits;
mod events;
mod idempotency;
mod keys;
mod leaks;
pub mod sql;
mod tenants;
mod usage;
mod users;

use async_trait::async_trait;

pub use audit::{AuditEntry, AuditEvent, AuditFilter, AuditStore};
pub use changes::{Change, ChangeFeed, ChangeKind, ChangeStore};
pub use credits::{
    next_boundary, ChangeOutcome, CreditAccount, CreditChange, CreditStore, LedgerEntry,
    LedgerKind, Recover, Refill, RefillMode, RefillPeriod, ReserveRequest, Reserved, Settlement,
};
pub use events::{
    Alert, AlertFilter, Attempt, Claimed, Delivery, DeliveryStatus, Endpoint, EndpointPatch, Event,
    EventStore, KeyDue, KeyMinute, LowCredits, NewAddress, NewEvent, NextStep, PrunedEvents,
    Recorded, TypePattern,
};
pub use idempotency::{ClaimOutcome, IdempotencyClaim, IdempotencyStore, StoredResponse};
pub use keys::{
    KeyClass, KeyFilter, KeyPatch, KeyRecord, KeyStatus, KeyStore, KeyUse, KeyWithTenant,
    RateLimitOverride, MAX_HASHES_PER_LOOKUP, ROOT_MANAGEMENT_SCOPE,
};
pub use leaks::{LeakReport, LeakStatus, LeakStore};
pub use sql::SqlStore;
pub use tenants::{Tenant, TenantPatch, TenantStore};
pub use usage::{
    Granularity, GroupBy, GroupRow, IpSighting, KeyIp, OutcomeClass, Pruned, UsageDelta,
    UsageRange, UsageRetention, UsageRow, UsageStore,
};
pub use users::{Invite, Invitee, Member, Membership, Role, Session, User, UserStore};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("a live key with this name already exists in this tenant")]
    NameTaken,
    #[error("{0}")]
    Conflict(&'static str),
    /// The change would leave no active root key that can manage keys.
    #[error("the change would end the last active root key that can manage keys")]
    LastRootKey,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The backend failed (connection, I/O, a query error); the source is
    /// the backend's own error.
    #[error("storage is unavailable: {0}")]
    Backend(#[source] BackendError),
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    #[error("unsupported store URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
}

/// A backend's own error, kept as the source of [`StoreError::Backend`]
/// without naming the backend's error type.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub type StoreResult<T> = Result<T, StoreError>;

/// Durable state: every concern's store, plus a readiness check.
/// Implementations must be safe to share across tasks and, for PostgreSQL,
/// across nodes.
#[async_trait]
pub trait Store:
    TenantStore
    + KeyStore
    + AuditStore
    + CreditStore
    + IdempotencyStore
    + UserStore
    + ChangeStore
    + UsageStore
    + LeakStore
    + EventStore
    + Send
    + Sync
    + 'static
{
    /// Cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
}

/// Newest first; `before` is the `seq` cursor of the last item already seen.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: u32,
    pub before: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<(i64, T)>,
    /// Present when more items follow; pass it back as `before`.
    pub next: Option<i64>,
}
