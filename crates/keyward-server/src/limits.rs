//! Rate limits and credits (SPEC §6), spent after every other check passed.
//!
//! - [`Tiers`]: the named tiers from `[limits]`, compiled at start, and which
//!   policy applies to a key: its own override, else its tier, else its
//!   tenant's tier, else `limits.default_tier`.
//! - [`RateLimiter`]: an atomic check-and-spend per key. [`MemoryLimiter`]
//!   keeps GCRA state in sharded maps (one node); a Redis implementation of
//!   the same trait runs the same arithmetic in a script (many nodes).
//! - [`CreditSpender`]: queues spends and commits them in batches (group
//!   commit) through [`LimitStore::spend_credits`]; each caller waits for its
//!   batch's commit, so every answered spend is durable and exact.
//! - [`Limits`]: both together, in the order of SPEC §4: rate limit, then
//!   credits.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue};
use keyward_core::clock::Timestamp;
use keyward_core::ratelimit::{self, Decision, RatePolicy, Tat};
use keyward_core::verdict::Denial;
use keyward_store::limits::{Refill, SpendOutcome, SpendRequest};
use keyward_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::config::{invalid, ConfigError, LimitsConfig};
use crate::verifier::CachedKey;

/// One compiled tier.
#[derive(Debug, Clone)]
pub struct Tier {
    pub policy: RatePolicy,
    pub refill: Option<Refill>,
}

/// The deployment's tiers.
#[derive(Debug, Clone, Default)]
pub struct Tiers {
    tiers: HashMap<String, Tier>,
    default_tier: Option<String>,
}

impl Tiers {
    pub fn compile(c: &LimitsConfig) -> Result<Tiers, ConfigError> {
        let mut tiers = HashMap::new();
        for (name, t) in &c.tiers {
            let setting = format!("limits.tiers.{name}");
            if !valid_tier_name(name) {
                return Err(invalid(
                    setting,
                    "tier names are 1 to 64 characters of a-z, 0-9, _ and -",
                ));
            }
            let policy = RatePolicy::new(
                name.clone(),
                t.limit,
                t.window_seconds.saturating_mul(1000),
                t.burst.unwrap_or(t.limit),
            )
            .map_err(|e| invalid(&setting, e))?;
            if let Some(r) = &t.refill {
                if r.amount < 0 {
                    return Err(invalid(
                        format!("{setting}.refill.amount"),
                        "must not be negative",
                    ));
                }
            }
            tiers.insert(
                name.clone(),
                Tier {
                    policy,
                    refill: t.refill,
                },
            );
        }
        if let Some(d) = &c.default_tier {
            if !tiers.contains_key(d) {
                return Err(invalid(
                    "limits.default_tier",
                    format!("{d:?} is not one of limits.tiers"),
                ));
            }
        }
        Ok(Tiers {
            tiers,
            default_tier: c.default_tier.clone(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Tier> {
        self.tiers.get(name)
    }

    pub fn names(&self) -> BTreeMap<&str, &Tier> {
        self.tiers.iter().map(|(k, v)| (k.as_str(), v)).collect()
    }

    /// The tier in force for `key`: its own, its tenant's, or the default.
    pub fn tier_of(&self, key: &CachedKey) -> Option<&Tier> {
        key.record
            .tier
            .as_deref()
            .or(key.tenant_tier.as_deref())
            .or(self.default_tier.as_deref())
            .and_then(|n| self.tiers.get(n))
    }

    /// The tier in force for a tenant's credits.
    pub fn refill_for_tenant(&self, tenant_tier: Option<&str>) -> Option<Refill> {
        tenant_tier
            .or(self.default_tier.as_deref())
            .and_then(|n| self.tiers.get(n))
            .and_then(|t| t.refill)
    }

    /// The rate policy for `key`: its own override, else its tier's.
    pub fn policy_for<'a>(&'a self, key: &'a CachedKey) -> Option<&'a RatePolicy> {
        key.rate_override
            .as_ref()
            .or_else(|| self.tier_of(key).map(|t| &t.policy))
    }
}

pub fn valid_tier_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// An atomic check-and-spend on a named bucket.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    async fn spend(
        &self,
        bucket: &str,
        policy: &RatePolicy,
        cost: u64,
        now: Timestamp,
    ) -> Result<Decision, StoreError>;
}

const SHARDS: usize = 64;

/// GCRA state in memory, sharded to keep lock contention low. Full buckets
/// are forgotten now and then, so memory follows the active keys.
pub struct MemoryLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Shard {
    tats: HashMap<String, Tat>,
    writes: u32,
}

impl Default for MemoryLimiter {
    fn default() -> MemoryLimiter {
        MemoryLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl MemoryLimiter {
    pub fn decide(&self, bucket: &str, policy: &RatePolicy, cost: u64, now: Timestamp) -> Decision {
        let shard = &self.shards[(self.hasher.hash_one(bucket) as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let d = match shard.tats.get_mut(bucket) {
            Some(tat) => ratelimit::spend(policy, tat, now, cost),
            None => {
                let mut tat = 0;
                let d = ratelimit::spend(policy, &mut tat, now, cost);
                if tat != 0 {
                    shard.tats.insert(bucket.to_owned(), tat);
                }
                d
            }
        };
        shard.writes = shard.writes.wrapping_add(1);
        if shard.writes.is_multiple_of(4096) {
            // A TAT in the past is a full bucket: the same as no entry.
            let now_us = u64::try_from(now.0).unwrap_or(0).saturating_mul(1000);
            shard.tats.retain(|_, tat| *tat > now_us);
        }
        d
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn spend(
        &self,
        bucket: &str,
        policy: &RatePolicy,
        cost: u64,
        now: Timestamp,
    ) -> Result<Decision, StoreError> {
        Ok(self.decide(bucket, policy, cost, now))
    }
}

/// The rate-limit state of one response, for its headers and the verify API.
#[derive(Debug, Clone)]
pub struct RateState {
    pub policy: String,
    pub limit: u64,
    pub window_seconds: u64,
    pub remaining: u64,
    pub reset_seconds: u64,
}

impl RateState {
    pub fn from_decision(p: &RatePolicy, d: &Decision) -> RateState {
        RateState {
            policy: p.name.clone(),
            limit: p.burst,
            window_seconds: p.window_seconds(),
            remaining: d.remaining,
            reset_seconds: d.reset_seconds,
        }
    }

    /// Adds the IETF `RateLimit-Policy` and `RateLimit` fields
    /// (draft-ietf-httpapi-ratelimit-headers: `"name";q=…;w=…` and
    /// `"name";r=…;t=…`).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let name = self.policy.replace(['"', '\\'], "");
        if let Ok(v) = HeaderValue::from_str(&format!(
            "\"{name}\";q={};w={}",
            self.limit, self.window_seconds
        )) {
            headers.insert("ratelimit-policy", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!(
            "\"{name}\";r={};t={}",
            self.remaining, self.reset_seconds
        )) {
            headers.insert("ratelimit", v);
        }
    }
}

struct Pending {
    request: SpendRequest,
    reply: oneshot::Sender<Result<SpendOutcome, String>>,
}

/// Group commit for credit spends: one writer task takes whatever spends are
/// queued, commits them in one transaction and answers each.
pub struct CreditSpender {
    store: Arc<dyn Store>,
    clock: Arc<dyn keyward_core::clock::Clock>,
    queue: OnceLock<mpsc::Sender<Pending>>,
}

/// Most spends committed in one transaction.
const BATCH: usize = 512;

impl CreditSpender {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn keyward_core::clock::Clock>) -> CreditSpender {
        CreditSpender {
            store,
            clock,
            queue: OnceLock::new(),
        }
    }

    fn queue(&self) -> &mpsc::Sender<Pending> {
        self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * BATCH);
            tokio::spawn(write_batches(
                Arc::clone(&self.store),
                Arc::clone(&self.clock),
                rx,
            ));
            tx
        })
    }

    /// Spends `request.cost` credits, or refuses, after the spend (or the
    /// refusal) is decided against the committed balance.
    pub async fn spend(&self, request: SpendRequest) -> Result<SpendOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue()
            .send(Pending { request, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the credit writer has stopped".into()))?;
        match answer.await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                "credits could not be spent, nothing was charged: {e}"
            ))),
            Err(_) => Err(StoreError::Unavailable(
                "the credit writer has stopped".into(),
            )),
        }
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    clock: Arc<dyn keyward_core::clock::Clock>,
    mut rx: mpsc::Receiver<Pending>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let requests: Vec<SpendRequest> = batch.iter().map(|p| p.request.clone()).collect();
        let result = store.spend_credits(&requests, clock.now().0).await;
        match result {
            Ok(outcomes) => {
                for (p, o) in batch.drain(..).zip(outcomes) {
                    let _ = p.reply.send(Ok(o));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// What a request spent (for headers and the verify API).
#[derive(Debug, Clone, Default)]
pub struct Spent {
    pub rate: Option<RateState>,
    pub credits: Option<SpendOutcome>,
}

/// A refusal with the rate state to report alongside it.
#[derive(Debug)]
pub struct Refused {
    pub denial: Denial,
    pub rate: Option<RateState>,
}

/// Rate limits and credits together.
pub struct Limits {
    pub limiter: Arc<dyn RateLimiter>,
    pub credits: CreditSpender,
}

impl Limits {
    /// Spends `cost` tokens of `key`'s rate limit and then `credits` of its
    /// tenant's balance. Keys without a policy are not rate limited; keys
    /// without a tenant (root keys) spend no credits.
    pub async fn spend(
        &self,
        tiers: &Tiers,
        key: &CachedKey,
        cost: u64,
        credits: i64,
        now: Timestamp,
    ) -> Result<Result<Spent, Refused>, StoreError> {
        let mut spent = Spent::default();
        if let Some(policy) = tiers.policy_for(key) {
            let d = self
                .limiter
                .spend(&key.record.id, policy, cost, now)
                .await?;
            let state = RateState::from_decision(policy, &d);
            if !d.allowed {
                return Ok(Err(Refused {
                    denial: Denial::RateLimited {
                        retry_after_seconds: d.retry_after_seconds,
                    },
                    rate: Some(state),
                }));
            }
            spent.rate = Some(state);
        }
        if credits > 0 {
            if let Some(tenant) = &key.record.tenant_id {
                let outcome = self
                    .credits
                    .spend(SpendRequest {
                        tenant_id: tenant.clone(),
                        key_id: key.record.id.clone(),
                        cost: credits,
                        key_cap: key.record.credit_cap,
                        refill: tiers.refill_for_tenant(key.tenant_tier.as_deref()),
                    })
                    .await?;
                if !outcome.admitted {
                    return Ok(Err(Refused {
                        denial: Denial::CreditsExhausted,
                        rate: spent.rate,
                    }));
                }
                spent.credits = Some(outcome);
            }
        }
        Ok(Ok(spent))
    }
}
