//! The verification hot path: parse → hash → cache → policy.
//!
//! A well-formed secret is hashed and looked up in [`KeyCache`]; only a miss
//! reads the store, and unknown hashes are remembered briefly (negative
//! cache) so garbage that passes the checksum cannot hammer storage.
//! Management changes on this node invalidate entries synchronously; entries
//! also expire after `cache.ttl_seconds`, which bounds staleness for changes
//! made on other nodes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use keyward_core::allowlist::IpAllowlist;
use keyward_core::clock::{Clock, Timestamp};
use keyward_core::scope::ScopeSet;
use keyward_core::secret::{KeyFormat, KeyHash};
use keyward_core::verdict::{evaluate, Demand, Denial, KeyPolicy};
use keyward_store::{KeyRecord, Store, StoreError};

use crate::credential::Presented;
use crate::usage::UsageRecorder;

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
}

/// Identity header values for the upstream (cheap to clone).
#[derive(Debug)]
pub struct Identity {
    pub key_id: axum::http::HeaderValue,
    pub tenant_id: Option<axum::http::HeaderValue>,
    pub environment: axum::http::HeaderValue,
    /// Space-separated.
    pub scopes: axum::http::HeaderValue,
    pub owner: Option<axum::http::HeaderValue>,
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
        }
    }

    /// The identity header values of this key. Values that cannot be header
    /// values (control characters in an owner, say) are left out.
    pub fn identity(&self) -> &Identity {
        self.identity.get_or_init(|| {
            use axum::http::HeaderValue;
            let v = |s: &str| HeaderValue::from_str(s).ok();
            let r = &self.record;
            Identity {
                key_id: v(&r.id).unwrap_or_else(|| HeaderValue::from_static("")),
                tenant_id: r.tenant_id.as_deref().and_then(v),
                environment: v(&r.environment).unwrap_or_else(|| HeaderValue::from_static("")),
                scopes: v(&r.scopes.join(" ")).unwrap_or_else(|| HeaderValue::from_static("")),
                owner: r.owner.as_deref().and_then(v),
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
    expires: i64,
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

/// Hash → key, with expiry; `None` values are the negative cache.
pub struct KeyCache {
    map: RwLock<KeyMap>,
    ttl_ms: i64,
    negative_ttl_ms: i64,
    capacity: usize,
}

impl KeyCache {
    pub fn new(ttl_seconds: u64, negative_ttl_seconds: u64, capacity: usize) -> KeyCache {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        KeyCache {
            map: RwLock::new(KeyMap::default()),
            ttl_ms: ms(ttl_seconds),
            negative_ttl_ms: ms(negative_ttl_seconds),
            capacity,
        }
    }

    /// `Some(Some(key))` known, `Some(None)` known to be unknown, `None` miss.
    pub fn get(&self, hash: &KeyHash, now: Timestamp) -> Option<Option<Arc<CachedKey>>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(hash)
            .filter(|e| e.expires > now.0)
            .map(|e| e.key.clone())
    }

    pub fn insert(&self, hash: KeyHash, key: Option<Arc<CachedKey>>, now: Timestamp) {
        let full = if key.is_some() {
            self.ttl_ms
        } else {
            self.negative_ttl_ms
        };
        // Spread expiries over (ttl/2, ttl] by the key's own hash bytes, so
        // keys cached together (a warm-up, a restart) do not all expire in
        // the same instant and stampede the store.
        let spread = u64::from_le_bytes(hash.0[8..16].try_into().unwrap_or([0; 8]));
        let half = (full / 2).max(1).unsigned_abs();
        let ttl = full - i64::try_from(spread % half).unwrap_or(0);
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.capacity {
            map.retain(|_, e| e.expires > now.0);
            if map.len() >= self.capacity {
                // Still full of live entries: start over rather than track
                // recency on the hot path. Misses refill it from the store.
                map.clear();
            }
        }
        map.insert(
            hash,
            Entry {
                key,
                expires: now.0.saturating_add(ttl),
            },
        );
    }

    pub fn invalidate(&self, hash: &KeyHash) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
    }

    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Verifies presented keys against the store, through the cache.
pub struct Verifier {
    format: KeyFormat,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cache: KeyCache,
    usage: Arc<UsageRecorder>,
    /// `limits.default_tier`, the tier of keys whose tenant names none.
    default_tier: Option<String>,
}

/// What a verification asks for besides the key.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub client_ip: Option<IpAddr>,
    pub required_scopes: &'a [String],
}

impl Verifier {
    pub fn new(
        format: KeyFormat,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cache: KeyCache,
        usage: Arc<UsageRecorder>,
        default_tier: Option<String>,
    ) -> Verifier {
        Verifier {
            format,
            store,
            clock,
            cache,
            usage,
            default_tier,
        }
    }

    pub fn cache(&self) -> &KeyCache {
        &self.cache
    }

    /// Verifies `presented`, reading the store only on a cache miss.
    pub async fn verify(
        &self,
        presented: &Presented,
        req: Request<'_>,
    ) -> Result<Outcome, StoreError> {
        let hash = match self.well_formed(presented) {
            Ok(h) => h,
            Err(d) => return Ok(Outcome::Denied(d, None)),
        };
        let now = self.clock.now();
        let key = match self.cache.get(&hash, now) {
            Some(k) => k,
            None => {
                let k = self.load(&hash).await?;
                self.cache.insert(hash, k.clone(), now);
                k
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
                // Rate limits and credits (SPEC §6) are spent here, after
                // every other check passed, by the limits layer.
                self.usage.record(&key.record.id, now, req.client_ip);
                Outcome::Valid(key)
            }
            Err(d) => Outcome::Denied(d, Some(key)),
        }
    }

    async fn load(&self, hash: &KeyHash) -> Result<Option<Arc<CachedKey>>, StoreError> {
        let Some(record) = self.store.find_key_by_hash(&hash.to_hex()).await? else {
            return Ok(None);
        };
        let (tenant_name, tenant_tier) = match &record.tenant_id {
            Some(t) => match self.store.get_tenant(t).await {
                Ok(t) => (Some(t.name), t.tier),
                Err(StoreError::NotFound) => (None, None),
                Err(e) => return Err(e),
            },
            None => (None, None),
        };
        let tenant_tier = tenant_tier.or_else(|| self.default_tier.clone());
        Ok(Some(Arc::new(CachedKey::new(
            record,
            tenant_name,
            tenant_tier,
        ))))
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
    fn expiries_are_spread_over_the_second_half_of_the_ttl() {
        // Negative entries use the same spreading; a 30 s negative TTL here.
        let cache = KeyCache::new(30, 30, 10_000);
        let t0 = Timestamp(1_000_000);
        for i in 0..1_000 {
            cache.insert(hash(i), None, t0);
        }
        let alive = |secs: i64| {
            (0..1_000)
                .filter(|i| {
                    cache
                        .get(&hash(*i), Timestamp(t0.0 + secs * 1000))
                        .is_some()
                })
                .count()
        };
        assert_eq!(alive(14), 1_000, "nothing expires before half the TTL");
        let mid = alive(22);
        assert!(
            mid > 100 && mid < 900,
            "expiries are spread, {mid} of 1000 alive at 22 s"
        );
        assert_eq!(alive(30), 0, "everything expires by the TTL");
    }

    #[test]
    fn capacity_is_a_bound() {
        let cache = KeyCache::new(30, 30, 10);
        for i in 0..100 {
            cache.insert(hash(i), None, Timestamp(0));
            assert!(cache.len() <= 10);
        }
    }
}
