//! Serving the Prometheus metrics: on the main listener at `metrics.path`
//! (one of keyward's own paths then, so it wins over gateway routes on
//! both paths), or, with `metrics.listen`, on that address only, by a small
//! server of its own that starts and stops with [`crate::Keyward::serve`].
//! With `metrics.token` set, a scrape must send `Authorization: Bearer
//! <token>`; anything else is answered 401 in the deployment's error style.
//!
//! A scrape writes the request families counted on the hot path
//! ([`keyward_observe::Metrics`]) and reads the rest where it lives: the key
//! cache's counters and the time of its store reads (the verifier), rate
//! limit and credit decisions (`Limits`), the rate limiter's state (Redis),
//! the change follower's state, usage recording (its held series,
//! overflow and flushes), and webhook delivery (this node's attempts by
//! result, and the outbox's depth as its deliverer last read it).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keyward_core::secret::KeyHash;
use keyward_core::verdict::Denial;
use keyward_gateway::OwnPaths;
use keyward_http::error::ApiError;
use keyward_observe::metrics::{Exposition, Kind, CONTENT_TYPE};
use keyward_observe::UsageRecorder;
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::config::{invalid, ConfigError, Settings};

/// The path metrics are served at on the main listener, if they are.
pub(crate) fn main_path(settings: &Settings) -> Option<&str> {
    let m = &settings.config.metrics;
    (m.enabled && m.listen.is_none()).then_some(m.path.as_str())
}

/// `metrics.path` must be a plain path (no pattern, no empty, `.` or `..`
/// segment) and, on the main listener, none of keyward's own.
pub(crate) fn check_path(settings: &Settings, own: &OwnPaths) -> Result<(), ConfigError> {
    let m = &settings.config.metrics;
    if !m.enabled {
        return Ok(());
    }
    let plain = m.path.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        })
    });
    if !plain {
        return Err(invalid(
            "metrics.path",
            "must be a plain path of letters, digits and - . _ ~ such as /metrics",
        ));
    }
    if m.listen.is_none() && own.contains(&m.path) {
        return Err(invalid(
            "metrics.path",
            "is one of keyward's own paths (the API's or the console's); pick another or set metrics.listen",
        ));
    }
    Ok(())
}

/// The metrics route for the main listener's router.
pub(crate) fn route(path: &str) -> Router<AppState> {
    Router::new().route(path, get(scrape))
}

async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match answer(&state, &headers) {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

/// The scrape's answer, or why it is refused.
fn answer(state: &AppState, headers: &HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = &state.settings.config.metrics.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        if !presented.is_some_and(|p| same_token(p, token)) {
            return Err(ApiError::Denied(Denial::InvalidApiKey));
        }
    }
    let mut res = render(state).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Compares digests, every byte: how long it takes says nothing about
/// how much of the token was right.
fn same_token(presented: &str, token: &str) -> bool {
    let (a, b) = (KeyHash::of(presented), KeyHash::of(token));
    a.0.iter()
        .zip(b.0.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Every family, as a scrape's text.
pub(crate) fn render(state: &AppState) -> String {
    let mut out = Exposition::new();
    out.family(
        "keyward_build_info",
        Kind::Gauge,
        "Always 1; the version of keyward serving.",
    );
    out.sample(
        "keyward_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    if let Some(m) = state.observer.metrics() {
        m.write(&mut out);
    }
    write_cache(state, &mut out);
    write_limits(state, &mut out);
    write_store(state, &mut out);
    write_changes(state, &mut out);
    if let Some(u) = state.observer.usage() {
        write_usage(u, &mut out);
    }
    if state.webhook_key_id.is_some() {
        write_webhooks(&state.deliveries, &mut out);
    }
    out.finish()
}

fn write_cache(state: &AppState, out: &mut Exposition) {
    let c = state.verifier.counters();
    out.family(
        "keyward_key_cache_lookups_total",
        Kind::Counter,
        "Key cache lookups of well-formed keys: hit (answered from memory) or miss (waited for a store read).",
    );
    out.sample(
        "keyward_key_cache_lookups_total",
        &[("result", "hit")],
        c.hits.get(),
    );
    out.sample(
        "keyward_key_cache_lookups_total",
        &[("result", "miss")],
        c.misses.get(),
    );
    out.family(
        "keyward_key_cache_refreshes_total",
        Kind::Counter,
        "Background refreshes of cached keys asked for (a hit past half to three quarters of cache.ttl_seconds).",
    );
    out.sample("keyward_key_cache_refreshes_total", &[], c.refreshes.get());
    let cache = state.verifier.cache();
    out.family(
        "keyward_key_cache_entries",
        Kind::Gauge,
        "Entries in the key cache: known keys, and unknown hashes (the negative cache).",
    );
    out.sample(
        "keyward_key_cache_entries",
        &[("kind", "known")],
        cache.known_len(),
    );
    out.sample(
        "keyward_key_cache_entries",
        &[("kind", "unknown")],
        cache.unknown_len(),
    );
}

fn write_limits(state: &AppState, out: &mut Exposition) {
    let d = &state.limits.decisions;
    out.family(
        "keyward_rate_limit_decisions_total",
        Kind::Counter,
        "Rate-limit checks of verified keys (gateway and verify API): allowed or refused.",
    );
    for (decision, n) in [
        ("allowed", d.rate_allowed.get()),
        ("refused", d.rate_refused.get()),
    ] {
        out.sample(
            "keyward_rate_limit_decisions_total",
            &[("decision", decision)],
            n,
        );
    }
    out.family(
        "keyward_credit_decisions_total",
        Kind::Counter,
        "Credit spends: spent, or refused because the balance or the key's cap was exhausted.",
    );
    for (decision, n) in [
        ("spent", d.credits_spent.get()),
        ("exhausted", d.credits_exhausted.get()),
    ] {
        out.sample(
            "keyward_credit_decisions_total",
            &[("decision", decision)],
            n,
        );
    }
    let now = match &state.redis {
        None => "local",
        Some(r) => r.status().as_str(),
    };
    out.family(
        "keyward_rate_limiter_state",
        Kind::Gauge,
        "The rate limiter in use: 1 for the current state (local: this node alone, no Redis configured; redis; local_fallback: Redis unreachable, deciding with this node's share; unavailable: Redis unreachable and fail_closed).",
    );
    for s in ["local", "redis", "local_fallback", "unavailable"] {
        out.sample(
            "keyward_rate_limiter_state",
            &[("state", s)],
            u8::from(s == now),
        );
    }
    if let Some(r) = &state.redis {
        out.family(
            "keyward_rate_limiter_nodes",
            Kind::Gauge,
            "Nodes seen alive in the Redis node registry (the share of each limit is limit / nodes while degraded).",
        );
        out.sample("keyward_rate_limiter_nodes", &[], r.live_nodes());
    }
}

fn write_store(state: &AppState, out: &mut Exposition) {
    out.family(
        "keyward_store_duration_seconds",
        Kind::Histogram,
        "Time of store operations off the request path: find_keys (the key cache's batched reads) and usage_flush (usage added to the store).",
    );
    out.histogram(
        "keyward_store_duration_seconds",
        &[("op", "find_keys")],
        &state.verifier.counters().store_reads.snapshot(),
    );
    if let Some(u) = state.observer.usage() {
        out.histogram(
            "keyward_store_duration_seconds",
            &[("op", "usage_flush")],
            &u.flush_times().snapshot(),
        );
    }
}

fn write_changes(state: &AppState, out: &mut Exposition) {
    let now = state.changes.health().as_str();
    out.family(
        "keyward_change_follower_state",
        Kind::Gauge,
        "How this node hears other nodes' changes: 1 for the current state (listening: live feed; polling: log reads only; silent: neither for too long, the key cache is not trusted).",
    );
    for s in ["listening", "polling", "silent"] {
        out.sample(
            "keyward_change_follower_state",
            &[("state", s)],
            u8::from(s == now),
        );
    }
}

fn write_usage(u: &UsageRecorder, out: &mut Exposition) {
    out.family(
        "keyward_usage_held_series",
        Kind::Gauge,
        "Usage series counted in memory and waiting for the next flush.",
    );
    out.sample("keyward_usage_held_series", &[], u.held_series());
    out.family(
        "keyward_usage_max_series",
        Kind::Gauge,
        "The most usage series held between two flushes (usage.max_series).",
    );
    out.sample("keyward_usage_max_series", &[], u.limits().max_series);
    let overflow = u.overflow();
    out.family(
        "keyward_usage_overflow_total",
        Kind::Counter,
        "What usage recording could not hold: requests not counted (usage.max_series reached) and client-address sightings dropped (usage.max_ips).",
    );
    out.sample(
        "keyward_usage_overflow_total",
        &[("kind", "requests")],
        overflow.requests,
    );
    out.sample(
        "keyward_usage_overflow_total",
        &[("kind", "ips")],
        overflow.ips,
    );
    let (written, failures) = u.flush_counts();
    out.family(
        "keyward_usage_rows_written_total",
        Kind::Counter,
        "Usage series rows added to the store.",
    );
    out.sample("keyward_usage_rows_written_total", &[], written);
    out.family(
        "keyward_usage_flush_failures_total",
        Kind::Counter,
        "Usage flushes the store refused (the batch is kept for the next one).",
    );
    out.sample("keyward_usage_flush_failures_total", &[], failures);
}

fn write_webhooks(d: &crate::webhooks::DeliveryCounters, out: &mut Exposition) {
    use std::sync::atomic::Ordering::Relaxed;
    out.family(
        "keyward_webhook_attempts_total",
        Kind::Counter,
        "Webhook delivery attempts this node made, by result: delivered (2xx), retry (failed, another attempt is scheduled), failed (the schedule is exhausted; the endpoint is marked failing).",
    );
    for (result, n) in [
        ("delivered", &d.delivered),
        ("retry", &d.retried),
        ("failed", &d.gave_up),
    ] {
        out.sample(
            "keyward_webhook_attempts_total",
            &[("result", result)],
            n.load(Relaxed),
        );
    }
    out.family(
        "keyward_webhook_attempt_seconds_total",
        Kind::Counter,
        "Time this node's webhook attempts took, in seconds, summed (divide by the attempts for the mean).",
    );
    out.sample(
        "keyward_webhook_attempt_seconds_total",
        &[],
        d.latency_ms.load(Relaxed) as f64 / 1000.0,
    );
    out.family(
        "keyward_webhook_store_errors_total",
        Kind::Counter,
        "Claims or attempt records the store refused (a refused record is retried when its lease runs out).",
    );
    out.sample(
        "keyward_webhook_store_errors_total",
        &[],
        d.store_errors.load(Relaxed),
    );
    out.family(
        "keyward_webhook_pending_deliveries",
        Kind::Gauge,
        "Deliveries waiting in the outbox (due or scheduled), read every 5 s.",
    );
    out.sample(
        "keyward_webhook_pending_deliveries",
        &[],
        d.pending.load(Relaxed),
    );
}

/// The metrics' own listener (`metrics.listen`), until [`Listener::stop`].
pub(crate) struct Listener {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Binds `metrics.listen` (when set and metrics are on) and serves the
    /// metrics path there, nothing else.
    pub(crate) async fn start(state: &AppState) -> std::io::Result<Option<Listener>> {
        let m = &state.settings.config.metrics;
        let Some(addr) = m.listen.filter(|_| m.enabled) else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on metrics.listen {addr}: {e}"),
            )
        })?;
        let bound: SocketAddr = listener.local_addr()?;
        tracing::info!(address = %bound, path = %m.path, "Metrics are served on their own listener.");
        let router = Router::new()
            .route(&m.path, get(scrape_alone))
            .fallback(not_found)
            .with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "The metrics listener failed.");
            }
        });
        Ok(Some(Listener { stop, task }))
    }

    /// Stops serving and waits until it has.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// A scrape on the metrics' own listener, where no edge middleware renders
/// errors: rendered here, in the deployment's style.
async fn scrape_alone(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match answer(&state, &headers) {
        Ok(res) => res,
        Err(e) => keyward_http::error::render_now(&state.settings.config.errors, e),
    }
}

async fn not_found(State(state): State<AppState>) -> Response {
    keyward_http::error::render_now(&state.settings.config.errors, ApiError::NotFound("path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let token = "0123456789abcdef-token";
        assert!(same_token(token, token));
        assert!(!same_token("0123456789abcdef-tokeN", token));
        assert!(!same_token("0123456789abcdef", token));
        assert!(!same_token("", token));
    }
}
