//! The remote backend: keyward's verify API, with a local cache so a key
//! in use costs no network call.
//!
//! A key the cache does not know is asked for once
//! (`POST /v1/keys/verify?include_policy=true`, spending nothing: cost 0),
//! and its policy — revoked, enabled, expiry, IP allowlist, scopes, the
//! rate limit keyward resolved from its tiers — is cached under the key's
//! SHA-256 for [`RemoteConfig::ttl`] (unknown keys for
//! [`RemoteConfig::negative_ttl`]). Later requests are decided here:
//! `keyward_core::verdict::evaluate`, then the rate limit through the
//! [`RateLimiter`] seam (a `MemoryLimiter` per service, or keyward's Redis
//! limiter to share buckets with the gateway). A request that costs
//! credits goes to the verify API every time (cost 0, its credits): the
//! balance is keyward's.
//!
//! # Freshness
//! A task follows the change feed (`GET /v1/changes`, a long poll woken
//! by the keyward node when a change commits there or reaches it from
//! another node) and drops each changed key's entry (a tenant's change
//! drops the tenant's keys). So a revocation reaches this cache as fast as
//! it reaches a keyward node. If the feed does not answer, the cache is
//! trusted for [`RemoteConfig::max_silence`] after its last answer and
//! not after: every request then asks the verify API (and is answered 503
//! while keyward does not answer). No revoked key is served longer than
//! `max_silence` after the feed last answered, and never longer than
//! `ttl` after it was read, whatever happens to the feed.

mod cache;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::allowlist::IpAllowlist;
use keyward_core::clock::{Clock, Timestamp};
use keyward_core::ratelimit::RatePolicy;
use keyward_core::scope::ScopeSet;
use keyward_core::secret::{KeyFormat, KeyHash};
use keyward_core::verdict::{evaluate, Demand as VerdictDemand, Denial, KeyPolicy};
use keyward_http::error::ApiError;
use keyward_limits::{RateLimiter, RateState};
use keyward_verify::credential::Presented;
use keyward_wire::{ChangePage, VerifyResult};
use zeroize::Zeroizing;

use self::cache::{Cache, Known};
use crate::backend::{Admitted, Backend, Demand, Refused};
use crate::follow::{Cursor, HOLE_WAIT};
use crate::{Deployment, Principal};

/// Where keyward is and how the cache behaves.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// keyward's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// A root key holding `keyward:keys:verify` (or a tenant key holding it:
    /// then only that tenant's keys are known).
    pub root_key: RootKey,
    /// How long a known key is decided from the cache (the bound on
    /// staleness when everything else fails). Default 60 s.
    pub ttl: Duration,
    /// How long an unknown key is remembered as unknown. Default 5 s.
    pub negative_ttl: Duration,
    /// Most keys cached. Default 100,000.
    pub capacity: usize,
    /// How long the cache is trusted after the change feed last answered.
    /// Default 10 s; must exceed `poll_wait`.
    pub max_silence: Duration,
    /// How long one read of the change feed waits for a change. Default 5 s.
    pub poll_wait: Duration,
    /// Timeout of a verify call. Default 5 s.
    pub timeout: Duration,
    /// Most verify calls for keys not cached in flight at once; beyond,
    /// 503 `overloaded` (a flood of made-up keys cannot queue without
    /// bound). Default 256.
    pub max_pending_loads: usize,
}

impl RemoteConfig {
    pub fn new(url: impl Into<String>, root_key: RootKey) -> RemoteConfig {
        RemoteConfig {
            url: url.into().trim_end_matches('/').to_owned(),
            root_key,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            capacity: 100_000,
            max_silence: Duration::from_secs(10),
            poll_wait: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            max_pending_loads: 256,
        }
    }
}

/// The key the backend calls keyward with: printed `<redacted>`, zeroized
/// on drop.
#[derive(Clone)]
pub struct RootKey(Zeroizing<String>);

impl RootKey {
    pub fn new(secret: String) -> RootKey {
        RootKey(Zeroizing::new(secret))
    }
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("invalid remote backend setting: {0}")]
    Config(&'static str),
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// What the backend did so far (read at will; counted only off the hot
/// path, so a cache hit writes no shared counter).
#[derive(Debug, Default)]
pub struct RemoteStats {
    /// Verify calls for keys not cached (or untrusted).
    pub loads: AtomicU64,
    /// Verify calls that spent credits.
    pub credit_calls: AtomicU64,
    /// Answers of the change feed.
    pub feed_reads: AtomicU64,
    /// Reads of the change feed that failed.
    pub feed_failures: AtomicU64,
    /// Changes applied from the feed.
    pub changes_applied: AtomicU64,
}

/// The verify API behind a local cache (see the module docs).
pub struct Remote {
    inner: Arc<Inner>,
    feed: tokio::task::JoinHandle<()>,
}

struct Inner {
    config: RemoteConfig,
    format: KeyFormat,
    http: reqwest::Client,
    cache: Cache,
    limiter: Arc<dyn RateLimiter>,
    clock: Arc<dyn Clock>,
    loads: tokio::sync::Semaphore,
    stats: RemoteStats,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Remote {
    /// Starts the backend and its change-feed task (on the current Tokio
    /// runtime). Nothing is read yet: keys are read on first use.
    pub fn start(
        config: RemoteConfig,
        deployment: &Deployment,
        limiter: Arc<dyn RateLimiter>,
        clock: Arc<dyn Clock>,
    ) -> Result<Remote, RemoteError> {
        if config.max_silence <= config.poll_wait {
            return Err(RemoteError::Config("max_silence must exceed poll_wait"));
        }
        if config.poll_wait > Duration::from_secs(30) {
            return Err(RemoteError::Config("poll_wait is at most 30 s"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| RemoteError::Client(e.to_string()))?;
        let cache = Cache::new(
            millis(config.ttl),
            millis(config.negative_ttl),
            config.capacity,
        );
        cache.trust_until(clock.now().0.saturating_add(millis(config.max_silence)));
        let inner = Arc::new(Inner {
            format: deployment.credentials.format.clone(),
            http,
            cache,
            limiter,
            clock,
            loads: tokio::sync::Semaphore::new(config.max_pending_loads.max(1)),
            stats: RemoteStats::default(),
            config,
        });
        let feed = tokio::spawn(Arc::clone(&inner).follow());
        Ok(Remote { inner, feed })
    }

    pub fn stats(&self) -> &RemoteStats {
        &self.inner.stats
    }

    /// Keys (and unknown hashes) cached now.
    pub fn cached(&self) -> usize {
        self.inner.cache.len()
    }
}

fn denied(d: Denial) -> Refused {
    Refused::from(ApiError::Denied(d))
}

#[async_trait::async_trait]
impl Backend for Remote {
    fn decide_now(&self, demand: &Demand<'_>) -> Option<Result<Admitted, Refused>> {
        let inner = &self.inner;
        let hash = match inner.well_formed(demand.presented) {
            Ok(h) => h,
            Err(d) => return Some(Err(denied(d))),
        };
        let now = inner.clock.now();
        let known = match inner.cache.get(&hash, now)? {
            Some(k) => k,
            None => return Some(Err(denied(Denial::InvalidApiKey))),
        };
        if demand.credits > 0 && known.tenant_id.is_some() {
            return None;
        }
        if let Err(refused) = check(&known, demand, now) {
            return Some(Err(refused));
        }
        let rate = match &known.rate {
            None => None,
            Some(p) => match inner.limiter.spend_now(&known.key_id, p, demand.cost, now) {
                Some(d) => Some(rate_outcome(p, &d)),
                None => return None,
            },
        };
        Some(match rate {
            Some(Err(refused)) => Err(refused),
            Some(Ok(state)) => Ok(Admitted {
                principal: known.principal.clone(),
                rate: Some(state),
            }),
            None => Ok(Admitted {
                principal: known.principal.clone(),
                rate: None,
            }),
        })
    }

    async fn decide(&self, demand: Demand<'_>) -> Result<Admitted, Refused> {
        let inner = &self.inner;
        let hash = inner.well_formed(demand.presented).map_err(denied)?;
        let known = match inner.cache.get(&hash, inner.clock.now()) {
            Some(Some(k)) => k,
            Some(None) => return Err(denied(Denial::InvalidApiKey)),
            None => inner
                .load(hash, demand.presented)
                .await?
                .ok_or_else(|| denied(Denial::InvalidApiKey))?,
        };
        let now = inner.clock.now();
        check(&known, &demand, now)?;
        let rate = match &known.rate {
            None => None,
            Some(p) => {
                let d = inner
                    .limiter
                    .spend(&known.key_id, p, demand.cost, now)
                    .await
                    .map_err(|e| Refused::from(ApiError::from(e)))?;
                Some(rate_outcome(p, &d)?)
            }
        };
        if demand.credits > 0 && known.tenant_id.is_some() {
            inner
                .spend_credits(hash, &demand)
                .await
                .map_err(|error| Refused {
                    error,
                    rate: rate.clone(),
                })?;
        }
        Ok(Admitted {
            principal: known.principal.clone(),
            rate,
        })
    }
}

/// The key's own checks, in the gateway's order.
fn check(known: &Known, demand: &Demand<'_>, now: Timestamp) -> Result<(), Refused> {
    if let Presented::Basic { key_id, .. } = demand.presented {
        if *key_id != known.key_id {
            return Err(denied(Denial::InvalidApiKey));
        }
    }
    evaluate(
        &known.policy,
        VerdictDemand {
            now,
            client_ip: demand.client_ip,
            required_scopes: demand.scopes,
        },
    )
    .map_err(denied)
}

fn rate_outcome(
    p: &RatePolicy,
    d: &keyward_core::ratelimit::Decision,
) -> Result<RateState, Refused> {
    let state = RateState::from_decision(p, d);
    if d.allowed {
        Ok(state)
    } else {
        Err(Refused {
            error: ApiError::Denied(Denial::RateLimited {
                retry_after_seconds: d.retry_after_seconds,
            }),
            rate: Some(state),
        })
    }
}

/// The denial a verify answer names.
fn denial_of(r: &VerifyResult) -> Denial {
    match r.code.as_str() {
        "missing_credentials" => Denial::MissingCredentials,
        "revoked_api_key" => Denial::Revoked,
        "disabled_api_key" => Denial::Disabled,
        "expired_api_key" => Denial::Expired,
        "ip_not_allowed" => Denial::IpNotAllowed,
        "insufficient_scope" => Denial::InsufficientScope {
            missing: r.missing_scopes.clone().unwrap_or_default(),
        },
        "rate_limited" => Denial::RateLimited {
            retry_after_seconds: r.retry_after.unwrap_or(1),
        },
        "credits_exhausted" => Denial::CreditsExhausted,
        _ => Denial::InvalidApiKey,
    }
}

/// The cacheable key of a verify answer: `None` when keyward does not know
/// it (or the calling key may not see it).
fn known_of(r: VerifyResult) -> Option<Arc<Known>> {
    let (principal, policy) = (r.key?, r.policy?);
    // keyward validated the allowlist on write; one that does not parse
    // here denies every address rather than allowing all.
    let allowlist =
        IpAllowlist::parse(&policy.ip_allowlist).unwrap_or_else(|_| IpAllowlist::deny_all());
    let rate = policy
        .rate_limit
        .and_then(|r| RatePolicy::new(r.policy, r.limit, r.window_ms, r.burst).ok());
    Some(Arc::new(Known {
        key_id: principal.key_id.clone(),
        tenant_id: policy.tenant_id.clone(),
        policy: KeyPolicy {
            revoked: policy.revoked,
            enabled: policy.enabled,
            expires_at: policy.expires_at_ms.map(Timestamp),
            grace_until: policy.grace_until_ms.map(Timestamp),
            allowlist,
            scopes: ScopeSet::new(policy.scopes),
        },
        rate,
        principal: Principal::new(principal),
    }))
}

impl Inner {
    fn well_formed(&self, presented: &Presented) -> Result<KeyHash, Denial> {
        let secret = presented.secret();
        if secret.is_empty() {
            return Err(Denial::MissingCredentials);
        }
        self.format
            .parse(secret)
            .map_err(|_| Denial::InvalidApiKey)?;
        Ok(KeyHash::of(secret))
    }

    /// Asks the verify API for a key the cache does not hold, and caches
    /// the answer (unless a change arrived meanwhile).
    async fn load(
        &self,
        hash: KeyHash,
        presented: &Presented,
    ) -> Result<Option<Arc<Known>>, Refused> {
        let _permit = self
            .loads
            .try_acquire()
            .map_err(|_| Refused::from(ApiError::Overloaded))?;
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        let epoch = self.cache.epoch();
        let now = self.clock.now();
        let body = serde_json::json!({ "key": presented.secret(), "cost": 0 });
        let answer = self.verify(&body).await?;
        let known = known_of(answer);
        self.cache.insert_at(epoch, hash, known.clone(), now);
        Ok(known)
    }

    /// Spends the request's credits at keyward (cost 0: the rate limit was
    /// spent here), refreshing the cached key with the answer.
    async fn spend_credits(&self, hash: KeyHash, demand: &Demand<'_>) -> Result<(), ApiError> {
        self.stats.credit_calls.fetch_add(1, Ordering::Relaxed);
        let epoch = self.cache.epoch();
        let now = self.clock.now();
        let body = serde_json::json!({
            "key": demand.presented.secret(),
            "cost": 0,
            "credits": demand.credits,
            "scopes": demand.scopes,
            "ip": demand.client_ip.map(|ip: IpAddr| ip.to_string()),
        });
        let answer = self.verify(&body).await.map_err(|r| r.error)?;
        let valid = answer.valid;
        let denial = (!valid).then(|| denial_of(&answer));
        self.cache.insert_at(epoch, hash, known_of(answer), now);
        match denial {
            None => Ok(()),
            Some(d) => Err(ApiError::Denied(d)),
        }
    }

    async fn verify(&self, body: &serde_json::Value) -> Result<VerifyResult, Refused> {
        let unavailable = || Refused::from(ApiError::Unavailable);
        let res = self
            .http
            .post(format!(
                "{}/v1/keys/verify?include_policy=true",
                self.config.url
            ))
            .bearer_auth(self.config.root_key.0.as_str())
            .timeout(self.config.timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e.without_url(), "The verify API did not answer.");
                unavailable()
            })?;
        let status = res.status();
        if !status.is_success() {
            tracing::error!(
                status = status.as_u16(),
                "The verify API refused the call; check the root key and its keyward:keys:verify scope."
            );
            return Err(unavailable());
        }
        res.json::<VerifyResult>().await.map_err(|e| {
            tracing::warn!(error = %e.without_url(), "The verify API's answer could not be read.");
            unavailable()
        })
    }

    /// One read of the change feed after `after`, waiting up to `wait`.
    async fn changes(&self, after: i64, wait: Duration) -> Result<ChangePage, String> {
        let res = self
            .http
            .get(format!("{}/v1/changes", self.config.url))
            .query(&[
                ("after", after.to_string()),
                ("wait_ms", wait.as_millis().to_string()),
            ])
            .bearer_auth(self.config.root_key.0.as_str())
            .timeout(wait + self.config.timeout)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = res.status();
        if !status.is_success() {
            return Err(format!("the change feed answered {status}"));
        }
        res.json::<ChangePage>()
            .await
            .map_err(|e| e.without_url().to_string())
    }

    fn apply(&self, change: &keyward_wire::ChangeView) {
        match change.kind.as_str() {
            "key" => {
                if let Some(h) = change.key_hash.as_deref().and_then(KeyHash::from_hex) {
                    self.cache.invalidate(&h);
                }
            }
            "tenant" => match change.tenant_id.as_deref() {
                Some(t) => self.cache.clear_tenant(t),
                None => self.cache.clear(),
            },
            // Credit reclaims and kinds a newer keyward writes change no
            // cached key.
            _ => return,
        }
        self.stats.changes_applied.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the feed from the cursor to its end (pages of 1,000), the first
    /// read waiting up to `wait` for a change.
    async fn round(&self, cursor: &mut Cursor, wait: Duration) -> Result<(), String> {
        let mut after = cursor.low();
        let mut wait = wait;
        loop {
            let page = self.changes(after, wait).await?;
            self.stats.feed_reads.fetch_add(1, Ordering::Relaxed);
            wait = Duration::ZERO;
            for c in &page.changes {
                if cursor.take(c.seq) {
                    self.apply(c);
                }
            }
            match page.changes.last() {
                Some(last) if page.changes.len() >= 1_000 => after = last.seq,
                _ => return Ok(()),
            }
        }
    }

    /// The change-feed task: finds where the log stands, then reads it
    /// for as long as the backend lives.
    async fn follow(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut cursor = loop {
            match self.changes(i64::MAX, Duration::ZERO).await {
                Ok(page) => break Cursor::starting_at(page.last_seq),
                Err(e) => {
                    self.stats.feed_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "Could not read keyward's change feed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        backoff = Duration::from_millis(100);
        let mut failing_since: Option<Instant> = None;
        let mut silent = false;
        loop {
            // During a gap a read answers at once with what was seen above
            // it: poll briefly until it fills (or is given up on).
            let wait = if cursor.has_hole() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Duration::ZERO
            } else {
                self.config.poll_wait
            };
            match self.round(&mut cursor, wait).await {
                Ok(()) => {
                    if silent {
                        // Changes may be gone from the log by now.
                        self.cache.clear();
                        tracing::info!("keyward's change feed answers again; the key cache was dropped and is trusted again.");
                    } else if failing_since.is_some() {
                        tracing::info!("keyward's change feed answers again.");
                    }
                    silent = false;
                    failing_since = None;
                    backoff = Duration::from_millis(100);
                    if cursor.expire_hole(HOLE_WAIT) {
                        self.cache.clear();
                    }
                    let now = self.clock.now().0;
                    self.cache
                        .trust_until(now.saturating_add(millis(self.config.max_silence)));
                }
                Err(e) => {
                    self.stats.feed_failures.fetch_add(1, Ordering::Relaxed);
                    let since = *failing_since.get_or_insert_with(|| {
                        tracing::warn!(error = %e, "Could not read keyward's change feed; the key cache is trusted for max_silence more.");
                        Instant::now()
                    });
                    if !silent && since.elapsed() >= self.config.max_silence {
                        silent = true;
                        tracing::error!("No answer from keyward's change feed for max_silence: every request now asks the verify API.");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}
