//! Issue 10, items 7, 8 and 10, over real HTTP: keys sent in a cookie or
//! the query string beside a valid one are refused and never reach the
//! upstream; a flood of made-up keys neither evicts known keys nor queues
//! without bound; idempotency records are bounded per API key.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::clock::ManualClock;
use keyward_core::secret::{KeyKind, OsEntropy};
use keyward_server::config::{Config, Settings};
use keyward_store::{AuditEntry, KeyStore, SqlStore};
use reqwest::StatusCode;
use serde_json::json;

use crate::kit::{config_from_toml, fresh_store_url, Backend, Reply, Server};
use crate::upstream;

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

fn gateway_config(upstream: &str, fast_path: bool) -> Config {
    let mut c = config_from_toml(&format!(
        r#"
[keys]
scopes = ["vox:read"]

[gateway]
upstream = "{upstream}"
timeout_ms = 3000

[[routes]]
path = "/api/{{*rest}}"

[[routes]]
path = "/public/{{*rest}}"
auth = false
"#
    ));
    c.gateway.fast_path = fast_path;
    c
}

/// A checksum-valid key of `kind` that no store holds (anyone can make one).
fn made_up(config: &Config, kind: KeyKind) -> String {
    let settings = Settings::from_config(config.clone()).unwrap();
    settings
        .format
        .generate(&kind, &OsEntropy)
        .unwrap()
        .expose()
        .to_owned()
}

fn live() -> KeyKind {
    KeyKind::Environment("live".into())
}

/// `%XX` for every `_` (keys are otherwise URL-safe): the form a browser or
/// a client library may send.
fn encoded(key: &str) -> String {
    key.replace('_', "%5F")
}

#[tokio::test]
async fn keys_beside_a_valid_one_in_cookies_or_queries_are_refused_on_both_gateway_paths() {
    let up = upstream::start().await;
    let url = fresh_store_url(Backend::Sqlite).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let clock = ManualClock::starting_now();
    let fast = Server::start_on(
        Arc::clone(&store),
        gateway_config(&up.url, true),
        clock.clone(),
    )
    .await;
    let general = Server::start_on(store, gateway_config(&up.url, false), clock).await;
    let t = fast.tenant("Acme").await;
    let (_, secret) = fast.key(&t, "caller", json!({})).await;
    let (_, other) = fast.key(&t, "other", json!({})).await;
    let config = gateway_config(&up.url, true);
    let stranger = made_up(&config, live());
    let root_shaped = made_up(&config, KeyKind::Root);
    let twice = secret.replace('_', "%255F");

    // (path and query, [(header, value)]) with a valid key in its header.
    let bearer = format!("Bearer {secret}");
    let cases: Vec<(String, Vec<(&str, String)>)> = vec![
        (
            "/api/a".into(),
            vec![("cookie", format!("session={secret}"))],
        ),
        (
            "/api/a".into(),
            vec![("cookie", format!("theme=dark; sid=\"{stranger}\"; lang=en"))],
        ),
        (
            "/api/a".into(),
            vec![
                ("cookie", "theme=dark".into()),
                ("cookie", format!("b={}", encoded(&root_shaped))),
            ],
        ),
        ("/api/a".into(), vec![("cookie", format!("x={twice}"))]),
        (format!("/api/a?q={other}"), vec![]),
        (format!("/api/a?a=1&q={}&b=2", encoded(&stranger)), vec![]),
        (
            format!("/api/a?next=%2Fhome%3Fk%3D{}", encoded(&secret)),
            vec![],
        ),
        // The header scheme, too.
        (
            "/api/a".into(),
            vec![
                ("x-api-key", secret.clone()),
                ("cookie", format!("s={other}")),
            ],
        ),
        // Routes without auth check no key, but forward none either.
        (
            "/public/a".into(),
            vec![("cookie", format!("session={secret}"))],
        ),
        (format!("/public/a?q={}", encoded(&stranger)), vec![]),
    ];
    // A connection of its own per request: one the fast path handed over
    // stays with the general path.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for s in [&fast, &general] {
        for (target, headers) in &cases {
            let mut req = fresh.get(s.url(target));
            if !headers.iter().any(|(n, _)| *n == "x-api-key") {
                req = req.header("authorization", &bearer);
            }
            for (n, v) in headers {
                req = req.header(*n, v);
            }
            let r = Reply::from(req.send().await.unwrap()).await;
            r.assert_problem(400, "credentials_misplaced");
        }
    }
    assert!(
        up.seen().is_empty(),
        "the upstream saw a refused request: {:?}",
        up.seen()
    );

    // Ordinary cookies and queries still pass, on both paths.
    for s in [&fast, &general] {
        let r = s
            .http
            .get(s.url("/api/ok?page=2&q=kw_live_short"))
            .bearer_auth(&secret)
            .header("cookie", "theme=dark; sid=abc123")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|s| s.headers["cookie"] == "theme=dark; sid=abc123"));
    let all = format!("{seen:?}");
    for k in [&secret, &other, &stranger, &root_shaped] {
        assert!(!all.contains(k.as_str()), "the upstream saw a key");
    }
}

#[tokio::test]
async fn keys_in_cookies_or_queries_are_refused_by_the_management_and_verify_api() {
    let s = Server::start().await;
    let t = s.tenant("Acme").await;
    let (_, secret) = s.key(&t, "k", json!({})).await;
    let get = |path: &str, cookie: Option<String>| {
        let mut req = s.http.get(s.url(path)).bearer_auth(&s.root);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async { Reply::from(req.send().await.unwrap()).await }
    };
    get("/v1/keys", Some(format!("a=1; b={secret}")))
        .await
        .assert_problem(400, "credentials_misplaced");
    get(&format!("/v1/keys?limit=5&x={}", encoded(&secret)), None)
        .await
        .assert_problem(400, "credentials_misplaced");
    let r = s
        .http
        .post(s.url(&format!("/v1/keys/verify?k={secret}")))
        .header("x-api-key", &s.root)
        .json(&json!({ "key": secret }))
        .send()
        .await
        .unwrap();
    Reply::from(r)
        .await
        .assert_problem(400, "credentials_misplaced");
    // The key in the verify body is where it belongs.
    assert_eq!(s.verify(&secret, json!({})).await["valid"], true);
    assert_eq!(
        get("/v1/keys?limit=5", Some("theme=dark".into()))
            .await
            .status,
        StatusCode::OK
    );
}

fn audit(action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        id: format!("evt_{action}_{target}"),
        at: 1,
        actor: "another-node".into(),
        actor_ip: None,
        tenant_id: None,
        action: action.into(),
        target: target.into(),
        details: json!({}),
        event: None,
    }
}

/// Sends `keys` to the verify API, `width` at a time; the replies.
async fn verify_all(s: &Server, keys: Vec<String>, width: usize) -> Vec<Reply> {
    let mut replies = Vec::new();
    for chunk in keys.chunks(width) {
        let mut calls = tokio::task::JoinSet::new();
        for k in chunk {
            let req = s
                .http
                .post(s.url("/v1/keys/verify"))
                .bearer_auth(&s.root)
                .json(&json!({ "key": k }));
            calls.spawn(async move { Reply::from(req.send().await.unwrap()).await });
        }
        while let Some(r) = calls.join_next().await {
            replies.push(r.unwrap());
        }
    }
    replies
}

#[tokio::test]
async fn a_flood_of_made_up_keys_never_evicts_known_keys() {
    let url = fresh_store_url(Backend::Sqlite).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let mut config = crate::kit::default_config();
    // Room for 100 known keys a shard, 10 unknown hashes a shard.
    config.cache.capacity = 1_600;
    config.cache.negative_capacity = 160;
    // The change log is read once, at start, so the revocations below
    // reach this node only if an entry leaves the cache.
    config.changes.poll_interval_ms = 3_600_000;
    config.changes.max_silence_seconds = 7_200;
    let s = Server::start_on(
        Arc::clone(&store),
        config.clone(),
        ManualClock::starting_now(),
    )
    .await;
    let t = s.tenant("Acme").await;
    let mut known = Vec::new();
    for i in 0..20 {
        known.push(s.key(&t, &format!("k{i}"), json!({})).await);
    }
    for (_, secret) in &known {
        assert_eq!(s.verify(secret, json!({})).await["valid"], true);
    }
    // Another node revokes them all; this node is not told, so
    // while an entry stays cached the key still verifies here. A key that
    // left the cache would be read again and found revoked.
    let other_node = SqlStore::open(&url).await.unwrap();
    for (id, _) in &known {
        other_node
            .revoke_key(id, Some("test"), &audit("key.revoked", id))
            .await
            .unwrap();
    }
    let flood: Vec<String> = (0..3_000).map(|_| made_up(&config, live())).collect();
    for r in verify_all(&s, flood, 32).await {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["code"], "invalid_api_key");
    }
    for (id, secret) in &known {
        let r = s.verify(secret, json!({})).await;
        assert_eq!(r["valid"], true, "{id} was evicted by unknown keys: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_are_shed_while_the_store_is_stuck_and_known_keys_still_pass() {
    use sqlx::Connection;
    let url = fresh_store_url(Backend::Postgres).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let mut config = crate::kit::default_config();
    config.cache.max_pending_loads = 4;
    let s = Server::start_on(store, config.clone(), ManualClock::starting_now()).await;
    let t = s.tenant("Acme").await;
    let (_, known) = s.key(&t, "known", json!({})).await;
    assert_eq!(s.verify(&known, json!({})).await["valid"], true);

    // Another session holds the keys table: every store read of a key waits.
    let mut locker = sqlx::AnyConnection::connect(&url).await.unwrap();
    let mut tx = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();

    let base = s.base.clone();
    let root = s.root.clone();
    let send = move |key: String| {
        let (base, root) = (base.clone(), root.clone());
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/v1/keys/verify"))
                .bearer_auth(&root)
                .json(&json!({ "key": key }))
                .send()
                .await
                .unwrap();
            Reply::from(r).await
        })
    };
    // The first read is stuck; then the bounded lane fills up.
    let first = send(made_up(&config, live()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut flood = Vec::new();
    for _ in 0..30 {
        flood.push(send(made_up(&config, live())));
    }
    // Those that found the lane full are answered at once; the others wait.
    let deadline = tokio::time::Instant::now() + WAIT;
    while flood.iter().filter(|h| h.is_finished()).count() < 26 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "at most 4 distinct unknown keys wait, but only {} of 30 were shed",
            flood.iter().filter(|h| h.is_finished()).count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (A moment more, for a straggler on a busy machine.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (shed, waiting): (Vec<_>, Vec<_>) = flood.into_iter().partition(|h| h.is_finished());
    for h in shed {
        let r = h.await.unwrap();
        r.assert_problem(503, "overloaded");
        assert_eq!(r.headers["retry-after"], "1");
    }
    assert!(waiting.len() <= 4, "the bounded lane holds 4");
    // A known key is answered from memory all the while.
    let r = tokio::time::timeout(WAIT, s.verify(&known, json!({})))
        .await
        .expect("a known key does not wait behind unknown ones");
    assert_eq!(r["valid"], true);

    tx.rollback().await.unwrap();
    let r = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["code"], "invalid_api_key");
    for h in waiting {
        let r = tokio::time::timeout(WAIT, h).await.unwrap().unwrap();
        if r.status == StatusCode::OK {
            assert_eq!(r.body["code"], "invalid_api_key");
        } else {
            // Only a straggler that was shed after all.
            r.assert_problem(503, "overloaded");
        }
    }
    // A real key nobody presented before still verifies.
    let (_, new) = s.key(&t, "new", json!({})).await;
    assert_eq!(s.verify(&new, json!({})).await["valid"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_records_are_bounded_per_api_key() {
    let up = upstream::start().await;
    let mut config = config_from_toml(&format!(
        r#"
[keys]
scopes = ["vox:read"]

[gateway]
upstream = "{}"

[idempotency]
max_records_per_key = 2

[[routes]]
methods = ["POST"]
path = "/create/{{*rest}}"
"#,
        up.url
    ));
    config.gateway.timeout_ms = 10_000;
    let s = Server::start_with(Backend::Sqlite, config).await;
    let t = s.tenant("Acme").await;
    let (_, secret) = s.key(&t, "caller", json!({})).await;
    let (_, other) = s.key(&t, "other", json!({})).await;
    let post = |key: &str, idem: &str, path: &str| {
        let req = s
            .http
            .post(s.url(path))
            .bearer_auth(key)
            .header("Idempotency-Key", idem)
            .json(&json!({ "n": idem }));
        async { Reply::from(req.send().await.unwrap()).await }
    };
    let executions = || {
        up.seen()
            .iter()
            .filter(|r| r.uri.starts_with("/create"))
            .count()
    };
    let wait_for = |n: usize| async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        while executions() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "upstream saw {}",
                executions()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // Two requests in flight fill the quota.
    let slow = "/create/sleep/3000";
    let (first, second, ()) = tokio::join!(
        post(&secret, "k1", slow),
        async {
            wait_for(1).await;
            s.clock.advance_seconds(1);
            post(&secret, "k2", slow).await
        },
        async {
            wait_for(2).await;
            // A third is refused: nothing is forwarded, nothing kept.
            let r = post(&secret, "k3", "/create/fast").await;
            r.assert_problem(429, "idempotency_quota_exceeded");
            assert_eq!(r.headers["retry-after"], "1");
            assert_eq!(executions(), 2);
            // Another API key has a quota of its own.
            assert_eq!(
                post(&other, "k3", "/create/fast").await.status,
                StatusCode::CREATED
            );
            s.clock.advance_seconds(1);
        }
    );
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_eq!(executions(), 3);

    // Completed, the oldest record (k1) makes room for k3.
    let r = post(&secret, "k3", "/create/fast").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.headers.get("idempotent-replayed").is_none());
    assert_eq!(executions(), 4);
    // k2 is still replayed.
    let r = post(&secret, "k2", slow).await;
    assert_eq!(r.headers["idempotent-replayed"], "true");
    assert_eq!(r.body, second.body);
    assert_eq!(executions(), 4);
    // k1 was dropped: a retry of it runs again (the quota's price).
    let r = post(&secret, "k1", "/create/fast").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.headers.get("idempotent-replayed").is_none());
    assert_eq!(executions(), 5);
}
