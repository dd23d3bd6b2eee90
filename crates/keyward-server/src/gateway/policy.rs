//! The request policy in force, as one snapshot: the compiled routes, the
//! rate-limit tiers, and every `[gateway]` and `[idempotency]` setting a
//! request reads. [`Policy::compile`] is the one function that builds it
//! from a checked configuration; [`LivePolicy`] holds the one in force and
//! swaps a new one in whole on `SIGHUP`, so a request never sees routes of
//! one configuration with tiers or gateway settings of another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::http::Method;

use super::{RouteTable, UpstreamClient};
use crate::config::UpstreamProtocol;
use crate::config::{Config, ConfigError, GatewayConfig, IdempotencyConfig, Settings};
use crate::limits::Tiers;

/// One compiled configuration of the request path.
pub struct Policy {
    /// Bumped by every reload (0 at start).
    pub generation: u64,
    /// `[[routes]]` and `[gateway]`, compiled.
    pub routes: RouteTable,
    /// `[limits]`, compiled: route costs were checked against these.
    pub tiers: Tiers,
    /// `[idempotency]` as configured.
    pub idempotency: IdempotencyConfig,
    /// `idempotency.methods`, parsed.
    pub(crate) idempotent_methods: Vec<Method>,
    /// The general path's client to the upstream (its protocol and connect
    /// timeout are `[gateway]` settings).
    pub(crate) client: UpstreamClient,
}

impl Policy {
    /// Compiles the request policy of `settings` (a configuration already
    /// checked by [`Settings::from_config`]): tiers, then routes (whose
    /// costs must fit these tiers), then the rest. Every error names the
    /// setting.
    pub fn compile(settings: &Settings) -> Result<Policy, ConfigError> {
        Policy::compile_as(settings, 0)
    }

    fn compile_as(settings: &Settings, generation: u64) -> Result<Policy, ConfigError> {
        let config = &settings.config;
        let tiers = Tiers::compile(&config.limits)?;
        let routes = RouteTable::compile(config, &settings.catalog, &tiers)?;
        let idempotent_methods = config
            .idempotency
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .collect();
        Ok(Policy {
            generation,
            routes,
            tiers,
            idempotency: config.idempotency.clone(),
            idempotent_methods,
            client: super::client(config),
        })
    }

    /// The `[gateway]` settings in force.
    pub fn gateway(&self) -> &GatewayConfig {
        &self.routes.gateway
    }

    /// Whether new HTTP/1 connections start on the fast path: it is on, and
    /// it speaks HTTP/1.1 to the upstream (an h2c upstream is served by
    /// the general path's HTTP/2 client).
    pub(crate) fn fast_path(&self) -> bool {
        let g = self.gateway();
        g.fast_path && g.upstream_protocol == UpstreamProtocol::Http1
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

/// The policy in force, replaceable while serving (`SIGHUP`): requests in
/// flight keep the snapshot they started with. The generation number lets
/// a long-lived connection keep its copy until it changes, instead of
/// taking the lock (a cache line both cores write) per request.
#[derive(Clone)]
pub struct LivePolicy(Arc<Live>);

struct Live {
    policy: RwLock<Arc<Policy>>,
    generation: AtomicU64,
    /// The configuration the server started with: what a reload may not
    /// change is compared against it.
    started: Arc<Settings>,
    /// One reload at a time.
    reloading: Mutex<()>,
}

impl LivePolicy {
    pub fn new(policy: Policy, started: Arc<Settings>) -> LivePolicy {
        LivePolicy(Arc::new(Live {
            generation: AtomicU64::new(policy.generation),
            policy: RwLock::new(Arc::new(policy)),
            started,
            reloading: Mutex::new(()),
        }))
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<Policy> {
        Arc::clone(&self.0.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The generation in force (one atomic load).
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Checks `config` completely and, only if it is valid and changes
    /// nothing that needs a restart, swaps in its routes, tiers, `[gateway]`
    /// and `[idempotency]` settings together. On error the running policy
    /// stays. Returns the number of routes now in force.
    pub fn reload(&self, config: Config) -> Result<usize, ReloadError> {
        let _one = self.0.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let restart = self.0.started.config.restart_only_changes(&config);
        if !restart.is_empty() {
            return Err(ReloadError::NeedsRestart(restart));
        }
        let settings = Settings::from_config(config)?;
        let policy = Policy::compile_as(&settings, self.generation().wrapping_add(1))?;
        let n = policy.routes.len();
        let mut slot = self.0.policy.write().unwrap_or_else(|p| p.into_inner());
        self.0
            .generation
            .store(policy.generation, Ordering::Release);
        // Under the write lock, so a reader that sees the new generation
        // also gets the new policy.
        *slot = Arc::new(policy);
        Ok(n)
    }
}
