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
        event: None,
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

/// A feed connection that dies without a word (a dropped route, a frozen
/// host: no FIN, no RST) is noticed within three poll intervals (at least
/// 3 s) thanks to the node's own pings, and replaced when the way is open
/// again; meanwhile the poll carries the changes.
#[tokio::test]
async fn a_feed_that_goes_silent_is_noticed_and_replaced() {
    let url = fresh_store_url(Backend::Postgres).await;
    let parsed = reqwest::Url::parse(&url).unwrap();
    let target: std::net::SocketAddr = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port_or_known_default().unwrap()
    )
    .parse()
    .unwrap();
    let proxy = crate::kit::cluster::TcpProxy::start(target).await;
    let mut via = parsed.clone();
    via.set_port(Some(proxy.addr.port())).unwrap();
    via.set_host(Some("127.0.0.1")).unwrap();
    // In clear, so the proxy can read the connection's name.
    via.query_pairs_mut().append_pair("sslmode", "disable");
    let node = format!("silent-{}", crate::kit::cluster::tag());
    let mut config = default_config();
    config.changes.poll_interval_ms = 200;
    config.changes.max_silence_seconds = 600;
    config.credits.node_id = Some(node.clone());
    let s = Server::start_on(
        Arc::new(SqlStore::open(via.as_str()).await.unwrap()),
        config,
        ManualClock::starting_now(),
    )
    .await;
    let wait_for = |want: &'static str, bound: Duration| {
        let s = &s;
        async move {
            let start = Instant::now();
            while changes(s).await != want {
                assert!(start.elapsed() < bound, "not {want} within {bound:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            start.elapsed()
        }
    };
    wait_for("listening", Duration::from_secs(10)).await;
    // Quiet for a while: pings keep a live feed from being taken for dead.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(changes(&s).await, "listening");

    proxy.freeze_connections_naming(Some(&format!("keyward-changes/{node}")));
    let noticed = wait_for("polling", Duration::from_secs(8)).await;
    println!("a silent feed was noticed after {noticed:?}");
    // Changes still arrive, through the poll.
    let tenant = s.tenant("Acme").await;
    let (id, secret) = s.key(&tenant, "k", json!({})).await;
    assert_eq!(s.get("/v1/me", &secret).await.status, StatusCode::OK);
    let other = SqlStore::open(&url).await.unwrap();
    other.revoke_key(&id, None, &audit(&id)).await.unwrap();
    refused_within(&s, &secret, Duration::from_secs(3)).await;

    proxy.freeze_connections_naming(None);
    wait_for("listening", Duration::from_secs(10)).await;
    other.close().await;
    s.shutdown().await;
}

async fn changes(s: &Server) -> serde_json::Value {
    let r = s.call(reqwest::Method::GET, "/v1/ready", None, None).await;
    r.body["checks"]["changes"].clone()
}
