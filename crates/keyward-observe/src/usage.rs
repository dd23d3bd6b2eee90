//! Usage counted in memory and added to the store in batches.
//!
//! Each worker thread records into a shard of its own (a thread picks its
//! shard once; the lock is met only by the flush), keyed by key id, then a
//! short list of series per key (minute, tenant header, route, outcome) and
//! of client addresses. [`UsageRecorder::flush`] drains every shard, merges
//! what it took into one batch and adds it to the store. A batch the store
//! refuses is kept for the next flush (merged with what came since), so a
//! store that is briefly away loses nothing; kept batches are bounded like
//! the shards, and what does not fit is counted as overflow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyward_core::clock::Clock;
use keyward_core::hashing::IdHash;
use keyward_store::{
    Granularity, IpSighting, OutcomeClass, Store, UsageDelta, UsageRetention, UsageStore,
};

use crate::{slot, Observation, SLOTS};

/// Series per store transaction in a flush.
pub const FLUSH_CHUNK: usize = 1_000;

/// The recorder's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageLimits {
    /// Distinct series held between two flushes (all shards together).
    pub max_series: usize,
    /// Distinct (key, address) pairs held between two flushes.
    pub max_ips: usize,
    /// Addresses kept per key in the store.
    pub max_ips_per_key: u32,
}

impl Default for UsageLimits {
    fn default() -> UsageLimits {
        UsageLimits {
            max_series: 50_000,
            max_ips: 50_000,
            max_ips_per_key: 100,
        }
    }
}

#[derive(Debug)]
struct Series {
    minute: i64,
    tenant_header: Box<str>,
    route: Box<str>,
    outcome: &'static str,
    class: OutcomeClass,
    requests: i64,
    credits: i64,
    latency_us: i64,
}

#[derive(Debug, Clone, Copy)]
struct Sighting {
    ip: IpAddr,
    first: i64,
    last: i64,
    requests: i64,
}

#[derive(Debug, Default)]
struct KeyCounts {
    tenant_id: Option<Box<str>>,
    series: Vec<Series>,
    ips: Vec<Sighting>,
}

type Shard = HashMap<Box<str>, KeyCounts, IdHash>;

/// Counts of what the recorder could not hold (since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overflow {
    /// Requests not counted in usage because `max_series` was reached.
    pub requests: u64,
    /// Client-address sightings dropped because `max_ips` was reached.
    pub ips: u64,
}

pub struct UsageRecorder {
    shards: Box<[Mutex<Shard>]>,
    limits: UsageLimits,
    /// Series and (key, address) pairs held now, in shards and `kept`.
    series: AtomicUsize,
    ips: AtomicUsize,
    overflow_requests: AtomicU64,
    overflow_ips: AtomicU64,
    /// A batch the store refused, for the next flush.
    kept: Mutex<Batch>,
    /// Deltas and sightings written (since start), for the metrics.
    written: AtomicU64,
    failures: AtomicU64,
    /// How long flushes that wrote something took.
    flush_times: crate::metrics::Histogram,
}

/// A drained batch.
#[derive(Debug, Default)]
struct Batch {
    deltas: Vec<UsageDelta>,
    ips: Vec<IpSighting>,
}

impl std::fmt::Debug for UsageRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageRecorder")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl UsageRecorder {
    pub fn new(limits: UsageLimits) -> UsageRecorder {
        UsageRecorder {
            shards: (0..SLOTS).map(|_| Mutex::new(Shard::default())).collect(),
            limits,
            series: AtomicUsize::new(0),
            ips: AtomicUsize::new(0),
            overflow_requests: AtomicU64::new(0),
            overflow_ips: AtomicU64::new(0),
            kept: Mutex::new(Batch::default()),
            written: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            flush_times: crate::metrics::Histogram::default(),
        }
    }

    pub fn limits(&self) -> UsageLimits {
        self.limits
    }

    /// What did not fit so far.
    pub fn overflow(&self) -> Overflow {
        Overflow {
            requests: self.overflow_requests.load(Ordering::Relaxed),
            ips: self.overflow_ips.load(Ordering::Relaxed),
        }
    }

    /// Series held now (waiting for a flush).
    pub fn held_series(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    /// How long the flushes that wrote something took (the metrics'
    /// `keyward_store_duration_seconds{op="usage_flush"}`).
    pub fn flush_times(&self) -> &crate::metrics::Histogram {
        &self.flush_times
    }

    /// Series rows written, and flushes that failed, since start.
    pub fn flush_counts(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Reserves room for one more series (or address): false when the
    /// bound is reached.
    fn take_room(counter: &AtomicUsize, max: usize) -> bool {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts `o` for its key (requests without a known key are not usage).
    pub fn record(&self, o: &Observation<'_>) {
        let Some(key) = o.key else { return };
        let minute = Granularity::Minute.floor(o.at.0);
        let header = o.tenant_header.unwrap_or("");
        let latency_us = i64::try_from(o.latency.as_micros()).unwrap_or(i64::MAX);
        let mut shard = self.shards[slot()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let counts = match shard.get_mut(key.key_id) {
            Some(c) => c,
            None => shard.entry(key.key_id.into()).or_insert_with(|| KeyCounts {
                tenant_id: key.tenant_id.map(Into::into),
                ..KeyCounts::default()
            }),
        };
        let found = counts.series.iter_mut().find(|s| {
            s.minute == minute
                && s.outcome == o.outcome
                && &*s.route == o.route
                && &*s.tenant_header == header
        });
        match found {
            Some(s) => {
                s.requests += 1;
                s.credits += o.credits;
                s.latency_us = s.latency_us.saturating_add(latency_us);
            }
            None if Self::take_room(&self.series, self.limits.max_series) => {
                counts.series.push(Series {
                    minute,
                    tenant_header: header.into(),
                    route: o.route.into(),
                    outcome: o.outcome,
                    class: o.class,
                    requests: 1,
                    credits: o.credits,
                    latency_us,
                });
            }
            None => {
                self.overflow_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(ip) = o.client_ip {
            let held = counts.ips.len();
            match counts.ips.iter_mut().find(|s| s.ip == ip) {
                Some(s) => {
                    s.last = s.last.max(o.at.0);
                    s.first = s.first.min(o.at.0);
                    s.requests += 1;
                }
                None if held < self.limits.max_ips_per_key as usize
                    && Self::take_room(&self.ips, self.limits.max_ips) =>
                {
                    counts.ips.push(Sighting {
                        ip,
                        first: o.at.0,
                        last: o.at.0,
                        requests: 1,
                    });
                }
                None => {
                    self.overflow_ips.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Empties the shards into a batch (with any kept batch before it).
    fn drain(&self) -> Batch {
        let mut batch = std::mem::take(&mut *self.kept.lock().unwrap_or_else(|e| e.into_inner()));
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            for (key_id, counts) in taken {
                let tenant_id = counts.tenant_id.as_deref().map(str::to_owned);
                for s in counts.series {
                    batch.deltas.push(UsageDelta {
                        minute: s.minute,
                        key_id: key_id.to_string(),
                        tenant_id: tenant_id.clone(),
                        tenant_header: s.tenant_header.into(),
                        route: s.route.into(),
                        outcome: s.outcome.to_owned(),
                        class: s.class,
                        requests: s.requests,
                        credits: s.credits,
                        latency_us: s.latency_us,
                    });
                }
                for s in counts.ips {
                    batch.ips.push(IpSighting {
                        key_id: key_id.to_string(),
                        ip: s.ip.to_string(),
                        first_seen: s.first,
                        last_seen: s.last,
                        requests: s.requests,
                    });
                }
            }
        }
        batch
    }

    /// Adds everything counted so far to the store, [`FLUSH_CHUNK`] series
    /// per transaction (so other store work gets the connection between
    /// them). What the store refuses is kept (still counted against the
    /// bounds) for the next flush; what it took is not written twice.
    pub async fn flush(&self, store: &dyn UsageStore) {
        let mut batch = self.drain();
        if batch.deltas.is_empty() && batch.ips.is_empty() {
            return;
        }
        let overflow = self.overflow();
        let started = std::time::Instant::now();
        // Addresses ride with the first chunk.
        let mut ips = std::mem::take(&mut batch.ips);
        let mut deltas = batch.deltas;
        while !deltas.is_empty() || !ips.is_empty() {
            let n = deltas.len().min(FLUSH_CHUNK);
            let added = store
                .add_usage(&deltas[..n], &ips, self.limits.max_ips_per_key)
                .await;
            match added {
                Ok(()) => {
                    self.series.fetch_sub(n, Ordering::Relaxed);
                    self.ips.fetch_sub(ips.len(), Ordering::Relaxed);
                    self.written.fetch_add(n as u64, Ordering::Relaxed);
                    deltas.drain(..n);
                    ips.clear();
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, series = deltas.len(), "Could not write usage; keeping it for the next flush.");
                    // Still counted in `series` / `ips`: new series are
                    // refused while the store is away and the kept batch
                    // is full.
                    *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Batch { deltas, ips };
                    break;
                }
            }
        }
        self.flush_times.observe(started.elapsed());
        if overflow.requests > 0 || overflow.ips > 0 {
            tracing::debug!(
                requests = overflow.requests,
                ips = overflow.ips,
                "Usage overflow so far (requests and addresses not counted)."
            );
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
            let mut reported = Overflow::default();
            loop {
                tick.tick().await;
                me.flush(store.as_ref()).await;
                let now = me.overflow();
                if now != reported {
                    tracing::warn!(
                        requests = now.requests - reported.requests,
                        ips = now.ips - reported.ips,
                        max_series = me.limits.max_series,
                        max_ips = me.limits.max_ips,
                        "Usage recording was full: some requests or client addresses were not counted (see keyward_usage_overflow_total)."
                    );
                    reported = now;
                }
            }
        })
    }
}

/// Deletes usage past its retention every `interval` (the first pass at
/// once), by `clock`.
pub fn spawn_pruner(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retention: UsageRetention,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.prune_usage(clock.now().0, retention).await {
                Ok(p) if p != keyward_store::Pruned::default() => {
                    tracing::debug!(
                        minutes = p.minutes,
                        hours = p.hours,
                        days = p.days,
                        ips = p.ips,
                        "Deleted usage past its retention."
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Could not delete old usage; will retry."),
            }
        }
    })
}
