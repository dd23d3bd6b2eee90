//! Library mode: the example service (`examples/library`, axum +
//! keyward-tower) on a loopback port in front of nothing, checking keys
//! against a real keyward server — through the verify API and the change
//! feed (remote) or the store itself (embedded, SQLite). Every denial is
//! answered with keyward's own status and body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::clock::{ManualClock, SystemClock};
use keyward_core::secret::{KeyKind, OsEntropy};
use keyward_server::config::Config;
use keyward_store::SqlStore;
use keyward_tower::embedded::Embedded;
use keyward_tower::remote::{Remote, RemoteConfig, RootKey};
use keyward_tower::{Backend, Deployment, DeploymentConfig, KeywardLayer};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::kit::{fresh_store_url, Backend as StoreBackend, Reply, Server};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Remote,
    Embedded,
}

/// The example service on a loopback port.
struct Service {
    base: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Service {
    async fn start(layer: KeywardLayer) -> Service {
        let app = keyward_example_library::with_keys(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Service {
            base,
            http: reqwest::Client::new(),
            task,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, key: Option<&str>) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        Reply::from(req.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        self.send(reqwest::Method::GET, path, key).await
    }

    async fn post(&self, path: &str, key: Option<&str>) -> Reply {
        self.send(reqwest::Method::POST, path, key).await
    }
}

fn config() -> Config {
    let mut c = crate::kit::default_config();
    c.keys.scopes = ["calls:read", "calls:write"].map(Into::into).to_vec();
    c
}

/// A keyward server and the example service checking keys against it.
async fn setup(mode: Mode) -> (Server, Service) {
    let url = fresh_store_url(StoreBackend::Sqlite).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let server = Server::start_on(store, config(), ManualClock::starting_now()).await;
    let mut deployment = DeploymentConfig {
        store_url: Some(url),
        ..DeploymentConfig::default()
    };
    deployment.changes.poll_interval_ms = 100;
    let deployment = Deployment::new(deployment).unwrap();
    let backend: Arc<dyn Backend> = match mode {
        Mode::Remote => Arc::new(
            Remote::start(
                RemoteConfig::new(server.base.clone(), RootKey::new(server.root.clone())),
                &deployment,
                Arc::new(keyward_limits::MemoryLimiter::default()),
                Arc::new(SystemClock),
            )
            .unwrap(),
        ),
        Mode::Embedded => Arc::new(
            Embedded::open(&deployment, Arc::new(SystemClock))
                .await
                .unwrap(),
        ),
    };
    let routes = keyward_example_library::routes().unwrap();
    let service = Service::start(KeywardLayer::new(deployment, routes, backend)).await;
    (server, service)
}

/// keyward's own answer to `GET /v1/me` with `key`: the same denials,
/// rendered by the same code, as its gateway and API answer them.
async fn keywards_answer(server: &Server, key: Option<&str>) -> Reply {
    server.call(reqwest::Method::GET, "/v1/me", key, None).await
}

#[track_caller]
fn assert_same_denial(service: &Reply, keyward: &Reply) {
    assert_eq!(service.status, keyward.status, "{}", service.body);
    assert_eq!(service.body, keyward.body);
    assert_eq!(service.content_type(), keyward.content_type());
    assert_eq!(
        service
            .headers
            .get_all("www-authenticate")
            .iter()
            .collect::<Vec<_>>(),
        keyward
            .headers
            .get_all("www-authenticate")
            .iter()
            .collect::<Vec<_>>()
    );
}

/// Polls `path` with `key` until it is refused (at most 5 s); how long that took.
async fn until_refused(service: &Service, key: &str) -> (Duration, Reply) {
    let started = Instant::now();
    loop {
        let r = service.get("/v1/calls", Some(key)).await;
        if r.status != StatusCode::OK || started.elapsed() > Duration::from_secs(5) {
            return (started.elapsed(), r);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn story(mode: Mode) {
    let (server, service) = setup(mode).await;
    let tenant = server.tenant("acme").await;
    server.grant(&tenant, 1).await;
    let scopes = json!({ "scopes": ["calls:read", "calls:write"] });
    let (id, good) = server.key(&tenant, "good", scopes.clone()).await;

    // Open route: no key needed, and none may ride along in the query.
    let r = service.get("/health", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = service.get(&format!("/health?api_key={good}"), None).await;
    r.assert_problem(400, "credentials_misplaced");
    let r = service
        .get(&format!("/v1/calls?q={good}"), Some(&good))
        .await;
    r.assert_problem(400, "credentials_misplaced");

    // A valid key: the handler sees the principal.
    let r = service.get("/v1/calls", Some(&good)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["key_id"], id.as_str());
    assert_eq!(r.body["tenant_id"], tenant.as_str());
    let me = service.get("/v1/me", Some(&good)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body, keywards_answer(&server, Some(&good)).await.body);
    let r = service.get("/v1/calls/c_1", Some(&good)).await;
    assert_eq!(r.body["id"], "c_1");

    // Missing and unknown keys: keyward's own answer, byte for byte.
    let r = service.get("/v1/calls", None).await;
    r.assert_problem(401, "missing_credentials");
    assert_same_denial(&r, &keywards_answer(&server, None).await);
    let format = keyward_core::secret::KeyFormat::new(
        [("live", "kw_live_"), ("test", "kw_test_")],
        "kw_root_",
    )
    .unwrap();
    let stranger = format
        .generate(&KeyKind::Environment("test".into()), &OsEntropy)
        .unwrap();
    for key in [stranger.expose(), "kw_test_not-a-key"] {
        let r = service.get("/v1/calls", Some(key)).await;
        r.assert_problem(401, "invalid_api_key");
        assert_same_denial(&r, &keywards_answer(&server, Some(key)).await);
    }

    // Scopes: by the route table, and by the handler's extractor.
    let (_, reader) = server
        .key(&tenant, "reader", json!({ "scopes": ["calls:read"] }))
        .await;
    let r = service.post("/v1/calls", Some(&reader)).await;
    r.assert_problem(403, "insufficient_scope");
    assert_eq!(r.body["missing_scopes"], json!(["calls:write"]));
    let (_, writer) = server
        .key(&tenant, "writer", json!({ "scopes": ["calls:write"] }))
        .await;
    let r = service.get("/v1/calls/c_1", Some(&writer)).await;
    r.assert_problem(403, "insufficient_scope");
    assert_eq!(r.body["missing_scopes"], json!(["calls:read"]));

    // The IP allowlist (the service sees 127.0.0.1).
    let (_, fenced) = server
        .key(
            &tenant,
            "fenced",
            json!({ "scopes": ["calls:read"], "ip_allowlist": ["10.0.0.0/8"] }),
        )
        .await;
    let r = service.get("/v1/calls", Some(&fenced)).await;
    r.assert_problem(403, "ip_not_allowed");
    assert_same_denial(&r, &keywards_answer(&server, Some(&fenced)).await);

    // The rate limit: two a minute, then 429 with the RateLimit fields.
    let (_, limited) = server
        .key(
            &tenant,
            "limited",
            json!({ "scopes": ["calls:read"], "rate_limit": { "limit": 2, "window_seconds": 60 } }),
        )
        .await;
    for left in [1, 0] {
        let r = service.get("/v1/calls", Some(&limited)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(
            r.headers["ratelimit"].to_str().unwrap(),
            format!("\"key\";r={left};t={}", 30 * (2 - left)),
        );
    }
    let r = service.get("/v1/calls", Some(&limited)).await;
    r.assert_problem(429, "rate_limited");
    assert_eq!(r.headers["retry-after"].to_str().unwrap(), "30");
    assert_eq!(r.body["retry_after"], 30);
    assert_eq!(
        r.headers["ratelimit-policy"].to_str().unwrap(),
        "\"key\";q=2;w=60"
    );

    // Credits: the tenant has one.
    let r = service.post("/v1/calls", Some(&good)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["created_by"], id.as_str());
    let r = service.post("/v1/calls", Some(&good)).await;
    r.assert_problem(402, "credits_exhausted");

    // Revoked on the server: refused by the service within a second.
    let r = server
        .post(&format!("/v1/keys/{id}/revoke"), &server.root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (took, r) = until_refused(&service, &good).await;
    r.assert_problem(401, "revoked_api_key");
    assert_same_denial(&r, &keywards_answer(&server, Some(&good)).await);
    assert!(
        took < Duration::from_secs(1),
        "{mode:?}: refused after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_backend_answers_as_keyward_does() {
    story(Mode::Remote).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_backend_answers_as_keyward_does_on_sqlite() {
    story(Mode::Embedded).await;
}

/// A revocation reaches the remote service through the change feed: the
/// measured time from the revoke's answer to the service's first refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_the_remote_service_within_milliseconds() {
    let (server, service) = setup(Mode::Remote).await;
    let tenant = server.tenant("acme").await;
    let mut took = Vec::new();
    for i in 0..20 {
        let (id, key) = server
            .key(
                &tenant,
                &format!("k{i}"),
                json!({ "scopes": ["calls:read"] }),
            )
            .await;
        let r = service.get("/v1/calls", Some(&key)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = server
            .post(&format!("/v1/keys/{id}/revoke"), &server.root, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let (t, r) = until_refused(&service, &key).await;
        r.assert_problem(401, "revoked_api_key");
        took.push(t);
    }
    took.sort();
    let (p50, max) = (took[took.len() / 2], took[took.len() - 1]);
    eprintln!("revocation → refused by the remote service: p50 {p50:?}, max {max:?} (20 keys)");
    assert!(max < Duration::from_secs(1), "p50 {p50:?}, max {max:?}");
}

/// The change feed: a long poll ends at the change, bounds are enforced,
/// and a tenant key sees its own tenant's changes only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_waits_for_a_change_and_is_bounded() {
    let server = Server::start_with(StoreBackend::Sqlite, config()).await;
    let tenant = server.tenant("acme").await;
    let other = server.tenant("other").await;
    let (k, _) = server.key(&tenant, "k", json!({})).await;
    let (theirs, _) = server.key(&other, "theirs", json!({})).await;
    let start = server
        .get("/v1/changes?after=9223372036854775807", &server.root)
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.body);
    assert_eq!(start.body["changes"], json!([]));
    let last = start.body["last_seq"].as_i64().unwrap();

    // A wait with nothing new ends at its bound, empty.
    let t = Instant::now();
    let r = server
        .get(
            &format!("/v1/changes?after={last}&wait_ms=300"),
            &server.root,
        )
        .await;
    assert_eq!(r.body["changes"], json!([]));
    assert!(t.elapsed() >= Duration::from_millis(300));

    // A wait ends at the change, not at its bound.
    let poll = {
        let http = server.http.clone();
        let url = server.url(&format!("/v1/changes?after={last}&wait_ms=20000"));
        let root = server.root.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let r = http.get(url).bearer_auth(root).send().await.unwrap();
            (t.elapsed(), r.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // (Creating a key changes nothing anyone cached: not in the log.)
    let r = server
        .patch(
            &format!("/v1/keys/{k}"),
            &server.root,
            json!({ "name": "k2" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (waited, page) = poll.await.unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let changes = page["changes"].as_array().unwrap();
    assert!(
        changes.iter().any(|c| c["kind"] == "key"
            && c["tenant_id"] == tenant.as_str()
            && c["key_hash"].as_str().is_some_and(|h| h.len() == 64)),
        "{page}"
    );

    // Bounds and permissions.
    let r = server.get("/v1/changes?wait_ms=30001", &server.root).await;
    r.assert_problem(422, "validation_failed");
    let (_, plain) = server.key(&tenant, "plain", json!({})).await;
    let r = server.get("/v1/changes", &plain).await;
    r.assert_problem(403, "insufficient_scope");
    let (_, verifier) = server
        .key(
            &tenant,
            "verifier",
            json!({ "scopes": ["keyward:keys:verify"] }),
        )
        .await;
    let r = server
        .patch(
            &format!("/v1/keys/{theirs}"),
            &server.root,
            json!({ "name": "t2" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let all = server.get("/v1/changes", &server.root).await;
    assert!(all.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["tenant_id"] == other.as_str()));
    let r = server.get("/v1/changes", &verifier).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = r.body["changes"].as_array().unwrap();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|c| c["tenant_id"] == tenant.as_str()),
        "{}",
        r.body
    );
}
