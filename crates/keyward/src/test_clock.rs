//! A clock that end-to-end tests can move forward, for grace periods and
//! session expiry against the real binary.
//!
//! Enabled only by the hidden `keyward serve --test-clock-listen ADDR` flag,
//! which must name a loopback address: the clock is then the wall clock
//! plus an offset, and a second listener on ADDR (not the main one) answers
//! `POST /advance?seconds=N` and `GET /now`. Anyone who can reach that
//! listener can move the server's time, so it is never for production; the
//! server logs a warning at start when it is on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::extract::Query;
use axum::routing::{get, post};
use axum::Router;
use keyward_core::clock::{Clock, SystemClock, Timestamp};
use serde_json::{json, Value};

/// The wall clock plus an offset that only grows.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        Timestamp(
            SystemClock
                .now()
                .0
                .saturating_add(self.offset_ms.load(Ordering::SeqCst)),
        )
    }
}

#[derive(serde::Deserialize)]
struct Advance {
    seconds: i64,
}

/// Binds the control listener and serves it in the background.
pub async fn start(addr: SocketAddr, clock: Arc<OffsetClock>) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!("--test-clock-listen must be a loopback address such as 127.0.0.1:0, not {addr}");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the test clock"))?;
    tracing::warn!(
        address = %listener.local_addr()?,
        "Test clock enabled: anyone who can reach this address can move the server's time. Never use this in production."
    );
    let now_clock = Arc::clone(&clock);
    let app = Router::new()
        .route(
            "/now",
            get(move || {
                let c = Arc::clone(&now_clock);
                async move { axum::Json(json!({ "now": c.now().to_rfc3339() })) }
            }),
        )
        .route(
            "/advance",
            post(move |Query(a): Query<Advance>| {
                let c = Arc::clone(&clock);
                async move {
                    if a.seconds < 0 {
                        return axum::Json(
                            json!({ "error": "time only moves forward: seconds must be >= 0" }),
                        );
                    }
                    c.offset_ms
                        .fetch_add(a.seconds.saturating_mul(1000), Ordering::SeqCst);
                    axum::Json::<Value>(json!({ "now": c.now().to_rfc3339() }))
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "Test clock listener failed.");
        }
    });
    Ok(())
}
