//! Idempotency records for the gateway: a claim on a key before forwarding,
//! the stored response replayed afterwards, a bound on records per scope.

use async_trait::async_trait;

use crate::StoreResult;

/// A stored response, replayed for a repeated idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A claim on an idempotency key before forwarding.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    /// Tenant and key the idempotency key belongs to.
    pub scope: String,
    pub key: String,
    /// Hash of method, path and body.
    pub fingerprint: String,
    pub now: i64,
    /// Until when the claim holds if the request never completes (a crash).
    pub lock_until: i64,
    /// Until when a completed response is replayed.
    pub expires_at: i64,
    /// Most records `scope` may hold. A new key beyond it first drops the
    /// scope's records that are free anyway (expired, or claims abandoned
    /// past their lock), then the oldest completed ones; never a claim in
    /// flight. If only claims in flight are left, the claim is refused
    /// ([`ClaimOutcome::QuotaExceeded`]).
    pub max_records: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This request owns the key: forward, then complete or release.
    Claimed,
    /// Another request with this key is in flight.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
    /// Completed before: replay this.
    Completed(StoredResponse),
    /// A new key, but the scope holds `max_records` claims in flight:
    /// nothing was stored.
    QuotaExceeded,
}
/// Idempotency keys of gateway requests: claim, complete, release, purge.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `claim.key` in `claim.scope`, keeping the scope within
    /// `claim.max_records` records. Concurrent claims in one scope, on any
    /// node, never leave it above the bound.
    async fn claim_idempotency(&self, claim: &IdempotencyClaim) -> StoreResult<ClaimOutcome>;
    /// Stores the response of a claimed key for replay.
    async fn complete_idempotency(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
        expires_at: i64,
    ) -> StoreResult<()>;
    /// Gives a claimed key back (the request was never forwarded).
    async fn release_idempotency(&self, scope: &str, key: &str) -> StoreResult<()>;
    /// Deletes records whose replay window ended; returns how many.
    async fn purge_idempotency(&self, now: i64) -> StoreResult<u64>;
}
