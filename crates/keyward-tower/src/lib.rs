//! keyward inside a Rust service: a tower [`Layer`](tower_layer::Layer)
//! that authenticates each request of an axum, hyper or tonic service the
//! way keyward's gateway does, and hands the handler a [`Principal`].
//!
//! ```text
//! request ─▶ path in normal form (keyward_http::path)        KeywardService
//!         ─▶ route rule (method + path template → scopes, cost, credits)  RouteTable
//!         ─▶ credential (Bearer / API-key header / Basic; keys in the
//!            query or a cookie refused: credentials_misplaced)          keyward_verify::credential
//!         ─▶ Backend: key → verdict → rate limit → credits              Remote | Embedded
//!         ─▶ Principal in the request's extensions, credential headers
//!            removed, RateLimit fields on the answer; or the denial in
//!            the deployment's error style (keyward_http::error)
//! ```
//!
//! Use: build a [`Deployment`] (the key format, header, schemes, trusted
//! proxies and `[errors]` of the keyward deployment, e.g. from its
//! `keyward.toml`), a [`RouteTable`], and a backend —
//! [`remote::Remote`] (the verify API, with a local cache keyed by the
//! key's SHA-256 and invalidated by the change feed `GET /v1/changes`) or
//! [`embedded::Embedded`] (the service opens keyward's store and runs the
//! verifier itself) — then `router.layer(KeywardLayer::new(…))`. Handlers
//! take [`Principal`], or [`RequireScopes`] for per-handler scope checks.
//!
//! # Invariants
//! - A request is refused exactly as the gateway refuses it: the same
//!   credential rules, the same checks in the same order (revoked →
//!   enabled → expiry → IP → scopes → rate limit → credits), the same
//!   status, body and headers (rendered by `keyward_http::error`).
//! - Denials cost nothing: rate limits and credits are spent only after
//!   every other check passed.
//! - No secret is stored or logged: the cache is keyed by the key's
//!   SHA-256, handlers never see the credential headers, and the root key
//!   of the remote backend prints `<redacted>`.
//! - A cache hit of the remote backend makes no network call and takes no
//!   lock but a shard's read lock and the rate limiter's shard.
#![forbid(unsafe_code)]

mod backend;
mod config;
pub mod embedded;
mod follow;
mod layer;
mod principal;
pub mod remote;
mod routes;

pub use backend::{Admitted, Backend, Demand, Refused};
pub use config::{ConfigError, Deployment, DeploymentConfig};
pub use keyward_http::error::ApiError;
/// The wire types the principal is made of.
pub use keyward_wire as wire;
pub use layer::{KeywardFuture, KeywardLayer, KeywardService};
pub use principal::{Principal, RequireScopes, ScopeList};
pub use routes::{RouteError, RouteTable, Rule};
