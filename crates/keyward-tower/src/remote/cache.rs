//! The remote backend's key cache: key hash → the key's policy and
//! principal (or "unknown"), in shards behind read-write locks, each entry
//! served until its TTL, the whole cache only while the change feed was
//! heard recently (`trust_until`), and a read that began before an
//! invalidation never cached (`epoch`).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use keyward_core::clock::Timestamp;
use keyward_core::ratelimit::RatePolicy;
use keyward_core::secret::KeyHash;
use keyward_core::verdict::KeyPolicy;
use keyward_verify::verifier::PrehashedHasher;

use crate::Principal;

/// A key as the verify API reported it, ready for local decisions.
#[derive(Debug)]
pub(crate) struct Known {
    pub(crate) principal: Principal,
    pub(crate) policy: KeyPolicy,
    /// The rate limit in force for it (resolved by keyward from its tiers).
    pub(crate) rate: Option<RatePolicy>,
    pub(crate) key_id: String,
    pub(crate) tenant_id: Option<String>,
}

struct Slot {
    key: Option<Arc<Known>>,
    expires: i64,
}

type Map = HashMap<KeyHash, Slot, BuildHasherDefault<PrehashedHasher>>;

const SHARDS: usize = 16;

pub(crate) struct Cache {
    shards: Vec<RwLock<Map>>,
    ttl_ms: i64,
    negative_ttl_ms: i64,
    per_shard: usize,
    epoch: AtomicU64,
    trusted_until: AtomicI64,
}

impl Cache {
    pub(crate) fn new(ttl_ms: i64, negative_ttl_ms: i64, capacity: usize) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| RwLock::new(Map::default())).collect(),
            ttl_ms,
            negative_ttl_ms,
            per_shard: (capacity / SHARDS).max(1),
            epoch: AtomicU64::new(0),
            trusted_until: AtomicI64::new(0),
        }
    }

    fn shard(&self, hash: &KeyHash) -> &RwLock<Map> {
        // Other bytes than the map's hasher reads.
        &self.shards[usize::from(hash.0[16]) % SHARDS]
    }

    /// Entries are served until `ms` (clock time) and not after, unless
    /// this is called again (each time the change feed answered).
    pub(crate) fn trust_until(&self, ms: i64) {
        self.trusted_until.store(ms, Ordering::Release);
    }

    /// `Some(Some(key))` known, `Some(None)` known to be unknown, `None`
    /// not cached (or not trusted now).
    pub(crate) fn get(&self, hash: &KeyHash, now: Timestamp) -> Option<Option<Arc<Known>>> {
        if now.0 >= self.trusted_until.load(Ordering::Acquire) {
            return None;
        }
        let shard = self.shard(hash).read().unwrap_or_else(|p| p.into_inner());
        shard
            .get(hash)
            .filter(|s| s.expires > now.0)
            .map(|s| s.key.clone())
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches what a read found, unless an invalidation happened since
    /// `epoch` was taken (before the read): it may predate the change.
    pub(crate) fn insert_at(
        &self,
        epoch: u64,
        hash: KeyHash,
        key: Option<Arc<Known>>,
        now: Timestamp,
    ) -> bool {
        let ttl = if key.is_some() {
            self.ttl_ms
        } else {
            self.negative_ttl_ms
        };
        let mut shard = self.shard(&hash).write().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) != epoch {
            return false;
        }
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            shard.retain(|_, s| s.expires > now.0);
            if shard.len() * 4 > self.per_shard * 3 {
                // Unknown hashes go first (anyone can mint them), then
                // about half of the rest.
                shard.retain(|_, s| s.key.is_some());
                let mut keep = true;
                if shard.len() * 4 > self.per_shard * 3 {
                    shard.retain(|_, _| {
                        keep = !keep;
                        keep
                    });
                }
            }
        }
        shard.insert(
            hash,
            Slot {
                key,
                expires: now.0.saturating_add(ttl),
            },
        );
        true
    }

    pub(crate) fn invalidate(&self, hash: &KeyHash) {
        let mut shard = self.shard(hash).write().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        shard.remove(hash);
    }

    /// Drops the tenant's keys (their principals carry the tenant's facts).
    pub(crate) fn clear_tenant(&self, tenant_id: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            shard
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, s| {
                    s.key
                        .as_ref()
                        .is_some_and(|k| k.tenant_id.as_deref() != Some(tenant_id))
                });
        }
    }

    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for shard in &self.shards {
            shard.write().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}
