//! keyward's HTTP server as a library: it reads the configuration and wires
//! the other crates into one server. The behaviour lives in those crates —
//! the management API (`keyward-api`), the developer console
//! (`keyward-console`), the gateway (`keyward-gateway`), key verification
//! (`keyward-verify`), rate limits and credits (`keyward-limits`), error
//! rendering and the edge rules (`keyward-http`) — and this crate builds
//! each one's state over one store, clock and management service, merges
//! their routers, and serves them.
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
//! Map: [`config`] (TOML + env → [`config::Settings`], composing the
//! crates' own configuration types), [`Keyward`] (wiring: every crate's
//! state, the router, the edge middleware, background tasks, reload and
//! shutdown), the connection loop behind [`Keyward::serve`] (HTTP/1 fast
//! path, HTTP/2, connection limits), [`bootstrap`] (the first root key, the
//! management service for the CLI), and the invalidation of cached keys
//! after a management change.
#![forbid(unsafe_code)]

mod app;
pub mod bootstrap;
mod changes;
pub mod config;
mod invalidate;
mod leaks;
mod metrics;
mod serve;
mod webhooks;

pub use app::{build_app, AppState, Keyward, ReloadError};
