//! Wiring: [`Keyward`] holds the shared state, builds the [`Router`], and
//! serves it with graceful shutdown (in-flight requests drain, last-use
//! batches are flushed).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use keyward_core::clock::Clock;
use keyward_core::secret::{Entropy, OsEntropy};
use keyward_store::Store;
use tokio::net::TcpListener;

use crate::config::{ConfigError, Settings};
use keyward_api::BodyLimit;
use keyward_gateway::{Gateway, GatewaySettings, LivePolicy, OwnPaths};
use keyward_http::error::ApiError;
use keyward_limits::{BankConfig, CreditBank, Limits, MemoryLimiter};
use keyward_observe::{Metrics, Observer, UsageRecorder};
use keyward_verify::last_use::LastUseRecorder;
use keyward_verify::verifier::{KeyCache, Verifier};

pub(crate) use keyward_http::edge::{acceptable_request_id, admit, new_request_id};

/// The server's state, from which each crate's own state is built; cheap to clone: one reference count,
/// since axum clones the state for every request and each shared counter
/// is a cache line the two cores fight over.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    pub(crate) settings: Arc<Settings>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) entropy: Arc<dyn Entropy>,
    pub(crate) usage: Arc<LastUseRecorder>,
    /// Where decided requests are counted: usage (per key, into the store)
    /// and metrics.
    pub(crate) observer: Arc<Observer>,
    /// The gateway: `[[routes]]` on the fast path and the router's fallback;
    /// it holds the request policy in force (`Gateway::policy`: routes,
    /// tiers, gateway settings, the upstream client, reloadable as one).
    pub(crate) gateway: Arc<Gateway>,
    /// Rate limiter and credit spender.
    pub(crate) limits: Arc<Limits>,
    /// Every management action (API, console), with its checks, audit and
    /// cache invalidation.
    pub(crate) manage: Arc<keyward_manage::ManageService>,
    /// Follows the store's change log (changes made on other nodes).
    pub(crate) changes: Arc<crate::changes::Follower>,
    /// The shared rate limiter, when `redis_url` is set (also in `limits`).
    pub(crate) redis: Option<Arc<keyward_redis::RedisLimiter>>,
    /// Leak reports: partner keys, GitLab's token, the worker's queue.
    pub(crate) leaks: Arc<keyward_api::leaks::LeakIntake>,
    /// Applies the leak policy after the answer.
    pub(crate) leak_worker: crate::leaks::LeakWorker,
    /// The webhook master key's id, when webhooks are on (checked against
    /// the store's at start).
    pub(crate) webhook_key_id: Option<String>,
    /// What this node's webhook deliverer did (for `/metrics`).
    pub(crate) deliveries: Arc<crate::webhooks::DeliveryCounters>,
    /// Raised when a change committed here or was applied from another
    /// node: wakes the change feed's long polls (`GET /v1/changes`).
    pub(crate) change_signal: Arc<keyward_api::changes::ChangeSignal>,
}

/// A keyward server, ready to route or serve.
pub struct Keyward {
    state: AppState,
}

impl Keyward {
    /// Compiles the request policy of `settings` (`[[routes]]`, `[gateway]`,
    /// `[limits]`, `[idempotency]`: an error names the setting) and wires
    /// the server, connecting to Redis first when `redis_url` is set (a
    /// Redis that does not answer yet is not an error: the node starts on
    /// its fallback and moves to Redis when it answers).
    pub async fn open(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Keyward, ConfigError> {
        let node = node_id(&settings);
        let redis = match &settings.config.redis_url {
            None => None,
            Some(url) => Some(Arc::new(
                keyward_redis::RedisLimiter::connect(url, &node, settings.config.redis.clone())
                    .await
                    .map_err(|e| crate::config::invalid("redis_url / redis", e))?,
            )),
        };
        Keyward::build(settings, store, clock, node, redis)
    }

    /// [`Keyward::open`] for a deployment without Redis (it needs no
    /// `.await`); a `redis_url` is refused here.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Keyward, ConfigError> {
        if settings.config.redis_url.is_some() {
            return Err(crate::config::invalid(
                "redis_url",
                "connecting to Redis needs Keyward::open",
            ));
        }
        let node = node_id(&settings);
        Keyward::build(settings, store, clock, node, None)
    }

    fn build(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        node_id: String,
        redis: Option<Arc<keyward_redis::RedisLimiter>>,
    ) -> Result<Keyward, ConfigError> {
        let policy = LivePolicy::new(settings.policy()?);
        crate::metrics::check_path(&settings, &own_paths_but_metrics(&settings))?;
        let settings = Arc::new(settings);
        let usage = Arc::new(LastUseRecorder::new(
            settings.config.usage.last_used_resolution_seconds,
        ));
        let c = &settings.config.cache;
        let cache = KeyCache::new(
            c.ttl_seconds,
            c.negative_ttl_seconds,
            c.capacity,
            c.negative_capacity,
        );
        let verifier = Verifier::new(
            settings.format.clone(),
            Arc::clone(&store),
            Arc::clone(&clock),
            cache,
            Arc::clone(&usage),
            settings.config.limits.default_tier.clone(),
            c.max_pending_loads,
        );
        let cc = &settings.config.credits;
        let bank = CreditBank::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            BankConfig {
                node_id,
                max_reservation: cc.max_reservation,
                idle_release_ms: i64::try_from(cc.idle_release_seconds.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
                stale_ms: i64::try_from(cc.stale_seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
                reclaim_wait: Duration::from_millis(cc.reclaim_wait_ms),
            },
        );
        let limiter: Arc<dyn keyward_limits::RateLimiter> = match &redis {
            Some(r) => Arc::clone(r) as Arc<dyn keyward_limits::RateLimiter>,
            None => Arc::new(MemoryLimiter::default()),
        };
        let limits = Arc::new(Limits {
            limiter,
            credits: Arc::new(bank),
            decisions: Default::default(),
        });
        let verifier = Arc::new(verifier);
        let change_signal = Arc::new(keyward_api::changes::ChangeSignal::default());
        let changes = Arc::new(
            crate::changes::Follower::new(
                Arc::clone(&store),
                Arc::clone(&verifier),
                Arc::clone(&clock),
                limits.credits.node_id().to_owned(),
                &settings.config.changes,
            )
            .with_reclaim(Arc::new(Arc::clone(&limits.credits)))
            .with_signal(Arc::clone(&change_signal)),
        );
        let entropy: Arc<dyn Entropy> = Arc::new(OsEntropy);
        let manage = Arc::new(keyward_manage::ManageService::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&entropy),
            Arc::new(crate::invalidate::LocalInvalidator::new(
                Arc::clone(&verifier),
                Arc::clone(&change_signal),
            )),
            manage_policy(&settings, &policy.current().tiers),
        ));
        let webhook_key_id = if settings.config.webhooks.enabled {
            match crate::webhooks::master_key(&settings, entropy.as_ref())? {
                Some(master) => {
                    let id = master.key_id();
                    let w = &settings.config.webhooks;
                    manage.set_webhooks(Some(keyward_manage::WebhookSettings {
                        master,
                        allow_private: w.allow_private_addresses,
                        rotation_overlap_ms: i64::try_from(
                            w.rotation_overlap_seconds.saturating_mul(1000),
                        )
                        .unwrap_or(i64::MAX),
                        max_endpoints: w.max_endpoints,
                    }));
                    Some(id)
                }
                None => {
                    tracing::warn!("Webhooks are off: on PostgreSQL, set webhooks.signing_key_file (the same key on every node).");
                    None
                }
            }
        } else {
            None
        };
        let observer = Arc::new(Observer::new(
            settings
                .config
                .usage
                .enabled
                .then(|| Arc::new(UsageRecorder::new(settings.config.usage.limits()))),
            settings
                .config
                .metrics
                .enabled
                .then(|| Arc::new(Metrics::default())),
        ));
        let leak_worker = crate::leaks::LeakWorker::new(settings.config.leaks.queue_capacity);
        let leaks = Arc::new(keyward_api::leaks::LeakIntake::new(
            settings.config.leaks.local_github_keys()?,
            settings.config.leaks.gitlab.token.clone(),
            leak_worker.queue(),
        ));
        let gateway = Arc::new(Gateway::new(
            gateway_settings(&settings),
            policy,
            Arc::clone(&verifier),
            Arc::clone(&limits),
            Arc::clone(&store) as Arc<dyn keyward_store::IdempotencyStore>,
            Arc::clone(&clock),
            Arc::clone(&observer),
        ));
        Ok(Keyward {
            state: AppState(Arc::new(Shared {
                gateway,
                limits,
                manage,
                changes,
                redis,
                settings,
                store,
                verifier,
                clock,
                entropy,
                usage,
                observer,
                leaks,
                leak_worker,
                webhook_key_id,
                deliveries: Arc::default(),
                change_signal,
            })),
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The complete HTTP application.
    pub fn router(&self) -> Router {
        let limit = self.state.settings.config.http.max_body_bytes;
        let mut router = keyward_api::router(api_state(&self.state))
            .merge(keyward_console::router(console_state(&self.state)));
        if let Some(path) = crate::metrics::main_path(&self.state.settings) {
            router = router.merge(crate::metrics::route(path));
        }
        router
            .fallback(keyward_gateway::handle)
            .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
            .layer(DefaultBodyLimit::max(limit))
            .layer(middleware::from_fn_with_state(
                Arc::new(Edge {
                    settings: Arc::clone(&self.state.settings),
                    metrics: self.state.observer.metrics().cloned(),
                }),
                edge,
            ))
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and
    /// flushes last-use batches.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        // First: an address in use stops the start before anything runs.
        let metrics = crate::metrics::Listener::start(&self.state).await?;
        let interval = Duration::from_millis(self.state.settings.config.usage.flush_interval_ms);
        let flusher = self
            .state
            .usage
            .spawn_flusher(Arc::clone(&self.state.store), interval);
        let purger = spawn_purger(&self.state);
        let usage_tasks = self.state.observer.usage().map(|recorder| {
            let u = &self.state.settings.config.usage;
            (
                recorder.spawn_flusher(
                    Arc::clone(&self.state.store),
                    Duration::from_millis(u.counts_interval_ms),
                ),
                keyward_observe::usage::spawn_pruner(
                    Arc::clone(&self.state.store),
                    Arc::clone(&self.state.clock),
                    u.retention(),
                    Duration::from_secs(u.prune_interval_seconds),
                ),
            )
        });
        let bank = Arc::clone(&self.state.limits.credits);
        match bank.recover_own().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                reservations = n,
                node = bank.node_id(),
                "Counted this node's credit reservations left by a crash as spent."
            ),
            Err(e) => {
                tracing::error!(error = %e, "Could not recover this node's credit reservations.")
            }
        }
        let settler = bank.spawn_settler(Duration::from_millis(
            self.state.settings.config.credits.settle_interval_ms,
        ));
        let followers = Arc::clone(&self.state.changes).start().await;
        let leak_tasks: Vec<tokio::task::JoinHandle<()>> = self
            .state
            .leak_worker
            .start(
                Arc::clone(&self.state.manage),
                Duration::from_secs(self.state.settings.config.leaks.sweep_interval_seconds),
            )
            .into_iter()
            .chain(crate::leaks::spawn_key_refresh(
                Arc::clone(&self.state.leaks),
                self.state.settings.config.leaks.clone(),
            ))
            .collect();
        let event_tasks = self.start_event_tasks().await?;
        let front = Arc::new(crate::serve::Front::new(self.state.clone(), self.router()));
        let workers = match self.state.settings.config.http.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut running = crate::serve::Workers::start(front, listener, workers)?;
        shutdown.await;
        // Long polls of the change feed end now rather than hold the drain.
        self.state.change_signal.close();
        running.drain().await;
        if let Some(metrics) = metrics {
            metrics.stop().await;
        }
        flusher.abort();
        purger.abort();
        settler.abort();
        for task in followers.into_iter().chain(leak_tasks).chain(event_tasks) {
            task.abort();
        }
        if let Some(redis) = &self.state.redis {
            redis.shutdown().await;
        }
        if let Err(e) = bank.settle(true).await {
            tracing::error!(error = %e, "Could not settle credits at shutdown; the reservations are counted as spent at the next start.");
        }
        self.state.usage.flush_all(self.state.store.as_ref()).await;
        if let Some((flusher, pruner)) = usage_tasks {
            flusher.abort();
            pruner.abort();
        }
        if let Some(recorder) = self.state.observer.usage() {
            recorder.flush(self.state.store.as_ref()).await;
        }
        // Only now: store connections opened by a worker run on its runtime.
        drop(running);
        tracing::info!("Server stopped; last-use batches flushed.");
        Ok(())
    }
}

impl Keyward {
    /// The webhook deliverer, its pruner and the alert checks. Refuses to
    /// start when the store was set up with another webhook master key.
    async fn start_event_tasks(&self) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
        let s = &self.state;
        let mut tasks = Vec::new();
        if let Some(id) = &s.webhook_key_id {
            let stored = s
                .store
                .init_setting(crate::webhooks::KEY_ID_SETTING, id)
                .await
                .map_err(std::io::Error::other)?;
            if &stored != id {
                return Err(std::io::Error::other(format!(
                    "this node's webhook master key (id {id}) is not the one the store was set up with (id {stored}): give every node the same webhooks.signing_key_file"
                )));
            }
            let deliverer = crate::webhooks::Deliverer::new(
                Arc::clone(&s.manage),
                Arc::clone(&s.store),
                Arc::clone(&s.clock),
                Arc::clone(&s.entropy),
                s.limits.credits.node_id().to_owned(),
                &s.settings.config.webhooks,
                Arc::clone(&s.deliveries),
            )
            .map_err(std::io::Error::other)?;
            tasks.push(deliverer.spawn());
            tasks.push(crate::webhooks::spawn_pruner(
                Arc::clone(&s.store),
                Arc::clone(&s.clock),
                s.settings.config.webhooks.retain_days,
            ));
        }
        if s.settings.config.alerts.enabled {
            tasks.push(crate::webhooks::spawn_alerts(
                Arc::clone(&s.manage),
                &s.settings,
            ));
        }
        Ok(tasks)
    }
}

/// This node's name (credit reservations, the Redis node registry, the
/// change feed's connection): `credits.node_id`, else `local` on SQLite (one
/// node) and a random id per process on PostgreSQL.
fn node_id(settings: &Settings) -> String {
    settings.config.credits.node_id.clone().unwrap_or_else(|| {
        if settings.config.effective_store_url().starts_with("sqlite:") {
            "local".into()
        } else {
            keyward_core::id::new_id("node", &OsEntropy).unwrap_or_else(|_| "node".into())
        }
    })
}

/// What the gateway reads of the deployment (fixed while serving).
fn gateway_settings(settings: &Settings) -> GatewaySettings {
    let config = &settings.config;
    GatewaySettings {
        credentials: settings.credentials.clone(),
        schemes: config.keys.schemes.clone(),
        trusted_proxies: settings.trusted_proxies.clone(),
        errors: config.errors.clone(),
        own: own_paths(settings),
        timeouts: crate::serve::timeouts(config),
    }
}

/// Paths the router answers itself, which win over gateway routes: the
/// API's, the console's and, when served there, the metrics'.
fn own_paths(settings: &Settings) -> OwnPaths {
    let console = settings.config.console.enabled.then_some("/console");
    let metrics = crate::metrics::main_path(settings);
    OwnPaths::new(keyward_api::paths().into_iter().chain(metrics), console)
}

/// [`own_paths`] without the metrics' (what `metrics.path` must not be).
fn own_paths_but_metrics(settings: &Settings) -> OwnPaths {
    let console = settings.config.console.enabled.then_some("/console");
    OwnPaths::new(keyward_api::paths(), console)
}

/// The router's fallback reads the gateway from the state.
impl FromRef<AppState> for Arc<Gateway> {
    fn from_ref(state: &AppState) -> Arc<Gateway> {
        Arc::clone(&state.gateway)
    }
}

/// Deletes idempotency records past their replay window, now and then.
fn spawn_purger(state: &AppState) -> tokio::task::JoinHandle<()> {
    let store = Arc::clone(&state.store);
    let clock = Arc::clone(&state.clock);
    let every = Duration::from_secs(state.settings.config.idempotency.purge_interval_seconds);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            match store.purge_idempotency(clock.now().0).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(purged = n, "Purged expired idempotency records."),
                Err(e) => tracing::warn!(error = %e, "Could not purge idempotency records."),
            }
        }
    })
}

impl AppState {
    /// `SIGHUP`: swaps in the request policy of `config` (routes, tiers,
    /// `[gateway]`, `[idempotency]`) as one snapshot, and hands the new
    /// tiers to the management checks; refuses, changing nothing, a config
    /// whose other settings differ (they need a restart). Returns the
    /// number of routes in force.
    pub fn reload(&self, config: crate::config::Config) -> Result<usize, ReloadError> {
        let routes = self.gateway.policy().reload(|| {
            // What a reload may not change is compared with the
            // configuration the server started with.
            let restart = self.settings.config.restart_only_changes(&config);
            if !restart.is_empty() {
                return Err(ReloadError::NeedsRestart(restart));
            }
            Ok(Settings::from_config(config)?.policy()?)
        })?;
        self.manage.set_policy(manage_policy(
            &self.settings,
            &self.gateway.policy().current().tiers,
        ));
        Ok(routes)
    }
}

/// Why a reload was refused; the running policy stays either way.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Settings the running server cannot change (listen address, store,
    /// workers, caches, …): the whole reload is refused.
    #[error("{} cannot change without a restart", .0.join(", "))]
    NeedsRestart(Vec<String>),
}

/// What the management checks need from `settings` (built again on a reload).
pub(crate) fn manage_policy(
    settings: &Settings,
    tiers: &keyward_limits::Tiers,
) -> keyward_manage::ManagePolicy {
    keyward_manage::ManagePolicy {
        format: settings.format.clone(),
        catalog: settings.catalog.clone(),
        tiers: tiers
            .names()
            .into_keys()
            .map(|n| (n.to_owned(), tiers.refill_for_tenant(Some(n))))
            .collect(),
        default_refill: tiers.refill_for_tenant(None),
        metadata_max_bytes: settings.config.keys.metadata_max_bytes,
        invite_ttl_ms: i64::try_from(
            settings
                .config
                .console
                .invite_ttl_seconds
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX),
        leaks: settings.config.leaks.policy(),
    }
}

/// The API's state, from the server's parts: it acts through the same
/// management service, and verifies keys, spends rate limits and credits
/// by the same verifier, limits and live policy as the gateway.
fn api_state(state: &AppState) -> keyward_api::ApiState {
    let settings = &state.settings;
    keyward_api::ApiState::new(keyward_api::Shared {
        manage: Arc::clone(&state.manage),
        verifier: Arc::clone(&state.verifier),
        limits: Arc::clone(&state.limits),
        policy: state.gateway.policy().clone(),
        clock: Arc::clone(&state.clock),
        settings: keyward_api::ApiSettings {
            credentials: settings.credentials.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            catalog: settings.catalog.clone(),
        },
        readiness: Arc::new(NodeHealth(state.clone())),
        observer: Arc::clone(&state.observer),
        leaks: Arc::clone(&state.leaks),
        changes: Arc::clone(&state.change_signal),
    })
}

/// `/v1/ready`'s view of the node's shared parts.
struct NodeHealth(AppState);

impl keyward_api::Readiness for NodeHealth {
    fn checks(&self) -> Vec<keyward_api::Check> {
        let changes = self.0.changes.health();
        let limiter = match &self.0.redis {
            None => keyward_api::Check {
                name: "rate_limiter",
                state: "local",
                degraded: false,
            },
            Some(r) => {
                let status = r.status();
                keyward_api::Check {
                    name: "rate_limiter",
                    state: status.as_str(),
                    degraded: status != keyward_redis::LimiterStatus::Redis,
                }
            }
        };
        vec![
            keyward_api::Check {
                name: "changes",
                state: changes.as_str(),
                degraded: changes == crate::changes::ChangeHealth::Silent,
            },
            limiter,
        ]
    }
}

/// The console's state, from the server's parts: it acts through the same
/// management service, store, clock and entropy.
fn console_state(state: &AppState) -> keyward_console::ConsoleState {
    let settings = &state.settings;
    keyward_console::ConsoleState::new(
        Arc::clone(&state.manage),
        Arc::clone(&state.store),
        Arc::clone(&state.clock),
        Arc::clone(&state.entropy),
        keyward_console::ConsoleSettings {
            console: settings.config.console.clone(),
            format: settings.format.clone(),
            catalog: settings.catalog.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            accepted: settings.config.errors.accepted.clone(),
        },
    )
}

/// Convenience: the router for `settings` over `store` with `clock`.
pub fn build_app(
    settings: Settings,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> Result<Router, ConfigError> {
    Ok(Keyward::new(settings, store, clock)?.router())
}

/// What [`edge`] reads (behind one `Arc`: the middleware clones its state
/// for every request).
struct Edge {
    settings: Arc<Settings>,
    /// Counts requests to keyward's own routes, when metrics are on.
    metrics: Option<Arc<Metrics>>,
}

/// The one middleware every request passes (one layer, not three: each
/// layer costs a boxed clone of the service per request). It gives the
/// request an `X-Request-Id` (the client's, if it sent a sane one), passed
/// on to handlers and the upstream and returned; tells extractors the body
/// limit; renders errors in the deployment's style
/// (`keyward_http::error::render_response`);
/// logs the request without its query string (keys sent there by
/// mistake must not reach the logs) and never a header; and, with metrics
/// on, counts it by the route template the router matched (the gateway's
/// fallback matches none and counts its requests itself).
async fn edge(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    let settings = &edge.settings;
    let counted = edge
        .metrics
        .as_ref()
        .and_then(|m| Some((m, req.extensions().get::<MatchedPath>()?.clone())));
    req.extensions_mut()
        .insert(BodyLimit(settings.config.http.max_body_bytes));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = req
        .extensions()
        .get::<keyward_gateway::conn::BodyProgress>()
        .cloned();
    let request_id = request_id_of(req.headers());
    req.headers_mut().insert(REQUEST_ID, request_id.clone());
    let started = Instant::now();
    let mut res = next.run(req).await;
    // A request whose body the client garbled, cut off or let stall is
    // answered for that (400 / 408), whatever the handler made of the
    // failed read; and, its body unread, its connection closes.
    let fault = body.and_then(|b| b.fault());
    let faulted = fault.is_some();
    if let Some(fault) = fault {
        if res.status().as_u16() >= 400 {
            res = fault.into_response();
        }
    }
    let mut res = finish(settings, res, &request_id, &method, &path, started);
    if let Some((metrics, route)) = counted {
        metrics.observe_http(route.as_str(), res.status().as_u16());
    }
    if faulted {
        res.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    res
}

/// The answer to a request [`admit`] refused, rendered and logged as
/// [`edge`] renders and logs every other answer.
pub(crate) fn refused<B>(
    settings: &Settings,
    req: &axum::http::Request<B>,
    error: ApiError,
) -> Response {
    let request_id = request_id_of(req.headers());
    let mut res = finish(
        settings,
        error.into_response(),
        &request_id,
        req.method(),
        req.uri().path(),
        Instant::now(),
    );
    // The rest of the exchange is not read: close rather than guess where
    // the next request begins.
    res.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    res
}

/// The client's request id if acceptable, else a new one.
fn request_id_of(headers: &axum::http::HeaderMap) -> HeaderValue {
    match headers
        .get(REQUEST_ID)
        .filter(|v| acceptable_request_id(v.as_bytes()))
    {
        Some(v) => v.clone(),
        None => request_id(),
    }
}

/// Renders an answer in the deployment's style, tags it with the request
/// id and logs it.
fn finish(
    settings: &Settings,
    res: Response,
    request_id: &HeaderValue,
    method: &Method,
    path: &str,
    started: Instant,
) -> Response {
    let mut res = keyward_http::error::render_response(&settings.config.errors, res);
    res.headers_mut().insert(REQUEST_ID, request_id.clone());
    if res.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is not read, so hyper closes the connection
        // after this response; saying so keeps clients from sending their
        // next request into a closing connection.
        res.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
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

fn request_id() -> HeaderValue {
    let id = new_request_id();
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("req_unavailable"))
}

#[cfg(test)]
mod tests {
    /// The API's real paths (what `OwnPaths` matches is the gateway's own
    /// unit test): every pattern parses, and a sample of each wins.
    #[test]
    fn keywards_own_paths_all_parse_and_win() {
        let api = keyward_api::paths();
        let own = keyward_gateway::OwnPaths::new(api.iter().copied(), Some("/console"));
        assert_eq!(own.len(), api.len(), "every own route pattern parses");
        for p in [
            "/v1/keys/key_1/rotate",
            "/openapi.json",
            "/console/t/x/keys",
        ] {
            assert!(own.contains(p), "{p}");
        }
        assert!(!own.contains("/v1/items"));
    }

    #[test]
    fn request_ids_are_distinct_and_well_formed() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| super::request_id().to_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.len() == 26
            && id.starts_with("req_")
            && id[4..].bytes().all(|b| b.is_ascii_alphanumeric())));
    }
}
