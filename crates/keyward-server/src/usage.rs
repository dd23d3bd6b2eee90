//! Last-use tracking off the request path. Verifications record into memory;
//! a background task writes batches every `usage.flush_interval_ms`, and
//! shutdown flushes what is left. A failed write keeps the batch for the next
//! attempt, so nothing is lost while the store is briefly unavailable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_core::clock::Timestamp;
use keyward_store::{KeyUse, Store};

/// The latest use of one key: time and address, kept unformatted until flush.
#[derive(Debug, Clone, Copy)]
struct LastUse {
    at: i64,
    ip: Option<IpAddr>,
}

pub struct UsageRecorder {
    pending: Mutex<HashMap<String, LastUse>>,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageRecorder {
    pub fn new() -> UsageRecorder {
        UsageRecorder {
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub fn record(&self, key_id: &str, at: Timestamp, ip: Option<IpAddr>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let new = LastUse { at: at.0, ip };
        match p.get_mut(key_id) {
            Some(u) if u.at >= at.0 => {}
            Some(u) => *u = new,
            None => {
                p.insert(key_id.to_owned(), new);
            }
        }
    }

    /// Writes everything pending. On failure the batch is put back.
    pub async fn flush(&self, store: &dyn Store) {
        let batch: Vec<KeyUse> = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.drain()
                .map(|(key_id, u)| KeyUse {
                    key_id,
                    at: u.at,
                    ip: u.ip.map(|i| i.to_string()),
                })
                .collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.touch_keys(&batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "Could not write last-use batch; will retry.");
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for u in batch {
                let newer = p.get(&u.key_id).is_some_and(|cur| cur.at >= u.at);
                if !newer {
                    let ip = u.ip.as_deref().and_then(|s| s.parse().ok());
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
