//! What keyward sees of each request it decides, and where that goes.
//!
//! Each front end (the gateway's two paths, the verify API) hands one
//! [`Observation`] per request to the [`Observer`] once the request has
//! ended. The observer counts it twice, in memory and without waiting on
//! anything but a short, per-worker lock:
//!
//! - **usage** ([`usage::UsageRecorder`]): per key, tenant header, route
//!   template, outcome and minute, plus the key's client addresses; a
//!   background task drains the counts every `usage.counts_interval_ms` and
//!   adds them to the store ([`keyward_store::UsageStore`]). Bounded: at
//!   most `usage.max_series` series and `usage.max_ips` addresses are held
//!   between two flushes; what does not fit is counted as overflow, which
//!   is logged and exported as a metric.
//! - **metrics** ([`metrics::Metrics`]): Prometheus counters and
//!   histograms whose labels are bounded (route templates, outcome codes,
//!   status classes — never a key, tenant or address).
//!
//! # Invariants
//! - Recording never blocks a request on I/O and never grows without
//!   bound.
//! - Routes are templates (`GET /v1/calls/{id}`), never raw paths.
//! - A request made with a key that is not known (malformed, unknown hash)
//!   has no key to count usage for: it reaches the metrics only.
#![forbid(unsafe_code)]

pub mod metrics;
pub mod usage;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use keyward_core::clock::Timestamp;
use keyward_store::OutcomeClass;

pub use metrics::Metrics;
pub use usage::{UsageLimits, UsageRecorder};

/// Per-thread shards of the recorder and the metrics: more than worker
/// threads on any machine this runs on, so threads rarely share one.
pub(crate) const SLOTS: usize = 16;

thread_local! {
    static SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// This thread's shard (threads take turns, so each worker thread of a
/// server gets one of its own).
pub(crate) fn slot() -> usize {
    SLOT.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        }
        s.get() % SLOTS
    })
}

/// Which front end decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Surface {
    /// The gateway (both paths): the request was for the upstream API.
    Gateway,
    /// The verify API (`POST /v1/keys/verify`).
    Verify,
}

/// The key a request was decided for, when it was known.
#[derive(Debug, Clone, Copy)]
pub struct KeyFacts<'a> {
    pub key_id: &'a str,
    pub tenant_id: Option<&'a str>,
}

/// One decided request.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub surface: Surface,
    /// When it arrived (the deployment's clock).
    pub at: Timestamp,
    /// The route's template (`GET /v1/calls/{id}`); `unmatched` when no
    /// route matched.
    pub route: &'a str,
    /// The key, once it was known (a denied key is known; a malformed or
    /// unknown one is not).
    pub key: Option<KeyFacts<'a>>,
    /// The tenant header's value, when the request carried one the key was
    /// allowed to act for.
    pub tenant_header: Option<&'a str>,
    /// `valid`, a denial or error code, or `upstream_2xx`…
    pub outcome: &'static str,
    pub class: OutcomeClass,
    /// The status the client got.
    pub status: u16,
    /// Credits spent.
    pub credits: i64,
    /// From the request's head to its answer.
    pub latency: Duration,
    /// Time spent waiting on the upstream (forwarded requests).
    pub upstream: Option<Duration>,
    /// The client's address (behind trusted proxies: the one they name).
    pub client_ip: Option<IpAddr>,
}

/// The outcome of a forwarded request by the upstream's status.
pub fn upstream_outcome(status: u16) -> (&'static str, OutcomeClass) {
    match status {
        100..=199 => ("upstream_1xx", OutcomeClass::Success),
        200..=299 => ("upstream_2xx", OutcomeClass::Success),
        300..=399 => ("upstream_3xx", OutcomeClass::Success),
        400..=499 => ("upstream_4xx", OutcomeClass::ClientError),
        _ => ("upstream_5xx", OutcomeClass::Error),
    }
}

/// Where observations go: usage and metrics, each optional (turned off by
/// configuration).
#[derive(Default)]
pub struct Observer {
    usage: Option<Arc<UsageRecorder>>,
    metrics: Option<Arc<Metrics>>,
}

impl Observer {
    pub fn new(usage: Option<Arc<UsageRecorder>>, metrics: Option<Arc<Metrics>>) -> Observer {
        Observer { usage, metrics }
    }

    /// Counts `o` (never waits on I/O).
    pub fn observe(&self, o: &Observation<'_>) {
        if let Some(u) = &self.usage {
            u.record(o);
        }
        if let Some(m) = &self.metrics {
            m.observe(o);
        }
    }

    pub fn usage(&self) -> Option<&Arc<UsageRecorder>> {
        self.usage.as_ref()
    }

    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }
}
