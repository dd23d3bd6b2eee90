//! Rate limits and credits, spent after every other check passed.
//!
//! - [`Tiers`]: the named tiers from `[limits]`, compiled at start, and which
//!   policy applies to a key: its own override, else its tier, else its
//!   tenant's tier, else `limits.default_tier`.
//! - [`RateLimiter`]: an atomic check-and-spend per key. [`MemoryLimiter`]
//!   keeps GCRA state in sharded maps (one node); a Redis implementation of
//!   the same trait runs the same arithmetic in a script (many nodes).
//! - [`CreditBank`]: credits spent from reservations that already left the
//!   stored balance (durable before any request uses them), settled into the
//!   ledger in the background. With several nodes, one that comes up short
//!   while others hold reservations asks them to hand back
//!   ([`CreditBank::release_tenant`], see "Reclaims" below).
//! - [`Limits`]: both together, in the order of the verify checks: rate limit, then
//!   credits, for a [`Spender`] (the facts of a verified key limits need).
//!
//! # Invariants
//! - Check and spend are one step: GCRA's theoretical arrival time is read
//!   and written under one shard lock (or in one Redis script), so
//!   concurrent requests never over-admit.
//! - A credit is spent only after it left the stored balance (reservations
//!   are durable before any request spends from them).
//! - Denials cost nothing: callers spend only after every other check passed.
//! - Credits are exact across nodes: with a balance `B` and a cost `c`,
//!   requests spread over any number of nodes are admitted exactly
//!   `floor(B / c)` times, and `B mod c` is left (given the reclaims arrive
//!   within `credits.reclaim_wait_ms`).
//!
//! # Reclaims
//! Each node reserves ahead of its requests, so the last credits of a
//! balance may sit in one node's reservation while another node's request
//! finds the stored balance empty. A reservation answers how much other
//! nodes hold ([`keyward_store::Reserved::held_elsewhere`]); when a spend
//! cannot be covered and that is not zero, the bank records a
//! `credits.reclaim` change ([`keyward_store::ChangeKind::CreditsReclaim`]),
//! which every node follows (within milliseconds on PostgreSQL), and
//! retries its reservation every 10–25 ms for up to `credits.reclaim_wait_ms`,
//! asking again every 100 ms. The other nodes call
//! [`CreditBank::release_tenant`]: they settle the tenant at once and give
//! back all of its unspent reservation, so what they hold afterwards is
//! what they spent since. A request is refused at once when the stored
//! balance cannot cover it and no other node holds anything.
//!
//! After a reclaim (sent or heard), for `credits.idle_release_seconds` (at
//! least a second) a node takes no background top-ups for that tenant, and
//! each reservation takes at most a quarter of the stored balance it last
//! saw (never less than the request needs): near the end of a balance
//! every node reserves only what its request needs, so the tail is not
//! parked on one node, while a balance that is still large is shared out
//! in shrinking parts rather than one transaction per request.
//!
//! This crate owns its configuration (`[limits]`, `[credits]`) and knows
//! nothing of HTTP servers or the verifier beyond the rate-limit header
//! fields it writes.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue};
use keyward_core::clock::Timestamp;
use keyward_core::ratelimit::{self, Decision, RatePolicy, Tat};
use keyward_core::verdict::Denial;
use keyward_store::{ChangeKind, Recover, Refill, ReserveRequest, Reserved, Settlement};
use keyward_store::{Store, StoreError};

mod config;

pub use config::{CreditsConfig, LimitsConfig, TierConfig, TierError};

fn invalid(setting: impl Into<String>, message: impl ToString) -> TierError {
    TierError {
        setting: setting.into(),
        message: message.to_string(),
    }
}

/// Who spends: the facts of a verified key that limits need, without the
/// verifier's types (the gateway and the verify API build it from the
/// cached key).
#[derive(Debug, Clone, Copy)]
pub struct Spender<'a> {
    pub key_id: &'a str,
    /// Root keys have none, and spend no credits.
    pub tenant_id: Option<&'a str>,
    /// The key's own tier, if it names one.
    pub tier: Option<&'a str>,
    /// Its tenant's tier, used when the key names none.
    pub tenant_tier: Option<&'a str>,
    /// The key's own rate limit, if it has one.
    pub rate_override: Option<&'a RatePolicy>,
    /// The most the key may spend in all (its `credit_cap`).
    pub credit_cap: Option<i64>,
}

/// A rate limiter that could not decide (its backing service is down).
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("the rate limiter is unavailable: {0}")]
    Unavailable(String),
}

/// Why a spend could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
    #[error("credits could not be spent: {0}")]
    Credits(#[from] StoreError),
}

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
    pub fn compile(c: &LimitsConfig) -> Result<Tiers, TierError> {
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
    pub fn tier_of(&self, key: &Spender<'_>) -> Option<&Tier> {
        key.tier
            .or(key.tenant_tier)
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
    pub fn policy_for<'a>(&'a self, key: &Spender<'a>) -> Option<&'a RatePolicy> {
        key.rate_override
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
    /// The same, when it can be answered without waiting (an in-memory
    /// limiter): saves boxing a future on every request.
    fn spend_now(
        &self,
        _bucket: &str,
        _policy: &RatePolicy,
        _cost: u64,
        _now: Timestamp,
    ) -> Option<Decision> {
        None
    }

    async fn spend(
        &self,
        bucket: &str,
        policy: &RatePolicy,
        cost: u64,
        now: Timestamp,
    ) -> Result<Decision, RateLimitError>;
}

const SHARDS: usize = 64;

/// GCRA state in memory, sharded to keep lock contention low. Full buckets
/// are forgotten now and then, so memory follows the active keys.
pub struct MemoryLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: IdHash,
}

// Buckets are key ids, which keyward makes itself: nobody can choose
// colliding ones, so a cheap hash does.
use keyward_core::hashing::IdHash;

#[derive(Default)]
struct Shard {
    tats: HashMap<String, Tat, IdHash>,
    writes: u32,
}

impl Default for MemoryLimiter {
    fn default() -> MemoryLimiter {
        MemoryLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: IdHash::default(),
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
    fn spend_now(
        &self,
        bucket: &str,
        policy: &RatePolicy,
        cost: u64,
        now: Timestamp,
    ) -> Option<Decision> {
        Some(self.decide(bucket, policy, cost, now))
    }

    async fn spend(
        &self,
        bucket: &str,
        policy: &RatePolicy,
        cost: u64,
        now: Timestamp,
    ) -> Result<Decision, RateLimitError> {
        Ok(self.decide(bucket, policy, cost, now))
    }
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

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
        let value = |write: fn(&RateState, &mut Vec<u8>)| {
            let mut v = Vec::with_capacity(self.policy.len() + 32);
            write(self, &mut v);
            HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()
        };
        if let Some(v) = value(RateState::write_policy_value) {
            headers.insert(RATELIMIT_POLICY, v);
        }
        if let Some(v) = value(RateState::write_limit_value) {
            headers.insert(RATELIMIT, v);
        }
    }

    /// Both fields as HTTP/1 header lines, for the gateway's fast path.
    pub fn write_header_lines(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"ratelimit-policy: ");
        self.write_policy_value(out);
        out.extend_from_slice(b"\r\nratelimit: ");
        self.write_limit_value(out);
        out.extend_from_slice(b"\r\n");
    }

    pub fn write_policy_value(&self, out: &mut Vec<u8>) {
        self.field(out, b";q=", self.limit, b";w=", self.window_seconds);
    }

    pub fn write_limit_value(&self, out: &mut Vec<u8>) {
        self.field(out, b";r=", self.remaining, b";t=", self.reset_seconds);
    }

    // Written byte by byte: this runs on every limited response, and
    // `format!` cost more than the rate limit itself.
    fn field(&self, v: &mut Vec<u8>, a: &[u8], x: u64, b: &[u8], y: u64) {
        // Tier names are [a-z0-9_-] (checked at start): nothing to escape.
        v.push(b'"');
        v.extend_from_slice(self.policy.as_bytes());
        v.push(b'"');
        v.extend_from_slice(a);
        v.extend_from_slice(itoa::Buffer::new().format(x).as_bytes());
        v.extend_from_slice(b);
        v.extend_from_slice(itoa::Buffer::new().format(y).as_bytes());
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
    /// The tenant's credits not yet spent, as this node sees them: its own
    /// unspent reservation, plus the stored balance and what other nodes
    /// hold as of this node's last reservation (what they spent since their
    /// last settlement is still counted).
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
    keys: HashMap<String, i64, IdHash>,
    /// Settled totals of capped keys, read from the store once.
    key_totals: HashMap<String, i64>,
    /// The stored balance last seen.
    stored: i64,
    /// What other nodes held, as of this node's last reservation.
    elsewhere: i64,
    /// Until then (clock ms), after a reclaim: no background top-ups, and
    /// reservations of at most a quarter of the stored balance.
    lean_until: i64,
    /// Size of the next reservation; doubles while reservations run out
    /// within a second of each other.
    want: i64,
    last_reserve: i64,
    last_spend: i64,
    last_settle: i64,
    /// A background reservation in flight. Its task never touches the bank:
    /// the result arrives here and is taken in by whoever looks next.
    pending: Option<Pending>,
}

type Pending = tokio::sync::oneshot::Receiver<Result<Reserved, String>>;

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

    /// The tenant's credits not yet spent, as this node sees them.
    fn balance(&self) -> i64 {
        self.stored
            .saturating_add(self.elsewhere)
            .saturating_add(self.reserved)
    }

    fn lean(&self, now: i64) -> bool {
        now < self.lean_until
    }

    /// Takes in a reservation's result.
    fn took(&mut self, got: &Reserved) {
        self.reserved += got.granted;
        self.stored = got.balance;
        self.elsewhere = got.held_elsewhere;
    }

    /// Takes in a background reservation that has arrived.
    fn absorb_ready(&mut self) {
        if let Some(rx) = self.pending.as_mut() {
            match rx.try_recv() {
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                Ok(r) => {
                    self.pending = None;
                    self.apply(Some(r));
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    self.pending = None;
                    self.apply(None);
                }
            }
        }
    }

    fn apply(&mut self, result: Option<Result<Reserved, String>>) {
        match result {
            Some(Ok(got)) => self.took(&got),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Could not reserve credits ahead; requests will reserve when they need to.")
            }
            // The task was lost: what it may have reserved stays reserved
            // in the store and is counted as spent at the next start.
            None => tracing::warn!("A background credit reservation was lost."),
        }
    }

    /// Spends `cost` from the reservation if it covers it; `false` when it
    /// is short. Key caps are the caller's to check.
    fn try_spend(&mut self, key_id: &str, cost: i64, now: i64) -> bool {
        if self.reserved < cost {
            return false;
        }
        self.reserved -= cost;
        self.unsettled += cost;
        self.requests += 1;
        match self.keys.get_mut(key_id) {
            Some(spent) => *spent += cost,
            None => {
                self.keys.insert(key_id.to_owned(), cost);
            }
        }
        self.last_spend = now;
        true
    }
}

/// Per tenant: the bank behind a plain mutex (every spend holds it for a
/// few instructions and never across an `.await`), and an async gate that
/// lets one request at a time go to the store when the reservation runs
/// short.
#[derive(Default)]
struct TenantEntry {
    bank: Mutex<TenantBank>,
    gate: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TenantEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantEntry")
    }
}

impl TenantEntry {
    fn lock(&self) -> std::sync::MutexGuard<'_, TenantBank> {
        self.bank.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a background reservation in flight, if any, and takes it in.
    async fn absorb_pending(&self) {
        let rx = self.lock().pending.take();
        if let Some(rx) = rx {
            let result = rx.await.ok();
            self.lock().apply(result);
        }
    }
}

/// How often a spend waiting for other nodes' credits asks them again: a
/// node may have reserved again (a reservation in flight when the first ask
/// arrived), or spent meanwhile what it still held.
const RECLAIM_ASK_AGAIN: std::time::Duration = std::time::Duration::from_millis(100);

/// A spend waiting for other nodes to hand back a tenant's credits. Real
/// time, not the bank's clock: this bounds how long a request waits.
#[derive(Default)]
struct Reclaim {
    started: Option<std::time::Instant>,
    asked: Option<std::time::Instant>,
    pauses: u32,
}

impl Reclaim {
    /// Whether to ask the other nodes (again) now.
    fn should_ask(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self.asked.is_some_and(|t| now - t < RECLAIM_ASK_AGAIN) {
            return false;
        }
        self.asked = Some(now);
        self.started.get_or_insert(now);
        true
    }

    /// Whether the spend may still wait, `limit` after it first asked.
    fn may_wait(&self, limit: std::time::Duration) -> bool {
        self.started.is_some_and(|t| t.elapsed() < limit)
    }

    /// The next pause before reserving again: 10 to 25 ms, varied so that
    /// nodes waiting together do not retry in step.
    fn pause(&mut self) -> std::time::Duration {
        self.pauses = self.pauses.wrapping_add(1);
        std::time::Duration::from_millis(10 + u64::from(self.pauses.wrapping_mul(7) % 16))
    }
}

/// Credit settings of this node.
#[derive(Debug, Clone)]
pub struct BankConfig {
    pub node_id: String,
    pub max_reservation: i64,
    pub idle_release_ms: i64,
    pub stale_ms: i64,
    /// How long a spend the stored balance cannot cover waits for other
    /// nodes to hand back their reservations (`credits.reclaim_wait_ms`).
    pub reclaim_wait: std::time::Duration,
}

/// Credits on this node: requests spend from reservations taken out of the
/// stored balance beforehand, so a spend is an in-memory subtraction, and a
/// crash can lose unspent reservations but never give back spent credits.
/// Reservations are topped up in the background before they run dry; a
/// request that finds one short waits (one at a time per tenant) for the
/// top-up in flight or reserves from the store itself, and is refused only
/// when the store cannot cover it either — after asking other nodes for
/// their reservations, if they hold any (see the crate docs: reclaims).
/// [`CreditBank::settle`] records spends in the ledger and releases idle
/// reservations; it runs every `credits.settle_interval_ms` and at
/// shutdown. [`CreditBank::release_tenant`] is what a node does when
/// another asks for a tenant's credits back.
pub struct CreditBank {
    store: Arc<dyn Store>,
    clock: Arc<dyn keyward_core::clock::Clock>,
    config: BankConfig,
    /// Accounts are never dropped; read-mostly, so every paid request takes
    /// a read lock. Tenant ids are keyward's own: a cheap hash does.
    tenants: std::sync::RwLock<HashMap<String, Arc<TenantEntry>, IdHash>>,
    /// Serializes settlements (the ticker, shutdown and ledger reads), and
    /// holds when stale reservations of other nodes were last looked for.
    settling: tokio::sync::Mutex<i64>,
    /// The runtime the bank was made on (the server's main one): top-ups
    /// run there, not on the worker that happened to ask, so they outlive
    /// the workers at shutdown and are settled with everything else.
    runtime: Option<tokio::runtime::Handle>,
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
            tenants: std::sync::RwLock::new(HashMap::default()),
            settling: tokio::sync::Mutex::new(i64::MIN),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    fn entry(&self, tenant: &str) -> Arc<TenantEntry> {
        let known = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned();
        match known {
            Some(b) => b,
            None => {
                let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
                Arc::clone(tenants.entry(tenant.to_owned()).or_default())
            }
        }
    }

    /// What this node spent of `tenant`'s credits and has not settled yet
    /// (still counted in the store's reservations, so in the ledger's
    /// running balance).
    pub fn unsettled(&self, tenant: &str) -> i64 {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants
            .get(tenant)
            .map_or(0, |entry| entry.lock().unsettled)
    }

    fn known(&self, tenant: &str) -> Option<Arc<TenantEntry>> {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants.get(tenant).cloned()
    }

    /// Spends `cost` credits, or refuses, exactly.
    pub async fn spend(&self, r: SpendRequest<'_>) -> Result<SpendOutcome, StoreError> {
        // Most spends are covered by the reservation: taken under the map's
        // read lock, without a handle on the account.
        if r.key_cap.is_none() {
            let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = tenants.get(r.tenant_id) {
                if let Some(outcome) = self.spend_reserved(entry, &r) {
                    return Ok(outcome);
                }
            }
        }
        let entry = self.entry(r.tenant_id);
        self.spend_from(&entry, r).await
    }

    /// The spend, if `entry`'s reservation covers it (keys without a cap).
    fn spend_reserved(&self, entry: &TenantEntry, r: &SpendRequest<'_>) -> Option<SpendOutcome> {
        let cost = r.cost.max(0);
        let now = self.clock.now().0;
        let mut b = entry.lock();
        b.absorb_ready();
        if !b.try_spend(r.key_id, cost, now) {
            return None;
        }
        let outcome = SpendOutcome {
            admitted: true,
            balance: b.balance(),
            key_remaining: None,
        };
        self.maybe_top_up(&mut b, r, cost, now);
        Some(outcome)
    }

    /// [`CreditBank::spend`] from an account already looked up.
    async fn spend_from(
        &self,
        entry: &TenantEntry,
        r: SpendRequest<'_>,
    ) -> Result<SpendOutcome, StoreError> {
        let cost = r.cost.max(0);
        if r.key_cap.is_none() {
            if let Some(outcome) = self.spend_reserved(entry, &r) {
                return Ok(outcome);
            }
        }
        // The slow path, one request per tenant at a time.
        let _gate = entry.gate.lock().await;
        if r.key_cap.is_some() {
            let known = entry.lock().key_totals.contains_key(r.key_id);
            if !known {
                let settled = self.store.key_credits_spent(r.key_id).await?;
                entry.lock().key_totals.insert(r.key_id.to_owned(), settled);
            }
        }
        let mut reclaim = Reclaim::default();
        loop {
            let now = self.clock.now().0;
            // Credits on their way count: wait for them before going further.
            entry.absorb_pending().await;
            let (short, want) = {
                let mut b = entry.lock();
                if let Some(outcome) = self.spent_outcome(&mut b, &r, cost, now) {
                    return Ok(outcome);
                }
                if let Some(outcome) = Self::over_cap(&b, &r, cost) {
                    return Ok(outcome);
                }
                let short = cost - b.reserved;
                let mut want = b.next_want(cost, now, self.config.max_reservation);
                if b.lean(now) {
                    // Near the end of a balance other nodes want too: no
                    // more than a quarter of what is left (nor less than
                    // this request needs, below).
                    want = want.min(b.stored / 4);
                }
                // What the node holds stays within `max_reservation` (or
                // one request's cost, if that is more): the most a crash
                // can count as spent.
                want = want.min(self.config.max_reservation - b.reserved);
                (short, want.max(short))
            };
            let got = self
                .store
                .reserve_credits(
                    &ReserveRequest {
                        tenant_id: r.tenant_id.to_owned(),
                        node_id: self.config.node_id.clone(),
                        min: short,
                        want,
                        refill: r.refill,
                    },
                    now,
                )
                .await?;
            let refusal = {
                let mut b = entry.lock();
                b.took(&got);
                b.last_reserve = now;
                if let Some(outcome) = self.spent_outcome(&mut b, &r, cost, now) {
                    return Ok(outcome);
                }
                if got.granted > 0 {
                    // Granted, but others spent the reservation meanwhile: again.
                    continue;
                }
                // The store could not cover `short`, and other requests only
                // took from the reservation meanwhile: unless other nodes
                // hold some, the tenant cannot cover `cost`.
                let spent = Self::key_spent(&b, &r);
                let refusal = SpendOutcome {
                    admitted: false,
                    balance: b.balance(),
                    key_remaining: r.key_cap.zip(spent).map(|(c, s)| (c - s).max(0)),
                };
                if got.held_elsewhere == 0 {
                    return Ok(refusal);
                }
                b.lean_until = b.lean_until.max(now.saturating_add(self.lean_ms()));
                refusal
            };
            // Other nodes hold some: ask them for it, and wait a little.
            if reclaim.should_ask() {
                if let Err(e) = self
                    .store
                    .record_change(
                        ChangeKind::CreditsReclaim,
                        Some(r.tenant_id),
                        Some(&self.config.node_id),
                        now,
                    )
                    .await
                {
                    tracing::warn!(error = %e, tenant = r.tenant_id, "Could not ask other nodes to hand back credits.");
                }
            }
            if !reclaim.may_wait(self.config.reclaim_wait) {
                return Ok(refusal);
            }
            tokio::time::sleep(reclaim.pause()).await;
        }
    }

    /// How long a reclaim (sent or heard) keeps a tenant's reservations lean.
    fn lean_ms(&self) -> i64 {
        self.config.idle_release_ms.max(1_000)
    }

    fn key_spent(b: &TenantBank, r: &SpendRequest<'_>) -> Option<i64> {
        r.key_cap.map(|_| {
            b.key_totals.get(r.key_id).copied().unwrap_or(0)
                + b.keys.get(r.key_id).copied().unwrap_or(0)
        })
    }

    /// The refusal for a key whose cap does not allow `cost` more.
    fn over_cap(b: &TenantBank, r: &SpendRequest<'_>, cost: i64) -> Option<SpendOutcome> {
        let (cap, spent) = r.key_cap.zip(Self::key_spent(b, r))?;
        (spent + cost > cap).then(|| SpendOutcome {
            admitted: false,
            balance: b.balance(),
            key_remaining: Some((cap - spent).max(0)),
        })
    }

    /// Spends if the reservation covers it now, with the outcome to answer.
    fn spent_outcome(
        &self,
        b: &mut TenantBank,
        r: &SpendRequest<'_>,
        cost: i64,
        now: i64,
    ) -> Option<SpendOutcome> {
        b.absorb_ready();
        let before = Self::key_spent(b, r);
        if let (Some(cap), Some(spent)) = (r.key_cap, before) {
            if spent + cost > cap {
                return None;
            }
        }
        if !b.try_spend(r.key_id, cost, now) {
            return None;
        }
        let outcome = SpendOutcome {
            admitted: true,
            balance: b.balance(),
            key_remaining: r.key_cap.zip(before).map(|(c, s)| c - s - cost),
        };
        self.maybe_top_up(b, r, cost, now);
        Some(outcome)
    }

    /// Running low: reserve more in the background, so requests rarely
    /// wait for the store.
    fn maybe_top_up(&self, b: &mut TenantBank, r: &SpendRequest<'_>, cost: i64, now: i64) {
        if b.pending.is_none() && b.stored > 0 && b.reserved < b.want / 2 && !b.lean(now) {
            let want = b
                .next_want(cost, now, self.config.max_reservation)
                .min(self.config.max_reservation - b.reserved);
            b.last_reserve = now;
            b.pending = Some(self.top_up(r.tenant_id.to_owned(), want, r.refill));
        }
    }

    fn top_up(&self, tenant_id: String, want: i64, refill: Option<Refill>) -> Pending {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = Arc::clone(&self.store);
        let clock = Arc::clone(&self.clock);
        let node_id = self.config.node_id.clone();
        let task = async move {
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
        };
        match &self.runtime {
            Some(rt) => drop(rt.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
        rx
    }

    /// Records this node's spends in the ledger, releases reservations idle
    /// for `credits.idle_release_seconds` (all of them with `release_all`),
    /// refreshes the rest, and counts stale reservations of stopped nodes
    /// as spent. On failure nothing is lost: the counts stay for the next
    /// settlement.
    pub async fn settle(&self, release_all: bool) -> Result<(), StoreError> {
        let mut last_sweep = self.settling.lock().await;
        let now = self.clock.now().0;
        let entries: Vec<(String, Arc<TenantEntry>)> = {
            let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
            tenants
                .iter()
                .map(|(t, b)| (t.clone(), Arc::clone(b)))
                .collect()
        };
        self.settle_entries(&entries, release_all, now).await?;
        // Looking for stopped nodes' reservations a few times per
        // `stale_seconds` is enough; not on every tick.
        if self.config.stale_ms > 0 && now.saturating_sub(*last_sweep) >= self.config.stale_ms / 4 {
            *last_sweep = now;
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

    /// Another node ran short of `tenant_id`'s credits while this one held
    /// some: settles the tenant now and gives back all of its unspent
    /// reservation (a background reservation in flight is waited for and
    /// given back too), and keeps its reservations lean for a while (see the
    /// crate docs: reclaims). Safe beside spends: a spend either took its
    /// credits from the reservation before they were given back, or finds
    /// the reservation short and reserves from the store again. Failures
    /// are logged: nothing is lost, the next settlement retries.
    pub async fn release_tenant(&self, tenant_id: &str) {
        // A tenant this node never spent for holds nothing here.
        let Some(entry) = self.known(tenant_id) else {
            return;
        };
        let now = self.clock.now().0;
        {
            let mut b = entry.lock();
            b.lean_until = b.lean_until.max(now.saturating_add(self.lean_ms()));
        }
        let _settling = self.settling.lock().await;
        let entries = [(tenant_id.to_owned(), entry)];
        if let Err(e) = self.settle_entries(&entries, true, now).await {
            tracing::warn!(error = %e, tenant = tenant_id, "Could not hand back credits another node asked for; the next settlement retries.");
        }
    }

    /// Settles `entries` (the caller holds `settling`).
    async fn settle_entries(
        &self,
        entries: &[(String, Arc<TenantEntry>)],
        release_all: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut taken = Vec::new();
        for (tenant, entry) in entries {
            if release_all {
                // Reservations in flight land first, so they are released too.
                entry.absorb_pending().await;
            }
            let mut b = entry.lock();
            b.absorb_ready();
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
            };
            b.reserved -= release;
            b.stored += release;
            b.last_settle = now;
            // Settled spends of capped keys move into their totals now, so
            // the cap stays exact while the settlement is written.
            for (k, v) in &s.key_spends {
                if let Some(total) = b.key_totals.get_mut(k) {
                    *total += v;
                }
            }
            taken.push((Arc::clone(entry), s, keys));
        }
        if taken.is_empty() {
            return Ok(());
        }
        let settlements: Vec<Settlement> = taken.iter().map(|(_, s, _)| s.clone()).collect();
        let result = self
            .store
            .settle_credits(&self.config.node_id, &settlements, now)
            .await;
        if result.is_err() {
            for (entry, s, keys) in taken {
                // Put everything back; the next settlement retries.
                let mut b = entry.lock();
                b.unsettled += s.spent;
                b.requests += s.requests;
                b.reserved += s.release;
                b.stored -= s.release;
                for (k, v) in &s.key_spends {
                    if let Some(total) = b.key_totals.get_mut(k) {
                        *total -= v;
                    }
                }
                for (k, v) in keys {
                    *b.keys.entry(k).or_default() += v;
                }
            }
        }
        result
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
    /// What [`Limits::spend`] decided so far, for the metrics.
    pub decisions: Decisions,
}

/// Decisions of [`Limits::spend`] so far (a cell per thread each: counting
/// costs an uncontended add). A spend that failed (the limiter or the store
/// did not answer) is none of them.
#[derive(Debug, Default)]
pub struct Decisions {
    /// Rate-limit checks that admitted the request.
    pub rate_allowed: keyward_observe::metrics::Counter,
    /// Rate-limit checks that refused it (`rate_limited`).
    pub rate_refused: keyward_observe::metrics::Counter,
    /// Credit spends that were covered.
    pub credits_spent: keyward_observe::metrics::Counter,
    /// Credit spends refused (`credits_exhausted`).
    pub credits_exhausted: keyward_observe::metrics::Counter,
}

impl Limits {
    /// Spends `cost` tokens of `key`'s rate limit and then `credits` of its
    /// tenant's balance. Keys without a policy are not rate limited; keys
    /// without a tenant (root keys) spend no credits.
    pub async fn spend(
        &self,
        tiers: &Tiers,
        key: &Spender<'_>,
        cost: u64,
        credits: i64,
        now: Timestamp,
    ) -> Result<Result<Spent, Refused>, LimitError> {
        let mut spent = Spent::default();
        if let Some(policy) = tiers.policy_for(key) {
            let d = match self.limiter.spend_now(key.key_id, policy, cost, now) {
                Some(d) => d,
                None => self.limiter.spend(key.key_id, policy, cost, now).await?,
            };
            let state = RateState::from_decision(policy, &d);
            if !d.allowed {
                self.decisions.rate_refused.inc();
                return Ok(Err(Refused {
                    denial: Denial::RateLimited {
                        retry_after_seconds: d.retry_after_seconds,
                    },
                    rate: Some(state),
                }));
            }
            self.decisions.rate_allowed.inc();
            spent.rate = Some(state);
        }
        if credits > 0 {
            if let Some(tenant) = key.tenant_id {
                let outcome = self
                    .credits
                    .spend(SpendRequest {
                        tenant_id: tenant,
                        key_id: key.key_id,
                        cost: credits,
                        key_cap: key.credit_cap,
                        refill: tiers.refill_for_tenant(key.tenant_tier),
                    })
                    .await?;
                if !outcome.admitted {
                    self.decisions.credits_exhausted.inc();
                    return Ok(Err(Refused {
                        denial: Denial::CreditsExhausted,
                        rate: spent.rate,
                    }));
                }
                self.decisions.credits_spent.inc();
                spent.credits = Some(outcome);
            }
        }
        Ok(Ok(spent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::clock::ManualClock;
    use keyward_store::{
        AuditEntry, ChangeStore as _, CreditChange, CreditStore as _, LedgerKind, SqlStore,
    };

    #[test]
    fn a_reclaim_asks_again_every_100_ms_and_pauses_10_to_25_ms() {
        let mut r = Reclaim::default();
        assert!(
            !r.may_wait(std::time::Duration::from_secs(1)),
            "not asked yet"
        );
        assert!(r.should_ask());
        assert!(!r.should_ask(), "asked a moment ago");
        assert!(r.may_wait(std::time::Duration::from_secs(1)));
        assert!(!r.may_wait(std::time::Duration::ZERO));
        for _ in 0..50 {
            let p = r.pause().as_millis();
            assert!((10..=25).contains(&p), "{p}");
        }
    }

    async fn sqlite() -> Arc<SqlStore> {
        let dir = std::env::temp_dir().join(format!(
            "keyward-limits-{}",
            keyward_core::id::new_id("d", &keyward_core::secret::OsEntropy).unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("keyward.db").display());
        Arc::new(SqlStore::open(&url).await.unwrap())
    }

    fn bank(store: &Arc<SqlStore>, node: &str, reclaim_wait_ms: u64) -> CreditBank {
        CreditBank::new(
            Arc::clone(store) as Arc<dyn Store>,
            Arc::new(ManualClock::new(Timestamp(1_000_000))),
            BankConfig {
                node_id: node.into(),
                max_reservation: 1_000,
                idle_release_ms: 10_000,
                stale_ms: 0,
                reclaim_wait: std::time::Duration::from_millis(reclaim_wait_ms),
            },
        )
    }

    async fn grant(store: &SqlStore, tenant: &str, amount: i64) {
        store
            .change_credits(
                &CreditChange {
                    id: "led_grant".into(),
                    tenant_id: tenant.into(),
                    kind: LedgerKind::Grant,
                    amount,
                    at: 1,
                    actor: "key_root".into(),
                    reason: None,
                    idempotency_key: None,
                    fingerprint: "fp".into(),
                    refill: None,
                },
                &AuditEntry {
                    id: "evt_grant".into(),
                    at: 1,
                    actor: "key_root".into(),
                    actor_ip: None,
                    tenant_id: Some(tenant.into()),
                    action: "credits.granted".into(),
                    target: tenant.into(),
                    details: serde_json::json!({}),
                    event: None,
                },
            )
            .await
            .unwrap();
    }

    fn request(tenant: &str, cost: i64) -> SpendRequest<'_> {
        SpendRequest {
            tenant_id: tenant,
            key_id: "key_k",
            cost,
            key_cap: None,
            refill: None,
        }
    }

    /// A node short of credits that another node holds asks for them in the
    /// change log and waits `reclaim_wait` for them; once the other node
    /// released them (`release_tenant`), it spends them. With nobody holding
    /// anything it refuses at once.
    #[tokio::test]
    async fn a_short_node_asks_for_credits_another_node_holds() {
        let store = sqlite().await;
        let (a, b) = (bank(&store, "n-a", 100), bank(&store, "n-b", 100));
        grant(&store, "ten_1", 50).await;
        let seq = store.last_change_seq().await.unwrap();

        // b reserves ahead (10 × the cost: all 50) on its first spend.
        assert!(b.spend(request("ten_1", 5)).await.unwrap().admitted);
        let started = std::time::Instant::now();
        let refused = a.spend(request("ten_1", 5)).await.unwrap();
        assert!(!refused.admitted, "nobody answered the reclaim");
        assert_eq!(refused.balance, 50, "b's 45 unspent + 5 spent, unsettled");
        assert!(started.elapsed() >= std::time::Duration::from_millis(100));
        let asked = store.changes_after(seq, 100).await.unwrap();
        assert!(!asked.is_empty());
        assert!(asked.iter().all(|c| c.kind == ChangeKind::CreditsReclaim
            && c.tenant_id.as_deref() == Some("ten_1")
            && c.origin.as_deref() == Some("n-a")));

        // b answers: its spend is settled and its 45 go back; a spends them.
        b.release_tenant("ten_1").await;
        assert_eq!(b.unsettled("ten_1"), 0);
        let acc = store.credit_account("ten_1", None, 2).await.unwrap();
        assert_eq!((acc.balance, acc.reserved), (45, 0));
        for _ in 0..9 {
            assert!(a.spend(request("ten_1", 5)).await.unwrap().admitted);
        }
        // Near the end a's reservations were lean: nothing is left anywhere,
        // and with nobody holding anything both refuse at once.
        let started = std::time::Instant::now();
        assert!(!a.spend(request("ten_1", 5)).await.unwrap().admitted);
        a.release_tenant("ten_1").await;
        assert!(!b.spend(request("ten_1", 5)).await.unwrap().admitted);
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        let acc = store.credit_account("ten_1", None, 3).await.unwrap();
        assert_eq!((acc.balance, acc.reserved), (0, 0));
    }

    /// `release_tenant` beside concurrent spends: none is lost and none is
    /// counted twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn releasing_while_spending_loses_nothing() {
        let store = sqlite().await;
        let a = Arc::new(bank(&store, "n-a", 0));
        grant(&store, "ten_1", 1_000).await;
        let mut tasks = Vec::new();
        for i in 0..400 {
            let a = Arc::clone(&a);
            tasks.push(tokio::spawn(async move {
                if i % 40 == 0 {
                    a.release_tenant("ten_1").await;
                    false
                } else {
                    a.spend(request("ten_1", 3)).await.unwrap().admitted
                }
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += i64::from(t.await.unwrap());
        }
        assert_eq!(admitted, 1_000 / 3);
        a.settle(true).await.unwrap();
        let acc = store.credit_account("ten_1", None, 2).await.unwrap();
        assert_eq!((acc.balance, acc.reserved), (1_000 % 3, 0));
    }
}
