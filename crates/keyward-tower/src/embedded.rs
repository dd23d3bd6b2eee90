//! The embedded backend: the service opens keyward's store itself and
//! runs keyward's verifier, rate limits and credit bank in-process, as one
//! more keyward node without an HTTP server.
//!
//! Built from the deployment's own settings (`[keys]` for the key format,
//! `[cache]`, `[limits]` for the tiers, `[changes]`), so it decides as a
//! keyward node with that `keyward.toml` does. A task follows the store's
//! change log every `changes.poll_interval_ms` (the server's rule: each
//! change once, gaps waited for), dropping changed keys from the cache and
//! handing credit reservations back when another node asks; the cache is
//! trusted for `changes.max_silence_seconds` after the log was last read.
//! Its credit reservations are its own (node id `credits.node_id` if set,
//! else a new one per process), settled every second and at
//! [`Embedded::shutdown`].

use std::sync::Arc;
use std::time::Duration;

use keyward_core::clock::{Clock, Timestamp};
use keyward_core::secret::{KeyHash, OsEntropy};
use keyward_core::verdict::Denial;
use keyward_http::error::ApiError;
use keyward_limits::{
    BankConfig, CreditBank, Limits, MemoryLimiter, RateLimiter, RateState, Spender, Tiers,
};
use keyward_store::{ChangeKind, SqlStore, Store};
use keyward_verify::last_use::LastUseRecorder;
use keyward_verify::verifier::{CachedKey, KeyCache, Outcome, Request as VerifyRequest, Verifier};

use crate::backend::{Admitted, Backend, Demand, Refused};
use crate::follow::{Cursor, HOLE_WAIT};
use crate::{Deployment, Principal};

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("no store_url is set")]
    NoStore,
    #[error("the store could not be opened: {0}")]
    Store(#[from] keyward_store::StoreError),
    #[error("invalid setting limits: {0}")]
    Tiers(#[from] keyward_limits::TierError),
}

/// keyward's verifier, limits and credits over the store, in-process.
pub struct Embedded {
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    limits: Arc<Limits>,
    tiers: Tiers,
    clock: Arc<dyn Clock>,
    usage: Arc<LastUseRecorder>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Embedded {
    /// Opens the deployment's `store_url` (migrating it if needed, as a
    /// keyward node does) and starts the background tasks.
    pub async fn open(
        deployment: &Deployment,
        clock: Arc<dyn Clock>,
    ) -> Result<Embedded, EmbeddedError> {
        let url = deployment
            .config
            .store_url
            .as_deref()
            .ok_or(EmbeddedError::NoStore)?;
        let store: Arc<dyn Store> = Arc::new(SqlStore::open(url).await?);
        Embedded::start(store, deployment, Arc::new(MemoryLimiter::default()), clock).await
    }

    /// Over a store already open, with `limiter` for rate limits.
    pub async fn start(
        store: Arc<dyn Store>,
        deployment: &Deployment,
        limiter: Arc<dyn RateLimiter>,
        clock: Arc<dyn Clock>,
    ) -> Result<Embedded, EmbeddedError> {
        let config = &deployment.config;
        let tiers = Tiers::compile(&config.limits)?;
        let c = &config.cache;
        let usage = Arc::new(LastUseRecorder::new(60));
        let verifier = Arc::new(Verifier::new(
            deployment.credentials.format.clone(),
            Arc::clone(&store),
            Arc::clone(&clock),
            KeyCache::new(
                c.ttl_seconds,
                c.negative_ttl_seconds,
                c.capacity,
                c.negative_capacity,
            ),
            Arc::clone(&usage),
            config.limits.default_tier.clone(),
            c.max_pending_loads,
        ));
        let node_id =
            keyward_core::id::new_id("lib", &OsEntropy).unwrap_or_else(|_| "library".to_owned());
        let bank = Arc::new(CreditBank::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            BankConfig {
                node_id,
                max_reservation: 10_000,
                idle_release_ms: 10_000,
                stale_ms: 300_000,
                reclaim_wait: Duration::from_millis(500),
            },
        ));
        let limits = Arc::new(Limits {
            limiter,
            credits: Arc::clone(&bank),
            decisions: Default::default(),
        });
        let ch = &config.changes;
        let follower = Follower {
            store: Arc::clone(&store),
            verifier: Arc::clone(&verifier),
            bank: Arc::clone(&bank),
            clock: Arc::clone(&clock),
            poll: Duration::from_millis(ch.poll_interval_ms.max(1)),
            max_silence_ms: i64::try_from(ch.max_silence_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        };
        follower.trust_from_now();
        let last = store.last_change_seq().await?;
        let tasks = vec![
            usage.spawn_flusher(Arc::clone(&store), Duration::from_secs(1)),
            bank.spawn_settler(Duration::from_secs(1)),
            tokio::spawn(follower.run(Cursor::starting_at(last))),
        ];
        Ok(Embedded {
            store,
            verifier,
            limits,
            tiers,
            clock,
            usage,
            tasks,
        })
    }

    /// Settles this node's credits and writes last-use times (call before
    /// the process exits; reservations left unsettled count as spent).
    pub async fn shutdown(&self) {
        if let Err(e) = self.limits.credits.settle(true).await {
            tracing::error!(error = %e, "Could not settle credits at shutdown.");
        }
        self.usage.flush_all(self.store.as_ref()).await;
    }

    fn principal(key: &CachedKey) -> Principal {
        let r = &key.record;
        let expires_at = match (r.expires_at, r.grace_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Principal::new(keyward_wire::Principal {
            key_id: r.id.clone(),
            key_name: r.name.clone(),
            start: r.start.clone(),
            kind: r.class.as_str().to_owned(),
            tenant_id: r.tenant_id.clone(),
            tenant_name: key.tenant_name.clone(),
            environment: r.environment.clone(),
            scopes: r.scopes.clone(),
            owner: r.owner.clone(),
            tier: r.tier.clone().or_else(|| key.tenant_tier.clone()),
            expires_at: expires_at.map(|ms| Timestamp(ms).to_rfc3339()),
            metadata: r.metadata.clone(),
        })
    }
}

/// What limits need of a verified key (the gateway's rule).
fn spender(key: &CachedKey) -> Spender<'_> {
    Spender {
        key_id: &key.record.id,
        tenant_id: key.record.tenant_id.as_deref(),
        tier: key.record.tier.as_deref(),
        tenant_tier: key.tenant_tier.as_deref(),
        rate_override: key.rate_override.as_ref(),
        credit_cap: key.record.credit_cap,
    }
}

fn request<'a>(demand: &Demand<'a>) -> VerifyRequest<'a> {
    VerifyRequest {
        client_ip: demand.client_ip,
        required_scopes: demand.scopes,
    }
}

#[async_trait::async_trait]
impl Backend for Embedded {
    fn decide_now(&self, demand: &Demand<'_>) -> Option<Result<Admitted, Refused>> {
        let key = match self
            .verifier
            .verify_cached(demand.presented, request(demand))?
        {
            Outcome::Valid(k) => k,
            Outcome::Denied(d, _) => return Some(Err(Refused::from(ApiError::Denied(d)))),
        };
        if demand.credits > 0 && key.record.tenant_id.is_some() {
            return None;
        }
        let spender = spender(&key);
        let rate = match self.tiers.policy_for(&spender) {
            None => None,
            Some(p) => {
                let now = self.clock.now();
                let d = self
                    .limits
                    .limiter
                    .spend_now(spender.key_id, p, demand.cost, now)?;
                let state = RateState::from_decision(p, &d);
                if !d.allowed {
                    return Some(Err(Refused {
                        error: ApiError::Denied(Denial::RateLimited {
                            retry_after_seconds: d.retry_after_seconds,
                        }),
                        rate: Some(state),
                    }));
                }
                Some(state)
            }
        };
        Some(Ok(Admitted {
            principal: Embedded::principal(&key),
            rate,
        }))
    }

    async fn decide(&self, demand: Demand<'_>) -> Result<Admitted, Refused> {
        let outcome = self
            .verifier
            .verify(demand.presented, request(&demand))
            .await
            .map_err(|e| Refused::from(ApiError::from(e)))?;
        let key = match outcome {
            Outcome::Valid(k) => k,
            Outcome::Denied(d, _) => return Err(Refused::from(ApiError::Denied(d))),
        };
        let spent = self
            .limits
            .spend(
                &self.tiers,
                &spender(&key),
                demand.cost,
                demand.credits,
                self.clock.now(),
            )
            .await
            .map_err(|e| Refused::from(ApiError::from(e)))?;
        match spent {
            Ok(spent) => Ok(Admitted {
                principal: Embedded::principal(&key),
                rate: spent.rate,
            }),
            Err(refused) => Err(Refused {
                error: ApiError::Denied(refused.denial),
                rate: refused.rate,
            }),
        }
    }
}

/// Follows the change log into this process's cache and credit bank.
struct Follower {
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    bank: Arc<CreditBank>,
    clock: Arc<dyn Clock>,
    poll: Duration,
    max_silence_ms: i64,
}

impl Follower {
    fn trust_from_now(&self) {
        let now = self.clock.now().0;
        self.verifier
            .cache()
            .trust_until(now.saturating_add(self.max_silence_ms));
    }

    fn apply(&self, change: &keyward_store::Change) {
        match &change.kind {
            ChangeKind::Key => {
                if let Some(h) = change.key_hash.as_deref().and_then(KeyHash::from_hex) {
                    self.verifier.cache().invalidate(&h);
                }
            }
            ChangeKind::Tenant => self.verifier.cache().clear(),
            ChangeKind::CreditsReclaim => {
                let theirs = change.origin.as_deref() != Some(self.bank.node_id());
                if let (true, Some(tenant)) = (theirs, change.tenant_id.clone()) {
                    let bank = Arc::clone(&self.bank);
                    drop(tokio::spawn(
                        async move { bank.release_tenant(&tenant).await },
                    ));
                }
            }
            ChangeKind::Other(_) => {}
        }
    }

    async fn catch_up(&self, cursor: &mut Cursor) -> Result<(), keyward_store::StoreError> {
        let mut after = cursor.low();
        loop {
            let batch = self.store.changes_after(after, 1_000).await?;
            for change in &batch {
                if cursor.take(change.seq) {
                    self.apply(change);
                }
            }
            match batch.last() {
                Some(last) if batch.len() == 1_000 => after = last.seq,
                _ => return Ok(()),
            }
        }
    }

    async fn run(self, mut cursor: Cursor) {
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            match self.catch_up(&mut cursor).await {
                Ok(()) => {
                    if let Some(since) = failing_since.take() {
                        let silent = i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
                            >= self.max_silence_ms;
                        if silent {
                            // Changes may be gone from the log by now.
                            self.verifier.cache().clear();
                        }
                        tracing::info!("The change log answers again.");
                    }
                    if cursor.expire_hole(HOLE_WAIT) {
                        self.verifier.cache().clear();
                    }
                    self.trust_from_now();
                }
                Err(e) => {
                    failing_since.get_or_insert_with(|| {
                        tracing::warn!(error = %e, "Could not read the change log; the key cache is trusted for changes.max_silence_seconds more.");
                        std::time::Instant::now()
                    });
                }
            }
        }
    }
}
