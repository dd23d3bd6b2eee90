//! Rate limits and credits (SPEC §6), spent after every other check passed.
//!
//! - [`Tiers`]: the named tiers from `[limits]`, compiled at start, and which
//!   policy applies to a key: its own override, else its tier, else its
//!   tenant's tier, else `limits.default_tier`.
//! - [`RateLimiter`]: an atomic check-and-spend per key. [`MemoryLimiter`]
//!   keeps GCRA state in sharded maps (one node); a Redis implementation of
//!   the same trait runs the same arithmetic in a script (many nodes).
//! - [`CreditBank`]: credits spent from reservations that already left the
//!   stored balance (durable before any request uses them), settled into the
//!   ledger in the background.
//! - [`Limits`]: both together, in the order of SPEC §4: rate limit, then
//!   credits.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue};
use keyward_core::clock::Timestamp;
use keyward_core::ratelimit::{self, Decision, RatePolicy, Tat};
use keyward_core::verdict::Denial;
use keyward_store::limits::{Recover, Refill, ReserveRequest, Reserved, Settlement};
use keyward_store::{Store, StoreError};

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
                name.as_str(),
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
    pub policy: Arc<str>,
    pub limit: u64,
    pub window_seconds: u64,
    pub remaining: u64,
    pub reset_seconds: u64,
}

impl RateState {
    pub fn from_decision(p: &RatePolicy, d: &Decision) -> RateState {
        RateState {
            policy: Arc::clone(&p.name),
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
        // Tier names are [a-z0-9_-] (checked at start): nothing to escape.
        let name = &self.policy;
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

/// One request's spend of credits.
#[derive(Debug, Clone, Copy)]
pub struct SpendRequest<'a> {
    pub tenant_id: &'a str,
    pub key_id: &'a str,
    pub cost: i64,
    /// The most this key may spend in all (its `credit_cap`).
    pub key_cap: Option<i64>,
    /// The refill schedule in force for the tenant.
    pub refill: Option<Refill>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendOutcome {
    pub admitted: bool,
    /// The tenant's balance as this node sees it: the stored balance plus
    /// this node's unspent reservation.
    pub balance: i64,
    /// What the key may still spend under its cap, if it has one.
    pub key_remaining: Option<i64>,
}

/// One tenant's credits on this node.
#[derive(Debug, Default)]
struct TenantBank {
    /// Reserved and not yet spent: already out of the stored balance.
    reserved: i64,
    /// Spent since the last settlement, in all and per key.
    unsettled: i64,
    requests: i64,
    keys: HashMap<String, i64>,
    /// Settled totals of capped keys, read from the store once.
    key_totals: HashMap<String, i64>,
    /// The stored balance last seen.
    stored: i64,
    /// Size of the next reservation; doubles while reservations run out
    /// within a second of each other.
    want: i64,
    last_reserve: i64,
    last_spend: i64,
    last_settle: i64,
    /// A background reservation in flight: its result arrives here, and
    /// whoever holds the tenant's lock next takes it in ([`absorb`]). The
    /// task itself never takes the lock, so a request holding it can wait
    /// for the result without deadlock.
    pending: Option<tokio::sync::oneshot::Receiver<Result<Reserved, String>>>,
}

/// Takes a background reservation's result into the bank: at once if it
/// arrived (or `wait`), else leaves it pending.
async fn absorb(b: &mut TenantBank, wait: bool) {
    let Some(rx) = b.pending.as_mut() else {
        return;
    };
    let result = if wait {
        rx.await.ok()
    } else {
        match rx.try_recv() {
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return,
            Ok(r) => Some(r),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => None,
        }
    };
    b.pending = None;
    match result {
        Some(Ok(got)) => {
            b.reserved += got.granted;
            b.stored = got.balance;
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "Could not reserve credits ahead; requests will reserve when they need to.")
        }
        None => tracing::warn!("A background credit reservation was lost."),
    }
}

impl TenantBank {
    /// The size of the next reservation: it doubles while reservations run
    /// out within a second of each other, up to the maximum.
    fn next_want(&mut self, cost: i64, now: i64, max: i64) -> i64 {
        let grow = self.want > 0 && now - self.last_reserve < 1_000;
        let want = if grow {
            self.want.saturating_mul(2)
        } else {
            cost.saturating_mul(10)
        };
        self.want = want.min(max).max(cost);
        self.want
    }
}

/// Credit settings of this node.
#[derive(Debug, Clone)]
pub struct BankConfig {
    pub node_id: String,
    pub max_reservation: i64,
    pub idle_release_ms: i64,
    pub stale_ms: i64,
}

/// Credits on this node: requests spend from reservations taken out of the
/// stored balance beforehand, so a spend is an in-memory subtraction under
/// the tenant's lock, and a crash can lose unspent reservations but never
/// give back spent credits. [`CreditBank::settle`] records spends in the
/// ledger and releases idle reservations; it runs every
/// `credits.settle_interval_ms` and at shutdown.
pub struct CreditBank {
    store: Arc<dyn Store>,
    clock: Arc<dyn keyward_core::clock::Clock>,
    config: BankConfig,
    tenants: Mutex<HashMap<String, Arc<tokio::sync::Mutex<TenantBank>>>>,
    /// Serializes settlements (the ticker, shutdown and ledger reads).
    settling: tokio::sync::Mutex<()>,
}

impl CreditBank {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn keyward_core::clock::Clock>,
        config: BankConfig,
    ) -> CreditBank {
        CreditBank {
            store,
            clock,
            config,
            tenants: Mutex::new(HashMap::new()),
            settling: tokio::sync::Mutex::new(()),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    fn bank(&self, tenant: &str) -> Arc<tokio::sync::Mutex<TenantBank>> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        match tenants.get(tenant) {
            Some(b) => Arc::clone(b),
            None => Arc::clone(tenants.entry(tenant.to_owned()).or_default()),
        }
    }

    /// This node's unspent reservation for `tenant` (part of its balance).
    pub async fn reserved(&self, tenant: &str) -> i64 {
        let bank = self.bank(tenant);
        let mut b = bank.lock().await;
        absorb(&mut b, true).await;
        b.reserved
    }

    /// Spends `cost` credits, or refuses, exactly: the tenant's lock is held
    /// from the check to the spend, including a reservation from the store
    /// when this node's runs short.
    pub async fn spend(&self, r: SpendRequest<'_>) -> Result<SpendOutcome, StoreError> {
        let entry = self.bank(r.tenant_id);
        let mut b = entry.lock().await;
        absorb(&mut b, false).await;
        let cost = r.cost.max(0);
        let refused = |b: &TenantBank, key_remaining| SpendOutcome {
            admitted: false,
            balance: b.stored + b.reserved,
            key_remaining,
        };
        let mut key_spent = None;
        if let Some(cap) = r.key_cap {
            let settled = match b.key_totals.get(r.key_id) {
                Some(v) => *v,
                None => {
                    let v = self.store.key_credits_spent(r.key_id).await?;
                    b.key_totals.insert(r.key_id.to_owned(), v);
                    v
                }
            };
            let spent = settled + b.keys.get(r.key_id).copied().unwrap_or(0);
            if spent + cost > cap {
                return Ok(refused(&b, Some((cap - spent).max(0))));
            }
            key_spent = Some(spent);
        }
        let now = self.clock.now().0;
        if b.reserved < cost && b.pending.is_some() {
            // Credits on their way count: wait for them before refusing.
            absorb(&mut b, true).await;
        }
        if b.reserved < cost {
            let want = b.next_want(cost, now, self.config.max_reservation);
            let got = self
                .store
                .reserve_credits(
                    &ReserveRequest {
                        tenant_id: r.tenant_id.to_owned(),
                        node_id: self.config.node_id.clone(),
                        min: cost - b.reserved,
                        want,
                        refill: r.refill,
                    },
                    now,
                )
                .await?;
            b.reserved += got.granted;
            b.stored = got.balance;
            b.last_reserve = now;
            if b.reserved < cost {
                return Ok(refused(&b, r.key_cap.zip(key_spent).map(|(c, s)| c - s)));
            }
        }
        b.reserved -= cost;
        b.unsettled += cost;
        b.requests += 1;
        match b.keys.get_mut(r.key_id) {
            Some(spent) => *spent += cost,
            None => {
                b.keys.insert(r.key_id.to_owned(), cost);
            }
        }
        b.last_spend = now;
        // Running low: reserve more in the background, so requests rarely
        // wait for the store.
        if b.pending.is_none() && b.stored > 0 && b.reserved < b.want / 2 {
            let want = b.next_want(cost, now, self.config.max_reservation);
            b.last_reserve = now;
            b.pending = Some(self.top_up(r.tenant_id.to_owned(), want, r.refill));
        }
        Ok(SpendOutcome {
            admitted: true,
            balance: b.stored + b.reserved,
            key_remaining: r.key_cap.zip(key_spent).map(|(c, s)| c - s - cost),
        })
    }

    fn top_up(
        &self,
        tenant_id: String,
        want: i64,
        refill: Option<Refill>,
    ) -> tokio::sync::oneshot::Receiver<Result<Reserved, String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = Arc::clone(&self.store);
        let clock = Arc::clone(&self.clock);
        let node_id = self.config.node_id.clone();
        tokio::spawn(async move {
            let got = store
                .reserve_credits(
                    &ReserveRequest {
                        tenant_id,
                        node_id,
                        min: 1,
                        want,
                        refill,
                    },
                    clock.now().0,
                )
                .await
                .map_err(|e| e.to_string());
            // If nobody listens any more the credits stay reserved in the
            // store and are counted as spent at the next start: never lost
            // silently, never spent twice.
            let _ = tx.send(got);
        });
        rx
    }

    /// Records this node's spends in the ledger, releases reservations idle
    /// for `credits.idle_release_seconds` (all of them with `release_all`),
    /// refreshes the rest, and counts stale reservations of stopped nodes
    /// as spent. On failure nothing is lost: the counts stay for the next
    /// settlement.
    pub async fn settle(&self, release_all: bool) -> Result<(), StoreError> {
        let _one = self.settling.lock().await;
        let now = self.clock.now().0;
        let banks: Vec<(String, Arc<tokio::sync::Mutex<TenantBank>>)> = {
            let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            tenants
                .iter()
                .map(|(t, b)| (t.clone(), Arc::clone(b)))
                .collect()
        };
        let mut taken = Vec::new();
        for (tenant, bank) in &banks {
            let mut b = bank.lock().await;
            // Reservations in flight land first, so they are settled (and
            // released at shutdown) too.
            absorb(&mut b, release_all).await;
            let idle = now - b.last_spend >= self.config.idle_release_ms;
            let release = if release_all || idle { b.reserved } else { 0 };
            let heartbeat = b.reserved > release && now - b.last_settle >= self.config.stale_ms / 4;
            if b.unsettled == 0 && release == 0 && !heartbeat {
                continue;
            }
            let keys = std::mem::take(&mut b.keys);
            let key_spends: Vec<(String, i64)> = keys
                .iter()
                .filter(|(k, _)| b.key_totals.contains_key(*k))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            let s = Settlement {
                tenant_id: tenant.clone(),
                spent: std::mem::take(&mut b.unsettled),
                requests: std::mem::take(&mut b.requests),
                release,
                key_id: (keys.len() == 1)
                    .then(|| keys.keys().next().cloned())
                    .flatten(),
                key_spends,
                remaining: b.reserved - release,
            };
            b.reserved -= release;
            b.stored += release;
            b.last_settle = now;
            taken.push((Arc::clone(bank), s, keys));
        }
        let settlements: Vec<Settlement> = taken.iter().map(|(_, s, _)| s.clone()).collect();
        let result = if settlements.is_empty() {
            Ok(())
        } else {
            self.store
                .settle_credits(&self.config.node_id, &settlements, now)
                .await
        };
        for (bank, s, keys) in taken {
            let mut b = bank.lock().await;
            if result.is_ok() {
                for (k, v) in &s.key_spends {
                    if let Some(total) = b.key_totals.get_mut(k) {
                        *total += v;
                    }
                }
            } else {
                // Put everything back; the next settlement retries.
                b.unsettled += s.spent;
                b.requests += s.requests;
                b.reserved += s.release;
                b.stored -= s.release;
                for (k, v) in keys {
                    *b.keys.entry(k).or_default() += v;
                }
            }
        }
        result?;
        if self.config.stale_ms > 0 {
            let n = self
                .store
                .recover_reservations(
                    Recover::StaleExcept {
                        node_id: &self.config.node_id,
                        before: now - self.config.stale_ms,
                    },
                    now,
                )
                .await?;
            if n > 0 {
                tracing::warn!(
                    reservations = n,
                    "Counted stale credit reservations of stopped nodes as spent."
                );
            }
        }
        Ok(())
    }

    /// At start: this node's reservations left by a crash are counted as
    /// spent (what was spent from them is unknown).
    pub async fn recover_own(&self) -> Result<u64, StoreError> {
        let now = self.clock.now().0;
        self.store
            .recover_reservations(Recover::Node(&self.config.node_id), now)
            .await
    }

    /// Settles every `interval` until aborted.
    pub fn spawn_settler(
        self: &Arc<Self>,
        interval: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let bank = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = bank.settle(false).await {
                    tracing::warn!(error = %e, "Could not settle credits; retrying at the next tick.");
                }
            }
        })
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
    pub credits: Arc<CreditBank>,
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
                        tenant_id: tenant,
                        key_id: &key.record.id,
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
