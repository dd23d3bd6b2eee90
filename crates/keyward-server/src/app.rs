//! Wiring: [`Keyward`] holds the shared state, builds the [`Router`], and
//! serves it with graceful shutdown (in-flight requests drain, last-use
//! batches are flushed).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use keyward_core::clock::Clock;
use keyward_core::secret::{Entropy, OsEntropy};
use keyward_store::Store;
use tokio::net::TcpListener;

use crate::api::{self, BodyLimit};
use crate::config::Settings;
use crate::error::{self, ApiError};
use crate::usage::UsageRecorder;
use crate::verifier::{KeyCache, Verifier};

/// Everything a handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub verifier: Arc<Verifier>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub usage: Arc<UsageRecorder>,
    /// Pooled client to the gateway upstream.
    pub upstream: crate::gateway::UpstreamClient,
    /// Gateway routes in force (reloadable).
    pub routes: crate::gateway::LiveRoutes,
}

/// A keyward server, ready to route or serve.
pub struct Keyward {
    state: AppState,
}

impl Keyward {
    pub fn new(settings: Settings, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Keyward {
        let usage = Arc::new(UsageRecorder::new(
            settings.config.usage.last_used_resolution_seconds,
        ));
        let upstream = crate::gateway::client(&settings.config);
        let routes = crate::gateway::LiveRoutes::new(settings.routes.clone());
        let c = &settings.config.cache;
        let cache = KeyCache::new(c.ttl_seconds, c.negative_ttl_seconds, c.capacity);
        let verifier = Verifier::new(
            settings.format.clone(),
            Arc::clone(&store),
            Arc::clone(&clock),
            cache,
            Arc::clone(&usage),
        );
        Keyward {
            state: AppState {
                settings: Arc::new(settings),
                store,
                verifier: Arc::new(verifier),
                clock,
                entropy: Arc::new(OsEntropy),
                upstream,
                routes,
                usage,
            },
        }
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The complete HTTP application.
    pub fn router(&self) -> Router {
        let limit = self.state.settings.config.http.max_body_bytes;
        api::routes()
            .merge(crate::console::routes(&self.state))
            .fallback(crate::gateway::handle)
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
            .layer(DefaultBodyLimit::max(limit))
            .layer(middleware::from_fn(
                move |mut req: Request, next: Next| async move {
                    req.extensions_mut().insert(BodyLimit(limit));
                    next.run(req).await
                },
            ))
            .layer(middleware::from_fn(log_request))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&self.state.settings),
                error::render,
            ))
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and
    /// flushes last-use batches.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let interval = Duration::from_millis(self.state.settings.config.usage.flush_interval_ms);
        let flusher = self
            .state
            .usage
            .spawn_flusher(Arc::clone(&self.state.store), interval);
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        flusher.abort();
        self.state.usage.flush_all(self.state.store.as_ref()).await;
        tracing::info!("Server stopped; last-use batches flushed.");
        result
    }
}

/// Convenience: the router for `settings` over `store` with `clock`.
pub fn build_app(settings: Settings, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Router {
    Keyward::new(settings, store, clock).router()
}

/// Gives every request an `X-Request-Id` (the client's, if it sent a sane
/// one), passes it on to handlers and the upstream, returns it, and logs the
/// request without its query string (keys sent there by mistake must not
/// reach the logs) and never a header.
async fn log_request(mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let client_id = req
        .headers()
        .get(REQUEST_ID)
        .filter(|v| {
            v.len() <= 128
                && v.to_str()
                    .is_ok_and(|s| s.bytes().all(|b| b.is_ascii_graphic()))
        })
        .cloned();
    let request_id = match client_id {
        Some(v) => v,
        None => {
            let id = keyward_core::id::new_id("req", &OsEntropy)
                .unwrap_or_else(|_| "req_unavailable".into());
            HeaderValue::from_str(&id)
                .unwrap_or_else(|_| HeaderValue::from_static("req_unavailable"))
        }
    };
    req.headers_mut().insert(REQUEST_ID, request_id.clone());
    let started = Instant::now();
    let mut res = next.run(req).await;
    res.headers_mut().insert(REQUEST_ID, request_id.clone());
    let status = res.status().as_u16();
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let request_id = request_id.to_str().unwrap_or_default();
    if status >= 500 {
        tracing::warn!(%method, %path, status, micros, request_id, "Request failed.");
    } else {
        tracing::debug!(%method, %path, status, micros, request_id, "Request served.");
    }
    res
}

const REQUEST_ID: &str = "x-request-id";
