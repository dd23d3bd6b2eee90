//! The change log: an ordered record of every change that can make a
//! node's cached view of a key stale, so every node hears of it.
//!
//! Rows are written by the store itself, in the transaction of the change:
//! table triggers on `keys` (any column a verification reads; last-use
//! updates do not count) and `tenants` append one row each, so no writer
//! (API, console, CLI, a future tool) can change a key without the log
//! knowing. A few changes that are not table updates (a node asking the
//! others to hand back credit reservations) are appended explicitly with
//! [`ChangeStore::record_change`].
//!
//! Nodes read the log two ways: a live [`ChangeFeed`] where the backend has
//! one (PostgreSQL `LISTEN/NOTIFY`, fired by a trigger on the log, so a
//! notice leaves at commit), and [`ChangeStore::changes_after`], the ordered
//! catch-up after a lost connection and the periodic check that nothing was
//! missed. `seq` grows with every row; concurrent transactions may commit
//! out of order, so a reader tolerates gaps that fill later.

use async_trait::async_trait;

use crate::StoreResult;

/// What a change touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// A key's row changed or went away (`key_hash` says which).
    Key,
    /// A tenant's row changed: cached principals carry tenant facts.
    Tenant,
    /// A node ran short of a tenant's credits while other nodes held
    /// reservations: they should hand them back (`tenant_id`, `origin`).
    CreditsReclaim,
    /// A kind this build does not know (written by a newer node).
    Other(String),
}

impl ChangeKind {
    pub fn as_str(&self) -> &str {
        match self {
            ChangeKind::Key => "key",
            ChangeKind::Tenant => "tenant",
            ChangeKind::CreditsReclaim => "credits.reclaim",
            ChangeKind::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> ChangeKind {
        match s {
            "key" => ChangeKind::Key,
            "tenant" => ChangeKind::Tenant,
            "credits.reclaim" => ChangeKind::CreditsReclaim,
            other => ChangeKind::Other(other.to_owned()),
        }
    }
}

/// One row of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    /// Milliseconds since the epoch, by the store's clock.
    pub at: i64,
    pub kind: ChangeKind,
    /// The key's secret hash (hex), for [`ChangeKind::Key`]. Never a secret.
    pub key_hash: Option<String>,
    pub tenant_id: Option<String>,
    /// The node that recorded it, for changes recorded explicitly.
    pub origin: Option<String>,
}

/// The change log.
#[async_trait]
pub trait ChangeStore {
    /// Appends a change no trigger records, at `at` (ms); returns its `seq`.
    async fn record_change(
        &self,
        kind: ChangeKind,
        tenant_id: Option<&str>,
        origin: Option<&str>,
        at: i64,
    ) -> StoreResult<i64>;

    /// Changes with `seq > after`, oldest first, at most `limit`.
    async fn changes_after(&self, after: i64, limit: u32) -> StoreResult<Vec<Change>>;

    /// The newest `seq` (0 when the log is empty).
    async fn last_change_seq(&self) -> StoreResult<i64>;

    /// Deletes changes recorded before `before_at` (store clock, ms).
    async fn prune_changes(&self, before_at: i64) -> StoreResult<u64>;

    /// A live feed of changes as they commit, where the backend has one
    /// (PostgreSQL); `None` where nodes can only poll (SQLite, one node).
    /// `name` identifies the connection to the backend's operators
    /// (PostgreSQL `application_name`).
    async fn change_feed(&self, name: &str) -> StoreResult<Option<Box<dyn ChangeFeed>>>;

    /// Sends a notice that changes nothing (`kind` `ping`, `seq` 0) on the
    /// live feed, so a listener that hears nothing for long knows its
    /// connection is dead rather than the deployment quiet. No-op where
    /// there is no feed.
    async fn ping_feed(&self, origin: &str) -> StoreResult<()>;
}

/// Changes as they commit.
#[async_trait]
pub trait ChangeFeed: Send {
    /// The next change. `Ok(None)`: the connection was lost and is being
    /// re-established, so changes may have been missed (read the log);
    /// `Err`: it could not be re-established this time (try again later).
    async fn next(&mut self) -> StoreResult<Option<Change>>;
}
