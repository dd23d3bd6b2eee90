//! keyward's rate limiter over Redis: every node spends from the same GCRA
//! buckets, so N nodes together admit exactly what one node would.
//!
//! [`RedisLimiter`] implements [`keyward_limits::RateLimiter`]. Build it once
//! per process with [`RedisLimiter::connect`] and hand it to
//! `keyward_limits::Limits` in place of the in-memory limiter; report
//! [`RedisLimiter::status`] in the readiness check and call
//! [`RedisLimiter::shutdown`] on the way out.
//!
//! ```no_run
//! # async fn run() -> Result<(), keyward_redis::RedisSetupError> {
//! use keyward_redis::{RedisConfig, RedisLimiter};
//! let limiter = RedisLimiter::connect("redis://127.0.0.1:6379", "node_a", RedisConfig::default()).await?;
//! println!("{} ({} nodes)", limiter.status().as_str(), limiter.live_nodes());
//! limiter.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Invariants
//! - **Check and spend are one step.** One Lua script reads the bucket's
//!   theoretical arrival time (TAT), decides and writes it back, atomically
//!   on the Redis server; it mirrors `keyward_core::ratelimit::spend` exactly
//!   (integer microseconds; debt capped at `burst·T` of the policy in force;
//!   the same `remaining`, `reset_seconds` and `retry_after_seconds`).
//! - **One clock.** The script reads the Redis server's clock (`TIME`, cut to
//!   whole milliseconds), not the node's `now`: nodes whose clocks disagree
//!   cannot over-admit by spending "in the past" or "in the future". The
//!   `now` a caller passes is used only by the local fallback.
//! - **One round trip per request** on the happy path: `EVALSHA` over a
//!   multiplexed connection (`redis::aio::ConnectionManager`, which pipelines
//!   concurrent commands and reconnects by itself): one per thread that
//!   spends (each gateway worker's runtime drives its own, so a reply wakes
//!   its request without a hop to another thread; made in the background,
//!   at most 64), and a shared one for the heartbeat and probe, which a
//!   spend uses while its thread's is being made or after it failed. The script body is sent
//!   again (`EVAL`) only when Redis answers `NOSCRIPT` (after a restart).
//! - **Bounded waits.** Every command is cut off after
//!   [`RedisConfig::timeout_ms`]. A command that fails or times out makes
//!   the node *degraded*: from then on it decides at once without Redis
//!   ([`FailurePolicy`]) until a background probe (every 250 ms) gets an
//!   answer again. The way down and the way up are logged once each, never
//!   per request. Any failed command counts, an error reply too; the probe
//!   is the heartbeat script (a write), so a Redis that answers but refuses
//!   writes (out of memory, a read-only replica) keeps the node degraded
//!   instead of flapping.
//! - **The fallback is approximate, by design.** A degraded node admits its
//!   share (`limit / live nodes`, in buckets of its own that start full); nodes that still
//!   reach Redis keep sharing the whole limit there. Over a partial outage
//!   the total can exceed the limit by the degraded nodes' shares; with
//!   `fail_closed` it never does, at the price of refusing to decide.
//! - **Bounded memory.** Redis keys (`<prefix>rl:<bucket>`) expire when
//!   their bucket is full again; the node registry (`<prefix>nodes`) holds
//!   only nodes heard from in the last 5 s. In the process: the local
//!   fallback is the sharded `MemoryLimiter` (it forgets full buckets) and a
//!   cache of scaled policies that starts over past 1024 entries.
//! - **No secrets.** Buckets are key ids, never key material; the Redis URL
//!   (which may hold a password) is never logged.
//!
//! Policies whose bucket (`burst·T`) spans more than 2⁵² µs (about 142 years)
//! are cut to that size: Redis' Lua numbers are doubles, exact only below
//! 2⁵³.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use keyward_core::clock::Timestamp;
use keyward_core::ratelimit::{Decision, RatePolicy};
use keyward_limits::{RateLimitError, RateLimiter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

mod fallback;
mod gcra;

use fallback::Fallback;

/// Most per-thread connections a limiter keeps (see `Shared::local`).
const MAX_LOCAL_CONNECTIONS: usize = 64;
/// How often a healthy node records itself in the node registry.
const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How often a degraded node asks Redis whether it is back.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// A node silent for longer than this no longer counts as live.
const LIVE_WINDOW_MS: u64 = 5_000;
/// The shortest wait for a new connection: setting one up takes a few round
/// trips, more than one command's budget on a slow link.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_NODE_ID_LEN: usize = 128;

/// The `[redis]` settings of the rate limiter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Prefix of every Redis key keyward writes (default "keyward:"). Lets several deployments
    /// (or test runs) share one Redis.
    pub prefix: String,
    /// Longest wait for one Redis command before the node falls back
    /// (default 250 ms). A Redis slower than this under load counts as
    /// down: raise it for a remote or busy Redis.
    pub timeout_ms: u64,
    /// What a node does while Redis is unreachable (default fail_open_local).
    pub on_failure: FailurePolicy,
}

impl Default for RedisConfig {
    fn default() -> RedisConfig {
        RedisConfig {
            prefix: "keyward:".into(),
            timeout_ms: 250,
            on_failure: FailurePolicy::FailOpenLocal,
        }
    }
}

/// What a node does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Decide on this node, with each policy's share for one node: limit and
    /// burst divided by the number of live nodes last seen (at least 1).
    /// The nodes together admit about the limit; buckets start full.
    FailOpenLocal,
    /// Refuse to decide: rate-limited requests fail with
    /// [`RateLimitError::Unavailable`].
    FailClosed,
}

/// How the limiter decides right now, for the readiness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterStatus {
    /// On Redis: limits are shared by all nodes.
    Redis,
    /// Redis is unreachable; this node decides alone with its share.
    LocalFallback,
    /// Redis is unreachable and the policy is `fail_closed`.
    Unavailable,
}

impl LimiterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LimiterStatus::Redis => "redis",
            LimiterStatus::LocalFallback => "local_fallback",
            LimiterStatus::Unavailable => "unavailable",
        }
    }
}

/// Why a [`RedisLimiter`] could not be built. Redis being down is not one
/// of them.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The URL does not parse, or asks for something this build cannot do
    /// (TLS). The message never repeats the URL, which may hold a password.
    #[error("the Redis URL is not valid: {0}")]
    Url(String),
    #[error("the node id must be 1 to {MAX_NODE_ID_LEN} bytes")]
    NodeId,
    #[error("redis.timeout_ms must be at least 1")]
    Timeout,
}

/// A [`RateLimiter`] whose buckets live in Redis. See the crate docs.
pub struct RedisLimiter {
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    client: redis::Client,
    /// Made by the first successful connection; it reconnects by itself
    /// after that.
    conn: OnceLock<ConnectionManager>,
    /// A connection per thread that spends (each gateway worker is a
    /// runtime on a thread of its own): its driver runs on that thread's
    /// runtime, so a spend's reply wakes the request without a hop through
    /// another thread. At most [`MAX_LOCAL_CONNECTIONS`]; past that, and
    /// while one is being made, spends use `conn`.
    local: std::sync::RwLock<std::collections::HashMap<std::thread::ThreadId, ConnectionManager>>,
    making: Mutex<std::collections::HashSet<std::thread::ThreadId>>,
    node_id: String,
    /// `prefix + "rl:"`.
    bucket_prefix: String,
    nodes_key: String,
    timeout: Duration,
    on_failure: FailurePolicy,
    gcra: redis::Script,
    heartbeat: redis::Script,
    degraded: AtomicBool,
    live_nodes: AtomicU64,
    fallback: Fallback,
}

/// Why Redis did not answer: its error, or our timeout.
type Failure = String;

impl RedisLimiter {
    /// Does not fail when Redis is down (the node starts degraded and recovers by itself);
    /// fails only on a malformed URL. Spawns its background task (heartbeat + probe) on the current runtime.
    ///
    /// The first connection is tried here (for at most a second, or
    /// `timeout_ms` if longer), so a node whose Redis is up starts on it.
    /// The runtime must outlive the limiter: the connection's own tasks run
    /// there too.
    pub async fn connect(
        url: &str,
        node_id: &str,
        config: RedisConfig,
    ) -> Result<RedisLimiter, RedisSetupError> {
        if node_id.is_empty() || node_id.len() > MAX_NODE_ID_LEN {
            return Err(RedisSetupError::NodeId);
        }
        if config.timeout_ms == 0 {
            return Err(RedisSetupError::Timeout);
        }
        let client = redis::Client::open(url).map_err(|e| RedisSetupError::Url(e.to_string()))?;
        let shared = Arc::new(Shared {
            client,
            conn: OnceLock::new(),
            local: std::sync::RwLock::new(std::collections::HashMap::new()),
            making: Mutex::new(std::collections::HashSet::new()),
            node_id: node_id.to_owned(),
            bucket_prefix: format!("{}rl:", config.prefix),
            nodes_key: format!("{}nodes", config.prefix),
            timeout: Duration::from_millis(config.timeout_ms),
            on_failure: config.on_failure,
            gcra: redis::Script::new(gcra::SCRIPT),
            heartbeat: redis::Script::new(gcra::HEARTBEAT),
            degraded: AtomicBool::new(false),
            live_nodes: AtomicU64::new(1),
            fallback: Fallback::default(),
        });
        shared.beat().await;
        let task = tokio::spawn(Shared::watch(Arc::clone(&shared)));
        Ok(RedisLimiter {
            shared,
            task: Mutex::new(Some(task)),
        })
    }

    /// Health for /v1/ready.
    pub fn status(&self) -> LimiterStatus {
        self.shared.status()
    }

    /// Nodes seen alive in the last heartbeat window (at least 1).
    ///
    /// Kept as last seen while Redis is unreachable.
    pub fn live_nodes(&self) -> u64 {
        self.shared.live_nodes.load(Ordering::Relaxed).max(1)
    }

    /// Stops the background task (and removes this node from the registry, best effort).
    pub async fn shutdown(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            // Cancelled, or it panicked: either way it is gone.
            let _ = task.await;
            self.shared.leave().await;
        }
    }

    /// Spends on Redis only, without falling back, and also answers the
    /// server time (whole milliseconds) the script decided at. For tests
    /// and diagnostics: with that time, `keyward_core::ratelimit::spend`
    /// gives the same decision.
    pub async fn spend_on_server(
        &self,
        bucket: &str,
        policy: &RatePolicy,
        cost: u64,
    ) -> Result<(Decision, Timestamp), RateLimitError> {
        self.shared
            .spend_on_redis(bucket, policy, cost)
            .await
            .map_err(RateLimitError::Unavailable)
    }
}

impl Drop for RedisLimiter {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client: its connection info may hold a password.
        f.debug_struct("RedisLimiter")
            .field("node_id", &self.shared.node_id)
            .field("status", &self.status())
            .field("live_nodes", &self.live_nodes())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn spend(
        &self,
        bucket: &str,
        policy: &RatePolicy,
        cost: u64,
        now: Timestamp,
    ) -> Result<Decision, RateLimitError> {
        let s = &self.shared;
        if !s.degraded.load(Ordering::Acquire) {
            match s.spend_on_redis(bucket, policy, cost).await {
                Ok((d, _)) => return Ok(d),
                Err(e) => s.degrade(&e),
            }
        }
        match s.on_failure {
            FailurePolicy::FailOpenLocal => {
                Ok(s.fallback
                    .decide(bucket, policy, cost, now, self.live_nodes()))
            }
            FailurePolicy::FailClosed => Err(RateLimitError::Unavailable(
                "Redis is unreachable and redis.on_failure is fail_closed".into(),
            )),
        }
    }
}

impl Shared {
    fn status(&self) -> LimiterStatus {
        match (self.degraded.load(Ordering::Acquire), self.on_failure) {
            (false, _) => LimiterStatus::Redis,
            (true, FailurePolicy::FailOpenLocal) => LimiterStatus::LocalFallback,
            (true, FailurePolicy::FailClosed) => LimiterStatus::Unavailable,
        }
    }

    async fn spend_on_redis(
        self: &Arc<Self>,
        bucket: &str,
        policy: &RatePolicy,
        cost: u64,
    ) -> Result<(Decision, Timestamp), Failure> {
        let spend = gcra::Spend::new(policy, cost);
        let mut key = String::with_capacity(self.bucket_prefix.len() + bucket.len());
        key.push_str(&self.bucket_prefix);
        key.push_str(bucket);
        if let Some(conn) = self.local_connection() {
            match self.run_spend(conn, &key, spend).await {
                Ok(reply) => return Ok(Self::decided(policy, cost, spend, reply)),
                // This thread's connection may be the one that broke (it
                // reconnects only after a failed command, while the probe
                // keeps the shared one fresh): drop it, ask on the shared
                // one, and make a new one in the background next time.
                Err(_) => {
                    self.local
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&std::thread::current().id());
                }
            }
        }
        let conn = self
            .conn
            .get()
            .cloned()
            .ok_or_else(|| "not connected yet".to_owned())?;
        let reply = self.run_spend(conn, &key, spend).await?;
        Ok(Self::decided(policy, cost, spend, reply))
    }

    async fn run_spend(
        &self,
        mut conn: ConnectionManager,
        key: &str,
        spend: gcra::Spend,
    ) -> Result<gcra::Reply, Failure> {
        let mut call = self.gcra.prepare_invoke();
        call.key(key).arg(spend.capacity_us).arg(spend.cost_us);
        self.bounded(call.invoke_async(&mut conn)).await
    }

    fn decided(
        policy: &RatePolicy,
        cost: u64,
        spend: gcra::Spend,
        reply: gcra::Reply,
    ) -> (Decision, Timestamp) {
        (
            gcra::decision(policy, cost, spend, reply),
            Timestamp(reply.3),
        )
    }

    /// `command`, cut off after the configured timeout.
    async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// This thread's connection, if it has one; if not, one is made in the
    /// background (on this thread's runtime) and `None` says to use the
    /// shared one meanwhile. A failed attempt is retried a second later.
    fn local_connection(self: &Arc<Self>) -> Option<ConnectionManager> {
        let me = std::thread::current().id();
        {
            let local = self.local.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = local.get(&me) {
                return Some(c.clone());
            }
            if local.len() >= MAX_LOCAL_CONNECTIONS {
                return None;
            }
        }
        let fresh = self
            .making
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(me);
        if fresh {
            let shared = Arc::clone(self);
            tokio::spawn(async move {
                match shared.make_connection().await {
                    Ok(c) => {
                        shared
                            .local
                            .write()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(me, c);
                    }
                    _ => tokio::time::sleep(Duration::from_secs(1)).await,
                }
                shared
                    .making
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&me);
            });
        }
        None
    }

    /// A new connection, one attempt (the callers retry), bounded.
    async fn make_connection(&self) -> Result<ConnectionManager, Failure> {
        let wait = self.timeout.max(MIN_CONNECT_TIMEOUT);
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(wait);
        tokio::time::timeout(
            wait,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| format!("no connection within {} ms", wait.as_millis()))?
        .map_err(|e| e.to_string())
    }

    /// The connection, made now if there is none yet.
    async fn connection(&self) -> Result<ConnectionManager, Failure> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let made = self.make_connection().await?;
        // Only the background task (and `connect`, before it starts) gets
        // here, so no other connection can have won; if one did, use it.
        Ok(self.conn.get_or_init(|| made).clone())
    }

    /// Records this node in the registry and reads the live node count;
    /// the health check of both a healthy and a degraded node.
    async fn beat(&self) {
        match self.heartbeat().await {
            Ok(n) => {
                self.live_nodes.store(n.max(1), Ordering::Relaxed);
                if self.degraded.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        live_nodes = n,
                        "Redis answers again; rate limits are shared by all nodes again."
                    );
                }
            }
            Err(e) => self.degrade(&e),
        }
    }

    async fn heartbeat(&self) -> Result<u64, Failure> {
        let mut conn = self.connection().await?;
        let mut call = self.heartbeat.prepare_invoke();
        call.key(&self.nodes_key)
            .arg(&self.node_id)
            .arg(LIVE_WINDOW_MS);
        self.bounded(call.invoke_async(&mut conn)).await
    }

    fn degrade(&self, error: &str) {
        if self.degraded.swap(true, Ordering::AcqRel) {
            return;
        }
        match self.on_failure {
            FailurePolicy::FailOpenLocal => tracing::warn!(
                error,
                live_nodes = self.live_nodes.load(Ordering::Relaxed),
                "Redis failed or did not answer within redis.timeout_ms; rate limits are decided on this node with its share of each limit until Redis answers again."
            ),
            FailurePolicy::FailClosed => tracing::warn!(
                error,
                "Redis failed or did not answer within redis.timeout_ms; rate-limited requests are refused until Redis answers again."
            ),
        }
    }

    /// Beats every second while healthy, probes every 250 ms while not.
    async fn watch(shared: Arc<Shared>) {
        loop {
            let pause = if shared.degraded.load(Ordering::Acquire) {
                PROBE_EVERY
            } else {
                BEAT_EVERY
            };
            tokio::time::sleep(pause).await;
            shared.beat().await;
        }
    }

    /// Takes this node out of the registry, best effort.
    async fn leave(&self) {
        let Some(conn) = self.conn.get() else { return };
        let mut conn = conn.clone();
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(&self.nodes_key).arg(&self.node_id);
        if let Err(e) = self.bounded(cmd.exec_async(&mut conn)).await {
            tracing::debug!(
                error = e,
                "Could not leave the Redis node registry; it forgets silent nodes by itself."
            );
        }
    }
}
