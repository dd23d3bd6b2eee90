//! keyward-redis's integration tests: one binary, a module per area.
//!
//! They run against real Redis servers: the shared one at
//! `KEYWARD_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), which must be
//! up (the tests fail loudly otherwise), each test under a key prefix of its
//! own; and, for the failure tests, `redis-server` processes the tests start
//! and kill themselves (`/usr/bin/redis-server`, or `KEYWARD_TEST_REDIS_SERVER`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod arithmetic;
mod exact;
mod failure;
mod kit;
