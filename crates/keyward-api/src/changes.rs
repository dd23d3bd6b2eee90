//! The change feed, `GET /v1/changes?after=SEQ&wait_ms=N`: the change
//! log's entries after `SEQ`, or, when there are none yet, a wait of up to
//! `N` ms for one (a long poll). A service that caches keys outside keyward
//! (the tower layer's remote backend) follows it to drop what changed, as
//! fast as a keyward node's own cache does.
//!
//! The wait ends early on a [`ChangeSignal`]: the server raises it when a
//! change is committed on this node (after the management call's
//! invalidation) and when its change follower applies one from another
//! node, so a waiter hears of a revocation within the time the node itself
//! does. Bounded: at most [`MAX_ENTRIES`] entries per answer, waits of at
//! most [`MAX_WAIT_MS`], and at most [`MAX_WAITERS`] waiting requests per
//! node (beyond: 503 `overloaded`, retry in a second).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use keyward_http::error::{ApiError, FieldError};
use keyward_wire::{ChangePage, ChangeView, ListChanges};

use super::{Caller, Query};
use crate::ApiState;

/// Most entries in one answer.
pub const MAX_ENTRIES: u32 = 1_000;
/// Longest wait one request may ask for.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Most requests waiting at once on one node: each holds a connection and
/// a task, so a flood of long polls cannot exhaust the node.
pub const MAX_WAITERS: usize = 1_024;

/// "The change log may have grown": raised by the server after a change
/// committed here or applied from another node, and at shutdown (so no
/// long poll holds the drain).
#[derive(Debug, Default)]
pub struct ChangeSignal {
    notify: tokio::sync::Notify,
    waiting: AtomicUsize,
    closed: AtomicBool,
}

impl ChangeSignal {
    /// Wakes every waiting request (they read the log again).
    pub fn raise(&self) {
        self.notify.notify_waiters();
    }

    /// Ends every wait now and every later one at once (shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// A place among the waiters, if one is free.
    fn enter(&self) -> Option<Waiter<'_>> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let waiter = Waiter(self);
        (before < MAX_WAITERS).then_some(waiter)
    }
}

/// One waiting request; leaves on drop.
struct Waiter<'a>(&'a ChangeSignal);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The change log after `after`, waiting up to `wait_ms` for an entry when
/// there is none yet. Needs `keyward:keys:verify`; a tenant key sees its
/// own tenant's entries only.
#[utoipa::path(
    get,
    path = "/v1/changes",
    tag = "keys",
    operation_id = "list_changes",
    params(ListChanges),
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    responses(
        (status = 200, body = ChangePage, description = "Entries after `after`, oldest first (empty if the wait ended without one)."),
        (status = 400, description = "`invalid_query`: `after` or `wait_ms` is not an integer.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 403, description = "`insufficient_scope`: the key lacks `keyward:keys:verify`.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed`: `wait_ms` is over 30000.", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 503, description = "`overloaded`: too many requests are waiting on this node; retry after `Retry-After`.", body = ProblemDoc, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<ListChanges>,
) -> Result<axum::Json<ChangePage>, ApiError> {
    let after = query.after.unwrap_or(0);
    let wait_ms = query.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::Validation(vec![FieldError::new(
            "wait_ms",
            "out_of_range",
            format!("wait_ms must be at most {MAX_WAIT_MS}"),
        )]));
    }
    let signal = &state.changes;
    let read = || {
        state
            .manage
            .changes_after(&caller.actor, after, MAX_ENTRIES)
    };
    if wait_ms == 0 || signal.closed.load(Ordering::Acquire) {
        let (changes, last) = read().await?;
        return Ok(axum::Json(page(changes, last)));
    }
    let _waiter = signal.enter().ok_or(ApiError::Overloaded)?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    loop {
        // Armed before the read: a change committed between the read and
        // the wait still wakes it.
        let woken = signal.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (changes, last) = read().await?;
        if !changes.is_empty() || signal.closed.load(Ordering::Acquire) {
            return Ok(axum::Json(page(changes, last)));
        }
        if tokio::time::timeout_at(deadline, woken).await.is_err() {
            return Ok(axum::Json(page(changes, last)));
        }
    }
}

fn page(changes: Vec<keyward_store::Change>, last_seq: i64) -> ChangePage {
    ChangePage {
        changes: changes
            .into_iter()
            .map(|c| ChangeView {
                seq: c.seq,
                kind: c.kind.as_str().to_owned(),
                key_hash: c.key_hash,
                tenant_id: c.tenant_id,
            })
            .collect(),
        last_seq,
    }
}

use crate::views::ProblemDoc;
