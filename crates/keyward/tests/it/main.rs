//! keyward's integration tests: one binary (every extra test binary costs
//! minutes to link on small machines). DO NOT add more `[[test]]` targets;
//! add a module here instead.
//!
//! Every test talks real HTTP over loopback to a real server on a real
//! store. PostgreSQL tests need the server at `KEYWARD_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`) and fail loudly if it
//! is unreachable.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod api;
mod bad_input;
mod changes;
mod cli;
mod cluster;
mod console;
mod edge;
mod fast_path;
mod gateway;
mod hardening_cache;
mod kit;
mod leaks;
mod library;
mod limits;
mod messages;
mod metrics;
mod openapi;
mod paths;
mod privilege;
mod process;
mod readme;
mod scan;
mod seeds;
mod setup;
mod store;
mod typed_client;
mod upstream;
mod usage;
mod webhooks;
mod webhooks_cli;
