//! The request policy in force, as one snapshot: the compiled routes, the
//! rate-limit tiers, and every `[gateway]` and `[idempotency]` setting a
//! request reads. [`Policy::compile`] is the one function that builds it
//! from a checked configuration; [`LivePolicy`] holds the one in force and
//! swaps a new one in whole on `SIGHUP`, so a request never sees routes of
//! one configuration with tiers or gateway settings of another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use std::collections::BTreeMap;

use axum::http::Method;
use keyward_core::scope::ScopeCatalog;
use keyward_limits::{LimitsConfig, Tiers};

use crate::config::{GatewayConfig, IdempotencyConfig, RouteConfig, UpstreamProtocol};
use crate::forward::UpstreamClient;
use crate::routes::RouteTable;

/// What a [`Policy`] is compiled from: the gateway's own sections and the
/// deployment facts its routes are checked against (borrowed from the
/// server's configuration, already checked there).
#[derive(Debug, Clone, Copy)]
pub struct PolicyConfig<'a> {
    /// `[gateway]`.
    pub gateway: &'a GatewayConfig,
    /// `[[routes]]`.
    pub routes: &'a [RouteConfig],
    /// `[limits]`: the tiers, which every route's cost must fit.
    pub limits: &'a LimitsConfig,
    /// `[idempotency]`.
    pub idempotency: &'a IdempotencyConfig,
    /// `keys.scopes`: a route's scopes must be grantable.
    pub catalog: &'a ScopeCatalog,
    /// `keys.environments`: a route's environments must exist.
    pub environments: &'a BTreeMap<String, String>,
    /// `keys.header`: the credential header, never forwarded.
    pub key_header: &'a str,
}

/// A setting the policy refuses, by name (`routes[0] (/a)`,
/// `gateway.upstream`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct PolicyError {
    pub setting: String,
    pub message: String,
}

impl From<keyward_limits::TierError> for PolicyError {
    fn from(e: keyward_limits::TierError) -> PolicyError {
        PolicyError {
            setting: e.setting,
            message: e.message,
        }
    }
}

pub(crate) fn invalid(setting: impl Into<String>, message: impl ToString) -> PolicyError {
    PolicyError {
        setting: setting.into(),
        message: message.to_string(),
    }
}

/// One compiled configuration of the request path.
pub struct Policy {
    /// Bumped by every reload (0 at start).
    pub generation: u64,
    /// `[[routes]]` and `[gateway]`, compiled.
    pub(crate) routes: RouteTable,
    /// `[limits]`, compiled: route costs were checked against these.
    pub tiers: Tiers,
    /// `[idempotency]` as configured.
    pub(crate) idempotency: IdempotencyConfig,
    /// `idempotency.methods`, parsed.
    pub(crate) idempotent_methods: Vec<Method>,
    /// The general path's client to the upstream (its protocol and connect
    /// timeout are `[gateway]` settings).
    pub(crate) client: UpstreamClient,
}

impl Policy {
    /// Compiles the request policy of `config`: tiers, then routes (whose
    /// costs must fit these tiers), then the rest. Every error names the
    /// setting. The generation is 0; [`LivePolicy::reload`] numbers the
    /// ones it swaps in.
    pub fn compile(config: &PolicyConfig<'_>) -> Result<Policy, PolicyError> {
        let tiers = Tiers::compile(config.limits)?;
        let routes = RouteTable::compile(config, &tiers)?;
        let idempotent_methods = config
            .idempotency
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .collect();
        Ok(Policy {
            generation: 0,
            routes,
            tiers,
            idempotency: config.idempotency.clone(),
            idempotent_methods,
            client: crate::forward::client(config.gateway),
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

/// The policy in force, replaceable while serving (`SIGHUP`): requests in
/// flight keep the snapshot they started with. The generation number lets
/// a long-lived connection keep its copy until it changes, instead of
/// taking the lock (a cache line both cores write) per request.
#[derive(Clone)]
pub struct LivePolicy(Arc<Live>);

struct Live {
    policy: RwLock<Arc<Policy>>,
    generation: AtomicU64,
    /// One reload at a time.
    reloading: Mutex<()>,
}

impl LivePolicy {
    pub fn new(policy: Policy) -> LivePolicy {
        LivePolicy(Arc::new(Live {
            generation: AtomicU64::new(policy.generation),
            policy: RwLock::new(Arc::new(policy)),
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

    /// Swaps in the policy `compile` builds (it checks the new
    /// configuration completely, and refuses what needs a restart), with
    /// the next generation number: routes, tiers, `[gateway]` and
    /// `[idempotency]` settings change together. On error the running
    /// policy stays. One reload runs at a time. Returns the number of
    /// routes now in force.
    pub fn reload<E>(&self, compile: impl FnOnce() -> Result<Policy, E>) -> Result<usize, E> {
        let _one = self.0.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let mut policy = compile()?;
        policy.generation = self.generation().wrapping_add(1);
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
