//! Rate limits, credits and idempotent retries, over real HTTP: exact under
//! concurrency, honest about when to come back, and durable across a restart;
//! and credits exact across two nodes (two credit banks on one store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::clock::{Clock, ManualClock, SystemClock};
use keyward_limits::{BankConfig, CreditBank, SpendRequest};
use keyward_store::{
    AuditEntry, ChangeKind, ChangeStore as _, CreditChange, CreditStore as _, LedgerKind, SqlStore,
    Store,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::kit::{config_from_toml, fresh_store_url, Backend, Reply, Server};
use crate::upstream;

const KEYS: &str = r#"
[keys]
scopes = ["vox:read"]
[keys.environments]
test = "kw_test_"
"#;

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Sends `n` requests at once (each its own task) and returns the replies.
async fn burst(
    s: &Server,
    n: usize,
    build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Vec<Reply> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let req = build(&s.http);
        tasks.push(tokio::spawn(async move {
            Reply::from(req.send().await.unwrap()).await
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies
        .iter()
        .filter(|r| r.status.as_u16() == status)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_n_admits_exactly_n_of_2000_concurrent_requests() {
    let config = config_from_toml(&format!(
        r#"{KEYS}
[limits]
default_tier = "small"
[limits.tiers.small]
limit = 100
window_seconds = 3600

[[routes]]
methods = ["GET"]
path = "/v1/whoami"
respond = {{ key = "{{key_id}}" }}
"#
    ));
    let s = Server::start_with(Backend::Sqlite, config).await;
    let tenant = s.tenant("Acme").await;
    let (_, secret) = s.key(&tenant, "load", json!({})).await;

    let url = s.url("/v1/whoami");
    let replies = burst(&s, 2000, |c| c.get(&url).bearer_auth(&secret)).await;
    assert_eq!(count(&replies, 200), 100, "exactly the limit is admitted");
    assert_eq!(count(&replies, 429), 1900);

    let ok = replies.iter().find(|r| r.status == StatusCode::OK).unwrap();
    assert_eq!(header(ok, "ratelimit-policy"), "\"small\";q=100;w=3600");
    assert!(header(ok, "ratelimit").starts_with("\"small\";r="));
    let limited = replies
        .iter()
        .find(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .unwrap();
    limited.assert_problem(429, "rate_limited");
    assert_eq!(header(limited, "ratelimit"), "\"small\";r=0;t=3600");
    // One token comes back every 36 s; Retry-After says so, and is honest.
    let retry: i64 = header(limited, "retry-after").parse().unwrap();
    assert_eq!(retry, 36);
    s.clock.advance_seconds(retry - 1);
    let early = s.get("/v1/whoami", &secret).await;
    early.assert_problem(429, "rate_limited");
    assert_eq!(header(&early, "retry-after"), "1");
    s.clock.advance_seconds(1);
    let back = s.get("/v1/whoami", &secret).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert_eq!(header(&back, "ratelimit"), "\"small\";r=0;t=3600");
}

#[tokio::test]
async fn tiers_come_from_the_key_then_the_tenant_then_the_default_and_keys_can_override() {
    let config = config_from_toml(&format!(
        r#"{KEYS}
[limits]
default_tier = "free"
[limits.tiers.free]
limit = 2
window_seconds = 60
[limits.tiers.pro]
limit = 5
window_seconds = 60
burst = 3

[[routes]]
methods = ["GET"]
path = "/v1/whoami"
respond = {{ tier = "{{tier}}" }}

[[routes]]
methods = ["GET"]
path = "/v1/free-of-charge"
cost = 0
respond = {{ ok = true }}
"#
    ));
    let s = Server::start_with(Backend::Sqlite, config).await;
    let plain = s.tenant("Plain").await;
    let (_, free_key) = s.key(&plain, "k", json!({})).await;
    let pro_tenant = s
        .post(
            "/v1/tenants",
            &s.root,
            json!({ "name": "Pro", "tier": "pro" }),
        )
        .await;
    assert_eq!(
        pro_tenant.status,
        StatusCode::CREATED,
        "{}",
        pro_tenant.body
    );
    assert_eq!(pro_tenant.body["tier"], "pro");
    let pro = pro_tenant.body["id"].as_str().unwrap().to_owned();
    let (_, pro_key) = s.key(&pro, "k", json!({})).await;
    let (_, own_key) = s
        .key(
            &pro,
            "own",
            json!({ "rate_limit": { "limit": 1, "window_seconds": 10 } }),
        )
        .await;

    let admitted = |key: String| {
        let s = &s;
        async move {
            let mut n = 0;
            for _ in 0..10 {
                if s.get("/v1/whoami", &key).await.status == StatusCode::OK {
                    n += 1;
                }
            }
            n
        }
    };
    assert_eq!(admitted(free_key.clone()).await, 2, "the default tier");
    assert_eq!(
        admitted(pro_key.clone()).await,
        3,
        "the tenant's tier, burst 3"
    );
    assert_eq!(admitted(own_key.clone()).await, 1, "the key's own limit");
    let r = s.get("/v1/whoami", &own_key).await;
    assert_eq!(header(&r, "ratelimit-policy"), "\"key\";q=1;w=10");
    // Cost 0 routes only report; they pass even when the bucket is empty.
    let r = s.get("/v1/free-of-charge", &free_key).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(header(&r, "ratelimit"), "\"free\";r=0;t=60");

    // Tiers are the operator's to give: unknown ones and tenant keys are refused.
    let r = s
        .post(
            "/v1/tenants",
            &s.root,
            json!({ "name": "X", "tier": "platinum" }),
        )
        .await;
    r.assert_problem(422, "validation_failed");
    assert_eq!(r.body["errors"][0]["code"], "unknown_tier");
    let (_, admin) = s
        .key(
            &plain,
            "admin",
            json!({ "scopes": ["keyward:keys:write", "keyward:keys:read", "keyward:tenants:write"] }),
        )
        .await;
    let r = s
        .post(
            "/v1/keys",
            &admin,
            json!({ "name": "upgrade", "environment": "test", "tier": "pro" }),
        )
        .await;
    r.assert_problem(422, "validation_failed");
    assert_eq!(r.body["errors"][0]["code"], "not_grantable");
    let r = s
        .patch(
            &format!("/v1/tenants/{plain}"),
            &admin,
            json!({ "tier": "pro" }),
        )
        .await;
    r.assert_problem(422, "validation_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_spent_exactly_floor_b_over_c_times_and_never_go_negative() {
    let config = config_from_toml(&format!(
        r#"{KEYS}
[[routes]]
methods = ["GET"]
path = "/v1/paid"
credits = 7
respond = {{ paid = true }}
"#
    ));
    let s = Server::start_with(Backend::Sqlite, config).await;
    let tenant = s.tenant("Acme").await;
    let (key_id, secret) = s.key(&tenant, "spender", json!({})).await;
    let credits = format!("/v1/tenants/{tenant}/credits");

    // Without credits, a paid route answers 402.
    s.get("/v1/paid", &secret)
        .await
        .assert_problem(402, "credits_exhausted");
    let grant = s.grant(&tenant, 1000).await;
    assert_eq!(grant["balance_after"], 1000);

    let url = s.url("/v1/paid");
    let replies = burst(&s, 300, |c| c.get(&url).bearer_auth(&secret)).await;
    assert_eq!(count(&replies, 200), 1000 / 7);
    assert_eq!(count(&replies, 402), 300 - 1000 / 7);
    let balance = s.get(&credits, &s.root).await;
    assert_eq!(balance.body["balance"], 1000 % 7);

    // The ledger accounts for every credit: one spend entry per batch.
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{credits}/ledger?limit=10&cursor={c}"),
            None => format!("{credits}/ledger?limit=10"),
        };
        let page = s.get(&path, &s.root).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        entries.extend(page.body["data"].as_array().unwrap().clone());
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let spends: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "spend").collect();
    let requests: i64 = spends.iter().map(|e| e["requests"].as_i64().unwrap()).sum();
    let spent: i64 = spends.iter().map(|e| e["amount"].as_i64().unwrap()).sum();
    assert_eq!(requests, 1000 / 7);
    assert_eq!(spent, -(1000 / 7) * 7);
    assert!(spends.iter().all(|e| e["key_id"] == key_id.as_str()));
    assert_eq!(entries.last().unwrap()["kind"], "grant");

    // A key's cap bounds its share: cap 20 at cost 7 allows two calls.
    s.grant(&tenant, 100).await;
    let (_, capped) = s.key(&tenant, "capped", json!({ "credit_cap": 20 })).await;
    let ok = burst(&s, 10, |c| c.get(&url).bearer_auth(&capped)).await;
    assert_eq!(count(&ok, 200), 2);
    assert_eq!(count(&ok, 402), 8);
}

#[tokio::test]
async fn the_credits_api_is_idempotent_audited_and_for_operators() {
    let config = config_from_toml(&format!(
        r#"{KEYS}
[limits]
default_tier = "free"
[limits.tiers.free]
limit = 1000
window_seconds = 60
refill = {{ amount = 500, every = "monthly", mode = "set" }}
"#
    ));
    let s = Server::start_with(Backend::Sqlite, config).await;
    let tenant = s.tenant("Acme").await;
    let credits = format!("/v1/tenants/{tenant}/credits");

    // The tier's refill applies on first sight.
    let c = s.get(&credits, &s.root).await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    assert_eq!(c.body["balance"], 500);
    assert_eq!(c.body["refill_source"], "tier");
    assert_eq!(c.body["refill"]["mode"], "set");

    // Retrying a grant with the same Idempotency-Key applies it once.
    let grant = |amount: i64| {
        s.http
            .post(s.url(&credits))
            .bearer_auth(&s.root)
            .header("Idempotency-Key", "\"grant-2026-11\"")
            .json(&json!({ "kind": "grant", "amount": amount, "reason": "promo" }))
            .send()
    };
    let first = grant(250).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = grant(250).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let other = grant(999).await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.get(&credits, &s.root).await.body["balance"], 750);

    // Never negative.
    s.post(
        &credits,
        &s.root,
        json!({ "kind": "adjust", "amount": -751 }),
    )
    .await
    .assert_problem(409, "insufficient_balance");
    let r = s
        .post(
            &credits,
            &s.root,
            json!({ "kind": "adjust", "amount": -50, "reason": "refund reversal" }),
        )
        .await;
    assert_eq!(r.body["balance_after"], 700);
    s.post(&credits, &s.root, json!({ "kind": "grant", "amount": -5 }))
        .await
        .assert_problem(422, "validation_failed");
    s.post(&credits, &s.root, json!({ "kind": "gift", "amount": 5 }))
        .await
        .assert_problem(422, "validation_failed");

    // A tenant's own schedule wins and applies at once (add mode adds).
    let r = s
        .http
        .put(s.url(&format!("{credits}/refill")))
        .bearer_auth(&s.root)
        .json(&json!({ "amount": 10, "every": "daily", "mode": "add" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let c = s.get(&credits, &s.root).await;
    assert_eq!(c.body["balance"], 710);
    assert_eq!(c.body["refill_source"], "tenant");
    s.clock.advance_seconds(86_400);
    assert_eq!(s.get(&credits, &s.root).await.body["balance"], 720);

    // A tenant key may read its own credits, not change them, not see others'.
    let (_, reader) = s
        .key(
            &tenant,
            "reader",
            json!({ "scopes": ["keyward:credits:read", "keyward:credits:write"] }),
        )
        .await;
    assert_eq!(s.get(&credits, &reader).await.status, StatusCode::OK);
    s.post(&credits, &reader, json!({ "kind": "grant", "amount": 1 }))
        .await
        .assert_problem(403, "root_key_required");
    let other = s.tenant("Other").await;
    s.get(&format!("/v1/tenants/{other}/credits"), &reader)
        .await
        .assert_problem(404, "not_found");
    s.get("/v1/tenants/nope/credits", &s.root)
        .await
        .assert_problem(404, "not_found");

    // Every change is in the audit log.
    let audit = s.get("/v1/audit?limit=100", &s.root).await;
    let actions: Vec<&str> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "credits.granted").count(),
        1
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "credits.adjusted").count(),
        1
    );
    assert!(actions.contains(&"credits.refill_set"));
}

#[tokio::test]
async fn verify_spends_cost_and_credits_and_reports_the_state() {
    let config = config_from_toml(&format!(
        r#"{KEYS}
[limits]
default_tier = "free"
[limits.tiers.free]
limit = 10
window_seconds = 60
"#
    ));
    let s = Server::start_with(Backend::Sqlite, config).await;
    let tenant = s.tenant("Acme").await;
    let (_, secret) = s.key(&tenant, "k", json!({})).await;
    s.grant(&tenant, 5).await;

    let r = s
        .post(
            "/v1/keys/verify",
            &s.root,
            json!({ "key": secret, "cost": 4, "credits": 3 }),
        )
        .await;
    assert_eq!(r.body["valid"], true, "{}", r.body);
    assert_eq!(r.body["ratelimit"]["remaining"], 6);
    assert_eq!(r.body["ratelimit"]["policy"], "free");
    assert_eq!(r.body["credits"]["balance"], 2);
    assert_eq!(header(&r, "ratelimit"), "\"free\";r=6;t=24");

    // The rate limit comes first in the verify checks, so a credits refusal has spent
    // its token: 5 are left.
    let r = s.verify(&secret, json!({ "credits": 3 })).await;
    assert_eq!(r["valid"], false);
    assert_eq!(r["code"], "credits_exhausted");
    assert_eq!(r["ratelimit"]["remaining"], 5);
    // 7 tokens with 5 left: two more are needed, one every 6 s.
    let r = s.verify(&secret, json!({ "cost": 7 })).await;
    assert_eq!(r["code"], "rate_limited");
    assert_eq!(r["retry_after"], 12);
    // cost 0 reads the state without spending.
    let r = s.verify(&secret, json!({ "cost": 0 })).await;
    assert_eq!(r["valid"], true);
    assert_eq!(r["ratelimit"]["remaining"], 5);
    let r = s
        .post(
            "/v1/keys/verify",
            &s.root,
            json!({ "key": secret, "credits": -1 }),
        )
        .await;
    r.assert_problem(422, "validation_failed");
}

fn idempotency_config(upstream: &str) -> String {
    format!(
        r#"{KEYS}
[gateway]
upstream = "{upstream}"

[[routes]]
methods = ["POST"]
path = "/create/calls"
idempotency = "required"

[[routes]]
methods = ["POST"]
path = "/create/notes"
"#
    )
}

async fn post_idem(s: &Server, path: &str, key: &str, idem: Option<&str>, body: Value) -> Reply {
    let mut req = s.http.post(s.url(path)).bearer_auth(key).json(&body);
    if let Some(i) = idem {
        req = req.header("Idempotency-Key", i);
    }
    Reply::from(req.send().await.unwrap()).await
}

fn executions(up: &upstream::Running, path: &str) -> usize {
    up.seen().iter().filter(|s| s.uri == path).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_retries_run_once_and_replay_identically_across_a_restart() {
    let up = upstream::start().await;
    let url = fresh_store_url(Backend::Sqlite).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let clock = ManualClock::starting_now();
    let config = || config_from_toml(&idempotency_config(&up.url));
    let s = Server::start_on(Arc::clone(&store), config(), clock.clone()).await;
    let tenant = s.tenant("Acme").await;
    let (_, secret) = s.key(&tenant, "caller", json!({})).await;
    let (_, other_key) = s.key(&tenant, "other", json!({})).await;
    let body = json!({ "to": "+15551234567", "from": "+15557654321" });

    // Required means required, and the key must be sane.
    post_idem(&s, "/create/calls", &secret, None, body.clone())
        .await
        .assert_problem(400, "idempotency_key_required");
    post_idem(
        &s,
        "/create/calls",
        &secret,
        Some(&"k".repeat(256)),
        body.clone(),
    )
    .await
    .assert_problem(400, "invalid_idempotency_key");
    assert_eq!(executions(&up, "/create/calls"), 0);

    let target = s.url("/create/calls");
    let replies = burst(&s, 50, |c| {
        c.post(&target)
            .bearer_auth(&secret)
            .header("Idempotency-Key", "call-001")
            .json(&body)
    })
    .await;
    assert_eq!(executions(&up, "/create/calls"), 1, "exactly one execution");
    let originals: Vec<&Reply> = replies
        .iter()
        .filter(|r| {
            r.status == StatusCode::CREATED && r.headers.get("idempotent-replayed").is_none()
        })
        .collect();
    assert_eq!(originals.len(), 1);
    let original = originals[0];
    for r in &replies {
        match r.status.as_u16() {
            201 => assert_eq!(r.body, original.body),
            409 => {
                r.assert_problem(409, "idempotency_in_progress");
                assert_eq!(header(r, "retry-after"), "1");
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }

    // After completion every retry is the identical replay, quoted or bare.
    for idem in ["call-001", "\"call-001\""] {
        let r = post_idem(&s, "/create/calls", &secret, Some(idem), body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.body, original.body);
        assert_eq!(header(&r, "idempotent-replayed"), "true");
        assert_eq!(header(&r, "location"), header(original, "location"));
        assert!(
            r.headers.get("x-not-replayed").is_none(),
            "only selected headers"
        );
    }
    // The same key for another body or path is refused.
    post_idem(
        &s,
        "/create/calls",
        &secret,
        Some("call-001"),
        json!({ "to": "+1999" }),
    )
    .await
    .assert_problem(422, "idempotency_key_reused");
    post_idem(&s, "/create/notes", &secret, Some("call-001"), body.clone())
        .await
        .assert_problem(422, "idempotency_key_reused");
    // Another API key has its own keys.
    let r = post_idem(
        &s,
        "/create/calls",
        &other_key,
        Some("call-001"),
        body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.headers.get("idempotent-replayed").is_none());
    assert_eq!(executions(&up, "/create/calls"), 2);
    // Optional routes run every request without a key.
    for _ in 0..2 {
        post_idem(&s, "/create/notes", &secret, None, json!({})).await;
    }
    assert_eq!(executions(&up, "/create/notes"), 2);

    // A restart keeps the record: still one execution, same replay.
    s.shutdown().await;
    let s = Server::start_on(Arc::clone(&store), config(), clock.clone()).await;
    let r = post_idem(&s, "/create/calls", &secret, Some("call-001"), body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body, original.body);
    assert_eq!(header(&r, "idempotent-replayed"), "true");
    assert_eq!(executions(&up, "/create/calls"), 2);

    // After the replay window (24 h) the key is new again.
    clock.advance_seconds(86_400);
    let r = post_idem(&s, "/create/calls", &secret, Some("call-001"), body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.headers.get("idempotent-replayed").is_none());
    assert_eq!(executions(&up, "/create/calls"), 3);
}

#[tokio::test]
async fn denials_and_unreachable_upstreams_do_not_burn_the_idempotency_key() {
    let up = upstream::start().await;
    let config = config_from_toml(&format!(
        r#"{KEYS}
[gateway]
upstream = "http://127.0.0.1:1"

[[routes]]
methods = ["POST"]
path = "/create/calls"
credits = 1
"#
    ));
    drop(up);
    let s = Server::start_with(Backend::Sqlite, config).await;
    let tenant = s.tenant("Acme").await;
    let (_, secret) = s.key(&tenant, "k", json!({})).await;
    // No credits: 402, and the key stays free.
    post_idem(&s, "/create/calls", &secret, Some("x-1"), json!({}))
        .await
        .assert_problem(402, "credits_exhausted");
    s.grant(&tenant, 5).await;
    // Unreachable upstream: 502, nothing ran, the key stays free.
    post_idem(&s, "/create/calls", &secret, Some("x-1"), json!({}))
        .await
        .assert_problem(502, "upstream_unavailable");
    post_idem(&s, "/create/calls", &secret, Some("x-1"), json!({}))
        .await
        .assert_problem(502, "upstream_unavailable");
}

#[tokio::test]
async fn a_clean_shutdown_settles_every_spend_and_returns_unspent_reservations() {
    let url = fresh_store_url(Backend::Sqlite).await;
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let clock = ManualClock::starting_now();
    let config = || {
        config_from_toml(&format!(
            r#"{KEYS}
[[routes]]
methods = ["GET"]
path = "/v1/paid"
credits = 2
respond = {{ paid = true }}
"#
        ))
    };
    let s = Server::start_on(Arc::clone(&store), config(), clock.clone()).await;
    let tenant = s.tenant("Acme").await;
    let (_, secret) = s.key(&tenant, "k", json!({})).await;
    let credits = format!("/v1/tenants/{tenant}/credits");
    s.grant(&tenant, 1000).await;
    for _ in 0..5 {
        assert_eq!(s.get("/v1/paid", &secret).await.status, StatusCode::OK);
    }
    // This node holds a reservation; the balance it shows includes it.
    assert_eq!(s.get(&credits, &s.root).await.body["balance"], 990);
    s.shutdown().await;

    let s = Server::start_on(Arc::clone(&store), config(), clock.clone()).await;
    assert_eq!(s.get(&credits, &s.root).await.body["balance"], 990);
    let ledger = s.get(&format!("{credits}/ledger"), &s.root).await;
    let data = ledger.body["data"].as_array().unwrap();
    let spends: Vec<&Value> = data.iter().filter(|e| e["kind"] == "spend").collect();
    assert_eq!(spends.len(), 1, "{}", ledger.body);
    assert_eq!(spends[0]["amount"], -10);
    assert_eq!(spends[0]["requests"], 5);
    assert!(
        spends[0]["reason"].is_null(),
        "nothing was counted as spent by a crash"
    );
}

/// Exactness must not depend on timing: background reservations racing
/// requests that run dry must never turn into early refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_exact_round_after_round() {
    let config = config_from_toml(&format!(
        r#"{KEYS}
[[routes]]
methods = ["GET"]
path = "/v1/paid/{{n}}"
credits = 1
respond = {{ paid = true }}
"#
    ));
    let s = Server::start_with(Backend::Sqlite, config).await;
    for (round, (balance, concurrency)) in
        [(997, 1200), (50, 200), (1234, 1500), (3, 40), (500, 700)]
            .into_iter()
            .enumerate()
    {
        let tenant = s.tenant(&format!("Round {round}")).await;
        let (_, secret) = s.key(&tenant, "k", json!({})).await;
        let credits = format!("/v1/tenants/{tenant}/credits");
        s.grant(&tenant, balance).await;
        let url = s.url(&format!("/v1/paid/{round}"));
        let replies = burst(&s, concurrency, |c| c.get(&url).bearer_auth(&secret)).await;
        assert_eq!(count(&replies, 200), balance as usize, "round {round}");
        assert_eq!(
            count(&replies, 402),
            concurrency - balance as usize,
            "round {round}"
        );
        assert_eq!(
            s.get(&credits, &s.root).await.body["balance"],
            0,
            "round {round}"
        );
    }
}

/// Two nodes: two credit banks (node ids `n-a` and `n-b`), each on its own
/// handle on one database, with what the server's change follower does
/// for credits: a task per bank reading the change log and calling
/// `release_tenant` for the other node's reclaims.
struct TwoNodes {
    a: Arc<CreditBank>,
    b: Arc<CreditBank>,
    store: Arc<SqlStore>,
    other: Arc<SqlStore>,
    followers: Vec<tokio::task::JoinHandle<()>>,
}

impl TwoNodes {
    async fn start(backend: Backend, reclaim_wait: Duration) -> TwoNodes {
        let url = fresh_store_url(backend).await;
        let store = Arc::new(SqlStore::open(&url).await.unwrap());
        let other = Arc::new(SqlStore::open(&url).await.unwrap());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let bank = |s: &Arc<SqlStore>, node: &str| {
            Arc::new(CreditBank::new(
                Arc::clone(s) as Arc<dyn Store>,
                Arc::clone(&clock),
                BankConfig {
                    node_id: node.into(),
                    max_reservation: 10_000,
                    idle_release_ms: 10_000,
                    stale_ms: 300_000,
                    reclaim_wait,
                },
            ))
        };
        let (a, b) = (bank(&store, "n-a"), bank(&other, "n-b"));
        let start = store.last_change_seq().await.unwrap();
        let followers = [(&a, &store), (&b, &other)]
            .into_iter()
            .map(|(bank, s)| {
                let (bank, s) = (Arc::clone(bank), Arc::clone(s));
                tokio::spawn(async move {
                    let mut after = start;
                    loop {
                        for change in s.changes_after(after, 100).await.unwrap() {
                            after = change.seq;
                            let theirs = change.origin.as_deref() != Some(bank.node_id());
                            if let (ChangeKind::CreditsReclaim, true, Some(tenant)) =
                                (&change.kind, theirs, change.tenant_id)
                            {
                                // As the server does: in a task of its own.
                                let bank = Arc::clone(&bank);
                                tokio::spawn(async move { bank.release_tenant(&tenant).await });
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                })
            })
            .collect();
        TwoNodes {
            a,
            b,
            store,
            other,
            followers,
        }
    }

    async fn grant(&self, tenant: &str, amount: i64) {
        let at = SystemClock.now().0;
        let id = format!("led_{tenant}_{at}");
        self.store
            .change_credits(
                &CreditChange {
                    id: id.clone(),
                    tenant_id: tenant.into(),
                    kind: LedgerKind::Grant,
                    amount,
                    at,
                    actor: "key_root".into(),
                    reason: None,
                    idempotency_key: None,
                    fingerprint: id.clone(),
                    refill: None,
                },
                &AuditEntry {
                    id: format!("evt_{id}"),
                    at,
                    actor: "key_root".into(),
                    actor_ip: None,
                    tenant_id: Some(tenant.into()),
                    action: "credits.granted".into(),
                    target: tenant.into(),
                    details: json!({}),
                    event: None,
                },
            )
            .await
            .unwrap();
    }

    /// Spends `cost` once on `bank`: admitted or not.
    async fn spend(bank: &CreditBank, tenant: &str, cost: i64) -> bool {
        bank.spend(SpendRequest {
            tenant_id: tenant,
            key_id: "key_spender",
            cost,
            key_cap: None,
            refill: None,
        })
        .await
        .unwrap()
        .admitted
    }

    /// Both nodes settle and give everything back, as at shutdown.
    async fn settle_all(&self) {
        self.a.settle(true).await.unwrap();
        self.b.settle(true).await.unwrap();
    }

    async fn stop(self) {
        for f in self.followers {
            f.abort();
        }
        self.other.close().await;
        self.store.close().await;
    }
}

/// Credits are exact across nodes: with balance B and cost c, concurrent
/// requests split over two nodes are admitted exactly floor(B / c) times
/// and B mod c is left, however the reservations happened to be spread;
/// the ledger accounts for every credit as a running balance.
async fn two_nodes_spend_exactly(backend: Backend) {
    let nodes = TwoNodes::start(backend, Duration::from_millis(1_000)).await;

    // Credits parked on one node are handed back to the other: n-a's first
    // spend reserves all 100 (its read-ahead is 10 × the cost), then n-b
    // asks for them, request after request.
    let t = "ten_parked";
    nodes.grant(t, 100).await;
    assert!(TwoNodes::spend(&nodes.a, t, 10).await);
    for i in 0..9 {
        assert!(TwoNodes::spend(&nodes.b, t, 10).await, "n-b's spend {i}");
    }
    // Nothing is left anywhere: refused, at once (nobody holds any).
    let started = Instant::now();
    assert!(!TwoNodes::spend(&nodes.b, t, 10).await);
    assert!(!TwoNodes::spend(&nodes.a, t, 10).await);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refusals after a reclaim came back empty took {:?}",
        started.elapsed()
    );
    nodes.settle_all().await;
    let acc = nodes.store.credit_account(t, None, 0).await.unwrap();
    assert_eq!((acc.balance, acc.reserved), (0, 0));
    crate::store::credits::assert_running(nodes.store.as_ref(), t).await;

    // Many concurrent spends split across both nodes, round after round.
    for (round, (balance, cost, per_node)) in [
        (1000_i64, 7_i64, 150_usize),
        (997, 1, 600),
        (50, 3, 30),
        (12_345, 5, 1_500),
        (10, 4, 10),
    ]
    .into_iter()
    .enumerate()
    {
        let t = format!("ten_exact_{round}");
        nodes.grant(&t, balance).await;
        let mut tasks = Vec::new();
        for i in 0..per_node * 2 {
            let bank = Arc::clone(if i % 2 == 0 { &nodes.a } else { &nodes.b });
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                TwoNodes::spend(&bank, &t, cost).await
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += i64::from(task.await.unwrap());
        }
        assert_eq!(admitted, balance / cost, "round {round}: admitted");
        nodes.settle_all().await;
        let acc = nodes.store.credit_account(&t, None, 0).await.unwrap();
        assert_eq!(
            (acc.balance, acc.reserved),
            (balance % cost, 0),
            "round {round}: left"
        );
        let entries = crate::store::credits::assert_running(nodes.store.as_ref(), &t).await;
        let spends: Vec<_> = entries
            .iter()
            .filter(|e| e.kind == LedgerKind::Spend)
            .collect();
        assert!(
            spends.iter().all(|e| e.reason.is_none()),
            "round {round}: nothing was counted as spent by a crash"
        );
        assert_eq!(
            spends.iter().map(|e| e.requests).sum::<i64>(),
            balance / cost,
            "round {round}: requests in the ledger"
        );
        assert_eq!(
            spends.iter().map(|e| e.amount).sum::<i64>(),
            -(balance / cost) * cost,
            "round {round}: credits spent in the ledger"
        );
    }
    nodes.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_spend_exactly_on_sqlite() {
    two_nodes_spend_exactly(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_spend_exactly_on_postgres() {
    two_nodes_spend_exactly(Backend::Postgres).await;
}

/// The server's wiring: two servers on one PostgreSQL (two nodes). Credits
/// one node reserved ahead are handed back when the other runs short: it
/// asks through the change log, the first node's follower hears it and
/// releases them. Every credit is spent exactly once, and the ledger read
/// through the API is a running balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hands_its_reservation_back_when_another_runs_short() {
    let url = fresh_store_url(Backend::Postgres).await;
    let clock = ManualClock::starting_now();
    let node = |id: &str| {
        config_from_toml(&format!(
            r#"{KEYS}
[credits]
node_id = "{id}"
[[routes]]
methods = ["GET"]
path = "/v1/paid"
credits = 10
respond = {{ paid = true }}
"#
        ))
    };
    let a = Server::start_on(
        Arc::new(SqlStore::open(&url).await.unwrap()),
        node("node-a"),
        clock.clone(),
    )
    .await;
    let b = Server::start_on(
        Arc::new(SqlStore::open(&url).await.unwrap()),
        node("node-b"),
        clock.clone(),
    )
    .await;
    let tenant = a.tenant("Acme").await;
    let (_, secret) = a.key(&tenant, "k", json!({})).await;
    a.grant(&tenant, 105).await;

    // Node A reserves ahead (ten times the cost: all of it) on its first
    // request; node B gets every other credit back from it.
    assert_eq!(a.get("/v1/paid", &secret).await.status, StatusCode::OK);
    for i in 0..9 {
        let r = b.get("/v1/paid", &secret).await;
        assert_eq!(r.status, StatusCode::OK, "node B's request {i}: {}", r.body);
    }
    b.get("/v1/paid", &secret)
        .await
        .assert_problem(402, "credits_exhausted");
    a.get("/v1/paid", &secret)
        .await
        .assert_problem(402, "credits_exhausted");

    let credits = format!("/v1/tenants/{tenant}/credits");
    for s in [&a, &b] {
        assert_eq!(s.get(&credits, &s.root).await.body["balance"], 5);
    }
    // The ledger (each node settles before reading it) chains: newest
    // first, each balance_after is the older one's plus the amount.
    a.get(&format!("{credits}/ledger"), &a.root).await;
    let ledger = b.get(&format!("{credits}/ledger?limit=100"), &b.root).await;
    let data = ledger.body["data"].as_array().unwrap();
    for pair in data.windows(2) {
        assert_eq!(
            pair[0]["balance_after"].as_i64().unwrap(),
            pair[1]["balance_after"].as_i64().unwrap() + pair[0]["amount"].as_i64().unwrap(),
            "{}",
            ledger.body
        );
    }
    assert_eq!(data[0]["balance_after"], 5, "{}", ledger.body);
    let spent: i64 = data
        .iter()
        .filter(|e| e["kind"] == "spend")
        .map(|e| e["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(spent, -100);
    b.shutdown().await;
    a.shutdown().await;
}
