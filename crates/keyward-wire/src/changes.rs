//! The change feed (`GET /v1/changes`): the change log's entries, for
//! services that cache keys outside keyward and must hear of changes as
//! fast as a keyward node does.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The query of `GET /v1/changes`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListChanges {
    /// Answer the entries with a larger `seq` (default 0: from the start of
    /// the log kept).
    pub after: Option<i64>,
    /// When there are none yet, wait up to this long for one (0 to 30,000;
    /// default 0: answer at once).
    #[param(minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u64>,
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeView {
    /// Grows with every entry; entries may become visible out of order
    /// (a smaller `seq` can commit after a larger one), so a reader that
    /// sees a gap reads again from below it for a while.
    pub seq: i64,
    /// `key` (the key with `key_hash` changed or went away), `tenant` (a
    /// tenant's facts changed: drop its keys), or another kind to ignore.
    pub kind: String,
    /// Hex SHA-256 of the key's secret, for `key` changes. Never a secret.
    pub key_hash: Option<String>,
    pub tenant_id: Option<String>,
}

/// A page of the change feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangePage {
    /// Oldest first, at most 1,000.
    pub changes: Vec<ChangeView>,
    /// The newest `seq` in the log when this was read (where a new reader
    /// starts).
    pub last_seq: i64,
}
