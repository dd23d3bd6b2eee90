//! Last-use tracking off the request path. Verifications record into memory;
//! a background task writes batches every `usage.flush_interval_ms`, and
//! shutdown flushes what is left. A key's row is rewritten at most every
//! `usage.last_used_resolution_seconds` unless its client address changed,
//! so a busy key costs one write a minute, not one per flush. A failed write keeps the batch for the next
//! attempt, so nothing is lost while the store is briefly unavailable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::hash::BuildHasher;

use keyward_core::clock::Timestamp;
use keyward_store::{KeyUse, Store};

use keyward_core::hashing::IdHash;

/// The latest use of one key: time and address, kept unformatted until flush.
#[derive(Debug, Clone, Copy)]
struct LastUse {
    at: i64,
    ip: Option<IpAddr>,
}

/// Shards of the pending map, each behind its own lock, so the worker
/// threads recording uses of different keys rarely meet on one lock.
const SHARDS: usize = 16;

type ById = HashMap<String, LastUse, IdHash>;

pub struct LastUseRecorder {
    pending: [Mutex<ById>; SHARDS],
    /// What was last written per key, to skip rewrites within `resolution_ms`.
    written: Mutex<HashMap<String, LastUse>>,
    resolution_ms: i64,
}

impl LastUseRecorder {
    /// Records uses; a key's row is rewritten at most every `resolution_seconds`
    /// unless its client address changed.
    pub fn new(resolution_seconds: u64) -> LastUseRecorder {
        LastUseRecorder {
            pending: std::array::from_fn(|_| Mutex::new(ById::default())),
            written: Mutex::new(HashMap::new()),
            resolution_ms: i64::try_from(resolution_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        }
    }

    fn shard(&self, key_id: &str) -> &Mutex<ById> {
        let h = IdHash::default().hash_one(key_id);
        &self.pending[(h % SHARDS as u64) as usize]
    }

    pub fn record(&self, key_id: &str, at: Timestamp, ip: Option<IpAddr>) {
        let mut p = self.shard(key_id).lock().unwrap_or_else(|e| e.into_inner());
        let new = LastUse { at: at.0, ip };
        match p.get_mut(key_id) {
            Some(u) if u.at >= at.0 => {}
            Some(u) => *u = new,
            None => {
                p.insert(key_id.to_owned(), new);
            }
        }
    }

    /// Writes everything pending that is newer than the resolution (or from
    /// a new address). On failure the batch is put back.
    pub async fn flush(&self, store: &dyn Store) {
        self.flush_with(store, false).await;
    }

    /// Writes everything pending, resolution or not: for shutdown.
    pub async fn flush_all(&self, store: &dyn Store) {
        self.flush_with(store, true).await;
    }

    async fn flush_with(&self, store: &dyn Store, everything: bool) {
        let batch: Vec<KeyUse> = {
            // Each shard's lock is held only while it is emptied.
            let drained: Vec<(String, LastUse)> = self
                .pending
                .iter()
                .flat_map(|shard| {
                    let mut p = shard.lock().unwrap_or_else(|e| e.into_inner());
                    std::mem::take(&mut *p)
                })
                .collect();
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            let mut batch = Vec::new();
            for (key_id, u) in drained {
                let due = match written.get(&key_id) {
                    None => true,
                    Some(w) => everything || u.ip != w.ip || u.at - w.at >= self.resolution_ms,
                };
                if due {
                    batch.push(KeyUse {
                        key_id: key_id.clone(),
                        at: u.at,
                        ip: u.ip.map(|i| i.to_string()),
                    });
                    written.insert(key_id, u);
                }
            }
            batch
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.touch_keys(&batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "Could not write last-use batch; will retry.");
            for u in batch {
                let mut p = self
                    .shard(&u.key_id)
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let newer = p.get(&u.key_id).is_some_and(|cur| cur.at >= u.at);
                if !newer {
                    let ip = u.ip.as_deref().and_then(|s| s.parse().ok());
                    self.written
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&u.key_id);
                    p.insert(u.key_id, LastUse { at: u.at, ip });
                }
            }
        }
    }

    /// Flushes every `interval` until the returned task is aborted.
    pub fn spawn_flusher(
        self: &Arc<Self>,
        store: Arc<dyn Store>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.flush(store.as_ref()).await;
            }
        })
    }
}
