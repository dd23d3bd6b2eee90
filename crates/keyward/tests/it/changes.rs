//! Changes made elsewhere reach a running node's key cache: written straight
//! into the store (another process, the CLI) on SQLite, and made on another
//! node over PostgreSQL, where the live feed brings them long before the
//! next poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::clock::ManualClock;
use keyward_store::{AuditEntry, KeyStore, SqlStore};
use reqwest::StatusCode;
use serde_json::json;

use crate::kit::{default_config, fresh_store_url, Backend, Server};

/// Polls `/v1/me` with `secret` on `s` until it is refused; the time it took.
async fn refused_within(s: &Server, secret: &str, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = s.get("/v1/me", secret).await;
        if r.status == StatusCode::UNAUTHORIZED {
            assert_eq!(r.body["code"], "revoked_api_key", "{:?}", r.body);
            return start.elapsed();
        }
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert!(
            start.elapsed() < bound,
            "still accepted {bound:?} after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn audit(target: &str) -> AuditEntry {
    AuditEntry {
        id: format!("evt_direct_{target}"),
        at: 1,
        actor: "host".into(),
        actor_ip: None,
        tenant_id: None,
        action: "key.revoked".into(),
        target: target.into(),
        details: json!({}),
    }
}

#[tokio::test]
async fn a_revocation_written_straight_into_sqlite_reaches_the_running_node() {
    let url = fresh_store_url(Backend::Sqlite).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let mut config = default_config();
    config.changes.poll_interval_ms = 100;
    let s = Server::start_on(store, config, ManualClock::starting_now()).await;
    let tenant = s.tenant("Acme").await;
    let (id, secret) = s.key(&tenant, "backend", json!({})).await;
    // Cached now.
    assert_eq!(s.get("/v1/me", &secret).await.status, StatusCode::OK);

    // Another writer (the CLI, another process) on the same file: the
    // server's management service never hears of it.
    let other = SqlStore::open(&url).await.unwrap();
    other
        .revoke_key(&id, Some("leaked"), &audit(&id))
        .await
        .unwrap();
    let took = refused_within(&s, &secret, Duration::from_secs(3)).await;
    println!("direct SQLite revocation refused after {took:?}");
    other.close().await;
    s.shutdown().await;
}

#[tokio::test]
async fn a_revocation_on_one_postgres_node_reaches_another_before_any_poll() {
    let url = fresh_store_url(Backend::Postgres).await;
    let mut config = default_config();
    // Polls too rare to matter: only the live feed can be this fast.
    config.changes.poll_interval_ms = 60_000;
    config.changes.max_silence_seconds = 600;
    let a = Server::start_on(
        Arc::new(SqlStore::open(&url).await.unwrap()),
        config.clone(),
        ManualClock::starting_now(),
    )
    .await;
    let b = Server::start_on(
        Arc::new(SqlStore::open(&url).await.unwrap()),
        config,
        ManualClock::starting_now(),
    )
    .await;
    // Both nodes listening.
    for node in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = node
                .call(reqwest::Method::GET, "/v1/ready", None, None)
                .await;
            if r.body["checks"]["changes"] == "listening" {
                assert_eq!(r.body["status"], "ready");
                break;
            }
            assert!(Instant::now() < deadline, "not listening: {:?}", r.body);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let tenant = a.tenant("Acme").await;
    let mut delays = Vec::new();
    for i in 0..20 {
        let (id, secret) = a.key(&tenant, &format!("k{i}"), json!({})).await;
        // B caches the key.
        assert_eq!(b.get("/v1/me", &secret).await.status, StatusCode::OK);
        let r = a
            .post(&format!("/v1/keys/{id}/revoke"), &a.root, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        delays.push(refused_within(&b, &secret, Duration::from_secs(2)).await);
    }
    delays.sort();
    println!(
        "revocation on A refused on B (feed only): p50={:?} max={:?}",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    // A tenant change clears B's cache too (cached principals carry the
    // tenant's name).
    let (_, secret) = a.key(&tenant, "named", json!({})).await;
    assert_eq!(b.get("/v1/me", &secret).await.body["tenant_name"], "Acme");
    let r = a
        .patch(
            &format!("/v1/tenants/{tenant}"),
            &a.root,
            json!({"name": "Acme II"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.get("/v1/me", &secret).await.body["tenant_name"] != "Acme II" {
        assert!(
            Instant::now() < deadline,
            "B still shows the old tenant name"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}
