//! Prometheus metrics: what is counted on the hot path, and how it is
//! written out (the text exposition format 0.0.4).
//!
//! [`Metrics`] counts decided requests ([`Metrics::observe`]) and requests
//! to keyward's own API and console ([`Metrics::observe_http`]). Each
//! worker thread counts into a shard of its own (picked once per thread,
//! as usage does), so a request takes one uncontended lock; a scrape locks
//! each shard for the time it takes to copy it and merges the copies.
//!
//! The other crates keep the counts that belong to them, with the two
//! primitives here: [`Counter`] (one padded cell per thread slot, so two
//! cores never write one cache line) for the hot path, and [`Histogram`]
//! (shared atomics) for what happens a few times a second at most, such as
//! store reads. The server reads them all at scrape time and writes them
//! with [`Exposition`].
//!
//! # Invariants
//! - Labels are bounded: route templates, outcome codes, status classes,
//!   surfaces — never a key, tenant, address or raw path. On top of that,
//!   at most [`MAX_LABEL_SETS`] label sets are held; a request that would
//!   need one more is counted in `keyward_metrics_overflow_total` only.
//! - Counting never waits on I/O nor on another thread's lock (but the
//!   scrape's, briefly).

use std::collections::{BTreeMap, HashMap};
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use keyward_core::hashing::IdHash;

use crate::{Observation, Surface};

/// Most label sets of the request families held at once (all shards
/// together); past it, requests are counted as overflow.
pub const MAX_LABEL_SETS: usize = 2_000;

/// The upper bounds of every histogram's buckets, in seconds, as written
/// in `le` (the `+Inf` bucket comes after).
pub const BUCKETS: [&str; 14] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10",
];

/// [`BUCKETS`] in microseconds, for counting.
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Buckets with `+Inf`.
const SLOTS_PER_HISTOGRAM: usize = BUCKETS.len() + 1;

use crate::{slot, SLOTS};

/// A value on a cache line of its own.
#[repr(align(64))]
#[derive(Default)]
struct Padded<T>(T);

/// A monotonic counter for the hot path: each thread adds to a cell of its
/// own, a read sums them.
#[derive(Default)]
pub struct Counter {
    cells: [Padded<AtomicU64>; SLOTS],
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.cells[slot()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Which bucket `d` falls in (the last is `+Inf`).
fn bucket_of(us: u64) -> usize {
    BUCKETS_US.partition_point(|&b| b < us)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A histogram of durations shared by all threads: for events that are
/// rare next to requests (store reads, flushes).
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; SLOTS_PER_HISTOGRAM],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one event that took `d`.
    pub fn observe(&self, d: Duration) {
        let us = micros(d);
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// What it holds now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::default();
        for (to, from) in s.counts.iter_mut().zip(&self.counts) {
            *to = from.load(Ordering::Relaxed);
        }
        s.sum_us = self.sum_us.load(Ordering::Relaxed);
        s
    }
}

/// A histogram's counts (per bucket, not cumulative) and sum: what a
/// worker's shard holds, and what a scrape writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    counts: [u64; SLOTS_PER_HISTOGRAM],
    sum_us: u64,
}

impl HistogramSnapshot {
    fn observe(&mut self, d: Duration) {
        let us = micros(d);
        self.counts[bucket_of(us)] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Events counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// `1xx` … `5xx`.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_class(status: u16) -> u8 {
    // 100..=599 by construction; anything else is counted with its
    // nearest class.
    u8::try_from((status / 100).clamp(1, 5) - 1).unwrap_or(4)
}

fn surface_index(s: Surface) -> usize {
    match s {
        Surface::Gateway => 0,
        Surface::Verify => 1,
    }
}

const SURFACES: [&str; 2] = ["gateway", "verify"];

/// One label set of `keyward_requests_total` under its route.
#[derive(Debug)]
struct RequestCount {
    surface: u8,
    outcome: &'static str,
    class: u8,
    n: u64,
}

/// One worker's counts.
#[derive(Debug, Default)]
struct Shard {
    /// By route template, then (surface, outcome, status class).
    requests: HashMap<Box<str>, Vec<RequestCount>, IdHash>,
    /// keyward's own routes: by route template, per status class.
    http: HashMap<Box<str>, [u64; 5], IdHash>,
    /// Request durations by surface.
    duration: [HistogramSnapshot; 2],
    upstream: HistogramSnapshot,
}

/// The request families, counted per worker; see the module's docs.
pub struct Metrics {
    shards: Box<[Padded<Mutex<Shard>>]>,
    max_label_sets: usize,
    /// Label sets held (all shards: one label set counted in two shards
    /// is held twice).
    label_sets: AtomicUsize,
    overflow: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("max_label_sets", &self.max_label_sets)
            .field("label_sets", &self.label_sets.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(MAX_LABEL_SETS)
    }
}

impl Metrics {
    /// A registry holding at most `max_label_sets` label sets.
    pub fn new(max_label_sets: usize) -> Metrics {
        Metrics {
            shards: (0..SLOTS)
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect(),
            max_label_sets,
            label_sets: AtomicUsize::new(0),
            overflow: AtomicU64::new(0),
        }
    }

    fn shard(&self) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[slot()]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves room for one more label set; false at the cap (and the
    /// request is counted as overflow).
    fn take_room(&self) -> bool {
        let taken = self
            .label_sets
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_label_sets).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.overflow.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Counts one decided request (gateway or verify API).
    pub fn observe(&self, o: &Observation<'_>) {
        let surface = surface_index(o.surface);
        let class = status_class(o.status);
        let mut shard = self.shard();
        shard.duration[surface].observe(o.latency);
        if let Some(u) = o.upstream {
            shard.upstream.observe(u);
        }
        let entry = RequestCount {
            surface: surface as u8,
            outcome: o.outcome,
            class,
            n: 1,
        };
        match shard.requests.get_mut(o.route) {
            Some(counts) => {
                match counts.iter_mut().find(|c| {
                    c.outcome == o.outcome && c.class == class && usize::from(c.surface) == surface
                }) {
                    Some(c) => c.n += 1,
                    None if self.take_room() => counts.push(entry),
                    None => {}
                }
            }
            None if self.take_room() => {
                shard.requests.insert(o.route.into(), vec![entry]);
            }
            None => {}
        }
    }

    /// Counts one request to keyward's own API or console, by the route
    /// template the router matched.
    pub fn observe_http(&self, route: &str, status: u16) {
        let class = usize::from(status_class(status));
        let mut shard = self.shard();
        match shard.http.get_mut(route) {
            Some(counts) => {
                if counts[class] == 0 && !self.take_room() {
                    return;
                }
                counts[class] += 1;
            }
            None if self.take_room() => {
                let mut counts = [0; 5];
                counts[class] = 1;
                shard.http.insert(route.into(), counts);
            }
            None => {}
        }
    }

    /// Label sets held now.
    pub fn label_sets(&self) -> usize {
        self.label_sets.load(Ordering::Relaxed)
    }

    /// Requests not counted in a labelled family because the cap was
    /// reached.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Writes the request families: `keyward_requests_total`,
    /// `keyward_request_duration_seconds`,
    /// `keyward_upstream_duration_seconds`, `keyward_http_requests_total`
    /// and the registry's own bound.
    pub fn write(&self, out: &mut Exposition) {
        type RequestKey = (Box<str>, u8, &'static str, u8);
        let mut requests: BTreeMap<RequestKey, u64> = BTreeMap::new();
        let mut http: BTreeMap<(Box<str>, u8), u64> = BTreeMap::new();
        let mut duration = [HistogramSnapshot::default(); 2];
        let mut upstream = HistogramSnapshot::default();
        for shard in self.shards.iter() {
            let shard = shard.0.lock().unwrap_or_else(|e| e.into_inner());
            for (route, counts) in &shard.requests {
                for c in counts {
                    *requests
                        .entry((route.clone(), c.surface, c.outcome, c.class))
                        .or_default() += c.n;
                }
            }
            for (route, counts) in &shard.http {
                for (class, n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                    *http
                        .entry((route.clone(), u8::try_from(class).unwrap_or(4)))
                        .or_default() += n;
                }
            }
            for (d, s) in duration.iter_mut().zip(&shard.duration) {
                d.merge(s);
            }
            upstream.merge(&shard.upstream);
        }

        out.family(
            "keyward_requests_total",
            Kind::Counter,
            "Requests decided by the gateway (both paths) and the verify API, by surface, route template (`unmatched` when no route matched), outcome code and status class.",
        );
        for ((route, surface, outcome, class), n) in &requests {
            out.sample(
                "keyward_requests_total",
                &[
                    ("surface", SURFACES[usize::from(*surface)]),
                    ("route", route),
                    ("outcome", outcome),
                    ("status_class", STATUS_CLASSES[usize::from(*class)]),
                ],
                n,
            );
        }
        out.family(
            "keyward_request_duration_seconds",
            Kind::Histogram,
            "Time from a decided request's head to its answer, by surface.",
        );
        for (surface, h) in SURFACES.iter().zip(&duration) {
            out.histogram(
                "keyward_request_duration_seconds",
                &[("surface", surface)],
                h,
            );
        }
        out.family(
            "keyward_upstream_duration_seconds",
            Kind::Histogram,
            "Time forwarded requests spent waiting on the upstream.",
        );
        out.histogram("keyward_upstream_duration_seconds", &[], &upstream);
        out.family(
            "keyward_http_requests_total",
            Kind::Counter,
            "Requests to keyward's own API, console and metrics, by the route template the router matched and status class (gateway requests are in keyward_requests_total).",
        );
        for ((route, class), n) in &http {
            out.sample(
                "keyward_http_requests_total",
                &[
                    ("route", route),
                    ("status_class", STATUS_CLASSES[usize::from(*class)]),
                ],
                n,
            );
        }
        out.family(
            "keyward_metrics_label_sets",
            Kind::Gauge,
            "Label sets held by keyward_requests_total and keyward_http_requests_total (per worker).",
        );
        out.sample("keyward_metrics_label_sets", &[], self.label_sets());
        out.family(
            "keyward_metrics_label_sets_max",
            Kind::Gauge,
            "The most label sets held; requests past it are counted in keyward_metrics_overflow_total only.",
        );
        out.sample("keyward_metrics_label_sets_max", &[], self.max_label_sets);
        out.family(
            "keyward_metrics_overflow_total",
            Kind::Counter,
            "Requests not counted in a labelled request family because keyward_metrics_label_sets_max was reached.",
        );
        out.sample("keyward_metrics_overflow_total", &[], self.overflow());
    }
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The Prometheus content type of [`Exposition`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A scrape's text, in the exposition format 0.0.4: each family once, with
/// `# HELP` and `# TYPE`, then its samples (label values escaped).
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its help text and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}\n# TYPE {name} {}",
            escape(help, false),
            kind.as_str()
        );
    }

    /// One sample of the family begun last (`name` may carry a suffix such
    /// as `_bucket`).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v, true));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The samples of one histogram: cumulative buckets, `+Inf`, sum (in
    /// seconds) and count.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        with_le.push(("le", ""));
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().chain(["+Inf"].iter()).enumerate() {
            cumulative += h.counts[i];
            if let Some(last) = with_le.last_mut() {
                last.1 = le;
            }
            self.sample(&bucket, &with_le, cumulative);
        }
        // Microseconds as seconds, exactly: no float rounding.
        let sum = format!("{}.{:06}", h.sum_us / 1_000_000, h.sum_us % 1_000_000);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes a label value (`\`, `"`, newline) or help text (`\`, newline).
fn escape(s: &str, quote: bool) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\\', '\n', '"']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::clock::Timestamp;
    use keyward_store::OutcomeClass;

    fn obs<'a>(route: &'a str, outcome: &'static str, status: u16) -> Observation<'a> {
        Observation {
            surface: Surface::Gateway,
            at: Timestamp(0),
            route,
            key: None,
            tenant_header: None,
            outcome,
            class: OutcomeClass::Success,
            status,
            credits: 0,
            latency: Duration::from_micros(700),
            upstream: Some(Duration::from_millis(3)),
            client_ip: None,
        }
    }

    #[test]
    fn buckets_are_upper_bounds_inclusive() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(500), 0);
        assert_eq!(bucket_of(501), 1);
        assert_eq!(bucket_of(10_000_000), 13);
        assert_eq!(bucket_of(10_000_001), 14, "+Inf");
        for (s, us) in BUCKETS.iter().zip(BUCKETS_US) {
            let secs: f64 = s.parse().unwrap();
            assert_eq!((secs * 1e6).round() as u64, us, "{s}");
        }
    }

    #[test]
    fn counts_merge_across_threads_and_render_with_help_and_type() {
        let m = std::sync::Arc::new(Metrics::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = std::sync::Arc::clone(&m);
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        m.observe(&obs("GET /v1/calls/{id}", "upstream_2xx", 200));
                    }
                    m.observe_http("/v1/keys/{id}", 404);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut out = Exposition::new();
        m.write(&mut out);
        let text = out.finish();
        assert!(text.contains(
            "keyward_requests_total{surface=\"gateway\",route=\"GET /v1/calls/{id}\",outcome=\"upstream_2xx\",status_class=\"2xx\"} 1000\n"
        ), "{text}");
        assert!(text.contains(
            "keyward_http_requests_total{route=\"/v1/keys/{id}\",status_class=\"4xx\"} 4\n"
        ));
        assert!(text.contains(
            "keyward_request_duration_seconds_bucket{surface=\"gateway\",le=\"0.0005\"} 0\n"
        ));
        assert!(text.contains(
            "keyward_request_duration_seconds_bucket{surface=\"gateway\",le=\"0.001\"} 1000\n"
        ));
        assert!(
            text.contains("keyward_request_duration_seconds_sum{surface=\"gateway\"} 0.700000\n")
        );
        assert!(text.contains("keyward_upstream_duration_seconds_count 1000\n"));
        assert!(text.contains("# TYPE keyward_requests_total counter\n"));
        assert!(text.contains("# TYPE keyward_upstream_duration_seconds histogram\n"));
    }

    #[test]
    fn label_sets_are_capped_and_the_rest_is_overflow() {
        let m = Metrics::new(3);
        for i in 0..10 {
            let route = format!("GET /r{i}");
            m.observe(&obs(&route, "valid", 200));
        }
        m.observe(&obs("GET /r0", "valid", 200));
        assert_eq!(m.label_sets(), 3);
        assert_eq!(m.overflow(), 7);
        let mut out = Exposition::new();
        m.write(&mut out);
        let text = out.finish();
        assert!(text.contains("route=\"GET /r0\",outcome=\"valid\",status_class=\"2xx\"} 2\n"));
        assert!(!text.contains("/r3"));
        assert!(text.contains("keyward_metrics_overflow_total 7\n"));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut out = Exposition::new();
        out.family("x_total", Kind::Counter, "a \\ b\nc \"q\"");
        out.sample("x_total", &[("route", "a\"b\\c\nd")], 1);
        assert_eq!(
            out.finish(),
            "# HELP x_total a \\\\ b\\nc \"q\"\n# TYPE x_total counter\nx_total{route=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn a_counter_sums_its_cells() {
        let c = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || (0..1000).for_each(|_| c.inc()))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 8000);
    }
}
