//! Following the store's change log, so a change made on any node reaches
//! this node's key cache at once.
//!
//! Two tasks share one [`Follower`]:
//! - the feed task listens (PostgreSQL `LISTEN/NOTIFY`) and applies each
//!   change as its notice arrives: milliseconds after the commit;
//! - the poll task reads the log every `changes.poll_interval_ms` (and at
//!   once when the feed lost its connection), applying whatever the feed
//!   missed, in `seq` order.
//!
//! # Invariants
//! - Applying a change only drops cache entries (or asks for credits back),
//!   so applying one twice, or one this node made itself, is harmless: the
//!   feed and the poll never need to agree on who applies what.
//! - Every change with `seq <= low` has been applied. `seq`s are handed out
//!   before commit, so one can commit after a larger one: a hole above `low`
//!   is waited for (up to [`HOLE_WAIT`]) instead of skipped.
//! - The cache is trusted only until `changes.max_silence_seconds` after
//!   the last complete read of the log; past that every request re-reads
//!   its key, so no key revoked longer ago than that is ever served, even
//!   if this node hears nothing. When reads succeed again after such a
//!   silence the whole cache is dropped (the log may have been pruned
//!   meanwhile).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_core::clock::Clock;
use keyward_limits::CreditBank;
use keyward_store::{Change, ChangeKind, Store};
use keyward_verify::verifier::Verifier;

use crate::config::ChangesConfig;

/// Longest a hole in `seq` is waited for before it is taken as a rolled
/// back transaction (management transactions last milliseconds).
const HOLE_WAIT: Duration = Duration::from_secs(10);
/// Changes read per query while catching up.
const BATCH: u32 = 1_000;
/// Most `seq`s remembered above a hole; past it the cache is dropped and
/// the cursor moves on (only a flood of changes behind one stuck
/// transaction gets here).
const MAX_SEEN: usize = 100_000;
/// On start, the last changes before the newest are read again: one that
/// was in flight while this node started commits below the newest `seq`.
const START_OVERLAP: i64 = 1_000;

/// How this node hears of changes, for `/v1/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeHealth {
    /// The live feed is connected (and the log reads succeed).
    Listening,
    /// Reading the log succeeds, without a live feed (SQLite, or the feed is
    /// reconnecting): changes arrive within `changes.poll_interval_ms`.
    Polling,
    /// The log could not be read for longer than
    /// `changes.max_silence_seconds`: the cache is not trusted.
    Silent,
}

impl ChangeHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeHealth::Listening => "listening",
            ChangeHealth::Polling => "polling",
            ChangeHealth::Silent => "silent",
        }
    }
}

/// What credits do when another node asks for its reservations back.
pub(crate) trait ReclaimHandler: Send + Sync + 'static {
    fn reclaim(&self, tenant_id: &str);
}

/// The credit bank answers a reclaim by handing the tenant's reservation
/// back ([`CreditBank::release_tenant`]) in a task of its own: the follower
/// applies changes in order and must not wait for the store meanwhile.
impl ReclaimHandler for Arc<CreditBank> {
    fn reclaim(&self, tenant_id: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(tenant = tenant_id, "A credit reclaim arrived outside a runtime; the reservation is released when idle.");
            return;
        };
        let bank = Arc::clone(self);
        let tenant = tenant_id.to_owned();
        drop(runtime.spawn(async move { bank.release_tenant(&tenant).await }));
    }
}

struct Cursor {
    /// Every change with `seq <= low` was applied.
    low: i64,
    /// Applied changes above `low` (above a hole).
    seen: BTreeSet<i64>,
    /// Since when the hole at `low + 1` has been open.
    hole_since: Option<Instant>,
}

pub(crate) struct Follower {
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
    reclaim: Option<Arc<dyn ReclaimHandler>>,
    node_id: String,
    poll: Duration,
    max_silence_ms: i64,
    retain_ms: i64,
    cursor: Mutex<Cursor>,
    /// Monotonic time of the last complete read of the log.
    heard: Mutex<Instant>,
    feed_up: AtomicBool,
    silent: AtomicBool,
    poll_now: tokio::sync::Notify,
    /// Raised after new changes were applied (the change feed's waiters).
    signal: Option<Arc<keyward_api::changes::ChangeSignal>>,
}

impl Follower {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        verifier: Arc<Verifier>,
        clock: Arc<dyn Clock>,
        node_id: String,
        config: &ChangesConfig,
    ) -> Follower {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Follower {
            store,
            verifier,
            clock,
            reclaim: None,
            node_id,
            poll: Duration::from_millis(config.poll_interval_ms),
            max_silence_ms: ms(config.max_silence_seconds.saturating_mul(1000)),
            retain_ms: ms(config.retain_hours.saturating_mul(3_600_000)),
            cursor: Mutex::new(Cursor {
                low: 0,
                seen: BTreeSet::new(),
                hole_since: None,
            }),
            heard: Mutex::new(Instant::now()),
            feed_up: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            poll_now: tokio::sync::Notify::new(),
            signal: None,
        }
    }

    /// Raises `signal` whenever new changes were applied.
    pub(crate) fn with_signal(
        mut self,
        signal: Arc<keyward_api::changes::ChangeSignal>,
    ) -> Follower {
        self.signal = Some(signal);
        self
    }

    fn raise(&self) {
        if let Some(s) = &self.signal {
            s.raise();
        }
    }

    /// Hands other nodes' `credits.reclaim` changes to `handler`.
    pub(crate) fn with_reclaim(mut self, handler: Arc<dyn ReclaimHandler>) -> Follower {
        self.reclaim = Some(handler);
        self
    }

    pub(crate) fn health(&self) -> ChangeHealth {
        if self.silent.load(Ordering::Acquire) {
            ChangeHealth::Silent
        } else if self.feed_up.load(Ordering::Acquire) {
            ChangeHealth::Listening
        } else {
            ChangeHealth::Polling
        }
    }

    /// Reads where the log stands, trusts the (empty) cache for one silence
    /// window, and starts both tasks.
    pub(crate) async fn start(self: Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        match self.store.last_change_seq().await {
            Ok(last) => self.lock().low = last.saturating_sub(START_OVERLAP).max(0),
            Err(e) => {
                tracing::warn!(error = %e, "Could not read the change log at start; reading it from the beginning.")
            }
        }
        self.trust_from_now();
        let feed = tokio::spawn(Arc::clone(&self).feed_task());
        let poll = tokio::spawn(self.poll_task());
        vec![feed, poll]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cursor> {
        self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn trust_from_now(&self) {
        let now = self.clock.now().0;
        self.verifier
            .cache()
            .trust_until(now.saturating_add(self.max_silence_ms));
    }

    /// What a change does to this node.
    fn apply(&self, change: &Change) {
        match change.kind {
            ChangeKind::Key => {
                if let Some(hash) = change.key_hash.as_deref() {
                    crate::invalidate::drop_key(&self.verifier, hash);
                }
            }
            ChangeKind::Tenant => self.verifier.cache().clear(),
            ChangeKind::CreditsReclaim => {
                let theirs = change.origin.as_deref() != Some(self.node_id.as_str());
                if let (true, Some(tenant), Some(handler)) =
                    (theirs, change.tenant_id.as_deref(), self.reclaim.as_ref())
                {
                    handler.reclaim(tenant);
                }
            }
            ChangeKind::Other(ref kind) => {
                tracing::debug!(kind = %kind, "Ignored a change of a kind this build does not know.")
            }
        }
    }

    /// Applies `change` unless it was applied already; `true` if it was new.
    fn take(&self, change: &Change) -> bool {
        {
            let mut c = self.lock();
            if change.seq <= c.low || !c.seen.insert(change.seq) {
                return false;
            }
            Self::advance(&mut c);
        }
        self.apply(change);
        true
    }

    fn advance(c: &mut Cursor) {
        while c.seen.first() == Some(&(c.low + 1)) {
            c.seen.pop_first();
            c.low += 1;
        }
        if c.seen.is_empty() {
            c.hole_since = None;
        } else if c.hole_since.is_none() {
            c.hole_since = Some(Instant::now());
        }
    }

    /// Reads the log from `low` to its end, applying what is new. `Err`
    /// when a read failed.
    async fn catch_up(&self) -> Result<usize, keyward_store::StoreError> {
        let mut applied = 0;
        let mut after = self.lock().low;
        loop {
            let batch = self.store.changes_after(after, BATCH).await?;
            for change in &batch {
                if self.take(change) {
                    applied += 1;
                }
            }
            match batch.last() {
                Some(last) if batch.len() == BATCH as usize => after = last.seq,
                _ => break,
            }
        }
        // A hole open too long is a transaction that rolled back.
        let dropped = {
            let mut c = self.lock();
            let stuck = c.hole_since.is_some_and(|t| t.elapsed() >= HOLE_WAIT);
            if stuck || c.seen.len() > MAX_SEEN {
                if let Some(&first) = c.seen.first() {
                    c.low = first - 1;
                }
                Self::advance(&mut c);
            }
            let overflow = c.seen.len() > MAX_SEEN;
            if overflow {
                if let Some(&last) = c.seen.last() {
                    c.low = last;
                }
                c.seen.clear();
                c.hole_since = None;
            }
            overflow
        };
        if dropped {
            self.verifier.cache().clear();
        }
        if applied > 0 {
            self.raise();
        }
        Ok(applied)
    }

    async fn poll_task(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut last_prune = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.poll_now.notified() => {}
            }
            match self.catch_up().await {
                Ok(_) => {
                    let was_silent = self.silent.swap(false, Ordering::AcqRel);
                    if was_silent {
                        // Changes may be gone from the log by now.
                        self.verifier.cache().clear();
                        tracing::info!("The change log answers again; the key cache was dropped and is trusted again.");
                    } else if failing {
                        tracing::info!("The change log answers again.");
                    }
                    failing = false;
                    *self.heard.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    self.trust_from_now();
                    // Keeps the feed from going quiet: one that hears not
                    // even this for `feed_silence` is dead (see feed_task).
                    if self.feed_up.load(Ordering::Acquire) {
                        if let Err(e) = self.store.ping_feed(&self.node_id).await {
                            tracing::debug!(error = %e, "Could not ping the change feed.");
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "Could not read the change log; the key cache is trusted for changes.max_silence_seconds more.");
                    }
                    failing = true;
                    let heard = *self.heard.lock().unwrap_or_else(|e| e.into_inner());
                    let silence = i64::try_from(heard.elapsed().as_millis()).unwrap_or(i64::MAX);
                    if silence >= self.max_silence_ms && !self.silent.swap(true, Ordering::AcqRel) {
                        tracing::error!("No change log read for changes.max_silence_seconds: every request now reads its key from the store.");
                    }
                }
            }
            if last_prune.elapsed() >= Duration::from_secs(600) {
                last_prune = Instant::now();
                let before = self.clock.now().0.saturating_sub(self.retain_ms);
                match self.store.prune_changes(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(pruned = n, "Pruned the change log."),
                    Err(e) => tracing::warn!(error = %e, "Could not prune the change log."),
                }
            }
        }
    }

    /// How long the feed may hear nothing, not even this node's own pings,
    /// before it is taken for dead: three poll intervals, at least 3 s.
    fn feed_silence(&self) -> Duration {
        (self.poll * 3).max(Duration::from_secs(3))
    }

    async fn feed_task(self: Arc<Self>) {
        let name = format!("keyward-changes/{}", self.node_id);
        let mut backoff = Duration::from_millis(100);
        loop {
            // Bounded like every read: a store that takes the connection
            // and never answers must not hold this task forever.
            let feed = tokio::time::timeout(self.feed_silence(), self.store.change_feed(&name))
                .await
                .unwrap_or_else(|_| {
                    Err(keyward_store::StoreError::Unavailable(
                        "no answer while connecting the change feed".into(),
                    ))
                });
            let mut feed = match feed {
                Ok(Some(feed)) => feed,
                // No live feed on this backend: the poll task does it all.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "Could not listen for changes; reading the change log every poll interval meanwhile.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            tracing::info!("Listening for changes from other nodes.");
            self.feed_up.store(true, Ordering::Release);
            // Whatever committed before the listen began is in the log.
            self.poll_now.notify_one();
            loop {
                // Every read has a timeout: the poll task pings the feed
                // every poll interval, so hearing nothing for three of them
                // means a connection that died without a word.
                let next = tokio::time::timeout(self.feed_silence(), feed.next()).await;
                match next {
                    Ok(Ok(Some(change))) => {
                        backoff = Duration::from_millis(100);
                        if self.take(&change) {
                            self.raise();
                        }
                    }
                    Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                        // Lost (or silent): listen again on a new connection
                        // (then the log is read, so nothing sent meanwhile
                        // is missed), and read the log now as well.
                        self.feed_up.store(false, Ordering::Release);
                        tracing::warn!("The change feed lost its connection or went silent; listening again, and reading the change log meanwhile.");
                        self.poll_now.notify_one();
                        break;
                    }
                }
            }
        }
    }
}
