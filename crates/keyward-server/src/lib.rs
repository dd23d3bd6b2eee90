//! keyward's HTTP server as a library.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use keyward_core::clock::SystemClock;
//! use keyward_server::{config::{Config, Settings}, Keyward};
//! use keyward_store::SqlStore;
//!
//! let settings = Settings::from_config(Config::default())?;
//! let store = SqlStore::open("sqlite://keyward.db").await?;
//! let server = Keyward::new(settings, Arc::new(store), Arc::new(SystemClock))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! Map: [`config`] (TOML + env → [`config::Settings`]), [`credential`]
//! (finding the key in a request), [`verifier`] (the cached hot path),
//! [`api`] (handlers), [`error`] (the one place errors become HTTP),
//! [`usage`] (batched last-use writes), [`limits`] (rate limits and
//! credits), [`idempotency`] (replayed retries), [`openapi`], [`app`] (wiring),
//! and the developer console at `/console` ([`console`], the
//! `keyward-console` crate).
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod bootstrap;
pub mod config;

pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod invalidate;
pub mod openapi;
mod serve;

pub use app::{build_app, AppState, Keyward, ReloadError};
/// The gateway (crate `keyward-gateway`), under its old path.
pub use keyward_gateway as gateway;
/// Idempotent retries (the header rule the credits API shares).
pub use keyward_gateway::idempotency;
// The verify crate's modules under their old paths, for the server's own
// modules and the benches.
pub use keyward_limits as limits;
// The console, a crate of its own, under its old path.
pub use keyward_console as console;
pub use keyward_verify::{credential, verifier};
