//! keyward's gateway: keyward as a reverse proxy in front of an existing
//! API. A request that matches none of keyward's own paths is matched
//! against the configured `[[routes]]` (in order); a matched route
//! authenticates the key with the same verifier as the verify API, checks
//! the route's scopes, environments and tenant path parameter, spends the
//! rate limit and credits, and then either answers from a JSON template
//! (`respond`) or forwards to the upstream.
//!
//! # A request's way through it
//! - The **fast path** ([`Gateway::serve_h1`], `h1.rs`): the server hands
//!   it each new HTTP/1 connection. Heads are parsed in place and judged by
//!   the pure codec (`h1/codec.rs`: head plan, request and response framing,
//!   the chunked decoder, the upstream and client heads); a request it takes
//!   goes through the pipeline and is forwarded over a keep-alive connection
//!   of this worker's pool (`pool.rs`). Anything else comes back as a
//!   [`Handover`] with the bytes read so far, for the server's general path.
//! - The **general path** ([`handle`], the router's fallback, `forward.rs`):
//!   hyper and axum read the request; the same pipeline runs; the request is
//!   forwarded with hyper's client, or claimed and replayed under its
//!   `Idempotency-Key` (`idempotency.rs`, the store's `IdempotencyStore`).
//! - Both call `pipeline::admit`: authenticate → route checks →
//!   (idempotency key) → spend, under one [`Policy`] snapshot
//!   ([`LivePolicy`], swapped whole on a reload).
//!
//! # Invariants
//! - The fast path and the general path answer alike: same status, error
//!   body (rendered by `keyward_http::error` with the deployment's
//!   `[errors]`), rate-limit headers, request id and forwarded headers.
//! - No credential (`Authorization`, the key header) and no client-sent
//!   identity header reaches the upstream; keyward's identity headers come
//!   from the verified key only.
//! - A connection never leaves its worker thread: the fast path and its
//!   upstream connections (a thread-local pool) stay on the thread that
//!   accepted the client.
//! - The fast path allocates no `HeaderMap`: it writes the upstream head
//!   straight from the client's bytes.
//!
//! # Public surface
//! [`Gateway`] (built from [`GatewaySettings`] and the shared services),
//! [`handle`], [`Policy`] / [`PolicyConfig`] / [`PolicyError`] /
//! [`LivePolicy`], [`OwnPaths`], the
//! configuration types in [`config`], the connection primitives in [`conn`],
//! [`idempotency`] (the header rule the management API shares),
//! [`spender`] and [`principal`].
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use keyward_core::clock::Clock;
use keyward_http::error::{ApiError, ErrorsConfig};
use keyward_limits::Limits;
use keyward_observe::Observer;
use keyward_store::IdempotencyStore;
use keyward_verify::credential::{CredentialRules, Scheme};
use keyward_verify::verifier::Verifier;
use tokio::net::TcpStream;
use tokio::sync::watch;

pub mod config;
pub mod conn;
mod forward;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod h1;
pub mod idempotency;
mod pipeline;
mod policy;
mod pool;
mod routes;
mod template;

pub use conn::{Handover, Timeouts};
pub use forward::handle;
pub use pipeline::spender;
pub use policy::{LivePolicy, Policy, PolicyConfig, PolicyError};
pub use routes::OwnPaths;
pub use template::principal;

/// The deployment facts the gateway reads, built once by the server from
/// its settings (they do not change on a reload).
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Where keys are looked for (the key header, the key format).
    pub credentials: CredentialRules,
    /// `keys.schemes`: how a key may be presented.
    pub schemes: Vec<Scheme>,
    /// `http.trusted_proxies`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `[errors]`: how errors are written.
    pub errors: ErrorsConfig,
    /// keyward's own paths, which the fast path leaves to the router.
    pub own: OwnPaths,
    /// The `[http]` connection timeouts the fast path keeps.
    pub timeouts: Timeouts,
}

/// The gateway's state: exactly what a gateway request reads.
pub struct Gateway {
    pub(crate) policy: LivePolicy,
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) store: Arc<dyn IdempotencyStore>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: GatewaySettings,
    /// Where each decided request is counted (usage, metrics).
    pub(crate) observer: Arc<Observer>,
}

impl Gateway {
    /// `store` is only called for requests with an `Idempotency-Key`.
    pub fn new(
        settings: GatewaySettings,
        policy: LivePolicy,
        verifier: Arc<Verifier>,
        limits: Arc<Limits>,
        store: Arc<dyn IdempotencyStore>,
        clock: Arc<dyn Clock>,
        observer: Arc<Observer>,
    ) -> Gateway {
        Gateway {
            policy,
            verifier,
            limits,
            store,
            clock,
            settings,
            observer,
        }
    }

    /// The request policy in force (reloadable).
    pub fn policy(&self) -> &LivePolicy {
        &self.policy
    }

    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// Whether a new HTTP/1 connection starts on the fast path, by the
    /// policy in force now.
    pub fn fast_path(&self) -> bool {
        self.policy.current().fast_path()
    }

    /// Serves `tcp` (accepted at `accepted`) on the fast path until it
    /// closes (`None`) or a request this path does not take arrives: then
    /// the connection is returned with every byte read from it and not yet
    /// answered, for the general path.
    pub async fn serve_h1(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        stop: &mut watch::Receiver<bool>,
        accepted: Instant,
    ) -> Option<Handover> {
        h1::serve(self, tcp, peer, stop, accepted).await
    }

    /// `e` as a complete HTTP/1.1 response that closes the connection (for
    /// answers outside a request: timeouts, the connection limit).
    pub fn error_bytes(&self, e: ApiError) -> Vec<u8> {
        h1::error_bytes(self, e)
    }
}

/// Closes this thread's idle upstream connections (a worker that stops).
pub fn close_idle_upstreams() {
    pool::clear();
}
