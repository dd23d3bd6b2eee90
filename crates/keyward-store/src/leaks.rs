//! Leak reports: a key's secret found where it must not be (a public
//! repository, a paste, a log), reported by a secret scanner (GitHub's
//! partner program, GitLab's revocation API) or a person.
//!
//! Each report is a row keyed by the hex SHA-256 of the leaked token —
//! never the token. The first report of a key is the *acting* one: the
//! deployment's policy (revoke, disable or flag) is applied once, for it;
//! later reports of the same key are recorded as repeats, and a unique
//! index on the acting row per key hash holds this across nodes. A report
//! is recorded `pending` with its `key.leaked` audit entry in one
//! transaction; the action is applied afterwards and the report finished
//! ([`LeakStore::finish_leak`]), so reports left pending by a crash are
//! found again ([`LeakStore::pending_leaks`]).

use async_trait::async_trait;

use crate::{AuditEntry, StoreResult};

/// Where a leak report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakStatus {
    /// Recorded, its action not applied yet.
    Pending,
    /// Its action was applied (see [`LeakReport::action`]).
    Applied,
    /// Its action could not be applied (see [`LeakReport::detail`]).
    Failed,
    /// A later report of a key already reported: recorded, no action.
    Repeat,
    /// No key has this hash: recorded, no action.
    Unmatched,
}

impl LeakStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LeakStatus::Pending => "pending",
            LeakStatus::Applied => "applied",
            LeakStatus::Failed => "failed",
            LeakStatus::Repeat => "repeat",
            LeakStatus::Unmatched => "unmatched",
        }
    }

    pub fn parse(s: &str) -> Option<LeakStatus> {
        Some(match s {
            "pending" => LeakStatus::Pending,
            "applied" => LeakStatus::Applied,
            "failed" => LeakStatus::Failed,
            "repeat" => LeakStatus::Repeat,
            "unmatched" => LeakStatus::Unmatched,
            _ => return None,
        })
    }
}

/// One leak report. Holds the token's hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakReport {
    /// `leak_…`.
    pub id: String,
    /// Hex SHA-256 of the reported token.
    pub key_hash: String,
    /// The key with this hash, when there is one.
    pub key_id: Option<String>,
    pub tenant_id: Option<String>,
    /// The scanner's name for the kind of token (GitHub's `type`).
    pub token_type: Option<String>,
    /// Where the token was found.
    pub url: Option<String>,
    /// What kind of place that is (GitHub's `source`: `content`, `commit`, …).
    pub source: Option<String>,
    /// Who reported it: `github`, `gitlab`, or `api:<key id>` / `console:<user id>`.
    pub reporter: String,
    pub received_at: i64,
    pub status: LeakStatus,
    /// The action applied: `revoke`, `disable`, `flag`, or `none` (nothing
    /// to do: the key was already revoked). `None` until applied.
    pub action: Option<String>,
    pub applied_at: Option<i64>,
    /// Why an action failed, or what made it a no-op.
    pub detail: Option<String>,
}

/// Leak reports: record (with the audit entry), find pending, finish, and
/// read a key's reports.
#[async_trait]
pub trait LeakStore: Send + Sync {
    /// Records `report` with `audit` in one transaction. A report with a
    /// `key_id` and status [`LeakStatus::Pending`] becomes the acting report
    /// of its key hash unless one exists (then it is stored as a
    /// [`LeakStatus::Repeat`]); the stored report is returned.
    async fn record_leak(
        &self,
        report: &LeakReport,
        audit: Option<&AuditEntry>,
    ) -> StoreResult<LeakReport>;
    /// A report by id ([`StoreError::NotFound`](crate::StoreError::NotFound) if none).
    async fn get_leak(&self, id: &str) -> StoreResult<LeakReport>;
    /// Pending reports, oldest first, at most `limit`.
    async fn pending_leaks(&self, limit: u32) -> StoreResult<Vec<LeakReport>>;
    /// Finishes a pending report: sets its status, action and detail.
    /// `false` (changing nothing) if it was not pending any more.
    async fn finish_leak(
        &self,
        id: &str,
        status: LeakStatus,
        action: &str,
        detail: Option<&str>,
        at: i64,
    ) -> StoreResult<bool>;
    /// A key's reports, newest first, at most `limit`.
    async fn leaks_of_key(&self, key_id: &str, limit: u32) -> StoreResult<Vec<LeakReport>>;
    /// Which of `key_ids` have an acting leak report (for marking lists).
    async fn leaked_keys(&self, key_ids: &[String]) -> StoreResult<Vec<String>>;
    /// Writes the audit entry of a refused report (nothing else changes).
    async fn audit_refused_leak(&self, audit: &AuditEntry) -> StoreResult<()>;
}
