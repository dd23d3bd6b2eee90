//! The verification hot path: parse → hash → cache → policy.
//!
//! A well-formed secret is hashed and looked up in [`KeyCache`]; only a miss
//! reads the store, and unknown hashes are remembered briefly (negative
//! cache) so garbage that passes the checksum cannot hammer storage.
//! Known and unknown hashes live in separate maps with separate bounds
//! (`cache.capacity`, `cache.negative_capacity`): anyone can mint
//! checksum-valid keys, so a flood of them must never evict a known key.
//! Reads go through one `Loader` that batches them (one query for every
//! key asked for meanwhile) and refreshes keys in use before they expire,
//! in the background, so a request waits on the store only for a key it
//! is the first to present. Hashes the cache has never known wait in a
//! bounded lane (`cache.max_pending_loads`); when it is full such a request
//! is answered 503 `overloaded` at once rather than queued behind a flood,
//! while known keys (refreshes, and reloads of expired entries) always get
//! in, and every round reads everything queued, so nothing waits longer
//! than two rounds. Management changes on this node invalidate
//! entries synchronously (and a read that began before a change is not
//! cached); entries also expire within `cache.ttl_seconds`, which bounds
//! staleness for changes made on other nodes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::oneshot;

use keyward_core::allowlist::IpAllowlist;
use keyward_core::clock::{Clock, Timestamp};
use keyward_core::scope::ScopeSet;
use keyward_core::secret::{KeyFormat, KeyHash};
use keyward_core::verdict::{evaluate, Demand, Denial, KeyPolicy};
use keyward_observe::metrics::{Counter, Histogram};
use keyward_store::{KeyRecord, Store, StoreError};

use crate::credential::Presented;
use crate::last_use::LastUseRecorder;

/// A stored key with its policy parsed once, as the hot path needs it.
#[derive(Debug)]
pub struct CachedKey {
    pub record: KeyRecord,
    pub tenant_name: Option<String>,
    /// The tenant's rate-limit tier (or the deployment's default tier),
    /// used when the key names none.
    pub tenant_tier: Option<String>,
    pub policy: KeyPolicy,
    /// The key's own rate limit, if it has one.
    pub rate_override: Option<keyward_core::ratelimit::RatePolicy>,
    /// The gateway's identity header values, built on first use.
    identity: std::sync::OnceLock<Identity>,
    /// When and from which address (a fingerprint) this key's use was last
    /// handed to the [`LastUseRecorder`]: uses within a second from the same
    /// address are not handed again, so a busy key does not take the
    /// recorder's lock on every request.
    noted_at: AtomicI64,
    noted_ip: AtomicU64,
}

/// Identity values for the upstream's headers, built once per cached key.
/// Values that cannot be header values (control characters in an owner,
/// say) are left out.
#[derive(Debug)]
pub struct Identity {
    pub key_id: HeaderText,
    pub tenant_id: Option<HeaderText>,
    pub environment: HeaderText,
    /// Space-separated.
    pub scopes: HeaderText,
    pub owner: Option<HeaderText>,
}

/// Text that is a valid HTTP field value as it stands (visible ASCII,
/// space and tab), shared cheaply: the HTTP layers turn it into their own
/// header type without copying.
#[derive(Debug, Clone, Default)]
pub struct HeaderText(bytes::Bytes);

impl HeaderText {
    pub fn new(s: &str) -> Option<HeaderText> {
        s.bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
            .then(|| HeaderText(bytes::Bytes::copy_from_slice(s.as_bytes())))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn shared(&self) -> bytes::Bytes {
        self.0.clone()
    }
}

impl CachedKey {
    pub fn new(
        record: KeyRecord,
        tenant_name: Option<String>,
        tenant_tier: Option<String>,
    ) -> CachedKey {
        // Stored allowlists were validated on write; an unparsable one (only
        // possible by editing the database by hand) denies every address
        // rather than allowing all.
        let allowlist = IpAllowlist::parse(&record.ip_allowlist).unwrap_or_else(|_| {
            tracing::error!(key_id = %record.id, "Stored IP allowlist is invalid; denying all addresses.");
            IpAllowlist::deny_all()
        });
        let policy = KeyPolicy {
            revoked: record.revoked_at.is_some() || record.deleted_at.is_some(),
            enabled: record.enabled,
            expires_at: record.expires_at.map(Timestamp),
            grace_until: record.grace_until.map(Timestamp),
            allowlist,
            scopes: ScopeSet::new(record.scopes.iter().cloned()),
        };
        // Validated on write, like the allowlist.
        let rate_override = record.rate_limit.and_then(|r| {
            keyward_core::ratelimit::RatePolicy::new("key", r.limit, r.window_ms, r.burst).ok()
        });
        CachedKey {
            record,
            tenant_name,
            tenant_tier,
            policy,
            rate_override,
            identity: std::sync::OnceLock::new(),
            noted_at: AtomicI64::new(i64::MIN),
            noted_ip: AtomicU64::new(0),
        }
    }

    /// Whether a use at `now` from `ip` is news for the usage recorder (a
    /// new second, or another address), noting it if so.
    fn note_use(&self, now: Timestamp, ip: Option<IpAddr>) -> bool {
        use std::hash::BuildHasher;
        let fingerprint = keyward_core::hashing::IdHash::default().hash_one(ip);
        let at = self.noted_at.load(Ordering::Relaxed);
        if now.0.saturating_sub(at) < 1000 && self.noted_ip.load(Ordering::Relaxed) == fingerprint {
            return false;
        }
        self.noted_at.store(now.0, Ordering::Relaxed);
        self.noted_ip.store(fingerprint, Ordering::Relaxed);
        true
    }

    /// The identity values of this key, for the upstream's headers.
    pub fn identity(&self) -> &Identity {
        self.identity.get_or_init(|| {
            let r = &self.record;
            Identity {
                key_id: HeaderText::new(&r.id).unwrap_or_default(),
                tenant_id: r.tenant_id.as_deref().and_then(HeaderText::new),
                environment: HeaderText::new(&r.environment).unwrap_or_default(),
                scopes: HeaderText::new(&r.scopes.join(" ")).unwrap_or_default(),
                owner: r.owner.as_deref().and_then(HeaderText::new),
            }
        })
    }
}

/// The result of a verification.
#[derive(Debug, Clone)]
pub enum Outcome {
    Valid(Arc<CachedKey>),
    /// Denied; the key is known unless the denial is about the credential itself.
    Denied(Denial, Option<Arc<CachedKey>>),
}

struct Entry {
    key: Option<Arc<CachedKey>>,
    /// From here on a use also asks for a background refresh.
    refresh_at: i64,
    /// From here on the entry is not served (the bound on staleness).
    expires: i64,
    /// A refresh was asked for (once per entry).
    refreshing: AtomicBool,
}

/// Hashes a [`KeyHash`] by taking its first eight bytes. They are already
/// uniformly distributed (SHA-256), and nobody can choose them without a
/// preimage attack, so re-hashing them with SipHash would only cost time.
#[derive(Default)]
pub struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

type KeyMap = HashMap<KeyHash, Entry, BuildHasherDefault<PrehashedHasher>>;

/// What the cache knows about a hash.
#[derive(Debug)]
pub enum Lookup {
    /// Known (`Some`) or known to be unknown (`None`).
    Fresh(Option<Arc<CachedKey>>),
    /// As `Fresh`, but due for a refresh, which this caller should ask for
    /// (only one caller per entry is told).
    Stale(Option<Arc<CachedKey>>),
    /// A known key's entry that expired: read it again (it is likely
    /// still there, so it does not wait in the bounded lane).
    Expired,
    Missing,
}

/// Most shards; each is a lock of its own, so the worker threads rarely
/// touch the same lock word.
const SHARDS: usize = 16;

/// One lock's worth of the cache: known keys and unknown hashes apart, so
/// making room for one kind never drops the other.
#[derive(Default)]
struct Shard {
    known: KeyMap,
    unknown: KeyMap,
}

/// Hash → key, with refresh and expiry times, in two maps per shard: known
/// keys (`cache.capacity`) and hashes the store does not have, the negative
/// cache (`cache.negative_capacity`). Entries are served for `ttl`; from a
/// point between half and three quarters of it (spread by hash) a use also
/// asks for a background refresh, so a key in use is re-read before it
/// expires and requests do not wait on the store. Expiry falls between
/// three quarters and all of the TTL, spread the same way, so entries
/// cached together do not expire in one stampede.
///
/// A full map first drops its expired entries; if it is still more than
/// three quarters full, the negative map is emptied (unknown hashes are
/// cheap to forget: at worst they are read again, through the loader's
/// bounded lane) and the known map loses about half its entries. Either
/// way the next quarter of the map's inserts cost nothing extra, and the
/// hot path tracks no recency.
pub struct KeyCache {
    shards: Vec<RwLock<Shard>>,
    ttl_ms: i64,
    negative_ttl_ms: i64,
    known_per_shard: usize,
    unknown_per_shard: usize,
    /// Bumped by every invalidation: a load that began before one does not
    /// cache what it read (it may predate the change).
    epoch: AtomicU64,
    /// From this time (ms) on, entries are not trusted: every lookup is a
    /// miss and reads the store. A node that cannot hear other nodes'
    /// changes stops trusting its cache this way (see `trust_until`).
    trusted_until: AtomicI64,
}

impl KeyCache {
    pub fn new(
        ttl_seconds: u64,
        negative_ttl_seconds: u64,
        capacity: usize,
        negative_capacity: usize,
    ) -> KeyCache {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let capacity = capacity.max(1);
        let negative_capacity = negative_capacity.max(1);
        let shards = SHARDS.min(capacity).min(negative_capacity);
        KeyCache {
            shards: (0..shards).map(|_| RwLock::new(Shard::default())).collect(),
            ttl_ms: ms(ttl_seconds),
            negative_ttl_ms: ms(negative_ttl_seconds),
            known_per_shard: capacity / shards,
            unknown_per_shard: negative_capacity / shards,
            epoch: AtomicU64::new(0),
            trusted_until: AtomicI64::new(i64::MAX),
        }
    }

    /// Entries are served until `ms` (clock time) and not after, unless
    /// this is called again: whoever follows other nodes' changes extends
    /// it each time it has heard everything. Never called: trusted forever
    /// (one node, or changes made here only).
    pub fn trust_until(&self, ms: i64) {
        self.trusted_until.store(ms, Ordering::Release);
    }

    fn trusted(&self, now: Timestamp) -> bool {
        now.0 < self.trusted_until.load(Ordering::Acquire)
    }

    fn shard(&self, hash: &KeyHash) -> &RwLock<Shard> {
        // Other bytes than the map's hasher takes.
        let i = usize::from(hash.0[16]) % self.shards.len();
        &self.shards[i]
    }

    /// `Some(Some(key))` known, `Some(None)` known to be unknown, `None`
    /// miss (expired or never seen).
    pub fn get(&self, hash: &KeyHash, now: Timestamp) -> Option<Option<Arc<CachedKey>>> {
        if !self.trusted(now) {
            return None;
        }
        let shard = self.shard(hash).read().unwrap_or_else(|p| p.into_inner());
        shard
            .known
            .get(hash)
            .or_else(|| shard.unknown.get(hash))
            .filter(|e| e.expires > now.0)
            .map(|e| e.key.clone())
    }

    /// Like [`KeyCache::get`], and says whether the entry is due for a
    /// refresh, or was a known key's.
    pub fn lookup(&self, hash: &KeyHash, now: Timestamp) -> Lookup {
        let shard = self.shard(hash).read().unwrap_or_else(|p| p.into_inner());
        let (entry, known) = match shard.known.get(hash) {
            Some(e) => (e, true),
            None => match shard.unknown.get(hash) {
                Some(e) => (e, false),
                None => return Lookup::Missing,
            },
        };
        if entry.expires <= now.0 || !self.trusted(now) {
            return if known {
                Lookup::Expired
            } else {
                Lookup::Missing
            };
        }
        if entry.refresh_at <= now.0 && !entry.refreshing.swap(true, Ordering::Relaxed) {
            Lookup::Stale(entry.key.clone())
        } else {
            Lookup::Fresh(entry.key.clone())
        }
    }

    /// The current invalidation epoch, to pass to [`KeyCache::insert_at`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn insert(&self, hash: KeyHash, key: Option<Arc<CachedKey>>, now: Timestamp) {
        self.insert_at(self.epoch(), hash, key, now);
    }

    /// Caches what a load read, unless an invalidation happened since
    /// `epoch` was taken (before the read). `false`: not cached.
    pub fn insert_at(
        &self,
        epoch: u64,
        hash: KeyHash,
        key: Option<Arc<CachedKey>>,
        now: Timestamp,
    ) -> bool {
        let full = if key.is_some() {
            self.ttl_ms
        } else {
            self.negative_ttl_ms
        };
        let spread = u64::from_le_bytes(hash.0[8..16].try_into().unwrap_or([0; 8]));
        let quarter = (full / 4).max(1);
        let offset = i64::try_from(spread % quarter.unsigned_abs()).unwrap_or(0);
        let refresh_at = now.0.saturating_add(2 * quarter + offset);
        let expires = now.0.saturating_add(3 * quarter + offset).max(refresh_at);
        let mut shard = self.shard(&hash).write().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
        let Shard { known, unknown } = &mut *shard;
        // A hash is in one map at most: a key read as gone stops being
        // known, and one read as existing stops being unknown.
        let map = if key.is_some() {
            unknown.remove(&hash);
            make_room(known, self.known_per_shard, &hash, now, Overflow::DropHalf);
            known
        } else {
            known.remove(&hash);
            make_room(unknown, self.unknown_per_shard, &hash, now, Overflow::Clear);
            unknown
        };
        map.insert(
            hash,
            Entry {
                key,
                refresh_at,
                expires,
                refreshing: AtomicBool::new(false),
            },
        );
        true
    }

    pub fn invalidate(&self, hash: &KeyHash) {
        let mut shard = self.shard(hash).write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        shard.known.remove(hash);
        shard.unknown.remove(hash);
    }

    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
            shard.known.clear();
            shard.unknown.clear();
        }
    }

    /// Entries held, known and unknown (expired ones not yet dropped count).
    pub fn len(&self) -> usize {
        self.known_len() + self.unknown_len()
    }

    /// Known keys held.
    pub fn known_len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).known.len())
            .sum()
    }

    /// Unknown hashes held (the negative cache).
    pub fn unknown_len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).unknown.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a full map gives up when dropping expired entries was not enough.
#[derive(Clone, Copy)]
enum Overflow {
    /// Everything: unknown hashes are cheap to forget.
    Clear,
    /// About every other entry (in the map's own order, which follows the
    /// hash, so no key is favoured): known keys cost a store read each.
    DropHalf,
}

/// Makes room in `map` (bounded to `capacity`) for `hash`.
fn make_room(
    map: &mut KeyMap,
    capacity: usize,
    hash: &KeyHash,
    now: Timestamp,
    overflow: Overflow,
) {
    if map.len() < capacity || map.contains_key(hash) {
        return;
    }
    map.retain(|_, e| e.expires > now.0);
    // Leave a quarter free, so the next inserts do not scan the map again.
    if map.len() * 4 <= capacity * 3 {
        return;
    }
    match overflow {
        Overflow::Clear => map.clear(),
        Overflow::DropHalf => {
            // Starts by dropping, so even a map of one makes room.
            let mut keep = true;
            map.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
    }
}

type Loaded = Result<Option<Arc<CachedKey>>, ()>;

/// Why a key could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key is not one the cache knows, and the loader's bounded lane
    /// (`cache.max_pending_loads`) is full: answered at once (503
    /// `overloaded`, retry shortly), never queued without bound.
    #[error("too many unknown keys are waiting to be read")]
    Busy,
}

/// Which lane of the loader a read waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Keys the cache knows (refreshes, and reloads of expired entries):
    /// never refused, and bounded anyway by `cache.capacity`.
    Known,
    /// Hashes never seen, or only as unknown: at most
    /// `cache.max_pending_loads` distinct ones wait at a time.
    Bounded,
}

/// Reads keys into the cache in batches, off the request path. A request
/// that misses waits for its key; one due for a refresh does not wait at
/// all. Whatever is asked for while a batch is being read goes into the
/// next one, so a cold cache under load costs one store round trip per
/// batch, not one (or two) per key. The batches run on the runtime the
/// verifier was made on (the server's main one), not on the workers.
struct Loader {
    store: Arc<dyn Store>,
    cache: Arc<KeyCache>,
    clock: Arc<dyn Clock>,
    default_tier: Option<String>,
    queue: Mutex<Queue>,
    /// Told when a request starts waiting.
    wake: tokio::sync::Notify,
    runtime: Option<tokio::runtime::Handle>,
    /// Most distinct hashes waiting in the bounded lane.
    max_pending: usize,
    /// Where the store reads are timed.
    counters: Arc<VerifyCounters>,
}

type Waiters = HashMap<KeyHash, Vec<oneshot::Sender<Loaded>>, BuildHasherDefault<PrehashedHasher>>;

#[derive(Default)]
struct Queue {
    /// Hashes to read, with the requests waiting for each (none for a
    /// refresh).
    waiting: Waiters,
    /// How many of `waiting` came in through the bounded lane.
    bounded: usize,
    /// Some request is waiting (not only refreshes).
    urgent: bool,
    /// A batch task is running and will look at `waiting` again.
    running: bool,
}

impl Queue {
    /// Adds `hash` (and its waiter) to the next batch, unless it would be
    /// one more distinct hash than `max_pending` in the bounded lane; then
    /// gives the waiter back. A hash already waiting is always joined.
    fn admit(
        &mut self,
        hash: KeyHash,
        waiter: Option<oneshot::Sender<Loaded>>,
        lane: Lane,
        max_pending: usize,
    ) -> Result<(), Option<oneshot::Sender<Loaded>>> {
        if let Some(waiters) = self.waiting.get_mut(&hash) {
            waiters.extend(waiter);
        } else {
            if lane == Lane::Bounded {
                if self.bounded >= max_pending {
                    return Err(waiter);
                }
                self.bounded += 1;
            }
            self.waiting.insert(hash, waiter.into_iter().collect());
        }
        Ok(())
    }

    /// Everything waiting, for one round of reads.
    fn take(&mut self) -> Waiters {
        self.bounded = 0;
        std::mem::take(&mut self.waiting)
    }
}

/// How long refreshes (which nobody waits for) gather before they are read
/// together: keys in use come due one by one, and reading each on its own
/// costs a query and a few thread wake-ups apiece.
const REFRESH_GATHER: std::time::Duration = std::time::Duration::from_millis(50);

impl Loader {
    /// The key for `hash`, read from the store (and cached).
    async fn load(
        self: &Arc<Self>,
        hash: KeyHash,
        lane: Lane,
    ) -> Result<Option<Arc<CachedKey>>, VerifyError> {
        let Some(runtime) = &self.runtime else {
            // No runtime to run batches on: read it here.
            let epoch = self.cache.epoch();
            let now = self.clock.now();
            let key = self.read(&[hash]).await?.remove(&hash);
            self.cache.insert_at(epoch, hash, key.clone(), now);
            return Ok(key);
        };
        let (tx, rx) = oneshot::channel();
        if !self.enqueue(hash, Some(tx), lane, runtime) {
            return Err(VerifyError::Busy);
        }
        rx.await.ok().and_then(Result::ok).ok_or_else(|| {
            VerifyError::Store(StoreError::Unavailable("the key could not be read".into()))
        })
    }

    /// Re-reads `hash` in the background (unless its lane is full: then the
    /// entry expires and the next use reads it).
    fn refresh(self: &Arc<Self>, hash: KeyHash, lane: Lane) {
        if let Some(runtime) = &self.runtime {
            self.enqueue(hash, None, lane, runtime);
        }
    }

    /// Queues a read of `hash`; `false` if its lane is full.
    fn enqueue(
        self: &Arc<Self>,
        hash: KeyHash,
        waiter: Option<oneshot::Sender<Loaded>>,
        lane: Lane,
        runtime: &tokio::runtime::Handle,
    ) -> bool {
        let urgent = waiter.is_some();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.admit(hash, waiter, lane, self.max_pending).is_err() {
                return false;
            }
            q.urgent |= urgent;
            !std::mem::replace(&mut q.running, true)
        };
        if urgent {
            // Cuts a gathering pause short (or, if none is under way, lets
            // the next one end at once: harmless).
            self.wake.notify_one();
        }
        if start {
            let me = Arc::clone(self);
            drop(runtime.spawn(async move { me.drain().await }));
        }
        true
    }

    /// Reads batches until nothing is waiting.
    async fn drain(self: Arc<Self>) {
        // If this task ends early (a panic), the next request starts another.
        struct Reset<'a>(&'a Mutex<Queue>);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).running = false;
            }
        }
        let _reset = Reset(&self.queue);
        loop {
            let gather = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if q.waiting.is_empty() {
                    q.running = false;
                    return;
                }
                !q.urgent && q.waiting.len() < keyward_store::MAX_HASHES_PER_LOOKUP
            };
            if gather {
                tokio::select! {
                    _ = tokio::time::sleep(REFRESH_GATHER) => {}
                    _ = self.wake.notified() => {}
                }
            }
            let batch: Vec<(KeyHash, Vec<oneshot::Sender<Loaded>>)> = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                q.urgent = false;
                q.take().into_iter().collect()
            };
            let mut batch = batch;
            for chunk in batch.chunks_mut(keyward_store::MAX_HASHES_PER_LOOKUP) {
                let epoch = self.cache.epoch();
                let now = self.clock.now();
                let hashes: Vec<KeyHash> = chunk.iter().map(|(h, _)| *h).collect();
                match self.read(&hashes).await {
                    Ok(mut found) => {
                        for (hash, waiters) in chunk.iter_mut() {
                            let key = found.remove(hash);
                            self.cache.insert_at(epoch, *hash, key.clone(), now);
                            for w in waiters.drain(..) {
                                let _ = w.send(Ok(key.clone()));
                            }
                        }
                    }
                    Err(e) => {
                        // The waiting requests are told (their senders drop).
                        tracing::warn!(error = %e, keys = chunk.len(), "Could not read keys into the cache.");
                    }
                }
            }
        }
    }

    /// The keys for `hashes` that exist, by hash.
    async fn read(
        &self,
        hashes: &[KeyHash],
    ) -> Result<HashMap<KeyHash, Arc<CachedKey>>, StoreError> {
        let hex: Vec<String> = hashes.iter().map(KeyHash::to_hex).collect();
        let started = std::time::Instant::now();
        let rows = self.store.find_keys_with_tenants(&hex).await;
        self.counters.store_reads.observe(started.elapsed());
        let rows = rows?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let hash = KeyHash::from_hex(&r.key.hash)?;
                let tier = r.tenant_tier.or_else(|| self.default_tier.clone());
                Some((hash, Arc::new(CachedKey::new(r.key, r.tenant_name, tier))))
            })
            .collect())
    }
}

/// Verifies presented keys against the store, through the cache.
pub struct Verifier {
    format: KeyFormat,
    clock: Arc<dyn Clock>,
    cache: Arc<KeyCache>,
    loader: Arc<Loader>,
    usage: Arc<LastUseRecorder>,
    counters: Arc<VerifyCounters>,
}

/// What the verifier counts, for the metrics (read at scrape time). Each
/// counter is a cell per thread: counting costs an uncontended add.
#[derive(Debug, Default)]
pub struct VerifyCounters {
    /// Lookups of well-formed keys answered from the cache (fresh, or due
    /// for a refresh).
    pub hits: Counter,
    /// Lookups that waited for a store read (never seen, or expired).
    pub misses: Counter,
    /// Background refreshes asked for (a hit due for one).
    pub refreshes: Counter,
    /// Batched key reads (`find_keys_with_tenants`), each timed.
    pub store_reads: Histogram,
}

/// What a verification asks for besides the key.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub client_ip: Option<IpAddr>,
    pub required_scopes: &'a [String],
}

impl Verifier {
    /// `max_pending_loads`: most distinct hashes the cache does not know
    /// that may wait for a store read at once (`cache.max_pending_loads`).
    pub fn new(
        format: KeyFormat,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cache: KeyCache,
        usage: Arc<LastUseRecorder>,
        default_tier: Option<String>,
        max_pending_loads: usize,
    ) -> Verifier {
        let cache = Arc::new(cache);
        let counters = Arc::new(VerifyCounters::default());
        let loader = Arc::new(Loader {
            store,
            cache: Arc::clone(&cache),
            clock: Arc::clone(&clock),
            default_tier,
            queue: Mutex::new(Queue::default()),
            wake: tokio::sync::Notify::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            max_pending: max_pending_loads.max(1),
            counters: Arc::clone(&counters),
        });
        Verifier {
            format,
            clock,
            cache,
            loader,
            usage,
            counters,
        }
    }

    pub fn cache(&self) -> &KeyCache {
        &self.cache
    }

    /// Cache hits, misses, refreshes and store read times so far.
    pub fn counters(&self) -> &VerifyCounters {
        &self.counters
    }

    /// Verifies `presented`, reading the store only on a cache miss.
    pub async fn verify(
        &self,
        presented: &Presented,
        req: Request<'_>,
    ) -> Result<Outcome, VerifyError> {
        let hash = match self.well_formed(presented) {
            Ok(h) => h,
            Err(d) => return Ok(Outcome::Denied(d, None)),
        };
        let now = self.clock.now();
        let key = match self.cache.lookup(&hash, now) {
            Lookup::Fresh(k) => {
                self.counters.hits.inc();
                k
            }
            Lookup::Stale(k) => {
                self.counters.hits.inc();
                self.counters.refreshes.inc();
                let lane = if k.is_some() {
                    Lane::Known
                } else {
                    Lane::Bounded
                };
                self.loader.refresh(hash, lane);
                k
            }
            Lookup::Expired => {
                self.counters.misses.inc();
                self.loader.load(hash, Lane::Known).await?
            }
            Lookup::Missing => {
                self.counters.misses.inc();
                self.loader.load(hash, Lane::Bounded).await?
            }
        };
        Ok(self.decide(presented, key, req, now))
    }

    /// The cache-only path: `None` on a cache miss. What the benchmark measures.
    pub fn verify_cached(&self, presented: &Presented, req: Request<'_>) -> Option<Outcome> {
        let hash = match self.well_formed(presented) {
            Ok(h) => h,
            Err(d) => return Some(Outcome::Denied(d, None)),
        };
        let now = self.clock.now();
        let key = self.cache.get(&hash, now)?;
        Some(self.decide(presented, key, req, now))
    }

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

    fn decide(
        &self,
        presented: &Presented,
        key: Option<Arc<CachedKey>>,
        req: Request<'_>,
        now: Timestamp,
    ) -> Outcome {
        let Some(key) = key else {
            return Outcome::Denied(Denial::InvalidApiKey, None);
        };
        if let Presented::Basic { key_id, .. } = presented {
            if *key_id != key.record.id {
                return Outcome::Denied(Denial::InvalidApiKey, None);
            }
        }
        let demand = Demand {
            now,
            client_ip: req.client_ip,
            required_scopes: req.required_scopes,
        };
        match evaluate(&key.policy, demand) {
            Ok(()) => {
                // Rate limits and credits are spent here, after
                // every other check passed, by the limits layer.
                if key.note_use(now, req.client_ip) {
                    self.usage.record(&key.record.id, now, req.client_ip);
                }
                Outcome::Valid(key)
            }
            Err(d) => Outcome::Denied(d, Some(key)),
        }
    }

    /// Drops a key from this node's cache after a change to it.
    pub fn invalidate(&self, record: &KeyRecord) {
        if let Some(h) = KeyHash::from_hex(&record.hash) {
            self.cache.invalidate(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u32) -> KeyHash {
        KeyHash::of(&format!("kw_test_{i}"))
    }

    #[test]
    fn refreshes_and_expiries_are_spread_and_bounded_by_the_ttl() {
        // Negative entries use the same spreading; a 40 s negative TTL here.
        let cache = KeyCache::new(40, 40, 10_000, 10_000);
        let t0 = Timestamp(1_000_000);
        for i in 0..1_000 {
            cache.insert(hash(i), None, t0);
        }
        let at = |secs: i64| Timestamp(t0.0 + secs * 1000);
        let count = |secs: i64, f: &dyn Fn(&Lookup) -> bool| {
            (0..1_000)
                .filter(|i| f(&cache.lookup(&hash(*i), at(secs))))
                .count()
        };
        let fresh = |l: &Lookup| matches!(l, Lookup::Fresh(_));
        let missing = |l: &Lookup| matches!(l, Lookup::Missing);
        assert_eq!(count(19, &fresh), 1_000, "no refresh before half the TTL");
        // Between half and three quarters, a growing share is due; each is
        // reported as stale once, then fresh to everyone else.
        let stale = count(25, &|l| matches!(l, Lookup::Stale(_)));
        assert!(
            stale > 100 && stale < 900,
            "refreshes are spread, {stale} of 1000 due at 25 s"
        );
        assert_eq!(count(25, &|l| matches!(l, Lookup::Stale(_))), 0);
        assert_eq!(
            count(29, &missing),
            0,
            "nothing expires before 3/4 of the TTL"
        );
        let gone = count(35, &missing);
        assert!(
            gone > 100 && gone < 900,
            "expiries are spread, {gone} gone at 35 s"
        );
        assert_eq!(count(40, &missing), 1_000, "everything expires by the TTL");
    }

    #[test]
    fn a_read_that_began_before_an_invalidation_is_not_cached() {
        let cache = KeyCache::new(30, 30, 100, 100);
        let before = cache.epoch();
        cache.invalidate(&hash(1));
        assert!(!cache.insert_at(before, hash(2), None, Timestamp(0)));
        assert!(cache.get(&hash(2), Timestamp(0)).is_none());
        assert!(cache.insert_at(cache.epoch(), hash(2), None, Timestamp(0)));
        assert!(cache.get(&hash(2), Timestamp(0)).is_some());
    }

    #[test]
    fn capacities_are_bounds() {
        let cache = KeyCache::new(30, 30, 10, 20);
        for i in 0..100 {
            cache.insert(hash(i), None, Timestamp(0));
            assert!(cache.unknown_len() <= 20);
            cache.insert(hash(1000 + i), Some(key(i)), Timestamp(0));
            assert!(cache.known_len() <= 10);
        }
    }

    fn key(i: u32) -> Arc<CachedKey> {
        let record = KeyRecord {
            id: format!("key_{i}"),
            class: keyward_store::KeyClass::Tenant,
            tenant_id: Some("ten_1".into()),
            name: format!("k{i}"),
            environment: "test".into(),
            hash: hash(i).to_hex(),
            start: "kw_test_abcd".into(),
            owner: None,
            scopes: Vec::new(),
            tier: None,
            credit_cap: None,
            ip_allowlist: Vec::new(),
            sub_tenants: Vec::new(),
            expires_at: None,
            metadata: serde_json::json!({}),
            enabled: true,
            created_by: "key_root".into(),
            created_at: 0,
            updated_at: 0,
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
            revoked_reason: None,
            rotated_from: None,
            replaced_by: None,
            grace_until: None,
            deleted_at: None,
            rate_limit: None,
        };
        Arc::new(CachedKey::new(record, None, None))
    }

    #[test]
    fn a_flood_of_unknown_hashes_never_evicts_a_known_key() {
        // Room for 1,600 known keys (100 a shard) and 160 unknown hashes.
        let cache = KeyCache::new(30, 30, 1_600, 160);
        let now = Timestamp(0);
        for i in 0..50 {
            cache.insert(hash(i), Some(key(i)), now);
        }
        for i in 0..100_000 {
            cache.insert(hash(1_000_000 + i), None, now);
            assert!(cache.unknown_len() <= 160);
        }
        for i in 0..50 {
            assert!(
                matches!(cache.lookup(&hash(i), now), Lookup::Fresh(Some(_))),
                "known key {i} survived the flood"
            );
        }
        assert_eq!(cache.known_len(), 50);
        // The negative cache still works for what it holds.
        assert!(matches!(
            cache.lookup(&hash(1_000_000 + 99_999), now),
            Lookup::Fresh(None)
        ));
    }

    #[test]
    fn a_hash_is_known_or_unknown_never_both() {
        let cache = KeyCache::new(30, 5, 100, 100);
        let now = Timestamp(0);
        cache.insert(hash(1), None, now);
        cache.insert(hash(1), Some(key(1)), now);
        assert!(matches!(cache.get(&hash(1), now), Some(Some(_))));
        assert_eq!((cache.known_len(), cache.unknown_len()), (1, 0));
        // A refresh that finds the key gone makes it unknown at once.
        cache.insert(hash(1), None, now);
        assert!(matches!(cache.get(&hash(1), now), Some(None)));
        assert_eq!((cache.known_len(), cache.unknown_len()), (0, 1));
        cache.invalidate(&hash(1));
        assert!(cache.is_empty());
    }

    #[test]
    fn an_expired_known_key_is_told_apart_from_a_stranger() {
        let cache = KeyCache::new(30, 5, 100, 100);
        cache.insert(hash(1), Some(key(1)), Timestamp(0));
        cache.insert(hash(2), None, Timestamp(0));
        let later = Timestamp(31_000);
        assert!(matches!(cache.lookup(&hash(1), later), Lookup::Expired));
        assert!(matches!(cache.lookup(&hash(2), later), Lookup::Missing));
        assert!(matches!(cache.lookup(&hash(3), later), Lookup::Missing));
    }

    #[test]
    fn the_bounded_lane_refuses_new_hashes_when_full_and_known_keys_always_get_in() {
        let mut q = Queue::default();
        let waiter = || Some(oneshot::channel::<Loaded>().0);
        for i in 0..3 {
            assert!(q.admit(hash(i), waiter(), Lane::Bounded, 3).is_ok());
        }
        // Full: a new unknown hash is refused, with its waiter handed back.
        assert!(matches!(
            q.admit(hash(3), waiter(), Lane::Bounded, 3),
            Err(Some(_))
        ));
        // A hash already waiting is joined, whatever the lane.
        assert!(q.admit(hash(0), waiter(), Lane::Bounded, 3).is_ok());
        assert_eq!(q.waiting[&hash(0)].len(), 2);
        // Known keys are never refused.
        for i in 10..20 {
            assert!(q.admit(hash(i), waiter(), Lane::Known, 3).is_ok());
        }
        assert!(q.admit(hash(20), None, Lane::Known, 3).is_ok());
        assert_eq!(q.waiting.len(), 14);
        // A round takes everything and frees the lane.
        assert_eq!(q.take().len(), 14);
        assert!(q.admit(hash(3), waiter(), Lane::Bounded, 3).is_ok());
    }
}
