//! Leaked keys over real HTTP: GitHub's signed partner reports, GitLab's
//! revocation API, the generic report, the live-key check, the policy per
//! environment, idempotency, refusals that change nothing, pending reports
//! applied at start, the public-key URL, and secrecy in the database file
//! and the logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use keyward_core::clock::ManualClock;
use keyward_core::secret::{Entropy, KeyHash, OsEntropy};
use keyward_server::config::{Config, InlineKey};
use keyward_store::SqlStore;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::kit::{default_config, fresh_store_url, Backend, Reply, Server};

/// A P-256 key of GitHub's kind, made for the test.
struct Partner {
    id: String,
    key: SigningKey,
}

impl Partner {
    fn new(id: &str) -> Partner {
        let mut bytes = [0u8; 32];
        loop {
            OsEntropy.fill(&mut bytes).unwrap();
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return Partner {
                    id: id.to_owned(),
                    key,
                };
            }
        }
    }

    fn pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    fn inline(&self) -> InlineKey {
        InlineKey {
            key_identifier: self.id.clone(),
            key: self.pem(),
        }
    }

    /// Base64 DER signature of `body`, as GitHub sends it.
    fn sign(&self, body: &[u8]) -> String {
        let sig: Signature = self.key.sign(body);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }
}

/// A route the gateway answers itself, to show a key working (or not).
fn config_with(partners: &[&Partner]) -> Config {
    let mut c = default_config();
    c.leaks.github.public_keys = partners.iter().map(|p| p.inline()).collect();
    c.leaks.gitlab.token = Some("gitlab-shared-token-0123456789".into());
    c.leaks.sweep_interval_seconds = 1;
    c.routes =
        vec![
            toml::from_str("path = \"/v1/hello\"\nrespond = { message = \"hello {key_id}\" }")
                .unwrap(),
        ];
    c
}

/// POSTs `body` to the GitHub endpoint with these headers.
async fn github(s: &Server, body: &[u8], id: Option<&str>, sig: Option<&str>) -> Reply {
    let mut req = s
        .http
        .post(s.url("/v1/leaks/github"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(id) = id {
        req = req.header("Github-Public-Key-Identifier", id);
    }
    if let Some(sig) = sig {
        req = req.header("Github-Public-Key-Signature", sig);
    }
    Reply::from(req.send().await.unwrap()).await
}

async fn signed(s: &Server, p: &Partner, body: &Value) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap();
    github(s, &bytes, Some(&p.id), Some(&p.sign(&bytes))).await
}

fn report(token: &str, url: &str) -> Value {
    json!({ "token": token, "type": "keyward_api_key", "url": url, "source": "content" })
}

/// A key secret with its checksum broken (its last character changed).
fn broken(secret: &str) -> String {
    let mut s = secret.to_owned();
    let last = s.pop().unwrap();
    s.push(if last == 'A' { 'B' } else { 'A' });
    s
}

/// Waits (at most 10 s) until `key`'s reports are all settled; returns them.
async fn settled_leaks(s: &Server, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.get(&format!("/v1/keys/{key}/leaks"), &s.root).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let pending = r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["status"] == "pending");
        if !pending && r.body["leaked"] == true {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "reports still pending: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn audit(s: &Server, action: &str) -> Vec<Value> {
    let r = s.get("/v1/audit?limit=100", &s.root).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

async fn hello(s: &Server, secret: &str) -> Reply {
    s.get("/v1/hello", secret).await
}

#[tokio::test]
async fn a_signed_github_report_revokes_the_live_key_and_flags_the_test_key() {
    let gh = Partner::new("gh-key-1");
    let s = Server::start_with(Backend::Sqlite, config_with(&[&gh])).await;
    let t = s.tenant("Acme").await;
    let (live_id, live) = s.key(&t, "prod", json!({ "environment": "live" })).await;
    let (test_id, test) = s.key(&t, "ci", json!({})).await;
    assert_eq!(hello(&s, &live).await.status, StatusCode::OK);
    assert_eq!(hello(&s, &test).await.status, StatusCode::OK);

    let url = "https://github.com/acme/app/blob/abc123/.env";
    let body = json!([
        report(&live, url),
        report(&test, "https://gist.github.com/acme/1"),
        report(&broken(&live), url),
    ]);
    let r = signed(&s, &gh, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let hash = |t: &str| KeyHash::of(t).to_hex();
    assert_eq!(
        r.body,
        json!([
            { "token_hash": hash(&live), "token_type": "keyward_api_key", "label": "true_positive" },
            { "token_hash": hash(&test), "token_type": "keyward_api_key", "label": "true_positive" },
            { "token_hash": hash(&broken(&live)), "token_type": "keyward_api_key", "label": "false_positive" },
        ])
    );
    assert!(
        !r.body.to_string().contains(&live),
        "the answer echoes a token"
    );

    // The live key: revoked by the policy worker, and the very next request
    // with it is refused, through the gateway and the verify API alike.
    let leaks = settled_leaks(&s, &live_id).await;
    assert_eq!(leaks["data"][0]["action"], "revoke", "{leaks}");
    assert_eq!(leaks["data"][0]["status"], "applied");
    assert_eq!(leaks["data"][0]["url"], url);
    assert_eq!(leaks["data"][0]["reporter"], "github");
    hello(&s, &live)
        .await
        .assert_problem(401, "revoked_api_key");
    assert_eq!(s.verify(&live, json!({})).await["code"], "revoked_api_key");
    s.get("/v1/me", &live)
        .await
        .assert_problem(401, "revoked_api_key");

    // The test key: flagged, marked leaked, and still working.
    let leaks = settled_leaks(&s, &test_id).await;
    assert_eq!(leaks["data"][0]["action"], "flag", "{leaks}");
    assert_eq!(hello(&s, &test).await.status, StatusCode::OK);
    let k = s.get(&format!("/v1/keys/{test_id}"), &s.root).await;
    assert_eq!(k.body["status"], "active");

    // Audited: key.leaked with where it was found, then key.revoked by the
    // actor leak-report; the flag changes the key in no way.
    let leaked = audit(&s, "key.leaked").await;
    assert_eq!(leaked.len(), 2, "{leaked:?}");
    let live_leak = leaked.iter().find(|e| e["target"] == live_id).unwrap();
    assert_eq!(live_leak["actor"], "github");
    assert_eq!(live_leak["details"]["url"], url);
    assert_eq!(live_leak["details"]["source"], "content");
    let revoked = audit(&s, "key.revoked").await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0]["actor"], "leak-report");
    assert_eq!(revoked[0]["target"], live_id);

    // The same token again: recorded as a repeat, acted on once.
    let r = signed(
        &s,
        &gh,
        &json!([report(&live, "https://example.com/paste")]),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body[0]["label"], "true_positive");
    let leaks = settled_leaks(&s, &live_id).await;
    let data = leaks["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{leaks}");
    assert_eq!(data[0]["status"], "repeat");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(audit(&s, "key.revoked").await.len(), 1);
    assert_eq!(audit(&s, "key.leaked").await.len(), 3);
    s.shutdown().await;
}

#[tokio::test]
async fn forged_unknown_replayed_and_malformed_reports_are_refused_and_change_nothing() {
    let gh = Partner::new("gh-key-1");
    let impostor = Partner::new("gh-key-1");
    let s = Server::start_with(Backend::Sqlite, config_with(&[&gh])).await;
    let t = s.tenant("Acme").await;
    let (id, live) = s.key(&t, "prod", json!({ "environment": "live" })).await;
    let body = serde_json::to_vec(&json!([report(&live, "https://github.com/a/b")])).unwrap();
    let other = serde_json::to_vec(&json!([report("kw_live_nothing", "https://x")])).unwrap();

    // Unsigned.
    github(&s, &body, None, None)
        .await
        .assert_problem(401, "report_not_verified");
    // Forged: signed by a key configuration does not trust, under a
    // trusted identifier.
    github(&s, &body, Some(&gh.id), Some(&impostor.sign(&body)))
        .await
        .assert_problem(401, "report_not_verified");
    // A good signature under an identifier nobody configured.
    github(&s, &body, Some("gh-key-2"), Some(&gh.sign(&body)))
        .await
        .assert_problem(401, "report_not_verified");
    // A replayed body with the signature of another (genuine) report.
    github(&s, &body, Some(&gh.id), Some(&gh.sign(&other)))
        .await
        .assert_problem(401, "report_not_verified");
    // Not base64 / not DER.
    github(&s, &body, Some(&gh.id), Some("%%%"))
        .await
        .assert_problem(401, "report_not_verified");
    // Signed, but not the partner format.
    let malformed = br#"{"token": "not a list"}"#;
    github(&s, malformed, Some(&gh.id), Some(&gh.sign(malformed)))
        .await
        .assert_problem(400, "invalid_body");

    // Nothing changed: the key works, no report exists, and each refusal
    // was audited with its reason (never the body).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hello(&s, &live).await.status, StatusCode::OK);
    let leaks = s.get(&format!("/v1/keys/{id}/leaks"), &s.root).await;
    assert_eq!(leaks.body, json!({ "leaked": false, "data": [] }));
    let refused = audit(&s, "leak.report_refused").await;
    let mut reasons: Vec<&str> = refused
        .iter()
        .map(|e| e["details"]["reason"].as_str().unwrap())
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        [
            "bad_signature",
            "bad_signature",
            "bad_signature",
            "malformed_body",
            "unknown_key_identifier",
            "unsigned"
        ]
    );
    let all = s.get("/v1/audit?limit=100", &s.root).await;
    assert!(!all.body.to_string().contains(&live));
    assert!(audit(&s, "key.leaked").await.is_empty());
    assert!(audit(&s, "key.revoked").await.is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn a_broken_checksum_is_a_false_positive_without_a_store_read() {
    let gh = Partner::new("gh-key-1");
    let url = fresh_store_url(Backend::Sqlite).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let s = Server::start_on(
        Arc::clone(&store),
        config_with(&[&gh]),
        ManualClock::starting_now(),
    )
    .await;
    let t = s.tenant("Acme").await;
    let (_, live) = s.key(&t, "prod", json!({ "environment": "live" })).await;
    // With the store closed every read fails: an answer that needs none is
    // the proof that none was made.
    store.close().await;
    let r = signed(&s, &gh, &json!([report(&broken(&live), "https://x")])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body[0]["label"], "false_positive");
    let r = signed(&s, &gh, &json!([report("kw_live_short", "https://x")])).await;
    assert_eq!(r.body[0]["label"], "false_positive");
    // The control: a token with a good checksum needs the store.
    signed(&s, &gh, &json!([report(&live, "https://x")]))
        .await
        .assert_problem(503, "store_unavailable");
}

#[tokio::test]
async fn gitlab_reports_through_its_revocation_api() {
    let s = Server::start_with(Backend::Sqlite, config_with(&[])).await;
    let t = s.tenant("Acme").await;
    let (id, live) = s.key(&t, "prod", json!({ "environment": "live" })).await;
    let token = "gitlab-shared-token-0123456789";
    let types = |auth: Option<&str>| {
        let mut req = s.http.get(s.url("/v1/leaks/gitlab/revocable_token_types"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { Reply::from(req.send().await.unwrap()).await }
    };
    let r = types(Some(token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["types"]
        .as_array()
        .unwrap()
        .contains(&json!("gitleaks_rule_id_keyward_api_key")));
    assert!(r.body["pattern"].as_str().unwrap().contains("kw_live_"));
    assert_eq!(
        types(Some(&format!("Bearer {token}"))).await.status,
        StatusCode::OK
    );
    types(None).await.assert_problem(401, "report_not_verified");
    types(Some("gitlab-shared-token-0123456780"))
        .await
        .assert_problem(401, "report_not_verified");

    let revoke = |auth: &str, body: Value| {
        let req = s
            .http
            .post(s.url("/v1/leaks/gitlab/revoke"))
            .header("authorization", auth)
            .json(&body);
        async move { Reply::from(req.send().await.unwrap()).await }
    };
    let found = json!([{ "type": "gitleaks_rule_id_keyward_api_key", "token": live, "location": "https://gitlab.example/a/b/-/blob/main/x.py" }]);
    revoke("wrong-token-wrong-token", found.clone())
        .await
        .assert_problem(401, "report_not_verified");
    revoke(token, json!([{ "type": "aws_key_id", "token": live }]))
        .await
        .assert_problem(400, "invalid_body");
    assert_eq!(hello(&s, &live).await.status, StatusCode::OK);
    let r = revoke(token, found).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let leaks = settled_leaks(&s, &id).await;
    assert_eq!(leaks["data"][0]["reporter"], "gitlab");
    assert_eq!(leaks["data"][0]["action"], "revoke");
    hello(&s, &live)
        .await
        .assert_problem(401, "revoked_api_key");
    s.shutdown().await;
}

#[tokio::test]
async fn people_report_keys_they_can_see() {
    let s = Server::start_with(Backend::Sqlite, config_with(&[])).await;
    let acme = s.tenant("Acme").await;
    let other = s.tenant("Other").await;
    let (acme_id, acme_live) = s.key(&acme, "prod", json!({ "environment": "live" })).await;
    let (other_id, other_live) = s
        .key(&other, "prod", json!({ "environment": "live" }))
        .await;
    let (_, reporter) = s
        .key(
            &acme,
            "security",
            json!({ "scopes": ["keyward:leaks:write"] }),
        )
        .await;
    let (_, unscoped) = s.key(&acme, "plain", json!({ "scopes": [] })).await;

    s.post("/v1/leaks", &unscoped, json!({ "key": acme_live }))
        .await
        .assert_problem(403, "insufficient_scope");
    s.post("/v1/leaks", &reporter, json!({}))
        .await
        .assert_problem(422, "validation_failed");
    s.post("/v1/leaks", &reporter, json!({ "key_hash": "ABC" }))
        .await
        .assert_problem(422, "validation_failed");

    // Another tenant's key, by its hash: not one this key can reach.
    let r = s
        .post(
            "/v1/leaks",
            &reporter,
            json!({ "key_hash": KeyHash::of(&other_live).to_hex(), "url": "https://x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["label"], "false_positive");
    assert_eq!(r.body["status"], "unmatched");
    // Its own key: acted on.
    let r = s
        .post(
            "/v1/leaks",
            &reporter,
            json!({ "key": acme_live, "url": "https://pastebin.example/x", "source": "paste" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["label"], "true_positive");
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["token_hash"], KeyHash::of(&acme_live).to_hex());
    let leaks = settled_leaks(&s, &acme_id).await;
    assert!(leaks["data"][0]["reporter"]
        .as_str()
        .unwrap()
        .starts_with("api:key_"));
    assert_eq!(leaks["data"][0]["source"], "paste");
    hello(&s, &acme_live)
        .await
        .assert_problem(401, "revoked_api_key");
    assert_eq!(hello(&s, &other_live).await.status, StatusCode::OK);
    let r = s.get(&format!("/v1/keys/{other_id}/leaks"), &s.root).await;
    assert_eq!(r.body["leaked"], false);
}

#[tokio::test]
async fn a_tenant_can_choose_disable_for_its_live_keys() {
    // The tenant's id is chosen by the caller, so the policy can name it.
    let mut c = config_with(&[]);
    c.leaks.tenants.insert(
        "acme".into(),
        [(
            "live".to_owned(),
            keyward_server::config::LeakAction::Disable,
        )]
        .into(),
    );
    let s = Server::start_with(Backend::Sqlite, c).await;
    let r = s
        .post(
            "/v1/tenants",
            &s.root,
            json!({ "id": "acme", "name": "Acme" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let (id, live) = s
        .key("acme", "prod", json!({ "environment": "live" }))
        .await;
    let r = s
        .post(
            "/v1/leaks",
            &s.root,
            json!({ "key": live, "url": "https://x" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let leaks = settled_leaks(&s, &id).await;
    assert_eq!(leaks["data"][0]["action"], "disable", "{leaks}");
    hello(&s, &live)
        .await
        .assert_problem(401, "disabled_api_key");
    let disabled = audit(&s, "key.disabled").await;
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["actor"], "leak-report");
}

#[tokio::test]
async fn the_check_answers_which_hashes_are_live_keys_of_the_caller() {
    let s = Server::start_with(Backend::Sqlite, config_with(&[])).await;
    let acme = s.tenant("Acme").await;
    let other = s.tenant("Other").await;
    let (_, active) = s.key(&acme, "a", json!({})).await;
    let (revoked_id, revoked) = s.key(&acme, "b", json!({})).await;
    let (_, theirs) = s.key(&other, "c", json!({})).await;
    let r = s
        .post(&format!("/v1/keys/{revoked_id}/revoke"), &s.root, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let (_, checker) = s
        .key(&acme, "scan", json!({ "scopes": ["keyward:leaks:check"] }))
        .await;
    let h = |t: &str| KeyHash::of(t).to_hex();
    let unknown = "0".repeat(64);
    let all = json!({ "hashes": [h(&active), h(&revoked), h(&theirs), unknown] });
    let r = s.post("/v1/leaks/check", &checker, all.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({ "live": [h(&active)] }));
    // An operator sees every tenant's keys.
    let r = s.post("/v1/leaks/check", &s.root, all).await;
    assert_eq!(r.body, json!({ "live": [h(&active), h(&theirs)] }));
    s.post("/v1/leaks/check", &checker, json!({ "hashes": ["xyz"] }))
        .await
        .assert_problem(422, "validation_failed");
    s.post("/v1/leaks/check", &checker, json!({ "hashes": [] }))
        .await
        .assert_problem(422, "validation_failed");
    let many: Vec<String> = (0..101).map(|_| unknown.clone()).collect();
    s.post("/v1/leaks/check", &checker, json!({ "hashes": many }))
        .await
        .assert_problem(422, "validation_failed");
    let (_, writer) = s
        .key(&acme, "w", json!({ "scopes": ["keyward:leaks:write"] }))
        .await;
    s.post(
        "/v1/leaks/check",
        &writer,
        json!({ "hashes": [h(&active)] }),
    )
    .await
    .assert_problem(403, "insufficient_scope");
}

#[tokio::test]
async fn reports_left_pending_by_a_crash_are_applied_at_start() {
    let url = fresh_store_url(Backend::Sqlite).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let clock = ManualClock::starting_now();
    let s = Server::start_on(Arc::clone(&store), config_with(&[]), clock.clone()).await;
    let t = s.tenant("Acme").await;
    let (id, live) = s.key(&t, "prod", json!({ "environment": "live" })).await;
    s.shutdown().await;
    // Recorded pending, as a node that crashed before its worker ran
    // leaves it.
    let settings = keyward_server::config::Settings::from_config(config_with(&[])).unwrap();
    let manage = keyward_manage::ManageService::new(
        store.clone(),
        Arc::new(clock.clone()),
        Arc::new(OsEntropy),
        Arc::new(keyward_manage::NoInvalidation),
        keyward_manage::ManagePolicy {
            format: settings.format.clone(),
            catalog: settings.catalog.clone(),
            tiers: Default::default(),
            default_refill: None,
            metadata_max_bytes: 4096,
            invite_ttl_ms: 1,
            leaks: settings.config.leaks.policy(),
        },
    );
    let v = manage
        .report_leaks(
            keyward_manage::Reporter::GitHub,
            vec![keyward_manage::LeakInput {
                token: keyward_manage::LeakedToken::Secret(live.clone()),
                token_type: None,
                url: Some("https://x".into()),
                source: None,
            }],
        )
        .await
        .unwrap();
    assert!(v[0].pending().is_some());
    let s = Server::start_on(store, config_with(&[]), clock).await;
    let leaks = settled_leaks(&s, &id).await;
    assert_eq!(leaks["data"][0]["action"], "revoke");
    hello(&s, &live)
        .await
        .assert_problem(401, "revoked_api_key");
}

/// A minimal HTTP server on 127.0.0.1 serving GitHub's key document while
/// `up` holds, 500 after.
async fn key_server(doc: String, up: Arc<std::sync::atomic::AtomicBool>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/meta/public_keys/secret_scanning",
        axum::routing::get(move || {
            let doc = doc.clone();
            let up = Arc::clone(&up);
            async move {
                if up.load(std::sync::atomic::Ordering::SeqCst) {
                    (StatusCode::OK, doc)
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, String::new())
                }
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}/meta/public_keys/secret_scanning")
}

#[tokio::test]
async fn public_keys_come_from_the_url_and_the_last_good_set_stays() {
    let gh = Partner::new("gh-url-key");
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let doc = json!({ "public_keys": [{ "key_identifier": gh.id, "key": gh.pem(), "is_current": true }] });
    let url = key_server(doc.to_string(), Arc::clone(&up)).await;
    let mut c = config_with(&[]);
    c.leaks.github.public_keys_url = Some(url);
    c.leaks.github.refresh_seconds = 1;
    let s = Server::start_with(Backend::Sqlite, c).await;
    let body = json!([report("kw_live_nothing", "https://x")]);
    // Fetched at start (in the background): accepted within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = signed(&s, &gh, &body).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the URL's key never arrived: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The URL fails from now on: the last good set stays.
    up.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(signed(&s, &gh, &body).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_reported_secret_is_never_in_the_database_or_the_logs() {
    use std::process::{Command, Stdio};
    const BIN: &str = env!("CARGO_BIN_EXE_keyward");
    let gh = Partner::new("gh-proc");
    let dir = crate::kit::temp_dir("leakproc");
    let data = dir.join("data");
    let log = dir.join("keyward.log");
    let keys = dir.join("github-keys.json");
    std::fs::write(
        &keys,
        json!({ "public_keys": [{ "key_identifier": gh.id, "key": gh.pem(), "is_current": true }] })
            .to_string(),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["root-keys", "create", "--name", "ops", "--data-dir"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .env("KEYWARD_LOG", "trace")
        .env("KEYWARD_LEAKS__GITHUB__PUBLIC_KEYS_FILE", &keys)
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..400 {
        if http.get(format!("{base}/v1/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let post = |path: &str, key: &str, body: Value| {
        let req = http
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body);
        async move { Reply::from(req.send().await.unwrap()).await }
    };
    let t = post("/v1/tenants", &root, json!({ "name": "Acme" })).await;
    let t = t.body["id"].as_str().unwrap().to_owned();
    let k = post(
        "/v1/keys",
        &root,
        json!({ "tenant_id": t, "name": "prod", "environment": "live" }),
    )
    .await;
    let secret = k.body["secret"].as_str().unwrap().to_owned();
    let id = k.body["key"]["id"].as_str().unwrap().to_owned();
    let body = serde_json::to_vec(&json!([report(&secret, "https://github.com/a/b")])).unwrap();
    let r = http
        .post(format!("{base}/v1/leaks/github"))
        .header("content-type", "application/json")
        .header("Github-Public-Key-Identifier", &gh.id)
        .header("Github-Public-Key-Signature", gh.sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http
            .get(format!("{base}/v1/keys/{id}"))
            .bearer_auth(&root)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        if v["status"] == "revoked" {
            break;
        }
        assert!(Instant::now() < deadline, "not revoked: {v}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    let needle = secret.as_bytes();
    let logged = std::fs::read(&log).unwrap();
    assert!(!logged.is_empty());
    assert!(
        !logged.windows(needle.len()).any(|w| w == needle),
        "the secret is in the log"
    );
    for file in std::fs::read_dir(&data).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the secret is in the database files"
        );
    }
    // The hash is there (the report was recorded).
    let hash = KeyHash::of(&secret).to_hex();
    let db: Vec<u8> = std::fs::read_dir(&data)
        .unwrap()
        .flat_map(|f| std::fs::read(f.unwrap().path()).unwrap())
        .collect();
    assert!(db.windows(hash.len()).any(|w| w == hash.as_bytes()));
}
